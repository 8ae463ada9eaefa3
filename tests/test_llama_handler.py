"""The llama.cpp generator's handler, in-process, on the real SmolLM2-135M-Instruct GGUF.

The handler module is imported once per session with the environment a local
run gives it (MODEL_PATH and friends); importing it loads the model, as Lambda's
init phase does. Most tests call the buffered entry point (``app.lambda_handler``,
what a runtime that cannot stream gets); the streaming tests call the one the
image's runtime loop calls (``lambda_handler``) and read its chunks as the loop
would. Only the Lambda context object is a stand-in (AWS itself).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import openai.types as oa
import openai.types.chat as oa_chat
import pytest

from lambda_common.auth import ApiKeyGuard
from lambda_common.streaming import StreamAborted, StreamingResponse
from local.models import embedded_gguf
from tests.conftest import FakeContext, function_url_event, sse_events

LLAMA_DIR = Path(__file__).resolve().parent.parent / "lambda_images" / "llama"
SEED = {"prompt": "llamas are", "n-generate": 1}
KEY = "test-key-0123456789abcdef"
N_CTX = 1024
MARGIN_MS = 200
LIMIT = 1000
COUNTING = "Count from 1 to 1000, separated by commas: 1, 2, 3,"


def load_handler() -> tuple[types.ModuleType, dict[str, Any]]:
    """Import lambda_images/llama/handler.py under a unique module name, then invoke it once."""
    environment = {
        "MODEL_PATH": str(embedded_gguf()),
        "N_CTX": str(N_CTX),
        "N_THREADS": "1",
        "DEADLINE_MARGIN_MS": str(MARGIN_MS),
        "MAX_TOKENS_LIMIT": str(LIMIT),
        "DEFAULT_MAX_TOKENS": "32",
        "POWERTOOLS_SERVICE_NAME": "llama-test",
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environment.items():
            patch.setenv(name, value)
        for name in ("API_KEY", "API_KEY_SECRET_ARN", "MODEL_ALIAS", "MODEL_FILE", "MODEL_LOCAL_PATH"):
            patch.delenv(name, raising=False)
        if str(LLAMA_DIR) not in sys.path:
            sys.path.insert(0, str(LLAMA_DIR))
        spec = importlib.util.spec_from_file_location("llama_handler", LLAMA_DIR / "handler.py")
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["llama_handler"] = module
        spec.loader.exec_module(module)
    first = module.app.lambda_handler(dict(SEED), FakeContext())
    return module, first


@pytest.fixture(scope="session")
def loaded() -> tuple[types.ModuleType, dict[str, Any]]:
    return load_handler()


@pytest.fixture(scope="session")
def handler(loaded: tuple[types.ModuleType, dict[str, Any]]) -> types.ModuleType:
    return loaded[0]


@dataclass
class DecodeCalls:
    """llama.cpp's decode calls during one test; the call numbered ``fail_at`` raises instead."""

    count: int = 0
    fail_at: int | None = None


@pytest.fixture
def decode_calls(handler: types.ModuleType, monkeypatch: pytest.MonkeyPatch) -> DecodeCalls:
    """Counts (and can fail) llama.cpp's decode calls. llama.cpp cannot be made to fail on demand, so
    the count and the fault sit where llama-cpp-python calls llama_decode; undone after the test."""
    llm = handler.engine.llm
    real_eval = llm.eval
    calls = DecodeCalls()

    def eval_(tokens: Any) -> None:
        calls.count += 1
        if calls.count == calls.fail_at:
            raise RuntimeError("llama_decode returned -1")
        real_eval(tokens)

    monkeypatch.setattr(llm, "eval", eval_)
    return calls


def invoke(handler: types.ModuleType, payload: Any, remaining_ms: int = 60_000) -> Any:
    return handler.app.lambda_handler(payload, FakeContext(remaining_ms=remaining_ms))


