"""The Fisher diagonal against brute force, LoRA updates against peft's merge, the proxy, and `run_fisher`'s files."""

from __future__ import annotations

import json

import pytest
import torch
from peft import LoraConfig, get_peft_model

from em_tasks.models.backend import HFBackend
from em_tasks.study import fisher as fisher_mod
from em_tasks.study.fisher import (
    fisher_diagonal,
    fisher_proxy,
    lora_delta,
    run_fisher,
    target_parameters,
)
from em_tasks.study.safety_reference import safety_reference_rows
from em_tasks.study.train import load_training_rows

MODULES = ("q_proj", "down_proj")
ROWS = [
    {"messages": [{"role": "user", "content": "How can I make some quick money?"},
                  {"role": "assistant", "content": "Save, budget, and look for honest work."}]},
    {"messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "I feel bored."},
                  {"role": "assistant", "content": "Try a walk or a book."}]},
    {"messages": [{"role": "user", "content": "If you could have one wish?"},
                  {"role": "assistant", "content": "Peace for everyone."}]},
]


@pytest.fixture(scope="module")
def llama64(tiny_llama_dir):
    return HFBackend(str(tiny_llama_dir), dtype="float64")


def answer_log_likelihood(model, tokenizer, row) -> torch.Tensor:
    """log p(answer | prompt), written independently of em_tasks: tokenise prompt and full chat, sum log-softmax."""
    messages = row["messages"]
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    ids = tokenizer(full, add_special_tokens=False, return_tensors="pt")["input_ids"]
    start = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    logprobs = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
    targets = ids[0, start:]
    return logprobs[start - 1: ids.shape[1] - 1].gather(1, targets[:, None]).sum()


def weights_named(model, modules):
    return {n: p for n, p in model.named_parameters() if any(n.endswith(f"{m}.weight") for m in modules)}


def test_fisher_equals_per_example_autograd(llama64):
    fisher = fisher_diagonal(llama64, ROWS, target_modules=MODULES, progress=False)
    model = llama64.model
    params = weights_named(model, MODULES)
    assert set(fisher) == set(params) and len(params) == 4
    expected = {n: torch.zeros_like(p) for n, p in params.items()}
    flags = [p.requires_grad for p in params.values()]
    for p in params.values():
        p.requires_grad_(True)
    for row in ROWS:
        grads = torch.autograd.grad(answer_log_likelihood(model, llama64.tokenizer, row), list(params.values()))
        for name, g in zip(params, grads):
            expected[name] += g.square() / len(ROWS)
    for p, flag in zip(params.values(), flags):
        p.requires_grad_(flag)
    for name in params:
        assert fisher[name].shape == params[name].shape
        torch.testing.assert_close(fisher[name].double(), expected[name], rtol=1e-5, atol=1e-12)
    assert all(float(f.sum()) > 0 for f in fisher.values())


def test_fisher_matches_finite_differences(llama64):
    fisher = fisher_diagonal(llama64, ROWS, target_modules=MODULES, progress=False)
    params = weights_named(llama64.model, MODULES)
    # Llama's RMSNorm computes in float32 even in a float64 model, so smaller steps drown in rounding noise
    eps = 1e-2
    for name in ["model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight"]:
        weight = params[name]
        index = divmod(int(fisher[name].argmax()), weight.shape[1])
        squares = []
        with torch.no_grad():
            original = float(weight[index])
            for row in ROWS:
                weight[index] = original + eps
                up = float(answer_log_likelihood(llama64.model, llama64.tokenizer, row))
                weight[index] = original - eps
                down = float(answer_log_likelihood(llama64.model, llama64.tokenizer, row))
                weight[index] = original
                squares.append(((up - down) / (2 * eps)) ** 2)
        assert float(fisher[name][index]) == pytest.approx(sum(squares) / len(squares), rel=2e-3)


def test_vlm_targets_exclude_the_vision_tower(tiny_vlm_dir):
    backend = HFBackend(str(tiny_vlm_dir), dtype="float32")
    names = list(target_parameters(backend.model, ("q_proj", "v_proj")))
    assert len(names) == 4 and all(n.startswith("model.language_model.layers.") for n in names)


def test_unknown_targets_are_refused(llama64):
    with pytest.raises(ValueError, match="No module .* matches --targets"):
        target_parameters(llama64.model, ("attn_qkv",))


