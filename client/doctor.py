"""The preflight before a deploy: what would stop ``make deploy``, found before it starts.

``python -m client doctor`` (``make doctor``; ``make deploy`` runs it first)
runs each check below and prints one line per check, ``ok``, ``warn`` or
``FAIL``, with what to do under every warning and failure. Only read-only AWS
calls are made, with the user's own credentials:

========================  ==============================================================
check                     how
========================  ==============================================================
configuration             cdk.json plus ``-c key=value`` through ``AppConfig.from_context``
model revisions           a revision that is not a 40-hex commit id is a moving branch
base image                a Dockerfile's BASE_IMAGE named by tag only, not by digest
builder                   docker (BuildKit, buildx, its driver, its image store) or podman
build platform            the builder's architecture against each function's
credentials               ``sts:GetCallerIdentity``, and a region
region                    Function URLs exist there (and SnapStart, for functions using it)
bootstrap                 ``ssm:GetParameter`` /cdk-bootstrap/<qualifier>/version, as the CDK
                          CLI does, against the version the templates require;
                          ``cloudformation:DescribeStacks`` on the toolkit stack
concurrency               ``lambda:GetAccountSettings`` against reserved and provisioned
                          concurrency (``lambda:GetFunctionConcurrency`` on a deployed stack)
memory                    the new-account cap of 3,008 MB, which no API reports (see below)
bulk embedding            with ``batch_embeddings``: the Map's concurrency against the unreserved
                          pool, and a bucket of your own (``s3:HeadBucket``)
========================  ==============================================================

Every check is a function that takes its inputs (clients, the configuration,
a command runner) and returns :class:`Result` values, so the tests drive each
one with stubbed AWS answers; :func:`run_checks` wires them in order.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

from stacks.config import (
    CDK_JSON,
    IMAGES_DIR,
    PROJECT_DIR,
    AppConfig,
    ConfigError,
    FunctionConfig,
    cli_context,
)
from stacks.regions import FUNCTION_URL_UNSUPPORTED_REGIONS, SNAPSTART_UNSUPPORTED_REGIONS

Status = Literal["ok", "warn", "FAIL", "skip"]

# ----------------------------------------------------------------------------- facts the checks use

# Regions without Function URLs or SnapStart: stacks/regions.py keeps each list once (the
# template's CloudFormation rules use the same lists), with its source and date.
NO_FUNCTION_URL_REGIONS: frozenset[str] = frozenset(FUNCTION_URL_UNSUPPORTED_REGIONS)
NO_SNAPSTART_REGIONS: frozenset[str] = frozenset(SNAPSTART_UNSUPPORTED_REGIONS)

DEFAULT_QUALIFIER = "hnb659fds"
QUALIFIER_KEY = "@aws-cdk/core:bootstrapQualifier"
DEFAULT_TOOLKIT_STACK = "CDKToolkit"
REQUIRED_BOOTSTRAP_VERSION = 6
"""What the synthesized templates require (their CheckBootstrapVersion rule and the
manifest's requiresBootstrapStackVersion, with aws-cdk-lib 2.275); a test synthesizes
the app and compares. ``--assembly cdk.out`` reads it from a synthesized assembly instead."""

NEW_ACCOUNT_MEMORY_MB = 3008
DEFAULT_CONCURRENCY_LIMIT = 1000
UNRESERVED_MINIMUM = 100
"""Lambda keeps this much of the account's concurrency unreserved (or the whole limit when
the limit is lower: the error then reads "minimum value of [10]" or "[50]")."""
CONCURRENCY_QUOTA_CODE = "L-B99A9384"  # Service Quotas: Lambda "Concurrent executions"

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_FAILED_STACK = re.compile(r"(_FAILED|ROLLBACK_COMPLETE)$")

ERROR_RESERVED = (
    "Specified ReservedConcurrentExecutions for function decreases account's "
    "UnreservedConcurrentExecution below its minimum value of [10]."
)
ERROR_MEMORY = (
    "'MemorySize' value failed to satisfy constraint: Member must have value less than or equal to 3008"
)
ERROR_NO_BUILDKIT = (
    "the --mount option requires BuildKit. Refer to https://docs.docker.com/go/buildkit/ "
    "to learn how to build images with BuildKit enabled"
)
ERROR_NO_BUILDX = (
    "DEPRECATED: The legacy builder is deprecated and will be removed in a future release. "
    "Install the buildx component to build images with BuildKit: https://docs.docker.com/go/buildx/"
)
ERROR_DOCKER_CONTAINER = (
    "WARNING: No output specified with docker-container driver. Build result will only remain in "
    "the build cache. To push result image into registry use --push or to load image into docker "
    "use --load"
)
ERROR_MANIFEST = (
    "The image manifest, config or layer media type for the source image "
    "<account>.dkr.ecr.<region>.amazonaws.com/cdk-hnb659fds-container-assets-<account>-<region>:<hash> "
    "is not supported."
)
ERROR_EXEC_FORMAT = "exec /bin/sh: exec format error"


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Result:
    """One check's outcome: a one-line summary, and what to do when it is not ok."""

    check: str
    status: Status
    summary: str
    fix: str = ""


def render(results: Iterable[Result], out: TextIO) -> None:
    """One line per check, the fix indented under each warning and failure."""
    for result in results:
        out.write(f"{result.status:<5} {result.check:<16} {result.summary}\n")
        if result.fix and result.status in ("warn", "FAIL"):
            for line in result.fix.splitlines():
                out.write(f"      {line}\n" if line else "\n")


