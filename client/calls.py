"""Calls to the deployed functions (or the local ones): by name through the Invoke API, or over
their Function URLs, SigV4-signed or with the API key.

``endpoint_url`` points ``invoke_function`` at ``make local``'s Invoke API
(``http://127.0.0.1:9000``); botocore then still wants credentials (any
dummy values do: the local stand-in ignores them).
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO
from urllib.parse import urlsplit

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from benchmarks.lambda_logs import parse_line
from benchmarks.prices import CostInputError

URL_REGION = re.compile(r"\.lambda-url\.([a-z0-9-]+)\.on\.aws$")
ARN_REGION = re.compile(r"^arn:aws[a-z-]*:secretsmanager:([a-z0-9-]+):")


class ClientUsageError(Exception):
    """A problem with the command line or the environment, reported without a traceback."""


@dataclass
class Answer:
    """One call's outcome: what came back and how long it took."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)
    function_error: str | None = None
    report: dict[str, str] = field(default_factory=dict)
    """Lambda's REPORT line fields (Duration, Billed Duration, Init Duration...) when available."""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300 and self.function_error is None


def region_from_url(url: str) -> str | None:
    """The region in a Function URL's host name (``<id>.lambda-url.<region>.on.aws``)."""
    host = urlsplit(url).hostname or ""
    match = URL_REGION.search(host)
    return match.group(1) if match else None


def region_from_arn(arn: str) -> str | None:
    match = ARN_REGION.match(arn)
    return match.group(1) if match else None


def parse_report(log_tail: str) -> dict[str, str]:
    """The fields of the REPORT record in the log tail ``LogType=Tail`` returns.

    A function logging in text format ends its tail with a ``REPORT`` line; one in
    JSON format (this stack's functions) with a ``platform.report`` JSON record.
    Both are read by the cost model's parser and shown with the text line's names.
    """
    for line in reversed(log_tail.splitlines()):
        try:
            record = parse_line(line)
        except CostInputError:
            continue
        if record is None:
            continue
        fields = {
            "Duration": f"{record.duration_ms} ms",
            "Billed Duration": f"{record.billed_ms} ms",
            "Memory Size": f"{record.memory_mb} MB",
        }
        if record.max_memory_used_mb is not None:
            fields["Max Memory Used"] = f"{record.max_memory_used_mb} MB"
        if record.init_ms is not None:
            fields["Init Duration"] = f"{record.init_ms} ms"
        if record.restore_ms is not None:
            fields["Restore Duration"] = f"{record.restore_ms} ms"
        if record.billed_restore_ms is not None:
            fields["Billed Restore Duration"] = f"{record.billed_restore_ms} ms"
        return fields
    return {}


def read_data(value: str | None) -> bytes | None:
    """``--data``: inline text, ``@file``, or ``@-`` for standard input."""
    if value is None:
        return None
    if value == "@-":
        return sys.stdin.buffer.read()
    if value.startswith("@"):
        with open(value[1:], "rb") as handle:
            return handle.read()
    return value.encode()


def fetch_api_key(secret_arn: str, *, region: str | None = None, session: Any = None) -> str:
    """The API key stored as the secret's string value in Secrets Manager."""
    session = session or boto3.Session()
    client = session.client("secretsmanager", region_name=region or region_from_arn(secret_arn))
    try:
        value = client.get_secret_value(SecretId=secret_arn).get("SecretString")
    except (ClientError, BotoCoreError) as exc:
        raise ClientUsageError(f"cannot read the API key from {secret_arn}: {exc}") from None
    if not isinstance(value, str) or not value.strip():
        raise ClientUsageError(f"secret {secret_arn} holds no string value")
    return value.strip()


def sigv4_headers(
    *,
    method: str,
    url: str,
    body: bytes | None,
    headers: Mapping[str, str],
    region: str,
    session: Any = None,
) -> dict[str, str]:
    """Headers for an AWS_IAM Function URL request, signed with SigV4 for service ``lambda``."""
    session = session or boto3.Session()
    credentials = session.get_credentials()
    if credentials is None:
        raise ClientUsageError(
            "no AWS credentials found for SigV4 signing (configure a profile, or set AWS_PROFILE "
            "or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
        )
    request = AWSRequest(method=method, url=url, data=body or b"", headers=dict(headers))
    SigV4Auth(credentials.get_frozen_credentials(), "lambda", region).add_auth(request)
    return {name: str(value) for name, value in request.headers.items()}


