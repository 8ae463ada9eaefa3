"""Tool calls: what the model is told about the tools, how its calls are forced, and how they are read.

The markup is the one Qwen2.5 (the default model family) is trained on, Hermes'
``<tool_call>`` JSON::

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

- Telling the model: when the GGUF's chat template renders ``tools`` and writes
  that markup itself (Qwen2.5's does: ``template_renders_tools``), the tools,
  assistant ``tool_calls`` and ``tool`` results go to the template as they are.
  Otherwise (SmolLM2's plain ChatML) this module writes the same information as
  text: a system message listing the tools and the markup, earlier calls as
  markup in the assistant's text, tool results as ``<tool_response>`` user turns.
- Forcing calls: a call is generated under a GBNF grammar built from the
  tools' parameter schemas (``calls_grammar``), so its name is one of the
  allowed tools and its arguments validate. With ``tool_choice`` ``required`` or
  a named function the prompt is followed by ``<tool_call>`` at once; with
  ``auto`` the model writes freely until it writes ``<tool_call>`` itself, and
  the call is then continued under the grammar (llama.cpp's "lazy grammar",
  done as two generations on the shared KV cache).
- Reading calls: ``ToolCallParser`` reads the markup as it is generated and
  reports each call's id, name and argument fragments as soon as they are
  known, the way the OpenAI SDK assembles streamed tool-call deltas.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from llama_app.structured import JsonSchemaGrammar, gbnf_literal

OPEN = "<tool_call>"
CLOSE = "</tool_call>"
MAX_TOOLS = 128
"""Most tools in one request (OpenAI's limit)."""
MAX_PARALLEL_CALLS = 8
"""Most calls in one answer when ``parallel_tool_calls`` is on."""
NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"
"""A function name as OpenAI allows it: letters, digits, ``_`` and ``-``, at most 64."""

Mode = Literal["none", "auto", "required"]


@dataclass(frozen=True)
class Tool:
    name: str
    description: str | None
    parameters: Mapping[str, Any]

    def as_template_tool(self) -> dict[str, Any]:
        """The tool as chat templates read it (OpenAI's ``{"type": "function", "function": ...}``)."""
        function: dict[str, Any] = {"name": self.name}
        if self.description is not None:
            function["description"] = self.description
        function["parameters"] = dict(self.parameters)
        return {"type": "function", "function": function}


@dataclass(frozen=True)
class ToolPlan:
    """What a request asks of tools: which the model hears of, which it may call, and how."""

    tools: Sequence[Tool]
    callable: Sequence[Tool]
    mode: Mode
    parallel: bool

    @property
    def active(self) -> bool:
        return self.mode != "none" and bool(self.callable)


def calls_grammar(plan: ToolPlan, *, param: str = "tools") -> str:
    """GBNF for what follows an opening ``<tool_call>``: one call (or up to 8 with parallel calls).

    Each call is ``{"name": "<an allowed tool>", "arguments": <valid arguments>}`` between
    newlines and a closing ``</tool_call>``; further calls open with ``<tool_call>`` again.
    """
    converter = JsonSchemaGrammar()
    alternatives = []
    for index, tool in enumerate(plan.callable):
        position = plan.tools.index(tool)
        args = converter.add(tool.parameters, f"tool-{index}-args", f"tools[{position}].function.parameters")
        head = gbnf_literal('{"name": ' + json.dumps(tool.name) + ', "arguments": ')
        alternatives.append(converter.rule(f"call-{index}", f'{head} {args} "}}"'))
    converter.rule("call", " | ".join(alternatives))
    block = converter.rule("call-block", f'"\\n" call {gbnf_literal(chr(10) + CLOSE)}')
    more = f"({gbnf_literal(chr(10) + OPEN)} {block}){{0,{MAX_PARALLEL_CALLS - 1}}}" if plan.parallel else ""
    converter.rule("root", f"{block} {more}".strip())
    return str(converter.grammar(param))


def answer_or_call_grammar(schema_grammar_rules: JsonSchemaGrammar, *, param: str) -> str:
    """GBNF for an answer in a response format, or the opening of a tool call (``tool_choice`` auto)."""
    schema_grammar_rules.rule("root", f"answer | {gbnf_literal(OPEN)}")
    return str(schema_grammar_rules.grammar(param))


# ---------------------------------------------------------------------------- the prompt


def template_renders_tools(formatter: Any) -> bool:
    """True when the chat template renders tools, earlier calls and results, in ``<tool_call>`` markup.

    Checked by rendering probes (the template's text alone does not say whether its
    branches work): a tool, an assistant message with a call, and a tool result must each
    appear in the prompt.
    """
    if formatter is None or OPEN not in formatter.template:
        return False
    probe = Tool("probe_tool_q7x", "probe", {"type": "object", "properties": {}}).as_template_tool()
    call = {"id": "call_probe", "type": "function", "function": {"name": "probe_call_q7x", "arguments": {}}}
    try:
        offered = formatter(messages=[{"role": "user", "content": "hi"}], tools=[probe]).prompt
        history = formatter(
            messages=[
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "content": "probe_result_q7x", "tool_call_id": "call_probe"},
            ],
            tools=[probe],
        ).prompt
    except Exception:  # a template that cannot render these is one without tool support
        return False
    return "probe_tool_q7x" in offered and "probe_call_q7x" in history and "probe_result_q7x" in history


