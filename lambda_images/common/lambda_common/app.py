"""One way into a function: the request core both handlers are built from.

A function is reached two ways: ``aws lambda invoke`` hands the handler the
raw JSON payload (a *direct* invoke), and a Function URL hands it a
payload-format-2.0 HTTP event. Both reach the same route functions::

    Function URL event ─► FunctionApp.handle ─► powertools resolver ─► auth middleware ─► route
    direct payload ─────► FunctionApp.handle ─► direct selector ─────────────────────────► route

A route is a small typed function: ``(request model, Invocation) -> answer``,
registered with ``@app.route(method, path, request=Model)``. The core does the
rest, once for both functions: trailing slashes, the API key, decoding and
bounding the body, validating it into the model, 404 and 405 from the routes
registered here, the deadline, logging with the request id, the size of the
answer, and every error's status and shape (``ErrorFamily``: OpenAI's for
``/v1/...``, the function's native one elsewhere, one shape for direct
invokes).

It also measures: each invocation's metrics (``lambda_common.metrics``: how the
environment started, every refusal by its error code, and what the route
reports) are written when the invocation ends, which for a streamed answer is
when its last chunk is sent; and with tracing on (``lambda_common.tracing``)
parsing the request, the route and the stream are spans of the trace.

Where the line with powertools is: its ``LambdaFunctionUrlResolver`` does the
routing, the middleware chain, the exception handlers and the response's
headers and cookies. It can only return a whole body, so a route that answers
with a ``Stream`` gets its headers resolved by powertools and its body carried
through untouched; ``handle`` then returns a ``StreamingResponse`` for the
runtime loop to frame, or drains the stream where the runtime cannot stream.
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import LambdaFunctionUrlResolver, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from pydantic import BaseModel

from lambda_common.auth import ApiKeyGuard
from lambda_common.body import decode_json, parse_model
from lambda_common.deadline import Deadline
from lambda_common.errors import (
    OPENAI,
    ErrorFamily,
    InternalError,
    InvalidBody,
    MethodNotAllowed,
    NotEnoughTime,
    NotFound,
    RequestError,
    TooLarge,
    direct_error_body,
)
from lambda_common.lifecycle import Lifecycle, StartKind, on_restore, on_snapshot, restore_ms
from lambda_common.limits import LAMBDA_PAYLOAD_LIMIT
from lambda_common.metrics import Record, RequestMetrics
from lambda_common.streaming import ErrorChunk, Stream, StreamingResponse
from lambda_common.tracing import Tracing
from lambda_common.tracing import from_environment as tracing_from_environment

JSON = "application/json"
Via = Literal["url", "direct"]


@dataclass(frozen=True)
class Invocation:
    """What a route knows about the invocation besides its request."""

    request_id: str
    deadline: Deadline
    start: StartKind
    """How the environment serving this started: ``cold`` or ``restored`` once, then ``warm``."""
    via: Via
    path: str
    """The route's path (``direct`` invokes: the path of the route the payload selected)."""

    @property
    def cold_start(self) -> bool:
        return self.start != "warm"

    @property
    def label(self) -> str:
        """What the logs call this way in: the URL path, or ``direct`` for a direct invoke."""
        return self.path if self.via == "url" else "direct"


@dataclass(frozen=True)
class Reply:
    """A route's answer when it is not a plain 200: a status and headers around a JSON body."""

    body: Any
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)


Answer = BaseModel | Reply | Stream | Mapping[str, Any] | list[Any]


@dataclass(frozen=True)
class RouteSpec:
    method: str
    path: str
    func: Callable[..., Answer]
    request: type[BaseModel] | None
    response: type[BaseModel] | None
    stream_item: type[BaseModel] | None
    family: ErrorFamily
    summary: str
    public: bool
    tags: tuple[str, ...]


def _normalise(path: str) -> str:
    """``/v1/models/`` is ``/v1/models``: clients that join base URLs loosely send both."""
    return path.rstrip("/") or "/"


