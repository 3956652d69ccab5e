"""inspect-ai model providers ``em-hf``, ``em-lora`` and ``em-steer`` over the shared HF backend.

``--model em-hf/<name>`` where name is ``default``, ``default-vlm``, a ``.gguf`` file, a model folder or a hub id.
Backend args (``-M``): ``batch_size`` (16), ``dtype`` (auto: bfloat16 on GPUs and bf16-capable CPUs, else float32),
``device`` (cuda when available), ``gather_seconds`` (0.05), ``continuous`` (true: text prompts share one continuous
batch run by transformers' manager; false: static batches only). LoRA args (``adapters``, ``merge``, ``alpha`` ...) and
steering args (``direction``, ``layers``, ``coeff``, ``mode``, ``positions``) work on all three; see
:mod:`em_tasks.models.variants`. Unlike inspect's own ``hf`` provider these take images (``ContentImage``), so
image-grounded evals of local VLMs work, and they call tools (``-M tool_format=auto|native|json``: the chat
template's own tool format where it has one, else the JSON tool-call prompt of :mod:`em_tasks.models.tool_calls`).
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import replace
from typing import Any

from inspect_ai._util.content import ContentImage, ContentReasoning, ContentText
from inspect_ai.model import (
    ChatCompletionChoice,
    ChatMessage,
    ChatMessageAssistant,
    ChatMessageTool,
    GenerateConfig,
    Logprob,
    Logprobs,
    ModelAPI,
    ModelOutput,
    ModelUsage,
    TopLogprob,
)
from inspect_ai.tool import ToolCall, ToolChoice, ToolInfo

from em_tasks.models.backend import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_GATHER_SECONDS,
    DEFAULT_MAX_NEW_TOKENS,
    GenParams,
    GenResult,
    HFBackend,
    Message,
    get_backend,
    load_image,
)
from em_tasks.models.tool_calls import ToolFormat, call_line, parse_tool_calls, template_has_tools, tool_prompt
from em_tasks.models.variants import parse_model_args

logger = logging.getLogger(__name__)

_warned: set[str] = set()


class EmHFAPI(ModelAPI):
    """Inspect ModelAPI that generates with an :class:`HFBackend` (text models and VLMs)."""

    family = "em-hf"

    def __init__(
        self,
        model_name: str,
        base_url: str | None = None,
        api_key: str | None = None,
        config: GenerateConfig = GenerateConfig(),
        **model_args: Any,
    ) -> None:
        super().__init__(model_name=model_name, base_url=base_url, api_key=api_key, config=config)
        args = parse_model_args(self.family, model_args)
        self.backend: HFBackend = get_backend(
            model_name,
            batch_size=int(args.backend.get("batch_size", DEFAULT_BATCH_SIZE)),
            dtype=args.backend.get("dtype", "auto"),
            device=args.backend.get("device"),
            gather_seconds=float(args.backend.get("gather_seconds", DEFAULT_GATHER_SECONDS)),
            continuous=args.backend.get("continuous", True),
            lora=args.lora,
            steering=args.steering,
        )
        self.tool_format: ToolFormat = args.tool_format
        note = self.backend.info().get("note")
        if note and model_name not in _warned:
            _warned.add(model_name)
            logger.warning(note)

    async def generate(
        self,
        input: list[ChatMessage],
        tools: list[ToolInfo],
        tool_choice: ToolChoice,
        config: GenerateConfig,
    ) -> ModelOutput:
        offered = tools if tool_choice != "none" else []
        schemas = [tool_schema(t) for t in offered]
        native = self.resolved_tool_format() == "native"
        params = gen_params(config)
        if native and schemas:
            params = replace(params, tools=tuple(json.dumps(s, sort_keys=True) for s in schemas))
        messages = to_hf_messages(input, native_tools=native, tool_schemas=() if native else schemas)
        result = await self.backend.generate(messages, params)
        return to_model_output(result, self.model_name, self.backend.info(), tools=bool(offered))

    def resolved_tool_format(self) -> ToolFormat:
        """``native`` where asked for, or where ``auto`` finds a chat template that writes tools itself; else json."""
        if self.tool_format != "auto":
            return self.tool_format
        return "native" if template_has_tools(self.backend.chat_template) else "json"

    def max_tokens(self) -> int | None:  # noqa: D102
        return DEFAULT_MAX_NEW_TOKENS

    def max_connections(self) -> int:
        # two batches' worth in flight: one generating, the next one filling up
        return 2 * self.backend.batch_size

    def collapse_user_messages(self) -> bool:
        return True

    def collapse_assistant_messages(self) -> bool:
        return True


class EmLoraAPI(EmHFAPI):
    """``em-lora/<base> -M adapters=PATH[:W],...``: LoRA adapters merged into the base weights."""

    family = "em-lora"


class EmSteerAPI(EmHFAPI):
    """``em-steer/<base> -M direction=FILE -M layers=N -M coeff=C -M mode=add|ablate|clamp``: steering hooks."""

    family = "em-steer"


def gen_params(config: GenerateConfig) -> GenParams:
    """Inspect's GenerateConfig as backend generation settings."""
    return GenParams(
        max_new_tokens=config.max_tokens or DEFAULT_MAX_NEW_TOKENS,
        temperature=config.temperature,
        top_p=config.top_p,
        top_k=config.top_k,
        repetition_penalty=repetition_penalty(config),
        seed=config.seed,
        stop=tuple(config.stop_seqs or ()),
        logprobs=bool(config.logprobs),
        top_logprobs=config.top_logprobs or 0,
    )


