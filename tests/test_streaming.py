"""Token streaming end to end: real clients against `make local`'s generator, as users call it.

The generator runs under the project's runtime loop on the Runtime API
stand-in, its URL in invoke mode RESPONSE_STREAM (cdk.json's default). Each
client must receive more than one content chunk, and the first one before
generation has finished. That is shown by the order of events, never by time:
the handler logs ``generated`` when the generation ends (before its last
event), and its output goes straight to the function's log file, so when a
client holds its first content chunk the test reads the log and finds no
``generated`` line for that request yet. A buffering path could not pass:
the whole answer, hence the line, would exist before the first byte left.

AWS itself cannot exist here: boto3 and the AWS CLI get dummy credentials,
which the local Invoke API ignores. No AWS CLI available here (PyPI's v1,
Debian's v2.9.19, nor the v2.38 inside aws-cdk-asset-awscli-v2) has
``invoke-with-response-stream``, so the CLI is checked on ``invoke``, which
returns a streamed answer whole, as Lambda buffers it for that operation.
"""

from __future__ import annotations

import http.client
import io
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import openai
import pytest

import client.__main__ as client_cli
from local.stack import RunningFunction
from tests.conftest import lambda_client, sse_events
from tests.harness import streaming_stack

pytestmark = pytest.mark.slow

PROMPT = "Count from 1 to 200, separated by commas."
TEXT_PROMPT = "Counting from 1 to 200: 1, 2, 3, 4,"
"""For raw completions (no chat template): a text the model goes on with rather than ends."""
TOKENS = 128
"""Long enough that a client reads its first token while the rest is still being generated."""
AWS = str(Path(sys.executable).parent / "aws")


@pytest.fixture(scope="module")
def llama() -> RunningFunction:
    function = streaming_stack().functions["llama"]
    assert function.plan.url_invoke_mode == "RESPONSE_STREAM"
    return function


@pytest.fixture(scope="module")
def model(llama: RunningFunction) -> str:
    status, body, _ = llama.call("GET", "/v1/models")
    assert status == 200
    return str(json.loads(body)["data"][0]["id"])


def generated(function: RunningFunction) -> int:
    """How many generations the handler has logged as finished so far."""
    return function.log_path.read_text(errors="replace").count('"message":"generated"')


class Order:
    """Records, for one streamed request, whether its first content chunk came before its end."""

    def __init__(self, function: RunningFunction) -> None:
        self.function = function
        self.before = generated(function)
        self.first_while_generating: bool | None = None
        self.content_chunks = 0

    def content(self) -> None:
        """A content chunk arrived: the first time, note whether generation was still running."""
        self.content_chunks += 1
        if self.first_while_generating is None:
            self.first_while_generating = generated(self.function) == self.before

    def check(self) -> None:
        assert self.content_chunks > 1
        assert self.first_while_generating is True
        assert generated(self.function) == self.before + 1


# --- the OpenAI SDK --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sdk(llama: RunningFunction) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{llama.url}/v1", api_key="unused", max_retries=0, timeout=120)


def test_openai_sdk_streams_chat_completions(llama: RunningFunction, sdk: openai.OpenAI, model: str) -> None:
    # Given a chat request with stream=True
    order = Order(llama)
    stream = sdk.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=TOKENS,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    # When the SDK iterates the chunks as they arrive
    roles, text, finish, usage = [], [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        if delta.role:
            roles.append(delta.role)
        if delta.content:
            order.content()
            text.append(delta.content)
        finish = chunk.choices[0].finish_reason or finish
    # Then the role came first, content came in many chunks, the first while generating
    order.check()
    assert roles == ["assistant"]
    assert finish in ("stop", "length")
    assert usage is not None
    assert 1 < usage.completion_tokens <= TOKENS
    assert "".join(text).strip()


def test_openai_sdk_streams_completions(llama: RunningFunction, sdk: openai.OpenAI, model: str) -> None:
    order = Order(llama)
    stream = sdk.completions.create(
        model=model, prompt=TEXT_PROMPT, max_tokens=TOKENS, temperature=0, stream=True
    )
    finish = None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].text:
            order.content()
        if chunk.choices:
            finish = chunk.choices[0].finish_reason or finish
    order.check()
    assert finish == "length"


# --- curl -N -----------------------------------------------------------------------------------------