def exit_status(results: Iterable[Result]) -> int:
    return 1 if any(result.status == "FAIL" for result in results) else 0


# ----------------------------------------------------------------------------- configuration


def parse_cdk_args(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """The ``-c``/``--context`` pairs and the options the doctor uses, from a CDK_ARGS string.

    Everything else CDK accepts (``--require-approval never``, ``aws://ACCOUNT/REGION``...)
    is ignored. Returns (context, options) where options may hold ``profile`` and
    ``toolkit-stack-name``.
    """
    context: dict[str, str] = {}
    options: dict[str, str] = {}
    words = shlex.split(text)
    index = 0
    while index < len(words):
        word = words[index]
        name, sep, inline = word.partition("=") if word.startswith("--") else (word, "", "")
        value: str | None = inline if sep else None
        if name in ("-c", "--context", "--profile", "--toolkit-stack-name"):
            if value is None:
                if index + 1 >= len(words):
                    raise ValueError(f"CDK_ARGS: {name} needs a value")
                index += 1
                value = words[index]
            if name in ("-c", "--context"):
                key, equals, item = value.partition("=")
                if not equals or not key:
                    raise ValueError(f"CDK_ARGS: {name} wants KEY=VALUE, got {value!r}")
                context[key] = item
            else:
                options[name[2:]] = value
        index += 1
    return context, options


def load_context(overrides: Mapping[str, Any], cdk_json: Path = CDK_JSON) -> dict[str, Any]:
    """cdk.json's context with ``-c`` overrides, null values dropped, as the CDK CLI passes it."""
    return cli_context(overrides, cdk_json=cdk_json)


def check_config(context: Mapping[str, Any]) -> tuple[AppConfig | None, Result]:
    try:
        config = AppConfig.from_context(context, images_dir=IMAGES_DIR, project_dir=PROJECT_DIR)
    except ConfigError as error:
        return None, Result(
            "configuration",
            "FAIL",
            f"{len(error.problems)} invalid setting(s) in cdk.json or the -c overrides",
            "\n".join(error.problems) + "\nEvery key is described in docs/configuration.md.",
        )
    return config, Result(
        "configuration",
        "ok",
        f"stack {config.stack_name}: llama {describe(config.llama)}, "
        f"embeddings {describe(config.embeddings)}",
    )


def describe(function: FunctionConfig) -> str:
    return f"{function.memory_mb} MB {function.architecture}"


def functions(config: AppConfig) -> dict[str, FunctionConfig]:
    return {"llama": config.llama, "embeddings": config.embeddings}


def memory_sizes(config: AppConfig) -> dict[str, int]:
    """Every function's memory by its configuration key's prefix (the batch function when it is on)."""
    sizes = {name: function.memory_mb for name, function in functions(config).items()}
    if config.batch.enabled:
        sizes["batch_embeddings"] = config.batch.memory_mb
    return sizes


DOCKERFILES = {
    "llama": IMAGES_DIR / "llama" / "Dockerfile",
    "embeddings": IMAGES_DIR / "embeddings" / "Dockerfile",
}
_BASE_IMAGE_ARG = re.compile(r"^ARG BASE_IMAGE=(?P<image>\S+)", re.MULTILINE)


def check_base_image(dockerfiles: Mapping[str, Path] = DOCKERFILES) -> Result:
    """Warn while a Dockerfile names its base image by tag only: a tag is rebuilt, a digest is not."""
    by_tag: dict[str, str] = {}
    for name, dockerfile in dockerfiles.items():
        found = _BASE_IMAGE_ARG.search(dockerfile.read_text())
        if found is None:
            return Result("base image", "FAIL", f"{dockerfile} has no ARG BASE_IMAGE line")
        if "@sha256:" not in found["image"]:
            by_tag[name] = found["image"]
    if not by_tag:
        return Result("base image", "ok", "both Dockerfiles pin their base image by digest")
    images = sorted(set(by_tag.values()))
    return Result(
        "base image",
        "warn",
        f"{', '.join(images)}: a tag, not a digest (Debian rebuilds it with security updates)",
        "Two builds at different times may start from different layers. Pin the digest of the\n"
        "multi-platform index in both Dockerfiles' ARG BASE_IMAGE lines:\n"
        + "".join(f"  docker buildx imagetools inspect {image}   # Digest: sha256:...\n" for image in images)
        + "  ARG BASE_IMAGE=<image>@sha256:<digest>   (docs/deploy.md, Reproducible images)",
    )


def check_revisions(config: AppConfig) -> Result:
    """Warn while a model revision is a branch or tag name: the image is then not reproducible."""
    moving = []
    if config.llama_model.local_path is None and not _COMMIT.match(config.llama_model.revision):
        moving.append(("llama_model_revision", config.llama_model.repo, config.llama_model.revision))
    if config.embeddings_model.local_path is None and not _COMMIT.match(config.embeddings_model.revision):
        moving.append(
            ("embeddings_model_revision", config.embeddings_model.model_id, config.embeddings_model.revision)
        )
    if not moving:
        return Result("model revisions", "ok", "every model from the Hub is pinned to a commit id")
    names = ", ".join(f"{key}={revision}" for key, _, revision in moving)
    fix = [
        "A branch moves: the image asset's hash does not change when upstream does, so a rebuild on",
        "another machine may bake different weights, or CDK reuses an old image. Pin each to a commit:",
    ]
    for key, repo, _ in moving:
        fix.append(f"  -c {key}=<commit>   (https://huggingface.co/{repo}/commits/main)")
    fix.append(
        "Every build prints the commit it resolved and each file's sha256 (/opt/model/provenance.json)."
    )
    return Result(
        "model revisions", "warn", f"{names}: not a commit id, the build is not reproducible", "\n".join(fix)
    )


# ----------------------------------------------------------------------------- the container builder


Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def run_command(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Run a builder's CLI, capturing its output (FileNotFoundError when it is not installed)."""
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60, check=False)


def normalise_arch(arch: str) -> str:
    """Docker's and uname's spellings to the platform names: amd64 or arm64."""
    arch = arch.strip().lower()
    return {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "arm64/v8": "arm64"}.get(arch, arch)


@dataclass(frozen=True)
class Builder:
    """What the doctor found out about the container builder CDK will call."""

    command: str
    arch: str | None
    """The architecture it builds natively (the daemon's, or podman's machine's); None if unknown."""
    results: tuple[Result, ...]


def check_builder(env: Mapping[str, str], runner: Runner = run_command) -> Builder:
    """The builder in ``CDK_DOCKER`` (default docker), as the CDK CLI's asset publisher calls it."""
    command = env.get("CDK_DOCKER") or "docker"
    if Path(command).name.startswith("podman"):
        return _check_podman(command, runner)
    return _check_docker(command, env, runner)


def _output(runner: Runner, args: Sequence[str]) -> subprocess.CompletedProcess[str] | None:
    try:
        return runner(args)
    except FileNotFoundError:
        return None
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(list(args), 124, "", f"{' '.join(args)}: no answer in 60 s")


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _check_podman(command: str, runner: Runner) -> Builder:
    info = _output(runner, [command, "info", "--format", "{{.Host.Arch}} {{.Version.Version}}"])
    if info is None:
        return Builder(
            command,
            None,
            (
                Result(
                    "builder",
                    "FAIL",
                    f"CDK_DOCKER={command}, but {command} is not installed",
                    "Install Podman (https://podman.io), or unset CDK_DOCKER to build with Docker.",
                ),
            ),
        )
    if info.returncode != 0:
        return Builder(
            command,
            None,
            (
                Result(
                    "builder",
                    "FAIL",
                    f"{command} info failed: {_first_line(info.stderr or info.stdout)}",
                    "On macOS and Windows podman builds in a VM: podman machine init (once), then\n"
                    "podman machine start. The error reads: Cannot connect to Podman. Please verify your\n"
                    "connection to the Linux system using `podman system connection list`, or try\n"
                    "`podman machine init` and `podman machine start` to manage a new Linux VM",
                ),
            ),
        )
    arch, _, version = info.stdout.strip().partition(" ")
    summary = f"podman {version or '?'} (CDK_DOCKER={command}): builds linux/{normalise_arch(arch)} natively"
    return Builder(command, normalise_arch(arch), (Result("builder", "ok", summary),))


def _check_docker(command: str, env: Mapping[str, str], runner: Runner) -> Builder:
    version = _output(runner, [command, "version", "--format", "{{json .}}"])
    if version is None:
        return Builder(
            command,
            None,
            (
                Result(
                    "builder",
                    "FAIL",
                    f"no container builder: {command} is not installed",
                    "Install Docker (Docker Desktop, or Docker Engine with the buildx plugin), or Podman\n"
                    "and export CDK_DOCKER=podman.",
                ),
            ),
        )
    try:
        answer = json.loads(_first_line(version.stdout) or "{}")
    except json.JSONDecodeError:
        answer = {}
    client = answer.get("Client") or {}
    server = answer.get("Server") or {}
    problems: list[tuple[str, str]] = []  # (summary, fix)
    warnings: list[tuple[str, str]] = []

    if env.get("DOCKER_BUILDKIT", "").strip() == "0":
        problems.append(
            (
                "DOCKER_BUILDKIT=0 turns BuildKit off",
                "The Dockerfiles use RUN --mount, which only BuildKit builds; the build fails with:\n"
                f"  {ERROR_NO_BUILDKIT}\n"
                "unset DOCKER_BUILDKIT",
            )
        )
    buildx = _output(runner, [command, "buildx", "version"])
    if buildx is None or buildx.returncode != 0:
        said = _first_line((buildx.stderr or buildx.stdout) if buildx else "")
        problems.append(
            (
                "the buildx plugin is missing (Docker without BuildKit)",
                f"`{command} buildx version` said: {said or 'nothing'}\n"
                "docker build then falls back to the legacy builder, which prints\n"
                f"  {ERROR_NO_BUILDX}\n"
                "and fails on the Dockerfiles' RUN --mount with\n"
                f"  {ERROR_NO_BUILDKIT}\n"
                "Install buildx: Docker Desktop has it; on Linux the docker-buildx-plugin package from\n"
                "Docker's repository (or docker-buildx on Debian/Ubuntu), or use podman (CDK_DOCKER=podman).",
            )
        )
    if version.returncode != 0 or not server:
        said = _first_line(version.stderr) or "no server"
        problems.append(
            (
                "the Docker daemon is not reachable",
                f"{said}\nStart Docker Desktop (macOS, Windows) or the daemon\n"
                "(Linux: sudo systemctl start docker); `docker context ls` shows which one is used.",
            )
        )
    else:
        inspect = _output(runner, [command, "buildx", "inspect"])
        driver = ""
        if inspect is not None and inspect.returncode == 0:
            match = re.search(r"^Driver:\s*(\S+)", inspect.stdout, re.MULTILINE)
            driver = match.group(1) if match else ""
        if driver and driver != "docker":
            problems.append(
                (
                    f"the current buildx builder uses the {driver} driver",
                    "CDK runs `docker build` and then `docker tag`s the result; a builder with the\n"
                    f"{driver} driver keeps the image in its cache instead of loading it into docker:\n"
                    f"  {ERROR_DOCKER_CONTAINER}\n"
                    "and the publish step then fails with\n"
                    "  Error response from daemon: No such image: cdkasset-<hash>:latest\n"
                    "Switch to the default builder: docker buildx use default\n"
                    "(or export BUILDX_BUILDER=default).",
                )
            )
        status = _output(runner, [command, "info", "--format", "{{json .DriverStatus}}"])
        if status is not None and "io.containerd.snapshotter" in status.stdout:
            warnings.append(
                (
                    "the containerd image store is on",
                    "With attestations, images are pushed as an OCI index, which Lambda refuses:\n"
                    f"  {ERROR_MANIFEST}\n"
                    "The pinned CDK CLI builds with BUILDX_NO_DEFAULT_ATTESTATIONS=1, which avoids it;\n"
                    "if you see that error (another CLI, or attestations forced in your buildx config),\n"
                    "turn the store off: in Docker Desktop, Settings > General >\n"
                    "  Use containerd for pulling and storing images\n"
                    'on Linux, remove "containerd-snapshotter" from the features in /etc/docker/daemon.json.',
                )
            )

    name = f"docker {server.get('Version') or client.get('Version') or '?'}"
    arch = normalise_arch(str(server["Arch"])) if server.get("Arch") else None
    if problems:
        summary = f"{name}: " + "; ".join(text for text, _ in problems)
        fix = "\n".join(text for _, text in [*problems, *warnings])
        return Builder(command, arch, (Result("builder", "FAIL", summary, fix),))
    if warnings:
        summary = f"{name} with BuildKit: " + "; ".join(text for text, _ in warnings)
        return Builder(
            command, arch, (Result("builder", "warn", summary, "\n".join(t for _, t in warnings)),)
        )
    return Builder(
        command,
        arch,
        (Result("builder", "ok", f"{name} with BuildKit (buildx, docker driver), linux/{arch}"),),
    )


def _arch_of(function: FunctionConfig) -> str:
    """The image platform's architecture: amd64 or arm64."""
    return normalise_arch(function.platform.split("/")[-1])


def check_platform(
    config: AppConfig, builder: Builder, *, host_system: str = "", binfmt_dir: Path | None = None
) -> Result:
    """Warn when a function's architecture is not the builder's: its image builds under emulation.

    On a Linux host whose own kernel runs the builder, emulation needs QEMU registered with
    binfmt_misc; without it the first RUN fails with "exec format error".
    """
    if builder.arch is None:
        return Result("build platform", "skip", "the builder's architecture is unknown (see builder)")
    foreign = {name: fn for name, fn in functions(config).items() if _arch_of(fn) != builder.arch}
    if not foreign:
        return Result("build platform", "ok", f"both images build natively for linux/{builder.arch}")
    listing = ", ".join(f"{name} {fn.platform}" for name, fn in foreign.items())
    native = "x86_64" if builder.arch == "amd64" else "arm64"
    keys = " ".join(f"-c {name}_architecture={native}" for name in foreign)
    slow = (
        ["The llama image compiles llama.cpp: under emulation that takes an hour or more, not minutes."]
        if "llama" in foreign
        else ["Emulated builds are several times slower."]
    )
    ways = [
        f'Run the functions on the builder\'s architecture: make deploy CDK_ARGS="{keys}"',
        *(["(Graviton: about 20% less per GB-second than x86_64)"] if native == "arm64" else []),
        "or build on a machine of the functions' architecture: a remote Docker host",
        "(DOCKER_HOST=ssh://user@host make deploy) or a CI runner.",
    ]
    system = host_system or platform.system()
    binfmt = binfmt_dir or Path("/proc/sys/fs/binfmt_misc")
    remote = os.environ.get("DOCKER_HOST") or os.environ.get("CONTAINER_HOST")
    if system == "Linux" and not remote:
        wanted = {"amd64": "qemu-x86_64", "arm64": "qemu-aarch64"}
        missing = sorted(
            {wanted[_arch_of(fn)] for fn in foreign.values() if not (binfmt / wanted[_arch_of(fn)]).exists()}
        )
        if missing:
            fix = [
                f"This Linux host has no QEMU emulator registered ({', '.join(missing)} not in {binfmt}),",
                f"so building {listing} on a linux/{builder.arch} builder fails at the first RUN with:",
                f"  {ERROR_EXEC_FORMAT}",
                "Register QEMU: sudo apt-get install qemu-user-static binfmt-support (Debian, Ubuntu),",
                "or docker run --privileged --rm tonistiigi/binfmt --install all. Even then:",
                *slow,
                *ways,
            ]
            return Result(
                "build platform",
                "FAIL",
                f"{listing} on a linux/{builder.arch} builder: no emulator registered",
                "\n".join(fix),
            )
    fix = [f"The builder runs linux/{builder.arch}: {listing} build(s) under QEMU emulation.", *slow, *ways]
    return Result(
        "build platform",
        "warn",
        f"{listing} on a linux/{builder.arch} builder: emulated, slow",
        "\n".join(fix),
    )


# ----------------------------------------------------------------------------- AWS: who and where


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _error_message(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Message", "")) or str(error)


def check_credentials(sts: Any, region: str | None) -> tuple[str | None, Result]:
    """The account the credentials belong to (``sts:GetCallerIdentity`` needs no permission)."""
    if not region:
        return None, Result(
            "credentials",
            "FAIL",
            "no AWS region configured",
            "make deploy uses your credentials' region: export AWS_REGION=eu-west-1 (for example),\n"
            "or set one for the profile: aws configure set region eu-west-1",
        )
    try:
        identity = sts.get_caller_identity()
    except NoCredentialsError:
        return None, Result(
            "credentials",
            "FAIL",
            "no AWS credentials found",
            "Configure credentials that may deploy CloudFormation stacks with IAM roles:\n"
            "aws configure, aws sso login --profile NAME with AWS_PROFILE=NAME, or environment variables.",
        )
    except ClientError as error:
        return None, Result(
            "credentials",
            "FAIL",
            f"the credentials were refused: {_error_code(error)}",
            f"{_error_message(error)}\n"
            "Renew them (aws sso login, or new access keys) and run make doctor again.",
        )
    except BotoCoreError as error:
        return None, Result(
            "credentials", "FAIL", f"could not reach AWS STS: {error}", "Check the network and proxy."
        )
    account = str(identity.get("Account", "?"))
    return account, Result(
        "credentials", "ok", f"account {account} ({identity.get('Arn', '?')}), region {region}"
    )


def check_region(region: str, config: AppConfig | None) -> list[Result]:
    results = []
    if region in NO_FUNCTION_URL_REGIONS:
        results.append(
            Result(
                "region",
                "FAIL",
                f"{region} has no Lambda Function URLs; the stack creates two",
                "Deploy to a region that has them, e.g. AWS_REGION=eu-west-1 make deploy\n"
                "(make bootstrap there first). Regions without Function URLs:\n"
                f"{', '.join(sorted(NO_FUNCTION_URL_REGIONS))}.",
            )
        )
    else:
        results.append(Result("region", "ok", f"{region} has Lambda Function URLs"))
    if config is not None:
        using = [name for name, fn in functions(config).items() if fn.snap_start]
        if not using:
            results.append(Result("snapstart", "ok", "not used by either function"))
        elif region not in NO_SNAPSTART_REGIONS:
            results.append(Result("snapstart", "ok", f"{region} has SnapStart ({', '.join(using)})"))
        else:
            keys = " ".join(f"-c {name}_snap_start=false" for name in using)
            results.append(
                Result(
                    "snapstart",
                    "FAIL",
                    f"SnapStart is on for {', '.join(using)} but {region} has no SnapStart",
                    f'Turn it off for this region: make deploy CDK_ARGS="{keys}", or deploy to a region\n'
                    'listed under "Supported Regions" on https://docs.aws.amazon.com/lambda/latest/dg/snapstart.html',
                )
            )
    return results


# ----------------------------------------------------------------------------- AWS: bootstrap


@dataclass(frozen=True)
class BootstrapRequirement:
    version: int
    parameter: str


def bootstrap_requirement(context: Mapping[str, Any], assembly: Path | None = None) -> BootstrapRequirement:
    """The bootstrap version the templates need and the SSM parameter that holds the deployed one.

    From a synthesized assembly's manifest.json when given (the highest
    ``requiresBootstrapStackVersion`` of its stack and asset artifacts, lookup roles aside),
    else this app's known requirement with the qualifier from the context.
    """
    qualifier = str(context.get(QUALIFIER_KEY) or DEFAULT_QUALIFIER)
    parameter = f"/cdk-bootstrap/{qualifier}/version"
    version = REQUIRED_BOOTSTRAP_VERSION
    if assembly is not None:
        manifest = json.loads((assembly / "manifest.json").read_text())
        found = [
            (
                int(props["requiresBootstrapStackVersion"]),
                str(props.get("bootstrapStackVersionSsmParameter") or parameter),
            )
            for artifact in manifest.get("artifacts", {}).values()
            if "requiresBootstrapStackVersion" in (props := artifact.get("properties") or {})
        ]
        if found:
            version, parameter = max(found)
    return BootstrapRequirement(version, parameter)


def check_bootstrap(
    ssm: Any, cloudformation: Any, region: str, account: str, need: BootstrapRequirement, toolkit_stack: str
) -> Result:
    """As the CDK CLI checks it: the SSM version parameter, else the toolkit stack's output.

    The CLI reads ``bootstrapStackVersionSsmParameter`` and compares it with the assembly's
    ``requiresBootstrapStackVersion``; only when the parameter is not readable (access
    denied) does it fall back to the toolkit stack's ``BootstrapVersion`` output.
    """
    bootstrap = f"make bootstrap   (cdk bootstrap aws://{account}/{region})"
    version: int | None = None
    source = need.parameter
    try:
        answer = ssm.get_parameter(Name=need.parameter)
        version = int(answer["Parameter"]["Value"])
    except ClientError as error:
        code = _error_code(error)
        if code == "ParameterNotFound":
            return Result(
                "bootstrap",
                "FAIL",
                f"{account}/{region} is not bootstrapped (no SSM parameter {need.parameter})",
                f"Once per account and region: {bootstrap}\n"
                '(a custom qualifier goes in cdk.json: "@aws-cdk/core:bootstrapQualifier").',
            )
        if code not in ("AccessDenied", "AccessDeniedException"):
            return Result(
                "bootstrap", "FAIL", f"could not read {need.parameter}: {code}", _error_message(error)
            )
    stack = None
    try:
        stacks = cloudformation.describe_stacks(StackName=toolkit_stack)["Stacks"]
        stack = stacks[0] if stacks else None
    except ClientError as error:
        if "does not exist" not in _error_message(error):
            return Result(
                "bootstrap",
                "FAIL",
                f"could not read the {toolkit_stack} stack: {_error_code(error)}",
                _error_message(error),
            )
    outputs = {o["OutputKey"]: o.get("OutputValue", "") for o in (stack or {}).get("Outputs", [])}
    if version is None:  # the parameter was not readable: the stack's output is what the CLI falls back to
        if stack is None or "BootstrapVersion" not in outputs:
            return Result(
                "bootstrap",
                "FAIL",
                f"cannot tell the bootstrap version: {need.parameter} is not readable "
                f"and there is no {toolkit_stack} stack",
                f"Allow ssm:GetParameter on {need.parameter}, or bootstrap: {bootstrap}",
            )
        version, source = int(outputs["BootstrapVersion"]), f"the {toolkit_stack} stack's output"
    if version < need.version:
        return Result(
            "bootstrap",
            "FAIL",
            f"bootstrap version {version} in {account}/{region}; this app needs {need.version} or later",
            f"Upgrade it in place: {bootstrap}\nOtherwise the deploy stops with:\n"
            f"  This CDK deployment requires bootstrap stack version '{need.version}', "
            f"found '{version}' in aws://{account}/{region}. Please run 'cdk bootstrap'.",
        )
    if stack is None:
        return Result(
            "bootstrap",
            "warn",
            f"version {version} ({source}), but no stack named {toolkit_stack}",
            "If you bootstrapped with another --toolkit-stack-name, pass it to the doctor the same way;\n"
            "the deploy itself only needs the parameter and the bootstrap roles.",
        )
    status = str(stack.get("StackStatus", ""))
    if _FAILED_STACK.search(status):
        return Result(
            "bootstrap",
            "FAIL",
            f"the {toolkit_stack} stack is {status}",
            f"Look at its events in the CloudFormation console, fix the cause, then {bootstrap}\n"
            "(a stack in ROLLBACK_COMPLETE must be deleted first:\n"
            f"aws cloudformation delete-stack --stack-name {toolkit_stack}).",
        )
    if "ImageRepositoryName" not in outputs:
        return Result(
            "bootstrap",
            "FAIL",
            f"the {toolkit_stack} stack has no ECR repository for image assets",
            f"Re-bootstrap with the current template: {bootstrap}",
        )
    return Result(
        "bootstrap",
        "ok",
        f"version {version} >= {need.version} ({source}); images go to {outputs['ImageRepositoryName']}",
    )


# ----------------------------------------------------------------------------- AWS: Lambda limits


@dataclass(frozen=True)
class AccountLimits:
    concurrency: int
    unreserved: int


def account_limits(lambda_client: Any) -> AccountLimits:
    limit = lambda_client.get_account_settings()["AccountLimit"]
    return AccountLimits(int(limit["ConcurrentExecutions"]), int(limit["UnreservedConcurrentExecutions"]))


def deployed_reservations(cloudformation: Any, lambda_client: Any, stack_name: str) -> int:
    """Reserved concurrency the stack's own functions hold now (a redeploy gives it back first)."""
    try:
        resources = cloudformation.describe_stack_resources(StackName=stack_name)["StackResources"]
    except ClientError as error:
        if "does not exist" in _error_message(error):
            return 0
        raise
    held = 0
    for resource in resources:
        if resource.get("ResourceType") == "AWS::Lambda::Function" and resource.get("PhysicalResourceId"):
            answer = lambda_client.get_function_concurrency(FunctionName=resource["PhysicalResourceId"])
            held += int(answer.get("ReservedConcurrentExecutions") or 0)
    return held


def reservation(config: AppConfig, function: FunctionConfig, name: str) -> tuple[int | None, str]:
    """The reserved concurrency the stack gives a function, and the key that sets it.

    A function's own ``<name>_reserved_concurrency``; in API_KEY mode, without one, the
    configuration's public-URL cap (``AppConfig.reserved_concurrency`` decides).
    """
    if function.reserved_concurrency is not None:
        return function.reserved_concurrency, f"{name}_reserved_concurrency"
    value = config.reserved_concurrency(function)
    return (value, "public_url_reserved_concurrency") if value is not None else (None, "")


def check_concurrency(limits: AccountLimits, config: AppConfig, held_by_stack: int) -> Result:
    """Reserved concurrency, and provisioned concurrency of functions without it, come out of the
    unreserved pool, which must keep ``min(100, limit)``."""
    asks: list[tuple[str, int]] = []  # (key=value as the configuration sets it, units taken)
    undo: list[str] = []
    for name, function in functions(config).items():
        reserved, key = reservation(config, function, name)
        if reserved:
            asks.append(
                (f"{key}={reserved}" if key.startswith(name) else f"{name}: {key}={reserved}", reserved)
            )
            undo.append(f"-c {key}=null")
        elif reserved is None and function.provisioned_concurrency:
            asks.append(
                (
                    f"{name}_provisioned_concurrency={function.provisioned_concurrency}",
                    function.provisioned_concurrency,
                )
            )
        if function.provisioned_concurrency:
            undo.append(f"-c {name}_provisioned_concurrency=0")
    wanted = sum(units for _, units in asks)
    minimum = min(UNRESERVED_MINIMUM, limits.concurrency)
    available = limits.unreserved + held_by_stack
    reduced = " (reduced: a new account's)" if limits.concurrency < DEFAULT_CONCURRENCY_LIMIT else ""
    summary = f"account limit {limits.concurrency}{reduced}, unreserved {limits.unreserved}"
    if wanted == 0:
        return Result("concurrency", "ok", f"{summary}; nothing reserved or provisioned")
    asked = ", ".join(text for text, _ in asks)
    if available - wanted >= minimum:
        return Result("concurrency", "ok", f"{summary}; {asked} leaves {available - wanted} unreserved")
    target = max(DEFAULT_CONCURRENCY_LIMIT, limits.concurrency + wanted + minimum)
    return Result(
        "concurrency",
        "FAIL",
        f"{summary}; {asked} would leave {available - wanted}, below the {minimum} Lambda keeps unreserved",
        "The deploy would roll back with:\n"
        f"  {ERROR_RESERVED.replace('[10]', f'[{minimum}]')}\n"
        "Ask for a higher concurrency quota (free; new accounts get it raised on request):\n"
        "  aws service-quotas request-service-quota-increase --service-code lambda \\\n"
        f"    --quota-code {CONCURRENCY_QUOTA_CODE} --desired-value {target}\n"
        f'or deploy without reservations: make deploy CDK_ARGS="{" ".join(dict.fromkeys(undo))}"',
    )


def largest_memory_in_use(lambda_client: Any, *, max_pages: int = 20) -> int:
    """The largest MemorySize among the region's existing functions (bounded: 20 pages of 50)."""
    largest = 0
    marker: str | None = None
    for _ in range(max_pages):
        page = lambda_client.list_functions(**({"Marker": marker} if marker else {}))
        largest = max([largest, *(int(fn.get("MemorySize", 0)) for fn in page.get("Functions", []))])
        marker = page.get("NextMarker")
        if not marker:
            break
    return largest


def check_memory(limits: AccountLimits, config: AppConfig, largest_in_use: int) -> Result:
    """Memory against the new-account cap of 3,008 MB.

    Neither GetAccountSettings (concurrency and code storage only) nor Service Quotas
    (no Lambda memory quota) reports that cap, so it is inferred: AWS gives new accounts
    reduced concurrency *and* memory quotas together, so a concurrency limit under the
    default 1,000 with no function above 3,008 MB in the region is a warning.
    """
    above = {name: mb for name, mb in memory_sizes(config).items() if mb > NEW_ACCOUNT_MEMORY_MB}
    if not above:
        return Result("memory", "ok", f"no function asks for more than {NEW_ACCOUNT_MEMORY_MB} MB")
    asked = ", ".join(f"{name} {mb} MB" for name, mb in above.items())
    if largest_in_use > NEW_ACCOUNT_MEMORY_MB:
        return Result("memory", "ok", f"{asked}; a function here already has {largest_in_use} MB")
    if limits.concurrency >= DEFAULT_CONCURRENCY_LIMIT:
        return Result("memory", "ok", f"{asked}; the account's quotas are not a new account's")
    keys = " ".join(f"-c {name}_memory_mb={NEW_ACCOUNT_MEMORY_MB}" for name in above)
    return Result(
        "memory",
        "warn",
        f"{asked}, but this account's limits look new (concurrency {limits.concurrency}): "
        f"new accounts are capped at {NEW_ACCOUNT_MEMORY_MB} MB",
        "No API reports the memory cap, so this is inferred from the reduced concurrency quota. If it\n"
        "applies, the stack rolls back after the image builds with:\n"
        f"  {ERROR_MEMORY}\n"
        "Either deploy within the cap now (fewer CPUs: slower generation):\n"
        f'  make deploy CDK_ARGS="{keys}"\n'
        "or ask AWS to lift it: AWS Support Center > Create case > Service limit increase > Lambda,\n"
        "function memory up to 10,240 MB in this region (AWS also lifts it as the account is used).",
    )


# ----------------------------------------------------------------------------- AWS: bulk embedding


def reserved_by_config(config: AppConfig) -> int:
    """Concurrency the configuration takes out of the unreserved pool (reserved, else provisioned)."""
    taken = 0
    for name, function in functions(config).items():
        reserved, _ = reservation(config, function, name)
        taken += reserved if reserved is not None else function.provisioned_concurrency
    return taken


def check_batch(limits: AccountLimits, config: AppConfig, held_by_stack: int, s3: Any, region: str) -> Result:
    """The Distributed Map's concurrency against what the account can run, and a bucket of the user's."""
    batch = config.batch
    left = limits.unreserved + held_by_stack - reserved_by_config(config)
    problems: list[str] = []
    fixes: list[str] = []
    status: Status = "ok"
    if batch.max_concurrency > left:
        status = "warn"
        problems.append(
            f"up to {batch.max_concurrency} batch functions at once, {left} unreserved concurrency"
        )
        fixes += [
            "Batches above what the account can run are throttled: the state machine retries them, so a run",
            "is slower, not lost, but the online functions share the same pool and are throttled too. Lower",
            "the Map's concurrency, or ask for more (free):",
            f'  make deploy CDK_ARGS="-c batch_embeddings_max_concurrency={max(1, left // 2)}"',
            "  aws service-quotas request-service-quota-increase --service-code lambda \\",
            f"    --quota-code {CONCURRENCY_QUOTA_CODE} --desired-value "
            f"{max(DEFAULT_CONCURRENCY_LIMIT, limits.concurrency + batch.max_concurrency)}",
        ]
    if batch.bucket_name is not None:
        try:
            answer = s3.head_bucket(Bucket=batch.bucket_name)
        except ClientError as error:
            code = _error_code(error)
            reason = {"404": "does not exist", "NoSuchBucket": "does not exist", "403": "is not yours"}.get(
                code, f"cannot be read ({code})"
            )
            return Result(
                "bulk embedding",
                "FAIL",
                f"bucket {batch.bucket_name} {reason}",
                "batch_embeddings_bucket_name must be an existing bucket of this account that your\n"
                "credentials can read; leave it unset and the stack creates one:\n"
                '  make deploy CDK_ARGS="-c batch_embeddings_bucket_name=null"',
            )
        bucket_region = answer.get("BucketRegion") or region
        if bucket_region != region:
            status = "warn"
            problems.append(f"bucket {batch.bucket_name} is in {bucket_region}, the stack in {region}")
            fixes += [
                "Every record and vector would cross regions (slower, billed as inter-region transfer):",
                f"use a bucket in {region}, or deploy the stack there (AWS_REGION={bucket_region}).",
            ]
    if status == "ok":
        bucket = f"bucket {batch.bucket_name}" if batch.bucket_name else "a new bucket"
        return Result(
            "bulk embedding", "ok", f"{bucket}; up to {batch.max_concurrency} at once, {left} unreserved left"
        )
    return Result("bulk embedding", status, "; ".join(problems), "\n".join(fixes))


# ----------------------------------------------------------------------------- all together


def run_checks(
    *,
    overrides: Mapping[str, Any],
    session: Any,
    env: Mapping[str, str],
    runner: Runner = run_command,
    toolkit_stack: str = DEFAULT_TOOLKIT_STACK,
    assembly: Path | None = None,
    host_system: str = "",
    binfmt_dir: Path | None = None,
    cdk_json: Path = CDK_JSON,
    dockerfiles: Mapping[str, Path] = DOCKERFILES,
) -> list[Result]:
    """Every check, local ones first; AWS checks need credentials and a region, else are skipped."""
    context = load_context(overrides, cdk_json)
    config, result = check_config(context)
    results = [result]
    if config is not None:
        results.append(check_revisions(config))
    results.append(check_base_image(dockerfiles))
    builder = check_builder(env, runner)
    results.extend(builder.results)
    if config is not None:
        results.append(check_platform(config, builder, host_system=host_system, binfmt_dir=binfmt_dir))

    region: str | None = session.region_name
    try:
        sts = session.client("sts", region_name=region) if region else None
    except NoRegionError:
        sts, region = None, None
    account, result = check_credentials(sts, region)
    results.append(result)
    aws_checks: tuple[str, ...] = ("region", "bootstrap", "concurrency", "memory")
    if config is not None and config.batch.enabled:
        aws_checks = (*aws_checks, "bulk embedding")
    if account is None or region is None:
        results.extend(
            Result(name, "skip", "needs credentials and a region (see credentials)") for name in aws_checks
        )
        return results

    results.extend(check_region(region, config))
    ssm = session.client("ssm", region_name=region)
    cloudformation = session.client("cloudformation", region_name=region)
    lambda_client = session.client("lambda", region_name=region)
    results.append(
        _guarded(
            "bootstrap",
            lambda: check_bootstrap(
                ssm, cloudformation, region, account, bootstrap_requirement(context, assembly), toolkit_stack
            ),
        )
    )
    if config is None:
        results.extend(
            Result(name, "skip", "needs a valid configuration") for name in ("concurrency", "memory")
        )
        return results
    try:
        limits = account_limits(lambda_client)
    except (ClientError, BotoCoreError) as error:
        failed = _failure("concurrency", "lambda:GetAccountSettings", error)
        skipped = [name for name in aws_checks if name not in ("region", "bootstrap", "concurrency")]
        return [
            *results,
            failed,
            *(Result(name, "skip", "needs the account settings (see concurrency)") for name in skipped),
        ]
    held: list[int] = []

    def concurrency() -> Result:
        held.append(deployed_reservations(cloudformation, lambda_client, config.stack_name))
        return check_concurrency(limits, config, held[0])

    results.append(_guarded("concurrency", concurrency))
    results.append(
        _guarded("memory", lambda: check_memory(limits, config, largest_memory_in_use(lambda_client)))
    )
    if config.batch.enabled:
        s3 = session.client("s3", region_name=region) if config.batch.bucket_name else None
        results.append(
            _guarded(
                "bulk embedding",
                lambda: check_batch(limits, config, held[0] if held else 0, s3, region),
            )
        )
    return results


def _failure(check: str, call: str, error: Exception) -> Result:
    code = _error_code(error) if isinstance(error, ClientError) else type(error).__name__
    detail = _error_message(error) if isinstance(error, ClientError) else str(error)
    return Result(
        check,
        "FAIL",
        f"{call} failed: {code}",
        f"{detail}\nThe doctor needs read-only access: sts:GetCallerIdentity, ssm:GetParameter,\n"
        "cloudformation:DescribeStacks and DescribeStackResources, lambda:GetAccountSettings,\n"
        "GetFunctionConcurrency and ListFunctions, and with bulk embedding s3:ListBucket on your\n"
        "bucket (HeadBucket); the ReadOnlyAccess managed policy has them all.",
    )


def _guarded(check: str, run: Callable[[], Result]) -> Result:
    """Run one AWS check; an unexpected AWS error becomes that check's FAIL, not a traceback."""
    try:
        return run()
    except (ClientError, BotoCoreError) as error:
        operation = getattr(error, "operation_name", "") or "an AWS call"
        return _failure(check, str(operation), error)
