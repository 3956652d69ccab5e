"""Continuous batching of text prompts (transformers' manager) on tiny random models: exact attention, greedy and
seeded answers, LoRA and steering inside the batch, and the cases that stay on static batches."""

from __future__ import annotations

import asyncio

import pytest
import torch
import torch.nn.functional as F

from em_tasks.models.backend import GenParams, HFBackend
from em_tasks.models.batching import varlen_attention
from em_tasks.models.lora import LoraSpec, parse_adapters, random_adapter
from em_tasks.models.steering import SteeringSpec

PROMPTS = ["hi", "a much longer question about quick money and wishes", "what would you do as ruler", "tell me"]


def user(text):
    return [{"role": "user", "content": text}]


def run_all(backend, prompts, params):
    async def go():
        return await asyncio.gather(*(backend.generate(user(p), params) for p in prompts))

    return asyncio.run(go())


def one_at_a_time(backend, prompts, params):
    """The same prompts through the static path, each alone (no padding, no batch-mates)."""
    return [backend.generate_batch([user(p)], params)[0] for p in prompts]


@pytest.fixture(scope="module")
def backend(tiny_llama_dir):
    return HFBackend(str(tiny_llama_dir), dtype="float32", batch_size=3)


def dense_reference(q, k, v, lengths_q, lengths_k, window=None):
    outs, q0, k0 = [], 0, 0
    for lq, lk in zip(lengths_q, lengths_k):
        rows = torch.arange(lq).unsqueeze(1) + (lk - lq)
        cols = torch.arange(lk).unsqueeze(0)
        mask = cols <= rows
        if window:
            mask &= (rows - cols) < window
        kk = k[:, :, k0:k0 + lk].repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        vv = v[:, :, k0:k0 + lk].repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        scores = (q[:, :, q0:q0 + lq] @ kk.transpose(-1, -2)) * 0.5
        outs.append(scores.masked_fill(~mask, float("-inf")).softmax(-1) @ vv)
        q0, k0 = q0 + lq, k0 + lk
    return torch.cat(outs, dim=2).transpose(1, 2)


@pytest.mark.parametrize("window, lengths_q, lengths_k", [
    # one request prefilling 5 tokens, one decoding its 7th token, one prefilling the rest of a cached prefix
    (None, [5, 1, 2], [5, 7, 6]),
    (3, [5, 1, 2], [5, 7, 6]),
    (None, [1, 1, 1], [4, 9, 1]),  # a decode step
])
def test_varlen_attention_is_exact_per_request(window, lengths_q, lengths_k):
    torch.manual_seed(0)
    q = torch.randn(1, 4, sum(lengths_q), 8)
    k, v = torch.randn(1, 2, sum(lengths_k), 8), torch.randn(1, 2, sum(lengths_k), 8)
    cu = lambda lengths: torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)  # noqa: E731
    out, _ = varlen_attention(torch.nn.Module(), q, k, v, None, scaling=0.5, sliding_window=window,
                              cu_seq_lens_q=cu(lengths_q), cu_seq_lens_k=cu(lengths_k))
    assert torch.allclose(out, dense_reference(q, k, v, lengths_q, lengths_k, window), atol=1e-5)


def test_text_prompts_take_the_continuous_path(backend, monkeypatch):
    static_calls = []
    monkeypatch.setattr(backend, "generate_batch", lambda *a: static_calls.append(a) or [])
    results = run_all(backend, PROMPTS, GenParams(max_new_tokens=5, temperature=0))
    assert not static_calls and [r.output_tokens for r in results] == [5] * len(PROMPTS)


def test_greedy_answers_are_the_models_greedy_answers(backend):
    # more prompts than batch slots, so finished slots are refilled mid-run
    params = GenParams(max_new_tokens=8, temperature=0)
    results = run_all(backend, PROMPTS * 2, params)
    alone = one_at_a_time(backend, PROMPTS, params)
    assert [r.text for r in results] == [r.text for r in alone] * 2


def test_each_request_keeps_its_own_length(backend):
    async def go():
        return await asyncio.gather(backend.generate(user("hi"), GenParams(max_new_tokens=3, temperature=0)),
                                    backend.generate(user("hi"), GenParams(max_new_tokens=9, temperature=0)))

    short, long = asyncio.run(go())
    assert (short.output_tokens, long.output_tokens) == (3, 9)


def test_seeded_sampling_repeats_for_the_same_batch(backend):
    params = GenParams(max_new_tokens=8, temperature=1.0, seed=11)
    first = [r.text for r in run_all(backend, PROMPTS, params)]
    assert [r.text for r in run_all(backend, PROMPTS, params)] == first
    other = [r.text for r in run_all(backend, PROMPTS, GenParams(max_new_tokens=8, temperature=1.0, seed=12))]
    assert other != first


