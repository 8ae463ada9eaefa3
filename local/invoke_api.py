"""The Lambda Invoke API of one local function, as the emulator serves it.

``aws lambda invoke --endpoint-url`` and boto3's ``invoke`` talk to this port
exactly as they would to the emulator: requests and answers pass through
unchanged, with two differences that make it behave more like Lambda:

- invokes are queued one at a time (see ``local.invoker``) instead of crashing
  the emulator when two arrive together;
- a function error gets Lambda's ``X-Amz-Function-Error: Unhandled`` header,
  which the emulator leaves out, so boto3 reports ``FunctionError`` and the AWS
  CLI prints it, as they do against a deployed function.
"""

from __future__ import annotations

import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from local.invoker import FunctionInvoker
from local.url_front import HOP_BY_HOP, MAX_PAYLOAD_BYTES, BackgroundServer, Logger

FORWARDED_HEADERS = (
    "content-type",
    "x-amz-invocation-type",
    "x-amz-log-type",
    "x-amz-client-context",
)


class InvokeApiHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: InvokeApiServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base-class signature
        pass

    def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        started = time.perf_counter()
        try:
            length = int(self.headers.get("content-length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_PAYLOAD_BYTES:
            self.close_connection = True
            body = b'{"Type":"User","message":"Request must be smaller than 6291456 bytes"}'
            self._reply(413, [("content-type", "application/json")], body)
            return
        payload = self.rfile.read(length)
        headers = {k: v for k, v in self.headers.items() if k.lower() in FORWARDED_HEADERS}
        outcome = self.server.invoker.invoke(payload, headers, path=self.path)
        answer_headers = list(outcome.headers.items())
        if outcome.function_error and not any(k.lower() == "x-amz-function-error" for k, _ in answer_headers):
            answer_headers.append(("X-Amz-Function-Error", outcome.function_error))
        answer_headers.append(("X-Amz-Executed-Version", "$LATEST"))
        self._reply(outcome.status, answer_headers, outcome.body)
        elapsed_ms = (time.perf_counter() - started) * 1000
        error = f" [{outcome.function_error}]" if outcome.function_error else ""
        self.server.log(f"invoke -> {outcome.status}{error} ({elapsed_ms:.0f} ms)")


class InvokeApiServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], invoker: FunctionInvoker, log: Logger) -> None:
        super().__init__(address, InvokeApiHandler)
        self.invoker = invoker
        self.log = log


class InvokeApi(BackgroundServer):
    """The Invoke API on ``http://host:port`` for one function; a context manager."""

    def __init__(self, invoker: FunctionInvoker, *, port: int, host: str = "127.0.0.1", log: Logger = print):
        super().__init__(InvokeApiServer((host, port), invoker, log), name=f"invoke-{port}")
