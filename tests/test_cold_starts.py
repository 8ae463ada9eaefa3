"""``python -m client cold-starts``: forcing and measuring cold starts of a deployed function.

AWS is stubbed: there is no AWS account here, so the Lambda and CloudWatch Logs
APIs are botocore Stubbers (which also check every request's parameters). The
log tails they return are sample lines in the formats AWS documents, stored in
tests/events/lambda_logs/ (written for the tests, not captured from an
account); everything else, the parser, the timing, the report, is the real code.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber

from client import __main__ as client_main
from client import cold_starts

LOGS = Path(__file__).parent / "events" / "lambda_logs"
FUNCTION = "LlmInference-llama"
GROUP = "/aws/lambda/LlmInference-llama"
ENVIRONMENT = {"N_THREADS": "4", "POWERTOOLS_SERVICE_NAME": "llama"}
PAYLOAD = {"prompt": "llamas are", "n-generate": 1}


def tail(name: str) -> str:
    """A stored sample log tail, base64-encoded as Invoke's LogResult."""
    return base64.b64encode((LOGS / f"{name}.log").read_bytes()).decode()


def request_id_in(name: str) -> str:
    from benchmarks.lambda_logs import parse_log

    (report,) = parse_log((LOGS / f"{name}.log").read_text().splitlines()).reports
    return report.request_id


def invoke_answer(log: str, body: bytes = b'{"content": " fluffy"}', **extra: Any) -> dict[str, Any]:
    return {
        "StatusCode": 200,
        "LogResult": tail(log),
        "Payload": StreamingBody(io.BytesIO(body), len(body)),
        "ExecutedVersion": "$LATEST",
        "ResponseMetadata": {"RequestId": request_id_in(log), "HTTPStatusCode": 200},
        **extra,
    }


def configuration(**overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "FunctionName": FUNCTION,
        "FunctionArn": f"arn:aws:lambda:us-east-1:123456789012:function:{FUNCTION}",
        "Version": "$LATEST",
        "MemorySize": 8192,
        "PackageType": "Image",
        "Environment": {"Variables": dict(ENVIRONMENT)},
        "LoggingConfig": {"LogFormat": "JSON", "LogGroup": GROUP},
        "LastUpdateStatus": "Successful",
        "RevisionId": "rev-0",
        "SnapStart": {"ApplyOn": "None", "OptimizationStatus": "Off"},
    }
    config.update(overrides)
    return config


class StubbedSession:
    """Stands in for boto3.Session: hands out the stubbed clients."""

    def __init__(self, lam: Any, logs: Any) -> None:
        self.clients = {"lambda": lam, "logs": logs}

    def client(self, name: str, **_: Any) -> Any:
        return self.clients[name]


@pytest.fixture
def aws(dummy_aws: None) -> tuple[Any, Any]:
    return boto3.client("lambda", region_name="us-east-1"), boto3.client("logs", region_name="us-east-1")


def run(argv: list[str], lam: Any, logs: Any) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = client_main.main(
        ["cold-starts", *argv], out=out, err=err, session_factory=lambda **_: StubbedSession(lam, logs)
    )
    return status, out.getvalue(), err.getvalue()


def table(out: str) -> list[list[str]]:
    """The per-invoke rows of the printed report, split into cells."""
    kinds = ("cold", "restored", "warm", "failed", "unknown")
    cells = [line.split() for line in out.splitlines()]
    return [row for row in cells if len(row) > 1 and row[0].isdigit() and row[1] in kinds]


def prose(out: str) -> str:
    """The printed report with its line wrapping undone, for checking sentences."""
    return " ".join(out.split())


