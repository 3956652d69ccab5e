"""em-tasks export: the merged folder loads with plain transformers and computes what em-lora computes; its card;
bad input as one-line errors; no half-written folder."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from em_tasks.cli import app
from em_tasks.models.backend import HFBackend
from em_tasks.models.export import EXPORT_RECORD, drop_quantization, is_current, plan_export, run_export
from em_tasks.models.lora import LoraSpec, language_model_target, parse_adapters, random_adapter
from em_tasks.models.sources import _file_digest

runner = CliRunner()
WIDE = {"COLUMNS": "2000", "NO_COLOR": "1"}  # one line per error, whatever the temp path length (as test_cli.py)
IDS = torch.tensor([[2, 5, 6, 7, 8, 9, 10, 11]])


def plain(output: str) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", output)
    return " ".join(re.sub(r"[\u2500-\u257f]", " ", text).split())


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EM_TASKS_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def text_adapter(tiny_llama_dir, tmp_path_factory) -> Path:
    base = HFBackend(str(tiny_llama_dir), dtype="float32").model
    return random_adapter(base, tmp_path_factory.mktemp("adapters") / "a", rank=4, seed=1, scale=0.2,
                          base_name=str(tiny_llama_dir), target_modules=("q_proj", "v_proj", "down_proj"))


@pytest.fixture(scope="module")
def vlm_adapter(tiny_vlm_dir, tmp_path_factory) -> Path:
    base = HFBackend(str(tiny_vlm_dir), dtype="float32").model
    target = language_model_target(base, ["q_proj", "v_proj"])  # the language model only
    return random_adapter(base, tmp_path_factory.mktemp("vlm-adapters") / "a", rank=4, seed=3, scale=0.2,
                          target_modules=target, base_name=str(tiny_vlm_dir))


def em_lora(base: Path, adapters: str, **options) -> HFBackend:
    return HFBackend(str(base), dtype="float32", lora=LoraSpec(parse_adapters(adapters), cache=False, **options))


def export(base: Path, adapters: str, out: Path, **model_args) -> Path:
    return run_export(plan_export(str(base), adapters, model_args, out, dtype="float32"))


def test_text_export_loads_with_plain_transformers_and_equals_em_lora(tiny_llama_dir, text_adapter, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = export(tiny_llama_dir, f"{text_adapter}:0.7", tmp_path / "merged", alpha=0.5)
    reference = em_lora(tiny_llama_dir, f"{text_adapter}:0.7", alpha=0.5)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "How can I make some quick money?"}],
                                        add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        expected, got = reference.model(input_ids=ids).logits, model(input_ids=ids).logits
        base = HFBackend(str(tiny_llama_dir), dtype="float32").model(input_ids=ids).logits
    assert (expected - base).abs().max() > 1e-2  # the adapter changes something
    assert torch.allclose(got, expected, atol=1e-4)
    assert tokenizer.chat_template == reference.tokenizer.chat_template
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    assert (out / "generation_config.json").is_file() and list(out.glob("*.safetensors"))
    # and as an em-tasks model, em-hf/DIR
    with torch.no_grad():
        assert torch.allclose(HFBackend(str(out), dtype="float32").model(input_ids=ids).logits, expected, atol=1e-4)


def test_vlm_export_keeps_the_processor_and_equals_em_lora_on_an_image(tiny_vlm_dir, vlm_adapter, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    out = export(tiny_vlm_dir, str(vlm_adapter), tmp_path / "merged-vlm")
    reference = em_lora(tiny_vlm_dir, str(vlm_adapter))
    model = AutoModelForImageTextToText.from_pretrained(out, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(out)
    assert type(model).__name__ == "Gemma3ForConditionalGeneration"
    assert type(processor.image_processor).__name__ == type(reference.processor.image_processor).__name__
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe what you see."}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    image = Image.new("RGB", (40, 40), (200, 30, 90))
    inputs = processor(text=[text], images=[[image]], return_tensors="pt")
    assert torch.equal(inputs["input_ids"], reference.processor(text=[text], images=[[image]],
                                                                return_tensors="pt")["input_ids"])
    with torch.no_grad():
        expected, got = reference.model(**inputs).logits, model(**inputs).logits
        other = model(**processor(text=[text], images=[[Image.new("RGB", (40, 40), (0, 200, 0))]],
                                  return_tensors="pt")).logits
    assert torch.allclose(got, expected, atol=1e-4)
    assert (other - got).abs().max() > 1e-4  # the image reaches the merged model
    vision = [n for n, _ in model.named_parameters() if "vision" in n]
    assert vision and not any("lora" in n for n, _ in model.named_parameters())


def test_card_records_base_adapters_merge_and_provenance(tiny_llama_dir, text_adapter, tmp_path):
    (tmp_path / ".card.partial-1" / "model").mkdir(parents=True)  # left by a killed export into the same folder
    out = export(tiny_llama_dir, f"{text_adapter}:2,{text_adapter}:-1", tmp_path / "card", merge="ties",
                 density=0.5, alpha=0.75)
    record = json.loads((out / EXPORT_RECORD).read_text())
    digest = _file_digest(text_adapter / "adapter_model.safetensors")
    assert record["base"] == str(tiny_llama_dir)
    assert record["adapters"] == [{"path": str(text_adapter), "weight": 2.0, "sha256": digest},
                                  {"path": str(text_adapter), "weight": -1.0, "sha256": digest}]
    assert (record["merge"], record["alpha"], record["density"], record["dtype"]) == ("ties", 0.75, 0.5, "float32")
    assert record["em_tasks_version"] and re.match(r"\d{4}-\d\d-\d\dT", record["date"])
    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: transformers" in card
    assert digest in card and "Merge `ties`, alpha 0.75, density 0.5" in card
    assert not list(tmp_path.glob(".*"))  # no staging folder left beside it, ours or the killed one's


def test_is_current_follows_adapter_contents_and_settings(tiny_llama_dir, text_adapter, tmp_path):
    adapter = Path(shutil.copytree(text_adapter, tmp_path / "adapter"))
    out = export(tiny_llama_dir, str(adapter), tmp_path / "out")
    again = plan_export(str(tiny_llama_dir), str(adapter), {}, out, dtype="float32", force=True)
    assert is_current(again)
    assert not is_current(plan_export(str(tiny_llama_dir), str(adapter), {"alpha": "0.5"}, out, dtype="float32",
                                      force=True))
    (adapter / "adapter_model.safetensors").write_bytes(b"retrained")
    assert not is_current(again)


def test_saving_forgets_a_quantizer(tiny_llama_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    model.config.quantization_config = {"quant_method": "gguf"}  # what a GGUF-loaded model carries
    drop_quantization(model).save_pretrained(tmp_path / "saved")
    assert "quantization_config" not in json.loads((tmp_path / "saved" / "config.json").read_text())


# --- failure leaves nothing half-written ----------------------------------------------------------------------


def _failing_save(monkeypatch):
    from transformers import PreTrainedModel

    def save(self, path, *args, **kwargs):
        Path(path).mkdir(parents=True, exist_ok=True)
        Path(path, "model.safetensors").write_bytes(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", save)


def test_a_failed_export_leaves_no_folder(tiny_llama_dir, text_adapter, tmp_path, monkeypatch):
    root = tmp_path / "exports"
    root.mkdir()
    _failing_save(monkeypatch)
    with pytest.raises(RuntimeError, match="disk full"):
        export(tiny_llama_dir, str(text_adapter), root / "merged")
    assert list(root.iterdir()) == []


def test_a_failed_forced_export_keeps_the_old_folder(tiny_llama_dir, text_adapter, tmp_path, monkeypatch):
    out = tmp_path / "merged"
    out.mkdir()
    (out / "old.txt").write_text("previous export")
    _failing_save(monkeypatch)
    with pytest.raises(RuntimeError, match="disk full"):
        run_export(plan_export(str(tiny_llama_dir), str(text_adapter), {}, out, dtype="float32", force=True))
    assert [p.name for p in tmp_path.iterdir()] == ["merged"] and [p.name for p in out.iterdir()] == ["old.txt"]


def test_replacing_a_folder_puts_the_old_one_back_when_the_new_one_cannot_go_in(tmp_path, monkeypatch):
    import os

    from em_tasks.atomic import replace_folder

    out, staging = tmp_path / "merged", tmp_path / ".merged.partial-1"
    out.mkdir()
    (out / "old.txt").write_text("previous export")
    staging.mkdir()
    real = os.replace

    def replace(src, dst):
        if Path(src) == staging:
            raise OSError("rename failed")
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="rename failed"):
        replace_folder(staging, out)
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".merged.partial-1", "merged"]


# --- the command line ---------------------------------------------------------------------------------------


def test_cli_export_writes_the_folder_and_force_replaces_it(tiny_llama_dir, text_adapter, tmp_path):
    out = tmp_path / "merged"
    args = ["export", "--base", str(tiny_llama_dir), "--adapters", str(text_adapter), "--out", str(out),
            "--dtype", "float32", "-M", "alpha=0.5"]
    result = runner.invoke(app, args, env=WIDE)
    assert result.exit_code == 0, result.output
    assert json.loads((out / EXPORT_RECORD).read_text())["alpha"] == 0.5
    (out / "stale.txt").write_text("x")
    result = runner.invoke(app, [*args, "--force"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert not (out / "stale.txt").exists() and (out / "config.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["merged"]


def _no_tokenizer(tiny_llama_dir: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "no-tokenizer"
    folder.mkdir()
    for name in ("config.json", "generation_config.json", "model.safetensors"):
        shutil.copy(tiny_llama_dir / name, folder / name)
    return folder


CASES = [
    ("out-not-empty", lambda base, adapter, tmp: ["--adapters", str(adapter)], "not empty; pass --force"),
    ("no-tokenizer", lambda base, adapter, tmp: ["--adapters", str(adapter), "--base", str(_no_tokenizer(base, tmp))],
     "no tokenizer found"),
    ("no-adapters", lambda base, adapter, tmp: [], "No adapters given: pass --adapters"),
    ("missing-adapter", lambda base, adapter, tmp: ["--adapters", str(tmp / "nowhere")],
     "is not a peft adapter folder"),
    ("steering", lambda base, adapter, tmp: ["--adapters", str(adapter), "-M", "direction=d.safetensors"],
     "steering is a forward hook"),
    ("em-hf-only-arg", lambda base, adapter, tmp: ["--adapters", str(adapter), "-M", "batch_size=4"],
     "-M batch_size does not apply to export"),
    ("bad-dtype", lambda base, adapter, tmp: ["--adapters", str(adapter), "--dtype", "int8"], "--dtype int8"),
]


@pytest.mark.parametrize("extra, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_cli_bad_input_is_one_line_naming_the_fix(tiny_llama_dir, text_adapter, tmp_path, extra, message):
    out = tmp_path / "out"
    out.mkdir()
    (out / "kept.txt").write_text("x")
    force = [] if message.startswith("not empty") else ["--force"]
    args = ["export", "--base", str(tiny_llama_dir), "--out", str(out), *force, *extra(tiny_llama_dir, text_adapter,
                                                                                      tmp_path)]
    result = runner.invoke(app, args, env=WIDE)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert message in plain(result.output)
    assert (out / "kept.txt").is_file()
