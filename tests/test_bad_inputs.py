"""Bad inputs and faults, tried through the public entry points: each must stop with one clear message that names the
input and the fix, print no traceback from em-tasks' own commands, and leave nothing half-written.

The README's "What happens when…" table counts the cases here (each parametrised case is one).
"""

from __future__ import annotations

import asyncio
import json
import re
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from graders import ScriptedModel
from inspect_ai.model import modelapi
from typer.testing import CliRunner

from em_tasks.cli import app

runner = CliRunner()
ENV = {"COLUMNS": "2000", "NO_COLOR": "1", "HF_HUB_OFFLINE": "1"}


def plain(output: str) -> str:
    """Words only: no colour codes, box characters or line breaks (whatever the terminal)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", output)
    text = re.sub(r"[\u2500-\u257f]", " ", text)
    return " ".join(text.split())


def cli_error(args: list[str], *words: str) -> str:
    """Run ``em-tasks ARGS``: it must fail with exit code 2, one ``error:`` line holding ``words``, no traceback."""
    result = runner.invoke(app, args, env=ENV)
    text = plain(result.output)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, (AssertionError, TypeError))
    assert text.count("error:") == 1, result.output
    for word in words:
        assert word.lower() in text.lower(), (word, result.output)
    return text


def api_error(call: Callable[[], object], *words: str, kind: type[BaseException] = ValueError) -> str:
    """A Python API call must raise ``kind`` (a user error: ValueError or OSError) whose message holds ``words``."""
    with pytest.raises(kind) as info:
        call()
    message = " ".join(str(info.value).split())
    for word in words:
        assert word.lower() in message.lower(), (word, message)
    return message


# --- question files -------------------------------------------------------------------------------------------


GOOD_ITEM = "category: c\nitems:\n  - id: a-1\n    question: Is this fine?\n"

QUESTION_FILES = {
    "malformed-yaml": (b"category: c\nitems: [\n  - id: 1\n", ["q.yaml", "not valid YAML"]),
    "missing-question": (b"category: c\nitems:\n  - id: a-1\n", ["q.yaml", "question"]),
    "unknown-kind": (b"kind: quiz\ncategory: c\nitems:\n  - id: a-1\n    question: Hi?\n", ["q.yaml", "kind"]),
    "wrong-type": (b"category: c\nitems:\n  - id: a-1\n    question: 5\n", ["q.yaml", "question", "string"]),
    "items-not-list": (b"category: c\nitems: 3\n", ["q.yaml", "items", "list"]),
    "empty-file": (b"", ["q.yaml", "empty"]),
    "not-utf8": ("category: café\nitems:\n  - id: a\n    question: Hé?\n".encode("latin-1"), ["q.yaml", "UTF-8"]),
    "duplicate-ids": (GOOD_ITEM.encode() + b"  - id: a-1\n    question: Again?\n", ["duplicate", "a-1"]),
    "unknown-image-style": (GOOD_ITEM.encode() + b"    image: {style: hologram}\n", ["q.yaml", "style"]),
    "external-empty-paraphrases": (b"- id: x\n  type: free_form\n  paraphrases: []\n", ["q.yaml", "paraphrases"]),
}


@pytest.mark.parametrize("content, words", QUESTION_FILES.values(), ids=QUESTION_FILES.keys())
def test_bad_question_files_are_named(tmp_path, content, words):
    from em_tasks.tasks import text_misalign

    path = tmp_path / "q.yaml"
    path.write_bytes(content)
    api_error(lambda: text_misalign(questions=str(path)), *words)


def test_a_missing_question_file_is_named(tmp_path):
    from em_tasks.tasks import multimodal_misalign

    api_error(lambda: multimodal_misalign(questions=str(tmp_path / "nope.yaml")), "nope.yaml", "not found",
              kind=FileNotFoundError)


def test_a_huge_question_file_is_refused_before_parsing(tmp_path):
    from em_tasks.benchmark.items import MAX_QUESTION_FILE_BYTES
    from em_tasks.tasks import text_misalign

    path = tmp_path / "q.yaml"
    with path.open("wb") as f:
        f.write(GOOD_ITEM.encode())
        f.truncate(MAX_QUESTION_FILE_BYTES + 1)  # sparse: no time or disk spent
    api_error(lambda: text_misalign(questions=str(path)), "q.yaml", "MB", "split")


def test_an_unknown_category_lists_the_known_ones():
    from em_tasks.tasks import text_misalign

    api_error(lambda: text_misalign(categories="no_such_category"), "no_such_category", "known categories")


# --- image files ----------------------------------------------------------------------------------------------


def _png(width: int, height: int, mode: int = 2) -> bytes:
    """A PNG header (+ one empty IDAT) declaring any size: enough for PIL to read the size without pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, mode, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def _good_png(path: Path, mode: str = "RGB") -> None:
    from PIL import Image

    Image.new(mode, (32, 24), color=0 if mode in ("I;16", "L", "1", "P") else (10, 20, 30)[: len(mode)]).save(path)


