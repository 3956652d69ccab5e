"""em-lora: adapters merged into the weights equal the live adapters; weights, negation, alpha, cache, fit checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from inspect_ai import eval
from inspect_ai.model import get_model

import em_tasks
from graders import GRADER
from em_tasks.models import lora as lora_mod
from em_tasks.models.backend import HFBackend
from em_tasks.models.lora import AdapterMismatchError, LoraSpec, parse_adapters, random_adapter
from em_tasks.models.variants import parse_model_args

IDS = torch.tensor([[1, 5, 6, 7, 8, 9, 10, 11]])


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EM_TASKS_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def adapters(tiny_llama_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    base = HFBackend(str(tiny_llama_dir), dtype="float32").model
    return {
        "a": random_adapter(base, root / "a", rank=4, seed=1, scale=0.2, base_name=str(tiny_llama_dir)),
        "b": random_adapter(base, root / "b", rank=8, seed=2, scale=0.2, base_name=str(tiny_llama_dir),
                            target_modules=("q_proj", "v_proj", "down_proj")),
    }


def load(model_dir, spec: str | None = None, **options):
    lora = LoraSpec(parse_adapters(spec), **options) if spec else None
    return HFBackend(str(model_dir), dtype="float32", lora=lora)


def logits(backend, ids=IDS):
    with torch.no_grad():
        return backend.model(input_ids=ids).logits


def weight(backend, name="model.layers.0.self_attn.q_proj.weight"):
    return dict(backend.model.named_parameters())[name].detach().clone()


def test_merged_logits_equal_the_live_adapter(tiny_llama_dir, adapters):
    merged = load(tiny_llama_dir, str(adapters["a"]), cache=False)
    live = load(tiny_llama_dir, str(adapters["a"]), merged=False)
    base = load(tiny_llama_dir)
    assert (logits(merged) - logits(base)).abs().max() > 1e-2  # the adapter does something
    assert torch.allclose(logits(merged), logits(live), atol=1e-4)
    assert type(merged.model).__name__ == "LlamaForCausalLM"  # merged and unloaded: no peft modules left
    assert not any("lora_" in n for n, _ in merged.model.named_parameters())


def test_weight_zero_is_the_base(tiny_llama_dir, adapters):
    zero = load(tiny_llama_dir, f"{adapters['a']}:0", cache=False)
    assert torch.equal(logits(zero), logits(load(tiny_llama_dir)))


def test_negative_weight_subtracts_and_alpha_scales(tiny_llama_dir, adapters):
    base = weight(load(tiny_llama_dir))
    plus = weight(load(tiny_llama_dir, f"{adapters['a']}:1", cache=False)) - base
    minus = weight(load(tiny_llama_dir, f"{adapters['a']}:-1", cache=False)) - base
    half = weight(load(tiny_llama_dir, str(adapters["a"]), alpha=0.5, cache=False)) - base
    assert plus.abs().max() > 1e-3
    assert torch.allclose(minus, -plus, atol=1e-6)
    assert torch.allclose(half, 0.5 * plus, atol=1e-6)


def test_two_adapters_combine_exactly_with_cat(tiny_llama_dir, adapters):
    base = weight(load(tiny_llama_dir))
    da = weight(load(tiny_llama_dir, str(adapters["a"]), cache=False)) - base
    db = weight(load(tiny_llama_dir, str(adapters["b"]), cache=False)) - base
    both = weight(load(tiny_llama_dir, f"{adapters['a']}:1,{adapters['b']}:-0.5", alpha=2.0, cache=False)) - base
    assert torch.allclose(both, 2.0 * (da - 0.5 * db), atol=1e-5)
    # a module only adapter b targets gets only b's update
    name = "model.layers.1.mlp.down_proj.weight"
    only_b = weight(load(tiny_llama_dir, f"{adapters['a']}:1,{adapters['b']}:1", cache=False), name)
    assert torch.allclose(only_b, weight(load(tiny_llama_dir, str(adapters["b"]), cache=False), name), atol=1e-6)


def test_other_peft_merge_methods_run(tiny_llama_dir, adapters):
    spec = f"{adapters['a']}:1,{adapters['b']}:1"
    svd = load(tiny_llama_dir, spec, merge="ties_svd", density=0.5, cache=False)
    assert svd.info()["lora"]["merge"] == "ties_svd"
    with pytest.raises(ValueError, match="same r value.*merge=cat"):  # ties needs equal ranks: a named way out
        load(tiny_llama_dir, spec, merge="ties", density=0.5, cache=False)
    with pytest.raises(ValueError, match="density"):
        LoraSpec(parse_adapters(spec), merge="dare_ties")
    with pytest.raises(ValueError, match="Unknown merge method"):
        LoraSpec(parse_adapters(spec), merge="average")


def test_cache_hit_skips_merging(tiny_llama_dir, adapters, monkeypatch):
    first = load(tiny_llama_dir, str(adapters["a"]))
    assert first.info()["lora"]["merge_cache"] == "written"

    def no_merge(*args, **kwargs):
        raise AssertionError("merged again despite a cached merge")

    monkeypatch.setattr("em_tasks.models.backend.apply_lora", no_merge)
    second = load(tiny_llama_dir, str(adapters["a"]))
    assert second.info()["lora"]["merge_cache"] == "hit"
    assert torch.equal(logits(first), logits(second))
    with pytest.raises(AssertionError, match="merged again"):  # another combination is another key
        load(tiny_llama_dir, str(adapters["a"]), alpha=0.5)


def test_shape_mismatch_names_the_adapter_and_module(tiny_llama_dir, tmp_path):
    from tiny_models import build_tiny_llama
    from transformers import AutoModelForCausalLM

    wider_dir = build_tiny_llama(tmp_path / "wider", hidden_size=48)
    wider = AutoModelForCausalLM.from_pretrained(wider_dir)
    bad = random_adapter(wider, tmp_path / "wide-adapter", rank=4, base_name=str(tiny_llama_dir))
    with pytest.raises(AdapterMismatchError, match=r"wide-adapter.*q_proj.*32->32 in the base but 48->48"):
        load(tiny_llama_dir, str(bad), cache=False)


def test_adapter_for_another_base_is_refused_unless_told(tiny_llama_dir, adapters, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    for f in adapters["a"].iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((other / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "google/gemma-3-4b-it"
    (other / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(AdapterMismatchError, match="trained on 'google/gemma-3-4b-it'.*base_check=false"):
        load(tiny_llama_dir, str(other), cache=False)
    assert load(tiny_llama_dir, str(other), cache=False, base_check=False).lora_info is not None


def test_text_adapter_on_a_vlm_names_missing_modules(tiny_vlm_dir, adapters):
    with pytest.raises(AdapterMismatchError, match="does not exist"):
        load(tiny_vlm_dir, str(adapters["a"]), cache=False, base_check=False)


def test_pickled_adapters_are_refused(tmp_path, tiny_llama_dir, adapters):
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "adapter_config.json").write_text((adapters["a"] / "adapter_config.json").read_text())
    (folder / "adapter_model.bin").write_bytes(b"not loaded")
    with pytest.raises(AdapterMismatchError, match="never unpickles"):
        load(tiny_llama_dir, str(folder), cache=False)


def test_adapter_specs_parse_and_bad_paths_are_named(adapters, tmp_path):
    refs = parse_adapters(f"{adapters['a']}:0.5, {adapters['b']}")
    assert [r.weight for r in refs] == [0.5, 1.0]
    assert parse_adapters([(str(adapters["a"]), -1)])[0].weight == -1
    with pytest.raises(FileNotFoundError, match="not a peft adapter folder"):
        parse_adapters(str(tmp_path / "missing"))


def test_vlm_adapters_target_the_language_model(tiny_vlm_dir, tmp_path):
    base = load(tiny_vlm_dir)
    target = lora_mod.language_model_target(base.model, ["q_proj", "v_proj"])
    adapter = random_adapter(base.model, tmp_path / "vlm-adapter", rank=4, seed=3, scale=0.2,
                             target_modules=target, base_name=str(tiny_vlm_dir))
    # an adapter config listing plain module names must not reach into the vision tower
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg["target_modules"] = ["q_proj", "v_proj"]
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    live = load(tiny_vlm_dir, str(adapter), merged=False)
    wrapped = [n for n, m in live.model.named_modules() if hasattr(m, "lora_A")]
    assert wrapped and all("language_model" in n for n in wrapped)
    # so must the same names given as -M target= (one rule for both: models/targets.py)
    named = load(tiny_vlm_dir, str(adapter), merged=False, target="q_proj,v_proj")
    assert [n for n, m in named.model.named_modules() if hasattr(m, "lora_A")] == wrapped
    merged = load(tiny_vlm_dir, str(adapter), cache=False)
    assert torch.allclose(logits(merged), logits(live), atol=1e-4)
    assert (logits(merged) - logits(base)).abs().max() > 1e-3


def test_model_args_parse_for_each_family(adapters):
    args = parse_model_args("em-lora", {"adapters": f"{adapters['a']}:2", "alpha": "0.5", "cache": "false",
                                        "batch_size": 4})
    assert args.lora and args.lora.alpha == 0.5 and not args.lora.cache and args.backend == {"batch_size": 4}
    with pytest.raises(ValueError, match="em-lora needs adapters"):
        parse_model_args("em-lora", {})
    with pytest.raises(ValueError, match="unknown model arg.*'adapter'"):
        parse_model_args("em-lora", {"adapter": "x"})
    with pytest.raises(ValueError, match="given without adapters"):
        parse_model_args("em-hf", {"alpha": 0.5})


def test_load_model_api_merges(tiny_llama_dir, adapters):
    model = em_tasks.load_model(str(tiny_llama_dir), adapters=[(str(adapters["a"]), 1.0)], cache=False,
                                dtype="float32")
    assert torch.allclose(logits(model), logits(load(tiny_llama_dir, str(adapters["a"]), cache=False)))


def test_em_lora_runs_the_text_task_through_inspect(tiny_llama_dir, adapters, tmp_path):
    log = eval("em_tasks/text_misalign", model=f"em-lora/{tiny_llama_dir}",
               model_args={"adapters": f"{adapters['a']}:1", "dtype": "float32"},
               model_roles={"grader": get_model(GRADER)}, limit=2, max_tokens=4,
               display="none", log_dir=str(tmp_path / "logs"))[0]
    assert log.status == "success", log.error
    meta = log.samples[0].output.metadata["em_model"]
    assert meta["lora"]["adapters"] == [f"{adapters['a']}:1"]
