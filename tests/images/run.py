"""Running a built image the way Lambda runs it, and invoking it over HTTP.

``LambdaContainer`` starts the image with podman under Lambda's constraints,
taken from the synthesized function where Lambda takes them from:

- read-only root filesystem, a writable ``/tmp`` tmpfs of the function's
  ephemeral storage size (``--read-only --tmpfs /tmp``);
- a non-root user (993:990, the ids Lambda's ``sbx_user1051`` has);
- the function's memory as a hard limit without swap, and its CPU share
  (one vCPU per 1,769 MB, at most the machine's CPUs);
- Lambda's limits of 1,024 processes/threads and 1,024 open files;
- no network at all (``--network none``: only a loopback interface);
- the Runtime Interface Emulator mounted in and used as the entrypoint, with the
  image's own ENTRYPOINT + CMD as its arguments, as AWS documents for images
  that do not include it;
- the variables Lambda defines, plus the function's own environment.

With no network there is no port to publish, so the test client joins the
container's network namespace instead (``nsenter --net``, as root): each
invoke is a plain HTTP POST to the emulator on the container's 127.0.0.1:8080,
made by a short-lived Python process of the host that can reach nothing else.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

from lambda_common.limits import MB_PER_VCPU
from local.rie import INVOKE_PATH, InvokeResult, rie_binary
from tests.images.assets import LambdaFunction
from tests.images.podman import PodmanError, podman, podman_env, require_tools

LAMBDA_USER = "993:990"
RIE_DIR = "/aws-lambda"
RIE_PORT = 8080
LAMBDA_MAX_PROCESSES = 1024
LAMBDA_MAX_OPEN_FILES = 1024
QEMU_STATIC = Path("/usr/bin/qemu-x86_64-static")
CONTAINER_TMP = "/tmp"

# Runs on the host inside the container's network namespace: stdlib only.
_CLIENT = r"""
import base64, json, socket, sys, time, urllib.error, urllib.request
mode, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
if mode == "wait":
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                sys.exit(f"nothing listening on 127.0.0.1:{port} after {timeout} s")
            time.sleep(0.1)
else:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{sys.argv[4]}", data=sys.stdin.buffer.read(),
                                     method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, headers, body = response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as error:
        status, headers, body = error.code, dict(error.headers.items()), error.read()
    json.dump({"status": status, "headers": headers, "body": base64.b64encode(body).decode()}, sys.stdout)
"""


def lambda_environment(function: LambdaFunction, name: str, handler: str, region: str) -> dict[str, str]:
    """Lambda's defined runtime variables for this function, then the function's own."""
    env = {
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_mb),
        "AWS_LAMBDA_FUNCTION_TIMEOUT": str(function.timeout_s),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "image-test",
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "LAMBDA_TASK_ROOT": "/var/task",
        "LAMBDA_RUNTIME_DIR": "/var/runtime",
        "TZ": ":UTC",
        "_HANDLER": handler,
    }
    env.update(function.environment)
    return env


def cpu_share(memory_mb: int) -> float:
    """Lambda's CPU time for this memory size, capped at this machine's CPUs."""
    return float(round(min(memory_mb / MB_PER_VCPU, os.cpu_count() or 1), 2))


def image_command(image: str, function: LambdaFunction) -> list[str]:
    """What Lambda runs: the function's ImageConfig overrides, else the image's ENTRYPOINT + CMD."""
    config = json.loads(podman("image", "inspect", "--format", "{{json .Config}}", image).stdout)
    entrypoint = function.image_config.get("EntryPoint") or config.get("Entrypoint") or []
    command = function.image_config.get("Command") or config.get("Cmd") or []
    if not entrypoint:
        raise PodmanError(f"{image} has no ENTRYPOINT; Lambda needs one (or ImageConfig.EntryPoint)")
    return [*entrypoint, *command]


def lambda_constraints(function: LambdaFunction) -> list[str]:
    """``podman run`` options for Lambda's limits: read-only root, /tmp, user, memory, CPU, processes."""
    tmp_options = f"rw,exec,nosuid,nodev,mode=1777,size={function.ephemeral_storage_mb}m"
    args = [
        "--read-only",
        "--tmpfs", f"{CONTAINER_TMP}:{tmp_options}",
        "--user", LAMBDA_USER,
        "--memory", f"{function.memory_mb}m",
        "--memory-swap", f"{function.memory_mb}m",
        "--cpus", str(cpu_share(function.memory_mb)),
        "--pids-limit", str(LAMBDA_MAX_PROCESSES),
        # Both limits: giving one drops containers.conf's defaults, and runc refuses the host's nproc.
        "--ulimit", f"nofile={LAMBDA_MAX_OPEN_FILES}:{LAMBDA_MAX_OPEN_FILES}",
        "--ulimit", f"nproc={LAMBDA_MAX_PROCESSES}:{LAMBDA_MAX_PROCESSES}",
    ]  # fmt: skip
    if function.image_config.get("WorkingDirectory"):
        args += ["--workdir", function.image_config["WorkingDirectory"]]
    return args


