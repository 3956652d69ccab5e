"""inspect-ai model providers ``em-hf``, ``em-lora`` and ``em-steer`` over the shared HF backend.

``--model em-hf/<name>`` where name is ``default``, ``default-vlm``, a ``.gguf`` file, a model folder or a hub id.
Backend args (``-M``): ``batch_size`` (16), ``dtype`` (auto: bfloat16 on GPUs and bf16-capable CPUs, else float32),
``device`` (cuda when available), ``gather_seconds`` (0.05), ``continuous`` (true: text prompts share one continuous
batch run by transformers' manager; false: static batches only). LoRA args (``adapters``, ``merge``, ``alpha`` ...) and
steering args (``direction``, ``layers``, ``coeff``, ``mode``, ``positions``) work on all three; see
:mod:`em_tasks.models.variants`. Unlike inspect's own ``hf`` provider these take images (``ContentImage``), so
image-grounded evals of local VLMs work.
"""

from __future__ import annotations

import logging
from typing import Any

from inspect_ai._util.content import ContentImage, ContentReasoning, ContentText
from inspect_ai.model import (
    ChatCompletionChoice,
    ChatMessage,
    ChatMessageAssistant,
    GenerateConfig,
    Logprob,
    Logprobs,
    ModelAPI,
    ModelOutput,
    ModelUsage,
    TopLogprob,
)
from inspect_ai.tool import ToolChoice, ToolInfo

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
        if tools:
            raise NotImplementedError("em-hf does not implement tool calling")
        result = await self.backend.generate(to_hf_messages(input), gen_params(config))
        return to_model_output(result, self.model_name, self.backend.info())

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


def to_hf_messages(messages: list[ChatMessage]) -> list[Message]:
    """Inspect chat messages as transformers chat messages (images decoded to PIL)."""
    out: list[Message] = []
    for message in messages:
        role = message.role if message.role in ("system", "user", "assistant") else "user"
        if isinstance(message.content, str):
            out.append({"role": role, "content": message.content})
            continue
        parts: list[dict[str, Any]] = []
        for part in message.content:
            if isinstance(part, ContentText):
                parts.append({"type": "text", "text": part.text})
            elif isinstance(part, ContentImage):
                parts.append({"type": "image", "image": load_image(part.image)})
            elif isinstance(part, ContentReasoning):
                continue
            else:
                raise NotImplementedError(f"em-hf cannot take {part.type} content")
        out.append({"role": role, "content": parts})
    return out


def to_model_output(result: GenResult, model_name: str, info: dict[str, Any]) -> ModelOutput:
    """A backend completion as an inspect ModelOutput (with logprobs when asked for)."""
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
    choice = ChatCompletionChoice(
        message=ChatMessageAssistant(content=result.text, model=model_name, source="generate"),
        stop_reason="stop" if result.stop_reason == "stop" else "max_tokens",
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
