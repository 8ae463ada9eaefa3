"""A stand-in for the ``docker`` executable that records how the CDK CLI calls it.

The CDK CLI runs ``$CDK_DOCKER`` for every container step of publishing an
image asset. Pointed at this script (through a small wrapper, see
``tests/images/cdk_cli.py``), each call appends one JSON line to the file
named by ``RECORDED_DOCKER_CALLS``: the arguments, the working directory, the
container-engine variables of its environment (``DOCKER_*``, ``BUILDX_*``,
``BUILDKIT_*``) and whether a password came on standard input.

It answers as Docker does where the CLI reads the answer:

- ``login --password-stdin``: reads the password, "Login Succeeded";
- ``inspect TAG``: exit status 1, "No such object" (the image is not cached,
  so the CLI builds it);
- ``images``: no output (no other local image carries the tag);
- ``build``, ``buildx build``, ``tag``, ``push``: success, nothing built or sent;
- ``buildx version``, ``version``, ``info``: a version line.

Anything else fails with exit status 2 and a message naming the command, so a
CLI that starts calling Docker in a new way stops loudly instead of being
answered at random. Standard library only: it runs under any Python 3.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

LOG_VARIABLE = "RECORDED_DOCKER_CALLS"
ENGINE_PREFIXES = ("DOCKER_", "BUILDX_", "BUILDKIT_")
VERSION = "Docker version 27.5.1, build docker-recorder"


def _global_options(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """Split the global options the CLI may put first (``--config DIR``) from the command."""
    options: dict[str, str] = {}
    rest = list(argv)
    while len(rest) >= 2 and rest[0] == "--config":
        options["config"] = rest[1]
        rest = rest[2:]
    return options, rest


def _record(entry: dict[str, Any]) -> None:
    path = os.environ.get(LOG_VARIABLE)
    if not path:
        sys.stderr.write(f"docker_recorder: {LOG_VARIABLE} is not set; refusing to run unrecorded\n")
        raise SystemExit(2)
    line = json.dumps(entry) + "\n"
    # One write in append mode: calls running at the same time (the CLI builds
    # assets concurrently) never interleave within a line.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _answer(command: list[str]) -> int:
    """Print what Docker would print for ``command``; return its exit status."""
    verb = command[0] if command else ""
    sub = command[1] if len(command) > 1 else ""
    if verb == "login":
        print("Login Succeeded")
        return 0
    if verb == "inspect":
        sys.stderr.write(f"Error: No such object: {command[-1] if len(command) > 1 else ''}\n")
        print("[]")
        return 1
    if verb == "images":
        return 0
    if verb in {"build", "tag", "push"} or (verb == "buildx" and sub == "build"):
        return 0
    if verb in {"version", "info"} or (verb == "buildx" and sub == "version"):
        print(VERSION)
        return 0
    sys.stderr.write(
        f"docker_recorder: no answer for `docker {' '.join(command)}`: the CDK CLI calls Docker in a way "
        "this recorder does not know; teach tests/images/docker_recorder.py what Docker answers\n"
    )
    return 2


def main(argv: list[str]) -> int:
    options, command = _global_options(argv)
    stdin_given = False
    if "--password-stdin" in command:
        stdin_given = bool(sys.stdin.read().strip())
    status = _answer(command)
    _record(
        {
            "argv": command,
            "global_options": options,
            "cwd": os.getcwd(),
            "env": {key: value for key, value in os.environ.items() if key.startswith(ENGINE_PREFIXES)},
            "password_on_stdin": stdin_given,
            "exit_status": status,
        }
    )
    return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
