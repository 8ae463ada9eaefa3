"""The pinned CDK CLI builds each image asset with exactly the ``docker build`` the image tests replay.

The real CLI (aws-cdk in node_modules, on Node 24) synthesizes the app
offline and then publishes it for real with ``cdk publish-assets``: its
publish-only command, so no stack is deployed. Docker is
``tests/images/docker_recorder.py`` (``CDK_DOCKER``), which records each call
and builds nothing. AWS cannot exist here, so moto's server stands in for it,
reached through ``AWS_ENDPOINT_URL`` with fake keys. First the CLI's own
``cdk bootstrap`` deploys its bootstrap template into moto (CloudFormation:
DescribeStacks, CreateChangeSet, DescribeChangeSet, ExecuteChangeSet,
DescribeStackEvents; STS GetCallerIdentity). Then, during publishing, moto
answers STS GetCallerIdentity and AssumeRole (the file- and image-publishing
roles, then the deploy role), ECR DescribeRepositories, DescribeImages and
GetAuthorizationToken, SSM GetParameter (the bootstrap version), CloudFormation
DescribeStacks (the toolkit stack), and S3 ListObjectsV2, GetBucketLocation,
GetBucketEncryption and PutObject (the template file asset).

``ImageAsset.docker_build_args`` (tests/images/assets.py) is what the image
tests run with podman; a CLI upgrade that builds differently fails here, in
seconds, instead of silently in the slow image tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.images.assets import CloudAssembly, synthesize
from tests.images.cdk_cli import ACCOUNT, REGION, PublishRun, cdk_build_command, publish_assets

pytestmark = pytest.mark.slow

IMAGES = ["llama", "embeddings"]
# The only engine variable the CLI sets for a build: it turns off BuildKit's provenance
# attestations, which podman never makes, so the image tests need not pass it on.
BUILD_ENV = {"BUILDX_NO_DEFAULT_ATTESTATIONS": "1"}
# CloudFormation calls that would deploy something; publishing must make none.
DEPLOYING_CALLS = {"CreateChangeSet", "ExecuteChangeSet", "CreateStack", "UpdateStack", "DeleteStack"}


@pytest.fixture(scope="module")
def assembly(tmp_path_factory: pytest.TempPathFactory) -> CloudAssembly:
    """`cdk synth` of the app with its cdk.json defaults (offline, no Docker)."""
    return CloudAssembly.read(synthesize(tmp_path_factory.mktemp("cdk-cli-build") / "cdk.out", {}))


@pytest.fixture(scope="module")
def published(assembly: CloudAssembly) -> PublishRun:
    return publish_assets(assembly.directory)


@pytest.mark.parametrize("name", IMAGES)
def test_cli_builds_the_image_with_the_command_the_image_tests_run(
    name: str, assembly: CloudAssembly, published: PublishRun
) -> None:
    # Given an image asset of the synthesized app
    asset = assembly.asset(name)

    # When the real CLI publishes the assembly with the recorder as Docker
    args, cwd = cdk_build_command(asset, assembly.directory, "cdkasset-tag")

    # Then it ran the command docker_build_args forms, in the staged asset directory
    assert args == asset.docker_build_args("cdkasset-tag")
    assert cwd == asset.directory
    build = published.build_of(asset.asset_id)
    assert build.env == BUILD_ENV
    assert build.global_options == {}


@pytest.mark.parametrize("name", IMAGES)
def test_cli_logs_in_checks_the_cache_builds_tags_and_pushes_in_that_order(
    name: str, assembly: CloudAssembly, published: PublishRun
) -> None:
    # Given an image asset and the ECR repository the CLI's bootstrap stack made in moto
    asset = assembly.asset(name)
    registry = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
    repository = f"{registry}/cdk-hnb659fds-container-assets-{ACCOUNT}-{REGION}"
    pushed = published.pushed_image(asset.asset_id)

    # When the Docker calls for this asset are read in the order the CLI made them
    local = published.local_tag(asset.asset_id)
    steps = [
        call.verb
        for call in published.docker
        if call.verb == "login" or local in call.argv or pushed in call.argv
    ]

    # Then the CLI logged in to that registry with the ECR token on stdin, found no cached
    # image, built it, tagged it with the asset hash in the bootstrap repository and pushed it
    assert steps == ["login", "inspect", "build", "tag", "push"]
    (login,) = published.calls("login")
    assert login.argv == ("login", "--username", "AWS", "--password-stdin", registry)
    assert login.password_on_stdin
    assert pushed == f"{repository}:{asset.asset_id}"


def test_publishing_asks_the_aws_stand_in_and_deploys_nothing(published: PublishRun) -> None:
    # Given the AWS calls moto answered while the CLI published the assets
    calls = {str(call) for call in published.aws}

    # When they are compared with what building and pushing an image needs
    needed = {
        "sts:GetCallerIdentity",
        "ecr:DescribeRepositories",
        "ecr:DescribeImages",
        "ecr:GetAuthorizationToken",
        "ssm:GetParameter",
    }

    # Then every one of them reached moto, and no stack was created, changed or deleted
    assert needed <= calls, sorted(calls)
    assert not {call.operation for call in published.aws} & DEPLOYING_CALLS
    assert "Assets published successfully" in published.output


def test_build_command_is_read_for_the_assembly_it_is_given(tmp_path: Path, assembly: CloudAssembly) -> None:
    # Given a directory that holds no synthesized assembly
    # When the CLI's build command is asked for it
    # Then it says the assembly is missing instead of answering for another one
    with pytest.raises(FileNotFoundError, match=r"manifest\.json is missing"):
        cdk_build_command(assembly.asset("llama"), tmp_path, "cdkasset-tag")
