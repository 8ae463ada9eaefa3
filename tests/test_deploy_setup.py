"""``make deploy``'s setup path in a fresh folder: the CDK app, Node and the CDK CLI, nothing else.

A copy of the files the deploy targets use (Makefile, scripts, app, stacks,
client, images' build contexts, the pinned requirement and package files) is
set up from nothing with the real ``make setup-deploy``: real pip (its cache
makes a repeat quick) and real npm (``npm ci`` from npm's cache). The main
checkout and its .venv are neither used nor touched: the copy's environment
has no path into them and no AWS credentials (AWS itself is not reachable
here; the doctor's AWS checks then fail on credentials, which is the point of
the last test).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from app import PROJECT_DIR

pytestmark = pytest.mark.slow

COPIED = (
    "Makefile",
    "app.py",
    "cdk.json",
    "package.json",
    "package-lock.json",
    "requirements.txt",
    "requirements-dev.txt",
    "scripts",
    "stacks",
    "client",
    "benchmarks",
    "lambda_images",
)
DEV_ONLY = (
    "llama_cpp",
    "torch",
    "sentence_transformers",
    "pytest",
    "ruff",
    "mypy",
    "awslambdaric",
    "cfnlint",
)
CDK_CLI_VERSION = json.loads((PROJECT_DIR / "package.json").read_text())["devDependencies"]["aws-cdk"]


def fresh_env(home: Path) -> dict[str, str]:
    """The user's environment without AWS or CDK settings and without any path into the main checkout."""
    main = str(PROJECT_DIR)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "CDK_", "VIRTUAL_ENV", "PYTHON")) and key != "DOCKER_BUILDKIT"
    }
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(main))
    env.update(
        HOME=str(home),
        # The warm caches of this machine's user: pip's and npm's, not the main checkout's.
        PIP_CACHE_DIR=str(Path.home() / ".cache" / "pip"),
        npm_config_cache=str(Path.home() / ".npm"),
        AWS_CONFIG_FILE=str(home / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(home / "no-aws-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
        CDK_DISABLE_CLI_TELEMETRY="true",
    )
    return env


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the deploy path's files, set up once with ``make setup-deploy``."""
    root = tmp_path_factory.mktemp("deploy-only")
    folder = root / "project"
    folder.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.gguf", "charts", "results.*", ".cache")
    for name in COPIED:
        source = PROJECT_DIR / name
        if source.is_dir():
            shutil.copytree(source, folder / name, ignore=ignore)
        else:
            shutil.copy2(source, folder / name)
    (root / "home").mkdir()
    return folder


def make(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", *args],
        cwd=project,
        env=fresh_env(project.parent / "home") | env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


@pytest.fixture(scope="module")
def first_setup(project: Path) -> subprocess.CompletedProcess[str]:
    return make(project, "setup-deploy")


def test_setup_deploy_installs_the_cdk_app_node_and_the_cli(
    project: Path, first_setup: subprocess.CompletedProcess[str]
) -> None:
    # Given a fresh folder, when make setup-deploy has run
    assert first_setup.returncode == 0, first_setup.stderr
    # Then the CDK app's packages import with the new venv's Python
    python = project / ".venv" / "bin" / "python"
    imported = subprocess.run(
        [str(python), "-c", "import aws_cdk, cdk_nag, boto3, constructs, pydantic; print('imported')"],
        env=fresh_env(project.parent / "home") | {"PATH": f"{python.parent}{os.pathsep}/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip().endswith("imported")
    # And the pinned CDK CLI runs on the venv's Node
    cli = subprocess.run(
        [str(project / "node_modules" / ".bin" / "cdk"), "--version"],
        env=fresh_env(project.parent / "home") | {"PATH": f"{python.parent}{os.pathsep}/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.startswith(CDK_CLI_VERSION)
    assert f"cdk {CDK_CLI_VERSION}" in first_setup.stderr


def test_setup_deploy_installs_nothing_of_the_development_setup(
    project: Path, first_setup: subprocess.CompletedProcess[str]
) -> None:
    assert first_setup.returncode == 0, first_setup.stderr
    python = project / ".venv" / "bin" / "python"
    probe = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.util, json, sys; "
            "print(json.dumps({m: importlib.util.find_spec(m) is not None for m in sys.argv[1:]}))",
            *DEV_ONLY,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    found = json.loads(probe.stdout)
    assert found == dict.fromkeys(DEV_ONLY, False)
    # And no emulator or compiled wheel cache was fetched
    assert not (project / ".cache" / "rie").exists()
    assert not (project / ".cache" / "wheels").exists()


def test_setup_deploy_again_installs_nothing(
    project: Path, first_setup: subprocess.CompletedProcess[str]
) -> None:
    assert first_setup.returncode == 0, first_setup.stderr
    again = make(project, "setup-deploy")
    assert again.returncode == 0, again.stderr
    assert "installing" not in again.stderr
    assert "creating" not in again.stderr
    assert "deploy setup complete" in again.stderr


def test_synth_works_on_the_deploy_setup(
    project: Path, first_setup: subprocess.CompletedProcess[str]
) -> None:
    assert first_setup.returncode == 0, first_setup.stderr
    result = make(project, "synth", "CDK_ARGS=--quiet")
    assert result.returncode == 0, result.stdout + result.stderr
    template = json.loads((project / "cdk.out" / "LlmInference.template.json").read_text())
    types = {resource["Type"] for resource in template["Resources"].values()}
    assert {"AWS::Lambda::Function", "AWS::Lambda::Url"} <= types


def test_deploy_runs_the_doctor_first_and_stops_on_its_failure(
    project: Path, first_setup: subprocess.CompletedProcess[str]
) -> None:
    # Given a region but no AWS credentials at all
    assert first_setup.returncode == 0, first_setup.stderr
    # When make deploy runs
    result = make(
        project, "deploy", "CDK_ARGS=-c llama_memory_mb=3008 --require-approval never", AWS_REGION="eu-west-1"
    )
    # Then the doctor ran (with the -c settings from CDK_ARGS), failed, and cdk deploy never started
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "ok    configuration    stack LlmInference: llama 3008 MB" in output
    assert "FAIL  credentials      no AWS credentials found" in output
    assert "make doctor: fix each FAIL above before deploying." in output
    assert "cdk deploy" not in output
