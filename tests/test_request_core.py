"""Every route of both functions goes through the one request core (lambda_common.app).

The same Given/When/Then cases run for every route of every function in SUBJECTS,
on the Function URL path and on the direct path, in-process on the real models
(only the Lambda context object stands in for AWS). A third function added to
SUBJECTS, with its sample requests under tests/events/, gets all of them.

Sample requests: ``tests/events/requests_<function>.json`` (a valid body per POST
route) and ``tests/events/direct_<function>.json`` (valid direct payloads); the
events themselves are built on ``tests/events/function_url_event.json``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

import pytest

from lambda_common.app import FunctionApp
from lambda_common.auth import ApiKeyGuard
from lambda_common.body import MAX_DEPTH
from lambda_common.errors import DirectErrorBody
from lambda_common.streaming import StreamingResponse
from local.functions import prepare_embeddings_model
from local.models import EMBEDDINGS_MODEL_ID, embedded_embeddings_model, embedded_gguf
from local.rie import IMAGES
from tests.conftest import EVENTS, FakeContext, function_url_event

pytestmark = pytest.mark.slow

KEY = "core-test-key-0123456789"
MARGIN_MS = 300


def _import(key: str, environment: dict[str, str]) -> types.ModuleType:
    folder = IMAGES / key
    with pytest.MonkeyPatch.context() as patch:
        for name in ("API_KEY", "API_KEY_SECRET_ARN"):
            patch.delenv(name, raising=False)
        for name, value in environment.items():
            patch.setenv(name, value)
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
        name = f"core_{key}_handler"
        spec = importlib.util.spec_from_file_location(name, folder / "handler.py")
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


def _llama() -> types.ModuleType:
    return _import("llama", {"MODEL_PATH": str(embedded_gguf()), "N_THREADS": "1", "N_CTX": "512"})


def _embeddings() -> types.ModuleType:
    model = prepare_embeddings_model(embedded_embeddings_model(), EMBEDDINGS_MODEL_ID, echo=lambda line: None)
    return _import("embeddings", {"MODEL_DIR": str(model), "MODEL_ID": EMBEDDINGS_MODEL_ID, "N_THREADS": "1"})


SUBJECTS: dict[str, Callable[[], types.ModuleType]] = {"llama": _llama, "embeddings": _embeddings}


@cache
def handler(key: str) -> types.ModuleType:
    module = SUBJECTS[key]()
    module.app.configure(deadline_margin_ms=MARGIN_MS)
    return module


def app(key: str) -> FunctionApp:
    return handler(key).app  # type: ignore[no-any-return]


def requests(key: str) -> dict[str, Any]:
    return json.loads((EVENTS / f"requests_{key}.json").read_text())  # type: ignore[no-any-return]


def direct_payloads(key: str) -> list[Any]:
    return json.loads((EVENTS / f"direct_{key}.json").read_text())  # type: ignore[no-any-return]


def route_table(key: str) -> list[tuple[str, str]]:
    """The routes of a function, read from its API module without loading a model."""
    for folder in (IMAGES / name for name in SUBJECTS):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    from embedder.api import EmbeddingsApi
    from llama_app.api import GeneratorApi

    api = {"llama": GeneratorApi, "embeddings": EmbeddingsApi}[key]()
    return sorted(api.app.routes)


def routes(*, below_root: bool = False) -> Iterator[Any]:
    for key in SUBJECTS:
        for method, path in route_table(key):
            if not (below_root and path == "/"):
                yield pytest.param(key, method, path, id=f"{key}:{method}:{path}")


def post_routes(*, with_text: bool = False) -> Iterator[Any]:
    """POST routes; ``with_text``: only those whose sample request has a text field."""
    for param in routes():
        key, method, path = param.values
        if method == "POST" and (not with_text or with_surrogate(requests(key)[f"{method} {path}"])[1]):
            yield param


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any


def call(key: str, method: str, path: str, body: str | None = None, *, remaining_ms: int = 60_000) -> Answer:
    """One Function URL request through the function's core (buffered: a non-streaming runtime's call)."""
    event = function_url_event(method, path, body)
    response = app(key).lambda_handler(event, FakeContext(remaining_ms=remaining_ms))
    headers = {k.lower(): v for k, v in response.get("headers", {}).items()}
    text = response.get("body") or "null"
    return Answer(response["statusCode"], headers, json.loads(text))


def sample(key: str, method: str, path: str) -> str | None:
    if method == "GET":
        return None
    return json.dumps(requests(key)[f"{method} {path}"])


def assert_error_in_family_shape(key: str, method: str, path: str, answer: Answer) -> str:
    """The error body validates as the route's family model; returns its message."""
    spec = app(key).routes.get((method, path))
    family = spec.family if spec is not None else app(key).family_for(path)
    assert answer.headers["content-type"] == "application/json"
    family.model.model_validate(answer.body)
    error = answer.body["error"]
    return str(error["message"] if isinstance(error, dict) else error)


