"""``GET /dashboard`` in a real headless Chromium against the real server.

The browser is Debian's ``chromium`` (``apt-get install chromium``; ``.ci/run`` installs it),
driven by Playwright (the ``dev`` extra) through ``executable_path``: nothing is downloaded
at run time. Where no browser can be had the tests are skipped, saying how to get one; with
``BROWSER_TEST_REQUIRED=1`` (set by ``.ci/run`` once it installed the browser) that is an error.

``DASHBOARD_SCREENSHOT=docs/dashboard.png`` also writes the desktop screenshot there, in 256
colours (the README's picture is made that way).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model.data import load_builtin

from .server import ServerProcess, start_server, train_offline

playwright_api = pytest.importorskip(
    "playwright.sync_api",
    reason="Playwright is missing: pip install -e '.[dev]' (it drives Debian's chromium)",
)

KEY = "dashboard-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",  # as root in CI
    "--disable-gpu",
    "--disable-dev-shm-usage",
    # No traffic of the browser's own (updates, sync, safe browsing): the network is closed.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
WAIT_MS = 15_000


def _chromium() -> str:
    found = os.environ.get("CHROMIUM") or shutil.which("chromium") or ""
    if not found:
        message = (
            "no Chromium to drive: install Debian's (apt-get install chromium; .ci/run does) "
            "or point CHROMIUM at one"
        )
        if os.environ.get("BROWSER_TEST_REQUIRED") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return found


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the module: digits version 1, the guard at its defaults, a key."""
    root = tmp_path_factory.mktemp("dashboard")
    store = root / "store"
    store.mkdir()
    assert train_offline(store, "digits") == 1
    server = start_server(
        store, root / "logs", "--api-key", KEY, "--dashboard-refresh", "0.5", "--holdout-every", "0"
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser(server: ServerProcess) -> Iterator[Any]:
    executable = _chromium()
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


class Watched:
    """A page and everything it did: requests, console errors, navigations."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.navigations = 0
        page.on("request", lambda request: self.requests.append(request.url))
        page.on(
            "console",
            lambda message: message.type == "error" and self.errors.append(message.text),
        )
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        page.on("requestfailed", lambda r: self.errors.append(f"failed: {r.url} {r.failure}"))
        page.on("framenavigated", self._navigated)

    def _navigated(self, frame: Any) -> None:
        if frame == self.page.main_frame:
            self.navigations += 1

    def assert_clean(self, origin: str) -> None:
        assert self.errors == [], self.errors
        outside = [url for url in self.requests if not url.startswith(origin + "/")]
        assert outside == [], f"requests outside {origin}: {outside}"
        assert self.navigations == 1, f"{self.navigations} navigations: the page reloaded"


def _batches() -> tuple[np.ndarray, np.ndarray]:
    digits = load_builtin("digits")
    rng = np.random.default_rng(18)
    rows = rng.permutation(len(digits.y))
    return np.asarray(digits.X)[rows], np.asarray(digits.y)[rows]


def _train(server: ServerProcess, X: np.ndarray, y: np.ndarray, **extra: Any) -> Any:
    body = {"instances": X.tolist(), "labels": y.tolist(), **extra}
    return server.post("/train", json=body, headers=AUTH)


def test_the_page_follows_the_model_live_without_a_reload(
    server: ServerProcess, browser: Any, tmp_path: Path
) -> None:
    expect = playwright_api.expect
    origin = server.base_url
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    watched = Watched(page)
    page.goto(origin + "/dashboard")
    expect(page.locator("#active-version")).to_have_text("v1", timeout=WAIT_MS)
    expect(page.locator("#live-dot")).to_have_class("dot ok", timeout=WAIT_MS)
    chart = page.locator("#chart-preq")
    expect(chart).to_have_attribute("data-points", "0", timeout=WAIT_MS)
    page.evaluate("window.__sameDocument = 'yes'")  # gone if the page reloads

    X, y = _batches()
    for start in range(0, 64, 16):  # a little prediction traffic for the traffic panel
        predicted = server.post("/predict", json={"instances": X[start : start + 16].tolist()})
        assert predicted.status_code == 200, predicted.text
    version = 1
    for start in range(0, 256, 32):  # eight honest minibatches: versions 2 to 9
        response = _train(server, X[start : start + 32], y[start : start + 32])
        assert response.status_code == 200, response.text
        version = response.json()["version"]
        time.sleep(0.1)  # spread over a second or two of the chart's time axis
    assert version == 9
    # Honest labels at a learning rate far above the model's own, for 10 passes: refused.
    refused = _train(server, X[256:288], y[256:288], learning_rate=1.0, passes=10)
    assert refused.status_code == 409, refused.text
    reason = refused.json()["error"]["details"]["reason"]  # which signal refused it
    response = _train(server, X[288:320], y[288:320])  # and one more honest: version 10
    assert response.status_code == 200, response.text
    version = response.json()["version"]

    expect(page.locator("#active-version")).to_have_text(f"v{version}", timeout=WAIT_MS)
    expect(chart).to_have_attribute("data-points", str(version - 1), timeout=WAIT_MS)
    expect(chart).to_have_attribute("data-last-version", str(version), timeout=WAIT_MS)
    assert chart.locator("canvas").count() == 1  # uPlot drew it
    refusal = page.locator("#events li[data-kind=refused]")
    expect(refusal).to_have_count(1, timeout=WAIT_MS)
    expect(refusal).to_contain_text("update refused")
    expect(refusal).to_contain_text(reason)
    expect(page.locator("#guard-refused")).to_have_text("1", timeout=WAIT_MS)
    expect(page.locator("#refusal-reasons")).to_contain_text("update_rejected")
    expect(page.locator(f"#versions tr.active[data-version='{version}']")).to_have_count(1)
    expect(page.locator("#preq-accuracy")).to_contain_text("%")
    expect(page.locator("#routes")).to_contain_text("POST /predict")
    expect(page.locator("#routes")).to_contain_text("POST /train")
    assert page.evaluate("window.__sameDocument") == "yes"

    # A rollback: the page serves the older version again and says who asked for it.
    assert server.post(f"/models/{version - 2}/activate", headers=AUTH).status_code == 200
    expect(page.locator("#active-version")).to_have_text(f"v{version - 2}", timeout=WAIT_MS)
    rollback = page.locator("#events li[data-kind=rollback]")
    expect(rollback).to_contain_text(f"v{version} → v{version - 2} · key default")
    expect(page.locator(f"#versions tr.active[data-version='{version - 2}']")).to_have_count(1)
    assert page.evaluate("window.__sameDocument") == "yes"

    page.wait_for_timeout(1200)  # two more polls: the traffic chart has a few points
    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("DASHBOARD_SCREENSHOT"):  # the README's picture: 256 colours, ~60 kB
        from PIL import Image  # Pillow: matplotlib's dependency, in the dev extra

        with Image.open(shot) as picture:
            small = picture.convert("RGB").quantize(256, dither=Image.Dither.NONE)
            small.save(os.environ["DASHBOARD_SCREENSHOT"], optimize=True)
    watched.assert_clean(origin)
    context.close()


def test_at_a_phones_width_nothing_is_cut_off(
    server: ServerProcess, browser: Any, tmp_path: Path
) -> None:
    expect = playwright_api.expect
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    )
    page = context.new_page()
    watched = Watched(page)
    page.goto(server.base_url + "/dashboard")
    expect(page.locator("#active-version")).to_have_text(re.compile(r"^v\d+$"), timeout=WAIT_MS)
    expect(page.locator("#live-dot")).to_have_class("dot ok", timeout=WAIT_MS)
    # One column, no sideways scrolling of the page (wide tables scroll in their own box).
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    boxes = page.evaluate(
        "[...document.querySelectorAll('.card, .panel')].map(e => e.getBoundingClientRect())"
        ".map(r => [r.left, r.right])"
    )
    assert boxes and all(left >= 0 and right <= 390 for left, right in boxes), boxes
    page.screenshot(path=str(tmp_path / "dashboard-phone.png"), full_page=True)
    watched.assert_clean(server.base_url)
    context.close()


def test_behind_a_key_the_page_asks_for_one_and_then_shows_the_data(
    browser: Any, tmp_path: Path
) -> None:
    expect = playwright_api.expect
    store = tmp_path / "store"
    store.mkdir()
    assert train_offline(store, "iris") == 1
    server = start_server(
        store, tmp_path / "logs", "--api-key", KEY, "--dashboard-requires-key", "true"
    )
    try:
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        watched = Watched(page)
        page.goto(server.base_url + "/dashboard")
        overlay = page.locator("#key-overlay")
        expect(overlay).to_be_visible(timeout=WAIT_MS)
        expect(page.locator("#active-version")).to_have_text("–")  # nothing shown without it
        page.fill("#key-input", "not-the-key")
        page.click("#key-form button")
        expect(page.locator("#key-error")).to_contain_text("not valid", timeout=WAIT_MS)
        page.fill("#key-input", KEY)
        page.click("#key-form button")
        expect(page.locator("#active-version")).to_have_text("v1", timeout=WAIT_MS)
        expect(overlay).to_be_hidden()
        expect(page.locator("#model-name")).to_have_text("model iris")
        # The browser reports each refused fetch (401, 403) as a console error: those two
        # are expected here, nothing else is.
        refused = [e for e in watched.errors if re.search(r"status of 40[13]", e)]
        assert len(refused) == 2, watched.errors
        watched.errors = [e for e in watched.errors if e not in refused]
        watched.assert_clean(server.base_url)
        context.close()
    finally:
        server.stop()
