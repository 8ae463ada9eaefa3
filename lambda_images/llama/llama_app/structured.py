"""Structured outputs: JSON schemas and GBNF grammars turned into llama.cpp grammar-constrained sampling.

A JSON schema becomes a GBNF grammar that only admits JSON documents valid
against it; llama.cpp then samples only tokens the grammar allows, so the
answer always parses and validates (unless the token budget cuts it short:
``finish_reason`` says ``length`` then).

The conversion is llama-cpp-python's ``SchemaConverter`` (a port of
llama.cpp's ``json_schema_to_grammar.py``), kept for what it does right (object
rules with optional properties, rule naming, the grammar's text) and corrected
where it would let an invalid answer through. Read against JSON Schema, the
converter of llama-cpp-python 0.3.36:

- ignores ``minimum``, ``maximum``, ``exclusiveMinimum``, ``exclusiveMaximum``,
  ``multipleOf``, ``uniqueItems``, ``contains``, ``minProperties``,
  ``maxProperties``, ``patternProperties``, ``propertyNames``, ``not``,
  ``if``/``then``/``else``, ``dependentRequired``, ``dependentSchemas`` and
  every unknown keyword: the grammar admits values the schema refuses;
- treats ``oneOf`` as ``anyOf`` (a value matching two branches is admitted);
- keeps only the ``properties`` of ``allOf`` members, and ignores everything
  beside ``anyOf``, ``$ref`` or a ``type`` list (``{"type": ["object",
  "null"], "properties": ...}`` loses its properties);
- ignores ``minLength``/``maxLength`` beside ``pattern`` or ``format`` and
  ``prefixItems`` beside ``items``; drops ``required`` names that are not in
  ``properties`` (the answer then lacks them); ignores unknown ``format`` values;
- lets strings hold raw control characters (``"a<newline>b"`` is not JSON) and
  does not escape a backslash inside a literal (an ``enum`` value or a property
  name with a backslash yields broken JSON or a grammar that does not compile);
- writes regular expressions into the grammar nearly as they are: ``.`` and
  ``[^x]`` admit ``"`` and ``\\`` (breaking the JSON string), ``\\d`` and ``\\.``
  do not compile, an unanchored pattern fails an assertion;
- names the rule of a ``$ref`` after its last path segment, which can collide
  with a property's rule; expands ``{m,n}`` repetitions by hand (a
  ``maxLength`` of thousands makes a grammar nested thousands deep);
- admits impossible calendar dates (``2024-02-31``) and any UUID version for
  ``uuid4``.

So a schema is first checked (``check``): every keyword this module cannot
enforce is refused with a 400 that names it and where it is; then it is
converted by ``JsonSchemaGrammar``, which overrides the parts above (strings,
numbers and integers with bounds, arrays, patterns through a small regex
compiler of its own, formats, references, literals) and uses GBNF's own
``{m,n}`` repetitions.

Limits: a schema is at most ``MAX_SCHEMA_BYTES`` of JSON and nests at most
``MAX_SCHEMA_DEPTH`` levels; repetition bounds (lengths, item counts) at most
``MAX_REPEAT``; a grammar, sent or generated, at most ``MAX_GRAMMAR_CHARS``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llama_cpp.llama_grammar import PRIMITIVE_RULES, BuiltinRule, SchemaConverter

from lambda_common.errors import InvalidRequest

MAX_SCHEMA_BYTES = 65_536
"""Largest JSON schema (as compact JSON) in a request."""
MAX_SCHEMA_DEPTH = 24
"""Deepest nesting of subschemas (OpenAI's strict mode allows 10)."""
MAX_REPEAT = 1_000
"""Largest minLength/maxLength/minItems/maxItems a schema may ask for."""
MAX_ENUM = 1_000
"""Most values of one enum."""
MAX_PATTERN_CHARS = 1_000
"""Longest regular expression in a schema's pattern."""
MAX_GRAMMAR_CHARS = 1_048_576
"""Largest GBNF grammar, sent in a request or generated from a schema."""
MAX_INT_DIGITS = 15
"""Integers and bounds are kept within 15 digits (JavaScript clients lose precision beyond)."""

ANY = object()

_ANNOTATIONS = frozenset(
    {
        "title",
        "description",
        "default",
        "examples",
        "$comment",
        "deprecated",
        "readOnly",
        "writeOnly",
        "$schema",
        "contentEncoding",
        "contentMediaType",
    }
)
_CONTAINERS = frozenset({"$defs", "definitions"})
_TYPE_KEYWORDS: Mapping[str, frozenset[str]] = {
    "object": frozenset({"properties", "required", "additionalProperties"}),
    "array": frozenset({"items", "prefixItems", "minItems", "maxItems", "uniqueItems"}),
    "string": frozenset({"minLength", "maxLength", "pattern", "format"}),
    "integer": frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}),
    "number": frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}),
    "boolean": frozenset(),
    "null": frozenset(),
}
_TYPES = tuple(_TYPE_KEYWORDS)
_ALL_TYPE_KEYWORDS = frozenset().union(*_TYPE_KEYWORDS.values())
_GENERAL = frozenset({"type", "enum", "const", "anyOf", "allOf", "$ref"})
_REFUSED: Mapping[str, str] = {
    "oneOf": "use anyOf (a grammar cannot make the branches exclusive)",
    "not": "a grammar cannot express negation",
    "if": "conditional schemas cannot be enforced",
    "then": "conditional schemas cannot be enforced",
    "else": "conditional schemas cannot be enforced",
    "dependentRequired": "it cannot be enforced",
    "dependentSchemas": "it cannot be enforced",
    "dependencies": "it cannot be enforced",
    "patternProperties": "list the properties instead",
    "propertyNames": "list the properties instead",
    "minProperties": "mark properties as required instead",
    "maxProperties": "it cannot be enforced",
    "unevaluatedProperties": "use additionalProperties",
    "unevaluatedItems": "it cannot be enforced",
    "additionalItems": "use prefixItems and items",
    "contains": "it cannot be enforced",
    "minContains": "it cannot be enforced",
    "maxContains": "it cannot be enforced",
    "multipleOf": "it cannot be enforced",
    "$dynamicRef": "only local $ref is supported",
    "$dynamicAnchor": "only local $ref is supported",
    "$recursiveRef": "only local $ref is supported",
    "$recursiveAnchor": "only local $ref is supported",
    "$anchor": "refer to subschemas with $ref to #/$defs/... instead",
    "$id": "only the root schema may have $id",
}
_FORMATS = frozenset({"date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5"})

