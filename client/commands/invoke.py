"""``python -m client invoke``: invoke a function by name with boto3 (the Invoke API)."""

from __future__ import annotations

import argparse

from client.calls import invoke_function, invoke_streaming, read_data, render
from client.commands import CommandIO
from client.stream import TokenPrinter, finish, with_stream_flag

NAME = "invoke"
HELP = "invoke a function by name with boto3"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--function-name", required=True, help="name or ARN of the function")
    parser.add_argument("--payload", default="{}", help="JSON payload, @file, or @- for stdin")
    parser.add_argument("--region", help="AWS region (default: from the AWS configuration)")
    parser.add_argument(
        "--endpoint-url", help="another Invoke API, e.g. http://127.0.0.1:9000 for make local"
    )
    parser.add_argument("--profile", help="AWS profile to use")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait (default 900)")
    parser.add_argument(
        "--stream",
        action="store_true",
        help='invoke with InvokeWithResponseStream, "stream": true in the payload, and print the tokens '
        "as they arrive",
    )


def run(args: argparse.Namespace, io: CommandIO) -> int:
    payload = read_data(args.payload) or b"{}"
    if args.stream:
        printer = TokenPrinter(io.out, io.err)
        answer = invoke_streaming(
            args.function_name,
            with_stream_flag(payload),
            printer,
            region=args.region,
            endpoint_url=args.endpoint_url,
            timeout_s=args.timeout,
            session=io.session(args.profile),
        )
        return finish(answer, printer, io.out, io.err)
    answer = invoke_function(
        args.function_name,
        payload,
        region=args.region,
        endpoint_url=args.endpoint_url,
        timeout_s=args.timeout,
        session=io.session(args.profile),
    )
    render(answer, io.out, io.err)
    return 0 if answer.ok else 1
