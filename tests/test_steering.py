"""em-steer: direction files, layer selection, add / ablate / clamp hooks, positions, exact removal, errors."""

from __future__ import annotations


import pytest
import torch
from graders import GRADER
from inspect_ai import eval
from inspect_ai.model import get_model

import em_tasks
from em_tasks.models.backend import GenParams, HFBackend
from em_tasks.models.layers import decoder_layers, decoder_layers_path
from em_tasks.models.steering import (
    SteeringError,
    SteeringSpec,
    load_direction,
    parse_layers,
    save_direction,
    steer,
)

IDS = torch.tensor([[1, 5, 6, 7, 8, 9, 10, 11]])
HELLO = [[{"role": "user", "content": "Tell me something about the sea."}]]


@pytest.fixture(scope="module")
def llama(tiny_llama_dir) -> HFBackend:
    return HFBackend(str(tiny_llama_dir), dtype="float32")


@pytest.fixture(scope="module")
def vlm(tiny_vlm_dir) -> HFBackend:
    return HFBackend(str(tiny_vlm_dir), dtype="float32")


def logits(backend: HFBackend) -> torch.Tensor:
    with torch.no_grad():
        return backend.model(input_ids=IDS).logits


def capture(backend: HFBackend, layer: int, run) -> list[torch.Tensor]:
    """Outputs of one decoder layer (after any steering hook) during ``run()``."""
    seen: list[torch.Tensor] = []

    def hook(module, args, output):
        seen.append((output[0] if isinstance(output, tuple) else output).detach().clone())

    handle = decoder_layers(backend.model)[layer].register_forward_hook(hook)
    try:
        run()
    finally:
        handle.remove()
    return seen


def forward(backend: HFBackend):
    return lambda: logits(backend)


def direction(seed: int = 0, size: int = 32) -> torch.Tensor:
    return torch.randn(size, generator=torch.Generator().manual_seed(seed))


def test_add_changes_outputs_and_removal_restores_them_exactly(llama):
    before = logits(llama)
    with steer(llama, direction(), layers=0, coeff=4.0):
        steered = logits(llama)
    assert (steered - before).abs().max() > 1e-2
    assert torch.equal(logits(llama), before)


def test_add_shifts_the_hooked_output_by_coeff_times_v(llama):
    v = direction(1)
    plain = capture(llama, 1, forward(llama))[0]
    with steer(llama, v, layers=1, coeff=2.5):
        shifted = capture(llama, 1, forward(llama))[0]
    assert torch.allclose(shifted - plain, (2.5 * v).expand_as(plain), atol=1e-5)


def test_ablate_leaves_no_projection_and_clamp_sets_it(llama):
    v = direction(2)
    unit = v / v.norm()
    with steer(llama, v, layers=0, mode="ablate"):
        ablated = capture(llama, 0, forward(llama))[0]
    assert (ablated @ unit).abs().max() < 1e-4
    with steer(llama, v, layers=0, mode="clamp", coeff=3.0):
        clamped = capture(llama, 0, forward(llama))[0]
    assert torch.allclose(clamped @ unit, torch.full(clamped.shape[:-1], 3.0), atol=1e-4)


def test_generated_positions_leave_the_prompt_untouched(llama):
    params = GenParams(max_new_tokens=4, min_new_tokens=4, temperature=0.0)
    plain = capture(llama, 0, lambda: llama.generate_batch(HELLO, params))
    with steer(llama, direction(3), layers=0, coeff=5.0, positions="generated"):
        steered = capture(llama, 0, lambda: llama.generate_batch(HELLO, params))
    assert plain[0].shape[1] > 1 and torch.equal(plain[0], steered[0])  # the prompt pass
    assert not torch.allclose(plain[1], steered[1])  # the first generated token's activations
    with steer(llama, direction(3), layers=0, coeff=5.0, positions="all"):
        everywhere = capture(llama, 0, lambda: llama.generate_batch(HELLO, params))
    assert not torch.allclose(plain[0], everywhere[0])


