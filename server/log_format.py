"""How the process's log lines look: text (the default), or one JSON object per line.

`--log-format json` writes every line, ours and uvicorn's (its error and access loggers), as

    {"time": "2026-12-06T19:53:14.123Z", "level": "INFO", "logger": "uvicorn.access",
     "message": "...", "request_id": "...", "trace_id": "...", "span_id": "..."}

on one line, followed by the exception's traceback (`exception`) and the record's `extra=`
fields, if any. `request_id` is there while a request is served, `trace_id` and `span_id`
(lowercase hex, 32 and 16 digits) while an OpenTelemetry span is current. Both are read from
context variables when the line is written, so no call passes them along. The JSON work is done
only in this format: the text format costs what it did.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

import orjson
from opentelemetry import trace

from server.request_id import current_request_id

__all__ = ["TEXT_FORMAT", "JSONFormatter", "LogFormat", "create_formatter"]

LogFormat = Literal["text", "json"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"

# What every record holds, and what formatters and filters add to it; anything else on a record
# came from `extra=`.
_NOT_EXTRA = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "request_id",
    "taskName",  # Python 3.12's asyncio task name
    "color_message",  # uvicorn's copy of its message with terminal colours
}


class JSONFormatter(logging.Formatter):
    """One JSON object per record, on one line, encoded with orjson."""

    def __init__(self) -> None:
        super().__init__()
        # The current second, formatted: strftime is most of a line's cost otherwise.
        self._second: tuple[int, str] = (-1, "")

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self._utc_iso8601(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = current_request_id()
        if request_id is not None:
            line["request_id"] = request_id
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            line["trace_id"] = trace.format_trace_id(span.trace_id)
            line["span_id"] = trace.format_span_id(span.span_id)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)  # cached, as Formatter does
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        for key, value in vars(record).items():
            # The fields above win over an `extra=` of the same name.
            if key not in _NOT_EXTRA and key not in line:
                line[key] = value
        try:
            return orjson.dumps(line, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        except TypeError:
            # What orjson refuses even with `default` (an int past 64 bits, a dict keyed by
            # tuples): the line is written with such values as their repr, never dropped.
            safe = {k: v if isinstance(v, str) else repr(v) for k, v in line.items()}
            return orjson.dumps(safe).decode()

    def _utc_iso8601(self, record: logging.LogRecord) -> str:
        # Millisecond precision, UTC, with a `Z`, as log collectors parse without configuration.
        second = int(record.created)
        cached = self._second  # one read: threads that log may replace it meanwhile
        if cached[0] != second:
            cached = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
            self._second = cached
        return f"{cached[1]}.{int(record.msecs):03d}Z"


def create_formatter(log_format: LogFormat) -> logging.Formatter:
    """The formatter of `--log-format`."""
    if log_format == "json":
        return JSONFormatter()
    return logging.Formatter(TEXT_FORMAT)
