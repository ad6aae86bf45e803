"""What every benchmark script does on its command line: list options and a clean exit."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from bench.processes import ServiceError

__all__ = ["choices", "run_script"]


def choices(
    parser: argparse.ArgumentParser, value: str, known: Sequence[str], what: str
) -> list[str]:
    """A comma-separated option's items, each one of `known`, or the parser's usage error."""
    chosen = [item.strip() for item in value.split(",") if item.strip()]
    if unknown := sorted(set(chosen) - set(known)):
        parser.error(f"unknown {what} {unknown}; choose from {', '.join(known)}")
    return chosen


def run_script(main: Callable[[], int]) -> NoReturn:
    """Exit with `main`'s status; an interrupt or a service that failed to start ends the script
    with one line (every child process is stopped on the way out)."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit("interrupted: every child process was stopped")
    except ServiceError as exc:
        sys.exit(str(exc))
