"""docs/configuration.md documents every setting with the default cdk.json actually has."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from app import PROJECT_DIR, cdk_json_context
from stacks.config import KNOWN_KEYS, allowed
from stacks.regions import FUNCTION_URL_UNSUPPORTED_REGIONS, SNAPSTART_UNSUPPORTED_REGIONS

DOC = PROJECT_DIR / "docs" / "configuration.md"
ROW = re.compile(r"^\| `(?P<key>[a-z0-9_]+)` \| (?P<default>[^|]+) \|", re.MULTILINE)
FULL_ROW = re.compile(
    r"^\| `(?P<key>[a-z0-9_]+)` \| (?P<default>[^|]+) \| (?P<allowed>[^|]+) \|", re.MULTILINE
)


def documented_defaults() -> dict[str, str]:
    return {match["key"]: match["default"].strip() for match in ROW.finditer(DOC.read_text())}


def rendered(value: Any) -> str:
    """How the docs write a cdk.json default (JSON's spelling for booleans)."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{json.dumps(value)}`"
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


CHOICES = {
    key: {choice.strip() for choice in found[1].split("|")}
    for key in sorted(KNOWN_KEYS)
    if (found := re.match(r"must be one of (\w+(?: \| \w+)+)", allowed(key)))
}
"""The settings whose values are a fixed list ("must be one of A | B"), with that list."""


@pytest.mark.parametrize("key", sorted(CHOICES))
def test_documented_choices_are_the_ones_the_code_accepts(key: str) -> None:
    (row,) = [match["allowed"] for match in FULL_ROW.finditer(DOC.read_text()) if match["key"] == key]
    assert set(re.findall(r"`([^`]+)`", row)) == CHOICES[key]


def test_the_regions_section_names_every_refused_region() -> None:
    text = DOC.read_text()
    section = text[text.index("## Regions") :]
    for region in (*FUNCTION_URL_UNSUPPORTED_REGIONS, *SNAPSTART_UNSUPPORTED_REGIONS):
        assert region in section


def test_snap_start_prices_are_the_cost_models() -> None:
    # Given the us-east-1 SnapStart prices the cost model uses
    prices = json.loads((PROJECT_DIR / "benchmarks" / "prices.json").read_text())
    snapstart = prices["lambda"]["snapstart"]["regions"]["us-east-1"]
    text = DOC.read_text()
    # Then the docs quote the same two prices
    assert f"${snapstart['cache_gb_second']}" in text
    assert f"${snapstart['restore_gb']}" in text