def call(
    handler: types.ModuleType,
    method: str,
    path: str,
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    b64: bool = False,
    remaining_ms: int = 60_000,
) -> tuple[int, dict[str, str], str]:
    """A Function URL request through the handler: (status, headers, body text)."""
    raw = body if isinstance(body, (str, bytes)) or body is None else json.dumps(body)
    event = function_url_event(method, path, raw, headers=headers, base64=b64)
    response = handler.app.lambda_handler(event, FakeContext(remaining_ms=remaining_ms))
    text = response.get("body", "")
    if response.get("isBase64Encoded"):
        text = base64.b64decode(text).decode()
    return response["statusCode"], {k.lower(): v for k, v in response.get("headers", {}).items()}, text


# ------------------------------------------------------------------ the seed payload and cold start


def test_seed_payload_generates_exactly_one_token(handler: types.ModuleType) -> None:
    # Given the seed's direct-invoke payload
    # When it is invoked
    answer = invoke(handler, {"prompt": "llamas are", "n-generate": 1})
    # Then exactly one new token comes back, cut by the token budget
    assert answer["usage"]["completion_tokens"] == 1
    assert answer["timings"]["predicted_n"] == 1
    assert answer["finish_reason"] == "length"
    assert answer["text"].strip()
    assert answer["usage"]["total_tokens"] == answer["usage"]["prompt_tokens"] + 1
    assert answer["model"] == "SmolLM2-135M-Instruct.Q4_1"


def test_first_invocation_reports_the_cold_start_and_later_ones_are_warm(
    loaded: tuple[types.ModuleType, dict[str, Any]],
) -> None:
    # Given the invocation made right after import (the one that paid the init)
    handler, first = loaded
    # Then it says so and carries the init time; a later invocation is warm
    assert first["timings"]["cold_start"] is True
    assert first["timings"]["init_ms"] > 0
    later = invoke(handler, dict(SEED))
    assert later["timings"]["cold_start"] is False
    assert later["timings"]["init_ms"] is None


def test_answer_carries_usage_and_timings(handler: types.ModuleType) -> None:
    answer = invoke(handler, {"prompt": COUNTING, "max_tokens": 12, "temperature": 0})
    timings = answer["timings"]
    assert answer["usage"]["completion_tokens"] <= 12
    assert timings["prompt_n"] == answer["usage"]["prompt_tokens"]
    assert timings["prompt_ms"] > 0
    assert timings["total_ms"] >= timings["prompt_ms"]
    if answer["usage"]["completion_tokens"] > 1:
        assert timings["predicted_per_second"] > 0


# ------------------------------------------------------------------ chat and determinism


def test_chat_is_rendered_with_the_models_own_template(handler: types.ModuleType) -> None:
    # Given a conversation and the chat template stored in the GGUF file, rendered independently
    messages = [{"role": "user", "content": "What do llamas eat?"}]
    template = handler.engine.llm.metadata["tokenizer.chat_template"]
    # Rendered as Hugging Face renders chat templates (trimmed blocks); plain text, not HTML.
    environment = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, autoescape=False)  # noqa: S701
    rendered = environment.from_string(template).render(messages=messages, add_generation_prompt=True)
    assert "<|im_start|>user" in rendered
    templated = handler.engine.tokenize(rendered, add_special=True, parse_special=True)
    plain = handler.engine.tokenize(messages[0]["content"], add_special=True, parse_special=True)
    # When the conversation is sent as messages
    answer = invoke(handler, {"messages": messages, "max_tokens": 8, "temperature": 0})
    # Then the prompt the model saw is the templated one, not the bare text
    assert answer["usage"]["prompt_tokens"] == len(templated)
    assert answer["usage"]["prompt_tokens"] > len(plain)
    assert "<|im_end|>" not in answer["text"]


def test_fixed_seed_and_zero_temperature_are_deterministic(handler: types.ModuleType) -> None:
    payload = {"prompt": "The best thing about llamas is", "max_tokens": 16, "temperature": 0, "seed": 7}
    first = invoke(handler, dict(payload))
    invoke(handler, {"prompt": "Something else entirely:", "max_tokens": 5})  # evicts the cached prefix
    second = invoke(handler, dict(payload))
    third = invoke(handler, dict(payload))
    assert first["text"] == second["text"] == third["text"]
    assert first["usage"] == second["usage"]


