"""This project's Lambda runtime loop: the Runtime API spoken directly, so answers can stream.

The AWS runtime interface client for Python cannot stream a response. This
loop can, and does only what a runtime must (AWS Lambda developer guide,
"Using the Lambda runtime API for custom runtimes" and "Response streaming"):

1. init: import the handler (``module.attribute``); a failure is posted to
   ``/runtime/init/error`` and the process exits;
2. SnapStart (``AWS_LAMBDA_INITIALIZATION_TYPE=snap-start``): run the
   before-snapshot hooks, wait on ``/runtime/restore/next`` while Lambda takes
   the snapshot, then run the after-restore hooks (failures go to
   ``/runtime/init/error`` and ``/runtime/restore/error``);
3. forever: ``/runtime/invocation/next``, call the handler with the event and
   a context (request id, deadline, ARN; the X-Ray trace header in
   ``_X_AMZN_TRACE_ID``), post what it returns to ``.../response``, or its
   exception to ``.../error``.

A handler that returns a ``StreamingResponse`` is answered in streaming mode:
``Lambda-Runtime-Function-Response-Mode: streaming`` with chunked transfer
encoding, each chunk sent as soon as it is produced. For a Function URL event
the response has the content type
``application/vnd.awslambda.http-integration-response`` and starts with a JSON
prelude (status code, headers, cookies) and eight NUL bytes, so statuses and
headers reach HTTP clients in streaming mode too. An error after the first
byte cannot change the status any more: it ends the body and is reported in
the trailers ``Lambda-Runtime-Function-Error-Type`` and
``Lambda-Runtime-Function-Error-Body`` (base64 of the error JSON). When the
caller goes away mid-stream (the platform closes the connection or answers
early), the stream is closed, which stops the work producing it.

Which answers are framed for HTTP is the handler's decision (the request core
knows the URL's invoke mode): this loop frames what it is given.

Run it as ``python -m lambda_common.lambda_runtime handler.lambda_handler``.
"""

from __future__ import annotations

import base64
import http.client
import importlib
import json
import logging
import os
import select
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

from snapshot_restore_py import get_after_restore, get_before_snapshot

from lambda_common.streaming import StreamAborted, StreamingResponse

API_VERSION = "2018-06-01"
HTTP_INTEGRATION = "application/vnd.awslambda.http-integration-response"
PRELUDE_DELIMITER = b"\0" * 8
ERROR_TYPE = "Lambda-Runtime-Function-Error-Type"
ERROR_BODY = "Lambda-Runtime-Function-Error-Body"

_logger = logging.getLogger("lambda_runtime")

Handler = Callable[[Any, "Context"], Any]


# ---------------------------------------------------------------------- context