def with_surrogate(value: Any) -> tuple[Any, bool]:
    """``value`` with a lone surrogate appended to its first string (depth first)."""
    if isinstance(value, str):
        return value + "\ud800", True
    if isinstance(value, dict):
        out = dict(value)
        for name, item in value.items():
            out[name], done = with_surrogate(item)
            if done:
                return out, True
    if isinstance(value, list):
        items = list(value)
        for index, item in enumerate(value):
            items[index], done = with_surrogate(item)
            if done:
                return items, True
    return value, False


# ------------------------------------------------------------------ the samples themselves


@pytest.mark.parametrize("key", sorted(SUBJECTS))
def test_every_post_route_has_a_sample_request_that_succeeds(key: str) -> None:
    # Given the stored sample of each POST route, When it is sent, Then it is answered with 200
    posts = {f"{m} {p}" for m, p in route_table(key) if m == "POST"}
    assert set(requests(key)) == posts
    for route in posts:
        method, path = route.split(" ", 1)
        answer = call(key, method, path, sample(key, method, path))
        assert answer.status == 200, (route, answer.body)


# ------------------------------------------------------------------ the Function URL path


@pytest.mark.parametrize(("key", "method", "path"), list(routes(below_root=True)))
def test_a_trailing_slash_names_the_same_route(key: str, method: str, path: str) -> None:
    # When the route is called with a trailing slash, Then it is the same route
    assert call(key, method, path + "/", sample(key, method, path)).status == 200


@pytest.mark.parametrize(("key", "method", "path"), list(routes()))
def test_a_wrong_method_is_a_405_naming_the_allowed_ones(key: str, method: str, path: str) -> None:
    answer = call(key, "PUT", path, "{}")
    assert answer.status == 405
    allowed = sorted(m for m, p in route_table(key) if p == path)
    assert answer.headers["allow"] == ", ".join(allowed)
    assert f"allowed: {', '.join(allowed)}" in assert_error_in_family_shape(key, "PUT", path, answer)


@pytest.mark.parametrize(("key", "method", "path"), list(routes()))
def test_api_key_mode_refuses_a_request_without_the_key_before_any_work(
    key: str, method: str, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given API-key mode, and a spy on the one place route functions run
    core = app(key)
    monkeypatch.setattr(core, "guard", ApiKeyGuard(key=KEY))
    ran: list[str] = []
    real_run = core._run

    def spy(*args: Any) -> Any:
        ran.append(path)
        return real_run(*args)

    monkeypatch.setattr(core, "_run", spy)
    # When the route is called without a key
    answer = call(key, method, path, sample(key, method, path))
    # Then a private route answers 401 without having run; only /health is public
    if core.routes[(method, path)].public:
        assert answer.status == 200
        return
    assert answer.status == 401
    assert answer.headers["www-authenticate"] == "Bearer"
    assert "API key" in assert_error_in_family_shape(key, method, path, answer)
    assert ran == []


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ("[" * (MAX_DEPTH + 10) + "]" * (MAX_DEPTH + 10), "deeper than"),
        ("[" * 5000 + "]" * 5000, "deeper than"),
        ('{"n": 1' + "0" * 5000 + "}", "numbers may have at most"),
        ("", "empty"),
    ],
    ids=["bad-json", "deep", "past-recursion-limit", "big-integer", "empty"],
)
@pytest.mark.parametrize(("key", "method", "path"), list(post_routes()))
def test_a_body_python_cannot_or_should_not_parse_is_a_400(
    key: str, method: str, path: str, body: str, fragment: str
) -> None:
    answer = call(key, method, path, body)
    assert answer.status == 400
    assert fragment in assert_error_in_family_shape(key, method, path, answer)


@pytest.mark.parametrize(("key", "method", "path"), list(post_routes(with_text=True)))
def test_a_lone_surrogate_in_a_text_field_is_refused_by_name(key: str, method: str, path: str) -> None:
    body, _ = with_surrogate(requests(key)[f"{method} {path}"])
    answer = call(key, method, path, json.dumps(body))  # ensure_ascii writes it as \\ud800
    assert answer.status in (400, 422)
    assert "surrogate" in assert_error_in_family_shape(key, method, path, answer)


