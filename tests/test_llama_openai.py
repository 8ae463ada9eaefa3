"""The generator as OpenAI clients use it: structured outputs, tool calls, logprobs, refusals.

The official ``openai`` SDK (and pydantic-ai on top of it) drives the real handler on the
real SmolLM2-135M-Instruct GGUF. In-process, the SDK's HTTP transport is an
``httpx2.MockTransport`` that turns each request into a Function URL event for the
handler and its answer (a streamed one chunk by chunk, as the runtime loop sends it) back
into an HTTP response; only the Lambda context object stands in for AWS. The last tests
drive the same SDK over HTTP against the local stack (``make local``'s Runtime API
stand-in and Function URL front).
"""

from __future__ import annotations

import functools
import json
import types
from collections.abc import Iterator
from typing import Any, Literal

import httpx2
import jsonschema
import llama_cpp
import openai
import pytest
from openai.types.chat import ChatCompletionMessageFunctionToolCall
from pydantic import BaseModel, Field

from lambda_common.streaming import StreamingResponse
from tests.conftest import FakeContext, function_url_event
from tests.harness import shared_stack, streaming_stack
from tests.test_llama_handler import load_handler

pytestmark = pytest.mark.slow

WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 30},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
TIME: Any = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The current time in a time zone.",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "maxLength": 40}},
            "required": ["zone"],
        },
    },
}
QUESTION: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]

RECORD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 1, "maximum": 30},
        "weight_kg": {"type": "number", "minimum": 0, "maximum": 250},
        "colour": {"enum": ["white", "brown", "black"]},
        "born": {"type": "string", "format": "date"},
        "tag": {"type": "string", "pattern": "^[A-Z]{2}-\\d{3}$"},
        "friends": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 2},
        "owner": {
            "anyOf": [
                {"type": "null"},
                {"$ref": "#/$defs/Owner"},
            ]
        },
    },
    "required": ["name", "age", "weight_kg", "colour", "born", "tag", "friends", "owner"],
    "additionalProperties": False,
    "$defs": {
        "Owner": {
            "type": "object",
            "properties": {"farm": {"type": "string", "maxLength": 20}},
            "required": ["farm"],
            "additionalProperties": False,
        }
    },
}


class Llama(BaseModel):
    name: str = Field(max_length=20)
    age: int = Field(ge=0, le=40)
    colour: Literal["white", "brown", "black"]


# ------------------------------------------------------------------ the SDK on the handler, in-process


@pytest.fixture(scope="module")
def handler() -> Iterator[types.ModuleType]:
    """This module's own handler, its Function URL in RESPONSE_STREAM mode (undone at the module's end)."""
    module, _ = load_handler()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module.app, "url_streaming", True)
        yield module


class FunctionUrlTransport:
    """An HTTP request as the Function URL's event for the handler; its answer as the HTTP response.

    A streamed answer comes back chunk by chunk (the handler's runtime-loop entry point, as
    a Function URL in RESPONSE_STREAM mode); everything else whole. ``requests`` keeps the
    JSON bodies the client sent.
    """

    def __init__(self, handler: types.ModuleType) -> None:
        assert handler.app.url_streaming, "the handler fixture puts the URL in RESPONSE_STREAM mode"
        self.handler = handler
        self.requests: list[dict[str, Any]] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        body = request.read().decode()
        if body:
            self.requests.append(json.loads(body))
        event = function_url_event(
            request.method, request.url.path, body or None, headers=dict(request.headers)
        )
        answer = self.handler.lambda_handler(event, FakeContext())
        if isinstance(answer, StreamingResponse):
            assert answer.prelude is not None
            return httpx2.Response(
                answer.prelude["statusCode"], headers=answer.prelude["headers"], content=_chunks(answer)
            )
        headers = answer.get("headers", {})
        return httpx2.Response(answer["statusCode"], headers=headers, content=answer.get("body", "").encode())


def _chunks(answer: StreamingResponse) -> Iterator[bytes]:
    yield from answer.chunks


@pytest.fixture(scope="module")
def transport(handler: types.ModuleType) -> FunctionUrlTransport:
    return FunctionUrlTransport(handler)


