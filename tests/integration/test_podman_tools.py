"""When the image tests can run: :func:`~tests.integration.podman.missing_tools` and
:func:`~tests.integration.podman.require_tools`, on fake tools (no podman needed).

Each case puts executables named ``podman``, ``runc`` and, where wanted, ``debootstrap`` in
an empty folder and makes it the whole ``PATH``: the fake podman finds no image and its pull
fails unless told otherwise, as on a machine that reaches no registry."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from . import podman

FAKE_PODMAN = """#!/bin/sh
# podman --runtime runc <command> ...: no image exists; a pull exits $FAKE_PULL_EXIT.
case "$3" in
    pull) exit "${FAKE_PULL_EXIT:-125}" ;;
    *) exit 1 ;;
esac
"""


@pytest.fixture
def tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH holding fake podman and runc only, an empty cache, root, no base chosen."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    install(bin_dir, "podman", FAKE_PODMAN)
    install(bin_dir, "runc")
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("IMAGE_TEST_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("IMAGE_TEST_BASE", raising=False)
    monkeypatch.delenv("IMAGE_TEST_REQUIRED", raising=False)
    monkeypatch.delenv("FAKE_PULL_EXIT", raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    return bin_dir


def install(bin_dir: Path, name: str, script: str = "#!/bin/sh\nexit 0\n") -> None:
    path = bin_dir / name
    path.write_text(script)
    path.chmod(0o755)


def test_no_debootstrap_and_no_base_is_one_line_naming_what_to_install(tools: Path) -> None:
    missing = podman.missing_tools()
    assert missing is not None and "\n" not in missing
    assert missing.startswith("debootstrap not found, and no base image without it")
    assert podman.official_base() in missing and "IMAGE_TEST_BASE unset" in missing
    assert missing.endswith(podman.INSTALL_HINT)


def test_without_debootstrap_the_module_is_skipped_or_required_fails(
    tools: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(pytest.skip.Exception, match=r"^image tests: debootstrap not found"):
        podman.require_tools()
    monkeypatch.setenv("IMAGE_TEST_REQUIRED", "1")
    with pytest.raises(RuntimeError, match="required but cannot run: debootstrap not found"):
        podman.require_tools()


def test_a_base_found_otherwise_needs_no_debootstrap(
    tools: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_PULL_EXIT", "0")  # a registry serves the official base
    assert podman.missing_tools() is None
    monkeypatch.delenv("FAKE_PULL_EXIT")
    monkeypatch.setenv("IMAGE_TEST_BASE", "localhost/some-python:3.11")
    assert podman.missing_tools() is None
    monkeypatch.delenv("IMAGE_TEST_BASE")
    podman.local_tarball().parent.mkdir(parents=True)
    podman.local_tarball().touch()  # a base made earlier, cached
    assert podman.missing_tools() is None
    podman.require_tools()  # neither skips nor fails


def test_debootstrap_makes_the_base_when_there_is_none(tools: Path) -> None:
    install(tools, "debootstrap")
    assert podman.missing_tools() is None


def test_podman_runc_and_root_are_needed_first(
    tools: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tools / "runc").unlink()
    assert podman.missing_tools() == f"runc not found; {podman.INSTALL_HINT}"
    (tools / "podman").unlink()
    assert podman.missing_tools() == f"podman and runc not found; {podman.INSTALL_HINT}"
    install(tools, "podman", FAKE_PODMAN)
    install(tools, "runc")
    install(tools, "debootstrap")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    missing = podman.missing_tools()
    assert missing is not None and missing.startswith("the image tests run rootful podman")
