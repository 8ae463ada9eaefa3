"""Both functions on localhost, each as Lambda runs it, with a Function URL and an Invoke API.

For each function::

    Function URL front (8080/8081) ─┐
                                    ├─> LocalFunction ──> Runtime API stand-in ──> runtime process
    Invoke API (9000/9001) ─────────┘   (one at a time)   (local.runtime_api)      (the image's ENTRYPOINT)

``local.runtime_api.LocalFunction`` plays Lambda's side of the Runtime API and
passes a streamed answer on piece by piece, so the generator's URL (invoke
mode RESPONSE_STREAM, as deployed) and ``InvokeWithResponseStream`` deliver
tokens as they are generated. The runtime's output and the platform's lines
(START, END, REPORT, INIT_REPORT) go to a log file that a ``LogTail`` thread
echoes to the console.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from local.invoke_api import InvokeApi
from local.rie import ROOT, FunctionSpec
from local.runtime_api import LocalFunction, Snapshots
from local.url_front import (
    FunctionUrlFront,
    HttpAnswer,
    build_event,
    map_response,
    map_streamed_response,
)
from stacks.config import UrlInvokeMode

Echo = Callable[[str], None]

LOG_DIR = ROOT / ".cache" / "local" / "logs"
# The per-invoke platform lines; shown with --verbose only.
_QUIET = re.compile(r"^(START|END|REPORT) RequestId:")


@dataclass(frozen=True)
class FunctionPlan:
    """One function to serve: what to run and where to answer."""

    key: str
    """Short name used in console prefixes and log file names (``llama``, ``embeddings``)."""
    spec: FunctionSpec
    invoke_port: int
    """Lambda Invoke API port; 0 picks a free one."""
    url_port: int
    """Function URL port; 0 picks a free one."""
    description: str = ""
    url_invoke_mode: UrlInvokeMode = "BUFFERED"
    """How the Function URL answers: BUFFERED, or RESPONSE_STREAM (as the piece-by-piece answer comes)."""
    snap_start: bool = False
    """Initialise with ``AWS_LAMBDA_INITIALIZATION_TYPE=snap-start`` and go through the restore lifecycle."""


class LogTail(threading.Thread):
    """Echo the lines appended to a log file, prefixed, until stopped."""

    def __init__(self, path: Path, prefix: str, echo: Echo, *, verbose: bool) -> None:
        super().__init__(name=f"log-{prefix}", daemon=True)
        self.path = path
        self.prefix = prefix
        self.echo = echo
        self.verbose = verbose
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=2)

    def run(self) -> None:
        while not self.path.exists() and not self._stop_event.wait(0.05):
            pass
        with self.path.open("rb") as handle:
            pending = b""
            while True:
                chunk = handle.readline()
                if chunk:
                    pending += chunk
                    if pending.endswith(b"\n"):
                        self._line(pending.decode("utf-8", "replace").rstrip("\r\n"))
                        pending = b""
                    continue
                if self._stop_event.wait(0.05):
                    break
            if pending:
                self._line(pending.decode("utf-8", "replace"))

    def _line(self, line: str) -> None:
        if self.verbose or not _QUIET.search(line):
            self.echo(f"[{self.prefix}] {line}")


@dataclass
class RunningFunction:
    """A started function and the servers in front of it."""

    plan: FunctionPlan
    function: LocalFunction
    invoke_api: InvokeApi
    url_front: FunctionUrlFront
    log: LogTail
    log_path: Path
    ready_s: float | None = None

    @property
    def key(self) -> str:
        return self.plan.key

    @property
    def url(self) -> str:
        return self.url_front.url

    @property
    def endpoint(self) -> str:
        return self.invoke_api.url

    def runtime_pids(self) -> list[int]:
        """The runtime process (and any children) of the current execution environment."""
        return self.function.runtime_pids()

    def emulator_alive(self) -> bool:
        """True while the Runtime API stand-in serves (a crashed runtime is replaced at the next invoke)."""
        return self.function.alive()

    def call(
        self, method: str, target: str, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> tuple[int, bytes, str | None]:
        """Send one request through the Function URL path without HTTP (warm-up, the banner's model name)."""
        event = build_event(
            method=method,
            target=target,
            headers=list((headers or {}).items()),
            body=body,
            source_ip="127.0.0.1",
            url_id=self.key,
        )
        outcome = self.function.invoke(json.dumps(event).encode()).result()
        answer: HttpAnswer
        if self.plan.url_invoke_mode == "RESPONSE_STREAM":
            answer, note = map_streamed_response(outcome)
        else:
            answer, note = map_response(outcome)
        return answer.status, answer.body, note


@dataclass
class LocalStack:
    """Start, warm and stop a set of functions; a context manager."""

    plans: list[FunctionPlan]
    echo: Echo = print
    verbose: bool = False
    log_dir: Path = LOG_DIR
    snapshots: Callable[[], Snapshots] | None = None
    """Makes the SnapStart seam of each function whose plan has snap_start (default: in place)."""
    functions: dict[str, RunningFunction] = field(default_factory=dict)

    def start(self) -> LocalStack:
        try:
            for plan in self.plans:
                self.functions[plan.key] = self._start_one(plan)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_one(self, plan: FunctionPlan) -> RunningFunction:
        log_path = self.log_dir / f"{plan.key}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_bytes(b"")  # one run per file
        tail = LogTail(log_path, plan.key, self.echo, verbose=self.verbose)
        tail.start()
        snapshots = self.snapshots() if self.snapshots is not None and plan.snap_start else None
        function = LocalFunction(plan.spec, log_path, snap_start=plan.snap_start, snapshots=snapshots)
        try:
            function.start()
            url_front = FunctionUrlFront(
                function,
                port=plan.url_port,
                url_id=plan.key,
                invoke_mode=plan.url_invoke_mode,
                log=lambda line: self.echo(f"[{plan.key} url] {line}"),
            )
            invoke_api = InvokeApi(
                function, port=plan.invoke_port, log=lambda line: self.echo(f"[{plan.key} invoke] {line}")
            )
        except BaseException:
            function.stop()
            tail.stop()
            raise
        url_front.start()
        invoke_api.start()
        return RunningFunction(plan, function, invoke_api, url_front, tail, log_path)

    def warm_up(self, *, progress_every_s: float = 5.0) -> dict[str, float]:
        """Run each function's init with a GET /health; report progress and the time each took.

        Raises RuntimeError naming the function when one does not come up healthy.
        """
        results: dict[str, tuple[int, bytes, str | None, float]] = {}

        def warm(function: RunningFunction) -> None:
            started = time.perf_counter()
            status, body, note = function.call("GET", "/health")
            results[function.key] = (status, body, note, time.perf_counter() - started)

        threads = {
            key: threading.Thread(target=warm, args=(function,), name=f"warm-{key}", daemon=True)
            for key, function in self.functions.items()
        }
        started = time.perf_counter()
        for key, thread in threads.items():
            self.echo(f"{key}: starting (the init phase loads the model)...")
            thread.start()
        last_report = started
        while any(thread.is_alive() for thread in threads.values()):
            time.sleep(0.1)
            now = time.perf_counter()
            if now - last_report >= progress_every_s:
                waiting = [key for key, thread in threads.items() if thread.is_alive()]
                self.echo(f"still loading after {now - started:.0f} s: {', '.join(waiting)}")
                last_report = now
        failures = []
        timings: dict[str, float] = {}
        for key, (status, body, note, elapsed) in results.items():
            function = self.functions[key]
            if status != 200:
                detail = note or body[:300].decode("utf-8", "replace")
                failures.append(f"{key}: GET /health answered {status}: {detail} (log: {function.log_path})")
                continue
            function.ready_s = elapsed
            timings[key] = elapsed
            env = function.function.environment()
            init = env.init_ms if env is not None else None
            init_text = f", init phase {init / 1000:.1f} s" if init is not None else ""
            self.echo(f"{key}: ready in {elapsed:.1f} s{init_text}")
        if failures:
            raise RuntimeError("a function did not start:\n  " + "\n  ".join(failures))
        return timings

    def dead_functions(self) -> list[str]:
        """The functions whose Runtime API stand-in stopped serving."""
        return [key for key, function in self.functions.items() if not function.emulator_alive()]

    def stop(self) -> None:
        for function in reversed(list(self.functions.values())):
            function.url_front.stop()
            function.invoke_api.stop()
            function.function.stop()
            function.log.stop()
        self.functions.clear()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