def http_call(
    method: str,
    url: str,
    body: bytes | None,
    headers: Mapping[str, str],
    *,
    timeout_s: float,
    on_chunk: Callable[[bytes], None] | None = None,
) -> Answer:
    """One HTTP request, timing connection, first byte and the whole answer.

    ``on_chunk`` gets each piece of the body as it arrives (a streamed answer), besides the
    whole body in the Answer.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ClientUsageError(f"not an http(s) URL: {url}")
    connection_type = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = connection_type(parts.hostname, parts.port, timeout=timeout_s)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    started = time.perf_counter()
    try:
        connection.connect()
        connected = time.perf_counter()
        connection.request(method, target, body=body, headers=dict(headers))
        response = connection.getresponse()
        first_byte = time.perf_counter()
        if on_chunk is None:
            data = response.read()
        else:
            pieces: list[bytes] = []
            while piece := response.read1(65536):
                pieces.append(piece)
                on_chunk(piece)
            data = b"".join(pieces)
        done = time.perf_counter()
    except OSError as exc:
        raise ClientUsageError(f"{method} {url} failed: {exc}") from None
    finally:
        connection.close()
    return Answer(
        status=response.status,
        body=data,
        headers={name.lower(): value for name, value in response.getheaders()},
        timings_ms={
            "connect": (connected - started) * 1000,
            "first_byte": (first_byte - started) * 1000,
            "total": (done - started) * 1000,
        },
    )


def call_url(
    base_url: str,
    *,
    path: str = "",
    method: str = "POST",
    data: bytes | None = None,
    auth: str = "auto",
    api_key: str | None = None,
    api_key_secret_arn: str | None = None,
    region: str | None = None,
    extra_headers: Mapping[str, str] | None = None,
    timeout_s: float = 900.0,
    session: Any = None,
    on_chunk: Callable[[bytes], None] | None = None,
) -> Answer:
    """Call a Function URL with the authentication it needs (``on_chunk``: see ``http_call``)."""
    url = base_url.rstrip("/") + ("/" + path.lstrip("/") if path else "")
    headers = {"accept": "application/json", "user-agent": "lambda-llm-client"}
    if data is not None:
        headers["content-type"] = "application/json"
    headers.update(extra_headers or {})
    if auth == "auto":
        if api_key or api_key_secret_arn:
            auth = "api-key"
        elif region_from_url(url):
            auth = "iam"
        else:
            auth = "none"
    if auth == "api-key":
        key = api_key or (fetch_api_key(api_key_secret_arn, session=session) if api_key_secret_arn else None)
        if not key:
            raise ClientUsageError("--auth api-key needs --api-key, API_KEY, or --api-key-secret-arn")
        headers["authorization"] = f"Bearer {key}"
    elif auth == "iam":
        signing_region = region or region_from_url(url) or (session or boto3.Session()).region_name
        if not signing_region:
            raise ClientUsageError("cannot tell the region for SigV4 from the URL: pass --region")
        headers = sigv4_headers(
            method=method, url=url, body=data, headers=headers, region=signing_region, session=session
        )
    elif auth != "none":
        raise ClientUsageError(f"unknown auth mode {auth!r}: use auto, iam, api-key or none")
    return http_call(method, url, data, headers, timeout_s=timeout_s, on_chunk=on_chunk)


def lambda_client(
    session: Any,
    region: str | None,
    endpoint_url: str | None,
    timeout_s: float,
    *,
    max_pool_connections: int = 10,
) -> Any:
    """A Lambda client that waits ``timeout_s`` for an answer and never retries (a retry would run twice).

    ``max_pool_connections`` (botocore's default: 10) bounds the invokes it can have in flight at once.
    """
    return (session or boto3.Session()).client(
        "lambda",
        region_name=region,
        endpoint_url=endpoint_url,
        config=Config(
            read_timeout=timeout_s,
            connect_timeout=10,
            retries={"max_attempts": 1},
            max_pool_connections=max_pool_connections,
        ),
    )


def invoke_function(
    function_name: str,
    payload: bytes,
    *,
    region: str | None = None,
    endpoint_url: str | None = None,
    timeout_s: float = 900.0,
    session: Any = None,
) -> Answer:
    """Invoke a function by name (RequestResponse), asking for the log tail's REPORT line."""
    client = lambda_client(session, region, endpoint_url, timeout_s)
    started = time.perf_counter()
    try:
        response = client.invoke(FunctionName=function_name, Payload=payload, LogType="Tail")
        body = response["Payload"].read()
    except (ClientError, BotoCoreError) as exc:
        raise ClientUsageError(f"invoke {function_name} failed: {exc}") from None
    total = (time.perf_counter() - started) * 1000
    metadata = response.get("ResponseMetadata", {})
    log_tail = response.get("LogResult")
    report = parse_report(base64.b64decode(log_tail).decode("utf-8", "replace")) if log_tail else {}
    return Answer(
        status=int(response.get("StatusCode", 0)),
        body=body,
        headers={k.lower(): v for k, v in metadata.get("HTTPHeaders", {}).items()},
        timings_ms={"total": total},
        function_error=response.get("FunctionError"),
        report=report,
    )


def invoke_streaming(
    function_name: str,
    payload: bytes,
    on_chunk: Callable[[bytes], None],
    *,
    region: str | None = None,
    endpoint_url: str | None = None,
    timeout_s: float = 900.0,
    session: Any = None,
) -> Answer:
    """Invoke with InvokeWithResponseStream, passing each PayloadChunk to ``on_chunk`` as it arrives."""
    client = lambda_client(session, region, endpoint_url, timeout_s)
    started = time.perf_counter()
    first: float | None = None
    parts: list[bytes] = []
    function_error = None
    log_tail = None
    try:
        response = client.invoke_with_response_stream(
            FunctionName=function_name, Payload=payload, LogType="Tail"
        )
        for event in response["EventStream"]:
            if "PayloadChunk" in event:
                piece = event["PayloadChunk"]["Payload"]
                if first is None:
                    first = time.perf_counter()
                parts.append(piece)
                on_chunk(piece)
            elif "InvokeComplete" in event:
                complete = event["InvokeComplete"]
                if complete.get("ErrorCode"):
                    function_error = f"{complete['ErrorCode']}: {complete.get('ErrorDetails', '')}"
                log_tail = complete.get("LogResult")
    except (ClientError, BotoCoreError) as exc:
        raise ClientUsageError(f"invoke-with-response-stream {function_name} failed: {exc}") from None
    done = time.perf_counter()
    timings = {"first_byte": ((first or done) - started) * 1000, "total": (done - started) * 1000}
    return Answer(
        status=int(response.get("StatusCode", 0)),
        body=b"".join(parts),
        headers={
            k.lower(): v for k, v in response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).items()
        },
        timings_ms=timings,
        function_error=function_error,
        report=parse_report(base64.b64decode(log_tail).decode("utf-8", "replace")) if log_tail else {},
    )


def render(answer: Answer, out: TextIO, err: TextIO) -> None:
    """Answer body to ``out`` (pretty JSON when it is JSON), status and timings to ``err``."""
    try:
        out.write(json.dumps(json.loads(answer.body), indent=2, ensure_ascii=False) + "\n")
    except (ValueError, UnicodeDecodeError):
        out.write(answer.body.decode("utf-8", "replace"))
        if answer.body and not answer.body.endswith(b"\n"):
            out.write("\n")
    write_summary(answer, err)


def write_summary(answer: Answer, err: TextIO, *, events: int | None = None) -> None:
    """To ``err``: status (and function error), ``events`` if counted, timings, Lambda's REPORT fields."""
    line = f"status {answer.status}"
    if answer.function_error:
        line += f", function error: {answer.function_error}"
    if events is not None:
        line += f"; {events} events"
    timings = ", ".join(
        f"{name.replace('_', ' ')} {value:.0f} ms" for name, value in answer.timings_ms.items()
    )
    err.write(f"{line}; {timings}\n")
    if answer.report:
        err.write("lambda: " + ", ".join(f"{name} {value}" for name, value in answer.report.items()) + "\n")
