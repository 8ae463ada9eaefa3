"""The llama.cpp generator behind the real Lambda RIE, with its image's runtime loop, Function URL BUFFERED.

The handler runs in its own process exactly as the image starts it
(``python -m lambda_common.lambda_runtime handler.lambda_handler``), on the real
SmolLM2 GGUF, and is invoked over HTTP through the emulator's Invoke API: with
the seed's direct payload, and with Function URL events answered whole (a URL in
BUFFERED mode). tests/test_llama_runtime_rie.py does the same for a streaming URL.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai.types.chat as oa_chat
import pytest

from local.models import embedded_gguf
from local.rie import IMAGES, ROOT, EmulatedFunction, FunctionSpec, image_runtime
from tests.conftest import function_url_event

pytestmark = pytest.mark.slow

KEY = "rie-test-key-0123456789"
LOGS = ROOT / ".cache" / "test-logs"


def spec(**environment: str) -> FunctionSpec:
    return FunctionSpec(
        name="llama",
        code_dir=IMAGES / "llama",
        memory_mb=1769,  # one vCPU of CPU share: one thread
        timeout_s=60,
        runtime=image_runtime("llama"),
        environment={
            "MODEL_PATH": str(embedded_gguf()),
            "N_CTX": "1024",
            "POWERTOOLS_SERVICE_NAME": "llama",
            **environment,
        },
    )


@pytest.fixture(scope="module")
def function() -> Iterator[EmulatedFunction]:
    with EmulatedFunction(spec(), log_path=LOGS / "llama-rie.log") as running:
        yield running


@pytest.fixture(scope="module")
def guarded_function() -> Iterator[EmulatedFunction]:
    with EmulatedFunction(spec(API_KEY=KEY), log_path=LOGS / "llama-rie-api-key.log") as running:
        yield running


def url_response(function: EmulatedFunction, event: dict[str, Any]) -> tuple[int, dict[str, str], str]:
    result = function.invoke(event)
    assert result.status == 200, result.body
    response = result.json()
    body = response.get("body", "")
    if response.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    headers = {k.lower(): v for k, v in response.get("headers", {}).items()}
    return response["statusCode"], headers, body


def test_seed_payload_through_the_runtime_returns_one_token(function: EmulatedFunction) -> None:
    # Given the function behind the emulator, not yet initialised
    # When the seed's payload is invoked (this first invoke pays the init)
    result = function.invoke({"prompt": "llamas are", "n-generate": 1})
    # Then the runtime returns the handler's answer: one generated token
    assert result.status == 200
    answer = result.json()
    assert answer["usage"]["completion_tokens"] == 1
    assert answer["finish_reason"] == "length"
    assert answer["text"].strip()
    assert answer["timings"]["cold_start"] is True
    assert answer["timings"]["init_ms"] > 0
    # And the next invoke is warm
    again = function.invoke({"prompt": "llamas are", "n-generate": 1}).json()
    assert again["timings"]["cold_start"] is False


def test_function_url_event_through_the_runtime(function: EmulatedFunction) -> None:
    body = json.dumps(
        {
            "messages": [{"role": "user", "content": "What is a llama?"}],
            "max_tokens": 8,
            "temperature": 0,
        }
    )
    status, headers, text = url_response(
        function, function_url_event("POST", "/v1/chat/completions", body, base64=True)
    )
    assert status == 200
    assert headers["content-type"] == "application/json"
    chat = oa_chat.ChatCompletion.model_validate(json.loads(text))
    assert chat.choices[0].message.content
    assert chat.usage is not None
    assert 1 <= chat.usage.completion_tokens <= 8


def test_runtime_context_bounds_generation(function: EmulatedFunction) -> None:
    # The emulator's context reports the 60 s timeout: a short request is not cut
    answer = function.invoke({"prompt": "Count: 1, 2, 3,", "max_tokens": 4, "temperature": 0}).json()
    assert answer["finish_reason"] == "length"
    assert answer["usage"]["completion_tokens"] == 4


def test_bad_payloads_come_back_as_error_objects_not_runtime_errors(function: EmulatedFunction) -> None:
    result = function.invoke({"prompt": "llamas are", "n-generate": "one"})
    assert result.status == 200
    answer = result.json()
    assert (answer["error"]["status"], answer["error"]["code"]) == (400, "invalid_value")
    assert "n-generate" in answer["error"]["message"]
    assert "errorType" not in answer  # the runtime's shape for an unhandled exception
    status, _, text = url_response(function, function_url_event("DELETE", "/v1/models"))
    assert status == 405
    assert json.loads(text)["error"]["code"] == "method_not_allowed"


def test_api_key_mode_under_the_runtime(guarded_function: EmulatedFunction) -> None:
    status, _, text = url_response(guarded_function, function_url_event("GET", "/v1/models"))
    assert status == 401
    assert json.loads(text)["error"]["code"] == "invalid_api_key"
    status, _, text = url_response(
        guarded_function, function_url_event("GET", "/v1/models", headers={"Authorization": f"Bearer {KEY}"})
    )
    assert status == 200
    assert json.loads(text)["data"][0]["id"] == Path(embedded_gguf()).stem
    assert url_response(guarded_function, function_url_event("GET", "/health"))[0] == 200
    direct = guarded_function.invoke({"prompt": "llamas are", "n-generate": 1}).json()
    assert direct["usage"]["completion_tokens"] == 1
