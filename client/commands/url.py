"""``python -m client url``: call a Function URL, SigV4-signed (AWS_IAM) or with the Bearer key (API_KEY)."""

from __future__ import annotations

import argparse
import os

from client.calls import ClientUsageError, call_url, read_data
from client.commands import CommandIO
from client.stream import TokenPrinter, finish, with_stream_flag

NAME = "url"
HELP = "call a Function URL (SigV4 for AWS_IAM, Bearer key for API_KEY)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", help="the Function URL, e.g. https://abc.lambda-url.eu-west-1.on.aws")
    parser.add_argument("--path", default="", help="path to call, e.g. /v1/completions")
    parser.add_argument("--method", default=None, help="HTTP method (default POST with --data, else GET)")
    parser.add_argument("--data", help="request body: JSON text, @file, or @- for stdin")
    parser.add_argument(
        "--auth",
        choices=("auto", "iam", "api-key", "none"),
        default="auto",
        help="auto: the API key if one is given, SigV4 for *.lambda-url.*.on.aws hosts, else none",
    )
    parser.add_argument("--api-key", default=os.environ.get("API_KEY"), help="API key (default: $API_KEY)")
    parser.add_argument(
        "--api-key-secret-arn",
        default=os.environ.get("API_KEY_SECRET_ARN"),
        help="read the API key from this Secrets Manager secret (default: $API_KEY_SECRET_ARN)",
    )
    parser.add_argument("--region", help="region for SigV4 (default: from the URL)")
    parser.add_argument("--profile", help="AWS profile for SigV4 or Secrets Manager")
    parser.add_argument("--header", action="append", default=[], metavar="NAME:VALUE", help="extra header")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait (default 900)")
    parser.add_argument(
        "--stream",
        action="store_true",
        help='ask for a streamed answer ("stream": true in the JSON body) and print its tokens as they '
        "arrive (a generator URL in RESPONSE_STREAM mode sends them as they are generated)",
    )


def headers_from(items: list[str]) -> dict[str, str]:
    headers = {}
    for item in items:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise ClientUsageError(f"--header wants NAME:VALUE, got {item!r}")
        headers[name.strip()] = value.strip()
    return headers


def run(args: argparse.Namespace, io: CommandIO) -> int:
    data = read_data(args.data)
    printer = None
    if args.stream:
        data = with_stream_flag(data)
        printer = TokenPrinter(io.out, io.err)
    answer = call_url(
        args.url,
        path=args.path,
        method=args.method or ("POST" if data is not None else "GET"),
        data=data,
        auth=args.auth,
        api_key=args.api_key,
        api_key_secret_arn=args.api_key_secret_arn,
        region=args.region,
        extra_headers=headers_from(args.header),
        timeout_s=args.timeout,
        session=io.session(args.profile),
        on_chunk=printer,
    )
    return finish(answer, printer, io.out, io.err)
