"""Request plumbing shared by both functions.

A function is reached two ways: ``aws lambda invoke`` hands the handler the raw
JSON payload, and a Function URL hands it a payload-format-2.0 HTTP event. The
handlers route URL events with powertools' ``LambdaFunctionUrlResolver`` and
send direct payloads straight to the same core functions; this module holds
what both paths need: one error type, request-body parsing into pydantic
models with messages that name the offending field, 404/405 decisions, and the
optional API-key check.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

ModelT = TypeVar("ModelT", bound=BaseModel)
_logger = logging.getLogger(__name__)


class ApiError(Exception):
    """A request the function refuses, with the HTTP status that says why.

    ``type``, ``param`` and ``code`` follow OpenAI's error object; routes with
    another error shape (TEI) translate from it in one place.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",  # noqa: A002 - OpenAI's field name
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def openai_body(self) -> dict[str, Any]:
        """OpenAI's error envelope, which the OpenAI SDKs parse."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def is_function_url_event(event: Any) -> bool:
    """True for a Function URL (payload format 2.0) event, False for a direct payload."""
    if not isinstance(event, Mapping):
        return False
    context = event.get("requestContext")
    return (
        event.get("version") == "2.0"
        and isinstance(context, Mapping)
        and isinstance(context.get("http"), Mapping)
        and "rawPath" in event
    )


def _location(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(f".{item}" if parts else item)
    return "".join(parts)


def validation_error(exc: ValidationError) -> ApiError:
    """Turn pydantic's report into one 400 that names the first bad field."""
    errors = exc.errors(include_url=False)
    if not errors:  # pragma: no cover - pydantic always reports at least one
        return ApiError(400, "invalid request body")
    first = errors[0]
    where = _location(tuple(first.get("loc", ())))
    message = str(first.get("msg", "invalid value"))
    if first.get("type") == "extra_forbidden":
        message = "unknown field"
    text = f"{where}: {message}" if where else message
    if len(errors) > 1:
        text += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return ApiError(400, text, param=where or None, code="invalid_value")


def parse_model(model: type[ModelT], payload: Any) -> ModelT:
    """Validate an already-decoded JSON payload into ``model`` or raise ApiError(400)."""
    if not isinstance(payload, Mapping):
        raise ApiError(
            400,
            f"request body must be a JSON object, got {type(payload).__name__}",
            code="invalid_body",
        )
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise validation_error(exc) from None


def decode_json_body(raw: str | bytes | None, *, max_bytes: int) -> Any:
    """Decode a request body, refusing empty, oversized and malformed ones."""
    if raw is None or len(raw) == 0:
        raise ApiError(400, "request body is empty; send a JSON object", code="invalid_body")
    size = len(raw.encode() if isinstance(raw, str) else raw)
    if size > max_bytes:
        raise ApiError(
            413,
            f"request body is {size} bytes; the limit is {max_bytes} bytes",
            code="request_too_large",
        )
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}", code="invalid_json") from None


def route_error(path: str, method: str, routes: Mapping[str, frozenset[str]]) -> ApiError:
    """404 for an unknown path, 405 (naming the allowed methods) for a known one."""
    allowed = routes.get(path) or routes.get(path.rstrip("/") or "/")
    if allowed:
        names = ", ".join(sorted(allowed))
        return ApiError(
            405,
            f"method {method} is not allowed on {path}; allowed: {names}",
            code="method_not_allowed",
        )
    known = ", ".join(f"{m} {p}" for p, ms in sorted(routes.items()) for m in sorted(ms))
    return ApiError(404, f"no route for {method} {path}; routes: {known}", code="not_found")


class ApiKeyGuard:
    """The optional shared-secret check for Function URLs with auth type NONE.

    The key lives in Secrets Manager; the stack passes only the secret's ARN
    (``API_KEY_SECRET_ARN``) and grants read access to it. ``API_KEY`` is
    accepted for local runs, where there is no Secrets Manager; the stack never
    sets it. Without either the guard is off (IAM-authenticated URLs).

    A key read from Secrets Manager is read again when it is older than
    ``max_age_s`` (so a rotated-out key stops working in every warm environment,
    provisioned ones included, within that time), and when a request presents
    another key and the last read is older than ``retry_s`` (so a newly stored key
    works within seconds, while a flood of wrong keys costs at most one read per
    ``retry_s``). A failed re-read keeps the key held so far.
    """

    MAX_AGE_S = 300.0
    RETRY_S = 10.0

    def __init__(
        self,
        key: str | None,
        *,
        refresh: Callable[[], str] | None = None,
        max_age_s: float = MAX_AGE_S,
        retry_s: float = RETRY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._key = self._check(key) if key is not None else None
        self._refresh = refresh
        self._max_age_s = max_age_s
        self._retry_s = retry_s
        self._clock = clock
        self._read_at = clock()

    @staticmethod
    def _check(key: str) -> bytes:
        key = key.strip()
        if len(key) < 16:
            raise ValueError("an API key must be at least 16 characters long")
        return key.encode()

    @property
    def enabled(self) -> bool:
        return self._key is not None

    @classmethod
    def from_environment(
        cls,
        environ: Mapping[str, str] = os.environ,
        fetch_secret: Callable[[str], str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> ApiKeyGuard:
        arn = environ.get("API_KEY_SECRET_ARN", "").strip()
        if arn:
            fetch = fetch_secret or _fetch_secret
            return cls(fetch(arn), refresh=lambda: fetch(arn), clock=clock)
        local = environ.get("API_KEY", "").strip()
        return cls(local or None, clock=clock)

    def authorized(self, headers: Mapping[str, str]) -> bool:
        """True when the guard is off or the Bearer token equals the (current) key."""
        if self._key is None:
            return True
        if self._age() >= self._max_age_s:
            self._reread()
        value = ""
        for name, header in headers.items():
            if name.lower() == "authorization":
                value = header
                break
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        presented = token.strip().encode()
        if hmac.compare_digest(presented, self._key):
            return True
        if self._age() >= self._retry_s and self._reread():
            return hmac.compare_digest(presented, self._key)
        return False

    def _age(self) -> float:
        return self._clock() - self._read_at

    def _reread(self) -> bool:
        """Read the key again; True when a different key was read."""
        if self._refresh is None:
            return False
        self._read_at = self._clock()
        try:
            key = self._check(self._refresh())
        except Exception:  # any failure keeps the key held so far
            _logger.warning("re-reading the API key failed; keeping the key read before", exc_info=True)
            return False
        changed = key != self._key
        self._key = key
        return changed


def _fetch_secret(arn: str) -> str:
    # Imported here: only API-key deployments pay for loading boto3.
    from aws_lambda_powertools.utilities import parameters

    # force_fetch: the guard decides when to read again; powertools' cache must not answer.
    value = parameters.get_secret(arn, force_fetch=True)
    if isinstance(value, bytes):
        value = value.decode()
    if not isinstance(value, str) or not value:
        raise RuntimeError(f"secret {arn} holds no string value")
    return value
