"""split_lora_key: the one parser of peft LoRA state-dict keys (fit checks, weight checks, the Fisher proxy)."""

from __future__ import annotations

import pytest

from em_tasks.models.lora import LoraKey, split_lora_key

Q = "model.layers.0.self_attn.q_proj"

CASES = [
    (f"base_model.model.{Q}.lora_A.weight", LoraKey(Q, "A", False, None)),
    (f"base_model.model.{Q}.lora_B.weight", LoraKey(Q, "B", False, None)),
    (f"{Q}.lora_A.weight", LoraKey(Q, "A", False, None)),
    (f"base_model.model.{Q}.lora_A.adapter0.weight", LoraKey(Q, "A", False, "adapter0")),
    (f"base_model.model.{Q}.lora_B.default.weight", LoraKey(Q, "B", False, "default")),
    ("base_model.model.model.embed_tokens.lora_embedding_A", LoraKey("model.embed_tokens", "A", True, None)),
    ("base_model.model.model.embed_tokens.lora_embedding_B.adapter1",
     LoraKey("model.embed_tokens", "B", True, "adapter1")),
    ("base_model.model.model.language_model.layers.1.mlp.up_proj.lora_A.weight",
     LoraKey("model.language_model.layers.1.mlp.up_proj", "A", False, None)),
    (f"base_model.model.{Q}.lora_B.bias", None),
    (f"base_model.model.{Q}.lora_B.default.bias", None),
    (f"base_model.model.{Q}.lora_magnitude_vector", None),
    (f"{Q}.weight", None),
    (f"{Q}.base_layer.weight", None),
    ("lora_A.weight", None),
]
IDS = ["saved-A", "saved-B", "no-prefix", "live-adapter-infix", "live-default", "embedding-A", "embedding-B-live",
       "vlm-language-model", "bias", "live-bias", "dora-magnitude", "base-weight", "base-layer", "no-module"]


@pytest.mark.parametrize(("key", "parsed"), CASES, ids=IDS)
def test_lora_keys_split(key, parsed):
    assert split_lora_key(key) == parsed
