"""Request and response bodies of every route, as pydantic models.

Requests are strict (JSON types must match: ``"1"`` is not a number) and
refuse unknown fields, so a misspelt parameter is a 400 naming it instead of a
silently ignored setting. Every string has a length bound (which also refuses
lone UTF-16 surrogates). Sampling defaults are llama.cpp's (temperature 0.8,
top_p 0.95, top_k 40, min_p 0.05, repeat_penalty 1.0).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from lambda_common.lifecycle import StartKind

FinishReason = Literal["stop", "length", "deadline"]
"""Why generation ended: a stop condition (end of turn, a stop string), the token
budget or the context window, or the invocation's deadline."""

OpenAIFinishReason = Literal["stop", "length"]

MAX_TEXT_CHARS = 6 * 1024 * 1024
"""A hard ceiling on one text field; the body size limit and the context window come first."""

StopString = Annotated[str, StringConstraints(min_length=1, max_length=500)]
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS)]
Name = Annotated[str, StringConstraints(max_length=256)]


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


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant"]
    content: Text | list[TextPart]
    name: Name | None = None

    def text(self) -> str:
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

    @model_validator(mode="after")
    def _one_input(self) -> DirectRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt and messages")
        if self.n_generate is not None and self.max_tokens is not None:
            raise ValueError("give n-generate or max_tokens, not both")
        return self

    def requested_tokens(self) -> int | None:
        return self.n_generate if self.n_generate is not None else self.max_tokens


class StreamOptions(_Request):
    include_usage: bool = False


class _OpenAIRequest(Sampling):
    model: Name | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=1, description="Only one choice per request.")
    user: Name | None = Field(default=None, description="Accepted for compatibility; not used.")


class CompletionRequest(_OpenAIRequest):
    """POST /v1/completions (OpenAI legacy completions)."""

    prompt: (
        Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT_CHARS)]
        | list[Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT_CHARS)]]
    )

    @model_validator(mode="after")
    def _one_prompt(self) -> CompletionRequest:
        if isinstance(self.prompt, list) and len(self.prompt) != 1:
            raise ValueError(f"prompt: give one prompt per request, got {len(self.prompt)}")
        return self

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class ChatCompletionRequest(_OpenAIRequest):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(
        default=None, ge=1, description="OpenAI's newer name for max_tokens."
    )

    @model_validator(mode="after")
    def _one_budget(self) -> ChatCompletionRequest:
        if self.max_completion_tokens is not None and self.max_tokens is not None:
            raise ValueError("give max_tokens or max_completion_tokens, not both")
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


class CompletionChoice(BaseModel):
    text: str
    index: int = 0
    logprobs: None = None
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


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: None = None
    finish_reason: OpenAIFinishReason
    deadline_reached: bool = False


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    timings: Timings


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChunkDelta
    logprobs: None = None
    finish_reason: OpenAIFinishReason | None = None
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
