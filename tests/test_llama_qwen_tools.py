"""Tool calls for the default model family, Qwen2.5, without its weights: its real chat template and output.

The Qwen2.5 GGUF cannot be downloaded here, so these tests pin the two things the
generator relies on with Qwen's own text:

- ``QWEN25_TEMPLATE`` is the ``chat_template`` of Qwen2.5-Instruct's
  ``tokenizer_config.json`` (the Jinja text Qwen ships in the Qwen/Qwen2.5-*-Instruct
  repositories and llama.cpp keeps as ``models/templates/Qwen-Qwen2.5-7B-Instruct.jinja``),
  copied as test data. Rendered through the generator's message conversion it must give,
  character for character, the prompt Qwen documents for its function-calling example
  (``QWEN_DOC_PROMPT``, from QwenLM/Qwen2.5 ``docs/source/framework/function_call.md`` at
  commit 5e01d11, section "Qwen2.5 Function Calling Templates").
- ``QWEN_DOC_OUTPUT`` is the model output that document records for the same example
  (two parallel ``<tool_call>`` blocks); the generator's parser must read it, whole and
  in arbitrary pieces, as OpenAI tool calls.
"""

# ruff: noqa: E501  (Qwen's template is test data kept verbatim, long lines included)

from __future__ import annotations

import json
import sys
from typing import Any

import llama_cpp
import pytest
from llama_cpp import Llama
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from local.models import embedded_gguf
from tests.test_llama_handler import LLAMA_DIR

if str(LLAMA_DIR) not in sys.path:
    sys.path.insert(0, str(LLAMA_DIR))

from llama_app.api import _chat_messages
from llama_app.schemas import ChatMessage
from llama_app.tools import (
    ArgumentsEvent,
    CallStart,
    ContentEvent,
    Tool,
    ToolCallParser,
    ToolMarkupError,
    ToolPlan,
    calls_grammar,
    parse_calls,
    render_messages,
    template_renders_tools,
)

QWEN25_TEMPLATE = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

LOCATION = 'The location to get the temperature for, in the format \\"City, State, Country\\".'
QWEN_DOC_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_current_temperature",
            "description": "Get current temperature at a location.",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {"type": "string", "description": json.loads(f'"{LOCATION}"')},
                    "unit": {
                        "type": "string",
                        "enum": ["celsius", "fahrenheit"],
                        "description": 'The unit to return the temperature in. Defaults to "celsius".',
                    },
                },
                "required": ["location"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_temperature_date",
            "description": "Get temperature at a location and date.",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {"type": "string", "description": json.loads(f'"{LOCATION}"')},
                    "date": {
                        "type": "string",
                        "description": 'The date to get the temperature for, in the format "Year-Month-Day".',
                    },
                    "unit": {
                        "type": "string",
                        "enum": ["celsius", "fahrenheit"],
                        "description": 'The unit to return the temperature in. Defaults to "celsius".',
                    },
                },
                "required": ["location", "date"],
            },
        },
    },
]

QWEN_DOC_OUTPUT = (
    "<tool_call>\n"
    '{"name": "get_current_temperature", "arguments": {"location": "San Francisco, CA, USA"}}\n'
    "</tool_call>\n"
    "<tool_call>\n"
    '{"name": "get_temperature_date", "arguments": {"location": "San Francisco, CA, USA", "date": "2024-10-01"}}\n'
    "</tool_call>"
)
"""What Qwen2.5-7B-Instruct generated for the example (before its end-of-turn token)."""

QWEN_DOC_PROMPT = (
    "<|im_start|>system\n"
    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n\n"
    "Current Date: 2024-09-30\n\n"
    "# Tools\n\n"
    "You may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n"
    "<tools>\n"
    + "\n".join(json.dumps(tool, ensure_ascii=False) for tool in QWEN_DOC_TOOLS)
    + "\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n"
    "<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n'
    "</tool_call><|im_end|>\n"
    "<|im_start|>user\n"
    "What's the temperature in San Francisco now? How about tomorrow?<|im_end|>\n"
    "<|im_start|>assistant\n" + QWEN_DOC_OUTPUT + "<|im_end|>\n"
    "<|im_start|>user\n"
    "<tool_response>\n"
    '{"temperature": 26.1, "location": "San Francisco, CA, USA", "unit": "celsius"}\n'
    "</tool_response>\n"
    "<tool_response>\n"
    '{"temperature": 25.9, "location": "San Francisco, CA, USA", "date": "2024-10-01", "unit": "celsius"}\n'
    "</tool_response><|im_end|>\n"
    "<|im_start|>assistant\n"
)
"""Qwen's documented prompt for the example, up to the final answer (which the model writes)."""

