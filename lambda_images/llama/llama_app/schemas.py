"""Request and response bodies of every route, as pydantic models.

Requests are strict (JSON types must match: ``"1"`` is not a number) and
refuse unknown fields, so a misspelt parameter is a 400 naming it instead of a
silently ignored setting. Every string has a length bound (which also refuses
lone UTF-16 surrogates). Sampling defaults are llama.cpp's (temperature 0.8,
top_p 0.95, top_k 40, min_p 0.05, repeat_penalty 1.0).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from lambda_common.lifecycle import StartKind
from llama_app.structured import MAX_GRAMMAR_CHARS
from llama_app.tools import MAX_TOOLS, NAME_PATTERN

FinishReason = Literal["stop", "length", "deadline"]
"""Why generation ended: a stop condition (end of turn, a stop string), the token
budget or the context window, or the invocation's deadline."""

OpenAIFinishReason = Literal["stop", "length"]
ChatFinishReason = Literal["stop", "length", "tool_calls"]

MAX_TEXT_CHARS = 6 * 1024 * 1024
"""A hard ceiling on one text field; the body size limit and the context window come first."""

StopString = Annotated[str, StringConstraints(min_length=1, max_length=500)]
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS)]
Name = Annotated[str, StringConstraints(max_length=256)]
ToolName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
"""A function or schema name as OpenAI allows it: 1-64 letters, digits, ``_`` or ``-``."""
MetadataKey = Annotated[str, StringConstraints(max_length=64)]
MetadataValue = Annotated[str, StringConstraints(max_length=512)]
Grammar = Annotated[str, StringConstraints(min_length=1, max_length=MAX_GRAMMAR_CHARS)]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=False)


class Sampling(_Request):
    """Generation parameters shared by the direct payload and the OpenAI routes."""

    max_tokens: int | None = Field(default=None, ge=1, description="Tokens to generate at most.")
    temperature: float = Field(default=0.8, ge=0, le=2, description="0 picks the most likely token (greedy).")
    top_p: float = Field(default=0.95, ge=0, le=1)
    top_k: int = Field(default=40, ge=0, le=1_000_000, description="0 disables top-k.")
    min_p: float = Field(default=0.05, ge=0, le=1)
    repeat_penalty: float = Field(default=1.0, gt=0, le=10)
    presence_penalty: float = Field(default=0.0, ge=-2, le=2)
    frequency_penalty: float = Field(default=0.0, ge=-2, le=2)
    stop: StopString | list[StopString] | None = Field(default=None, description="Up to 8 stop strings.")
    seed: int | None = Field(
        default=None, ge=0, le=2**32 - 1, description="Fixes sampling; unset: random per request."
    )

    @model_validator(mode="after")
    def _few_stops(self) -> Sampling:
        if isinstance(self.stop, list) and len(self.stop) > 8:
            raise ValueError(f"stop: at most 8 stop strings, got {len(self.stop)}")
        return self

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class TextPart(_Request):
    type: Literal["text"]
    text: Text


def _unsupported(message: str) -> PydanticCustomError:
    return PydanticCustomError("unsupported", message)


class FunctionCallIn(_Request):
    """A function call the assistant made earlier in the conversation."""

    name: ToolName
    arguments: Text = Field(
        description="The arguments as a JSON object in a string, as OpenAI returned them."
    )

    @field_validator("arguments")
    @classmethod
    def _json_object(cls, value: str) -> str:
        try:
            decoded = json.loads(value)
        except json.JSONDecodeError:
            raise _unsupported("the arguments must be a JSON object in a string") from None
        if not isinstance(decoded, dict):
            raise _unsupported("the arguments must be a JSON object in a string")
        return value


class ToolCallIn(_Request):
    id: Name
    type: Literal["function"]
    function: FunctionCallIn


