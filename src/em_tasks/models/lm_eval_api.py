"""lm-eval models ``em-hf``, ``em-lora`` and ``em-steer``: thin adapters over the shared HF backend.

    em-tasks lm-eval --include_path task_configs --tasks em_text_misalign \\
        --model em-lora --model_args pretrained=google/gemma-3-4b-it,adapters=runs/a

``pretrained`` is what follows ``em-hf/`` in inspect (``default``, ``default-vlm``, a ``.gguf`` file, a folder or a
hub id); the other model args mean what they mean for the inspect providers (see :mod:`em_tasks.models.variants`),
except the batch size, which is lm-eval's own ``--batch_size`` (``auto`` = 16). Write a list value in brackets or
quotes, since lm-eval splits model args at commas: ``adapters=[a:0.5,b:0.5]``, ``layers=[10,12]``.

Generation prompts always go through the model's chat template, images included: a plain prompt is one user turn,
and with ``--apply_chat_template`` the turns lm-eval builds (system, few-shot) are kept as turns. An ``<image>`` in a
prompt marks where the request's next image goes; images without a placeholder come before the text. Scoring
(``loglikelihood``, ``loglikelihood_rolling``) is lm-eval's own HFLM on the text as given, over the same weights and
hooks. Importing this module registers the models with lm-eval; ``em-tasks lm-eval`` does that before it hands over
to lm-eval's CLI.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch
from lm_eval.api.instance import Instance
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM
from tqdm import tqdm

from em_tasks.models.backend import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_NEW_TOKENS,
    GenParams,
    HFBackend,
    Message,
    get_backend,
)
from em_tasks.models.variants import parse_model_args

logger = logging.getLogger(__name__)

IMAGE_PLACEHOLDER = "<image>"
"""lm-eval's image placeholder (``lm_eval.models.hf_vlms.DEFAULT_IMAGE_PLACEHOLDER``)."""

GEN_KWARGS = ("until", "max_gen_toks", "do_sample", "temperature", "top_p", "top_k", "seed")
_CHAT_KEY = "em_chat"  # marks a context made by apply_chat_template: JSON of the turns, rendered at generation


