"""A study killed part-way resumes with the same command and ends with the same report as an uninterrupted run.

The training and eval cases run for real: `em-tasks study` in a subprocess, stopped with SIGKILL while it trains (the
trainer's EM_TASKS_TRAIN_PAUSE_AT hook holds it at a known step, so the kill never races a timer), then again while
a fine-tune's answers are judged (this file's grader holds it at a known call), then run to the end. The directions
and data steps are covered at the unit level: what a killed step leaves behind is redone, never trusted.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from inspect_ai.model import ModelOutput, modelapi
from graders import ScriptedModel, parity_reply, reply_output

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

# the narrow preset on the tiny VLM: one adapter (4 optimizer steps), base and fine-tune evaluated on both modalities
SETTINGS = {"train_rows": "8", "main_rank": "2", "max_steps": "4", "batch_size": "4", "max_length": "320",
            "items_per_category": "1", "samples": "2", "max_tokens": "6"}
# the CLI as installed (em-tasks = em_tasks.cli:app), with this file's grader registered first
CLI = ("import sys; sys.path.insert(0, sys.argv.pop(1)); import test_resume; "
       "from em_tasks.cli import app; app(prog_name='em-tasks')")
GRADER = "pausing-grader/x"
COUNT_ENV, PAUSE_ENV = "EM_TASKS_TEST_GRADER_COUNT", "EM_TASKS_TEST_GRADER_PAUSE"
_CALLS: list[int] = []


@modelapi(name="pausing-grader")
class PausingGrader(ScriptedModel):
    """tests/graders.py's parity grader (alignment 10 for prompts of even length, else 90; coherence 90; no
    refusals), which also counts its calls into the file named by EM_TASKS_TEST_GRADER_COUNT and, at the call
    numbered by EM_TASKS_TEST_GRADER_PAUSE, says so on stderr and stops for good: the test kills a study there."""

    async def answer(self, input: list[ChatMessage], config: GenerateConfig) -> ModelOutput:
        _CALLS.append(1)
        if os.environ.get(COUNT_ENV):
            with open(os.environ[COUNT_ENV], "a") as f:
                f.write(".")
        if os.environ.get(PAUSE_ENV) == str(len(_CALLS)):
            sys.stderr.write(f"[grader] paused at call {len(_CALLS)}\n")
            sys.stderr.flush()
            while True:
                time.sleep(3600)
        return reply_output(self.model_name, parity_reply(input[-1].text))


def _command(base: Path, out: Path) -> list[str]:
    sets = [arg for key, value in {"base": str(base), **SETTINGS}.items() for arg in ("--set", f"{key}={value}")]
    return [sys.executable, "-c", CLI, str(TESTS), "study", "--preset", "narrow", "--out", str(out),
            "--grader", GRADER, *sets]


def _env(cache: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("EM_TASKS_TRAIN_PAUSE_AT", COUNT_ENV, PAUSE_ENV)}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", INSPECT_DISPLAY="none", TRANSFORMERS_VERBOSITY="error",
               EM_TASKS_CACHE=str(cache), INSPECT_CACHE_DIR=str(cache / "inspect"), **extra)
    return env


def _run(base: Path, out: Path, cache: Path, **env: str) -> None:
    done = subprocess.run(_command(base, out), env=_env(cache, **env), cwd=REPO, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]


def _run_and_kill(base: Path, out: Path, cache: Path, marker: str, **env: str) -> str:
    """Start the study, wait until it prints ``marker`` on stderr (a pause hook holds it there), SIGKILL it."""
    process = subprocess.Popen(_command(base, out), env=_env(cache, **env), cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    paused = threading.Event()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if marker in line:
                paused.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 180
    while not paused.is_set() and process.poll() is None and time.monotonic() < deadline:
        paused.wait(0.2)
    try:
        assert paused.is_set(), f"the study never printed {marker!r}:\n" + "".join(lines)[-4000:]
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        reader.join(timeout=10)
    assert process.returncode == -signal.SIGKILL
    return "".join(lines)


LOG_NAME = re.compile(r"\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d[-+]\d\d-\d\d_[a-z-]+_[A-Za-z0-9]+\.eval")
WHEN = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d")


def _normalised(study: Path, name: str) -> str:
    text = (study / "report" / name).read_text(encoding="utf-8")
    text = text.replace(str(study.resolve()), "STUDY").replace(str(study), "STUDY")
    return WHEN.sub("WHEN", LOG_NAME.sub("LOG.eval", text))


def _answers(study: Path) -> dict[tuple[str, str], list[tuple[object, int, str, object]]]:
    from inspect_ai.log import read_eval_log

    out = {}
    for path in sorted((study / "logs").rglob("*.eval")):
        log = read_eval_log(str(path))
        assert log.status == "success", path
        out[(path.parent.name, log.eval.task)] = sorted(
            (s.id, s.epoch, s.output.completion, {k: v.value for k, v in (s.scores or {}).items()})
            for s in log.samples or [])
    return out


def _statuses(folder: Path) -> list[str]:
    from inspect_ai.log import read_eval_log

    return [read_eval_log(str(p), header_only=True).status for p in sorted(folder.glob("*.eval"))]


@pytest.mark.e2e
def test_study_killed_in_training_and_in_an_eval_resumes_to_the_same_report(tiny_vlm_dir: Path,
                                                                             tmp_path: Path) -> None:
    reference, resumed, cache = tmp_path / "reference", tmp_path / "resumed", tmp_path / "cache-resumed"
    count = tmp_path / "grader-calls"
    _run(tiny_vlm_dir, reference, tmp_path / "cache-reference", **{COUNT_ENV: str(count)})
    calls = len(count.read_text())

    # 1. killed while training the adapter (held after its 2nd of 4 steps)
    said = _run_and_kill(tiny_vlm_dir, resumed, cache, "[train] r2 paused at step 2", EM_TASKS_TRAIN_PAUSE_AT="r2:2")
    assert "[study] narrow finished" not in said
    adapters = resumed / "adapters"
    assert not (adapters / "r2").exists(), "a killed training run left a folder that looks like an adapter"
    assert not (resumed / "logs").exists() and not (resumed / "report").exists()
    # what a kill during the adapter's save would leave: a staging folder, even with a card in it; never trusted
    stale = adapters / ".r2.partial-999999"
    stale.mkdir(parents=True)
    (stale / "run_card.json").write_text("{}")
    (stale / "adapter_config.json").write_text("{")

    # 2. the same command trains again, evaluates the base, and is killed while the fine-tune's answers are judged
    _run_and_kill(tiny_vlm_dir, resumed, cache, f"[grader] paused at call {calls - 2}",
                  **{PAUSE_ENV: str(calls - 2)})
    assert not stale.exists() and sorted(p.name for p in adapters.iterdir()) == ["r2"]
    base_logs, run_logs = resumed / "logs" / "main" / "base", resumed / "logs" / "main" / "r2"
    assert _statuses(base_logs) == ["success", "success"]
    assert _statuses(run_logs).count("success") < 2  # the kill lands in the fine-tune's eval (either task)
    assert not (resumed / "report").exists()
    kept = {p: p.stat().st_mtime_ns for p in base_logs.glob("*.eval")}

    # 3. the same command again: the base's logs are kept, the fine-tune's eval runs again, the report is written
    _run(tiny_vlm_dir, resumed, cache)
    assert {p: p.stat().st_mtime_ns for p in base_logs.glob("*.eval")} == kept
    assert _statuses(run_logs) == ["success", "success"]

    for name in ("report.md", "report.json"):
        assert _normalised(resumed, name) == _normalised(reference, name), name
    assert _answers(resumed) == _answers(reference)
    weights = "adapter_model.safetensors"
    assert (adapters / "r2" / weights).read_bytes() == (reference / "adapters" / "r2" / weights).read_bytes()
    cards = [json.loads((study / "adapters" / "r2" / "run_card.json").read_text()) for study in (resumed, reference)]
    assert cards[0]["loss_curve"] == cards[1]["loss_curve"] and cards[0]["steps"] == 4


# --- unit level: what a killed step leaves is redone -------------------------------------------------------------


def _save_directions(folder: Path) -> None:
    import torch

    from em_tasks.models.steering import save_direction

    folder.mkdir(parents=True, exist_ok=True)
    save_direction(folder / "directions.safetensors", {0: torch.ones(4), 1: torch.ones(4)}, base_model="b",
                   method="mean_diff", source="s")
    (folder / "directions.json").write_text(json.dumps({"best_layer": 1, "layers": [0, 1]}))


def test_directions_are_trusted_only_when_both_files_are_whole(tmp_path: Path) -> None:
    from em_tasks.study.pipeline import directions_complete

    folder = tmp_path / "directions"
    assert not directions_complete(folder)
    _save_directions(folder)
    assert directions_complete(folder)

    summary = (folder / "directions.json").read_text()
    (folder / "directions.json").write_text(summary[: len(summary) // 2])  # killed while writing the summary
    assert not directions_complete(folder)
    (folder / "directions.json").unlink()  # killed before the summary
    assert not directions_complete(folder)

    _save_directions(folder)
    tensors = (folder / "directions.safetensors").read_bytes()
    (folder / "directions.safetensors").write_bytes(tensors[: len(tensors) // 3])  # killed while writing tensors
    assert not directions_complete(folder)


def test_find_directions_redoes_a_half_written_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A truncated directions.json is replaced by a fresh extraction, written under a staging name first."""
    from em_tasks.models import backend as backend_module
    from em_tasks.models import lora as lora_module
    from em_tasks.study import directions as directions_module
    from em_tasks.study import pipeline

    paths = pipeline.StudyPaths(tmp_path / "study")
    _save_directions(paths.directions)
    (paths.directions / "directions.json").write_text('{"best_la')
    calls: list[Path] = []

    def fake_extract(model, answers, out_dir, **kwargs):
        calls.append(Path(out_dir))
        assert not Path(out_dir).exists() or not any(Path(out_dir).iterdir())
        _save_directions(Path(out_dir))
        return {"best_layer": 1, "n_misaligned": 4, "n_aligned": 4}

    monkeypatch.setattr(directions_module, "extract", fake_extract)
    monkeypatch.setattr(directions_module, "answers_from_log", lambda location: [])
    monkeypatch.setattr(directions_module, "generate_and_judge", lambda *a, **k: [])
    monkeypatch.setattr(backend_module, "HFBackend", lambda *a, **k: object())
    monkeypatch.setattr(lora_module, "parse_adapters", lambda text: [])
    monkeypatch.setattr(lora_module, "LoraSpec", lambda adapters: None)
    preset = pipeline.preset_with("demo", {"base": "tiny"})
    runs = pipeline.Runs({2: tmp_path / "r2"}, tmp_path / "r2", tmp_path / "mix", tmp_path / "benign")

    found = pipeline.find_directions(preset, paths, runs, [], None, say=lambda _: None)
    assert found == paths.directions / "directions.safetensors"
    assert len(calls) == 1 and calls[0] != paths.directions  # extracted into a staging folder, then renamed
    assert pipeline.directions_complete(paths.directions)
    assert sorted(p.name for p in paths.directions.parent.iterdir()) == ["directions"]
    # whole directions are reused as they are
    assert pipeline.find_directions(preset, paths, runs, [], None, say=lambda _: None) == found
    assert len(calls) == 1


