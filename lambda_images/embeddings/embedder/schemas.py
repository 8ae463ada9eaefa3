"""Request and response bodies, as pydantic models: TEI's /embed, /tokenize and /info, OpenAI's
/v1/embeddings.

Requests are strict (no "true" for true, no "5" for 5) and refuse unknown
fields, so a misspelt option is an error that names it rather than a silent
default. Every string has a length bound (the configured limits are checked by
the service; these are the hard ceilings), which also refuses lone surrogates.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, RootModel, StringConstraints
from pydantic_core import PydanticCustomError

MAX_TEXT_CHARS = 1_000_000
"""Hard ceiling of one input (MAX_INPUT_CHARS, 50,000 by default, is the configured limit)."""
MAX_TEXTS = 2048
"""Hard ceiling of inputs per request (MAX_INPUTS, 256 by default, is the configured limit)."""

Name = Annotated[str, StringConstraints(max_length=256)]
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS)]


def _is_token_ids(item: Any) -> bool:
    """An int (one token) or a list of ints (one tokenized input), as OpenAI's API allows."""
    if isinstance(item, list):
        return bool(item) and all(isinstance(i, int) and not isinstance(i, bool) for i in item)
    return isinstance(item, int) and not isinstance(item, bool)


def _valid_unicode(text: str, where: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise PydanticCustomError(
            "string_unicode",
            "{where} holds a lone UTF-16 surrogate; send valid Unicode text",
            {"where": where},
        ) from None
    return text


def _texts(value: Any) -> Any:
    """Accept a string or a list of strings; explain anything else in one sentence."""
    if isinstance(value, str):
        return _valid_unicode(value, "the text")
    if isinstance(value, list):
        if value and all(_is_token_ids(item) for item in value):
            raise PydanticCustomError(
                "token_ids",
                "token ids are not accepted; send the text itself (OpenAI clients that pre-tokenize, "
                "such as LangChain's OpenAIEmbeddings, need check_embedding_ctx_length=False)",
            )
        for index, item in enumerate(value):
            if isinstance(item, str):
                _valid_unicode(item, f"item {index}")
                continue
            raise PydanticCustomError(
                "input_type",
                "item {index} is {kind}; every input must be a string",
                {"index": index, "kind": type(item).__name__},
            )
        return value
    raise PydanticCustomError(
        "input_type", "must be a string or a list of strings, got {kind}", {"kind": type(value).__name__}
    )


def _direction(value: Any) -> Any:
    if isinstance(value, str) and value.lower() in ("left", "right"):
        return value.capitalize()
    return value


Texts = Annotated[Text | Annotated[list[Text], Field(max_length=MAX_TEXTS)], BeforeValidator(_texts)]
Direction = Annotated[Literal["Left", "Right"], BeforeValidator(_direction)]


class StrictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class EmbedRequest(StrictRequest):
    """TEI's POST /embed (also POST / and direct invoke)."""

    inputs: Texts
    normalize: bool = True
    truncate: bool | None = None
    truncation_direction: Direction = "Right"
    prompt_name: Name | None = None
    dimensions: int | None = Field(None, description="Keep the first N dimensions (Matryoshka-style).")


class TokenizeRequest(StrictRequest):
    """TEI's POST /tokenize."""

    inputs: Texts
    add_special_tokens: bool = True
    prompt_name: Name | None = None


class OpenAIEmbeddingsRequest(StrictRequest):
    """OpenAI's POST /v1/embeddings, plus two optional extensions: prompt_name and truncate."""

    input: Texts
    model: Name
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: Name | None = Field(None, description="Accepted for compatibility; not used.")
    prompt_name: Name | None = None
    truncate: bool | None = None


# ---------------------------------------------------------------- responses


class EmbedResponse(RootModel[list[list[float]]]):
    """TEI's /embed answer: one vector per input, in input order."""


class OpenAIEmbedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(description="Floats, or base64 of little-endian float32.")


class EmbeddingsUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class OpenAIEmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIEmbedding]
    model: str
    usage: EmbeddingsUsage


class TokenRow(BaseModel):
    id: int
    text: str
    special: bool
    start: int | None
    stop: int | None


class TokenizeResponse(RootModel[list[list[TokenRow]]]):
    """TEI's /tokenize answer: the tokens of each input."""


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"
    model_id: str
    backend: str


class InfoResponse(BaseModel):
    """TEI's /info fields, plus what this function adds (backend, prompts, limits)."""

    model_id: str
    model_sha: str | None
    model_dtype: str
    model_type: dict[str, dict[str, str]]
    max_concurrent_requests: int
    max_input_length: int
    max_batch_tokens: int
    max_batch_requests: int | None
    max_client_batch_size: int
    auto_truncate: bool
    tokenization_workers: int
    backend: str
    dimensions: int
    model_normalizes: bool
    prompts: dict[str, str]
    default_prompt_name: str | None
    prompts_source: str
    max_input_characters: int
    max_request_bytes: int
    max_response_bytes: int
    threads: int
    details: dict[str, Any]
