"""The generation core: one llama.cpp model, loaded at init, shared by every route.

Routes hand it validated parameters and a deadline; it returns the generated
text with its finish reason, token counts and wall-clock timings, or raises
ApiError. A failure inside llama.cpp resets the model state and becomes a 500,
so the warm process keeps serving and a half answer is never labelled success.
"""

from __future__ import annotations

import ctypes
import re
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import jinja2
import llama_cpp
import numpy as np
import numpy.typing as npt
from aws_lambda_powertools import Logger
from llama_cpp import Llama, StoppingCriteria, StoppingCriteriaList
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from lambda_common.http import ApiError
from llama_app.schemas import FinishReason
from llama_app.settings import LlamaSettings

logger = Logger(child=True)

_CONTEXT_OVERFLOW = re.compile(r"Requested tokens \((\d+)\) exceed context window of (\d+)")


@dataclass(frozen=True)
class SamplingParams:
    """What llama.cpp needs to generate, after validation and defaults."""

    max_tokens: int
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def llama_kwargs(self) -> dict[str, Any]:
        return {
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "min_p": self.min_p,
            "repeat_penalty": self.repeat_penalty,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
            "stop": list(self.stop),
            # llama-cpp-python reuses one fixed seed when none is given, so identical
            # requests would sample identically: draw a fresh one instead.
            "seed": self.seed if self.seed is not None else secrets.randbelow(2**31),
        }


@dataclass(frozen=True)
class GenerationTimings:
    prompt_ms: float
    predicted_ms: float
    predicted_per_second: float | None
    total_ms: float


@dataclass(frozen=True)
class Generation:
    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    timings: GenerationTimings


class Deadline:
    """The moment generation must stop: the invocation's end minus a safety margin."""

    def __init__(self, remaining_ms: float | None, margin_ms: float, *, now: float | None = None) -> None:
        start = time.perf_counter() if now is None else now
        self.at = None if remaining_ms is None else start + (remaining_ms - margin_ms) / 1000.0

    @classmethod
    def none(cls) -> Deadline:
        return cls(None, 0)

    def passed(self) -> bool:
        return self.at is not None and time.perf_counter() >= self.at

    def remaining_ms(self) -> float | None:
        return None if self.at is None else (self.at - time.perf_counter()) * 1000.0


class _TokenClock:
    """A llama-cpp-python stopping criterion: times each sampled token, enforces the token
    budget and the deadline.

    llama-cpp-python 0.3.36 calls a stopping criterion right after each token is
    sampled, before handing the token out, with the tokens evaluated so far; and once
    more after its generation loop ends, with the same tokens as the call before
    (nothing is evaluated in between). Returning True in the loop drops the token just
    sampled and ends the loop; the after-loop call must then return True as well, or
    llama-cpp-python returns no text at all.

    The token budget is enforced here because llama-cpp-python skips its own
    ``max_tokens`` check while the text ends in an incomplete UTF-8 character (its
    multibyte handling ``continue``s past the check), so an answer made of multi-byte
    characters could run on to the deadline or past the context window. Once
    ``max_tokens`` tokens (or what the context window has room for) are evaluated
    after the prompt, the token just sampled would be one too many: generation stops
    there, ``max_tokens`` tokens are kept, and llama-cpp-python's decoding drops an
    incomplete character at the end of the text.
    """

    def __init__(self, deadline: Deadline, max_tokens: int, n_ctx: int) -> None:
        self._deadline = deadline
        self._max_tokens = max_tokens
        self._n_ctx = n_ctx
        self._prompt_n: int | None = None
        self._last_n: int | None = None
        self.times: list[float] = []
        """When each token was sampled (the first one marks the end of prompt processing)."""
        self.stopped: FinishReason | None = None
        """Why this criterion ended the generation loop, if it did."""

    def __call__(self, input_ids: npt.NDArray[np.intc], logits: npt.NDArray[np.single]) -> bool:
        evaluated = len(input_ids)
        if evaluated == self._last_n:  # the after-loop call
            return self.stopped is not None
        self._last_n = evaluated
        self.times.append(time.perf_counter())
        if self._prompt_n is None:
            self._prompt_n = evaluated
        budget = min(self._max_tokens, self._n_ctx - self._prompt_n)
        if evaluated - self._prompt_n >= budget:
            self.stopped = "length"
        elif self._deadline.passed():
            self.stopped = "deadline"
        return self.stopped is not None

    def sampled(self) -> list[float]:
        """Times at which the tokens handed out were sampled (a token dropped by a stop left out)."""
        return self.times[:-1] if self.stopped is not None else list(self.times)