def _url_event_problem(event: Mapping[str, Any]) -> str | None:
    """Why an event that claims to be a Function URL event is not a well-formed one (or None)."""
    context = event.get("requestContext")
    if not isinstance(context, Mapping) or not isinstance(context.get("http"), Mapping):
        return "requestContext.http must be an object"
    method = context["http"].get("method")
    if not isinstance(method, str) or not method.isalpha():
        return "requestContext.http.method must be an HTTP method name"
    if not isinstance(event.get("rawPath"), str) or not event["rawPath"].startswith("/"):
        return "rawPath must be a path starting with /"
    headers = event.get("headers", {})
    if headers is None:
        headers = {}
    if not isinstance(headers, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        return "headers must be an object of strings"
    if event.get("body") is not None and not isinstance(event.get("body"), str):
        return "body must be a string"
    if not isinstance(event.get("isBase64Encoded", False), bool):
        return "isBase64Encoded must be a boolean"
    return None


def _whole(result: Mapping[str, Any]) -> bytes:
    """The body of a resolved URL answer as bytes (powertools base64-encodes bytes bodies)."""
    raw = result.get("body")
    if raw is None:
        return b""
    if result.get("isBase64Encoded"):
        return base64.b64decode(raw)
    return raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)


def is_function_url_event(event: Any) -> bool:
    """True for an event that claims to be a Function URL (payload format 2.0) event."""
    return (
        isinstance(event, Mapping)
        and event.get("version") == "2.0"
        and "requestContext" in event
        and "rawPath" in event
    )


class RawPayloadHandler:
    """A handler that decodes the invocation's payload itself, with the same bounds as a request body.

    The project's runtime loop passes such a handler the raw bytes (``raw_payload``), so a
    direct payload Python's own JSON decoder would choke on (nesting past the recursion limit,
    an integer of thousands of digits) is a 400 in the direct-invoke shape, not a runtime error.
    """

    raw_payload = True

    def __init__(self, app: FunctionApp) -> None:
        self.app = app

    def __call__(self, payload: Any, context: Any) -> Any:
        # Bytes from the runtime loop; in-process callers may pass decoded JSON.
        return self.app.handle(payload, context, stream=True)


