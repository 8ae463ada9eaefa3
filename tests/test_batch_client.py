"""``python -m client embed-s3``: run input checks, progress, results, cost and the estimate.

AWS is moto (an AWS stand-in): the end-to-end test runs the command against
moto's server executing the deployed state machine definition with the real
batch function (the ``moto`` and ``machine`` fixtures in tests/conftest.py; the
client's Step Functions client is wrapped only to stage the batches moto's
interpreter cannot make itself). The REPORT records priced are written into
moto's CloudWatch Logs here, in Lambda's JSON format, as Lambda would.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pytest

from benchmarks.cost_model import Tokens, Workload, estimate, usd
from benchmarks.prices import load_prices
from client.__main__ import main
from client.calls import ClientUsageError
from client.embed_s3 import (
    OUTPUT_KEYS,
    Deployment,
    Progress,
    RunOptions,
    S3Location,
    Throughput,
    guess_format,
    measured_throughput,
    project,
    read_results,
    run_input,
    sample_input,
)
from stacks.batch_embeddings import OUTPUT_KEYS as STACK_OUTPUT_KEYS
from tests.test_batch_asl import stage
from tests.test_batch_function import BUCKET, listing, make_corpus, read_vectors

DEPLOYMENT = Deployment(
    bucket=BUCKET,
    state_machine_arn="arn:aws:states:us-east-1:123456789012:stateMachine:bulk",
    function_name="embeddings-batch",
    input_prefix="input/",
    output_prefix="output/",
)


def test_the_client_reads_the_outputs_the_stack_writes() -> None:
    assert OUTPUT_KEYS == STACK_OUTPUT_KEYS


def test_a_deployment_comes_from_the_stack_outputs_or_a_clear_error() -> None:
    class Stacks:
        """Stands in for CloudFormation's DescribeStacks (AWS itself)."""

        def __init__(self, outputs: dict[str, str]) -> None:
            self.outputs = outputs

        def describe_stacks(self, StackName: str) -> dict[str, Any]:
            return {
                "Stacks": [{"Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in self.outputs.items()]}]
            }

    values = {
        OUTPUT_KEYS["bucket"]: BUCKET,
        OUTPUT_KEYS["state_machine"]: DEPLOYMENT.state_machine_arn,
        OUTPUT_KEYS["function"]: "embeddings-batch",
        OUTPUT_KEYS["input_prefix"]: "input/",
        OUTPUT_KEYS["output_prefix"]: "output/",
    }
    assert Deployment.from_stack(Stacks(values), "LlmInference") == DEPLOYMENT
    with pytest.raises(ClientUsageError, match="deploy it with -c batch_embeddings=true"):
        Deployment.from_stack(Stacks({}), "LlmInference")


def test_run_input_is_what_the_state_machine_accepts_and_refuses_what_it_would_refuse() -> None:
    source = S3Location.parse(f"s3://{BUCKET}/input/corpus.jsonl", what="--input")
    output = S3Location.parse(f"s3://{BUCKET}/output/v1", what="--output")
    payload = run_input(DEPLOYMENT, source, output, "jsonl", RunOptions(prompt_name="passage", truncate=True))
    assert payload == {
        "format": "jsonl",
        "input": {"key": "input/corpus.jsonl"},
        "output": {"prefix": "output/v1/"},
        "options": {
            "id_field": "id",
            "text_field": "text",
            "normalize": True,
            "prompt_name": "passage",
            "truncate": True,
        },
    }
    for bad_input in (f"s3://{BUCKET}/elsewhere/c.jsonl", "s3://other-bucket/input/c.jsonl"):
        with pytest.raises(ClientUsageError, match="--input must be under"):
            run_input(DEPLOYMENT, S3Location.parse(bad_input, what="--input"), output, "jsonl", RunOptions())
    for bad_output in (f"s3://{BUCKET}/output/", f"s3://{BUCKET}/input/v1/"):
        with pytest.raises(ClientUsageError, match="--output must be a folder under"):
            run_input(
                DEPLOYMENT, source, S3Location.parse(bad_output, what="--output"), "jsonl", RunOptions()
            )
    with pytest.raises(ClientUsageError, match="s3://bucket/key URI"):
        S3Location.parse("/local/file.jsonl", what="--input")
    assert (guess_format("a/b.ndjson"), guess_format("x.CSV")) == ("jsonl", "csv")
    with pytest.raises(ClientUsageError, match="pass --format"):
        guess_format("corpus.parquet")


def test_the_progress_line_shows_items_tokens_failures_elapsed_and_eta() -> None:
    progress = Progress(done=300, failed=100, total=1000, elapsed_s=40, tokens_per_item=250)
    assert progress.eta_s == pytest.approx(60)
    line = progress.line()
    assert "40%" in line
    assert "300/1,000 items" in line
    assert "~75.0k tokens" in line
    assert "100 failed" in line
    assert "40s elapsed" in line
    assert "ETA 1m00s" in line
    assert Progress(done=0, failed=0, total=0, elapsed_s=3).line().endswith("ETA --")


def test_results_are_summed_from_the_result_writers_manifest_and_files(moto: dict[str, Any]) -> None:
    s3 = boto3.client("s3")
    ok = {
        "embedded": 99,
        "tokens": 900,
        "bad_records": 1,
        "bad_records_listed": [{"item": 7, "id": "x", "reason": "empty text"}],
    }
    succeeded = [
        {"Status": "SUCCEEDED", "Output": json.dumps(ok)},
        {"Status": "SUCCEEDED", "Output": json.dumps(ok)},
    ]
    failed = [
        {
            "Status": "FAILED",
            "Error": "TimeoutTooShort",
            "Cause": "not one record can be embedded",
            "Input": json.dumps({"Items": [{"index": 200}, {"index": 299}]}),
        }
    ]
    prefix = "output/summary/results/run-id/"
    s3.put_object(Bucket=BUCKET, Key=prefix + "SUCCEEDED_0.json", Body=json.dumps(succeeded).encode())
    s3.put_object(Bucket=BUCKET, Key=prefix + "FAILED_0.json", Body=json.dumps(failed).encode())
    manifest = {
        "DestinationBucket": BUCKET,
        "MapRunArn": "arn:aws:states:us-east-1:123456789012:mapRun:bulk/EmbedBatches:run-id",
        "ResultFiles": {
            "FAILED": [{"Key": prefix + "FAILED_0.json", "Size": 1}],
            "PENDING": [],
            "SUCCEEDED": [{"Key": prefix + "SUCCEEDED_0.json", "Size": 1}],
        },
    }
    s3.put_object(Bucket=BUCKET, Key=prefix + "manifest.json", Body=json.dumps(manifest).encode())
    summary = read_results(s3, {"ResultWriterDetails": {"Bucket": BUCKET, "Key": prefix + "manifest.json"}})
    assert (summary.batches, summary.embedded, summary.tokens, summary.bad_records) == (3, 198, 1800, 2)
    assert summary.failed_batches == [
        {"items": "200-299", "error": "TimeoutTooShort", "cause": "not one record can be embedded"}
    ]
    lines = "\n".join(summary.lines(S3Location(BUCKET, "output/summary/")))
    assert "items 200-299: TimeoutTooShort" in lines
    assert "bad record at item 7 (id x): empty text" in lines


def test_the_estimate_comes_from_a_sample_and_a_named_throughput(moto: dict[str, Any]) -> None:
    data, good, bad = make_corpus(3_000, seed=5)
    boto3.client("s3").put_object(Bucket=BUCKET, Key="input/estimate.jsonl", Body=data)
    sample = sample_input(boto3.client("s3"), S3Location(BUCKET, "input/estimate.jsonl"), "jsonl", "text")
    # The whole object fits in the sample here: the record count is exact
    assert sample.records_estimate == len(good) + len(bad)
    throughput = Throughput(5_000.0, "a test figure")
    projection = project(
        sample,
        throughput,
        memory_mb=2048,
        concurrency=4,
        items_per_batch=500,
        region="us-east-1",
        architecture="x86_64",
    )
    assert projection.batches == 7
    tokens_per_batch = projection.tokens // 7
    expected = estimate(
        Workload(
            memory_mb=2048,
            duration_ms=Decimal(tokens_per_batch) / Decimal(5000) * 1000,
            requests=7,
            tokens=Tokens(input=tokens_per_batch, input_per_s=Decimal(5000)),
        ),
        load_prices(),
    ).total
    assert projection.cost == expected
    assert projection.duration_s == pytest.approx(
        2 * tokens_per_batch / 5000
    )  # 7 batches, 4 at once: 2 waves
    # and Step Functions and S3 are priced on top: 7 x 2 + 5 transitions, 7 x 2 requests (us-east-1)
    assert projection.overheads is not None
    assert (projection.overheads.transitions, projection.overheads.s3_requests) == (19, 14)
    assert projection.overheads.total == 19 * Decimal("0.000025") + 14 * Decimal("0.000005")
    assert projection.total == expected + projection.overheads.total
    text = "\n".join(projection.lines(throughput, 2048, 4))
    assert "from a test figure" in text
    assert "projection, not a bill" in text
    assert "19 Step Functions state transitions" in text


def test_the_default_throughput_names_its_source(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"embeddings": {"tokens_per_s": 7949.9, "model": "m", "threads": 1}}))
    assert measured_throughput(results).source.startswith(
        "results.json embeddings.tokens_per_s (m, 1 thread(s)"
    )
    results.write_text(
        json.dumps({"batch": {"tokens_per_s_per_function": 7500}, "embeddings": {"tokens_per_s": 1}})
    )
    assert measured_throughput(results).tokens_per_s == 7500
    with pytest.raises(ClientUsageError, match="pass --tokens-per-s"):
        measured_throughput(tmp_path / "missing.json")


