"""``python -m client stats``: what a deployed stack did over the last hour or day.

See ``client/stats.py`` for where each figure comes from.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.prices import load_prices
from client.calls import ClientUsageError
from client.commands import CommandIO
from client.stats import StatsError, chart, collect, report, window
from client.stats import as_json as stats_json

NAME = "stats"
HELP = "tokens, cost, time to first token, cold starts and refusals of a deployed stack (last hour or day)"

EPILOG = """\
Figures: the handlers' CloudWatch metrics and Lambda's (GetMetricData), and each function's REPORT
records priced with benchmarks/prices.json (the cost with init and per-invocation rounding included).

Permissions: cloudformation:DescribeStacks, lambda:GetFunctionConfiguration, cloudwatch:GetMetricData,
cloudwatch:ListMetrics, logs:FilterLogEvents (not with --no-logs). GetMetricData is billed per metric
read ($0.01 per 1,000 in us-east-1): one run reads about 30.

Examples:
  python -m client stats --stack-name LlmInference
  python -m client stats --stack-name LlmInference --days 1 --png last-day.png
"""


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument(
        "--stack-name", default="LlmInference", help="the deployed stack (default LlmInference)"
    )
    span = parser.add_mutually_exclusive_group()
    span.add_argument("--hours", type=_positive, help="the last N hours (default 1)")
    span.add_argument("--days", type=_positive, help="the last N days")
    parser.add_argument(
        "--png", type=Path, help="also draw tokens and time to first token into this PNG file"
    )
    parser.add_argument("--region", help="AWS region (default: from the AWS configuration)")
    parser.add_argument("--profile", help="AWS profile to use")
    parser.add_argument(
        "--no-logs", action="store_true", help="skip the REPORT records (cost from metrics only)"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")


def run(args: argparse.Namespace, io: CommandIO) -> int:
    hours = args.days * 24 if args.days is not None else (args.hours if args.hours is not None else 1.0)
    try:
        span = window(hours)
        session = io.session(args.profile)
        cloudwatch = session.client("cloudwatch", region_name=args.region)
        stats = collect(
            cloudformation=session.client("cloudformation", region_name=args.region),
            lam=session.client("lambda", region_name=args.region),
            cloudwatch=cloudwatch,
            logs=None if args.no_logs else session.client("logs", region_name=args.region),
            stack_name=args.stack_name,
            span=span,
            prices=load_prices(),
        )
        if args.png is not None:
            chart(cloudwatch, stats, span, args.png)
    except StatsError as exc:
        raise ClientUsageError(str(exc)) from None
    if args.json:
        io.out.write(json.dumps(stats_json(args.stack_name, span, stats), indent=2) + "\n")
    else:
        io.out.write(report(args.stack_name, span, stats) + "\n")
    if args.png is not None:
        io.err.write(f"chart written to {args.png}\n")
    return 0
