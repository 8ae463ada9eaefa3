"""What the offline Step Functions interpreter lacks, done here in Python, and tested on its own.

moto 5.2.5 runs state machines (its interpreter is a port of LocalStack's),
Distributed Map included, but not everything the bulk embedding definition
uses (/work/shared/FACTS.md): ``ItemBatcher`` does not parse, ``InputType:
JSONL`` is unknown, an integer ``ToleratedFailurePercentage`` is refused. So
the real definition, taken from the synthesized template, runs through a small
translation before moto executes it:

- ``resolve``: the template's intrinsics (Ref, Fn::GetAtt, Fn::Join) become
  the names of the stand-in resources;
- ``for_moto``: each Distributed Map reads a staged JSON array of batches
  instead of the JSON Lines or CSV object, its ``ItemBatcher`` becomes an
  ``ItemSelector`` that hands each staged batch over with the same
  ``BatchInput`` (evaluated against the same Map state input), an integer
  tolerated percentage becomes a float, and the ``ResultWriter`` is left out
  (moto evaluates its ``Parameters`` against the Map's results instead of its
  input, and would write only an empty manifest anyway). Everything else (the
  Choice, the Map's concurrency and label, the Task, its retriers and output
  path) is the deployed definition, untouched;
- ``stage``: what ``ItemReader``, ``ItemSelector`` and ``ItemBatcher`` would
  do, done in Python: read the object (JSON Lines: one JSON value per
  non-blank line, bytes that are not UTF-8 kept as surrogate escapes; CSV:
  header in the first row), wrap each record with ``$$.Map.Item.Index`` and
  ``$$.Map.Item.Value``, and group records in order until the next one would
  pass ``MaxItemsPerBatch`` or ``MaxInputBytesPerBatch`` (counted as the
  ASCII-escaped JSON of the batch with its ``BatchInput``).

Where Step Functions may differ from ``stage`` (not provable offline): how it
counts a batch's bytes exactly, how it treats undecodable bytes and blank
lines in a JSON Lines object; and what the ResultWriter writes. docs/batch.md
says so too.
"""

from __future__ import annotations

import copy
import csv
import io
import itertools
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

PSEUDO = {"AWS::Partition": "aws", "AWS::Region": "us-east-1", "AWS::AccountId": "123456789012"}

# ------------------------------------------------------------------ intrinsics


def resolve(value: Any, names: Mapping[str, str]) -> Any:
    """``value`` with Ref / Fn::GetAtt / Fn::Join replaced; ``names`` maps ``Id`` and ``Id.Attr``."""
    if isinstance(value, list):
        return [resolve(item, names) for item in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"Ref"}:
        key = value["Ref"]
        if key in PSEUDO:
            return PSEUDO[key]
        return _named(names, key)
    if set(value) == {"Fn::GetAtt"}:
        resource, attribute = value["Fn::GetAtt"]
        return _named(names, f"{resource}.{attribute}")
    if set(value) == {"Fn::Join"}:
        separator, parts = value["Fn::Join"]
        return separator.join(str(resolve(part, names)) for part in parts)
    if any(key.startswith("Fn::") for key in value):
        raise ValueError(f"unsupported intrinsic {sorted(value)}")
    return {key: resolve(item, names) for key, item in value.items()}


def _named(names: Mapping[str, str], key: str) -> str:
    if key not in names:
        raise KeyError(f"no stand-in named for {key}")
    return names[key]