@pytest.fixture(scope="module")
def client(transport: FunctionUrlTransport, handler: types.ModuleType) -> openai.OpenAI:
    http = httpx2.Client(transport=httpx2.MockTransport(transport), base_url="http://llama.local")
    return openai.OpenAI(base_url="http://llama.local/v1", api_key="unused", http_client=http, max_retries=0)


@pytest.fixture(scope="module")
def model(handler: types.ModuleType) -> str:
    return str(handler.settings.alias)


def streamed(client: openai.OpenAI, request: dict[str, Any]) -> Any:
    """The completion the SDK's stream helper assembles from the deltas (also when cut by length)."""
    try:
        with client.chat.completions.stream(**request) as events:
            return events.get_final_completion()
    except openai.LengthFinishReasonError as cut:  # the helper refuses to parse a cut answer
        return cut.completion


# ------------------------------------------------------------------ structured outputs


def test_parse_with_a_pydantic_model_returns_a_parsed_object(client: openai.OpenAI, model: str) -> None:
    # Given a pydantic model as the response format (the SDK sends it as a strict JSON schema)
    # When the SDK's parse helper asks for it
    completion = client.chat.completions.parse(
        model=model,
        messages=[{"role": "user", "content": "Describe a llama called Tina."}],
        response_format=Llama,
        temperature=0,
        max_completion_tokens=80,
    )
    # Then the message carries the parsed object, valid by construction
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    parsed = choice.message.parsed
    assert isinstance(parsed, Llama)
    assert 0 <= parsed.age <= 40
    assert Llama.model_validate_json(choice.message.content or "") == parsed


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_json_schema_answer_validates_streamed_and_not(
    client: openai.OpenAI, model: str, seed: int
) -> None:
    # Given a schema with bounds, an enum, a date, a pattern, an array, a $ref and a nullable branch
    response_format: Any = {
        "type": "json_schema",
        "json_schema": {"name": "llama_record", "schema": RECORD_SCHEMA, "strict": True},
    }
    request: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": "Invent a llama record as JSON."}],
        "response_format": response_format,
        "temperature": 1.0,
        "seed": seed,
        "max_tokens": 200,
    }
    # When it is asked for whole and streamed, at a temperature that lets the model wander
    whole = client.chat.completions.create(**request)
    pieces = list(client.chat.completions.create(**request, stream=True))
    streamed = "".join(c.choices[0].delta.content or "" for c in pieces if c.choices)
    # Then both answers parse and validate (dates are real calendar dates), and they are the same text
    checker = jsonschema.Draft202012Validator(RECORD_SCHEMA, format_checker=jsonschema.FormatChecker())
    assert whole.choices[0].finish_reason == "stop"
    answer = whole.choices[0].message.content or ""
    checker.validate(json.loads(answer))
    checker.validate(json.loads(streamed))
    assert streamed == answer


@pytest.mark.parametrize("seed", [1, 2])
def test_patterns_generate_strings_that_match_and_stay_valid_json(
    client: openai.OpenAI, model: str, seed: int
) -> None:
    # Given patterns with the parts the converter alone gets wrong: '.', a negated class, \w, \d, \.
    schema = {
        "type": "object",
        "properties": {
            "code": {"type": "string", "pattern": "^.[^a]\\w{2,5}\\.(?:x|y)$"},
            "ref": {"type": "string", "pattern": "[A-Z]\\d{3}"},
        },
        "required": ["code", "ref"],
        "additionalProperties": False,
    }
    completion = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Give a code with quotes and backslashes in it."}],
        response_format={"type": "json_schema", "json_schema": {"name": "codes", "schema": schema}},
        temperature=1.5,
        seed=seed,
        max_tokens=60,
    )
    # Then the answer parses and each string matches its pattern as Python's re reads it
    jsonschema.validate(json.loads(completion.choices[0].message.content or ""), schema)


def test_json_object_mode_answers_a_json_object(client: openai.OpenAI, model: str) -> None:
    completion = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Reply with a short JSON object with a name and an age."}],
        response_format={"type": "json_object"},
        temperature=0,
        max_tokens=120,
    )
    assert completion.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(completion.choices[0].message.content or ""), dict)


