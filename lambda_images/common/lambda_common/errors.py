"""Domain errors: why a function refuses a request, with no HTTP in them.

The cores (the generator's engine, the embedding service) and the request
plumbing raise these; each function's edge turns them into an HTTP status and
an error body in the shape its clients parse (``ErrorFamily``): OpenAI's
``{"error": {"message", "type", "param", "code"}}`` here, TEI's and
llama.cpp server's in the functions that speak those APIs. A direct invoke
gets one shape for both functions (``direct_error_body``).

``code`` is the machine-readable reason (OpenAI's ``code``), ``param`` the
request field at fault, if one is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel


class RequestError(Exception):
    """A request this function refuses, or could not complete; the message says why to a caller."""

    code: ClassVar[str] = "invalid_value"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code  # type: ignore[misc]  # an instance may name a finer reason


class InvalidRequest(RequestError):
    """The request is malformed or asks for something this function cannot do (400)."""


class InvalidBody(InvalidRequest):
    """The body is not a JSON document this function can read (400 on every route)."""

    code = "invalid_body"


class EmptyInput(InvalidRequest):
    """An input that must carry content is empty (TEI's ``Empty`` error)."""

    code = "empty"


class ContextLengthExceeded(InvalidRequest):
    """The prompt does not fit the model's context window."""

    code = "context_length_exceeded"


class TooLarge(RequestError):
    """The request, or the answer it asks for, is over a size limit (413)."""

    code = "too_large"


class NotFound(RequestError):
    """No such route or resource (404)."""

    code = "not_found"


class ModelNotFound(NotFound):
    """The request names a model this function does not serve; never a silent fallback."""

    code = "model_not_found"


class MethodNotAllowed(RequestError):
    """The route exists, but not for this method (405)."""

    code = "method_not_allowed"

    def __init__(self, message: str, *, allowed: tuple[str, ...]) -> None:
        super().__init__(message)
        self.allowed = allowed


class Unauthorized(RequestError):
    """Missing or wrong API key (401)."""

    code = "invalid_api_key"


class NotEnoughTime(RequestError):
    """The invocation has too little time left to do this work (503): nothing was done."""

    code = "deadline_too_close"


class Unavailable(RequestError):
    """A dependency this request needs is unavailable right now (503)."""

    code = "unavailable"


class InternalError(RequestError):
    """The function failed while working on a valid request (500); nothing half-done is returned."""

    code = "internal_error"


# ------------------------------------------------------------------ mapping to HTTP


STATUS_BY_KIND: Mapping[type[RequestError], int] = {
    InvalidRequest: 400,
    TooLarge: 413,
    MethodNotAllowed: 405,
    NotFound: 404,
    Unauthorized: 401,
    NotEnoughTime: 503,
    Unavailable: 503,
    InternalError: 500,
}
"""The default status of each kind; the nearest class in an error's MRO decides."""

OPENAI_TYPES: Mapping[int, str] = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def openai_type(status: int) -> str:
    """OpenAI's error ``type`` for a status: server_error for 5xx, else by status."""
    if status >= 500:
        return "server_error"
    return OPENAI_TYPES.get(status, "invalid_request_error")


def default_status(error: RequestError) -> int:
    for kind in type(error).__mro__:
        status = STATUS_BY_KIND.get(kind)  # type: ignore[call-overload]
        if status is not None:
            return status
    return 500


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorBody(BaseModel):
    """OpenAI's error envelope."""

    error: OpenAIErrorDetail


class DirectErrorDetail(OpenAIErrorDetail):
    status: int


class DirectErrorBody(BaseModel):
    """The error a direct invoke returns (both functions): OpenAI's object plus the HTTP-equivalent status."""

    error: DirectErrorDetail


@dataclass(frozen=True)
class ErrorFamily:
    """How one family of routes (OpenAI's, TEI's, llama.cpp's) reports errors.

    ``statuses`` overrides the default status of an error kind for this family
    (TEI answers validation problems with 422, for instance); ``body`` renders
    an error in the family's shape, which ``model`` describes (for the OpenAPI
    documents).
    """

    name: str
    statuses: Mapping[type[RequestError], int] = field(default_factory=dict)
    model: type[BaseModel] = OpenAIErrorBody

    def status(self, error: RequestError) -> int:
        for kind in type(error).__mro__:
            status = self.statuses.get(kind)  # type: ignore[call-overload]
            if status is not None:
                return status
            if kind is RequestError:
                break
        return default_status(error)

    def body(self, error: RequestError, status: int) -> dict[str, Any]:
        return openai_error_body(error, status)


def openai_error_body(error: RequestError, status: int) -> dict[str, Any]:
    """OpenAI's error envelope, which the OpenAI SDKs parse."""
    return {
        "error": {
            "message": error.message,
            "type": openai_type(status),
            "param": error.param,
            "code": error.code,
        }
    }


OPENAI = ErrorFamily("openai")
"""OpenAI's routes (``/v1/...``) in both functions."""


def direct_error_body(error: RequestError, status: int) -> dict[str, Any]:
    """The one error shape of a direct invoke, for both functions.

    OpenAI's error object plus ``status``, the HTTP status the same refusal gets
    on the Function URL: ``{"error": {"message", "type", "param", "code", "status"}}``.
    """
    body = openai_error_body(error, status)
    body["error"]["status"] = status
    return body