class LambdaContainer:
    """One function container, started with ``with``; ``invoke`` posts to its emulator."""

    def __init__(
        self,
        image: str,
        function: LambdaFunction,
        *,
        name: str,
        log_path: Path,
        region: str = "us-east-1",
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.image = image
        self.function = function
        self.name = name
        self.container = f"{name}-{uuid.uuid4().hex[:8]}"
        self.log_path = log_path
        self.region = region
        self.extra_env = dict(extra_env or {})
        self.pid: int | None = None

    def run_args(self) -> list[str]:
        """The ``podman run`` arguments (without ``podman``)."""
        command = image_command(self.image, self.function)
        handler = command[-1]
        env = {**lambda_environment(self.function, self.name, handler, self.region), **self.extra_env}
        args = [
            "run",
            "--detach",
            "--name", self.container,
            *lambda_constraints(self.function),
            "--network", "none",
            "--volume", f"{rie_binary()}:{RIE_DIR}/aws-lambda-rie:ro",
            "--entrypoint", f"{RIE_DIR}/aws-lambda-rie",
        ]  # fmt: skip
        for key, value in env.items():
            args += ["--env", f"{key}={value}"]
        return [*args, self.image, *command]

    def start(self, ready_timeout_s: float = 30) -> Self:
        require_tools("nsenter")
        podman(*self.run_args())
        state = podman("inspect", "--format", "{{.State.Pid}}", self.container).stdout.strip()
        self.pid = int(state)
        if self.pid <= 0:
            raise PodmanError(f"{self.container} is not running:\n{self.logs()}")
        self._client("wait", ready_timeout_s)
        return self

    def _client(self, mode: str, timeout_s: float, path: str = "", data: bytes = b"") -> str:
        if self.pid is None:
            raise PodmanError(f"{self.container} is not started")
        command = ["nsenter", f"--target={self.pid}", "--net", "--", sys.executable, "-I", "-c", _CLIENT]
        command += [mode, str(RIE_PORT), str(timeout_s), path]
        if os.geteuid() != 0:  # rootless podman: the namespace belongs to the user namespace
            command = ["podman", "unshare", *command]
        done = subprocess.run(command, input=data, capture_output=True, timeout=timeout_s + 30, check=False)
        if done.returncode != 0:
            raise PodmanError(
                f"HTTP client in {self.container}'s network namespace failed:\n"
                f"{done.stderr.decode()[-2000:]}\n"
                f"container log:\n{self.logs()[-4000:]}"
            )
        return done.stdout.decode()

    def invoke(self, payload: Any, *, timeout_s: float = 300) -> InvokeResult:
        """POST a payload to the emulator's Invoke API (bytes as they are, anything else as JSON)."""
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        reply = json.loads(self._client("invoke", timeout_s, INVOKE_PATH, data))
        return InvokeResult(reply["status"], reply["headers"], base64.b64decode(reply["body"]))

    def exec(
        self, *command: str, env: Mapping[str, str] | None = None, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the running container, as the function's user (``env``: added variables)."""
        env_args = [arg for key, value in (env or {}).items() for arg in ("--env", f"{key}={value}")]
        return podman("exec", "--user", LAMBDA_USER, *env_args, self.container, *command, check=check)

    def inspect(self) -> dict[str, Any]:
        data: list[dict[str, Any]] = json.loads(podman("inspect", self.container).stdout)
        return data[0]

    def logs(self) -> str:
        done = podman("logs", self.container, check=False)
        return done.stdout + done.stderr

    def stop(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.write_text(self.logs())
        podman("rm", "--force", "--time", "2", self.container, check=False)
        self.pid = None

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


_LAUNCHER = """#!{python}
# Written by tests/images/run.py (ImageRuntimeLauncher): runs the image in place of a host runtime.
import os, sys
expected = {expected!r}
if sys.argv[1:] != expected:
    sys.exit(f"asked to run {{sys.argv[1:]}}, but the image runs {{expected}}")
os.environ["CONTAINERS_CONF"] = {containers_conf!r}
os.execvp("podman", {command!r})
"""


class ImageRuntimeLauncher:
    """Runs the image's own ENTRYPOINT + CMD against ``local.runtime_api``'s Runtime API, with no emulator.

    ``LocalFunction`` (the Runtime API stand-in that passes a streamed answer on
    piece by piece, which the emulator cannot) starts a function's runtime as
    ``[python, "-m", module, handler]`` with ``AWS_LAMBDA_RUNTIME_API`` naming
    its address on the host's 127.0.0.1. Given this launcher's ``path`` as its
    ``python``, that start becomes ``podman run`` of the image: the launcher
    refuses any module and handler other than the image's own (ENTRYPOINT +
    CMD, or the function's ImageConfig), then runs the image unchanged, with
    Lambda's limits (``lambda_constraints``), Lambda's variables and the
    function's environment, and ``AWS_LAMBDA_RUNTIME_API`` and
    ``AWS_LAMBDA_INITIALIZATION_TYPE`` as the stand-in set them.

    One difference from ``LambdaContainer``: the container shares the host's
    network (``--network host``), the only way its runtime reaches the
    stand-in's socket here (no slirp4netns or pasta). The container's output
    goes to the stand-in's function log (whose REPORT lines measure the
    ``podman run`` client's memory, not the container's). Use as a context manager: it writes
    the launcher, and removes the container at the end (stopping the stand-in
    kills the ``podman run`` client, which leaves the container behind).
    """

    def __init__(
        self, image: str, function: LambdaFunction, *, name: str, directory: Path, region: str = "us-east-1"
    ) -> None:
        self.image = image
        self.function = function
        self.name = name
        self.container = f"{name}-{uuid.uuid4().hex[:8]}"
        self.path = directory / f"{self.container}-launcher"
        self.region = region

    def run_args(self) -> list[str]:
        """The ``podman run`` arguments (without ``podman``)."""
        command = image_command(self.image, self.function)
        env = lambda_environment(self.function, self.name, command[-1], self.region)
        env.pop("AWS_LAMBDA_INITIALIZATION_TYPE")  # the stand-in's, passed through below
        args = ["run", "--rm", "--name", self.container, *lambda_constraints(self.function)]
        args += ["--network", "host"]
        for key, value in env.items():
            args += ["--env", f"{key}={value}"]
        # ``--env NAME`` without a value passes the launcher's own value on.
        args += ["--env", "AWS_LAMBDA_RUNTIME_API", "--env", "AWS_LAMBDA_INITIALIZATION_TYPE"]
        if self.function.image_config.get("EntryPoint"):
            args += ["--entrypoint", json.dumps(self.function.image_config["EntryPoint"])]
        return [*args, self.image, *self.function.image_config.get("Command", [])]

    def __enter__(self) -> Self:
        require_tools("podman")
        command = image_command(self.image, self.function)
        self.path.write_text(
            _LAUNCHER.format(
                python=sys.executable,
                expected=command[1:],
                containers_conf=podman_env()["CONTAINERS_CONF"],
                command=["podman", *self.run_args()],
            )
        )
        self.path.chmod(0o755)
        return self

    def __exit__(self, *exc: object) -> None:
        podman("rm", "--force", "--time", "2", "--ignore", self.container, check=False)


def run_under_qemu(
    image: str, *, cpu: str, python_args: Sequence[str], timeout_s: float = 900
) -> subprocess.CompletedProcess[str]:
    """Run the image's own ``/opt/venv/bin/python`` on an emulated CPU, inside the image.

    Debian's statically linked ``qemu-x86_64-static`` is mounted into the
    container and runs the image's Python, so every instruction of the image's
    Python and native libraries runs on the emulated ``cpu`` (e.g. Haswell: AVX2,
    no AVX-512). Same read-only, non-root, network-less container as ``LambdaContainer``.
    """
    qemu = shutil.which("qemu-x86_64-static") or str(QEMU_STATIC)
    if not Path(qemu).is_file():
        raise FileNotFoundError("qemu-x86_64-static not installed: run `make setup-system`")
    return podman(
        "run", "--rm",
        "--read-only", "--tmpfs", f"{CONTAINER_TMP}:rw,exec,mode=1777",
        "--user", LAMBDA_USER,
        "--network", "none",
        "--volume", f"{qemu}:/qemu/qemu-x86_64:ro",
        # Not as PID 1: the kernel ignores the signal qemu re-raises on a guest's fatal
        # SIGILL when it comes from a namespace's init, and qemu would hang.
        "--entrypoint", "/bin/sh",
        image, "-c", '"$@"; exit $?', "sh",
        "/qemu/qemu-x86_64", "-cpu", cpu, "/opt/venv/bin/python", *python_args,
        check=False, timeout_s=timeout_s,
    )  # fmt: skip