def test_llama_cpp_json_schema_and_grammar_fields_constrain_the_completion(
    client: openai.OpenAI, model: str, handler: types.ModuleType
) -> None:
    # Given llama.cpp's own fields on /v1/completions and POST /
    schema = {"type": "object", "properties": {"count": {"type": "integer", "minimum": 3, "maximum": 7}}}
    completion = client.completions.create(
        model=model,
        prompt="How many legs has a llama? JSON:",
        max_tokens=30,
        temperature=0,
        extra_body={"json_schema": schema},
    )
    value = json.loads(completion.choices[0].text)
    jsonschema.validate(value, schema)
    direct = handler.app.lambda_handler(
        {"prompt": "Is a llama a camelid?", "grammar": 'root ::= "yes" | "no"', "max_tokens": 5},
        FakeContext(),
    )
    assert direct["text"] in ("yes", "no")
    assert direct["finish_reason"] == "stop"


# ------------------------------------------------------------------ tool calls


def _final_answer(client: openai.OpenAI, model: str, call: Any, result: str, *, stream: bool) -> Any:
    messages: list[Any] = [
        *QUESTION,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.function.name, "arguments": call.function.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": result},
    ]
    request: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "tools": [WEATHER],
        "tool_choice": "none",
        "temperature": 0,
        "max_tokens": 40,
    }
    if not stream:
        return client.chat.completions.create(**request)
    with client.chat.completions.stream(**request, stream_options={"include_usage": True}) as events:
        return events.get_final_completion()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize(
    "choice",
    ["required", {"type": "function", "function": {"name": "get_weather"}}],
    ids=["required", "named"],
)
def test_a_tool_call_round_trip(client: openai.OpenAI, model: str, choice: Any, stream: bool) -> None:
    # Given two tools and a question that needs one of them
    request: dict[str, Any] = {
        "model": model,
        "messages": QUESTION,
        "tools": [WEATHER, TIME],
        "tool_choice": choice,
        "parallel_tool_calls": False,
        "temperature": 0,
        "max_tokens": 60,
    }
    # When the model is made to call a tool (the SDK assembling streamed deltas when streamed)
    if stream:
        with client.chat.completions.stream(**request) as events:
            completion = events.get_final_completion()
    else:
        completion = client.chat.completions.create(**request)
    # Then the answer is one call with an id, an offered name and arguments valid for its schema
    choice_ = completion.choices[0]
    assert choice_.finish_reason == "tool_calls"
    calls = choice_.message.tool_calls or []
    assert len(calls) == 1
    call = calls[0]
    assert call.type == "function"
    assert call.id.startswith("call_")
    schemas = {tool["function"]["name"]: tool["function"]["parameters"] for tool in (WEATHER, TIME)}
    if isinstance(choice, dict):
        assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), schemas[call.function.name])
    # And the tool's result goes back on the next turn, which answers in text
    final = _final_answer(client, model, call, '{"temperature": 21, "sky": "sunny"}', stream=stream)
    assert final.choices[0].finish_reason in ("stop", "length")
    assert final.choices[0].message.content
    assert not final.choices[0].message.tool_calls
    baseline = client.chat.completions.create(
        model=model,
        messages=QUESTION,
        tools=[WEATHER],
        tool_choice="none",
        max_tokens=1,
    )
    assert final.usage is not None
    assert baseline.usage is not None
    assert final.usage.prompt_tokens > baseline.usage.prompt_tokens + 10  # the call and its result were read


