"""The OpenAPI documents of both Function URL APIs: in step with the handlers, and true of them.

Two kinds of check:

- fast: each documented route is a handler route and the other way round, and each
  documented body has the fields of the handler's pydantic model, the same required
  ones, and every bound the model enforces (the documents may say more, e.g. what a
  model validator checks, never less);
- slow: schemathesis (property-based requests generated from each document) against
  the running local stack: no 5xx, every status, content type, header and body as
  documented, and the runtime process is the same one before and after.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from local.rie import IMAGES, ROOT
from local.stack import RunningFunction
from tests.harness import shared_stack

DOCS = ROOT / "docs" / "openapi"
LLAMA_DIR = IMAGES / "llama"
EMBEDDINGS_DIR = IMAGES / "embeddings"
for _folder in (LLAMA_DIR, EMBEDDINGS_DIR):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

from embedder import schemas as embeddings_schemas  # noqa: E402
from embedder.tokenization import Token  # noqa: E402
from llama_app import schemas as llama_schemas  # noqa: E402

CONSTRAINTS = frozenset(
    {"type", "enum", "const", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}
    | {"minLength", "maxLength", "minItems", "maxItems"}
)

# document schema -> (pydantic model, is it a request model, does the handler dump every field)
LLAMA_MODELS: dict[str, tuple[type[BaseModel], bool, bool]] = {
    "DirectRequest": (llama_schemas.DirectRequest, True, False),
    "CompletionRequest": (llama_schemas.CompletionRequest, True, False),
    "ChatCompletionRequest": (llama_schemas.ChatCompletionRequest, True, False),
    "TokenizeRequest": (llama_schemas.TokenizeRequest, True, False),
    "DetokenizeRequest": (llama_schemas.DetokenizeRequest, True, False),
    "ChatMessage": (llama_schemas.ChatMessage, True, False),
    "TextPart": (llama_schemas.TextPart, True, False),
    "StreamOptions": (llama_schemas.StreamOptions, True, False),
    "DirectResponse": (llama_schemas.DirectResponse, False, True),
    "CompletionResponse": (llama_schemas.CompletionResponse, False, True),
    "CompletionChoice": (llama_schemas.CompletionChoice, False, True),
    "ChatCompletionResponse": (llama_schemas.ChatCompletionResponse, False, True),
    "ChatChoice": (llama_schemas.ChatChoice, False, True),
    "AssistantMessage": (llama_schemas.AssistantMessage, False, True),
    "Usage": (llama_schemas.Usage, False, True),
    "Timings": (llama_schemas.Timings, False, True),
    "ModelList": (llama_schemas.ModelList, False, True),
    "ModelCard": (llama_schemas.ModelCard, False, True),
    "TokenizeResponse": (llama_schemas.TokenizeResponse, False, True),
    "TokenPiece": (llama_schemas.TokenPiece, False, True),
    "DetokenizeResponse": (llama_schemas.DetokenizeResponse, False, True),
    "HealthResponse": (llama_schemas.HealthResponse, False, True),
    # streamed chunks drop null fields (exclude_none), so fewer are always present
    "ChatCompletionChunk": (llama_schemas.ChatCompletionChunk, False, False),
    "ChunkChoice": (llama_schemas.ChunkChoice, False, False),
    "ChunkDelta": (llama_schemas.ChunkDelta, False, False),
}
EMBEDDINGS_MODELS: dict[str, tuple[type[BaseModel], bool, bool]] = {
    "EmbedRequest": (embeddings_schemas.EmbedRequest, True, False),
    "OpenAIEmbeddingsRequest": (embeddings_schemas.OpenAIEmbeddingsRequest, True, False),
    "TokenizeRequest": (embeddings_schemas.TokenizeRequest, True, False),
}


def load(name: str) -> dict[str, Any]:
    with (DOCS / f"{name}.yaml").open() as handle:
        document: dict[str, Any] = yaml.safe_load(handle)
    return document


def handler_routes(handler: Path) -> dict[str, set[str]]:
    """The ROUTES table of a handler, read from its source (importing it would load the model)."""
    tree = ast.parse(handler.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign):
            target: ast.expr | None = node.target
            value = node.value
        elif isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id == "ROUTES":
            assert isinstance(value, ast.Dict)
            routes: dict[str, set[str]] = {}
            for key, methods in zip(value.keys, value.values, strict=True):
                assert isinstance(key, ast.Constant)
                routes[str(key.value)] = {
                    str(item.value) for item in ast.walk(methods) if isinstance(item, ast.Constant)
                }
            return routes
    raise AssertionError(f"no ROUTES table in {handler}")


def documented_routes(document: Mapping[str, Any]) -> dict[str, set[str]]:
    return {path: {method.upper() for method in item} for path, item in document["paths"].items()}


class Resolver:
    """Follows local $refs (pydantic's #/$defs/X, OpenAPI's #/components/schemas/X)."""

    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root

    def resolve(self, schema: Any) -> Any:
        while isinstance(schema, Mapping) and "$ref" in schema:
            node: Any = self.root
            for part in schema["$ref"].lstrip("#/").split("/"):
                node = node[part]
            schema = node
        return schema


def constraints(schema: Any, resolver: Resolver, seen: frozenset[int] = frozenset()) -> set[tuple[str, str]]:
    """Every bound and type in a schema and what it nests, as (keyword, value) pairs; null ignored."""
    schema = resolver.resolve(schema)
    found: set[tuple[str, str]] = set()
    if id(schema) in seen:
        return found
    seen = seen | {id(schema)}
    if isinstance(schema, Mapping):
        for keyword, value in schema.items():
            if keyword in ("type", "enum"):
                for item in value if isinstance(value, list) else [value]:
                    if item not in ("null", None):
                        found.add((keyword, json.dumps(item)))
            elif keyword in CONSTRAINTS:
                found.add((keyword, json.dumps(value)))
            elif keyword in ("properties", "$defs"):
                for nested in value.values():
                    found |= constraints(nested, resolver, seen)
            elif isinstance(value, (Mapping, list)) and keyword not in ("examples", "default"):
                found |= constraints(value, resolver, seen)
    elif isinstance(schema, list):
        for item in schema:
            found |= constraints(item, resolver, seen)
    return found


def model_cases(document: str, models: Mapping[str, tuple[type[BaseModel], bool, bool]]) -> Iterator[Any]:
    for name, (model, is_request, dumps_all) in models.items():
        yield pytest.param(document, name, model, is_request, dumps_all, id=f"{document}-{name}")


@pytest.mark.parametrize(
    ("document", "handler"),
    [("llama", LLAMA_DIR / "handler.py"), ("embeddings", EMBEDDINGS_DIR / "handler.py")],
)
def test_documented_routes_are_the_handlers_routes(document: str, handler: Path) -> None:
    assert documented_routes(load(document)) == handler_routes(handler)


@pytest.mark.parametrize(
    ("document", "name", "model", "is_request", "dumps_all"),
    [*model_cases("llama", LLAMA_MODELS), *model_cases("embeddings", EMBEDDINGS_MODELS)],
)
def test_documented_body_matches_the_pydantic_model(
    document: str, name: str, model: type[BaseModel], is_request: bool, dumps_all: bool
) -> None:
    spec = load(document)
    resolver = Resolver(spec)
    documented = spec["components"]["schemas"][name]
    generated = model.model_json_schema(by_alias=True, mode="validation" if is_request else "serialization")
    model_resolver = Resolver(generated)
    # Same fields (by their JSON names)
    assert set(documented["properties"]) == set(generated["properties"])
    # Same required fields; a response the handler dumps whole always has every field
    required = set(generated.get("required", []))
    if dumps_all:
        assert set(documented.get("required", [])) == set(generated["properties"])
    elif is_request:
        assert set(documented.get("required", [])) == required
    else:  # streamed chunks: the handler adds some fields explicitly
        assert required <= set(documented.get("required", []))
    if is_request:
        strict = model.model_config.get("extra") == "forbid"
        assert (documented.get("additionalProperties") is False) == strict
    # Every bound the model enforces is documented, field by field
    for field_name, field_schema in generated["properties"].items():
        enforced = constraints(field_schema, model_resolver)
        written = constraints(documented["properties"][field_name], resolver)
        assert enforced <= written, f"{name}.{field_name}: undocumented {sorted(enforced - written)}"


def test_tokenize_token_fields_match_the_handlers_dataclass() -> None:
    documented = load("embeddings")["components"]["schemas"]["Token"]
    assert set(documented["required"]) == set(Token.__dataclass_fields__)


@pytest.mark.parametrize("document", ["llama", "embeddings"])
def test_documents_are_valid_openapi_with_every_route_answering_errors_as_json(document: str) -> None:
    import schemathesis

    schema = schemathesis.openapi.from_path(DOCS / f"{document}.yaml")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    spec = load(document)
    assert len(operations) == sum(len(methods) for methods in documented_routes(spec).values())
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                response = Resolver(spec).resolve(response)
                assert "content" in response, f"{method} {path} {status} documents no body"


# --- schemathesis against the running functions -------------------------------------------------

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)


