"""The EMF records the running functions write under the local stack back every metric the stack shows.

Both functions run as `make local` runs them (tests/harness.py's shared stack,
real models, the real runtime loops); requests of every kind go through their
Function URL path, and their standard output (their log file, where Lambda
would pick the EMF lines up) is read back. Every metric a dashboard widget or
an alarm of the synthesized template names (tests/test_observability.py reads
them) must be among the records: same namespace, name and dimensions (and
dimension value where the widget fixes one), written with the unit the
dashboard labels it with. A widget naming a metric no handler writes fails.

The generator's generation figures (tokens, time to first token, tokens per
second, deadline stops, finish reasons) come from GeneratorApi._log, which
gains its metrics lines separately (tests/test_metrics.py checks those lines
in-process): until they are in llama_app/api.py, that part is an expected
failure, and it must pass once they are.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Template

from app import build_app, cdk_json_context
from benchmarks import lambda_logs
from local.stack import LocalStack
from stacks.observability import UNITS
from tests.harness import shared_stack
from tests.test_observability import MetricRef, metric_references

pytestmark = pytest.mark.slow

GENERATION_METRICS = frozenset(
    {
        "PromptTokens",
        "CompletionTokens",
        "TimeToFirstToken",
        "TokensPerSecond",
        "DeadlineStops",
        "Generations",
    }
)


@pytest.fixture(scope="module")
def stack() -> LocalStack:
    return shared_stack()


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory) -> set[MetricRef]:
    """What the default template's dashboard and alarms name (namespace: the default stack name)."""
    outdir = tmp_path_factory.mktemp("cdk.out")
    app, built = build_app(cdk_json_context(), outdir=str(outdir))
    app.synth()
    return metric_references(Template.from_stack(built))


def emf_records(log: Path) -> Iterator[dict[str, Any]]:
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith('{"_aws"'):
            yield json.loads(line)


def written(record: dict[str, Any]) -> Iterator[tuple[str, str, frozenset[tuple[str, str]], str]]:
    """(namespace, metric, dimensions with their values, unit) of every metric in one EMF record."""
    for directive in record["_aws"]["CloudWatchMetrics"]:
        for dimension_set in directive["Dimensions"]:
            dims = frozenset((name, str(record[name])) for name in dimension_set)
            for metric in directive["Metrics"]:
                yield directive["Namespace"], metric["Name"], dims, metric["Unit"]


def drive(stack: LocalStack) -> None:
    """Requests of every kind the metrics count: answers, a stream, refusals of both functions."""
    llama, embeddings = stack.functions["llama"], stack.functions["embeddings"]
    chat = {"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 4}
    status, _, _ = llama.call("POST", "/v1/chat/completions", json.dumps(chat).encode())
    assert status == 200
    status, _, _ = llama.call(
        "POST", "/v1/completions", json.dumps({"prompt": "Llamas", "max_tokens": 3, "stream": True}).encode()
    )
    assert status == 200
    assert llama.call("POST", "/v1/completions", b'{"prompt": 3}')[0] == 400
    assert llama.call("GET", "/nowhere")[0] == 404
    assert (
        embeddings.call("POST", "/embed", json.dumps({"inputs": ["a llama", "an alpaca"]}).encode())[0] == 200
    )
    refused = embeddings.call("POST", "/v1/embeddings", json.dumps({"input": "x", "model": "nope"}).encode())
    assert refused[0] == 404


@pytest.fixture(scope="module")
def records(stack: LocalStack) -> list[tuple[str, str, frozenset[tuple[str, str]], str]]:
    drive(stack)
    logs = [stack.functions[key].log_path for key in ("llama", "embeddings")]
    deadline = time.monotonic() + 20
    while True:  # the last records reach the log files a moment after the answers
        found = [item for log in logs for record in emf_records(log) for item in written(record)]
        kinds = {(name, dict(dims).get("service")) for _, name, dims, _ in found}
        if {("Refusals", "embeddings"), ("InputTokens", "embeddings"), ("Refusals", "llama")} <= kinds:
            return found
        if time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def unmatched(
    refs: set[MetricRef], records: list[tuple[str, str, frozenset[tuple[str, str]], str]]
) -> list[str]:
    missing = []
    for ref in sorted(refs, key=lambda r: (r.name, sorted(map(str, r.dimensions)))):
        keys = {name for name, _ in ref.dimensions}
        fixed = {(name, value) for name, value in ref.dimensions if value is not None}
        if not any(
            namespace == ref.namespace
            and name == ref.name
            and {key for key, _ in dims} == keys
            and fixed <= dims
            for namespace, name, dims, _ in records
        ):
            missing.append(f"{ref.where}: {ref.namespace} {ref.name} {sorted(map(str, ref.dimensions))}")
    return missing


def test_every_metric_the_stack_shows_is_written_by_a_running_handler(
    references: set[MetricRef], records: list[tuple[str, str, frozenset[tuple[str, str]], str]]
) -> None:
    # Given the handler metrics the dashboard and the alarms name, but the generator's generation figures
    refs = {
        ref
        for ref in references
        if not (ref.name in GENERATION_METRICS and ("service", "llama") in ref.dimensions)
    }
    assert len(refs) >= 10
    # Then each was written by the functions running under the local stack
    assert unmatched(refs, records) == []


def test_the_generators_generation_figures_are_written_by_the_running_generator(
    references: set[MetricRef], records: list[tuple[str, str, frozenset[tuple[str, str]], str]]
) -> None:
    refs = {
        ref for ref in references if ref.name in GENERATION_METRICS and ("service", "llama") in ref.dimensions
    }
    assert {ref.name for ref in refs} == GENERATION_METRICS
    assert unmatched(refs, records) == []


def test_every_written_metric_has_the_unit_the_dashboard_labels_it_with(
    records: list[tuple[str, str, frozenset[tuple[str, str]], str]],
) -> None:
    units = {(name, unit) for _, name, _, unit in records}
    assert units
    assert {(name, UNITS[name]) for name, _ in units} == units


def test_cold_starts_are_the_ones_lambdas_report_records_say(
    records: list[tuple[str, str, frozenset[tuple[str, str]], str]], stack: LocalStack
) -> None:
    # Given each function's log: its request records and the platform's REPORT lines
    for key in ("llama", "embeddings"):
        log = stack.functions[key].log_path
        starts = [record["ColdStart"] for record in emf_records(log) if "ColdStart" in record]
        reports = lambda_logs.parse_log(log.read_text(errors="replace").splitlines()).reports
        # Then a record said "cold" exactly as often as a REPORT carried an Init Duration
        assert starts[0] == [1.0]
        assert sum(value[0] for value in starts) == sum(1 for report in reports if report.cold) >= 1
        assert len(starts) >= 3


def test_refusals_carry_their_error_codes(
    records: list[tuple[str, str, frozenset[tuple[str, str]], str]],
) -> None:
    codes = {
        (dict(dims)["service"], dict(dims)["error_code"])
        for _, name, dims, _ in records
        if name == "Refusals"
    }
    assert {("llama", "invalid_value"), ("llama", "not_found"), ("embeddings", "model_not_found")} <= codes
