"""The cost model: benchmarks/prices.py, cost_model.py, the cost.py CLI and lambda_logs.py's records.

Only AWS itself is mocked here: CloudWatch Logs and the Lambda API are
botocore Stubbers in the CloudWatch test, because no AWS account exists on
this machine. Everything else runs the real code on the real price file.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

from benchmarks import cost, cost_model, lambda_logs, prices
from benchmarks.cost_model import Tokens, Workload
from benchmarks.prices import CostInputError

ROOT = Path(__file__).resolve().parent.parent

# Real-format REPORT lines as CloudWatch stores them (tab-separated, trailing tab).
WARM = (
    "REPORT RequestId: 3f1c5d7e-8a2b-4c6d-9e0f-1a2b3c4d5e6f\tDuration: 102.25 ms\t"
    "Billed Duration: 103 ms\tMemory Size: 2048 MB\tMax Memory Used: 180 MB\t"
)
# A container-image cold start: Billed Duration covers Duration + Init Duration.
COLD_IMAGE = (
    "REPORT RequestId: 9b2e6a41-0c3d-4e5f-8a7b-6c5d4e3f2a1b\tDuration: 102.25 ms\t"
    "Billed Duration: 915 ms\tMemory Size: 2048 MB\tMax Memory Used: 180 MB\tInit Duration: 812.54 ms\t"
)
# A zip function before 2025-08-01: init reported but not billed.
COLD_ZIP_2024 = (
    "REPORT RequestId: 5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d\tDuration: 102.25 ms\t"
    "Billed Duration: 103 ms\tMemory Size: 2048 MB\tMax Memory Used: 180 MB\tInit Duration: 812.54 ms\t"
)
JSON_COLD = {
    "time": "2026-11-20T10:15:02.123Z",
    "type": "platform.report",
    "record": {
        "requestId": "0d9c8b7a-6f5e-4d3c-2b1a-0f9e8d7c6b5a",
        "metrics": {
            "durationMs": 1233.96,
            "billedDurationMs": 1698,
            "memorySizeMB": 3008,
            "maxMemoryUsedMB": 412,
            "initDurationMs": 463.512,
        },
        "status": "success",
    },
}
JSON_WARM = {
    "time": "2026-11-20T10:15:09.001Z",
    "type": "platform.report",
    "record": {
        "requestId": "1e2d3c4b-5a69-4788-9a0b-c1d2e3f4a5b6",
        "metrics": {
            "durationMs": 250.0,
            "billedDurationMs": 250,
            "memorySizeMB": 3008,
            "maxMemoryUsedMB": 415,
        },
        "status": "success",
    },
}


@pytest.fixture(scope="module")
def book() -> prices.PriceBook:
    return prices.load_prices()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.cost", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


# --- the seed's breakdown ------------------------------------------------------


def test_seed_breakdown_is_reproduced_exactly(book: prices.PriceBook) -> None:
    # Given the seed's workload: 100,000 requests of 6,000 ms at 8000 MB, 512 MB /tmp, x86 in Frankfurt
    workload = Workload(
        memory_mb=8000, duration_ms=Decimal(6000), requests=100_000, region="eu-central-1", architecture="x86"
    )

    # When it is priced
    result = cost_model.estimate(workload, book)

    # Then 8000/1024 GB x 6 s x 100,000 = 4,687,500 GB-s, $78.13 compute, $0.02 requests, $78.15 total
    assert result.gb_seconds == Decimal(8000) / 1024 * 6 * 100_000 == Decimal(4_687_500)
    assert cost_model.usd(result.compute) == "$78.13"
    assert cost_model.usd(result.request_cost) == "$0.02"
    assert result.ephemeral == 0
    assert cost_model.usd(result.total) == "$78.15"
    text = cost.breakdown(result)
    assert "8,000/1024 GB x 6 s x 100,000 = 4,687,500 GB-s" in text
    assert "= $78.13" in text
    assert "$0.20/M = $0.02" in text
    assert "total       $78.15" in text


def test_seed_breakdown_through_the_command_line() -> None:
    # Given the command the README documents
    # When it runs as a user would run it
    done = run_cli(
        "--memory-mb", "8000", "--duration-ms", "6000", "--requests", "100000", "--region", "eu-central-1"
    )

    # Then it succeeds and prints the seed's figures
    assert done.returncode == 0, done.stderr
    assert "4,687,500 GB-s" in done.stdout
    assert "$78.13" in done.stdout
    assert "$78.15" in done.stdout


def test_duration_is_billed_in_whole_milliseconds_rounded_up(book: prices.PriceBook) -> None:
    # Given durations just above and exactly on a millisecond
    # Then each is rounded up to the next millisecond, never down
    assert cost_model.billed_ms(Decimal("102.25")) == 103
    assert cost_model.billed_ms(Decimal("1.0001")) == 2
    assert cost_model.billed_ms(Decimal(6000)) == 6000
    result = cost_model.estimate(Workload(memory_mb=1024, duration_ms=Decimal("0.2"), requests=1000), book)
    assert result.billed_ms_per_request == 1
    assert result.gb_seconds == Decimal(1)


def test_ephemeral_storage_is_billed_above_512_mb_only(book: prices.PriceBook) -> None:
    # Given 10 GB of /tmp for 1,000 one-second requests in us-east-1
    result = cost_model.estimate(
        Workload(memory_mb=1024, duration_ms=Decimal(1000), requests=1000, ephemeral_mb=10240), book
    )

    # Then (10240-512)/1024 GB x 1000 s = 9,500 GB-s at the region's /tmp price
    assert result.ephemeral_gb_seconds == Decimal(9500)
    assert result.ephemeral == Decimal(9500) * Decimal("0.0000000309")
    assert "(10,240-512)/1024 GB" in cost.breakdown(result)


def test_the_included_ephemeral_storage_comes_from_the_price_book(book: prices.PriceBook) -> None:
    # Given a price book that included 1,024 MB of /tmp, and a function with exactly that much
    larger = dataclasses.replace(book, ephemeral_included_mb=1024)
    tokens = Tokens(input=1000, input_per_s=Decimal(1000))
    workload = Workload(
        memory_mb=1024, duration_ms=Decimal(1000), requests=1, ephemeral_mb=1024, tokens=tokens
    )

    # When it is priced with each book
    with_512 = cost_model.estimate(workload, book)
    with_1024 = cost_model.estimate(workload, larger)

    # Then only the storage above the book's included size is billed, in the total and per token alike
    assert with_512.ephemeral > 0
    assert (with_1024.ephemeral, with_1024.ephemeral_included_mb) == (Decimal(0), 1024)
    assert with_512.per_million_by_kind()[0] > with_1024.per_million_by_kind()[0]  # type: ignore[operator]
    assert with_1024.per_million_by_kind()[0] == Decimal(1024) / 1024 * Decimal("0.0000166667") * 1000
    assert "1024 MB is included" in cost.breakdown(with_1024)


@pytest.mark.parametrize("ephemeral_mb", [511, 10241])
def test_ephemeral_storage_out_of_range_is_refused_alike_by_estimates_and_logs(
    book: prices.PriceBook, ephemeral_mb: int
) -> None:
    # Given /tmp outside Lambda's 512-10,240 MB
    message = f"ephemeral storage must be between 512 and 10240 MB, got {ephemeral_mb}"

    # Then an estimate and the pricing of real REPORT lines refuse it with the same words
    with pytest.raises(CostInputError, match=message):
        cost_model.estimate(
            Workload(memory_mb=1024, duration_ms=Decimal(1), requests=1, ephemeral_mb=ephemeral_mb), book
        )
    shape = lambda_logs.FunctionShape(region="us-east-1", architecture="x86_64", ephemeral_mb=ephemeral_mb)
    with pytest.raises(CostInputError, match=message):
        cost_model.price(lambda_logs.parse_lines([WARM]), shape, book)


def test_arm64_uses_its_own_price(book: prices.PriceBook) -> None:
    # Given the same workload on both architectures
    x86 = cost_model.estimate(Workload(memory_mb=2048, duration_ms=Decimal(500), requests=10_000), book)
    arm = cost_model.estimate(
        Workload(memory_mb=2048, duration_ms=Decimal(500), requests=10_000, architecture="arm64"), book
    )

    # Then arm64 pays $0.0000133334 per GB-second and x86 $0.0000166667
    assert arm.compute == Decimal(10_000) * Decimal("0.0000133334")
    assert x86.compute == Decimal(10_000) * Decimal("0.0000166667")


def test_tiered_pricing_applies_beyond_six_billion_gb_seconds(book: prices.PriceBook) -> None:
    # Given 16 billion GB-seconds in one month on x86
    rate = book.rate("us-east-1", "x86_64")

    # When the compute is priced through the tiers
    charged = cost_model.tiered_compute_cost(Decimal(16_000_000_000), rate)

    # Then 6 B at tier 1, 9 B at tier 2 and 1 B at tier 3
    expected = (
        Decimal(6_000_000_000) * Decimal("0.0000166667")
        + Decimal(9_000_000_000) * Decimal("0.0000150000")
        + Decimal(1_000_000_000) * Decimal("0.0000133334")
    )
    assert charged == expected


# --- tokens --------------------------------------------------------------------------


def test_generation_cost_per_million_input_and_output_tokens(book: prices.PriceBook) -> None:
    # Given a generator at 2048 MB processing 500 prompt tokens at 250/s and generating 100 at 20/s
    tokens = Tokens(input=500, output=100, input_per_s=Decimal(250), output_per_s=Decimal(20))
    duration = cost_model.duration_from_throughput(tokens)
    result = cost_model.estimate(
        Workload(memory_mb=2048, duration_ms=duration, requests=1000, tokens=tokens), book
    )

    # Then one request takes 2 s + 5 s, and a million tokens of each kind cost 2 GB x the seconds they take
    assert duration == Decimal(7000)
    per_input, per_output = result.per_million_by_kind()
    assert per_input == 2 * Decimal("0.0000166667") * Decimal(1_000_000) / 250
    assert per_output == 2 * Decimal("0.0000166667") * Decimal(1_000_000) / 20
    blended = result.per_million_tokens()
    assert blended == result.total / (600 * 1000) * 1_000_000
    # and the comparison is with the managed generator only
    assert [c.offer.id for c in result.managed] == ["bedrock-llama-3-2-1b-instruct"]
    assert result.managed[0].cost == Decimal(1000) * 600 * Decimal("0.10") / 1_000_000


def test_embeddings_compare_with_both_managed_embedding_services(book: prices.PriceBook) -> None:
    # Given an embeddings workload of 512 tokens per request at 2,000 tokens/s
    tokens = Tokens(input=512, input_per_s=Decimal(2000))
    result = cost_model.estimate(
        Workload(
            memory_mb=2048,
            duration_ms=cost_model.duration_from_throughput(tokens),
            requests=1_000_000,
            tokens=tokens,
        ),
        book,
    )

    # Then Titan V2 and text-embedding-3-small, both $0.02 per million, cost $10.24 for 512 M tokens
    assert {c.offer.id: c.cost for c in result.managed} == {
        "bedrock-titan-embed-text-v2": Decimal("10.24"),
        "openai-text-embedding-3-small": Decimal("10.24"),
    }


# --- free tier ------------------------------------------------------------------------


def test_free_tier_allowance_is_limited_by_gb_seconds_for_long_requests(book: prices.PriceBook) -> None:
    # Given the seed's request shape: 7.8125 GB x 6 s = 46.875 GB-s per request, 1,000 tokens each
    result = cost_model.estimate(
        Workload(memory_mb=8000, duration_ms=Decimal(6000), requests=100_000, tokens=Tokens(input=1000)), book
    )

    # Then 400,000 GB-s cover floor(400,000 / 46.875) = 8,533 such requests a month, 8,533,000 tokens
    assert result.free_requests_per_month() == 8533
    assert result.free_tokens_per_month() == 8_533_000
    # and a month of only this workload is billed for the GB-seconds and requests above the allowance
    expected = (Decimal(4_687_500) - 400_000) * Decimal("0.0000166667")
    assert result.total_after_free_tier() == expected


def test_free_tier_allowance_is_limited_by_requests_for_short_ones(book: prices.PriceBook) -> None:
    # Given tiny requests: 128 MB for 10 ms, 2,000,000 in the month
    result = cost_model.estimate(Workload(memory_mb=128, duration_ms=Decimal(10), requests=2_000_000), book)

    # Then the 1,000,000 free requests bind before the GB-seconds do
    assert result.free_requests_per_month() == 1_000_000
    # and only the second million requests is billed (the 2,500 GB-s are free)
    assert result.total_after_free_tier() == Decimal(1_000_000) * Decimal("0.0000002")


# --- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--memory-mb", "64", "--duration-ms", "10", "--requests", "1"],
            "memory must be between 128 and 10240 MB",
        ),
        (
            ["--memory-mb", "10241", "--duration-ms", "10", "--requests", "1"],
            "memory must be between 128 and 10240",
        ),
        (["--memory-mb", "1024", "--duration-ms", "-5", "--requests", "1"], "duration must not be negative"),
        (
            ["--memory-mb", "1024", "--duration-ms", "5", "--requests", "1", "--region", "mars-1"],
            "unknown region",
        ),
        (
            ["--memory-mb", "1024", "--duration-ms", "5", "--requests", "1", "--arch", "sparc"],
            "unknown architecture",
        ),
        (["--memory-mb", "1024", "--duration-ms", "5", "--requests", "0"], "requests must be at least 1"),
        (
            ["--memory-mb", "1024", "--duration-ms", "5", "--requests", "1", "--ephemeral-mb", "100"],
            "ephemeral",
        ),
        (["--memory-mb", "1024", "--requests", "1"], "give --duration-ms"),
        (
            ["--memory-mb", "1024", "--requests", "1", "--tokens-per-request", "10", "--tokens-per-s", "0"],
            "positive",
        ),
        (["--memory-mb", "lots", "--duration-ms", "5", "--requests", "1"], "not a whole number"),
    ],
)
def test_bad_input_gives_a_clear_error(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a command line with one bad value
    # When the CLI runs (argparse exits for values it cannot parse, the model returns for bad ones)
    status: int | str | None
    try:
        status = cost.main(args)
    except SystemExit as exc:
        status = exc.code

    # Then it exits with status 2 and names the problem
    assert status == 2
    assert message in capsys.readouterr().err


def test_unknown_region_error_lists_the_known_ones() -> None:
    # Given a region the price file does not have
    done = run_cli("--memory-mb", "1024", "--duration-ms", "5", "--requests", "1", "--region", "xx-nowhere-9")

    # Then the error names it and lists what is available, without a traceback
    assert done.returncode == 2
    assert "unknown region 'xx-nowhere-9'" in done.stderr
    assert "eu-central-1" in done.stderr
    assert "Traceback" not in done.stderr


def test_every_price_has_a_source_and_date(book: prices.PriceBook) -> None:
    # Given the price file
    data = json.loads(prices.PRICES_PATH.read_text())

    # Then it is dated, names its sources and covers both architectures in us-east-1 and eu-central-1
    assert data["checked"] == book.checked
    assert data["lambda"]["source"].startswith("https://")
    assert all(offer["source"].startswith("https://") for offer in data["managed"])
    for region in ("us-east-1", "eu-central-1"):
        for arch in ("x86_64", "arm64"):
            assert book.rate(region, arch).gb_second > 0


# --- REPORT lines ----------------------------------------------------------------------


def test_parses_a_warm_report_line() -> None:
    # Given a warm invocation's REPORT line
    record = lambda_logs.parse_line(WARM)

    # Then every field is read and it is not a cold start
    assert record is not None
    assert record.request_id == "3f1c5d7e-8a2b-4c6d-9e0f-1a2b3c4d5e6f"
    assert record.duration_ms == Decimal("102.25")
    assert record.billed_ms == 103
    assert record.memory_mb == 2048
    assert record.max_memory_used_mb == 180
    assert record.init_ms is None
    assert not record.cold


def test_parses_a_cold_report_line_with_init_duration() -> None:
    # Given a container image's cold start, whose Billed Duration includes the init phase
    record = lambda_logs.parse_line(COLD_IMAGE)

    # Then the Init Duration is read and recognised as billed
    assert record is not None
    assert record.cold
    assert record.init_ms == Decimal("812.54")
    assert record.init_billed


def test_fields_are_read_in_any_order() -> None:
    # Given the Runtime Interface Emulator's REPORT line, which puts Init Duration first
    line = (
        "REPORT RequestId: 79a9a3d9-9632-4717-9ba7-325a7ee00841\tInit Duration: 0.07 ms\t"
        "Duration: 340.48 ms\tBilled Duration: 341 ms\tMemory Size: 2048 MB\tMax Memory Used: 2048 MB\t"
    )

    # Then each value lands in its own field
    record = lambda_logs.parse_line(line)
    assert record is not None
    assert (record.init_ms, record.duration_ms, record.billed_ms) == (Decimal("0.07"), Decimal("340.48"), 341)


def test_a_report_line_without_billed_duration_is_an_error() -> None:
    # Given a truncated REPORT line
    # Then the parser names what is missing rather than pricing a guess
    with pytest.raises(CostInputError, match="Billed Duration"):
        lambda_logs.parse_line("REPORT RequestId: abc\tDuration: 12.00 ms\tMemory Size: 128 MB")


def test_an_old_zip_cold_start_shows_its_init_was_not_billed() -> None:
    # Given a 2024 zip-function cold start (init reported, not billed)
    record = lambda_logs.parse_line(COLD_ZIP_2024)

    # Then it is cold, but its init is not inside Billed Duration
    assert record is not None
    assert record.cold
    assert not record.init_billed


def test_parses_json_platform_report_records() -> None:
    # Given JSON-format platform.report events, cold and warm
    cold = lambda_logs.parse_line(json.dumps(JSON_COLD))
    warm = lambda_logs.parse_line(json.dumps(JSON_WARM))

    # Then they read like the text lines
    assert cold is not None
    assert warm is not None
    assert (cold.duration_ms, cold.billed_ms, cold.memory_mb, cold.init_ms) == (
        Decimal("1233.96"),
        1698,
        3008,
        Decimal("463.512"),
    )
    assert cold.init_billed
    assert cold.status == "success"
    assert cold.source_format == "json"
    assert not warm.cold


def test_other_log_lines_are_skipped() -> None:
    # Given a log with START/END lines, an application line and a JSON function log
    lines = [
        "START RequestId: 3f1c5d7e-8a2b-4c6d-9e0f-1a2b3c4d5e6f Version: $LATEST",
        '{"level":"INFO","message":"embedded 3 texts","service":"embeddings"}',
        WARM,
        "END RequestId: 3f1c5d7e-8a2b-4c6d-9e0f-1a2b3c4d5e6f",
        json.dumps({"time": "2026-11-20T10:15:02Z", "type": "platform.start", "record": {"requestId": "x"}}),
    ]

    # Then only the REPORT record is kept
    records = lambda_logs.parse_lines(lines)
    assert [r.request_id for r in records] == ["3f1c5d7e-8a2b-4c6d-9e0f-1a2b3c4d5e6f"]


def test_a_platform_report_without_metrics_is_an_error() -> None:
    # Given a malformed platform.report event
    # Then parsing says what is missing instead of guessing
    with pytest.raises(CostInputError, match="without metrics"):
        lambda_logs.parse_line('{"type": "platform.report", "record": {"requestId": "x"}}')


def test_prices_what_the_reported_invocations_cost(book: prices.PriceBook) -> None:
    # Given one cold and one warm invocation at 2048 MB in eu-central-1 on x86
    records = lambda_logs.parse_lines([COLD_IMAGE, WARM])
    shape = lambda_logs.FunctionShape(region="eu-central-1", architecture="x86_64")

    # When they are priced
    summary = cost_model.price(records, shape, book)

    # Then the billed 915 ms + 103 ms at 2 GB are charged, with two request fees
    assert summary.gb_seconds == Decimal(2) * Decimal("1.018")
    assert summary.compute == Decimal("2.036") * Decimal("0.0000166667")
    assert summary.request_cost == Decimal("0.0000004")
    # and the cold start's billed init is accounted for
    assert summary.init_gb_seconds == Decimal(2) * Decimal("0.81254")
    assert len(summary.cold_starts) == 1
    assert "1 cold" in summary.text("test")


def test_logs_command_reads_a_file_of_mixed_formats(tmp_path: Path) -> None:
    # Given a saved log holding text and JSON records
    log = tmp_path / "function.log"
    log.write_text("\n".join([COLD_IMAGE, WARM, json.dumps(JSON_WARM)]) + "\n")

    # When the CLI prices it
    done = run_cli("logs", "--file", str(log), "--region", "eu-central-1", "--json")

    # Then it counts three invocations, one cold, and bills what the records say
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["invocations"] == 3
    assert figures["cold_starts"] == 1
    assert figures["billed_ms"] == 915 + 103 + 250
    assert figures["region"] == "eu-central-1"


def test_logs_command_reads_filter_log_events_output(tmp_path: Path) -> None:
    # Given the JSON that `aws logs filter-log-events` prints
    saved = tmp_path / "events.json"
    saved.write_text(json.dumps({"events": [{"message": WARM}, {"message": json.dumps(JSON_COLD)}]}))

    # When the CLI prices it
    done = run_cli("logs", "--file", str(saved), "--json")

    # Then both records are found
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["invocations"] == 2


def test_logs_command_without_report_records_says_so(tmp_path: Path) -> None:
    # Given a log without any REPORT record
    log = tmp_path / "empty.log"
    log.write_text("START RequestId: x Version: $LATEST\n")

    # Then the CLI exits 2 and says nothing was found
    done = run_cli("logs", "--file", str(log))
    assert done.returncode == 2
    assert "no REPORT lines" in done.stderr


def test_reads_report_records_from_cloudwatch(book: prices.PriceBook, dummy_aws: None) -> None:
    # Given a deployed arm64 function with 2 GB of /tmp in eu-central-1 (AWS mocked with botocore
    # Stubbers: there is no AWS account here), whose log group returns two pages of records
    lam = boto3.client("lambda", region_name="eu-central-1")
    logs = boto3.client("logs", region_name="eu-central-1")
    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    start_ms = int(now.timestamp() * 1000) - 2 * 3600 * 1000
    end_ms = int(now.timestamp() * 1000)
    query = {
        "logGroupName": "/aws/lambda/llm-embeddings",
        "filterPattern": lambda_logs.REPORT_FILTER_PATTERN,
        "startTime": start_ms,
        "endTime": end_ms,
    }
    with Stubber(lam) as lam_stub, Stubber(logs) as logs_stub:
        lam_stub.add_response(
            "get_function_configuration",
            {
                "FunctionName": "llm-embeddings",
                "FunctionArn": "arn:aws:lambda:eu-central-1:123456789012:function:llm-embeddings",
                "MemorySize": 2048,
                "Architectures": ["arm64"],
                "EphemeralStorage": {"Size": 2048},
                "PackageType": "Image",
            },
            {"FunctionName": "llm-embeddings"},
        )
        logs_stub.add_response(
            "filter_log_events",
            {"events": [{"message": COLD_IMAGE, "timestamp": start_ms + 1}], "nextToken": "page-2"},
            query,
        )
        logs_stub.add_response(
            "filter_log_events",
            {"events": [{"message": json.dumps(JSON_WARM), "timestamp": start_ms + 2}]},
            {**query, "nextToken": "page-2"},
        )

        # When the records are fetched
        records, shape, origin = lambda_logs.from_cloudwatch(
            "llm-embeddings", since_hours=2, logs_client=logs, lambda_client=lam, now=now
        )

        # Then both pages were read and the function's real configuration is used
        logs_stub.assert_no_pending_responses()
    assert len(records) == 2
    assert shape == lambda_logs.FunctionShape(
        region="eu-central-1", architecture="arm64", ephemeral_mb=2048, assumed=False
    )
    assert origin.startswith("/aws/lambda/llm-embeddings")
    summary = cost_model.price(records, shape, book)
    assert summary.rate.gb_second == Decimal("0.0000133334")
    assert summary.ephemeral_gb_seconds == Decimal(1536) / 1024 * (Decimal("0.915") + Decimal("0.250"))


# --- SnapStart and INIT_REPORT records ---------------------------------------------------

LOGS = ROOT / "tests" / "events" / "lambda_logs"


def log_lines(name: str) -> list[str]:
    """A sample log tail in a format AWS documents (tests/events/lambda_logs/NAME.log)."""
    return (LOGS / f"{name}.log").read_text().splitlines()


def test_parses_a_snapstart_restore_report_line() -> None:
    # Given a restored environment's text log: RESTORE_START, RESTORE_REPORT, START, END, REPORT
    found = lambda_logs.parse_log(log_lines("snapstart_restore_text"))

    # Then the one REPORT record carries Restore Duration and Billed Restore Duration, and no init
    (record,) = found.reports
    assert found.inits == ()
    assert record.restored
    assert not record.cold
    assert record.restore_ms == Decimal("612.40")
    assert record.billed_restore_ms == 188
    # and the billed restore time is duration on top of Billed Duration
    assert record.billed_total_ms == 1466 + 188
    assert record.gb_seconds == Decimal(8) * Decimal("1.654")


def test_parses_a_snapstart_restore_json_report() -> None:
    # Given the same restore in the JSON log format (platform.restoreStart/restoreReport/start/report)
    found = lambda_logs.parse_log(log_lines("snapstart_restore_json"))

    # Then the platform.report metrics restoreDurationMs and billedRestoreDurationMs are read
    (record,) = found.reports
    assert (record.restore_ms, record.billed_restore_ms, record.billed_ms) == (Decimal("612.4"), 188, 1466)
    assert record.source_format == "json"
    assert record.status == "success"


def test_parses_init_report_text_lines() -> None:
    # Given a SnapStart version's init at publish, and a failed init that Lambda re-ran in the invoke
    snapshot = lambda_logs.parse_log(log_lines("snapshot_init_text"))
    failed = lambda_logs.parse_log(log_lines("failed_init_text"))

    # Then each INIT_REPORT becomes an init record with its phase and status
    assert snapshot.inits == (
        lambda_logs.InitReport(duration_ms=Decimal("8734.12"), phase="init", status="success"),
    )
    assert snapshot.reports == ()
    timeout, suppressed = failed.inits
    assert (timeout.duration_ms, timeout.phase, timeout.status, timeout.failed) == (
        Decimal("9999.82"),
        "init",
        "timeout",
        True,
    )
    assert (suppressed.phase, suppressed.status, suppressed.error_type) == (
        "invoke",
        "error",
        "Runtime.Unknown",
    )
    # and the invoke's REPORT line carries its status and error type
    (report,) = failed.reports
    assert (report.status, report.error_type, report.billed_ms) == ("error", "Runtime.Unknown", 4122)


def test_parses_a_platform_init_report() -> None:
    # Given the JSON log format's platform.initReport of a SnapStart version
    found = lambda_logs.parse_log(log_lines("snapshot_init_json"))

    # Then its duration, phase, status and initialization type are read
    (init,) = found.inits
    assert init == lambda_logs.InitReport(
        duration_ms=Decimal("8734.12"),
        phase="init",
        status="success",
        initialization_type="snap-start",
        source_format="json",
    )
    assert not init.failed


def test_init_report_records_are_not_report_records() -> None:
    # Given an INIT_REPORT line, and an application line that merely mentions one
    line = "INIT_REPORT Init Duration: 8734.12 ms\tPhase: init\tStatus: success"

    # Then parse_line (REPORT records only) skips both, and parse_record reads only the real one
    assert lambda_logs.parse_line(line) is None
    assert lambda_logs.parse_record("waiting for the INIT_REPORT line") is None
    assert isinstance(lambda_logs.parse_record(line), lambda_logs.InitReport)


def test_a_platform_init_report_without_metrics_is_an_error() -> None:
    # Given a malformed platform.initReport
    # Then parsing names what is missing
    with pytest.raises(CostInputError, match=r"platform\.initReport record without metrics"):
        lambda_logs.parse_record('{"type": "platform.initReport", "record": {"phase": "init"}}')


def test_snapstart_reproduces_the_aws_pricing_example(book: prices.PriceBook) -> None:
    # Given the pricing page's SnapStart example: 1,024 MB, one version active 31 days, 74,400 restores
    snap = cost_model.snapstart_cost(1024, region="us-east-1", architecture="x86_64", prices=book)

    # When the cache and the restores are priced
    cache = snap.cache(Decimal(24 * 31))
    restores = 74_400 * snap.per_restore

    # Then they are AWS's $4.03 and $10.40, $14.43 in all
    assert cache == Decimal(2_678_400) * Decimal("0.0000015046")
    assert cost_model.usd(cache) == "$4.03"
    assert cost_model.usd(restores) == "$10.40"
    assert cost_model.usd(cache + restores) == "$14.43"


def test_snapstart_idle_month_and_minimum(book: prices.PriceBook) -> None:
    # Given the generator's 8,192 MB in us-east-1
    snap = cost_model.snapstart_cost(8192, region="us-east-1", architecture="x86_64", prices=book)

    # Then a month (730 h) of one idle version costs 8 GB x 2,628,000 s x $0.0000015046
    assert snap.idle_per_month == 8 * Decimal(2_628_000) * Decimal("0.0000015046")
    assert cost_model.usd(snap.idle_per_month) == "$31.63"
    # and a version active one hour is billed the 3-hour minimum
    assert snap.cache(Decimal(1)) == snap.cache(Decimal(3)) == 8 * Decimal(3 * 3600) * Decimal("0.0000015046")
    # and one restore costs 8 GB x $0.0001397998
    assert snap.per_restore == 8 * Decimal("0.0001397998")
    assert snap.month(restores=10, versions=2) == 2 * snap.idle_per_month + 10 * snap.per_restore


def test_snapstart_is_the_same_price_on_arm64(book: prices.PriceBook) -> None:
    # Given the Price List's one SnapStart usage type per region (no -ARM variant)
    x86 = cost_model.snapstart_cost(2048, region="us-east-1", architecture="x86_64", prices=book)
    arm = cost_model.snapstart_cost(2048, region="us-east-1", architecture="arm64", prices=book)

    # Then both architectures pay the same
    assert x86.idle_per_month == arm.idle_per_month


def test_a_region_without_a_snapstart_price_is_an_error_that_says_why(book: prices.PriceBook) -> None:
    # Given a region whose Lambda prices are known but whose SnapStart price was not found
    # Then pricing SnapStart there fails, naming the region and the reason, instead of borrowing another's
    with pytest.raises(
        CostInputError, match=r"no SnapStart price for eu-central-1: .*Frankfurt\) found when checked"
    ):
        cost_model.snapstart_cost(2048, region="eu-central-1", architecture="x86_64", prices=book)
    # and an unknown region is still an unknown region
    with pytest.raises(CostInputError, match="unknown region"):
        book.snapstart_rate("mars-1", "x86_64")


def test_every_region_has_a_snapstart_price_or_says_why_not(book: prices.PriceBook) -> None:
    # Given the price file's SnapStart block
    data = json.loads(prices.PRICES_PATH.read_text())["lambda"]["snapstart"]

    # Then it is dated and sourced, and every region is priced or carries a not_found reason
    assert data["checked"] == book.snapstart.checked
    assert data["source"].startswith("https://aws.amazon.com/lambda/pricing/")
    assert set(data["regions"]) == set(book.regions)
    for region, entry in data["regions"].items():
        assert ("cache_gb_second" in entry and "restore_gb" in entry) != ("not_found" in entry), region
    assert book.snapstart.rates["us-east-1"].cache_gb_second == Decimal("0.0000015046")
    assert book.snapstart.minimum_cache_hours == 3


def test_a_price_file_that_forgets_a_region_is_refused(tmp_path: Path) -> None:
    # Given a price file whose SnapStart block says nothing about a region it prices Lambda in
    data = json.loads(prices.PRICES_PATH.read_text())
    del data["lambda"]["snapstart"]["regions"]["eu-west-1"]
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(data))

    # Then loading it fails and names the region
    with pytest.raises(CostInputError, match="eu-west-1"):
        prices.load_prices(path)


def test_prices_restored_invocations_from_their_report_records(book: prices.PriceBook) -> None:
    # Given a restored and a warm invocation of an 8,192 MB function in us-east-1
    records = [
        *lambda_logs.parse_log(log_lines("snapstart_restore_json")).reports,
        *lambda_logs.parse_log(log_lines("warm_json")).reports,
    ]
    shape = lambda_logs.FunctionShape(region="us-east-1", architecture="x86_64")

    # When they are priced
    summary = cost_model.price(records, shape, book)

    # Then the restore's billed 188 ms is duration on top of the 1,466 + 1,208 ms billed
    assert summary.gb_seconds == 8 * (Decimal("1.466") + Decimal("0.188") + Decimal("1.208"))
    assert summary.restore_gb_seconds == 8 * Decimal("0.188")
    # and the restore charge is 8 GB x $0.0001397998, once
    assert summary.restore_gb == 8
    assert summary.restore_cost == 8 * Decimal("0.0001397998")
    assert summary.total == summary.compute + summary.request_cost + summary.restore_cost
    assert "1 restored from a SnapStart snapshot" in summary.text("test")
    # and one record's own cost says the same
    restored = cost_model.invocation_cost(
        records[0], book.rate("us-east-1", "x86_64"), summary.snapstart_rate
    )
    assert restored.compute == 8 * Decimal("1.654") * Decimal("0.0000166667")
    assert restored.restore == 8 * Decimal("0.0001397998")


def test_restores_in_a_region_without_a_snapstart_price_are_refused(book: prices.PriceBook) -> None:
    # Given a restored invocation said to run in eu-central-1
    records = lambda_logs.parse_log(log_lines("snapstart_restore_text")).reports
    shape = lambda_logs.FunctionShape(region="eu-central-1", architecture="x86_64")

    # Then pricing it fails rather than leaving the restore charge out
    with pytest.raises(CostInputError, match="1 invocations were restored"):
        cost_model.price(records, shape, book)


def test_logs_command_prices_snapstart_restores_and_lists_init_reports(tmp_path: Path) -> None:
    # Given a saved log with a version's snapshot init, a restore and a warm invocation
    log = tmp_path / "snapstart.log"
    log.write_text(
        "\n".join(
            log_lines("snapshot_init_json") + log_lines("snapstart_restore_json") + log_lines("warm_json")
        )
    )

    # When the CLI prices it as JSON and as text
    as_json = run_cli("logs", "--file", str(log), "--region", "us-east-1", "--json")
    as_text = run_cli("logs", "--file", str(log), "--region", "us-east-1")

    # Then it counts one restore, bills its restore time and charge, and lists the INIT_REPORT
    assert as_json.returncode == 0, as_json.stderr
    figures = json.loads(as_json.stdout)
    assert (figures["invocations"], figures["restores"], figures["init_reports"]) == (2, 1, 1)
    assert figures["billed_restore_ms"] == 188
    assert Decimal(figures["restore_usd"]) == 8 * Decimal("0.0001397998")
    assert "Restore Duration median 612.4 ms" in as_text.stdout
    assert "INIT_REPORT records: 1" in as_text.stdout


# --- make cost: both functions at cdk.json's memory ------------------------------------


def test_make_cost_shows_both_functions_with_snapstart_next_to_the_request_cost(
    book: prices.PriceBook,
) -> None:
    # Given the project's cdk.json, read as the stack reads it
    settings = cost.configured_functions()

    # When `make cost` runs without arguments
    done = run_cli()

    # Then each function appears at its configured memory with its per-request and idle SnapStart cost
    assert done.returncode == 0, done.stderr
    for name, setting in settings.items():
        snap = cost_model.snapstart_cost(
            setting.memory_mb, region="us-east-1", architecture=setting.architecture, prices=book
        )
        row = next(line for line in done.stdout.splitlines() if line.startswith(name + " "))
        assert f"{setting.memory_mb:,} MB" in row
        assert cost_model.usd(snap.idle_per_month) in row
        assert cost_model.usd(snap.per_restore) in row
        one_second = cost_model.estimate(
            Workload(memory_mb=setting.memory_mb, duration_ms=Decimal(1000), requests=1), book
        )
        assert cost_model.usd(one_second.per_request) in row
    assert "SnapStart idle/month" in done.stdout


def test_make_cost_reads_the_memory_from_cdk_json_at_run_time(tmp_path: Path) -> None:
    # Given a copy of cdk.json with the generator at 4,096 MB
    data = json.loads((ROOT / "cdk.json").read_text())
    data["context"]["llama_memory_mb"] = 4096
    changed = tmp_path / "cdk.json"
    changed.write_text(json.dumps(data))

    # When the functions view reads it
    done = run_cli("functions", "--cdk-json", str(changed), "--json")

    # Then the generator is priced at 4,096 MB: 4 GB x 2,628,000 s x $0.0000015046 a month
    assert done.returncode == 0, done.stderr
    llama = json.loads(done.stdout)["functions"]["llama"]
    assert llama["memory_mb"] == 4096
    assert Decimal(llama["snapstart_idle_usd_per_month"]) == 4 * Decimal(2_628_000) * Decimal("0.0000015046")


def test_make_cost_in_a_region_without_snapstart_prices_says_so() -> None:
    # Given a region with Lambda prices but no SnapStart price in prices.json
    done = run_cli("functions", "--region", "eu-central-1")

    # Then the request costs are shown and SnapStart is marked not priced, with the reason
    assert done.returncode == 0, done.stderr
    assert "not priced" in done.stdout
    assert "no SnapStart price for eu-central-1" in " ".join(done.stdout.split())


def test_make_cost_with_a_bad_cdk_json_is_a_clear_error(tmp_path: Path) -> None:
    # Given a cdk.json whose generator memory is out of range
    data = json.loads((ROOT / "cdk.json").read_text())
    data["context"]["llama_memory_mb"] = 64
    bad = tmp_path / "cdk.json"
    bad.write_text(json.dumps(data))

    # Then the command exits 2 naming the key, without a traceback
    done = run_cli("functions", "--cdk-json", str(bad))
    assert done.returncode == 2
    assert "llama_memory_mb" in done.stderr
    assert "Traceback" not in done.stderr


def test_snapstart_command_for_another_memory_size() -> None:
    # Given the pricing page's example as a command line
    done = run_cli("snapstart", "--memory-mb", "1024", "--hours", "744", "--restores", "74400")

    # Then it prints AWS's figures with their arithmetic
    assert done.returncode == 0, done.stderr
    assert "1,024/1024 GB x 2,678,400 s x $0.0000015046/GB-s = $4.03" in done.stdout
    assert "= $14.43 over 744 hours" in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["snapstart", "--memory-mb", "2048", "--region", "eu-central-1"],
            "no SnapStart price for eu-central-1",
        ),
        (["snapstart", "--memory-mb", "64"], "memory must be between 128 and 10240 MB"),
        (["snapstart", "--memory-mb", "2048", "--restores", "-1"], "must not be negative"),
        (["snapstart", "--memory-mb", "2048", "--hours", "-2"], "--hours must not be negative"),
    ],
)
def test_snapstart_command_bad_input(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a snapstart command line with one bad value
    # When it runs
    # Then it exits 2 and names the problem
    assert cost.main(args) == 2
    assert message in capsys.readouterr().err


def test_results_key_is_computed_from_cdk_json_and_the_price_book(book: prices.PriceBook) -> None:
    # Given the functions' memory in cdk.json
    settings = cost.configured_functions()

    # When the bench computes results.json's cost block
    block = cost.snapstart_results("us-east-1")

    # Then each function's idle SnapStart month is the model's, in dollars rounded to cents
    for name, setting in settings.items():
        snap = cost_model.snapstart_cost(
            setting.memory_mb, region="us-east-1", architecture=setting.architecture, prices=book
        )
        assert block["snapstart_idle_usd_per_month"][name] == float(
            snap.idle_per_month.quantize(Decimal("0.01"))
        )
        assert block["snapstart_basis"]["memory_mb"][name] == setting.memory_mb
    # and a region without SnapStart prices gives no number, with the reason
    unpriced = cost.snapstart_results("eu-central-1")
    assert unpriced["snapstart_idle_usd_per_month"] == {"llama": None, "embeddings": None}
    assert "eu-central-1" in unpriced["snapstart_basis"]["missing"]["llama"]


def test_committed_results_hold_the_snapstart_key_consistent_with_its_basis(book: prices.PriceBook) -> None:
    # Given the committed benchmarks/results.json
    results = json.loads((ROOT / "benchmarks" / "results.json").read_text())
    block = results["cost"]

    # Then cost.snapstart_idle_usd_per_month has both functions, priced at the memory its basis records
    basis = block["snapstart_basis"]
    assert set(block["snapstart_idle_usd_per_month"]) == {"llama", "embeddings"}
    for name, value in block["snapstart_idle_usd_per_month"].items():
        snap = cost_model.snapstart_cost(
            basis["memory_mb"][name],
            region=basis["region"],
            architecture=basis["architecture"][name],
            prices=book,
        )
        assert value == float(snap.idle_per_month.quantize(Decimal("0.01"))), name
