"""GET /dashboard (the page), GET /dashboard/state (its data), GET /dashboard/assets/..."""

from __future__ import annotations

from importlib import resources

import orjson
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from ..dashboard import Dashboard
from ..dashboard_schemas import DashboardState
from ..deps import Viewer
from ..errors import RouteNotFoundError
from ..schemas import error_responses

__all__ = ["ASSETS", "CONTENT_SECURITY_POLICY", "install"]

ASSETS = resources.files("service") / "static" / "dashboard"

# The page loads nothing but its own origin's files and data: the browser enforces it.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'self'"
)
_MEDIA_TYPES = {
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "LICENSE": "text/plain; charset=utf-8",
}
_PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def install(app: FastAPI, dashboard: Dashboard, *, requires_key: bool) -> None:
    """Register the page, its data (behind any key when ``requires_key``) and its assets."""
    page = (ASSETS / "index.html").read_bytes()

    @app.get("/dashboard", include_in_schema=False)
    async def dashboard_page() -> Response:
        """The live dashboard: one page that polls /dashboard/state."""
        return Response(page, media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)

    @app.get(
        "/dashboard/state",
        tags=["dashboard"],
        dependencies=[Viewer] if requires_key else [],
        response_model=None,
        responses={
            200: {"model": DashboardState, "description": "the dashboard's data"},
            **error_responses(*((401, 403) if requires_key else ())),
        },
    )
    async def dashboard_state() -> Response:
        """What /dashboard shows: active version and lineage, prequential series, guard
        refusals, drift, request rates and latency."""
        document = await run_in_threadpool(dashboard.state)
        return Response(
            orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY),
            media_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    assets = {
        entry.name: entry.read_bytes()
        for entry in ASSETS.iterdir()
        if entry.name.endswith((".js", ".css", "LICENSE"))
    }

    @app.get("/dashboard/assets/{name}", include_in_schema=False)
    async def dashboard_asset(name: str) -> Response:
        """The page's scripts and styles (and the vendored library's licence)."""
        if name not in assets:
            raise RouteNotFoundError(f"no dashboard asset {name!r}", field="name")
        return Response(
            assets[name],
            media_type=_MEDIA_TYPES[name.rpartition(".")[2]],
            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
        )
