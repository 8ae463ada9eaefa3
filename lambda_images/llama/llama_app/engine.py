"""The generation core: one llama.cpp model, loaded at init, shared by every route.

Routes hand it a prompt (``prepare_text`` / ``prepare_chat``, which check it
fits the context window before any work) and validated sampling parameters;
``generate`` returns a ``GenerationRun``: an iterator of text pieces, each
final (a stop string can no longer start in it), produced while llama.cpp
decodes, and after the last one the ``Generation`` with its finish reason,
token counts and timings. Buffered routes drain it; streaming routes send each
piece as it comes.

The loop is this module's own, on llama-cpp-python's token generator
(``Llama.generate``, which also reuses the KV cache of a shared prompt
prefix): it decodes UTF-8 incrementally, holds back text that may start a
stop string, enforces the token budget, the context window and the
invocation's deadline after every token, and can report each token's log
probability. Closing the run (a caller that went away) stops decoding at once.

Errors are domain errors: a prompt past the context window is
``ContextLengthExceeded``; a failure inside llama.cpp resets the model state
and becomes ``InternalError``, so the warm process keeps serving and a half
answer is never labelled success.
"""

from __future__ import annotations

import bisect
import codecs
import contextlib
import ctypes
import math
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jinja2
import llama_cpp
import llama_cpp._logger as _llama_logger
import numpy as np
from aws_lambda_powertools import Logger
from llama_cpp import Llama
from llama_cpp import _internals as llama_internals
from llama_cpp.llama_chat_format import Jinja2ChatFormatter
from llama_cpp.llama_grammar import LlamaGrammar

from lambda_common.deadline import Deadline
from lambda_common.errors import ContextLengthExceeded, InternalError, InvalidRequest, TooLarge
from llama_app.schemas import FinishReason
from llama_app.settings import LlamaSettings
from llama_app.tools import template_renders_tools

logger = Logger(child=True)


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
    grammar: LlamaGrammar | None = None
    """Constrains sampling (JSON schema or GBNF), or None."""
    logprobs: int | None = None
    """Report each token's log probability and this many alternatives (0-20), or None."""
    special: bool = False
    """Render special tokens as their text (a grammar or tool-call markup may consist of them)."""


@dataclass(frozen=True)
class Prompt:
    """A prompt ready to generate from: its tokens, and stop strings its chat template adds."""

    tokens: list[int]
    stop: tuple[str, ...] = ()
    text: str = ""
    param: str = "messages"
    """The request field the prompt came from (named when it does not fit the context)."""


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    bytes: list[int]
    logprob: float
    top: list[tuple[str, list[int], float]]
    """The most likely alternatives at this position: (text, bytes, log probability)."""


@dataclass(frozen=True)
class GenerationTimings:
    prompt_ms: float
    """From the call to the first generated token: prompt processing, i.e. time to first token."""
    predicted_ms: float
    """From the first to the last generated token."""
    predicted_per_second: float | None
    """Decode speed over the generated tokens (None with fewer than two)."""
    total_ms: float


@dataclass(frozen=True)
class Generation:
    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    timings: GenerationTimings
    logprobs: list[TokenLogprob] = field(default_factory=list)
    """One entry per generated token wholly in ``text`` (not one a stop string cut)."""
    stop_hit: str | None = None
    """The stop string that ended generation, if one did."""


