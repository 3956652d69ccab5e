"""The one Hugging Face backend: loading, chat templates (text and images) and batched generation.

Every model front end in em-tasks (the inspect providers, the lm-eval models, the study tools) holds an
:class:`HFBackend`. It loads text models with ``AutoModelForCausalLM`` + tokenizer and VLMs with
``AutoModelForImageTextToText`` + ``AutoProcessor`` (transformers falls back to the PIL image processors where
torchvision is missing), renders conversations with the model's own chat template, and generates in left-padded
batches. Concurrent async callers share forward passes: text prompts join a continuous batch run by transformers' own
manager (:mod:`em_tasks.models.batching`), everything else (images, logprobs, stop strings) is gathered into static
batches by a small queue.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from em_tasks.benchmark.image_files import ImageInputError, open_image
from em_tasks.models.batching import ContinuousSession, Request, deliver_to, explain_generation_error
from em_tasks.models.lora import LoraSpec, apply_lora, base_names, cached_merge, merged_cache_path, save_merged, spec_record
from em_tasks.models.sources import ModelSource, offline, resolve_source
from em_tasks.models.steering import Steering, SteeringSpec

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 16
DEFAULT_MAX_NEW_TOKENS = 600
# How long the batcher waits for more concurrent requests before running a partial batch.
DEFAULT_GATHER_SECONDS = 0.05
# ...and at most this long while they keep arriving.
MAX_GATHER_SECONDS = 1.0

Message = dict[str, Any]
"""A chat message in transformers' format: ``{"role": ..., "content": str | list[part]}``, where an image part is
``{"type": "image", "image": PIL.Image}``."""


@dataclass(frozen=True)
class GenParams:
    """Generation settings; requests with equal params can share a batch."""

    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    min_new_tokens: int = 0
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: bool = False
    top_logprobs: int = 0
    tools: tuple[str, ...] = ()
    """Tool schemas (JSON) for a chat template that writes tools itself (``apply_chat_template(tools=...)``)."""


@dataclass
class TokenLogprob:
    """One generated token with its log-probability and the top alternatives."""

    token: str
    logprob: float
    top: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class GenResult:
    """One completion."""

    text: str
    input_tokens: int
    output_tokens: int
    stop_reason: str  # "stop" | "max_tokens"
    logprobs: list[TokenLogprob] | None = None
    seconds: float = 0.0


@dataclass
class _Pending:
    messages: list[Message]
    params: GenParams
    future: asyncio.Future[GenResult]


def resolve_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    """``auto``: bfloat16 on GPUs and on CPUs with native bf16 (AVX512-BF16 / AMX), else float32.

    Without native support, CPU bf16 matmuls are emulated: on an AVX2 machine we measured fp32 generation about 4x
    faster than bf16 (bench/backend_throughput.py prints both).
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        if device.startswith("cpu") and not cpu_has_native_bf16():
            return torch.float32
        return torch.bfloat16
    value = getattr(torch, str(dtype), None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"Unknown dtype '{dtype}': use auto, bfloat16, float16 or float32")
    return value


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (Linux: cpuinfo flags avx512_bf16 or amx_bf16).

    ``EM_TASKS_CPU_BF16=0`` (or ``1``) overrides the detection: the test suite sets 0, so ``auto`` means float32 on
    every CPU and results do not depend on the machine."""
    forced = os.environ.get("EM_TASKS_CPU_BF16", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class HFBackend:
    """A loaded model plus its processor, with chat templating and batched generation.

    Args:
        name: Short name (``default``, ``default-vlm``), a ``.gguf`` file, a model folder, or a hub id.
        dtype: ``auto`` (see :func:`resolve_dtype`), ``bfloat16``, ``float32``...
        device: ``cpu``, ``cuda``, ``cuda:1``...; default: cuda when available.
        batch_size: Most requests generated together.
        gather_seconds: How long to wait for concurrent requests before running a partial batch.
        continuous: Run concurrent text prompts as one continuous batch (transformers' manager); False: static
            batches for everything.
        lora: LoRA adapters merged into the weights at load (em-lora); a cached merge loads without merging.
        steering: Steering hooks, active during generation and within :meth:`steering_active` (em-steer).
    """

    def __init__(
        self,
        name: str,
        *,
        dtype: str | torch.dtype | None = "auto",
        device: str | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        gather_seconds: float = DEFAULT_GATHER_SECONDS,
        continuous: bool = True,
        lora: LoraSpec | None = None,
        steering: SteeringSpec | None = None,
    ) -> None:
        self.source: ModelSource = resolve_source(name)
        self.device = device or default_device()
        self.dtype = resolve_dtype(dtype, self.device)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.gather_seconds = gather_seconds
        self.continuous = continuous
        merged_from = cached_merge(self.source, lora, self.dtype) if lora is not None else None
        load_from = replace(self.source, path=str(merged_from), local=True) if merged_from else self.source
        self.model, self.processor, self.tokenizer, self.is_vlm = _load(load_from, self.dtype, self.device)
        self.lora_info: dict[str, Any] | None = None
        if lora is not None:
            if merged_from is not None:
                self.lora_info = {**lora.describe(), "merge_cache": "hit", "merged_path": str(merged_from)}
            else:
                self.model, self.lora_info = apply_lora(self.model, lora, self.source, self.is_vlm)
                self.lora_info["merge_cache"] = "off"
                if lora.cache and lora.merged:
                    path = merged_cache_path(self.source, lora, self.dtype)
                    save_merged(self.model, self.processor, path, spec_record(self.source, lora))
                    self.lora_info.update(merge_cache="written", merged_path=str(path))
        self.model.eval()
        self.steering: Steering | None = (
            Steering(self.model, steering, base_names(self.model, self.source)) if steering is not None else None
        )
        self._queue: list[_Pending] = []
        self._worker: asyncio.Task[None] | None = None
        self._session: tuple[tuple[Any, ...], ContinuousSession] | None = None
        self._lock = threading.Lock()  # one forward pass at a time, whatever thread asks
        # One long-lived generation thread: torch's intra-op (OpenMP) thread team belongs to the calling thread, so
        # hopping between executor threads would build new teams that compete for the cores.
        self._executor = _generation_thread()

    # --- info -------------------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.source.name

    def info(self) -> dict[str, Any]:
        """Facts for eval logs: what was loaded, from where, and any caveat."""
        return {
            "model": self.source.name,
            "path": self.source.path,
            "class": type(self.model).__name__,
            "vlm": self.is_vlm,
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": self.device,
            "batching": "continuous (text)" if self.continuous else "static",
            **self.source.info,
            **({"lora": self.lora_info} if self.lora_info else {}),
            **({"steering": self.steering.describe()} if self.steering else {}),
        }

    def steering_active(self) -> Any:
        """A context in which this backend's steering hooks (if any) are installed."""
        return self.steering.active() if self.steering is not None else nullcontext()

    # --- prompts ----------------------------------------------------------------------------------------

    @property
    def chat_template(self) -> str | None:
        """The chat template the prompts go through (the processor's on a VLM, else the tokenizer's)."""
        owner = self.processor if self.is_vlm else self.tokenizer
        template = getattr(owner, "chat_template", None) or getattr(self.tokenizer, "chat_template", None)
        return template if isinstance(template, str) else None

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = True,
               tools: Sequence[str] = ()) -> tuple[str, list[Any]]:
        """Apply the model's chat template (with ``tools``, JSON tool schemas, where given); return the prompt text
        and the images in order of appearance."""
        images = [part.get("image") for m in messages if isinstance(m["content"], list) for part in m["content"]
                  if part.get("type") == "image"]
        if images and not self.is_vlm:
            raise ImageInputError(
                f"Model '{self.name}' is a text-only model ({type(self.model).__name__}) and this sample has "
                f"{len(images)} image(s). Image-grounded tasks need a vision-language model, e.g. "
                "em-hf/default-vlm (pipeline check) or em-hf/google/gemma-3-4b-it."
            )
        extra = {"tools": [json.loads(t) for t in tools]} if tools else {}
        if self.is_vlm:
            chat = [_with_image_placeholders(m) for m in messages]
            text = self.processor.apply_chat_template(chat, tokenize=False,
                                                      add_generation_prompt=add_generation_prompt, **extra)
        else:
            chat = [_flatten_text(m) for m in messages]
            text = self.tokenizer.apply_chat_template(chat, tokenize=False,
                                                      add_generation_prompt=add_generation_prompt, **extra)
        return text, images

    def encode(self, conversations: Sequence[Sequence[Message]], tools: Sequence[str] = ()) -> dict[str, torch.Tensor]:
        """Tokenise a batch of conversations (left-padded), images included, on the model's device."""
        texts, images = zip(*(self.render(c, tools=tools) for c in conversations), strict=True)
        # the chat template already wrote the special tokens (bos...), so the tokenizer must not add them again
        kwargs: dict[str, Any] = {"padding": True, "return_tensors": "pt", "add_special_tokens": False}
        if self.is_vlm:
            if any(images):
                if not all(images):
                    raise ImageInputError("A batch must be all image prompts or all text prompts")
                batch = self.processor(text=list(texts), images=[list(i) for i in images], **kwargs)
            else:
                batch = self.processor(text=list(texts), **kwargs)
        else:
            batch = self.tokenizer(list(texts), **kwargs)
        out = {}
        for key, value in batch.items():
            if isinstance(value, torch.Tensor):
                value = value.to(self.device)
                if value.is_floating_point():
                    value = value.to(self.dtype)
                out[key] = value
        return out

    # --- generation -------------------------------------------------------------------------------------

    def generate_batch(self, conversations: Sequence[Sequence[Message]], params: GenParams) -> list[GenResult]:
        """Generate one completion per conversation, in one batch (synchronous)."""
        from transformers.generation import StopStringCriteria

        start = time.monotonic()
        with self.held():
            inputs = self.encode(conversations, tools=params.tools)
            kwargs: dict[str, Any] = {**sampling_kwargs(params), "return_dict_in_generate": True}
            if params.min_new_tokens:
                kwargs["min_new_tokens"] = params.min_new_tokens
            if params.stop:
                kwargs["stopping_criteria"] = [StopStringCriteria(self.tokenizer, list(params.stop))]
            if params.logprobs:
                kwargs["output_logits"] = True
            if params.seed is not None:
                torch.manual_seed(params.seed)
            kwargs["pad_token_id"] = self.tokenizer.pad_token_id
            out = self.model.generate(**inputs, **kwargs)
        prompt_len = inputs["input_ids"].shape[1]
        new_tokens = out.sequences[:, prompt_len:]
        seconds = time.monotonic() - start
        results = []
        for i in range(new_tokens.shape[0]):
            prompt_tokens = int(inputs["attention_mask"][i].sum()) if "attention_mask" in inputs else prompt_len
            result = self._completion(new_tokens[i].tolist(), prompt_tokens, params, seconds)
            if params.logprobs and out.logits is not None:
                ids = new_tokens[i].tolist()[:result.output_tokens]
                result.logprobs = _token_logprobs(out.logits, i, ids, self.tokenizer, params.top_logprobs)
            results.append(result)
        return results

    def _completion(self, ids: list[int], prompt_tokens: int, params: GenParams, seconds: float) -> GenResult:
        """Generated token ids as a completion: cut at the first EOS token or stop string."""
        eos = _eos_ids(self.model, self.tokenizer)
        n, stop_reason = len(ids), "max_tokens"
        for j, tok in enumerate(ids):
            if tok in eos:
                n, stop_reason = j, "stop"
                break
        text = self.tokenizer.decode(ids[:n], skip_special_tokens=True)
        text, stopped = _cut_at_stop(text, params.stop)
        return GenResult(text, prompt_tokens, n, "stop" if stopped else stop_reason, None, seconds)

    @contextmanager
    def held(self) -> Iterator[None]:
        """The model to oneself: the forward-pass lock, inference mode and this backend's steering hooks.

        Every forward pass on :attr:`model` runs inside it, including those of callers outside the backend (the
        lm-eval model's scoring): a continuous batch keeps its hooks and attention settings until it has wound down.
        """
        with ExitStack() as stack:
            stack.enter_context(self._lock)
            stack.enter_context(torch.inference_mode())
            stack.enter_context(self.steering_active())
            yield

    async def generate(self, messages: list[Message], params: GenParams) -> GenResult:
        """Generate one completion. Concurrent text prompts share a continuous batch (see :meth:`continuous_ok`);
        other requests are gathered into static batches of up to ``batch_size``."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[GenResult] = loop.create_future()
        if self.continuous_ok(messages, params):
            self._submit_continuous(messages, params, future)
            return await future
        # a backend outlives event loops (inspect runs each eval in its own): forget requests of a closed loop
        self._queue = [p for p in self._queue if p.future.get_loop() is loop and not p.future.done()]
        self._queue.append(_Pending(messages, params, future))
        if self._worker is None or self._worker.done() or self._worker.get_loop() is not loop:
            self._worker = loop.create_task(self._drain())
        return await future

    def continuous_ok(self, messages: Sequence[Message], params: GenParams) -> bool:
        """Whether a request can join the continuous batch: a text prompt without logprobs, stop strings, a
        minimum length or a repetition penalty (the manager drops processors it does not support), on a text model
        (merged LoRA and steering on every position are fine: they live in the weights and in layer hooks)."""
        return (self.continuous and not self.is_vlm and not _has_images(messages) and not params.logprobs
                and not params.stop and not params.min_new_tokens and params.repetition_penalty is None
                and hasattr(self.model, "init_continuous_batching")
                and (self.steering is None or self.steering.spec.positions == "all"))

    def _submit_continuous(self, messages: Sequence[Message], params: GenParams,
                           future: asyncio.Future[GenResult]) -> None:
        text, _ = self.render(messages, tools=params.tools)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        start = time.monotonic()
        request = Request(ids, params.max_new_tokens, deliver_to(
            future, lambda tokens: self._completion(tokens, len(ids), params, time.monotonic() - start)))
        key = (sampling_key(params), params.seed)
        if self._session is not None and self._session[0] == key and self._session[1].submit(request):
            return
        generation_config = self.model.generation_config.__class__.from_dict(
            {**self.model.generation_config.to_dict(), **sampling_kwargs(params)})
        session = ContinuousSession(self.model, generation_config, seed=params.seed,
                                    eos=sorted(_eos_ids(self.model, self.tokenizer)),
                                    max_requests=max(self.batch_size, 1), max_new_tokens=params.max_new_tokens,
                                    hold=self.held)
        session.submit(request)
        self._session = (key, session)
        # the one generation thread runs sessions and static batches in turn, so forward passes never overlap
        self._pool().submit(_run_session, session)

    async def _drain(self) -> None:
        while self._queue:
            await self._gather()
            batch = self._take_batch()
            try:
                results = await self._in_worker([p.messages for p in batch], batch[0].params)
            except Exception as ex:
                if len(batch) == 1:
                    _settle(batch[0], error=ex)
                    continue
                # one bad sample (a corrupt image, say) must not fail its batch-mates: retry them one by one
                for p in batch:
                    try:
                        _settle(p, result=(await self._in_worker([p.messages], p.params))[0])
                    except Exception as solo_ex:
                        _settle(p, error=solo_ex)
                continue
            for p, r in zip(batch, results, strict=True):
                _settle(p, result=r)

    async def _gather(self) -> None:
        """Wait for company: at least ``gather_seconds``, and on while requests keep arriving (each arrival within
        ``gather_seconds`` of the last), until a batch is full or ``MAX_GATHER_SECONDS`` have passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + MAX_GATHER_SECONDS
        seen = -1
        while len(self._queue) != seen and len(self._queue) < self.batch_size and loop.time() < deadline:
            seen = len(self._queue)
            await asyncio.sleep(self.gather_seconds)

    async def _in_worker(self, conversations: list[list[Message]], params: GenParams) -> list[GenResult]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool(), self.generate_batch, conversations, params)

    def _pool(self) -> ThreadPoolExecutor:
        """The generation thread, started anew if :func:`release_backends` stopped it while this backend lives on
        (an inspect model object can outlive the cache entry)."""
        if getattr(self._executor, "_shutdown", False):
            self._executor = _generation_thread()
        return self._executor

    def _take_batch(self) -> list[_Pending]:
        """Take up to batch_size requests that share params and modality, oldest first."""
        key = (self._queue[0].params, _has_images(self._queue[0].messages))
        batch = [p for p in self._queue if (p.params, _has_images(p.messages)) == key][: self.batch_size]
        for p in batch:
            self._queue.remove(p)
        return batch


