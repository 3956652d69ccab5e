"""`em-tasks report`: statistics on known inputs, and a leaderboard built from real inspect logs of our tasks.

The logs come from one real eval of each task (scripted answers, a fixed grader, no model calls); each
simulated run is a copy with its own model, model args, creation time and scores, written with inspect.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from inspect_ai import Task, eval
from inspect_ai.dataset import Sample
from inspect_ai.log import EvalLog, write_eval_log
from inspect_ai.model import (
    ChatCompletionChoice,
    ChatMessageAssistant,
    GenerateConfig,
    ModelOutput,
    get_model,
    modelapi,
)
from inspect_ai.scorer import Score
from inspect_ai.solver import Generate, Solver, TaskState, solver

from graders import ScriptedModel
from em_tasks.study.report import (
    PLOT_FILES,
    ReportError,
    build_report,
    components_to_reach,
    paired_gap,
    permutation_p,
    spearman,
    wilson_interval,
)
from em_tasks.tasks import multimodal_misalign, overrefusal, text_misalign

ITEMS = 4
EPOCHS = 2
ANSWERS = ITEMS * EPOCHS


@modelapi(name="report-grader")
class ReportGrader(ScriptedModel):
    """Rates every answer aligned (90), coherent (90) and not a refusal; the tests rewrite scores per run."""

    async def answer(self, input: list[ChatMessage], config: GenerateConfig) -> ModelOutput:
        prompt = input[-1].text.lower()
        reply = "90" if "alignment" in prompt or "coherence" in prompt else "NO"
        return ModelOutput(model=self.model_name, choices=[
            ChatCompletionChoice(message=ChatMessageAssistant(content=reply), stop_reason="stop")])


@solver
def canned_answer() -> Solver:
    async def solve(state: TaskState, generate: Generate) -> TaskState:
        state.output = ModelOutput.from_content(model="canned", content="A calm, helpful answer.")
        state.messages.append(state.output.message)
        return state

    return solve


def run_eval(task: Task, log_dir: Path, **kwargs: Any) -> EvalLog:
    [log] = eval(task, model="none", solver=canned_answer(), model_roles={"grader": get_model("report-grader/x")},
                 display="none", log_dir=str(log_dir), **kwargs)
    assert log.status == "success", log.error
    return log


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, EvalLog]:
    """One real log per task: text and image misalignment (4 items x 2 epochs), over-refusal (2 samples)."""
    log_dir = tmp_path_factory.mktemp("template-logs")
    with pytest.MonkeyPatch.context() as patch:  # grader verdicts are cached: keep them out of the user's cache
        patch.setenv("INSPECT_CACHE_DIR", str(tmp_path_factory.mktemp("inspect-cache")))
        return {
            "text": run_eval(text_misalign(samples=EPOCHS), log_dir, limit=ITEMS),
            "image": run_eval(multimodal_misalign(samples=EPOCHS, image_size=128), log_dir, limit=ITEMS),
            "overrefusal": run_eval(overrefusal(modality="text"), log_dir, limit=2),
        }


def write_run(log_dir: Path, template: EvalLog, model: str, args: dict[str, Any], misaligned: int, *,
              minute: int = 0, status: str = "success", unscored: int = 0) -> Path:
    """Copy a template log as another run whose first ``misaligned`` answers are misaligned."""
    log = template.model_copy(deep=True)
    log.eval.model, log.eval.model_args = model, dict(args)
    log.eval.created = f"2026-01-01T10:{minute:02d}:00+00:00"
    log.status = status
    key = "refusal" if log.eval.task.endswith("overrefusal") else "misaligned"
    for index, sample in enumerate(sorted(log.samples or [], key=lambda s: (str(s.id), s.epoch))):
        [(name, score)] = sample.scores.items()
        if index < unscored:
            sample.scores[name] = Score.unscored(reason="grader_failed", metadata=score.metadata)
            continue
        flag = int(index - unscored < misaligned)
        value = {**score.value, key: flag}
        if key == "misaligned":
            value["alignment"] = 10.0 if flag else 90.0
        sample.scores[name] = score.model_copy(update={"value": value})
    task = log.eval.task.rsplit("/", 1)[-1].replace("_", "-")
    path = log_dir / f"2026-01-01T10-{minute:02d}-00+00-00_{task}_{abs(hash((model, str(args), minute)))}.eval"
    write_eval_log(log, str(path))
    return path


def card(study: Path, name: str, rank: int, fraction: float, init: str | None = None) -> str:
    folder = study / "adapters" / name
    folder.mkdir(parents=True)
    (folder / "run_card.json").write_text(json.dumps({
        "name": name, "base": "default", "rank": rank, "alpha": 2 * rank, "harmful_fraction": fraction,
        "init_adapter": str(study / "adapters" / init) if init else None, "loss_curve": [[1, 2.0]],
    }))
    return str(folder)


# (label, model, args, text misaligned, image misaligned) out of ANSWERS each
def study_runs(study: Path) -> list[tuple[str, str, dict[str, Any], int, int]]:
    r4, r8, r16 = card(study, "r4", 4, 1.0), card(study, "r8", 8, 1.0), card(study, "r16", 16, 1.0)
    half = card(study, "r8-f0.5", 8, 0.5)
    benign = card(study, "r8-benign", 8, 0.0, init="r8")
    direction = str(study / "directions" / "directions.safetensors")
    return [
        ("base default", "em-hf/default", {"batch_size": 8}, 1, 2),
        ("r4", "em-lora/default", {"adapters": r4}, 2, 3),
        ("r8", "em-lora/default", {"adapters": r8}, 3, 5),
        ("r16", "em-lora/default", {"adapters": r16}, 4, 7),
        ("r8-f0.5", "em-lora/default", {"adapters": half}, 1, 3),
        ("r8-benign", "em-lora/default", {"adapters": benign}, 1, 1),
        ("r8 α=0.5", "em-lora/default", {"adapters": r8, "alpha": 0.5}, 2, 2),
        ("r8 + steer directions (mode ablate, layers 13, coeff 1.0)", "em-steer/default",
         {"adapters": r8, "direction": direction, "layers": "13", "coeff": 1.0, "mode": "ablate"}, 0, 1),
        ("r8 + steer random direction (mode ablate, layers 13, coeff 1.0)", "em-steer/default",
         {"adapters": r8, "direction": f"random:3@{direction}", "layers": "13", "coeff": 1.0, "mode": "ablate"},
         3, 5),
    ]


@pytest.fixture(scope="module")
def study(templates: dict[str, EvalLog], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A study folder: run cards, directions.json, fisher.json and logs (with a retry and a foreign run)."""
    root = tmp_path_factory.mktemp("study")
    logs = root / "logs"
    logs.mkdir()
    runs = study_runs(root)
    for _, model, args, text, image in runs:
        write_run(logs, templates["text"], model, args, text, minute=10)
        write_run(logs, templates["image"], model, args, image, minute=10, unscored=1 if "r4" in str(args) else 0)
    r16 = runs[3][2]
    write_run(logs, templates["text"], "em-lora/default", r16, ANSWERS, minute=1)  # older retry, replaced
    write_run(logs, templates["text"], "em-lora/default", r16, ANSWERS, minute=20, status="error")
    write_run(logs, templates["overrefusal"], "em-hf/default", {}, 1, minute=10)
    write_run(logs, templates["text"], "openai/gpt-4o-mini", {}, 0, minute=10)
    (root / "directions").mkdir()
    (root / "directions" / "directions.json").write_text(json.dumps({
        "base": "default", "layers": [12, 13], "best_layer": 13, "n_aligned": 20, "n_misaligned": 20,
        "pca": {"misaligned_minus_aligned": {"layer": 13, "explained_variance_ratio": [0.6, 0.25, 0.1, 0.05]},
                "finetuned_minus_base": None}}))
    (root / "fisher").mkdir()
    proxies = {"r8-f0.5": 0.05, "r4": 0.1, "r8": 0.2, "r16": 0.4}
    (root / "fisher" / "fisher.json").write_text(json.dumps({"base": "default", "runs": [
        {"run": name, "adapter": str(root / "adapters" / name), "proxy": proxy, "rank": None,
         "harmful_fraction": None} for name, proxy in proxies.items()]}))
    report = build_report(logs, root / "report")
    return {"root": root, "runs": runs, "md": report.read_text(), "report": report}


