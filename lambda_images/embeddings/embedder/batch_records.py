"""The records of one batch: which ones can be embedded, and why the others cannot.

A record is one item of the Map run: a JSON object from a JSON Lines line, or
a CSV row as Step Functions reads it (every value a string, keyed by the
header). Each record needs an id and a text, in the fields the run names.
A bad record is reported with its reason and never stops the batch:

- not an object (a JSON Lines line holding a list or a number);
- the id field missing, null, empty, or not a string or an integer;
- the text field missing, or not a string;
- an empty text (nothing but white space);
- a text or id that is not valid UTF-8: JSON can carry lone surrogates
  (``"\\ud800"``), which no UTF-8 writer accepts, and a reader that keeps
  undecodable bytes as surrogate escapes hands them over the same way;
- a text longer than the characters the service takes per input;
- (checked by the batch job, with the tokenizer) a text over the model's token
  limit when the run does not truncate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Record:
    """A record that can be embedded: its position in the batch, its id and its text."""

    index: int
    id: str
    text: str


@dataclass(frozen=True)
class BadRecord:
    """A record that cannot be embedded, and why (the id when one could be read)."""

    index: int
    id: str | None
    reason: str

    def as_json(self) -> dict[str, Any]:
        return {"index": self.index, "id": self.id, "reason": self.reason}


def _invalid_utf8(value: str) -> int | None:
    """The position of the first character UTF-8 cannot encode (a lone surrogate), or None."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def _read_id(record: dict[str, Any], field: str) -> tuple[str | None, str | None]:
    """(id, None) or (None, reason)."""
    if field not in record or record[field] is None:
        return None, f"missing id field {field!r}"
    value = record[field]
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None, f"id field {field!r} must be a string or an integer, got {type(value).__name__}"
    text = str(value)
    if not text.strip():
        return None, f"id field {field!r} is empty"
    position = _invalid_utf8(text)
    if position is not None:
        return None, f"id field {field!r} is not valid UTF-8 (a lone surrogate at character {position})"
    return text, None


def classify(
    items: Sequence[Any], *, id_field: str, text_field: str, max_chars: int
) -> tuple[list[Record], list[BadRecord]]:
    """Split the batch's items into records to embed and bad records, keeping each item's index."""
    good: list[Record] = []
    bad: list[BadRecord] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            bad.append(BadRecord(index, None, f"the record is a JSON {_json_kind(item)}, not an object"))
            continue
        record_id, problem = _read_id(item, id_field)
        if record_id is None:
            bad.append(BadRecord(index, None, problem or f"missing id field {id_field!r}"))
            continue
        reason = _text_problem(item, text_field, max_chars)
        if reason is not None:
            bad.append(BadRecord(index, record_id, reason))
            continue
        good.append(Record(index, record_id, item[text_field]))
    return good, bad


def _text_problem(record: dict[str, Any], field: str, max_chars: int) -> str | None:
    if field not in record or record[field] is None:
        return f"missing text field {field!r}"
    text = record[field]
    if not isinstance(text, str):
        return f"text field {field!r} must be a string, got {type(text).__name__}"
    if not text.strip():
        return "empty text"
    position = _invalid_utf8(text)
    if position is not None:
        return f"text is not valid UTF-8 (a lone surrogate at character {position})"
    if len(text) > max_chars:
        return f"text has {len(text)} characters; the limit is {max_chars} per input"
    return None


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "null" if value is None else type(value).__name__
