"""The project's runtime loop (lambda_common.lambda_runtime) against a stub of Lambda's Runtime API.

Lambda cannot run here, so ``tests.runtime_stub`` plays its side of the
Runtime API in-process and records every request, chunk and trailer. One
invocation is served with ``serve_one`` in this process; the init and SnapStart
paths run the loop as Lambda starts it, ``python -m lambda_common.lambda_runtime``,
in a subprocess whose hooks call the stub, so every call lands on one timeline.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lambda_common.errors import InvalidBody
from lambda_common.lambda_runtime import (
    ERROR_BODY,
    ERROR_TYPE,
    HTTP_INTEGRATION,
    PRELUDE_DELIMITER,
    InitFailure,
    Invocation,
    RuntimeApi,
    load_handler,
    serve_one,
)
from lambda_common.streaming import Stream, StreamingResponse
from local.rie import COMMON
from tests.conftest import function_url_event
from tests.runtime_stub import Recorded, RuntimeApiStub


@pytest.fixture
def stub() -> Iterator[RuntimeApiStub]:
    with RuntimeApiStub() as running:
        yield running


def invoke(stub: RuntimeApiStub, handler: Any, event: Any = None, request_id: str = "req-1") -> Recorded:
    """Serve one invocation of ``event`` with ``handler``; the stub's record of the answer."""
    stub.queue_event(request_id, event if event is not None else {"x": 1})
    api = RuntimeApi(stub.address)
    serve_one(api, handler, api.next_invocation())
    answers = [r for r in stub.posts() if f"/invocation/{request_id}/" in r.path]
    assert len(answers) == 1, stub.paths()
    return answers[0]


# --- buffered answers and errors ------------------------------------------------------------------


def test_a_returned_object_is_posted_whole_as_json(stub: RuntimeApiStub) -> None:
    # Given a handler that returns an object
    # When the loop serves one invocation
    answer = invoke(stub, lambda event, context: {"echo": event, "id": context.aws_request_id})
    # Then it is posted to .../response in one piece, as JSON
    assert answer.path == "/2018-06-01/runtime/invocation/req-1/response"
    assert "lambda-runtime-function-response-mode" not in answer.headers
    assert answer.json() == {"echo": {"x": 1}, "id": "req-1"}


def test_an_exception_is_an_invocation_error_with_its_type(stub: RuntimeApiStub) -> None:
    def handler(event: Any, context: Any) -> Any:
        raise ValueError("bad value")

    answer = invoke(stub, handler)
    assert answer.path == "/2018-06-01/runtime/invocation/req-1/error"
    assert answer.headers[ERROR_TYPE.lower()] == "ValueError"
    error = answer.json()
    assert error["errorType"] == "ValueError"
    assert error["errorMessage"] == "bad value"
    assert any("raise ValueError" in line for line in error["stackTrace"])


def test_a_refused_response_does_not_end_the_loop(stub: RuntimeApiStub) -> None:
    # Given a platform that refuses the response (as Lambda answers 413 over 6 MB)
    stub.response_status = 413
    # When the loop posts it, then it returns to ask for the next invocation instead of raising
    answer = invoke(stub, lambda event, context: {"big": True})
    assert answer.path.endswith("/response")
    # And that next invocation is served and answered
    stub.response_status = 202
    after = invoke(stub, lambda event, context: {"id": context.aws_request_id}, request_id="req-2")
    assert after.path == "/2018-06-01/runtime/invocation/req-2/response"
    assert after.json() == {"id": "req-2"}


# --- streamed answers ------------------------------------------------------------------------------


def test_a_stream_is_posted_chunked_one_chunk_per_piece(stub: RuntimeApiStub) -> None:
    # Given a handler answering a direct invoke with three pieces
    def handler(event: Any, context: Any) -> StreamingResponse:
        return StreamingResponse("text/event-stream", iter([b"data: 1\n\n", b"data: 2\n\n", b"data: 3\n\n"]))

    answer = invoke(stub, handler)
    # Then the response is in Lambda's streaming mode, chunked, with the error trailers declared
    assert answer.headers["lambda-runtime-function-response-mode"] == "streaming"
    assert answer.headers["transfer-encoding"] == "chunked"
    assert answer.headers["content-type"] == "text/event-stream"
    assert set(answer.headers["trailer"].replace(" ", "").split(",")) == {ERROR_TYPE, ERROR_BODY}
    # And each piece is its own HTTP chunk, no prelude, no trailers
    assert answer.chunks == [b"data: 1\n\n", b"data: 2\n\n", b"data: 3\n\n"]
    assert answer.trailers == {}