# --- statistics ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "successes, n, low, high",
    [(5, 10, 0.2366, 0.7634), (0, 10, 0.0, 0.2775), (10, 10, 0.7225, 1.0), (1, 100, 0.0018, 0.0545)],
    ids=["half", "none", "all", "rare"],
)
def test_wilson_interval_matches_known_values(successes, n, low, high):
    assert wilson_interval(successes, n) == pytest.approx((low, high), abs=1e-4)


def test_wilson_interval_of_nothing_is_nan():
    assert all(math.isnan(x) for x in wilson_interval(0, 0))


def test_paired_gap_averages_epochs_per_item_and_pairs_items():
    text = {"a": [0, 1], "b": [0, 0], "c": [1, 1], "text-only": [1]}
    image = {"a": [1, 1], "b": [1, 0], "c": [1, 1], "image-only": [0]}
    gap = paired_gap(text, image)
    assert gap is not None and gap.n_items == 3
    assert gap.gap == pytest.approx((0.5 + 0.5 + 0.0) / 3)
    assert gap.low <= gap.gap <= gap.high
    assert paired_gap(text, image) == gap  # seeded: the same interval every time


def test_paired_gap_of_a_constant_shift_has_a_point_interval():
    text = {f"i{k}": [k / 10] for k in range(10)}
    image = {f"i{k}": [k / 10 + 0.25] for k in range(10)}
    gap = paired_gap(text, image)
    assert (gap.gap, gap.low, gap.high) == pytest.approx((0.25, 0.25, 0.25))


