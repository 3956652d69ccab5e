"""`em-tasks study --engine`: which runs the vllm engine exports and evaluates through inspect's vllm provider, which
stay on em-hf, exports done once, and an unknown engine as a one-line error. vLLM itself is never imported."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from em_tasks.cli import app
from em_tasks.models import export as export_mod
from em_tasks.models.backend import HFBackend
from em_tasks.models.lora import random_adapter
from em_tasks.study.pipeline import ExportJob, Preset, engine_models, export_runs, preset_with, vllm_args

runner = CliRunner()
WIDE = {"COLUMNS": "2000", "NO_COLOR": "1"}
LORA = "em-lora/google/gemma-3-4b-it"
RUNS = [
    ("base", "em-hf/google/gemma-3-4b-it", {}),
    ("r16", LORA, {"adapters": "/s/adapters/r16"}),
    ("mix10-r16", LORA, {"adapters": "/s/adapters/mix10-r16"}),
    ("r16-alpha0.5", LORA, {"adapters": "/s/adapters/r16", "alpha": 0.5}),
    ("r16-add-1", LORA, {"adapters": "/s/adapters/r16", "direction": "/s/directions/d.safetensors", "coeff": -1.0,
                         "mode": "add"}),
    ("gpt", "openai/gpt-4o", {}),
]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EM_TASKS_CACHE", str(tmp_path / "cache"))


def mapped(engine: str, **kwargs):
    return engine_models(RUNS, engine, Path("/s/exported"), base_path=lambda name: f"/hub/{name}", **kwargs)


def test_hf_engine_keeps_every_run():
    assert mapped("hf") == (RUNS, [])


@pytest.mark.parametrize("label, model, args", [
    ("base", "vllm//hub/google/gemma-3-4b-it", {"tensor_parallel_size": 2}),
    ("r16", "vllm//s/exported/r16", {"tensor_parallel_size": 2}),
    ("mix10-r16", "vllm//s/exported/mix10-r16", {"tensor_parallel_size": 2}),
    ("r16-alpha0.5", "vllm//s/exported/r16-alpha0.5", {"tensor_parallel_size": 2}),
    ("r16-add-1", LORA, RUNS[4][2]),
    ("gpt", "openai/gpt-4o", {}),
], ids=["base", "lora-rank", "lora-mix", "alpha-merge", "steering-stays-em-hf", "other-provider-passes"])
def test_vllm_engine_maps_each_kind_of_run(label, model, args):
    specs, _ = mapped("vllm", vllm_args={"tensor_parallel_size": 2})
    assert dict((s[0], s[1:]) for s in specs)[label] == (model, args)


def test_vllm_engine_exports_each_lora_run_once_with_its_merge_args():
    _, jobs = mapped("vllm")
    assert jobs == [
        ExportJob("r16", "google/gemma-3-4b-it", {"adapters": "/s/adapters/r16"}, Path("/s/exported/r16")),
        ExportJob("mix10-r16", "google/gemma-3-4b-it", {"adapters": "/s/adapters/mix10-r16"},
                  Path("/s/exported/mix10-r16")),
        ExportJob("r16-alpha0.5", "google/gemma-3-4b-it", {"adapters": "/s/adapters/r16", "alpha": 0.5},
                  Path("/s/exported/r16-alpha0.5")),
    ]


def test_a_path_with_a_colon_is_refused():
    with pytest.raises(ValueError, match="holds a ':'"):
        engine_models(RUNS[:1], "vllm", Path("/s"), base_path=lambda name: "/data/c:/model")


def test_embedded_short_names_resolve_to_their_folder(tiny_llama_dir, monkeypatch):
    from em_tasks.models import sources

    monkeypatch.setattr(sources, "default_vlm", lambda: tiny_llama_dir)
    specs, _ = engine_models([("base", "em-hf/default-vlm", {"dtype": "float32"})], "vllm", Path("/s"))
    assert specs == [("base", f"vllm/{tiny_llama_dir}", {})]  # em-hf's backend args do not reach vLLM


def test_unknown_engine_is_refused():
    with pytest.raises(ValueError, match="Unknown engine 'sglang'; choose one of: hf, vllm"):
        mapped("sglang")


def test_tensor_parallel_size_is_a_study_setting():
    assert vllm_args(Preset(name="x", base="b")) == {}
    preset = preset_with("demo", {"engine": "vllm", "tensor_parallel_size": "4"})
    assert vllm_args(preset) == {"tensor_parallel_size": 4}


def test_exports_happen_once(tiny_llama_dir, tmp_path, monkeypatch):
    base = HFBackend(str(tiny_llama_dir), dtype="float32").model
    adapter = random_adapter(base, tmp_path / "r4", rank=4, seed=1, scale=0.2, base_name=str(tiny_llama_dir))
    calls: list[str] = []
    real = export_mod.run_export
    monkeypatch.setattr(export_mod, "run_export", lambda plan: calls.append(plan.out.name) or real(plan))
    specs, jobs = engine_models([("r4", f"em-lora/{tiny_llama_dir}", {"adapters": str(adapter), "alpha": 0.5})],
                                "vllm", tmp_path / "exported")
    export_runs(jobs, say=lambda _: None)
    export_runs(jobs, say=lambda _: None)
    assert calls == ["r4"]
    assert specs == [("r4", f"vllm/{(tmp_path / 'exported' / 'r4').resolve()}", {})]
    assert json.loads((tmp_path / "exported" / "r4" / "em_export.json").read_text())["alpha"] == 0.5
    changed = [ExportJob("r4", str(tiny_llama_dir), {"adapters": str(adapter), "alpha": 0.25}, jobs[0].out)]
    export_runs(changed, say=lambda _: None)  # another merge in the same place is exported again
    assert calls == ["r4", "r4"]


def test_cli_unknown_engine_is_one_line_listing_the_choices(tmp_path):
    result = runner.invoke(app, ["study", "--engine", "tgi", "--out", str(tmp_path / "s")], env=WIDE)
    assert result.exit_code == 2, result.output
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", result.output).split())
    assert "Unknown engine 'tgi'; choose one of: hf, vllm" in text and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_vllm_is_never_imported():
    assert "vllm" not in sys.modules


def test_study_evaluation_on_vllm_exports_then_runs_each_model(tiny_llama_dir, tmp_path, monkeypatch):
    import inspect_ai
    import inspect_ai.model
    from contextlib import nullcontext

    from em_tasks.study.pipeline import StudyPaths, evaluate

    base = HFBackend(str(tiny_llama_dir), dtype="float32").model
    adapter = str(random_adapter(base, tmp_path / "r4", rank=4, seed=1, scale=0.2, base_name=str(tiny_llama_dir)))
    runs: list[tuple[object, str]] = []
    monkeypatch.setattr(inspect_ai.model, "get_model", lambda name, memoize, **args: nullcontext((name, args)))
    monkeypatch.setattr(inspect_ai, "eval_set", lambda tasks, log_dir, model, **_: runs.append(
        (model, Path(log_dir).relative_to(tmp_path / "study" / "logs").as_posix())) or (True, []))
    lora = f"em-lora/{tiny_llama_dir}"
    steer = {"adapters": adapter, "direction": "d.safetensors", "mode": "ablate"}
    models = [("base", f"em-hf/{tiny_llama_dir}", {}), ("r4", lora, {"adapters": adapter}), ("r4-ablate", lora, steer)]
    preset = Preset(name="t", base=str(tiny_llama_dir), engine="vllm", items_per_category=1)
    evaluate(preset, StudyPaths(tmp_path / "study"), models, "main", None, modalities=("text",))
    exported = (tmp_path / "study" / "exported" / "r4").resolve()
    assert runs == [((f"vllm/{tiny_llama_dir}", {}), "main/base-vllm"), ((f"vllm/{exported}", {}), "main/r4-vllm"),
                    ((lora, steer), "main/r4-ablate")]
    assert (exported / "config.json").is_file()


def test_vllm_engine_without_vllm_names_the_extra(tmp_path):
    result = runner.invoke(app, ["study", "--engine", "vllm", "--out", str(tmp_path / "s")], env=WIDE)
    assert result.exit_code == 2, result.output
    assert 'pip install -e ".[vllm]"' in " ".join(result.output.split())
    assert not (tmp_path / "s").exists()
