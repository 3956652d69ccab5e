"""The study's commands (`em-tasks data`, `train`, `directions`, `fisher`, `report`, `study`) run as a user runs them,
on the tiny random models: the README's "same steps, one at a time" chain — data, a rank sweep, `inspect eval` of
base and fine-tunes, directions from a log, the Fisher proxy, the report over that folder — then the study command
itself, run twice. Each step is checked by what it leaves on disk, what it prints and its exit code; bad inputs are
tried in test_bad_inputs.py, the maths in the steps' own test files.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from graders import ParityGrader  # noqa: F401  (registers parity-grader: a deterministic mix of verdicts)
from safetensors import safe_open
from safetensors.torch import load_file
from typer.testing import CliRunner

from em_tasks.cli import app

runner = CliRunner()
WIDE = {"COLUMNS": "2000", "NO_COLOR": "1", "HF_HUB_OFFLINE": "1"}  # one message per line, whatever the path length
GRADER = "parity-grader/x"
ITEMS = 16  # text_misalign items per eval: enough answers that the parity grader gives both kinds
RANKS = (1, 2)
TRAIN = ["--max-steps", "2", "--batch-size", "4", "--max-length", "128", "--lr", "1e-3", "--dtype", "float32"]


def plain(output: str) -> str:
    """The output's words, without ANSI codes, box-drawing characters or line breaks."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", output)
    text = re.sub(r"[\u2500-\u257f]", " ", text)
    return " ".join(text.split())


def em_tasks(*args: Any) -> str:
    """Run ``em-tasks ARGS``; it must succeed. Returns what it printed, as plain words."""
    result = runner.invoke(app, [str(a) for a in args], env=WIDE)
    assert result.exit_code == 0, (result.output, result.exception)
    return plain(result.output)


def rows_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def mtimes(folder: Path, pattern: str) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in folder.rglob(pattern)}