def test_backend_steering_is_active_only_while_generating(tiny_llama_dir, llama):
    steered = HFBackend(str(tiny_llama_dir), dtype="float32",
                        steering=SteeringSpec("random:0", layers="all", coeff=8.0))
    assert torch.equal(logits(steered), logits(llama))  # outside generation the model is the base
    params = GenParams(max_new_tokens=6, temperature=0.0)
    assert steered.generate_batch(HELLO, params)[0].text != llama.generate_batch(HELLO, params)[0].text
    assert steered.info()["steering"]["layers"] == [0, 1]


def test_vlm_layers_are_the_language_models(vlm):
    assert decoder_layers_path(vlm.model) == "model.language_model.layers"
    before = logits(vlm)
    with steer(vlm, direction(4), layers="0-1", coeff=4.0):
        assert (logits(vlm) - before).abs().max() > 1e-2
    assert torch.equal(logits(vlm), before)


def test_vlm_generated_positions_with_sliding_window_cache(vlm):
    params = GenParams(max_new_tokens=3, min_new_tokens=3, temperature=0.0)
    plain = capture(vlm, 0, lambda: vlm.generate_batch(HELLO, params))  # layer 0 uses sliding attention
    with steer(vlm, direction(5), layers=0, coeff=5.0, positions="generated"):
        steered = capture(vlm, 0, lambda: vlm.generate_batch(HELLO, params))
    assert torch.equal(plain[0], steered[0]) and not torch.allclose(plain[1], steered[1])


def test_direction_files_round_trip_with_metadata(tmp_path, llama, tiny_llama_dir):
    path = save_direction(tmp_path / "d.safetensors", {0: direction(6), 1: direction(7)},
                          base_model=str(tiny_llama_dir), method="mean_diff", source="test", extra={"best_layer": "1"})
    loaded = load_direction(path, hidden=32, num_layers=2)
    assert torch.equal(loaded.vectors[1], direction(7))
    assert loaded.metadata["method"] == "mean_diff" and loaded.metadata["hidden_size"] == "32"
    steered = HFBackend(str(tiny_llama_dir), dtype="float32", steering=SteeringSpec(str(path), coeff=2.0))
    assert steered.steering.layer_ids == (1,)  # no layers given: the file's best layer


def test_lm_eval_pt_format_loads(tmp_path, llama):
    v = direction(8)
    torch.save({"layers.1": {"steering_vector": v.unsqueeze(0), "steering_coefficient": 3.0, "action": "clamp",
                             "bias": None}}, tmp_path / "steer.pt")
    loaded = load_direction(tmp_path / "steer.pt", hidden=32, num_layers=2)
    assert loaded.settings[1][:2] == ("clamp", 3.0) and torch.equal(loaded.vectors[1], v)
    with steer(llama, tmp_path / "steer.pt") as steering:
        out = capture(llama, 1, forward(llama))[0]
    assert steering.layer_ids == (1,)
    assert torch.allclose(out @ (v / v.norm()), torch.full(out.shape[:-1], 3.0), atol=1e-4)


def test_random_direction_is_seeded_and_can_match_norms(tmp_path):
    a = load_direction("random:3", hidden=32, num_layers=2)
    assert torch.equal(a.vectors[0], load_direction("random:3", hidden=32, num_layers=2).vectors[0])
    assert not torch.equal(a.vectors[0], load_direction("random:4", hidden=32, num_layers=2).vectors[0])
    assert a.vectors[1].norm() == pytest.approx(1.0)
    ref = save_direction(tmp_path / "ref.safetensors", {1: 7.0 * direction(9) / direction(9).norm()},
                         base_model="x", method="mean_diff", source="test")
    matched = load_direction(f"random:3@{ref}", hidden=32, num_layers=2)
    assert list(matched.vectors) == [1] and matched.vectors[1].norm() == pytest.approx(7.0)


