"""The ``docker build`` command the pinned CDK CLI runs for an image asset, read from the CLI itself.

The real CLI (``node_modules/.bin/cdk`` on the venv's Node 24) publishes the
synthesized cloud assembly for real, with two stand-ins for what cannot exist
here:

- AWS is moto's server on 127.0.0.1 (``moto[server]``, pinned in
  requirements-dev.txt). The CLI's AWS SDK for JavaScript v3 honours
  ``AWS_ENDPOINT_URL``, so every AWS call goes there, signed with fake
  credentials. First ``cdk bootstrap`` deploys the CLI's own bootstrap
  template into moto's CloudFormation (the staging bucket, the ECR repository,
  the publishing roles and the ``/cdk-bootstrap/<qualifier>/version`` SSM
  parameter); then ``cdk publish-assets --unstable=publish-assets`` (the
  pinned CLI's publish-only command: nothing is deployed) publishes every
  asset of the assembly.
- Docker is ``tests/images/docker_recorder.py`` through ``CDK_DOCKER``: it
  records every call (arguments, working directory, engine variables) and
  answers as Docker does: not cached, so the CLI builds; login, build, tag and
  push succeed without doing anything.

``publish_assets`` returns the recorded Docker calls and the AWS calls moto
answered during publishing; ``cdk_build_command`` picks one asset's build
command out of them by following the CLI's own chain: the push of the ECR
image tagged with the asset's hash, the ``docker tag`` that produced it, and
the ``docker build`` of that local tag. Nothing of the CLI is copied or
re-implemented here, so a CLI upgrade changes what is recorded, not this code.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import urllib.parse
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local.rie import wait_for_port
from tests.images.assets import ImageAsset
from tests.images.docker_recorder import LOG_VARIABLE
from tests.images.podman import ROOT

CDK_CLI = ROOT / "node_modules" / ".bin" / "cdk"
RECORDER = Path(__file__).with_name("docker_recorder.py")
REGION = "us-east-1"
# moto's account for credentials it does not know (its default; MOTO_ACCOUNT_ID is left unset).
ACCOUNT = "123456789012"
DEFAULT_QUALIFIER = "hnb659fds"
CLI_TIMEOUT_S = 300
# Variables that would let the developer's own AWS, CDK or Docker setup leak into the run.
_SCRUBBED_PREFIXES = ("AWS_", "CDK_", "DOCKER_", "BUILDX_", "BUILDKIT_")


class CdkCliError(RuntimeError):
    """The CDK CLI failed, or did not call Docker the way the image tests rely on."""


@dataclass(frozen=True)
class DockerCall:
    """One run of ``$CDK_DOCKER`` by the CLI, as the recorder saw it."""

    argv: tuple[str, ...]
    cwd: Path
    env: Mapping[str, str]
    global_options: Mapping[str, str]
    password_on_stdin: bool
    exit_status: int

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> DockerCall:
        return cls(
            argv=tuple(entry["argv"]),
            cwd=Path(entry["cwd"]),
            env=dict(entry["env"]),
            global_options=dict(entry["global_options"]),
            password_on_stdin=bool(entry["password_on_stdin"]),
            exit_status=int(entry["exit_status"]),
        )

    @property
    def verb(self) -> str:
        return self.argv[0] if self.argv else ""

    def option(self, flag: str) -> str:
        """The value after ``flag`` (exactly one occurrence)."""
        values = [self.argv[i + 1] for i, arg in enumerate(self.argv[:-1]) if arg == flag]
        if len(values) != 1:
            raise CdkCliError(f"expected one {flag} in `docker {shlex.join(self.argv)}`, found {len(values)}")
        return values[0]


@dataclass(frozen=True)
class AwsCall:
    """One request moto answered: the service (from the signature's scope) and the operation."""

    service: str
    operation: str

    def __str__(self) -> str:
        return f"{self.service}:{self.operation}"


@dataclass(frozen=True)
class PublishRun:
    """What ``cdk publish-assets`` did with the recorder as Docker and moto as AWS."""

    docker: tuple[DockerCall, ...]
    aws: tuple[AwsCall, ...]
    bootstrap_aws: tuple[AwsCall, ...]
    output: str

    def calls(self, verb: str) -> list[DockerCall]:
        return [call for call in self.docker if call.verb == verb]

    def pushed_image(self, asset_id: str) -> str:
        """The image the CLI pushed for ``asset_id`` (the destination tag is the asset hash)."""
        pushes = [call.argv[-1] for call in self.calls("push") if call.argv[-1].endswith(f":{asset_id}")]
        if len(pushes) != 1:
            raise CdkCliError(f"expected one push of an image tagged {asset_id}, found {pushes}\n{self}")
        return pushes[0]

    def local_tag(self, asset_id: str) -> str:
        """The local tag the CLI built and then tagged as the pushed image."""
        pushed = self.pushed_image(asset_id)
        sources = [call.argv[1] for call in self.calls("tag") if call.argv[-1] == pushed]
        if len(sources) != 1:
            raise CdkCliError(f"expected one `docker tag SOURCE {pushed}`, found {sources}\n{self}")
        return sources[0]

    def build_of(self, asset_id: str) -> DockerCall:
        """The ``docker build`` the CLI ran for ``asset_id``."""
        local = self.local_tag(asset_id)
        builds = [call for call in self.calls("build") if call.option("--tag") == local]
        if len(builds) != 1:
            raise CdkCliError(f"expected one `docker build --tag {local}`, found {len(builds)}\n{self}")
        return builds[0]

    def __str__(self) -> str:
        docker = "\n".join(f"  docker {shlex.join(call.argv)}  (in {call.cwd})" for call in self.docker)
        return f"recorded Docker calls:\n{docker}\nCLI output (end):\n{self.output[-4000:]}"


def cdk_build_command(asset: ImageAsset, manifest_dir: Path, tag: str) -> tuple[list[str], Path]:
    """The CLI's ``docker build`` arguments for ``asset`` and the directory it ran them in.

    The CLI's own local tag (``cdkasset-<hash>`` today) is replaced by ``tag``.
    """
    build = publish_assets(manifest_dir).build_of(asset.asset_id)
    args = list(build.argv)
    args[args.index("--tag") + 1] = tag
    return args, build.cwd


def publish_assets(assembly_dir: Path) -> PublishRun:
    """Run the real ``cdk publish-assets`` on a synthesized assembly (once per assembly)."""
    manifest = assembly_dir.resolve() / "manifest.json"
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest} is missing: synthesize the app first")
    return _publish(assembly_dir.resolve(), manifest.stat().st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _publish(assembly_dir: Path, _manifest_mtime_ns: int) -> PublishRun:
    if not CDK_CLI.is_file():
        raise FileNotFoundError(f"{CDK_CLI} is missing: run `make setup`")
    with tempfile.TemporaryDirectory(prefix="cdk-publish-") as tmp:
        work = Path(tmp)
        with _moto_server(work) as (endpoint, aws_log):
            qualifier = _qualifier(assembly_dir)
            _cdk(
                ["bootstrap", "--qualifier", qualifier, f"aws://{ACCOUNT}/{REGION}"],
                work,
                _cli_env(work, endpoint, "bootstrap"),
            )
            bootstrap_aws = _aws_calls(aws_log)
            aws_log.write_text("")
            output = _cdk(
                ["publish-assets", "--unstable=publish-assets", "--app", str(assembly_dir), "--all"],
                work,
                _cli_env(work, endpoint, "publish"),
                docker_log=work / "docker.jsonl",
            )
            aws = _aws_calls(aws_log)
        docker = _docker_calls(work / "docker.jsonl")
    return PublishRun(docker=docker, aws=aws, bootstrap_aws=bootstrap_aws, output=output)


def _qualifier(assembly_dir: Path) -> str:
    """The bootstrap qualifier the assembly's asset manifests were synthesized for."""
    manifest = json.loads((assembly_dir / "manifest.json").read_text())
    for artifact in manifest.get("artifacts", {}).values():
        parameter = artifact.get("properties", {}).get("bootstrapStackVersionSsmParameter", "")
        parts = parameter.split("/")
        if len(parts) == 4 and parts[1] == "cdk-bootstrap" and parts[3] == "version":
            return str(parts[2])
    return DEFAULT_QUALIFIER


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _moto_server(work: Path) -> Iterator[tuple[str, Path]]:
    """moto's server on a free local port, recording every request; yields its URL and record file."""
    port = _free_port()
    record = work / "aws.jsonl"
    record.write_text("")
    env = {**os.environ, "MOTO_ENABLE_RECORDING": "True", "MOTO_RECORDER_FILEPATH": str(record)}
    env.pop("MOTO_ACCOUNT_ID", None)
    with open(work / "moto.log", "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        try:
            wait_for_port("127.0.0.1", port, 30, server)
        except (RuntimeError, TimeoutError) as error:
            raise CdkCliError(
                f"moto's server did not start: {error}\n{(work / 'moto.log').read_text()}"
            ) from error
        yield f"http://127.0.0.1:{port}", record
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _cli_env(work: Path, endpoint: str, name: str) -> dict[str, str]:
    """The CLI's environment: Node 24, moto as AWS with fake keys, the recorder as Docker.

    Each command gets a HOME of its own, so none starts from what an earlier one cached.
    """
    home = work / f"home-{name}"
    home.mkdir()
    wrapper = work / "docker"
    if not wrapper.exists():
        wrapper.write_text(
            f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(RECORDER))} "$@"\n'
        )
        wrapper.chmod(0o755)
    env = {key: value for key, value in os.environ.items() if not key.startswith(_SCRUBBED_PREFIXES)}
    no_proxy = ",".join(filter(None, [env.get("NO_PROXY", ""), "127.0.0.1", "localhost"]))
    env.update(
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        HOME=str(home),  # no ~/.aws, ~/.docker or ~/.cdk.json of the developer
        CDK_HOME=str(home / ".cdk"),  # the CLI's caches (account ids) sit under the login's home otherwise
        AWS_CONFIG_FILE=str(home / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(home / "no-aws-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",  # moto's fake key
        AWS_REGION=REGION,
        AWS_ENDPOINT_URL=endpoint,
        CDK_DOCKER=str(wrapper),
        CDK_DOCKER_CREDS_FILE=str(home / "no-cdk-docker-creds.json"),
        CDK_DISABLE_CLI_TELEMETRY="true",
        CDK_DISABLE_VERSION_CHECK="true",
        NO_PROXY=no_proxy,
        no_proxy=no_proxy,
    )
    return env


def _cdk(args: list[str], cwd: Path, env: Mapping[str, str], docker_log: Path | None = None) -> str:
    run_env = dict(env)
    if docker_log is not None:
        run_env[LOG_VARIABLE] = str(docker_log)
    command = [str(CDK_CLI), *args, "--no-notices", "--no-color"]
    done = subprocess.run(
        command, cwd=cwd, env=run_env, capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False
    )
    output = done.stdout + done.stderr
    if done.returncode != 0:
        recorded = ""
        if docker_log is not None and docker_log.is_file():
            recorded = "\nrecorded Docker calls:\n" + docker_log.read_text()
        raise CdkCliError(
            f"`cdk {shlex.join(args)}` exited with {done.returncode}:\n{output[-6000:]}{recorded}"
        )
    return output


def _docker_calls(path: Path) -> tuple[DockerCall, ...]:
    if not path.is_file():
        return ()
    return tuple(DockerCall.from_json(json.loads(line)) for line in path.read_text().splitlines() if line)


def _aws_calls(path: Path) -> tuple[AwsCall, ...]:
    return tuple(_aws_call(json.loads(line)) for line in path.read_text().splitlines() if line)


# S3 bucket reads the JavaScript SDK sends without an x-id, named by their query key.
_S3_BUCKET_QUERIES = {
    "list-type": "ListObjectsV2",
    "location": "GetBucketLocation",
    "encryption": "GetBucketEncryption",
}


def _aws_call(entry: Mapping[str, Any]) -> AwsCall:
    """Service and operation of one recorded request, whatever the service's protocol."""
    headers = {key.lower(): value for key, value in entry["headers"].items()}
    scope = headers.get("authorization", "").split("Credential=", 1)[-1].split(",", 1)[0].split("/")
    service = scope[3] if len(scope) >= 5 else "?"
    if "x-amz-target" in headers:  # JSON protocols: ECR, SSM, ...
        return AwsCall(service, headers["x-amz-target"].rsplit(".", 1)[-1])
    url = urllib.parse.urlsplit(entry["url"])
    query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
    if "x-id" in query:  # S3 REST: the JavaScript SDK names most operations in the query
        return AwsCall(service, query["x-id"][0])
    for key, operation in _S3_BUCKET_QUERIES.items():
        if entry["method"] == "GET" and key in query:
            return AwsCall(service, operation)
    body = entry.get("body") or ""
    if entry.get("body_encoded"):
        body = base64.b64decode(body).decode("utf-8", "replace")
    action = urllib.parse.parse_qs(body).get("Action") or query.get("Action")
    if action:  # query protocols: STS, CloudFormation, IAM
        return AwsCall(service, action[0])
    return AwsCall(service, f"{entry['method']} {url.path}{'?' + url.query if url.query else ''}")
