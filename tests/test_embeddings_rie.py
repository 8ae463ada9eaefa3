"""The embedding handler under its image's runtime loop behind the real Lambda Runtime Interface Emulator.

Over HTTP, as `aws lambda invoke` and a Function URL reach a deployed
function: the emulator starts the runtime on the first invoke, which pays the
init phase (model load). The model is the real all-MiniLM-L6-v2, exported by
the image's export script (shared with test_embeddings_handler.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from local.models import EMBEDDINGS_MODEL_ID
from local.rie import EmulatedFunction, FunctionSpec
from tests.conftest import function_url_event
from tests.test_embeddings_handler import EMBEDDINGS_DIR, SEED, export_once

pytestmark = pytest.mark.slow

DIMENSIONS = 384


def _spec(name: str, model_dir: Path, backend: str) -> FunctionSpec:
    return FunctionSpec(
        name=name,
        code_dir=EMBEDDINGS_DIR,
        memory_mb=2048,
        timeout_s=60,
        environment={
            "MODEL_DIR": str(model_dir),
            "MODEL_ID": EMBEDDINGS_MODEL_ID,
            "BACKEND": backend,
            "POWERTOOLS_SERVICE_NAME": name,
            "POWERTOOLS_LOG_LEVEL": "INFO",
        },
    )


@pytest.fixture(scope="module")
def onnx_function(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatedFunction]:
    model_dir = export_once(tmp_path_factory)
    log = tmp_path_factory.getbasetemp() / "embeddings-rie-onnx.log"
    with EmulatedFunction(_spec("embeddings", model_dir, "onnx"), log_path=log) as function:
        yield function


def _url(
    function: EmulatedFunction, method: str, path: str, body: Any = None
) -> tuple[int, dict[str, Any], Any]:
    event = function_url_event(method, path, None if body is None else json.dumps(body))
    result = function.invoke(event)
    assert result.status == 200, result.body
    response = result.json()
    return response["statusCode"], response.get("headers", {}), json.loads(response["body"])


def test_direct_invoke_of_the_seed_payload(onnx_function: EmulatedFunction) -> None:
    # When the seed's payload is invoked through the emulator (the first invoke pays the init)
    result = onnx_function.invoke(SEED)
    # Then the function answers two unit vectors of the model's dimension
    assert result.status == 200
    vectors = result.json()
    assert len(vectors) == 2
    assert all(len(vector) == DIMENSIONS for vector in vectors)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)


def test_function_url_events(onnx_function: EmulatedFunction) -> None:
    # When Function URL events ask for OpenAI embeddings, TEI embeddings and the model's info
    status, headers, body = _url(
        onnx_function, "POST", "/v1/embeddings", {"input": ["First text"], "model": EMBEDDINGS_MODEL_ID}
    )
    tei_status, _, tei = _url(onnx_function, "POST", "/embed", {"inputs": "First text"})
    info_status, _, info = _url(onnx_function, "GET", "/info")
    # Then each answers in its shape, with TEI's timing headers, and the routes agree
    assert status == 200
    assert body["object"] == "list"
    assert "x-inference-time" in {name.lower() for name in headers}
    assert tei_status == 200
    assert np.allclose(body["data"][0]["embedding"], tei[0], atol=1e-6)
    assert info_status == 200
    assert info["backend"] == "onnx"
    assert info["max_input_length"] == 256


def test_errors_are_answers_and_the_runtime_survives(onnx_function: EmulatedFunction) -> None:
    # When a direct payload and a Function URL request are wrong
    direct = onnx_function.invoke({"inputs": []})
    status, _, body = _url(onnx_function, "POST", "/embed", {"inputs": "x", "dimensions": 0})
    # Then both come back as structured errors, not function errors
    assert direct.status == 200
    assert direct.json() == {
        "error": {
            "message": "inputs must not be empty: send a string or a non-empty list of strings",
            "type": "invalid_request_error",
            "param": None,
            "code": "empty",
            "status": 400,
        }
    }
    assert "X-Amz-Function-Error" not in direct.headers
    assert status == 422
    assert body["error_type"] == "Validation"
    # And the same runtime process answers the next request
    pids = onnx_function.runtime_pids()
    assert len(onnx_function.invoke(SEED).json()) == 2
    assert onnx_function.runtime_pids() == pids


def test_the_torch_backend_under_the_emulator(embeddings_model_dir: Path, tmp_path: Path) -> None:
    # Given BACKEND=torch on the sentence-transformers folder
    spec = _spec("embeddings-torch", embeddings_model_dir, "torch")
    with EmulatedFunction(spec, log_path=tmp_path / "torch.log") as function:
        # When the seed's payload is invoked
        result = function.invoke(SEED)
    # Then sentence-transformers answers the same shape
    assert result.status == 200, result.body
    vectors = result.json()
    assert len(vectors) == 2
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