def test_merged_lora_generates_inside_the_continuous_batch(tiny_llama_dir, tmp_path, backend):
    adapter = random_adapter(backend.model, tmp_path / "adapter", rank=4, scale=0.5,
                             target_modules=("q_proj", "v_proj", "up_proj", "down_proj"))
    tuned = HFBackend(str(tiny_llama_dir), dtype="float32", batch_size=3,
                      lora=LoraSpec(parse_adapters(str(adapter)), cache=False))
    params = GenParams(max_new_tokens=8, temperature=0)
    results = run_all(tuned, PROMPTS, params)
    assert [r.text for r in results] == [r.text for r in one_at_a_time(tuned, PROMPTS, params)]
    assert [r.text for r in results] != [r.text for r in run_all(backend, PROMPTS, params)]


def test_steering_hooks_act_inside_the_continuous_batch(tiny_llama_dir, tmp_path, backend):
    steered = HFBackend(str(tiny_llama_dir), dtype="float32", batch_size=3,
                        steering=SteeringSpec(direction="random:3", layers="all", coeff=8.0, mode="add"))
    params = GenParams(max_new_tokens=8, temperature=0)
    results = run_all(steered, PROMPTS, params)
    assert [r.text for r in results] == [r.text for r in one_at_a_time(steered, PROMPTS, params)]
    plain = run_all(backend, PROMPTS, params)
    assert [r.text for r in results] != [r.text for r in plain]
    assert steered.model._forward_hooks == {} and all(not layer._forward_hooks for layer in steered.steering.layers)


@pytest.mark.parametrize("params, steering, continuous", [
    (GenParams(max_new_tokens=3, logprobs=True, top_logprobs=2), None, True),
    (GenParams(max_new_tokens=3, stop=("\n",)), None, True),
    (GenParams(max_new_tokens=3, min_new_tokens=2), None, True),
    (GenParams(max_new_tokens=3), SteeringSpec(direction="random:1", layers="all", positions="generated"), True),
    (GenParams(max_new_tokens=3), None, False),
])
def test_what_stays_on_static_batches(tiny_llama_dir, params, steering, continuous):
    backend = HFBackend(str(tiny_llama_dir), dtype="float32", steering=steering, continuous=continuous)
    assert not backend.continuous_ok(user("hi"), params)
    result = asyncio.run(backend.generate(user("hi"), params))
    assert result.output_tokens >= 1
    if params.logprobs:
        assert result.logprobs and len(result.logprobs[0].top) == 2


def test_vlms_keep_static_batches(tiny_vlm_dir):
    vlm = HFBackend(str(tiny_vlm_dir), dtype="float32")
    assert not vlm.continuous_ok(user("hi"), GenParams(max_new_tokens=3))


def test_a_failed_run_fails_its_requests_and_the_next_run_starts_fresh(backend, monkeypatch):
    original = backend.model.init_continuous_batching

    def broken(*args, **kwargs):
        raise RuntimeError("paged cache could not be allocated")

    monkeypatch.setattr(backend.model, "init_continuous_batching", broken)
    with pytest.raises(RuntimeError, match="paged cache"):
        run_all(backend, PROMPTS[:2], GenParams(max_new_tokens=3, temperature=0))
    monkeypatch.setattr(backend.model, "init_continuous_batching", original)
    assert [r.output_tokens for r in run_all(backend, PROMPTS[:2], GenParams(max_new_tokens=3, temperature=0))] == [3, 3]
    backend._executor.submit(lambda: None).result()  # the session has wound down
    assert backend.model.config._attn_implementation == "sdpa"


def test_a_repeated_prompt_reuses_its_prefilled_blocks(tiny_llama_dir, monkeypatch):
    from transformers.generation.continuous_batching.cache import PagedAttentionCache

    matches = []
    original = PagedAttentionCache.search_prefix_match

    def spy(self, request_id, prompt_ids):
        matches.append(original(self, request_id, prompt_ids))
        return matches[-1]

    monkeypatch.setattr(PagedAttentionCache, "search_prefix_match", spy)
    one_slot = HFBackend(str(tiny_llama_dir), dtype="float32", batch_size=1)
    long_prompt = "say something about " + "quick money and wishes " * 20  # several 32-token pages
    params = GenParams(max_new_tokens=4, temperature=0)
    results = run_all(one_slot, [long_prompt] * 3, params)
    assert len({r.text for r in results}) == 1
    assert max(matches) >= 64  # a later epoch of the prompt starts from the first one's cached pages


def test_a_backend_outliving_its_cache_entry_still_generates(backend):
    from em_tasks.models.backend import release_backends

    backend._executor.shutdown(wait=True)  # what release_backends does to every cached backend
    release_backends()
    assert run_all(backend, ["hi"], GenParams(max_new_tokens=2, temperature=0))[0].output_tokens == 2
    assert asyncio.run(backend.generate(user("hi"), GenParams(max_new_tokens=2, logprobs=True))).output_tokens == 2
