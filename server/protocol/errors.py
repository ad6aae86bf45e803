"""OpenAI's error object, the body of every error response."""

from __future__ import annotations

from pydantic import BaseModel

__all__ = ["ErrorInfo", "ErrorResponse"]


class ErrorInfo(BaseModel):
    """OpenAI's error object."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """The body of every error response."""

    error: ErrorInfo