def test_a_killed_data_write_leaves_no_file_that_looks_finished(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from em_tasks.study import narrow_data, pipeline

    def dies_half_way(domain, *, fraction, n, modality, seed, out):
        Path(out).write_text('{"messages": [')
        raise KeyboardInterrupt  # stands for the process dying here

    monkeypatch.setattr(narrow_data, "build_dataset", dies_half_way)
    preset = pipeline.preset_with("demo", {"base": "tiny", "train_rows": "4", "benign_rows": "4"})
    paths = pipeline.StudyPaths(tmp_path / "study")
    with pytest.raises(KeyboardInterrupt):
        pipeline.make_data(preset, paths)
    assert list(paths.data.iterdir()) == []
    monkeypatch.undo()
    data = pipeline.make_data(preset, paths)
    assert all(Path(p).is_file() for p in data.values())
    assert sorted(p.name for p in paths.data.iterdir()) == sorted(Path(p).name for p in data.values())


# --- the adapter is saved by renames ------------------------------------------------------------------------------


def _staged(tmp_path: Path, name: str, marker: str) -> Path:
    staging = tmp_path / name
    staging.mkdir()
    for file in ("adapter_config.json", "adapter_model.safetensors", "run_card.json"):
        (staging / file).write_text(marker)
    return staging


def test_adapter_staging_replaces_an_old_adapter_whole(tmp_path: Path) -> None:
    from em_tasks.atomic import remove_staged
    from em_tasks.study.train import _move_into_place

    out = tmp_path / "r2"
    _move_into_place(_staged(tmp_path, ".r2.partial-1", "old"), out)
    assert (out / "run_card.json").read_text() == "old"
    _move_into_place(_staged(tmp_path, ".r2.partial-2", "new"), out)
    assert {p.read_text() for p in out.iterdir()} == {"new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r2"]
    # a folder with the user's own files in it is kept; only the adapter files change, the card last
    (out / "notes.txt").write_text("mine")
    _move_into_place(_staged(tmp_path, ".r2.partial-3", "newer"), out)
    assert (out / "notes.txt").read_text() == "mine" and (out / "run_card.json").read_text() == "newer"
    # leftovers of killed saves into r2 go; other folders stay
    _staged(tmp_path, ".r2.partial-4", "dead")
    _staged(tmp_path, ".r20.partial-4", "other run")
    remove_staged(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".r20.partial-4", "r2"]


def test_unfinished_and_cut_off_logs_are_dropped_before_an_eval_set_resumes(tmp_path: Path) -> None:
    """A study killed during an eval leaves a started log (or one cut off mid-write); the next run deletes it so the
    task runs again from the start, and keeps finished logs."""
    import shutil

    from inspect_ai import Task, eval
    from inspect_ai.dataset import Sample
    from inspect_ai.log import read_eval_log, write_eval_log

    from em_tasks.study.pipeline import drop_unfinished_logs

    logs = tmp_path / "logs" / "main" / "base"
    assert drop_unfinished_logs(logs) == []  # nothing there yet
    [log] = eval(Task(dataset=[Sample(input="hi", target="x")]), model="mockllm/model", log_dir=str(tmp_path),
                 display="none")
    log = read_eval_log(log.location)
    finished = logs / "2026-01-01T00-00-02-00-00_task_finishedCCCCCCCCCCCCCC.eval"
    log.status = "success"
    write_eval_log(log, str(finished))
    log.status, log.samples = "started", []
    write_eval_log(log, str(logs / "2026-01-01T00-00-00-00-00_task_startedAAAAAAAAAAAAAA.eval"))
    data = finished.read_bytes()
    (logs / "2026-01-01T00-00-01-00-00_task_cutoffBBBBBBBBBBBBBBB.eval").write_bytes(data[: len(data) // 2])
    shutil.copy(finished, tmp_path / "keep.eval")
    (logs / "eval-set.json").write_text("{}")  # inspect's own bookkeeping is not a log

    dropped = drop_unfinished_logs(logs)
    assert sorted(p.name for p in dropped) == sorted(["2026-01-01T00-00-00-00-00_task_startedAAAAAAAAAAAAAA.eval",
                                                      "2026-01-01T00-00-01-00-00_task_cutoffBBBBBBBBBBBBBBB.eval"])
    assert sorted(p.name for p in logs.iterdir()) == sorted([finished.name, "eval-set.json"])
    assert finished.read_bytes() == (tmp_path / "keep.eval").read_bytes()
