"""`--log-format`: the JSON lines' fields, the ids they read from context, and the text format."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from opentelemetry import trace
from starlette.types import Message, Receive, Scope, Send

from server.log_format import TEXT_FORMAT, JSONFormatter, LogFormat, create_formatter
from server.request_id import RequestIdFilter, RequestIdMiddleware

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
SPAN_ID = 0x00F067AA0BA902B7


class Captured:
    """A logger whose lines, formatted as the server formats them, go to a buffer."""

    def __init__(self, log_format: LogFormat) -> None:
        self.buffer = io.StringIO()
        handler = logging.StreamHandler(self.buffer)
        handler.addFilter(RequestIdFilter())
        handler.setFormatter(create_formatter(log_format))
        self.logger = logging.getLogger(f"tests.log_format.{log_format}")
        self.logger.handlers[:] = [handler]
        self.logger.propagate = False
        self.logger.setLevel(logging.DEBUG)

    def lines(self) -> list[str]:
        return self.buffer.getvalue().splitlines()

    def objects(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.lines()]


@pytest.fixture
def json_log() -> Iterator[Captured]:
    captured = Captured("json")
    yield captured
    captured.logger.handlers.clear()


@pytest.fixture
def text_log() -> Iterator[Captured]:
    captured = Captured("text")
    yield captured
    captured.logger.handlers.clear()


async def serve_one(log: Callable[[], None], request_id: str) -> None:
    """Run `log` inside a request that `RequestIdMiddleware` gave `request_id`."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        log()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        pass

    scope = {"type": "http", "headers": [(b"x-request-id", request_id.encode())]}
    await RequestIdMiddleware(app)(scope, receive, send)


def test_a_line_outside_a_request_has_the_basic_fields_only(json_log: Captured) -> None:
    before = datetime.now(UTC)
    json_log.logger.info("started %s on %d", "gateway", 8000)
    (line,) = json_log.objects()
    assert line.keys() == {"time", "level", "logger", "message"}
    assert line["level"] == "INFO"
    assert line["logger"] == "tests.log_format.json"
    assert line["message"] == "started gateway on 8000"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    written = datetime.fromisoformat(line["time"])
    assert written.tzinfo == UTC
    assert abs((written - before).total_seconds()) < 5


def test_the_time_is_utc_to_the_millisecond_across_seconds() -> None:
    formatter = JSONFormatter()
    times = []
    # Binary fractions, so that no millisecond is lost to rounding.
    for created in (1_796_587_994.125, 1_796_587_994.875, 1_796_587_995.0625, 1_796_587_994.5):
        record = logging.LogRecord("t", logging.INFO, "f", 1, "m", (), None)
        record.created, record.msecs = created, (created - int(created)) * 1000
        times.append(orjson.loads(formatter.format(record))["time"])
    assert times == [
        "2026-12-06T20:13:14.125Z",
        "2026-12-06T20:13:14.875Z",
        "2026-12-06T20:13:15.062Z",
        "2026-12-06T20:13:14.500Z",
    ]


async def test_a_line_written_while_serving_carries_the_request_id(json_log: Captured) -> None:
    await serve_one(lambda: json_log.logger.warning("slow backend"), "req-42")
    json_log.logger.info("after the request")
    during, after = json_log.objects()
    assert during["request_id"] == "req-42"
    assert during["message"] == "slow backend"
    assert "request_id" not in after


def test_a_line_under_a_valid_span_carries_its_trace_and_span_ids(json_log: Captured) -> None:
    context = trace.SpanContext(
        TRACE_ID, SPAN_ID, is_remote=False, trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED)
    )
    with trace.use_span(trace.NonRecordingSpan(context)):
        json_log.logger.info("in a span")
    json_log.logger.info("in no span")
    in_span, outside = json_log.objects()
    assert in_span["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert in_span["span_id"] == "00f067aa0ba902b7"
    assert "trace_id" not in outside and "span_id" not in outside


def test_an_invalid_span_gives_no_ids(json_log: Captured) -> None:
    with trace.use_span(trace.INVALID_SPAN):
        json_log.logger.info("no trace")
    (line,) = json_log.objects()
    assert "trace_id" not in line and "span_id" not in line


def test_an_exception_is_one_line_with_its_traceback(json_log: Captured) -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        json_log.logger.exception("request failed")
    (raw,) = json_log.lines()  # the traceback's newlines stay inside the JSON string
    line = orjson.loads(raw)
    assert line["level"] == "ERROR"
    assert line["message"] == "request failed"
    assert line["exception"].startswith("Traceback (most recent call last):")
    assert line["exception"].endswith("ValueError: boom\nsecond line")


def test_a_stack_is_kept(json_log: Captured) -> None:
    json_log.logger.info("where", stack_info=True)
    (line,) = json_log.objects()
    assert line["stack"].startswith("Stack (most recent call last):")


def test_extra_fields_join_the_line(json_log: Captured) -> None:
    class Opaque:
        def __str__(self) -> str:
            return "opaque!"

    json_log.logger.info(
        "done",
        extra={
            "strategy": "beam_search",
            "calls": 3,
            "scores": {"a": 0.5, 1: [True, None]},
            "thing": Opaque(),
            "level": "not the level",  # the line's own fields win
        },
    )
    (line,) = json_log.objects()
    assert line["strategy"] == "beam_search"
    assert line["calls"] == 3
    assert line["scores"] == {"a": 0.5, "1": [True, None]}
    assert line["thing"] == "opaque!"
    assert line["level"] == "INFO"


def test_a_value_orjson_refuses_is_written_as_its_repr(json_log: Captured) -> None:
    json_log.logger.info("big", extra={"huge": 2**70, "fine": "yes"})
    (line,) = json_log.objects()
    assert line["huge"] == repr(2**70)
    assert line["fine"] == "yes"
    assert line["message"] == "big"


def test_uvicorns_coloured_copy_of_a_message_is_left_out(json_log: Captured) -> None:
    json_log.logger.info("Uvicorn running", extra={"color_message": "\x1b[1mUvicorn\x1b[0m"})
    (line,) = json_log.objects()
    assert "color_message" not in line


async def test_the_text_format_is_unchanged(text_log: Captured) -> None:
    text_log.logger.info("outside")
    await serve_one(lambda: text_log.logger.info("inside"), "req-7")
    outside, inside = text_log.lines()
    assert TEXT_FORMAT == "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
    assert outside.endswith(" INFO tests.log_format.text [-] outside")
    assert inside.endswith(" INFO tests.log_format.text [req-7] inside")


def test_each_format_has_its_formatter() -> None:
    assert isinstance(create_formatter("json"), JSONFormatter)
    assert not isinstance(create_formatter("text"), JSONFormatter)