def run_schemathesis(document: str, function: RunningFunction, max_examples: int, workdir: Path) -> str:
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        str(DOCS / f"{document}.yaml"),
        "--url",
        function.url,
        "--checks",
        CHECKS,
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        str(max_examples),
        "--seed",
        "20261122",
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--request-timeout",
        "180",
        "--no-color",
        "--output-sanitize",
        "false",
    ]
    # In a scratch folder: schemathesis keeps state in ./.schemathesis
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=3000, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    return output


@pytest.mark.slow
@pytest.mark.parametrize(("document", "max_examples"), [("embeddings", 25), ("llama", 5)])
def test_schemathesis_finds_nothing_and_the_function_survives(
    document: str, max_examples: int, tmp_path: Path
) -> None:
    # Given the function running as `make local` runs it, warm
    function = shared_stack().functions[document]
    before = function.runtime_pids()
    assert before
    # When schemathesis sends what the document allows and what it does not
    output = run_schemathesis(document, function, max_examples, tmp_path)
    # Then no check failed (exit status 0), many cases ran, and it is the same process
    match = re.search(r"(\d+) generated, (\d+) passed", output)
    assert match, output[-2000:]
    generated, passed = int(match.group(1)), int(match.group(2))
    assert generated >= 100
    assert passed == generated
    assert function.emulator_alive()
    assert function.runtime_pids() == before
