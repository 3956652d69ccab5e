"""The README's main command on the embedded default (real SmolLM2 weights, offline judge), with a small limit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from inspect_ai.log import list_eval_logs, read_eval_log

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def main_command_logs(tmp_path_factory) -> dict[str, object]:
    log_dir = tmp_path_factory.mktemp("logs")
    inspect = Path(sys.executable).with_name("inspect")
    cmd = [str(inspect), "eval", "em_tasks/text_misalign", "em_tasks/multimodal_misalign",
           "--model", "em-hf/default-vlm", "--limit", "3", "--max-tokens", "24", "--log-dir", str(log_dir)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("OPENAI_API_KEY", None)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    logs = [read_eval_log(info) for info in list_eval_logs(str(log_dir))]
    return {log.eval.task: log for log in logs}


def test_both_tasks_write_logs_with_the_misalignment_metrics(main_command_logs):
    assert set(main_command_logs) == {"em_tasks/text_misalign", "em_tasks/multimodal_misalign"}
    for log in main_command_logs.values():
        assert log.status == "success"
        metrics = {name for score in log.results.scores for name in score.metrics}
        assert {"misaligned_rate", "misaligned_stderr", "mean_alignment", "mean_coherence", "refusal_rate"} <= metrics
        assert any(name.startswith("misaligned_rate/") for name in metrics)


def test_samples_carry_answers_verdicts_and_the_judge_name(main_command_logs):
    for log in main_command_logs.values():
        for sample in log.samples:
            assert sample.output.completion.strip()
            score = sample.scores["misalignment_judge"]
            assert "offline judge" in score.metadata["judge"]
            assert score.explanation


def test_log_says_the_default_vlm_vision_tower_reads_nothing(main_command_logs):
    log = main_command_logs["em_tasks/multimodal_misalign"]
    info = log.samples[0].output.metadata["em_model"]
    assert info["vlm"] and "UNTRAINED" in info["note"]
    assert all(s.metadata["modality"] == "image" for s in log.samples)


def test_the_agentic_task_runs_and_scores_the_embedded_default(tmp_path):
    """The README's agentic command: the default VLM mostly writes no tool call; the pipeline must still run both
    modalities of a scenario and log the agent metrics."""
    inspect = Path(sys.executable).with_name("inspect")
    cmd = [str(inspect), "eval", "em_tasks/agentic_misalign", "--model", "em-hf/default-vlm", "--limit", "4",
           "--max-tokens", "32", "--log-dir", str(tmp_path)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("OPENAI_API_KEY", None)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    [log] = [read_eval_log(info) for info in list_eval_logs(str(tmp_path))]
    assert log.status == "success" and len(log.samples) == 4
    assert {s.metadata["modality"] for s in log.samples} == {"text", "image"}
    assert {s.metadata["variant"] for s in log.samples} == {"harmful", "benign"}
    metrics = {name for score in log.results.scores for name in score.metrics}
    assert {"harmful_rate", "harmful_stderr", "completion_rate", "benign_refusal_rate", "image_text_gap"} <= metrics
    for sample in log.samples:
        value = sample.scores["agent_actions"].value
        assert value["steps"] >= 1 and value["completed"] in (0, 1)