def test_required_with_parallel_calls_gives_only_well_formed_calls(client: openai.OpenAI, model: str) -> None:
    completion = client.chat.completions.create(
        model=model,
        messages=QUESTION,
        tools=[WEATHER, TIME],
        tool_choice="required",
        temperature=0,
        max_tokens=200,
    )
    choice = completion.choices[0]
    calls = choice.message.tool_calls or []
    assert 1 <= len(calls) <= 8
    assert len({call.id for call in calls}) == len(calls)
    for call in calls:
        assert isinstance(call, ChatCompletionMessageFunctionToolCall)
        assert call.function.name in ("get_weather", "get_time")
        if choice.finish_reason == "tool_calls":
            assert isinstance(json.loads(call.function.arguments), dict)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_auto_is_well_formed_content_or_calls(client: openai.OpenAI, model: str, stream: bool) -> None:
    # Given tool_choice auto and a plain question: the small model may answer or call
    request: dict[str, Any] = {
        "model": model,
        "messages": QUESTION,
        "tools": [WEATHER],
        "temperature": 0,
        "max_tokens": 40,
    }
    completion = streamed(client, request) if stream else client.chat.completions.create(**request)
    choice = completion.choices[0]
    # Then the answer is one or the other, labelled accordingly
    if choice.message.tool_calls:
        assert choice.finish_reason in ("tool_calls", "length")
    else:
        assert choice.message.content
        assert choice.finish_reason in ("stop", "length")
        assert "<tool_call>" not in choice.message.content


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_auto_continues_a_call_the_model_starts_under_the_grammar(
    client: openai.OpenAI, model: str, stream: bool
) -> None:
    # Given a conversation where the assistant answered a like question with a call (the small
    # model then writes the call markup itself)
    messages: list[Any] = [
        {"role": "user", "content": "Weather in Rome?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_0",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                }
            ],
        },
        {"role": "user", "content": "Weather in Paris?"},
    ]
    request: dict[str, Any] = {"model": model, "messages": messages, "tools": [WEATHER], "temperature": 0}
    # When tool_choice is left to auto
    if stream:
        with client.chat.completions.stream(**request, max_tokens=60) as events:
            completion = events.get_final_completion()
    else:
        completion = client.chat.completions.create(**request, max_tokens=60)
    # Then the call it started comes back as a tool call with valid arguments
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert [call.function.name for call in calls] == ["get_weather"]
    jsonschema.validate(json.loads(calls[0].function.arguments), WEATHER["function"]["parameters"])


def test_tool_choice_none_never_calls(client: openai.OpenAI, model: str) -> None:
    completion = client.chat.completions.create(
        model=model, messages=QUESTION, tools=[WEATHER], tool_choice="none", temperature=0, max_tokens=20
    )
    assert completion.choices[0].message.tool_calls is None
    assert completion.choices[0].message.content


# ------------------------------------------------------------------ logprobs


def test_chat_logprobs_are_consistent_at_temperature_zero(client: openai.OpenAI, model: str) -> None:
    # Given greedy decoding with 5 alternatives per token
    request: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": "Name three llama colours."}],
        "temperature": 0,
        "max_tokens": 16,
        "logprobs": True,
        "top_logprobs": 5,
    }
    whole = client.chat.completions.create(**request)
    # Then every generated token has its log probability, the likeliest of its alternatives
    choice = whole.choices[0]
    assert choice.logprobs is not None
    entries = choice.logprobs.content or []
    assert (
        len(entries) == whole.usage.completion_tokens - (1 if choice.finish_reason == "stop" else 0)
        or entries
    )
    assert "".join(entry.token for entry in entries) == choice.message.content
    for entry in entries:
        assert entry.logprob <= 0
        assert len(entry.top_logprobs) == 5
        best = entry.top_logprobs[0]
        assert best.token == entry.token
        assert entry.logprob == pytest.approx(best.logprob)
        assert entry.logprob >= max(top.logprob for top in entry.top_logprobs) - 1e-9
        assert bytes(entry.bytes or []) == entry.token.encode()
    # And streamed, the same entries arrive spread over the content chunks
    pieces = list(client.chat.completions.create(**request, stream=True))
    streamed = [
        e for c in pieces if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content or []
    ]
    assert [(e.token, round(e.logprob, 6)) for e in streamed] == [
        (e.token, round(e.logprob, 6)) for e in entries
    ]


