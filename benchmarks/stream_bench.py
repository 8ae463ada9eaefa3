"""The generator as `make local` serves it, its Function URL in RESPONSE_STREAM mode, read over plain HTTP.

Two measurements, each against its comparison in the same run, alternating:

* **Streaming**: a streamed OpenAI text completion sent to the Function URL
  front with ``http.client``, its chunked answer read line by line as it
  arrives. The time to the first byte is from sending the request to the
  first server-sent event that carries a token; the speed is the tokens after
  the first over the time from the first token event to the last. The bare
  side is llama-cpp-python's ``Llama`` streaming the same prompt with the
  same settings in this process, timed the same way.
* **Structured output**: streamed chat completions through the same URL, one
  with ``response_format`` holding a small JSON schema (grammar-constrained
  sampling) and one without, same prompt and token budget; the speed is taken
  the same way, so a schema's grammar compile lands in the first-token time,
  not in the speed.

The local runner is ``local.stack.LocalStack`` (the generator alone, on the
Runtime API stand-in that passes a streamed answer on piece by piece), so the
figures include the runtime loop, the URL front and HTTP on localhost, not
Lambda's network.
"""

from __future__ import annotations

import http.client
import itertools
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from benchmarks.llama_bench import BareSide, LlamaBenchConfig, PromptMaker, sampling
from benchmarks.stats import median_or_none, summarize
from client.stream import event_text
from local.stack import RunningFunction

Progress = Callable[[str], None]

PROMPT_TOKENS = 16
"""The streamed prompt's length: short, so the first token comes mostly from generation, not the prompt."""
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 40},
        "likes": {"type": "array", "items": {"type": "string", "maxLength": 60}, "maxItems": 6},
        "story": {"type": "string"},
    },
    "required": ["name", "age", "likes", "story"],
    "additionalProperties": False,
}
"""A small schema; the open-ended ``story`` lets the answer run to the token budget like free text."""
CHAT_TASK = "Describe a llama as JSON: its name, its age, what it likes, and a long story about it."

STREAM_METHOD = (
    "Function URL front of `make local` (local.stack.LocalStack, generator only, invoke mode "
    "RESPONSE_STREAM), streamed POST /v1/completions read with http.client as it arrives; first byte = "
    "request sent to the first SSE event with a token; tokens/s = (token events - 1) / (last token "
    "event - first token event). Bare: llama-cpp-python Llama(stream=True) in the bench process, same "
    "prompt, settings and thread count, timed the same way; rounds alternate."
)
JSON_SCHEMA_METHOD = (
    "Streamed POST /v1/chat/completions through the same Function URL, with response_format json_schema "
    "(a 4-property schema with bounds, an array and an open string) and without it, same messages and "
    "max_tokens (each message opens with a new number), alternating; tokens/s = (token events - 1) / "
    "(last - first token event)."
)


@dataclass(frozen=True)
class Streamed:
    """One streamed answer, timed by its reader."""

    first_ms: float
    """From sending the request to the first event that carries a token."""
    events: int
    """Events that carried a token (one per generated token, bar multi-byte characters held back)."""
    span_s: float
    """From the first token event to the last."""
    reported_tokens: int | None
    """completion_tokens from the answer's usage, when it has one."""
    text: str

    @property
    def tokens_per_s(self) -> float | None:
        return (self.events - 1) / self.span_s if self.events > 1 and self.span_s > 0 else None


# ------------------------------------------------------------------ the two sides


