"""The embedding service's core, shared by every route, by direct invokes and by the batch job.

Order of work for a request: cheap checks first (count, characters, the
estimated response size against Lambda's 6 MB limit), then tokenization
(token limit, truncation), then the time the work needs against the time the
invocation has left, then the backend (which looks at the deadline again
between runs), then dimensions and normalization. Every refusal is a domain
error (lambda_common.errors) raised before compute starts, or, when the
deadline comes part-way, instead of a partial answer.
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

from embedder.backends import Backend, Batch, Stopped
from embedder.pooling import l2_normalize
from embedder.prompts import PromptTable, UnknownPrompt
from embedder.settings import Settings
from embedder.tokenization import Direction, InputTooLong, PromptTooLong, Token
from lambda_common.deadline import Deadline
from lambda_common.errors import EmptyInput, InternalError, InvalidRequest, NotEnoughTime, TooLarge

Encoding = Literal["float", "base64"]

FLOAT_DECIMALS = 9
"""JSON floats are rounded to 9 decimal places: absolute error at most 5e-10,
below float32's resolution for typical components; base64 carries exact float32."""
FLOAT_BYTES = 18
"""Upper bound of one JSON number with its comma at 9 decimals, for |value| < 1e6."""

TOKEN_BYTES = 80
"""Upper bound of one /tokenize token object without its text (ids, flags, offsets, punctuation)."""
TIME_SAFETY = 1.5
"""Work is refused up front when it needs more than the time left divided by this."""


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
    @classmethod
    def from_settings(cls, settings: Settings, threads: int) -> EmbeddingService:
        """The backend and model the settings name, with their prompt table (what both entry points load)."""
        from embedder.backends import load_backend

        backend = load_backend(
            settings.backend,
            settings.model_dir,
            threads=threads,
            max_batch_tokens=settings.batch_tokens(threads),
            batch_size=settings.batch_size,
        )
        model_id = settings.model_id or backend.info.model_id or settings.model_dir.name
        prompts = PromptTable.resolve(
            model_id,
            declared=backend.info.declared_prompts,
            declared_default=backend.info.declared_default_prompt,
            environment=settings.prompts,
            environment_default=settings.default_prompt_name,
        )
        return cls(backend, settings, model_id, prompts)

    def __init__(self, backend: Backend, settings: Settings, model_id: str, prompts: PromptTable) -> None:
        self.backend = backend
        self.settings = settings
        self.model_id = model_id
        self.prompts = prompts
        self.info = backend.info
        self.tokens_per_s: float | None = None
        """Measured embedding speed (warm-up at init, then a running average), for the time check."""

    # -- checks that cost nothing -------------------------------------------------

    def _texts(self, inputs: str | Sequence[str]) -> list[str]:
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        if not texts:
            raise EmptyInput("inputs must not be empty: send a string or a non-empty list of strings")
        if len(texts) > self.settings.max_inputs:
            raise TooLarge(
                f"{len(texts)} inputs in one request; the limit is {self.settings.max_inputs}: "
                "split the batch into several requests"
            )
        for index, text in enumerate(texts):
            if not text:
                raise EmptyInput(f"input {index} is an empty string; every input needs text")
            if len(text) > self.settings.max_input_chars:
                raise TooLarge(
                    f"input {index} has {len(text)} characters; the limit is "
                    f"{self.settings.max_input_chars} characters per input"
                )
        return texts

    def output_dimensions(self, dimensions: int | None) -> int:
        model_dimensions = self.info.dimension
        if dimensions is None:
            return model_dimensions
        if not 1 <= dimensions <= model_dimensions:
            raise InvalidRequest(
                f"dimensions must be between 1 and {model_dimensions} for this model, got {dimensions}",
                param="dimensions",
            )
        return dimensions

    def _check_response_size(self, count: int, dimensions: int, shape: ResponseShape) -> None:
        per_item = vector_bytes(dimensions, shape.encoding) + shape.per_item
        limit = self.settings.max_response_bytes
        estimate = shape.fixed + count * per_item
        if estimate > limit:
            fit = max(0, (limit - shape.fixed) // per_item)
            raise TooLarge(
                f"the response for {count} inputs of {dimensions} dimensions ({shape.encoding}) could reach "
                f"{estimate} bytes, over the {limit}-byte limit of a Lambda response; send at most {fit} "
                "inputs per request"
                + (", or ask for encoding_format=base64" if shape.encoding == "float" else "")
                + ", or fewer dimensions"
            )

    def prompt(self, name: str | None) -> str:
        try:
            return self.prompts.text(name)
        except UnknownPrompt as exc:
            raise InvalidRequest(str(exc), param="prompt_name", code="unknown_prompt") from None

    # -- the work -------------------------------------------------------------------

    def embed(
        self,
        inputs: str | Sequence[str],
        options: EmbedOptions,
        shape: ResponseShape | None = None,
        deadline: Deadline | None = None,
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
            raise TooLarge(
                f"input {exc.index} is {exc.tokens} tokens long"
                + (" with the prompt" if prompt else "")
                + f"; this model takes at most {exc.limit} tokens: shorten it or send truncate=true"
            ) from None
        except PromptTooLong as exc:
            raise InvalidRequest(str(exc), param="prompt_name") from None
        prompt_length = None
        if prompt and not self.info.include_prompt:
            prompt_length = tokenizer.prompt_length(prompt)
        tokenized = time.perf_counter()
        tokens = sum(fitted.token_counts)
        self._check_time(tokens, len(texts), deadline)

        stop = deadline.passed if deadline is not None and deadline.at is not None else None
        try:
            vectors = self.backend.embed(Batch(fitted.texts, prompt, fitted.encodings, prompt_length), stop)
        except Stopped as exc:
            raise NotEnoughTime(
                f"the invocation's deadline came after {exc.done} of {exc.total} inputs; nothing is "
                "returned: send fewer inputs per request, or raise the function timeout"
            ) from None
        inferred = time.perf_counter()
        if not np.all(np.isfinite(vectors)):
            raise InternalError("the model produced non-finite values", code="backend")
        self._learn_speed(tokens, inferred - tokenized)
        if dimensions < vectors.shape[1]:
            vectors = np.ascontiguousarray(vectors[:, :dimensions])
        if options.normalize:
            vectors = l2_normalize(vectors)
        return Embedded(
            vectors=vectors,
            tokens=tokens,
            characters=sum(len(text) for text in texts),
            truncated=fitted.truncated,
            tokenization_s=tokenized - started,
            inference_s=inferred - tokenized,
            total_s=time.perf_counter() - started,
        )

    def _learn_speed(self, tokens: int, seconds: float) -> None:
        """Keep a running estimate of tokens per second from requests big enough to say."""
        if tokens >= 64 and seconds > 0:
            observed = tokens / seconds
            self.tokens_per_s = (
                observed if self.tokens_per_s is None else 0.7 * self.tokens_per_s + 0.3 * observed
            )

    def _check_time(self, tokens: int, count: int, deadline: Deadline | None) -> None:
        """Refuse, before any compute, work that cannot finish in the time the invocation has left."""
        left = deadline.remaining_s() if deadline is not None else None
        if left is None or self.tokens_per_s is None:
            return
        needed = tokens / self.tokens_per_s
        if needed * TIME_SAFETY <= left:
            return
        fit = max(0, int(count * left / (needed * TIME_SAFETY)))
        raise NotEnoughTime(
            f"{count} inputs ({tokens} tokens) need about {needed:.1f} s of compute here; the invocation has "
            f"{max(left, 0):.1f} s left: send at most {fit} inputs per request, or raise the function timeout"
        )

    def tokenize(
        self, inputs: str | Sequence[str], *, add_special_tokens: bool, prompt_name: str | None
    ) -> list[list[Token]]:
        """TEI's /tokenize rows; refused before the rows are built when they cannot fit a response."""
        texts = self._texts(inputs)
        prompt = self.prompt(prompt_name)
        tokenizer = self.backend.tokenizer
        encodings = [
            tokenizer.encode_for_tokens(t, prompt, add_special_tokens=add_special_tokens) for t in texts
        ]
        # Each token is an object of about TOKEN_BYTES bytes plus its text, which is at most the
        # input's own text again (twice for JSON escapes): a bound known before any row is built.
        count = sum(len(encoding.ids) for encoding in encodings)
        estimate = count * TOKEN_BYTES + sum(2 * len((prompt + text).encode()) for text in texts)
        limit = self.settings.max_response_bytes
        if estimate > limit:
            raise TooLarge(
                f"the {count} tokens of these inputs could make a {estimate}-byte response, over the "
                f"{limit}-byte limit of a Lambda response; send fewer or shorter inputs"
            )
        return [
            tokenizer.tokens(encoding, prompt + text) for encoding, text in zip(encodings, texts, strict=True)
        ]

    def accepts_model(self, name: str) -> bool:
        """OpenAI's `model`: the model id, its last path part, or a configured alias."""
        names = {self.model_id, self.model_id.rsplit("/", 1)[-1], *self.settings.aliases()}
        return name in names

    def warm_up(self) -> None:
        """One real request: no one-time work is left for the first caller, and the speed is known.

        The online function runs it before a SnapStart snapshot (every restored copy starts warm,
        with the speed for the time check); the batch function at init (its first batch is planned
        with a known speed). An on-demand online init skips it: its first request learns the speed.
        """
        text = ("The quick brown fox jumps over the lazy dog near the quiet river bank. " * 4).strip()
        count = min(8, self.settings.max_inputs)
        self.embed([text[: self.settings.max_input_chars]] * count, EmbedOptions(truncate=True))

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
