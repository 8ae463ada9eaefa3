"""The Lambda Invoke API of one local function: ``Invoke`` and ``InvokeWithResponseStream``.

``aws lambda invoke --endpoint-url`` and boto3's ``invoke`` /
``invoke_with_response_stream`` talk to this port as they would to Lambda
(botocore's service model for ``lambda`` 2015-03-31 names the routes and
headers):

- ``POST /2015-03-31/functions/{name}/invocations`` (``Invoke``): the whole
  answer; a streamed one is buffered first, as Lambda buffers it for this
  operation. A function error gets ``X-Amz-Function-Error: Unhandled`` and the
  error object as the payload, so boto3 reports ``FunctionError`` and the AWS
  CLI prints it. ``X-Amz-Invocation-Type: Event`` is answered 202 at once and
  runs afterwards; ``DryRun`` is answered 204. ``X-Amz-Log-Type: Tail`` returns
  the invoke's log lines (START to REPORT, last 4 KB) in ``X-Amz-Log-Result``.
- ``POST /2021-11-15/functions/{name}/response-streaming-invocations``
  (``InvokeWithResponseStream``): status 200 and an
  ``application/vnd.amazon.eventstream`` body (``local.eventstream``), sent with
  chunked transfer encoding: one ``PayloadChunk`` event per piece of the
  answer as the runtime produces it, then ``InvokeComplete``, with
  ``ErrorCode`` (the error type) and ``ErrorDetails`` (its message) when the
  invoke failed. A client that disconnects cancels the invoke.

The function name may be ``function`` (the emulator's name, which the README's
commands use) or the function's own; any other is a 404
``ResourceNotFoundException``. Payloads over 6 MB are refused with 413.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from local import eventstream
from local.runtime_api import Call, Done, LocalFunction
from local.url_front import HOP_BY_HOP, MAX_PAYLOAD_BYTES, BackgroundServer, Logger, next_event

INVOKE_PREFIX = "/2015-03-31/functions/"
INVOKE_SUFFIX = "/invocations"
STREAM_PREFIX = "/2021-11-15/functions/"
STREAM_SUFFIX = "/response-streaming-invocations"
EXECUTED_VERSION = "$LATEST"


class InvokeApiHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: InvokeApiServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base-class signature
        pass

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, error_type: str, message: str) -> None:
        body = json.dumps({"Type": "User", "message": message}).encode()
        self._reply(status, [("content-type", "application/json"), ("x-amzn-ErrorType", error_type)], body)

    def _operation(self) -> tuple[str, str] | None:
        """(``invoke`` or ``stream``, function name) of the request path, or None."""
        path = urlsplit(self.path).path
        for kind, prefix, suffix in (
            ("invoke", INVOKE_PREFIX, INVOKE_SUFFIX),
            ("stream", STREAM_PREFIX, STREAM_SUFFIX),
        ):
            if path.startswith(prefix) and path.endswith(suffix):
                return kind, unquote(path[len(prefix) : -len(suffix)])
        return None

    def do_POST(self) -> None:
        started = time.perf_counter()
        operation = self._operation()
        if operation is None:
            self._error(404, "UnknownOperationException", f"no Lambda operation at {self.path}")
            return
        kind, name = operation
        try:
            length = int(self.headers.get("content-length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_PAYLOAD_BYTES:
            self.close_connection = True
            self._error(413, "RequestTooLargeException", "Request must be smaller than 6291456 bytes")
            return
        payload = self.rfile.read(length)
        function = self.server.function
        if name not in ("function", function.spec.name):
            self._error(404, "ResourceNotFoundException", f"Function not found: {name}")
            return
        invocation_type = self.headers.get("x-amz-invocation-type", "RequestResponse")
        if invocation_type == "DryRun":
            self._reply(204, [], b"")
            return
        if invocation_type == "Event" and kind == "invoke":
            threading.Thread(target=lambda: function.invoke(payload).result(), daemon=True).start()
            self._reply(202, [], b"")
            self.server.log("invoke (Event) -> 202")
            return
        tail = self.headers.get("x-amz-log-type") == "Tail"
        call = function.invoke(payload, client_context=self.headers.get("x-amz-client-context"))
        answer = self._stream if kind == "stream" else self._buffered
        note = answer(call, tail)
        elapsed_ms = (time.perf_counter() - started) * 1000
        label = "invoke" if kind == "invoke" else "invoke-with-response-stream"
        self.server.log(f"{label} -> 200{note} ({elapsed_ms:.0f} ms)")

    def _log_result(self, call: Call) -> str:
        return base64.b64encode(self.server.function.log_tail(call).encode()).decode()

    def _buffered(self, call: Call, tail: bool) -> str:
        outcome = call.result()
        headers = [
            ("content-type", outcome.content_type),
            ("x-amz-executed-version", EXECUTED_VERSION),
            ("x-amzn-requestid", call.request_id),
        ]
        if outcome.function_error:
            headers.append(("x-amz-function-error", outcome.function_error))
        if tail:
            headers.append(("x-amz-log-result", self._log_result(call)))
        self._reply(200, headers, outcome.body)
        return f" [{outcome.error.error_type}]" if outcome.error else ""

    def _stream(self, call: Call, tail: bool) -> str:
        """The answer as event-stream messages, each sent as one HTTP chunk as soon as it is read."""
        try:
            self.send_response(200)
            self.send_header("content-type", eventstream.CONTENT_TYPE)
            self.send_header("x-amz-executed-version", EXECUTED_VERSION)
            self.send_header("x-amzn-requestid", call.request_id)
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            while True:
                event = next_event(call, self.connection)
                if event is None:
                    raise ConnectionResetError("the client went away")
                if isinstance(event, bytes):
                    for message in eventstream.payload_chunks(event):
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(message), message))
                elif isinstance(event, Done):
                    break
            error = event.error
            complete = eventstream.invoke_complete(
                error_code=error.error_type if error else None,
                error_details=error.message if error else None,
                log_result=self._log_result(call) if tail else None,
            )
            self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(complete), complete))
        except OSError:
            call.cancel()
            self.close_connection = True
            return " (the client went away; the invoke was cancelled)"
        return f" [{event.error.error_type}]" if event.error else ""


class InvokeApiServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], function: LocalFunction, log: Logger) -> None:
        super().__init__(address, InvokeApiHandler)
        self.function = function
        self.log = log


class InvokeApi(BackgroundServer):
    """The Invoke API on ``http://host:port`` for one function; a context manager."""

    def __init__(
        self, function: LocalFunction, *, port: int, host: str = "127.0.0.1", log: Logger = print
    ) -> None:
        super().__init__(InvokeApiServer((host, port), function, log), name=f"invoke-{port}")