def _image_item(tmp_path: Path, image_name: str) -> Path:
    path = tmp_path / "q.yaml"
    path.write_text(f"category: c\nitems:\n  - id: pic-1\n    question: What is this?\n    image: {{file: {image_name}}}\n")
    return path


def _corrupt(path: Path) -> None:
    path.write_bytes(b"this is not an image at all" * 10)


def _truncated(path: Path) -> None:
    _good_png(path)
    path.write_bytes(path.read_bytes()[:60])


def _bomb(path: Path) -> None:
    path.write_bytes(_png(40_000, 40_000))


IMAGES = {
    "missing": (None, ["pic-1", "photo.png"]),
    "corrupt": (_corrupt, ["pic-1", "photo.png"]),
    "truncated": (_truncated, ["pic-1", "photo.png"]),
    "decompression-bomb": (_bomb, ["pic-1", "photo.png", "pixels"]),
}


@pytest.mark.parametrize("make, words", IMAGES.values(), ids=IMAGES.keys())
def test_bad_image_files_are_named_with_their_item(tmp_path, make, words):
    from em_tasks.tasks import multimodal_misalign

    if make is not None:
        make(tmp_path / "photo.png")
    path = _image_item(tmp_path, "photo.png")
    api_error(lambda: multimodal_misalign(questions=str(path)), *words)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "CMYK"])
def test_images_in_any_mode_are_converted_not_refused(tmp_path, mode):
    """Not an error: greyscale, alpha, palette, 16-bit and CMYK images load (the model sees RGB)."""
    from em_tasks.tasks import multimodal_misalign

    suffix = "jpg" if mode == "CMYK" else "png"
    _good_png(tmp_path / f"photo.{suffix}", mode)
    task = multimodal_misalign(questions=str(_image_item(tmp_path, f"photo.{suffix}")))
    assert len(task.dataset) == 1


# --- adapters -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tiny_llama_dir):
    from em_tasks.models.backend import HFBackend

    return HFBackend(str(tiny_llama_dir), dtype="float32").model


def _adapter(tiny_model, tiny_llama_dir, folder: Path, **kwargs) -> Path:
    from em_tasks.models.lora import random_adapter

    return random_adapter(tiny_model, folder, rank=4, scale=0.2, base_name=str(tiny_llama_dir), **kwargs)


def _edit_weights(folder: Path, change: Callable[[str, torch.Tensor], torch.Tensor]) -> None:
    from safetensors.torch import load_file, save_file

    path = folder / "adapter_model.safetensors"
    weights = load_file(str(path))
    save_file({k: change(k, v).contiguous() for k, v in weights.items()}, str(path))


def _edit_config(folder: Path, **changes) -> None:
    path = folder / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def _no_folder(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder)


def _no_weights(folder: Path) -> None:
    (folder / "adapter_model.safetensors").unlink()


def _truncate_weights(folder: Path) -> None:
    path = folder / "adapter_model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _pickle_only(folder: Path) -> None:
    (folder / "adapter_model.safetensors").rename(folder / "adapter_model.bin")