@pytest.mark.parametrize(("key", "method", "path"), list(routes()))
def test_an_answer_over_the_response_limit_is_a_413_not_a_function_error(
    key: str, method: str, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a response limit smaller than any answer (Lambda's is 6 MB; the mechanism is the same)
    monkeypatch.setattr(app(key), "max_response_bytes", 16)
    answer = call(key, method, path, sample(key, method, path))
    assert answer.status == 413
    assert "16-byte limit" in assert_error_in_family_shape(key, method, path, answer)


@pytest.mark.parametrize(("key", "method", "path"), list(routes()))
def test_an_invocation_too_near_its_deadline_is_refused_before_any_work(
    key: str, method: str, path: str
) -> None:
    answer = call(key, method, path, sample(key, method, path), remaining_ms=MARGIN_MS - 10)
    assert answer.status == 503
    assert "DEADLINE_MARGIN_MS" in assert_error_in_family_shape(key, method, path, answer)


@pytest.mark.parametrize("key", sorted(SUBJECTS))
def test_an_unknown_route_is_a_404_that_lists_the_routes(key: str) -> None:
    for path in ("/nowhere", "/v1/nowhere"):
        answer = call(key, "GET", path)
        assert answer.status == 404
        message = assert_error_in_family_shape(key, "GET", path, answer)
        assert all(f"{m} {p}" in message for m, p in route_table(key))


@pytest.mark.parametrize("key", sorted(SUBJECTS))
def test_on_a_streaming_url_every_answer_carries_its_http_prelude(
    key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a Function URL in RESPONSE_STREAM mode, which passes an answer without the prelude
    # through raw with status 200
    monkeypatch.setattr(app(key), "url_streaming", True)
    # When a URL request is refused (404) through the runtime loop's entry point
    event = json.dumps(function_url_event("GET", "/nowhere")).encode()
    answer = app(key).streaming_handler(event, FakeContext())
    # Then the answer is framed: its status and headers in the prelude, the error body after it
    assert isinstance(answer, StreamingResponse)
    assert answer.prelude is not None
    assert answer.prelude["statusCode"] == 404
    assert json.loads(b"".join(answer.chunks))["error"]
    # And a direct invoke's answer is not framed (it is no HTTP response)
    direct_answer = app(key).streaming_handler(json.dumps(direct_payloads(key)[0]).encode(), FakeContext())
    assert not isinstance(direct_answer, StreamingResponse)


# ------------------------------------------------------------------ the direct path


def direct(key: str, payload: Any, *, remaining_ms: int = 60_000) -> Any:
    return app(key).lambda_handler(payload, FakeContext(remaining_ms=remaining_ms))


def direct_error(answer: Any) -> dict[str, Any]:
    """A direct answer that must be the one direct error shape; returns its error object."""
    error: dict[str, Any] = DirectErrorBody.model_validate(answer).error.model_dump()
    return error


@pytest.mark.parametrize("key", sorted(SUBJECTS))
def test_every_stored_direct_payload_is_answered(key: str) -> None:
    for payload in direct_payloads(key):
        answer = direct(key, payload)
        assert not (isinstance(answer, dict) and "error" in answer), answer


@pytest.mark.parametrize("key", sorted(SUBJECTS))
@pytest.mark.parametrize("payload", [["a list"], "a string", 5, None, True], ids=repr)
def test_a_direct_payload_that_is_not_an_object_is_a_400_in_the_direct_shape(key: str, payload: Any) -> None:
    error = direct_error(direct(key, payload))
    assert error["status"] == 400
    assert "JSON object" in error["message"]


def crafted_events() -> Iterator[Any]:
    event = function_url_event("POST", "/", "{}")
    cases = {
        "rawPath-not-a-string": {**event, "rawPath": 5},
        "no-method": {**event, "requestContext": {**event["requestContext"], "http": {"path": "/"}}},
        "body-not-a-string": {**event, "body": {"prompt": "x"}},
        "headers-not-strings": {**event, "headers": {"x": 1}},
        "http-not-an-object": {**event, "requestContext": {"http": "POST /"}},
        "base64-flag-not-a-boolean": {**event, "isBase64Encoded": "yes"},
    }
    for name, crafted in cases.items():
        for key in SUBJECTS:
            yield pytest.param(key, crafted, id=f"{key}:{name}")


@pytest.mark.parametrize(("key", "event"), list(crafted_events()))
def test_a_crafted_direct_payload_shaped_like_a_url_event_is_a_400_not_a_stack_trace(
    key: str, event: dict[str, Any]
) -> None:
    error = direct_error(direct(key, event))
    assert error["status"] == 400
    assert "malformed Function URL event" in error["message"]
    assert "Traceback" not in error["message"]


@pytest.mark.parametrize("key", sorted(SUBJECTS))
def test_a_direct_invoke_too_near_its_deadline_is_a_503_in_the_direct_shape(key: str) -> None:
    error = direct_error(direct(key, direct_payloads(key)[0], remaining_ms=MARGIN_MS - 10))
    assert (error["status"], error["code"]) == (503, "deadline_too_close")


@pytest.mark.parametrize("key", sorted(SUBJECTS))
@pytest.mark.parametrize(
    ("payload", "fragment"),
    [(b"[" * 5000 + b"]" * 5000, "deeper than"), (b'{"n": 1' + b"0" * 5000 + b"}", "at most")],
    ids=["past-recursion-limit", "big-integer"],
)
def test_a_raw_payload_is_decoded_with_the_body_bounds(key: str, payload: bytes, fragment: str) -> None:
    # The project's runtime loop hands the payload's bytes to the streaming entry point
    error = direct_error(app(key).streaming_handler(payload, FakeContext()))
    assert error["status"] == 400
    assert fragment in error["message"]


@pytest.mark.parametrize("key", sorted(SUBJECTS))
def test_the_warm_process_survives_all_of_it(key: str) -> None:
    # After every refusal above (same process, same handler module), a good request is answered
    payload = direct_payloads(key)[0]
    assert not (isinstance(direct(key, payload), dict) and "error" in direct(key, payload))
    assert call(key, "GET", "/health").status == 200
