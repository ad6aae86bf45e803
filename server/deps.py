"""Dependencies of the route handlers, as `Annotated` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from backends.base import Backend
from server.serving.core import Serving

__all__ = ["BackendDep", "RequestIdDep", "ServingDep"]


def _serving(request: Request) -> Serving:
    serving: Serving = request.app.state.serving
    return serving


def _backend(request: Request) -> Backend:
    return _serving(request).backend


def _request_id(request: Request) -> str:
    request_id: str = request.state.request_id
    return request_id


ServingDep = Annotated[Serving, Depends(_serving)]
BackendDep = Annotated[Backend, Depends(_backend)]
RequestIdDep = Annotated[str, Depends(_request_id)]
