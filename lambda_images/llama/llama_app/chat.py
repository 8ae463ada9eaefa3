"""One chat answer: content, tool calls, or both, from one or two generations on the shared model.

``ChatTurn.events()`` yields what the answer is made of as it is generated
(content pieces with their log probabilities, the start of each tool call,
argument fragments); buffered and streamed routes consume the same events.

With tools (see ``llama_app.tools``): ``auto`` generates freely, with the
opening ``<tool_call>`` as a stop string; if the model writes it, a second
generation continues from there under the calls grammar. ``required`` and a
named function go straight to that second generation. The token budget is
shared; the first generation's prompt prefix is reused from llama.cpp's KV cache.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from lambda_common.deadline import Deadline
from lambda_common.errors import InternalError
from llama_app.engine import (
    Engine,
    Generation,
    GenerationRun,
    GenerationTimings,
    Prompt,
    SamplingParams,
    TokenLogprob,
)
from llama_app.schemas import ChatFinishReason
from llama_app.tools import (
    OPEN,
    ArgumentsEvent,
    CallStart,
    ContentEvent,
    ParsedCall,
    ToolCallParser,
    ToolMarkupError,
    ToolPlan,
)


@dataclass(frozen=True)
class Content:
    text: str
    logprobs: list[TokenLogprob] = field(default_factory=list)


TurnEvent = Content | CallStart | ArgumentsEvent


@dataclass(frozen=True)
class TurnResult:
    generation: Generation
    """Both generations as one: usage, timings, the content's log probabilities."""
    content: str
    calls: list[ParsedCall]
    finish: ChatFinishReason
    deadline_reached: bool


class ChatTurn:
    def __init__(
        self,
        engine: Engine,
        prompt: Prompt,
        params: SamplingParams,
        deadline: Deadline,
        plan: ToolPlan | None = None,
        calls: SamplingParams | None = None,
    ) -> None:
        """``params`` generate the content (their grammar: a response format, if any); ``calls``
        the tool calls (their grammar: the calls grammar), when ``plan`` lets the model call tools."""
        self.engine = engine
        self.prompt = prompt
        self.params = params
        self.deadline = deadline
        self.plan = plan if plan is not None and plan.active else None
        self.calls_params = calls
        self.result: TurnResult | None = None
        self._run: GenerationRun | None = None

    def close(self) -> None:
        if self._run is not None:
            self._run.close()

    def finish(self) -> TurnResult:
        for _ in self.events():
            pass
        assert self.result is not None
        return self.result

    def events(self) -> Iterator[TurnEvent]:
        plan = self.plan
        first: Generation | None = None
        if plan is None or plan.mode == "auto":
            params = self.params
            if plan is not None:
                params = replace(params, stop=(*params.stop, OPEN), special=True)
            run = self._run = self.engine.generate(self.prompt, params, self.deadline)
            for piece in run:
                yield Content(piece, run.take_logprobs())
            first = run.result
            assert first is not None
            if plan is None or first.stop_hit != OPEN:
                self.result = self._done(first, None, [])
                return
            follow = self.engine.extend(self.prompt, first.text + OPEN)
        else:
            follow = self.engine.extend(self.prompt, OPEN)
        assert self.calls_params is not None
        remaining = self.params.max_tokens - (first.completion_tokens if first is not None else 0)
        if remaining <= 0:
            assert first is not None
            self.result = self._done(replace(first, finish_reason="length"), None, [])
            return
        parser = ToolCallParser(names=[tool.name for tool in plan.callable])
        parser.feed(OPEN)
        run = self._run = self.engine.generate(
            follow, replace(self.calls_params, max_tokens=remaining), self.deadline
        )
        try:
            for piece in run:
                for event in parser.feed(piece):
                    yield self._event(event)
            second = run.result
            assert second is not None
            for event in parser.finish():
                yield self._event(event)
        except ToolMarkupError as exc:
            run.close()
            raise InternalError(
                f"the model's tool call could not be read ({exc}); nothing more is returned",
                code="tool_call_unreadable",
            ) from exc
        self.result = self._done(first, second, parser.calls)

    @staticmethod
    def _event(event: ContentEvent | CallStart | ArgumentsEvent) -> TurnEvent:
        if isinstance(event, ContentEvent):  # pragma: no cover - the calls grammar admits no text
            return Content(event.text)
        return event

    def _done(
        self, first: Generation | None, second: Generation | None, calls: list[ParsedCall]
    ) -> TurnResult:
        parts = [g for g in (first, second) if g is not None]
        last = parts[-1]
        complete = [call for call in calls if call.complete]
        finish: ChatFinishReason
        if second is not None and second.finish_reason == "stop" and complete:
            finish = "tool_calls"
        else:
            finish = "stop" if last.finish_reason == "stop" else "length"
        total_ms = sum(g.timings.total_ms for g in parts)
        prompt_ms = parts[0].timings.prompt_ms
        completion = sum(g.completion_tokens for g in parts)
        predicted_ms = total_ms - prompt_ms
        merged = Generation(
            text=first.text if first is not None else "",
            finish_reason=last.finish_reason,
            prompt_tokens=parts[0].prompt_tokens,
            completion_tokens=completion,
            timings=GenerationTimings(
                prompt_ms=prompt_ms,
                predicted_ms=predicted_ms,
                predicted_per_second=(completion - 1) / (predicted_ms / 1000.0)
                if completion > 1 and predicted_ms > 0
                else None,
                total_ms=total_ms,
            ),
            logprobs=first.logprobs if first is not None else [],
        )
        return TurnResult(
            generation=merged,
            content=merged.text,
            calls=[call for call in calls if call.complete or finish == "length"],
            finish=finish,
            deadline_reached=last.finish_reason == "deadline",
        )