NAMES = ["get_current_temperature", "get_temperature_date"]


def qwen() -> Jinja2ChatFormatter:
    return Jinja2ChatFormatter(template=QWEN25_TEMPLATE, eos_token="<|im_end|>", bos_token="")


def plan(mode: str = "auto") -> ToolPlan:
    tools = [
        Tool(t["function"]["name"], t["function"]["description"], t["function"]["parameters"])
        for t in QWEN_DOC_TOOLS
    ]
    return ToolPlan(tools, tools, mode, True)  # type: ignore[arg-type]


def doc_conversation() -> list[ChatMessage]:
    """The documented conversation as an OpenAI client sends it (arguments as JSON strings)."""
    raw: list[dict[str, Any]] = [
        {
            "role": "system",
            "content": "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n\nCurrent Date: 2024-09-30",
        },
        {"role": "user", "content": "What's the temperature in San Francisco now? How about tomorrow?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {
                        "name": "get_current_temperature",
                        "arguments": '{"location": "San Francisco, CA, USA"}',
                    },
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {
                        "name": "get_temperature_date",
                        "arguments": '{"location": "San Francisco, CA, USA", "date": "2024-10-01"}',
                    },
                },
            ],
        },
        {
            "role": "tool",
            "tool_call_id": "call_1",
            "content": '{"temperature": 26.1, "location": "San Francisco, CA, USA", "unit": "celsius"}',
        },
        {
            "role": "tool",
            "tool_call_id": "call_2",
            "content": '{"temperature": 25.9, "location": "San Francisco, CA, USA", "date": "2024-10-01", '
            '"unit": "celsius"}',
        },
    ]
    return [ChatMessage.model_validate(message) for message in raw]


def test_qwen_template_renders_the_documented_prompt_from_an_openai_conversation() -> None:
    # Given Qwen2.5's template and the documented conversation in OpenAI's request shape
    formatter = qwen()
    assert template_renders_tools(formatter)
    # When the generator converts and renders it, with the tools offered
    messages, variables = render_messages(_chat_messages(doc_conversation()), plan(), template_tools=True)
    prompt = formatter(messages=messages, **variables).prompt
    # Then the prompt is Qwen's documented one, character for character
    assert prompt == QWEN_DOC_PROMPT


def test_tool_choice_none_leaves_the_tools_out_of_qwens_prompt() -> None:
    messages, variables = render_messages(
        _chat_messages(doc_conversation()), plan("none"), template_tools=True
    )
    prompt = qwen()(messages=messages, **variables).prompt
    assert "# Tools" not in prompt
    assert "<tool_response>" in prompt  # the earlier calls and results are still there


def test_a_template_without_tool_support_is_detected_and_given_the_tools_as_text() -> None:
    # Given SmolLM2's plain ChatML template (from the embedded GGUF)
    vocab = Llama(model_path=str(embedded_gguf()), vocab_only=True, verbose=False)
    smol = Jinja2ChatFormatter(
        template=vocab.metadata["tokenizer.chat_template"], eos_token="<|im_end|>", bos_token=""
    )
    assert not template_renders_tools(smol)
    # When the documented conversation is rendered for it
    messages, variables = render_messages(_chat_messages(doc_conversation()), plan(), template_tools=False)
    prompt = smol(messages=messages, **variables).prompt
    # Then the tools are in the system message, the calls in the markup, the results as a user turn
    assert variables == {}
    assert prompt.startswith("<|im_start|>system\nYou are Qwen")
    assert json.dumps(QWEN_DOC_TOOLS[0], ensure_ascii=False) in prompt
    assert QWEN_DOC_OUTPUT.split("\n</tool_call>")[0] in prompt
    assert "<|im_start|>user\n<tool_response>\n" in prompt
    assert prompt.count("<|im_start|>user") == 2
    assert "None" not in prompt


