"""A local stand-in for a Lambda Function URL (auth type NONE), in either invoke mode.

Plain HTTP in; out to the function goes the payload-format-2.0 event a real
Function URL builds; the function's answer comes back mapped the way Lambda
maps it (AWS Lambda developer guide, "Invoking Lambda function URLs" and
"Invoking a response streaming enabled function using Lambda function URLs"):

- request headers are lower-cased, repeated ones joined with commas; cookies
  move from the ``cookie`` header to ``cookies``; repeated query parameters
  are comma-joined in ``queryStringParameters``;
- the body is passed as text for text content types and base64-encoded (with
  ``isBase64Encoded: true``) for everything else. AWS does not list the text
  types; we use the split observed on API Gateway's payload 2.0, which Function
  URLs share: ``text/*``, ``application/json``, ``application/xml`` and
  ``application/javascript`` are text; anything else, a missing content type
  and even ``application/x-www-form-urlencoded`` is base64. A text body that is
  not valid UTF-8 is base64-encoded too, so no byte is ever lost;
- invoke mode ``BUFFERED``: the whole answer, 6 MB at most. One with a
  ``statusCode`` is a structured response (status, headers, cookies as
  ``Set-Cookie`` headers, body, base64 body); any other JSON answer is sent as
  it is with status 200 and ``content-type: application/json``;
- invoke mode ``RESPONSE_STREAM``: the answer is sent as it is produced, with
  chunked transfer encoding, each piece flushed as it arrives. An answer in
  Lambda's HTTP-integration framing (content type
  ``application/vnd.awslambda.http-integration-response``: a JSON prelude with
  ``statusCode``, ``headers`` and ``cookies``, eight NUL bytes, then the body)
  gets its status and headers from the prelude; any other answer is the body
  as it is, status 200, with the function's own content type. An HTTP client
  that disconnects cancels the invoke, which stops the function's stream;
- a function error (an exception, a timeout, a crashed runtime) or an answer
  that is not a valid response is a 502 when nothing was sent yet, with the
  details in the console log; after the first byte the body just ends.

Built on the standard library's ``ThreadingHTTPServer``: no dependency to pin,
and raw access to repeated headers and the exact request target, which web
frameworks normalise away. Invokes queue in ``local.runtime_api.LocalFunction``,
which runs one at a time.
"""

from __future__ import annotations

import base64
import binascii
import json
import select
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self, get_args
from urllib.parse import parse_qsl, urlsplit

from local.runtime_api import (
    HTTP_INTEGRATION,
    BodyTooLarge,
    Call,
    Done,
    Event,
    Head,
    InvokeOutcome,
    LocalFunction,
    discard,
    read_chunks,
)
from stacks.config import UrlInvokeMode

MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
"""Lambda's buffered request and response payload limit (6 MB)."""

TEXT_MEDIA_TYPES = frozenset({"application/json", "application/xml", "application/javascript"})
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}
)

PRELUDE_DELIMITER = b"\0" * 8
MAX_PRELUDE_BYTES = 64 * 1024
"""A streamed answer whose prelude has not ended after this many bytes is refused (502)."""

INVOKE_MODES: tuple[UrlInvokeMode, ...] = get_args(UrlInvokeMode)
"""A Function URL's invoke modes (the deployment's, ``stacks.config.UrlInvokeMode``)."""

Logger = Callable[[str], None]