def test_completion_logprobs_in_the_legacy_shape(client: openai.OpenAI, model: str) -> None:
    prompt = "Llamas live in"
    completion = client.completions.create(
        model=model, prompt=prompt, max_tokens=8, temperature=0, logprobs=3
    )
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None
    tokens = logprobs.tokens or []
    assert "".join(tokens) == completion.choices[0].text
    assert len(logprobs.token_logprobs or []) == len(tokens) == len(logprobs.top_logprobs or [])
    offsets = logprobs.text_offset or []
    assert offsets[0] == len(prompt)
    assert offsets == sorted(offsets)
    for token, logprob, top in zip(
        tokens, logprobs.token_logprobs or [], logprobs.top_logprobs or [], strict=True
    ):
        assert len(top) <= 3
        assert logprob == pytest.approx(max(top.values()))
        assert top[token] == pytest.approx(logprob)
    # And streamed, each chunk carries its tokens' entries, with offsets continuing across chunks
    chunks = list(
        client.completions.create(
            model=model, prompt=prompt, max_tokens=8, temperature=0, logprobs=3, stream=True
        )
    )
    streamed = [c.choices[0].logprobs for c in chunks if c.choices and c.choices[0].logprobs]
    assert [t for lp in streamed for t in lp.tokens or []] == tokens
    assert [o for lp in streamed for o in lp.text_offset or []] == offsets


# ------------------------------------------------------------------ harmless fields, and refusals


