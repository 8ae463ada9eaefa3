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
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import boto3

from client.calls import ClientUsageError, call_url, invoke_function, read_data, render


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m client",
        description="Call the functions by name (Invoke API) or through their Function URLs.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    invoke = commands.add_parser("invoke", help="invoke a function by name with boto3")
    invoke.add_argument("--function-name", required=True, help="name or ARN of the function")
    invoke.add_argument("--payload", default="{}", help="JSON payload, @file, or @- for stdin")
    invoke.add_argument("--region", help="AWS region (default: from the AWS configuration)")
    invoke.add_argument(
        "--endpoint-url", help="another Invoke API, e.g. http://127.0.0.1:9000 for make local"
    )
    invoke.add_argument("--profile", help="AWS profile to use")
    invoke.add_argument("--timeout", type=float, default=900.0, help="seconds to wait (default 900)")

    url = commands.add_parser("url", help="call a Function URL (SigV4 for AWS_IAM, Bearer key for API_KEY)")
    url.add_argument("url", help="the Function URL, e.g. https://abc.lambda-url.eu-west-1.on.aws")
    url.add_argument("--path", default="", help="path to call, e.g. /v1/completions")
    url.add_argument("--method", default=None, help="HTTP method (default POST with --data, else GET)")
    url.add_argument("--data", help="request body: JSON text, @file, or @- for stdin")
    url.add_argument(
        "--auth",
        choices=("auto", "iam", "api-key", "none"),
        default="auto",
        help="auto: the API key if one is given, SigV4 for *.lambda-url.*.on.aws hosts, else none",
    )
    url.add_argument("--api-key", default=os.environ.get("API_KEY"), help="API key (default: $API_KEY)")
    url.add_argument(
        "--api-key-secret-arn",
        default=os.environ.get("API_KEY_SECRET_ARN"),
        help="read the API key from this Secrets Manager secret (default: $API_KEY_SECRET_ARN)",
    )
    url.add_argument("--region", help="region for SigV4 (default: from the URL)")
    url.add_argument("--profile", help="AWS profile for SigV4 or Secrets Manager")
    url.add_argument("--header", action="append", default=[], metavar="NAME:VALUE", help="extra header")
    url.add_argument("--timeout", type=float, default=900.0, help="seconds to wait (default 900)")
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    session_factory: Callable[..., Any] = boto3.Session,
) -> int:
    args = build_parser().parse_args(argv)
    try:
        session = session_factory(profile_name=args.profile) if args.profile else session_factory()
        if args.command == "invoke":
            payload = read_data(args.payload) or b"{}"
            answer = invoke_function(
                args.function_name,
                payload,
                region=args.region,
                endpoint_url=args.endpoint_url,
                timeout_s=args.timeout,
                session=session,
            )
        else:
            headers = {}
            for item in args.header:
                name, sep, value = item.partition(":")
                if not sep or not name.strip():
                    raise ClientUsageError(f"--header wants NAME:VALUE, got {item!r}")
                headers[name.strip()] = value.strip()
            data = read_data(args.data)
            answer = call_url(
                args.url,
                path=args.path,
                method=args.method or ("POST" if data is not None else "GET"),
                data=data,
                auth=args.auth,
                api_key=args.api_key,
                api_key_secret_arn=args.api_key_secret_arn,
                region=args.region,
                extra_headers=headers,
                timeout_s=args.timeout,
                session=session,
            )
    except (ClientUsageError, OSError) as exc:
        err.write(f"error: {exc}\n")
        return 2
    render(answer, out, err)
    return 0 if answer.ok else 1


if __name__ == "__main__":
    sys.exit(main())