class _StopFilter:
    """Holds back the end of the text while it could still be the start of a stop string."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [stop for stop in stops if stop]
        self.pending = ""
        self.stopped = False
        self.hit: str | None = None

    def feed(self, text: str) -> str:
        """Text that is final now; sets ``stopped`` (and drops the rest) when a stop string appears."""
        self.pending += text
        if not self.stops:
            out, self.pending = self.pending, ""
            return out
        found = [(index, stop) for stop in self.stops if (index := self.pending.find(stop)) >= 0]
        if found:
            cut, self.hit = min(found, key=lambda item: item[0])
            out, self.pending, self.stopped = self.pending[:cut], "", True
            return out
        hold = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(self.pending)), hold, -1):
                if self.pending.endswith(stop[:size]):
                    hold = size
                    break
        out = self.pending[: len(self.pending) - hold]
        self.pending = self.pending[len(out) :]
        return out

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


class GenerationRun:
    """The text of one generation, piece by piece as it is decoded; ``result`` once it has ended."""

    def __init__(self, pieces: Iterator[str]) -> None:
        self._pieces = pieces
        self.result: Generation | None = None
        self._logprobs: list[TokenLogprob] = []
        self._covered = 0
        self._taken = 0

    def take_logprobs(self) -> list[TokenLogprob]:
        """The log probabilities of the tokens whose text was yielded since the last call."""
        out = self._logprobs[self._taken : self._covered]
        self._taken = self._covered
        return out

    def __iter__(self) -> Iterator[str]:
        return self._pieces

    def close(self) -> None:
        close = getattr(self._pieces, "close", None)
        if close is not None:
            close()

    def finish(self) -> Generation:
        """Run to the end (buffered routes) and return the result."""
        for _ in self._pieces:
            pass
        assert self.result is not None
        return self.result


class Engine:
    """The loaded model and the operations the routes need."""

    def __init__(self, llm: Llama, alias: str) -> None:
        self.llm = llm
        self.alias = alias
        self.n_ctx = llm.n_ctx()
        self.n_vocab = llm.n_vocab()
        self.chat_template = _chat_template(llm)
        self.template_tools = template_renders_tools(self.chat_template)
        """The chat template renders tools, calls and results in ``<tool_call>`` markup (Qwen2.5's does)."""
        # Lambda sends one request at a time per environment; a local server may not.
        self._lock = threading.Lock()

    @classmethod
    def load(cls, settings: LlamaSettings, n_threads: int) -> Engine:
        llm = GrammarCheckingLlama(
            model_path=str(settings.model_path),
            n_ctx=settings.n_ctx,
            n_batch=min(settings.n_batch, settings.n_ctx),
            n_threads=n_threads,
            n_threads_batch=settings.n_threads_batch or n_threads,
            use_mmap=settings.use_mmap,
            verbose=False,
        )
        return cls(llm, settings.alias)

    # ------------------------------------------------------------ prompts

    def prepare_text(self, prompt: str, *, param: str = "prompt") -> Prompt:
        """A plain-text prompt, tokenized as llama.cpp's completion does (BOS added)."""
        tokens = self.llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
        return self._fits(Prompt(tokens=tokens, text=prompt, param=param), param)

    def prepare_chat(self, messages: Sequence[Mapping[str, Any]], **template_vars: Any) -> Prompt:
        """The conversation as the model's own chat template (from the GGUF file) renders it."""
        if self.chat_template is None:
            raise InvalidRequest(
                "this model's GGUF file has no chat template; send a plain prompt instead of messages",
                param="messages",
                code="chat_template_missing",
            )
        try:
            rendered = self.chat_template(messages=list(messages), **template_vars)  # type: ignore[arg-type]
        except (ValueError, TypeError, jinja2.TemplateError) as exc:
            raise InvalidRequest(
                f"the model's chat template refused these messages: {exc}",
                param="messages",
                code="invalid_messages",
            ) from None
        stops = rendered.stop if isinstance(rendered.stop, list) else [rendered.stop] if rendered.stop else []
        tokens = self.llm.tokenize(
            rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True
        )
        return self._fits(Prompt(tokens=tokens, stop=tuple(stops), text=rendered.prompt), "messages")

    def extend(self, prompt: Prompt, text: str) -> Prompt:
        """``prompt`` followed by ``text`` (tokenized with special tokens), e.g. the start of a tool call."""
        tokens = self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        extended = Prompt(
            tokens=[*prompt.tokens, *tokens], stop=prompt.stop, text=prompt.text + text, param=prompt.param
        )
        return self._fits(extended, prompt.param)

    def compile_grammar(self, grammar: str, *, param: str) -> LlamaGrammar:
        """A GBNF grammar llama.cpp accepts, or a 400 with the parser's own message.

        llama-cpp-python hands a grammar that does not parse to the sampler chain as a null
        sampler (a crash on the first token), so it is compiled here first. llama.cpp's parser
        writes its reason to stderr (file descriptor 2), which is captured for the message.
        """
        if not grammar.strip():
            raise InvalidRequest(f"{param}: the grammar is empty", param=param, code="invalid_grammar")
        with _GRAMMAR_CHECK, _captured_stderr() as printed, _captured_llama_log() as logged:
            sampler = llama_cpp.llama_sampler_init_grammar(
                self.llm._model.vocab, grammar.encode("utf-8"), b"root"
            )
            if sampler:
                llama_cpp.llama_sampler_free(sampler)
        if not sampler:
            own = {line.strip() for line in grammar.splitlines()}
            lines = [line.strip() for line in [*printed(), *logged()]]
            lines = [line for line in lines if line and line not in own]
            reason = "; ".join(dict.fromkeys(lines)) or "it does not parse"
            raise InvalidRequest(
                f"{param}: llama.cpp refused the grammar: {reason[:500]}", param=param, code="invalid_grammar"
            )
        return LlamaGrammar.from_string(grammar, verbose=False)

    def _fits(self, prompt: Prompt, param: str) -> Prompt:
        if len(prompt.tokens) >= self.n_ctx:
            raise ContextLengthExceeded(
                f"the prompt is {len(prompt.tokens)} tokens; the context window is {self.n_ctx} tokens "
                "and must also hold at least one generated token",
                param=param,
            )
        return prompt

    # ------------------------------------------------------------ generation

    def generate(self, prompt: Prompt, params: SamplingParams, deadline: Deadline) -> GenerationRun:
        """Start generating (lazily: nothing runs until the run is iterated)."""
        run = GenerationRun(iter(()))
        run._pieces = self._pieces(run, prompt, params, deadline)
        return run

    def _pieces(
        self, run: GenerationRun, prompt: Prompt, params: SamplingParams, deadline: Deadline
    ) -> Iterator[str]:
        stops = _StopFilter(params.stop + prompt.stop)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        budget = min(params.max_tokens, self.n_ctx - len(prompt.tokens))
        vocab = self.llm._model.vocab
        text: list[str] = []
        times: list[float] = []
        logprobs = run._logprobs
        token_ends: list[int] = []  # bytes generated up to the end of each token
        emitted = 0  # bytes of text yielded
        completion = 0
        finish: FinishReason = "length"
        with self._lock:
            started = time.perf_counter()
            self.llm.set_seed(params.seed if params.seed is not None else secrets.randbelow(2**31))
            tokens = self.llm.generate(
                prompt.tokens,
                top_k=params.top_k,
                top_p=params.top_p,
                min_p=params.min_p,
                temp=params.temperature,
                repeat_penalty=params.repeat_penalty,
                frequency_penalty=params.frequency_penalty,
                presence_penalty=params.presence_penalty,
                grammar=params.grammar,
                reset=True,
            )
            try:
                for token in tokens:
                    times.append(time.perf_counter())
                    if llama_cpp.llama_vocab_is_eog(vocab, token):
                        finish = "stop"
                        break
                    completion += 1
                    piece = self.piece(token, special=params.special)
                    if params.logprobs is not None:
                        logprobs.append(self._logprob(token, piece, params.logprobs))
                        token_ends.append((token_ends[-1] if token_ends else 0) + len(piece))
                    final = stops.feed(decoder.decode(piece))
                    if final:
                        text.append(final)
                        if token_ends:  # only log probabilities need to know what is out
                            emitted += len(final.encode("utf-8"))
                            run._covered = _covered(token_ends, emitted)
                        yield final
                    if stops.stopped:
                        finish = "stop"
                        break
                    if completion >= budget:
                        break
                    if deadline.passed():
                        finish = "deadline"
                        break
                else:
                    finish = "stop"
            except GeneratorExit:
                raise
            except Exception as exc:
                self._recover()
                logger.exception("generation failed inside llama.cpp")
                raise InternalError(
                    f"generation failed inside llama.cpp ({type(exc).__name__}); nothing more is returned",
                    code="generation_failed",
                ) from exc
            finally:
                tokens.close()
            finished = time.perf_counter()
        if not stops.stopped:
            # An incomplete character at the very end is dropped, as llama.cpp's own decoding does.
            rest = stops.flush() + decoder.decode(b"", final=True).rstrip("\ufffd")
            if rest:
                text.append(rest)
                if token_ends:
                    emitted += len(rest.encode("utf-8"))
                    run._covered = _covered(token_ends, emitted)
                yield rest
        sampled = times[:completion]
        decode_s = sampled[-1] - sampled[0] if len(sampled) > 1 else 0.0
        first = times[0] if times else finished
        run.result = Generation(
            text="".join(text),
            finish_reason=finish,
            prompt_tokens=len(prompt.tokens),
            completion_tokens=completion,
            timings=GenerationTimings(
                prompt_ms=(first - started) * 1000.0,
                predicted_ms=(finished - first) * 1000.0,
                predicted_per_second=(len(sampled) - 1) / decode_s if decode_s > 0 else None,
                total_ms=(finished - started) * 1000.0,
            ),
            logprobs=logprobs[: run._covered],
            stop_hit=stops.hit,
        )

    def _logprob(self, token: int, piece: bytes, top: int) -> TokenLogprob:
        """Log probability of ``token`` where it was sampled, and the ``top`` likeliest tokens there.

        The logits of the position just sampled are still in the context (the next
        token is not evaluated before the caller asks for it).
        """
        logits = np.ctypeslib.as_array(self.llm._ctx.get_logits_ith(-1), shape=(self.n_vocab,))
        shifted = logits.astype(np.float64) - float(np.max(logits))
        logsum = float(np.log(np.exp(shifted).sum()))
        alternatives: list[tuple[str, list[int], float]] = []
        if top > 0:
            best = np.argpartition(-shifted, top)[:top]
            for candidate in best[np.argsort(-shifted[best])]:
                data = self.piece(int(candidate), special=False)
                alternatives.append(
                    (data.decode("utf-8", "replace"), list(data), float(shifted[candidate]) - logsum)
                )
        return TokenLogprob(
            token=piece.decode("utf-8", "replace"),
            bytes=list(piece),
            logprob=float(shifted[token]) - logsum,
            top=alternatives,
        )

    def _recover(self) -> None:
        """Forget the KV cache after a failure so the next request starts clean."""
        try:
            self.llm.reset()  # type: ignore[no-untyped-call]
            self.llm._ctx.kv_cache_clear()  # type: ignore[no-untyped-call]
        except Exception:  # pragma: no cover - best effort; the next eval re-clears
            logger.exception("could not reset the llama.cpp context")

    def warm_up(self) -> None:
        """One short generation: llama.cpp's buffers and thread pool are set up before the first request.

        With SnapStart this runs before the snapshot, so every restored copy starts warm.
        """
        prompt = self.prepare_text("Hello")
        self.generate(prompt, SamplingParams(max_tokens=2, temperature=0.0), Deadline.none()).finish()

    # ------------------------------------------------------------ tokens

    # Tokenizer calls only read the vocabulary: they need no lock.

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=add_special, special=parse_special))

    def piece(self, token: int, *, special: bool = True) -> bytes:
        """The bytes of one token as llama.cpp renders it (special tokens included unless asked not to)."""
        size = 64
        while True:
            buffer = ctypes.create_string_buffer(size)
            written = llama_cpp.llama_token_to_piece(self.llm._model.vocab, token, buffer, size, 0, special)
            if written >= 0:
                return buffer.raw[:written]
            size = -written

    def pieces(self, tokens: Sequence[int], *, limit_bytes: int) -> list[bytes]:
        """The pieces of ``tokens`` (ids checked), refused with TooLarge once they pass ``limit_bytes``."""
        self.check_ids(tokens)
        out: list[bytes] = []
        total = 0
        for index, token in enumerate(tokens):
            data = self.piece(token)
            total += len(data)
            if total > limit_bytes:
                raise TooLarge(
                    f"the text of these tokens passes the {limit_bytes:,}-byte limit of a response at token "
                    f"{index}; send at most {index} tokens per request",
                    param="tokens",
                )
            out.append(data)
        return out

    def check_ids(self, tokens: Sequence[int]) -> None:
        # An out-of-range id would make llama.cpp read outside its vocabulary.
        bad = next((t for t in tokens if not 0 <= t < self.n_vocab), None)
        if bad is not None:
            raise InvalidRequest(
                f"tokens: {bad} is not a token id of this model (0 to {self.n_vocab - 1})", param="tokens"
            )


