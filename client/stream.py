"""Printing a streamed answer as it arrives: the text of each server-sent event, token by token.

The generator streams server-sent events in three shapes: OpenAI's chat chunks
(``choices[0].delta.content``, and tool-call argument pieces), OpenAI's
completion chunks (``choices[0].text``) and llama.cpp's ``/completion`` events
(``content``). ``TokenPrinter`` writes the text of each to ``out`` the moment
its event is complete and flushes, so a terminal shows tokens as they come; an
error event goes to ``err``. Anything that is not an event stream (a whole JSON
answer, an error before the first byte) is kept for the caller to show whole.
``with_stream_flag`` asks for a stream and ``finish`` shows the outcome, for the
``url`` and ``invoke`` commands alike.
"""

from __future__ import annotations

import json
from typing import Any, TextIO

from client.calls import Answer, ClientUsageError, render, write_summary


class TokenPrinter:
    """Feed it the bytes of a stream in any chunking; it prints each event's text once complete."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out = out
        self.err = err
        self._buffer = b""
        self.events = 0
        self.printed = 0
        self.errors: list[Any] = []
        self.done = False
        self.is_event_stream: bool | None = None

    def __call__(self, data: bytes) -> None:
        self.feed(data)

    def feed(self, data: bytes) -> None:
        self._buffer += data
        if self.is_event_stream is None and self._buffer.strip():
            self.is_event_stream = self._buffer.lstrip().startswith((b"data:", b"event:", b":"))
        if not self.is_event_stream:
            return
        while b"\n\n" in self._buffer:
            block, self._buffer = self._buffer.split(b"\n\n", 1)
            self._event(block.decode("utf-8", "replace"))

    def _event(self, block: str) -> None:
        data = "\n".join(line[5:].lstrip() for line in block.splitlines() if line.startswith("data:"))
        if not data:
            return
        self.events += 1
        if data == "[DONE]":
            self.done = True
            return
        try:
            event = json.loads(data)
        except ValueError:
            return
        if isinstance(event, dict) and "error" in event:
            self.errors.append(event["error"])
            self.err.write(f"\nerror event: {json.dumps(event['error'], ensure_ascii=False)}\n")
            return
        text = event_text(event)
        if text:
            self.printed += 1
            self.out.write(text)
            self.out.flush()


def with_stream_flag(data: bytes | None) -> bytes:
    """The request body with ``"stream": true`` (it must be a JSON object)."""
    try:
        body = json.loads(data or b"{}")
    except ValueError:
        raise ClientUsageError("--stream needs --data to be a JSON object") from None
    if not isinstance(body, dict):
        raise ClientUsageError("--stream needs --data to be a JSON object")
    return json.dumps({**body, "stream": True}).encode()


def finish(answer: Answer, printer: TokenPrinter | None, out: TextIO, err: TextIO) -> int:
    """Show the answer and return the exit status: a printed stream ends with a newline, its event
    count and timings; anything else (not streamed, or not an event stream) is shown whole."""
    if printer is None or not printer.is_event_stream:
        render(answer, out, err)
        return 0 if answer.ok else 1
    out.write("\n")
    write_summary(answer, err, events=printer.events)
    return 0 if answer.ok and not printer.errors else 1


def event_text(event: Any) -> str:
    """The text one event adds, whichever of the generator's stream shapes it is."""
    if not isinstance(event, dict):
        return ""
    if isinstance(event.get("content"), str):  # llama.cpp's /completion events
        return str(event["content"])
    choices = event.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return ""
    choice = choices[0]
    if isinstance(choice.get("text"), str):  # OpenAI completions
        return str(choice["text"])
    delta = choice.get("delta")
    if not isinstance(delta, dict):
        return ""
    content = delta.get("content")
    text = content if isinstance(content, str) else ""
    for call in delta.get("tool_calls") or []:
        function = (call.get("function") or {}) if isinstance(call, dict) else {}
        if function.get("name"):
            text += f"[tool call {function['name']}] "
        if isinstance(function.get("arguments"), str):
            text += function["arguments"]
    return str(text)
