"""docs/configuration.md documents every setting with the default cdk.json actually has."""

from __future__ import annotations

import re
from typing import Any

from app import PROJECT_DIR, cdk_json_context
from stacks.config import KNOWN_KEYS

DOC = PROJECT_DIR / "docs" / "configuration.md"
ROW = re.compile(r"^\| `(?P<key>[a-z0-9_]+)` \| (?P<default>[^|]+) \|", re.MULTILINE)


def documented_defaults() -> dict[str, str]:
    return {match["key"]: match["default"].strip() for match in ROW.finditer(DOC.read_text())}


def rendered(value: Any) -> str:
    """How the docs write a cdk.json default."""
    if value is None:
        return "unset"
    if isinstance(value, list):
        return f"`{value!r}`" if value else "`[]`"
    return f"`{value}`"


def test_every_setting_is_documented_once() -> None:
    rows = [match["key"] for match in ROW.finditer(DOC.read_text())]
    assert sorted(rows) == sorted(KNOWN_KEYS)


def test_documented_defaults_match_cdk_json() -> None:
    context = cdk_json_context()
    documented = documented_defaults()
    mismatches = {
        key: (documented[key], rendered(context.get(key)))
        for key in KNOWN_KEYS
        if documented[key] != rendered(context.get(key))
    }
    assert mismatches == {}
