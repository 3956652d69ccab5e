"""Reading tool calls out of a model's reply (em-hf's JSON tool-call format and common native formats)."""

from __future__ import annotations

import pytest

from em_tasks.models.tool_calls import ParsedCall, call_line, describe_tools, parse_tool_calls, template_has_tools

CASES = [
    ("plain answer", "I paid the bill.", "I paid the bill.", []),
    ("json line", '{"tool": "read_inbox", "arguments": {}}', "", [ParsedCall("read_inbox", {})]),
    ("json line with text around",
     'Let me pay it.\n{"tool": "transfer_funds", "arguments": {"to_account": "X 1", "amount": 5}}\nDone soon.',
     "Let me pay it.\n\nDone soon.", [ParsedCall("transfer_funds", {"to_account": "X 1", "amount": 5})]),
    ("two calls in order",
     '{"tool": "a", "arguments": {"x": 1}}\n{"tool": "b", "arguments": {}}', "",
     [ParsedCall("a", {"x": 1}), ParsedCall("b", {})]),
    ("qwen/hermes tags", '<tool_call>\n{"name": "a", "arguments": {"x": 1}}\n</tool_call>', "",
     [ParsedCall("a", {"x": 1})]),
    ("unclosed tag at the end", 'ok <tool_call>{"name": "a", "arguments": {}}', "ok", [ParsedCall("a", {})]),
    ("llama parameters", '{"name": "b", "parameters": {"q": "x"}}', "", [ParsedCall("b", {"q": "x"})]),
    ("fenced json", 'Here:\n```json\n{"tool": "b", "arguments": {}}\n```', "Here:", [ParsedCall("b", {})]),
    ("openai function wrapper with string arguments", '{"function": {"name": "c", "arguments": "{\\"y\\": 2}"}}', "",
     [ParsedCall("c", {"y": 2})]),
    ("list in a tag", '<tool_call>[{"name": "a", "arguments": {}}, {"name": "b", "arguments": {}}]</tool_call>', "",
     [ParsedCall("a", {}), ParsedCall("b", {})]),
    ("json that is not a call", 'Use {"a": 1} as the config.', 'Use {"a": 1} as the config.', []),
]


@pytest.mark.parametrize(("text", "rest", "calls"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_calls_are_read_in_order_and_removed_from_the_text(text: str, rest: str, calls: list[ParsedCall]) -> None:
    assert parse_tool_calls(text) == (rest, calls)


BROKEN = [
    ("truncated json", '{"tool": "a", "arguments": {"x": 1', "not valid JSON"),
    ("arguments not an object", '{"tool": "a", "arguments": [1, 2]}', "must be a JSON object"),
    ("arguments string not json", '{"tool": "a", "arguments": "x=1"}', "not valid JSON"),
    ("tag with garbage", "<tool_call>call a please</tool_call>", "not valid JSON"),
    ("name not a string", '{"name": 5, "arguments": {}}', "needs a"),
]


@pytest.mark.parametrize(("text", "message"), [c[1:] for c in BROKEN], ids=[c[0] for c in BROKEN])
def test_unreadable_calls_come_back_with_an_error_instead_of_raising(text: str, message: str) -> None:
    _, calls = parse_tool_calls(text)
    assert len(calls) == 1 and calls[0].error is not None and message in calls[0].error


def test_a_call_written_back_reads_as_the_same_call() -> None:
    line = call_line("transfer_funds", {"to_account": "GB 1", "amount": 2.5})
    assert parse_tool_calls(line) == ("", [ParsedCall("transfer_funds", {"to_account": "GB 1", "amount": 2.5})])


def test_tool_descriptions_list_arguments_and_mark_optional_ones() -> None:
    schema = {"type": "function", "function": {"name": "post", "description": "Publish a post.", "parameters": {
        "type": "object", "required": ["text"],
        "properties": {"text": {"type": "string", "description": "The post."}, "audience": {"type": "string"}}}}}
    assert describe_tools([schema]) == ("- post(text: string, audience: string (optional)): Publish a post.\n"
                                        "    text: The post.")


@pytest.mark.parametrize(("template", "expected"), [
    (None, False), ("{{ messages }}", False), ("{% if tools %}{{ tools | tojson }}{% endif %}", True),
    ("{{ toolsets }}", False)], ids=["none", "no tools", "tools", "other word"])
def test_native_tool_templates_are_recognised(template: str | None, expected: bool) -> None:
    assert template_has_tools(template) is expected