def tools_system_text(tools: Iterable[Tool]) -> str:
    """The tools and the call markup, for a model whose template does not render them."""
    lines = [
        "You can call functions to help with the user's request. "
        "Their signatures, as JSON Schema, are listed between <tools> and </tools>:",
        "<tools>",
        *(json.dumps(tool.as_template_tool(), ensure_ascii=False) for tool in tools),
        "</tools>",
        "To call functions, answer with one JSON object per call, each between <tool_call> and </tool_call>:",
        OPEN,
        '{"name": "<function name>", "arguments": {<the arguments as a JSON object>}}',
        CLOSE,
    ]
    return "\n".join(lines)


def call_markup(name: str, arguments: Any) -> str:
    return f"{OPEN}\n{json.dumps({'name': name, 'arguments': arguments}, ensure_ascii=False)}\n{CLOSE}"


def render_messages(
    messages: Sequence[Mapping[str, Any]], plan: ToolPlan | None, *, template_tools: bool
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Messages and template variables for the chat template, tool calls and results included.

    ``messages`` are plain dicts: ``role``, ``content`` (text or None), and ``tool_calls``
    (``[{"id", "type", "function": {"name", "arguments": <decoded JSON>}}]``) or
    ``tool_call_id``. With ``template_tools`` they pass as they are (with ``tools``);
    otherwise calls become markup and results ``<tool_response>`` user turns, and the tools a
    system message.
    """
    offered = [tool.as_template_tool() for tool in plan.tools] if plan is not None and plan.active else []
    if template_tools:
        variables: dict[str, Any] = {"tools": offered} if offered else {}
        return [dict(m) for m in messages], variables
    out: list[dict[str, Any]] = []
    for message in messages:
        role, content = message["role"], message.get("content")
        if role == "assistant" and message.get("tool_calls"):
            calls = [
                call_markup(c["function"]["name"], c["function"]["arguments"]) for c in message["tool_calls"]
            ]
            text = "\n".join([content, *calls] if content else calls)
            out.append({"role": "assistant", "content": text})
        elif role == "tool":
            response = f"<tool_response>\n{content or ''}\n</tool_response>"
            if out and out[-1].get("tool_results"):
                out[-1]["content"] += "\n" + response
            else:
                out.append({"role": "user", "content": response, "tool_results": True})
        else:
            out.append({"role": role, "content": content or ""})
    for message in out:
        message.pop("tool_results", None)
    if offered:
        text = tools_system_text(plan.tools if plan is not None else [])
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{text}"}
        else:
            out.insert(0, {"role": "system", "content": text})
    return out, {}


# ---------------------------------------------------------------------------- reading calls


class ToolMarkupError(ValueError):
    """The model's tool-call markup cannot be read (never with a grammar-forced call)."""


@dataclass
class ParsedCall:
    index: int
    id: str
    name: str
    arguments: str = ""
    complete: bool = False


@dataclass(frozen=True)
class ContentEvent:
    text: str


@dataclass(frozen=True)
class CallStart:
    call: ParsedCall


@dataclass(frozen=True)
class ArgumentsEvent:
    index: int
    fragment: str


Event = ContentEvent | CallStart | ArgumentsEvent

_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*', re.DOTALL)
_LOOKAHEAD = 4096
"""How much text may precede a call's arguments before the markup is deemed unreadable."""


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


def _held_prefix(text: str, marker: str) -> int:
    """Length of the longest end of ``text`` that could be the start of ``marker``."""
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:size]):
            return size
    return 0