def state_machine_definition(template: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    (machine,) = [
        r for r in template["Resources"].values() if r["Type"] == "AWS::StepFunctions::StateMachine"
    ]
    definition: dict[str, Any] = json.loads(resolve(machine["Properties"]["DefinitionString"], names))
    return definition


# ------------------------------------------------------------------ a tiny JSONPath


_PATH = re.compile(r"^\$(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def path_value(document: Any, path: str) -> Any:
    """``$`` or ``$.a.b`` (what the bulk embedding definition uses); anything else is refused."""
    if not _PATH.match(path):
        raise ValueError(f"unsupported JSONPath {path!r}")
    value = document
    for part in path.split(".")[1:]:
        value = value[part]
    return value


def render(template: Any, document: Any, context: Mapping[str, Any] | None = None) -> Any:
    """A payload template (``"key.$": path``) evaluated against ``document`` (``$$.`` paths: ``context``)."""
    if isinstance(template, list):
        return [render(item, document, context) for item in template]
    if not isinstance(template, dict):
        return template
    out = {}
    for key, value in template.items():
        if key.endswith(".$"):
            if value.startswith("$$."):
                if context is None or value not in context:
                    raise ValueError(f"unsupported context path {value!r}")
                out[key[:-2]] = context[value]
            else:
                out[key[:-2]] = path_value(document, value)
        else:
            out[key] = render(value, document, context)
    return out


# ------------------------------------------------------------------ ItemReader, ItemSelector, ItemBatcher


def read_jsonl(data: bytes) -> list[Any]:
    return [
        json.loads(line)
        for line in data.decode("utf-8", errors="surrogateescape").splitlines()
        if line.strip()
    ]


def read_csv(data: bytes, delimiter: str = ",") -> list[dict[str, str]]:
    text = data.decode("utf-8", errors="surrogateescape")
    return [dict(row) for row in csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)]


READERS: dict[str, Callable[[bytes], list[Any]]] = {
    "JSONL": read_jsonl,
    "CSV": read_csv,
    "JSON": lambda data: list(json.loads(data)),
}


def select(items: Sequence[Any], selector: Mapping[str, Any] | None, state_input: Any) -> list[Any]:
    if selector is None:
        return list(items)
    return [
        render(selector, state_input, {"$$.Map.Item.Index": index, "$$.Map.Item.Value": item})
        for index, item in enumerate(items)
    ]


def _size(document: Any) -> int:
    return len(json.dumps(document, separators=(",", ":"), ensure_ascii=True))


def batch(
    items: Sequence[Any], *, max_items: int | None, max_bytes: int | None, batch_input: Any = None
) -> list[list[Any]]:
    """Items in order, a new batch whenever the next item would pass either limit."""
    batches: list[list[Any]] = []
    current: list[Any] = []
    for item in items:
        candidate = [*current, item]
        too_many = max_items is not None and len(candidate) > max_items
        too_big = max_bytes is not None and _size({"BatchInput": batch_input, "Items": candidate}) > max_bytes
        if current and (too_many or too_big):
            batches.append(current)
            current = [item]
        else:
            if not current and too_big:
                raise ValueError(f"one item alone is over {max_bytes} bytes")
            current = candidate
    if current:
        batches.append(current)
    return batches


# ------------------------------------------------------------------ the translation


@dataclass(frozen=True)
class StagedMap:
    """One Distributed Map of the original definition: what ``stage`` must do in its place."""

    state: str
    reader: dict[str, Any]
    selector: dict[str, Any] | None
    batcher: dict[str, Any] | None
    result_writer: dict[str, Any] | None

    @property
    def staged_field(self) -> str:
        return f"staged_{self.state}"


def for_moto(definition: Mapping[str, Any]) -> tuple[dict[str, Any], list[StagedMap]]:
    translated = copy.deepcopy(dict(definition))
    plans = []
    for name, state in translated["States"].items():
        processor = state.get("ItemProcessor", {}).get("ProcessorConfig", {})
        if state["Type"] != "Map" or processor.get("Mode") != "DISTRIBUTED":
            continue
        reader = state["ItemReader"]
        plan = StagedMap(
            name,
            copy.deepcopy(reader),
            state.pop("ItemSelector", None),
            state.pop("ItemBatcher", None),
            state.pop("ResultWriter", None),
        )
        plans.append(plan)
        bucket = {k: v for k, v in reader["Parameters"].items() if k in ("Bucket", "Bucket.$")}
        state["ItemReader"] = {
            "Resource": reader["Resource"],
            "ReaderConfig": {"InputType": "JSON"},
            "Parameters": {**bucket, "Key.$": f"$.{plan.staged_field}"},
        }
        if plan.batcher is not None:
            state["ItemSelector"] = {
                "BatchInput": plan.batcher.get("BatchInput", {}),
                "Items.$": "$$.Map.Item.Value",
            }
        elif plan.selector is not None:
            raise ValueError("a Map with an ItemSelector and no ItemBatcher needs no staging of batches")
        if isinstance(state.get("ToleratedFailurePercentage"), int):
            state["ToleratedFailurePercentage"] = float(state["ToleratedFailurePercentage"])
    return translated, plans


def stage(s3: Any, plan: StagedMap, execution_input: Mapping[str, Any], *, key: str) -> list[list[Any]]:
    """Read, select and batch as the Map would, and write the batches where the translated Map reads."""
    parameters = plan.reader["Parameters"]
    bucket = parameters.get("Bucket") or path_value(execution_input, parameters["Bucket.$"])
    source = parameters.get("Key") or path_value(execution_input, parameters["Key.$"])
    config = plan.reader["ReaderConfig"]
    if config.get("InputType") == "CSV" and config.get("CSVHeaderLocation") != "FIRST_ROW":
        raise ValueError("only CSV with the header in the first row is staged")
    data = s3.get_object(Bucket=bucket, Key=source)["Body"].read()
    items = select(READERS[config["InputType"]](data), plan.selector, execution_input)
    batcher = plan.batcher or {}
    batch_input = render(batcher.get("BatchInput"), execution_input) if batcher.get("BatchInput") else None
    batches = batch(
        items,
        max_items=batcher.get("MaxItemsPerBatch"),
        max_bytes=batcher.get("MaxInputBytesPerBatch"),
        batch_input=batch_input,
    )
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(batches).encode())
    return batches