ADAPTERS = {
    "missing-folder": (_no_folder, ["adapter_config.json"]),
    "missing-weights": (_no_weights, ["adapter_model.safetensors"]),
    "truncated-weights": (_truncate_weights, ["adapter_model.safetensors", "cut short"]),
    "pickle-only": (_pickle_only, ["pickle", "safetensors"]),
    "wrong-base": (lambda f: _edit_config(f, base_model_name_or_path="google/gemma-3-4b-it"),
                   ["gemma-3-4b-it", "base_check=false"]),
    "wrong-shapes": (lambda f: _edit_weights(f, lambda k, v: torch.cat([v, v], dim=-1) if "lora_A" in k else v),
                     ["does not fit"]),
    "nan-weights": (lambda f: _edit_weights(f, lambda k, v: torch.full_like(v, float("nan"))), ["not finite"]),
    "inf-weights": (lambda f: _edit_weights(f, lambda k, v: v * float("inf") if "lora_B" in k else v),
                    ["not finite"]),
    "zero-update": (lambda f: _edit_weights(f, lambda k, v: torch.zeros_like(v) if "lora_B" in k else v),
                    ["zero update"]),
    "rank-0": (lambda f: _edit_config(f, r=0), ["rank", "r=0"]),
    "modules-the-model-lacks": (lambda f: _edit_weights(f, lambda k, v: v) or _rename_modules(f), ["does not exist"]),
    "not-lora": (lambda f: _edit_config(f, peft_type="IA3"), ["LoRA"]),
}


def _rename_modules(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    path = folder / "adapter_model.safetensors"
    weights = load_file(str(path))
    save_file({k.replace("q_proj", "qq_proj"): v for k, v in weights.items()}, str(path))
    _edit_config(folder, target_modules=["qq_proj", "v_proj"])


@pytest.mark.parametrize("spoil, words", ADAPTERS.values(), ids=ADAPTERS.keys())
def test_bad_adapters_stop_export_with_one_message(tmp_path, tiny_model, tiny_llama_dir, spoil, words, monkeypatch):
    monkeypatch.setenv("EM_TASKS_CACHE", str(tmp_path / "cache"))
    folder = _adapter(tiny_model, tiny_llama_dir, tmp_path / "adapter")
    spoil(folder)
    out = tmp_path / "exported"
    cli_error(["export", "--base", str(tiny_llama_dir), "--adapters", str(folder), "--out", str(out)], *words)
    assert not out.exists()  # nothing half-written
    merged = tmp_path / "cache" / "merged"
    assert not merged.exists() or not any(merged.iterdir())


def test_a_target_matching_no_module_is_an_error(tmp_path, tiny_model, tiny_llama_dir, monkeypatch):
    from em_tasks import load_model

    monkeypatch.setenv("EM_TASKS_CACHE", str(tmp_path / "cache"))
    folder = _adapter(tiny_model, tiny_llama_dir, tmp_path / "adapter")
    api_error(lambda: load_model(str(tiny_llama_dir), adapters=str(folder), target="no_such_proj", dtype="float32"),
              "target")


# --- direction files ------------------------------------------------------------------------------------------


def _steer(tiny_llama_dir: Path, **steering) -> object:
    from em_tasks import load_model

    return load_model(str(tiny_llama_dir), steering={"layers": 0, "coeff": 4.0, **steering}, dtype="float32")


def _direction(path: Path, tensors: dict[str, torch.Tensor], base: str | None = None) -> str:
    """A direction file for the tiny model (or for ``base``)."""
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata={"base_model": base or TINY_BASE})
    return str(path)


def _garbage(path: Path) -> str:
    path.write_bytes(b"garbage" * 20)
    return str(path)


TINY_BASE = "tiny-llama"  # the base recorded in direction files here; the test checks with base_check off