def expect_update(stub: Stubber, variables: dict[str, str], revision: str, new_revision: str) -> None:
    """An UpdateFunctionConfiguration of the environment, then one poll that finds it done."""
    answered = {name: ("probe" if value is ANY else value) for name, value in variables.items()}
    stub.add_response(
        "update_function_configuration",
        configuration(
            Environment={"Variables": answered}, LastUpdateStatus="InProgress", RevisionId=new_revision
        ),
        {"FunctionName": FUNCTION, "Environment": {"Variables": variables}, "RevisionId": revision},
    )
    stub.add_response(
        "get_function_configuration",
        configuration(Environment={"Variables": answered}, RevisionId=new_revision),
        {"FunctionName": FUNCTION},
    )


def expect_invoke(stub: Stubber, answer: dict[str, Any], qualifier: str | None = None) -> None:
    params = {"FunctionName": FUNCTION, "Payload": ANY, "LogType": "Tail"}
    if qualifier:
        params["Qualifier"] = qualifier
    stub.add_response("invoke", answer, params)


def test_forces_cold_starts_of_latest_by_changing_the_environment_and_puts_it_back(
    aws: tuple[Any, Any],
) -> None:
    # Given $LATEST of a function (AWS stubbed), whose two invokes each come back from a new environment
    lam, logs = aws
    with Stubber(lam) as lam_stub, Stubber(logs) as logs_stub:
        lam_stub.add_response("get_function_configuration", configuration(), {"FunctionName": FUNCTION})
        probe = {**ENVIRONMENT, cold_starts.PROBE_VARIABLE: ANY}
        expect_update(lam_stub, probe, "rev-0", "rev-1")
        expect_invoke(lam_stub, invoke_answer("cold_start_json"))
        expect_update(lam_stub, probe, "rev-1", "rev-2")
        expect_invoke(lam_stub, invoke_answer("cold_start_text"))
        # and, at the end, the original variables again
        expect_update(lam_stub, dict(ENVIRONMENT), "rev-2", "rev-3")

        # When two cold starts are measured
        status, out, err = run(
            ["--function-name", FUNCTION, "-n", "2", "--payload", json.dumps(PAYLOAD)], lam, logs
        )

        # Then every expected call was made, the last one putting the environment back
        lam_stub.assert_no_pending_responses()
        logs_stub.assert_no_pending_responses()
    assert status == 0, err
    # and the report shows both cold starts with Lambda's figures and their medians
    rows = table(out)
    assert [row[:7] for row in rows] == [
        ["1", "cold", "9,112.4", "-", "-", "1,843.3", "10,956"],
        ["2", "cold", "9,112.4", "-", "-", "1,843.3", "10,956"],
    ]
    assert all(row[-2:] == ["log", "tail"] for row in rows)
    assert "Medians over 2 new environment(s): Init Duration 9,112.4 ms, Duration 1,843.3 ms" in prose(out)
    assert "cold start (Init or Restore Duration + Duration) 10,955.7 ms" in prose(out)
    assert f"changing the environment variable {cold_starts.PROBE_VARIABLE} of $LATEST" in prose(out)
    assert "from your account" in prose(out)
    assert f"{cold_starts.PROBE_VARIABLE} removed" in prose(out)


