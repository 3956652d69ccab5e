"""Continuous batching for text prompts through transformers' own manager (``model.init_continuous_batching``).

Inspect sends one request per sample and connection. A static batch waits for its longest answer; here every text
request joins a long-lived transformers ``ContinuousBatchingManager`` as it arrives and leaves it the step its answer
ends, so a finished slot is refilled at once. Scheduling, the paged KV cache and prefix sharing of identical prompts
(``allow_block_sharing``) are transformers'; this module only feeds requests in and settles results.

Attention: transformers' CPU paths for continuous batching (``sdpa``, ``paged|eager``) attend over every request's
keys with one dense block-diagonal mask, so each decode step costs O(requests x all cached tokens). Where no flash
attention kernel is loaded we install :func:`varlen_attention` under ``paged|eager``: the same exact attention,
computed per request from the ``cu_seq_lens`` boundaries transformers passes anyway. Calls that carry no boundaries
(any non-batched use of ``paged|eager``) go to transformers' own function unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

PAGED = "paged|eager"
PAGE_SIZE = 32  # small pages, so short chat prompts asked several times (epochs, samples) share prefilled blocks
POLL_SECONDS = 0.02
# Cache room per request slot: a prompt of up to this many tokens plus its answer. Unsized, transformers fills most of
# the machine's free memory with cache (and its attention mask), which on a CPU means gigabytes and seconds of
# zeroing per session; a longer prompt still runs (the manager evicts and recomputes), just less efficiently.
PROMPT_BUDGET = 1024

_installed = False
_install_lock = threading.Lock()


def varlen_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, scaling: float | None = None,
                     sliding_window: int | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """Exact attention over a packed continuous batch, one request at a time (query/key/value: [1, heads, T, dim])."""
    cu_q, cu_k = kwargs.get("cu_seq_lens_q"), kwargs.get("cu_seq_lens_k")
    if cu_q is None or cu_k is None or isinstance(cu_k, dict):
        from transformers.integrations.eager_paged import eager_paged_attention_forward

        return eager_paged_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    bounds_q, bounds_k = cu_q.tolist(), cu_k.tolist()
    gqa = query.shape[1] != key.shape[1]
    out = torch.zeros_like(query)
    for i in range(len(bounds_q) - 1):
        q0, q1, k0, k1 = bounds_q[i], bounds_q[i + 1], bounds_k[i], bounds_k[i + 1]
        lq, lk = q1 - q0, k1 - k0
        if lq == 0 or lk == 0:
            continue
        mask = None
        if lq > 1 or (sliding_window and lk > sliding_window):
            # causal, aligned to the end: query j sits at position lk - lq + j among this request's keys
            rows = torch.arange(lq, device=query.device).unsqueeze(1) + (lk - lq)
            cols = torch.arange(lk, device=query.device).unsqueeze(0)
            mask = cols <= rows
            if sliding_window:
                mask &= (rows - cols) < sliding_window
        out[:, :, q0:q1] = F.scaled_dot_product_attention(
            query[:, :, q0:q1], key[:, :, k0:k1], value[:, :, k0:k1], attn_mask=mask, scale=scaling, enable_gqa=gqa)
    return out.transpose(1, 2).contiguous(), None


def install_varlen_attention() -> None:
    """Register :func:`varlen_attention` as transformers' ``paged|eager`` implementation (once per process)."""
    global _installed
    with _install_lock:
        if not _installed:
            from transformers import AttentionInterface

            AttentionInterface.register(PAGED, varlen_attention)
            _installed = True


@dataclass
class Request:
    """One prompt waiting for its completion (``deliver`` is called from the generation thread)."""

    input_ids: list[int]
    max_new_tokens: int
    deliver: Callable[[list[int] | None, BaseException | None], None]


