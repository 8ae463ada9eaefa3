"""The README tells the truth: its configuration table, commands and links match the project."""

from __future__ import annotations

import re

from app import PROJECT_DIR, cdk_json_context
from stacks.config import KNOWN_KEYS
from tests.test_config_docs import ROW, rendered

README = PROJECT_DIR / "README.md"


def readme() -> str:
    return README.read_text()


def test_configuration_table_lists_every_key_with_its_cdk_json_default() -> None:
    # Given the README's configuration table
    rows = {match["key"]: match["default"].strip() for match in ROW.finditer(readme())}
    # Then it has every key the app knows, each with the default cdk.json holds
    assert sorted(rows) == sorted(KNOWN_KEYS)
    context = cdk_json_context()
    assert {k: v for k, v in rows.items() if v != rendered(context.get(k))} == {}


def test_every_make_target_the_readme_names_exists() -> None:
    makefile = (PROJECT_DIR / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.MULTILINE))
    named = set(re.findall(r"`make ([a-z][a-z-]*)", readme()))
    named |= set(re.findall(r"^make ([a-z][a-z-]*)", readme(), re.MULTILINE))
    assert {"local", "test", "deploy", "synth", "bench", "cost"} <= named
    assert named - targets == set()


def test_the_two_setup_commands_are_the_ones_ci_runs() -> None:
    ci = (PROJECT_DIR / ".ci" / "run").read_text()
    assert "make test" in ci
    assert "make local   #" in readme()
    assert "make test    #" in readme()


def test_relative_links_point_at_files_that_exist() -> None:
    links = re.findall(r"\]\(((?!https?://|#)[^)#]+)", readme())
    assert links, "the README links its docs"
    missing = [link for link in links if not (PROJECT_DIR / link).exists()]
    assert missing == []


def test_performance_section_is_generated_not_typed() -> None:
    text = readme()
    end_marker = "<!-- bench:end -->"
    start, end = text.index("<!-- bench:start -->"), text.index(end_marker)
    assert start < end
    block = text[start : end + len(end_marker)]
    results = PROJECT_DIR / "benchmarks" / "results.json"
    # The published results exist, and the block is exactly what they render to.
    assert results.is_file()
    from benchmarks.report import load, render_readme_block

    assert render_readme_block(load(results)).strip() == block
    assert "projection" in block.lower()
    # And the charts it shows and the documents it links are published with it
    for target in re.findall(r"\]\(([^)#]+)\)", block):
        assert (PROJECT_DIR / target).is_file(), target