@dataclass
class ToolCallParser:
    """Reads ``<tool_call>`` markup incrementally: content, then calls, as events.

    ``feed(text)`` returns the events the new text completes; ``finish()`` the rest. A
    call's arguments are streamed as the raw JSON text the model wrote (so the fragments add
    up to the ``arguments`` string); a call the text ends inside stays incomplete.
    """

    names: Sequence[str]
    calls: list[ParsedCall] = field(default_factory=list)
    content: str = ""
    _buffer: str = ""
    _state: Literal["content", "head", "args", "tail", "after"] = "content"
    _depth: int = 0
    _in_string: bool = False
    _escaped: bool = False
    _started: bool = False

    def feed(self, text: str) -> list[Event]:
        self._buffer += text
        events: list[Event] = []
        while self._step(events, final=False):
            pass
        return events

    def finish(self) -> list[Event]:
        events: list[Event] = []
        while self._step(events, final=True):
            pass
        if self._state in ("content", "after") and self._buffer.strip():
            events.append(self._content(self._buffer))
        self._buffer = ""
        return events

    def _content(self, text: str) -> ContentEvent:
        self.content += text
        return ContentEvent(text)

    def _step(self, events: list[Event], *, final: bool) -> bool:
        buffer = self._buffer
        if self._state in ("content", "after"):
            at = buffer.find(OPEN)
            if at >= 0:
                before = buffer[:at]
                if before and (self._state == "content" or before.strip()):
                    events.append(self._content(before))
                self._buffer, self._state = buffer[at + len(OPEN) :], "head"
                return True
            if self._state == "after":
                stripped = buffer.lstrip()
                if not stripped or (OPEN.startswith(stripped) and not final):
                    return False
                self._state = "content"
                return True
            keep = 0 if final else _held_prefix(buffer, OPEN)
            if len(buffer) > keep:
                events.append(self._content(buffer[: len(buffer) - keep]))
                self._buffer = buffer[len(buffer) - keep :]
            return False
        if self._state == "head":
            return self._head(events, final=final)
        if self._state == "args":
            return self._args(events)
        return self._tail(final=final)

    def _head(self, events: list[Event], *, final: bool) -> bool:
        match = _HEAD.match(self._buffer)
        if match is None:
            close = self._buffer.find(CLOSE)
            if close >= 0:
                self._whole(self._buffer[:close], events)
                self._buffer, self._state = self._buffer[close + len(CLOSE) :], "after"
                return True
            if len(self._buffer) > _LOOKAHEAD:
                raise ToolMarkupError(f"no function name within {_LOOKAHEAD} characters of {OPEN}")
            return False
        try:
            name = json.loads(f'"{match.group(1)}"')
        except json.JSONDecodeError:
            raise ToolMarkupError("the function name is not a JSON string") from None
        self._start(name, events)
        self._buffer, self._state = self._buffer[match.end() :], "args"
        self._depth, self._in_string, self._escaped, self._started = 0, False, False, False
        return True

    def _start(self, name: str, events: list[Event]) -> ParsedCall:
        if name not in self.names:
            raise ToolMarkupError(f"the model called {name!r}, which is not an offered tool")
        call = ParsedCall(index=len(self.calls), id=new_call_id(), name=name)
        self.calls.append(call)
        events.append(CallStart(call))
        return call

    def _whole(self, block: str, events: list[Event]) -> None:
        """A call written some other way (keys in another order): read it whole."""
        try:
            value = json.loads(block)
        except json.JSONDecodeError as exc:
            raise ToolMarkupError(f"a tool call is not valid JSON: {exc}") from None
        if not isinstance(value, dict) or not isinstance(value.get("name"), str) or "arguments" not in value:
            raise ToolMarkupError('a tool call must be {"name": ..., "arguments": {...}}')
        arguments = value["arguments"]
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                raise ToolMarkupError("a tool call's arguments are not JSON") from None
        if not isinstance(arguments, dict):
            raise ToolMarkupError("a tool call's arguments must be a JSON object")
        call = self._start(value["name"], events)
        call.arguments, call.complete = json.dumps(arguments, ensure_ascii=False), True
        events.append(ArgumentsEvent(call.index, call.arguments))

    def _args(self, events: list[Event]) -> bool:
        call = self.calls[-1]
        start, end = 0, None
        for position, char in enumerate(self._buffer):
            if not self._started:
                if char.isspace():
                    continue
                if char != "{":
                    raise ToolMarkupError("a tool call's arguments must be a JSON object")
                self._started, self._depth, start = True, 1, position
                continue
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif char == "\\":
                    self._escaped = True
                elif char == '"':
                    self._in_string = False
            elif char == '"':
                self._in_string = True
            elif char in "{[":
                self._depth += 1
            elif char in "}]":
                self._depth -= 1
                if self._depth == 0:
                    end = position + 1
                    break
        if not self._started:
            self._buffer = ""
            return False
        taken = self._buffer[start:end] if end is not None else self._buffer[start:]
        if taken:
            call.arguments += taken
            events.append(ArgumentsEvent(call.index, taken))
        if end is None:
            self._buffer = ""
            return False
        try:
            value = json.loads(call.arguments)
        except json.JSONDecodeError as exc:
            raise ToolMarkupError(f"a tool call's arguments are not valid JSON: {exc}") from None
        if not isinstance(value, dict):  # pragma: no cover - starts with "{"
            raise ToolMarkupError("a tool call's arguments must be a JSON object")
        call.complete = True
        self._buffer, self._state = self._buffer[end:], "tail"
        return True

    def _tail(self, *, final: bool) -> bool:
        rest = self._buffer.lstrip()
        if not rest:
            return False
        if rest[0] != "}":
            raise ToolMarkupError("a tool call's JSON object is not closed after its arguments")
        rest = rest[1:].lstrip()
        if rest.startswith(CLOSE):
            self._buffer, self._state = rest[len(CLOSE) :], "after"
            return True
        if CLOSE.startswith(rest):
            return False  # more text may close it; at the end, the text stopped inside the markup
        raise ToolMarkupError(f"a tool call is not closed with {CLOSE}")


def parse_calls(text: str, names: Sequence[str]) -> ToolCallParser:
    """Read a whole answer's markup (``parser.content`` and ``parser.calls``)."""
    parser = ToolCallParser(names=list(names))
    parser.feed(text)
    parser.finish()
    return parser