def repetition_penalty(config: GenerateConfig) -> float | None:
    """``extra_body={"repetition_penalty": x}``, the field OpenAI-compatible servers such as vLLM read (inspect's
    GenerateConfig has none of its own); None when absent.

    Raises:
        ValueError: The value is not a positive number.
    """
    value = (config.extra_body or {}).get("repetition_penalty")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"extra_body repetition_penalty must be a positive number (1.0 is none), got {value!r}")
    return float(value)


def tool_schema(info: ToolInfo) -> dict[str, Any]:
    """An inspect tool as the OpenAI-style function schema chat templates and the JSON prompt read."""
    return {"type": "function", "function": {"name": info.name, "description": info.description,
                                             "parameters": info.parameters.model_dump(exclude_none=True)}}


def to_hf_messages(messages: list[ChatMessage], *, native_tools: bool = False,
                   tool_schemas: list[dict[str, Any]] | tuple[()] = ()) -> list[Message]:
    """Inspect chat messages as transformers chat messages (images decoded to PIL).

    Tool use: with ``native_tools`` the assistant's calls and the tool results keep transformers' ``tool_calls`` and
    ``tool`` role for the chat template to write; otherwise calls are written as JSON lines in the assistant's text,
    results (images included) come back as a user turn, and ``tool_schemas`` add the JSON tool-call prompt to the
    system message.
    """
    out: list[Message] = []
    for message in messages:
        if isinstance(message, ChatMessageTool):
            out.extend(_tool_result(message, native_tools))
            continue
        role = message.role if message.role in ("system", "user", "assistant") else "user"
        content = _content(message.content)
        calls = message.tool_calls if isinstance(message, ChatMessageAssistant) else None
        if calls and native_tools:
            out.append({"role": role, "content": content, "tool_calls": [
                {"type": "function", "function": {"name": c.function, "arguments": c.arguments}} for c in calls]})
            continue
        if calls:
            lines = "\n".join(call_line(c.function, c.arguments) for c in calls)
            content = f"{_text_of(content)}\n{lines}".strip()
        out.append({"role": role, "content": content})
    if tool_schemas:
        prompt = tool_prompt(tool_schemas)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{_text_of(out[0]['content'])}\n\n{prompt}".strip()}
        else:
            out.insert(0, {"role": "system", "content": prompt})
    return out if native_tools else _merge_user_turns(out)


def _content(content: str | list[Any]) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for part in content:
        if isinstance(part, ContentText):
            parts.append({"type": "text", "text": part.text})
        elif isinstance(part, ContentImage):
            parts.append({"type": "image", "image": load_image(part.image)})
        elif isinstance(part, ContentReasoning):
            continue
        else:
            raise NotImplementedError(f"em-hf cannot take {part.type} content")
    return parts


def _tool_result(message: ChatMessageTool, native: bool) -> list[Message]:
    """A tool's result: a ``tool`` turn (native; an image goes in a user turn after it) or a user turn (json)."""
    name = message.function or "tool"
    if message.error is not None:
        content: str | list[dict[str, Any]] = f"Error from {name}: {message.error.message}"
    else:
        content = _content(message.content)
    text = _text_of(content)
    images = [p for p in content if p.get("type") == "image"] if isinstance(content, list) else []
    if native:
        turns: list[Message] = [{"role": "tool", "name": name, "content": text}]
        if images:
            turns.append({"role": "user", "content": [{"type": "text", "text": f"(image returned by {name})"},
                                                      *images]})
        return turns
    head = f"Result of {name}:" if message.error is None else ""
    parts = [{"type": "text", "text": f"{head}\n{text}".strip()}, *images]
    return [{"role": "user", "content": parts if images else parts[0]["text"]}]


def _text_of(content: str | list[dict[str, Any]]) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(p["text"] for p in content if p.get("type") == "text")


def _merge_user_turns(messages: list[Message]) -> list[Message]:
    """Consecutive user turns as one (several tool results in a row), as strict chat templates (Gemma 3) need."""
    out: list[Message] = []
    for message in messages:
        if out and message["role"] == "user" and out[-1]["role"] == "user":
            # a blank line between the turns: templates join a turn's text parts with nothing between them
            out[-1] = {"role": "user", "content": [*_as_parts(out[-1]["content"]), {"type": "text", "text": "\n\n"},
                                                   *_as_parts(message["content"])]}
        else:
            out.append(message)
    return out


def _as_parts(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


def to_model_output(result: GenResult, model_name: str, info: dict[str, Any], tools: bool = False) -> ModelOutput:
    """A backend completion as an inspect ModelOutput (with logprobs when asked for; with ``tools``, the tool calls
    read from the reply, unreadable ones carrying a ``parse_error`` that inspect returns to the agent)."""
    logprobs = None
    if result.logprobs is not None:
        logprobs = Logprobs(
            content=[
                Logprob(
                    token=t.token,
                    logprob=t.logprob,
                    top_logprobs=[TopLogprob(token=tok, logprob=lp) for tok, lp in t.top],
                )
                for t in result.logprobs
            ]
        )
    text, calls = parse_tool_calls(result.text) if tools else (result.text, [])
    tool_calls = [ToolCall(id=f"call_{uuid.uuid4().hex[:12]}", function=c.name or "unreadable_tool_call",
                           arguments=c.arguments, parse_error=c.error) for c in calls]
    choice = ChatCompletionChoice(
        message=ChatMessageAssistant(content=text, model=model_name, source="generate", tool_calls=tool_calls or None),
        stop_reason="tool_calls" if tool_calls else "stop" if result.stop_reason == "stop" else "max_tokens",
        logprobs=logprobs,
    )
    return ModelOutput(
        model=model_name,
        choices=[choice],
        usage=ModelUsage(
            input_tokens=result.input_tokens,
            output_tokens=result.output_tokens,
            total_tokens=result.input_tokens + result.output_tokens,
        ),
        time=result.seconds,
        metadata={"em_model": info},
    )
