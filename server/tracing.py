"""OpenTelemetry traces of a request's fan-out: off unless an OTLP endpoint is set.

Configured as every OpenTelemetry SDK is, by the standard variables:
`OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) turns tracing on,
`OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL` picks `http/protobuf` (the default) or `grpc`,
`OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` name the service, `OTEL_TRACES_SAMPLER`
samples. `--tracing.enabled` turns it on or off whatever the variables say.

The provider is the app's (made in `create_app`, flushed at shutdown), never the SDK's global
one. `TracingMiddleware` makes the server span of every HTTP request, joined to the caller's
trace when it sends `traceparent`, and returns the trace id in `X-Trace-Id`; the strategy's
spans (`StrategyContext.span`) and each model and verifier call's client span nest under it,
and every call to a model server carries a fresh `traceparent` (`backends.vllm_client`), so
vLLM's own spans nest under the call that caused them. With tracing off none of this is
installed: the hot path checks one attribute per call.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from opentelemetry import context, propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["TRACE_HEADER", "TracingMiddleware", "is_tracing_asked", "tracer_provider"]


# The response header that carries the trace id, for finding a slow request's trace.
TRACE_HEADER = b"x-trace-id"
_ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_PROTOCOLS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")


def is_tracing_asked(enabled: bool | None, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether to trace: as `--tracing.enabled` says, else when an OTLP endpoint is set."""
    if enabled is not None:
        return enabled
    return any(environ.get(name) for name in _ENDPOINTS)


def tracer_provider(
    enabled: bool | None,
    environ: Mapping[str, str] = os.environ,
    processor: SpanProcessor | None = None,
) -> TracerProvider | None:
    """The app's provider, exporting to the OTLP endpoint the variables name (or to
    `processor`'s exporter); None when tracing is off."""
    if processor is None and not is_tracing_asked(enabled, environ):
        return None
    resource = Resource.create(
        {} if environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: "ttc-server"}
    )
    # The sampler comes from OTEL_TRACES_SAMPLER (parent-based, always on, by default).
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(processor or BatchSpanProcessor(_exporter(environ)))
    return provider


def _exporter(environ: Mapping[str, str]) -> SpanExporter:
    protocol = next((environ[n] for n in _PROTOCOLS if environ.get(n)), "http/protobuf")
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found]
                OTLPSpanExporter as GrpcExporter,
            )
        except ImportError as exc:
            raise ValueError(
                "OTLP over gRPC needs the otlp-grpc extra (pip install 'ttc-server[otlp-grpc]'); "
                "or set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf"
            ) from exc
        exporter: SpanExporter = GrpcExporter()
        return exporter
    raise ValueError(
        f"OTLP protocol {protocol!r} is not supported: use http/protobuf or grpc "
        f"({' or '.join(_PROTOCOLS)})"
    )


class _HeaderGetter(Getter[Mapping[str, str]]):
    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        value = carrier.get(key)
        return [value] if value is not None else None

    def keys(self, carrier: Mapping[str, str]) -> list[str]:
        return list(carrier)


_GETTER = _HeaderGetter()


class TracingMiddleware:
    """The server span of each HTTP request: a child of the caller's `traceparent` where it
    sent one, current while the request is served (its body streamed included), its trace id
    in `X-Trace-Id`. Pure ASGI, installed only when tracing is on."""

    def __init__(self, app: ASGIApp, provider: TracerProvider) -> None:
        self.app = app
        self.tracer = provider.get_tracer("ttc_server")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        parent = propagate.extract(headers, getter=_GETTER)
        method, path = scope["method"], scope["path"]
        request_id = scope.get("state", {}).get("request_id")
        span = self.tracer.start_span(
            f"{method} {path}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": method,
                "url.path": path,
                **({"ttc.request_id": request_id} if request_id else {}),
            },
        )
        trace_id = format(span.get_span_context().trace_id, "032x").encode()

        async def send_traced(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = message["status"]
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                message["headers"] = [*message.get("headers", []), (TRACE_HEADER, trace_id)]
            await send(message)

        token = context.attach(trace.set_span_in_context(span, parent))
        try:
            await self.app(scope, receive, send_traced)
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            context.detach(token)
            span.end()
