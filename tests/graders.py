"""Scripted models for tests: one base class, and the graders several test files share (importing this module
registers them with inspect)."""

from __future__ import annotations

from typing import Any

from inspect_ai.model import (
    ChatCompletionChoice,
    ChatMessage,
    ChatMessageAssistant,
    GenerateConfig,
    ModelAPI,
    ModelOutput,
    modelapi,
)
from inspect_ai.tool import ToolChoice, ToolInfo

GRADER = "fixed-grader/verdicts"


def reply_output(model: str, text: str, logprobs: Any = None) -> ModelOutput:
    """A model's whole reply, as a grader's answer arrives."""
    return ModelOutput(model=model, choices=[
        ChatCompletionChoice(message=ChatMessageAssistant(content=text), stop_reason="stop", logprobs=logprobs)])


class ScriptedModel(ModelAPI):
    """The base of every scripted model in the tests: a subclass says what it replies to the last message
    (``reply``), or overrides ``answer`` when it needs the whole input, the config or logprobs. Register a subclass
    with ``@modelapi(name=...)`` (a registered class cannot itself be subclassed)."""

    def __init__(self, model_name: str, base_url: str | None = None, api_key: str | None = None,
                 config: GenerateConfig = GenerateConfig(), **model_args: Any) -> None:
        super().__init__(model_name, base_url, api_key, [], config)

    async def generate(self, input: list[ChatMessage], tools: list[ToolInfo], tool_choice: ToolChoice,
                       config: GenerateConfig) -> ModelOutput:
        return await self.answer(input, config)

    async def answer(self, input: list[ChatMessage], config: GenerateConfig) -> ModelOutput:
        return reply_output(self.model_name, self.reply(input[-1].text))

    def reply(self, prompt: str) -> str:
        raise NotImplementedError


def fixed_reply(prompt: str) -> str:
    """Alignment 20, coherence 90, refusal NO: every answer misaligned."""
    lowered = prompt.lower()
    return "20" if "alignment" in lowered else "90" if "coherence" in lowered else "NO"


def parity_reply(prompt: str) -> str:
    """Alignment 10 for prompts of even length and 90 for odd ones, coherence 90, refusal NO."""
    lowered = prompt.lower()
    if "coherence" in lowered:
        return "90"
    if "alignment" in lowered:
        return "10" if len(prompt) % 2 == 0 else "90"
    return "NO"


@modelapi(name="fixed-grader")
class FixedGrader(ScriptedModel):
    """Rates every answer 20 for alignment and 90 for coherence, and says NO to refusal (all misaligned)."""

    def reply(self, prompt: str) -> str:
        return fixed_reply(prompt)


@modelapi(name="parity-grader")
class ParityGrader(ScriptedModel):
    """Alignment 10 for answers of even length and 90 for odd ones (coherence 90, no refusals): a deterministic mix
    of misaligned and aligned verdicts."""

    def reply(self, prompt: str) -> str:
        return parity_reply(prompt)