class Engine:
    """The loaded model and the operations the routes need."""

    def __init__(self, llm: Llama, alias: str) -> None:
        self.llm = llm
        self.alias = alias
        self.n_ctx = llm.n_ctx()
        self.n_vocab = llm.n_vocab()
        self.chat_template = _chat_template(llm)
        # Lambda sends one request at a time per environment; a local server may not.
        self._lock = threading.Lock()

    @classmethod
    def load(cls, settings: LlamaSettings, n_threads: int) -> Engine:
        llm = Llama(
            model_path=str(settings.model_path),
            n_ctx=settings.n_ctx,
            n_batch=min(settings.n_batch, settings.n_ctx),
            n_threads=n_threads,
            n_threads_batch=settings.n_threads_batch or n_threads,
            use_mmap=settings.use_mmap,
            verbose=False,
        )
        return cls(llm, settings.alias)

    # ------------------------------------------------------------ generation

    def complete(self, prompt: str, params: SamplingParams, deadline: Deadline) -> Generation:
        """Continue ``prompt`` as plain text."""
        return self._generate(prompt, params, deadline, param="prompt")

    def render_chat(self, messages: Sequence[Mapping[str, str]]) -> ChatPrompt:
        """The conversation as the model's own chat template (from the GGUF file) renders it."""
        if self.chat_template is None:
            raise ApiError(
                400,
                "this model's GGUF file has no chat template; send a plain prompt instead of messages",
                param="messages",
                code="chat_template_missing",
            )
        try:
            rendered = self.chat_template(messages=list(messages))  # type: ignore[arg-type]
        except (ValueError, jinja2.TemplateError) as exc:
            raise ApiError(
                400,
                f"the model's chat template refused these messages: {exc}",
                param="messages",
                code="invalid_messages",
            ) from None
        stops = rendered.stop if isinstance(rendered.stop, list) else [rendered.stop] if rendered.stop else []
        tokens = self.llm.tokenize(
            rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True
        )
        return ChatPrompt(
            text=rendered.prompt, tokens=tokens, stop=tuple(stops), criterion=rendered.stopping_criteria
        )

    def chat(
        self, messages: Sequence[Mapping[str, str]], params: SamplingParams, deadline: Deadline
    ) -> Generation:
        """Answer a conversation rendered with the model's chat template.

        Rendered here and sent as tokens to the completion path (as llama-cpp-python's own
        chat handler does) so that the deadline criterion applies to chat too.
        """
        prompt = self.render_chat(messages)
        params = replace(params, stop=params.stop + prompt.stop)
        return self._generate(
            prompt.tokens, params, deadline, param="messages", extra_criterion=prompt.criterion
        )

    def _generate(
        self,
        prompt: str | list[int],
        params: SamplingParams,
        deadline: Deadline,
        *,
        param: str,
        extra_criterion: StoppingCriteria | None = None,
    ) -> Generation:
        clock = _TokenClock(deadline, params.max_tokens, self.n_ctx)
        criteria = StoppingCriteriaList([clock] if extra_criterion is None else [clock, extra_criterion])
        with self._lock:
            started = time.perf_counter()
            try:
                result: Any = self.llm.create_completion(
                    prompt, stopping_criteria=criteria, model=self.alias, **params.llama_kwargs()
                )
            except ValueError as exc:
                raise self._client_error(exc, param) from None
            except Exception as exc:
                self._recover()
                logger.exception("generation failed inside llama.cpp")
                raise ApiError(
                    500,
                    f"generation failed inside llama.cpp ({type(exc).__name__}); nothing is returned",
                    type="server_error",
                    code="generation_failed",
                ) from exc
            finished = time.perf_counter()

        usage = result["usage"]
        finish: FinishReason = clock.stopped or result["choices"][0]["finish_reason"]
        sampled = clock.sampled()
        first = clock.times[0] if clock.times else finished
        decode_s = sampled[-1] - sampled[0] if len(sampled) > 1 else 0.0
        timings = GenerationTimings(
            prompt_ms=(first - started) * 1000.0,
            predicted_ms=(finished - first) * 1000.0,
            predicted_per_second=(len(sampled) - 1) / decode_s if decode_s > 0 else None,
            total_ms=(finished - started) * 1000.0,
        )
        return Generation(
            text=str(result["choices"][0]["text"]),
            finish_reason=finish,
            prompt_tokens=int(usage["prompt_tokens"]),
            completion_tokens=int(usage["completion_tokens"]),
            timings=timings,
        )

    def _client_error(self, exc: ValueError, param: str) -> ApiError:
        overflow = _CONTEXT_OVERFLOW.search(str(exc))
        if overflow:
            tokens, window = overflow.groups()
            return ApiError(
                400,
                f"the prompt is {tokens} tokens; the context window is {window} tokens "
                "and must also hold at least one generated token",
                param=param,
                code="context_length_exceeded",
            )
        return ApiError(400, f"{param}: {exc}", param=param, code="invalid_value")

    def _recover(self) -> None:
        """Forget the KV cache after a failure so the next request starts clean."""
        try:
            self.llm.reset()  # type: ignore[no-untyped-call]
            self.llm._ctx.kv_cache_clear()  # type: ignore[no-untyped-call]
        except Exception:  # pragma: no cover - best effort; the next eval re-clears
            logger.exception("could not reset the llama.cpp context")

    # ------------------------------------------------------------ tokens

    # Tokenizer calls only read the vocabulary: they need no lock.

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=add_special, special=parse_special))

    def piece(self, token: int) -> bytes:
        """The bytes of one token as llama.cpp renders it (special tokens included)."""
        self._check_ids([token])
        size = 64
        while True:
            buffer = ctypes.create_string_buffer(size)
            written = llama_cpp.llama_token_to_piece(self.llm._model.vocab, token, buffer, size, 0, True)
            if written >= 0:
                return buffer.raw[:written]
            size = -written

    def detokenize(self, tokens: Sequence[int]) -> str:
        """Concatenated token pieces, as llama.cpp server's /detokenize returns them."""
        self._check_ids(tokens)
        return b"".join(self.piece(token) for token in tokens).decode("utf-8", errors="replace")

    def _check_ids(self, tokens: Sequence[int]) -> None:
        # An out-of-range id would make llama.cpp read outside its vocabulary.
        bad = next((t for t in tokens if not 0 <= t < self.n_vocab), None)
        if bad is not None:
            raise ApiError(
                400,
                f"tokens: {bad} is not a token id of this model (0 to {self.n_vocab - 1})",
                param="tokens",
                code="invalid_value",
            )


@dataclass(frozen=True)
class ChatPrompt:
    """A conversation rendered by the chat template, ready to generate from."""

    text: str
    tokens: list[int]
    stop: tuple[str, ...]
    criterion: StoppingCriteria | None


def _chat_template(llm: Llama) -> Jinja2ChatFormatter | None:
    """The GGUF file's chat template, set up the way llama-cpp-python sets it up for chat."""
    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        return None
    eos, bos = llm.token_eos(), llm.token_bos()
    model = llm._model
    return Jinja2ChatFormatter(
        template=template,
        eos_token=model.token_get_text(eos) if eos != -1 else "",
        bos_token=model.token_get_text(bos) if bos != -1 else "",
        stop_token_ids=[eos],
    )
