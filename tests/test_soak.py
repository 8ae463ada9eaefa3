"""Soak: a few hundred mixed good and bad requests against the local stack.

Each function must answer every request as expected, never restart its
runtime process (same PIDs throughout) and keep its memory flat: the
runtime's resident set (VmRSS) after the soak may exceed the one measured
after a warm-up round by at most RSS_GROWTH_LIMIT_MB. The figures are printed
(run with ``-s`` to see them) and written to .cache/local/soak-rss.json.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from local.rie import ROOT
from local.stack import RunningFunction
from tests.harness import shared_stack

pytestmark = pytest.mark.slow

RSS_GROWTH_LIMIT_MB = 30.0
REPORT = ROOT / ".cache" / "local" / "soak-rss.json"
JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Call:
    """One request and the status it must get."""

    name: str
    method: str
    path: str
    body: bytes | None
    expected: int
    headers: dict[str, str] | None = None


def post(name: str, path: str, payload: object, expected: int) -> Call:
    return Call(name, "POST", path, json.dumps(payload).encode(), expected, JSON)


def llama_calls(model: str) -> list[Call]:
    good = [
        post("direct prompt", "/", {"prompt": "llamas are", "n-generate": 2}, 200),
        post("direct chat", "/", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}, 200),
        post("completion", "/v1/completions", {"model": model, "prompt": "The sky is", "max_tokens": 3}, 200),
        post(
            "completion stream",
            "/v1/completions",
            {"prompt": "One, two,", "max_tokens": 2, "stream": True},
            200,
        ),
        post(
            "chat",
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "Say yes."}], "max_tokens": 3, "seed": 4},
            200,
        ),
        post(
            "chat stream",
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "Go"}], "max_tokens": 2, "stream": True},
            200,
        ),
        post("tokenize", "/tokenize", {"content": "llamas are woolly", "with_pieces": True}, 200),
        post("detokenize", "/detokenize", {"tokens": [1, 2, 3]}, 200),
        Call("models", "GET", "/v1/models", None, 200),
        Call("health", "GET", "/health", None, 200),
        Call(
            "base64 body",
            "POST",
            "/",
            json.dumps({"prompt": "hello", "n-generate": 1}).encode(),
            200,
            {"Content-Type": "application/octet-stream"},
        ),
    ]
    bad = [
        Call("invalid json", "POST", "/v1/completions", b'{"prompt": ', 400, JSON),
        Call("empty body", "POST", "/", b"", 400, JSON),
        post("unknown field", "/", {"prompt": "x", "n_generate": 1}, 400),
        post("wrong type", "/v1/chat/completions", {"messages": "hi"}, 400),
        post("over the token limit", "/v1/completions", {"prompt": "x", "max_tokens": 100_000}, 400),
        post("unknown model", "/v1/completions", {"model": "gpt-4o", "prompt": "x", "max_tokens": 1}, 404),
        post(
            "both prompt and messages",
            "/",
            {"prompt": "x", "messages": [{"role": "user", "content": "y"}]},
            400,
        ),
        post("token id out of range", "/detokenize", {"tokens": [10_000_000]}, 400),
        post("json array", "/", ["not", "an", "object"], 400),
        Call("wrong method", "DELETE", "/v1/completions", None, 405),
        Call("unknown route", "GET", "/v2/anything", None, 404),
    ]
    return good + bad


def embeddings_calls(model: str) -> list[Call]:
    texts = [f"sentence number {i} about llamas and alpacas" for i in range(16)]
    good = [
        post("embed one", "/embed", {"inputs": "First text"}, 200),
        post("embed seed", "/embed", {"inputs": ["First text", "Second text"]}, 200),
        post("embed root", "/", {"inputs": texts}, 200),
        post("embed dims", "/embed", {"inputs": texts[:4], "dimensions": 64, "normalize": False}, 200),
        post("openai float", "/v1/embeddings", {"model": model, "input": texts[:3]}, 200),
        post(
            "openai base64",
            "/v1/embeddings",
            {"model": model, "input": "x", "encoding_format": "base64"},
            200,
        ),
        post("truncated", "/embed", {"inputs": "word " * 2000, "truncate": True}, 200),
        post("tokenize", "/tokenize", {"inputs": ["hi there", "general kenobi"]}, 200),
        Call("info", "GET", "/info", None, 200),
        Call("health", "GET", "/health", None, 200),
        Call(
            "form-encoded body",
            "POST",
            "/embed",
            json.dumps({"inputs": "curl -d"}).encode(),
            200,
            {"Content-Type": "application/x-www-form-urlencoded"},
        ),
    ]
    bad = [
        Call("invalid json", "POST", "/embed", b"{", 400, JSON),
        post("empty inputs", "/embed", {"inputs": []}, 400),
        post("empty string", "/embed", {"inputs": [""]}, 400),
        post("too many inputs", "/embed", {"inputs": ["x"] * 257}, 413),
        post("too long without truncate", "/embed", {"inputs": "word " * 2000, "truncate": False}, 413),
        post("wrong type", "/embed", {"inputs": "x", "normalize": "yes"}, 422),
        post("unknown prompt", "/embed", {"inputs": "x", "prompt_name": "query"}, 422),
        post("dimensions zero", "/embed", {"inputs": "x", "dimensions": 0}, 422),
        post("token ids", "/v1/embeddings", {"model": model, "input": [[1, 2, 3]]}, 400),
        post("unknown model", "/v1/embeddings", {"model": "text-embedding-3-small", "input": "x"}, 404),
        Call("wrong method", "GET", "/embed", None, 405),
    ]
    return good + bad


def send(function: RunningFunction, call: Call) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", function.url_front.port, timeout=120)
    try:
        connection.request(call.method, call.path, body=call.body, headers=call.headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def rss_mb(pids: list[int]) -> float:
    total_kb = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total_kb += int(line.split()[1])
    return total_kb / 1024


def run(
    function: RunningFunction, calls: list[Call], rounds: int, rng: random.Random, threads: int = 2
) -> list[str]:
    """Send ``rounds`` random calls from ``threads`` clients; return what went wrong."""
    plan = [rng.choice(calls) for _ in range(rounds)]
    problems: list[str] = []
    lock = threading.Lock()

    def worker(part: list[Call]) -> None:
        for call in part:
            status, body = send(function, call)
            if status != call.expected:
                with lock:
                    problems.append(f"{call.name}: {status} (expected {call.expected}): {body[:200]!r}")

    workers = [threading.Thread(target=worker, args=(plan[i::threads],)) for i in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    return problems


def _model(function: RunningFunction) -> str:
    status, body, _ = function.call("GET", "/health")
    assert status == 200
    health = json.loads(body)
    return str(health.get("model_id") or health["model"])


CASES: dict[str, tuple[Callable[[str], list[Call]], int, int]] = {
    # function: (calls, warm-up requests, soak requests)
    # (the generator's resident set settles after about 200 requests: KV cache and model pages touched)
    "embeddings": (embeddings_calls, 100, 400),
    "llama": (llama_calls, 200, 300),
}


@pytest.mark.parametrize("key", list(CASES))
def test_soak_keeps_one_process_and_flat_memory(key: str) -> None:
    make_calls, warmup, rounds = CASES[key]
    function = shared_stack().functions[key]
    calls = make_calls(_model(function))
    rng = random.Random(20261122)  # noqa: S311 - a reproducible mix, not a secret
    # Given a warm runtime that has served every kind of request once and then a warm-up round
    pids = function.runtime_pids()
    assert pids
    start_rss = rss_mb(pids)
    for call in calls:
        assert send(function, call)[0] == call.expected, call.name
    assert run(function, calls, warmup, rng) == []
    warm_rss = rss_mb(pids)
    # When a few hundred more mixed requests arrive from two clients at once
    problems = run(function, calls, rounds, rng)
    end_rss = rss_mb(pids)
    figures = {
        "function": key,
        "runtime_pids": pids,
        "requests": len(calls) + warmup + rounds,
        "rss_mb_before_warmup": round(start_rss, 1),
        "rss_mb_after_warmup": round(warm_rss, 1),
        "rss_mb_after_soak": round(end_rss, 1),
        "growth_after_warmup_mb": round(end_rss - warm_rss, 1),
    }
    print(f"\nsoak {key}: {json.dumps(figures)}")
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(REPORT.read_text()) if REPORT.is_file() else {}
    REPORT.write_text(json.dumps({**previous, key: figures}, indent=2) + "\n")
    # Then every answer was the expected one, the process never restarted, and memory stayed flat
    assert problems == []
    assert function.emulator_alive()
    assert function.runtime_pids() == pids
    assert end_rss - warm_rss < RSS_GROWTH_LIMIT_MB, figures