@register_model("em-hf")
class EmHFLM(HFLM):
    """``--model em-hf``: lm-eval's :class:`HFLM` over an :class:`HFBackend`'s loaded model.

    Scoring (``loglikelihood``, ``loglikelihood_rolling``) is HFLM's own, its forward passes wrapped in the backend's
    :meth:`~HFBackend.held` (lock and steering hooks; as lm-eval's ``hf_steered.py`` wraps them in its hooks);
    ``generate_until`` goes through the backend, so chat templates and images are handled as for the inspect
    providers.

    Args:
        pretrained: Model name, as after ``em-hf/`` in inspect.
        batch_size: lm-eval's ``--batch_size``: prompts per forward pass; ``auto`` means 16.
        max_batch_size: lm-eval's ``--max_batch_size``: upper bound for ``auto``.
        device: lm-eval's ``--device``; its default ``cuda:0`` falls back to the CPU where there is no GPU.
        **model_args: Backend, LoRA and steering args, as for the inspect providers.
    """

    family = "em-hf"
    MULTIMODAL = True  # prompts may carry images; a text-only backend says so when one arrives

    def __init__(
        self,
        pretrained: str = "default",
        batch_size: int | str = 1,
        max_batch_size: int | None = None,
        device: str | None = None,
        **model_args: Any,
    ) -> None:
        args = parse_model_args(self.family, {k: _list_arg(v) for k, v in model_args.items()})
        backend_args = {**args.backend, "batch_size": _batch_size(batch_size, max_batch_size)}
        if device is not None and (torch.cuda.is_available() or not str(device).startswith("cuda")):
            backend_args["device"] = device  # lm-eval's default is cuda:0 even where there is none
        # HFLM names its model type ``self.backend`` ("causal"), so the shared backend goes by another name
        self.em_backend: HFBackend = get_backend(str(pretrained), lora=args.lora, steering=args.steering,
                                                 **backend_args)
        super().__init__(pretrained=self.em_backend.model, tokenizer=self.em_backend.tokenizer, backend="causal",
                         batch_size=self.em_backend.batch_size, softmax_dtype=torch.float32)
        note = self.em_backend.info().get("note")
        if note:
            logger.warning(note)

    # --- forward passes: HFLM's, held like the backend's own (its lock and steering hooks) ----------------------

    def _model_call(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        with self.em_backend.held():
            return super()._model_call(*args, **kwargs)

    def _model_generate(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        with self.em_backend.held():
            return super()._model_generate(*args, **kwargs)

    # --- requests --------------------------------------------------------------------------------------------

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        """One completion per request. All are handed to the backend at once, which batches them as it batches
        inspect's concurrent samples (text prompts in one continuous batch, others by settings and modality)."""
        prepared = [(to_messages(r.args), gen_params(r.args[1])) for r in requests]

        async def run() -> list[str]:
            with tqdm(total=len(requests), disable=disable_tqdm, desc="em generate_until") as bar:
                async def one(request: Instance, messages: list[Message], params: GenParams) -> str:
                    text = (await self.em_backend.generate(messages, params)).text
                    self.cache_hook.add_partial("generate_until", request.args[:2], text)
                    bar.update(1)
                    return text

                return list(await asyncio.gather(*(one(r, *p) for r, p in zip(requests, prepared, strict=True))))

        return asyncio.run(run())

    def loglikelihood(self, requests: list[Instance], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """HFLM's loglikelihood on text (a context from :meth:`apply_chat_template` is rendered first)."""
        if any(len(r.args) > 2 and (r.args[2] or {}).get("visual") for r in requests):
            raise NotImplementedError("em models score loglikelihood on text only; drop the images from the task")
        return super().loglikelihood([replace(r, arguments=r.args[:2]) if len(r.args) > 2 else r for r in requests],
                                     disable_tqdm=disable_tqdm)

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """lm-eval's split for a text context. A chat context is rendered and split where the rendered prompt ends:
        lm-eval would move the generation prompt's trailing newline into the continuation and so score the
        template's own token as part of every answer."""
        turns = _chat_turns(context)
        if turns is None:
            return super()._encode_pair(context, continuation)
        prompt = self.em_backend.render(turns)[0]
        whole, ctx = self.tok_encode(prompt + continuation), self.tok_encode(prompt)
        return ctx, whole[len(ctx):]

    # --- chat templates ----------------------------------------------------------------------------------------

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """Keep lm-eval's turns as they are: the backend renders them (with images) when it generates."""
        if not add_generation_prompt:
            raise NotImplementedError("em models do not continue a prefilled assistant turn: drop gen_prefix")
        turns = [{"role": m["role"], "content": m["content"]} for m in chat_history]
        return json.dumps({_CHAT_KEY: turns}, ensure_ascii=False)

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        template = getattr(self.em_backend.processor, "chat_template", None) or self.tokenizer.chat_template
        return template if isinstance(template, str) else None

    def get_model_info(self) -> dict[str, Any]:
        """What was loaded (recorded in lm-eval's results ``config``; no hub look-up, unlike HFLM's)."""
        return {"em_model": self.em_backend.info()}


@register_model("em-lora")
class EmLora(EmHFLM):
    """``--model em-lora --model_args pretrained=BASE,adapters=PATH[:W]``: LoRA adapters merged into the weights."""

    family = "em-lora"


@register_model("em-steer")
class EmSteer(EmHFLM):
    """``--model em-steer --model_args pretrained=BASE,direction=FILE,layers=N,coeff=C``: steering hooks."""

    family = "em-steer"


def to_messages(args: tuple[Any, ...]) -> list[Message]:
    """A generate_until request ``(context, gen_kwargs[, {"visual": images}])`` as backend chat messages.

    ``<image>`` placeholders take the images in order; images left over lead the last user turn (as in the
    inspect tasks, where the image comes before the text).
    """
    images = list(args[2].get("visual") or []) if len(args) > 2 and args[2] else []
    turns = _chat_turns(args[0]) or [{"role": "user", "content": args[0]}]
    messages = [_with_images(turn, images) for turn in turns]
    if images:
        last = max(i for i, m in enumerate(messages) if m["role"] == "user")
        parts = messages[last]["content"]
        if isinstance(parts, str):
            parts = [{"type": "text", "text": parts}]
        messages[last] = {**messages[last], "content": [{"type": "image", "image": im} for im in images] + parts}
    return messages


def gen_params(gen_kwargs: Mapping[str, Any]) -> GenParams:
    """lm-eval generation kwargs as backend settings (``do_sample=false`` or ``temperature=0``: greedy)."""
    unknown = sorted(set(gen_kwargs) - set(GEN_KWARGS))
    if unknown:
        raise ValueError(f"em models: unsupported generation kwarg(s) {unknown}; supported: {', '.join(GEN_KWARGS)}")
    until = gen_kwargs.get("until") or ()
    stop = tuple(s for s in ([until] if isinstance(until, str) else until) if s)
    temperature = gen_kwargs.get("temperature")
    if gen_kwargs.get("do_sample") is False or (temperature is not None and float(temperature) == 0.0):
        temperature = 0.0
    return GenParams(
        max_new_tokens=int(gen_kwargs.get("max_gen_toks", DEFAULT_MAX_NEW_TOKENS)),
        temperature=None if temperature is None else float(temperature),
        top_p=None if gen_kwargs.get("top_p") is None else float(gen_kwargs["top_p"]),
        top_k=None if gen_kwargs.get("top_k") is None else int(gen_kwargs["top_k"]),
        seed=None if gen_kwargs.get("seed") is None else int(gen_kwargs["seed"]),
        stop=stop,
    )


def _batch_size(value: int | str, maximum: int | None) -> int:
    text = str(value).strip().lower()
    if text.startswith("auto"):
        return min(DEFAULT_BATCH_SIZE, maximum) if maximum else DEFAULT_BATCH_SIZE
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"--batch_size must be an integer or auto, got {value!r}") from None


def _list_arg(value: Any) -> Any:
    """A list-valued model arg as the comma-separated text the inspect providers take."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, str) and value.startswith("[") and value.endswith("]"):
        return value[1:-1]
    return value


def _chat_turns(context: str) -> list[dict[str, Any]] | None:
    if not context.startswith('{"' + _CHAT_KEY):
        return None
    try:
        turns = json.loads(context)[_CHAT_KEY]
    except (json.JSONDecodeError, KeyError, TypeError):
        return None
    return turns if isinstance(turns, list) else None


def _with_images(turn: Mapping[str, Any], images: list[Any]) -> Message:
    """A turn whose ``<image>`` placeholders take the next images (consumed from ``images``)."""
    text = str(turn["content"])
    if IMAGE_PLACEHOLDER not in text:
        return {"role": turn["role"], "content": text}
    pieces = text.split(IMAGE_PLACEHOLDER)
    if len(pieces) - 1 > len(images):
        raise ValueError(f"The prompt has {len(pieces) - 1} {IMAGE_PLACEHOLDER} placeholder(s) but the request "
                         f"carries {len(images)} image(s); check the task's doc_to_image")
    parts: list[dict[str, Any]] = []
    for k, piece in enumerate(pieces):
        if k:
            parts.append({"type": "image", "image": images.pop(0)})
        if piece:
            parts.append({"type": "text", "text": piece})
    return {"role": turn["role"], "content": parts}