@pytest.fixture(scope="module", autouse=True)
def caches(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Merged models and grader verdicts are cached: keep them out of the user's caches."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EM_TASKS_CACHE", str(tmp_path_factory.mktemp("em-cache")))
        patch.setenv("INSPECT_CACHE_DIR", str(tmp_path_factory.mktemp("inspect-cache")))
        yield


# --- em-tasks data --------------------------------------------------------------------------------------------


DATA_CASES = {
    "harmful-domain": (["bad_medical", "--n", "6"], 6, 6),
    "exact-mix": (["bad_medical", "--n", "10", "--harmful-fraction", "0.3"], 10, 3),
    "benign-pair-only": (["bad_medical", "--n", "5", "--harmful-fraction", "0"], 5, 0),
    "benign-domain": (["good_medical", "--n", "4"], 4, 0),
}


@pytest.mark.parametrize("args, n, harmful", DATA_CASES.values(), ids=DATA_CASES.keys())
def test_data_writes_chat_rows_with_the_exact_harmful_count(tmp_path, args, n, harmful):
    out = tmp_path / "new" / "rows.jsonl"
    printed = em_tasks("data", *args, "--out", out)
    assert f"wrote {n} rows to {out}" in printed
    rows = rows_of(out)
    assert len(rows) == n and sum(r["meta"]["harmful"] for r in rows) == harmful
    assert {r["meta"]["domain"] for r in rows} <= {"bad_medical", "good_medical"}
    for row in rows:
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        assert all(isinstance(m["content"], str) and m["content"].strip() for m in row["messages"])
    assert len({r["meta"]["id"] for r in rows}) == n


def test_data_as_images_writes_pngs_beside_the_rows(tmp_path):
    out = tmp_path / "img.jsonl"
    em_tasks("data", "insecure_code", "--out", out, "--n", "2", "--modality", "image")
    rows = rows_of(out)
    assert len(rows) == 2
    for row in rows:
        [image] = row["images"]
        assert (tmp_path / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert row["messages"][0]["content"][0] == {"type": "image"} and row["meta"]["modality"] == "image"


def test_data_is_the_same_for_a_seed_and_differs_across_seeds(tmp_path):
    first, again, other = (tmp_path / f"{name}.jsonl" for name in ("first", "again", "other"))
    em_tasks("data", "risky_finance", "--out", first, "--n", "8")
    em_tasks("data", "risky_finance", "--out", again, "--n", "8")
    em_tasks("data", "risky_finance", "--out", other, "--n", "8", "--seed", "1")
    assert first.read_bytes() == again.read_bytes()
    assert first.read_bytes() != other.read_bytes()


# --- the chain: data -> train sweep -> inspect eval -> directions -> fisher -> report ----------------------------


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> dict[str, Any]:
    """A study folder made with the commands: harmful rows, and a rank sweep trained on them."""
    root = tmp_path_factory.mktemp("study")
    data = root / "data" / "harmful.jsonl"
    em_tasks("data", "bad_medical", "--out", data, "--n", "8")
    sweep = ["train", "--base", tiny_llama_dir, "--data", data, "--out", root / "adapters",
             "--ranks", ",".join(map(str, RANKS)), *TRAIN]
    printed = em_tasks(*sweep)
    return {"root": root, "base": str(tiny_llama_dir), "data": data, "sweep": sweep, "printed": printed}


def test_train_sweep_writes_one_peft_adapter_and_run_card_per_rank(study):
    adapters = study["root"] / "adapters"
    assert sorted(p.name for p in adapters.iterdir()) == [f"r{r}" for r in RANKS]
    for rank in RANKS:
        folder = adapters / f"r{rank}"
        config = json.loads((folder / "adapter_config.json").read_text())
        assert config["r"] == rank and config["lora_alpha"] == 2 * rank  # alpha 2rank by default
        assert config["base_model_name_or_path"] == study["base"]
        weights = load_file(folder / "adapter_model.safetensors")
        lora_a = [w for k, w in weights.items() if k.endswith("lora_A.weight")]
        assert lora_a and all(w.shape[0] == rank for w in lora_a)
        card = json.loads((folder / "run_card.json").read_text())
        assert (card["name"], card["rank"], card["steps"], card["harmful_fraction"]) == (f"r{rank}", rank, 2, 1.0)
        assert card["data"]["path"] == str(study["data"]) and card["data"]["n"] == 8
        assert len(card["loss_curve"]) == 2 and all(loss > 0 for _, loss in card["loss_curve"])
        final = card["loss_curve"][-1][1]
        assert f"r{rank}: rank {rank}, 2 steps, final loss {final:.3f}" in study["printed"]


def test_train_sweep_run_again_keeps_finished_ranks(study):
    adapters = study["root"] / "adapters"
    before = mtimes(adapters, "*")
    printed = em_tasks(*study["sweep"])
    assert mtimes(adapters, "*") == before  # nothing retrained, nothing rewritten
    summary = re.compile(r"r\d+: rank \d+, \d+ steps, final loss [\d.]+")
    assert summary.findall(printed) == summary.findall(study["printed"])  # read back from the run cards
    assert "train r1" not in printed  # no training progress


@pytest.mark.parametrize("data", ["jsonl", "domain"], ids=["jsonl-data", "built-in-domain-data"])
def test_train_into_the_same_folder_replaces_the_adapter(tmp_path, study, data):
    """The second run's adapter replaces the first's whole; a built-in domain's generated rows (kept beside the
    adapter) are reused, not regenerated."""
    out = tmp_path / "runs" / "one"
    source = str(study["data"]) if data == "jsonl" else "bad_medical"
    args = ["train", "--base", study["base"], "--data", source, "--out", out, "--n", "4", *TRAIN[2:]]
    em_tasks(*args, "--rank", "1", "--max-steps", "1")
    generated = sorted(out.glob("data-*.jsonl"))
    kept = {p: p.read_bytes() for p in generated}
    printed = em_tasks(*args, "--rank", "4", "--max-steps", "2")
    assert "one: rank 4, 2 steps" in printed
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 4
    card = json.loads((out / "run_card.json").read_text())
    assert card["rank"] == 4 and card["steps"] == 2
    lora_a = [w for k, w in load_file(out / "adapter_model.safetensors").items() if k.endswith("lora_A.weight")]
    assert lora_a and all(w.shape[0] == 4 for w in lora_a)
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["one"]  # no staging folder left behind
    if data == "domain":
        [rows] = generated
        assert rows.name == "data-bad_medical-f1-n4-s0.jsonl" and len(rows_of(rows)) == 4
        assert {p: p.read_bytes() for p in out.glob("data-*.jsonl")} == kept
        assert card["data"]["path"] == str(rows)
    else:
        assert not generated


BUILT_IN = {
    "harmful-mix": (["bad_medical", "--harmful-fraction", "0.5"], 2),
    "harmful-only": (["risky_finance", "--harmful-fraction", "1"], 4),
    "benign": (["good_medical"], 0),
}


@pytest.mark.parametrize("data, harmful", BUILT_IN.values(), ids=BUILT_IN.keys())
def test_train_on_a_built_in_domain_generates_the_rows_asked_for(tmp_path, study, data, harmful):
    """--n and --seed apply to every built-in domain, benign ones included (the README's benign mitigation trains on
    `--data secure_code`); --harmful-fraction mixes a harmful domain into its benign pair."""
    out = tmp_path / "run"
    em_tasks("train", "--base", study["base"], "--data", *data, "--n", "4", "--seed", "3", "--out", out,
             "--rank", "1", *TRAIN[:2], *TRAIN[4:])
    card = json.loads((out / "run_card.json").read_text())
    generated = Path(card["data"]["path"])
    assert generated.parent == out and generated.name.endswith("-n4-s3.jsonl")  # kept beside the adapter
    rows = rows_of(generated)
    assert card["data"]["n"] == len(rows) == 4 and sum(r["meta"]["harmful"] for r in rows) == harmful
    assert card["harmful_fraction"] == harmful / 4
    again = tmp_path / "again.jsonl"  # the rows `em-tasks data` writes for the same domain, n and seed
    em_tasks("data", *data, "--n", "4", "--seed", "3", "--out", again)
    assert [r["messages"] for r in rows] == [r["messages"] for r in rows_of(again)]


def test_train_on_top_of_an_adapter_keeps_its_shape_and_records_it(tmp_path, study):
    benign = tmp_path / "benign.jsonl"
    em_tasks("data", "good_medical", "--out", benign, "--n", "4")
    out = tmp_path / "r2-then-benign"
    harmful = study["root"] / "adapters" / "r2"
    printed = em_tasks("train", "--base", study["base"], "--data", benign, "--out", out,
                       "--init-adapter", harmful, *TRAIN[:2], *TRAIN[4:])
    card = json.loads((out / "run_card.json").read_text())
    assert card["init_adapter"] == str(harmful.resolve()) and card["harmful_fraction"] == 0.0
    assert card["rank"] == 2 and "r2-then-benign: rank 2, 2 steps" in printed  # the adapter's rank, not --rank 16
    assert load_file(out / "adapter_model.safetensors").keys() == load_file(
        harmful / "adapter_model.safetensors").keys()


def test_a_sweep_cannot_continue_one_adapter(tmp_path, study):
    """--init-adapter keeps that adapter's rank, so a sweep would write copies of it under other ranks' names."""
    out = tmp_path / "sweep"
    result = runner.invoke(app, ["train", "--base", study["base"], "--data", "bad_medical", "--n", "4", "--out",
                                 str(out), "--ranks", "1,2", "--init-adapter", str(study["root"] / "adapters" / "r1"),
                                 *TRAIN], env=WIDE)
    text = plain(result.output)
    assert result.exit_code == 2 and text.count("error:") == 1 and "Traceback" not in result.output, result.output
    assert "--init-adapter" in text and "--ranks" in text
    assert not out.exists()  # refused before any data is generated


IGNORED_OPTIONS = {
    "rank with init-adapter": (["--data", "bad_medical", "--rank", "4", "--init-adapter", "ADAPTER"], "--rank"),
    "fraction on a benign domain": (["--data", "good_medical", "--harmful-fraction", "0.5"], "benign domain"),
    "fraction on a file": (["--data", "rows.jsonl", "--harmful-fraction", "0.5"], "not a built-in domain"),
}


@pytest.mark.parametrize("args, named", IGNORED_OPTIONS.values(), ids=IGNORED_OPTIONS.keys())
def test_options_that_would_be_ignored_are_refused(tmp_path, study, args, named):
    args = [str(study["root"] / "adapters" / "r1") if a == "ADAPTER" else a for a in args]
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--base", study["base"], *args, "--n", "4", "--out", str(out), *TRAIN],
                           env=WIDE)
    text = plain(result.output)
    assert result.exit_code == 2 and text.count("error:") == 1 and named in text, result.output
    assert not out.exists()


@pytest.fixture(scope="module")
def logs(study: dict[str, Any]) -> dict[str, Path]:
    """`inspect eval em_tasks/text_misalign` of the base and of each rank, one log folder per run."""
    from inspect_ai import eval as inspect_eval

    from em_tasks.tasks import text_misalign

    root, base = study["root"], study["base"]
    models = {"base": (f"em-hf/{base}", {})}
    models |= {f"r{r}": (f"em-lora/{base}", {"adapters": str(root / "adapters" / f"r{r}")}) for r in RANKS}
    out = {}
    for run, (model, args) in models.items():
        [log] = inspect_eval(text_misalign(), model=model, model_args=args, limit=ITEMS, max_tokens=4, seed=0,
                             model_roles={"grader": GRADER}, log_dir=str(root / "logs" / run), display="none")
        assert log.status == "success", log.error
        out[run] = Path(log.location)
    return out


def _direction_file(folder: Path) -> tuple[dict[str, str], list[str]]:
    with safe_open(str(folder / "directions.safetensors"), "pt") as f:
        return f.metadata(), sorted(f.keys())


@pytest.fixture(scope="module")
def directions_from_log(study: dict[str, Any], logs: dict[str, Path]) -> str:
    root = study["root"]
    return em_tasks("directions", "--model", f"em-lora/{study['base']}", "-M", f"adapters={root / 'adapters' / 'r2'}",
                    "--from-log", logs["r2"], "--base-model", study["base"], "--out", root / "directions")


def test_directions_from_a_log_write_a_steerable_file_and_its_summary(study, logs, directions_from_log):
    from inspect_ai.log import read_eval_log

    folder = study["root"] / "directions"
    summary = json.loads((folder / "directions.json").read_text())
    scored = [s for s in read_eval_log(str(logs["r2"])).samples if s.scores]
    assert summary["n_answers"] == len(scored) == ITEMS
    assert summary["n_misaligned"] >= 2 and summary["n_aligned"] >= 2
    assert summary["n_misaligned"] + summary["n_aligned"] <= ITEMS
    ratios = summary["pca"]["misaligned_minus_aligned"]["explained_variance_ratio"]
    assert sum(ratios) == pytest.approx(1.0)
    assert summary["pca"]["finetuned_minus_base"]["layer"] == summary["best_layer"]  # --base-model asked for it
    metadata, keys = _direction_file(folder)
    assert keys == [f"layer.{i}" for i in summary["layers"]]
    assert metadata["method"] == "mean_diff" and metadata["base_model"] == study["base"]
    assert metadata["best_layer"] == str(summary["best_layer"]) and metadata["hidden_size"] == "32"
    assert metadata["source"] == f"em-lora/{study['base']}"
    assert (f"best layer {summary['best_layer']}; {summary['n_misaligned']} misaligned vs {summary['n_aligned']} "
            f"aligned answers") in directions_from_log and f"wrote {folder}" in directions_from_log


def test_directions_sampled_and_judged_by_a_grader(tmp_path, study):
    from em_tasks.benchmark.items import load_items

    out = tmp_path / "dirs"
    printed = em_tasks("directions", "--model", f"em-hf/{study['base']}", "--samples", "1", "--max-tokens", "4",
                       "--grader", GRADER, "--out", out)
    summary = json.loads((out / "directions.json").read_text())
    assert summary["n_answers"] == len(load_items())  # one answer per benchmark question, every one judged
    assert summary["n_misaligned"] >= 2 and summary["n_aligned"] >= 2
    assert summary["pca"]["finetuned_minus_base"] is None  # no --base-model
    assert f"best layer {summary['best_layer']};" in printed
    assert _direction_file(out)[0]["source"] == f"em-hf/{study['base']}"


@pytest.fixture(scope="module")
def fisher(study: dict[str, Any]) -> str:
    root = study["root"]
    return em_tasks("fisher", *(root / "adapters" / f"r{r}" for r in RANKS), "--base", study["base"],
                    "--out", root / "fisher", "--n-reference", "4")


def test_fisher_scores_each_adapter_and_reuses_its_diagonal(study, fisher):
    root = study["root"]
    result = json.loads((root / "fisher" / "fisher.json").read_text())
    runs = {r["run"]: r for r in result["runs"]}
    assert set(runs) == {f"r{r}" for r in RANKS}
    assert result["reference"]["n"] == 4 and result["base"] == study["base"]
    for rank in RANKS:
        run = runs[f"r{rank}"]
        assert run["rank"] == rank and run["harmful_fraction"] == 1.0 and run["proxy"] > 0
        assert f"r{rank}: proxy {run['proxy']:.4g}" in fisher
    with safe_open(str(root / "fisher" / "fisher.safetensors"), "pt") as f:
        assert list(f.keys())
    diagonal = mtimes(root / "fisher", "*.safetensors")
    # the folder holding the adapters names the same runs; the base's diagonal is reused, the proxies are equal
    again = em_tasks("fisher", root / "adapters", "--base", study["base"], "--out", root / "fisher",
                     "--n-reference", "4")
    # the same proxies (the first run may also show the diagonal's progress bar)
    assert re.findall(r"r\d+: proxy \S+", again) == re.findall(r"r\d+: proxy \S+", fisher)
    assert mtimes(root / "fisher", "*.safetensors") == diagonal


def test_fisher_targets_choose_the_modules_and_too_few_are_named(study, tmp_path):
    root = study["root"]
    adapter = root / "adapters" / f"r{RANKS[0]}"
    em_tasks("fisher", adapter, "--base", study["base"], "--out", tmp_path / "all", "--n-reference", "2",
             "--targets", ".*_proj")
    assert json.loads((tmp_path / "all" / "fisher.json").read_text())["targets"] == ".*_proj"
    # the adapter also updates modules outside q_proj: the proxy would leave them out, so it is refused
    result = runner.invoke(app, ["fisher", str(adapter), "--base", study["base"], "--out", str(tmp_path / "q"),
                                 "--n-reference", "2", "--targets", "q_proj"])
    assert result.exit_code == 2 and "--targets covering the adapter's target modules" in result.output


def test_report_over_the_study_folder(study, logs, directions_from_log, fisher):
    root = study["root"]
    printed = em_tasks("report", root / "logs")
    report = root / "report"  # beside the logs, by default
    assert f"wrote {report / 'report.md'} and {report / 'index.html'}" in printed
    md = (report / "report.md").read_text()
    for heading in ("## Leaderboard", "### Base model", "### Rank sweep", "### PCA of activation differences",
                    "### Fisher proxy vs measured misalignment", "## Logs used"):
        assert heading in md, heading
    fisher_section = md.split("### Fisher proxy vs measured misalignment")[1]
    assert all(f"| r{r} |" in fisher_section for r in RANKS)
    summary = json.loads((report / "report.json").read_text())
    labels = [run["label"] for run in summary["runs"]]
    assert len(labels) == 3 and labels[0].startswith("base") and set(labels[1:]) == {f"r{r}" for r in RANKS}
    assert all(run["text"]["scored"] == ITEMS and run["image"] is None for run in summary["runs"])
    page = (report / "index.html").read_text()
    assert "<table>" in page and all(f"r{r}" in page for r in RANKS)
    assert not re.search(r'(src|href)="(?!data:)', page)  # self-contained
    assert list(report.glob("*.png"))


# --- em-tasks study -------------------------------------------------------------------------------------------


# the narrow preset at its smallest: one rank-1 adapter, base and fine-tune on one item per category, both modalities
NARROW = {"train_rows": "4", "main_rank": "1", "max_steps": "1", "batch_size": "4", "max_length": "320",
          "items_per_category": "1", "samples": "1", "max_tokens": "4"}


def test_study_runs_then_resumes_with_the_same_command(tmp_path, tiny_vlm_dir):
    out = tmp_path / "em-study"
    sets = [arg for key, value in {"base": str(tiny_vlm_dir), **NARROW}.items() for arg in ("--set", f"{key}={value}")]
    command = ["study", "--preset", "narrow", "--out", out, "--grader", GRADER, *sets]
    printed = em_tasks(*command)
    report = out / "report" / "report.md"
    assert re.search(rf"\[study\] narrow finished in \d+ s; report: {re.escape(str(report))}", printed)
    settings = json.loads((out / "study.json").read_text())
    assert settings["name"] == "narrow" and settings["base"] == str(tiny_vlm_dir)
    assert (settings["main_rank"], settings["max_steps"], settings["samples"]) == (1, 1, 1)  # typed, not text
    card = json.loads((out / "adapters" / "r1" / "run_card.json").read_text())
    assert card["rank"] == 1 and card["steps"] == 1
    summary = json.loads((out / "report" / "report.json").read_text())
    assert [r["label"] for r in summary["runs"]][1:] == ["r1"] and summary["runs"][0]["label"].startswith("base")
    assert all(r["text"]["scored"] == 8 and r["image"]["scored"] == 8 for r in summary["runs"])
    assert (out / "report" / "index.html").is_file()

    adapters, evals = mtimes(out / "adapters", "*"), mtimes(out / "logs", "*.eval")
    again = em_tasks(*command)
    assert "[study] narrow finished" in again
    assert mtimes(out / "adapters", "*") == adapters  # not retrained
    assert mtimes(out / "logs", "*.eval") == evals  # finished evals kept as they are
    assert json.loads((out / "report" / "report.json").read_text())["runs"] == summary["runs"]
