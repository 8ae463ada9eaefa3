"""A local stand-in for Lambda's Runtime API: one execution environment per function, streams passed on.

The Runtime Interface Emulator reads a streamed response to its end before it
answers, so it cannot show a token reaching a caller early. This module plays
the Lambda side of the Runtime API itself (AWS Lambda developer guide, "Using
the Lambda runtime API for custom runtimes", "Response streaming", "SnapStart
runtime hooks") for one function, and hands every piece of an answer to the
caller as it arrives::

    front (Function URL, Invoke API) ─► LocalFunction.invoke() ─► Call ◄─ Runtime API ◄─ runtime process
                                        (one at a time)           (events: Head, bytes..., Done)

What it does as Lambda does:

- one execution environment: one runtime process, started with the Lambda
  environment variables (``local.rie.FunctionSpec``) and
  ``AWS_LAMBDA_RUNTIME_API`` pointing here; started by the first invoke (an
  on-demand init), which pays the init;
- one invoke at a time: the others wait their turn;
- an init error (``/runtime/init/error``, or a runtime that exits before asking
  for work) fails the invoke that caused the init, and the next invoke starts a
  new environment;
- the function timeout: at the deadline the process is killed, the invoke is
  answered ``Sandbox.Timedout`` and the next invoke gets a new environment; a
  runtime that exits mid-invoke is a ``Runtime.ExitError`` the same way;
- responses: buffered (6 MB at most, else ``Function.ResponseSizeTooLarge``) or
  streamed (``Lambda-Runtime-Function-Response-Mode: streaming``, chunked): each
  chunk becomes an event of the Call as soon as it is read, the error trailers
  (``Lambda-Runtime-Function-Error-Type`` / ``-Body``) a failed ``Done``;
- a caller that goes away (``Call.cancel``): the runtime's streamed response
  connection is shut down, so its next write fails and it stops producing;
- SnapStart (``snap_start=True``): the runtime is started with
  ``AWS_LAMBDA_INITIALIZATION_TYPE=snap-start``; when it waits on
  ``GET /runtime/restore/next`` (its before-snapshot hooks have run) the init is
  over (an ``INIT_REPORT`` line); ``Snapshots.take`` may checkpoint it there,
  ``Snapshots.restore`` gives back a running copy and the held GET is answered,
  so the runtime runs its after-restore hooks; its next ``/invocation/next``
  ends the restore, timed in the first REPORT's ``Restore Duration``;
- log lines in Lambda's text format (START, END, REPORT with Init Duration or
  Restore Duration, INIT_REPORT, "Task timed out"), written to the function's
  log file beside the runtime's own output.

What it does not: concurrency (Lambda would start more environments; here
invokes queue), the 200 MB stream cap and its bandwidth limit after 6 MB,
extensions, the 10-second init cap (an init may take up to the function
timeout, as Lambda allows when it re-runs a slow init inside the first invoke).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BufferedIOBase
from pathlib import Path
from typing import IO, Any, Literal, Protocol, Self

from local.rie import FunctionSpec, _descendants

API = "/2018-06-01/runtime"
HTTP_INTEGRATION = "application/vnd.awslambda.http-integration-response"
MAX_BUFFERED_BYTES = 6 * 1024 * 1024
"""Lambda's limit for a buffered response (and for a plain Invoke's answer)."""
ERROR_TYPE = "Lambda-Runtime-Function-Error-Type"
ERROR_BODY = "Lambda-Runtime-Function-Error-Body"
ACCOUNT = "000000000000"
DISCARD_LIMIT_BYTES = 64 * 1024 * 1024
"""A refused body up to this size is read and dropped before the error; beyond, the connection is cut."""

Logger = Callable[[str], None]


# ---------------------------------------------------------------------- what an invoke produces


@dataclass(frozen=True)
class Head:
    """The runtime began its answer: its content type, and whether it streams."""

    content_type: str
    streaming: bool


@dataclass(frozen=True)
class FunctionError:
    """An invoke that failed, as Lambda reports it (``X-Amz-Function-Error: Unhandled`` and this payload)."""

    error_type: str
    payload: bytes
    """The error object as JSON: ``{"errorType", "errorMessage", ...}``."""

    @classmethod
    def of(cls, error_type: str, message: str) -> FunctionError:
        body = json.dumps({"errorType": error_type, "errorMessage": message}).encode()
        return cls(error_type, body)

    @property
    def message(self) -> str:
        with contextlib.suppress(ValueError, UnicodeDecodeError, AttributeError):
            return str(json.loads(self.payload).get("errorMessage", ""))
        return self.payload.decode("utf-8", "replace")


@dataclass(frozen=True)
class Done:
    """The invoke ended; ``error`` when it failed, before or after its first byte."""

    error: FunctionError | None = None


Event = Head | bytes | Done


@dataclass(frozen=True)
class InvokeOutcome:
    """A whole answer, as a buffered Invoke returns it."""

    body: bytes
    content_type: str = "application/json"
    function_error: str | None = None
    """``Unhandled`` when the function failed (raised, timed out, crashed), else None."""
    error: FunctionError | None = None

    def payload(self) -> Any:
        """The response payload as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            return None


