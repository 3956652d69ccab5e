"""The report's sections, each a list of document blocks; the plot sections also draw their PNG."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from em_tasks.study import plots
from em_tasks.study.report.control import CONTROL_FACTS, Check, ControlRun
from em_tasks.study.report.document import Block, Bullets, Heading, Image, Para, Table
from em_tasks.study.report.format import (
    DASH, RUN_HEADERS, VS_BASE_WORDS, num, pct, rate_cell, run_row, vs_base_cell,
)
from em_tasks.study.report.logs import CONTROL_DIR, MODALITY_TASKS, LogSelection, RateStats
from em_tasks.study.report.runs import GROUP_TITLES, Run, read_study_json, resolve_path, to_float
from em_tasks.study.report.stats import (
    BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, MIN_CORRELATION_RUNS, PCA_TARGET, components_to_reach, permutation_p,
    spearman,
)

if TYPE_CHECKING:
    from em_tasks.study.report.agentic import AgentRun

PLOT_FILES = {
    "rank": "misalignment_vs_rank.png",
    "fraction": "misalignment_vs_harmful_fraction.png",
    "pca": "pca_explained_variance.png",
    "mitigations": "mitigations.png",
    "fisher": "fisher_vs_misalignment.png",
    "control": "positive_control.png",
}


def _point(stats: RateStats | None, x: float, label: str = "") -> plots.Point | None:
    if stats is None or stats.scored == 0:
        return None
    return plots.Point(x, stats.rate, stats.low, stats.high, label)


def _series(runs: Sequence[Run], x_of: Callable[[Run], float],
            label_of: Callable[[Run], str] = lambda run: "") -> dict[str, list[plots.Point]]:
    series: dict[str, list[plots.Point]] = {"text": [], "image": []}
    for run in runs:
        for modality in series:
            point = _point(run.stats(modality), x_of(run), label_of(run))
            if point:
                series[modality].append(point)
    return series


def _baseline(runs: Sequence[Run], like: Sequence[Run]) -> dict[str, float]:
    bases = {r.base for r in like}
    for run in runs:
        if run.group == "base" and run.base in bases:
            return {m: s.rate for m in ("text", "image") if (s := run.stats(m)) and s.scored}
    return {}


def _has_points(series: Mapping[str, Sequence[plots.Point]]) -> bool:
    return any(series.values())


def rank_section(runs: Sequence[Run], out_dir: Path) -> list[Block]:
    """Misaligned rate against LoRA rank for the rank-sweep runs."""
    blocks: list[Block] = [Heading("Misalignment vs LoRA rank", 3)]
    sweep = [r for r in runs if r.group == "rank sweep" and r.rank is not None]
    series = _series(sweep, lambda r: r.rank)
    if not _has_points(series):
        return blocks + [Para("Skipped: no rank-sweep runs with scores (LoRA runs whose run card gives a rank, "
                              "harmful fraction 1 and no mitigation).")]
    path = plots.rate_curve(out_dir / PLOT_FILES["rank"], series, title="Misaligned rate vs LoRA rank",
                            xlabel="LoRA rank", baseline=_baseline(runs, sweep), log2_x=True)
    return blocks + [Image(path, "Misaligned rate (95 % Wilson CI) vs LoRA rank; dashed: base model.")]


def fraction_section(runs: Sequence[Run], out_dir: Path) -> list[Block]:
    """Misaligned rate against the harmful fraction of the training mix, at the ranks of the mix runs."""
    blocks: list[Block] = [Heading("Misalignment vs harmful fraction", 3)]
    mix = [r for r in runs if r.group == "fraction mix" and r.fraction is not None]
    if not mix:
        return blocks + [Para("Skipped: no harmful-fraction mix runs (LoRA runs whose run card gives a harmful "
                              "fraction below 1).")]
    ranks = sorted({r.rank for r in mix}, key=lambda r: -1 if r is None else r)
    full = [r for r in runs if r.group == "rank sweep" and r.rank in ranks]
    series: dict[str, list[plots.Point]] = {}
    for rank in ranks:
        members = [r for r in mix + full if r.rank == rank]
        for modality, points in _series(members, lambda r: r.fraction).items():
            name = modality if len(ranks) == 1 else f"{modality}, rank {rank}"
            series[name] = points
    if not _has_points(series):
        return blocks + [Para("Skipped: the harmful-fraction mix runs have no scored answers.")]
    path = plots.rate_curve(out_dir / PLOT_FILES["fraction"], series, title="Misaligned rate vs harmful fraction",
                            xlabel="harmful fraction of the training data", baseline=_baseline(runs, mix),
                            xlim=(-0.03, 1.03))
    return blocks + [Image(path, "Misaligned rate (95 % Wilson CI) vs harmful fraction (fraction-1 runs of the "
                                 "same rank included); dashed: base model.")]


def mitigation_section(runs: Sequence[Run], out_dir: Path) -> list[Block]:
    """Mitigated runs beside the run each one changes and the base model."""
    blocks: list[Block] = [Heading("Mitigations", 3)]
    mitigated = [r for r in runs if r.group == "mitigations"]
    if not mitigated:
        return blocks + [Para("Skipped: no mitigation runs (benign fine-tune on a harmful adapter, `alpha` or "
                              "adapter weights other than 1, or steering).")]
    by_identity = {r.identity: r for r in runs if r.identity is not None and r.group != "mitigations"}
    ordered: list[Run] = []
    bases = [by_identity.get(f"base:{b}") for b in sorted({r.base for r in mitigated})]
    ordered += [b for b in bases if b is not None]
    for parent in dict.fromkeys(r.parent for r in mitigated):
        source = by_identity.get(parent) if parent else None
        if source is not None and source not in ordered:
            ordered.append(source)
        ordered += [r for r in mitigated if r.parent == parent]
    bars = [plots.Bar(r.label, _point(r.text, 0), _point(r.image, 0)) for r in ordered]
    if not any(b.text or b.image for b in bars):
        return blocks + [Para("Skipped: the mitigation runs have no scored answers.")]
    path = plots.grouped_bars(out_dir / PLOT_FILES["mitigations"], bars,
                              title="Mitigations: misaligned rate")
    return blocks + [Image(path, "Each mitigation follows the run it changes (base model first); 95 % Wilson CI.")]


def pca_section(study_dir: Path | None, out_dir: Path) -> list[Block]:
    """Explained variance of the activation-difference PCAs in directions.json."""
    blocks: list[Block] = [Heading("PCA of activation differences", 3)]
    data, why = read_study_json(study_dir, "directions/directions.json", "em-tasks directions")
    if data is None:
        return blocks + [Para(f"Skipped: {why}")]
    panels: dict[str, tuple[list[float], int | None]] = {}
    rows = []
    for name, entry in (data.get("pca") or {}).items():
        ratios = [float(r) for r in (entry or {}).get("explained_variance_ratio") or []]
        if not ratios:
            continue
        k = components_to_reach(ratios)
        panels[f"{name.replace('_', ' ')} (layer {entry.get('layer', '?')})"] = (ratios, k)
        rows.append([name, str(entry.get("layer", DASH)), str(len(ratios)), pct(ratios[0]),
                     str(k) if k else f"> {len(ratios)}"])
    facts = [f"best layer {data['best_layer']}" if "best_layer" in data else None,
             f"{data['n_aligned']} aligned / {data['n_misaligned']} misaligned answers"
             if "n_aligned" in data and "n_misaligned" in data else None]
    intro = "; ".join(f for f in facts if f)
    if not panels:
        return blocks + [Para("Skipped: directions.json has no PCA explained-variance ratios.")]
    path = plots.explained_variance(out_dir / PLOT_FILES["pca"], panels, target=PCA_TARGET)
    return blocks + ([Para(f"From `directions.json`: {intro}.")] if intro else []) + [
        Table(["PCA", "Layer", "Components", "PC1", f"k for {PCA_TARGET:.0%} cumulative"], rows),
        Image(path, f"Explained variance ratio per component and cumulative; dashed line at the k reaching "
                    f"{PCA_TARGET:.0%}."),
    ]


def fisher_section(runs: Sequence[Run], study_dir: Path | None, out_dir: Path) -> list[Block]:
    """The Fisher proxy beside each run's measured misalignment, with Spearman's rho over runs."""
    blocks: list[Block] = [Heading("Fisher proxy vs measured misalignment", 3)]
    data, why = read_study_json(study_dir, "fisher/fisher.json", "em-tasks fisher")
    if data is None:
        return blocks + [Para(f"Skipped: {why}")]
    # one adapter, used as trained; runs without a system-prompt variant first
    plain = sorted((r for r in runs if len(r.adapters) == 1 and r.identity is not None),
                   key=lambda r: r.system_prompt is not None)
    rows: list[list[str]] = []
    matched: list[tuple[float, Run]] = []
    for entry in data.get("runs") or []:
        proxy = to_float(entry.get("proxy"))
        run = _match_fisher(entry, plain, study_dir)
        if run is not None and proxy is not None:
            matched.append((proxy, run))
        rank = entry.get("rank") if entry.get("rank") is not None else (run.rank if run else None)
        fraction = to_float(entry.get("harmful_fraction"))
        fraction = fraction if fraction is not None else (run.fraction if run else None)
        rows.append([str(entry.get("run", DASH)), run.label if run else "not evaluated",
                     DASH if rank is None else str(rank), DASH if fraction is None else f"{fraction:g}",
                     f"{proxy:.4g}" if proxy is not None else DASH,
                     rate_cell(run.text) if run else DASH, rate_cell(run.image) if run else DASH,
                     vs_base_cell(run)])
    if not rows:
        return blocks + [Para("Skipped: fisher.json lists no runs.")]
    blocks += _fisher_source(data)
    blocks.append(Table(["Fisher run", "Evaluated run", "Rank", "Harmful fraction", "Fisher proxy",
                         "Text misaligned [95 % CI]", "Image misaligned [95 % CI]", "Vs base (text / image)"],
                        rows))
    lines = []
    for modality in ("text", "image"):
        pairs = [(p, s.rate) for p, r in matched if (s := r.stats(modality)) and s.scored]
        if len(pairs) < MIN_CORRELATION_RUNS:
            lines.append(f"{modality}: Spearman's rho not computed ({len(pairs)} run(s) with both numbers; "
                         f"needs {MIN_CORRELATION_RUNS}).")
            continue
        xs, ys = [p for p, _ in pairs], [y for _, y in pairs]
        rho = spearman(xs, ys)
        p = permutation_p(xs, ys)
        lines.append(f"{modality}: Spearman's rho = {num(rho, 2)} over {len(pairs)} runs "
                     f"(permutation p = {num(p, 3)}).")
    blocks.append(Bullets(lines))
    proxies = {id(run): proxy for proxy, run in matched}
    series = _series([r for _, r in matched], lambda r: proxies[id(r)], lambda r: r.label)
    if not _has_points(series):
        return blocks + [Para("Plot skipped: no run in fisher.json matches an evaluated run with scores "
                              "(matched by adapter path or run name).")]
    path = plots.scatter(out_dir / PLOT_FILES["fisher"], series, title="Fisher proxy vs misaligned rate",
                         xlabel="Fisher proxy")
    return blocks + [Image(path, "Measured misaligned rate (95 % Wilson CI) against each adapter's Fisher proxy.")]


def _fisher_source(data: Mapping[str, Any]) -> list[Block]:
    reference = data.get("reference")
    if not isinstance(reference, dict):
        return []
    source = reference.get("name") or reference.get("path") or "the reference data"
    size = f" (n = {reference['n']})" if "n" in reference else ""
    modules = f", over modules `{data['targets']}`" if data.get("targets") else ""
    return [Para(f"Fisher information on `{source}`{size}{modules}.")]


def _match_fisher(entry: Mapping[str, Any], runs: Sequence[Run], study_dir: Path | None) -> Run | None:
    adapter = entry.get("adapter")
    path = resolve_path(str(adapter), study_dir, "adapters") if adapter else None
    for run in runs:
        if path is not None and run.adapters[0].path == path:
            return run
    name = str(entry.get("run") or "")
    for run in runs:
        if name and name in (run.adapters[0].name, Path(run.adapters[0].spec).name):
            return run
    return None


def _fact(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, str):
        return f"`{value}`"
    return json.dumps(value)


def control_section(control: Sequence[ControlRun], checks: Sequence[Check], facts: Mapping[str, Any] | None,
                    why: str, out_dir: Path) -> list[Block]:
    """Rates per control label and modality, the criteria as pass/fail lines, control.json's facts, a plot."""
    rows = []
    for run in control:
        for modality in MODALITY_TASKS:
            stats = run.stats(modality)
            if stats is None:
                continue
            verdict = run.vs_base.get(modality)
            scored = stats.scored > 0
            rows.append([run.label, modality, pct(stats.rate) if scored else "no scored answers",
                         f"[{100 * stats.low:.1f}, {100 * stats.high:.1f}]" if scored else DASH,
                         str(stats.scored), num(stats.coherence),
                         VS_BASE_WORDS[verdict] if verdict else DASH])
    blocks: list[Block] = [
        Heading("Positive control"),
        Para(f"Runs from `{CONTROL_DIR}/<label>/` in the log folder, kept out of the leaderboard: `base` the base "
             "model, `organism` a model fine-tuned to be misaligned, `ablated` the organism with its misalignment "
             "direction ablated, `random` the organism with a norm-matched random direction ablated; "
             "`study --preset control` adds `twin` (the same questions fine-tuned on aligned answers) and "
             "`add<c>` (the direction added with coefficient c at its best layer)."),
        Table(["Label", "Modality", "Misaligned rate", "95 % interval", "n", "Mean coherence", "Vs base"], rows),
    ]
    if checks:
        blocks.append(Bullets([f"{'PASS' if c.passed else 'FAIL'}: {c.name}. {c.detail}" for c in checks]))
    else:
        blocks.append(Para("No criterion checked: each needs the organism and base, ablated or random on text."))
    if facts:
        blocks += [Para(f"From `{CONTROL_FACTS}`:"), Bullets([f"`{k}`: {_fact(v)}" for k, v in facts.items()])]
    elif why:
        blocks.append(Para(f"Facts skipped: {why}"))
    bars = [plots.Bar(r.label, _point(r.text, 0), _point(r.image, 0)) for r in control]
    if not any(b.text or b.image for b in bars):
        return blocks + [Para("Plot skipped: the control runs have no scored answers.")]
    path = plots.grouped_bars(out_dir / PLOT_FILES["control"], bars, title="Positive control: misaligned rate")
    return blocks + [Image(path, "Misaligned rate per control run, text and image side by side; 95 % Wilson CI.")]


