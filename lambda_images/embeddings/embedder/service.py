"""The embedding service's core, shared by every route and by direct invokes.

Order of work for a request: cheap checks first (count, characters, the
estimated response size against Lambda's 6 MB limit), then tokenization
(token limit, truncation), then the backend, then dimensions and
normalization. Every refusal is an ApiError raised before compute starts.
"""

from __future__ import annotations

import base64
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from embedder.backends import Backend, Batch
from embedder.pooling import l2_normalize
from embedder.prompts import PromptTable, UnknownPrompt
from embedder.settings import Settings
from embedder.tokenization import Direction, InputTooLong, PromptTooLong, Token
from lambda_common.http import ApiError

Encoding = Literal["float", "base64"]

FLOAT_DECIMALS = 9
"""JSON floats are rounded to 9 decimal places: absolute error at most 5e-10,
below float32's resolution for typical components; base64 carries exact float32."""
FLOAT_BYTES = 18
"""Upper bound of one JSON number with its comma at 9 decimals, for |value| < 1e6."""

# Error codes, mapped to TEI's error_type and OpenAI's code by the handler.
EMPTY = "empty"
INVALID = "invalid_value"
TOO_LARGE = "too_large"
UNKNOWN_PROMPT = "unknown_prompt"


@dataclass(frozen=True)
class EmbedOptions:
    normalize: bool = True
    truncate: bool = False
    truncation_direction: Direction = "Right"
    prompt_name: str | None = None
    dimensions: int | None = None


@dataclass(frozen=True)
class ResponseShape:
    """How a route wraps vectors, to estimate the response size before computing it."""

    encoding: Encoding = "float"
    per_item: int = 8
    fixed: int = 2048


@dataclass(frozen=True)
class Embedded:
    vectors: npt.NDArray[np.float32]
    tokens: int
    characters: int
    truncated: int
    tokenization_s: float
    inference_s: float
    total_s: float

    def headers(self, compute_type: str) -> dict[str, str]:
        """TEI's timing headers (milliseconds, as TEI sends them)."""

        def ms(seconds: float) -> str:
            return str(round(seconds * 1000))

        return {
            "x-compute-type": compute_type,
            "x-compute-time": ms(self.total_s),
            "x-total-time": ms(self.total_s),
            "x-tokenization-time": ms(self.tokenization_s),
            "x-queue-time": "0",
            "x-inference-time": ms(self.inference_s),
            "x-compute-tokens": str(self.tokens),
            "x-compute-characters": str(self.characters),
        }


def vector_bytes(dimensions: int, encoding: Encoding) -> int:
    """Upper bound of one serialized vector, brackets or quotes included."""
    if encoding == "base64":
        return 4 * math.ceil(4 * dimensions / 3) + 2
    return FLOAT_BYTES * dimensions + 2


def as_json_floats(vectors: npt.NDArray[np.float32]) -> list[list[float]]:
    return np.round(vectors.astype(np.float64), FLOAT_DECIMALS).tolist()  # type: ignore[no-any-return]


def as_base64(vector: npt.NDArray[np.float32]) -> str:
    """Little-endian float32 bytes, base64: what OpenAI's encoding_format=base64 returns."""
    return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")


