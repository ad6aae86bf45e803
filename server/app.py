"""The FastAPI application: `create_app` wires routers, middleware, error handlers and lifespan.

Run it with `ttc-server`, or `uvicorn --factory server.app:create_app`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI, Request, Response
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from backends.base import Backend
from backends.registry import BACKENDS
from backends.vllm import VLLMBackendSettings
from backends.vllm_client import HTTPClients
from server.admission import Admission, AdmissionMiddleware
from server.auth import AuthMiddleware
from server.body import BodyMiddleware
from server.errors import install_error_handlers
from server.keys import KeyRing
from server.limit_store import LimitStore, MemoryLimitStore, RedisLimitStore
from server.metrics import Metrics
from server.quota import Quotas
from server.request_id import RequestIdMiddleware
from server.response_store import MemoryResponseStore, RedisResponseStore, ResponseStore
from server.routes import chat, completions, health, models, responses, tokenizer
from server.serving.background import BackgroundResponses
from server.serving.running import Serving
from server.settings import DRAIN_MARGIN_S, Settings
from server.tracing import TracingMiddleware, tracer_provider
from verifiers.equivalence import EquivalencePool
from verifiers.registry import create_verifiers

__all__ = ["create_app"]

logger = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None,
    backend: Backend | None = None,
    tracing: TracerProvider | None = None,
) -> FastAPI:
    """Build the app; `backend` replaces the configured one (tests, benchmarks), `tracing` the
    tracer provider the `OTEL_*` variables and `--tracing.enabled` would make (tests)."""
    settings = settings or Settings()
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    keys = settings.key_ring()
    provider = tracing or tracer_provider(settings.tracing.enabled)
    tracer = provider.get_tracer("ttc_server") if provider is not None else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            # Every pooled client of a vLLM server comes from here and is closed last.
            if provider is not None:
                # Last out: the spans of the shutdown itself are exported too.
                stack.callback(provider.shutdown)
            clients = HTTPClients(
                settings.vllm, on_retry=metrics.retried, traced=tracer is not None
            )
            stack.push_async_callback(clients.aclose)
            active = backend or await BACKENDS[settings.backend].create(settings, clients)
            stack.push_async_callback(active.aclose)
            verifiers = create_verifiers(settings.verifiers, active, clients)
            named_models = {}
            for name, served in settings.models.items():
                # Built as `--backend vllm` is, through the registry, on replicas of its own.
                served_settings = VLLMBackendSettings(vllm_url=served.vllm_url, model=name)
                model = await BACKENDS["vllm"].create(served_settings, clients)
                stack.push_async_callback(model.aclose)
                configs = {**settings.verifiers, **served.verifiers}
                verifying = create_verifiers(configs, model, clients)
                named_models[name] = (model, verifying, served.thinking.tags())
            # math-verify's workers: answers are compared in processes that can be killed.
            equivalence = EquivalencePool(
                timeout_s=settings.answer_match_timeout_s, workers=settings.answer_match_workers
            )
            stack.push_async_callback(equivalence.aclose)
            app.state.serving = Serving(
                active,
                settings.limits,
                metrics,
                verifiers,
                prices=settings.prices,
                named_models=named_models,
                keepalive_s=settings.stream_keepalive_s,
                equivalence=equivalence,
                thinking_tags=settings.thinking.tags(),
                tracer=tracer,
                capture_text=settings.tracing.capture_text,
            )
            logger.info(
                "serving %s on the %s backend; verifiers: %s",
                await _model_or_pending(active),
                settings.backend,
                ", ".join(sorted(verifiers)),
            )
            for name, served in settings.models.items():
                logger.info("serving %s on vLLM at %s", name, ", ".join(served.vllm_url))
            app.state.quotas = _quotas(settings, keys, metrics)
            if app.state.quotas is not None:
                stack.push_async_callback(app.state.quotas.aclose)
            kept = settings.responses
            app.state.responses = BackgroundResponses(
                app.state.serving, _response_store(settings), kept.lease_s, kept.max_running
            )
            # First out: background runs finish (or end) while their backends and the keys'
            # store are still open.
            stack.push_async_callback(app.state.responses.aclose, settings.drain_grace_s)
            yield

    app = FastAPI(title="ttc-server", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.quotas = None  # set in lifespan when there are keys
    # `ttc-server` drains through it on SIGTERM (server.drain).
    app.state.admission = admission = Admission(settings.limits, metrics)
    app.add_middleware(AdmissionMiddleware, admission=admission)
    # Outside admission: a slot is taken only once the body is in, whole and in time.
    app.add_middleware(
        BodyMiddleware,
        max_bytes=settings.limits.max_body_bytes,
        timeout_s=settings.limits.body_timeout_s,
    )
    metrics_token = settings.metrics_token
    if keys is not None or metrics_token is not None:
        # Outside admission: a request without a key never takes a slot.
        token = metrics_token.get_secret_value() if metrics_token is not None else None
        app.add_middleware(AuthMiddleware, keys=keys, metrics=metrics, metrics_token=token)
    if provider is not None:
        # Inside the request id, outside the rest: turned-away requests are traced too.
        app.add_middleware(TracingMiddleware, provider=provider)
    app.add_middleware(RequestIdMiddleware)  # outermost: turned-away requests get an id too
    install_error_handlers(app)
    for module in (chat, completions, responses, models, tokenizer, health):
        app.include_router(module.router)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics(request: Request) -> Response:
        # OpenMetrics to a scraper that asks for it (Prometheus does): only it carries the
        # latency's exemplars (trace ids); the classic text format otherwise.
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encode(registry), headers={"Content-Type": content_type})

    return app


def _response_store(settings: Settings) -> ResponseStore:
    """Kept responses in Redis when given one (any replica reads them), else in this process."""
    kept = settings.responses
    if settings.redis_url is not None:
        url = settings.redis_url.get_secret_value()
        return RedisResponseStore(url, kept.ttl_s, kept.max_per_key)
    return MemoryResponseStore(kept.ttl_s, kept.max_per_key)


def _quotas(settings: Settings, keys: KeyRing | None, metrics: Metrics) -> Quotas | None:
    """The keys' limits, counted in Redis when given one, else in this process."""
    if keys is None:
        logger.warning("no --api-keys: anyone who can reach this server may use it")
        return None
    # A place in flight outlives any request, should a replica die before settling it.
    hold_s = settings.limits.request_timeout_s + DRAIN_MARGIN_S
    store: LimitStore
    if settings.redis_url is not None:
        store = RedisLimitStore(settings.redis_url.get_secret_value(), hold_s)
        where = "in Redis"
    else:
        store = MemoryLimitStore(hold_s)
        where = "in this process only (no --redis-url)"
    metrics.watch_keys(keys.aliases)
    logger.info("%d API keys; their limits are counted %s", len(keys.keys), where)
    return Quotas(store, metrics, settings.prices, settings.redis_on_error)


async def _model_or_pending(backend: Backend) -> str:
    # vLLM may still be starting; the gateway starts anyway and /ready tells when it can serve.
    try:
        return await backend.model_name()
    except Exception as exc:  # noqa: BLE001 - only for the start-up log line
        return f"(model not known yet: {exc})"
