"""Run a handler the way Lambda runs it: the real ``awslambdaric`` runtime client
behind the real Lambda Runtime Interface Emulator (RIE), on the host.

The RIE binary comes from the ``aws-sam-cli`` wheel (``make setup`` extracts it
into ``.cache/rie``). It serves the Lambda Invoke API on
``POST /2015-03-31/functions/function/invocations`` and starts the runtime
process on the first invoke, so that invoke pays the init phase, as on Lambda.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "lambda_images"
COMMON = IMAGES / "common"
INVOKE_PATH = "/2015-03-31/functions/function/invocations"


def rie_binary() -> Path:
    """The emulator for this machine's architecture (override with LAMBDA_RIE)."""
    override = os.environ.get("LAMBDA_RIE")
    if override:
        path = Path(override)
    else:
        arch = "arm64" if platform.machine() in ("aarch64", "arm64") else "x86_64"
        path = ROOT / ".cache" / "rie" / f"aws-lambda-rie-{arch}"
    if not path.is_file():
        raise FileNotFoundError(f"Lambda Runtime Interface Emulator not found at {path}; run `make setup`")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    host: str, port: int, timeout_s: float, process: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with status {process.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout_s} s")


def _descendants(pid: int) -> set[int]:
    """Live descendants of ``pid``, from the parent links in /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":  # zombies are already dead
            parents[int(entry.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def image_runtime(key: str) -> str:
    """The module the ENTRYPOINT of image ``key`` (``lambda_images/<key>/``) runs."""
    return entrypoint_module(IMAGES / key / "Dockerfile")


def entrypoint_module(dockerfile: Path) -> str:
    """The module a Dockerfile's ENTRYPOINT runs (``python -m <module>``)."""
    for line in dockerfile.read_text().splitlines():
        if line.startswith("ENTRYPOINT"):
            command = json.loads(line.removeprefix("ENTRYPOINT"))
            if len(command) == 3 and command[1] == "-m":
                return str(command[2])
    raise RuntimeError(f"{dockerfile}: no ENTRYPOINT of the form [python, -m, module]")


@dataclass(frozen=True)
class FunctionSpec:
    """One function as Lambda would configure it."""

    name: str
    code_dir: Path
    memory_mb: int
    timeout_s: int
    handler: str = "handler.lambda_handler"
    runtime: str | None = None
    """The module that runs the handler (``python -m <runtime>``); None: the one the image's
    Dockerfile in ``code_dir`` names as its ENTRYPOINT, else AWS's runtime client (``awslambdaric``)."""
    environment: Mapping[str, str] = field(default_factory=dict)

    def runtime_module(self) -> str:
        if self.runtime is not None:
            return self.runtime
        if (self.code_dir / "Dockerfile").is_file():
            return entrypoint_module(self.code_dir / "Dockerfile")
        return "awslambdaric"

    def lambda_environment(self) -> dict[str, str]:
        """The variables a deployed function sees, plus this spec's own."""
        env = {
            "AWS_LAMBDA_FUNCTION_NAME": self.name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.memory_mb),
            "AWS_LAMBDA_FUNCTION_TIMEOUT": str(self.timeout_s),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{self.name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": "local",
            "AWS_REGION": os.environ.get("AWS_REGION", "us-east-1"),
            "AWS_DEFAULT_REGION": os.environ.get("AWS_REGION", "us-east-1"),
            "AWS_EXECUTION_ENV": "AWS_Lambda_Image",
            "LAMBDA_TASK_ROOT": str(self.code_dir),
            "PYTHONPATH": os.pathsep.join([str(self.code_dir), str(COMMON)]),
            "PYTHONUNBUFFERED": "1",
        }
        env.update(self.environment)
        return env


@dataclass
class InvokeResult:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class EmulatedFunction:
    """A function served by the RIE on 127.0.0.1; use as a context manager."""

    def __init__(
        self,
        spec: FunctionSpec,
        *,
        port: int | None = None,
        python: str = sys.executable,
        log_path: Path | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.spec = spec
        self.port = port or free_port()
        self.runtime_api_port = free_port()
        self.python = python
        self.log_path = log_path
        self.extra_env = dict(extra_env or {})
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None

    @property
    def endpoint(self) -> str:
        """Base URL for boto3 / the AWS CLI (``--endpoint-url``)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def invoke_url(self) -> str:
        return self.endpoint + INVOKE_PATH

    def start(self, ready_timeout_s: float = 15.0) -> Self:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_LAMBDA_")}
        env.update(self.spec.lambda_environment())
        env.update(self.extra_env)
        command = [
            str(rie_binary()),
            "--runtime-interface-emulator-address",
            f"127.0.0.1:{self.port}",
            "--runtime-api-address",
            f"127.0.0.1:{self.runtime_api_port}",
            self.python,
            "-m",
            self.spec.runtime_module(),
            self.spec.handler,
        ]
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = self.log_path.open("ab")
        out = self._log_file if self._log_file is not None else subprocess.DEVNULL
        self.process = subprocess.Popen(
            command,
            cwd=self.spec.code_dir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() reaches the runtime too
        )
        wait_for_port("127.0.0.1", self.port, ready_timeout_s, self.process)
        return self

    def invoke(self, payload: Any, *, timeout_s: float = 120.0) -> InvokeResult:
        """POST a payload (bytes are sent as they are, anything else as JSON)."""
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        request = urllib.request.Request(self.invoke_url, data=data, method="POST")  # noqa: S310 - our http URL
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
                return InvokeResult(response.status, dict(response.headers.items()), response.read())
        except urllib.error.HTTPError as exc:
            return InvokeResult(exc.code, dict(exc.headers.items()), exc.read())

    def runtime_pids(self) -> list[int]:
        """The runtime process and its children: every descendant of the emulator.

        The emulator starts the runtime in a process group of its own, so the
        emulator's group does not include it; the parent links do.
        """
        if self.process is None:
            return []
        return sorted(_descendants(self.process.pid))

    def stop(self, grace_s: float = 5.0) -> None:
        process, self.process = self.process, None
        runtime = _descendants(process.pid) if process is not None else set()
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            except ProcessLookupError:
                pass
        if process is not None:
            # The runtime (in its own process group) may outlive the emulator: reap it.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            for pid in runtime:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
