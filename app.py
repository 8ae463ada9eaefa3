#!/usr/bin/env python3
"""CDK entry point: `cdk synth` / `cdk deploy` run this (see cdk.json, `make synth`).

Reads the context (cdk.json plus `-c key=value`) once into an AppConfig, builds
the one stack, and runs the cdk-nag AwsSolutions checks over it: a finding
without an acknowledged reason fails the synth. No AWS call happens here: the
stack is environment-agnostic and the images are built only by `cdk deploy`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks

from stacks.config import AppConfig, ConfigError
from stacks.inference_stack import InferenceStack

PROJECT_DIR = Path(__file__).resolve().parent
IMAGES_DIR = PROJECT_DIR / "lambda_images"
CDK_JSON = PROJECT_DIR / "cdk.json"


def cdk_json_context() -> dict[str, Any]:
    """The context block of cdk.json: the feature flags and every setting's default.

    cdk.json is the only place the defaults live, so a missing file is an error that says so.
    """
    if not CDK_JSON.is_file():
        raise FileNotFoundError(
            f"{CDK_JSON} is missing: it holds the app's feature flags and every setting's default; "
            "restore it from git (git checkout -- cdk.json)"
        )
    context: dict[str, Any] = json.loads(CDK_JSON.read_text())["context"]
    return context


def load_config(overrides: Mapping[str, Any] | None = None) -> AppConfig:
    """The configuration `cdk synth` would use with these ``-c`` overrides (for tools and tests).

    Like the CDK CLI, keys whose value is null are treated as absent.
    """
    context = {
        key: value for key, value in {**cdk_json_context(), **(overrides or {})}.items() if value is not None
    }
    return AppConfig.from_context(context, images_dir=IMAGES_DIR, project_dir=PROJECT_DIR)


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