class Call:
    """One invoke in flight: the runtime's answer as a queue of events, read by one caller.

    The events are a ``Head``, the body's pieces (``bytes``) as they arrive, and
    a ``Done``; an invoke that fails before answering has only the ``Done``.
    """

    def __init__(self, payload: bytes, *, client_context: str | None = None) -> None:
        self.request_id = str(uuid.uuid4())
        self.payload = payload
        self.client_context = client_context
        self.dispatched: float | None = None
        self.log_start = 0
        """Where the function's log ended when this invoke's turn came: its lines (init included) follow."""
        self.cancelled = threading.Event()
        self._events: queue.Queue[Event] = queue.Queue()
        self._lock = threading.Lock()
        self._done: Done | None = None
        self._stream: socket.socket | None = None
        self._on_done: list[Callable[[Call, Done], None]] = []

    # -- the stand-in's side

    def on_done(self, hook: Callable[[Call, Done], None]) -> None:
        self._on_done.append(hook)

    def begin(self, head: Head) -> bool:
        with self._lock:
            if self._done is not None:
                return False
            self._events.put(head)
            return True

    def put(self, data: bytes) -> bool:
        with self._lock:
            if self._done is not None:
                return False
            if data:
                self._events.put(data)
            return True

    def finish(self, done: Done) -> bool:
        """End the invoke (the first end wins); False if it had already ended."""
        with self._lock:
            if self._done is not None:
                return False
            self._done = done
            self._stream = None
        for hook in self._on_done:  # before the caller sees the end: the REPORT line is then written
            hook(self, done)
        self._events.put(done)
        return True

    @property
    def done(self) -> Done | None:
        return self._done

    def attach_stream(self, sock: socket.socket) -> bool:
        """Note the runtime's streamed-response connection; False if the caller already went away."""
        with self._lock:
            if self.cancelled.is_set() or self._done is not None:
                return False
            self._stream = sock
            return True

    def detach_stream(self) -> None:
        with self._lock:
            self._stream = None

    # -- the caller's side

    def next_event(self, timeout_s: float | None = None) -> Event | None:
        """The next event, or None when none came within ``timeout_s``."""
        try:
            return self._events.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def events(self) -> Iterator[Event]:
        """Every event up to and including the Done."""
        while True:
            event = self._events.get()
            yield event
            if isinstance(event, Done):
                return

    def cancel(self) -> None:
        """The caller went away: stop reading the runtime's stream, which makes it stop producing."""
        with self._lock:
            self.cancelled.set()
            sock = self._stream
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def result(self) -> InvokeOutcome:
        """Wait for the whole answer (a buffered Invoke; a stream is buffered here, as Lambda does)."""
        content_type = "application/json"
        parts: list[bytes] = []
        done = Done()
        for event in self.events():
            if isinstance(event, Head):
                content_type = event.content_type
            elif isinstance(event, bytes):
                parts.append(event)
            else:
                done = event
        if done.error is not None:
            return InvokeOutcome(done.error.payload, "application/json", "Unhandled", done.error)
        body = b"".join(parts)
        if len(body) > MAX_BUFFERED_BYTES:
            error = FunctionError.of(
                "Function.ResponseSizeTooLarge",
                f"Response payload size ({len(body)} bytes) exceeded maximum allowed payload size "
                f"({MAX_BUFFERED_BYTES} bytes).",
            )
            return InvokeOutcome(error.payload, "application/json", "Unhandled", error)
        return InvokeOutcome(body, content_type)


# ---------------------------------------------------------------------- processes and snapshots


class RuntimeProcess(Protocol):
    """A running runtime: started here, or restored from a snapshot."""

    @property
    def pid(self) -> int: ...

    def poll(self) -> int | None: ...

    def kill(self) -> None:
        """Kill it and everything it started."""
        ...