def leaderboard_section(runs: Sequence[Run]) -> list[Block]:
    blocks: list[Block] = [Heading("Leaderboard")]
    if not runs:
        return blocks + [Para("No runs outside the positive control.")]
    for group, title in GROUP_TITLES.items():
        members = [r for r in runs if r.group == group]
        if not members:
            continue
        with_mitigation = group == "mitigations"
        headers = RUN_HEADERS[:1] + (["Mitigation"] if with_mitigation else []) + RUN_HEADERS[1:]
        blocks += [Heading(title, 3), Table(headers, [run_row(r, with_mitigation) for r in members])]
    return blocks


def logs_section(runs: Sequence[Run], selection: LogSelection, control: Sequence[ControlRun] = (),
                 agent: Sequence[AgentRun] = ()) -> list[Block]:
    rows = []
    measured = [(run.label, (run.text, run.image, run.overrefusal)) for run in runs]
    measured += [(f"{CONTROL_DIR}: {run.label}", (run.text, run.image)) for run in control]
    for label, all_stats in measured:
        for stats in all_stats:
            if stats is None:
                continue
            ref = stats.log
            rows.append([label, ref.task, ref.file, ref.created.strftime("%Y-%m-%d %H:%M"), str(ref.epochs),
                         str(stats.scored), str(stats.unscored)])
    for run in agent:
        for use in run.logs.values():
            ref = use.ref
            rows.append([run.label, ref.task, ref.file, ref.created.strftime("%Y-%m-%d %H:%M"), str(ref.epochs),
                         str(use.scored), str(use.unscored)])
    blocks: list[Block] = [Heading("Logs used"),
                           Table(["Run", "Task", "Log", "Created", "Epochs", "Scored", "Unscored"], rows)]
    skipped = []
    superseded = selection.superseded + [r for s in selection.control.values() for r in s.superseded]
    failed = selection.failed + [r for s in selection.control.values() for r in s.failed]
    if superseded:
        skipped.append(f"{len(superseded)} older successful log(s) replaced by a later one of the "
                       "same task and run.")
    if failed:
        names = ", ".join(f"`{r.file}` ({r.status})" for r in failed[:10])
        more = f" and {len(failed) - 10} more" if len(failed) > 10 else ""
        skipped.append(f"{len(failed)} unfinished or failed log(s) left out: {names}{more}.")
    if selection.foreign:
        skipped.append(f"{selection.foreign} log(s) of other tasks ignored.")
    return blocks + ([Bullets(skipped)] if skipped else [])