def test_fields_that_cannot_change_the_answer_are_accepted(client: openai.OpenAI, model: str) -> None:
    # Given fields OpenAI clients send that this server accepts and ignores (temperature null: the default)
    ignored: dict[str, Any] = {
        "metadata": {"team": "llamas"},
        "store": False,
        "user": "someone",
        "service_tier": "auto",
        "parallel_tool_calls": True,
        "stream_options": None,
        "prediction": {"type": "content", "content": "Hello"},
        "reasoning_effort": "low",
        "modalities": ["text"],
        "safety_identifier": "abc",
        "prompt_cache_key": "k",
        "n": 1,
        "logit_bias": {},
    }
    messages: Any = [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hi"}]

    def ask(extra_body: dict[str, Any], **fields: Any) -> str | None:
        completion = client.chat.completions.create(
            model=model, messages=messages, max_tokens=4, seed=3, extra_body=extra_body, **fields
        )
        content: str | None = completion.choices[0].message.content
        return content

    # When the same seeded request is sent with and without them
    with_fields = ask({"top_k": 20, "temperature": None}, **ignored)
    without = ask({"top_k": 20})
    # Then it is answered, and the answer is the one the bare request gets (seeded, default temperature)
    assert with_fields is not None
    assert with_fields == without
    # And at temperature 0 as well
    assert ask({"top_k": 20}, temperature=0, **ignored) == ask({"top_k": 20}, temperature=0)


def _error(transport: FunctionUrlTransport, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    event = function_url_event("POST", path, json.dumps(body))
    answer = transport.handler.app.lambda_handler(event, FakeContext())
    return answer["statusCode"], json.loads(answer["body"])["error"]


def _schema_request(schema: Any) -> dict[str, Any]:
    return {
        "messages": QUESTION,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    }


REFUSED_SCHEMAS = [
    ({"oneOf": [{"type": "string"}, {"type": "integer"}]}, "oneOf"),
    ({"not": {"type": "string"}}, "not"),
    ({"type": "object", "if": {"required": ["a"]}, "then": {"required": ["b"]}}, "if"),
    ({"type": "object", "patternProperties": {"^a": {"type": "string"}}}, "patternProperties"),
    ({"type": "object", "propertyNames": {"maxLength": 3}}, "propertyNames"),
    ({"type": "object", "minProperties": 1}, "minProperties"),
    ({"type": "object", "maxProperties": 2}, "maxProperties"),
    ({"type": "object", "dependentRequired": {"a": ["b"]}}, "dependentRequired"),
    ({"type": "array", "uniqueItems": True}, "uniqueItems"),
    ({"type": "array", "contains": {"type": "integer"}}, "contains"),
    ({"type": "integer", "multipleOf": 3}, "multipleOf"),
    ({"type": "number", "exclusiveMinimum": 0}, "exclusiveMinimum"),
    ({"type": "number", "minimum": -1.5}, "minimum"),
    ({"type": "string", "format": "email"}, "format"),
    ({"type": "string", "pattern": "^(?=a)b$"}, "lookarounds"),
    ({"type": "string", "pattern": "^a\\1$"}, "escape"),
    ({"type": "string", "pattern": 'a"b'}, "pattern"),
    ({"type": "string", "pattern": "^[a-z]+$", "maxLength": 3}, "pattern beside minLength/maxLength"),
    ({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["b"]}, "required names 'b'"),
    (
        {"type": "object", "properties": {"a": {}}, "additionalProperties": {"type": "string"}},
        "additionalProperties",
    ),
    ({"allOf": [{"type": "object"}, {"required": ["a"]}]}, "allOf"),
    ({"$ref": "https://example.com/schema.json"}, "$ref"),
    ({"$ref": "#/$defs/Missing"}, "does not name"),
    ({"type": "string", "minimum": 3}, "minimum does not apply to type string"),
    ({"type": "string", "maxLength": 100_000}, "maxLength"),
    ({"anyOf": [{"type": "string"}], "maxLength": 3}, "anyOf beside"),
    ({"type": "objekt"}, "type"),
    ({"type": "string", "contentSchema": {}}, "contentSchema"),
    ({"enum": []}, "enum"),
    ({"type": "object", "properties": {"a": False}}, "admits no value"),
    ({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}, "refers back to itself"),
    ({"type": "array", "minItems": None}, "minItems must be a non-negative integer"),
    ({"type": "string", "format": {}}, "format"),
]


@pytest.mark.parametrize(("schema", "named"), REFUSED_SCHEMAS, ids=[n for _, n in REFUSED_SCHEMAS])
def test_schema_keywords_that_cannot_be_enforced_are_refused(
    transport: FunctionUrlTransport, schema: Any, named: str
) -> None:
    # When a response format uses a keyword the grammar cannot enforce
    status, error = _error(transport, "/v1/chat/completions", _schema_request(schema))
    # Then it is a 400 that names it, never a silently looser answer
    assert status == 400
    assert named in error["message"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] is not None


def test_deep_and_large_schemas_are_refused(transport: FunctionUrlTransport) -> None:
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(30):
        deep = {"type": "array", "items": deep}
    status, error = _error(transport, "/v1/chat/completions", _schema_request(deep))
    assert (status, "nests more than 24 levels" in error["message"]) == (400, True)
    wide = {
        "type": "object",
        "properties": {f"p{i}": {"type": "string", "description": "x" * 100} for i in range(800)},
    }
    status, error = _error(transport, "/v1/chat/completions", _schema_request(wide))
    assert (status, "bytes of JSON" in error["message"]) == (400, True)


def _tool(name: str) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {"name": name, "parameters": {"type": "object", "properties": {}}},
    }


REFUSED_REQUESTS: list[tuple[str, dict[str, Any], str, str]] = [
    ("/v1/chat/completions", {"messages": QUESTION, "n": 2}, "n", "n=2"),
    (
        "/v1/chat/completions",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {"type": "image_url", "image_url": {"url": "https://example.com/llama.png"}},
                    ],
                }
            ]
        },
        "messages[0]",
        "image_url part",
    ),
    (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
        "messages[0]",
        "input_audio part",
    ),
    (
        "/v1/chat/completions",
        {"messages": QUESTION, "tools": [_tool(f"t{i}") for i in range(129)]},
        "tools",
        "129",
    ),
    (
        "/v1/chat/completions",
        {"messages": QUESTION, "tools": [_tool("get weather")]},
        "tools[0].function.name",
        "",
    ),
    (
        "/v1/chat/completions",
        {"messages": QUESTION, "tools": [_tool("a" * 65)]},
        "tools[0].function.name",
        "",
    ),
    (
        "/v1/chat/completions",
        {"messages": QUESTION, "tools": [_tool("fn.call")]},
        "tools[0].function.name",
        "",
    ),
    ("/v1/chat/completions", {"messages": QUESTION, "tools": [_tool("f"), _tool("f")]}, "tools[1]", "twice"),
    (
        "/v1/chat/completions",
        {
            "messages": QUESTION,
            "tools": [_tool("f")],
            "tool_choice": {"type": "function", "function": {"name": "g"}},
        },
        "tool_choice.function.name",
        "not one of the tools",
    ),
    (
        "/v1/chat/completions",
        {"messages": QUESTION, "tools": [{"type": "custom", "custom": {"name": "f"}}]},
        "tools[0].type",
        "function",
    ),
    ("/v1/chat/completions", {"messages": QUESTION, "tool_choice": "required"}, "tool_choice", "needs tools"),
    ("/v1/chat/completions", {"messages": QUESTION, "logit_bias": {"50256": -100}}, "logit_bias", "biases"),
    ("/v1/chat/completions", {"messages": QUESTION, "audio": {"voice": "alloy"}}, "audio", "audio output"),
    ("/v1/chat/completions", {"messages": QUESTION, "modalities": ["text", "audio"]}, "modalities", "text"),
    ("/v1/chat/completions", {"messages": QUESTION, "functions": [{"name": "f"}]}, "functions", "tools"),
    ("/v1/chat/completions", {"messages": QUESTION, "top_logprobs": 3}, "top_logprobs", "logprobs: true"),
    (
        "/v1/chat/completions",
        {"messages": QUESTION, "logprobs": True, "top_logprobs": 21},
        "top_logprobs",
        "20",
    ),
    ("/v1/chat/completions", {"messages": QUESTION, "web_search_options": {}}, "web_search_options", "web"),
    ("/v1/chat/completions", {"messages": QUESTION, "verbosity": "low"}, "verbosity", "max_tokens"),
    (
        "/v1/chat/completions",
        {"messages": [{"role": "tool", "content": "21 degrees"}]},
        "messages[0]",
        "tool_call_id",
    ),
    (
        "/v1/chat/completions",
        {
            "messages": [
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}
                    ],
                }
            ]
        },
        "messages[0].tool_calls[0].function.arguments",
        "JSON object",
    ),
    ("/v1/completions", {"prompt": "a", "echo": True}, "echo", "echo"),
    ("/v1/completions", {"prompt": "a", "best_of": 2}, "best_of", "best_of"),
    ("/v1/completions", {"prompt": "a", "suffix": "b"}, "suffix", "suffix"),
    (
        "/v1/completions",
        {"prompt": "a", "grammar": "root ::= foo"},
        "grammar",
        "Undefined rule identifier 'foo'",
    ),
    ("/v1/completions", {"prompt": "a", "grammar": 'root ::= root "a"'}, "grammar", "left recursion"),
    ("/v1/completions", {"prompt": "a", "grammar": 'root ::= "a"', "json_schema": {}}, "", "not both"),
    ("/", {"prompt": "a", "grammar": 'root ::= "\\d"'}, "grammar", "unknown escape"),
    ("/", {"prompt": "a", "grammar": 'rot ::= "a"'}, "grammar", "root"),
    ("/", {"prompt": "a", "json_schema": {"type": "string", "format": "uri"}}, "json_schema", "format 'uri'"),
]


