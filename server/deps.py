"""Dependencies of the route handlers, as `Annotated` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from server.admission import Admission
from server.serving.running import Serving

__all__ = ["AdmissionDep", "RequestIdDep", "ServingDep"]

# Async, so FastAPI calls them on the event loop instead of sending each to its threadpool.


async def _serving(request: Request) -> Serving:
    serving: Serving = request.app.state.serving
    return serving


async def _admission(request: Request) -> Admission:
    admission: Admission = request.app.state.admission
    return admission


async def _request_id(request: Request) -> str:
    request_id: str = request.state.request_id
    return request_id


AdmissionDep = Annotated[Admission, Depends(_admission)]
ServingDep = Annotated[Serving, Depends(_serving)]
RequestIdDep = Annotated[str, Depends(_request_id)]
