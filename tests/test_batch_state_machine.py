"""The deployed state machine definition, executed by moto's Step Functions interpreter, calling the real
batch function, against moto's S3 server.

Everything AWS is moto (an AWS stand-in): its server on a free local port
holds S3, IAM, Lambda and Step Functions, with state machine execution on.
moto's Lambda cannot run an image without Docker, so its invoke is replaced
by a call to the real batch entry point (lambda_images/embeddings/batch.py,
the real model), with Lambda's error shape when it raises (the ``moto`` and
``machine`` fixtures in tests/conftest.py, shared with tests/test_batch_client.py). The definition is
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
import time
from typing import Any

import boto3
import pytest

from tests.test_batch_asl import read_csv, read_jsonl, stage
from tests.test_batch_function import (
    BUCKET,
    listing,
    make_corpus,
    read_errors,
    read_vectors,
)

pytestmark = pytest.mark.slow


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
    first_calls: dict[int, dict[str, Any]] = {}
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