@pytest.mark.parametrize(
    ("path", "body", "param", "fragment"),
    REFUSED_REQUESTS,
    ids=[f"{p}:{f or q}" for p, _, q, f in REFUSED_REQUESTS],
)
def test_requests_that_would_change_meaning_are_refused_by_name(
    transport: FunctionUrlTransport, path: str, body: dict[str, Any], param: str, fragment: str
) -> None:
    # When a request asks for what this function cannot do faithfully
    status, error = _error(transport, path, body)
    # Then it is a 400 naming the field and the problem
    assert status == 400, error
    assert fragment in error["message"]
    if param:
        assert error["param"] == param or error["message"].startswith(param), error
    # And the warm handler answers the next request
    after = transport.handler.app.lambda_handler({"prompt": "llamas are", "n-generate": 1}, FakeContext())
    assert after["usage"]["completion_tokens"] == 1


def test_the_sdk_raises_its_bad_request_error_with_the_message(client: openai.OpenAI, model: str) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=model, messages=QUESTION, n=2)  # type: ignore[arg-type]
    assert "n=2" in str(raised.value)


# ------------------------------------------------------------------ a framework on top of the SDK


class City(BaseModel):
    name: str = Field(max_length=30)
    country: str = Field(max_length=30)
    population_millions: float = Field(ge=0, le=40)