class FunctionApp:
    """The routes of one function and the one way into them (see the module docstring)."""

    def __init__(
        self,
        *,
        service: str,
        native: ErrorFamily,
        logger: Logger | None = None,
        metrics: RequestMetrics | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.service = service
        self.native = native
        service_name = os.environ.get("POWERTOOLS_SERVICE_NAME", service)
        self.logger = logger or Logger(service=service_name)
        self.metrics = metrics or RequestMetrics(service_name)
        """This invocation's metrics (EMF); routes add their figures, the core writes them at the end."""
        self.tracing = tracing or tracing_from_environment(service_name)
        self.guard = ApiKeyGuard()
        self.max_body_bytes = LAMBDA_PAYLOAD_LIMIT
        self.max_response_bytes = LAMBDA_PAYLOAD_LIMIT
        self.deadline_margin_ms = 1000.0
        self.url_streaming = (
            os.environ.get("FUNCTION_URL_INVOKE_MODE", "BUFFERED").upper() == "RESPONSE_STREAM"
        )
        """Function URL answers framed for streaming: the URL's invoke mode, which the stack sets."""
        self.lifecycle = Lifecycle()
        """This environment's init, restore and first-invocation state."""
        self.routes: dict[tuple[str, str], RouteSpec] = {}
        self._direct_select: Callable[[Mapping[str, Any]], tuple[str, str]] | None = None
        self._invocation: contextvars.ContextVar[Invocation] = contextvars.ContextVar("invocation")
        self.resolver = LambdaFunctionUrlResolver()
        self.resolver.use(middlewares=[self._check_api_key])
        self.resolver.exception_handler(RequestError)(self._on_request_error)
        self.resolver.exception_handler(Exception)(self._on_unexpected)
        self.resolver.not_found(self._on_not_found)

    # ------------------------------------------------------------------ set-up

    def configure(
        self,
        *,
        guard: ApiKeyGuard | None = None,
        max_body_bytes: int | None = None,
        max_response_bytes: int | None = None,
        deadline_margin_ms: float | None = None,
        url_streaming: bool | None = None,
    ) -> None:
        """Init-time settings (the handler calls this once, after reading its settings)."""
        if guard is not None:
            self.guard = guard
            # A key is a credential: it stays out of a SnapStart snapshot and is read again after it.
            on_snapshot(guard.forget)
            on_restore(guard.reload)
        if max_body_bytes is not None:
            self.max_body_bytes = max_body_bytes
        if max_response_bytes is not None:
            self.max_response_bytes = max_response_bytes
        if deadline_margin_ms is not None:
            self.deadline_margin_ms = deadline_margin_ms
        if url_streaming is not None:
            self.url_streaming = url_streaming

    def ready(self, warm_up: Callable[[], Any] | None = None) -> float:
        """End of the handler's init: records its duration; the last after-restore hook times the restore.

        ``warm_up`` (one short request's worth of work) runs only before a SnapStart snapshot,
        so every restored copy starts with it done. On an on-demand init it would only delay
        the first request by its own length (measured: 60 ms for 1 ms saved on the first
        embeddings request, nothing saved on the generator's first token), so it is skipped.

        With SnapStart the hooks registered here run first before the snapshot (before-snapshot
        hooks run last-registered first: the warm-up, then the log line) and last after the
        restore, and say so in the log, so the lifecycle can be followed in the function's log.
        """
        on_snapshot(
            lambda: self.logger.info("before snapshot: the init's state is what every copy starts from")
        )
        if warm_up is not None:
            on_snapshot(warm_up)
        on_restore(self._restored)
        return self.lifecycle.init_done()

    def _restored(self) -> None:
        self.lifecycle.mark_restored(restore_ms())
        self.logger.info("restored", extra={"restore_ms": round(self.lifecycle.restore_ms or 0.0, 1)})

    def family_for(self, path: str) -> ErrorFamily:
        """The error shape of a path no route claims: OpenAI's under /v1/, else the function's own."""
        return OPENAI if path.startswith("/v1/") else self.native

    def route(
        self,
        method: str,
        path: str,
        *,
        request: type[BaseModel] | None = None,
        response: type[BaseModel] | None = None,
        stream_item: type[BaseModel] | None = None,
        family: ErrorFamily | None = None,
        summary: str = "",
        public: bool = False,
        tags: Iterable[str] = (),
    ) -> Callable[[Callable[..., Answer]], Callable[..., Answer]]:
        """Register ``func(request, invocation)`` (or ``func(invocation)`` without a request model)."""

        def register(func: Callable[..., Answer]) -> Callable[..., Answer]:
            spec = RouteSpec(
                method=method.upper(),
                path=path,
                func=func,
                request=request,
                response=response,
                stream_item=stream_item,
                family=family or self.family_for(path),
                summary=summary or (func.__doc__ or "").strip().split("\n", 1)[0],
                public=public,
                tags=tuple(tags),
            )
            if (spec.method, path) in self.routes:
                raise ValueError(f"{spec.method} {path} is registered twice")
            self.routes[(spec.method, path)] = spec
            self.resolver.route(path, spec.method)(lambda: self._call(spec))
            return func

        return register

    def direct(self, select: Callable[[Mapping[str, Any]], tuple[str, str]]) -> None:
        """How a direct payload picks its route: ``select(payload) -> (method, path)``."""
        self._direct_select = select

    # ------------------------------------------------------------------ entry points

    def lambda_handler(self, event: Any, context: Any) -> Any:
        """For a runtime that cannot stream (the AWS runtime client): every answer whole."""
        return self.handle(event, context, stream=False)

    @property
    def streaming_handler(self) -> RawPayloadHandler:
        """For this project's runtime loop: the payload's bytes in, a StreamingResponse for a stream out."""
        return RawPayloadHandler(self)

    def handle(self, event: Any, context: Any, *, stream: bool) -> Any:
        request_id = str(getattr(context, "aws_request_id", "") or "")
        start = self.lifecycle.take_start()
        self.logger.append_keys(request_id=request_id or None, cold_start=start != "warm", start=start)
        record = self.metrics.begin(start)
        try:
            answer = self._handle(event, context, request_id, start, stream)
        except BaseException:
            self.metrics.flush(record)
            raise
        if isinstance(answer, StreamingResponse):
            # The stream is sent after this returns: its metrics are written when it ends.
            answer.chunks = self._measured(answer.chunks, record)
        else:
            self.metrics.flush(record)
        return answer

    def _measured(self, chunks: Iterator[bytes], record: Record | None) -> Iterator[bytes]:
        try:
            with self.tracing.span("stream"):
                yield from chunks
        finally:
            self.metrics.flush(record)

    def _handle(self, event: Any, context: Any, request_id: str, start: StartKind, stream: bool) -> Any:
        if isinstance(event, bytes | bytearray):  # a raw payload: decoded with the body's bounds
            try:
                event = decode_json(bytes(event), max_bytes=LAMBDA_PAYLOAD_LIMIT, what="payload")
            except RequestError as error:
                return self._direct_error(error, self.native)
        deadline = Deadline.of(context, self.deadline_margin_ms)
        if is_function_url_event(event):
            problem = _url_event_problem(event)
            if problem is None:
                return self._url(event, context, request_id, deadline, start, stream)
            return self._direct_error(InvalidBody(f"a malformed Function URL event: {problem}"), self.native)
        return self._direct(event, request_id, deadline, start, stream)

    # ------------------------------------------------------------------ Function URL path

    def _url(
        self,
        event: Mapping[str, Any],
        context: Any,
        request_id: str,
        deadline: Deadline,
        start: StartKind,
        stream: bool,
    ) -> Any:
        path = _normalise(event["rawPath"])
        if path != event["rawPath"]:
            http = {**event["requestContext"]["http"], "path": path}
            event = {**event, "rawPath": path, "requestContext": {**event["requestContext"], "http": http}}
        invocation = Invocation(request_id, deadline, start, "url", path)
        token = self._invocation.set(invocation)
        try:
            result: dict[str, Any] = self.resolver.resolve(event, context)
        finally:
            self._invocation.reset(token)
        body = result.get("body")
        if stream and self.url_streaming:
            # A URL in RESPONSE_STREAM mode passes an answer without the HTTP prelude through raw,
            # with status 200: so every answer, whole or streamed, goes out with its prelude.
            prelude: dict[str, Any] = {
                "statusCode": result["statusCode"],
                "headers": result.get("headers", {}),
            }
            if result.get("cookies"):
                prelude["cookies"] = result["cookies"]
            if isinstance(body, Stream):
                return StreamingResponse(body.media_type, body.chunks(), prelude)
            return StreamingResponse(
                prelude["headers"].get("Content-Type", JSON), iter([_whole(result)]), prelude
            )
        if not isinstance(body, Stream):
            return result
        try:
            result["body"] = body.drain().decode("utf-8")
        except RequestError as error:
            return self._error_dict(error, self._stream_family(body), path)
        except Exception as exc:
            self.logger.exception("producing an answer failed")
            return self._error_dict(self._internal(exc), self._stream_family(body), path)
        return result

    @staticmethod
    def _stream_family(body: Stream) -> ErrorFamily:
        return body.family or OPENAI

    def _call(self, spec: RouteSpec) -> Response[Any]:
        self.resolver.append_context(family=spec.family)  # type: ignore[no-untyped-call]
        invocation = self._invocation.get()
        if spec.request is None:
            return self._response(self._run(spec, None, invocation), spec)
        with self.tracing.span("parse request"):
            request = parse_model(spec.request, self._url_body())
        return self._response(self._run(spec, request, invocation), spec)

    def _url_body(self) -> Any:
        event = self.resolver.current_event
        raw: str | bytes | None = event.body
        if raw and event.is_base64_encoded:
            try:
                raw = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                raise InvalidBody("the request body is marked base64 but is not valid base64") from None
        return decode_json(raw, max_bytes=self.max_body_bytes)

    def _check_api_key(
        self, app: LambdaFunctionUrlResolver, next_middleware: NextMiddleware
    ) -> Response[Any]:
        event = app.current_event
        spec = self.routes.get((event.request_context.http.method.upper(), event.path))
        if spec is None or not spec.public:
            self.guard.check(event.headers or {})
        return next_middleware(app)

    def _on_not_found(self, _: NotFoundError) -> Response[Any]:
        event = self.resolver.current_event
        method, path = event.request_context.http.method.upper(), event.path
        allowed = tuple(sorted(m for (m, p) in self.routes if p == path))
        if allowed:
            raise MethodNotAllowed(
                f"method {method} is not allowed on {path}; allowed: {', '.join(allowed)}", allowed=allowed
            )
        known = ", ".join(f"{m} {p}" for (m, p) in sorted(self.routes, key=lambda key: (key[1], key[0])))
        raise NotFound(f"no route for {method} {path}; routes: {known}")

    def _current_family(self) -> ErrorFamily:
        family = self.resolver.context.get("family")
        if isinstance(family, ErrorFamily):
            return family
        return self.family_for(self.resolver.current_event.path)

    def _on_request_error(self, error: RequestError) -> Response[str]:
        return self._error_response(error, self._current_family(), self.resolver.current_event.path)

    def _on_unexpected(self, exc: Exception) -> Response[str]:
        self.logger.exception("request failed")
        return self._error_response(
            self._internal(exc), self._current_family(), self.resolver.current_event.path
        )

    @staticmethod
    def _internal(exc: Exception) -> InternalError:
        return InternalError(f"internal error: {type(exc).__name__}; see the function's logs")

    def _log_refusal(self, error: RequestError, status: int, where: str) -> None:
        log = self.logger.error if status >= 500 else self.logger.info
        log("request refused", extra={"status": status, "error_code": error.code, "path": where})
        self.metrics.refusal(error.code, status)

    def _error_response(self, error: RequestError, family: ErrorFamily, path: str) -> Response[str]:
        status = family.status(error)
        self._log_refusal(error, status, path)
        headers: dict[str, str] = {}
        if status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        if isinstance(error, MethodNotAllowed):
            headers["Allow"] = ", ".join(error.allowed)
        body = json.dumps(family.body(error, status), ensure_ascii=False)
        return Response(status_code=status, content_type=JSON, body=body, headers=headers)

    def _error_dict(self, error: RequestError, family: ErrorFamily, path: str) -> dict[str, Any]:
        response = self._error_response(error, family, path)
        return {
            "statusCode": response.status_code,
            "headers": {"Content-Type": JSON, **{k: str(v) for k, v in response.headers.items()}},
            "body": response.body,
            "isBase64Encoded": False,
        }

    # ------------------------------------------------------------------ direct path

    def _direct(
        self, payload: Any, request_id: str, deadline: Deadline, start: StartKind, stream: bool
    ) -> Any:
        family = self.native
        try:
            if not isinstance(payload, Mapping):
                raise InvalidBody(f"the payload must be a JSON object, got {type(payload).__name__}")
            if self._direct_select is None:
                raise NotFound("this function takes no direct invokes")
            key = self._direct_select(payload)
            spec = self.routes[key]
            family = spec.family
            invocation = Invocation(request_id, deadline, start, "direct", spec.path)
            token = self._invocation.set(invocation)
            try:
                request = None
                if spec.request is not None:
                    with self.tracing.span("parse request"):
                        request = parse_model(spec.request, payload, what="payload")
                answer = self._run(spec, request, invocation)
            finally:
                self._invocation.reset(token)
            if isinstance(answer, Stream):
                if stream:
                    return StreamingResponse(answer.media_type, answer.chunks())
                return answer.drain().decode("utf-8")
            body = answer.body if isinstance(answer, Reply) else answer
            if stream:  # this project's runtime posts bytes as they are: serialised once
                return self._json(body)
            return body.model_dump(mode="json") if isinstance(body, BaseModel) else body
        except RequestError as error:
            return self._direct_error(error, family)
        except Exception as exc:
            self.logger.exception("direct invoke failed")
            return self._direct_error(self._internal(exc), family)

    def _direct_error(self, error: RequestError, family: ErrorFamily) -> dict[str, Any]:
        status = family.status(error)
        self._log_refusal(error, status, "direct")
        return direct_error_body(error, status)

    # ------------------------------------------------------------------ answers

    def _run(self, spec: RouteSpec, request: BaseModel | None, invocation: Invocation) -> Answer:
        remaining = invocation.deadline.remaining_ms()
        if remaining is not None and remaining <= 0:
            raise NotEnoughTime(
                f"the invocation has less than DEADLINE_MARGIN_MS ({self.deadline_margin_ms:.0f} ms) left; "
                "nothing was done (raise the function timeout)"
            )
        with self.tracing.span("route", path=spec.path):
            answer = spec.func(invocation) if request is None else spec.func(request, invocation)
        if isinstance(answer, Stream):
            answer.family = spec.family
            answer.on_error = self._refusal_in_stream(answer.on_error, invocation.path)
        return answer

    def _refusal_in_stream(self, render: ErrorChunk | None, path: str) -> ErrorChunk:
        """An error that ends a stream after its first byte is a refusal too: logged and counted."""

        def counted(error: RequestError, status: int) -> bytes:
            self._log_refusal(error, status, path)
            return render(error, status) if render is not None else b""

        return counted

    def _json(self, value: Any) -> bytes:
        if isinstance(value, BaseModel):
            data = value.model_dump_json().encode("utf-8")
        else:
            data = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        if len(data) > self.max_response_bytes:
            raise TooLarge(
                f"the answer would be {len(data):,} bytes, over the {self.max_response_bytes:,}-byte limit "
                "of a Lambda response; ask for less per request"
            )
        return data

    def _response(self, answer: Answer, spec: RouteSpec) -> Response[Any]:
        if isinstance(answer, Stream):
            return Response(
                status_code=200, content_type=answer.media_type, body=answer, headers=answer.headers
            )
        if isinstance(answer, Reply):
            return Response(
                status_code=answer.status,
                content_type=JSON,
                body=self._json(answer.body).decode("utf-8"),
                headers=dict(answer.headers),
            )
        return Response(status_code=200, content_type=JSON, body=self._json(answer).decode("utf-8"))
