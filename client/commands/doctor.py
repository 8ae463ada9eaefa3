"""``python -m client doctor``: check, before a deploy, what would stop it (read-only AWS calls).

``make doctor`` runs it with the same ``CDK_ARGS`` the deploy gets (read from the
environment), and ``make deploy`` runs it first and stops on a failure.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from client import doctor
from client.calls import ClientUsageError
from client.commands import CommandIO

NAME = "doctor"
HELP = "check the account, region, bootstrap, Lambda limits and container builder before a deploy"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--context",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting as cdk's -c gives it (after those in --cdk-args)",
    )
    parser.add_argument(
        "--cdk-args",
        default=os.environ.get("CDK_ARGS", ""),
        help="the arguments make passes to cdk (default: $CDK_ARGS); its -c, --profile and "
        "--toolkit-stack-name are used, the rest ignored",
    )
    parser.add_argument(
        "--profile", help="AWS profile (default: --profile in --cdk-args, else the usual chain)"
    )
    parser.add_argument("--region", help="AWS region (default: the profile's or AWS_REGION, as cdk uses)")
    parser.add_argument(
        "--toolkit-stack-name", help=f"the CDK bootstrap stack (default {doctor.DEFAULT_TOOLKIT_STACK})"
    )
    parser.add_argument(
        "--assembly",
        type=Path,
        help="a synthesized cloud assembly (e.g. cdk.out) to read the required bootstrap version from",
    )


def run(args: argparse.Namespace, io: CommandIO) -> int:
    try:
        context, options = doctor.parse_cdk_args(args.cdk_args)
    except ValueError as error:
        raise ClientUsageError(str(error)) from error
    for item in args.context:
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise ClientUsageError(f"-c wants KEY=VALUE, got {item!r}")
        context[key] = value
    profile = args.profile or options.get("profile")
    session_args: dict[str, Any] = {}
    if profile:
        session_args["profile_name"] = profile
    region = args.region or os.environ.get("AWS_REGION")  # the CDK CLI reads AWS_REGION; boto3 does not
    if region:
        session_args["region_name"] = region
    results = doctor.run_checks(
        overrides=context,
        session=io.session_factory(**session_args),
        env=os.environ,
        runner=doctor.run_command,
        toolkit_stack=args.toolkit_stack_name
        or options.get("toolkit-stack-name")
        or doctor.DEFAULT_TOOLKIT_STACK,
        assembly=args.assembly,
    )
    doctor.render(results, io.out)
    status = doctor.exit_status(results)
    io.out.write(
        "\nmake doctor: fix each FAIL above before deploying.\n"
        if status
        else "\nmake doctor: nothing stops a deploy.\n"
    )
    return status
