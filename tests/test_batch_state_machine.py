"""The deployed state machine definition, executed by moto's Step Functions interpreter, calling the real
batch function, against moto's S3 server.

Everything AWS is moto (an AWS stand-in): its server on a free local port
holds S3, IAM, Lambda and Step Functions, with state machine execution on.
moto's Lambda cannot run an image without Docker, so its invoke is replaced
by a call to the real batch entry point (lambda_images/embeddings/batch.py,
the real model), with Lambda's error shape when it raises. The definition is
the one the stack synthesizes, through the translation in
tests/test_batch_asl.py for what moto's interpreter lacks (ItemBatcher, JSON
Lines, an integer tolerated percentage, a ResultWriter with paths): the
Choice, the Distributed Map's concurrency and label, the Task and its
retriers run as deployed.

The tests assert on what the function was called with and what landed in
S3, and on the Map run's item counts; an execution's status alone proves
nothing (moto marks a Map run SUCCEEDED even when an item failed).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from app import build_app, cdk_json_context
from tests.test_batch_asl import for_moto, read_csv, read_jsonl, stage, state_machine_definition
from tests.test_batch_function import (
    BUCKET,
    FakeContext,
    ScriptedDeadline,
    listing,
    load_module,
    make_corpus,
    model_dir,  # noqa: F401 - a fixture this module uses
    read_errors,
    read_vectors,
)

pytestmark = pytest.mark.slow

REGION = "us-east-1"
SETTINGS = {
    "batch_embeddings": "true",
    "batch_embeddings_bucket_name": BUCKET,  # an existing bucket: the one made here
    "batch_embeddings_items_per_batch": "100",
    "batch_embeddings_max_concurrency": "3",
}
"""Small batches and little concurrency, so a corpus of 1,200 records makes a dozen child workflows."""


@dataclass
class Calls:
    """Every invocation of the batch function, and how many ran at once (at most)."""

    events: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    running: int = 0
    most: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    fail_first: dict[int, str] = field(default_factory=dict)
    """First item index of a batch -> how its first invocation fails ('deadline' or 'storage')."""


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    outdir = tmp_path_factory.mktemp("batch-sfn")
    app, stack = build_app({**cdk_json_context(), **SETTINGS}, outdir=str(outdir))
    app.synth()
    loaded: dict[str, Any] = json.loads((Path(outdir) / stack.template_file).read_text())
    return loaded


@pytest.fixture(scope="module")
def moto(model_dir: Path) -> Iterator[dict[str, Any]]:  # noqa: F811 - the imported fixture
    """moto's server with execution on, the batch function behind its Lambda invoke, and the bucket."""
    from moto.awslambda_simple.models import LambdaSimpleBackend
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    calls = Calls()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "MOTO_PORT": str(port),  # where moto's interpreter sends its own S3 and Lambda calls
        }.items():
            patch.setenv(name, value)
        patch.delenv("AWS_PROFILE", raising=False)
        # moto's state is per process: start from nothing, whichever module ran a server before
        requests.post(f"{endpoint}/moto-api/reset", timeout=10).raise_for_status()
        requests.post(
            f"{endpoint}/moto-api/config",
            json={"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}},
            timeout=10,
        ).raise_for_status()
        batch_fn = load_module("embeddings_batch_for_sfn", "batch.py", model_dir)

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
                    result = batch_fn.lambda_handler(event, FakeContext())
                return json.dumps(result).encode()
            except Exception as exc:  # every error goes back as Lambda reports it
                calls.errors.append(type(exc).__name__)
                response_headers["x-amz-function-error"] = "Unhandled"
                return json.dumps({"errorType": type(exc).__name__, "errorMessage": str(exc)}).encode()
            finally:
                with calls.lock:
                    calls.running -= 1

        patch.setattr(LambdaSimpleBackend, "invoke", invoke)
        boto3.client("s3").create_bucket(Bucket=BUCKET)
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
    server.stop()


@pytest.fixture(scope="module")
def machine(template: dict[str, Any], moto: dict[str, Any]) -> dict[str, Any]:
    """The synthesized definition, translated, created in moto."""
    (function_id,) = [
        logical_id
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Lambda::Function"
        and resource["Properties"]["Environment"]["Variables"].get("POWERTOOLS_SERVICE_NAME")
        == "embeddings-batch"
    ]
    definition = state_machine_definition(template, {f"{function_id}.Arn": moto["function_arn"]})
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


def run(machine: dict[str, Any], execution_input: dict[str, Any], name: str) -> dict[str, Any]:
    """Stage each Map's batches, start the execution, wait for its end; the description and staged batches."""
    s3 = boto3.client("s3")
    staged: dict[str, list[Any]] = {}
    chosen = machine["formats"].get(execution_input.get("format"))
    for state, plan in machine["plans"].items():
        key = f"staged/{name}/{state}.json"
        staged[state] = []  # unless the Choice sends this run to this Map
        if (
            state == chosen
            and "options" in execution_input
            and execution_input["input"]["key"].startswith("input/")
        ):
            staged[state] = stage(s3, plan, execution_input, key=key)
        execution_input = {**execution_input, plan.staged_field: key}
    sfn = boto3.client("stepfunctions")
    arn = sfn.start_execution(stateMachineArn=machine["arn"], name=name, input=json.dumps(execution_input))[
        "executionArn"
    ]
    deadline = time.monotonic() + 600
    while (described := sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
        assert time.monotonic() < deadline, "the execution did not end in 10 minutes"
        time.sleep(0.5)
    return {"execution": described, "staged": staged}


def run_input(fmt: str, key: str, prefix: str, **options: Any) -> dict[str, Any]:
    return {
        "format": fmt,
        "input": {"key": key},
        "output": {"prefix": prefix},
        "options": {"truncate": False, **options},
    }


@pytest.fixture(scope="module")
def jsonl_run(machine: dict[str, Any], moto: dict[str, Any]) -> dict[str, Any]:
    data, good, bad = make_corpus(1_200, seed=21)
    boto3.client("s3").put_object(Bucket=BUCKET, Key="input/corpus.jsonl", Body=data)
    calls = moto["calls"]
    calls.events.clear()
    # The second batch's first invocation is cut by the deadline, the fifth's fails on S3: both are retried
    calls.fail_first.update({100: "deadline", 400: "storage"})
    outcome = run(machine, run_input("jsonl", "input/corpus.jsonl", "output/run-1/"), "run-1")
    return {**outcome, "good": good, "bad": bad, "events": list(calls.events), "errors": list(calls.errors)}


def test_the_map_invokes_the_batch_function_once_per_batch_with_the_runs_batch_input(
    jsonl_run: dict[str, Any], moto: dict[str, Any]
) -> None:
    batches = jsonl_run["staged"]["EmbedJsonl"]
    assert len(batches) == 13  # 1,210 records, 100 per batch
    assert jsonl_run["staged"]["EmbedCsv"] == []
    # Then each batch reached the function with its items and the run's BatchInput, made from the input
    first_calls = {}
    for event in jsonl_run["events"]:
        first_calls.setdefault(event["Items"][0]["index"], event)
    assert sorted(first_calls) == [group[0]["index"] for group in batches]
    for group in batches:
        event = first_calls[group[0]["index"]]
        assert event["Items"] == group
        assert event["BatchInput"] == {
            "output": {"bucket": BUCKET, "prefix": "output/run-1/"},
            "options": {"truncate": False},
            "source": {"bucket": BUCKET, "key": "input/corpus.jsonl"},
        }
    # And never more than MaxConcurrency at once
    assert 1 <= moto["calls"].most <= 3


def test_a_cut_batch_and_a_storage_failure_are_retried_until_done(jsonl_run: dict[str, Any]) -> None:
    # The two injected failures went back to the state machine as Lambda function errors of their type
    assert sorted(jsonl_run["errors"]) == ["BatchNotFinished", "StorageUnavailable"]
    starts = [event["Items"][0]["index"] for event in jsonl_run["events"]]
    # And the Task's retriers invoked those two batches again, and no other
    assert {start: starts.count(start) for start in set(starts) if starts.count(start) > 1} == {
        100: 2,
        400: 2,
    }
    assert len(starts) == len(jsonl_run["staged"]["EmbedJsonl"]) + 2


def test_every_good_record_lands_once_and_every_bad_one_is_reported(jsonl_run: dict[str, Any]) -> None:
    ids, vectors, _ = read_vectors("output/run-1/")
    assert sorted(ids) == sorted(jsonl_run["good"])
    assert vectors.shape == (len(jsonl_run["good"]), 384)
    errors = {error["item"]: error["reason"] for error in read_errors("output/run-1/")}
    assert set(errors) == set(jsonl_run["bad"])
    for item, reason in jsonl_run["bad"].items():
        assert reason in errors[item]
    # The batch cut by the deadline was written in two parts; every other batch in one
    parts = list(listing("output/run-1/vectors/"))
    assert len(parts) == len(jsonl_run["staged"]["EmbedJsonl"]) + 1


def test_the_map_run_counts_every_batch_and_the_execution_ends(jsonl_run: dict[str, Any]) -> None:
    sfn = boto3.client("stepfunctions")
    execution = jsonl_run["execution"]
    assert execution["status"] == "SUCCEEDED"
    (map_run,) = sfn.list_map_runs(executionArn=execution["executionArn"])["mapRuns"]
    counts = sfn.describe_map_run(mapRunArn=map_run["mapRunArn"])
    assert counts["maxConcurrency"] == 3
    assert counts["itemCounts"]["total"] == len(jsonl_run["staged"]["EmbedJsonl"])
    assert counts["itemCounts"]["succeeded"] == counts["itemCounts"]["total"]
    assert counts["itemCounts"]["failed"] == 0


def test_a_csv_object_runs_through_its_own_map_with_the_runs_field_names(
    machine: dict[str, Any], moto: dict[str, Any]
) -> None:
    rows = (
        ["doc_id,body,lang"]
        + [f'p-{i},"Passage {i}, about the harbour",en' for i in range(150)]
        + ["p-x,,en"]
    )
    data = ("\n".join(rows) + "\n").encode()
    boto3.client("s3").put_object(Bucket=BUCKET, Key="input/table.csv", Body=data)
    assert len(read_csv(data)) == 151
    moto["calls"].events.clear()
    outcome = run(
        machine,
        run_input("csv", "input/table.csv", "output/run-csv/", id_field="doc_id", text_field="body"),
        "run-csv",
    )
    assert len(outcome["staged"]["EmbedCsv"]) == 2
    assert {event["Items"][0]["value"]["lang"] for event in moto["calls"].events} == {"en"}
    ids, _, _ = read_vectors("output/run-csv/")
    assert sorted(ids) == sorted(f"p-{i}" for i in range(150))
    assert [(e["item"], e["id"], e["reason"]) for e in read_errors("output/run-csv/")] == [
        (150, "p-x", "empty text")
    ]


@pytest.mark.parametrize(
    "execution_input",
    [
        run_input("xml", "input/corpus.jsonl", "output/refused-1/"),
        run_input("jsonl", "elsewhere/corpus.jsonl", "output/refused-2/"),
        run_input("jsonl", "input/corpus.jsonl", "not-output/refused-3/"),
        {
            "format": "jsonl",
            "input": {"key": "input/corpus.jsonl"},
            "output": {"prefix": "output/refused-4/"},
        },
    ],
)
def test_a_run_outside_the_prefixes_or_formats_is_refused_before_any_batch(
    machine: dict[str, Any], moto: dict[str, Any], execution_input: dict[str, Any]
) -> None:
    moto["calls"].events.clear()
    name = "refused-" + str(abs(hash(json.dumps(execution_input, sort_keys=True))))[:10]
    execution = run(machine, execution_input, name)["execution"]
    assert execution["status"] == "FAILED"
    history = boto3.client("stepfunctions").get_execution_history(executionArn=execution["executionArn"])
    failed = [event for event in history["events"] if event["type"] == "ExecutionFailed"]
    assert failed[0]["executionFailedEventDetails"]["error"] == "InvalidRunInput"
    assert moto["calls"].events == []
    assert listing(execution_input["output"]["prefix"]) == {}


def test_the_jsonl_reader_of_the_translation_read_the_same_records_the_function_got(
    jsonl_run: dict[str, Any],
) -> None:
    data = boto3.client("s3").get_object(Bucket=BUCKET, Key="input/corpus.jsonl")["Body"].read()
    records = read_jsonl(data)
    staged = [item["value"] for group in jsonl_run["staged"]["EmbedJsonl"] for item in group]
    assert staged == json.loads(json.dumps(records))
