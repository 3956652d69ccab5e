"""Guards: a LoRA that would do nothing, non-finite adapter weights and broken steering directions are refused with
errors that name the file and the fix, through the public API (HFBackend / em_tasks.load_model / steer)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import em_tasks
from em_tasks.models.backend import HFBackend
from em_tasks.models.lora import AdapterMismatchError, LoraSpec, check_merged, parse_adapters, random_adapter
from em_tasks.models.steering import SteeringError, SteeringSpec, save_direction

WEIGHTS = "adapter_model.safetensors"


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EM_TASKS_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def good(tiny_llama_dir, tmp_path_factory) -> Path:
    base = HFBackend(str(tiny_llama_dir), dtype="float32").model
    return random_adapter(base, tmp_path_factory.mktemp("guards") / "good", rank=4, seed=1, scale=0.2,
                          base_name=str(tiny_llama_dir))


def edited(good: Path, out: Path, edit=None, config_edit=None) -> Path:
    """A copy of adapter ``good`` with its weights (and / or config) changed."""
    shutil.copytree(good, out)
    if edit is not None:
        state = load_file(str(out / WEIGHTS))
        edit(state)
        save_file(state, str(out / WEIGHTS))
    if config_edit is not None:
        cfg = json.loads((out / "adapter_config.json").read_text())
        config_edit(cfg)
        (out / "adapter_config.json").write_text(json.dumps(cfg))
    return out


def load(model_dir, adapters: str, **options) -> HFBackend:
    dtype = options.pop("dtype", "float32")
    return HFBackend(str(model_dir), dtype=dtype, lora=LoraSpec(parse_adapters(adapters), **options))


def first(state, part: str) -> str:
    return next(k for k in sorted(state) if part in k)


# --- LoRA -------------------------------------------------------------------------------------------------------


def test_error_types_are_value_errors():
    assert issubclass(AdapterMismatchError, ValueError) and issubclass(SteeringError, ValueError)


@pytest.mark.parametrize("merged", [True, False])
def test_nan_adapter_is_refused(tiny_llama_dir, good, tmp_path, merged):
    def poison(state):
        state[first(state, "lora_B")][0, 0] = float("nan")

    bad = edited(good, tmp_path / "nan-adapter", poison)
    with pytest.raises(AdapterMismatchError, match=r"nan-adapter.*not finite.*retrain") as err:
        load(tiny_llama_dir, str(bad), merged=merged, cache=False)
    assert "learning rate" in str(err.value)


def test_inf_adapter_is_refused(tiny_llama_dir, good, tmp_path):
    def poison(state):
        state[first(state, "lora_A")][1, 2] = float("inf")

    bad = edited(good, tmp_path / "inf-adapter", poison)
    with pytest.raises(AdapterMismatchError, match=r"inf-adapter.*not finite"):
        em_tasks.load_model(str(tiny_llama_dir), adapters=str(bad), cache=False, dtype="float32")


@pytest.mark.parametrize("merged", [True, False])
def test_untrained_adapter_is_a_zero_update(tiny_llama_dir, good, tmp_path, merged):
    def untrained(state):  # what a freshly initialised peft adapter holds
        for key in state:
            if "lora_B" in key:
                state[key].zero_()

    bad = edited(good, tmp_path / "fresh-adapter", untrained)
    with pytest.raises(AdapterMismatchError, match=r"fresh-adapter.*zero update.*untrained.*base model"):
        load(tiny_llama_dir, str(bad), merged=merged, cache=False)


def test_rank_zero_adapter_is_a_zero_update(tiny_llama_dir, good, tmp_path):
    def rank_zero(state):
        for key in list(state):
            shape = list(state[key].shape)
            shape[0 if "lora_A" in key else 1] = 0
            state[key] = torch.zeros(shape)

    bad = edited(good, tmp_path / "rank0", rank_zero)
    with pytest.raises(AdapterMismatchError, match="zero update"):
        load(tiny_llama_dir, str(bad), cache=False)


def test_adapters_that_cancel_are_refused_but_alpha_zero_is_allowed(tiny_llama_dir, good, caplog):
    with pytest.raises(AdapterMismatchError, match=r"zero update.*cancel.*alpha=0"):
        load(tiny_llama_dir, f"{good}:1,{good}:-1", cache=False)
    with caplog.at_level(logging.WARNING, logger="em_tasks.models.lora"):
        base_again = load(tiny_llama_dir, str(good), alpha=0.0, cache=False)
    assert base_again.lora_info is not None
    assert "zero update, as asked" in caplog.text


def test_target_matching_nothing_is_refused(tiny_llama_dir, good):
    with pytest.raises(AdapterMismatchError, match=r"-M target=nothing_here.*matches no module.*q_proj"):
        load(tiny_llama_dir, str(good), target="nothing_here", cache=False)
    with pytest.raises(AdapterMismatchError, match=r"matches no module.*target=q_proj,v_proj"):
        load(tiny_llama_dir, str(good), target=r".*\.zzz_proj", cache=False)


def test_target_wrapping_modules_without_weights_is_refused(tiny_llama_dir, good):
    # k_proj exists in the base, but the adapter has no weights for it: peft would leave it empty
    with pytest.raises(AdapterMismatchError, match=r"no weights for.*k_proj.*-M target=q_proj,v_proj"):
        load(tiny_llama_dir, str(good), target="q_proj,v_proj,k_proj", merged=False)


def test_config_naming_modules_the_base_lacks_is_refused(tiny_llama_dir, good, tmp_path):
    bad = edited(good, tmp_path / "other-arch", config_edit=lambda c: c.update(
        target_modules=["q_proj", "v_proj", "c_attn"]))
    with pytest.raises(AdapterMismatchError, match=r"other-arch.*c_attn.*does not have.*-M target=q_proj,v_proj"):
        load(tiny_llama_dir, str(bad), cache=False)
    # the named fix works
    assert load(tiny_llama_dir, str(bad), target="q_proj,v_proj", cache=False).lora_info is not None


def test_weights_for_modules_the_base_lacks_are_refused(tiny_llama_dir, good, tmp_path):
    def rename(state):
        for key in list(state):
            state[key.replace("q_proj", "c_attn")] = state.pop(key)

    bad = edited(good, tmp_path / "renamed", rename)
    with pytest.raises(AdapterMismatchError, match=r"renamed.*c_attn.*does not exist"):
        load(tiny_llama_dir, str(bad), cache=False)


def test_update_overflowing_the_dtype_is_refused(tiny_llama_dir, good, tmp_path):
    def huge(state):
        for key in state:
            state[key].mul_(1e3)  # B·A entries of order 1e4-1e5: beyond float16's 65504

    bad = edited(good, tmp_path / "huge", huge)
    with pytest.raises(AdapterMismatchError, match=r"huge.*not finite.*float32"):
        load(tiny_llama_dir, f"{bad}:100", dtype="float16", cache=False)


def test_non_finite_merged_weights_are_refused(tiny_llama_dir, good):
    model = HFBackend(str(tiny_llama_dir), dtype="float32").model
    with torch.no_grad():
        model.model.layers[0].self_attn.q_proj.weight[0, 0] = float("inf")
    spec = LoraSpec(parse_adapters(str(good)), alpha=0.5)
    with pytest.raises(AdapterMismatchError, match=r"good:1 \(merge=cat, alpha=0.5\).*not finite.*layers.0"):
        check_merged(spec, model, ["model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj"])


def test_good_adapter_still_loads(tiny_llama_dir, good):
    backend = load(tiny_llama_dir, str(good))
    assert backend.info()["lora"]["merge_cache"] == "written"


# --- steering ---------------------------------------------------------------------------------------------------


def steered(model_dir, direction, **kwargs) -> HFBackend:
    return HFBackend(str(model_dir), dtype="float32", steering=SteeringSpec(str(direction), **kwargs))


def direction_file(path: Path, vectors: dict[int, torch.Tensor], base: str) -> Path:
    return save_direction(path, vectors, base_model=base, method="mean_diff", source="test")


def test_nan_direction_names_file_and_layer(tiny_llama_dir, tmp_path):
    v = torch.randn(32)
    v[3] = float("nan")
    path = direction_file(tmp_path / "nan-dir.safetensors", {0: torch.randn(32), 1: v}, str(tiny_llama_dir))
    with pytest.raises(SteeringError, match=r"nan-dir.safetensors, layer 1.*not finite"):
        steered(tiny_llama_dir, path, layers=0)


@pytest.mark.parametrize("mode", ["add", "ablate"])
def test_all_zero_direction_is_refused(tiny_llama_dir, tmp_path, mode):
    path = direction_file(tmp_path / "zero.safetensors", {0: torch.zeros(32), 1: torch.zeros(32)},
                          str(tiny_llama_dir))
    with pytest.raises(SteeringError, match=r"zero.safetensors is all zeros.*base model.*cannot normalise"):
        steered(tiny_llama_dir, path, layers=0, mode=mode)


@pytest.mark.parametrize(("mode", "words"), [("add", "silently be the base model"),
                                             ("ablate", "cannot be normalised"),
                                             ("clamp", "cannot be normalised")])
def test_zero_vector_at_a_chosen_layer_is_refused(tiny_llama_dir, tmp_path, mode, words):
    path = direction_file(tmp_path / "half.safetensors", {0: torch.zeros(32), 1: torch.randn(32)},
                          str(tiny_llama_dir))
    with pytest.raises(SteeringError, match=rf"half.safetensors, layer 0: the vector is all zeros.*{words}.*\(1\)"):
        steered(tiny_llama_dir, path, layers=0, mode=mode)
    assert steered(tiny_llama_dir, path, layers=1, mode=mode).steering.layer_ids == (1,)  # the good layer works


def test_zero_tensor_through_steer_is_refused(tiny_llama_dir):
    backend = HFBackend(str(tiny_llama_dir), dtype="float32")
    with pytest.raises(SteeringError, match="all zeros"):
        with em_tasks.steer(backend, torch.zeros(32), layers=0, mode="ablate"):
            pass


def test_empty_direction_files_are_refused(tiny_llama_dir, tmp_path):
    empty = tmp_path / "empty.safetensors"
    save_file({}, str(empty))
    with pytest.raises(SteeringError, match=r"empty.safetensors is empty: it holds no tensors"):
        steered(tiny_llama_dir, empty, layers=0)
    blank = tmp_path / "blank.safetensors"
    blank.write_bytes(b"")
    with pytest.raises(SteeringError, match=r"blank.safetensors.*empty \(0 bytes\)"):
        steered(tiny_llama_dir, blank, layers=0)
    torch.save({}, tmp_path / "empty.pt")
    with pytest.raises(SteeringError, match=r"empty.pt is empty"):
        steered(tiny_llama_dir, tmp_path / "empty.pt", layers=0)


def test_non_finite_coeff_is_refused():
    with pytest.raises(SteeringError, match="coeff must be a finite number"):
        SteeringSpec("random:0", layers=0, coeff=float("nan"))