def test_measures_snapstart_restores_of_an_alias_with_concurrent_invokes(aws: tuple[Any, Any]) -> None:
    # Given the live alias of a SnapStart version (AWS stubbed): of three invokes sent at once, two reach
    # environments restored from the snapshot and one reaches a warm environment
    lam, logs = aws
    snapstart = configuration(
        Version="7",
        SnapStart={"ApplyOn": "PublishedVersions", "OptimizationStatus": "On"},
        LastModified="2026-11-30T09:49:55.000+0000",
    )
    with Stubber(lam) as lam_stub, Stubber(logs) as logs_stub:
        lam_stub.add_response(
            "get_function_configuration", snapstart, {"FunctionName": FUNCTION, "Qualifier": "live"}
        )
        for log in ("snapstart_restore_json", "snapstart_restore_text", "warm_json"):
            expect_invoke(lam_stub, invoke_answer(log, ExecutedVersion="7"), qualifier="live")
        # and the log group holds the INIT_REPORTs written when versions 6 and 7 were published
        init_7 = (LOGS / "snapshot_init_json.log").read_text().splitlines()[1]
        init_6 = "INIT_REPORT Init Duration: 9999.00 ms\tPhase: init\tStatus: success"
        logs_stub.add_response(
            "filter_log_events",
            {
                "events": [
                    {"logStreamName": "2026/11/29/[6]0f1e2d3c4b5a", "message": init_6, "timestamp": 1},
                    {"logStreamName": "2026/11/30/[7]a1b2c3d4e5f6", "message": init_7, "timestamp": 2},
                ]
            },
            {
                "logGroupName": GROUP,
                "filterPattern": '?"INIT_REPORT" ?"platform.initReport"',
                "startTime": 1796032195000 - 5 * 60 * 1000,
            },
        )

        # When three cold starts are asked of the alias
        status, out, err = run(["--function-name", FUNCTION, "--qualifier", "live", "-n", "3"], lam, logs)

        # Then the three invokes and the INIT_REPORT look-up were made
        lam_stub.assert_no_pending_responses()
        logs_stub.assert_no_pending_responses()
    assert status == 0, err
    rows = table(out)
    assert sorted(row[1] for row in rows) == ["restored", "restored", "warm"]
    assert sorted(row[0] for row in rows) == ["1", "2", "3"]
    restored = [row for row in rows if row[1] == "restored"]
    assert all(row[2:7] == ["-", "612.4", "188", "1,465.0", "1,466"] for row in restored)
    assert "Medians over 2 new environment(s): Restore Duration 612.4 ms, Duration 1,465.0 ms" in prose(out)
    assert "cold start (Init or Restore Duration + Duration) 2,077.4 ms" in prose(out)
    assert "1 invoke(s) reached a warm environment" in prose(out)
    # and the snapshot's init is version 7's, not version 6's
    assert "Snapshot init (INIT_REPORT written when version 7 was published): 8,734.1 ms, success" in prose(
        out
    )
    assert "3 invoke(s) sent at once" in prose(out)


def test_a_failing_invoke_is_reported_and_sets_the_exit_status(aws: tuple[Any, Any]) -> None:
    # Given a version whose first invoke comes from a new environment and whose second fails (AWS stubbed)
    lam, logs = aws
    error = json.dumps({"errorType": "ValueError", "errorMessage": "bad prompt"}).encode()
    with Stubber(lam) as lam_stub:
        lam_stub.add_response(
            "get_function_configuration",
            configuration(Version="3"),
            {"FunctionName": FUNCTION, "Qualifier": "3"},
        )
        expect_invoke(lam_stub, invoke_answer("cold_start_json"), qualifier="3")
        expect_invoke(
            lam_stub, invoke_answer("failed_json", body=error, FunctionError="Unhandled"), qualifier="3"
        )

        # When two cold starts are measured with --method concurrent, log tails only
        status, out, err = run(
            [
                "--function-name",
                FUNCTION,
                "--qualifier",
                "3",
                "-n",
                "2",
                "--method",
                "concurrent",
                "--no-logs",
            ],
            lam,
            logs,
        )
        lam_stub.assert_no_pending_responses()

    # Then the failure is named, left out of the medians, and the exit status is 1
    assert status == 1, err
    assert "failed: ValueError: bad prompt" in prose(out)
    assert "Medians over 1 new environment(s): Init Duration 9,112.4 ms" in prose(out)


