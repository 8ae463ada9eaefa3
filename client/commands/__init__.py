"""The subcommands of ``python -m client``, one module each.

A module here is a subcommand when it defines ``NAME`` (the word typed), ``HELP``
(one line), ``add_arguments(parser)`` and ``run(args, io) -> int`` (the exit
status). ``client.__main__`` finds them by listing this package, so adding a
command never touches another command's file.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol, TextIO


@dataclass(frozen=True)
class CommandIO:
    """Where a command writes, and how it makes its AWS session (tests pass fakes)."""

    out: TextIO
    err: TextIO
    session_factory: Callable[..., Any]

    def session(self, profile: str | None = None) -> Any:
        return self.session_factory(profile_name=profile) if profile else self.session_factory()


class Command(Protocol):
    NAME: str
    HELP: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace, io: CommandIO) -> int: ...


def discover() -> Iterator[ModuleType]:
    """Every subcommand module of this package, in name order."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda found: found.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "NAME") and hasattr(module, "run"):
            yield module