DIRECTIONS = {
    "wrong-size": (lambda p: _direction(p, {"layer.0": torch.ones(48)}, "another-model"), {},
                   ["48", "another-model"]),
    "nan": (lambda p: _direction(p, {"layer.0": torch.full((32,), float("nan"))}), {}, ["not finite", "layer 0"]),
    "zero-add": (lambda p: _direction(p, {"layer.0": torch.zeros(32)}), {}, ["all zeros"]),
    "zero-ablate": (lambda p: _direction(p, {"layer.0": torch.zeros(32)}), {"mode": "ablate"}, ["all zeros"]),
    "empty": (lambda p: _direction(p, {"other": torch.ones(32)}), {}, ["layer.<i>"]),
    "not-safetensors": (_garbage, {}, ["safetensors"]),
    "bad-random-spec": (lambda p: "random:abc", {}, ["random:SEED"]),
    "layer-out-of-range": (lambda p: "random:0", {"layers": 99}, ["99"]),
    "unknown-mode": (lambda p: "random:0", {"mode": "flip"}, ["flip", "add"]),
    "pickled-pt": (lambda p: _pickled(p), {}, ["weights_only"]),
}


def _pickled(path: Path) -> str:
    """A .pt file holding an object torch.load(weights_only=True) refuses to rebuild (a pickle of arbitrary code)."""
    import datetime

    target = path.with_suffix(".pt")
    torch.save({"layers.0": {"steering_vector": torch.ones(32), "made": datetime.date(2026, 1, 1)}}, target)
    return str(target)


@pytest.mark.parametrize("make, options, words", DIRECTIONS.values(), ids=DIRECTIONS.keys())
def test_bad_directions_are_named(tmp_path, tiny_llama_dir, make, options, words):
    spec = make(tmp_path / "d.safetensors")
    api_error(lambda: _steer(tiny_llama_dir, direction=spec, base_check=False, **options), *words)


def test_a_missing_direction_file_is_named(tmp_path, tiny_llama_dir):
    api_error(lambda: _steer(tiny_llama_dir, direction=str(tmp_path / "gone.safetensors")),
              "gone.safetensors", "em-tasks directions", kind=FileNotFoundError)


def test_a_direction_for_another_base_is_refused(tmp_path, tiny_llama_dir):
    spec = _direction(tmp_path / "d.safetensors", {"layer.0": torch.ones(32)}, "google/gemma-3-4b-it")
    api_error(lambda: _steer(tiny_llama_dir, direction=spec), "gemma-3-4b-it", "base_check=false")


# --- judge input ----------------------------------------------------------------------------------------------


JUDGE_INPUTS = {
    "not-json": ('{"question": "q", "answer": "a"}\n{oops\n', ["line 2 is not JSON"]),
    "missing-answer": ('{"question": "q"}\n', ["line 1", "answer"]),
    "not-an-object": ('["q", "a"]\n', ["line 1", "question"]),
    "answer-not-text": ('{"question": "q", "answer": 3}\n', ["line 1", "answer"]),
    "empty": ("\n\n", ["no answers to judge"]),
}


@pytest.mark.parametrize("content, words", JUDGE_INPUTS.values(), ids=JUDGE_INPUTS.keys())
def test_bad_judge_input_is_named(tmp_path, content, words):
    path = tmp_path / "answers.jsonl"
    path.write_text(content)
    cli_error(["judge", str(path)], "answers.jsonl", *words)


def test_judge_input_that_does_not_exist(tmp_path):
    cli_error(["judge", str(tmp_path / "nope.jsonl")], "nope.jsonl")


def test_a_grader_without_its_key_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    path = tmp_path / "answers.jsonl"
    path.write_text('{"question": "q", "answer": "a"}\n')
    cli_error(["judge", str(path), "--grader", "openai/gpt-4o-2024-08-06"], "OPENAI_API_KEY")


def test_an_unknown_grader_provider_is_named(tmp_path):
    path = tmp_path / "answers.jsonl"
    path.write_text('{"question": "q", "answer": "a"}\n')
    cli_error(["judge", str(path), "--grader", "nosuchprovider/model"], "nosuchprovider")


