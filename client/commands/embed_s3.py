"""``python -m client embed-s3``: embed a JSON Lines or CSV object from S3 into Parquet vectors.

See ``client/embed_s3.py`` for each step and docs/batch.md for the formats, limits and costs.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime

from botocore.exceptions import BotoCoreError, ClientError

from benchmarks.prices import CostInputError
from client.calls import ClientUsageError
from client.commands import CommandIO
from client.embed_s3 import (
    FORMATS,
    Deployment,
    RunOptions,
    S3Location,
    Throughput,
    cost_lines,
    guess_format,
    map_run_progress,
    measured_throughput,
    project,
    read_results,
    run_cost,
    run_input,
    sample_input,
    summarise_execution,
)

NAME = "embed-s3"
HELP = "embed a JSON Lines or CSV object from S3 into Parquet vectors with the bulk embedding state machine"

EPILOG = """\
The stack must be deployed with -c batch_embeddings=true; the input object must be under the stack's input
prefix and the output folder under its output prefix (both are stack outputs). A re-run with the same input
and output skips every batch already written.

Output (under --output): vectors/*.parquet (id, vector: fixed-size float32 list), errors/*.json (bad records
with their reason), results/ (Step Functions' per-batch results).

Permissions: cloudformation:DescribeStacks (without --state-machine-arn), states:StartExecution,
DescribeExecution, ListMapRuns, DescribeMapRun, s3:GetObject on the output prefix, and for the cost
lambda:GetFunctionConfiguration and logs:FilterLogEvents (skip with --no-cost).

Examples:
  aws s3 cp corpus.jsonl s3://<BatchEmbeddingsBucket>/input/corpus.jsonl
  python -m client embed-s3 --input s3://<bucket>/input/corpus.jsonl \\
      --output s3://<bucket>/output/corpus-v1/ --estimate
  python -m client embed-s3 --input s3://<bucket>/input/corpus.jsonl \\
      --output s3://<bucket>/output/corpus-v1/ --prompt-name passage --truncate
"""


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("--input", required=True, help="s3://bucket/input/... object to embed")
    parser.add_argument("--output", required=True, help="s3://bucket/output/<run>/ folder for this run")
    parser.add_argument("--format", choices=FORMATS, help="jsonl or csv (default: from the file name)")
    parser.add_argument(
        "--id-field", default="id", help="field (or CSV column) of each record's id (default id)"
    )
    parser.add_argument(
        "--text-field", default="text", help="field (or CSV column) of the text (default text)"
    )
    parser.add_argument("--prompt-name", help="named prompt, as the online API's prompt_name (e.g. passage)")
    parser.add_argument(
        "--truncate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="truncate texts over the model's token limit (default: the function's AUTO_TRUNCATE, off); "
        "without it such texts are reported as bad records",
    )
    parser.add_argument("--no-normalize", action="store_true", help="do not L2-normalise the vectors")
    parser.add_argument(
        "--dimensions", type=_positive, help="keep the first N dimensions (Matryoshka models)"
    )
    parser.add_argument("--stack", default="LlmInference", help="stack name (default LlmInference)")
    parser.add_argument("--state-machine-arn", help="skip the stack lookup: the state machine's ARN")
    parser.add_argument("--function-name", help="with --state-machine-arn: the batch function (for the cost)")
    parser.add_argument("--name", help="execution name (default: the output folder's name and the time)")
    parser.add_argument(
        "--estimate", action="store_true", help="print the projected duration and cost, then stop"
    )
    parser.add_argument("--tokens-per-s", type=float, help="throughput for --estimate (default: benchmarks)")
    parser.add_argument(
        "--memory-mb", type=_positive, default=2048, help="batch function memory for --estimate"
    )
    parser.add_argument("--concurrency", type=_positive, default=100, help="MaxConcurrency for --estimate")
    parser.add_argument(
        "--items-per-batch", type=_positive, default=500, help="items per batch for --estimate"
    )
    parser.add_argument("--no-wait", action="store_true", help="start the run and return its execution ARN")
    parser.add_argument("--no-cost", action="store_true", help="do not read CloudWatch Logs for the cost")
    parser.add_argument(
        "--poll", type=float, default=5.0, help="seconds between progress updates (default 5)"
    )
    parser.add_argument("--region", help="AWS region (default: from the AWS configuration)")
    parser.add_argument("--profile", help="AWS profile to use")


def _deployment(
    args: argparse.Namespace, session: object, source: S3Location, output: S3Location
) -> Deployment:
    if args.state_machine_arn:
        return Deployment(
            bucket=source.bucket,
            state_machine_arn=args.state_machine_arn,
            function_name=args.function_name or "",
            input_prefix=source.key.rsplit("/", 1)[0] + "/" if "/" in source.key else "",
            output_prefix=output.key.split("/", 1)[0] + "/",
        )
    return Deployment.from_stack(session.client("cloudformation", region_name=args.region), args.stack)  # type: ignore[attr-defined]


def run(args: argparse.Namespace, io: CommandIO) -> int:
    source = S3Location.parse(args.input, what="--input")
    output = S3Location.parse(args.output, what="--output")
    if not output.key.endswith("/"):
        output = S3Location(output.bucket, output.key + "/")
    fmt = args.format or guess_format(source.key)
    options = RunOptions(
        id_field=args.id_field,
        text_field=args.text_field,
        prompt_name=args.prompt_name,
        normalize=not args.no_normalize,
        truncate=args.truncate,
        dimensions=args.dimensions,
    )
    session = io.session(args.profile)
    s3 = session.client("s3", region_name=args.region)
    try:
        if args.estimate:
            return _estimate(args, io, s3, source, fmt)
        deployment = _deployment(args, session, source, output)
        payload = run_input(deployment, source, output, fmt, options)
        return _run(args, io, session, deployment, payload, output)
    except (ClientError, BotoCoreError) as exc:
        raise ClientUsageError(str(exc)) from None


def _estimate(args: argparse.Namespace, io: CommandIO, s3: object, source: S3Location, fmt: str) -> int:
    throughput = (
        Throughput(args.tokens_per_s, "--tokens-per-s") if args.tokens_per_s else measured_throughput()
    )
    sample = sample_input(s3, source, fmt, args.text_field)  # type: ignore[arg-type]
    projection = project(
        sample,
        throughput,
        memory_mb=args.memory_mb,
        concurrency=args.concurrency,
        items_per_batch=args.items_per_batch,
        region=args.region or "us-east-1",
        architecture="x86_64",
    )
    for line in projection.lines(throughput, args.memory_mb, args.concurrency):
        io.out.write(line + "\n")
    return 0


def _run(
    args: argparse.Namespace,
    io: CommandIO,
    session: object,
    deployment: Deployment,
    payload: dict[str, object],
    output: S3Location,
) -> int:
    sfn = session.client("stepfunctions", region_name=args.region)  # type: ignore[attr-defined]
    folder = output.key.rstrip("/").rsplit("/", 1)[-1]
    name = args.name or f"{folder}-{datetime.now(UTC):%Y%m%d-%H%M%S}"[:80]
    execution_arn = sfn.start_execution(
        stateMachineArn=deployment.state_machine_arn, name=name, input=json.dumps(payload)
    )["executionArn"]
    io.err.write(f"started {execution_arn}\n")
    if args.no_wait:
        io.out.write(execution_arn + "\n")
        return 0
    started = time.monotonic()
    while (described := sfn.describe_execution(executionArn=execution_arn))["status"] == "RUNNING":
        progress = map_run_progress(sfn, execution_arn, started, None)
        if progress is not None:
            io.err.write("\r" + progress.line())
            io.err.flush()
        time.sleep(args.poll)
    progress = map_run_progress(sfn, execution_arn, started, None)
    if progress is not None:
        io.err.write("\r" + progress.line() + "\n")
    status = described["status"]
    io.out.write(f"run {name}: {status}\n")
    if status != "SUCCEEDED":
        io.out.write(f"  {described.get('error', '')}: {described.get('cause', '')}\n")
    s3 = session.client("s3", region_name=args.region)  # type: ignore[attr-defined]
    summary = read_results(s3, summarise_execution(described))
    for line in summary.lines(output):
        io.out.write(line + "\n")
    if not args.no_cost and deployment.function_name:
        try:
            cost = run_cost(
                session.client("lambda", region_name=args.region),  # type: ignore[attr-defined]
                session.client("logs", region_name=args.region),  # type: ignore[attr-defined]
                deployment.function_name,
                described["startDate"],
                described.get("stopDate") or datetime.now(UTC),
                expected=summary.batches,
            )
            for line in cost_lines(cost, summary.tokens, summary.batches):
                io.out.write(line + "\n")
        except CostInputError as exc:
            io.out.write(f"cost:     not known: {exc}\n")
    ok = status == "SUCCEEDED" and not summary.failed_batches
    return 0 if ok else 1
