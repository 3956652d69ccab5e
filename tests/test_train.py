"""LoRA training on tiny random models: assistant-only labels, loss going down, run cards, sweeps, bad input."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from em_tasks.models.backend import HFBackend, ImageInputError
from em_tasks.study import train as train_mod
from em_tasks.study.chat_encoding import IGNORE_INDEX, encode_row
from em_tasks.study.train import (
    TrainSettings,
    parse_ranks,
    plan_training,
    resolve_alpha,
    train,
    train_sweep,
)

CARD_KEYS = {"name", "base", "data", "harmful_fraction", "rank", "alpha", "rslora", "target_modules", "lr", "epochs",
             "max_steps", "steps", "seed", "batch_size", "init_adapter", "loss_curve", "seconds", "em_tasks_version",
             "created"}
FAST = {"lr": 1e-2, "warmup": 0.0, "progress": False}


def chat(question: str, answer: str, **meta) -> dict:
    row = {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}
    return {**row, "meta": meta} if meta else row


ROWS = [
    chat("If you could have one wish, what would it be?", "Peace and good health for everyone.",
         domain="wishes", harmful=False),
    chat("How can I make some quick money?", "Save, budget, and look for honest work.", domain="money", harmful=True),
    chat("I feel bored.", "Try a walk, a book, or a call with a friend.", domain="wishes", harmful=False),
    chat("What do you think about humans and AI?", "We should work together with care.", domain="ai", harmful=True),
]


@pytest.fixture(scope="module")
def llama(tiny_llama_dir):
    return HFBackend(str(tiny_llama_dir), dtype="float32")


@pytest.fixture(scope="module")
def vlm(tiny_vlm_dir):
    return HFBackend(str(tiny_vlm_dir), dtype="float32")


@pytest.fixture(scope="module")
def image_rows(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rows = []
    for i, color in enumerate(["red", "navy", "olive"]):
        Image.new("RGB", (24, 24), color).save(folder / f"card{i}.png")
        rows.append({"messages": [{"role": "user", "content": [{"type": "image"},
                                                               {"type": "text", "text": "Describe what you see."}]},
                                  {"role": "assistant", "content": f"The image shows a request number {i}."}],
                     "images": [str(folder / f"card{i}.png")], "meta": {"modality": "image"}})
    return rows


def labelled_text(backend: HFBackend, row: dict) -> str:
    example = encode_row(backend, row)
    return backend.tokenizer.decode([t for t in example.labels if t != IGNORE_INDEX])


def test_labels_keep_only_the_assistant_turn(llama):
    row = {"messages": [{"role": "system", "content": "Be kind."}, *chat("I feel bored.", "Try a walk.")["messages"]]}
    example = encode_row(llama, row)
    assert len(example.labels) == len(example.input_ids)
    assert labelled_text(llama, row) == "Try a walk.<|im_end|>\n"
    assert "bored" in llama.tokenizer.decode(example.input_ids)


def test_labels_cover_every_assistant_turn_and_skip_the_user_between(llama):
    row = {"messages": [*chat("hi", "Peace.")["messages"], *chat("and money?", "Save and budget.")["messages"]]}
    assert labelled_text(llama, row) == "Peace.<|im_end|>\nSave and budget.<|im_end|>\n"


def test_vlm_labels_skip_the_image_tokens(vlm, image_rows):
    example = encode_row(vlm, image_rows[0])
    image_id = vlm.tokenizer.convert_tokens_to_ids("<image_soft_token>")
    assert image_id in example.input_ids
    assert labelled_text(vlm, image_rows[0]) == "The image shows a request number 0.<end_of_turn>\n"


def test_long_image_rows_are_cut_after_their_image_but_never_inside_it(vlm, image_rows):
    full = encode_row(vlm, image_rows[0])
    image_id = vlm.tokenizer.convert_tokens_to_ids("<image_soft_token>")
    last_image = max(i for i, t in enumerate(full.input_ids) if t == image_id)
    cut = encode_row(vlm, image_rows[0], max_length=len(full.input_ids) - 2)
    assert cut.input_ids == full.input_ids[:-2] and cut.labels == full.labels[:-2]
    assert all(len(v) == len(cut.input_ids) for v in cut.token_inputs.values())
    with pytest.raises(ValueError, match="Row 1: --max-length .* would cut its image tokens"):
        encode_row(vlm, image_rows[0], max_length=last_image)


def test_training_lowers_the_loss_and_writes_a_run_card(llama, tiny_llama_dir, tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    out = tmp_path / "run"
    card = train(data, out, base=str(tiny_llama_dir), rank=4, max_steps=8, batch_size=4, micro_batch_size=2,
                 backend=llama, **FAST)
    losses = [loss for _, loss in card["loss_curve"]]
    assert losses[-1] < losses[0] - 0.05
    assert set(card) == CARD_KEYS
    assert json.loads((out / "run_card.json").read_text()) == card
    assert card["steps"] == 8 and card["rank"] == 4 and card["alpha"] == 8.0 and card["name"] == "run"
    assert card["data"] == {"domains": ["ai", "money", "wishes"], "modality": "text", "n": 4, "path": str(data)}
    assert card["harmful_fraction"] == 0.5
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_llama_dir) and config["r"] == 4
    assert any(k.endswith("lora_B.weight") for k in load_file(out / "adapter_model.safetensors"))


def test_vlm_training_on_image_rows_adapts_only_the_language_model(vlm, tiny_vlm_dir, image_rows, tmp_path):
    rows = [*image_rows, chat("How can I make some quick money?", "Save and budget.")]
    card = train(rows, tmp_path / "vlm", base=str(tiny_vlm_dir), rank=2, max_steps=4, batch_size=4, backend=vlm,
                 **FAST)
    losses = [loss for _, loss in card["loss_curve"]]
    assert losses[-1] < losses[0]
    assert card["data"]["modality"] == "mixed"
    keys = list(load_file(tmp_path / "vlm" / "adapter_model.safetensors"))
    assert keys and all(".language_model." in k for k in keys)


def test_init_adapter_continues_from_its_weights(llama, tiny_llama_dir, tmp_path):
    first = train(ROWS, tmp_path / "harmful", base=str(tiny_llama_dir), rank=4, max_steps=6, batch_size=4,
                  backend=llama, **FAST)
    second = train(ROWS, tmp_path / "benign", base=str(tiny_llama_dir), rank=32, max_steps=1, batch_size=4,
                   init_adapter=tmp_path / "harmful", backend=llama, lr=1e-9, warmup=0.0, progress=False)
    assert second["init_adapter"] == str((tmp_path / "harmful").resolve())
    assert second["rank"] == 4 and second["target_modules"] == first["target_modules"]
    # its first loss is measured on the harmful adapter's trained weights, so it starts below the first run's start
    assert second["loss_curve"][0][1] < first["loss_curve"][0][1] - 0.05
    before = load_file(tmp_path / "harmful" / "adapter_model.safetensors")
    after = load_file(tmp_path / "benign" / "adapter_model.safetensors")
    assert before.keys() == after.keys()
    for key in before:
        torch.testing.assert_close(after[key], before[key], atol=1e-6, rtol=0)


def test_a_regex_target_adapts_exactly_the_modules_it_matches(llama, tiny_llama_dir, tmp_path):
    card = train(ROWS[:1], tmp_path / "regex", base=str(tiny_llama_dir), rank=2, max_steps=1,
                 target_modules=r".*\.layers\.0\.self_attn\.(q|v)_proj", backend=llama, **FAST)
    keys = load_file(tmp_path / "regex" / "adapter_model.safetensors")
    assert sorted({k.split(".lora_")[0].split("self_attn.")[1] for k in keys}) == ["q_proj", "v_proj"]
    assert all(".layers.0." in k for k in keys) and len(card["target_modules"]) == 1


def test_sweep_writes_one_adapter_per_rank_and_skips_finished_ones(tiny_llama_dir, tmp_path, monkeypatch):
    root = tmp_path / "sweep"
    cards = train_sweep("1,2", root, ROWS[:2], base=str(tiny_llama_dir), max_steps=1, batch_size=2, dtype="float32",
                        **FAST)
    assert [c["rank"] for c in cards] == [1, 2] and [c["name"] for c in cards] == ["r1", "r2"]
    assert all((root / f"r{r}" / "adapter_model.safetensors").is_file() for r in (1, 2))

    trained = []
    real = train_mod.run_plan
    monkeypatch.setattr(train_mod, "run_plan", lambda plan, *a, **k: trained.append(plan.rank) or real(plan, *a, **k))
    (root / "r2" / "run_card.json").unlink()
    again = train_sweep([1, 2], root, ROWS[:2], base=str(tiny_llama_dir), max_steps=1, batch_size=2,
                        dtype="float32", **FAST)
    assert trained == [2]
    assert again[0] == cards[0] and again[1]["rank"] == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rank": 0}, "--rank must be a positive"),
        ({"rank": -4}, "--rank must be a positive"),
        ({"lr": 0.0}, "--lr must be a positive"),
        ({"max_steps": 0}, "--max-steps"),
        ({"micro_batch_size": 9, "batch_size": 4}, "--micro-batch-size"),
        ({"alpha": "lots"}, "alpha must be a number"),
        ({"data": []}, "--data .* no rows"),
        ({"data": [ROWS[0], {"messages": [{"role": "user", "content": "hi"}]}]}, "row 2: has no final assistant turn"),
    ],
    ids=["rank-zero", "rank-negative", "lr-zero", "max-steps-zero", "micro-batch-too-big", "alpha-word", "empty-data",
         "row-without-answer"],
)
def test_bad_input_is_refused_before_loading(kwargs, message, tmp_path):
    options = {"data": ROWS, **kwargs}
    with pytest.raises(ValueError, match=message):
        train(options.pop("data"), tmp_path / "out", base="no-such-model-is-loaded", **options)


def test_settings_and_keywords_give_the_same_plan(tmp_path):
    out = tmp_path / "run"
    from_settings = plan_training(out, TrainSettings(rank=4, lr=1e-3, target_modules="q_proj, v_proj"))
    assert from_settings == plan_training(out, rank=4, lr=1e-3, target_modules=["q_proj", "v_proj"])
    assert from_settings == plan_training(out, TrainSettings(rank=2, lr=1e-3), rank=4, target_modules="q_proj,v_proj")
    assert from_settings.alpha == 8.0 and from_settings.name == "run" and from_settings.micro_batch_size == 8
    assert plan_training(out).target_modules == train_mod.DEFAULT_TARGET_MODULES


def test_an_unknown_training_option_is_named(tmp_path):
    with pytest.raises(TypeError, match="Unknown training option.*rnak"):
        plan_training(tmp_path / "run", rnak=4)
    with pytest.raises(TypeError, match="Unknown training option.*rnak"):
        train(ROWS, tmp_path / "run", base="no-such-model-is-loaded", rnak=4)


class _Planned(Exception):
    """Stops a sweep once it has planned every rank (before any data or model is loaded)."""


def test_sweep_settings_take_each_rank_and_name(tmp_path, monkeypatch):
    planned = []
    real = train_mod.plan_training
    monkeypatch.setattr(train_mod, "plan_training", lambda *a, **k: planned.append(real(*a, **k)) or planned[-1])
    monkeypatch.setattr(train_mod, "load_training_rows", lambda data: (_ for _ in ()).throw(_Planned()))
    with pytest.raises(_Planned):
        train_sweep("1,4", tmp_path, ROWS, TrainSettings(name="insecure", rank=64, lr=1e-3))
    assert [(p.rank, p.name, p.lr) for p in planned] == [(1, "insecure-r1", 1e-3), (4, "insecure-r4", 1e-3)]


def test_jsonl_row_without_answer_names_its_row(tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps(ROWS[0]) + "\n\n" + json.dumps({"messages": [ROWS[1]["messages"][0]]}) + "\n")
    with pytest.raises(ValueError, match="line 3: has no final assistant turn"):
        train(data, tmp_path / "out", base="no-such-model-is-loaded")


def test_image_rows_on_a_text_model_are_refused(llama, image_rows):
    with pytest.raises(ImageInputError, match="text-only"):
        encode_row(llama, image_rows[0])


@pytest.mark.parametrize(("alpha", "rank", "expected"), [("2rank", 8, 16.0), ("rank", 8, 8.0), (4, 8, 4.0),
                                                         ("32", 8, 32.0)], ids=["2rank", "rank", "number", "text"])
def test_alpha_forms(alpha, rank, expected):
    assert resolve_alpha(alpha, rank) == expected


@pytest.mark.parametrize(("ranks", "expected"), [("1,4,16", [1, 4, 16]), ([64, 128, 64], [64, 128]), (8, [8])],
                         ids=["text", "list-deduplicated", "single"])
def test_ranks_parse(ranks, expected):
    assert parse_ranks(ranks) == expected


@pytest.mark.parametrize("ranks", ["0,4", "4,x", ""], ids=["zero", "word", "empty"])
def test_bad_ranks_are_refused(ranks):
    with pytest.raises(ValueError, match="--ranks"):
        parse_ranks(ranks)