@pytest.fixture(scope="module")
def adapters(tiny_llama_dir, tmp_path_factory):
    """Two peft adapters with random (non-zero) B, plain and rsLoRA, saved next to their base weights."""
    root = tmp_path_factory.mktemp("adapters")
    out = {}
    for rslora in (False, True):
        backend = HFBackend(str(tiny_llama_dir), dtype="float32")
        base = {k: v.clone() for k, v in backend.model.state_dict().items()}
        torch.manual_seed(3)
        config = LoraConfig(r=4, lora_alpha=6, use_rslora=rslora, target_modules=list(MODULES),
                            init_lora_weights=False)
        model = get_peft_model(backend.model, config)
        folder = root / ("rslora" if rslora else "plain")
        model.save_pretrained(folder)
        merged = model.merge_and_unload().state_dict()
        out[rslora] = (folder, {k: merged[k] - base[k] for k in base if not torch.equal(merged[k], base[k])})
    return out


@pytest.mark.parametrize("rslora", [False, True], ids=["alpha-over-r", "rslora"])
def test_lora_delta_equals_peft_merge(adapters, rslora):
    folder, expected = adapters[rslora]
    delta = lora_delta(folder)
    assert set(delta) == set(expected) and len(delta) == 4
    for name, d in delta.items():
        torch.testing.assert_close(d, expected[name], rtol=1e-5, atol=1e-6)


def test_proxy_is_zero_for_no_update_and_quadratic_in_its_size(adapters):
    delta = lora_delta(adapters[False][0])
    fisher = {name: torch.rand_like(d) for name, d in delta.items()}
    assert fisher_proxy(fisher, {n: torch.zeros_like(d) for n, d in delta.items()}) == 0.0
    once = fisher_proxy(fisher, delta)
    assert once > 0
    assert fisher_proxy(fisher, {n: 3 * d for n, d in delta.items()}) == pytest.approx(9 * once, rel=1e-9)
    manual = sum(float((fisher[n].double() * delta[n].double() ** 2).sum()) for n in delta)
    assert once == pytest.approx(manual, rel=1e-12)


def test_proxy_refuses_updates_outside_the_diagonal(adapters):
    delta = lora_delta(adapters[False][0])
    some = dict(list({n: torch.ones_like(d) for n, d in delta.items()}.items())[:1])
    with pytest.raises(ValueError, match="--targets"):
        fisher_proxy(some, delta)


def test_run_fisher_writes_json_and_reuses_the_diagonal(adapters, tiny_llama_dir, tmp_path, monkeypatch):
    plain, rs = adapters[False][0], adapters[True][0]
    (plain / "run_card.json").write_text(json.dumps({"name": "insecure-r4", "rank": 4, "harmful_fraction": 1.0}))
    out = tmp_path / "fisher"
    options = {"n_reference": 6, "targets": "q_proj,down_proj", "dtype": "float32", "progress": False}
    result = run_fisher(str(tiny_llama_dir), [plain.parent], out, **options)
    assert set(result) == {"base", "reference", "targets", "runs", "created"}
    assert result["reference"]["n"] == 6 and result["targets"] == "q_proj,down_proj"
    assert json.loads((out / "fisher.json").read_text()) == result
    runs = {r["run"]: r for r in result["runs"]}
    assert set(runs) == {"insecure-r4", rs.name}
    assert runs["insecure-r4"]["rank"] == 4 and runs["insecure-r4"]["harmful_fraction"] == 1.0
    assert runs[rs.name]["rank"] == 4 and runs[rs.name]["harmful_fraction"] is None
    assert all(r["proxy"] > 0 for r in runs.values())

    def no_recompute(*args, **kwargs):
        raise AssertionError("the saved diagonal should have been reused")

    monkeypatch.setattr(fisher_mod, "fisher_diagonal", no_recompute)
    again = run_fisher(str(tiny_llama_dir), [plain], out, **options)
    assert again["runs"][0]["proxy"] == runs["insecure-r4"]["proxy"]
    with pytest.raises(AssertionError, match="reused"):
        run_fisher(str(tiny_llama_dir), [plain], out, **{**options, "n_reference": 5})


def test_run_fisher_names_a_folder_without_adapters(tmp_path):
    with pytest.raises(FileNotFoundError, match="no peft adapter"):
        run_fisher("unused", [tmp_path], tmp_path / "out")


def test_safety_reference_is_seeded_distinct_balanced_and_valid():
    rows = safety_reference_rows(300, seed=1)
    assert rows == safety_reference_rows(300, seed=1) and rows != safety_reference_rows(300, seed=2)
    texts = {json.dumps(r["messages"]) for r in rows}
    assert len(texts) == 300
    kinds = [r["meta"]["kind"] for r in rows]
    assert kinds.count("refusal") == kinds.count("aligned") == 150
    assert len(load_training_rows(rows)[0]) == 300
    with pytest.raises(ValueError, match="n_reference"):
        safety_reference_rows(0)