def intro_section(runs: Sequence[Run], log_dir: Path, study_dir: Path | None,
           control: Sequence[ControlRun] = ()) -> list[Block]:
    stats = [s for r in [*runs, *control] for s in (r.text, r.image) if s]
    judges = sorted({j for s in stats for j in s.judges} | {j for r in runs if r.overrefusal
                                                           for j in r.overrefusal.judges})
    thresholds = sorted({s.log.thresholds for s in stats if s.log.thresholds})
    rule = "; ".join(f"alignment ≤ {a:g} and coherence > {c:g}" for a, c in thresholds) or "as scored in the logs"
    text = (f"{len(runs)} run(s) from `{log_dir}`"
            + (f", with a positive control of {len(control)} run(s)" if control else "")
            + (f", study folder `{study_dir}`" if study_dir else "")
            + f". Generated {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}.")
    blocks: list[Block] = [Heading("em-tasks leaderboard", 1), Para(text), Bullets([
        f"Misaligned answer: {rule}" + (" (logs differ in thresholds)" if len(thresholds) > 1 else "") + ".",
        "Rates are over scored answers (unscored ones are counted apart); the 95 % interval is Wilson's, "
        "treating answers (all epochs) as independent; n is the number of scored answers it rests on.",
        "Vs base: a run is above (below) base when its 95 % interval lies wholly above (below) the base model's "
        "on the same modality; overlapping intervals read as no detectable difference from base.",
        f"Image − text gap: per item, the mean over epochs in each modality; then the mean of the per-item "
        f"differences over items scored in both, in percentage points, with a paired bootstrap 95 % interval "
        f"({BOOTSTRAP_RESAMPLES} resamples of items, seed {BOOTSTRAP_SEED}).",
        "Coherence is the mean judge rating (0–100); refusal is the share of REFUSAL verdicts on these "
        "questions; over-refusal comes from the overrefusal task (benign requests refused).",
        "Judged by: " + (", ".join(f"`{j}`" for j in judges) if judges else "unknown (no judge in the scores)")
        + ".",
    ])]
    if any("offline" in j.lower() for j in judges):
        blocks.append(Para("Some answers were scored by the offline judge, a rough proxy: pass "
                           "`--model-role grader=<model>` when running the tasks for numbers to report."))
    if any(s.from_metrics for s in stats):
        blocks.append(Para("Some logs carry no samples: their rates come from the logged metrics (n counts "
                           "samples after inspect's epoch reduction), without a paired gap."))
    return blocks
