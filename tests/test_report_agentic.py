"""`em-tasks report` on agentic_misalign logs: the agent-scenarios section and its numbers in report.json.

The logs are real evals of the task by the scripted agent of test_agentic (a "harmful" agent that pays the
lookalike account, an "obey" agent that pays the account the user names) over two one-scenario domains, two
epochs each; each is then relabelled as a study run (base model, or a rank-16 adapter with its run card).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from inspect_ai import eval as inspect_eval
from inspect_ai.log import EvalLog, write_eval_log
from test_agentic import SCENARIO  # registers the scripted-agent model
from test_report import card, run_eval, write_run  # registers the report-grader model

from em_tasks.agentic.task import agentic_misalign
from em_tasks.study.report import build_report, wilson_interval
from em_tasks.tasks import text_misalign
from graders import GRADER

EPOCHS = 2
SCENARIOS = 2  # one per domain
RUNS = SCENARIOS * EPOCHS  # harmful-variant runs per modality


def agent_eval(scenarios: Path, behaviour: str, log_dir: Path, **task_args: Any) -> EvalLog:
    task = agentic_misalign(scenarios=str(scenarios), image_size=128, grader=GRADER, **task_args)
    [log] = inspect_eval(task, model=f"scripted-agent/{behaviour}", log_dir=str(log_dir), display="none",
                         max_samples=4, epochs=EPOCHS)
    assert log.status == "success", log.error
    return log


def relabel(log: EvalLog, log_dir: Path, model: str, args: dict[str, Any], minute: int,
            flip: tuple[str, str] | None = None) -> Path:
    """Copy a log as a run of ``model`` with ``args``; ``flip`` = (modality, scenario) whose harmful flags go 0."""
    copy = log.model_copy(deep=True)
    copy.eval.model, copy.eval.model_args = model, dict(args)
    copy.eval.created = f"2026-01-01T11:{minute:02d}:00+00:00"
    for sample in copy.samples or []:
        if flip and (sample.metadata["modality"], sample.metadata["scenario"]) == flip \
                and sample.metadata["variant"] == "harmful":
            [(name, score)] = sample.scores.items()
            sample.scores[name] = score.model_copy(update={"value": {**score.value, "harmful": 0}})
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / f"2026-01-01T11-{minute:02d}-00+00-00_agentic-misalign_{abs(hash((model, str(args))))}.eval"
    write_eval_log(copy, str(path))
    return path


@pytest.fixture(scope="module")
def evals(tmp_path_factory: pytest.TempPathFactory) -> dict[str, EvalLog]:
    """Real logs: harmful in both modalities in one log, obey as a text log and an image log, one text_misalign."""
    folder = tmp_path_factory.mktemp("scenarios")
    (folder / "bills.yaml").write_text(yaml.safe_dump(SCENARIO, sort_keys=False))
    rent = yaml.safe_load(yaml.safe_dump(SCENARIO))
    rent["domain"], rent["scenarios"][0]["id"] = "rent", "pay-02"
    (folder / "rent.yaml").write_text(yaml.safe_dump(rent, sort_keys=False))
    raw = tmp_path_factory.mktemp("raw-logs")
    with pytest.MonkeyPatch.context() as patch:  # grader verdicts are cached: keep them out of the user's cache
        patch.setenv("INSPECT_CACHE_DIR", str(tmp_path_factory.mktemp("inspect-cache")))
        return {
            "harmful": agent_eval(folder, "harmful", raw),
            "obey_text": agent_eval(folder, "obey", raw, modality="text"),
            "obey_image": agent_eval(folder, "obey", raw, modality="image"),
            "question": run_eval(text_misalign(samples=1), raw, limit=2),
        }


@pytest.fixture(scope="module")
def reports(evals: dict[str, EvalLog], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A study with a base run (text_misalign + obeying agent) and an r16 run (harmful agent only), reported with
    and without its agent logs."""
    root = tmp_path_factory.mktemp("study")
    r16 = card(root, "r16", 16, 1.0)
    out: dict[str, Any] = {}
    for name, with_agent in (("plain", False), ("agent", True)):
        logs = root / f"logs-{name}"
        logs.mkdir()
        write_run(logs, evals["question"], "em-hf/default", {}, 1, minute=10)
        if with_agent:
            relabel(evals["harmful"], logs, "em-lora/default", {"adapters": r16}, minute=1)
            relabel(evals["obey_text"], logs, "em-hf/default", {}, minute=2)
            relabel(evals["obey_image"], logs, "em-hf/default", {}, minute=3)
        md = build_report(logs, root / f"report-{name}", study_dir=root)
        out[name] = {"md": md.read_text(), "json": json.loads((md.parent / "report.json").read_text()),
                     "logs": logs}
    return out


def _rate(stats: dict[str, Any]) -> tuple[float, int]:
    return stats["rate"], stats["n"]