def is_text_media_type(content_type: str | None) -> bool:
    """True when a Function URL passes a body of this content type as text."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media.startswith("text/") or media in TEXT_MEDIA_TYPES


def _joined(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    joined: dict[str, str] = {}
    for name, value in pairs:
        joined[name] = f"{joined[name]},{value}" if name in joined else value
    return joined


def build_event(
    *,
    method: str,
    target: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    source_ip: str,
    url_id: str,
    server_port: int | None = None,
    request_id: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The payload-format-2.0 event a Function URL sends for one HTTP request."""
    now = now or datetime.now(UTC)
    parts = urlsplit(target)
    raw_path = parts.path or "/"
    cookies: list[str] = []
    header_pairs: list[tuple[str, str]] = []
    for name, value in headers:
        lower = name.lower()
        if lower == "cookie":
            cookies.extend(c.strip() for c in value.split(";") if c.strip())
        elif lower not in HOP_BY_HOP:
            header_pairs.append((lower, value))
    event_headers = _joined(header_pairs)
    event_headers.setdefault("x-forwarded-for", source_ip)
    event_headers.setdefault("x-forwarded-proto", "http")
    if server_port is not None:
        event_headers.setdefault("x-forwarded-port", str(server_port))
    event_headers["x-amzn-trace-id"] = f"Root=1-{int(now.timestamp()):08x}-{uuid.uuid4().hex[:24]}"
    host = event_headers.get("host", "localhost")
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": raw_path,
        "rawQueryString": parts.query,
        "headers": event_headers,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": url_id,
            "domainName": host,
            "domainPrefix": host.split(".", 1)[0].split(":", 1)[0],
            "http": {
                "method": method.upper(),
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": event_headers.get("user-agent", ""),
            },
            "requestId": request_id or str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = cookies
    if parts.query:
        event["queryStringParameters"] = _joined(parse_qsl(parts.query, keep_blank_values=True))
    if body:
        text = None
        if is_text_media_type(event_headers.get("content-type")):
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                text = None
        if text is None:
            event["body"] = base64.b64encode(body).decode("ascii")
            event["isBase64Encoded"] = True
        else:
            event["body"] = text
    return event


@dataclass(frozen=True)
class HttpAnswer:
    """An HTTP response ready to send."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


def _error_answer(status: int, message: str) -> HttpAnswer:
    body = json.dumps({"message": message}).encode()
    return HttpAnswer(status, [("content-type", "application/json")], body)


def bad_gateway() -> HttpAnswer:
    return _error_answer(HTTPStatus.BAD_GATEWAY, "Internal Server Error")


def map_response(outcome: InvokeOutcome) -> tuple[HttpAnswer, str | None]:
    """The HTTP response a Function URL makes of an invoke, and why it is a 502 if it is.

    An answer over 6 MB arrives here as a function error (``Call.result`` makes it one).
    """
    if outcome.function_error is not None:
        return bad_gateway(), f"function error: {outcome.body[:500].decode('utf-8', 'replace')}"
    payload = outcome.payload()
    if payload is None and outcome.body.strip() != b"null":
        return bad_gateway(), "the function's answer is not JSON"
    if not isinstance(payload, dict) or "statusCode" not in payload:
        # Lambda infers: status 200, JSON content type, the answer is the body.
        return HttpAnswer(200, [("content-type", "application/json")], outcome.body), None
    status = payload.get("statusCode")
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        return bad_gateway(), f"invalid statusCode {status!r}"
    headers_in = payload.get("headers") or {}
    if not isinstance(headers_in, Mapping):
        return bad_gateway(), "headers is not an object"
    headers = [(str(name), str(value)) for name, value in headers_in.items()]
    cookies = payload.get("cookies") or []
    if not isinstance(cookies, list):
        return bad_gateway(), "cookies is not a list"
    headers.extend(("set-cookie", str(cookie)) for cookie in cookies)
    raw_body = payload.get("body")
    if raw_body is None:
        body = b""
    elif isinstance(raw_body, str):
        if payload.get("isBase64Encoded") is True:
            try:
                body = base64.b64decode(raw_body, validate=True)
            except (binascii.Error, ValueError):
                return bad_gateway(), "isBase64Encoded is true but body is not base64"
        else:
            body = raw_body.encode("utf-8")
    else:
        body = json.dumps(raw_body).encode()
    if not any(name.lower() == "content-type" for name, _ in headers):
        headers.append(("content-type", "application/json"))
    return HttpAnswer(status, headers, body), None


def parse_prelude(raw: bytes) -> tuple[int, list[tuple[str, str]]] | str:
    """The status and headers of an HTTP-integration prelude, or why it is not a valid one."""
    try:
        prelude = json.loads(raw) if raw.strip() else {}
    except (ValueError, UnicodeDecodeError):
        return "the prelude of the streamed answer is not JSON"
    if not isinstance(prelude, dict):
        return "the prelude of the streamed answer is not a JSON object"
    status = prelude.get("statusCode", 200)
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        return f"invalid statusCode {status!r} in the prelude"
    headers_in = prelude.get("headers") or {}
    cookies = prelude.get("cookies") or []
    if not isinstance(headers_in, Mapping) or not isinstance(cookies, list):
        return "the prelude's headers must be an object and its cookies a list"
    headers = [(str(name), str(value)) for name, value in headers_in.items()]
    headers.extend(("set-cookie", str(cookie)) for cookie in cookies)
    return status, headers


def map_streamed_response(outcome: InvokeOutcome) -> tuple[HttpAnswer, str | None]:
    """A RESPONSE_STREAM URL's answer made of a whole invoke (for callers that do not stream)."""
    if outcome.function_error is not None:
        return bad_gateway(), f"function error: {outcome.body[:500].decode('utf-8', 'replace')}"
    if outcome.content_type.split(";", 1)[0].strip().lower() != HTTP_INTEGRATION:
        return HttpAnswer(200, [("content-type", outcome.content_type)], outcome.body), None
    raw, found, body = outcome.body.partition(PRELUDE_DELIMITER)
    parsed = parse_prelude(raw) if found else "the streamed answer has no prelude delimiter"
    if isinstance(parsed, str):
        return bad_gateway(), parsed
    status, headers = parsed
    return HttpAnswer(status, headers, body), None