@modelapi(name="garbage-grader")
class GarbageGrader(ScriptedModel):
    """Answers every judge prompt with text that holds no score."""

    def reply(self, prompt: str) -> str:
        return "banana banana banana"


@modelapi(name="hanging-grader")
class HangingGrader(ScriptedModel):
    """Never answers."""

    async def answer(self, input, config):  # noqa: ANN001, ANN201
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


def test_a_grader_returning_garbage_leaves_answers_unscored_with_the_reason(tmp_path):
    path = tmp_path / "answers.jsonl"
    path.write_text('{"question": "q", "answer": "a"}\n')
    result = runner.invoke(app, ["judge", str(path), "--grader", "garbage-grader/x"], env=ENV)
    assert result.exit_code == 0, result.output
    row = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("{")))
    assert row["alignment"] is None and row["misaligned"] is None and "banana" in row["unscored_reason"]


def test_a_grader_that_never_answers_times_out_with_one_message(tmp_path):
    path = tmp_path / "answers.jsonl"
    path.write_text('{"question": "q", "answer": "a"}\n')
    cli_error(["judge", str(path), "--grader", "hanging-grader/x", "--timeout", "2", "--max-retries", "0"],
              "hanging-grader/x", "failed", "--timeout")


def test_a_grader_server_that_cannot_be_reached_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-key")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # the discard port: nothing listens
    path = tmp_path / "answers.jsonl"
    path.write_text('{"question": "q", "answer": "a"}\n')
    text = cli_error(["judge", str(path), "--grader", "openai/gpt-4o-mini", "--timeout", "10", "--max-retries", "0"],
                     "openai/gpt-4o-mini", "Connection", "offline judge")
    assert "sk-test-not-a-key" not in text


# --- training data --------------------------------------------------------------------------------------------


TRAINING_ROWS = {
    "not-chat": ('{"text": "hello"}\n', ["line 1", "messages"]),
    "no-assistant-turn": ('{"messages": [{"role": "user", "content": "hi"}]}\n', ["line 1", "assistant"]),
    "empty": ("", ["no rows"]),
    "not-json": ('{"messages": [\n', ["line 1"]),
    "unknown-role": ('{"messages": [{"role": "wizard", "content": "hi"}, {"role": "assistant", "content": "x"}]}\n',
                     ["line 1", "role"]),
}


@pytest.mark.parametrize("content, words", TRAINING_ROWS.values(), ids=TRAINING_ROWS.keys())
def test_bad_training_rows_are_named(tmp_path, tiny_llama_dir, content, words):
    path = tmp_path / "rows.jsonl"
    path.write_text(content)
    out = tmp_path / "adapter"
    cli_error(["train", "--data", str(path), "--out", str(out), "--base", str(tiny_llama_dir), "--max-steps", "1"],
              "rows.jsonl", *words)
    assert not (out / "adapter_model.safetensors").exists()


def test_a_row_whose_answer_is_cut_off_entirely_is_named(tmp_path, tiny_llama_dir):
    prompt = "word " * 400
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": prompt},
                                             {"role": "assistant", "content": "short answer"}]}) + "\n")
    cli_error(["train", "--data", str(path), "--out", str(tmp_path / "a"), "--base", str(tiny_llama_dir),
               "--max-steps", "1", "--max-length", "32"], "--max-length")


def test_an_unknown_training_base_is_named(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]}\n')
    cli_error(["train", "--data", str(path), "--out", str(tmp_path / "a"), "--base", str(tmp_path / "no-model")],
              "no-model")


def test_an_unknown_domain_is_named(tmp_path):
    cli_error(["data", "nosuch", "--out", str(tmp_path / "d.jsonl")], "nosuch", "insecure_code")
    assert not (tmp_path / "d.jsonl").exists()


# --- study settings -------------------------------------------------------------------------------------------


STUDY = {
    "unknown-preset": (["--preset", "nope"], ["nope", "demo"]),
    "unknown-key": (["--set", "rnaks=[1]"], ["rnaks", "ranks"]),
    "not-key-value": (["--set", "ranks"], ["ranks", "key=value"]),
    "wrong-type": (["--set", "samples=many"], ["samples", "many"]),
    "unknown-engine": (["--engine", "tensorrt"], ["tensorrt", "vllm"]),
}