class SpawnedRuntime:
    """A runtime started by ``subprocess`` in a session of its own."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process

    @property
    def pid(self) -> int:
        return self.process.pid

    def poll(self) -> int | None:
        return self.process.poll()

    def kill(self) -> None:
        children = _descendants(self.process.pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        for pid in children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait()


def spawn_runtime(argv: list[str], env: Mapping[str, str], cwd: Path, output: IO[bytes]) -> RuntimeProcess:
    """Start a runtime as Lambda does: its own process (group), output to the function's log."""
    process = subprocess.Popen(
        argv,
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return SpawnedRuntime(process)


class Snapshots(Protocol):
    """The SnapStart seam: what happens while an initialised runtime waits on ``/runtime/restore/next``.

    ``launch`` starts a runtime that can be snapshotted; ``take`` snapshots it
    there (it may end the process); ``restore`` returns a running copy. Each
    copy's blocked GET is then answered (``release``); a copy restored with its
    connections closed finds that GET failed, counts it as restored, and
    reconnects with ``/runtime/invocation/next``.
    """

    def launch(self, argv: list[str], env: Mapping[str, str], cwd: Path, output: IO[bytes]) -> RuntimeProcess:
        """Start a runtime that ``take`` can snapshot."""
        ...

    def take(self, process: RuntimeProcess) -> bool:
        """Snapshot ``process``; True when later environments can be restored from it without an init."""
        ...

    def restore(self, release: Callable[[], None]) -> RuntimeProcess:
        """A running copy of the snapshot; calls ``release`` to answer a held ``restore/next``."""
        ...

    def close(self) -> None:
        """Forget the snapshot (the stack stops)."""
        ...


class InPlaceSnapshots:
    """No checkpoint: the initialised process itself is "restored" by answering its held GET.

    The lifecycle is Lambda's (before-snapshot hooks, restore/next, after-restore
    hooks); the memory is not copied, so each new environment initialises again.
    """

    def __init__(self) -> None:
        self._process: RuntimeProcess | None = None

    def launch(self, argv: list[str], env: Mapping[str, str], cwd: Path, output: IO[bytes]) -> RuntimeProcess:
        return spawn_runtime(argv, env, cwd, output)

    def take(self, process: RuntimeProcess) -> bool:
        self._process = process
        return False

    def restore(self, release: Callable[[], None]) -> RuntimeProcess:
        process, self._process = self._process, None
        if process is None:
            raise RuntimeError("no snapshot to restore: take() keeps one process, for one restore")
        release()
        return process

    def close(self) -> None:
        self._process = None


# ---------------------------------------------------------------------- one execution environment

State = Literal["init", "snapshot", "restoring", "ready", "dead"]


class Environment:
    """One runtime process and where it is in its life: init, (snapshot, restore,) ready, dead."""

    def __init__(self, kind: Literal["on-demand", "snap-start", "restore"]) -> None:
        self.kind = kind
        self.process: RuntimeProcess | None = None
        self.state: State = "restoring" if kind == "restore" else "init"
        self.started = time.monotonic()
        self.init_ms: float | None = None
        self.restore_started: float | None = None
        self.restore_ms: float | None = None
        self.failure: FunctionError | None = None
        self.current: Call | None = None
        self.reported_start = False
        """Whether an invoke's REPORT carried this environment's init or restore already."""
        self.expect_exit = False
        self.changed = threading.Condition()
        self.calls: queue.Queue[Call | None] = queue.Queue()
        self.released = threading.Event()

    def set_state(self, state: State, failure: FunctionError | None = None) -> None:
        with self.changed:
            if self.state == "dead":
                return
            now = time.monotonic()
            if state in ("snapshot", "ready") and self.state == "init":  # the init ended
                self.init_ms = (now - self.started) * 1000
            if state == "ready" and self.state == "restoring" and self.restore_started is not None:
                self.restore_ms = (now - self.restore_started) * 1000
            if failure is not None and self.failure is None:
                self.failure = failure
            self.state = state
            self.changed.notify_all()
        if state == "dead":
            self.released.set()
            self.calls.put(None)

    def alive(self) -> bool:
        return self.state != "dead"

    def wait_for(self, states: tuple[State, ...], timeout_s: float) -> bool:
        """Wait until the state is one of ``states`` (True) or dead / out of time (False)."""
        deadline = time.monotonic() + timeout_s
        with self.changed:
            while self.state not in states:
                if self.state == "dead":
                    return False
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.changed.wait(remaining)
            return True


# ---------------------------------------------------------------------- the function


@dataclass
class LocalFunction:
    """One function on the stand-in Runtime API; a context manager.

    ``invoke`` is the way in for every front; ``runtime_pids`` and ``alive``
    are for tests and the console.
    """

    spec: FunctionSpec
    log_path: Path
    snap_start: bool = False
    snapshots: Snapshots | None = None
    python: str = sys.executable
    extra_env: Mapping[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        if self.snapshots is None:
            self.snapshots = InPlaceSnapshots()
        self._server = _RuntimeApiServer((self.host, 0), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"runtime-api-{self.spec.name}", daemon=True
        )
        self._slot = threading.BoundedSemaphore(1)
        self._env: Environment | None = None
        self._env_lock = threading.Lock()
        self._snapshot_kept = False
        self._log_lock = threading.Lock()
        self._log: IO[bytes] | None = None
        self._timers: dict[str, threading.Timer] = {}
        self._stopped = False
        self.invocations = 0
        self.environments = 0

    # -- set-up

    @property
    def runtime_api(self) -> str:
        """``host:port`` of the Runtime API (``AWS_LAMBDA_RUNTIME_API``)."""
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def start(self) -> Self:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab", buffering=0)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped = True
        env, self._env = self._env, None
        if env is not None:
            self._kill(env, FunctionError.of("Local.Stopped", "the local stack stopped"))
        if self.snapshots is not None:
            self.snapshots.close()
        for timer in list(self._timers.values()):
            timer.cancel()
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def runtime_pids(self) -> list[int]:
        """The runtime process of the current environment and its children."""
        env = self._env
        if env is None or env.process is None or env.process.poll() is not None:
            return []
        return sorted({env.process.pid} | _descendants(env.process.pid))

    def alive(self) -> bool:
        """True while the stand-in serves (a dead runtime is replaced at the next invoke)."""
        return self._thread.is_alive() and not self._stopped

    # -- invokes

    def invoke(self, payload: bytes, *, client_context: str | None = None) -> Call:
        """Start one invoke once the previous one has ended; read the answer from the returned Call."""
        call = Call(payload, client_context=client_context)
        self._slot.acquire()
        # Only now: while it waited, the previous invoke wrote its lines up to its REPORT.
        call.log_start = self._log_offset()
        call.on_done(self._ended)
        self.invocations += 1
        try:
            env = self._environment_for(call)
        except BaseException as exc:
            call.finish(Done(FunctionError.of("Local.StandInError", f"{type(exc).__name__}: {exc}")))
            raise
        if env is not None:
            with env.changed:
                alive = env.state != "dead"
                if alive:
                    env.current = call
            if alive:
                env.calls.put(call)
            else:
                failure = env.failure or FunctionError.of("Runtime.ExitError", "Runtime exited")
                call.finish(Done(failure))
        return call

    def _environment_for(self, call: Call) -> Environment | None:
        """The ready environment, started (and initialised or restored) if need be; None if that failed."""
        with self._env_lock:
            env = self._env
            # An environment whose runtime has exited is never given work, even before its
            # watcher has marked it dead (Lambda replaces an environment that died while idle).
            exited = env is not None and env.process is not None and env.process.poll() is not None
            if env is not None and env.state != "dead" and not exited:
                return env
            env = self._new_environment()
            limit = max(10.0, float(self.spec.timeout_s))
            if self._bring_up(env, limit):
                return env
            phase = "restore" if env.restore_started is not None else "init"
            failure = env.failure or FunctionError.of(
                "Sandbox.Timedout",
                f"RequestId: {call.request_id} Error: the runtime's {phase} did not end in {limit:.0f} s",
            )
            if phase == "init":
                elapsed = (time.monotonic() - env.started) * 1000
                self._platform(
                    f"INIT_REPORT Init Duration: {elapsed:.2f} ms\tPhase: init\tStatus: error\t"
                    f"Error Type: {failure.error_type}"
                )
            self._kill(env, failure)
            self._platform(f"START RequestId: {call.request_id} Version: $LATEST")
            call.finish(Done(failure))
            return None

    def _bring_up(self, env: Environment, limit_s: float) -> bool:
        """Wait for the init (SnapStart: then snapshot and restore) until the runtime asks for work."""
        if env.kind == "snap-start":
            if not env.wait_for(("snapshot", "ready"), limit_s):
                return False
            if env.state == "snapshot":
                self._platform(
                    f"INIT_REPORT Init Duration: {env.init_ms or 0:.2f} ms\tPhase: init\tStatus: success"
                )
                if not self._restore(env):
                    return False
        return env.wait_for(("ready",), limit_s)

    def _new_environment(self) -> Environment:
        assert self.snapshots is not None
        kind: Literal["on-demand", "snap-start", "restore"] = "on-demand"
        if self.snap_start:
            kind = "restore" if self._snapshot_kept else "snap-start"
        env = Environment(kind)
        self._env = env
        self.environments += 1
        if kind == "restore":
            env.restore_started = time.monotonic()
            env.process = self.snapshots.restore(env.released.set)
            self._watch(env, env.process)
            return env
        environment = {k: v for k, v in os.environ.items() if not k.startswith("AWS_LAMBDA_")}
        environment.update(self.spec.lambda_environment())
        environment.update(self.extra_env)
        environment["AWS_LAMBDA_RUNTIME_API"] = self.runtime_api
        environment["AWS_LAMBDA_INITIALIZATION_TYPE"] = "snap-start" if kind == "snap-start" else "on-demand"
        environment["_HANDLER"] = self.spec.handler
        argv = [self.python, "-m", self.spec.runtime_module(), self.spec.handler]
        assert self._log is not None
        launch = self.snapshots.launch if kind == "snap-start" else spawn_runtime
        env.process = launch(argv, environment, self.spec.code_dir, self._log)
        self._watch(env, env.process)
        return env

    def _restore(self, env: Environment) -> bool:
        """Snapshot the runtime waiting at restore/next and bring a copy back; False if that failed."""
        assert self.snapshots is not None
        assert env.process is not None
        original = env.process
        env.expect_exit = True  # a checkpoint may end the original process
        try:
            self._snapshot_kept = self.snapshots.take(original)
            with env.changed:
                env.restore_started = time.monotonic()
                env.state = "restoring"
            env.process = self.snapshots.restore(env.released.set)
        except Exception as exc:  # the checkpoint tool failed: this environment's init failed
            env.set_state("dead", FunctionError.of("Local.SnapshotFailed", f"{type(exc).__name__}: {exc}"))
            return False
        finally:
            env.expect_exit = False
        if env.process is not original:
            self._watch(env, env.process)
        return True

    def _watch(self, env: Environment, process: RuntimeProcess) -> None:
        def watch() -> None:
            while process.poll() is None:
                time.sleep(0.05)
            code = process.poll()
            if env.expect_exit or env.process is not process:
                return
            self._exited(env, code)

        threading.Thread(target=watch, name=f"watch-{self.spec.name}-{process.pid}", daemon=True).start()

    def _exited(self, env: Environment, code: int | None) -> None:
        """The runtime process of ``env`` ended on its own: its init, or the invoke it served, failed."""
        message = f"Runtime exited with error: {_exit_text(code)}"
        with env.changed:
            call = env.current
            env.set_state("dead", FunctionError.of("Runtime.ExitError", message))
        if call is not None and call.done is None:
            self._platform(f"RequestId: {call.request_id} Error: {message}")
            call.finish(
                Done(FunctionError.of("Runtime.ExitError", f"RequestId: {call.request_id} Error: {message}"))
            )

    def _kill(self, env: Environment, failure: FunctionError, call: Call | None = None) -> None:
        """End ``env`` on purpose (timeout, failed init, stop); its invoke ``call`` fails with ``failure``."""
        env.expect_exit = True
        if env.process is not None:  # first, so that no request of the dying runtime is answered
            env.process.kill()
        with env.changed:
            call = call or env.current
            env.set_state("dead", failure)
        if call is not None:
            call.finish(Done(failure))

    # -- the Runtime API's view of one invoke

    def dispatched(self, env: Environment, call: Call) -> dict[str, str]:
        """The runtime took ``call`` from /invocation/next: start its clock; the headers to send."""
        call.dispatched = time.monotonic()
        deadline_ms = int(time.time() * 1000) + self.spec.timeout_s * 1000
        self._platform(f"START RequestId: {call.request_id} Version: $LATEST")
        timer = threading.Timer(self.spec.timeout_s, self._timed_out, args=(env, call))
        timer.daemon = True
        self._timers[call.request_id] = timer
        timer.start()
        region = self.spec.lambda_environment().get("AWS_REGION", "us-east-1")
        arn = f"arn:aws:lambda:{region}:{ACCOUNT}:function:{self.spec.name}"
        trace = (
            f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Parent={uuid.uuid4().hex[:16]};Sampled=0"
        )
        headers = {
            "Lambda-Runtime-Aws-Request-Id": call.request_id,
            "Lambda-Runtime-Deadline-Ms": str(deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": arn,
            "Lambda-Runtime-Trace-Id": trace,
        }
        if call.client_context:
            with contextlib.suppress(ValueError):
                headers["Lambda-Runtime-Client-Context"] = base64.b64decode(call.client_context).decode()
        return headers

    def _timed_out(self, env: Environment, call: Call) -> None:
        if call.done is not None:
            return
        seconds = f"{self.spec.timeout_s:.2f}"
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        self._platform(f"{stamp} {call.request_id} Task timed out after {seconds} seconds")
        failure = FunctionError.of(
            "Sandbox.Timedout", f"RequestId: {call.request_id} Error: Task timed out after {seconds} seconds"
        )
        self._kill(env, failure, call)  # the environment is dead before the next invoke may start

    def _ended(self, call: Call, done: Done) -> None:
        """The invoke is over: its END and REPORT lines, and the next invoke may go."""
        timer = self._timers.pop(call.request_id, None)
        if timer is not None:
            timer.cancel()
        try:
            if call.dispatched is not None or done.error is not None:
                self._report(call, done)
        finally:
            env = self._env
            if env is not None and env.current is call:
                env.current = None
            self._slot.release()

    def _report(self, call: Call, done: Done) -> None:
        env = self._env
        started = call.dispatched if call.dispatched is not None else time.monotonic()
        duration_ms = (time.monotonic() - started) * 1000
        fields = [
            f"Duration: {duration_ms:.2f} ms",
            f"Billed Duration: {int(duration_ms) + 1} ms",
            f"Memory Size: {self.spec.memory_mb} MB",
            f"Max Memory Used: {self._max_memory_mb(env)} MB",
        ]
        if env is not None and not env.reported_start:
            env.reported_start = True
            if env.restore_ms is not None:
                fields.append(f"Restore Duration: {env.restore_ms:.2f} ms")
                fields.append(f"Billed Restore Duration: {int(env.restore_ms) + 1} ms")
            elif env.init_ms is not None and env.kind == "on-demand":
                fields.append(f"Init Duration: {env.init_ms:.2f} ms")
        if done.error is not None and done.error.error_type == "Sandbox.Timedout":
            fields.append("Status: timeout")
        elif done.error is not None and done.error.error_type.startswith(("Runtime.", "Sandbox.", "Local.")):
            fields += ["Status: error", f"Error Type: {done.error.error_type}"]
        self._platform(f"END RequestId: {call.request_id}")
        self._platform(f"REPORT RequestId: {call.request_id}\t" + "\t".join(fields))

    @staticmethod
    def _max_memory_mb(env: Environment | None) -> int:
        if env is None or env.process is None:
            return 0
        with contextlib.suppress(OSError, ValueError, StopIteration):
            status = Path(f"/proc/{env.process.pid}/status").read_text()
            line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
            return int(line.split()[1]) // 1024
        return 0

    def _platform(self, line: str) -> None:
        """One of Lambda's platform log lines, into the function's log."""
        with self._log_lock:
            if self._log is not None:
                self._log.write(line.encode("utf-8") + b"\n")

    def environment(self) -> Environment | None:
        return self._env

    def _log_offset(self) -> int:
        """Where the log ends now."""
        with contextlib.suppress(OSError):
            return self.log_path.stat().st_size
        return 0

    def log_tail(self, call: Call, limit: int = 4096) -> str:
        """The last ``limit`` bytes of ``call``'s log lines (``LogType: Tail``), ending with its REPORT.

        Its lines are those written since its turn came (``Call.log_start``): an init it caused, its
        START to its REPORT, and the runtime's output in between.
        """
        with self.log_path.open("rb") as handle:
            handle.seek(call.log_start)
            text = handle.read().decode("utf-8", "replace")
        end = text.find(f"REPORT RequestId: {call.request_id}")
        if end >= 0:
            newline = text.find("\n", end)
            text = text[: newline + 1 if newline >= 0 else len(text)]
        return text.encode("utf-8")[-limit:].decode("utf-8", "ignore")


def _exit_text(code: int | None) -> str:
    if code is None:
        return "unknown"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal: {signal.Signals(-code).name.lower().removeprefix('sig')}"
        return f"signal {-code}"
    return f"exit status {code}"


# ---------------------------------------------------------------------- the HTTP side


class BodyTooLarge(Exception):
    """A request body over the limit it was read with (the rest of it is left unread)."""


def read_chunks(
    rfile: BufferedIOBase, *, limit: int | None = None, trailers: dict[str, str] | None = None
) -> Iterator[bytes]:
    """The pieces of a chunked HTTP body as they arrive; its trailers go into ``trailers``.

    Raises ValueError for a malformed chunk size, ConnectionError when the body ends early, and
    BodyTooLarge before reading a piece that would take the body over ``limit`` bytes.
    """
    total = 0
    while True:
        line = rfile.readline(4096)
        if not line:
            raise ConnectionError("the connection closed mid-body")
        size = int(line.split(b";", 1)[0], 16)  # int() drops the surrounding whitespace and CRLF
        if size < 0:
            raise ValueError(f"negative chunk size {size}")
        if size == 0:
            while True:
                trailer = rfile.readline(65536)
                if not trailer or trailer in (b"\r\n", b"\n"):
                    return
                name, _, value = trailer.decode("latin-1").partition(":")
                if trailers is not None:
                    trailers[name.strip().lower()] = value.strip()
        total += size
        if limit is not None and total > limit:
            raise BodyTooLarge(f"the body is over {limit} bytes")
        data = rfile.read(size)
        if len(data) < size:
            raise ConnectionError("the connection closed mid-chunk")
        rfile.readline(8)  # the CRLF after the chunk
        yield data


def discard(rfile: BufferedIOBase, length: int, limit: int = DISCARD_LIMIT_BYTES) -> None:
    """Read and drop a refused body of ``length`` bytes (at most ``limit``), so the sender sees the answer."""
    remaining = min(length, limit)
    with contextlib.suppress(OSError):
        while remaining > 0 and (data := rfile.read(min(remaining, 1 << 16))):
            remaining -= len(data)


class _RuntimeApiServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], function: LocalFunction) -> None:
        super().__init__(address, _RuntimeApiHandler)
        self.function = function

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # a runtime that was killed or went away mid-request: nothing to report
        super().handle_error(request, client_address)


class _RuntimeApiHandler(BaseHTTPRequestHandler):
    """The Runtime API's routes, for the runtime process of the function's current environment."""

    protocol_version = "HTTP/1.1"
    server: _RuntimeApiServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base-class signature
        pass

    # -- helpers

    def _answer(
        self, status: int, body: Mapping[str, Any] | bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        with contextlib.suppress(OSError):
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if not isinstance(body, bytes):
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    def _refuse(self, status: int, error_type: str, message: str) -> None:
        self._answer(status, {"errorType": error_type, "errorMessage": message})

    def _accepted(self) -> None:
        self._answer(202, {"status": "OK"})

    def _chunked(self) -> bool:
        return "chunked" in self.headers.get("Transfer-Encoding", "").lower()

    def _read_body(self, limit: int | None = None) -> bytes | None:
        """The whole request body (None if it is over ``limit``: the rest is left unread)."""
        if self._chunked():
            try:
                return b"".join(read_chunks(self.rfile, limit=limit))
            except BodyTooLarge:
                return None
        length = int(self.headers.get("Content-Length") or 0)
        if limit is not None and length > limit:
            return None
        return self.rfile.read(length) if length else b""

    def _current(self, request_id: str) -> tuple[Environment, Call] | None:
        env = self.server.function.environment()
        call = env.current if env is not None else None
        if env is None or call is None or call.request_id != request_id or call.done is not None:
            self._refuse(400, "InvalidRequestID", f"no invocation {request_id} is waiting for an answer")
            return None
        return env, call

    # -- routes

    def do_GET(self) -> None:
        if self.path == f"{API}/invocation/next":
            self._next()
        elif self.path == f"{API}/restore/next":
            self._restore_next()
        else:
            self._refuse(404, "NotFound", f"no route GET {self.path}")

    def do_POST(self) -> None:
        parts = self.path.removeprefix(API + "/").split("/")
        if self.path.startswith(API + "/") and len(parts) == 3 and parts[0] == "invocation":
            if parts[2] == "response":
                self._response(parts[1])
                return
            if parts[2] == "error":
                self._invocation_error(parts[1])
                return
        if self.path == f"{API}/init/error":
            self._init_error()
        elif self.path == f"{API}/restore/error":
            self._restore_error()
        else:
            self._refuse(404, "NotFound", f"no route POST {self.path}")

    def _next(self) -> None:
        function = self.server.function
        env = function.environment()
        if env is None or env.state == "dead":
            self._refuse(500, "Runtime.NoEnvironment", "this runtime's environment has ended")
            self.close_connection = True
            return
        if env.state in ("init", "restoring"):
            env.set_state("ready")
        elif env.state == "snapshot":
            self._refuse(403, "InvalidStateTransition", "/runtime/restore/next is still being answered")
            return
        call = env.calls.get()
        if call is None or call.done is not None:
            self.close_connection = True
            return
        headers = function.dispatched(env, call)
        self._answer(200, call.payload, {**headers, "Content-Type": "application/json"})

    def _restore_next(self) -> None:
        env = self.server.function.environment()
        if env is not None and env.state == "restoring":
            self._answer(200, b"")  # a restored copy asking again after its held GET was dropped
            return
        if env is None or env.kind == "on-demand" or env.state != "init":
            self._refuse(403, "InvalidStateTransition", "restore/next is only for a SnapStart init")
            return
        env.set_state("snapshot")
        env.released.wait()
        if env.alive():
            self._answer(200, b"")

    def _response(self, request_id: str) -> None:
        found = self._current(request_id)
        if found is None:
            return
        _, call = found
        content_type = self.headers.get("Content-Type", "application/json")
        if self.headers.get("Lambda-Runtime-Function-Response-Mode", "").lower() == "streaming":
            self._stream(call, content_type)
            return
        body = self._read_body(MAX_BUFFERED_BYTES)
        if body is None:
            # So that the runtime reads the 413 rather than a broken pipe (none of a Content-Length
            # body was read; a chunked one stopped mid-chunk, and the connection is closed instead).
            if not self._chunked():
                discard(self.rfile, int(self.headers.get("Content-Length") or 0))
            self.close_connection = True
            error = FunctionError.of(
                "Function.ResponseSizeTooLarge",
                f"Response payload size exceeded maximum allowed payload size ({MAX_BUFFERED_BYTES} bytes).",
            )
            self._refuse(413, "RequestEntityTooLarge", error.message)
            call.finish(Done(error))
            return
        call.begin(Head(content_type, streaming=False))
        call.put(body)
        call.finish(Done())
        self._accepted()

    def _stream(self, call: Call, content_type: str) -> None:
        sock = self.connection
        if not call.attach_stream(sock):  # the caller left before the first byte
            self.close_connection = True
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            call.finish(Done())
            return
        call.begin(Head(content_type, streaming=True))
        trailers: dict[str, str] = {}
        try:
            if self._chunked():
                for chunk in read_chunks(self.rfile, trailers=trailers):
                    call.put(chunk)
            else:
                call.put(self._read_body() or b"")
        except (OSError, ValueError):
            self.close_connection = True
            if call.cancelled.is_set():
                call.finish(Done())
            # Otherwise the runtime died mid-stream: its exit is reported by the process watcher.
            return
        finally:
            call.detach_stream()
        if call.cancelled.is_set():
            self.close_connection = True
            call.finish(Done())
            return
        error_type = trailers.get(ERROR_TYPE.lower())
        if error_type:
            raw = trailers.get(ERROR_BODY.lower(), "")
            try:
                payload = base64.b64decode(raw, validate=True) if raw else b""
            except ValueError:
                payload = b""
            call.finish(Done(FunctionError(error_type, payload or FunctionError.of(error_type, "").payload)))
        else:
            call.finish(Done())
        self._accepted()

    def _invocation_error(self, request_id: str) -> None:
        found = self._current(request_id)
        if found is None:
            return
        _, call = found
        body = self._read_body(MAX_BUFFERED_BYTES) or b""
        call.finish(Done(_posted_error(body, self.headers.get(ERROR_TYPE))))
        self._accepted()

    def _init_error(self) -> None:
        env = self.server.function.environment()
        body = self._read_body(MAX_BUFFERED_BYTES) or b""
        if env is None or env.state not in ("init", "snapshot"):
            self._refuse(403, "InvalidStateTransition", "no init is running")
            return
        self._accepted()
        env.set_state("dead", _posted_error(body, self.headers.get(ERROR_TYPE)))

    def _restore_error(self) -> None:
        env = self.server.function.environment()
        body = self._read_body(MAX_BUFFERED_BYTES) or b""
        if env is None or env.state != "restoring":
            self._refuse(403, "InvalidStateTransition", "no restore is running")
            return
        self._accepted()
        env.set_state("dead", _posted_error(body, self.headers.get(ERROR_TYPE)))


def _posted_error(body: bytes, header_type: str | None) -> FunctionError:
    """The error a runtime posted: its type from the header, else from the body, else Unhandled."""
    error_type = header_type
    if not error_type:
        with contextlib.suppress(ValueError, UnicodeDecodeError, AttributeError):
            error_type = str(json.loads(body).get("errorType") or "")
    return FunctionError(error_type or "Unhandled", body)