# ================================================================== tests of the translation itself


def test_resolve_replaces_refs_attributes_and_joins() -> None:
    value = {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":x:", {"Fn::GetAtt": ["Fn1", "Arn"]}]]}
    assert resolve(value, {"Fn1.Arn": "F"}) == "arn:aws:x:F"
    assert resolve({"a": [{"Ref": "B1"}]}, {"B1": "bucket"}) == {"a": ["bucket"]}
    with pytest.raises(KeyError, match="Missing"):
        resolve({"Ref": "Missing"}, {})
    with pytest.raises(ValueError, match="unsupported intrinsic"):
        resolve({"Fn::Sub": "x"}, {})


def test_render_evaluates_paths_and_the_map_item_context() -> None:
    template = {
        "index.$": "$$.Map.Item.Index",
        "value.$": "$$.Map.Item.Value",
        "run": {"p.$": "$.output.prefix"},
    }
    rendered = render(
        template, {"output": {"prefix": "output/r/"}}, {"$$.Map.Item.Index": 3, "$$.Map.Item.Value": {"a": 1}}
    )
    assert rendered == {"index": 3, "value": {"a": 1}, "run": {"p": "output/r/"}}
    with pytest.raises(ValueError, match="unsupported JSONPath"):
        path_value({}, "$.items[0]")
    with pytest.raises(ValueError, match="unsupported context path"):
        render({"x.$": "$$.Execution.Id"}, {}, {})


def test_jsonl_reader_keeps_undecodable_bytes_as_surrogates_and_skips_blank_lines() -> None:
    data = b'{"id": 1, "text": "ok"}\n\n{"id": 2, "text": "bad \xff byte"}\n  \n[1, 2]\n'
    assert read_jsonl(data) == [{"id": 1, "text": "ok"}, {"id": 2, "text": "bad \udcff byte"}, [1, 2]]


def test_csv_reader_takes_the_header_from_the_first_row() -> None:
    data = b'id,text\n1,"hello, world"\n2,"two\nlines"\n'
    assert read_csv(data) == [{"id": "1", "text": "hello, world"}, {"id": "2", "text": "two\nlines"}]