class EmbeddingService:
    def __init__(self, backend: Backend, settings: Settings, model_id: str, prompts: PromptTable) -> None:
        self.backend = backend
        self.settings = settings
        self.model_id = model_id
        self.prompts = prompts
        self.info = backend.info

    # -- checks that cost nothing -------------------------------------------------

    def _texts(self, inputs: str | Sequence[str]) -> list[str]:
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        if not texts:
            raise ApiError(
                400, "inputs must not be empty: send a string or a non-empty list of strings", code=EMPTY
            )
        if len(texts) > self.settings.max_inputs:
            raise ApiError(
                413,
                f"{len(texts)} inputs in one request; the limit is {self.settings.max_inputs}: "
                "split the batch into several requests",
                code=TOO_LARGE,
            )
        for index, text in enumerate(texts):
            if not text:
                raise ApiError(400, f"input {index} is an empty string; every input needs text", code=EMPTY)
            if len(text) > self.settings.max_input_chars:
                raise ApiError(
                    413,
                    f"input {index} has {len(text)} characters; the limit is "
                    f"{self.settings.max_input_chars} characters per input",
                    code=TOO_LARGE,
                )
        return texts

    def output_dimensions(self, dimensions: int | None) -> int:
        model_dimensions = self.info.dimension
        if dimensions is None:
            return model_dimensions
        if not 1 <= dimensions <= model_dimensions:
            raise ApiError(
                422,
                f"dimensions must be between 1 and {model_dimensions} for this model, got {dimensions}",
                param="dimensions",
                code=INVALID,
            )
        return dimensions

    def _check_response_size(self, count: int, dimensions: int, shape: ResponseShape) -> None:
        per_item = vector_bytes(dimensions, shape.encoding) + shape.per_item
        limit = self.settings.max_response_bytes
        estimate = shape.fixed + count * per_item
        if estimate > limit:
            fit = max(0, (limit - shape.fixed) // per_item)
            raise ApiError(
                413,
                f"the response for {count} inputs of {dimensions} dimensions ({shape.encoding}) could reach "
                f"{estimate} bytes, over the {limit}-byte limit of a Lambda response; send at most {fit} "
                "inputs per request"
                + (", or ask for encoding_format=base64" if shape.encoding == "float" else "")
                + ", or fewer dimensions",
                code=TOO_LARGE,
            )

    def prompt(self, name: str | None) -> str:
        try:
            return self.prompts.text(name)
        except UnknownPrompt as exc:
            raise ApiError(422, str(exc), param="prompt_name", code=UNKNOWN_PROMPT) from None

    # -- the work -------------------------------------------------------------------

    def embed(
        self, inputs: str | Sequence[str], options: EmbedOptions, shape: ResponseShape | None = None
    ) -> Embedded:
        started = time.perf_counter()
        texts = self._texts(inputs)
        dimensions = self.output_dimensions(options.dimensions)
        self._check_response_size(len(texts), dimensions, shape or ResponseShape())
        prompt = self.prompt(options.prompt_name)

        tokenizer = self.backend.tokenizer
        try:
            fitted = tokenizer.fit(
                texts, prompt, truncate=options.truncate, direction=options.truncation_direction
            )
        except InputTooLong as exc:
            raise ApiError(
                413,
                f"input {exc.index} is {exc.tokens} tokens long"
                + (" with the prompt" if prompt else "")
                + f"; this model takes at most {exc.limit} tokens: shorten it or send truncate=true",
                code=TOO_LARGE,
            ) from None
        except PromptTooLong as exc:
            raise ApiError(422, str(exc), param="prompt_name", code=INVALID) from None
        prompt_length = None
        if prompt and not self.info.include_prompt:
            prompt_length = tokenizer.prompt_length(prompt)
        tokenized = time.perf_counter()

        vectors = self.backend.embed(Batch(fitted.texts, prompt, fitted.encodings, prompt_length))
        inferred = time.perf_counter()
        if not np.all(np.isfinite(vectors)):
            raise ApiError(500, "the model produced non-finite values", type="server_error", code="backend")
        if dimensions < vectors.shape[1]:
            vectors = np.ascontiguousarray(vectors[:, :dimensions])
        if options.normalize:
            vectors = l2_normalize(vectors)
        return Embedded(
            vectors=vectors,
            tokens=sum(fitted.token_counts),
            characters=sum(len(text) for text in texts),
            truncated=fitted.truncated,
            tokenization_s=tokenized - started,
            inference_s=inferred - tokenized,
            total_s=time.perf_counter() - started,
        )

    def tokenize(
        self, inputs: str | Sequence[str], *, add_special_tokens: bool, prompt_name: str | None
    ) -> list[list[Token]]:
        texts = self._texts(inputs)
        prompt = self.prompt(prompt_name)
        return [
            self.backend.tokenizer.tokens(text, prompt, add_special_tokens=add_special_tokens)
            for text in texts
        ]

    def accepts_model(self, name: str) -> bool:
        """OpenAI's `model`: the model id, its last path part, or a configured alias."""
        names = {self.model_id, self.model_id.rsplit("/", 1)[-1], *self.settings.aliases()}
        return name in names

    def describe(self, threads: int) -> dict[str, Any]:
        """TEI's /info fields, plus what this service adds (backend, prompts, limits)."""
        info = self.info
        return {
            "model_id": self.model_id,
            "model_sha": info.revision or self.settings.model_revision or None,
            "model_dtype": info.dtype,
            "model_type": {"embedding": {"pooling": info.pooling}},
            "max_concurrent_requests": 1,
            "max_input_length": info.max_seq_length,
            "max_batch_tokens": self.settings.batch_tokens(threads),
            "max_batch_requests": None,
            "max_client_batch_size": self.settings.max_inputs,
            "auto_truncate": self.settings.auto_truncate,
            "tokenization_workers": 1,
            "backend": self.backend.name,
            "dimensions": info.dimension,
            "model_normalizes": info.normalize,
            "prompts": self.prompts.prompts,
            "default_prompt_name": self.prompts.default_name,
            "prompts_source": self.prompts.source,
            "max_input_characters": self.settings.max_input_chars,
            "max_request_bytes": self.settings.max_body_bytes,
            "max_response_bytes": self.settings.max_response_bytes,
            "threads": threads,
            "details": info.details,
        }
