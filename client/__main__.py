"""``python -m client``: call the deployed functions (or the local ones) and print the answer and the timings.

Two ways in, as for any Lambda function::

    # the Invoke API, by function name (IAM credentials from the usual AWS chain)
    python -m client invoke --function-name my-stack-llama --payload '{"prompt": "llamas are"}'

    # the Function URL: SigV4-signed for an AWS_IAM URL, or with the API key for an API_KEY URL
    python -m client url https://abc.lambda-url.eu-west-1.on.aws --path /v1/embeddings \\
        --data '{"input": "hello", "model": "default"}'

The answer goes to standard output (JSON pretty-printed), the status line and
timings to standard error, so the answer can be piped. The exit status is 0
for a 2xx answer without a function error, 1 otherwise, 2 for usage errors.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import boto3

from client.calls import ClientUsageError
from client.commands import CommandIO, discover


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Any]]:
    """The parser with one subparser per command module, and the modules by name."""
    parser = argparse.ArgumentParser(
        prog="python -m client",
        description="Call the deployed functions (or the local ones), and the tools around them.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for module in discover():
        modules[module.NAME] = module
        module.add_arguments(subparsers.add_parser(module.NAME, help=module.HELP, description=module.HELP))
    return parser, modules


def main(
    argv: Sequence[str] | None = None,
    *,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    session_factory: Callable[..., Any] = boto3.Session,
) -> int:
    parser, modules = build_parser()
    args = parser.parse_args(argv)
    try:
        status: int = modules[args.command].run(args, CommandIO(out, err, session_factory))
    except (ClientUsageError, OSError) as exc:
        err.write(f"error: {exc}\n")
        return 2
    return status


if __name__ == "__main__":
    sys.exit(main())