def test_batches_close_at_the_item_limit_and_at_the_byte_limit() -> None:
    items = [{"n": i, "t": "x" * 10} for i in range(10)]
    assert [len(b) for b in batch(items, max_items=4, max_bytes=None)] == [4, 4, 2]
    limit = _size({"BatchInput": {"k": 1}, "Items": items[:3]})
    by_bytes = batch(items, max_items=None, max_bytes=limit, batch_input={"k": 1})
    # Every batch fits, and each one but the last is full: its next item would not have fitted
    assert all(_size({"BatchInput": {"k": 1}, "Items": b}) <= limit for b in by_bytes)
    for group, following in itertools.pairwise(by_bytes):
        assert _size({"BatchInput": {"k": 1}, "Items": [*group, following[0]]}) > limit
    assert [item for group in by_bytes for item in group] == items  # order kept, nothing lost
    assert [len(b) for b in by_bytes] == [3, 3, 3, 1]
    with pytest.raises(ValueError, match="one item alone"):
        batch(items, max_items=None, max_bytes=5)


DISTRIBUTED: dict[str, Any] = {
    "StartAt": "M",
    "States": {
        "M": {
            "Type": "Map",
            "End": True,
            "ItemReader": {
                "Resource": "arn:aws:states:::s3:getObject",
                "ReaderConfig": {"InputType": "JSONL"},
                "Parameters": {"Bucket": "b", "Key.$": "$.input.key"},
            },
            "ItemSelector": {"index.$": "$$.Map.Item.Index", "value.$": "$$.Map.Item.Value"},
            "ItemBatcher": {"MaxItemsPerBatch": 2, "BatchInput": {"p.$": "$.output.prefix"}},
            "ToleratedFailurePercentage": 5,
            "MaxConcurrency": 3,
            "ResultWriter": {"Resource": "arn:aws:states:::s3:putObject", "Parameters": {"Bucket": "b"}},
            "ItemProcessor": {
                "ProcessorConfig": {"Mode": "DISTRIBUTED"},
                "StartAt": "T",
                "States": {"T": {}},
            },
        }
    },
}


def test_for_moto_changes_only_what_moto_lacks() -> None:
    translated, (plan,) = for_moto(DISTRIBUTED)
    state = translated["States"]["M"]
    original = DISTRIBUTED["States"]["M"]
    assert state["ItemReader"] == {
        "Resource": "arn:aws:states:::s3:getObject",
        "ReaderConfig": {"InputType": "JSON"},
        "Parameters": {"Bucket": "b", "Key.$": "$.staged_M"},
    }
    assert "ItemBatcher" not in state
    assert state["ItemSelector"] == {"BatchInput": {"p.$": "$.output.prefix"}, "Items.$": "$$.Map.Item.Value"}
    assert state["ToleratedFailurePercentage"] == 5.0
    assert "ResultWriter" not in state
    assert plan.result_writer == original["ResultWriter"]  # type: ignore[index]
    untouched = {"Type", "End", "MaxConcurrency", "ItemProcessor"}
    assert {key: state[key] for key in untouched} == {key: original[key] for key in untouched}  # type: ignore[index]
    assert plan.selector == original["ItemSelector"]  # type: ignore[index]
    assert DISTRIBUTED["States"]["M"]["ItemReader"]["ReaderConfig"] == {"InputType": "JSONL"}  # type: ignore[index]


def test_stage_reads_selects_and_batches_like_the_map() -> None:
    class FakeS3:
        """Holds objects in a dict (stands in for S3 itself)."""

        def __init__(self) -> None:
            self.objects = {("b", "input/x.jsonl"): b'{"id":"a"}\n{"id":"b"}\n{"id":"c"}\n'}

        def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:
            return {"Body": io.BytesIO(self.objects[(Bucket, Key)])}

        def put_object(self, Bucket: str, Key: str, Body: bytes) -> None:
            self.objects[(Bucket, Key)] = Body

    s3 = FakeS3()
    _, (plan,) = for_moto(DISTRIBUTED)
    batches = stage(
        s3, plan, {"input": {"key": "input/x.jsonl"}, "output": {"prefix": "o/"}}, key="staged.json"
    )
    assert batches == [
        [{"index": 0, "value": {"id": "a"}}, {"index": 1, "value": {"id": "b"}}],
        [{"index": 2, "value": {"id": "c"}}],
    ]
    assert json.loads(s3.objects[("b", "staged.json")]) == batches