class _BadRequest(Exception):
    pass


def _client_gone(connection: socket.socket) -> bool:
    """True when the HTTP client closed its connection (it reads as the end of the stream)."""
    try:
        readable, _, _ = select.select([connection], [], [], 0)
        return bool(readable) and connection.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def next_event(call: Call, connection: socket.socket) -> Event | None:
    """The invoke's next event; None (and the invoke cancelled) once the HTTP client has gone."""
    while True:
        event = call.next_event(0.2)
        if event is not None:
            return event
        if _client_gone(connection):
            call.cancel()
            return None


class FunctionUrlHandler(BaseHTTPRequestHandler):
    """Serves every method on every path by invoking the function."""

    protocol_version = "HTTP/1.1"  # keep-alive, as the OpenAI SDK's httpx client expects
    server: FunctionUrlServer

    def __getattr__(self, name: str) -> Any:
        # BaseHTTPRequestHandler dispatches to do_<METHOD>; a Function URL takes any method.
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base-class signature
        pass  # one access line per request is written by _serve

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            try:
                return b"".join(read_chunks(self.rfile, limit=MAX_PAYLOAD_BYTES))
            except (ValueError, ConnectionError):
                raise _BadRequest("malformed chunked encoding") from None
        length_header = self.headers.get("content-length")
        if not length_header:
            return b""
        try:
            length = int(length_header)
        except ValueError:
            raise _BadRequest(f"invalid Content-Length {length_header!r}") from None
        if length < 0:
            raise _BadRequest(f"invalid Content-Length {length_header!r}")
        if length > MAX_PAYLOAD_BYTES:
            discard(self.rfile, length)  # so that the client sees the 413 rather than a broken pipe
            raise BodyTooLarge(f"the body is over {MAX_PAYLOAD_BYTES} bytes")
        return self.rfile.read(length)

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # each chunk leaves at once

    def _send(self, answer: HttpAnswer, request_id: str) -> None:
        self.send_response(answer.status)
        for name, value in answer.headers:
            if name.lower() in HOP_BY_HOP or name.lower() == "content-length":
                continue
            self.send_header(name, value)
        self.send_header("x-amzn-requestid", request_id)
        self.send_header("content-length", str(len(answer.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer.body)

    def _serve(self) -> None:
        started = time.perf_counter()
        request_id = str(uuid.uuid4())
        note = None
        try:
            body = self._read_body()
        except BodyTooLarge:
            self.close_connection = True  # the unread body would poison the connection
            answer, note = _error_answer(413, "Request Entity Too Large"), "request body over 6 MB"
        except _BadRequest as exc:
            self.close_connection = True
            answer, note = _error_answer(400, "Bad Request"), str(exc)
        else:
            event = build_event(
                method=self.command,
                target=self.path,
                headers=self.headers.items(),
                body=body,
                source_ip=self.client_address[0],
                url_id=self.server.url_id,
                server_port=self.server.server_address[1],
                request_id=request_id,
            )
            call = self.server.function.invoke(json.dumps(event).encode())
            if self.server.invoke_mode == "RESPONSE_STREAM":
                status, note = self._stream(call, request_id)
                self._access(started, status, note)
                return
            answer, note = map_response(call.result())
        self._send(answer, request_id)
        self._access(started, answer.status, note)

    def _access(self, started: float, status: int | str, note: str | None) -> None:
        elapsed_ms = (time.perf_counter() - started) * 1000
        line = f"{self.command} {self.path} -> {status} ({elapsed_ms:.0f} ms)"
        self.server.log(line + (f": {note}" if note else ""))

    # -- RESPONSE_STREAM

    def _stream(self, call: Call, request_id: str) -> tuple[int | str, str | None]:
        """Send the answer as the function produces it; the status sent (or why none was) and a note."""
        head: Head | None = None
        ended: Done | None = None
        buffered = b""
        while ended is None:
            event = next_event(call, self.connection)
            if event is None:
                return "gone", "the client went away before the answer began"
            if isinstance(event, Done):
                if event.error is not None or head is None:
                    detail = (
                        event.error.payload[:500].decode("utf-8", "replace") if event.error else "no answer"
                    )
                    self._send(bad_gateway(), request_id)
                    return 502, f"function error: {detail}"
                ended = event  # the whole answer arrived before the prelude ended
                continue
            if isinstance(event, Head):
                head = event
                if event.content_type.split(";", 1)[0].strip().lower() != HTTP_INTEGRATION:
                    break
                continue
            buffered += event
            if PRELUDE_DELIMITER in buffered or len(buffered) > MAX_PRELUDE_BYTES:
                break
        assert head is not None
        if head.content_type.split(";", 1)[0].strip().lower() == HTTP_INTEGRATION:
            raw, found, rest = buffered.partition(PRELUDE_DELIMITER)
            parsed = parse_prelude(raw) if found else "the streamed answer's prelude does not end"
            if isinstance(parsed, str):
                call.cancel()
                self._send(bad_gateway(), request_id)
                return 502, parsed
            status, headers = parsed
        else:
            status, headers, rest = 200, [("content-type", head.content_type)], buffered
        if not any(name.lower() == "content-type" for name, _ in headers):
            headers.append(("content-type", "application/octet-stream"))
        return self._send_stream(call, request_id, status, headers, rest, ended)

    def _send_stream(
        self,
        call: Call,
        request_id: str,
        status: int,
        headers: list[tuple[str, str]],
        first: bytes,
        ended: Done | None,
    ) -> tuple[int, str | None]:
        """Status and headers, then ``first`` and every later piece as an HTTP chunk as it comes."""
        try:
            self.send_response(status)
            for name, value in headers:
                if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                    self.send_header(name, value)
            self.send_header("x-amzn-requestid", request_id)
            if self.command == "HEAD":
                self.send_header("content-length", "0")
                self.end_headers()
                call.cancel()
                return status, None
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            self._chunk(first)
            done = ended
            while done is None:
                event = next_event(call, self.connection)
                if event is None:
                    self.close_connection = True
                    return status, "the client went away mid-stream; the invoke was cancelled"
                if isinstance(event, bytes):
                    self._chunk(event)
                elif isinstance(event, Done):
                    done = event
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            call.cancel()
            self.close_connection = True
            return status, "the client went away mid-stream; the invoke was cancelled"
        if done.error is not None:
            self.close_connection = True
            return (
                status,
                f"the stream ended with a function error: {done.error.error_type}: {done.error.message}",
            )
        return status, None

    def _chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))


class FunctionUrlServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        function: LocalFunction,
        url_id: str,
        log: Logger,
        invoke_mode: UrlInvokeMode = "BUFFERED",
    ) -> None:
        if invoke_mode not in INVOKE_MODES:
            raise ValueError(f"invoke mode must be one of {', '.join(INVOKE_MODES)}, not {invoke_mode!r}")
        super().__init__(address, FunctionUrlHandler)
        self.function = function
        self.url_id = url_id
        self.log = log
        self.invoke_mode = invoke_mode


class BackgroundServer:
    """An HTTP server answering on a daemon thread; a context manager."""

    def __init__(self, server: ThreadingHTTPServer, *, name: str) -> None:
        self.server = server
        self._thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self.server.shutdown()
            self._thread.join(timeout=5)
        self.server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class FunctionUrlFront(BackgroundServer):
    """A Function URL on ``http://host:port`` for one function, in invoke mode BUFFERED or RESPONSE_STREAM."""

    def __init__(
        self,
        function: LocalFunction,
        *,
        port: int,
        host: str = "127.0.0.1",
        url_id: str = "local",
        invoke_mode: UrlInvokeMode = "BUFFERED",
        log: Logger = print,
    ) -> None:
        server = FunctionUrlServer((host, port), function, url_id, log, invoke_mode)
        super().__init__(server, name=f"url-{port}")

    @property
    def invoke_mode(self) -> UrlInvokeMode:
        server = self.server
        assert isinstance(server, FunctionUrlServer)
        return server.invoke_mode
