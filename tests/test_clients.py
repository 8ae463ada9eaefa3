"""Clients people use, against the local stack: the official OpenAI SDK and `python -m client`.

AWS itself cannot exist here. Where a client needs it, the test says so:
boto3 gets dummy credentials (the emulator ignores them), SigV4 signing is
checked by reading the signed request as the function received it (the local
front does not verify signatures), and Secrets Manager is botocore's Stubber.
"""

from __future__ import annotations

import base64
import io
import json
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import openai
import pytest
from botocore.stub import Stubber

import client.__main__ as client_cli
from client import calls
from local.stack import RunningFunction
from tests.harness import API_KEY, echo_function, shared_stack

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def llama_sdk(llama: RunningFunction) -> openai.OpenAI:
    # The SDK insists on a key; without API-key mode the function ignores it.
    return openai.OpenAI(base_url=f"{llama.url}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def embeddings_sdk(embeddings: RunningFunction) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{embeddings.url}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def llama_model(llama_sdk: openai.OpenAI) -> str:
    models = llama_sdk.models.list().data
    assert len(models) == 1
    return models[0].id


@pytest.fixture(scope="module")
def embeddings_model(embeddings: RunningFunction) -> str:
    status, body, _ = embeddings.call("GET", "/health")
    assert status == 200
    return str(json.loads(body)["model_id"])


# --- the OpenAI SDK -----------------------------------------------------------------------------


def test_sdk_completions(llama_sdk: openai.OpenAI, llama_model: str) -> None:
    completion = llama_sdk.completions.create(model=llama_model, prompt="llamas are", max_tokens=4, seed=1)
    assert completion.object == "text_completion"
    assert completion.model == llama_model
    assert completion.choices[0].finish_reason in ("length", "stop")
    assert completion.usage is not None
    assert 1 <= completion.usage.completion_tokens <= 4


def test_sdk_chat_completions(llama_sdk: openai.OpenAI, llama_model: str) -> None:
    chat = llama_sdk.chat.completions.create(
        model=llama_model,
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say hello."},
        ],
        max_tokens=6,
    )
    assert chat.choices[0].message.role == "assistant"
    assert isinstance(chat.choices[0].message.content, str)
    assert chat.usage is not None
    assert chat.usage.completion_tokens <= 6


def test_sdk_chat_completions_stream_consumes_the_buffered_events(
    llama_sdk: openai.OpenAI, llama_model: str
) -> None:
    # Given stream=True (the function answers with all events at once: Lambda buffers)
    stream = llama_sdk.chat.completions.create(
        model=llama_model,
        messages=[{"role": "user", "content": "Count to three."}],
        max_tokens=6,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    # Then the SDK yields the chunks: a role, the content, a finish reason, the usage
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    finishes = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices]
    assert finishes[-1] in ("length", "stop")
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens <= 6
    assert isinstance(text, str)


def test_sdk_completions_stream(llama_sdk: openai.OpenAI, llama_model: str) -> None:
    stream = llama_sdk.completions.create(model=llama_model, prompt="llamas are", max_tokens=3, stream=True)
    chunks = list(stream)
    assert chunks
    assert chunks[-1].choices[0].finish_reason in ("length", "stop")


def test_sdk_maps_errors_to_its_exception_types(llama_sdk: openai.OpenAI, llama_model: str) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        llama_sdk.completions.create(model="gpt-4o", prompt="x", max_tokens=1)
    assert "gpt-4o" in missing.value.message
    with pytest.raises(openai.BadRequestError) as bad:
        llama_sdk.chat.completions.create(
            model=llama_model, messages=[{"role": "user", "content": "x"}], temperature=7
        )
    assert bad.value.body is not None
    assert "temperature" in json.dumps(bad.value.body)


