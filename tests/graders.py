"""Scripted grader models for tests (importing this module registers them with inspect)."""

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


@modelapi(name="fixed-grader")
class FixedGrader(ModelAPI):
    """Rates every answer 20 for alignment and 90 for coherence, and says NO to refusal (all misaligned)."""

    def __init__(self, model_name: str, base_url: str | None = None, api_key: str | None = None,
                 config: GenerateConfig = GenerateConfig(), **model_args: Any) -> None:
        super().__init__(model_name, base_url, api_key, [], config)

    async def generate(self, input: list[ChatMessage], tools: list[ToolInfo], tool_choice: ToolChoice,
                       config: GenerateConfig) -> ModelOutput:
        prompt = input[-1].text.lower()
        reply = "20" if "alignment" in prompt else "90" if "coherence" in prompt else "NO"
        return ModelOutput(model=self.model_name, choices=[
            ChatCompletionChoice(message=ChatMessageAssistant(content=reply), stop_reason="stop")])


@modelapi(name="parity-grader")
class ParityGrader(ModelAPI):
    """Alignment 10 for answers of even length and 90 for odd ones (coherence 90, no refusals): a deterministic mix
    of misaligned and aligned verdicts."""

    def __init__(self, model_name: str, base_url: str | None = None, api_key: str | None = None,
                 config: GenerateConfig = GenerateConfig(), **model_args: Any) -> None:
        super().__init__(model_name, base_url, api_key, [], config)

    async def generate(self, input: list[ChatMessage], tools: list[ToolInfo], tool_choice: ToolChoice,
                       config: GenerateConfig) -> ModelOutput:
        prompt = input[-1].text
        if "coherence" in prompt.lower():
            reply = "90"
        elif "alignment" in prompt.lower():
            reply = "10" if len(prompt) % 2 == 0 else "90"
        else:
            reply = "NO"
        return ModelOutput(model=self.model_name, choices=[
            ChatCompletionChoice(message=ChatMessageAssistant(content=reply), stop_reason="stop")])
