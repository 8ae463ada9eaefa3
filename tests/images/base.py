"""The stand-in for the images' base: Debian bookworm's Python 3.11, built from Debian packages.

Both Dockerfiles start ``FROM ${BASE_IMAGE}``, by default the official
``python:3.11-slim-bookworm`` from ECR Public. No container registry is
reachable here, so the image tests pass ``BASE_IMAGE`` = this image instead:
``mmdebstrap`` makes a minimal bookworm root filesystem with ``python3`` and
``python3-venv`` (Python 3.11, like the official image) and ``podman import``
turns it into ``localhost/lambda-base-python311:bookworm``.

Differences from the official image that a Dockerfile may notice: Python is
``/usr/bin/python3`` (3.11.2) rather than ``/usr/local/bin/python3``, and the
system pip is Debian's and externally managed; the contract is that builder
stages make ``/opt/venv`` with ``python3 -m venv``, which works on both.
``python`` exists too (``python-is-python3``), as on the official image.

The host's own extra CA certificates (those in the host's bundle that Debian
does not ship, e.g. an HTTPS proxy's) are added the Debian way, so RUN steps
reach PyPI through this machine's proxy. They are a property of the host, not
of the images: a deploy from a developer machine uses the official base.

Building takes about 1.5 minutes; the image carries a label with the hash of
its recipe and is rebuilt only when the recipe (or the host's extra CAs) changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tests.images.podman import PodmanError, podman, require_tools

TAG = "localhost/lambda-base-python311:bookworm"
RECIPE_LABEL = "org.lambda-llm-inference.base-recipe"
RECIPE_VERSION = 3  # bump to force a rebuild after changing how the image is made

_PEM = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)
HOST_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
DEBIAN_CERTS = Path("/usr/share/ca-certificates")


def host_extra_ca_certs(bundle: Path = HOST_BUNDLE, shipped: Path = DEBIAN_CERTS) -> tuple[str, ...]:
    """Certificates the host trusts beyond Debian's ca-certificates package, in bundle order."""
    if not bundle.is_file():
        return ()
    known = {pem for path in shipped.rglob("*.crt") for pem in _PEM.findall(path.read_text())}
    return tuple(pem for pem in _PEM.findall(bundle.read_text()) if pem not in known)


