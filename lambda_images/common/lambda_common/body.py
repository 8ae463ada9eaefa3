"""Request bodies: decoded once, bounded, and validated into pydantic models.

``decode_json`` turns the raw body into JSON values or raises a domain error
that names the problem: empty, over the size limit, not UTF-8 JSON, nested
deeper than anyone's request needs, a number Python cannot or should not hold
(an integer of more than ``MAX_NUMBER_CHARS`` characters, NaN, infinity).
``parse_model`` validates the values into a request model and reports the
first bad field by its JSON path.

Strings are bounded by the models themselves: every ``str`` field of a request
model has a ``max_length`` (which also makes pydantic refuse lone UTF-16
surrogates, text no JSON encoder can write back).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from lambda_common.errors import InvalidBody, InvalidRequest, TooLarge

ModelT = TypeVar("ModelT", bound=BaseModel)

MAX_DEPTH = 64
"""Deepest nesting of arrays and objects accepted (a JSON schema in a request is rarely past 20)."""
MAX_NUMBER_CHARS = 64
"""Longest number literal accepted; Python refuses integers of more than 4,300 digits on its own."""


def _number(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise _BadNumber(f"a number of {len(text)} characters; numbers may have at most {MAX_NUMBER_CHARS}")
    return int(text)


def _float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise _BadNumber(f"a number of {len(text)} characters; numbers may have at most {MAX_NUMBER_CHARS}")
    value = float(text)
    if not math.isfinite(value):
        raise _BadNumber(f"the number {text} is out of range")
    return value


def _constant(name: str) -> Any:
    raise _BadNumber(f"{name} is not JSON")


class _BadNumber(ValueError):
    pass


def _deeper_than(value: Any, limit: int) -> bool:
    """True when arrays and objects nest more than ``limit`` levels (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > limit:
            return True
        for child in children:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


def decode_json(raw: str | bytes | None, *, max_bytes: int, what: str = "request body") -> Any:
    """JSON values of a body, or InvalidBody / TooLarge naming what is wrong with it."""
    if raw is None or len(raw) == 0:
        raise InvalidBody(f"the {what} is empty; send a JSON object")
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if len(data) > max_bytes:
        raise TooLarge(f"the {what} is {len(data):,} bytes; the limit is {max_bytes:,} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidBody(
            f"the {what} is not UTF-8 text (byte {exc.start}: {exc.reason}); send JSON encoded as UTF-8"
        ) from None
    try:
        value = json.loads(text, parse_int=_number, parse_float=_float, parse_constant=_constant)
    except _BadNumber as exc:
        raise InvalidBody(f"the {what} holds {exc}") from None
    except RecursionError:
        raise InvalidBody(f"the {what} nests arrays or objects deeper than {MAX_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise InvalidBody(f"the {what} is not valid JSON: {exc}", code="invalid_json") from None
    if isinstance(value, dict | list) and _deeper_than(value, MAX_DEPTH):
        raise InvalidBody(f"the {what} nests arrays or objects deeper than {MAX_DEPTH} levels")
    return value


_UNION_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none", "constrained-str"})


def _is_union_tag(item: str) -> bool:
    """Pydantic names the member of a union it tried in the location (``list[TextPart]``): not a field."""
    return item in _UNION_TAGS or "[" in item or item.startswith("function-")


def _location(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, str) and _is_union_tag(item):
            continue
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(f".{item}" if parts else str(item))
    return "".join(parts)


_MESSAGES = {
    "extra_forbidden": "unknown field",
    "string_unicode": "holds a lone UTF-16 surrogate (\\ud800-\\udfff); send valid Unicode text",
}


def validation_error(exc: ValidationError) -> InvalidRequest:
    """Pydantic's report as one InvalidRequest naming the first bad field by its JSON path."""
    errors = exc.errors(include_url=False, include_input=False)
    if not errors:  # pragma: no cover - pydantic always reports at least one
        return InvalidRequest("invalid request body")
    first = errors[0]
    where = _location(tuple(first.get("loc", ())))
    kind = str(first.get("type", ""))
    message = str(first.get("msg", "invalid value"))
    if kind in _MESSAGES and not (kind == "string_unicode" and "surrogate" in message):
        message = _MESSAGES[kind]
    text = f"{where}: {message}" if where else message
    if len(errors) > 1:
        text += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return InvalidRequest(text, param=where or None, code="invalid_value")


def parse_model(model: type[ModelT], payload: Any, *, what: str = "request body") -> ModelT:
    """Validate decoded JSON into ``model``, or raise InvalidRequest naming the first bad field."""
    if not isinstance(payload, Mapping):
        kind = "array" if isinstance(payload, list) else type(payload).__name__
        raise InvalidBody(f"the {what} must be a JSON object, got {kind}")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise validation_error(exc) from None