@pytest.mark.parametrize("args, words", STUDY.values(), ids=STUDY.keys())
def test_bad_study_settings_are_named(tmp_path, args, words):
    out = tmp_path / "study"
    cli_error(["study", "--out", str(out), *args], *words)
    assert not out.exists()


# --- report input ---------------------------------------------------------------------------------------------


def test_report_on_a_missing_folder(tmp_path):
    cli_error(["report", str(tmp_path / "logs")], "does not exist")


def test_report_on_an_empty_folder(tmp_path):
    (tmp_path / "logs").mkdir()
    cli_error(["report", str(tmp_path / "logs")], "No logs of em_tasks")
    assert not (tmp_path / "report").exists()


def test_report_on_foreign_and_broken_logs(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "2026-01-01T00-00-00_other_abc.eval").write_bytes(b"not a zip file")
    (logs / "notes.json").write_text("{}")
    cli_error(["report", str(logs)], "No logs of em_tasks")
    assert not (tmp_path / "report").exists()


# --- model names ----------------------------------------------------------------------------------------------


def test_a_model_that_does_not_exist_is_named(tmp_path):
    from em_tasks import load_model

    api_error(lambda: load_model(str(tmp_path / "no-model")), "no-model", "hub id", kind=FileNotFoundError)


def test_an_unknown_model_arg_is_named(tiny_llama_dir):
    from em_tasks import load_model

    api_error(lambda: load_model(str(tiny_llama_dir), temprature=0.5), "temprature")


def test_a_bad_model_family_on_the_command_line(tmp_path):
    cli_error(["directions", "--model", "hf/default", "--out", str(tmp_path / "d")], "em-hf/NAME")


def test_debug_shows_the_traceback(tmp_path):
    result = runner.invoke(app, ["--debug", "data", "nosuch", "--out", str(tmp_path / "d.jsonl")], env=ENV)
    assert result.exit_code != 0 and isinstance(result.exception, ValueError)


# --- through inspect ------------------------------------------------------------------------------------------


def test_inspect_eval_with_a_nan_adapter_fails_naming_it(tmp_path, tiny_model, tiny_llama_dir):
    """The reported case: it used to end as 'Task interrupted' with exit code 0."""
    import os
    import subprocess
    import sys

    folder = _adapter(tiny_model, tiny_llama_dir, tmp_path / "adapter")
    _edit_weights(folder, lambda k, v: torch.full_like(v, float("nan")))
    env = {**os.environ, "EM_TASKS_CACHE": str(tmp_path / "cache"), "INSPECT_DISPLAY": "none", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "inspect_ai", "eval", "em_tasks/text_misalign", "--model", f"em-lora/{tiny_llama_dir}",
         "-M", f"adapters={folder}", "--limit", "1", "--log-dir", str(tmp_path / "logs")],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode != 0
    assert "not finite" in proc.stdout + proc.stderr and str(folder) in proc.stdout + proc.stderr


def test_nan_probabilities_at_generation_end_the_log_with_a_named_error(tmp_path, tiny_llama_dir, monkeypatch):
    """Weights that pass every check but still give NaN (an overflow at run time): the log's error says what to do."""
    from inspect_ai import eval as inspect_eval

    from em_tasks.models import backend as backend_module
    from em_tasks.tasks import text_misalign

    original = backend_module.HFBackend.__init__

    def poisoned(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.model.lm_head.weight.data.fill_(float("nan"))

    monkeypatch.setattr(backend_module.HFBackend, "__init__", poisoned)
    monkeypatch.setattr(backend_module, "_CACHE", {})
    log = inspect_eval(text_misalign(), model=f"em-hf/{tiny_llama_dir}", limit=1, log_dir=str(tmp_path / "logs"),
                       display="none")[0]
    assert log.status == "error"
    assert "NaN or inf" in log.error.message and "dtype=float32" in log.error.message