def _generation_thread() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="em-hf-generate")


def sampling_kwargs(params: GenParams) -> dict[str, Any]:
    """``generate`` settings for ``params``' sampling (shared by static and continuous batches)."""
    kwargs: dict[str, Any] = {"max_new_tokens": params.max_new_tokens}
    sample = params.temperature is None or params.temperature > 0
    kwargs["do_sample"] = sample
    if sample:
        for name in ("temperature", "top_p", "top_k"):
            if getattr(params, name) is not None:
                kwargs[name] = getattr(params, name)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    if params.repetition_penalty is not None:  # a logits processor: it applies to greedy decoding too
        kwargs["repetition_penalty"] = params.repetition_penalty
    return kwargs


def sampling_key(params: GenParams) -> tuple[Any, ...]:
    """Requests with equal keys can share one continuous batch (max_new_tokens is per request)."""
    return (params.temperature, params.top_p, params.top_k)


def _run_session(session: ContinuousSession) -> None:
    try:
        session.run()
    except Exception:  # every request of the session has been failed with the error already
        logger.exception("continuous batch failed")


def _settle(pending: _Pending, result: GenResult | None = None, error: BaseException | None = None) -> None:
    if pending.future.done():
        return
    if error is not None:
        pending.future.set_exception(explain_generation_error(error))
    else:
        pending.future.set_result(result)  # type: ignore[arg-type]