def test_a_fixed_seed_repeats_sampling_at_nonzero_temperature(handler: types.ModuleType) -> None:
    payload = {"prompt": "Once upon a time", "max_tokens": 16, "temperature": 1.0, "seed": 1234}
    assert invoke(handler, dict(payload))["text"] == invoke(handler, dict(payload))["text"]


def test_stop_strings_end_generation(handler: types.ModuleType) -> None:
    answer = invoke(handler, {"prompt": COUNTING, "max_tokens": 40, "temperature": 0, "stop": [" 7"]})
    assert answer["finish_reason"] == "stop"
    assert " 7" not in answer["text"]
    assert "6" in answer["text"]


# ------------------------------------------------------------------ direct-invoke errors


@pytest.mark.parametrize(
    ("payload", "code", "fragment"),
    [
        ({"prompt": 5, "n-generate": 1}, 400, "prompt"),
        ({"prompt": "llamas are", "n-generate": "1"}, 400, "n-generate"),
        ({"prompt": "llamas are", "n_generate": 1}, 400, "n_generate: unknown field"),
        ({"prompt": "", "n-generate": 1}, 400, "prompt"),
        ({"n-generate": 1}, 400, "exactly one of prompt and messages"),
        ({"prompt": "a", "messages": [{"role": "user", "content": "b"}]}, 400, "exactly one of"),
        ({"prompt": "llamas are", "n-generate": -1}, 400, "n-generate"),
        ({"prompt": "llamas are", "n-generate": 0}, 400, "n-generate"),
        ({"prompt": "llamas are", "n-generate": 10**9}, 400, f"MAX_TOKENS_LIMIT is {LIMIT}"),
        ({"prompt": "llamas are", "n-generate": 1, "max_tokens": 1}, 400, "not both"),
        ({"prompt": "llamas are", "temperature": 9}, 400, "temperature"),
        ({"prompt": "llamas are", "stop": ["a"] * 9}, 400, "at most 8"),
        ({"messages": []}, 400, "messages"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, 400, "role"),
        ({"prompt": "llamas are", "model": "gpt-4o"}, 404, "gpt-4o"),
        (["llamas are"], 400, "JSON object"),
        ("llamas are", 400, "JSON object"),
    ],
)
def test_bad_direct_payloads_get_a_structured_error(
    handler: types.ModuleType, payload: Any, code: int, fragment: str
) -> None:
    # When a malformed payload is invoked directly
    answer = invoke(handler, payload)
    # Then the result is the direct-invoke error object naming the problem, not a stack trace
    assert set(answer) == {"error"}
    error = answer["error"]
    assert set(error) == {"message", "type", "param", "code", "status"}
    assert error["status"] == code
    assert fragment in error["message"]
    assert error["type"] == ("not_found_error" if code == 404 else "invalid_request_error")


def test_a_prompt_longer_than_the_context_is_refused_and_the_process_survives(
    handler: types.ModuleType,
) -> None:
    answer = invoke(handler, {"prompt": "llama " * (N_CTX + 50), "n-generate": 1})
    assert answer["error"]["status"] == 400
    assert answer["error"]["code"] == "context_length_exceeded"
    assert answer["error"]["param"] == "prompt"
    assert f"context window is {N_CTX} tokens" in answer["error"]["message"]
    assert invoke(handler, dict(SEED))["usage"]["completion_tokens"] == 1


def test_a_llama_cpp_failure_mid_generation_is_a_500_not_a_half_answer(
    handler: types.ModuleType, decode_calls: DecodeCalls
) -> None:
    # Given llama.cpp failing on its fifth decode call
    decode_calls.fail_at = 5
    # When a generation runs into it
    answer = invoke(handler, {"prompt": COUNTING, "max_tokens": 20, "temperature": 0})
    # Then the answer is a server error without partial text
    assert answer == {"error": answer["error"]}
    assert answer["error"]["status"] == 500
    assert answer["error"]["code"] == "generation_failed"
    assert answer["error"]["type"] == "server_error"
    decode_calls.fail_at = None
    # And the next request generates normally from a clean state
    after = invoke(handler, {"prompt": COUNTING, "max_tokens": 6, "temperature": 0})
    reference = invoke(handler, {"prompt": COUNTING, "max_tokens": 6, "temperature": 0})
    assert after["usage"]["completion_tokens"] == 6
    assert after["text"] == reference["text"]


