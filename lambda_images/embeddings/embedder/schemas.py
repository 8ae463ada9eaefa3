"""Request bodies, as pydantic models: TEI's /embed and /tokenize, OpenAI's /v1/embeddings.

Strict types (no "true" for true, no "5" for 5) and no unknown fields, so a
misspelt option is an error that names it rather than a silent default.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError


def _is_token_ids(item: Any) -> bool:
    """An int (one token) or a list of ints (one tokenized input), as OpenAI's API allows."""
    if isinstance(item, list):
        return bool(item) and all(isinstance(i, int) and not isinstance(i, bool) for i in item)
    return isinstance(item, int) and not isinstance(item, bool)


def _texts(value: Any) -> Any:
    """Accept a string or a list of strings; explain anything else in one sentence."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        if value and all(_is_token_ids(item) for item in value):
            raise PydanticCustomError(
                "token_ids",
                "token ids are not accepted; send the text itself (OpenAI clients that pre-tokenize, "
                "such as LangChain's OpenAIEmbeddings, need check_embedding_ctx_length=False)",
            )
        for index, item in enumerate(value):
            if isinstance(item, str):
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


Texts = Annotated[str | list[str], BeforeValidator(_texts)]
Direction = Annotated[Literal["Left", "Right"], BeforeValidator(_direction)]


class StrictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class EmbedRequest(StrictRequest):
    """TEI's POST /embed (also POST / and direct invoke)."""

    inputs: Texts
    normalize: bool = True
    truncate: bool | None = None
    truncation_direction: Direction = "Right"
    prompt_name: str | None = None
    dimensions: int | None = Field(None, description="Keep the first N dimensions (Matryoshka-style).")


class TokenizeRequest(StrictRequest):
    """TEI's POST /tokenize."""

    inputs: Texts
    add_special_tokens: bool = True
    prompt_name: str | None = None


class OpenAIEmbeddingsRequest(StrictRequest):
    """OpenAI's POST /v1/embeddings, plus two optional extensions: prompt_name and truncate."""

    input: Texts
    model: str
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None
    prompt_name: str | None = None
    truncate: bool | None = None