def test_a_url_stream_starts_with_the_prelude_and_eight_nuls(stub: RuntimeApiStub) -> None:
    prelude = {"statusCode": 201, "headers": {"content-type": "text/plain"}, "cookies": ["a=1"]}

    def handler(event: Any, context: Any) -> StreamingResponse:
        return StreamingResponse("text/plain", iter([b"one", b"two"]), prelude)

    answer = invoke(stub, handler, function_url_event("GET", "/x"))
    assert answer.headers["content-type"] == HTTP_INTEGRATION
    first, rest = answer.chunks[0], answer.chunks[1:]
    assert first.endswith(PRELUDE_DELIMITER)
    assert json.loads(first[: -len(PRELUDE_DELIMITER)]) == prelude
    assert rest == [b"one", b"two"]


def test_an_error_mid_stream_ends_it_with_the_error_trailers(stub: RuntimeApiStub) -> None:
    # Given a stream (the request core's Stream) that fails after its first piece
    def pieces() -> Iterator[str]:
        yield "data: first\n\n"
        raise InvalidBody("the model went away")

    def on_error(error: Any, status: int) -> bytes:
        return f"event: error\ndata: {status}\n\n".encode()

    def handler(event: Any, context: Any) -> StreamingResponse:
        stream = Stream(pieces(), media_type="text/event-stream", on_error=on_error)
        return StreamingResponse(stream.media_type, stream.chunks())

    answer = invoke(stub, handler)
    # Then the pieces sent stay, the stream's own error event ends the body,
    # and the trailers carry the error type and its base64 JSON
    assert answer.chunks == [b"data: first\n\n", b"event: error\ndata: 500\n\n"]
    assert answer.trailers[ERROR_TYPE.lower()] == "InvalidBody"
    body = json.loads(base64.b64decode(answer.trailers[ERROR_BODY.lower()]))
    assert body == {"errorType": "InvalidBody", "errorMessage": "the model went away"}


def test_any_producer_failure_mid_stream_is_reported_in_the_trailers(stub: RuntimeApiStub) -> None:
    def pieces() -> Iterator[bytes]:
        yield b"part"
        raise RuntimeError("disk on fire")

    answer = invoke(stub, lambda event, context: StreamingResponse("text/plain", pieces()))
    assert answer.chunks == [b"part"]
    assert answer.trailers[ERROR_TYPE.lower()] == "RuntimeError"


def test_a_caller_that_goes_away_closes_the_stream_and_stops_generation(stub: RuntimeApiStub) -> None:
    # Given a platform that hangs up after the first piece (its caller disconnected)
    stub.hang_up_after = 1
    produced: list[int] = []
    closed = threading.Event()

    def tokens() -> Iterator[bytes]:
        try:
            for index in range(100):
                produced.append(index)
                yield f"token {index}\n".encode()
                stub.hung_up.wait(timeout=5)  # a slow model: the next token comes after the hang-up
        finally:
            closed.set()

    stub.queue_event("req-1", {"x": 1})
    api = RuntimeApi(stub.address)
    # When the loop streams the answer
    serve_one(api, lambda event, context: StreamingResponse("text/plain", tokens()), api.next_invocation())
    # Then it returns (no exception) and the generator was closed at the next token, not run to its end
    assert stub.hung_up.is_set()
    assert closed.is_set()
    assert produced == [0, 1]
    answer = stub.posts()[0]
    assert answer.complete is False
    assert answer.chunks == [b"token 0\n"]


# --- init and SnapStart: the loop as Lambda starts it ---------------------------------------------------


