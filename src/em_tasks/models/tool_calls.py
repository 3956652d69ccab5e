"""Tool calling for models run by the backend: the JSON tool-call prompt, and reading tool calls out of a reply.

Two formats, one parser:

- **native**: the model's chat template has a tools section (it reads ``tools``); the tool schemas go to
  ``apply_chat_template(tools=...)`` and the template writes them in the model's own way. Such models answer with
  ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` (Qwen, Hermes) or a bare
  ``{"name": ..., "parameters": {...}}`` (Llama 3).
- **json**: for templates without one (Gemma 3, SmolLM2), :func:`tool_prompt` is added to the system message. It asks
  for one ``{"tool": "<name>", "arguments": {...}}`` object per call, on a line of its own; tool results come back
  as a user turn (images included, so a screenshot a tool returns reaches a VLM).

:func:`parse_tool_calls` reads all of these. It never raises: a call it cannot read comes back with an ``error``,
which the harness returns to the agent as a tool error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

ToolFormat = Literal["auto", "native", "json"]
TOOL_FORMATS: tuple[str, ...] = get_args(ToolFormat)

_NAME_KEYS = ("tool", "name", "function")
_ARGUMENT_KEYS = ("arguments", "parameters", "args", "input")
_CALL_START = re.compile(r'\{\s*"(?:tool|name|function)"\s*:')
_TAGGED = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
_FENCE = re.compile(r"```(?:json|tool_call|tool_code)?\s*(.*?)```", re.DOTALL)

TOOL_PROMPT = """\
You can use tools. To call a tool, write a JSON object on a line of its own, like this:
{{"tool": "<tool name>", "arguments": {{"<argument>": <value>}}}}
Write one such line for each call. The results come back in the next message. When you have finished, reply to the
user in plain text, without any JSON.

Tools:
{tools}"""
"""The json format's instructions; ``{tools}`` is the list written by :func:`describe_tools`."""


@dataclass(frozen=True)
class ParsedCall:
    """One tool call read from a reply: its name and arguments, or why it could not be read."""

    name: str
    arguments: dict[str, Any]
    error: str | None = None


def tool_prompt(schemas: Sequence[Mapping[str, Any]]) -> str:
    """The json format's system-prompt addition for these tools (OpenAI-style function schemas)."""
    return TOOL_PROMPT.format(tools=describe_tools(schemas))


def describe_tools(schemas: Sequence[Mapping[str, Any]]) -> str:
    """One line per tool, ``- name(arg: type, ...): description``, then a line per argument's description."""
    lines = []
    for schema in schemas:
        function = schema.get("function", schema)
        params = function.get("parameters", {}) or {}
        required = set(params.get("required", []))
        props = params.get("properties", {}) or {}
        signature = ", ".join(f"{name}: {spec.get('type', 'any')}" + ("" if name in required else " (optional)")
                              for name, spec in props.items())
        lines.append(f"- {function['name']}({signature}): {function.get('description', '').strip()}")
        lines.extend(f"    {name}: {spec['description']}" for name, spec in props.items() if spec.get("description"))
    return "\n".join(lines)


def call_line(name: str, arguments: Mapping[str, Any]) -> str:
    """A call written the json format's way (how the agent's earlier calls appear in its history)."""
    return json.dumps({"tool": name, "arguments": dict(arguments)}, ensure_ascii=False)


def parse_tool_calls(text: str) -> tuple[str, list[ParsedCall]]:
    """The reply's text without its tool calls, and the calls in order (unreadable ones with an ``error``)."""
    found: list[tuple[int, list[ParsedCall]]] = []
    spans: list[tuple[int, int]] = []
    for match in _TAGGED.finditer(text):
        found.append((match.start(), _calls_in(match.group(1), whole=True)))
        spans.append(match.span())
    for match in _FENCE.finditer(text):
        if _overlaps(match.span(), spans) or not _CALL_START.search(match.group(1)):
            continue
        found.append((match.start(), _calls_in(match.group(1), whole=False)))
        spans.append(match.span())
    for match in _CALL_START.finditer(text):
        if _overlaps((match.start(), match.start() + 1), spans):
            continue
        call, end = _decode_at(text, match.start())
        found.append((match.start(), [call]))
        spans.append((match.start(), end))
    calls = [call for _, group in sorted(found, key=lambda item: item[0]) for call in group]
    return _without(text, spans).strip(), calls


def _calls_in(chunk: str, whole: bool) -> list[ParsedCall]:
    """Calls in a tagged or fenced chunk: JSON objects (or a list of them) that name a tool."""
    try:
        value = json.loads(chunk)
    except json.JSONDecodeError:
        starts = list(_CALL_START.finditer(chunk))
        if not starts:
            return [ParsedCall("", {}, f"tool call is not valid JSON: {chunk[:200]!r}")] if whole else []
        return [_decode_at(chunk, m.start())[0] for m in starts]
    items = value if isinstance(value, list) else [value]
    return [_from_object(item) for item in items]


def _decode_at(text: str, start: int) -> tuple[ParsedCall, int]:
    """The call whose JSON starts at ``start``, and where it ends (an unreadable one ends at its line's end)."""
    try:
        value, end = json.JSONDecoder().raw_decode(text, start)
    except json.JSONDecodeError as error:
        line_end = text.find("\n", start)
        end = len(text) if line_end < 0 else line_end
        return ParsedCall("", {}, f"tool call is not valid JSON ({error.msg}): {text[start:end][:200]!r}"), end
    return _from_object(value), end


def _from_object(value: Any) -> ParsedCall:
    if not isinstance(value, dict):
        return ParsedCall("", {}, f"a tool call must be a JSON object, got {json.dumps(value)[:200]}")
    if isinstance(value.get("function"), dict):  # OpenAI style: {"function": {"name": ..., "arguments": ...}}
        value = value["function"]
    name = next((value[k] for k in _NAME_KEYS if isinstance(value.get(k), str)), None)
    if not name:
        return ParsedCall("", {}, f'a tool call needs a "tool" name: {json.dumps(value)[:200]}')
    arguments = next((value[k] for k in _ARGUMENT_KEYS if k in value), {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            return ParsedCall(name, {}, f"the arguments of {name} are not valid JSON: {arguments[:200]!r}")
    if not isinstance(arguments, dict):
        return ParsedCall(name, {}, f'the "arguments" of {name} must be a JSON object, got {arguments!r}')
    return ParsedCall(name, arguments)


def _overlaps(span: tuple[int, int], spans: Sequence[tuple[int, int]]) -> bool:
    return any(span[0] < end and start < span[1] for start, end in spans)


def _without(text: str, spans: Sequence[tuple[int, int]]) -> str:
    out, position = [], 0
    for start, end in sorted(spans):
        out.append(text[position:start])
        position = max(position, end)
    out.append(text[position:])
    return re.sub(r"\n{3,}", "\n\n", "".join(out))


def template_has_tools(template: str | None) -> bool:
    """Whether a chat template reads the ``tools`` variable (so it can write tool schemas itself)."""
    return bool(template) and re.search(r"\btools\b", template) is not None
