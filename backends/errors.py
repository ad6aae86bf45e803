"""The root of every error this server raises on purpose, and the backend errors below it.

The root lives in the bottom layer so that every layer's errors can share it; the whole tree,
and how each error maps to HTTP, is drawn in `server/errors.py`. This module's part::

    GatewayError                 an error this server raises on purpose
    └── BackendError             a model server call failed
        ├── BackendUnavailable   no replica could be reached, or the embedded queue is full
        ├── BackendTimeout       a call ran past its timeout
        ├── BackendResponseError the server answered with an error status or a malformed body
        └── FeatureUnavailable   the backend lacks what the request needs (an engine missing)
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "BackendResponseError",
    "BackendTimeout",
    "BackendUnavailable",
    "FeatureUnavailable",
    "GatewayError",
]


class GatewayError(Exception):
    """An error this server raises on purpose; `param` names the request field to blame."""

    param: str | None = None


class BackendError(GatewayError):
    """A model server call failed."""


class BackendUnavailable(BackendError):
    """No replica could be reached, or the embedded model's queue is full."""


class BackendTimeout(BackendError):
    """A model server call ran past its timeout."""


class BackendResponseError(BackendError):
    """The model server answered with an error status or a body we could not read."""

    def __init__(
        self, message: str, status_code: int | None = None, param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        # The field the model server blamed when it refused the request (status 400).
        self.param = param


class FeatureUnavailable(BackendError):
    """The backend lacks what the request needs: an optional engine is not installed."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param
