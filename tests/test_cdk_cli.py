"""The real, pinned CDK CLI synthesizes the app on Node 24 without any AWS credentials.

The environment is scrubbed of every AWS_* variable, points the AWS config
and credential files at nothing and disables the EC2 metadata endpoint, so
any attempt to reach AWS would fail; the synth must not need one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from app import PROJECT_DIR

CDK = PROJECT_DIR / "node_modules" / ".bin" / "cdk"
VENV_BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def offline_env(home: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "CDK_"))}
    env.update(
        PATH=os.pathsep.join([str(VENV_BIN), env.get("PATH", "")]),  # python app.py and Node 24
        HOME=str(home),  # no ~/.aws, no ~/.cdk cache of the developer
        AWS_CONFIG_FILE=str(home / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(home / "no-aws-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
        CDK_DISABLE_CLI_TELEMETRY="true",
    )
    return env


def cdk_synth(tmp_path: Path, *context: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    outdir = tmp_path / "cdk.out"
    args = [str(CDK), "synth", "--output", str(outdir), "--no-notices", "--quiet"]
    for item in context:
        args += ["-c", item]
    result = subprocess.run(
        args,
        cwd=PROJECT_DIR,
        env=offline_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return result, outdir


def docker_images(outdir: Path) -> dict[str, dict[str, Any]]:
    """dockerFile -> source of each docker image asset in the stack's asset manifest."""
    (manifest,) = outdir.glob("*.assets.json")
    images = json.loads(manifest.read_text())["dockerImages"].values()
    return {image["source"]["dockerFile"]: image["source"] for image in images}


def test_node_is_24() -> None:
    result = subprocess.run([str(VENV_BIN / "node"), "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.startswith("v24.")


def test_cdk_synth_runs_offline_and_lists_both_images(tmp_path: Path) -> None:
    context_file = PROJECT_DIR / "cdk.context.json"
    had_context_file = context_file.exists()
    # When the CLI synthesizes with the defaults
    result, outdir = cdk_synth(tmp_path)
    # Then it succeeds with a template and two docker image assets, built for x86_64
    assert result.returncode == 0, result.stderr
    assert (outdir / "LlmInference.template.json").is_file()
    images = docker_images(outdir)
    assert set(images) == {"llama/Dockerfile", "embeddings/Dockerfile"}
    assert images["llama/Dockerfile"]["dockerBuildArgs"]["MODEL_FILE"] == "qwen2.5-1.5b-instruct-q4_k_m.gguf"
    assert images["embeddings/Dockerfile"]["dockerBuildArgs"]["MODEL_ID"] == "intfloat/multilingual-e5-small"
    assert {image["platform"] for image in images.values()} == {"linux/amd64"}
    # And no context lookup was needed (that would have written cdk.context.json)
    assert context_file.exists() == had_context_file


def test_cdk_synth_applies_command_line_context(tmp_path: Path) -> None:
    result, outdir = cdk_synth(
        tmp_path, "llama_architecture=arm64", "embeddings_backend=torch", "embeddings_memory_mb=3008"
    )
    assert result.returncode == 0, result.stderr
    images = docker_images(outdir)
    assert images["llama/Dockerfile"]["platform"] == "linux/arm64"
    assert images["embeddings/Dockerfile"]["platform"] == "linux/amd64"
    assert images["embeddings/Dockerfile"]["dockerBuildArgs"]["BACKEND"] == "torch"
    template = json.loads((outdir / "LlmInference.template.json").read_text())
    memory = sorted(
        resource["Properties"]["MemorySize"]
        for resource in template["Resources"].values()
        if resource["Type"] == "AWS::Lambda::Function"
    )
    assert memory == [3008, 8192]


def test_cdk_synth_refuses_a_bad_value_with_a_clear_message(tmp_path: Path) -> None:
    result, outdir = cdk_synth(tmp_path, "llama_memory_mb=lots", "function_url_auth=OPEN")
    assert result.returncode != 0
    assert "llama_memory_mb = 'lots': must be an integer from 128 to 10240 (MB)" in result.stderr
    assert "function_url_auth = 'OPEN': must be one of AWS_IAM | API_KEY" in result.stderr
    assert "Traceback" not in result.stderr  # a message for a person, not a stack trace
    assert not (outdir / "LlmInference.template.json").exists()
