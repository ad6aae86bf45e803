"""OpenAI's error object, the body of every error response, and the error of a request that
parses but asks for what the server cannot do."""

from __future__ import annotations

from pydantic import BaseModel

from backends.errors import GatewayError

__all__ = ["ErrorInfo", "ErrorResponse", "InvalidRequest"]


class ErrorInfo(BaseModel):
    """OpenAI's error object."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """The body of every error response."""

    error: ErrorInfo


class InvalidRequest(GatewayError, ValueError):
    """A request that parses but asks for something we can't do, with the field to blame."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param