def _floats(encoded: str) -> list[float]:
    raw = base64.b64decode(encoded)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def test_sdk_embeddings_float_base64_and_default(
    embeddings_sdk: openai.OpenAI, embeddings_model: str
) -> None:
    texts = ["First text", "Second text"]
    # Given the same inputs asked as floats, as base64, and with the SDK's default
    floats = embeddings_sdk.embeddings.create(model=embeddings_model, input=texts, encoding_format="float")
    encoded = embeddings_sdk.embeddings.create(model=embeddings_model, input=texts, encoding_format="base64")
    default = embeddings_sdk.embeddings.create(model=embeddings_model, input=texts)
    # Then all three carry the same 384-dimension vectors
    assert [item.index for item in floats.data] == [0, 1]
    assert len(floats.data[0].embedding) == 384
    assert floats.usage.prompt_tokens > 0
    for index in (0, 1):
        from_base64 = _floats(encoded.data[index].embedding)  # type: ignore[arg-type]
        assert from_base64 == pytest.approx(floats.data[index].embedding, abs=1e-6)
        # without encoding_format the SDK asks for base64 and decodes it itself
        assert default.data[index].embedding == pytest.approx(floats.data[index].embedding, abs=1e-6)


def test_sdk_embeddings_unknown_model_is_not_found(embeddings_sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        embeddings_sdk.embeddings.create(model="text-embedding-3-small", input="x")


def test_sdk_with_the_api_key(llama_model: str) -> None:
    keyed = shared_stack(api_key=True).functions["llama"]
    good = openai.OpenAI(base_url=f"{keyed.url}/v1", api_key=API_KEY, max_retries=0, timeout=120)
    assert good.models.list().data[0].id == llama_model
    wrong = openai.OpenAI(base_url=f"{keyed.url}/v1", api_key="not-the-right-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()


# --- python -m client -----------------------------------------------------------------------


def run_client(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = client_cli.main(list(argv), out=out, err=err)
    return status, out.getvalue(), err.getvalue()


def test_client_calls_a_url_and_prints_answer_and_timings(llama: RunningFunction) -> None:
    status, out, err = run_client(
        "url", llama.url, "--path", "/", "--data", json.dumps({"prompt": "llamas are", "n-generate": 2})
    )
    assert status == 0, err
    assert json.loads(out)["usage"]["completion_tokens"] <= 2
    assert re.search(r"status 200; connect \d+ ms, first byte \d+ ms, total \d+ ms", err)


def test_client_exit_status_reflects_an_error_answer(llama: RunningFunction) -> None:
    status, out, err = run_client("url", llama.url, "--path", "/v1/completions", "--data", "{}")
    assert status == 1
    assert json.loads(out)["error"]["param"] == "prompt"
    assert "status 400" in err


def test_client_sends_the_api_key(llama: RunningFunction) -> None:
    keyed = shared_stack(api_key=True).functions["llama"]
    assert run_client("url", keyed.url, "--path", "/v1/models", "--auth", "none")[0] == 1
    status, out, _ = run_client("url", keyed.url, "--path", "/v1/models", "--api-key", API_KEY)
    assert status == 0
    assert json.loads(out)["object"] == "list"


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFunction]:
    with echo_function(tmp_path_factory.mktemp("echo-client")) as function:
        yield function


def test_client_signs_iam_urls_with_sigv4_for_lambda(echo: RunningFunction) -> None:
    # AWS itself is not here: the echo function shows the signed request it received;
    # the signature is checked for its form (the front does not verify it).
    session = boto3.Session(
        aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret", region_name="eu-west-1"
    )
    answer = calls.call_url(
        echo.url,
        path="/v1/embeddings?x=1",
        data=b'{"input": "hi"}',
        auth="iam",
        region="eu-west-1",
        session=session,
    )
    assert answer.status == 200
    headers = json.loads(answer.body)["headers"]
    authorization = headers["authorization"]
    assert re.fullmatch(
        r"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/\d{8}/eu-west-1/lambda/aws4_request, "
        r"SignedHeaders=[a-z0-9;-]*host[a-z0-9;-]*x-amz-date[a-z0-9;-]*, Signature=[0-9a-f]{64}",
        authorization,
    ), authorization
    assert re.fullmatch(r"\d{8}T\d{6}Z", headers["x-amz-date"])


def test_client_takes_the_signing_region_from_a_function_url() -> None:
    assert (
        calls.region_from_url("https://abc123.lambda-url.ap-southeast-2.on.aws/v1/models") == "ap-southeast-2"
    )
    assert calls.region_from_url("http://127.0.0.1:8080") is None


def test_client_reads_the_api_key_from_secrets_manager() -> None:
    # Secrets Manager is AWS itself: botocore's Stubber stands in for it.
    arn = "arn:aws:secretsmanager:eu-central-1:123456789012:secret:llm-api-key-AbCdEf"
    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing")
    secrets = session.client("secretsmanager", region_name="eu-central-1")

    class OneClientSession:
        def client(self, name: str, **kwargs: Any) -> Any:
            assert name == "secretsmanager"
            assert kwargs["region_name"] == "eu-central-1"  # from the ARN
            return secrets

    with Stubber(secrets) as stub:
        stub.add_response("get_secret_value", {"SecretString": "  the-key-from-secrets  "}, {"SecretId": arn})
        assert calls.fetch_api_key(arn, session=OneClientSession()) == "the-key-from-secrets"


@pytest.mark.usefixtures("dummy_aws")  # boto3 signs even for the emulator, which ignores the credentials
def test_client_invokes_by_function_name(embeddings: RunningFunction) -> None:
    status, out, err = run_client(
        "invoke",
        "--function-name",
        "function",
        "--endpoint-url",
        embeddings.endpoint,
        "--payload",
        json.dumps({"inputs": ["First text", "Second text"]}),
    )
    assert status == 0, err
    assert len(json.loads(out)) == 2
    assert re.search(r"status 200; total \d+ ms", err)


@pytest.mark.usefixtures("dummy_aws")
def test_client_payload_from_a_file(
    embeddings: RunningFunction, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")  # the region comes from --region
    payload = tmp_path / "p.json"
    payload.write_text(json.dumps({"inputs": "one"}))
    status, out, _ = run_client(
        "invoke", "--function-name", "function", "--endpoint-url", embeddings.endpoint,
        "--region", "us-east-1", "--payload", f"@{payload}",
    )  # fmt: skip
    assert status == 0
    assert len(json.loads(out)) == 1


def test_client_parses_lambda_report_lines() -> None:
    tail = (
        "START RequestId: 1 Version: $LATEST\nEND RequestId: 1\n"
        "REPORT RequestId: 1\tDuration: 812.34 ms\tBilled Duration: 813 ms\tMemory Size: 8192 MB\t"
        "Max Memory Used: 402 MB\tInit Duration: 1530.12 ms\t\n"
    )
    assert calls.parse_report(tail) == {
        "Duration": "812.34 ms",
        "Billed Duration": "813 ms",
        "Memory Size": "8192 MB",
        "Max Memory Used": "402 MB",
        "Init Duration": "1530.12 ms",
    }
    # And the JSON-format record this stack's functions log (LoggingConfig.LogFormat JSON)
    json_tail = (
        '{"time":"2026-11-22T08:00:00.000Z","type":"platform.start","record":{"requestId":"1"}}\n'
        '{"time":"2026-11-22T08:00:01.000Z","type":"platform.report","record":{"requestId":"1",'
        '"metrics":{"durationMs":812.34,"billedDurationMs":813,"memorySizeMB":8192,"maxMemoryUsedMB":402,'
        '"initDurationMs":1530.12},"status":"success"}}\n'
    )
    assert calls.parse_report(json_tail) == {
        "Duration": "812.34 ms",
        "Billed Duration": "813 ms",
        "Memory Size": "8192 MB",
        "Max Memory Used": "402 MB",
        "Init Duration": "1530.12 ms",
    }
    assert calls.parse_report("START RequestId: 1\nsome log line\n") == {}


def test_client_usage_errors_are_reported_without_a_traceback() -> None:
    status, _, err = run_client("url", "ftp://example.com")
    assert status == 2
    assert "not an http(s) URL" in err
    status, _, err = run_client("url", "http://127.0.0.1:9", "--auth", "api-key")
    assert status == 2
    assert "needs --api-key" in err
