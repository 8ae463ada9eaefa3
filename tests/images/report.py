"""Each built image's size and its largest layers, for the test output and docs/images.md.

``python -m tests.images.report`` rewrites the generated section of
docs/images.md from the images the last ``make test-images`` left in podman's
storage (tags ``localhost/lambda-llm-inference/<image>:test``).
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass
from pathlib import Path

from tests.images.build import TAG_PREFIX
from tests.images.podman import ROOT, podman

DOCS = ROOT / "docs" / "images.md"
BEGIN = "<!-- BEGIN GENERATED: python -m tests.images.report -->"
END = "<!-- END GENERATED -->"
IMAGE_NAMES = ("llama", "embeddings")
MB = 1_000_000

_NOP = re.compile(r"^(\|\d+ .*?)?/bin/sh -c (#\(nop\) )?")
_DIGEST = re.compile(r"\b(file|dir|multi):[0-9a-f]{64}")


@dataclass(frozen=True)
class Layer:
    size: int
    instruction: str


@dataclass(frozen=True)
class ImageReport:
    name: str
    tag: str
    size: int
    layers: tuple[Layer, ...]
    """Every layer that adds bytes, in build order."""

    def largest(self, count: int = 5) -> list[Layer]:
        return sorted(self.layers, key=lambda layer: layer.size, reverse=True)[:count]


def describe(created_by: str, comment: str) -> str:
    """A readable instruction from podman's history entry."""
    if comment == "imported from tarball":
        return "base image (stand-in: Debian bookworm + python3, see tests/images/base.py)"
    text = _NOP.sub("", created_by.strip())
    if "#(nop)" not in created_by:  # a RUN step (with "|N ARG=..." when build args are in scope)
        text = "RUN " + text
    return _DIGEST.sub(r"\1:…", " ".join(text.split()))


def image_report(name: str, tag: str | None = None) -> ImageReport:
    tag = tag or f"{TAG_PREFIX}/{name}:test"
    size = int(podman("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())
    history = json.loads(podman("history", "--format", "json", tag).stdout)
    layers = tuple(
        Layer(
            size=int(entry.get("size", 0)),
            instruction=describe(entry.get("CreatedBy", ""), entry.get("comment", "")),
        )
        for entry in reversed(history)
        if int(entry.get("size", 0)) > 0
    )
    return ImageReport(name=name, tag=tag, size=size, layers=layers)


def render(reports: list[ImageReport], top: int = 5) -> str:
    lines = [
        "| image | size (uncompressed) | layers with content |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {r.name} | {r.size / MB:,.0f} MB | {len(r.layers)} |" for r in reports]
    for report in reports:
        lines += [
            "",
            f"Largest layers of the {report.name} image:",
            "",
            "| size | instruction |",
            "| ---: | --- |",
        ]
        for layer in report.largest(top):
            instruction = (
                layer.instruction if len(layer.instruction) <= 120 else layer.instruction[:117] + "…"
            )
            lines.append(f"| {layer.size / MB:,.1f} MB | `{instruction.replace('|', '¦')}` |")
    return "\n".join(lines) + "\n"


def update_docs(markdown: str, path: Path = DOCS) -> None:
    """Replace the generated section of ``path`` (between the markers) with ``markdown``."""
    text = path.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    path.write_text(text[:start] + "\n" + markdown + text[end:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--print", action="store_true", help="print the section instead of writing the docs")
    args = parser.parse_args()
    markdown = render([image_report(name) for name in IMAGE_NAMES])
    if args.print:
        print(markdown)
    else:
        update_docs(markdown)
        print(f"updated {DOCS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
