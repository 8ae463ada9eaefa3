"""The container images exactly as the synthesized app declares them.

``synthesize`` runs the pinned CDK CLI (``cdk synth``, offline, no AWS
account) with the given ``-c`` overrides. ``cdk deploy`` builds each Docker
image asset from what the cloud assembly's ``*.assets.json`` declares: the
staged context directory, Dockerfile, build arguments, secrets, target and
platform. ``ImageAsset.docker_build_args`` forms the same ``docker build``
arguments as the CLI's asset publisher (``Docker.build`` of cdk-assets-lib in
aws-cdk 2.1148.1), so with ``CDK_DOCKER=podman`` a deploy runs that very
command in the same directory.

Each image's function is found in the stack template by the asset hash in its
``ImageUri``: its memory, timeout, /tmp size, environment and image config are
what the local run applies.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from tests.images.podman import ROOT

CDK_CLI = ROOT / "node_modules" / ".bin" / "cdk"


class SynthError(RuntimeError):
    """`cdk synth` failed or its cloud assembly is not what the image tests expect."""


def synthesize(out_dir: Path, context: Mapping[str, str], *, project_dir: Path = ROOT) -> Path:
    """Run ``cdk synth`` into ``out_dir`` (assets staged there, as for a deploy) and return it."""
    if not CDK_CLI.is_file():
        raise FileNotFoundError(f"{CDK_CLI} is missing: run `make setup`")
    venv_bin = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": os.pathsep.join([venv_bin, os.environ.get("PATH", "")])}
    command = [
        str(CDK_CLI),
        "synth",
        "--quiet",
        "--no-notices",
        "--version-reporting=false",
        "--output",
        str(out_dir),
    ]
    for key, value in context.items():
        command += ["--context", f"{key}={value}"]
    done = subprocess.run(
        command, cwd=project_dir, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    if done.returncode != 0:
        raise SynthError(f"`cdk synth` exited with {done.returncode}:\n{done.stderr[-6000:]}")
    return out_dir


@dataclass(frozen=True)
class ImageAsset:
    """One ``dockerImages`` entry of an asset manifest (its ``source``), with paths resolved."""

    asset_id: str
    directory: Path
    source: Mapping[str, Any]
    display_name: str | None = None

    @classmethod
    def from_manifest(cls, asset_id: str, entry: Mapping[str, Any], manifest_dir: Path) -> ImageAsset:
        source = entry["source"]
        if "directory" not in source:
            raise SynthError(f"image asset {asset_id} is not built from a directory: {source}")
        return cls(
            asset_id=asset_id,
            directory=(manifest_dir / source["directory"]).resolve(),
            source=source,
            display_name=entry.get("displayName"),
        )

    @property
    def dockerfile(self) -> str:
        return str(self.source.get("dockerFile", "Dockerfile"))

    @property
    def name(self) -> str:
        """The image folder, e.g. ``llama`` for ``llama/Dockerfile``."""
        parts = PurePosixPath(self.dockerfile).parts
        return parts[0] if len(parts) > 1 else self.asset_id[:12]

    @property
    def build_args(self) -> dict[str, str]:
        return dict(self.source.get("dockerBuildArgs", {}))

    @property
    def platform(self) -> str | None:
        return self.source.get("platform")

    @property
    def network_mode(self) -> str | None:
        return self.source.get("networkMode")

    def docker_build_args(
        self,
        tag: str,
        *,
        build_args: Mapping[str, str] | None = None,
        network_mode: str | None = None,
    ) -> list[str]:
        """``docker build`` arguments in the order cdk-assets forms them (run in ``self.directory``).

        ``build_args`` / ``network_mode`` replace the declared ones (None: as declared).
        """
        source = self.source
        unsupported = sorted({"cacheFrom", "cacheTo", "dockerOutputs", "executable"} & set(source))
        if unsupported:
            raise SynthError(f"image asset {self.name} uses {unsupported}, which these tests do not replay")
        args = self.build_args if build_args is None else dict(build_args)
        network = self.network_mode if network_mode is None else network_mode
        command = ["build"]
        for key, value in args.items():
            command += ["--build-arg", f"{key}={value}"]
        for key, value in source.get("dockerBuildContexts", {}).items():
            command += ["--build-context", f"{key}={value}"]
        for key, value in source.get("dockerBuildSecrets", {}).items():
            command += ["--secret", f"id={key},{value}"]
        if source.get("dockerBuildSsh"):
            command += ["--ssh", source["dockerBuildSsh"]]
        command += ["--tag", tag]
        if source.get("dockerBuildTarget"):
            command += ["--target", source["dockerBuildTarget"]]
        if "dockerFile" in source:
            command += ["--file", source["dockerFile"]]
        if network:
            command += ["--network", network]
        if self.platform:
            command += ["--platform", self.platform]
        if source.get("cacheDisabled"):
            command.append("--no-cache")
        command.append(".")
        return command


@dataclass(frozen=True)
class LambdaFunction:
    """The template's settings of the function that runs one image."""

    logical_id: str
    memory_mb: int
    timeout_s: int
    ephemeral_storage_mb: int
    architectures: tuple[str, ...]
    environment: Mapping[str, str] = field(default_factory=dict)
    image_config: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CloudAssembly:
    """The parts of a synthesized ``cdk.out`` that the image tests use."""

    directory: Path
    stack_name: str
    assets: tuple[ImageAsset, ...]
    template: Mapping[str, Any]

    @classmethod
    def read(cls, directory: Path) -> CloudAssembly:
        manifests = sorted(directory.glob("*.assets.json"))
        if len(manifests) != 1:
            raise SynthError(f"expected one stack asset manifest in {directory}, found {manifests}")
        manifest = json.loads(manifests[0].read_text())
        stack_name = manifests[0].name.removesuffix(".assets.json")
        assets = tuple(
            ImageAsset.from_manifest(asset_id, entry, directory)
            for asset_id, entry in manifest.get("dockerImages", {}).items()
        )
        template = json.loads((directory / f"{stack_name}.template.json").read_text())
        return cls(directory=directory, stack_name=stack_name, assets=assets, template=template)

    def asset(self, name: str) -> ImageAsset:
        found = [asset for asset in self.assets if asset.name == name]
        if len(found) != 1:
            raise SynthError(f"expected one image asset built from {name}/Dockerfile, found {len(found)}")
        return found[0]

    def function_for(self, asset: ImageAsset) -> LambdaFunction:
        """The AWS::Lambda::Function whose ImageUri ends with this asset's hash."""
        matches = []
        for logical_id, resource in self.template.get("Resources", {}).items():
            if resource.get("Type") != "AWS::Lambda::Function":
                continue
            image_uri = json.dumps(resource["Properties"].get("Code", {}).get("ImageUri", ""))
            if f":{asset.asset_id}" in image_uri:
                matches.append((logical_id, resource["Properties"]))
        if len(matches) != 1:
            raise SynthError(f"expected one function running image {asset.name}, found {len(matches)}")
        logical_id, props = matches[0]
        variables = props.get("Environment", {}).get("Variables", {})
        unresolved = sorted(key for key, value in variables.items() if not isinstance(value, str))
        if unresolved:
            raise SynthError(f"{logical_id}: environment values resolved only at deploy time: {unresolved}")
        return LambdaFunction(
            logical_id=logical_id,
            memory_mb=int(props.get("MemorySize", 128)),
            timeout_s=int(props.get("Timeout", 3)),
            ephemeral_storage_mb=int(props.get("EphemeralStorage", {}).get("Size", 512)),
            architectures=tuple(props.get("Architectures", ["x86_64"])),
            environment=dict(variables),
            image_config=dict(props.get("ImageConfig", {})),
        )


def replaced(args: Mapping[str, str], overrides: Mapping[str, str]) -> dict[str, str]:
    """Build args with ``overrides`` substituted in place (new keys appended)."""
    merged = dict(args)
    merged.update(overrides)
    return merged
