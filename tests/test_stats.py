"""``python -m client stats``: a deployed stack's last hour or day, from its metrics and REPORT records.

AWS is stubbed: CloudFormation, Lambda, CloudWatch and CloudWatch Logs are
botocore Stubbers on real clients (which also check each request against the
service's API model). The clock is fixed too: the command's time window is
computed from ``NOW`` instead of the current time, so the stubbed requests'
start and end times are known. The cost model and the price book are the real ones.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

from benchmarks.prices import load_prices
from client import __main__ as client_main
from client.stats import window

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
REGION = "us-east-1"
NAMES = {"llama": "LlmInference-LlamaFunction-abc", "embeddings": "LlmInference-EmbeddingsFunction-def"}


class StubbedSession:
    """Stands in for boto3.Session: hands out the stubbed clients."""

    def __init__(self, clients: dict[str, Any]) -> None:
        self.clients = clients

    def client(self, name: str, **_: Any) -> Any:
        return self.clients[name]


@pytest.fixture
def clients(dummy_aws: None, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setattr("client.commands.stats.window", lambda hours: window(hours, NOW))
    return {
        name: boto3.client(name, region_name=REGION)  # type: ignore[call-overload]
        for name in ("cloudformation", "lambda", "cloudwatch", "logs")
    }


def configuration(key: str) -> dict[str, Any]:
    return {
        "FunctionName": NAMES[key],
        "FunctionArn": f"arn:aws:lambda:{REGION}:123456789012:function:{NAMES[key]}",
        "MemorySize": 8192,
        "Architectures": ["x86_64"],
        "EphemeralStorage": {"Size": 512},
        "Environment": {
            "Variables": {"POWERTOOLS_SERVICE_NAME": key, "POWERTOOLS_METRICS_NAMESPACE": "LlmInference"}
        },
        "LoggingConfig": {"LogFormat": "JSON", "LogGroup": f"/aws/lambda/{NAMES[key]}"},
    }


def report_line(request_id: str, billed_ms: int, init_ms: float | None = None) -> str:
    metrics: dict[str, Any] = {
        "durationMs": billed_ms - 0.5,
        "billedDurationMs": billed_ms,
        "memorySizeMB": 8192,
        "maxMemoryUsedMB": 2000,
    }
    if init_ms is not None:
        metrics["initDurationMs"] = init_ms
    return json.dumps({"type": "platform.report", "record": {"requestId": request_id, "metrics": metrics}})


METRIC_VALUES = {
    "l_invocations": 4.0,
    "l_errors": 0.0,
    "l_throttles": 1.0,
    "l_duration": 6000.0,
    "l_cold": 1.0,
    "l_measured": 4.0,
    "l_server_errors": 0.0,
    "l_tokens_in": 120.0,
    "l_tokens_out": 480.0,
    "l_ttft_p50": 210.0,
    "l_ttft_p95": 655.0,
    "l_tokens_per_s": 21.5,
    "l_deadline_stops": 1.0,
    "l_refusal_0": 2.0,
    "e_invocations": 10.0,
    "e_duration": 500.0,
    "e_cold": 2.0,
    "e_measured": 10.0,
    "e_inputs": 40.0,
    "e_tokens_in": 1600.0,
    "e_latency_p50": 38.0,
    "e_latency_p95": 61.0,
}


def expect_everything(stubs: dict[str, Stubber], *, chart: bool = False) -> None:
    stubs["cloudformation"].add_response(
        "describe_stacks",
        {
            "Stacks": [
                {
                    "StackName": "LlmInference",
                    "CreationTime": NOW,
                    "StackStatus": "UPDATE_COMPLETE",
                    "Outputs": [
                        {"OutputKey": "LlamaFunctionName", "OutputValue": NAMES["llama"]},
                        {"OutputKey": "EmbeddingsFunctionName", "OutputValue": NAMES["embeddings"]},
                    ],
                }
            ]
        },
        {"StackName": "LlmInference"},
    )
    for key in ("llama", "embeddings"):
        stubs["lambda"].add_response(
            "get_function_configuration", configuration(key), {"FunctionName": NAMES[key]}
        )
    refusals = {"llama": ["invalid_value"], "embeddings": []}
    for key in ("llama", "embeddings"):
        stubs["cloudwatch"].add_response(
            "list_metrics",
            {
                "Metrics": [
                    {
                        "Namespace": "LlmInference",
                        "MetricName": "Refusals",
                        "Dimensions": [
                            {"Name": "service", "Value": key},
                            {"Name": "error_code", "Value": code},
                        ],
                    }
                    for code in refusals[key]
                ]
            },
            {
                "Namespace": "LlmInference",
                "MetricName": "Refusals",
                "Dimensions": [{"Name": "service", "Value": key}],
            },
        )
    stubs["cloudwatch"].add_response(
        "get_metric_data",
        {
            "MetricDataResults": [
                {"Id": query_id, "Timestamps": [NOW], "Values": [value], "StatusCode": "Complete"}
                for query_id, value in METRIC_VALUES.items()
            ]
        },
        {
            "MetricDataQueries": ANY,
            "StartTime": datetime(2026, 11, 30, 11, 0, tzinfo=UTC),
            "EndTime": NOW,
            "ScanBy": "TimestampAscending",
        },
    )
    logs = {
        "llama": [report_line("a", 3000, init_ms=900.0), report_line("b", 1000), report_line("c", 1000)],
        "embeddings": [report_line("d", 50)],
    }
    for key in ("llama", "embeddings"):
        stubs["logs"].add_response(
            "filter_log_events",
            {"events": [{"logStreamName": "s", "message": line} for line in logs[key]]},
            {
                "logGroupName": f"/aws/lambda/{NAMES[key]}",
                "filterPattern": ANY,
                "startTime": int(datetime(2026, 11, 30, 11, 0, tzinfo=UTC).timestamp() * 1000),
                "endTime": int(NOW.timestamp() * 1000),
            },
        )
    if chart:
        stubs["cloudwatch"].add_response(
            "get_metric_data",
            {
                "MetricDataResults": [
                    {"Id": "l_tokens_in", "Timestamps": [NOW], "Values": [120.0], "StatusCode": "Complete"},
                    {"Id": "l_tokens_out", "Timestamps": [NOW], "Values": [480.0], "StatusCode": "Complete"},
                    {"Id": "l_ttft_p50", "Timestamps": [NOW], "Values": [210.0], "StatusCode": "Complete"},
                    {"Id": "e_tokens_in", "Timestamps": [NOW], "Values": [1600.0], "StatusCode": "Complete"},
                ]
            },
            {"MetricDataQueries": ANY, "StartTime": ANY, "EndTime": ANY, "ScanBy": "TimestampAscending"},
        )


def run(argv: list[str], clients: dict[str, Any]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = client_main.main(
        ["stats", *argv], out=out, err=err, session_factory=lambda **_: StubbedSession(clients)
    )
    return status, out.getvalue(), err.getvalue()


def stubbed(clients: dict[str, Any]) -> dict[str, Stubber]:
    return {name: Stubber(client) for name, client in clients.items()}


def test_the_last_hour_of_both_functions_from_metrics_and_report_records(clients: dict[str, Any]) -> None:
    # Given a deployed stack whose metrics and logs hold an hour of traffic
    stubs = stubbed(clients)
    expect_everything(stubs)
    for stub in stubs.values():
        stub.activate()
    # When stats reads the last hour
    status, out, _ = run(["--stack-name", "LlmInference", "--hours", "1"], clients)
    # Then every call was made as expected and the report gives each figure
    for stub in stubs.values():
        stub.assert_no_pending_responses()
    assert status == 0
    assert "last 1 hour (2026-11-30 11:00 to 2026-11-30 12:00 UTC)" in out
    assert "tokens          in 120, out 480" in out
    assert "time to first   p50 210 ms, p95 655 ms" in out
    assert "generation      21.5 tokens/s" in out
    assert "deadline stops  1" in out
    assert "cold starts     1 of 4 measured invocations (25.0%)" in out
    assert "refusals        invalid_value 2 (0 answered 5xx)" in out
    assert "invocations     4 (0 errors, 1 throttled)" in out
    assert "inputs          40 (1,600 tokens)" in out
    assert "batch latency   p50 38 ms, p95 61 ms" in out
    assert "cold starts     2 of 10 measured invocations (20.0%)" in out
    # And the cost of the generator's three REPORT records, priced by the cost model:
    # 5,000 ms billed at 8 GB = 40 GB-s x $0.0000166667 + 3 x $0.0000002 = $0.0006673
    assert "$0.000667 from 3 REPORT records (1 cold)" in out
    # and from its Duration metric: 6 s x 8 GB x $0.0000166667 + 4 requests = $0.0008008
    assert "$0.000801 from the Duration and Invocations metrics" in out


def test_json_output_carries_both_costs(clients: dict[str, Any]) -> None:
    stubs = stubbed(clients)
    expect_everything(stubs)
    for stub in stubs.values():
        stub.activate()
    status, out, _ = run(["--json"], clients)
    assert status == 0
    figures = json.loads(out)
    llama = figures["functions"]["llama"]
    rate = load_prices().rate(REGION, "x86_64")
    expected = Decimal(40) * rate.gb_second + 3 * rate.request
    assert Decimal(llama["cost_from_reports_usd"]) == expected
    assert llama["report_records"] == 3
    assert llama["refusals"] == {"invalid_value": 2.0}
    assert figures["functions"]["embeddings"]["figures"]["tokens_in"] == 1600.0


def test_a_png_chart_on_request(clients: dict[str, Any], tmp_path: Path) -> None:
    stubs = stubbed(clients)
    expect_everything(stubs, chart=True)
    for stub in stubs.values():
        stub.activate()
    target = tmp_path / "stats.png"
    status, _, err = run(["--png", str(target)], clients)
    assert status == 0
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"chart written to {target}" in err
    stubs["cloudwatch"].assert_no_pending_responses()


def test_a_stack_that_is_not_this_projects_is_a_clear_error(clients: dict[str, Any]) -> None:
    with Stubber(clients["cloudformation"]) as stub:
        stub.add_response(
            "describe_stacks",
            {"Stacks": [{"StackName": "Other", "CreationTime": NOW, "StackStatus": "CREATE_COMPLETE"}]},
            {"StackName": "Other"},
        )
        status, _, err = run(["--stack-name", "Other"], clients)
    assert status == 2
    assert "stack 'Other' has no output LlamaFunctionName, EmbeddingsFunctionName" in err


def test_hours_and_days_are_exclusive_and_positive(clients: dict[str, Any]) -> None:
    with pytest.raises(SystemExit) as both:
        run(["--hours", "1", "--days", "1"], clients)
    assert both.value.code == 2
    with pytest.raises(SystemExit) as negative:
        run(["--hours", "-3"], clients)
    assert negative.value.code == 2


def test_a_day_is_a_window_of_24_hours() -> None:
    span = window(24, NOW)
    assert (span.start, span.end, span.seconds) == (datetime(2026, 11, 29, 12, 0, tzinfo=UTC), NOW, 86_400)
    assert span.describe() == "last 1 day (2026-11-29 12:00 to 2026-11-30 12:00 UTC)"