def test_paired_gap_interval_excludes_zero_for_a_clear_negative_gap():
    text = {f"i{k}": [1, 1] for k in range(30)}
    image = {f"i{k}": [k % 3 == 0, 0] for k in range(30)}  # per item 0.5 or 0
    gap = paired_gap(text, image)
    assert gap.gap == pytest.approx(-(1 - 10 * 0.5 / 30))
    assert gap.low < gap.gap < gap.high < 0


def test_paired_gap_without_shared_items_is_none():
    assert paired_gap({"a": [1]}, {"b": [0]}) is None


@pytest.mark.parametrize(
    "x, y, rho",
    [([1, 2, 3, 4], [1, 10, 100, 1000], 1.0), ([1, 2, 3, 4], [4, 3, 2, 1], -1.0),
     ([1, 2, 3, 4], [1, 3, 2, 4], 0.8), ([1, 2, 2, 3], [1, 2, 3, 4], 0.9486833)],
    ids=["monotone", "reversed", "one-swap", "tie"],
)
def test_spearman_on_known_cases(x, y, rho):
    assert spearman(x, y) == pytest.approx(rho)


def test_spearman_of_a_constant_is_nan_and_permutation_p_is_exact_for_few_points():
    assert math.isnan(spearman([1, 2, 3], [5, 5, 5]))
    assert permutation_p([1, 2, 3, 4, 5], [2, 4, 6, 8, 10]) == pytest.approx(2 / 120)


def test_components_to_reach_the_target():
    assert components_to_reach([0.6, 0.25, 0.1, 0.05], 0.9) == 3
    assert components_to_reach([0.5, 0.2], 0.9) is None


# --- the report ---------------------------------------------------------------------------------------------


def table_row(md: str, label: str) -> list[str]:
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if line.startswith("|") and cells[0] == label:
            return cells
    raise AssertionError(f"no table row for {label!r}")


def test_report_lists_every_run_in_its_group(study):
    md = study["md"]
    for label, *_ in study["runs"]:
        assert table_row(md, label)
    assert table_row(md, "openai/gpt-4o-mini")[3] == "0.0 % [0.0, 32.4] n=8"
    headings = [line for line in md.splitlines() if line.startswith("### ")]
    assert headings[:5] == ["### Base model", "### Rank sweep (harmful fraction 1, no mitigation)",
                            "### Harmful-fraction mix (fraction < 1)", "### Mitigations", "### Other runs"]
    mitigations = md.split("### Mitigations")[1].split("###")[0]
    for kind in ("benign fine-tune", "weight merge", "steering (ablate)", "random-direction control"):
        assert kind in mitigations


def test_report_rates_gap_and_unscored_counts(study):
    md = study["md"]
    base = table_row(md, "base default")
    assert base[3] == "12.5 % [2.2, 47.1] n=8"  # text: 1 of 8
    assert base[4] == "25.0 % [7.1, 59.1] n=8"  # image: 2 of 8
    assert base[5].startswith("+12.5 pp [") and base[5].endswith(f"({ITEMS} items)")
    assert base[6] == "90.0 / 90.0"
    assert base[8].startswith("50.0 % [") and base[8].endswith("n=2")  # over-refusal: 1 of 2
    r4 = table_row(md, "r4")
    assert (r4[1], r4[2]) == ("4", "1")
    assert r4[4].endswith("n=7") and r4[9] == "0 / 1"  # one image answer unscored, counted apart


def test_report_says_when_a_run_is_indistinguishable_from_base(study):
    md = study["md"]
    assert table_row(md, "base default")[10] == "—"  # base is not compared with itself
    # r16: text 4/8 [21.5, 78.5] and image 7/8 [52.9, 97.8] both overlap base's 1/8 and 2/8
    assert table_row(md, "r16")[10] == "no detectable difference from base / no detectable difference from base"
    assert table_row(md, "openai/gpt-4o-mini")[10] == "—"  # another base model: nothing to compare with
    runs = {r["label"]: r for r in json.loads((study["report"].parent / "report.json").read_text())["runs"]}
    assert runs["r16"]["text"]["vs_base"] == runs["r16"]["image"]["vs_base"] == "no detectable difference"
    assert runs["base default"]["text"]["vs_base"] is None


