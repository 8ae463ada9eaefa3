"""The OpenAPI document of a function's Function URL API, generated from its routes and models.

Nothing here is written by hand per route: the paths and methods are the
routes registered on the ``FunctionApp``; request and response bodies are the
routes' pydantic models (their JSON schemas, bounds included); the error
responses are the statuses each route's error family gives each kind of
refusal, with the family's error model; summaries are the route functions'
docstrings and the document's description is the API module's docstring.

    python -m lambda_common.openapi llama_app.api:GeneratorApi docs/openapi/llama.yaml --port 8080
    python -m lambda_common.openapi ... --check   # exit status 1 when the file is not current
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from lambda_common.app import FunctionApp, RouteSpec
from lambda_common.errors import (
    DirectErrorBody,
    EmptyInput,
    InternalError,
    InvalidBody,
    InvalidRequest,
    ModelNotFound,
    NotEnoughTime,
    RequestError,
    TooLarge,
    Unauthorized,
)


class PlatformErrorBody(BaseModel):
    """The answer Lambda's Function URL gives without running the function (e.g. a body over 6 MB)."""

    message: str


OPENAPI_VERSION = "3.1.0"
REF = "#/components/schemas/{model}"

_DESCRIPTIONS = {
    400: "The request is malformed: the body is not a JSON object this route reads, or a field is wrong.",
    401: "API-key deployments: the `Authorization: Bearer <key>` header is missing or wrong.",
    404: "The request names a model this function does not serve.",
    413: "The request, or the answer it asks for, is over a size limit; the message says what fits.",
    422: "A field has a value this route cannot use (TEI's validation status).",
    500: "The function failed on a valid request; nothing partial is returned.",
    503: "Too little of the invocation's time is left to do the work, or a dependency is unavailable.",
}

SECURITY_SCHEMES = {
    "apiKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "API_KEY deployments; the key is in Secrets Manager (stack output).",
    },
    "sigv4": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "AWS_IAM deployments; sign with AWS Signature Version 4, service `lambda`.",
    },
}


def _errors_of(route: RouteSpec) -> dict[int, type[RequestError]]:
    """Each status this route can refuse with, and a kind of error that gets it."""
    kinds: list[type[RequestError]] = [InternalError, NotEnoughTime]
    if not route.public:
        kinds.append(Unauthorized)
    if route.request is not None:
        kinds += [InvalidBody, InvalidRequest, EmptyInput, TooLarge]
        if "model" in route.request.model_fields:
            kinds.append(ModelNotFound)
    statuses: dict[int, type[RequestError]] = {}
    for kind in kinds:
        statuses.setdefault(route.family.status(kind("x")), kind)
    return dict(sorted(statuses.items()))


def _models(app: FunctionApp) -> list[tuple[type[BaseModel], JsonSchemaMode]]:
    found: list[tuple[type[BaseModel], JsonSchemaMode]] = []

    def add(model: type[BaseModel] | None, mode: JsonSchemaMode) -> None:
        if model is not None and (model, mode) not in found:
            found.append((model, mode))

    for route in app.routes.values():
        add(route.request, "validation")
        add(route.response, "serialization")
        add(route.stream_item, "serialization")
        add(route.family.model, "serialization")
    add(DirectErrorBody, "serialization")
    add(PlatformErrorBody, "serialization")
    return found


