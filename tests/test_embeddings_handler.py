"""The embedding function's handler, in-process, on the real all-MiniLM-L6-v2.

The session first runs the image's real export script on the embedded model
(that is the test of the export: it fails unless the ONNX pipeline reproduces
SentenceTransformer.encode), then imports handler.py under unique module names
with the environment a deployment gives it, once per configuration; importing
loads the model as Lambda's init phase does. sentence-transformers itself is
the reference the vectors are compared with. Only the Lambda context object is
a stand-in (AWS itself).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import stat
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from local.models import EMBEDDINGS_MODEL_ID, embedded_embeddings_model
from tests.conftest import FakeContext, function_url_event

pytestmark = pytest.mark.slow

EMBEDDINGS_DIR = Path(__file__).resolve().parent.parent / "lambda_images" / "embeddings"
SEED = {"inputs": ["First text", "Second text"]}
DIMENSIONS = 384
MAX_TOKENS = 256
KEY = "test-key-0123456789abcdef"
PROMPTS = {"query": "query: ", "passage": "passage: "}
SETTINGS_VARIABLES = (
    "API_KEY",
    "API_KEY_SECRET_ARN",
    "PROMPTS",
    "DEFAULT_PROMPT_NAME",
    "MODEL_ALIASES",
    "N_THREADS",
    "MAX_INPUTS",
    "MAX_INPUT_CHARS",
    "MAX_BODY_BYTES",
    "MAX_RESPONSE_BYTES",
    "MAX_BATCH_TOKENS",
    "AUTO_TRUNCATE",
    "BATCH_SIZE",
    "MODEL_REVISION",
)
QUERY = "how much protein should a female eat"
PASSAGE = (
    "As a general guideline, the average requirement of protein for women ages 19 to 70 is 46 grams per day."
)
UNRELATED = "The rocket reached orbit after a delayed launch from the coastal spaceport."


# ------------------------------------------------------------------ fixtures


def export_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded MiniLM exported by the image's own export script, once per test session."""
    out = tmp_path_factory.getbasetemp() / "embeddings-onnx-minilm"
    if not (out / "embedding_manifest.json").is_file():
        result = subprocess.run(
            [
                sys.executable,
                str(EMBEDDINGS_DIR / "export_onnx.py"),
                "--model-dir",
                str(embedded_embeddings_model()),
                "--out",
                str(out),
                "--model-id",
                EMBEDDINGS_MODEL_ID,
            ],
            cwd=EMBEDDINGS_DIR,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr[-4000:]
    return out


def load_handler(name: str, model_dir: Path, **environment: str) -> types.ModuleType:
    """Import lambda_images/embeddings/handler.py as a fresh module configured by ``environment``."""
    with pytest.MonkeyPatch.context() as patch:
        for variable in SETTINGS_VARIABLES:
            patch.delenv(variable, raising=False)
        patch.setenv("MODEL_DIR", str(model_dir))
        patch.setenv("MODEL_ID", EMBEDDINGS_MODEL_ID)
        patch.setenv("BACKEND", "onnx")
        patch.setenv("N_THREADS", "1")
        patch.setenv("POWERTOOLS_SERVICE_NAME", "embeddings-test")
        patch.setenv("POWERTOOLS_LOG_LEVEL", "WARNING")
        for variable, value in environment.items():
            patch.setenv(variable, value)
        if str(EMBEDDINGS_DIR) not in sys.path:
            sys.path.insert(0, str(EMBEDDINGS_DIR))
        module_name = f"embeddings_handler_{name}"
        spec = importlib.util.spec_from_file_location(module_name, EMBEDDINGS_DIR / "handler.py")
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_once(tmp_path_factory)


@pytest.fixture(scope="session")
def onnx(exported: Path) -> types.ModuleType:
    """The default deployment (ONNX backend), with query/passage prompts configured for MiniLM."""
    return load_handler("onnx", exported, PROMPTS=json.dumps(PROMPTS), MAX_INPUTS="2048")


@pytest.fixture(scope="session")
def plain(exported: Path) -> types.ModuleType:
    """MiniLM as it comes: no prompts."""
    return load_handler("plain", exported)


@pytest.fixture(scope="session")
def torch_backend(embeddings_model_dir: Path) -> types.ModuleType:
    """BACKEND=torch: sentence-transformers itself on the sentence-transformers folder."""
    return load_handler("torch", embeddings_model_dir, BACKEND="torch", PROMPTS=json.dumps(PROMPTS))


@pytest.fixture(scope="session")
def reference(embeddings_model_dir: Path) -> Any:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(embeddings_model_dir), device="cpu", local_files_only=True)


