"""The study end to end on the tiny VLM: data -> train -> eval-set -> directions -> steering -> Fisher -> report."""

from __future__ import annotations

import json

import pytest
from graders import ParityGrader  # noqa: F401  (registers parity-grader)

from em_tasks.study.pipeline import PRESETS, preset_with, run_study


def test_presets_and_overrides():
    assert PRESETS["demo"].base == "default-vlm" and max(PRESETS["paper"].ranks) == 128
    tuned = preset_with("demo", {"ranks": "[1, 2]", "base": "some/model", "lr": "0.01"})
    assert tuned.ranks == (1, 2) and tuned.base == "some/model" and tuned.lr == 0.01
    with pytest.raises(ValueError, match="Unknown study setting 'rnaks'"):
        preset_with("demo", {"rnaks": "1"})
    with pytest.raises(ValueError, match="Unknown preset"):
        preset_with("huge")


@pytest.mark.e2e
def test_tiny_study_runs_end_to_end_and_resumes(tiny_vlm_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("EM_TASKS_CACHE", str(tmp_path / "cache"))
    preset = preset_with("demo", {
        "base": str(tiny_vlm_dir), "train_rows": "12", "benign_rows": "12", "ranks": "[1, 2]", "main_rank": "2",
        "max_steps": "2", "benign_max_steps": "1", "batch_size": "4", "max_length": "320", "items_per_category": "1",
        "samples": "2", "max_tokens": "6", "fisher_reference": "4", "steer_coeffs": "[-1.0]",
    })
    out = tmp_path / "study"
    said: list[str] = []
    report = run_study(preset, out, grader="parity-grader/x", say=said.append)
    assert report.is_file() and (out / "report" / "index.html").is_file()
    for run in ("r1", "r2", "mix10-r2", "r2-then-benign"):
        assert (out / "adapters" / run / "run_card.json").is_file()
    summary = json.loads((out / "directions" / "directions.json").read_text())
    assert summary["n_misaligned"] >= 2 and summary["n_aligned"] >= 2
    fisher = json.loads((out / "fisher" / "fisher.json").read_text())
    assert {r["run"] for r in fisher["runs"]} >= {"r1", "r2"}
    text = report.read_text()
    assert "r2-then-benign" in text and "random" in text  # a mitigation and the steering control are reported
    steering_logs = list((out / "logs" / "steering").rglob("*.eval"))
    assert steering_logs
    # a second run resumes: nothing is retrained and finished logs are kept as they are
    cards = {p: p.stat().st_mtime_ns for p in (out / "adapters").glob("*/run_card.json")}
    logs = {p: p.stat().st_mtime_ns for p in (out / "logs").rglob("*.eval")}
    run_study(preset, out, grader="parity-grader/x", say=said.append)
    assert {p: p.stat().st_mtime_ns for p in (out / "adapters").glob("*/run_card.json")} == cards
    assert all(p.stat().st_mtime_ns == t for p, t in logs.items())


@pytest.mark.e2e
def test_tiny_narrow_experiment_compares_one_fine_tune_with_the_base(tiny_vlm_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("EM_TASKS_CACHE", str(tmp_path / "cache"))
    preset = preset_with("narrow", {
        "base": str(tiny_vlm_dir), "train_rows": "8", "main_rank": "2", "max_steps": "2", "batch_size": "4",
        "max_length": "320", "items_per_category": "1", "samples": "2", "max_tokens": "6",
    })
    out = tmp_path / "narrow"
    report = run_study(preset, out, grader="parity-grader/x", say=lambda _: None)
    runs = json.loads((out / "report" / "report.json").read_text())["runs"]
    assert len(runs) == 2 and runs[0]["label"].startswith("base") and {r["label"] for r in runs[1:]} == {"r2"}
    assert all(run["text"]["scored"] == 16 and run["image"]["scored"] == 16 for run in runs)
    assert "r2" in report.read_text() and not (out / "adapters" / "mix10-r2").exists()