def test_qwens_recorded_output_is_read_as_two_tool_calls() -> None:
    parsed = parse_calls(QWEN_DOC_OUTPUT, NAMES)
    assert parsed.content == ""
    assert [(call.name, json.loads(call.arguments), call.complete) for call in parsed.calls] == [
        ("get_current_temperature", {"location": "San Francisco, CA, USA"}, True),
        ("get_temperature_date", {"location": "San Francisco, CA, USA", "date": "2024-10-01"}, True),
    ]
    assert len({call.id for call in parsed.calls}) == 2


@pytest.mark.parametrize("size", [1, 2, 3, 7, 16, 1000])
def test_streamed_in_any_pieces_the_calls_arrive_as_the_sdk_assembles_them(size: int) -> None:
    # Given the recorded output with some text before it, fed in pieces of one size
    text = "I will look that up.\n" + QWEN_DOC_OUTPUT
    parser = ToolCallParser(names=NAMES)
    events = []
    for start in range(0, len(text), size):
        events.extend(parser.feed(text[start : start + size]))
    events.extend(parser.finish())
    # Then content comes first, then for each call its id and name before any argument fragment,
    # and the fragments add up to the arguments, as the OpenAI SDK merges deltas by index
    content = "".join(e.text for e in events if isinstance(e, ContentEvent))
    assert content.strip() == "I will look that up."
    assembled: dict[int, dict[str, str]] = {}
    for event in events:
        if isinstance(event, CallStart):
            assert event.call.index not in assembled
            assembled[event.call.index] = {"name": event.call.name, "arguments": ""}
        elif isinstance(event, ArgumentsEvent):
            assembled[event.index]["arguments"] += event.fragment
    assert [json.loads(call["arguments"]) for call in assembled.values()] == [
        {"location": "San Francisco, CA, USA"},
        {"location": "San Francisco, CA, USA", "date": "2024-10-01"},
    ]
    assert [call["name"] for call in assembled.values()] == NAMES


def test_a_call_written_with_its_keys_in_another_order_is_still_read() -> None:
    parsed = parse_calls(
        '<tool_call>\n{"arguments": {"location": "Paris"}, "name": "get_current_temperature"}\n</tool_call>',
        NAMES,
    )
    assert [(c.name, json.loads(c.arguments)) for c in parsed.calls] == [
        ("get_current_temperature", {"location": "Paris"})
    ]


def test_an_answer_cut_inside_a_call_keeps_the_partial_arguments_as_incomplete() -> None:
    parser = ToolCallParser(names=NAMES)
    parser.feed('<tool_call>\n{"name": "get_temperature_date", "arguments": {"location": "San')
    parser.finish()
    assert [(c.name, c.arguments, c.complete) for c in parser.calls] == [
        ("get_temperature_date", '{"location": "San', False)
    ]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('<tool_call>\n{"name": "get_weather", "arguments": {}}\n</tool_call>', "not an offered tool"),
        ('<tool_call>\n{"name": "get_temperature_date", "arguments": [1]}\n</tool_call>', "JSON object"),
        ('<tool_call>\n{"name": "get_temperature_date", "arguments": {"a": 1}}\n</tool_cal>x', "not closed"),
        ("<tool_call>\n{not json}\n</tool_call>", "not valid JSON"),
        ('<tool_call>\n{"name": "get_temperature_date", "arguments": {"a": 1} x', "not closed"),
    ],
)
def test_markup_that_cannot_be_read_is_an_error_never_dropped_text(text: str, reason: str) -> None:
    with pytest.raises(ToolMarkupError, match=reason):
        parse_calls(text, NAMES)


def test_the_calls_grammar_compiles_and_names_only_the_allowed_tools() -> None:
    # Given Qwen's documented tools, with only one of them callable
    tools = plan().tools
    grammar = calls_grammar(ToolPlan(tools, [tools[1]], "required", False))
    # Then the grammar writes the Qwen markup for that tool alone, and llama.cpp compiles it
    assert '\\"name\\": \\"get_temperature_date\\"' in grammar
    assert "get_current_temperature" not in grammar
    assert "</tool_call>" in grammar
    vocab = Llama(model_path=str(embedded_gguf()), vocab_only=True, verbose=False)
    sampler = llama_cpp.llama_sampler_init_grammar(vocab._model.vocab, grammar.encode(), b"root")
    assert sampler
    llama_cpp.llama_sampler_free(sampler)