class ChatMessage(_Request):
    """One message of a conversation, as OpenAI's chat API takes it (text content only)."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Text | list[TextPart] | None = Field(
        default=None, description="Text, or text parts; null only for an assistant message with tool_calls."
    )
    name: Name | None = None
    tool_calls: list[ToolCallIn] | None = Field(
        default=None, max_length=64, description="Calls an assistant message made (assistant only)."
    )
    tool_call_id: Name | None = Field(
        default=None, description="The call a tool message answers (tool only)."
    )
    refusal: Text | None = Field(
        default=None, description="Accepted on assistant messages; not sent to the model."
    )

    @model_validator(mode="before")
    @classmethod
    def _text_parts_only(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("content"), list):
            for index, part in enumerate(data["content"]):
                kind = part.get("type") if isinstance(part, dict) else None
                if isinstance(kind, str) and kind != "text":
                    raise _unsupported(
                        f"content[{index}] is a {kind[:40]} part; this model reads text only "
                        "(send text parts or a string)"
                    )
        return data

    @model_validator(mode="after")
    def _roles(self) -> ChatMessage:
        if self.tool_calls is not None and self.role != "assistant":
            raise _unsupported(f"tool_calls is for assistant messages, not {self.role}")
        if self.role == "tool" and self.tool_call_id is None:
            raise _unsupported("a tool message needs tool_call_id, the id of the call it answers")
        if self.tool_call_id is not None and self.role != "tool":
            raise _unsupported(f"tool_call_id is for tool messages, not {self.role}")
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise _unsupported(
                "content is required (it may be null only on an assistant message with tool_calls)"
            )
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class DirectRequest(Sampling):
    """The payload of ``aws lambda invoke`` and of ``POST /`` (llama.cpp style).

    ``{"prompt": "llamas are", "n-generate": 1}`` generates exactly one token.
    Give ``prompt`` (plain completion) or ``messages`` (chat, rendered with the
    model's own chat template), not both.
    """

    prompt: Text | None = Field(default=None, min_length=1)
    messages: list[ChatMessage] | None = Field(default=None, min_length=1)
    n_generate: int | None = Field(default=None, alias="n-generate", ge=1, description="Tokens to generate.")
    model: Name | None = None
    stream: bool = Field(
        default=False,
        description="Stream server-sent events as tokens are generated (as llama.cpp server's /completion).",
    )
    json_schema: dict[str, Any] | None = Field(
        default=None, description="llama.cpp's: constrain the answer to JSON valid against this JSON Schema."
    )
    grammar: Grammar | None = Field(
        default=None, description="llama.cpp's: constrain the answer to a GBNF grammar."
    )

    @model_validator(mode="after")
    def _one_input(self) -> DirectRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt and messages")
        if self.n_generate is not None and self.max_tokens is not None:
            raise ValueError("give n-generate or max_tokens, not both")
        if self.json_schema is not None and self.grammar is not None:
            raise _unsupported("give json_schema or grammar, not both")
        if self.messages is not None and any(m.tool_calls or m.role == "tool" for m in self.messages):
            raise _unsupported("tool calls and tool messages are for POST /v1/chat/completions")
        return self

    def requested_tokens(self) -> int | None:
        return self.n_generate if self.n_generate is not None else self.max_tokens


class StreamOptions(_Request):
    include_usage: bool = False
    include_obfuscation: bool | None = Field(default=None, description="Accepted; no obfuscation is added.")


class _OpenAIRequest(Sampling):
    model: Name | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, description="Only one choice per request: 1.")
    user: Name | None = Field(default=None, description="Accepted for compatibility; not used.")
    logit_bias: dict[Name, int] | None = Field(
        default=None, max_length=300, description="Refused unless empty: token biases are not applied."
    )

    @model_validator(mode="before")
    @classmethod
    def _null_is_default(cls, data: Any) -> Any:
        # OpenAI clients send null for "not set"; here null means the default.
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int) -> int:
        if value != 1:
            raise _unsupported(f"only one choice per request is generated; n={value} is not supported")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _no_bias(cls, value: dict[str, int] | None) -> dict[str, int] | None:
        if value:
            raise _unsupported("token biases are not applied by this function; send no logit_bias")
        return value


class CompletionRequest(_OpenAIRequest):
    """POST /v1/completions (OpenAI legacy completions)."""

    prompt: (
        Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT_CHARS)]
        | list[Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT_CHARS)]]
    )
    logprobs: int | None = Field(
        default=None,
        ge=0,
        le=20,
        description="Log probabilities of each token and of this many alternatives.",
    )
    echo: bool = Field(default=False, description="Only false: the prompt is not repeated.")
    suffix: Name | None = Field(default=None, description="Refused: insertion is not supported.")
    best_of: int = Field(default=1, ge=1, description="Only 1.")
    json_schema: dict[str, Any] | None = Field(
        default=None, description="llama.cpp's: constrain the answer to JSON valid against this JSON Schema."
    )
    grammar: Grammar | None = Field(
        default=None, description="llama.cpp's: constrain the answer to a GBNF grammar."
    )

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, value: bool) -> bool:
        if value:
            raise _unsupported("echo is not supported: the answer holds the generated text only")
        return value

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, value: str | None) -> str | None:
        raise _unsupported("suffix (insertion) is not supported by this model")

    @field_validator("best_of")
    @classmethod
    def _one_best(cls, value: int) -> int:
        if value != 1:
            raise _unsupported(f"best_of={value} is not supported: one generation per request")
        return value

    @model_validator(mode="after")
    def _one_prompt(self) -> CompletionRequest:
        if isinstance(self.prompt, list) and len(self.prompt) != 1:
            raise ValueError(f"prompt: give one prompt per request, got {len(self.prompt)}")
        if self.json_schema is not None and self.grammar is not None:
            raise _unsupported("give json_schema or grammar, not both")
        return self

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class FunctionDefinition(_Request):
    name: ToolName
    description: Annotated[str, StringConstraints(max_length=8192)] | None = None
    parameters: dict[str, Any] | None = Field(
        default=None, description="A JSON Schema object (type object); absent: no parameters."
    )
    strict: bool | None = Field(default=None, description="Accepted: the arguments always follow the schema.")


class ToolDefinition(_Request):
    type: Literal["function"] = Field(description="Only function tools (custom tools are refused).")
    function: FunctionDefinition


class FunctionName(_Request):
    name: ToolName


class NamedToolChoice(_Request):
    type: Literal["function"]
    function: FunctionName


class AllowedTools(_Request):
    mode: Literal["auto", "required"]
    tools: list[NamedToolChoice] = Field(min_length=1, max_length=MAX_TOOLS)


class AllowedToolsChoice(_Request):
    type: Literal["allowed_tools"]
    allowed_tools: AllowedTools


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice | AllowedToolsChoice


class ResponseFormatText(_Request):
    type: Literal["text"]


class ResponseFormatJsonObject(_Request):
    type: Literal["json_object"]


class JsonSchemaFormat(_Request):
    name: ToolName
    description: Annotated[str, StringConstraints(max_length=8192)] | None = None
    schema_: dict[str, Any] = Field(alias="schema", description="The JSON Schema the answer follows.")
    strict: bool | None = Field(default=None, description="Accepted: the answer always follows the schema.")


class ResponseFormatJsonSchema(_Request):
    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat


ResponseFormat = Annotated[
    ResponseFormatText | ResponseFormatJsonObject | ResponseFormatJsonSchema, Field(discriminator="type")
]


class Prediction(_Request):
    type: Literal["content"]
    content: Text | list[TextPart]


REFUSED_CHAT_FIELDS: dict[str, str] = {
    "audio": "audio output is not supported: this model writes text",
    "functions": "functions is the deprecated form of tools; send tools",
    "function_call": "function_call is the deprecated form of tool_choice; send tool_choice",
    "web_search_options": "web search is not available to this model",
    "verbosity": "verbosity cannot be honoured by this model; steer length with max_tokens",
    "moderation": "moderation is not run by this function",
}
"""Chat fields that would change what the answer means: any value is a 400 with this reason."""


class ChatCompletionRequest(_OpenAIRequest):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(
        default=None, ge=1, description="OpenAI's newer name for max_tokens."
    )
    response_format: ResponseFormat | None = Field(
        default=None,
        description="text, json_object, or json_schema: the answer follows the schema (enforced).",
    )
    tools: list[ToolDefinition] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: ToolChoice | None = Field(
        default=None, description="none, auto (the default with tools), required, or a named function."
    )
    parallel_tool_calls: bool = Field(default=True, description="Allow up to 8 calls in one answer.")
    logprobs: bool = Field(default=False, description="Return each generated token's log probability.")
    top_logprobs: int | None = Field(default=None, ge=0, le=20, description="Alternatives per token (0-20).")
    # Accepted and ignored: they cannot change the answer.
    metadata: dict[MetadataKey, MetadataValue] | None = Field(
        default=None, max_length=16, description="Accepted; not stored."
    )
    store: bool | None = Field(default=None, description="Accepted; nothing is stored.")
    service_tier: Literal["auto", "default", "flex", "scale", "priority", "fast"] | None = Field(
        default=None, description="Accepted; there is one tier."
    )
    safety_identifier: Name | None = Field(default=None, description="Accepted; not used.")
    prompt_cache_key: Name | None = Field(
        default=None, description="Accepted; the prompt prefix is cached per environment anyway."
    )
    prompt_cache_retention: Literal["in_memory", "24h"] | None = Field(default=None, description="Accepted.")
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = Field(
        default=None, description="Accepted; the model does not reason before answering."
    )
    prediction: Prediction | None = Field(default=None, description="Accepted; a latency hint, not used.")
    modalities: list[Literal["text", "audio"]] | None = Field(
        default=None, max_length=2, description='Only ["text"].'
    )
    # Refused: they would change the answer in ways this function cannot honour.
    audio: dict[Name, Name] | None = Field(
        default=None, max_length=8, description="Refused: no audio output."
    )
    functions: list[dict[Name, Any]] | None = Field(
        default=None, max_length=MAX_TOOLS, description="Refused: the deprecated form of tools; send tools."
    )
    function_call: Name | dict[Name, Name] | None = Field(
        default=None, description="Refused: the deprecated form of tool_choice; send tool_choice."
    )
    web_search_options: dict[Name, Any] | None = Field(default=None, description="Refused: no web search.")
    verbosity: Literal["low", "medium", "high"] | None = Field(
        default=None, description="Refused: the answer's length is not steered this way; use max_tokens."
    )
    moderation: dict[Name, Any] | None = Field(default=None, description="Refused: no moderation is run.")

    @field_validator("modalities")
    @classmethod
    def _text_only(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and value != ["text"]:
            raise _unsupported('only text output is generated; send modalities ["text"] or none')
        return value

    @field_validator(*REFUSED_CHAT_FIELDS)
    @classmethod
    def _refused(cls, value: Any, info: ValidationInfo) -> Any:
        raise _unsupported(REFUSED_CHAT_FIELDS[str(info.field_name)])

    @model_validator(mode="after")
    def _consistent(self) -> ChatCompletionRequest:
        if self.max_completion_tokens is not None and self.max_tokens is not None:
            raise ValueError("give max_tokens or max_completion_tokens, not both")
        if self.top_logprobs is not None and not self.logprobs:
            raise _unsupported("top_logprobs needs logprobs: true")
        if self.tool_choice is not None and self.tool_choice != "none" and not self.tools:
            raise _unsupported("tool_choice needs tools")
        return self

    def requested_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class TokenizeRequest(_Request):
    """POST /tokenize (llama.cpp server)."""

    content: Text
    add_special: bool = False
    parse_special: bool = True
    with_pieces: bool = False


class DetokenizeRequest(_Request):
    """POST /detokenize (llama.cpp server)."""

    tokens: list[int] = Field(max_length=1_000_000)


# ---------------------------------------------------------------- responses


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Timings(BaseModel):
    """Wall-clock timings of one generation, named as llama.cpp server names them.

    ``prompt_ms`` runs from the call to the first generated token (prompt
    processing: time to first token); ``predicted_ms`` from the first to the
    last generated token, and ``predicted_per_second`` is the decode speed
    over that span (null with fewer than two tokens).
    """

    cold_start: bool = Field(
        description="This invocation was the first of its environment (a cold start or a SnapStart restore)."
    )
    start: StartKind = Field(
        description="cold: the environment ran the init (imports, model load) for this request; restored: it "
        "was restored from a SnapStart snapshot; warm: an earlier request paid for it."
    )
    init_ms: float | None = Field(description="Init time (imports + model load) on a cold start, else null.")
    restore_ms: float | None = Field(
        default=None,
        description="Time of the after-restore hooks on the first request after a restore, else null.",
    )
    prompt_n: int
    prompt_ms: float
    prompt_per_second: float | None
    predicted_n: int
    predicted_ms: float
    predicted_per_second: float | None
    total_ms: float


class DirectResponse(BaseModel):
    """Answer to a direct invoke and to ``POST /``."""

    model: str
    text: str = Field(description="The generated text only (the prompt is not repeated).")
    finish_reason: FinishReason
    usage: Usage
    timings: Timings


class CompletionLogprobs(BaseModel):
    """OpenAI's legacy log probabilities (``logprobs: N`` on /v1/completions)."""

    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]] = Field(
        description="The N likeliest tokens at each position and their log probabilities."
    )
    text_offset: list[int] = Field(
        description="Where each token starts, in characters, counting from the start of the prompt."
    )