# Rules the converter's primitives are replaced with: strings without raw control characters or lone
# surrogate escapes, numbers of bounded size, real calendar dates, UUIDs of the asked version.
_HEX = "[0-9a-fA-F]"
_RULES: dict[str, BuiltinRule] = {
    **PRIMITIVE_RULES,
    "char": BuiltinRule(
        r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" ([0-9a-cA-Ce-fE-F] '
        + _HEX
        + "{3} | [dD] [0-7] "
        + _HEX
        + "{2}))",
        [],
    ),
    "integral-part": BuiltinRule("[0-9] | [1-9] [0-9]{0,14}", []),
    "decimal-part": BuiltinRule("[0-9]{1,15}", []),
    "number": BuiltinRule(
        '("-"? integral-part) ("." decimal-part)? ([eE] [-+]? [0-9]{1,2})? space',
        ["integral-part", "decimal-part"],
    ),
    "date": BuiltinRule(
        '[0-9]{4} "-" ( ("0" [13578] | "1" [02]) "-" ("0" [1-9] | [12] [0-9] | "3" [01])'
        ' | ("0" [469] | "11") "-" ("0" [1-9] | [12] [0-9] | "30")'
        ' | "02-" ("0" [1-9] | "1" [0-9] | "2" [0-8]) )',
        [],
    ),
    "time": BuiltinRule(
        '([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9] ":" [0-5] [0-9] ("." [0-9]{3})?'
        ' ("Z" | [+-] ([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9])',
        [],
    ),
    "date-time": BuiltinRule('date "T" time', ["date", "time"]),
}


_RESERVED = frozenset({"root", "dot", "space", *_RULES})
"""Rule names the primitives use: a property of the same name gets a suffix."""


def _uuid_rule(version: str) -> str:
    version_digit = f'"{version}"' if version else _HEX
    variant = "[89abAB]" if version else _HEX
    return (
        f'"\\"" {_HEX}{{8}} "-" {_HEX}{{4}} "-" {version_digit} {_HEX}{{3}} "-" {variant} {_HEX}{{3}} '
        f'"-" {_HEX}{{12}} "\\"" space'
    )


def refuse(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="unsupported_schema")


def gbnf_literal(text: str) -> str:
    """``text`` as a GBNF string literal (quotes, backslashes and control characters escaped)."""
    out = ['"']
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif char == "\t":
            out.append("\\t")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02X}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


# ---------------------------------------------------------------------------- checking


@dataclass
class _Doc:
    root: Any
    param: str


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _json_type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _conforms(value: Any, types: Sequence[str]) -> bool:
    kind = _json_type_of(value)
    return kind in types or (kind == "integer" and "number" in types)


def _types_of(schema: Mapping[str, Any]) -> list[str] | None:
    kind = schema.get("type")
    if kind is None:
        return None
    return [kind] if isinstance(kind, str) else list(kind)


def resolve_ref(root: Any, ref: Any, where: str) -> Any:
    """The subschema a local ``$ref`` (``#/...``, JSON pointer) names in ``root``, or a 400."""
    if not isinstance(ref, str) or not (ref == "#" or ref.startswith("#/")):
        raise refuse(f"{where}.$ref: only local references (#/...) are supported, got {ref!r}", where)
    node = root
    for raw in ref[2:].split("/") if ref != "#" else []:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise refuse(f"{where}.$ref: {ref} does not name a part of the schema", where)
    if not isinstance(node, Mapping | bool):
        raise refuse(f"{where}.$ref: {ref} does not name a schema", where)
    return node