class GrammarCheckingLlama(Llama):
    """llama-cpp-python's ``Llama`` sampling under a grammar the way llama.cpp's own server does.

    llama-cpp-python puts the grammar sampler in the sampler chain, so every token checks the
    whole vocabulary (49,152 tokens for SmolLM2, 151,936 for Qwen2.5) against the grammar:
    measured here, that took as long as the model's forward pass and halved the decode speed.
    llama.cpp's common sampler samples first, checks only the chosen token against the
    grammar, and filters the whole vocabulary only when that token is refused. Greedy
    decoding picks the same tokens either way; sampling draws a token the grammar allows, as
    llama.cpp's server does (without top-k/top-p truncation the distribution is exactly the
    one restricted to the allowed tokens). This overrides llama-cpp-python 0.3.36's private
    ``_init_sampler``; a test checks it still applies.
    """

    def _init_sampler(self, *args: Any, grammar: LlamaGrammar | None = None, **kwargs: Any) -> Any:
        chain = super()._init_sampler(*args, grammar=None, **kwargs)  # type: ignore[no-untyped-call, misc]
        if grammar is None:
            return chain
        return _GrammarCheckedSampler(chain, self._model.vocab, grammar._grammar, self.n_vocab())


class _GrammarCheckedSampler:
    """A sampler chain and a grammar sampler, used as llama.cpp's ``common_sampler_sample`` uses them."""

    def __init__(self, chain: Any, vocab: Any, grammar: str, n_vocab: int) -> None:
        self.chain = chain
        self.n_vocab = n_vocab
        self.grammar = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
        if not self.grammar:  # compile_grammar checked it; a null sampler would crash llama.cpp
            raise InternalError("the grammar failed to compile in llama.cpp", code="invalid_grammar")
        self.candidates = llama_internals.LlamaTokenDataArray(n_vocab=n_vocab)
        self.single_data = (llama_cpp.llama_token_data * 1)()
        self.single = llama_cpp.llama_token_data_array(
            data=ctypes.cast(self.single_data, llama_cpp.llama_token_data_p),
            size=1,
            selected=-1,
            sorted=False,
        )

    def sample(self, ctx: Any, idx: int = -1) -> int:
        logits = np.ctypeslib.as_array(ctx.get_logits_ith(idx), shape=(self.n_vocab,))
        candidates = self.candidates
        candidates.copy_logits(logits)
        llama_cpp.llama_sampler_apply(self.chain.sampler, ctypes.byref(candidates.candidates))
        token = int(candidates.candidates_data.id[candidates.candidates.selected])
        self.single_data[0] = llama_cpp.llama_token_data(id=token, logit=0.0, p=0.0)
        self.single.size, self.single.selected, self.single.sorted = 1, -1, False
        llama_cpp.llama_sampler_apply(self.grammar, ctypes.byref(self.single))
        if not math.isfinite(self.single_data[0].logit):  # refused: filter everything, then sample again
            candidates.copy_logits(logits)
            llama_cpp.llama_sampler_apply(self.grammar, ctypes.byref(candidates.candidates))
            llama_cpp.llama_sampler_apply(self.chain.sampler, ctypes.byref(candidates.candidates))
            token = int(candidates.candidates_data.id[candidates.candidates.selected])
        llama_cpp.llama_sampler_accept(self.grammar, token)
        self.chain.accept(token)
        return token

    def close(self) -> None:
        if self.grammar:
            llama_cpp.llama_sampler_free(self.grammar)
            self.grammar = None
        self.chain.close()

    def __del__(self) -> None:
        self.close()


def _covered(token_ends: Sequence[int], emitted: int) -> int:
    """How many tokens have all their bytes inside the ``emitted`` bytes of text (ends never decrease)."""
    return bisect.bisect_right(token_ends, emitted)


_GRAMMAR_CHECK = threading.Lock()
"""One grammar check at a time: each redirects the process's stderr for its duration."""


@contextlib.contextmanager
def _captured_stderr() -> Iterator[Any]:
    """Redirect file descriptor 2 to a temporary file; yields a function returning its lines."""
    lines: list[str] = []
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        try:
            os.dup2(sink.fileno(), 2)
            yield lambda: lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(sink.read(64_000).decode("utf-8", "replace").splitlines())


@contextlib.contextmanager
def _captured_llama_log() -> Iterator[Any]:
    """Collect llama.cpp's log lines (some grammar errors go there, not to stderr), then restore
    llama-cpp-python's own log callback."""
    lines: list[str] = []

    @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]
    def collect(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        lines.append(text.decode("utf-8", "replace"))

    llama_cpp.llama_log_set(collect, ctypes.c_void_p(0))
    try:
        yield lambda: lines
    finally:
        llama_cpp.llama_log_set(_llama_logger.llama_log_callback, ctypes.c_void_p(0))


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