class CompletionChoice(BaseModel):
    text: str
    index: int = 0
    logprobs: CompletionLogprobs | None = None
    finish_reason: OpenAIFinishReason | None
    deadline_reached: bool = Field(
        default=False,
        description="Extension: generation stopped early at the Lambda deadline (finish_reason is length).",
    )


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    timings: Timings | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprobOut(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(
        description="The likeliest tokens at this position (top_logprobs)."
    )


class ChoiceLogprobs(BaseModel):
    """OpenAI's chat log probabilities: one entry per generated token of the content."""

    content: list[TokenLogprobOut] | None
    refusal: list[TokenLogprobOut] | None = None


class FunctionCallOut(BaseModel):
    name: str
    arguments: str = Field(description="The arguments as a JSON object in a string; they follow the schema.")


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallOut


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: str | None = None
    tool_calls: list[ToolCallOut] | None = None


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: ChatFinishReason
    deadline_reached: bool = False


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    timings: Timings


class FunctionCallDelta(BaseModel):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(BaseModel):
    """A piece of a streamed tool call: id, type and name come first, then argument fragments."""

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCallDelta


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChunkDelta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: ChatFinishReason | None = None
    deadline_reached: bool | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    timings: Timings | None = None


class TokenPiece(BaseModel):
    id: int
    piece: str | list[int] = Field(
        description="The token's text, or its bytes when they are not valid UTF-8."
    )


class TokenizeResponse(BaseModel):
    tokens: list[int] | list[TokenPiece]


class DetokenizeResponse(BaseModel):
    content: str


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"
    model: str


class DirectStreamEvent(BaseModel):
    """One server-sent event of ``POST /`` (and a direct invoke) with ``stream: true``.

    As llama.cpp server's ``/completion`` streams them: ``content`` is the next
    piece of text, ``stop`` is true on the last event, which carries the finish
    reason, the usage and the timings.
    """

    content: str
    stop: bool
    model: str | None = None
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    timings: Timings | None = None
