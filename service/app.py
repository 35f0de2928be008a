"""The FastAPI application: ``create_app(settings)`` wires store, runtime, routes and errors."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool
from threadpoolctl import threadpool_limits

from model import LoadedModel, LocalArtifactStore
from model.errors import ModelError, StoreUnavailableError
from model.pgstore import PostgresArtifactStore

from .body import BodyLimitMiddleware
from .config import Settings, build_repository, keyring_for
from .contract import Limits
from .dashboard import Dashboard
from .deps import Access, AppState, close_route
from .errors import install_error_handlers
from .metrics import Metrics, MetricsMiddleware
from .registry import ModelRegistry
from .routes import dashboard, health, metrics, models, predict, train, v2
from .runtime import Runtime

__all__ = ["create_app"]

log = logging.getLogger("service")

DESCRIPTION = """
Serves a softmax-regression model from a versioned artifact store and keeps it learning from
labelled minibatches (`POST /train`). Every acknowledged update is durable, concurrent updates
are serialized across worker processes, and bad input gets a 4xx that changes nothing.
Every error answer has the body `{"error": {"type", "message"}}`, with `"field"` and `"row"`
when the error is about one field or row of the request.
"""


def _configure_logging(level: str) -> None:
    """Log like uvicorn does, once per process (each worker builds its own app)."""
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(level.upper())


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. Nothing is loaded until the lifespan starts."""
    settings = settings or Settings()
    _configure_logging(settings.log_level)
    keyring = keyring_for(settings)
    repository = build_repository(settings)
    runtime = Runtime(repository, settings.model, metrics_window=settings.metrics_window)
    app_metrics = Metrics()
    access = Access.build(keyring, app_metrics.registry)
    if isinstance(repository.store, LocalArtifactStore | PostgresArtifactStore):
        repository.store.on_sync = app_metrics.store_syncs.inc
    runtime.on_swap(_publisher(app_metrics, settings.guard_surprise_quantile))
    registry = ModelRegistry(
        repository,
        memory_budget=settings.models_memory_bytes,
        resident=runtime,
        metrics_window=settings.metrics_window,
    )
    registry.on_evict(lambda name: app_metrics.models_evicted.labels(name).inc())
    state = AppState(settings, runtime, app_metrics, access, registry)

    # FastAPIOffline: FastAPI with /docs and /redoc served from assets shipped in that package
    # (Swagger UI, ReDoc), so the docs work where the service has no internet access.
    app = FastAPIOffline(
        title="softmax-serve",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=_lifespan(state),
        # Our metrics are Prometheus (service/metrics.py); FastAPI's OpenTelemetry hooks would
        # only cost a provider check per request (~5% of a 1-row prediction).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.softmax = state
    install_error_handlers(app)
    _install_routes(app, settings)
    board = Dashboard(
        runtime,
        app_metrics,
        guard_mode=settings.guard_mode,
        refresh_seconds=settings.dashboard_refresh,
    )
    dashboard.install(app, board, requires_key=settings.dashboard_requires_key)
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=app_metrics)
    return app


def _publisher(app_metrics: Metrics, surprise_quantile: float) -> Callable[[LoadedModel], None]:
    """What the runtime calls on each swap: the new version and its health into the metrics."""

    def publish(loaded: LoadedModel) -> None:
        app_metrics.active_version.set(loaded.version)
        guard = loaded.meta.guard
        if guard is None:  # a version from before 0.2: figures from its guard set, if any
            found = loaded.guard_figures(surprise_quantile)
            guard = found.to_json() if found is not None else None
        app_metrics.set_version_health(guard, loaded.meta.drift)

    return publish


def _lifespan(state: AppState) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Start-up (say how access is set up, load the active model, poll the store) and
    shutdown."""
    runtime = state.runtime

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One BLAS thread per worker: requests are small products, run from several threads
        # (and workers) at once; BLAS threads of their own only contend for the same cores.
        blas = threadpool_limits(limits=1, user_api="blas")
        _log_access(state.settings, state.access)
        with contextlib.suppress(StoreUnavailableError):  # not reachable yet: see _load_active
            runtime.resolve_name()  # several models and no --model: refuse to start
        await _load_active(state.settings, runtime)
        runtime.start_polling(state.settings.reload_interval)
        state.registry.start_polling(state.settings.reload_interval)
        try:
            yield
        finally:
            state.registry.stop_polling()
            runtime.stop_polling()
            state.metrics.process_exit()
            blas.restore_original_limits()  # the process's BLAS as it was (tests run many apps)

    return lifespan


def _log_access(settings: Settings, access: Access) -> None:
    """Say once who may call /train, and that rate limits are per worker process."""
    if not access.keyring:
        log.warning(
            "no API key configured (SOFTMAX_API_KEY): /train and /models/{version}/activate "
            "are open to anyone who can reach this port"
        )
    else:
        log.info("API keys: %s", access.keyring.describe())
    if access.limiter and settings.workers > 1:
        log.info(
            "rate limits are kept per worker process: with %d workers a key may reach %d "
            "times its configured rate",
            settings.workers,
            settings.workers,
        )


async def _load_active(settings: Settings, runtime: Runtime) -> None:
    """Load the active model if there is one. A store that cannot be reached yet, or an empty
    one, starts the service live but not ready (said once, and in /health/ready): the pollers
    load the model as soon as it is there."""
    await run_in_threadpool(runtime.reload)  # logs an outage or a failure to load
    if runtime.current is not None or runtime.problem is not None:
        return
    try:
        others = runtime.repository.models()
    except ModelError:
        others = []
    log.warning(
        "%s holds no model%s yet%s: not ready until one is created (POST /models) or "
        "trained into it",
        runtime.repository,
        f" {settings.model!r}" if settings.model else "",
        f" (it holds {', '.join(others)})" if others else "",
    )


def _install_routes(app: FastAPI, settings: Settings) -> None:
    """The routes, /predict first in line: it is the hot path."""
    limits = Limits(
        settings.max_rows,
        settings.max_learning_rate,
        settings.max_passes,
        refuse_unknown_categories=settings.unknown_categories == "refuse",
    )
    predict.install(app, limits)
    if settings.predict_requires_key:  # else nothing is installed: the hot path pays nothing
        close_route(app, "/predict", "predict")
    train.install(app, limits)
    app.include_router(models.router)
    app.include_router(health.router)
    app.include_router(metrics.router)
    v2.install(app, limits, predict_requires_key=settings.predict_requires_key)