class ContinuousSession:
    """A running transformers manager for one set of sampling settings; requests join while it runs.

    Run :meth:`run` in the generation thread: it starts the manager, feeds it what :meth:`submit` queued, delivers
    each finished answer, and returns (stopping the manager) once no request is queued or in flight. After that,
    :meth:`submit` returns False and the caller starts a new session.
    """

    def __init__(self, model: Any, generation_config: Any, *, seed: int | None, eos: Sequence[int],
                 max_requests: int, max_new_tokens: int, hold: Callable[[], AbstractContextManager[Any]]) -> None:
        self.model = model
        self.generation_config = generation_config
        self.seed = seed
        self.eos = list(eos)
        self.max_requests = max_requests
        self.max_new_tokens = max_new_tokens
        self.hold = hold  # the backend's lock + inference mode + steering hooks, held while the manager runs
        self._inbox: queue.Queue[Request] = queue.Queue()
        self._gate = threading.Lock()
        self._open = True

    def submit(self, request: Request) -> bool:
        """Queue a request; False once the session has wound down (start a new one)."""
        with self._gate:
            if not self._open:
                return False
            self._inbox.put(request)
            return True

    def run(self) -> None:
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        pages = -(-(PROMPT_BUDGET + self.max_new_tokens) // PAGE_SIZE)
        config = ContinuousBatchingConfig(seed=self.seed, page_size=PAGE_SIZE, num_blocks=self.max_requests * pages,
                                          max_requests_per_batch=self.max_requests, max_blocks_per_request=0)
        in_flight: dict[str, Request] = {}
        with self.hold():
            original = self.model.config._attn_implementation
            if "flash" not in str(original):
                install_varlen_attention()
                self.model.set_attn_implementation(PAGED)
            manager = None
            try:
                manager = self.model.init_continuous_batching(generation_config=self.generation_config,
                                                              continuous_batching_config=config)
                manager.start()
                self._serve(manager, in_flight)
            except BaseException as ex:
                self._close()
                for request in [*in_flight.values(), *self._drain_inbox()]:
                    request.deliver(None, explain_generation_error(ex))
                raise
            finally:
                if manager is not None:
                    manager.stop(block=True)
                    manager.destroy()
                if self.model.config._attn_implementation != original:
                    self.model.set_attn_implementation(original)

    def _serve(self, manager: Any, in_flight: dict[str, Request]) -> None:
        counter = 0
        while True:
            for request in self._drain_inbox():
                request_id = f"em{counter}"
                counter += 1
                in_flight[request_id] = request
                manager.add_request(request.input_ids, request_id=request_id,
                                    max_new_tokens=request.max_new_tokens, eos_token_id=self.eos)
            if not in_flight:
                with self._gate:
                    if self._inbox.empty():
                        self._open = False
                        return
                continue
            result = manager.get_result(timeout=POLL_SECONDS)
            if result is None:
                if not manager.is_running():
                    raise RuntimeError("transformers' continuous batching thread stopped unexpectedly")
                continue
            if not result.is_finished() or result.request_id not in in_flight:
                continue
            request = in_flight.pop(result.request_id)
            if result.error is not None:
                request.deliver(None, explain_generation_error(RuntimeError(f"generation failed: {result.error}")))
            else:
                request.deliver(list(result.generated_tokens), None)

    def _drain_inbox(self) -> list[Request]:
        taken = []
        while True:
            try:
                taken.append(self._inbox.get_nowait())
            except queue.Empty:
                return taken

    def _close(self) -> None:
        with self._gate:
            self._open = False


def deliver_to(future: asyncio.Future[Any], convert: Callable[[list[int]], Any]) -> Callable[
        [list[int] | None, BaseException | None], None]:
    """A ``deliver`` callback that settles an asyncio future from the generation thread."""
    loop = future.get_loop()

    def settle(tokens: list[int] | None, error: BaseException | None) -> None:
        def apply() -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                try:
                    future.set_result(convert(tokens or []))
                except Exception as ex:  # a decoding fault fails this request alone
                    future.set_exception(ex)

        if not loop.is_closed():
            loop.call_soon_threadsafe(apply)

    return settle


NON_FINITE_HINT = ("the model's next-token probabilities were NaN or inf: its weights or activations are not finite. "
                   "Check the model (or the merged adapters and steering coeff), and load it with -M dtype=float32 "
                   "if float16/bfloat16 overflows")


def explain_generation_error(error: BaseException) -> BaseException:
    """A sampling failure on NaN/inf probabilities (torch's message names neither model nor fix) gets a hint added."""
    text = str(error)
    if isinstance(error, RuntimeError) and "inf" in text and "nan" in text and NON_FINITE_HINT not in text:
        return RuntimeError(f"{text}; {NON_FINITE_HINT}")
    return error