def test_curl_no_buffer_prints_events_as_they_come(llama: RunningFunction, model: str) -> None:
    # Given the README's curl -N command for a streamed chat completion
    body = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": TOKENS}
    command = ["curl", "-sSN", f"{llama.url}/v1/chat/completions", "-H", "content-type: application/json"]
    order = Order(llama)
    process = subprocess.Popen(
        [*command, "-d", json.dumps({**body, "stream": True})], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    # When its output is read line by line as curl writes it
    events = []
    for line in process.stdout:
        if not line.startswith("data: "):
            continue
        events.append(line.removeprefix("data: ").strip())
        if events[-1] != "[DONE]" and json.loads(events[-1])["choices"][0]["delta"].get("content"):
            order.content()
    assert process.wait(timeout=60) == 0
    # Then every server-sent event arrived, the first content ones while generating, [DONE] last
    order.check()
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["choices"][0]["finish_reason"] in ("stop", "length")


# --- boto3 and the AWS CLI on the Invoke API -------------------------------------------------------------


def test_boto3_invoke_with_response_stream_gets_tokens_as_they_come(llama: RunningFunction) -> None:
    # Given the seed's direct payload, asking for a stream
    payload = {"prompt": TEXT_PROMPT, "n-generate": TOKENS, "temperature": 0, "stream": True}
    order = Order(llama)
    answer = lambda_client(llama.endpoint, read_timeout=120).invoke_with_response_stream(
        FunctionName="function", Payload=json.dumps(payload)
    )
    # When the event stream is iterated
    pieces: list[dict[str, Any]] = []
    complete = None
    for event in answer["EventStream"]:
        if "PayloadChunk" in event:
            events = sse_events(event["PayloadChunk"]["Payload"].decode())
            assert len(events) == 1  # one event per chunk
            pieces.extend(events)
            if pieces[-1]["content"]:
                order.content()
        else:
            complete = event["InvokeComplete"]
    # Then the tokens came as PayloadChunk events, the first while generating, and InvokeComplete ended it
    assert answer["StatusCode"] == 200
    order.check()
    assert complete == {}
    assert pieces[-1]["stop"] is True
    assert pieces[-1]["usage"]["completion_tokens"] == TOKENS


def test_aws_cli_invoke_of_a_streamed_request_gets_the_whole_answer(
    llama: RunningFunction, aws_env: dict[str, str], tmp_path: Path
) -> None:
    # Given the seed payload asking for a stream, sent with `aws lambda invoke`
    out = tmp_path / "out.txt"
    payload = json.dumps({"prompt": "llamas are", "n-generate": 4, "stream": True})
    command = [AWS, "lambda", "invoke", "--endpoint-url", llama.endpoint, "--function-name", "function"]
    result = subprocess.run(
        [*command, "--payload", payload, str(out)],
        capture_output=True,
        text=True,
        env=aws_env,
        timeout=120,
        check=False,
    )
    # Then the CLI gets every event in one answer (Invoke buffers a stream), the last one the stop event
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["StatusCode"] == 200
    events = sse_events(out.read_text())
    assert len(events) == 5
    assert [event["stop"] for event in events] == [False] * 4 + [True]


def test_aws_cli_has_no_invoke_with_response_stream(aws_env: dict[str, str]) -> None:
    # The CLI (v1 from PyPI in the venv) drops the command; boto3 is the way to stream from Python
    result = subprocess.run(
        [AWS, "lambda", "invoke-with-response-stream", "help"],
        capture_output=True,
        text=True,
        env=aws_env,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "invalid choice" in result.stderr.lower()


# --- a client that goes away ------------------------------------------------------------------------------


def test_a_client_that_disconnects_stops_the_generation(llama: RunningFunction, model: str) -> None:
    # Given a long streamed completion
    before = generated(llama)
    connection = http.client.HTTPConnection("127.0.0.1", llama.url_front.port, timeout=60)
    body = {"model": model, "prompt": TEXT_PROMPT, "max_tokens": TOKENS, "temperature": 0, "stream": True}
    connection.request("POST", "/v1/completions", json.dumps(body), {"content-type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200
    # When the client leaves after the first event
    assert response.read1().startswith(b"data: ")
    connection.close()
    # Then the runtime notices, the generation stops before its end (no "generated" line),
    # and the same runtime serves the next request
    gone = "the caller went away mid-stream"
    for _ in range(200):
        if gone in llama.log_path.read_text(errors="replace"):
            break
        time.sleep(0.05)
    assert gone in llama.log_path.read_text(errors="replace")
    assert generated(llama) == before
    status, answer, _ = llama.call("GET", "/health")
    assert status == 200
    assert json.loads(answer)["status"] == "ok"


# --- python -m client --stream -------------------------------------------------------------------


class OrderedOut:
    """A text stream that notes, at its first write, whether the generation was still running."""

    def __init__(self, order: Order) -> None:
        self.order = order
        self.parts: list[str] = []

    def write(self, text: str) -> int:
        if text.strip():
            self.order.content()
        self.parts.append(text)
        return len(text)

    def flush(self) -> None:
        pass


def test_client_url_stream_prints_tokens_as_they_arrive(llama: RunningFunction) -> None:
    # Given the client's --stream on the generator's URL (no auth: the local URL has none)
    order = Order(llama)
    out, err = OrderedOut(order), io.StringIO()
    data = json.dumps(
        {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": TOKENS, "temperature": 0}
    )
    # When it runs
    status = client_cli.main(
        ["url", llama.url, "--path", "/v1/chat/completions", "--data", data, "--stream", "--auth", "none"],
        out=out,  # type: ignore[arg-type]
        err=err,
    )
    # Then it printed the tokens one event at a time, the first while the rest was being generated
    assert status == 0, err.getvalue()
    order.check()
    printed = "".join(out.parts).strip()
    whole = llama.call(
        "POST",
        "/v1/chat/completions",
        json.dumps(
            {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": TOKENS, "temperature": 0}
        ).encode(),
        {"content-type": "application/json"},
    )
    assert printed == json.loads(whole[1])["choices"][0]["message"]["content"].strip()
    assert " events; " in err.getvalue()


@pytest.mark.usefixtures("dummy_aws")
def test_client_invoke_stream_uses_invoke_with_response_stream(llama: RunningFunction) -> None:
    # Given the client's invoke --stream against the local Invoke API (dummy credentials: AWS stand-in)
    order = Order(llama)
    out, err = OrderedOut(order), io.StringIO()
    payload = json.dumps({"prompt": TEXT_PROMPT, "max_tokens": TOKENS, "temperature": 0})
    status = client_cli.main(
        [
            "invoke",
            "--function-name",
            "function",
            "--endpoint-url",
            llama.endpoint,
            "--payload",
            payload,
            "--stream",
        ],
        out=out,  # type: ignore[arg-type]
        err=err,
    )
    # Then the llama.cpp-style events of the direct payload were printed as they came
    assert status == 0, err.getvalue()
    order.check()
    assert "".join(out.parts).strip().startswith("5")