@dataclass
class Context:
    """The Lambda context object, as the AWS runtime clients give it to handlers."""

    aws_request_id: str
    deadline_ms: int
    invoked_function_arn: str
    client_context: Any = None
    identity: Any = None
    tenant_id: str | None = None

    function_name: str = field(default_factory=lambda: os.environ.get("AWS_LAMBDA_FUNCTION_NAME", ""))
    function_version: str = field(
        default_factory=lambda: os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
    )
    memory_limit_in_mb: str = field(
        default_factory=lambda: os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
    )
    log_group_name: str = field(default_factory=lambda: os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", ""))
    log_stream_name: str = field(default_factory=lambda: os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", ""))

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int(self.deadline_ms - time.time() * 1000))


@dataclass(frozen=True)
class Invocation:
    """One event from ``/runtime/invocation/next``."""

    request_id: str
    body: bytes
    headers: Mapping[str, str]

    def context(self) -> Context:
        def parsed(name: str) -> Any:
            raw = self.headers.get(name)
            return json.loads(raw) if raw else None

        return Context(
            aws_request_id=self.request_id,
            deadline_ms=int(self.headers.get("lambda-runtime-deadline-ms", "0") or 0),
            invoked_function_arn=self.headers.get("lambda-runtime-invoked-function-arn", ""),
            client_context=parsed("lambda-runtime-client-context"),
            identity=parsed("lambda-runtime-cognito-identity"),
            tenant_id=self.headers.get("lambda-runtime-aws-tenant-id"),
        )


def error_json(
    exc: BaseException, error_type: str | None = None, message: str | None = None
) -> dict[str, Any]:
    """The error object Lambda reports for a failed invocation or init."""
    return {
        "errorMessage": str(exc) if message is None else message,
        "errorType": error_type or type(exc).__name__,
        "stackTrace": traceback.format_exception(exc)[1:] if error_type is None else [],
    }


# ---------------------------------------------------------------------- the Runtime API


class RuntimeApiError(RuntimeError):
    """The Runtime API answered something a runtime cannot go on from."""


class CallerGone(Exception):
    """The platform closed a streamed response before it ended: nobody is reading any more."""


class RuntimeApi:
    """A client of the Lambda Runtime API at ``address`` (``AWS_LAMBDA_RUNTIME_API``)."""

    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        self.host = host or address
        self.port = int(port) if port else 80

    def _connection(self, timeout: float | None = None) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def _call(
        self, method: str, path: str, body: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> tuple[int, bytes, dict[str, str]]:
        connection = self._connection()
        try:
            connection.request(method, f"/{API_VERSION}{path}", body=body, headers=dict(headers or {}))
            response = connection.getresponse()
            return response.status, response.read(), {k.lower(): v for k, v in response.getheaders()}
        finally:
            connection.close()

    def next_invocation(self) -> Invocation:
        status, body, headers = self._call("GET", "/runtime/invocation/next")
        if status != 200:
            raise RuntimeApiError(f"/runtime/invocation/next answered {status}: {body[:200]!r}")
        request_id = headers.get("lambda-runtime-aws-request-id", "")
        return Invocation(request_id, body, headers)

    def respond(self, request_id: str, body: bytes, content_type: str = "application/json") -> None:
        self._expect_accepted(
            f"/runtime/invocation/{request_id}/response", body, {"Content-Type": content_type}
        )

    def invocation_error(self, request_id: str, error: Mapping[str, Any]) -> None:
        self._post_error(f"/runtime/invocation/{request_id}/error", error)

    def init_error(self, error: Mapping[str, Any]) -> None:
        self._post_error("/runtime/init/error", error)

    def restore_error(self, error: Mapping[str, Any]) -> None:
        self._post_error("/runtime/restore/error", error)

    def restore_next(self) -> None:
        """Wait while the snapshot is taken; returns in the restored environment.

        A checkpoint tool that closes TCP connections (CRIU's ``--tcp-close``, the
        local stand-in for SnapStart) makes this call fail at once after the
        restore: a connection that drops is a restore too.
        """
        try:
            status, body, _ = self._call("GET", "/runtime/restore/next")
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            return
        if status != 200:
            raise RuntimeApiError(f"/runtime/restore/next answered {status}: {body[:200]!r}")

    def _post_error(self, path: str, error: Mapping[str, Any]) -> None:
        headers = {"Content-Type": "application/json", ERROR_TYPE: str(error.get("errorType", "Unhandled"))}
        self._expect_accepted(path, json.dumps(error).encode(), headers)

    def _expect_accepted(self, path: str, body: bytes, headers: Mapping[str, str]) -> None:
        status, answer, _ = self._call("POST", path, body, headers)
        if status != 202:
            raise RuntimeApiError(f"{path} answered {status}: {answer[:200]!r}")

    def stream(self, request_id: str, response: StreamingResponse) -> None:
        """Post ``response`` as it is produced, in Lambda's streaming mode.

        Raises CallerGone when the platform stops reading part-way; the stream is
        closed first, so whatever produced it stops.
        """
        connection = self._connection()
        content_type = HTTP_INTEGRATION if response.prelude is not None else response.content_type
        connection.putrequest("POST", f"/{API_VERSION}/runtime/invocation/{request_id}/response")
        connection.putheader("Lambda-Runtime-Function-Response-Mode", "streaming")
        connection.putheader("Transfer-Encoding", "chunked")
        connection.putheader("Content-Type", content_type)
        connection.putheader("Trailer", f"{ERROR_TYPE}, {ERROR_BODY}")
        connection.endheaders()
        sock = connection.sock
        assert sock is not None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # every chunk leaves at once
        trailers = b""
        try:
            if response.prelude is not None:
                prelude = json.dumps(response.prelude, separators=(",", ":")).encode()
                _send_chunk(sock, prelude + PRELUDE_DELIMITER)
            try:
                for chunk in response.chunks:
                    _send_chunk(sock, chunk)
            except StreamAborted as aborted:
                trailers = _error_trailers(aborted.error_type, aborted.message)
            except (CallerGone, OSError):
                raise
            except Exception as exc:  # a producer that is not a lambda_common Stream failed part-way
                _logger.exception("producing the streamed response failed")
                trailers = _error_trailers(type(exc).__name__, str(exc))
            sock.sendall(b"0\r\n" + trailers + b"\r\n")
        except CallerGone:
            response.close()
            connection.close()
            raise
        except OSError as exc:
            response.close()
            connection.close()
            raise CallerGone(str(exc)) from None
        try:
            answer = connection.getresponse()
            body = answer.read()
        except (OSError, http.client.HTTPException) as exc:  # it closed instead of answering: gone too
            raise CallerGone(f"the Runtime API did not answer the streamed response: {exc!r}") from None
        finally:
            connection.close()
        if answer.status != 202:
            raise RuntimeApiError(f"the streamed response was answered {answer.status}: {body[:200]!r}")


def _send_chunk(sock: socket.socket, data: bytes) -> None:
    if not data:
        return
    readable, _, _ = select.select([sock], [], [], 0)
    if readable:  # the platform answered (or closed) before the end: the caller is gone
        raise CallerGone("the Runtime API stopped reading the streamed response")
    sock.sendall(b"%x\r\n%s\r\n" % (len(data), data))


def _error_trailers(error_type: str, message: str) -> bytes:
    body = base64.b64encode(json.dumps({"errorType": error_type, "errorMessage": message}).encode())
    return f"{ERROR_TYPE}: {error_type}\r\n".encode() + f"{ERROR_BODY}: ".encode() + body + b"\r\n"


# ---------------------------------------------------------------------- logging


class _LambdaFormatter(logging.Formatter):
    """Lambda's application log shapes: JSON (``AWS_LAMBDA_LOG_FORMAT=JSON``) or its text line."""

    def __init__(self, json_format: bool) -> None:
        super().__init__()
        self.json_format = json_format
        self.request_id: str | None = None

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        stamp += f".{int(record.msecs):03d}Z"
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        if not self.json_format:
            return f"[{record.levelname}]\t{stamp}\t{self.request_id or ''}\t{message}"
        entry = {
            "timestamp": stamp,
            "level": record.levelname,
            "message": message,
            "logger": record.name,
            "requestId": self.request_id,
        }
        return json.dumps(entry, ensure_ascii=False)


def _setup_logging() -> _LambdaFormatter:
    formatter = _LambdaFormatter(os.environ.get("AWS_LAMBDA_LOG_FORMAT", "").upper() == "JSON")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    level = os.environ.get("AWS_LAMBDA_LOG_LEVEL", "INFO").upper()
    root.setLevel(
        logging.getLevelName(level) if isinstance(logging.getLevelName(level), int) else logging.INFO
    )
    return formatter


# ---------------------------------------------------------------------- the loop


class InitFailure(Exception):
    """Loading the handler failed; ``error`` is what ``/runtime/init/error`` gets."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error["errorMessage"])
        self.error = error


def load_handler(spec: str) -> Handler:
    """Import ``module.attribute``; failures are InitFailures typed as the AWS runtime client types them.

    A malformed name, a module that cannot be imported (or has a syntax error)
    and a missing handler get ``Runtime.*`` types; any other exception raised
    while the module initialises is reported with its own type and stack.
    """
    module_name, _, attribute = spec.rpartition(".")
    if not module_name or not attribute:
        message = f"Bad handler '{spec}': it must be module.function"
        raise InitFailure(error_json(ValueError(message), "Runtime.MalformedHandlerName"))
    try:
        module = importlib.import_module(module_name)
    except SyntaxError as exc:
        message = f"Syntax error in module '{module_name}': {exc}"
        raise InitFailure(error_json(exc, "Runtime.UserCodeSyntaxError", message)) from exc
    except ImportError as exc:
        message = f"Unable to import module '{module_name}': {exc}"
        raise InitFailure(error_json(exc, "Runtime.ImportModuleError", message)) from exc
    except Exception as exc:
        raise InitFailure(error_json(exc)) from exc
    handler = getattr(module, attribute, None)
    if not callable(handler):
        message = f"Handler '{attribute}' missing on module '{module_name}'"
        raise InitFailure(error_json(AttributeError(message), "Runtime.HandlerNotFound"))
    return handler  # type: ignore[no-any-return]


def _run_hooks(hooks: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]]) -> None:
    for func, args, kwargs in hooks:
        func(*args, **kwargs)


def snapstart_lifecycle(api: RuntimeApi) -> None:
    """Before-snapshot hooks (last registered first), the snapshot, then the after-restore hooks."""
    try:
        _run_hooks(list(reversed(get_before_snapshot())))
    except Exception as exc:
        _logger.exception("before-snapshot hooks failed")
        api.init_error(error_json(exc, "Runtime.BeforeSnapshotError"))
        sys.exit(64)
    api.restore_next()  # a refusal here is the platform's: RuntimeApiError ends the process
    try:
        _run_hooks(list(get_after_restore()))
    except Exception as exc:
        _logger.exception("after-restore hooks failed")
        api.restore_error(error_json(exc, "Runtime.AfterRestoreError"))
        sys.exit(65)


def serve_one(api: RuntimeApi, handler: Handler, invocation: Invocation) -> None:
    """One invocation: call the handler and post its answer, its stream or its error."""
    trace = invocation.headers.get("lambda-runtime-trace-id")
    if trace:
        os.environ["_X_AMZN_TRACE_ID"] = trace
    else:
        os.environ.pop("_X_AMZN_TRACE_ID", None)
    if getattr(handler, "raw_payload", False):
        event: Any = invocation.body  # the handler decodes (and bounds) the payload itself
    else:
        try:
            event = json.loads(invocation.body) if invocation.body else None
        except (ValueError, RecursionError) as exc:
            api.invocation_error(invocation.request_id, error_json(exc, "Runtime.UnmarshalError"))
            return
    try:
        result = handler(event, invocation.context())
    except Exception as exc:
        _logger.exception("the handler raised")
        api.invocation_error(invocation.request_id, error_json(exc))
        return
    if isinstance(result, StreamingResponse):
        try:
            api.stream(invocation.request_id, result)
        except CallerGone as gone:
            _logger.warning("the caller went away mid-stream; generation stopped: %s", gone)
        return
    if isinstance(result, bytes):
        body = result
    else:
        try:
            body = json.dumps(result, ensure_ascii=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            api.invocation_error(invocation.request_id, error_json(exc, "Runtime.MarshalError"))
            return
    try:
        api.respond(invocation.request_id, body)
    except (RuntimeApiError, OSError, http.client.HTTPException) as refused:
        # e.g. 413 over 6 MB: Lambda has failed the invoke; this runtime serves the next one
        _logger.error("the Runtime API refused the response: %s", refused)


def invocations(api: RuntimeApi) -> Iterator[Invocation]:
    while True:
        yield api.next_invocation()


def main(argv: list[str] | None = None) -> NoReturn:
    args = sys.argv[1:] if argv is None else argv
    address = os.environ.get("AWS_LAMBDA_RUNTIME_API")
    if len(args) != 1 or not address:
        sys.stderr.write(
            "usage: AWS_LAMBDA_RUNTIME_API=host:port python -m lambda_common.lambda_runtime module.handler\n"
        )
        sys.exit(2)
    formatter = _setup_logging()
    api = RuntimeApi(address)
    task_root = os.environ.get("LAMBDA_TASK_ROOT")
    if task_root and task_root not in sys.path:
        sys.path.insert(0, task_root)
    try:
        handler = load_handler(args[0])
    except InitFailure as failure:
        _logger.error("init failed: %s: %s", failure.error["errorType"], failure.error["errorMessage"])
        api.init_error(failure.error)
        sys.exit(1)
    if os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE") == "snap-start":
        snapstart_lifecycle(api)
    for invocation in invocations(api):
        formatter.request_id = invocation.request_id
        serve_one(api, handler, invocation)
    raise AssertionError("unreachable")  # pragma: no cover


if __name__ == "__main__":
    main()