def run_loop(
    stub: RuntimeApiStub, code_dir: Path, handler: str, *, snap_start: bool = False
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_LAMBDA_")}
    env.update(
        {
            "AWS_LAMBDA_RUNTIME_API": stub.address,
            "PYTHONPATH": os.pathsep.join([str(code_dir), str(COMMON)]),
            "STUB": stub.address,
        }
    )
    if snap_start:
        env["AWS_LAMBDA_INITIALIZATION_TYPE"] = "snap-start"
    command = [sys.executable, "-m", "lambda_common.lambda_runtime", handler]
    return subprocess.run(
        command, env=env, cwd=code_dir, capture_output=True, text=True, timeout=60, check=False
    )


HOOKS = textwrap.dedent(
    """
    import os, urllib.request
    from snapshot_restore_py import register_after_restore, register_before_snapshot

    def call(name):
        urllib.request.urlopen(f"http://{os.environ['STUB']}/test/{name}").read()

    def fail(name):
        raise RuntimeError(name + " failed")

    FAIL = os.environ.get("FAIL", "")
    register_before_snapshot(fail if FAIL == "before" else call, "before-a")
    register_before_snapshot(call, "before-b")
    register_after_restore(call, "after-a")
    register_after_restore(fail if FAIL == "after" else call, "after-b")

    def handler(event, context):
        return {"served": True}
    """
)


def test_snapstart_lifecycle_calls_in_order(stub: RuntimeApiStub, tmp_path: Path) -> None:
    # Given a handler module with two before-snapshot and two after-restore hooks, and one event queued
    (tmp_path / "hooked.py").write_text(HOOKS)
    stub.queue_event("req-1", {"x": 1})
    # When the loop starts as a SnapStart init (the stub answers restore/next at once;
    # the loop exits when the stub has no second event to give)
    run_loop(stub, tmp_path, "hooked.handler", snap_start=True)
    # Then: before-snapshot hooks (last registered first), restore/next, after-restore hooks, work
    assert stub.paths()[:7] == [
        "GET /test/before-b",
        "GET /test/before-a",
        "GET /runtime/restore/next",
        "GET /test/after-a",
        "GET /test/after-b",
        "GET /runtime/invocation/next",
        "POST /runtime/invocation/req-1/response",
    ]


@pytest.mark.parametrize(
    ("failing", "hook", "route", "error_type", "status"),
    [
        ("before", "before-a", "/runtime/init/error", "Runtime.BeforeSnapshotError", 64),
        ("after", "after-b", "/runtime/restore/error", "Runtime.AfterRestoreError", 65),
    ],
)
def test_a_failing_hook_is_reported_where_lambda_expects_it(
    stub: RuntimeApiStub, tmp_path: Path, failing: str, hook: str, route: str, error_type: str, status: int
) -> None:
    (tmp_path / "hooked.py").write_text(HOOKS.replace('os.environ.get("FAIL", "")', repr(failing)))
    result = run_loop(stub, tmp_path, "hooked.handler", snap_start=True)
    assert result.returncode == status, result.stderr
    errors = [r for r in stub.posts() if r.path.endswith("/error")]
    assert [r.path.removeprefix("/2018-06-01") for r in errors] == [route]
    assert errors[0].headers[ERROR_TYPE.lower()] == error_type
    assert f"{hook} failed" in errors[0].json()["errorMessage"]
    assert "GET /runtime/invocation/next" not in stub.paths()
    if failing == "before":
        assert "GET /runtime/restore/next" not in stub.paths()


@pytest.mark.parametrize(
    ("module", "handler", "error_type", "message"),
    [
        (
            None,
            "missing_module.handler",
            "Runtime.ImportModuleError",
            "Unable to import module 'missing_module'",
        ),
        ("def handler(e, c): pass\n", "good.nothing", "Runtime.HandlerNotFound", "Handler 'nothing' missing"),
        ("def handler(e, c) pass\n", "good.handler", "Runtime.UserCodeSyntaxError", "Syntax error in module"),
        (
            "raise ValueError('MODEL_PATH is not set')\n",
            "good.handler",
            "ValueError",
            "MODEL_PATH is not set",
        ),
        (None, "nodot", "Runtime.MalformedHandlerName", "Bad handler 'nodot'"),
    ],
)
def test_an_init_failure_is_posted_to_init_error_and_the_process_exits(
    stub: RuntimeApiStub, tmp_path: Path, module: str | None, handler: str, error_type: str, message: str
) -> None:
    # Given a handler that cannot be loaded (missing, absent, broken, or failing while it initialises)
    if module is not None:
        (tmp_path / "good.py").write_text(module)
    # When the loop starts
    result = run_loop(stub, tmp_path, handler)
    # Then it posts one init error of the type the AWS runtime client would use, and exits 1
    assert result.returncode == 1, result.stderr
    assert stub.paths() == ["POST /runtime/init/error"]
    error = stub.posts()[0]
    assert error.headers[ERROR_TYPE.lower()] == error_type
    assert error.json()["errorType"] == error_type
    assert message in error.json()["errorMessage"]


def test_load_handler_returns_the_callable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "loadable.py").write_text("def handler(event, context):\n    return 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_handler("loadable.handler")({}, None) == 42  # type: ignore[arg-type] # reads no context
    with pytest.raises(InitFailure) as failure:
        load_handler("loadable.absent")
    assert failure.value.error["errorType"] == "Runtime.HandlerNotFound"


def test_the_context_carries_the_request_id_deadline_and_arn() -> None:
    invocation = Invocation(
        "req-9",
        b"{}",
        {
            "lambda-runtime-deadline-ms": "4102444800000",
            "lambda-runtime-invoked-function-arn": "arn:aws:lambda:us-east-1:0:function:f",
            "lambda-runtime-client-context": '{"custom": {"k": "v"}}',
        },
    )
    context = invocation.context()
    assert context.aws_request_id == "req-9"
    assert context.invoked_function_arn.endswith(":function:f")
    assert context.client_context == {"custom": {"k": "v"}}
    assert context.get_remaining_time_in_millis() > 0
