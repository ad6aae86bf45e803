"""The `ttc-server` command: read settings from flags and `TTC_*` variables, then serve."""

from __future__ import annotations

import logging
import math
import sys

import uvicorn
from pydantic import ValidationError
from pydantic_settings import CliApp

from server.admission import Admission
from server.app import create_app
from server.drain import DrainingServer
from server.log_format import LogFormat, create_formatter
from server.request_id import RequestIdFilter
from server.settings import Settings

__all__ = [
    "configure_logging",
    "main",
]


def configure_logging(level: str, log_format: LogFormat = "text") -> None:
    """One format for our logs and uvicorn's, with the request id on every line."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(create_formatter(log_format))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    if log_format == "json":
        # Python's warnings go to stderr too: as log lines, so that every line there parses.
        logging.captureWarnings(True)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script."""
    try:
        settings = CliApp.run(Settings, cli_args=sys.argv[1:] if argv is None else argv)
    except ValidationError as exc:
        sys.exit(f"ttc-server: invalid settings:\n{exc}")
    configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        log_config=None,
        log_level=settings.log_level,
        access_log=settings.access_log,
        timeout_graceful_shutdown=math.ceil(settings.drain_grace_s),
    )
    admission: Admission = app.state.admission
    server = DrainingServer(config, admission, settings.shutdown_delay_s)
    server.run()
    if not server.started:
        sys.exit("ttc-server: the server did not start")