class _Checker:
    """Walks a schema and refuses, naming the keyword and its place, what cannot be enforced."""

    def __init__(self, doc: _Doc) -> None:
        self.doc = doc
        self.seen_refs: set[str] = set()

    def check(self, schema: Any, where: str, depth: int) -> None:
        if depth > MAX_SCHEMA_DEPTH:
            raise refuse(f"{where}: the schema nests more than {MAX_SCHEMA_DEPTH} levels", self.doc.param)
        if isinstance(schema, bool):
            if not schema:
                raise refuse(f"{where}: the schema false admits no value", self.doc.param)
            return
        if not isinstance(schema, Mapping):
            raise refuse(f"{where}: a schema must be an object or a boolean", self.doc.param)
        for key in schema:
            if not isinstance(key, str):  # pragma: no cover - JSON keys are strings
                raise refuse(f"{where}: keys must be strings", self.doc.param)
            if key in _REFUSED and not (key == "$id" and depth == 0):
                raise refuse(f"{where}.{key} is not supported: {_REFUSED[key]}", self.doc.param)
            if key.startswith("x-") or key in _ANNOTATIONS or key == "$id":
                continue
            if key not in _CONTAINERS and key not in _GENERAL and key not in _ALL_TYPE_KEYWORDS:
                raise refuse(
                    f"{where}.{key} is not a JSON Schema keyword this function can enforce", self.doc.param
                )
        for container in _CONTAINERS & set(schema):
            defs = schema[container]
            if not isinstance(defs, Mapping):
                raise refuse(f"{where}.{container} must be an object of schemas", self.doc.param)
            for name, sub in defs.items():
                self.check(sub, f"{where}.{container}.{name}", depth + 1)
        constraints = {k for k in schema if k in _GENERAL or k in _ALL_TYPE_KEYWORDS}
        if "$ref" in schema:
            self._alone("$ref", constraints, where)
            target = resolve_ref(self.doc.root, schema["$ref"], f"{where}")
            ref = schema["$ref"]
            chain = [ref]
            while isinstance(target, Mapping) and "$ref" in target:
                if target["$ref"] in chain:
                    raise refuse(
                        f"{where}.$ref: {ref} refers back to itself without a schema", self.doc.param
                    )
                chain.append(target["$ref"])
                target = resolve_ref(self.doc.root, target["$ref"], where)
            target = resolve_ref(self.doc.root, ref, where)
            if ref not in self.seen_refs:
                self.seen_refs.add(ref)
                self.check(target, f"{where}.$ref({ref})", depth + 1)
            return
        if "anyOf" in schema:
            self._alone("anyOf", constraints, where)
            branches = schema["anyOf"]
            if not isinstance(branches, list) or not branches:
                raise refuse(f"{where}.anyOf must be a non-empty list of schemas", self.doc.param)
            for index, branch in enumerate(branches):
                self.check(branch, f"{where}.anyOf[{index}]", depth + 1)
            return
        if "allOf" in schema:
            self._alone("allOf", constraints, where)
            members = schema["allOf"]
            if not isinstance(members, list) or len(members) != 1:
                raise refuse(
                    f"{where}.allOf is supported with exactly one member (merge the schemas instead)",
                    self.doc.param,
                )
            self.check(members[0], f"{where}.allOf[0]", depth + 1)
            return
        types = self._check_type(schema, where)
        for key in ("enum", "const"):
            if key in schema:
                self._check_values(schema, key, types, where)
                return
        present = constraints - {"type"}
        families = [t for t in _TYPES if present & _TYPE_KEYWORDS[t]]
        if types is None:
            if len({("number" if f == "integer" else f) for f in families}) > 1:
                raise refuse(
                    f"{where}: keywords of several types ({', '.join(sorted(present))}) without a type",
                    self.doc.param,
                )
            types = families[:1] if families else None
        if types is not None:
            foreign = present - frozenset().union(*(_TYPE_KEYWORDS[t] for t in types))
            if foreign:
                raise refuse(
                    f"{where}.{sorted(foreign)[0]} does not apply to type {'/'.join(types)}", self.doc.param
                )
            for kind in types:
                getattr(self, f"_check_{kind}")(schema, where, depth)

    def _alone(self, keyword: str, constraints: set[str], where: str) -> None:
        others = sorted(constraints - {keyword})
        if others:
            raise refuse(
                f"{where}: {keyword} beside {', '.join(others)} is not supported "
                f"(move them into the {keyword} target)",
                self.doc.param,
            )

    def _check_type(self, schema: Mapping[str, Any], where: str) -> list[str] | None:
        if "type" not in schema:
            return None
        kind = schema["type"]
        kinds = [kind] if isinstance(kind, str) else kind
        if (
            not isinstance(kinds, list)
            or not kinds
            or not all(isinstance(k, str) and k in _TYPE_KEYWORDS for k in kinds)
            or len(set(kinds)) != len(kinds)
        ):
            raise refuse(
                f"{where}.type must be one of {', '.join(_TYPES)} or a list of them, got {kind!r}",
                self.doc.param,
            )
        return list(kinds)

    def _check_values(self, schema: Mapping[str, Any], key: str, types: list[str] | None, where: str) -> None:
        values = schema[key] if key == "enum" else [schema[key]]
        if key == "enum" and (not isinstance(values, list) or not values or len(values) > MAX_ENUM):
            raise refuse(f"{where}.enum must be a list of 1 to {MAX_ENUM} values", self.doc.param)
        others = sorted(
            k for k in schema if (k in _GENERAL or k in _ALL_TYPE_KEYWORDS) and k not in (key, "type")
        )
        if others:
            raise refuse(f"{where}: {key} beside {', '.join(others)} is not supported", self.doc.param)
        if types is not None:
            for value in values:
                if not _conforms(value, types):
                    raise refuse(f"{where}.{key}: {value!r} is not of type {'/'.join(types)}", self.doc.param)

    def _check_object(self, schema: Mapping[str, Any], where: str, depth: int) -> None:
        properties = schema.get("properties", {})
        if not isinstance(properties, Mapping):
            raise refuse(f"{where}.properties must be an object of schemas", self.doc.param)
        for name, sub in properties.items():
            self.check(sub, f"{where}.properties.{name}", depth + 1)
        required = schema.get("required", [])
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise refuse(f"{where}.required must be a list of property names", self.doc.param)
        missing = [r for r in required if r not in properties]
        if missing:
            raise refuse(f"{where}.required names {missing[0]!r}, which is not in properties", self.doc.param)
        extra = schema.get("additionalProperties", ANY)
        if isinstance(extra, Mapping):
            if properties:
                raise refuse(
                    f"{where}.additionalProperties as a schema beside properties is not supported",
                    self.doc.param,
                )
            self.check(extra, f"{where}.additionalProperties", depth + 1)
        elif extra is not ANY and not isinstance(extra, bool):
            raise refuse(f"{where}.additionalProperties must be a boolean or a schema", self.doc.param)

    def _check_array(self, schema: Mapping[str, Any], where: str, depth: int) -> None:
        low, high = self._bounds(schema, "minItems", "maxItems", where)
        if schema.get("uniqueItems", False) is not False:
            raise refuse(
                f"{where}.uniqueItems is not supported: a grammar cannot keep items apart", self.doc.param
            )
        items = schema.get("items", ANY)
        if isinstance(items, list):
            raise refuse(f"{where}.items as a list: use prefixItems (JSON Schema 2020-12)", self.doc.param)
        if "prefixItems" in schema:
            prefix = schema["prefixItems"]
            if not isinstance(prefix, list) or not prefix:
                raise refuse(f"{where}.prefixItems must be a non-empty list of schemas", self.doc.param)
            if items is not ANY and items is not False:
                raise refuse(f"{where}: prefixItems beside items is not supported", self.doc.param)
            if low > len(prefix) or (high is not None and high < len(prefix)):
                raise refuse(
                    f"{where}: prefixItems gives {len(prefix)} items, outside minItems/maxItems",
                    self.doc.param,
                )
            for index, sub in enumerate(prefix):
                self.check(sub, f"{where}.prefixItems[{index}]", depth + 1)
        elif items is False:
            if low > 0:
                raise refuse(f"{where}: items false with minItems admits no array", self.doc.param)
        elif items is not ANY:
            self.check(items, f"{where}.items", depth + 1)

    def _check_string(self, schema: Mapping[str, Any], where: str, depth: int) -> None:
        self._bounds(schema, "minLength", "maxLength", where)
        kinds = [k for k in ("pattern", "format") if k in schema]
        if "minLength" in schema or "maxLength" in schema:
            kinds.append("minLength/maxLength")
        if len(kinds) > 1:
            raise refuse(f"{where}: {' beside '.join(kinds)} is not supported (give one)", self.doc.param)
        fmt = schema.get("format")
        if "format" in schema and (not isinstance(fmt, str) or fmt not in _FORMATS):
            raise refuse(
                f"{where}.format {str(fmt)[:40]!r} is not supported "
                f"(supported: {', '.join(sorted(_FORMATS))})",
                self.doc.param,
            )
        if "pattern" in schema:
            pattern = schema["pattern"]
            if not isinstance(pattern, str) or len(pattern) > MAX_PATTERN_CHARS:
                raise refuse(
                    f"{where}.pattern must be a string of at most {MAX_PATTERN_CHARS} characters",
                    self.doc.param,
                )
            try:
                Regex(pattern).parse()
            except RegexError as exc:
                raise refuse(f"{where}.pattern: {exc}", self.doc.param) from None

    def _check_integer(self, schema: Mapping[str, Any], where: str, depth: int) -> None:
        integer_bounds(schema, where, self.doc.param)

    def _check_number(self, schema: Mapping[str, Any], where: str, depth: int) -> None:
        number_bounds(schema, where, self.doc.param)

    def _check_boolean(self, schema: Mapping[str, Any], where: str, depth: int) -> None:
        return

    def _check_null(self, schema: Mapping[str, Any], where: str, depth: int) -> None:
        return

    def _bounds(
        self, schema: Mapping[str, Any], low_key: str, high_key: str, where: str
    ) -> tuple[int, int | None]:
        for key in (low_key, high_key):
            if key not in schema:
                continue
            value = schema[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise refuse(f"{where}.{key} must be a non-negative integer", self.doc.param)
            if value > MAX_REPEAT:
                raise refuse(f"{where}.{key} is {value}; at most {MAX_REPEAT} is supported", self.doc.param)
        low, high = schema.get(low_key, 0), schema.get(high_key)
        if high is not None and low > high:
            raise refuse(f"{where}: {low_key} is above {high_key}", self.doc.param)
        return low, high


def _bound(schema: Mapping[str, Any], key: str, where: str, param: str) -> float | None:
    if key not in schema:
        return None
    value = schema[key]
    if not _is_number(value):
        raise refuse(f"{where}.{key} must be a number (JSON Schema 2020-12)", param)
    if not math.isfinite(value) or abs(value) >= 10**MAX_INT_DIGITS:
        raise refuse(f"{where}.{key} must be below 10^{MAX_INT_DIGITS} in magnitude", param)
    return float(value)


def integer_bounds(schema: Mapping[str, Any], where: str, param: str) -> tuple[int | None, int | None]:
    """The inclusive integer range of an integer schema (None: unbounded), or a 400."""
    low: int | None = None
    high: int | None = None
    minimum = _bound(schema, "minimum", where, param)
    if minimum is not None:
        low = math.ceil(minimum)
    exclusive = _bound(schema, "exclusiveMinimum", where, param)
    if exclusive is not None:
        candidate = math.floor(exclusive) + 1
        low = candidate if low is None else max(low, candidate)
    maximum = _bound(schema, "maximum", where, param)
    if maximum is not None:
        high = math.floor(maximum)
    exclusive = _bound(schema, "exclusiveMaximum", where, param)
    if exclusive is not None:
        candidate = math.ceil(exclusive) - 1
        high = candidate if high is None else min(high, candidate)
    if low is not None and high is not None and low > high:
        raise refuse(f"{where}: no integer lies between the minimum and the maximum", param)
    return low, high


def number_bounds(schema: Mapping[str, Any], where: str, param: str) -> tuple[int | None, int | None]:
    """The bounds of a number schema this module can enforce: integer-valued, minimum >= 0, inclusive."""
    for key in ("exclusiveMinimum", "exclusiveMaximum"):
        if key in schema:
            raise refuse(
                f"{where}.{key} on a number is not supported (use minimum/maximum, or type integer)", param
            )
    minimum = _bound(schema, "minimum", where, param)
    maximum = _bound(schema, "maximum", where, param)
    for key, value in (("minimum", minimum), ("maximum", maximum)):
        if value is not None and not value.is_integer():
            raise refuse(f"{where}.{key} on a number must be a whole number to be enforced", param)
    if minimum is not None and minimum < 0:
        raise refuse(f"{where}.minimum on a number must be 0 or more to be enforced", param)
    if maximum is not None and maximum < max(minimum or 0, 0):
        raise refuse(f"{where}.maximum on a number must be 0 or more and not below the minimum", param)
    return (
        int(minimum) if minimum is not None else None,
        int(maximum) if maximum is not None else None,
    )


# ---------------------------------------------------------------------------- regular expressions


class RegexError(ValueError):
    pass


_FORBIDDEN = [(0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C), (0x7F, 0x7F)]
"""Characters that cannot stand raw in a JSON string: control characters, the quote, the backslash."""
_SHORTHANDS: Mapping[str, list[tuple[int, int]]] = {
    "d": [(0x30, 0x39)],
    "w": [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)],
    "s": [(0x20, 0x20)],  # a space only: the other whitespace cannot stand raw in JSON
}
_ASCII_SHORTHANDS: Mapping[str, list[tuple[int, int]]] = {
    **_SHORTHANDS,
    "s": [(0x09, 0x0D), (0x20, 0x20)],
}
"""What the shorthands match within ASCII, which their negations must leave out."""
_ESCAPABLE = set(".^$|?*+()[]{}/-")