# --- loading ------------------------------------------------------------------------------------------------

_CACHE: dict[tuple[Any, ...], HFBackend] = {}
_CACHE_LOCK = threading.Lock()


def get_backend(name: str, **kwargs: Any) -> HFBackend:
    """A process-wide shared backend per (name, settings), so one set of weights serves every caller."""
    key = (name, tuple(sorted((k, str(v)) for k, v in kwargs.items() if v is not None)))
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = HFBackend(name, **kwargs)
        return _CACHE[key]


def release_backends() -> None:
    """Forget every cached backend so its weights can be freed (one model at a time in long sweeps)."""
    import gc

    with _CACHE_LOCK:
        for backend in _CACHE.values():
            backend._executor.shutdown(wait=False)
        _CACHE.clear()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _is_vlm_config(config: Any) -> bool:
    from transformers import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING

    return hasattr(config, "vision_config") and type(config) in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING


def _load(source: ModelSource, dtype: torch.dtype, device: str) -> tuple[Any, Any, Any, bool]:
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForImageTextToText,
        AutoProcessor,
        AutoTokenizer,
    )

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-tensor loading bars would drown inspect's own display
    local_only = source.local or offline()
    try:
        config = AutoConfig.from_pretrained(source.path, local_files_only=local_only)
    except OSError as ex:
        if source.local:
            where = "local folder"
        elif local_only:
            where = "hub id (offline: only the local HF cache was searched)"
        else:
            where = "hub id"
        raise FileNotFoundError(
            f"Could not load model '{source.name}' ({where}: {source.path}): {ex}. Pass a model folder, a .gguf "
            "file, a hub id you can reach, or em-hf/default / em-hf/default-vlm for the embedded models."
        ) from ex
    is_vlm = _is_vlm_config(config)
    loader = AutoModelForImageTextToText if is_vlm else AutoModelForCausalLM
    model = loader.from_pretrained(source.path, dtype=dtype, local_files_only=local_only).to(device)
    if is_vlm:
        processor = AutoProcessor.from_pretrained(source.path, local_files_only=local_only)
        tokenizer = processor.tokenizer
    else:
        processor = tokenizer = AutoTokenizer.from_pretrained(source.path, local_files_only=local_only)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None and getattr(processor, "chat_template", None) is None:
        raise ValueError(
            f"Model '{source.name}' has no chat template; em-tasks sends chat conversations. Use an instruction-"
            "tuned model (its tokenizer_config.json / chat_template.jinja carries the template)."
        )
    return model, processor, tokenizer, is_vlm