def _operation(route: RouteSpec, refs: dict[tuple[Any, str], Any]) -> dict[str, Any]:
    operation: dict[str, Any] = {"operationId": route.func.__name__, "summary": route.summary}
    if route.tags:
        operation["tags"] = list(route.tags)
    doc = inspect.getdoc(route.func) or ""
    if "\n" in doc:
        operation["description"] = doc.split("\n", 1)[1].strip()
    if route.public:
        operation["security"] = [{}]
    if route.request is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[(route.request, "validation")]}},
        }
    ok: dict[str, Any] = {"description": "The answer."}
    content: dict[str, Any] = {}
    if route.response is not None:
        content["application/json"] = {"schema": refs[(route.response, "serialization")]}
    if route.stream_item is not None:
        item = route.stream_item.__name__
        content["text/event-stream"] = {
            # One server-sent event as a client parses it (schemathesis checks each against this).
            "schema": {
                "type": "object",
                "required": ["data"],
                "properties": {
                    "data": {"type": "string"},
                    "event": {"type": "string"},
                    "id": {"type": "string"},
                    "retry": {"type": "integer"},
                },
                "description": f"With `stream: true`: server-sent events, each `data: <{item} JSON>` and "
                "a blank line, sent as they are produced (OpenAI routes end with `data: [DONE]`); an error "
                "after the first event ends the stream with an error event in this route's error shape.",
            },
            "x-item-schema": refs[(route.stream_item, "serialization")],
        }
    ok["content"] = content
    responses: dict[str, Any] = {"200": ok}
    error_schema = refs[(route.family.model, "serialization")]
    platform_schema = refs[(PlatformErrorBody, "serialization")]
    for status, _ in _errors_of(route).items():
        # A request body over Lambda's 6 MB never reaches the function: the URL answers 413 itself.
        schema = {"anyOf": [error_schema, platform_schema]} if status == 413 else error_schema
        response: dict[str, Any] = {
            "description": _DESCRIPTIONS.get(status, "Refused."),
            "content": {"application/json": {"schema": schema}},
        }
        if status == 401:
            response["headers"] = {"WWW-Authenticate": {"schema": {"type": "string", "const": "Bearer"}}}
        responses[str(status)] = response
    operation["responses"] = responses
    return operation


def document(
    app: FunctionApp,
    *,
    title: str,
    version: str,
    description: str,
    servers: Iterable[dict[str, Any]] = (),
) -> dict[str, Any]:
    """The OpenAPI document of ``app``'s routes."""
    models = _models(app)
    refs, definitions = models_json_schema(models, ref_template=REF)
    paths: dict[str, dict[str, Any]] = {}
    for route in sorted(app.routes.values(), key=lambda r: (r.path, r.method)):
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, dict(refs.items()))
    tags = sorted({tag for route in app.routes.values() for tag in route.tags})
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": version, "description": description},
        "servers": list(servers),
        "security": [{}, {"apiKey": []}, {"sigv4": []}],
        "tags": [{"name": tag} for tag in tags],
        "paths": paths,
        "components": {"securitySchemes": SECURITY_SCHEMES, "schemas": definitions.get("$defs", {})},
    }


class _Dumper(yaml.SafeDumper):  # type: ignore[misc]
    """No anchors and aliases (each $ref written out), multi-line text as literal blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def render(data: dict[str, Any]) -> str:
    header = "# Generated by `python -m lambda_common.openapi` from the routes and models; do not edit.\n"
    return header + str(yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100))


def _load(target: str) -> tuple[FunctionApp, str, str]:
    """``module:Class``: an API class whose instance without a model has ``.app`` and ``TITLE``;
    the module's docstring describes the API."""
    module_name, _, attribute = target.partition(":")
    module = importlib.import_module(module_name)
    api = getattr(module, attribute)()
    return api.app, str(api.TITLE), (inspect.getdoc(module) or "").replace("``", "`")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lambda_common.openapi", description=__doc__)
    parser.add_argument("target", help="module:ApiClass, e.g. llama_app.api:GeneratorApi")
    parser.add_argument("output", type=Path)
    parser.add_argument("--version", default="1.0.0")
    parser.add_argument("--port", type=int, required=True, help="the make local Function URL port")
    parser.add_argument("--check", action="store_true", help="only compare with the file")
    args = parser.parse_args(argv)
    app, title, description = _load(args.target)
    servers: list[dict[str, Any]] = [
        {"url": f"http://127.0.0.1:{args.port}", "description": "make local"},
        {
            "url": "https://{urlId}.lambda-url.{region}.on.aws",
            "description": "the deployed Function URL (stack output)",
            "variables": {
                "urlId": {"default": "abcdefghijklmnopqrstuvwxyz012345"},
                "region": {"default": "us-east-1"},
            },
        },
    ]
    text = render(document(app, title=title, version=args.version, description=description, servers=servers))
    if args.check:
        current = args.output.read_text() if args.output.is_file() else ""
        if current != text:
            sys.stderr.write(f"{args.output} is not current: run `make openapi`\n")
            return 1
        return 0
    args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
