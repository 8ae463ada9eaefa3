"""The Function URL front and the Invoke API pass-through, against a throwaway handler.

The handler (written to a temporary folder) echoes the event it was given or
misbehaves on request, and runs under the real awslambdaric, started by the
Runtime API stand-in (``local.runtime_api``) as ``make local`` starts every
function, so these tests check the mapping between HTTP and Lambda without
depending on the project's real handlers. The URL here is in invoke mode
BUFFERED, as the echo function's plan says; tests/test_runtime_api.py covers
RESPONSE_STREAM.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from local.runtime_api import FunctionError, InvokeOutcome
from local.stack import RunningFunction
from local.url_front import build_event, is_text_media_type, map_response
from tests.conftest import lambda_client
from tests.harness import echo_function


@pytest.fixture(scope="module")
def echo_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFunction]:
    with echo_function(tmp_path_factory.mktemp("echo")) as function:
        yield function


def request(
    function: RunningFunction,
    method: str,
    target: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, http.client.HTTPMessage, bytes]:
    port = function.url_front.port
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, target, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.msg, response.read()
    finally:
        connection.close()


def echoed_event(function: RunningFunction, method: str, target: str, **kwargs: Any) -> dict[str, Any]:
    status, _, body = request(function, method, target, **kwargs)
    assert status == 200, body
    event: dict[str, Any] = json.loads(body)
    return event


# --- the event a request becomes -------------------------------------------------


def test_post_json_becomes_a_text_body_with_lowercased_headers(echo_stack: RunningFunction) -> None:
    # Given a JSON POST with mixed-case headers
    # When it goes through the front
    event = echoed_event(
        echo_stack,
        "POST",
        "/v1/things",
        body=b'{"a": 1}',
        headers={"Content-Type": "application/json", "X-Mixed-Case": "Value"},
    )
    # Then the handler sees a payload-format-2.0 event with the JSON as text
    assert event["version"] == "2.0"
    assert event["rawPath"] == "/v1/things"
    assert event["requestContext"]["http"]["method"] == "POST"
    assert event["requestContext"]["http"]["path"] == "/v1/things"
    assert event["requestContext"]["http"]["sourceIp"] == "127.0.0.1"
    assert event["headers"]["x-mixed-case"] == "Value"
    assert event["headers"]["content-type"] == "application/json"
    assert event["body"] == '{"a": 1}'
    assert event["isBase64Encoded"] is False
    assert isinstance(event["requestContext"]["timeEpoch"], int)
    assert event["requestContext"]["requestId"]


def test_binary_body_is_base64_encoded(echo_stack: RunningFunction) -> None:
    # Given bytes that are not text, sent as application/octet-stream
    raw = bytes(range(256))
    # When posted to the front
    event = echoed_event(
        echo_stack, "POST", "/upload", body=raw, headers={"Content-Type": "application/octet-stream"}
    )
    # Then the body arrives base64-encoded and decodes to the same bytes
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == raw


def test_form_encoded_body_is_base64_encoded_like_a_function_url(echo_stack: RunningFunction) -> None:
    # Given curl's default content type for -d
    event = echoed_event(
        echo_stack,
        "POST",
        "/",
        body=b'{"inputs": "x"}',
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    # Then it is base64, as a real Function URL does it
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b'{"inputs": "x"}'


def test_query_string_repeated_headers_and_cookies(echo_stack: RunningFunction) -> None:
    # Given a query with a repeated and an encoded parameter, a repeated header and two cookies
    port = echo_stack.url_front.port
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.putrequest("GET", "/search?q=llamas%20are&tag=a&tag=b&empty=")
    connection.putheader("X-Repeat", "one")
    connection.putheader("X-Repeat", "two")
    connection.putheader("Cookie", "session=abc; theme=dark")
    connection.endheaders()
    response = connection.getresponse()
    event = json.loads(response.read())
    connection.close()
    # Then the event carries them as a Function URL would
    assert response.status == 200
    assert event["rawQueryString"] == "q=llamas%20are&tag=a&tag=b&empty="
    assert event["queryStringParameters"] == {"q": "llamas are", "tag": "a,b", "empty": ""}
    assert event["headers"]["x-repeat"] == "one,two"
    assert event["cookies"] == ["session=abc", "theme=dark"]
    assert "cookie" not in event["headers"]
    assert "body" not in event


def test_chunked_request_body_is_reassembled(echo_stack: RunningFunction) -> None:
    # Given a body sent with chunked transfer encoding (no Content-Length)
    port = echo_stack.url_front.port
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request(
        "POST",
        "/chunked",
        body=iter([b'{"part": ', b'"one"}']),
        headers={"Content-Type": "application/json"},
        encode_chunked=True,
    )
    response = connection.getresponse()
    event = json.loads(response.read())
    connection.close()
    # Then the function gets the whole body
    assert response.status == 200
    assert json.loads(event["body"]) == {"part": "one"}


def test_keep_alive_connection_serves_several_requests(echo_stack: RunningFunction) -> None:
    # Given one HTTP/1.1 connection, as httpx (the OpenAI SDK) keeps
    connection = http.client.HTTPConnection("127.0.0.1", echo_stack.url_front.port, timeout=30)
    statuses = []
    for index in range(3):
        connection.request("POST", f"/n/{index}", body=b"{}", headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        statuses.append((response.status, json.loads(response.read())["rawPath"]))
    connection.close()
    # Then each request got its own answer on the same connection
    assert statuses == [(200, "/n/0"), (200, "/n/1"), (200, "/n/2")]


# --- the response a function's answer becomes ---------------------------------------


def test_structured_response_maps_status_headers_cookies_body(echo_stack: RunningFunction) -> None:
    status, headers, body = request(echo_stack, "GET", "/structured")
    assert status == 201
    assert body == b"created"
    assert headers["Content-Type"] == "text/plain"
    assert headers["X-Custom"] == "yes"
    assert headers.get_all("Set-Cookie") == ["a=1; Max-Age=60", "b=2"]
    assert headers["x-amzn-RequestId"]


def test_base64_response_body_is_decoded(echo_stack: RunningFunction) -> None:
    status, headers, body = request(echo_stack, "GET", "/binary")
    assert status == 200
    assert headers["Content-Type"] == "application/octet-stream"
    assert body == bytes(range(256))


def test_answer_without_status_code_is_a_json_200(echo_stack: RunningFunction) -> None:
    status, headers, body = request(echo_stack, "GET", "/plain-json")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"message": "no statusCode here"}
    status, _, body = request(echo_stack, "GET", "/string")
    assert status == 200
    assert body == b'"Hello, world!"'


def test_head_request_gets_headers_without_body(echo_stack: RunningFunction) -> None:
    status, headers, body = request(echo_stack, "HEAD", "/structured")
    assert status == 201
    assert body == b""
    assert headers["Content-Length"] == "7"


@pytest.mark.parametrize("path", ["/raise", "/bad-status"])
def test_function_error_or_invalid_answer_is_a_502(echo_stack: RunningFunction, path: str) -> None:
    # When the function raises or answers with a malformed response
    status, _, body = request(echo_stack, "GET", path)
    # Then the client gets a 502 and no stack trace
    assert status == 502
    assert json.loads(body) == {"message": "Internal Server Error"}
    # And the function keeps serving
    assert request(echo_stack, "GET", "/ok")[0] == 200


def test_request_over_six_megabytes_is_refused_before_invoking(echo_stack: RunningFunction) -> None:
    invocations = echo_stack.function.invocations
    status, _, _ = request(
        echo_stack, "POST", "/", body=b"x" * (6 * 1024 * 1024 + 1), headers={"Content-Type": "text/plain"}
    )
    assert status == 413
    assert echo_stack.function.invocations == invocations


@pytest.mark.slow
def test_concurrent_requests_queue_in_one_environment(echo_stack: RunningFunction) -> None:
    # Given one execution environment (Lambda would start more; locally they queue)
    pids_before = echo_stack.runtime_pids()
    assert pids_before
    log = echo_stack.function.log_path
    logged_before = log.stat().st_size
    results: list[int] = []

    def call() -> None:
        results.append(request(echo_stack, "GET", "/sleep")[0])

    # When six requests arrive at once
    threads = [threading.Thread(target=call) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then all succeed, one after the other, and the runtime is the same process
    assert results == [200] * 6
    assert echo_stack.emulator_alive()
    assert echo_stack.runtime_pids() == pids_before
    # And one after the other: each START follows the previous END in the function's log
    with log.open("rb") as handle:
        handle.seek(logged_before)
        lines = [line for line in handle.read().decode().splitlines() if line.startswith(("START", "END"))]
    assert [line.split()[0] for line in lines] == ["START", "END"] * 6


@pytest.mark.slow
def test_runtime_crash_is_a_502_and_the_next_request_gets_a_new_runtime(
    echo_stack: RunningFunction,
) -> None:
    # Given a warm runtime
    before = int(request(echo_stack, "GET", "/pid")[2])
    # When the runtime process exits mid-request
    status, _, _ = request(echo_stack, "GET", "/exit")
    # Then the client gets a 502 and the next request gets a fresh runtime, as on Lambda
    assert status == 502
    after_status, _, after_body = request(echo_stack, "GET", "/pid")
    assert after_status == 200
    assert int(after_body) != before


def test_stop_reaps_the_runtime(tmp_path: Path) -> None:
    # Given a warm function, whose runtime runs in a session of its own
    with echo_function(tmp_path) as function:
        runtime = function.runtime_pids()
        assert runtime
    # When the stack stops, then no runtime process is left behind
    for pid in runtime:
        state = Path(f"/proc/{pid}/stat")
        assert not state.exists() or state.read_text().rsplit(")", 1)[1].split()[0] == "Z"


# --- the Invoke API ------------------------------------------------------------------------


def test_boto3_invoke_passes_the_payload_through(echo_stack: RunningFunction) -> None:
    client = lambda_client(echo_stack.endpoint)
    answer = client.invoke(FunctionName="function", Payload=json.dumps({"direct": True}).encode())
    assert answer["StatusCode"] == 200
    assert "FunctionError" not in answer
    payload = json.loads(answer["Payload"].read())
    assert json.loads(payload["body"]) == {"direct": True}


def test_boto3_invoke_reports_a_function_error_as_lambda_does(echo_stack: RunningFunction) -> None:
    client = lambda_client(echo_stack.endpoint)
    answer = client.invoke(FunctionName="function", Payload=b'{"raise": true}')
    assert answer["FunctionError"] == "Unhandled"
    error = json.loads(answer["Payload"].read())
    assert error["errorType"] == "ValueError"
    assert error["errorMessage"] == "raised on purpose"


# --- pure functions --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "text"),
    [
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("text/plain", True),
        ("text/event-stream", True),
        ("application/xml", True),
        ("application/octet-stream", False),
        ("application/x-www-form-urlencoded", False),
        ("multipart/form-data; boundary=x", False),
        (None, False),
    ],
)
def test_text_media_types(content_type: str | None, text: bool) -> None:
    assert is_text_media_type(content_type) is text


def test_invalid_utf8_in_a_text_body_is_base64_encoded_not_mangled() -> None:
    event = build_event(
        method="POST",
        target="/",
        headers=[("Content-Type", "text/plain")],
        body=b"\xff\xfe",
        source_ip="127.0.0.1",
        url_id="x",
        now=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b"\xff\xfe"
    assert event["requestContext"]["time"] == "02/Jan/2026:03:04:05 +0000"
    assert event["requestContext"]["timeEpoch"] == 1767323045000


def test_a_function_error_is_a_502() -> None:
    error = FunctionError.of("Sandbox.Timedout", "RequestId: x Error: Task timed out after 3.00 seconds")
    outcome = InvokeOutcome(error.payload, function_error="Unhandled", error=error)
    answer, note = map_response(outcome)
    assert answer.status == 502
    assert note is not None
    assert "timed out" in note


def test_os_environ_is_not_changed_by_the_stack(echo_stack: RunningFunction) -> None:
    # Given the stack started and serving (its runtime process gets the Lambda variables)
    assert request(echo_stack, "GET", "/pid")[0] == 200
    # Then this process did not get them: the stack passes them to the runtime process only
    assert "AWS_LAMBDA_FUNCTION_NAME" not in os.environ
