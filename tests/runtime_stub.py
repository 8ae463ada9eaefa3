"""A stub of Lambda's Runtime API for testing a runtime loop in-process: it records every request.

Lambda itself cannot run here; this plays its side of the Runtime API only as
far as a test needs: ``/invocation/next`` hands out queued events, responses
and errors are accepted (202) and recorded, a streamed response is recorded
chunk by chunk (each HTTP chunk as the runtime sent it) with its trailers,
``/restore/next`` answers at once, and any other GET (``/test/...``, which a
test's hooks may call) is recorded and answered 200, so the order of every
call is on one timeline. ``hang_up_after`` makes it shut a streamed response's
connection after that many chunks, as Lambda does when the caller went away.
"""

from __future__ import annotations

import json
import queue
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""
    chunks: list[bytes] = field(default_factory=list)
    trailers: dict[str, str] = field(default_factory=dict)
    complete: bool = True
    """False for a streamed response the stub hung up on."""

    def json(self) -> Any:
        return json.loads(self.body)


class RuntimeApiStub:
    """The stub on 127.0.0.1; ``address`` is what AWS_LAMBDA_RUNTIME_API takes. A context manager."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.events: queue.Queue[tuple[str, bytes, dict[str, str]]] = queue.Queue()
        self.hang_up_after: int | None = None
        self.hung_up = threading.Event()
        self.received = threading.Condition()
        self.response_status = 202
        self.next_timeout_s = 1.0
        """How long /invocation/next waits for an event before answering 500 (a loop then exits)."""
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base-class name
                pass

            def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _record(self, recorded: Recorded) -> None:
                with stub.received:
                    stub.requests.append(recorded)
                    stub.received.notify_all()

            def do_GET(self) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                self._record(Recorded("GET", self.path, headers))
                if self.path.endswith("/runtime/invocation/next"):
                    try:
                        request_id, body, extra = stub.events.get(timeout=stub.next_timeout_s)
                    except queue.Empty:
                        self._reply(500, b'{"errorType": "Stub.NoEvent"}')
                        return
                    answer = {
                        "Lambda-Runtime-Aws-Request-Id": request_id,
                        "Lambda-Runtime-Deadline-Ms": "9999999999999",
                        "Lambda-Runtime-Invoked-Function-Arn": "arn:aws:lambda:us-east-1:0:function:f",
                        **extra,
                    }
                    self._reply(200, body, answer)
                    return
                self._reply(200)

            def do_POST(self) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                recorded = Recorded("POST", self.path, headers)
                if "chunked" not in headers.get("transfer-encoding", ""):
                    recorded.body = self.rfile.read(int(headers.get("content-length") or 0))
                    self._record(recorded)
                    self._reply(stub.response_status, b'{"status": "OK"}')
                    return
                self._record(recorded)
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        break
                    with stub.received:
                        recorded.chunks.append(self.rfile.read(size))
                        stub.received.notify_all()
                    self.rfile.readline()
                    if stub.hang_up_after is not None and len(recorded.chunks) >= stub.hang_up_after:
                        recorded.complete = False
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        stub.hung_up.set()
                        return
                while (line := self.rfile.readline().strip()) != b"":
                    name, _, value = line.decode().partition(":")
                    recorded.trailers[name.strip().lower()] = value.strip()
                recorded.body = b"".join(recorded.chunks)
                self._reply(stub.response_status, b'{"status": "OK"}')

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{host!s}:{port}"

    def queue_event(self, request_id: str, event: Any, headers: dict[str, str] | None = None) -> None:
        body = event if isinstance(event, bytes) else json.dumps(event).encode()
        self.events.put((request_id, body, headers or {}))

    def paths(self) -> list[str]:
        return [f"{r.method} {r.path.removeprefix('/2018-06-01')}" for r in self.requests]

    def posts(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST"]

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