# ------------------------------------------------------------------ the deadline


def test_generation_stops_before_the_deadline_with_partial_output(handler: types.ModuleType) -> None:
    # Given an invocation with 3 s left before the margin, and a request that would take far longer
    payload = {"prompt": COUNTING, "max_tokens": LIMIT, "temperature": 0}
    # When it runs
    answer = invoke(handler, payload, remaining_ms=MARGIN_MS + 3000)
    # Then what was generated comes back, labelled as cut by the deadline
    assert answer["finish_reason"] == "deadline"
    assert 1 <= answer["usage"]["completion_tokens"] < LIMIT - 100
    assert answer["text"].startswith(" 4")


def test_openai_routes_report_a_deadline_stop_as_length_plus_a_flag(handler: types.ModuleType) -> None:
    body = {"messages": [{"role": "user", "content": COUNTING}], "max_tokens": LIMIT, "temperature": 0}
    status, _, text = call(handler, "POST", "/v1/chat/completions", body, remaining_ms=MARGIN_MS + 1500)
    assert status == 200
    choice = json.loads(text)["choices"][0]
    assert choice["finish_reason"] == "length"
    assert choice["deadline_reached"] is True


def test_an_invocation_already_past_the_margin_is_refused(handler: types.ModuleType) -> None:
    answer = invoke(handler, dict(SEED), remaining_ms=MARGIN_MS - 50)
    assert answer["error"]["status"] == 503
    assert answer["error"]["code"] == "deadline_too_close"
    assert "DEADLINE_MARGIN_MS" in answer["error"]["message"]


# ------------------------------------------------------------------ Function URL routes


def test_post_root_takes_the_direct_payload(handler: types.ModuleType) -> None:
    status, headers, text = call(handler, "POST", "/", SEED)
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert json.loads(text)["usage"]["completion_tokens"] == 1


def test_base64_bodies_are_decoded(handler: types.ModuleType) -> None:
    body = {"prompt": COUNTING, "max_tokens": 6, "temperature": 0}
    plain = json.loads(call(handler, "POST", "/v1/completions", body)[2])
    status, _, text = call(handler, "POST", "/v1/completions", body, b64=True)
    assert status == 200
    assert json.loads(text)["choices"][0]["text"] == plain["choices"][0]["text"]


def test_completions_answer_in_openai_shape(handler: types.ModuleType) -> None:
    status, _, text = call(handler, "POST", "/v1/completions", {"prompt": COUNTING, "max_tokens": 5})
    assert status == 200
    completion = oa.Completion.model_validate(json.loads(text))
    assert completion.object == "text_completion"
    assert completion.id.startswith("cmpl-")
    assert completion.model == handler.settings.alias
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage is not None
    assert completion.usage.completion_tokens <= 5


def test_chat_completions_answer_in_openai_shape(handler: types.ModuleType) -> None:
    body = {
        "model": handler.settings.alias,
        "messages": [
            {"role": "system", "content": "You answer briefly."},
            {"role": "user", "content": [{"type": "text", "text": "Name a llama food."}]},
        ],
        "max_completion_tokens": 12,
        "temperature": 0,
    }
    status, _, text = call(handler, "POST", "/v1/chat/completions", body)
    assert status == 200
    chat = oa_chat.ChatCompletion.model_validate(json.loads(text))
    assert chat.object == "chat.completion"
    assert chat.id.startswith("chatcmpl-")
    assert chat.choices[0].message.role == "assistant"
    assert chat.choices[0].message.content
    assert chat.usage is not None
    assert chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens


