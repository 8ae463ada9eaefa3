"""The Runtime API stand-in (local.runtime_api) and the fronts on it, with small handlers of our own.

The handlers (written to a temporary folder) run under the project's runtime
loop, as the generator does, in a real process started by the stand-in. A
handler that streams waits for a "gate" file before its second piece, so a
test proves that a piece reached the caller while the handler was still
running by the order of events (the piece arrived, then the test opened the
gate), never by timing. AWS itself cannot exist here: boto3 gets dummy
credentials, which the local Invoke API ignores.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.eventstream import EventStreamBuffer
from botocore.exceptions import ClientError

from benchmarks.lambda_logs import InitReport, parse_log
from local import eventstream
from local.invoke_api import InvokeApi
from local.rie import FunctionSpec
from local.runtime_api import Done, FunctionError, Head, LocalFunction
from local.url_front import FunctionUrlFront
from tests.conftest import lambda_client

HANDLER = textwrap.dedent(
    """
    import base64, json, os, time
    from pathlib import Path
    from lambda_common.streaming import StreamingResponse
    from snapshot_restore_py import register_after_restore, register_before_snapshot

    GATES = Path(os.environ["GATES"])
    if (GATES / "fail-init").exists():
        raise ValueError("init failed on purpose")

    def note(line):
        with (GATES / "lifecycle.log").open("a") as out:
            out.write(line + "\\n")

    note(f"init {os.environ.get('AWS_LAMBDA_INITIALIZATION_TYPE')}")
    register_before_snapshot(note, "before-snapshot")
    register_after_restore(note, "after-restore")

    def pieces(name):
        yield b"one"
        gate = GATES / f"gate-{name}"
        for _ in range(200):
            if gate.exists():
                break
            time.sleep(0.05)
        yield b"two"

    def endless(name):
        # Pieces until the caller goes away: it ends by itself only once its gate opens
        # (the sleep paces the pieces; no test depends on it).
        gate = GATES / f"gate-{name}"
        sent = 0
        try:
            while not gate.exists():
                sent += 1
                yield f"piece {sent}\\n".encode()
                time.sleep(0.05)
            (GATES / f"ended-{name}").write_text(str(sent))
        finally:
            (GATES / f"closed-{name}").write_text(str(sent))

    def handler(event, context):
        url = isinstance(event, dict) and "rawPath" in event
        if url:
            action, _, arg = event["rawPath"].strip("/").partition("/")
        else:
            action, arg = event.get("action"), event.get("arg", "")
        prelude = {"statusCode": 200, "headers": {"content-type": "text/plain"}} if url else None
        if action == "stream":
            return StreamingResponse("text/plain", pieces(arg), prelude)
        if action == "endless":
            return StreamingResponse("text/plain", endless(arg), prelude)
        if action == "raw":
            return StreamingResponse("text/csv", iter([b"a,b\\n", b"1,2\\n"]))
        if action == "status":
            status = {"statusCode": 418, "headers": {"x-teapot": "yes"}, "cookies": ["t=1"]}
            return StreamingResponse("application/octet-stream", iter([b"short"]), status)
        if action == "sleep":
            time.sleep(float(arg))
        if action == "exit":
            os._exit(3)
        if action == "raise":
            raise ValueError("raised on purpose")
        if action == "big":
            return "x" * (7 * 1024 * 1024)
        return {"pid": os.getpid(), "action": action}
    """
)


@pytest.fixture
def gates(tmp_path: Path) -> Path:
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "handler.py").write_text(HANDLER)
    (tmp_path / "gates").mkdir()
    return tmp_path


def make_function(folder: Path, *, timeout_s: int = 3, snap_start: bool = False) -> LocalFunction:
    spec = FunctionSpec(
        name="probe",
        code_dir=folder / "code",
        memory_mb=256,
        timeout_s=timeout_s,
        handler="handler.handler",
        runtime="lambda_common.lambda_runtime",
        environment={"GATES": str(folder / "gates"), "FUNCTION_URL_INVOKE_MODE": "RESPONSE_STREAM"},
    )
    return LocalFunction(spec, folder / "probe.log", snap_start=snap_start)


@pytest.fixture
def function(gates: Path) -> Iterator[LocalFunction]:
    with make_function(gates) as running:
        yield running


def invoke(function: LocalFunction, action: str, arg: str = "") -> Any:
    outcome = function.invoke(json.dumps({"action": action, "arg": arg}).encode()).result()
    return outcome


# --- streaming passes through -------------------------------------------------------------------


def test_a_piece_reaches_the_caller_while_the_handler_still_runs(
    function: LocalFunction, gates: Path
) -> None:
    # Given a handler that sends "one", then waits for its gate before "two"
    call = function.invoke(json.dumps({"action": "stream", "arg": "a"}).encode())
    # When the caller reads the first events
    head = call.next_event(30)
    first = call.next_event(30)
    # Then "one" arrived while the handler was still waiting (its gate is still closed)
    assert head == Head("text/plain", streaming=True)
    assert first == b"one"
    (gates / "gates" / "gate-a").touch()
    assert list(call.events()) == [b"two", Done()]


def test_url_front_streams_chunks_as_they_come(function: LocalFunction, gates: Path) -> None:
    with FunctionUrlFront(function, port=0, invoke_mode="RESPONSE_STREAM", log=lambda line: None) as front:
        connection = http.client.HTTPConnection("127.0.0.1", front.port, timeout=30)
        connection.request("GET", "/stream/b")
        response = connection.getresponse()
        # The prelude became the status and headers; the body is chunked
        assert response.status == 200
        assert response.getheader("content-type") == "text/plain"
        assert response.getheader("transfer-encoding") == "chunked"
        first = response.read1()
        assert first == b"one"  # read while the handler waits at its gate
        (gates / "gates" / "gate-b").touch()
        assert response.read() == b"two"
        connection.close()


def test_invoke_with_response_stream_sends_payload_chunks_as_they_come(
    function: LocalFunction, gates: Path
) -> None:
    with InvokeApi(function, port=0, log=lambda line: None) as api:
        answer = lambda_client(api.url).invoke_with_response_stream(
            FunctionName="function", Payload=json.dumps({"action": "stream", "arg": "c"})
        )
        events = iter(answer["EventStream"])
        assert answer["StatusCode"] == 200
        assert answer["ResponseStreamContentType"] == eventstream.CONTENT_TYPE
        assert next(events) == {"PayloadChunk": {"Payload": b"one"}}  # the handler still waits
        (gates / "gates" / "gate-c").touch()
        assert list(events) == [{"PayloadChunk": {"Payload": b"two"}}, {"InvokeComplete": {}}]


def test_invoke_with_response_stream_reports_a_function_error_in_invoke_complete(
    function: LocalFunction,
) -> None:
    with InvokeApi(function, port=0, log=lambda line: None) as api:
        answer = lambda_client(api.url).invoke_with_response_stream(
            FunctionName="function", Payload=json.dumps({"action": "raise"})
        )
        events = list(answer["EventStream"])
    assert events == [{"InvokeComplete": {"ErrorCode": "ValueError", "ErrorDetails": "raised on purpose"}}]


def test_plain_invoke_of_a_stream_returns_the_whole_answer(function: LocalFunction, gates: Path) -> None:
    (gates / "gates" / "gate-d").touch()
    with InvokeApi(function, port=0, log=lambda line: None) as api:
        answer = lambda_client(api.url).invoke(
            FunctionName="function", Payload=json.dumps({"action": "stream", "arg": "d"}), LogType="Tail"
        )
    assert answer["StatusCode"] == 200
    assert "FunctionError" not in answer
    assert answer["Payload"].read() == b"onetwo"
    tail = base64.b64decode(answer["LogResult"]).decode()
    assert tail.startswith("START RequestId:")
    assert "REPORT RequestId:" in tail.splitlines()[-1]


def test_a_queued_invokes_log_tail_holds_only_its_own_lines(gates: Path) -> None:
    # Given one warm environment, and a first invoke holding it (its stream waits on a gate)
    with (
        make_function(gates, timeout_s=30) as function,
        InvokeApi(function, port=0, log=lambda _: None) as api,
    ):
        invoke(function, "status")
        first = function.invoke(json.dumps({"action": "stream", "arg": "q"}).encode())
        assert next(first.events()) is not None  # the handler is running
        tails: list[str] = []

        def second() -> None:
            answer = lambda_client(api.url).invoke(
                FunctionName="function", Payload=json.dumps({"action": "status"}), LogType="Tail"
            )
            tails.append(base64.b64decode(answer["LogResult"]).decode())

        # When a second invoke asks for its log tail while the first still holds the environment
        waiting = threading.Thread(target=second)
        waiting.start()
        waiting.join(timeout=0.5)
        assert waiting.is_alive()  # it cannot end before the first: one environment, one invoke
        (gates / "gates" / "gate-q").touch()
        assert first.result().body == b"onetwo"
        waiting.join(timeout=30)
    # Then its tail runs from its own START to its own REPORT, none of the first invoke's lines
    (tail,) = tails
    lines = tail.splitlines()
    assert lines[0].startswith("START RequestId:")
    assert lines[-1].startswith("REPORT RequestId:")
    assert first.request_id not in tail
    assert sum(line.startswith("START RequestId:") for line in lines) == 1


def test_unknown_function_name_is_resource_not_found(function: LocalFunction) -> None:
    with InvokeApi(function, port=0, log=lambda line: None) as api, pytest.raises(ClientError) as error:
        lambda_client(api.url).invoke(FunctionName="another", Payload=b"{}")
    assert error.value.response["Error"]["Code"] == "ResourceNotFoundException"


@pytest.mark.parametrize(
    ("path", "status", "content_type", "body", "extra"),
    [
        ("/raw", 200, "text/csv", b"a,b\n1,2\n", {}),
        ("/status", 418, "application/octet-stream", b"short", {"x-teapot": "yes", "set-cookie": "t=1"}),
    ],
)
def test_url_front_maps_streamed_answers_as_a_streaming_function_url(
    function: LocalFunction, path: str, status: int, content_type: str, body: bytes, extra: dict[str, str]
) -> None:
    # An answer without the HTTP-integration framing is the body as it is (status 200, its own type);
    # a framed one (a prelude, as the request core sends on a streaming URL) keeps its status,
    # headers and cookies
    with FunctionUrlFront(function, port=0, invoke_mode="RESPONSE_STREAM", log=lambda line: None) as front:
        connection = http.client.HTTPConnection("127.0.0.1", front.port, timeout=30)
        connection.request("GET", path)
        response = connection.getresponse()
        assert (response.status, response.read()) == (status, body)
        assert response.getheader("content-type") == content_type
        for name, value in extra.items():
            assert response.getheader(name) == value
        connection.close()


def test_url_front_answers_502_for_a_function_error_before_the_first_byte(function: LocalFunction) -> None:
    with FunctionUrlFront(function, port=0, invoke_mode="RESPONSE_STREAM", log=lambda line: None) as front:
        connection = http.client.HTTPConnection("127.0.0.1", front.port, timeout=30)
        connection.request("GET", "/raise")
        response = connection.getresponse()
        assert response.status == 502
        assert json.loads(response.read()) == {"message": "Internal Server Error"}


def test_a_client_that_disconnects_stops_the_stream(function: LocalFunction, gates: Path) -> None:
    pid = invoke(function, "pid").payload()["pid"]
    with FunctionUrlFront(function, port=0, invoke_mode="RESPONSE_STREAM", log=lambda line: None) as front:
        # Given a stream that goes on until its gate opens, read by a client that leaves after one piece
        connection = http.client.HTTPConnection("127.0.0.1", front.port, timeout=30)
        connection.request("GET", "/endless/e")
        response = connection.getresponse()
        assert response.read1().startswith(b"piece 1\n")
        connection.close()
        # Then the handler's generator is closed early, in the same runtime, which serves the next invoke
        closed = gates / "gates" / "closed-e"
        for _ in range(200):
            if closed.exists():
                break
            time.sleep(0.05)
        assert closed.exists()
        # before its end (this test never opens its gate): only the caller's leaving can have stopped it
        assert not (gates / "gates" / "ended-e").exists()
        assert int(closed.read_text()) >= 1
    assert invoke(function, "pid").payload()["pid"] == pid


# --- one environment, as Lambda runs one ---------------------------------------------------------------


def test_invokes_queue_in_one_environment(function: LocalFunction) -> None:
    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda: results.append(invoke(function, "sleep", "0.2"))) for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    pids = {outcome.payload()["pid"] for outcome in results}
    assert len(results) == 3
    assert all(outcome.function_error is None for outcome in results)
    assert len(pids) == 1
    assert function.environments == 1
    # And the invokes ran one after the other: each START follows the previous END
    lines = [line for line in function.log_path.read_text().splitlines() if line.startswith(("START", "END"))]
    assert [line.split()[0] for line in lines] == ["START", "END"] * 3


@pytest.mark.parametrize(
    ("action", "arg", "error_type", "status"),
    [("sleep", "10", "Sandbox.Timedout", "timeout"), ("exit", "", "Runtime.ExitError", "error")],
)
def test_timeout_or_crash_fails_the_invoke_and_the_next_gets_a_new_environment(
    function: LocalFunction, action: str, arg: str, error_type: str, status: str
) -> None:
    before = invoke(function, "pid").payload()["pid"]
    # When the invoke outlives the 3 s timeout, or the runtime exits mid-invoke
    failed = invoke(function, action, arg)
    # Then it fails as Lambda reports it, and the next invoke runs in a new process
    assert failed.function_error == "Unhandled"
    assert failed.error is not None
    assert failed.error.error_type == error_type
    assert json.loads(failed.body)["errorType"] == error_type
    after = invoke(function, "pid").payload()["pid"]
    assert after != before
    assert function.environments == 2
    report = parse_log(function.log_path.read_text().splitlines()).reports[1]
    assert report.status == status


def test_handler_error_keeps_the_environment(function: LocalFunction) -> None:
    before = invoke(function, "pid").payload()["pid"]
    failed = invoke(function, "raise")
    assert failed.function_error == "Unhandled"
    assert json.loads(failed.body)["errorMessage"] == "raised on purpose"
    assert invoke(function, "pid").payload()["pid"] == before


def test_a_buffered_answer_over_six_megabytes_is_a_function_error(function: LocalFunction) -> None:
    failed = invoke(function, "big")
    assert failed.error is not None
    assert failed.error.error_type == "Function.ResponseSizeTooLarge"
    assert invoke(function, "pid").function_error is None


def test_an_init_error_fails_the_invoke_and_the_next_invoke_inits_again(gates: Path) -> None:
    (gates / "gates" / "fail-init").touch()
    with make_function(gates) as function:
        failed = invoke(function, "pid")
        assert failed.function_error == "Unhandled"
        assert failed.error == FunctionError("ValueError", failed.body)
        assert json.loads(failed.body)["errorMessage"] == "init failed on purpose"
        (gates / "gates" / "fail-init").unlink()
        assert invoke(function, "pid").function_error is None
        records = parse_log(function.log_path.read_text().splitlines())
    assert [(i.phase, i.status, i.error_type) for i in records.inits] == [("init", "error", "ValueError")]
    assert records.reports[-1].init_ms is not None  # the second environment's cold start


def test_platform_lines_parse_as_lambda_reports(function: LocalFunction) -> None:
    invoke(function, "pid")
    invoke(function, "pid")
    reports = parse_log(function.log_path.read_text().splitlines()).reports
    assert len(reports) == 2
    assert reports[0].init_ms is not None
    assert reports[0].init_ms > 0
    assert reports[1].init_ms is None
    assert reports[0].memory_mb == 256
    assert reports[0].max_memory_used_mb is not None
    assert reports[0].max_memory_used_mb > 0


def test_snapstart_lifecycle_runs_hooks_around_the_restore(gates: Path) -> None:
    # Given a function run through the SnapStart lifecycle
    with make_function(gates, snap_start=True) as function:
        # When it is invoked the first time
        first = invoke(function, "pid")
        second = invoke(function, "pid")
        records = parse_log(function.log_path.read_text().splitlines())
    # Then the init ran as a snap-start init, before-snapshot hooks, restore, after-restore hooks, work
    assert first.function_error is None
    assert first.payload()["pid"] == second.payload()["pid"]
    assert (gates / "gates" / "lifecycle.log").read_text().splitlines() == [
        "init snap-start",
        "before-snapshot",
        "after-restore",
    ]
    # And the platform lines say so: an INIT_REPORT, then a REPORT with the restore's duration
    assert len(records.inits) == 1
    init = records.inits[0]
    assert isinstance(init, InitReport)
    assert (init.phase, init.status) == ("init", "success")
    assert records.reports[0].restore_ms is not None
    assert records.reports[0].init_ms is None
    assert records.reports[1].restore_ms is None


# --- the event-stream framing ----------------------------------------------------------------------------


def test_eventstream_messages_decode_with_botocore() -> None:
    data = b"".join([*eventstream.payload_chunks(b"hello"), eventstream.invoke_complete(error_code="X")])
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    messages = list(buffer)
    assert [m.headers[":event-type"] for m in messages] == ["PayloadChunk", "InvokeComplete"]
    assert all(m.headers[":message-type"] == "event" for m in messages)
    assert messages[0].payload == b"hello"
    assert json.loads(messages[1].payload) == {"ErrorCode": "X"}


def test_a_large_piece_is_split_into_several_payload_chunks() -> None:
    data = os.urandom(eventstream.MAX_CHUNK_BYTES + 10)
    buffer = EventStreamBuffer()
    for message in eventstream.payload_chunks(data):
        buffer.add_data(message)
    assert b"".join(m.payload for m in buffer) == data
