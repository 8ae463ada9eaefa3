"""Calling podman with the project's own configuration.

``scripts/setup-system.sh`` (``make setup-system``) installs podman and writes
``.cache/containers/containers.conf`` with the settings this kind of machine
needs (runc, container ulimits, cgroupfs, file events). Every podman call here
points ``CONTAINERS_CONF`` at that file unless the caller set it, so the
machine's global configuration stays untouched. Image storage is podman's
default (``/var/lib/containers/storage`` as root): it outlives clones of the
repository, which is what makes layer caching work across CI runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache"
CONTAINERS_CONF = CACHE / "containers" / "containers.conf"


class PodmanError(RuntimeError):
    """A podman command failed; the message carries the command and its output."""


def require_tools(*names: str) -> None:
    """Fail with the fix when a system tool the image tests need is missing."""
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)} not installed: run `make setup-system`")


def podman_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for podman: the project's containers.conf unless one is already chosen."""
    env = dict(os.environ)
    if "CONTAINERS_CONF" not in env:
        if not CONTAINERS_CONF.is_file():
            raise FileNotFoundError(f"{CONTAINERS_CONF} is missing: run `make setup-system`")
        env["CONTAINERS_CONF"] = str(CONTAINERS_CONF)
    env.update(extra or {})
    return env


def podman(
    *args: str,
    check: bool = True,
    input_bytes: bytes | None = None,
    cwd: Path | None = None,
    timeout_s: float | None = 600,
) -> subprocess.CompletedProcess[str]:
    """Run ``podman ARGS`` and capture its output (text)."""
    require_tools("podman")
    completed = subprocess.run(
        ["podman", *args],
        input=input_bytes.decode() if input_bytes is not None else None,
        capture_output=True,
        text=True,
        env=podman_env(),
        cwd=cwd,
        timeout=timeout_s,
        check=False,
    )
    if check and completed.returncode != 0:
        raise PodmanError(
            f"`podman {' '.join(args)}` exited with {completed.returncode}:\n"
            f"{completed.stderr.strip() or completed.stdout.strip()}"
        )
    return completed


def run_logged(command: Sequence[str], *, cwd: Path, log_path: Path, timeout_s: float) -> int:
    """Run a long podman command with its output streamed to a log file; return the exit status."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        completed = subprocess.run(
            list(command),
            cwd=cwd,
            env=podman_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=timeout_s,
            check=False,
        )
    return completed.returncode
