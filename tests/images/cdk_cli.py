"""The ``docker build`` command the pinned CDK CLI itself would run for an image asset.

``cdk deploy`` needs an AWS account before it builds anything (it first looks
up the ECR repository), so it cannot build here. Instead this runs the CLI's
own code that forms the command: the ``Docker`` class of cdk-assets-lib,
bundled in ``node_modules/aws-cdk/lib/index.js``, is cut out of the bundle and
evaluated in Node with its ``execute`` method replaced by a recorder. The
asset-to-options mapping is cdk-assets' ``ContainerImageBuilder.buildImage``.
The image tests compare that command with the one they run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.images.assets import ImageAsset
from tests.images.podman import ROOT

CLI_BUNDLE = ROOT / "node_modules" / "aws-cdk" / "lib" / "index.js"
_CLASS_START = "Docker = class {"

_RECORDER = r"""
const [classText, sourceJson, workDir, tag] = process.argv.slice(1);
const __name = (target) => target;
const flatten = (xs) => [].concat(...xs);
const Docker = eval("(" + classText.slice("Docker = ".length) + ")");
const docker = new Docker(() => {}, "ignore");
docker.execute = async (args, options) => {
  process.stdout.write(JSON.stringify({ args, cwd: options.cwd, env: options.env || {} }));
};
const source = JSON.parse(sourceJson);
docker.build({
  directory: require("path").resolve(workDir, source.directory),
  tag,
  buildArgs: source.dockerBuildArgs,
  buildContexts: source.dockerBuildContexts,
  buildSecrets: source.dockerBuildSecrets,
  buildSsh: source.dockerBuildSsh,
  target: source.dockerBuildTarget,
  file: source.dockerFile,
  networkMode: source.networkMode,
  platform: source.platform,
  outputs: source.dockerOutputs,
  cacheFrom: source.cacheFrom,
  cacheTo: source.cacheTo,
  cacheDisabled: source.cacheDisabled,
});
"""


def _class_span(text: str) -> tuple[int, int]:
    """Start and end offsets of ``Docker = class { ... }`` in the bundle (braces balanced)."""
    start = text.find(_CLASS_START)
    if start < 0 or text.find(_CLASS_START, start + 1) >= 0:
        raise LookupError(f"expected exactly one `{_CLASS_START}` in {CLI_BUNDLE}; the CLI changed")
    depth = 0
    for index in range(start + len(_CLASS_START) - 1, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return start, index + 1
    raise LookupError(f"unbalanced braces after `{_CLASS_START}` in {CLI_BUNDLE}")


def cdk_build_command(asset: ImageAsset, manifest_dir: Path, tag: str) -> tuple[list[str], Path]:
    """The CLI's ``docker build`` arguments for ``asset`` and the directory it runs them in."""
    text = CLI_BUNDLE.read_text()
    start, end = _class_span(text)
    node = Path(sys.executable).parent / "node"
    done = subprocess.run(
        [str(node), "-e", _RECORDER, text[start:end], json.dumps(dict(asset.source)), str(manifest_dir), tag],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"running the CDK CLI's Docker.build failed:\n{done.stderr[-3000:]}")
    recorded = json.loads(done.stdout)
    return list(recorded["args"]), Path(recorded["cwd"])