@pytest.fixture(scope="session")
def pooled_reference(embeddings_model_dir: Path) -> Callable[[list[str]], Any]:
    """sentence-transformers without its final Normalize module: what normalize=false returns."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(embeddings_model_dir), device="cpu", local_files_only=True)
    del model[len(model) - 1]

    def encode(texts: list[str]) -> Any:
        return model.encode(texts, normalize_embeddings=False)

    return encode


# ------------------------------------------------------------------ helpers


def direct(module: types.ModuleType, payload: Any) -> Any:
    return module.app.lambda_handler(payload, FakeContext())


def url(
    module: types.ModuleType,
    method: str,
    path: str,
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    raw: str | None = None,
    base64_body: bool = False,
) -> tuple[int, dict[str, str], Any]:
    """A Function URL event through the handler: (status, headers, decoded JSON body)."""
    text = raw if raw is not None else (None if body is None else json.dumps(body))
    event = function_url_event(method, path, text, headers=headers, base64=base64_body)
    response = module.app.lambda_handler(event, FakeContext())
    payload = json.loads(response["body"]) if response.get("body") else None
    return response["statusCode"], {k.lower(): v for k, v in response.get("headers", {}).items()}, payload


def unit(vectors: Any) -> Any:
    array = np.asarray(vectors, dtype=np.float64)
    return array / np.linalg.norm(array, axis=-1, keepdims=True)


def cosine(a: Any, b: Any) -> float:
    return float(np.dot(unit(a), unit(b)))


def decode_base64(value: str) -> Any:
    return np.frombuffer(base64.b64decode(value), dtype="<f4")


def long_text(words: int) -> str:
    return " ".join(f"word{i % 50}" for i in range(words))


def assert_tei_error(status: int, body: Any, expected_status: int, error_type: str, *fragments: str) -> None:
    assert status == expected_status, body
    assert set(body) == {"error", "error_type"}, body
    assert body["error_type"] == error_type, body
    for fragment in fragments:
        assert fragment in body["error"], body


def assert_openai_error(
    status: int, body: Any, expected_status: int, *fragments: str, code: str | None = None
) -> None:
    assert status == expected_status, body
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    if code is not None:
        assert body["error"]["code"] == code, body
    for fragment in fragments:
        assert fragment in body["error"]["message"], body


# ------------------------------------------------------------------ the export


def test_export_writes_a_verified_torch_free_model(exported: Path) -> None:
    # Given the embedded MiniLM exported by the image's export script (the session fixture)
    manifest = json.loads((exported / "embedding_manifest.json").read_text())
    # Then the manifest describes MiniLM's pipeline as sentence-transformers reads it
    assert manifest["model_id"] == EMBEDDINGS_MODEL_ID
    assert manifest["dimension"] == DIMENSIONS
    assert manifest["max_seq_length"] == MAX_TOKENS
    assert manifest["pooling_modes"] == ["mean"]
    assert manifest["normalize"] is True
    assert manifest["prompts"] == {}
    # And the export was checked against SentenceTransformer.encode within the tight tolerance
    assert manifest["verification"]["min_cosine"] >= 0.99999
    assert manifest["verification"]["max_abs_diff"] <= 1e-4
    # And the weights sit in a separate, memory-mappable file, everything world-readable
    assert (exported / "model.onnx.data").stat().st_size > 80_000_000
    assert (exported / "model.onnx").stat().st_size < 1_000_000
    for path in exported.iterdir():
        assert path.stat().st_mode & stat.S_IROTH, path


def test_the_onnx_backend_runs_without_torch(exported: Path) -> None:
    # Given a fresh interpreter that loads the handler on the exported model
    code = (
        "import sys, handler;"
        "print(sorted(m for m in ('torch', 'sentence_transformers', 'transformers') if m in sys.modules))"
    )
    environment = {
        **os.environ,
        "MODEL_DIR": str(exported),
        "MODEL_ID": EMBEDDINGS_MODEL_ID,
        "PYTHONPATH": os.pathsep.join([str(EMBEDDINGS_DIR), str(EMBEDDINGS_DIR.parent / "common")]),
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }
    # When it has imported everything and loaded the model
    result = subprocess.run(
        [sys.executable, "-c", code], env=environment, capture_output=True, text=True, check=False
    )
    # Then neither torch nor sentence-transformers nor transformers was imported
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


# ------------------------------------------------------------------ the seed payload and the routes


def test_seed_payload_returns_two_normalized_vectors(onnx: types.ModuleType) -> None:
    # Given the default deployment
    # When the seed's direct payload is invoked
    vectors = direct(onnx, dict(SEED))
    # Then it answers as TEI's /embed: two unit vectors of the model's dimension
    assert isinstance(vectors, list)
    assert len(vectors) == 2
    assert all(len(vector) == DIMENSIONS for vector in vectors)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    assert cosine(vectors[0], vectors[1]) < 0.99


def test_a_single_string_gives_a_list_of_one_vector(onnx: types.ModuleType) -> None:
    # When inputs is one string, as TEI allows
    vectors = direct(onnx, {"inputs": "First text"})
    # Then the answer is still a list holding one vector, equal to the batched one
    assert len(vectors) == 1
    assert np.allclose(vectors[0], direct(onnx, dict(SEED))[0], atol=1e-6)


def test_the_same_text_embeds_the_same_through_every_route(onnx: types.ModuleType) -> None:
    # Given one text
    text = "Lambda functions scale to zero."
    # When it is embedded directly and through POST /, /embed and /v1/embeddings (float and base64)
    by_direct = direct(onnx, {"inputs": [text]})[0]
    _, _, by_root = url(onnx, "POST", "/", {"inputs": [text]})
    _, _, by_embed = url(onnx, "POST", "/embed", {"inputs": text})
    _, _, by_openai = url(onnx, "POST", "/v1/embeddings", {"input": text, "model": EMBEDDINGS_MODEL_ID})
    _, _, by_base64 = url(
        onnx,
        "POST",
        "/v1/embeddings",
        {"input": [text], "model": EMBEDDINGS_MODEL_ID, "encoding_format": "base64"},
    )
    # Then every route gives the same vector
    for vector in (
        by_root[0],
        by_embed[0],
        by_openai["data"][0]["embedding"],
        decode_base64(by_base64["data"][0]["embedding"]),
    ):
        assert np.allclose(vector, by_direct, atol=1e-6)


def test_onnx_output_matches_sentence_transformers(onnx: types.ModuleType, reference: Any) -> None:
    # Given texts of several lengths and scripts, one over MiniLM's 256-token limit
    texts = ["First text", "Das Wetter in Berlin ist heute schön.", "東京は日本の首都です。", long_text(400)]
    # When the handler embeds them (truncating) and sentence-transformers encodes them
    ours = np.asarray(direct(onnx, {"inputs": texts, "truncate": True}))
    expected = reference.encode(texts, normalize_embeddings=True)
    # Then they agree within float32 noise
    assert np.max(np.abs(ours - expected)) < 1e-4
    assert min(cosine(a, b) for a, b in zip(ours, expected, strict=True)) > 0.99999


def test_openai_response_shape_and_usage_counts_model_tokens(onnx: types.ModuleType) -> None:
    # Given two inputs whose token counts the model's tokenizer reports through /tokenize
    texts = ["First text", "Second, somewhat longer, text"]
    _, _, tokens = url(onnx, "POST", "/tokenize", {"inputs": texts})
    expected_tokens = sum(len(row) for row in tokens)
    # When the OpenAI route embeds them
    status, headers, body = url(
        onnx, "POST", "/v1/embeddings", {"input": texts, "model": EMBEDDINGS_MODEL_ID}
    )
    # Then the response has OpenAI's shape, in order, with the tokens counted by the model's tokenizer
    assert status == 200
    assert body["object"] == "list"
    assert body["model"] == EMBEDDINGS_MODEL_ID
    assert [item["index"] for item in body["data"]] == [0, 1]
    assert all(item["object"] == "embedding" for item in body["data"])
    assert body["usage"] == {"prompt_tokens": expected_tokens, "total_tokens": expected_tokens}
    assert headers["x-compute-tokens"] == str(expected_tokens)


def test_openai_accepts_the_short_model_name(onnx: types.ModuleType) -> None:
    # When a client names the model without its organization
    status, _, body = url(onnx, "POST", "/v1/embeddings", {"input": "x", "model": "all-MiniLM-L6-v2"})
    # Then it is the same model
    assert status == 200
    assert body["model"] == EMBEDDINGS_MODEL_ID


def test_base64_round_trips_little_endian_float32(onnx: types.ModuleType) -> None:
    # When the same input is asked for as floats and as base64
    request = {"input": ["base64 please"], "model": EMBEDDINGS_MODEL_ID}
    _, _, floats = url(onnx, "POST", "/v1/embeddings", request)
    _, _, encoded = url(onnx, "POST", "/v1/embeddings", {**request, "encoding_format": "base64"})
    # Then the base64 string decodes, as OpenAI's SDK decodes it, to the same 384 float32 numbers
    decoded = decode_base64(encoded["data"][0]["embedding"])
    assert decoded.shape == (DIMENSIONS,)
    assert np.allclose(decoded, floats["data"][0]["embedding"], atol=1e-8)
    assert abs(float(np.linalg.norm(decoded)) - 1.0) < 1e-5


def test_tei_timing_headers(onnx: types.ModuleType) -> None:
    # When TEI's /embed answers
    status, headers, _ = url(onnx, "POST", "/embed", dict(SEED))
    # Then TEI's timing headers are there, in whole milliseconds
    assert status == 200
    for name in ("x-compute-time", "x-tokenization-time", "x-inference-time", "x-compute-tokens"):
        assert headers[name].isdigit(), (name, headers)
    assert int(headers["x-compute-tokens"]) == 8  # [CLS] first text [SEP] [CLS] second text [SEP]


def test_tokenize_reports_ids_text_and_offsets(onnx: types.ModuleType) -> None:
    # When /tokenize is asked about one string
    status, _, body = url(onnx, "POST", "/tokenize", {"inputs": "First text"})
    # Then it answers TEI's shape: one list of tokens, special ones without offsets
    assert status == 200
    assert [token["text"] for token in body[0]] == ["[CLS]", "First", "text", "[SEP]"]
    assert body[0][0] == {"id": 101, "text": "[CLS]", "special": True, "start": None, "stop": None}
    assert body[0][1]["start"] == 0
    assert body[0][1]["stop"] == 5
    assert body[0][1]["special"] is False


def test_info_and_health(onnx: types.ModuleType) -> None:
    # When /info and /health are asked
    status, _, info = url(onnx, "GET", "/info")
    health_status, _, health = url(onnx, "GET", "/health")
    # Then /info has TEI's fields and this service's limits, /health answers
    assert status == 200
    assert info["model_id"] == EMBEDDINGS_MODEL_ID
    assert info["max_input_length"] == MAX_TOKENS
    assert info["max_client_batch_size"] == 2048
    assert info["dimensions"] == DIMENSIONS
    assert info["backend"] == "onnx"
    assert info["model_type"] == {"embedding": {"pooling": "mean"}}
    assert info["prompts"] == PROMPTS
    assert health_status == 200
    assert health["status"] == "ok"


def test_a_base64_encoded_request_body_is_decoded(onnx: types.ModuleType) -> None:
    # When the Function URL hands the body base64-encoded
    status, _, body = url(onnx, "POST", "/embed", dict(SEED), base64_body=True)
    # Then it is read as the JSON it encodes
    assert status == 200
    assert np.allclose(body, direct(onnx, dict(SEED)), atol=1e-6)


# ------------------------------------------------------------------ options


def test_a_query_scores_higher_with_its_passage_than_with_an_unrelated_text(onnx: types.ModuleType) -> None:
    # When a query and two candidate passages are embedded with the query and passage prompts
    query = direct(onnx, {"inputs": QUERY, "prompt_name": "query"})[0]
    passages = direct(onnx, {"inputs": [PASSAGE, UNRELATED], "prompt_name": "passage"})
    # Then the relevant passage scores higher
    assert cosine(query, passages[0]) > cosine(query, passages[1]) + 0.1


def test_prompts_are_applied_as_sentence_transformers_applies_them(
    onnx: types.ModuleType, reference: Any
) -> None:
    # When one text is embedded with no prompt, the query prompt and the passage prompt
    plain_vector = direct(onnx, {"inputs": QUERY})[0]
    query = direct(onnx, {"inputs": QUERY, "prompt_name": "query"})[0]
    passage = direct(onnx, {"inputs": QUERY, "prompt_name": "passage"})[0]
    # Then the prefix changes the vector
    assert cosine(plain_vector, query) < 0.999
    assert cosine(query, passage) < 0.999
    # And the result is sentence-transformers' own with the same prompt
    expected = reference.encode([QUERY], prompt="query: ", normalize_embeddings=True)[0]
    assert cosine(query, expected) > 0.99999


def test_dimensions_truncate_and_renormalize(onnx: types.ModuleType, pooled_reference: Any) -> None:
    # When 64 dimensions are asked for, through TEI and OpenAI
    tei = direct(onnx, {"inputs": "First text", "dimensions": 64})[0]
    _, _, openai_body = url(
        onnx,
        "POST",
        "/v1/embeddings",
        {"input": "First text", "model": EMBEDDINGS_MODEL_ID, "dimensions": 64},
    )
    # Then the vectors are the first 64 dimensions of the model's output, renormalized
    expected = unit(pooled_reference(["First text"])[0][:64])
    assert len(tei) == 64
    assert abs(float(np.linalg.norm(tei)) - 1.0) < 1e-6
    assert np.allclose(tei, expected, atol=1e-5)
    assert np.allclose(openai_body["data"][0]["embedding"], tei, atol=1e-6)


def test_normalize_false_returns_the_raw_pooled_vector(onnx: types.ModuleType, pooled_reference: Any) -> None:
    # When normalization is turned off
    raw = direct(onnx, {"inputs": ["First text"], "normalize": False})[0]
    # Then the vector is sentence-transformers' mean pooling before its Normalize module
    assert abs(float(np.linalg.norm(raw)) - 1.0) > 0.01
    assert np.allclose(raw, pooled_reference(["First text"])[0], atol=1e-4)


def test_truncation_keeps_the_start_or_the_end(onnx: types.ModuleType) -> None:
    # Given a text over the limit whose first half is about cats and second half about rockets
    text = "cats purr softly on the warm sofa. " * 60 + "rockets launch into orbit at dawn. " * 60
    cats = direct(onnx, {"inputs": "cats purr softly on the warm sofa."})[0]
    rockets = direct(onnx, {"inputs": "rockets launch into orbit at dawn."})[0]
    # When it is truncated on the right (default) and on the left
    right = direct(onnx, {"inputs": text, "truncate": True})[0]
    left = direct(onnx, {"inputs": text, "truncate": True, "truncation_direction": "Left"})[0]
    # Then Right keeps the cats and Left keeps the rockets
    assert cosine(right, cats) > cosine(right, rockets)
    assert cosine(left, rockets) > cosine(left, cats)


def test_left_truncation_keeps_the_prompt(onnx: types.ModuleType) -> None:
    # Given an over-long text and the query prompt
    text = long_text(600)
    # When it is truncated on the left
    status, headers, _ = url(
        onnx,
        "POST",
        "/embed",
        {"inputs": text, "truncate": True, "truncation_direction": "left", "prompt_name": "query"},
    )
    # Then it fits the limit exactly, the prompt included (checked through the same tokenizer)
    assert status == 200
    assert int(headers["x-compute-tokens"]) <= MAX_TOKENS
    fitted = onnx.service.backend.tokenizer.fit([text], "query: ", truncate=True, direction="Left")
    assert len(fitted.encodings[0].ids) <= MAX_TOKENS
    assert fitted.encodings[0].tokens[1:3] == ["query", ":"]
    assert text.endswith(fitted.texts[0])
    assert len(fitted.texts[0]) < len(text)


def test_e5_models_get_query_and_passage_prompts_with_query_by_default(exported: Path) -> None:
    # Given a deployment whose model id is an E5 model and whose folder declares no prompts
    e5 = load_handler("e5", exported, MODEL_ID="intfloat/multilingual-e5-small")
    # When /info is asked and a text is embedded without a prompt name
    _, _, info = url(e5, "GET", "/info")
    default = direct(e5, {"inputs": QUERY})[0]
    query = direct(e5, {"inputs": QUERY, "prompt_name": "query"})[0]
    passage = direct(e5, {"inputs": QUERY, "prompt_name": "passage"})[0]
    # Then the built-in E5 prompts apply, "query" being the default
    assert info["prompts"] == {"query": "query: ", "passage": "passage: "}
    assert info["default_prompt_name"] == "query"
    assert info["prompts_source"] == "built-in"
    assert np.allclose(default, query, atol=1e-6)
    assert cosine(query, passage) < 0.999


def test_an_empty_default_prompt_name_turns_the_default_off(exported: Path) -> None:
    # Given an E5 deployment whose operator adds the prefixes client-side
    e5 = load_handler(
        "e5-no-default", exported, MODEL_ID="intfloat/multilingual-e5-small", DEFAULT_PROMPT_NAME=""
    )
    # When a text is embedded without a prompt name
    vector = direct(e5, {"inputs": "query: " + QUERY})[0]
    # Then no prompt is added (the client's own prefix equals the built-in query prompt)
    assert np.allclose(vector, direct(e5, {"inputs": QUERY, "prompt_name": "query"})[0], atol=1e-6)


# ------------------------------------------------------------------ the torch backend


def test_the_torch_backend_agrees_with_the_onnx_backend(
    torch_backend: types.ModuleType, onnx: types.ModuleType
) -> None:
    # Given the same texts and options for both backends
    cases: list[dict[str, Any]] = [
        dict(SEED),
        {"inputs": QUERY, "prompt_name": "query"},
        {"inputs": long_text(500), "truncate": True},
        {
            "inputs": long_text(500),
            "truncate": True,
            "truncation_direction": "Left",
            "prompt_name": "passage",
        },
        {"inputs": "First text", "normalize": False, "dimensions": 100},
    ]
    for payload in cases:
        # When each backend embeds them
        by_torch = direct(torch_backend, payload)
        by_onnx = direct(onnx, payload)
        # Then the vectors agree
        assert np.asarray(by_torch).shape == np.asarray(by_onnx).shape, payload
        assert np.allclose(by_torch, by_onnx, atol=1e-4), payload
    _, _, info = url(torch_backend, "GET", "/info")
    assert info["backend"] == "torch"
    assert info["dimensions"] == DIMENSIONS


# ------------------------------------------------------------------ errors, in each route's shape


def test_malformed_json_is_a_400_in_each_shape(onnx: types.ModuleType) -> None:
    status, _, body = url(onnx, "POST", "/embed", raw='{"inputs": ["a",')
    assert_tei_error(status, body, 400, "Validation", "not valid JSON")
    status, _, body = url(onnx, "POST", "/v1/embeddings", raw="{nope")
    assert_openai_error(status, body, 400, "not valid JSON", code="invalid_json")
    status, _, body = url(onnx, "POST", "/embed", raw="")
    assert_tei_error(status, body, 400, "Validation", "empty")


def test_an_invalid_base64_body_is_a_400(onnx: types.ModuleType) -> None:
    event = function_url_event("POST", "/embed", "{}")
    event["body"], event["isBase64Encoded"] = "%%%not-base64%%%", True
    response = onnx.app.lambda_handler(event, FakeContext())
    assert_tei_error(response["statusCode"], json.loads(response["body"]), 400, "Validation", "base64")


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"inputs": 5}, "must be a string or a list of strings"),
        ({"inputs": ["a", 3]}, "item 1 is int"),
        ({"inputs": [[101, 2023, 102]]}, "token ids are not accepted"),
        ({"inputs": "a", "normalize": "yes"}, "normalize"),
        ({"inputs": "a", "truncation_direction": "Up"}, "truncation_direction"),
        ({"inputs": "a", "normalise": False}, "normalise: unknown field"),
        ({"normalize": True}, "inputs"),
    ],
)
def test_wrong_types_and_unknown_fields_are_422_naming_the_field(
    onnx: types.ModuleType, payload: dict[str, Any], fragment: str
) -> None:
    status, _, body = url(onnx, "POST", "/embed", payload)
    assert_tei_error(status, body, 422, "Validation", fragment)


def test_openai_wrong_types_are_400_in_openai_shape(onnx: types.ModuleType) -> None:
    status, _, body = url(onnx, "POST", "/v1/embeddings", {"input": 5, "model": EMBEDDINGS_MODEL_ID})
    assert_openai_error(status, body, 400, "must be a string or a list of strings")
    assert body["error"]["param"] == "input"
    status, _, body = url(
        onnx,
        "POST",
        "/v1/embeddings",
        {"input": "a", "model": EMBEDDINGS_MODEL_ID, "encoding_format": "int8"},
    )
    assert_openai_error(status, body, 400, "encoding_format")
    status, _, body = url(onnx, "POST", "/v1/embeddings", {"input": "a"})
    assert_openai_error(status, body, 400, "model")


def test_empty_inputs_are_400_empty(onnx: types.ModuleType) -> None:
    status, _, body = url(onnx, "POST", "/embed", {"inputs": []})
    assert_tei_error(status, body, 400, "Empty", "must not be empty")
    status, _, body = url(onnx, "POST", "/embed", {"inputs": ["fine", ""]})
    assert_tei_error(status, body, 400, "Empty", "input 1 is an empty string")
    status, _, body = url(onnx, "POST", "/v1/embeddings", {"input": [], "model": EMBEDDINGS_MODEL_ID})
    assert_openai_error(status, body, 400, "must not be empty")


def test_too_long_inputs_are_413_naming_the_limit_in_tokens(onnx: types.ModuleType) -> None:
    status, _, body = url(onnx, "POST", "/embed", {"inputs": ["short", long_text(400)]})
    assert_tei_error(
        status, body, 413, "Validation", "input 1", f"at most {MAX_TOKENS} tokens", "truncate=true"
    )
    status, _, body = url(
        onnx, "POST", "/v1/embeddings", {"input": long_text(400), "model": EMBEDDINGS_MODEL_ID}
    )
    assert_openai_error(status, body, 413, f"at most {MAX_TOKENS} tokens")


def test_unknown_prompt_names_are_422_naming_the_known_ones(
    onnx: types.ModuleType, plain: types.ModuleType
) -> None:
    status, _, body = url(onnx, "POST", "/embed", {"inputs": "a", "prompt_name": "qurey"})
    assert_tei_error(status, body, 422, "Validation", "'qurey'", "passage, query")
    status, _, body = url(plain, "POST", "/embed", {"inputs": "a", "prompt_name": "query"})
    assert_tei_error(status, body, 422, "Validation", "this model defines no prompts")
    status, _, body = url(plain, "POST", "/tokenize", {"inputs": "a", "prompt_name": "query"})
    assert_tei_error(status, body, 422, "Validation", "no prompts")


@pytest.mark.parametrize("dimensions", [0, -1, DIMENSIONS + 1])
def test_dimensions_out_of_range_are_422(onnx: types.ModuleType, dimensions: int) -> None:
    status, _, body = url(onnx, "POST", "/embed", {"inputs": "a", "dimensions": dimensions})
    assert_tei_error(status, body, 422, "Validation", f"between 1 and {DIMENSIONS}")


def test_unknown_routes_are_404_and_wrong_methods_405(onnx: types.ModuleType) -> None:
    status, _, body = url(onnx, "POST", "/v1/chat/completions", {"messages": []})
    assert_openai_error(status, body, 404, "no route for POST /v1/chat/completions")
    status, _, body = url(onnx, "GET", "/embed")
    assert_tei_error(status, body, 405, "MethodNotAllowed", "allowed: POST")
    status, _, body = url(onnx, "DELETE", "/info")
    assert_tei_error(status, body, 405, "MethodNotAllowed", "allowed: GET")


def test_an_unknown_model_is_404_model_not_found(onnx: types.ModuleType) -> None:
    status, _, body = url(onnx, "POST", "/v1/embeddings", {"input": "a", "model": "text-embedding-3-small"})
    assert_openai_error(
        status, body, 404, "text-embedding-3-small", EMBEDDINGS_MODEL_ID, code="model_not_found"
    )


def test_limits_on_count_characters_and_body_size(exported: Path) -> None:
    # Given a deployment with small limits
    small = load_handler("small", exported, MAX_INPUTS="4", MAX_INPUT_CHARS="100", MAX_BODY_BYTES="2048")
    # Then too many inputs, too many characters and too large a body are each a 413 that says so
    status, _, body = url(small, "POST", "/embed", {"inputs": ["a"] * 5})
    assert_tei_error(status, body, 413, "Validation", "5 inputs", "limit is 4")
    status, _, body = url(small, "POST", "/embed", {"inputs": ["a" * 101]})
    assert_tei_error(status, body, 413, "Validation", "101 characters", "100 characters")
    status, _, body = url(small, "POST", "/embed", {"inputs": ["a" * 90] * 4, "padding": "x" * 3000})
    assert_tei_error(status, body, 413, "Validation", "2,048 bytes")
    # And within the limits it answers
    status, _, _ = url(small, "POST", "/embed", {"inputs": ["a"] * 4})
    assert status == 200


def test_the_6mb_response_limit_refuses_before_any_compute(
    onnx: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a count of the backend's calls (the real backend still runs)
    calls: list[int] = []
    embed = onnx.service.backend.embed

    def counting(batch: Any, stop: Any = None) -> Any:
        calls.append(len(batch.texts))
        return embed(batch, stop)

    monkeypatch.setattr(onnx.service.backend, "embed", counting)
    texts = [f"text {i}" for i in range(1000)]
    # When 1000 inputs are asked for as JSON floats (384 numbers each: over 6 MB at the bound)
    status, _, body = url(onnx, "POST", "/embed", {"inputs": texts})
    # Then the request is refused with a 413 that says how many inputs fit, and nothing was computed
    assert_tei_error(status, body, 413, "Validation", "at most 866 inputs", "6000000-byte limit")
    assert calls == []
    # And the OpenAI route with base64 (4 bytes a number) takes the same 1000 inputs
    status, _, body = url(
        onnx,
        "POST",
        "/v1/embeddings",
        {"input": texts, "model": EMBEDDINGS_MODEL_ID, "encoding_format": "base64"},
    )
    assert status == 200
    assert len(body["data"]) == 1000
    assert calls == [1000]


def test_api_key_mode_guards_every_route_but_health(exported: Path) -> None:
    # Given a deployment with an API key (API_KEY: the local stand-in for the Secrets Manager secret)
    keyed = load_handler("keyed", exported, API_KEY=KEY)
    # Then requests without the key, or with a wrong one, are 401 in the route's shape
    status, _, body = url(keyed, "POST", "/embed", dict(SEED))
    assert_tei_error(status, body, 401, "Unauthorized", "API key")
    status, _, body = url(
        keyed,
        "POST",
        "/v1/embeddings",
        {"input": "a", "model": EMBEDDINGS_MODEL_ID},
        headers={"Authorization": "Bearer wrong-key-0123456789"},
    )
    assert_openai_error(status, body, 401, "API key", code="invalid_api_key")
    status, _, _ = url(keyed, "GET", "/info")
    assert status == 401
    # And /health stays public, the right key passes, and direct invokes (IAM-authorized) need none
    assert url(keyed, "GET", "/health")[0] == 200
    assert url(keyed, "POST", "/embed", dict(SEED), headers={"Authorization": f"Bearer {KEY}"})[0] == 200
    assert len(direct(keyed, dict(SEED))) == 2


def test_direct_invoke_errors_are_returned_bodies(onnx: types.ModuleType) -> None:
    # When direct payloads are wrong
    not_an_object = direct(onnx, ["First text"])
    empty = direct(onnx, {"inputs": []})
    too_long = direct(onnx, {"inputs": long_text(400)})
    openai_shaped = direct(onnx, {"input": "a", "model": "nope"})
    # Then each is returned (not raised) in the one direct-invoke shape, with the status the URL would give
    for answer in (not_an_object, empty, too_long, openai_shaped):
        assert set(answer) == {"error"}
        assert set(answer["error"]) == {"message", "type", "param", "code", "status"}
    assert not_an_object["error"]["status"] == 400
    assert "JSON object" in not_an_object["error"]["message"]
    assert (empty["error"]["status"], empty["error"]["code"]) == (400, "empty")
    assert too_long["error"]["status"] == 413
    assert f"at most {MAX_TOKENS} tokens" in too_long["error"]["message"]
    assert openai_shaped["error"]["status"] == 404
    assert openai_shaped["error"]["code"] == "model_not_found"
    # And an OpenAI-shaped direct payload works too
    body = direct(onnx, {"input": ["First text"], "model": EMBEDDINGS_MODEL_ID})
    assert body["object"] == "list"
    assert len(body["data"][0]["embedding"]) == DIMENSIONS


def test_the_warm_process_survives_every_error(onnx: types.ModuleType) -> None:
    # Given a burst of bad requests of every kind
    bad: list[Any] = [
        {"inputs": []},
        {"inputs": [None]},
        {"inputs": long_text(1000)},
        {"inputs": "a", "dimensions": 10_000},
        {"inputs": "a", "prompt_name": "nope"},
        "a string",
        None,
    ]
    for payload in bad:
        result = direct(onnx, payload)
        assert "error" in result, payload
        assert result["error"]["status"] >= 400, payload
    for path in ("/nope", "/v1/embeddings", "/tokenize"):
        assert url(onnx, "POST", path, raw="{")[0] >= 400
    # When a good request follows
    vectors = direct(onnx, dict(SEED))
    # Then it is answered as before
    assert len(vectors) == 2
    assert len(vectors[0]) == DIMENSIONS


# ------------------------------------------------------------------ prompt precedence (no model needed)


@pytest.fixture
def prompt_table() -> Any:
    if str(EMBEDDINGS_DIR) not in sys.path:
        sys.path.insert(0, str(EMBEDDINGS_DIR))
    from embedder.prompts import PromptTable

    return PromptTable


def test_prompt_precedence(prompt_table: Any) -> None:
    # Model-declared prompts win over the built-in E5 table
    declared = prompt_table.resolve(
        "intfloat/e5-base-v2",
        declared={"query": "Q: "},
        declared_default=None,
        environment=None,
        environment_default=None,
    )
    assert (declared.prompts, declared.default_name, declared.source) == ({"query": "Q: "}, None, "model")
    # The environment wins over both
    environment = prompt_table.resolve(
        "intfloat/e5-base-v2",
        declared={"query": "Q: "},
        declared_default=None,
        environment={"search": "search: "},
        environment_default="search",
    )
    assert (environment.prompts, environment.default_name) == ({"search": "search: "}, "search")
    # E5 instruct models are not given the plain E5 prefixes
    instruct = prompt_table.resolve(
        "intfloat/multilingual-e5-large-instruct",
        declared={},
        declared_default=None,
        environment=None,
        environment_default=None,
    )
    assert instruct.prompts == {}
    # A default that names no known prompt fails at start-up
    with pytest.raises(ValueError, match="not a known prompt"):
        prompt_table.resolve(
            "x", declared={}, declared_default=None, environment={"a": "a: "}, environment_default="b"
        )