def test_embed_s3_runs_the_deployed_state_machine_and_reports_output_and_cost(
    machine: dict[str, Any],
    moto: dict[str, Any],
) -> None:
    data, good, bad = make_corpus(600, seed=9)
    boto3.client("s3").put_object(Bucket=BUCKET, Key="input/client.jsonl", Body=data)
    started = datetime.now(UTC)
    logs = boto3.client("logs")
    logs.create_log_group(logGroupName="/aws/lambda/embeddings-batch")
    logs.create_log_stream(logGroupName="/aws/lambda/embeddings-batch", logStreamName="s")
    reports = [
        {
            "timestamp": int(
                (started + timedelta(seconds=20 + i)).timestamp() * 1000
            ),  # inside the run window
            "message": json.dumps(
                {
                    "time": started.isoformat(),
                    "type": "platform.report",
                    "record": {
                        "requestId": f"r{i}",
                        "metrics": {"durationMs": 800.5, "billedDurationMs": 801, "memorySizeMB": 2048},
                        "status": "success",
                    },
                }
            ),
        }
        for i in range(7)  # one per batch: 610 records, 100 per batch
    ]
    logs.put_log_events(logGroupName="/aws/lambda/embeddings-batch", logStreamName="s", logEvents=reports)

    class Session:
        """boto3 clients on moto; Step Functions' StartExecution first stages the batches moto cannot make."""

        def client(self, name: str, region_name: str | None = None, **kwargs: Any) -> Any:
            real = boto3.client(name, region_name=region_name or "us-east-1")
            if name != "stepfunctions":
                return real

            class Staging:
                def __getattr__(self, attribute: str) -> Any:
                    return getattr(real, attribute)

                def start_execution(self, **request: Any) -> Any:
                    payload = json.loads(request["input"])
                    plan = machine["plans"][machine["formats"][payload["format"]]]
                    key = f"staged/{request['name']}.json"
                    stage(boto3.client("s3"), plan, payload, key=key)
                    payload = {**payload, **{p.staged_field: key for p in machine["plans"].values()}}
                    return real.start_execution(**{**request, "input": json.dumps(payload)})

            return Staging()

    out, err = io.StringIO(), io.StringIO()
    status = main(
        [
            "embed-s3",
            "--input",
            f"s3://{BUCKET}/input/client.jsonl",
            "--output",
            f"s3://{BUCKET}/output/client-run",
            "--state-machine-arn",
            machine["arn"],
            "--function-name",
            "embeddings-batch",
            "--no-truncate",
            "--poll",
            "0.2",
        ],
        out=out,
        err=err,
        session_factory=lambda **kwargs: Session(),
    )
    text = out.getvalue()
    assert status == 0, text + err.getvalue()
    assert "SUCCEEDED" in text
    assert f"s3://{BUCKET}/output/client-run/vectors/" in text
    # The live line came from the Map run's counts
    assert "items" in err.getvalue()
    assert "elapsed" in err.getvalue()
    # The summary sums what each batch returned
    assert f"({len(good):,} records" in text
    assert f"({len(bad)} bad records" in text
    # The cost is the cost model's price of the seven REPORT records: 7 x 2 GB x 0.801 s at x86 us-east-1
    rate = load_prices().rate("us-east-1", "x86_64")
    expected = 7 * (Decimal(2) * Decimal("0.801") * rate.gb_second + rate.request)
    assert f"cost:     {usd(expected)} for 7 invocations of the batch function" in text, text
    # Plus Step Functions' transitions and S3's requests, estimated from the batches at prices.json's prices
    run_prices = load_prices().batch_runs["us-east-1"]
    transitions, requests = 7 * 2 + 5, 7 * 2
    steps, s3 = transitions * run_prices.state_transition, requests * run_prices.s3_request
    assert f"+ about {usd(steps)} for {transitions:,} Step Functions state transitions" in text, text
    total = usd(expected + steps + s3)
    assert f"{usd(s3)} for {requests:,} S3 requests (estimated from the 7 batches) = {total}" in text
    # And the run really embedded the input
    ids, _, _ = read_vectors("output/client-run/")
    assert sorted(ids) == sorted(good)
    assert len(listing("output/client-run/errors/")) == len({index // 100 for index in bad})


def test_usage_errors_exit_2_with_a_message() -> None:
    err = io.StringIO()
    status = main(
        ["embed-s3", "--input", "corpus.jsonl", "--output", f"s3://{BUCKET}/output/x/"],
        out=io.StringIO(),
        err=err,
        session_factory=lambda **kwargs: None,
    )
    assert status == 2
    assert "--input must be an s3://bucket/key URI" in err.getvalue()