def test_errors_name_the_problem(tmp_path, tiny_llama_dir):
    wide = save_direction(tmp_path / "wide.safetensors", {0: torch.ones(48)}, base_model=str(tiny_llama_dir),
                          method="mean_diff", source="test")
    with pytest.raises(SteeringError, match="Hidden-size mismatch.*48.*32"):
        HFBackend(str(tiny_llama_dir), dtype="float32", steering=SteeringSpec(str(wide), layers=0))
    with pytest.raises(SteeringError, match="Layer 5 is out of range.*2 decoder layers"):
        HFBackend(str(tiny_llama_dir), dtype="float32", steering=SteeringSpec("random:0", layers=5))
    other = save_direction(tmp_path / "other.safetensors", {0: torch.ones(32)}, base_model="google/gemma-3-4b-it",
                           method="mean_diff", source="test")
    with pytest.raises(SteeringError, match="made for 'google/gemma-3-4b-it'.*base_check=false"):
        HFBackend(str(tiny_llama_dir), dtype="float32", steering=SteeringSpec(str(other), layers=0))
    with pytest.raises(FileNotFoundError, match="em-tasks directions"):
        load_direction(tmp_path / "missing.safetensors", hidden=32, num_layers=2)
    with pytest.raises(SteeringError, match="Unknown steering mode"):
        SteeringSpec("random:0", mode="multiply")


@pytest.mark.parametrize(("value", "expected"), [
    (1, (1,)), ("0,2", (0, 2)), ("1-3", (1, 2, 3)), ("1:3", (1, 2)), ("all", (0, 1, 2, 3)), ([-1], (3,)),
])
def test_layer_selections(value, expected):
    assert parse_layers(value, 4) == expected


def test_python_api_composes_lora_and_steering(tiny_llama_dir, tmp_path, monkeypatch, llama):
    from em_tasks.models.lora import random_adapter

    monkeypatch.setenv("EM_TASKS_CACHE", str(tmp_path / "cache"))
    adapter = random_adapter(llama.model, tmp_path / "adapter", rank=2, scale=0.2, base_name=str(tiny_llama_dir))
    model = em_tasks.load_model(str(tiny_llama_dir), adapters=str(adapter), dtype="float32",
                                steering={"direction": "random:1", "layers": "0", "coeff": 2.0})
    assert model.info()["lora"]["adapters"] and model.info()["steering"]["coeff"] == 2.0


def test_em_steer_runs_the_text_task_through_inspect(tiny_llama_dir, tmp_path):
    log = eval("em_tasks/text_misalign", model=f"em-steer/{tiny_llama_dir}",
               model_args={"direction": "random:0", "layers": "0-1", "coeff": -4, "mode": "add"},
               model_roles={"grader": get_model(GRADER)}, limit=2, max_tokens=4, display="none",
               log_dir=str(tmp_path / "logs"))[0]
    assert log.status == "success", log.error
    assert log.samples[0].output.metadata["em_model"]["steering"]["layers"] == [0, 1]


def test_hooks_handle_layers_that_return_tuples():
    """Older transformers layers return (hidden, ...) tuples; the edit goes to the first element only."""
    from types import SimpleNamespace

    from torch import nn

    class TupleLayer(nn.Module):
        def forward(self, h):
            return h * 2, "attention"

    class Inner(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([TupleLayer(), TupleLayer()])

    class Fake(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = Inner()
            self.config = SimpleNamespace(hidden_size=4)

    fake = Fake()
    h = torch.ones(1, 3, 4)
    v = torch.tensor([1.0, 0.0, 0.0, 0.0])
    with steer(fake, v, layers=1, coeff=5.0):
        out, extra = fake.model.layers[1](h)
    assert extra == "attention" and torch.equal(out, h * 2 + 5.0 * v)
    assert torch.equal(fake.model.layers[1](h)[0], h * 2)