def test_harmful_and_obedient_runs_get_their_rates_intervals_and_a_zero_gap(reports):
    runs = {r["label"]: r for r in reports["agent"]["json"]["agent_scenarios"]["runs"]}
    assert list(runs) == ["base default", "r16"]  # leaderboard labels and order: base first, then the rank sweep
    for label, harmful in (("r16", 1.0), ("base default", 0.0)):
        run = runs[label]
        assert set(run["modalities"]) == {"text", "image"}
        for side in run["modalities"].values():
            assert _rate(side["harmful"]) == (harmful, RUNS)
            assert side["harmful"]["ci95"] == pytest.approx(list(wilson_interval(harmful * RUNS, RUNS)))
            assert side["harmful"]["unscored"] == 0
            # both agents pay the account the benign twin asks for, and neither refuses
            assert _rate(side["benign_completed"]) == (1.0, RUNS)
            assert _rate(side["benign_refusal"]) == (0.0, RUNS)
            assert {d: _rate(s) for d, s in side["harmful_by_domain"].items()} == {
                "bills": (harmful, EPOCHS), "rent": (harmful, EPOCHS)}
        assert run["image_text_gap"] == {"gap": 0.0, "ci95": [0.0, 0.0], "scenarios": SCENARIOS}
    assert runs["base default"]["modalities"]["text"]["harmful"]["log"] != \
        runs["base default"]["modalities"]["image"]["harmful"]["log"]  # two logs, one run
    assert runs["r16"]["group"] == "rank sweep" and runs["base default"]["group"] == "base"


def test_the_section_shows_rates_gap_and_domains_and_lists_the_agent_logs(reports):
    md = reports["agent"]["md"]
    section = md.split("## Agent scenarios", 1)[1].split("\n## ", 1)[0]
    low, high = (100 * x for x in wilson_interval(RUNS, RUNS))
    assert f"| r16 | text | 100.0 % [{low:.1f}, {high:.1f}] n={RUNS} | 100.0 % [" in section
    assert f"| base default | image | 0.0 % [0.0, {100 - low:.1f}] n={RUNS} |" in section
    assert f"| r16 | +0.0 pp [+0.0, +0.0] ({SCENARIOS} scenarios) |" in section
    assert re.search(r"\| r16 \| rent \| 100\.0 % \[[\d.]+, 100\.0\] n=2 \| 100\.0 % ", section)
    used = md.split("## Logs used", 1)[1]
    assert used.count("| agentic_misalign |") == 3 and used.count("| base default | agentic_misalign |") == 2
    assert "Agent scenarios" in (reports["agent"]["md"].split("## Plots")[0])  # before the plots


def test_without_agent_logs_there_is_no_section_and_the_rest_is_unchanged(reports):
    plain, agent = reports["plain"], reports["agent"]
    assert "Agent scenarios" not in plain["md"] and "agent_scenarios" not in plain["json"]

    def leaderboard(md: str) -> str:
        return md.split("## Leaderboard", 1)[1].split("\n## ", 1)[0]

    assert leaderboard(agent["md"]) == leaderboard(plain["md"])
    runs = json.dumps(agent["json"]["runs"]).replace(str(agent["logs"]), str(plain["logs"]))
    assert json.loads(runs) == plain["json"]["runs"]


def test_the_gap_is_image_minus_text_paired_by_scenario(evals, tmp_path):
    logs = tmp_path / "logs"
    relabel(evals["harmful"], logs, "em-hf/default", {}, minute=1, flip=("image", "pay-02"))
    build_report(logs, tmp_path / "report")
    [run] = json.loads((tmp_path / "report" / "report.json").read_text())["agent_scenarios"]["runs"]
    assert run["image_text_gap"] == {"gap": -0.5, "ci95": [-1.0, 0.0], "scenarios": SCENARIOS}
    image = run["modalities"]["image"]
    assert _rate(image["harmful"]) == (0.5, RUNS) and _rate(run["modalities"]["text"]["harmful"]) == (1.0, RUNS)
    assert _rate(image["harmful_by_domain"]["rent"]) == (0.0, EPOCHS)


def test_a_later_log_replaces_only_the_modalities_it_holds(evals, tmp_path):
    logs = tmp_path / "logs"
    relabel(evals["harmful"], logs, "em-hf/default", {}, minute=1)  # text and image
    relabel(evals["obey_text"], logs, "em-hf/default", {}, minute=5)  # a later text log of the same run
    md = build_report(logs, tmp_path / "report").read_text()
    [run] = json.loads((tmp_path / "report" / "report.json").read_text())["agent_scenarios"]["runs"]
    assert _rate(run["modalities"]["text"]["harmful"]) == (0.0, RUNS)
    assert _rate(run["modalities"]["image"]["harmful"]) == (1.0, RUNS)
    assert run["image_text_gap"]["gap"] == 1.0
    assert "replaced by a later one" not in md  # the older log still gives the image runs
