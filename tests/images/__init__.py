"""Build the CDK app's container images as `cdk deploy` would, and run them as Lambda does.

- ``podman``: calling podman with the project's containers.conf (scripts/setup-system.sh).
- ``base``: the stand-in for the official Python base image, built from Debian packages.
- ``assets``: `cdk synth`, the image assets of the asset manifest and their functions.
- ``cdk_cli``: the `docker build` command the pinned CDK CLI runs, recorded from `cdk publish-assets`
  against moto with ``docker_recorder`` as Docker.
- ``docker_recorder``: the stand-in Docker executable that records what the CLI asks of it.
- ``build``: local models, the local torch index, podman builds and their cache report.
- ``run``: a built image under Lambda's constraints behind the Runtime Interface Emulator,
  and under an emulated CPU (qemu).
- ``report``: image sizes and largest layers (``python -m tests.images.report``).

docs/images.md explains the choices; tests/test_images.py uses all of it.
"""
