"""The local stack for the test suite: started once per test session, as `make local` starts it.

Several test modules (clients, OpenAPI, soak) call the same running functions.
A session-scoped fixture defined in each module would start one stack per
module, so the modules' fixtures share this process-wide instance instead; it
stops when the interpreter (pytest) exits.

``echo_function`` serves a throwaway handler that echoes the event it gets,
for tests of the Function URL mapping and of the clients' requests.
"""

from __future__ import annotations

import atexit
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from local.functions import LocalOptions, build_plans
from local.rie import ROOT, FunctionSpec
from local.stack import FunctionPlan, LocalStack, RunningFunction

API_KEY = "local-test-key-0123456789"
"""The key of the API-key-mode stack (the handlers want at least 16 characters)."""

GENERATION_LIMITS = {"DEFAULT_MAX_TOKENS": "8", "MAX_TOKENS_LIMIT": "16"}
"""The tests' generator answers in a few tokens: property-based requests may ask for up to the limit."""
LLAMA_TIMEOUT_S = 60
"""Bounds any request that does not stop by itself (the deployed timeout is 300 s)."""

_lock = threading.Lock()
_stacks: dict[bool | str, LocalStack] = {}
_lines: list[str] = []


def console() -> list[str]:
    """What the shared stacks echoed so far (handler logs and access lines)."""
    return _lines


def shared_stack(*, api_key: bool = False) -> LocalStack:
    """Both functions on free ports, warmed up; the same instance for the whole session."""
    with _lock:
        stack = _stacks.get(api_key)
        if stack is not None:
            return stack
        options = LocalOptions(
            api_key=API_KEY if api_key else None,
            llama_invoke_port=0,
            llama_url_port=0,
            embeddings_invoke_port=0,
            embeddings_url_port=0,
            timeout_s={"llama": LLAMA_TIMEOUT_S},
            extra_environment={"llama": GENERATION_LIMITS},
        )
        suffix = "-api-key" if api_key else ""
        stack = LocalStack(
            build_plans(options, echo=_lines.append),
            echo=_lines.append,
            log_dir=ROOT / ".cache" / "local" / f"test-logs{suffix}",
        )
        stack.start()
        try:
            stack.warm_up()
        except BaseException:
            stack.stop()
            raise
        _stacks[api_key] = stack
        return stack


STREAMING_LIMITS = {"DEFAULT_MAX_TOKENS": "8", "MAX_TOKENS_LIMIT": "256"}
"""The streaming tests' generator may be asked for answers long enough to read while they are generated."""


def streaming_stack() -> LocalStack:
    """The generator alone, as `make local` runs it (URL in RESPONSE_STREAM mode), for the streaming tests.

    Its own stack, so that a long answer asked for there does not change the limits the other
    modules' requests are checked against; started once per session, like ``shared_stack``.
    """
    with _lock:
        stack = _stacks.get("streaming")
        if stack is not None:
            return stack
        options = LocalOptions(
            only="llama",
            llama_invoke_port=0,
            llama_url_port=0,
            timeout_s={"llama": LLAMA_TIMEOUT_S},
            extra_environment={"llama": STREAMING_LIMITS},
        )
        stack = LocalStack(
            build_plans(options, echo=_lines.append),
            echo=_lines.append,
            log_dir=ROOT / ".cache" / "local" / "test-logs-streaming",
        )
        stack.start()
        try:
            stack.warm_up()
        except BaseException:
            stack.stop()
            raise
        _stacks["streaming"] = stack
        return stack


def stop_all() -> None:
    with _lock:
        for stack in _stacks.values():
            stack.stop()
        _stacks.clear()


atexit.register(stop_all)

ECHO_HANDLER = textwrap.dedent(
    """
    import base64, json, os, time

    def lambda_handler(event, context):
        path = event.get("rawPath", "") if isinstance(event, dict) else ""
        if path == "/raise" or (isinstance(event, dict) and event.get("raise")):
            raise ValueError("raised on purpose")
        if path == "/string":
            return "Hello, world!"
        if path == "/plain-json":
            return {"message": "no statusCode here"}
        if path == "/structured":
            return {
                "statusCode": 201,
                "headers": {"Content-Type": "text/plain", "X-Custom": "yes"},
                "cookies": ["a=1; Max-Age=60", "b=2"],
                "body": "created",
            }
        if path == "/binary":
            return {
                "statusCode": 200,
                "headers": {"content-type": "application/octet-stream"},
                "body": base64.b64encode(bytes(range(256))).decode(),
                "isBase64Encoded": True,
            }
        if path == "/bad-status":
            return {"statusCode": "two hundred", "body": "x"}
        if path == "/sleep":
            time.sleep(0.3)
        if path == "/exit":
            os._exit(3)
        if path == "/pid":
            return {"statusCode": 200, "body": str(os.getpid())}
        return {"statusCode": 200, "headers": {"content-type": "application/json"}, "body": json.dumps(event)}
    """
)
"""A handler that answers with the event it was given (and misbehaves on a few paths, on purpose)."""


@contextmanager
def echo_function(folder: Path, *, echo: list[str] | None = None) -> Iterator[RunningFunction]:
    """The echo handler in ``folder``, under the real runtime client on the Runtime API stand-in."""
    (folder / "handler.py").write_text(ECHO_HANDLER)
    spec = FunctionSpec(name="echo", code_dir=folder, memory_mb=256, timeout_s=10)
    plan = FunctionPlan(key="echo", spec=spec, invoke_port=0, url_port=0)
    lines = echo if echo is not None else []
    with LocalStack([plan], echo=lines.append, log_dir=folder / "logs") as stack:
        stack.warm_up()
        yield stack.functions["echo"]