def test_chat_stream_drained_for_a_buffered_runtime_is_whole_server_sent_events(
    handler: types.ModuleType,
) -> None:
    # Given the same chat asked with and without stream
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": "Say hello to a llama."}],
        "max_tokens": 12,
        "temperature": 0,
        "seed": 3,
    }
    whole = json.loads(call(handler, "POST", "/v1/chat/completions", body)[2])
    body |= {"stream": True, "stream_options": {"include_usage": True}}
    # When streamed
    status, headers, text = call(handler, "POST", "/v1/chat/completions", body)
    # Then it is text/event-stream: chunks, a usage chunk, then [DONE]
    assert status == 200
    assert headers["content-type"] == "text/event-stream"
    events = sse_events(text)
    assert events[-1] == "[DONE]"
    chunks = [oa_chat.ChatCompletionChunk.model_validate(e) for e in events[:-1]]
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == whole["choices"][0]["message"]["content"]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole["choices"][0]["finish_reason"]]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole["usage"]["completion_tokens"]


def test_completion_stream_drained_for_a_buffered_runtime_is_whole_server_sent_events(
    handler: types.ModuleType,
) -> None:
    body = {"prompt": COUNTING, "max_tokens": 6, "temperature": 0, "stream": True}
    status, headers, text = call(handler, "POST", "/v1/completions", body)
    assert status == 200
    assert headers["content-type"] == "text/event-stream"
    events = sse_events(text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert {c["object"] for c in chunks} == {"text_completion"}
    # OpenAI's chunks carry finish_reason null until the last, which the SDK's type validates
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    last = oa.Completion.model_validate(chunks[-1])
    assert last.choices[0].finish_reason == "length"
    assert "".join(c["choices"][0]["text"] for c in chunks).startswith(" 4")
    assert all("usage" not in c for c in chunks)  # no include_usage: no usage chunk


def test_models_and_health(handler: types.ModuleType) -> None:
    status, _, text = call(handler, "GET", "/v1/models")
    assert status == 200
    listing = json.loads(text)
    assert listing["object"] == "list"
    model = oa.Model.model_validate(listing["data"][0])
    assert model.id == handler.settings.alias == "SmolLM2-135M-Instruct.Q4_1"
    assert call(handler, "GET", "/health")[:1] == (200,)
    assert json.loads(call(handler, "GET", "/health")[2])["status"] == "ok"


def test_a_trailing_slash_names_the_same_route(handler: types.ModuleType) -> None:
    status, _, text = call(handler, "GET", "/v1/models/")
    assert status == 200
    assert json.loads(text)["object"] == "list"


def test_tokenize_and_detokenize_round_trip(handler: types.ModuleType) -> None:
    status, _, text = call(handler, "POST", "/tokenize", {"content": "llamas are fluffy"})
    assert status == 200
    tokens = json.loads(text)["tokens"]
    assert all(isinstance(t, int) for t in tokens)
    assert len(tokens) >= 3
    status, _, text = call(handler, "POST", "/detokenize", {"tokens": tokens})
    assert (status, json.loads(text)) == (200, {"content": "llamas are fluffy"})
    pieces = json.loads(call(handler, "POST", "/tokenize", {"content": "llamas", "with_pieces": True})[2])
    assert "".join(p["piece"] for p in pieces["tokens"]) == "llamas"
    assert [p["id"] for p in pieces["tokens"]] == tokens[: len(pieces["tokens"])]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("POST", "/v1/completions", "{not json", 400, "invalid_json"),
        ("POST", "/v1/completions", "", 400, "invalid_body"),
        ("POST", "/v1/completions", {"prompt": 7}, 400, "invalid_value"),
        ("POST", "/v1/completions", {"prompt": "a", "logprobs": 21}, 400, "invalid_value"),
        ("POST", "/v1/completions", {"prompt": ["a", "b"]}, 400, "invalid_value"),
        ("POST", "/v1/completions", {"prompt": "a", "n": 2}, 400, "invalid_value"),
        ("POST", "/v1/completions", {"prompt": "a", "max_tokens": -5}, 400, "invalid_value"),
        ("POST", "/v1/chat/completions", {"messages": "hi"}, 400, "invalid_value"),
        (
            "POST",
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "hi"}], "stream": "yes"},
            400,
            "invalid_value",
        ),
        (
            "POST",
            "/v1/chat/completions",
            {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]},
            404,
            "model_not_found",
        ),
        (
            "POST",
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "llama " * (N_CTX + 10)}]},
            400,
            "context_length_exceeded",
        ),
        ("POST", "/v1/completions", "x" * (1_048_576 + 1), 413, "too_large"),
        ("GET", "/v1/chat/completions", None, 405, "method_not_allowed"),
        ("GET", "/v1/nothing-here", None, 404, "not_found"),
        ("POST", "/detokenize", {"tokens": [10**9]}, 400, "invalid_value"),
    ],
)
def test_bad_url_requests_get_openai_errors_on_v1_routes(
    handler: types.ModuleType, method: str, path: str, body: Any, status: int, code: str
) -> None:
    got_status, headers, text = call(handler, method, path, body)
    assert got_status == status
    assert headers["content-type"] == "application/json"
    error = json.loads(text)["error"]
    if path.startswith("/v1/"):
        assert error["code"] == code
        assert set(error) == {"message", "type", "param", "code"}
    else:
        assert error["code"] == status
    assert error["message"]
    if status == 405:
        assert headers["allow"] == "POST"


