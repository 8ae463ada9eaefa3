"""``python -m client cold-starts``: force N cold starts of a deployed function and report each one.

See ``client/cold_starts.py`` for how fresh environments are forced and where the figures come from.
"""

from __future__ import annotations

import argparse
import json

from client.calls import ClientUsageError, lambda_client, read_data
from client.cold_starts import MAX_INVOKES, METHODS, PROBE_VARIABLE, choose_method, describe_target, measure
from client.commands import CommandIO

NAME = "cold-starts"
HELP = (
    "force and measure N cold starts of a deployed function "
    "(changes $LATEST's environment, or invokes a version N times at once)"
)

EPILOG = f"""\
How fresh environments are forced:
  no --qualifier ($LATEST): before each invoke the environment variable {PROBE_VARIABLE} is set to a new
    value (UpdateFunctionConfiguration, then wait for LastUpdateStatus Successful), so the invoke needs a
    new environment. The function's environment variables are put back as they were at the end.
  --qualifier (a version or alias such as live): published versions cannot change, so the N invokes are
    sent at once; each concurrent request needs its own environment. With SnapStart they are restored
    from the snapshot; environments already warm answer some requests and are reported as warm.

Figures: from your own account, Lambda's REPORT record of each invoke (its log tail, LogType=Tail, or
CloudWatch Logs by request id) and, for a SnapStart version, the INIT_REPORT written when it was
published. First byte and whole answer are timed by this client (an invoke's answer is buffered: the
first byte is the first token). Each invoke is billed as usual.

Permissions: lambda:GetFunctionConfiguration, lambda:InvokeFunction, lambda:UpdateFunctionConfiguration
(no --qualifier only), logs:FilterLogEvents (skip with --no-logs).

Example:
  python -m client cold-starts --function-name <LlamaFunctionName> -n 5 \\
      --payload '{{"prompt": "llamas are", "n-generate": 1}}'
  python -m client cold-starts --function-name <LlamaFunctionName> --qualifier live -n 5
"""


def _invokes(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= MAX_INVOKES:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_INVOKES}, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("--function-name", required=True, help="name or ARN of the function")
    parser.add_argument(
        "--qualifier",
        help="a version or alias, e.g. live (default: $LATEST, forced by a configuration change)",
    )
    parser.add_argument(
        "-n", "--invokes", type=_invokes, default=5, help=f"cold starts to force, 1-{MAX_INVOKES} (default 5)"
    )
    parser.add_argument(
        "--payload",
        default="{}",
        help="JSON payload, @file or @- (default {}: this project's functions answer it with a validation "
        "error, which still measures the cold start; send a real request to time the first token)",
    )
    parser.add_argument(
        "--method",
        choices=METHODS,
        default="auto",
        help="auto (default): update-config for $LATEST, concurrent for a version or alias",
    )
    parser.add_argument("--region", help="AWS region (default: from the AWS configuration)")
    parser.add_argument("--profile", help="AWS profile to use")
    parser.add_argument("--no-logs", action="store_true", help="do not read CloudWatch Logs (log tails only)")
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="seconds to wait for each invoke (default 900)"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")


def run(args: argparse.Namespace, io: CommandIO) -> int:
    payload = read_data(args.payload) or b"{}"
    try:
        json.loads(payload)
    except ValueError as exc:
        raise ClientUsageError(f"--payload is not JSON: {exc}") from None
    session = io.session(args.profile)
    # The N invokes of --qualifier are sent at once: one pooled connection each.
    lam = lambda_client(session, args.region, None, args.timeout, max_pool_connections=max(10, args.invokes))
    logs = None if args.no_logs else session.client("logs", region_name=args.region)
    target = describe_target(lam, args.function_name, args.qualifier)
    method = choose_method(target, args.method)
    report = measure(lam, logs, target, method=method, n=args.invokes, payload=payload)
    io.out.write((json.dumps(report.as_json(), indent=2) if args.json else report.text()) + "\n")
    return 0 if report.ok else 1