def _subtract(ranges: list[tuple[int, int]], cut: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for low, high in sorted(ranges):
        pieces = [(low, high)]
        for c_low, c_high in cut:
            next_pieces = []
            for p_low, p_high in pieces:
                if c_high < p_low or c_low > p_high:
                    next_pieces.append((p_low, p_high))
                    continue
                if p_low < c_low:
                    next_pieces.append((p_low, c_low - 1))
                if p_high > c_high:
                    next_pieces.append((c_high + 1, p_high))
            pieces = next_pieces
        out.extend(pieces)
    return out


_PRINTABLE = [(0x20, 0x7E)]


def _complement(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """What a negated class may generate: printable ASCII outside ``ranges``.

    Within ASCII, Python's ``\\d``, ``\\w`` and ``\\s`` are exactly the ASCII sets used here, so
    every character generated also matches the negation as Python's ``re`` reads it.
    """
    return _subtract(_PRINTABLE, ranges)


def _class_char(code: int) -> str:
    char = chr(code)
    if code > 0xFFFF:
        return f"\\U{code:08X}"
    if char in "\\]-^[" or code < 0x20 or code == 0x7F:
        return f"\\x{code:02X}" if code < 0x100 else f"\\u{code:04X}"
    return char


def gbnf_class(ranges: list[tuple[int, int]]) -> str:
    parts = []
    for low, high in ranges:
        parts.append(_class_char(low) if low == high else f"{_class_char(low)}-{_class_char(high)}")
    return "[" + "".join(parts) + "]"


class Regex:
    """A regular expression in the subset this module turns into GBNF, parsed and re-written.

    Supported: literal characters, ``.``, character classes (``[a-z]``, ``[^...]``, ``\\d``,
    ``\\w``, ``\\s``), groups (``(...)``, ``(?:...)``, ``(?P<name>...)``), alternation and the
    quantifiers ``? * + {n} {n,} {n,m}`` (lazy ones generate the same strings). A leading ``^``
    and a trailing ``$`` are allowed. The grammar generates strings that match the whole
    expression, so they also match it unanchored; every character it generates may stand raw in
    a JSON string (quotes, backslashes and control characters are left out of every class and
    ``.``, which keeps them a subset of what the expression matches).
    """

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.i = 0

    def parse(self) -> str:
        body = self.pattern
        start, end = 0, len(body)
        if body.startswith("^"):
            start = 1
        if end > start and body.endswith("$") and not body.endswith("\\$"):
            end -= 1
        self.pattern = body[start:end]
        self.i = 0
        rule = self._alternation()
        if self.i != len(self.pattern):
            raise RegexError(f"unbalanced ')' at position {self.i + start}")
        return rule

    def _peek(self) -> str | None:
        return self.pattern[self.i] if self.i < len(self.pattern) else None

    def _alternation(self) -> str:
        branches = [self._sequence()]
        while self._peek() == "|":
            self.i += 1
            branches.append(self._sequence())
        if len(branches) == 1:
            return branches[0]
        return "(" + " | ".join(b or '""' for b in branches) + ")"

    def _sequence(self) -> str:
        items: list[str] = []
        while (char := self._peek()) is not None and char not in "|)":
            atom = self._atom()
            items.append(self._quantified(atom))
        return " ".join(items)

    def _atom(self) -> str:
        char = self.pattern[self.i]
        if char == "(":
            self.i += 1
            if self.pattern.startswith("?:", self.i):
                self.i += 2
            elif self.pattern.startswith("?P<", self.i) or self.pattern.startswith("?<", self.i):
                close = self.pattern.find(">", self.i)
                name = self.pattern[self.i + (3 if self.pattern[self.i + 1] == "P" else 2) : close]
                if close < 0 or not name.isidentifier():
                    raise RegexError(f"lookbehind or a malformed group at position {self.i - 1}")
                self.i = close + 1
            elif self._peek() == "?":
                raise RegexError(f"lookarounds and inline flags (position {self.i - 1}) are not supported")
            inner = self._alternation()
            if self._peek() != ")":
                raise RegexError("a group is not closed with ')'")
            self.i += 1
            return f"({inner or chr(34) * 2})"
        if char == "[":
            return gbnf_class(self._class())
        if char == ".":
            self.i += 1
            return gbnf_class(_subtract(_PRINTABLE, _FORBIDDEN))
        if char == "\\":
            ranges = self._escape(in_class=False)
            if len(ranges) == 1 and ranges[0][0] == ranges[0][1]:
                return gbnf_literal(chr(ranges[0][0]))
            return gbnf_class(ranges)
        if char in "*+?{":
            raise RegexError(f"a quantifier with nothing to repeat at position {self.i}")
        if char in "^$":
            raise RegexError(f"anchors are supported only at the start and end (position {self.i})")
        self.i += 1
        self._check_literal(ord(char))
        return gbnf_literal(char)

    def _check_literal(self, code: int) -> None:
        if _subtract([(code, code)], _FORBIDDEN) == []:
            raise RegexError(
                f"the character {chr(code)!r} cannot be generated raw inside a JSON string; leave it out"
            )

    def _escape(self, *, in_class: bool) -> list[tuple[int, int]]:
        self.i += 1
        if self.i >= len(self.pattern):
            raise RegexError("the pattern ends with a lone backslash")
        char = self.pattern[self.i]
        self.i += 1
        if char in _SHORTHANDS:
            return list(_SHORTHANDS[char])
        if char in "DWS":
            return _subtract(_complement(_ASCII_SHORTHANDS[char.lower()]), _FORBIDDEN)
        if char == "u" and len(self.pattern) >= self.i + 4:
            digits = self.pattern[self.i : self.i + 4]
            try:
                code = int(digits, 16)
            except ValueError:
                raise RegexError(f"\\u{digits} is not a unicode escape") from None
            self.i += 4
            self._check_literal(code)
            return [(code, code)]
        if char in _ESCAPABLE:
            self._check_literal(ord(char))
            return [(ord(char), ord(char))]
        raise RegexError(f"the escape \\{char} is not supported")

    def _class(self) -> list[tuple[int, int]]:
        self.i += 1
        negate = self._peek() == "^"
        if negate:
            self.i += 1
        ranges: list[tuple[int, int]] = []
        first = True
        while True:
            char = self._peek()
            if char is None:
                raise RegexError("a character class is not closed with ']'")
            if char == "]" and not first:
                self.i += 1
                break
            first = False
            low_set = self._class_item()
            if (
                self._peek() == "-"
                and self.i + 1 < len(self.pattern)
                and self.pattern[self.i + 1] != "]"
                and len(low_set) == 1
                and low_set[0][0] == low_set[0][1]
            ):
                self.i += 1
                high_set = self._class_item()
                if len(high_set) != 1 or high_set[0][0] != high_set[0][1] or high_set[0][0] < low_set[0][0]:
                    raise RegexError("a bad range in a character class")
                ranges.append((low_set[0][0], high_set[0][0]))
            else:
                ranges.extend(low_set)
        if negate:
            ranges = _complement(ranges)
        ranges = _subtract(ranges, _FORBIDDEN)
        if not ranges:
            raise RegexError("a character class admits no character that can stand raw in a JSON string")
        return ranges

    def _class_item(self) -> list[tuple[int, int]]:
        char = self.pattern[self.i]
        if char == "\\":
            return self._escape(in_class=True)
        if char == "[" and self.pattern.startswith("[:", self.i):
            raise RegexError("POSIX classes like [:alpha:] are not supported")
        self.i += 1
        return [(ord(char), ord(char))]

    def _quantified(self, atom: str) -> str:
        char = self._peek()
        if char in ("?", "*", "+"):
            self.i += 1
            rule = f"{atom}{char}"
        elif char == "{" and self._repeat_ahead():
            close = self.pattern.index("}", self.i)
            body = self.pattern[self.i + 1 : close]
            self.i = close + 1
            low_text, _, high_text = body.partition(",")
            low = int(low_text) if low_text else 0
            high = None if "," in body and not high_text else int(high_text or low_text)
            if low > MAX_REPEAT or (high is not None and (high > MAX_REPEAT or high < low)):
                raise RegexError(f"the repetition {{{body}}} is out of range (at most {MAX_REPEAT})")
            rule = f"{atom}{{{low},{'' if high is None else high}}}"
        else:
            return atom
        if self._peek() == "?":  # lazy: the same strings
            self.i += 1
        if self._peek() in ("?", "*", "+") or (self._peek() == "{" and self._repeat_ahead()):
            raise RegexError(f"a repeated quantifier at position {self.i}")
        return rule

    def _repeat_ahead(self) -> bool:
        close = self.pattern.find("}", self.i)
        if close < 0:
            return False
        body = self.pattern[self.i + 1 : close]
        low, comma, high = body.partition(",")
        if low and not low.isdigit():
            return False
        if not low and not (comma and high.isdigit()):
            return False
        return not high or high.isdigit()


# ---------------------------------------------------------------------------- integers


def _digits_range(low: str, high: str) -> str:
    """GBNF for the digit strings of one length from ``low`` to ``high`` (leading zeros as given)."""
    if low == high:
        return gbnf_literal(low)
    if len(low) == 1:
        return f"[{low}-{high}]"
    if low[0] == high[0]:
        return f'"{low[0]}" ({_digits_range(low[1:], high[1:])})'
    rest = len(low) - 1
    parts = [f'"{low[0]}" ({_digits_range(low[1:], "9" * rest)})']
    if int(high[0]) - int(low[0]) > 1:
        parts.append(f"[{int(low[0]) + 1}-{int(high[0]) - 1}] [0-9]{{{rest}}}")
    parts.append(f'"{high[0]}" ({_digits_range("0" * rest, high[1:])})')
    return " | ".join(parts)


def natural_range(low: int, high: int | None) -> str:
    """GBNF for the decimal numerals (no leading zeros) of the integers from ``low`` (>= 0) to ``high``."""
    top = high if high is not None else 10**MAX_INT_DIGITS - 1
    parts = []
    for digits in range(len(str(low)), len(str(top)) + 1):
        first = max(low, 10 ** (digits - 1) if digits > 1 else 0)
        last = min(top, 10**digits - 1)
        if first > last:
            continue
        if first == 10 ** (digits - 1) and last == 10**digits - 1 and digits > 1:
            parts.append(f"[1-9] [0-9]{{{digits - 1}}}")
        else:
            parts.append(f"({_digits_range(str(first), str(last))})")
    return " | ".join(parts)


def integer_rule(low: int | None, high: int | None) -> str:
    """GBNF for the integers from ``low`` to ``high`` (None: unbounded within 15 digits)."""
    top = 10**MAX_INT_DIGITS - 1
    parts = []
    if low is None or low < 0:
        # negatives from -(top or -low) to min(high, -1), written as "-" and their magnitudes
        neg_high = top if low is None else -low
        neg_low = 1 if high is None or high >= 0 else -high
        if neg_low <= neg_high:
            parts.append(f'"-" ({natural_range(neg_low, neg_high)})')
    if high is None or high >= 0:
        parts.append(f"({natural_range(max(low or 0, 0), high)})")
    return " | ".join(parts)


def number_rule(low: int | None, high: int | None) -> str:
    """GBNF for JSON numbers between whole-number bounds, ``low`` >= 0 (see ``number_bounds``)."""
    fraction = '("." [0-9]{1,15})?'
    if low is None and high is None:
        return '("-"? integral-part) ("." decimal-part)? ([eE] [-+]? [0-9]{1,2})?'
    parts = []
    if low is None:
        parts.append(f'"-" integral-part {fraction}')
        low = 0
    if high is None:
        parts.append(f"({natural_range(low, None)}) {fraction}")
    else:
        if high > low:
            parts.append(f"({natural_range(low, high - 1)}) {fraction}")
        parts.append(f'{gbnf_literal(str(high))} ("." "0"{{1,15}})?')
    return " | ".join(parts)


# ---------------------------------------------------------------------------- conversion


class JsonSchemaGrammar(SchemaConverter):  # type: ignore[misc]
    """llama-cpp-python's converter with the corrections listed in the module docstring.

    ``add(schema, name, param)`` checks one schema (a 400 naming what cannot be enforced)
    and adds its rules under ``name``; ``grammar()`` is the GBNF text of every rule added.
    """

    def __init__(self) -> None:
        super().__init__(  # type: ignore[no-untyped-call]
            prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False
        )
        self._doc: Any = None
        self._ref_rules: dict[tuple[int, str], str] = {}
        self._depth = 0

    def add(self, schema: Any, name: str, param: str) -> str:
        """Check ``schema`` and add its rules; returns the name of its top rule."""
        try:
            size = len(json.dumps(schema, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
        except (TypeError, ValueError):  # pragma: no cover - decoded JSON always dumps
            raise refuse(f"{param} is not a JSON value", param) from None
        if size > MAX_SCHEMA_BYTES:
            raise refuse(
                f"{param} is {size:,} bytes of JSON; at most {MAX_SCHEMA_BYTES:,} are supported", param
            )
        _Checker(_Doc(schema, param)).check(schema, param, 0)
        self._doc = schema
        return str(self.visit(schema, name))

    def grammar(self, param: str) -> str:
        text = str(self.format_grammar())  # type: ignore[no-untyped-call]
        if len(text) > MAX_GRAMMAR_CHARS:
            raise refuse(
                f"{param}: its grammar would be {len(text):,} characters; at most {MAX_GRAMMAR_CHARS:,} "
                "(ask for fewer repetitions, values or properties)",
                param,
            )
        return text

    def rule(self, name: str, body: str) -> str:
        """Add a rule (a numbered name if ``name`` holds another body); returns its name."""
        return str(self._add_rule(name, body))  # type: ignore[no-untyped-call]

    # -- overrides of the converter

    def _constant(self, value: Any) -> str:
        return gbnf_literal(json.dumps(value))

    def _format_literal(self, literal: str) -> str:
        return gbnf_literal(literal)

    def _add_primitive(self, name: str, rule: BuiltinRule) -> str:
        rule = _RULES.get(name, rule)
        key = self.rule(name, rule.content)
        for dep in rule.deps:
            if dep not in self._rules:
                self._add_primitive(dep, _RULES[dep])
        return str(key)

    def _ref(self, ref: str) -> str:
        key = (id(self._doc), ref)
        name = self._ref_rules.get(key)
        if name is None:
            name = self.rule(f"ref{len(self._ref_rules)}", "(pending)")
            self._ref_rules[key] = name
            target = resolve_ref(self._doc, ref, "$ref")
            body = self.visit(target, f"{name}-def")
            self._rules[name] = body
        return str(name)

    def visit(self, schema: Any, name: str) -> str:
        self._depth += 1
        try:
            return self._visit(schema, name)
        finally:
            self._depth -= 1

    def _visit(self, schema: Any, name: str) -> str:
        if not name and self._depth > 1:  # a property named "" at the top: not the root rule
            name = "empty"
        rule_name = f"{name}-" if name in _RESERVED else (name or "root")
        if schema is True or (
            isinstance(schema, Mapping) and not (set(schema) & (_GENERAL | _ALL_TYPE_KEYWORDS))
        ):
            return self.rule(rule_name, self._add_primitive("value", _RULES["value"]))
        assert isinstance(schema, Mapping)
        if "$ref" in schema:
            return self.rule(rule_name, self._ref(schema["$ref"]))
        if "allOf" in schema:
            return self.visit(schema["allOf"][0], name)
        if "anyOf" in schema:
            branches = [
                self.visit(b, f"{name}{'-' if name else ''}{i}") for i, b in enumerate(schema["anyOf"])
            ]
            return self.rule(rule_name, " | ".join(branches))
        if "const" in schema:
            return self.rule(rule_name, self._constant(schema["const"]) + " space")
        if "enum" in schema:
            values = " | ".join(self._constant(v) for v in schema["enum"])
            return self.rule(rule_name, f"({values}) space")
        types = _types_of(schema)
        if types is None:
            present = set(schema) & _ALL_TYPE_KEYWORDS
            types = [t for t in _TYPES if present & _TYPE_KEYWORDS[t]][:1]
        if len(types) > 1:
            branches = []
            for kind in types:
                sub = {k: v for k, v in schema.items() if k in _TYPE_KEYWORDS[kind]}
                branches.append(self.visit({**sub, "type": kind}, f"{name}{'-' if name else ''}{kind}"))
            return self.rule(rule_name, " | ".join(branches))
        return self.rule(rule_name, getattr(self, f"_visit_{types[0]}")(schema, name))

    def _visit_object(self, schema: Mapping[str, Any], name: str) -> str:
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", ANY)
        if not properties:
            if extra is False:
                return '"{" space "}" space'
            if isinstance(extra, Mapping):
                return str(self._build_object_rule([], set(), name, extra))
            return self._add_primitive("object", _RULES["object"])
        return str(
            self._build_object_rule(list(properties.items()), set(schema.get("required", [])), name, None)
        )

    def _visit_array(self, schema: Mapping[str, Any], name: str) -> str:
        sep = '"," space'
        if "prefixItems" in schema:
            items = [
                self.visit(item, f"{name}{'-' if name else ''}tuple-{i}")
                for i, item in enumerate(schema["prefixItems"])
            ]
            return '"[" space ' + f" {sep} ".join(items) + ' "]" space'
        items_schema = schema.get("items", ANY)
        low, high = schema.get("minItems", 0), schema.get("maxItems")
        if items_schema is False or high == 0:
            return '"[" space "]" space'
        item = self.visit(True if items_schema is ANY else items_schema, f"{name}{'-' if name else ''}item")
        more = f"({sep} {item})"
        if high is None:
            tail = f"{more}*" if low <= 1 else f"{more}{{{low - 1},}}"
        elif high == 1:
            tail = ""
        else:
            tail = f"{more}{{{max(low - 1, 0)},{high - 1}}}"
        body = f"{item} {tail}".strip()
        return f'"[" space ({body})? "]" space' if low == 0 else f'"[" space {body} "]" space'

    def _visit_string(self, schema: Mapping[str, Any], name: str) -> str:
        if "format" in schema:
            fmt = schema["format"]
            if fmt.startswith("uuid"):
                return _uuid_rule(fmt[4:])
            part = self._add_primitive(fmt, _RULES[fmt])
            return f'"\\"" {part} "\\"" space'
        if "pattern" in schema:
            return f'"\\"" ({Regex(schema["pattern"]).parse() or chr(34) * 2}) "\\"" space'
        if "minLength" in schema or "maxLength" in schema:
            char = self._add_primitive("char", _RULES["char"])
            low, high = schema.get("minLength", 0), schema.get("maxLength")
            return f'"\\"" {char}{{{low},{"" if high is None else high}}} "\\"" space'
        return self._add_primitive("string", _RULES["string"])

    def _visit_integer(self, schema: Mapping[str, Any], name: str) -> str:
        low, high = integer_bounds(schema, name, name)
        if low is None and high is None:
            return self._add_primitive("integer", _RULES["integer"])
        return f"({integer_rule(low, high)}) space"

    def _visit_number(self, schema: Mapping[str, Any], name: str) -> str:
        low, high = number_bounds(schema, name, name)
        if low is None and high is None:
            return self._add_primitive("number", _RULES["number"])
        self._add_primitive("integral-part", _RULES["integral-part"])
        self._add_primitive("decimal-part", _RULES["decimal-part"])
        return f"({number_rule(low, high)}) space"

    def _visit_boolean(self, schema: Mapping[str, Any], name: str) -> str:
        return self._add_primitive("boolean", _RULES["boolean"])

    def _visit_null(self, schema: Mapping[str, Any], name: str) -> str:
        return self._add_primitive("null", _RULES["null"])


def schema_to_grammar(schema: Any, *, param: str) -> str:
    """GBNF admitting exactly the JSON documents this module can guarantee valid against ``schema``."""
    converter = JsonSchemaGrammar()
    converter.add(schema, "", param)
    return converter.grammar(param)


JSON_OBJECT_SCHEMA: Mapping[str, Any] = {"type": "object"}
"""``response_format: {"type": "json_object"}``: any JSON object."""