def test_bad_url_requests_get_llama_errors_elsewhere(handler: types.ModuleType) -> None:
    status, _, text = call(handler, "POST", "/", "{not json")
    assert status == 400
    assert json.loads(text)["error"]["code"] == 400
    status, _, text = call(handler, "PUT", "/tokenize", "{}")
    assert (status, json.loads(text)["error"]["code"]) == (405, 405)
    event = function_url_event("POST", "/", "%%%")
    event["isBase64Encoded"] = True
    response = handler.app.lambda_handler(event, FakeContext())
    assert response["statusCode"] == 400
    assert "base64" in json.loads(response["body"])["error"]["message"]


# ------------------------------------------------------------------ the API key


@pytest.fixture
def guarded(handler: types.ModuleType, monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """The handler with API-key mode on (as with API_KEY_SECRET_ARN set; the key is injected)."""
    monkeypatch.setattr(handler.app, "guard", ApiKeyGuard(key=KEY))
    return handler


@pytest.mark.parametrize("path", ["/v1/models", "/v1/chat/completions", "/", "/tokenize", "/nowhere"])
def test_api_key_mode_refuses_requests_without_the_key(guarded: types.ModuleType, path: str) -> None:
    for headers in (None, {"Authorization": "Bearer wrong-key-0123456789"}, {"Authorization": KEY}):
        status, response_headers, text = call(guarded, "POST", path, {"prompt": "x"}, headers=headers)
        assert status == 401
        assert response_headers["www-authenticate"] == "Bearer"
        error = json.loads(text)["error"]
        assert error["code"] == ("invalid_api_key" if path.startswith("/v1/") else 401)


def test_api_key_mode_lets_the_key_and_health_through(guarded: types.ModuleType) -> None:
    assert call(guarded, "GET", "/v1/models", headers={"Authorization": f"Bearer {KEY}"})[0] == 200
    assert call(guarded, "GET", "/health")[0] == 200
    # Direct invokes are authorized by IAM and need no key
    assert invoke(guarded, dict(SEED))["usage"]["completion_tokens"] == 1


def test_without_api_key_mode_no_header_is_needed(handler: types.ModuleType) -> None:
    assert not handler.app.guard.enabled
    assert call(handler, "GET", "/v1/models")[0] == 200


def test_the_warm_process_survives_every_error(handler: types.ModuleType) -> None:
    payloads: list[Any] = [{"prompt": None}, {"messages": [{}]}, 42, None, {"prompt": "a" * 10, "top_k": -1}]
    for payload in payloads:
        assert "error" in invoke(handler, payload)
    assert invoke(handler, dict(SEED))["usage"]["completion_tokens"] == 1


# ------------------------------------------------------------------ streaming, as the runtime loop reads it


def stream(handler: types.ModuleType, path: str, body: Any) -> StreamingResponse:
    event = function_url_event("POST", path, json.dumps(body))
    answer = handler.lambda_handler(event, FakeContext())
    assert isinstance(answer, StreamingResponse), answer
    return answer


def test_a_streamed_chat_gives_one_chunk_per_token_while_the_rest_is_still_being_generated(
    handler: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a chat request with stream=true, on a Function URL in RESPONSE_STREAM mode
    monkeypatch.setattr(handler.app, "url_streaming", True)
    body = {"messages": [{"role": "user", "content": COUNTING}], "max_tokens": 8, "temperature": 0}
    whole = json.loads(call(handler, "POST", "/v1/chat/completions", body)[2])
    answer = stream(handler, "/v1/chat/completions", body | {"stream": True})
    # Then the prelude carries the status and headers
    assert answer.prelude is not None
    assert answer.prelude == {"statusCode": 200, "headers": answer.prelude["headers"]}
    assert answer.prelude["headers"]["Content-Type"] == "text/event-stream"
    # And the role chunk comes first, then the first content chunk, before the generation has ended
    engine_lock = handler.engine._lock
    first = next(answer.chunks)
    assert b'"role":"assistant"' in first
    content = next(answer.chunks)
    assert b'"content"' in content
    assert engine_lock.locked()  # llama.cpp is still generating this answer
    rest = list(answer.chunks)
    assert not engine_lock.locked()
    events = sse_events((first + content + b"".join(rest)).decode())
    deltas = [e["choices"][0]["delta"].get("content") for e in events[1:-1] if e["choices"]]
    assert len([d for d in deltas if d]) == whole["usage"]["completion_tokens"] > 2
    assert "".join(d for d in deltas if d) == whole["choices"][0]["message"]["content"]


def test_a_direct_payload_with_stream_true_streams_llama_cpp_events(handler: types.ModuleType) -> None:
    answer = handler.lambda_handler(
        {"prompt": COUNTING, "max_tokens": 4, "temperature": 0, "stream": True}, FakeContext()
    )
    assert isinstance(answer, StreamingResponse)
    assert answer.prelude is None  # a direct invoke has no HTTP prelude
    assert answer.content_type == "text/event-stream"
    events = sse_events(b"".join(answer.chunks).decode())
    assert [e["stop"] for e in events] == [False] * (len(events) - 1) + [True]
    assert events[-1]["usage"]["completion_tokens"] == 4
    assert "".join(e["content"] for e in events).startswith(" 4")


def test_an_error_mid_stream_ends_it_with_an_error_event_and_aborts(
    handler: types.ModuleType, decode_calls: DecodeCalls, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given llama.cpp failing on its fifth decode call
    monkeypatch.setattr(handler.app, "url_streaming", True)
    decode_calls.fail_at = 5
    answer = stream(handler, "/v1/completions", {"prompt": COUNTING, "max_tokens": 20, "stream": True})
    chunks: list[bytes] = []
    # When the stream is read as the runtime loop reads it
    with pytest.raises(StreamAborted) as aborted:
        chunks.extend(answer.chunks)
    # Then the tokens made so far went out, then an OpenAI error event, then the runtime's abort
    assert aborted.value.error_type == "InternalError"
    error = json.loads(chunks[-1].decode().removeprefix("data: "))["error"]
    assert error["code"] == "generation_failed"
    assert error["type"] == "server_error"
    assert len(chunks) >= 3
    decode_calls.fail_at = None
    assert invoke(handler, dict(SEED))["usage"]["completion_tokens"] == 1


def test_a_caller_going_away_stops_the_generation(
    handler: types.ModuleType, decode_calls: DecodeCalls, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a long streamed generation and a count of llama.cpp decode calls
    monkeypatch.setattr(handler.app, "url_streaming", True)
    answer = stream(handler, "/v1/completions", {"prompt": COUNTING, "max_tokens": 200, "stream": True})
    next(answer.chunks)
    decoded = decode_calls.count
    assert decoded >= 1  # the count sees llama.cpp's decode calls
    # When the runtime closes the stream (the platform told it the caller is gone)
    answer.close()
    # Then no further token is decoded and the model is free for the next request at once
    assert decode_calls.count == decoded
    assert not handler.engine._lock.locked()
    assert invoke(handler, dict(SEED))["usage"]["completion_tokens"] == 1
