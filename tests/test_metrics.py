"""Per-invocation EMF metrics and optional tracing in the request core (lambda_common.metrics, .tracing).

In-process, on the real core (FunctionApp) with small routes; the EMF lines are
read from the stream they are written to. The generator's figures go through
``GENERATOR_LOG_LINES``: the exact lines ``GeneratorApi._log`` gains (a
test-only shim until they are in llama_app/api.py; tests/test_metrics_local.py
then checks them on the running generator). The X-Ray daemon, which only
exists on AWS, is stood in for by a UDP socket in the tracing test.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from lambda_common.app import FunctionApp, Invocation
from lambda_common.errors import OPENAI, InternalError
from lambda_common.metrics import DEFAULT_NAMESPACE, RequestMetrics
from lambda_common.streaming import Stream, StreamingResponse
from lambda_common.tracing import XRayTracing
from tests.conftest import FakeContext, function_url_event


class Ask(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str
    fail: bool = False


@dataclass(frozen=True)
class FakeTimings:
    prompt_ms: float
    predicted_per_second: float | None


@dataclass(frozen=True)
class FakeGeneration:
    """The fields of llama_app.engine.Generation that GeneratorApi._log reads."""

    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    timings: FakeTimings


GENERATOR_LOG_LINES = """
self.app.metrics.generation(
    prompt_tokens=gen.prompt_tokens,
    completion_tokens=gen.completion_tokens,
    time_to_first_token_ms=gen.timings.prompt_ms,
    tokens_per_second=gen.timings.predicted_per_second,
    finish_reason=gen.finish_reason,
)
"""
"""The lines GeneratorApi._log gains (``self`` the GeneratorApi, ``gen`` the Generation)."""


class Generator:
    """A stand-in GeneratorApi: its ``_log`` runs GENERATOR_LOG_LINES as written."""

    def __init__(self, app: FunctionApp) -> None:
        self.app = app

    def _log(self, route: str, gen: FakeGeneration, *, streamed: bool) -> None:
        exec(GENERATOR_LOG_LINES, {}, {"self": self, "gen": gen})  # noqa: S102  (the lines under test)


def make_app(out: io.StringIO, *, enabled: bool = True, snap_start: bool = False) -> FunctionApp:
    metrics = RequestMetrics("llama", enabled=enabled, snap_start=snap_start, out=lambda: out)
    app = FunctionApp(service="llama", native=OPENAI, metrics=metrics)
    app.configure(url_streaming=True)  # a Function URL in RESPONSE_STREAM mode, as the generator's
    generator = Generator(app)

    @app.route("POST", "/v1/generate", request=Ask)
    def generate(request: Ask, call: Invocation) -> dict[str, Any]:
        gen = FakeGeneration(7, 3, "deadline" if request.fail else "stop", FakeTimings(41.5, 22.0))
        generator._log(call.path, gen, streamed=False)
        return {"text": request.text}

    @app.route("POST", "/v1/stream", request=Ask)
    def stream(request: Ask, call: Invocation) -> Stream:
        def pieces() -> Iterator[str]:
            yield "data: one\n\n"
            if request.fail:
                raise InternalError("the model failed")
            generator._log(call.path, FakeGeneration(5, 2, "length", FakeTimings(12.0, None)), streamed=True)
            yield "data: two\n\n"

        return Stream(pieces(), media_type="text/event-stream", on_error=lambda error, status: b"error\n\n")

    @app.route("GET", "/health")
    def health(call: Invocation) -> dict[str, str]:
        return {"status": "ok"}

    app.direct(lambda payload: ("POST", "/v1/generate"))
    return app


def records(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]


def metric_names(record: dict[str, Any]) -> set[str]:
    return {m["Name"] for m in record["_aws"]["CloudWatchMetrics"][0]["Metrics"]}


def dimensions(record: dict[str, Any]) -> list[list[str]]:
    dims: list[list[str]] = record["_aws"]["CloudWatchMetrics"][0]["Dimensions"]
    return dims


def units(record: dict[str, Any]) -> dict[str, str]:
    return {m["Name"]: m["Unit"] for m in record["_aws"]["CloudWatchMetrics"][0]["Metrics"]}


def url(
    app: FunctionApp, method: str, path: str, body: dict[str, Any] | None = None, *, send: bool = True
) -> Any:
    """Handle a Function URL event as the streaming runtime does; ``send``: also send the answer whole.

    On a RESPONSE_STREAM URL every answer is a StreamingResponse (a whole one is a single chunk after
    its prelude), and the invocation ends, so its metrics are written, once it has been sent.
    """
    event = function_url_event(method, path, json.dumps(body) if body is not None else None)
    answer = app.handle(event, FakeContext(), stream=True)
    if not send or not isinstance(answer, StreamingResponse):
        return answer
    body_bytes = b"".join(answer.chunks)
    assert answer.prelude is not None
    return {"statusCode": answer.prelude["statusCode"], "body": body_bytes.decode()}


def test_a_generation_writes_one_request_record_and_one_finish_reason_record() -> None:
    # Given a fresh app (its first invocation is a cold start)
    out = io.StringIO()
    app = make_app(out)
    # When a generation route answers
    answer = url(app, "POST", "/v1/generate", {"text": "hi"})
    # Then the answer is whole and two EMF records were written
    assert answer["statusCode"] == 200
    main, finish = records(out)
    assert main["_aws"]["CloudWatchMetrics"][0]["Namespace"] == DEFAULT_NAMESPACE
    assert dimensions(main) == [["service"]]
    assert main["service"] == "llama"
    assert units(main) == {
        "ColdStart": "Count",
        "PromptTokens": "Count",
        "CompletionTokens": "Count",
        "TimeToFirstToken": "Milliseconds",
        "DeadlineStops": "Count",
        "TokensPerSecond": "Count/Second",
        "ServerErrors": "Count",
    }
    assert (main["ColdStart"], main["PromptTokens"], main["CompletionTokens"]) == ([1.0], [7.0], [3.0])
    assert (main["TimeToFirstToken"], main["TokensPerSecond"]) == ([41.5], [22.0])
    assert main["DeadlineStops"] == [0.0]
    assert main["ServerErrors"] == [0.0]
    assert sorted(map(sorted, dimensions(finish))) == [["finish_reason", "service"]]
    assert (finish["finish_reason"], finish["Generations"]) == ("stop", [1.0])


def test_later_invocations_are_warm_and_a_deadline_stop_is_counted() -> None:
    # Given an app that already served one request
    out = io.StringIO()
    app = make_app(out)
    url(app, "GET", "/health")
    out.truncate(0)
    out.seek(0)
    # When a generation stops at the deadline
    url(app, "POST", "/v1/generate", {"text": "hi", "fail": True})
    # Then the invocation is warm and the deadline stop is in both records
    main, finish = records(out)
    assert main["ColdStart"] == [0.0]
    assert main["DeadlineStops"] == [1.0]
    assert finish["finish_reason"] == "deadline"


def test_a_refusal_is_counted_by_its_error_code_and_a_5xx_as_a_server_error() -> None:
    # Given an app
    out = io.StringIO()
    app = make_app(out)
    # When one request is refused with a 400, and a direct payload names no known field (400 too)
    url(app, "POST", "/v1/generate", {"text": 3})
    url(app, "GET", "/nowhere")
    # Then each invocation wrote its request record and a Refusals record with the code
    written = records(out)
    refusals = [r for r in written if "Refusals" in r]
    assert [(r["error_code"], r["Refusals"]) for r in refusals] == [
        ("invalid_value", [1.0]),
        ("not_found", [1.0]),
    ]
    assert all(sorted(map(sorted, dimensions(r))) == [["error_code", "service"]] for r in refusals)
    assert [r["ServerErrors"] for r in written if "ServerErrors" in r] == [[0.0], [0.0]]


def test_a_stream_writes_its_metrics_when_it_ends_not_when_the_handler_returns() -> None:
    # Given an app whose route streams
    out = io.StringIO()
    app = make_app(out)
    # When the handler returns the stream
    response = url(app, "POST", "/v1/stream", {"text": "hi"}, send=False)
    assert isinstance(response, StreamingResponse)
    # Then nothing is written until the runtime has sent the last chunk
    assert records(out) == []
    body = b"".join(response.chunks)
    assert body == b"data: one\n\ndata: two\n\n"
    main, finish = records(out)
    assert (main["PromptTokens"], main["CompletionTokens"], main["ColdStart"]) == ([5.0], [2.0], [1.0])
    assert "TokensPerSecond" not in main  # fewer than two tokens' timing: no speed to report
    assert finish["finish_reason"] == "length"


def test_an_error_that_ends_a_stream_is_a_refusal_and_a_server_error() -> None:
    # Given a streamed answer that fails after its first chunk
    out = io.StringIO()
    app = make_app(out)
    response = url(app, "POST", "/v1/stream", {"text": "hi", "fail": True}, send=False)
    # When the runtime sends it
    chunks: list[bytes] = []
    with pytest.raises(Exception, match="the model failed"):
        chunks.extend(response.chunks)
    # Then the stream ended with its error chunk, and the refusal was counted as a 5xx
    assert chunks == [b"data: one\n\n", b"error\n\n"]
    written = records(out)
    main = next(r for r in written if "ServerErrors" in r)
    assert main["ServerErrors"] == [1.0]
    assert [r["error_code"] for r in written if "Refusals" in r] == ["internal_error"]


def test_a_stream_the_caller_left_still_writes_its_record() -> None:
    # Given a streamed answer
    out = io.StringIO()
    app = make_app(out)
    response = url(app, "POST", "/v1/stream", {"text": "hi"}, send=False)
    # When the caller goes away after the first chunk (the runtime closes the response)
    next(response.chunks)
    response.close()
    # Then the invocation's record is written (without the generation, which never finished)
    (main,) = records(out)
    assert main["ColdStart"] == [1.0]
    assert "PromptTokens" not in main


def test_direct_invokes_and_undecodable_payloads_are_measured_too() -> None:
    # Given an app reached through the runtime loop's raw-payload handler
    out = io.StringIO()
    app = make_app(out)
    handler = app.streaming_handler
    # When one payload is not JSON and the next is a valid direct payload
    handler(b"{not json", FakeContext())
    handler(b'{"text": "hi"}', FakeContext())
    # Then the first is a cold-start refusal and the second a warm generation
    written = records(out)
    assert [r["error_code"] for r in written if "Refusals" in r] == ["invalid_json"]
    mains = [r for r in written if "ServerErrors" in r]
    assert [m["ColdStart"] for m in mains] == [[1.0], [0.0]]
    assert mains[1]["PromptTokens"] == [7.0]


def test_a_snapstart_function_reports_restores() -> None:
    # Given a SnapStart function restored from its snapshot
    out = io.StringIO()
    app = make_app(out, snap_start=True)
    app.lifecycle.mark_restored(12.0)
    # When it serves its first two requests
    url(app, "GET", "/health")
    url(app, "GET", "/health")
    # Then the first is a restore (not a cold start), the second neither
    first, second = records(out)
    assert (first["Restore"], first["ColdStart"]) == ([1.0], [0.0])
    assert (second["Restore"], second["ColdStart"]) == ([0.0], [0.0])


def test_metrics_off_writes_nothing() -> None:
    # Given metrics switched off
    out = io.StringIO()
    app = make_app(out, enabled=False)
    # When requests succeed, fail and stream
    url(app, "POST", "/v1/generate", {"text": "hi"})
    url(app, "GET", "/nowhere")
    url(app, "POST", "/v1/stream", {"text": "hi"})
    # Then no line was written
    assert out.getvalue() == ""


def test_the_disable_switch_is_the_variable_powertools_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given POWERTOOLS_METRICS_DISABLED=true, as the stack sets it with metrics_enabled false
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    # When a RequestMetrics reads its environment
    metrics = RequestMetrics("llama")
    # Then it is off; and on with the variable false
    assert metrics.enabled is False
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    assert RequestMetrics("llama").enabled is True


def test_the_namespace_comes_from_the_variable_the_stack_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "MyCopy")
    assert RequestMetrics("embeddings").namespace == "MyCopy"
    monkeypatch.delenv("POWERTOOLS_METRICS_NAMESPACE")
    assert RequestMetrics("embeddings").namespace == DEFAULT_NAMESPACE


def test_with_tracing_off_nothing_of_the_tracer_is_imported() -> None:
    # Given a process that builds a FunctionApp and serves a request, tracing off (the default)
    code = (
        "import sys, json\n"
        "from lambda_common.app import FunctionApp\n"
        "from lambda_common.errors import OPENAI\n"
        "app = FunctionApp(service='x', native=OPENAI)\n"
        "app.route('GET', '/health')(lambda call: {'ok': True})\n"
        "from tests.conftest import function_url_event\n"
        "class C:\n    aws_request_id = 'r'\n    def get_remaining_time_in_millis(self): return 9000\n"
        "app.handle(function_url_event('GET', '/health'), C(), stream=False)\n"
        "loaded = [m for m in sys.modules if m.startswith(('aws_xray_sdk', 'opentelemetry'))]\n"
        "print(json.dumps(sorted(loaded)))\n"
    )
    environment = {k: v for k, v in os.environ.items() if k != "TRACING_ENABLED"}
    environment["PYTHONPATH"] = os.pathsep.join([".", "lambda_images/common"])
    # When it has answered
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment, check=True
    )
    # Then no tracing library was imported (powertools' package imports its own Tracer class in any
    # case, which imports the X-Ray SDK only when a Tracer is made)
    assert json.loads(done.stdout.splitlines()[-1]) == []


def test_with_tracing_on_each_part_of_a_request_is_a_subsegment_of_the_invocations_trace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a UDP socket standing in for Lambda's X-Ray daemon, and the variables Lambda sets
    daemon = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    daemon.bind(("127.0.0.1", 0))
    daemon.settimeout(5)
    port = daemon.getsockname()[1]
    root, parent = "1-67891233-abcdef012345678912345678", "53995c3f42cd8ad8"
    monkeypatch.setenv("AWS_XRAY_DAEMON_ADDRESS", f"127.0.0.1:{port}")
    monkeypatch.setenv("LAMBDA_TASK_ROOT", "/var/task")
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "metrics-test")
    monkeypatch.setenv("_X_AMZN_TRACE_ID", f"Root={root};Parent={parent};Sampled=1")
    monkeypatch.delenv("POWERTOOLS_TRACE_DISABLED", raising=False)
    out = io.StringIO()
    metrics = RequestMetrics("llama", out=lambda: out)
    app = FunctionApp(service="llama", native=OPENAI, metrics=metrics, tracing=XRayTracing("llama"))
    app.configure(url_streaming=True)

    @app.route("POST", "/v1/stream", request=Ask)
    def stream(request: Ask, call: Invocation) -> Stream:
        return Stream(iter(["a", "b"]), media_type="text/plain")

    # When a streamed request is served and sent
    url(app, "POST", "/v1/stream", {"text": "hi"})
    # Then the daemon got the three subsegments, each in the invocation's trace under Lambda's segment
    documents = []
    for _ in range(3):
        header, body = daemon.recv(65536).split(b"\n", 1)
        assert json.loads(header) == {"format": "json", "version": 1}
        documents.append(json.loads(body))
    daemon.close()
    assert [d["name"] for d in documents] == ["parse request", "route", "stream"]
    assert {d["trace_id"] for d in documents} == {root}
    assert {d["parent_id"] for d in documents} == {parent}
    assert documents[1]["annotations"] == {"path": "/v1/stream"}
    assert all(d["end_time"] >= d["start_time"] for d in documents)