def test_reads_the_report_from_cloudwatch_when_the_tail_lacks_it(aws: tuple[Any, Any]) -> None:
    # Given an invoke whose 4 KB log tail was filled by the function's own lines (AWS stubbed)
    lam, logs = aws
    request_id = request_id_in("cold_start_json")
    lines = (LOGS / "cold_start_json.log").read_text().splitlines()
    crowded = base64.b64encode(("\n".join(lines[:3]) + "\n").encode()).decode()
    with Stubber(lam) as lam_stub, Stubber(logs) as logs_stub:
        lam_stub.add_response(
            "get_function_configuration",
            configuration(Version="3"),
            {"FunctionName": FUNCTION, "Qualifier": "3"},
        )
        expect_invoke(lam_stub, {**invoke_answer("cold_start_json"), "LogResult": crowded}, qualifier="3")
        # and the REPORT record is in the log group
        logs_stub.add_response(
            "filter_log_events",
            {"events": [{"logStreamName": "2026/11/30/[3]abc", "message": lines[3], "timestamp": 1}]},
            {"logGroupName": GROUP, "filterPattern": f'"{request_id}"', "startTime": ANY},
        )

        # When one cold start is measured
        status, out, err = run(
            ["--function-name", FUNCTION, "--qualifier", "3", "-n", "1", "--json"], lam, logs
        )
        logs_stub.assert_no_pending_responses()

    # Then its figures come from CloudWatch Logs, found by request id
    assert status == 0, err
    (invoke,) = json.loads(out)["invokes"]
    assert invoke["record_source"] == "CloudWatch Logs"
    assert invoke["request_id"] == request_id
    assert (invoke["environment"], invoke["init_ms"], invoke["billed_ms"]) == ("cold", 9112.4, 10956)
    assert invoke["first_byte_ms"] is not None
    assert invoke["total_ms"] >= invoke["first_byte_ms"]


def test_the_environment_is_put_back_when_an_invoke_is_throttled(aws: tuple[Any, Any]) -> None:
    # Given $LATEST whose invoke is throttled after the configuration change (AWS stubbed)
    lam, logs = aws
    with Stubber(lam) as lam_stub:
        lam_stub.add_response("get_function_configuration", configuration(), {"FunctionName": FUNCTION})
        expect_update(lam_stub, {**ENVIRONMENT, cold_starts.PROBE_VARIABLE: ANY}, "rev-0", "rev-1")
        lam_stub.add_client_error("invoke", "TooManyRequestsException", "Rate exceeded", 429)
        expect_update(lam_stub, dict(ENVIRONMENT), "rev-1", "rev-2")

        # When one cold start is measured
        status, out, _ = run(["--function-name", FUNCTION, "-n", "1", "--no-logs"], lam, logs)

        # Then the environment is still put back, and the throttle is reported as a failure
        lam_stub.assert_no_pending_responses()
    assert status == 1
    assert "TooManyRequestsException" in prose(out)
    assert "No new environment was measured" in prose(out)


def test_update_config_on_a_published_version_is_refused(aws: tuple[Any, Any]) -> None:
    # Given an alias, whose version's configuration cannot change (AWS stubbed)
    lam, logs = aws
    with Stubber(lam) as lam_stub:
        lam_stub.add_response(
            "get_function_configuration",
            configuration(Version="7"),
            {"FunctionName": FUNCTION, "Qualifier": "live"},
        )

        # When --method update-config is asked for
        status, _, err = run(
            ["--function-name", FUNCTION, "--qualifier", "live", "--method", "update-config"], lam, logs
        )

        # Then nothing is changed or invoked, and the error says why
        lam_stub.assert_no_pending_responses()
    assert status == 2
    assert "works on $LATEST only" in err
    assert "version 7" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-n", "0"], "must be between 1 and 50"),
        (["-n", "many"], "not a whole number"),
        (["--payload", "{not json"], "--payload is not JSON"),
    ],
)
def test_bad_arguments_are_refused_before_any_call(
    argv: list[str], message: str, aws: tuple[Any, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a command line with one bad value (AWS stubbed, nothing queued: any call would fail)
    lam, logs = aws
    with Stubber(lam), Stubber(logs):
        # When it runs
        try:
            status, _, err = run(["--function-name", FUNCTION, *argv], lam, logs)
        except SystemExit as exc:  # argparse's own refusals
            status, err = int(exc.code or 0), capsys.readouterr().err

    # Then it exits 2 naming the problem
    assert status == 2
    assert message in err