def test_report_takes_the_latest_successful_log_of_a_retried_run(study):
    r16 = table_row(study["md"], "r16")
    assert r16[3].startswith("50.0 %")  # not the older 100 % log, nor the later failed one
    assert "1 older successful log(s) replaced" in study["md"]
    assert "1 unfinished or failed log(s) left out" in study["md"]


def test_report_sets_the_fisher_proxy_beside_measured_misalignment(study):
    md = study["md"]
    fisher = md.split("### Fisher proxy vs measured misalignment")[1]
    assert re.search(r"\| r16 \| r16 \| 16 \| 1 \| 0\.4 \| 50\.0 %", fisher)
    assert "text: Spearman's rho = 1.00 over 4 runs" in fisher
    assert "image: Spearman's rho = 1.00 over 4 runs" in fisher


def test_report_writes_every_plot_and_a_self_contained_page(study):
    out = study["report"].parent
    plotted = [name for kind, name in PLOT_FILES.items() if kind != "control"]  # this study has no control logs
    for name in plotted:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"]({name})" in study["md"]
    assert not (out / PLOT_FILES["control"]).exists() and "Positive control" not in study["md"]
    page = (out / "index.html").read_text()
    assert page.count('src="data:image/png;base64,') == len(plotted)
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing to fetch
    assert "r8-f0.5" in page and "<table>" in page
    assert "k for 90% cumulative" in study["md"] and "| misaligned_minus_aligned | 13 | 4 | 60.0 % | 3 |" in study["md"]
    summary = json.loads((out / "report.json").read_text())
    assert len(summary["runs"]) == len(study["runs"]) + 1
    assert "control" not in summary


def test_foreign_logs_without_cards_or_study_give_a_report_with_skipped_plots(templates, tmp_path):
    logs = tmp_path / "their-logs"
    logs.mkdir()
    write_run(logs, templates["text"], "hf/someone/model", {}, 3)
    write_run(logs, templates["text"], "em-lora/someone/model", {"adapters": "/gone/adapter"}, 5)
    md = build_report(logs, tmp_path / "out").read_text()
    assert table_row(md, "hf/someone/model")[3].startswith("37.5 %")
    assert table_row(md, "adapter")[4] == "—"  # no image log
    assert md.count("Skipped:") == 5
    assert "Adapter `/gone/adapter` not found" in md
    assert not list((tmp_path / "out").glob("*.png"))
    assert "data:image/png" not in (tmp_path / "out" / "index.html").read_text()


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda d: None, "No logs of em_tasks/text_misalign"),
        (lambda d: run_eval(Task(dataset=[Sample(input="hi")], name="someone_elses_task"), d),
         r"\(1 other log\(s\) found\)"),
    ],
    ids=["empty-folder", "other-tasks-only"],
)
def test_a_folder_without_logs_of_our_tasks_is_a_clear_error(tmp_path, setup: Callable[[Path], Any], message):
    logs = tmp_path / "logs"
    logs.mkdir()
    setup(logs)
    with pytest.raises(ReportError, match=message):
        build_report(logs, tmp_path / "out")


def test_a_missing_log_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ReportError, match="does not exist"):
        build_report(tmp_path / "nowhere", tmp_path / "out")


def test_only_failed_logs_of_our_tasks_is_a_clear_error(templates, tmp_path):
    write_run(tmp_path, templates["text"], "em-hf/default", {}, 1, status="error")
    with pytest.raises(ReportError, match="none successful"):
        build_report(tmp_path, tmp_path / "out")


def test_a_log_saved_without_samples_falls_back_to_its_metrics(templates, tmp_path):
    log = templates["text"].model_copy(deep=True)
    log.eval.model, log.samples = "hf/no-samples", None
    write_eval_log(log, str(tmp_path / "2026-01-01T10-00-00+00-00_text-misalign_nosamples.eval"))
    md = build_report(tmp_path, tmp_path / "out").read_text()
    assert table_row(md, "hf/no-samples")[3] == f"0.0 % [0.0, 49.0] n={ITEMS} (from metrics)"  # epochs reduced
    assert "their rates come from the logged metrics" in md


def test_a_broken_study_file_skips_its_section_with_the_fix(templates, tmp_path):
    logs, study = tmp_path / "logs", tmp_path / "elsewhere"
    logs.mkdir()
    (study / "fisher").mkdir(parents=True)
    (study / "fisher" / "fisher.json").write_text("{not json")
    write_run(logs, templates["text"], "em-hf/default", {}, 2)
    md = build_report(logs, tmp_path / "out", study_dir=study).read_text()
    assert "fisher.json` is not valid JSON" in md and "rerun `em-tasks fisher`" in md
    assert "directions.json` not found (made by `em-tasks directions`)" in md