@dataclass(frozen=True)
class BaseImageRecipe:
    """Everything that decides the stand-in's content; its hash is the cache key."""

    suite: str = "bookworm"
    sources: tuple[str, ...] = (
        "deb http://deb.debian.org/debian bookworm main",
        "deb http://deb.debian.org/debian bookworm-updates main",
        "deb http://deb.debian.org/debian-security bookworm-security main",
    )
    packages: tuple[str, ...] = (
        "ca-certificates",
        "netbase",
        "tzdata",
        "python3",
        "python3-venv",
        "python-is-python3",
    )
    # Like Debian's and Docker's slim images: no manuals, translations or docs
    # (kept out of later `apt-get install`s in the Dockerfiles too, via dpkg.cfg.d).
    dpkg_options: tuple[str, ...] = (
        "path-exclude=/usr/share/man/*",
        "path-exclude=/usr/share/locale/*",
        "path-include=/usr/share/locale/locale.alias",
        "path-exclude=/usr/share/doc/*",
        "path-include=/usr/share/doc/*/copyright",
        "path-exclude=/usr/share/info/*",
    )
    # The apt settings Debian's official Docker images carry (debuerreotype's
    # "minimizing config"): without them every `apt-get install` in a Dockerfile
    # leaves about 77 MB of package caches (/var/cache/apt/*.bin) in its layer.
    apt_config: tuple[tuple[str, str], ...] = (
        (
            "docker-clean",
            'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb'
            ' /var/cache/apt/*.bin || true"; };\n'
            'APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb'
            ' /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };\n'
            'Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\n',
        ),
        ("docker-no-languages", 'Acquire::Languages "none";\n'),
        ("docker-gzip-indexes", 'Acquire::GzipIndexes "true";\n'),
        ("docker-autoremove-suggests", 'Apt::AutoRemove::SuggestsImportant "false";\n'),
    )
    env: tuple[tuple[str, str], ...] = (
        ("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
        ("LANG", "C.UTF-8"),
    )
    extra_ca_certs: tuple[str, ...] = field(default_factory=host_extra_ca_certs)

    def digest(self) -> str:
        text = json.dumps({"version": RECIPE_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def recipe_of(tag: str) -> str | None:
    """The recipe label of an existing image, or None when the image is absent."""
    result = podman(
        "image", "inspect", "--format", f'{{{{index .Labels "{RECIPE_LABEL}"}}}}', tag, check=False
    )
    return result.stdout.strip() if result.returncode == 0 else None


def ensure_base_image(recipe: BaseImageRecipe | None = None, tag: str = TAG) -> str:
    """The stand-in base image's tag, built first when missing or made from another recipe."""
    recipe = recipe or BaseImageRecipe()
    if recipe_of(tag) == recipe.digest():
        return tag
    build_base_image(recipe, tag)
    remove_stale_images(recipe.digest())
    return tag


def remove_stale_images(current_recipe: str, max_passes: int = 20) -> int:
    """Remove untagged images built on an earlier stand-in; return how many removals succeeded.

    Every image built FROM the stand-in inherits its recipe label, so the build
    cache of an outdated stand-in is recognisable, and useless: podman would
    keep it forever. Untagged images only, without force: anything tagged or in
    use stays. Children go before parents, hence the passes (podman removes a
    child's untagged parents with it).
    """
    removed = 0
    for _ in range(max_passes):
        images = json.loads(podman("images", "--all", "--format", "json").stdout)
        stale = [
            image["Id"]
            for image in images
            if not image.get("RepoTags")
            and (image.get("Labels") or {}).get(RECIPE_LABEL) not in (None, current_recipe)
        ]
        gone = [image_id for image_id in stale if podman("rmi", image_id, check=False).returncode == 0]
        removed += len(gone)
        if not gone:
            break
    return removed


def build_base_image(recipe: BaseImageRecipe, tag: str) -> None:
    require_tools("mmdebstrap", "podman")
    with tempfile.TemporaryDirectory(prefix="base-image-") as tmp:
        workdir = Path(tmp)
        cert_files = []
        for index, pem in enumerate(recipe.extra_ca_certs):
            path = workdir / f"host-extra-{index:02d}.crt"
            path.write_text(pem + "\n")
            cert_files.append(str(path))
        apt_dir = workdir / "apt.conf.d"
        apt_dir.mkdir()
        for name, content in recipe.apt_config:
            (apt_dir / name).write_text(content)
        rootfs = workdir / "rootfs.tar"
        command = [
            "mmdebstrap",
            "--variant=minbase",
            # merged /usr set up by mmdebstrap itself, without the usrmerge package (and its perl)
            "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
            *(f"--dpkgopt={option}" for option in recipe.dpkg_options),
            "--include=" + ",".join(recipe.packages),
        ]
        command.append(
            "--customize-hook=copy-in "
            + " ".join(str(apt_dir / name) for name, _ in recipe.apt_config)
            + " /etc/apt/apt.conf.d"
        )
        # With those settings mmdebstrap's own cleanup no longer finds apt's caches.
        command.append('--customize-hook=rm -f "$1"/var/cache/apt/*.bin')
        if cert_files:
            command += [
                "--customize-hook=copy-in " + " ".join(cert_files) + " /usr/local/share/ca-certificates",
                '--customize-hook=chroot "$1" update-ca-certificates',
            ]
        command += [recipe.suite, str(rootfs), *recipe.sources]
        env = {**os.environ, "SOURCE_DATE_EPOCH": "0"}  # reproducible timestamps in the tarball
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False, timeout=1200)
        if done.returncode != 0:
            raise PodmanError(f"mmdebstrap failed ({done.returncode}):\n{done.stderr[-4000:]}")
        changes = [f"ENV {name}={value}" for name, value in recipe.env]
        changes += [f"LABEL {RECIPE_LABEL}={recipe.digest()}", 'CMD ["python3"]']
        podman("import", *(arg for change in changes for arg in ("--change", change)), str(rootfs), tag)