def test_pydantic_ai_gets_a_structured_answer(handler: types.ModuleType, model: str) -> None:
    # Given a pydantic-ai agent whose output is a pydantic model (it asks for it as a required tool call)
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    seen = FunctionUrlTransport(handler)

    async def handle(request: httpx2.Request) -> httpx2.Response:
        answer = seen(request)  # the async client wants an async body: the answer is read whole
        return httpx2.Response(answer.status_code, headers=answer.headers, content=answer.read())

    http = httpx2.AsyncClient(transport=httpx2.MockTransport(handle), base_url="http://llama.local")
    sdk = openai.AsyncOpenAI(
        base_url="http://llama.local/v1", api_key="unused", http_client=http, max_retries=0
    )
    agent = Agent(
        OpenAIChatModel(model, provider=OpenAIProvider(openai_client=sdk)),
        output_type=City,
        model_settings={"temperature": 0, "max_tokens": 120},
    )
    # When it runs
    result = agent.run_sync("Name a big city in France.")
    # Then it gets a validated City, from a forced tool call
    assert isinstance(result.output, City)
    assert 0 <= result.output.population_millions <= 40
    assert seen.requests[0]["tool_choice"] == "required"
    assert seen.requests[0]["tools"][0]["function"]["strict"] is True


# ------------------------------------------------------------------ over HTTP, on the local stack


def test_on_the_local_stack_parse_and_a_streamed_tool_round_trip() -> None:
    # Given the OpenAI SDK pointed at the generator's local Function URL (the streaming tests' stack:
    # room for whole answers, where the shared one caps 16 tokens)
    url = streaming_stack().functions["llama"].url.rstrip("/")
    sdk = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
    model = sdk.models.list().data[0].id
    # When it parses a structured answer
    parsed = sdk.chat.completions.parse(
        model=model,
        messages=[{"role": "user", "content": "Describe a llama called Tina."}],
        response_format=Llama,
        temperature=0,
        max_tokens=80,
    )
    assert isinstance(parsed.choices[0].message.parsed, Llama)
    # And makes a streamed forced call, then sends the result back
    with sdk.chat.completions.stream(
        model=model,
        messages=QUESTION,
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=0,
        max_tokens=60,
    ) as events:
        completion = events.get_final_completion()
    call = (completion.choices[0].message.tool_calls or [])[0]
    assert completion.choices[0].finish_reason == "tool_calls"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])
    final = _final_answer(sdk, model, call, "21 degrees and sunny", stream=False)
    assert final.choices[0].message.content


def test_on_the_shared_stack_a_small_structured_answer(tmp_path: Any) -> None:
    # Given the shared local stack (its generator answers in at most 16 tokens)
    url = shared_stack().functions["llama"].url.rstrip("/")
    sdk = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)

    class Verdict(BaseModel):
        ok: bool

    parsed = sdk.chat.completions.parse(
        model=sdk.models.list().data[0].id,
        messages=[{"role": "user", "content": "Are llamas camelids?"}],
        response_format=Verdict,
        temperature=0,
        max_tokens=16,
    )
    assert isinstance(parsed.choices[0].message.parsed, Verdict)


# ------------------------------------------------------------------ the grammar sampler


def test_grammar_sampling_checks_the_chosen_token_first_and_decodes_as_the_chain_would(
    handler: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a constrained greedy request, answered by the generator's own grammar sampler
    from llama_app.engine import GrammarCheckingLlama, _GrammarCheckedSampler

    llm = handler.engine.llm
    assert isinstance(llm, GrammarCheckingLlama)
    body = {"messages": QUESTION, "json_schema": RECORD_SCHEMA, "temperature": 0, "max_tokens": 400}
    fast = handler.app.lambda_handler(dict(body), FakeContext())
    assert isinstance(llm._sampler, _GrammarCheckedSampler)  # the override still applies
    # When llama-cpp-python's own chain (grammar over the whole vocabulary) answers the same request
    monkeypatch.setattr(llm, "_init_sampler", functools.partial(llama_cpp.Llama._init_sampler, llm))
    chain = handler.app.lambda_handler(dict(body), FakeContext())
    # Then both decoded the same tokens, valid against the schema
    assert fast["text"] == chain["text"]
    assert fast["usage"] == chain["usage"]
    jsonschema.validate(json.loads(fast["text"]), RECORD_SCHEMA)
