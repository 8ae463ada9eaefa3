#!/usr/bin/env python3
"""CDK entry point: `cdk synth` / `cdk deploy` run this (see cdk.json, `make synth`).

Reads the context (cdk.json plus `-c key=value`) once into an AppConfig, builds
the one stack, and runs the cdk-nag AwsSolutions checks over it: a finding
without an acknowledged reason fails the synth. No AWS call happens here: the
stack is environment-agnostic and the images are built only by `cdk deploy`.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from stacks.config import IMAGES_DIR, PROJECT_DIR, AppConfig, ConfigError, cdk_json_context, load_config
from stacks.inference_stack import InferenceStack

__all__ = ["IMAGES_DIR", "PROJECT_DIR", "build_app", "cdk_json_context", "load_config", "main"]
"""``cdk_json_context`` and ``load_config`` (stacks.config) are here too, for tools and tests."""


def build_app(
    context: Mapping[str, Any] | None = None,
    *,
    outdir: str | None = None,
    images_dir: Path | None = None,
) -> tuple[cdk.App, InferenceStack]:
    """The app and its stack.

    ``context`` adds to what the CDK CLI passes; tests pass ``cdk_json_context()`` plus
    overrides, as the CLI would (null values dropped, as the CLI does).
    """
    images_dir = images_dir or IMAGES_DIR
    given = {key: value for key, value in (context or {}).items() if value is not None}
    app = cdk.App(context=given or None, outdir=outdir)
    config = AppConfig.from_context(
        app.node.get_all_context(), images_dir=images_dir, project_dir=PROJECT_DIR
    )
    stack = InferenceStack(
        app,
        config.stack_name,
        config=config,
        images_dir=images_dir,
        description="Private pay-per-use LLM inference: llama.cpp generation and text embeddings on Lambda",
    )
    # Acknowledged findings are also written into the template metadata, as an audit trail.
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app, write_suppressions_to_cloud_formation=True))
    return app, stack


def main() -> None:
    try:
        app, _ = build_app()
    except ConfigError as error:
        sys.exit(str(error))
    app.synth()


if __name__ == "__main__":
    main()
