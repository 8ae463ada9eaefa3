"""The OpenAPI documents of both Function URL APIs: generated from the routes, current, and true.

- fast: the committed documents are what ``python -m lambda_common.openapi`` generates now
  from the routes and pydantic models (``make openapi`` rewrites them), and they load as
  OpenAPI with a JSON body documented for every response;
- slow: schemathesis (property-based requests generated from each document) against the
  running local stack: no 5xx, every status, content type, header and body as documented,
  and the runtime process is the same one before and after.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from lambda_common import openapi
from local.functions import DEFAULT_PORTS
from local.rie import IMAGES, ROOT
from local.stack import RunningFunction
from tests.harness import shared_stack

DOCS = ROOT / "docs" / "openapi"
TARGETS = {"llama": "llama_app.api:GeneratorApi", "embeddings": "embedder.api:EmbeddingsApi"}
for _key in TARGETS:
    if str(IMAGES / _key) not in sys.path:
        sys.path.insert(0, str(IMAGES / _key))


def load(name: str) -> dict[str, Any]:
    with (DOCS / f"{name}.yaml").open() as handle:
        document: dict[str, Any] = yaml.safe_load(handle)
    return document


def resolve(root: Mapping[str, Any], schema: Any) -> Any:
    while isinstance(schema, Mapping) and "$ref" in schema:
        node: Any = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        schema = node
    return schema


@pytest.mark.parametrize("document", sorted(TARGETS))
def test_committed_documents_are_what_the_routes_generate(document: str) -> None:
    # Given the routes and models as they are now, When the document is generated,
    # Then it is the committed one
    output = DOCS / f"{document}.yaml"
    port = str(DEFAULT_PORTS[document][1])  # type: ignore[index]
    assert openapi.main([TARGETS[document], str(output), "--port", port, "--check"]) == 0, (
        f"{output} is out of date: run `make openapi`"
    )


@pytest.mark.parametrize("document", sorted(TARGETS))
def test_every_route_is_documented_with_its_request_and_error_shapes(document: str) -> None:
    app, _, _ = openapi._load(TARGETS[document])
    spec = load(document)
    documented = {(method.upper(), path) for path, item in spec["paths"].items() for method in item}
    assert documented == set(app.routes)
    for (method, path), route in app.routes.items():
        operation = spec["paths"][path][method.lower()]
        if route.request is not None:
            schema = resolve(spec, operation["requestBody"]["content"]["application/json"]["schema"])
            assert set(schema["properties"]) == set(
                route.request.model_json_schema(by_alias=True)["properties"]
            )
            assert schema.get("additionalProperties") is False  # strict: unknown fields are refused
        error = resolve(spec, operation["responses"]["500"]["content"]["application/json"]["schema"])
        assert error["title"] == route.family.model.__name__
        assert ("401" in operation["responses"]) is (not route.public)


@pytest.mark.parametrize("document", sorted(TARGETS))
def test_documents_are_valid_openapi_with_every_route_answering_errors_as_json(document: str) -> None:
    import schemathesis

    schema = schemathesis.openapi.from_path(DOCS / f"{document}.yaml")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    spec = load(document)
    assert len(operations) == sum(len(item) for item in spec["paths"].values())
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                assert "content" in resolve(spec, response), f"{method} {path} {status} documents no body"


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
