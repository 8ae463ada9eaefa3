"""``python -m client doctor``: each preflight check, passing and failing, and what it prints.

AWS is stubbed: there is no AWS account here, so every AWS answer comes from
botocore's Stubber on real botocore clients (the request is validated against
the service model, the response is the documented shape). The configuration is
the real cdk.json read through the real ``AppConfig.from_context``.

The container builder: the real docker CLI (no daemon and no buildx plugin on
this machine) and real podman are driven where present; the answers a working
Docker daemon would give (buildx drivers, the containerd image store) cannot
exist here, so those tests feed the check the text docker prints.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from client import doctor
from client.__main__ import main
from stacks.config import AppConfig

REGION = "eu-west-1"
ACCOUNT = "123456789012"
PODMAN_CONF = Path(__file__).resolve().parent.parent / ".cache" / "containers" / "containers.conf"


# ----------------------------------------------------------------------------- helpers


def config_with(**overrides: Any) -> AppConfig:
    """The configuration cdk.json plus these -c overrides give (strings, as the CLI passes them)."""
    config, result = doctor.check_config(doctor.load_context({k: str(v) for k, v in overrides.items()}))
    assert config is not None, result.fix
    return config


def client(service: str, region: str = REGION) -> Any:
    session = boto3.Session(region_name=region, aws_access_key_id="stub", aws_secret_access_key="stub")
    return session.client(service)


@pytest.fixture
def aws() -> Iterator[dict[str, tuple[Any, Stubber]]]:
    """Stubbed clients for every service the doctor calls, checked to be fully consumed."""
    clients = {name: client(name) for name in ("sts", "ssm", "cloudformation", "lambda")}
    stubs = {name: Stubber(made) for name, made in clients.items()}
    for stub in stubs.values():
        stub.activate()
    yield {name: (clients[name], stubs[name]) for name in clients}
    for stub in stubs.values():
        stub.assert_no_pending_responses()
        stub.deactivate()


class StubbedSession:
    """What ``boto3.Session`` gives the doctor: a region and clients (here the stubbed ones)."""

    def __init__(self, clients: dict[str, tuple[Any, Stubber]], region_name: str | None = REGION) -> None:
        self.region_name = region_name
        self._clients = clients

    def client(self, service: str, region_name: str | None = None) -> Any:
        return self._clients[service][0]


def answers(replies: dict[tuple[str, ...], tuple[int, str, str]]) -> doctor.Runner:
    """A runner that answers commands with the given (status, stdout, stderr); unknown ones fail."""

    def run(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
        for prefix, (status, out, err) in replies.items():
            if tuple(args[: len(prefix)]) == prefix:
                return subprocess.CompletedProcess(list(args), status, out, err)
        return subprocess.CompletedProcess(list(args), 1, "", f"unexpected command {args}")

    return run


DOCKER_VERSION = json.dumps(
    {
        "Client": {"Version": "27.3.1", "Os": "darwin", "Arch": "arm64"},
        "Server": {"Version": "27.3.1", "Os": "linux", "Arch": "arm64"},
    }
)
INSPECT_DOCKER_DRIVER = "Name:          default\nDriver:        docker\nLast Activity: 2026-11-30\n"
INSPECT_CONTAINER_DRIVER = "Name:          builder\nDriver:        docker-container\n"
OVERLAY = '[["Backing Filesystem","extfs"],["Supports d_type","true"]]'
CONTAINERD = '[["driver-type","io.containerd.snapshotter.v1"]]'


def healthy_docker(**changes: tuple[int, str, str]) -> doctor.Runner:
    replies = {
        ("docker", "version"): (0, DOCKER_VERSION, ""),
        ("docker", "buildx", "version"): (0, "github.com/docker/buildx v0.17.1 257815a\n", ""),
        ("docker", "buildx", "inspect"): (0, INSPECT_DOCKER_DRIVER, ""),
        ("docker", "info"): (0, OVERLAY, ""),
    }
    for key, value in changes.items():
        replies[tuple(key.split("_"))] = value
    return answers(replies)


def rendered(results: list[doctor.Result]) -> str:
    out = io.StringIO()
    doctor.render(results, out)
    return out.getvalue()


# ----------------------------------------------------------------------------- configuration


def test_config_ok_names_the_stack_and_each_function() -> None:
    # Given cdk.json with explicit memory sizes
    config, result = doctor.check_config(doctor.load_context({"llama_memory_mb": "4096"}))
    # Then it validates, and the line says what will be deployed
    assert config is not None
    assert result.status == "ok"
    assert f"stack {config.stack_name}: llama 4096 MB" in result.summary


def test_config_failure_lists_each_bad_value() -> None:
    # When a -c override is out of range
    config, result = doctor.check_config(doctor.load_context({"llama_memory_mb": "99999"}))
    # Then the check fails and the fix names the key and the value
    assert config is None
    assert result.status == "FAIL"
    assert "llama_memory_mb" in result.fix
    assert "99999" in result.fix
    assert "docs/configuration.md" in result.fix


def test_cdk_args_give_context_and_options_and_ignore_the_rest() -> None:
    context, options = doctor.parse_cdk_args(
        "-c llama_memory_mb=3008 --context=embeddings_architecture=arm64 --require-approval never "
        "--profile dev --toolkit-stack-name MyToolkit aws://1/eu-west-1 -c 'cors_allowed_origins=a b'"
    )
    assert context == {
        "llama_memory_mb": "3008",
        "embeddings_architecture": "arm64",
        "cors_allowed_origins": "a b",
    }
    assert options == {"profile": "dev", "toolkit-stack-name": "MyToolkit"}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        doctor.parse_cdk_args("-c llama_memory_mb")


# ----------------------------------------------------------------------------- model revisions


def test_revisions_that_are_branches_warn_with_where_to_find_commits() -> None:
    # Given both models on the branch main
    config = config_with(llama_model_revision="main", embeddings_model_revision="main")
    # When checked
    result = doctor.check_revisions(config)
    # Then it warns, naming both keys and where each repository's commits are listed
    assert result.status == "warn"
    assert "llama_model_revision=main" in result.summary
    assert "embeddings_model_revision=main" in result.summary
    assert "not reproducible" in result.summary
    assert f"https://huggingface.co/{config.llama_model.repo}/commits/main" in result.fix
    assert "provenance.json" in result.fix


def test_revisions_pinned_to_commits_pass() -> None:
    config = config_with(
        llama_model_revision="91cad51170dc346986eccefdc2dd33a9da36ead9",
        embeddings_model_revision="614241f622f53c4eeff9890bdc4f31cfecc418b3",
    )
    result = doctor.check_revisions(config)
    assert result.status == "ok"
    assert "pinned to a commit" in result.summary


# ----------------------------------------------------------------------------- builder


def test_docker_with_buildkit_and_the_docker_driver_passes() -> None:
    builder = doctor.check_builder({}, healthy_docker())
    (result,) = builder.results
    assert result.status == "ok"
    assert result.summary == "docker 27.3.1 with BuildKit (buildx, docker driver), linux/arm64"
    assert builder.arch == "arm64"


def test_the_real_docker_cli_without_daemon_or_buildx_fails_with_its_own_words() -> None:
    # Given the docker CLI this machine has: no buildx plugin and no daemon
    if shutil.which("docker") is None:
        pytest.skip("no docker CLI on this machine")
    probe = subprocess.run(["docker", "info"], capture_output=True, text=True, check=False)
    if probe.returncode == 0:
        pytest.skip("a Docker daemon is running here")
    # When checked with the real runner
    (result,) = doctor.check_builder({}, doctor.run_command).results
    # Then it fails, quoting what docker said and how to fix each
    assert result.status == "FAIL"
    assert "the Docker daemon is not reachable" in result.summary
    assert "Cannot connect to the Docker daemon" in result.fix
    assert "systemctl start docker" in result.fix
    if "buildx plugin is missing" in result.summary:
        assert doctor.ERROR_NO_BUILDKIT in result.fix
        assert doctor.ERROR_NO_BUILDX in result.fix


def test_no_builder_installed_fails() -> None:
    # A builder that does not exist: the real runner raises FileNotFoundError
    (result,) = doctor.check_builder({"CDK_DOCKER": "/nonexistent/docker"}, doctor.run_command).results
    assert result.status == "FAIL"
    assert "is not installed" in result.summary
    assert "CDK_DOCKER=podman" in result.fix


def test_buildkit_turned_off_fails_with_the_mount_error() -> None:
    (result,) = doctor.check_builder({"DOCKER_BUILDKIT": "0"}, healthy_docker()).results
    assert result.status == "FAIL"
    assert "DOCKER_BUILDKIT=0" in result.summary
    assert doctor.ERROR_NO_BUILDKIT in result.fix
    assert "unset DOCKER_BUILDKIT" in result.fix


def test_missing_buildx_fails_with_the_legacy_builder_messages() -> None:
    runner = healthy_docker(docker_buildx_version=(1, "", "docker: 'buildx' is not a docker command.\n"))
    (result,) = doctor.check_builder({}, runner).results
    assert result.status == "FAIL"
    assert "buildx plugin is missing" in result.summary
    assert "docker: 'buildx' is not a docker command." in result.fix
    assert doctor.ERROR_NO_BUILDX in result.fix
    assert "docker-buildx-plugin" in result.fix


def test_docker_container_driver_fails_with_the_missing_image_error() -> None:
    runner = healthy_docker(docker_buildx_inspect=(0, INSPECT_CONTAINER_DRIVER, ""))
    (result,) = doctor.check_builder({}, runner).results
    assert result.status == "FAIL"
    assert "docker-container driver" in result.summary
    assert doctor.ERROR_DOCKER_CONTAINER in result.fix
    assert "No such image: cdkasset-" in result.fix
    assert "docker buildx use default" in result.fix


def test_containerd_image_store_warns_with_lambdas_manifest_error() -> None:
    (result,) = doctor.check_builder({}, healthy_docker(docker_info=(0, CONTAINERD, ""))).results
    assert result.status == "warn"
    assert "containerd image store" in result.summary
    assert "is not supported." in result.fix
    assert "BUILDX_NO_DEFAULT_ATTESTATIONS=1" in result.fix
    assert "Use containerd for pulling and storing images" in result.fix


def test_real_podman_passes_and_reports_its_platform() -> None:
    if shutil.which("podman") is None:
        pytest.skip("no podman on this machine")
    env = {"CDK_DOCKER": "podman"}

    def run(args: Sequence[str]) -> subprocess.CompletedProcess[str]:
        extra = {"CONTAINERS_CONF": str(PODMAN_CONF)} if PODMAN_CONF.is_file() else {}
        import os

        return subprocess.run(
            list(args), capture_output=True, text=True, env={**os.environ, **extra}, check=False
        )

    builder = doctor.check_builder(env, run)
    (result,) = builder.results
    assert result.status == "ok", result.summary
    assert result.summary.startswith("podman ")
    assert builder.arch in ("amd64", "arm64")
    assert f"builds linux/{builder.arch} natively" in result.summary


def test_podman_without_its_machine_fails_with_the_machine_commands() -> None:
    said = 'Error: unable to connect to Podman socket: Get "http://d/v4.9.3/libpod/_ping": dial unix ...'
    runner = answers({("podman", "info"): (125, "", said)})
    (result,) = doctor.check_builder({"CDK_DOCKER": "podman"}, runner).results
    assert result.status == "FAIL"
    assert "unable to connect to Podman socket" in result.summary
    assert "podman machine start" in result.fix


# ----------------------------------------------------------------------------- build platform


def builder_on(arch: str) -> doctor.Builder:
    return doctor.Builder("docker", arch, (doctor.Result("builder", "ok", "docker"),))


def test_native_platform_passes() -> None:
    config = config_with(llama_architecture="x86_64", embeddings_architecture="x86_64")
    result = doctor.check_platform(config, builder_on("amd64"), host_system="Darwin")
    assert result.status == "ok"
    assert result.summary == "both images build natively for linux/amd64"


def test_apple_silicon_building_amd64_warns_with_the_arm64_switch() -> None:
    # Given an arm64 builder (Apple Silicon) and both functions on x86_64
    config = config_with(llama_architecture="x86_64", embeddings_architecture="x86_64")
    # When checked on macOS (Docker Desktop emulates)
    result = doctor.check_platform(config, builder_on("arm64"), host_system="Darwin")
    # Then it warns: llama.cpp compiles under emulation; the fix switches both to arm64
    assert result.status == "warn"
    assert "llama linux/amd64, embeddings linux/amd64 on a linux/arm64 builder" in result.summary
    assert "an hour or more" in result.fix
    assert "-c llama_architecture=arm64 -c embeddings_architecture=arm64" in result.fix
    assert "DOCKER_HOST=ssh://" in result.fix


def test_cross_build_on_linux_without_qemu_fails_with_exec_format_error(tmp_path: Path) -> None:
    # Given an amd64 Linux builder, llama on arm64, and no QEMU registered with binfmt_misc
    config = config_with(llama_architecture="arm64", embeddings_architecture="x86_64")
    result = doctor.check_platform(config, builder_on("amd64"), host_system="Linux", binfmt_dir=tmp_path)
    assert result.status == "FAIL"
    assert "qemu-aarch64" in result.fix
    assert doctor.ERROR_EXEC_FORMAT in result.fix
    assert "qemu-user-static" in result.fix
    assert "-c llama_architecture=x86_64" in result.fix
    # And with QEMU registered it is only slow
    (tmp_path / "qemu-aarch64").write_text("enabled\n")
    registered = doctor.check_platform(config, builder_on("amd64"), host_system="Linux", binfmt_dir=tmp_path)
    assert registered.status == "warn"
    assert "emulated, slow" in registered.summary


# ----------------------------------------------------------------------------- credentials and region


def test_credentials_ok_names_account_and_region(aws: dict[str, tuple[Any, Stubber]]) -> None:
    sts, stub = aws["sts"]
    stub.add_response(
        "get_caller_identity",
        {"Account": ACCOUNT, "Arn": f"arn:aws:iam::{ACCOUNT}:user/me", "UserId": "AIDA"},
    )
    account, result = doctor.check_credentials(sts, REGION)
    assert account == ACCOUNT
    assert result.status == "ok"
    assert result.summary == f"account {ACCOUNT} (arn:aws:iam::{ACCOUNT}:user/me), region {REGION}"


def test_expired_credentials_fail(aws: dict[str, tuple[Any, Stubber]]) -> None:
    sts, stub = aws["sts"]
    stub.add_client_error(
        "get_caller_identity", "ExpiredToken", "The security token included in the request is expired"
    )
    account, result = doctor.check_credentials(sts, REGION)
    assert account is None
    assert result.status == "FAIL"
    assert "ExpiredToken" in result.summary
    assert "aws sso login" in result.fix


def test_no_credentials_at_all_fail(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Given no credentials anywhere (a real client; botocore stops before any request)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    sts = boto3.Session(region_name=REGION).client("sts")
    account, result = doctor.check_credentials(sts, REGION)
    assert account is None
    assert result.status == "FAIL"
    assert result.summary == "no AWS credentials found"
    assert "aws configure" in result.fix


def test_no_region_fails_with_how_to_set_one() -> None:
    _, result = doctor.check_credentials(None, None)
    assert result.status == "FAIL"
    assert "export AWS_REGION" in result.fix


def test_region_with_function_urls_passes() -> None:
    results = doctor.check_region(
        REGION, config_with(llama_snap_start="false", embeddings_snap_start="false")
    )
    assert [(r.check, r.status) for r in results] == [("region", "ok"), ("snapstart", "ok")]
    assert results[0].summary == f"{REGION} has Lambda Function URLs"


def test_region_without_function_urls_fails() -> None:
    (url,) = [r for r in doctor.check_region("eu-central-2", None) if r.check == "region"]
    assert url.status == "FAIL"
    assert url.summary == "eu-central-2 has no Lambda Function URLs; the stack creates two"
    assert "AWS_REGION=eu-west-1 make deploy" in url.fix


def test_snapstart_in_a_region_without_it_fails() -> None:
    # Given SnapStart on for the generator, in a region the SnapStart page excludes
    config = config_with(llama_snap_start="true")
    (region,) = sorted(doctor.NO_SNAPSTART_REGIONS)[:1]
    results = {r.check: r for r in doctor.check_region(region, config)}
    assert results["snapstart"].status == "FAIL"
    assert "SnapStart is on for llama" in results["snapstart"].summary
    assert "-c llama_snap_start=false" in results["snapstart"].fix
    # And in a region with SnapStart it passes
    ok = {r.check: r for r in doctor.check_region(REGION, config)}
    assert ok["snapstart"].status == "ok"


# ----------------------------------------------------------------------------- bootstrap


NEED = doctor.BootstrapRequirement(6, "/cdk-bootstrap/hnb659fds/version")


def toolkit_stack(status: str = "UPDATE_COMPLETE", **outputs: str) -> dict[str, Any]:
    defaults = {
        "BootstrapVersion": "30",
        "ImageRepositoryName": f"cdk-hnb659fds-container-assets-{ACCOUNT}-{REGION}",
    }
    return {
        "Stacks": [
            {
                "StackName": "CDKToolkit",
                "CreationTime": "2026-01-01T00:00:00Z",
                "StackStatus": status,
                "Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in {**defaults, **outputs}.items()],
            }
        ]
    }


def parameter(value: str) -> dict[str, Any]:
    return {"Parameter": {"Name": NEED.parameter, "Type": "String", "Value": value, "Version": 1}}


def bootstrap(aws: dict[str, tuple[Any, Stubber]]) -> doctor.Result:
    return doctor.check_bootstrap(
        aws["ssm"][0], aws["cloudformation"][0], REGION, ACCOUNT, NEED, "CDKToolkit"
    )


def test_bootstrap_new_enough_passes(aws: dict[str, tuple[Any, Stubber]]) -> None:
    aws["ssm"][1].add_response("get_parameter", parameter("30"), {"Name": NEED.parameter})
    aws["cloudformation"][1].add_response("describe_stacks", toolkit_stack(), {"StackName": "CDKToolkit"})
    result = bootstrap(aws)
    assert result.status == "ok"
    assert result.summary.startswith(f"version 30 >= 6 ({NEED.parameter}); images go to cdk-hnb659fds-")


def test_not_bootstrapped_fails_with_make_bootstrap(aws: dict[str, tuple[Any, Stubber]]) -> None:
    aws["ssm"][1].add_client_error("get_parameter", "ParameterNotFound", "")
    result = bootstrap(aws)
    assert result.status == "FAIL"
    assert result.summary == f"{ACCOUNT}/{REGION} is not bootstrapped (no SSM parameter {NEED.parameter})"
    assert f"make bootstrap   (cdk bootstrap aws://{ACCOUNT}/{REGION})" in result.fix


def test_old_bootstrap_fails_with_the_clis_error(aws: dict[str, tuple[Any, Stubber]]) -> None:
    aws["ssm"][1].add_response("get_parameter", parameter("5"))
    aws["cloudformation"][1].add_response("describe_stacks", toolkit_stack(BootstrapVersion="5"))
    result = bootstrap(aws)
    assert result.status == "FAIL"
    assert result.summary == f"bootstrap version 5 in {ACCOUNT}/{REGION}; this app needs 6 or later"
    assert "This CDK deployment requires bootstrap stack version '6', found '5'" in result.fix


def test_unreadable_parameter_falls_back_to_the_stack_output(aws: dict[str, tuple[Any, Stubber]]) -> None:
    # Given a role that may not read the parameter: the CLI then reads the stack's output
    aws["ssm"][1].add_client_error("get_parameter", "AccessDeniedException", "not authorized")
    aws["cloudformation"][1].add_response("describe_stacks", toolkit_stack(BootstrapVersion="21"))
    result = bootstrap(aws)
    assert result.status == "ok"
    assert "version 21 >= 6 (the CDKToolkit stack's output)" in result.summary


def test_failed_toolkit_stack_fails(aws: dict[str, tuple[Any, Stubber]]) -> None:
    aws["ssm"][1].add_response("get_parameter", parameter("30"))
    aws["cloudformation"][1].add_response("describe_stacks", toolkit_stack("UPDATE_ROLLBACK_FAILED"))
    result = bootstrap(aws)
    assert result.status == "FAIL"
    assert result.summary == "the CDKToolkit stack is UPDATE_ROLLBACK_FAILED"
    assert "delete-stack --stack-name CDKToolkit" in result.fix


def test_required_version_comes_from_a_synthesized_assembly(tmp_path: Path) -> None:
    manifest = {
        "artifacts": {
            "S.assets": {
                "properties": {
                    "requiresBootstrapStackVersion": 6,
                    "bootstrapStackVersionSsmParameter": "/cdk-bootstrap/abc/version",
                }
            },
            "S": {
                "properties": {
                    "requiresBootstrapStackVersion": 7,
                    "bootstrapStackVersionSsmParameter": "/cdk-bootstrap/abc/version",
                    "lookupRole": {"requiresBootstrapStackVersion": 8},
                }
            },
            "Tree": {"type": "cdk:tree"},
        }
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert doctor.bootstrap_requirement({}, tmp_path) == doctor.BootstrapRequirement(
        7, "/cdk-bootstrap/abc/version"
    )
    assert doctor.bootstrap_requirement({doctor.QUALIFIER_KEY: "xyz"}) == doctor.BootstrapRequirement(
        doctor.REQUIRED_BOOTSTRAP_VERSION, "/cdk-bootstrap/xyz/version"
    )


@pytest.mark.slow
def test_known_requirement_is_what_the_app_synthesizes(tmp_path: Path) -> None:
    # Given the real app synthesized with aws-cdk-lib (no AWS call)
    from app import build_app, cdk_json_context

    app, _ = build_app(cdk_json_context(), outdir=str(tmp_path))
    app.synth()
    # Then the doctor's default requirement is the assembly's, and the template's rule agrees
    assert doctor.bootstrap_requirement(cdk_json_context(), tmp_path) == doctor.bootstrap_requirement(
        cdk_json_context()
    )
    (template,) = tmp_path.glob("*.template.json")
    rule = json.loads(template.read_text())["Rules"]["CheckBootstrapVersion"]["Assertions"][0]
    assert f"version {doctor.REQUIRED_BOOTSTRAP_VERSION} required" in rule["AssertDescription"]


# ----------------------------------------------------------------------------- concurrency


def test_concurrency_without_reservations_passes() -> None:
    config = config_with(
        llama_reserved_concurrency="null", embeddings_reserved_concurrency="null", function_url_auth="AWS_IAM"
    )
    result = doctor.check_concurrency(doctor.AccountLimits(1000, 1000), config, 0)
    assert result.status == "ok"
    assert result.summary == "account limit 1000, unreserved 1000; nothing reserved or provisioned"


def test_reservation_on_a_new_account_fails_with_the_quota_request() -> None:
    # Given a new account (limit 10) and a reservation of 2
    config = config_with(llama_reserved_concurrency="2", function_url_auth="AWS_IAM")
    result = doctor.check_concurrency(doctor.AccountLimits(10, 10), config, 0)
    # Then it fails with the error CloudFormation would give and both ways out
    assert result.status == "FAIL"
    assert "account limit 10 (reduced: a new account's)" in result.summary
    assert (
        "llama_reserved_concurrency=2 would leave 8, below the 10 Lambda keeps unreserved" in result.summary
    )
    assert "decreases account's UnreservedConcurrentExecution below its minimum value of [10]" in result.fix
    assert "--quota-code L-B99A9384 --desired-value 1000" in result.fix
    assert "-c llama_reserved_concurrency=null" in result.fix


def test_reservation_the_stack_already_holds_is_given_back_first() -> None:
    # Given 1,000 with 898 unreserved because the deployed stack holds 2 of it
    config = config_with(llama_reserved_concurrency="2", function_url_auth="AWS_IAM")
    result = doctor.check_concurrency(doctor.AccountLimits(1000, 898), config, 2)
    assert result.status == "ok"
    assert "leaves 898 unreserved" in result.summary


def test_provisioned_concurrency_without_reservation_comes_from_the_pool() -> None:
    config = config_with(
        embeddings_provisioned_concurrency="5", embeddings_snap_start="false", function_url_auth="AWS_IAM"
    )
    result = doctor.check_concurrency(doctor.AccountLimits(50, 50), config, 0)
    assert result.status == "FAIL"
    assert "embeddings_provisioned_concurrency=5 would leave 45, below the 50" in result.summary
    assert "-c embeddings_provisioned_concurrency=0" in result.fix


def test_api_key_mode_public_cap_on_a_new_account_fails() -> None:
    config = config_with(function_url_auth="API_KEY", public_url_reserved_concurrency="10")
    result = doctor.check_concurrency(doctor.AccountLimits(10, 10), config, 0)
    assert result.status == "FAIL"
    assert "llama: public_url_reserved_concurrency=10" in result.summary
    assert "-c public_url_reserved_concurrency=null" in result.fix


def test_deployed_reservations_are_read_from_the_stacks_functions(
    aws: dict[str, tuple[Any, Stubber]],
) -> None:
    cloudformation, cfn_stub = aws["cloudformation"]
    lambda_client, lambda_stub = aws["lambda"]
    resource = {
        "StackName": "LlmInference",
        "Timestamp": "2026-01-01T00:00:00Z",
        "ResourceStatus": "CREATE_COMPLETE",
    }
    cfn_stub.add_response(
        "describe_stack_resources",
        {
            "StackResources": [
                {
                    **resource,
                    "LogicalResourceId": "Llama",
                    "PhysicalResourceId": "llama-fn",
                    "ResourceType": "AWS::Lambda::Function",
                },
                {
                    **resource,
                    "LogicalResourceId": "Emb",
                    "PhysicalResourceId": "emb-fn",
                    "ResourceType": "AWS::Lambda::Function",
                },
                {
                    **resource,
                    "LogicalResourceId": "Role",
                    "PhysicalResourceId": "role",
                    "ResourceType": "AWS::IAM::Role",
                },
            ]
        },
        {"StackName": "LlmInference"},
    )
    lambda_stub.add_response(
        "get_function_concurrency", {"ReservedConcurrentExecutions": 3}, {"FunctionName": "llama-fn"}
    )
    lambda_stub.add_response("get_function_concurrency", {}, {"FunctionName": "emb-fn"})
    assert doctor.deployed_reservations(cloudformation, lambda_client, "LlmInference") == 3
    # And a stack not deployed yet holds nothing
    cfn_stub.add_client_error(
        "describe_stack_resources", "ValidationError", "Stack with id LlmInference does not exist"
    )
    assert doctor.deployed_reservations(cloudformation, lambda_client, "LlmInference") == 0


# ----------------------------------------------------------------------------- memory


def test_memory_above_the_cap_on_a_new_looking_account_warns() -> None:
    config = config_with(llama_memory_mb="8192", embeddings_memory_mb="2048")
    result = doctor.check_memory(doctor.AccountLimits(10, 10), config, largest_in_use=0)
    assert result.status == "warn"
    assert "llama 8192 MB" in result.summary
    assert "capped at 3008 MB" in result.summary
    assert doctor.ERROR_MEMORY in result.fix
    assert '-c llama_memory_mb=3008"' in result.fix
    assert "Service limit increase" in result.fix


def test_memory_passes_on_an_established_account_or_with_a_big_function_already() -> None:
    config = config_with(llama_memory_mb="8192", embeddings_memory_mb="2048")
    established = doctor.check_memory(doctor.AccountLimits(1000, 1000), config, largest_in_use=0)
    assert established.status == "ok"
    assert "not a new account's" in established.summary
    proven = doctor.check_memory(doctor.AccountLimits(10, 10), config, largest_in_use=10240)
    assert proven.status == "ok"
    assert "already has 10240 MB" in proven.summary
    small = doctor.check_memory(
        doctor.AccountLimits(10, 10), config_with(llama_memory_mb="3008", embeddings_memory_mb="2048"), 0
    )
    assert small.status == "ok"


def test_largest_memory_in_use_reads_every_page(aws: dict[str, tuple[Any, Stubber]]) -> None:
    lambda_client, stub = aws["lambda"]
    stub.add_response("list_functions", {"Functions": [{"MemorySize": 512}], "NextMarker": "m1"}, {})
    stub.add_response(
        "list_functions", {"Functions": [{"MemorySize": 4096}, {"MemorySize": 128}]}, {"Marker": "m1"}
    )
    assert doctor.largest_memory_in_use(lambda_client) == 4096


# ----------------------------------------------------------------------------- the whole run


def runner_ok() -> doctor.Runner:
    return answers(
        {
            ("docker", "version"): (0, DOCKER_VERSION.replace("arm64", "amd64"), ""),
            ("docker", "buildx", "version"): (0, "github.com/docker/buildx v0.17.1\n", ""),
            ("docker", "buildx", "inspect"): (0, INSPECT_DOCKER_DRIVER, ""),
            ("docker", "info"): (0, OVERLAY, ""),
        }
    )


def stub_account(aws: dict[str, tuple[Any, Stubber]], *, limit: int, bootstrapped: bool = True) -> None:
    aws["sts"][1].add_response("get_caller_identity", {"Account": ACCOUNT, "Arn": "arn:aws:iam::1:user/me"})
    if bootstrapped:
        aws["ssm"][1].add_response("get_parameter", parameter("30"))
        aws["cloudformation"][1].add_response("describe_stacks", toolkit_stack())
    else:
        aws["ssm"][1].add_client_error("get_parameter", "ParameterNotFound", "")
    aws["lambda"][1].add_response(
        "get_account_settings",
        {"AccountLimit": {"ConcurrentExecutions": limit, "UnreservedConcurrentExecutions": limit}},
    )
    aws["cloudformation"][1].add_client_error(
        "describe_stack_resources", "ValidationError", "Stack with id LlmInference does not exist"
    )
    aws["lambda"][1].add_response("list_functions", {"Functions": []})


PINNED = {
    "llama_model_revision": "91cad51170dc346986eccefdc2dd33a9da36ead9",
    "embeddings_model_revision": "614241f622f53c4eeff9890bdc4f31cfecc418b3",
    "llama_architecture": "x86_64",
    "embeddings_architecture": "x86_64",
    "function_url_auth": "AWS_IAM",
    "llama_reserved_concurrency": "null",
    "embeddings_reserved_concurrency": "null",
    "llama_provisioned_concurrency": "0",
    "embeddings_provisioned_concurrency": "0",
    "llama_memory_mb": "8192",
    "embeddings_memory_mb": "2048",
}


def digest_pinned_dockerfiles(tmp_path: Path) -> dict[str, Path]:
    """Both Dockerfiles as they are, with their BASE_IMAGE pinned by a (made-up) digest."""
    pinned = {}
    for name, dockerfile in doctor.DOCKERFILES.items():
        text = dockerfile.read_text()
        text = text.replace("-slim-bookworm\n", f"-slim-bookworm@sha256:{'ab' * 32}\n", 1)
        pinned[name] = tmp_path / f"{name}.Dockerfile"
        pinned[name].write_text(text)
    return pinned


def test_everything_ok_prints_one_ok_line_per_check(
    aws: dict[str, tuple[Any, Stubber]], tmp_path: Path
) -> None:
    stub_account(aws, limit=1000)
    results = doctor.run_checks(
        overrides=PINNED,
        session=StubbedSession(aws),
        env={},
        runner=runner_ok(),
        host_system="Linux",
        dockerfiles=digest_pinned_dockerfiles(tmp_path),
    )
    text = rendered(results)
    assert [r.status for r in results] == ["ok"] * len(results), text
    assert [r.check for r in results] == [
        "configuration",
        "model revisions",
        "base image",
        "builder",
        "build platform",
        "credentials",
        "region",
        "snapstart",
        "bootstrap",
        "concurrency",
        "memory",
    ]
    assert doctor.exit_status(results) == 0
    assert text.count("\n") == len(results)  # no fix lines under ok


def test_a_new_unbootstrapped_account_fails_and_says_what_to_do(aws: dict[str, tuple[Any, Stubber]]) -> None:
    stub_account(aws, limit=10, bootstrapped=False)
    results = doctor.run_checks(
        overrides=PINNED, session=StubbedSession(aws), env={}, runner=runner_ok(), host_system="Linux"
    )
    by_check = {r.check: r for r in results}
    assert by_check["bootstrap"].status == "FAIL"
    assert by_check["memory"].status == "warn"
    assert doctor.exit_status(results) == 1
    text = rendered(results)
    assert "FAIL  bootstrap" in text
    assert "      Once per account and region: make bootstrap" in text


def test_the_command_reads_cdk_args_and_exits_1_on_a_failure(
    aws: dict[str, tuple[Any, Stubber]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given make's CDK_ARGS with a region that has no Function URLs, and stubbed AWS
    monkeypatch.setattr(doctor, "run_command", runner_ok())
    monkeypatch.setenv(
        "CDK_ARGS", " ".join(f"-c {k}={v}" for k, v in PINNED.items()) + " --require-approval never"
    )
    monkeypatch.delenv("AWS_REGION", raising=False)
    stub_account(aws, limit=1000)
    made: list[dict[str, Any]] = []

    def session_factory(**kwargs: Any) -> StubbedSession:
        made.append(kwargs)
        return StubbedSession(aws, region_name=kwargs.get("region_name"))

    out, err = io.StringIO(), io.StringIO()
    # When the command runs with --region eu-central-2
    status = main(["doctor", "--region", "eu-central-2"], out=out, err=err, session_factory=session_factory)
    # Then it exits 1, the region line fails, and the session got the region
    assert status == 1, out.getvalue() + err.getvalue()
    assert made == [{"region_name": "eu-central-2"}]
    assert "FAIL  region           eu-central-2 has no Lambda Function URLs" in out.getvalue()
    assert "make doctor: fix each FAIL above before deploying." in out.getvalue()


def test_a_malformed_context_argument_is_a_usage_error() -> None:
    err = io.StringIO()
    status = main(
        ["doctor", "-c", "llama_memory_mb"], out=io.StringIO(), err=err, session_factory=boto3.Session
    )
    assert status == 2
    assert "KEY=VALUE" in err.getvalue()


# ----------------------------------------------------------------------------- base image


def test_a_base_image_named_by_tag_warns_with_how_to_pin_it() -> None:
    # Given the Dockerfiles as shipped (their ARG BASE_IMAGE is a tag: no registry can be read here)
    result = doctor.check_base_image()
    # Then it is a warning naming the tag and the command that reads its digest
    assert result.status == "warn"
    assert "public.ecr.aws/docker/library/python:3.11.16-slim-bookworm: a tag" in result.summary
    assert "docker buildx imagetools inspect public.ecr.aws/docker/library/python:3.11.16-slim-bookworm" in (
        result.fix
    )


def test_a_base_image_pinned_by_digest_passes(tmp_path: Path) -> None:
    assert doctor.check_base_image(digest_pinned_dockerfiles(tmp_path)).status == "ok"


def test_a_dockerfile_without_base_image_arg_fails(tmp_path: Path) -> None:
    (bare := tmp_path / "Dockerfile").write_text("FROM scratch\n")
    result = doctor.check_base_image({"llama": bare})
    assert (result.status, result.summary) == ("FAIL", f"{bare} has no ARG BASE_IMAGE line")


# ----------------------------------------------------------------------------- bulk embedding


def limits(concurrency: int, unreserved: int | None = None) -> doctor.AccountLimits:
    return doctor.AccountLimits(concurrency, concurrency if unreserved is None else unreserved)


def test_bulk_embedding_within_the_pool_with_a_new_bucket_passes() -> None:
    config = config_with(batch_embeddings="true", **{k: v for k, v in PINNED.items() if "reserved" in k})
    # S3 is not called when the stack creates the bucket
    result = doctor.check_batch(limits(1000), config, 0, s3=None, region=REGION)
    assert (result.status, result.summary) == ("ok", "a new bucket; up to 100 at once, 1000 unreserved left")


def test_bulk_embedding_above_a_new_accounts_pool_warns_with_a_lower_setting() -> None:
    # Given a new account (limit 10) and the default Map concurrency of 100
    config = config_with(batch_embeddings="true", llama_reserved_concurrency="null")
    result = doctor.check_batch(limits(10), config, 0, s3=None, region=REGION)
    # Then a warning: throttled, not failed, with the setting and the quota request
    assert result.status == "warn"
    assert result.summary == "up to 100 batch functions at once, 10 unreserved concurrency"
    assert '-c batch_embeddings_max_concurrency=5"' in result.fix
    assert "--quota-code L-B99A9384 --desired-value 1000" in result.fix


def test_reservations_of_the_online_functions_come_out_of_what_the_map_can_use() -> None:
    config = config_with(
        batch_embeddings="true",
        batch_embeddings_max_concurrency="100",
        llama_reserved_concurrency="50",
        embeddings_reserved_concurrency="null",
    )
    result = doctor.check_batch(limits(200, 140), config, 0, s3=None, region=REGION)
    # 140 unreserved - 50 the llama function will reserve = 90 < 100
    assert result.summary == "up to 100 batch functions at once, 90 unreserved concurrency"


def s3_client() -> tuple[Any, Stubber]:
    made = client("s3")
    return made, Stubber(made)


@pytest.mark.parametrize(
    ("code", "reason"),
    [("404", "does not exist"), ("403", "is not yours"), ("SlowDown", "cannot be read (SlowDown)")],
)
def test_a_bucket_of_your_own_that_cannot_be_read_fails(code: str, reason: str) -> None:
    # Given batch_embeddings_bucket_name naming a bucket HeadBucket refuses (S3 stubbed with botocore)
    s3, stub = s3_client()
    stub.add_client_error("head_bucket", code, "", expected_params={"Bucket": "my-corpus"})
    config = config_with(batch_embeddings="true", batch_embeddings_bucket_name="my-corpus")
    with stub:
        result = doctor.check_batch(limits(1000), config, 0, s3=s3, region=REGION)
    assert (result.status, result.summary) == ("FAIL", f"bucket my-corpus {reason}")
    assert "-c batch_embeddings_bucket_name=null" in result.fix


def test_a_bucket_in_another_region_warns() -> None:
    s3, stub = s3_client()
    stub.add_response("head_bucket", {"BucketRegion": "us-east-1"}, {"Bucket": "my-corpus"})
    config = config_with(batch_embeddings="true", batch_embeddings_bucket_name="my-corpus")
    with stub:
        result = doctor.check_batch(limits(1000), config, 0, s3=s3, region=REGION)
    assert result.status == "warn"
    assert result.summary == f"bucket my-corpus is in us-east-1, the stack in {REGION}"


def test_a_readable_bucket_in_the_stacks_region_passes() -> None:
    s3, stub = s3_client()
    stub.add_response("head_bucket", {"BucketRegion": REGION}, {"Bucket": "my-corpus"})
    config = config_with(batch_embeddings="true", batch_embeddings_bucket_name="my-corpus")
    with stub:
        result = doctor.check_batch(limits(1000), config, 0, s3=s3, region=REGION)
    assert result.status == "ok"
    assert result.summary == "bucket my-corpus; up to 100 at once, 1000 unreserved left"


def test_the_batch_functions_memory_counts_against_the_new_account_cap() -> None:
    config = config_with(
        batch_embeddings="true",
        batch_embeddings_memory_mb="4096",
        llama_memory_mb="3008",
        embeddings_memory_mb="3008",
    )
    result = doctor.check_memory(limits(10), config, largest_in_use=0)
    assert result.status == "warn"
    assert result.summary.startswith("batch_embeddings 4096 MB, but this account's limits look new")
    assert "-c batch_embeddings_memory_mb=3008" in result.fix


def test_run_checks_adds_the_bulk_embedding_check_when_it_is_on(
    aws: dict[str, tuple[Any, Stubber]], tmp_path: Path
) -> None:
    stub_account(aws, limit=1000)
    results = doctor.run_checks(
        overrides={**PINNED, "batch_embeddings": "true"},
        session=StubbedSession(aws),
        env={},
        runner=runner_ok(),
        host_system="Linux",
        dockerfiles=digest_pinned_dockerfiles(tmp_path),
    )
    assert results[-1].check == "bulk embedding"
    assert results[-1].status == "ok", rendered(results)