def _post_stream(url: str, path: str, body: dict[str, Any], timeout_s: float = 600) -> Streamed:
    """POST ``body`` to the Function URL and read its server-sent events as they come."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout_s)
    data = json.dumps(body).encode()
    started = time.perf_counter()
    try:
        connection.request("POST", path, body=data, headers={"content-type": "application/json"})
        response = connection.getresponse()
        if response.status != 200:
            raise RuntimeError(f"POST {path} answered {response.status}: {response.read()[:500]!r}")
        first = last = None
        events = 0
        usage = None
        text: list[str] = []
        while line := response.readline():
            if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                continue
            now = time.perf_counter()
            event = json.loads(line[6:])
            if "error" in event:
                raise RuntimeError(f"POST {path}: error event {event['error']}")
            usage = event.get("usage") or usage
            piece = event_text(event)
            if piece:
                events += 1
                text.append(piece)
                first = now if first is None else first
                last = now
    finally:
        connection.close()
    if first is None or last is None:
        raise RuntimeError(f"POST {path}: the stream carried no token")
    reported = int(usage["completion_tokens"]) if usage else None
    return Streamed((first - started) * 1000, events, last - first, reported, "".join(text))


def stream_completion(function: RunningFunction, model: str, prompt: str, n: int) -> Streamed:
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": n,
        "stream": True,
        "stream_options": {"include_usage": True},
        **sampling(),
    }
    return _post_stream(function.url, "/v1/completions", body)


def stream_chat(function: RunningFunction, model: str, content: str, n: int, *, schema: bool) -> Streamed:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": n,
        "stream": True,
        "stream_options": {"include_usage": True},
        **sampling(),
    }
    if schema:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "llama", "schema": SCHEMA, "strict": True},
        }
    return _post_stream(function.url, "/v1/chat/completions", body)


def bare_stream(bare: BareSide, prompt: str, n: int) -> Streamed:
    """The same streamed completion from the bare library, timed as the HTTP reader times it."""
    started = time.perf_counter()
    first = last = None
    events = 0
    text: list[str] = []
    for chunk in bare.llm.create_completion(prompt, max_tokens=n, stream=True, **sampling()):
        piece = chunk["choices"][0]["text"]  # type: ignore[index]  # stream=True yields chunks
        if piece:
            now = time.perf_counter()
            events += 1
            text.append(piece)
            first = now if first is None else first
            last = now
    if first is None or last is None:
        raise RuntimeError("the bare stream carried no token")
    return Streamed((first - started) * 1000, events, last - first, None, "".join(text))


# ------------------------------------------------------------------ the local runner


@contextmanager
def local_generator(cfg: LlamaBenchConfig, threads: int, log_dir: Path) -> Iterator[RunningFunction]:
    """The generator alone under `make local`'s runner, URL in RESPONSE_STREAM mode, on free ports."""
    from local.functions import LocalOptions, build_plans
    from local.stack import LocalStack

    options = LocalOptions(
        only="llama",
        llama_model=cfg.gguf,
        llama_invoke_port=0,
        llama_url_port=0,
        memory_mb={"llama": cfg.memory_mb},
        timeout_s={"llama": 900},
        url_invoke_mode={"llama": "RESPONSE_STREAM"},
        extra_environment={"llama": {"N_THREADS": str(threads), "POWERTOOLS_LOG_LEVEL": "INFO"}},
    )
    lines: list[str] = []
    with LocalStack(build_plans(options, echo=lines.append), echo=lines.append, log_dir=log_dir) as stack:
        stack.warm_up()
        yield stack.functions["llama"]


def model_name(function: RunningFunction) -> str:
    status, raw, _ = function.call("GET", "/v1/models")
    if status != 200:
        raise RuntimeError(f"GET /v1/models answered {status}: {raw[:300]!r}")
    return str(json.loads(raw)["data"][0]["id"])


# ------------------------------------------------------------------ the run


def run(cfg: LlamaBenchConfig, progress: Progress) -> dict[str, Any]:
    """Streaming against the bare library, and JSON-schema against free generation, alternating."""
    threads = cfg.handler_threads
    bare = BareSide(cfg.gguf, threads)
    prompts = PromptMaker(bare.count_tokens)
    stream: dict[str, list[Streamed]] = {"stream": [], "bare": []}
    chat: dict[str, list[Streamed]] = {"json_schema": [], "free": []}
    with local_generator(cfg, threads, cfg.log_dir / "llama-stream") as function:
        model = model_name(function)
        stream_completion(function, model, prompts.make(PROMPT_TOKENS), 4)  # warm both sides alike
        bare_stream(bare, prompts.make(PROMPT_TOKENS), 4)
        for i in range(cfg.repeats):
            prompt = prompts.make(PROMPT_TOKENS)
            for side in ("stream", "bare") if i % 2 == 0 else ("bare", "stream"):
                got = (
                    stream_completion(function, model, prompt, cfg.n_generate)
                    if side == "stream"
                    else bare_stream(bare, prompt, cfg.n_generate)
                )
                stream[side].append(got)
            progress(
                f"llama: stream {i + 1}/{cfg.repeats}: URL first token "
                f"{stream['stream'][-1].first_ms:.1f} ms, "
                f"{_rate(stream['stream'][-1])} tokens/s; bare {stream['bare'][-1].first_ms:.1f} ms, "
                f"{_rate(stream['bare'][-1])} tokens/s"
            )
        notes = itertools.count(1)
        stream_chat(function, model, f"Note {next(notes)}. {CHAT_TASK}", 4, schema=True)  # warm the path
        for i in range(cfg.repeats):
            for side in ("json_schema", "free") if i % 2 == 0 else ("free", "json_schema"):
                # The same message but for its number: llama.cpp reuses the cached prompt up to the first
                # difference, so each request pays for the same part of its prompt (the chat template's
                # opening is cached for both alike).
                content = f"Note {next(notes)}. {CHAT_TASK}"
                chat[side].append(
                    stream_chat(function, model, content, cfg.n_generate, schema=side == "json_schema")
                )
            progress(
                f"llama: json schema {i + 1}/{cfg.repeats}: {_rate(chat['json_schema'][-1])} tokens/s "
                f"({chat['json_schema'][-1].events} tokens), free {_rate(chat['free'][-1])} tokens/s "
                f"({chat['free'][-1].events} tokens)"
            )
        logged = _logged_threads(function.log_path)
    _check_constrained(chat["json_schema"])
    return summarise(stream, chat, threads, logged)


