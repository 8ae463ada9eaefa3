"""Both functions on localhost, each as Lambda runs it, with a Function URL and an Invoke API.

For each function::

    Function URL front (8080/8081) ─┐
                                    ├─> FunctionInvoker ─> RIE ─> awslambdaric ─> handler
    Invoke API (9000/9001) ─────────┘   (one at a time)

The emulator (``local.rie.EmulatedFunction``) listens on a private port; the
two public ports share one ``FunctionInvoker`` so that the emulator never sees
two invokes at once. Its output (the runtime's logs and the emulator's own)
goes to a log file that a ``LogTail`` thread echoes to the console.
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
from local.invoker import FunctionInvoker, InvokeOutcome
from local.rie import ROOT, EmulatedFunction, FunctionSpec
from local.url_front import FunctionUrlFront, build_event, map_response

Echo = Callable[[str], None]

LOG_DIR = ROOT / ".cache" / "local" / "logs"
INIT_REPORT = re.compile(r"INIT REPORT\(durationMs: ([0-9.]+)\)")
# The emulator's own chatter and per-invoke markers; shown with --verbose only.
_QUIET = re.compile(r"\(rapid\)|^(START|END) RequestId:|^REPORT RequestId:")


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


class LogTail(threading.Thread):
    """Echo the lines appended to a log file, prefixed, until stopped."""

    def __init__(self, path: Path, prefix: str, echo: Echo, *, verbose: bool) -> None:
        super().__init__(name=f"log-{prefix}", daemon=True)
        self.path = path
        self.prefix = prefix
        self.echo = echo
        self.verbose = verbose
        self.init_ms: float | None = None
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
        match = INIT_REPORT.search(line)
        if match:
            self.init_ms = float(match.group(1))
        if self.verbose or not _QUIET.search(line):
            self.echo(f"[{self.prefix}] {line}")


@dataclass
class RunningFunction:
    """A started function and the servers in front of it."""

    plan: FunctionPlan
    emulated: EmulatedFunction
    invoker: FunctionInvoker
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
        """The runtime process (and any children) behind the emulator."""
        return self.emulated.runtime_pids()

    def emulator_alive(self) -> bool:
        process = self.emulated.process
        return process is not None and process.poll() is None

    def call(
        self, method: str, target: str, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> tuple[int, bytes, str | None]:
        """Send one request through the Function URL path without HTTP (used for warm-up)."""
        event = build_event(
            method=method,
            target=target,
            headers=list((headers or {}).items()),
            body=body,
            source_ip="127.0.0.1",
            url_id=self.key,
        )
        outcome: InvokeOutcome = self.invoker.invoke(json.dumps(event).encode())
        answer, note = map_response(outcome)
        return answer.status, answer.body, note


@dataclass
class LocalStack:
    """Start, warm and stop a set of functions; a context manager."""

    plans: list[FunctionPlan]
    echo: Echo = print
    verbose: bool = False
    log_dir: Path = LOG_DIR
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
        emulated = EmulatedFunction(plan.spec, log_path=log_path)
        try:
            emulated.start()
            # The emulator enforces the timeout; the margin covers an init run inside the first invoke.
            invoker = FunctionInvoker(emulated.invoke_url, timeout_s=plan.spec.timeout_s + 60)
            url_front = FunctionUrlFront(
                invoker,
                port=plan.url_port,
                url_id=plan.key,
                log=lambda line: self.echo(f"[{plan.key} url] {line}"),
            )
            invoke_api = InvokeApi(
                invoker, port=plan.invoke_port, log=lambda line: self.echo(f"[{plan.key} invoke] {line}")
            )
        except BaseException:
            emulated.stop()
            tail.stop()
            raise
        url_front.start()
        invoke_api.start()
        return RunningFunction(plan, emulated, invoker, invoke_api, url_front, tail, log_path)

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
            init = function.log.init_ms
            init_text = f", init phase {init / 1000:.1f} s" if init is not None else ""
            self.echo(f"{key}: ready in {elapsed:.1f} s{init_text}")
        if failures:
            raise RuntimeError("a function did not start:\n  " + "\n  ".join(failures))
        return timings

    def dead_emulators(self) -> list[str]:
        return [key for key, function in self.functions.items() if not function.emulator_alive()]

    def stop(self) -> None:
        for function in reversed(list(self.functions.values())):
            function.url_front.stop()
            function.invoke_api.stop()
            function.emulated.stop()
            function.log.stop()
        self.functions.clear()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
