"""The generator under the real Runtime Interface Emulator, with the runtime its image runs.

The image runs ``python -m lambda_common.lambda_runtime`` (its Dockerfile's
ENTRYPOINT, read by ``local.rie.image_runtime``). The emulator reads a
streamed response to its end before it answers, so it cannot show timing; it
does show that the loop speaks the Runtime API as the real Lambda side
expects: a streamed Function URL answer (URL in RESPONSE_STREAM mode) returned
whole by the emulator as the HTTP-integration prelude, eight NULs and the
server-sent events. The seed's direct payload under the same runtime is
tests/test_llama_rie.py's (the URL's invoke mode does not touch it).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from local.models import embedded_gguf
from local.rie import IMAGES, ROOT, EmulatedFunction, FunctionSpec, image_runtime
from tests.conftest import function_url_event, sse_events

pytestmark = pytest.mark.slow

PRELUDE_DELIMITER = b"\0" * 8


@pytest.fixture(scope="module")
def function() -> Iterator[EmulatedFunction]:
    spec = FunctionSpec(
        name="llama",
        code_dir=IMAGES / "llama",
        memory_mb=1769,
        timeout_s=60,
        runtime=image_runtime("llama"),
        environment={
            "MODEL_PATH": str(embedded_gguf()),
            "N_CTX": "1024",
            "POWERTOOLS_SERVICE_NAME": "llama",
            "FUNCTION_URL_INVOKE_MODE": "RESPONSE_STREAM",
        },
    )
    with EmulatedFunction(spec, log_path=ROOT / ".cache" / "test-logs" / "llama-runtime-rie.log") as running:
        yield running


def test_the_image_runs_the_projects_runtime_loop() -> None:
    assert image_runtime("llama") == "lambda_common.lambda_runtime"


def test_a_streamed_url_answer_arrives_whole_with_its_prelude(function: EmulatedFunction) -> None:
    # Given a streamed chat completion through a Function URL in RESPONSE_STREAM mode
    body = {"messages": [{"role": "user", "content": "What is a llama?"}], "max_tokens": 6, "stream": True}
    event = function_url_event("POST", "/v1/chat/completions", json.dumps(body))
    # When the emulator invokes it
    result = function.invoke(event)
    # Then it returns the whole stream: the prelude, eight NULs, then the server-sent events
    assert result.status == 200
    prelude, found, sse = result.body.partition(PRELUDE_DELIMITER)
    assert found
    head = json.loads(prelude)
    assert head["statusCode"] == 200
    assert head["headers"]["Content-Type"].startswith("text/event-stream")
    events = sse_events(sse.decode())
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert any(chunk["choices"] and chunk["choices"][0]["delta"].get("content") for chunk in chunks)


def test_a_refused_url_request_keeps_its_status_in_the_prelude(function: EmulatedFunction) -> None:
    # A whole answer (a 404 here) is framed too when the URL streams, so its status reaches the client
    result = function.invoke(function_url_event("GET", "/v1/nothing"))
    prelude, found, body = result.body.partition(PRELUDE_DELIMITER)
    assert found
    assert json.loads(prelude)["statusCode"] == 404
    assert "no route" in json.loads(body)["error"]["message"]