# --- helpers --------------------------------------------------------------------------------------------------


def load_image(data: str) -> Any:
    """Open an image given as a data URI, base64 text or a local file path, as upright RGB PIL (see `open_image`)."""
    return open_image(data)


def _has_images(messages: Sequence[Message]) -> bool:
    return any(isinstance(m["content"], list) and any(p.get("type") == "image" for p in m["content"])
               for m in messages)


def _flatten_text(message: Message) -> Message:
    content = message["content"]
    if isinstance(content, list):
        content = "".join(p["text"] for p in content if p.get("type") == "text")
    return {**_tool_fields(message), "role": message["role"], "content": content}


def _with_image_placeholders(message: Message) -> Message:
    """Content as a list of parts (what VLM templates expect), images as bare placeholders."""
    content = message["content"]
    if isinstance(content, str):
        parts = [{"type": "text", "text": content}]
    else:
        parts = [{"type": "image"} if p.get("type") == "image" else {"type": "text", "text": p["text"]}
                 for p in content]
    return {**_tool_fields(message), "role": message["role"], "content": parts}


def _tool_fields(message: Message) -> Message:
    """The tool-use fields a chat template reads: an assistant's ``tool_calls``, a tool result's ``name``."""
    return {key: message[key] for key in ("tool_calls", "name") if key in message}


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    eos = model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def _cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def _token_logprobs(
    logits: Sequence[torch.Tensor], row: int, ids: list[int], tokenizer: Any, top: int
) -> list[TokenLogprob]:
    result = []
    for step, tok in enumerate(ids):
        lp = torch.log_softmax(logits[step][row].float(), dim=-1)
        alternatives: list[tuple[str, float]] = []
        if top > 0:
            values, indices = lp.topk(min(top, lp.shape[-1]))
            alternatives = [(tokenizer.decode([int(i)]), float(v)) for v, i in zip(values, indices, strict=True)]
        result.append(TokenLogprob(tokenizer.decode([tok]), float(lp[tok]), alternatives))
    return result