def _rate(streamed: Streamed) -> str:
    rate = streamed.tokens_per_s
    return "n/a" if rate is None else f"{rate:.1f}"


def _check_constrained(answers: list[Streamed]) -> None:
    """The schema was applied: each constrained answer is a JSON object's text (maybe cut at the budget)."""
    for answer in answers:
        if not answer.text.lstrip().startswith("{"):
            raise RuntimeError(f"a json_schema answer is not JSON: {answer.text[:200]!r}")


def _logged_threads(log: Path) -> int | None:
    for line in log.read_text(errors="replace").splitlines():
        if '"model loaded"' in line and "{" in line:
            try:
                return int(json.loads(line[line.index("{") :])["n_threads"])
            except (ValueError, KeyError):
                return None
    return None


def _rates(answers: list[Streamed]) -> dict[str, Any]:
    rates = [rate for a in answers if (rate := a.tokens_per_s) is not None]
    if not rates:
        raise RuntimeError("no streamed answer had two tokens or more: nothing to take a speed from")
    return summarize(rates)


def summarise(
    stream: dict[str, list[Streamed]], chat: dict[str, list[Streamed]], threads: int, logged: int | None
) -> dict[str, Any]:
    """The ``llama.stream_*`` and ``llama.json_schema_*`` keys of results.json."""
    first = {side: summarize([a.first_ms for a in answers]) for side, answers in stream.items()}
    rates = {side: _rates(answers) for side, answers in stream.items()}
    chat_rates = {side: _rates(answers) for side, answers in chat.items()}
    chat_first = {side: summarize([a.first_ms for a in answers]) for side, answers in chat.items()}
    return {
        "stream_first_byte_ms": first["stream"]["median"],
        "stream_tokens_per_s": rates["stream"]["median"],
        "bare_first_token_ms": first["bare"]["median"],
        "bare_stream_tokens_per_s": rates["bare"]["median"],
        "stream_vs_bare_first_token": first["stream"]["median"] / first["bare"]["median"],
        "stream_vs_bare_tokens_per_s": rates["stream"]["median"] / rates["bare"]["median"],
        "stream_tokens": summarize([float(a.events) for a in stream["stream"]])["median"],
        "stream_reported_tokens": median_or_none(
            [None if a.reported_tokens is None else float(a.reported_tokens) for a in stream["stream"]]
        ),
        "stream_threads": threads,
        "stream_logged_threads": logged,
        "stream_method": STREAM_METHOD,
        "json_schema_tokens_per_s": chat_rates["json_schema"]["median"],
        "free_chat_tokens_per_s": chat_rates["free"]["median"],
        "json_schema_vs_free_tokens_per_s": chat_rates["json_schema"]["median"]
        / chat_rates["free"]["median"],
        "json_schema_first_token_ms": chat_first["json_schema"]["median"],
        "free_chat_first_token_ms": chat_first["free"]["median"],
        "json_schema_tokens": summarize([float(a.events) for a in chat["json_schema"]])["median"],
        "free_chat_tokens": summarize([float(a.events) for a in chat["free"]])["median"],
        "json_schema_method": JSON_SCHEMA_METHOD,
        "json_schema": SCHEMA,
        "stream_spread": {
            "stream_first_byte_ms": first["stream"],
            "bare_first_token_ms": first["bare"],
            "stream_tokens_per_s": rates["stream"],
            "bare_stream_tokens_per_s": rates["bare"],
            "json_schema_tokens_per_s": chat_rates["json_schema"],
            "free_chat_tokens_per_s": chat_rates["free"],
            "json_schema_first_token_ms": chat_first["json_schema"],
            "free_chat_first_token_ms": chat_first["free"],
        },
    }
