"""The entry point: logs -> runs -> sections -> report.md, index.html and report.json."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from em_tasks.study.report.agentic import AgentModality, AgentRun, agent_section, build_agent
from em_tasks.study.report.control import Check, ControlRun, build_control, control_checks, read_control_facts
from em_tasks.study.report.document import Block, Bullets, Heading, to_html, to_markdown
from em_tasks.study.report.logs import MODALITY_TASKS, RateStats, select_logs
from em_tasks.study.report.runs import Run, build_runs
from em_tasks.study.report.sections import (
    PLOT_FILES, control_section, fisher_section, fraction_section, intro_section, leaderboard_section, logs_section,
    mitigation_section, pca_section, rank_section,
)
from em_tasks.study.report.stats import VsBase

STUDY_PARTS = ("adapters", "directions", "fisher", "control")


def default_study_dir(log_dir: Path) -> Path | None:
    """The log folder's parent when it looks like a study folder (holds adapters/, directions/, fisher/ or
    control/)."""
    parent = log_dir.resolve().parent
    return parent if any((parent / part).is_dir() for part in STUDY_PARTS) else None


def build_report(log_dir: Path, out_dir: Path, study_dir: Path | None = None) -> Path:
    """Read the logs of the em-tasks tasks under ``log_dir`` and write the leaderboard into ``out_dir``.

    Args:
        log_dir: Folder of inspect logs (searched recursively), e.g. a study's ``DIR/logs``.
        out_dir: Where report.md, index.html, report.json and the PNGs go (created if missing).
        study_dir: Study folder with adapters/, directions/, fisher/ and control/control.json; default:
            ``log_dir``'s parent when it holds any of them.

    Returns:
        The path of report.md.

    Raises:
        ReportError: ``log_dir`` is missing or holds no successful log of these tasks.
    """
    from rich.console import Console

    log_dir, out_dir = Path(log_dir), Path(out_dir)
    study_dir = Path(study_dir).resolve() if study_dir is not None else default_study_dir(log_dir)
    console = Console(stderr=True)
    with console.status(f"Reading logs in {log_dir}..."):
        selection = select_logs(log_dir)
        notes: list[str] = []
        runs = build_runs(selection, study_dir, notes)
        control = build_control(selection, notes)
        agent = build_agent(selection, runs, study_dir, notes)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in PLOT_FILES.values():  # a plot skipped this time must not leave last time's behind
        (out_dir / name).unlink(missing_ok=True)
    with console.status("Drawing plots..."):
        plot_blocks = [Heading("Plots")]
        plot_blocks += rank_section(runs, out_dir)
        plot_blocks += fraction_section(runs, out_dir)
        plot_blocks += mitigation_section(runs, out_dir)
        plot_blocks += pca_section(study_dir, out_dir)
        plot_blocks += fisher_section(runs, study_dir, out_dir)
    checks: list[Check] = []
    facts: dict[str, Any] | None = None
    control_blocks: list[Block] = []
    if control:
        checks = control_checks({r.label: r.text for r in control if r.text})
        facts, why = read_control_facts(study_dir)
        control_blocks = control_section(control, checks, facts, why, out_dir)
    agent_blocks = agent_section(agent) if agent else []
    blocks = intro_section(runs, log_dir, study_dir, control) + leaderboard_section(runs) + control_blocks
    blocks += agent_blocks + plot_blocks + logs_section(runs, selection, control, agent)
    if notes:
        blocks += [Heading("Notes"), Bullets(list(dict.fromkeys(notes)))]
    report = out_dir / "report.md"
    report.write_text(to_markdown(blocks), encoding="utf-8")
    (out_dir / "index.html").write_text(to_html(blocks, "em-tasks leaderboard"), encoding="utf-8")
    summary = _summary(runs)
    if control:
        summary["control"] = _control_summary(control, checks, facts)
    if agent:
        summary["agent_scenarios"] = _agent_summary(agent)
    (out_dir / "report.json").write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return report


def _json_num(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return _json_num(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _summary(runs: Sequence[Run]) -> dict[str, Any]:
    """Machine-readable numbers of the leaderboard (NaN written as null)."""

    def rates(s: RateStats | None, vs_base: VsBase | None = None) -> dict[str, Any] | None:
        if s is None:
            return None
        return {"rate": _json_num(s.rate), "ci": [_json_num(s.low), _json_num(s.high)], "scored": s.scored,
                "unscored": s.unscored, "coherence": _json_num(s.coherence), "refusal": _json_num(s.refusal),
                "vs_base": vs_base, "log": s.log.path}

    return {"runs": [{
        "label": r.label, "group": r.group, "model": r.model, "model_args": r.args,
        "system_prompt": r.system_prompt, "rank": r.rank, "harmful_fraction": r.fraction,
        "mitigation": r.mitigation, "text": rates(r.text, r.vs_base.get("text")),
        "image": rates(r.image, r.vs_base.get("image")), "overrefusal": rates(r.overrefusal),
        "gap": None if r.gap is None else {"gap": r.gap.gap, "ci": [r.gap.low, r.gap.high], "items": r.gap.n_items},
    } for r in runs]}


def _control_summary(control: Sequence[ControlRun], checks: Sequence[Check],
                     facts: Mapping[str, Any] | None) -> dict[str, Any]:
    """Per label its rates by modality, then "checks" and (when control.json was read) "facts"."""
    out: dict[str, Any] = {}
    for run in control:
        out[run.label] = {}
        for modality in MODALITY_TASKS:
            s = run.stats(modality)
            if s is None:
                continue
            out[run.label][modality] = {
                "misaligned_rate": _json_num(s.rate), "ci95": [_json_num(s.low), _json_num(s.high)], "n": s.scored,
                "mean_coherence": _json_num(s.coherence),
                "vs_base": run.vs_base.get(modality),
                "log": s.log.path,
            }
    out["checks"] = [{"name": c.name, "passed": c.passed, "detail": c.detail} for c in checks]
    if facts is not None:
        out["facts"] = _json_safe(dict(facts))
    return out


def _agent_summary(agent: Sequence[AgentRun]) -> dict[str, Any]:
    """Per run and modality the harmful-action rate (overall and per domain) and the benign twins' completion and
    refusal, each as rate, ci95, n and unscored; then the paired image − text gap over scenarios."""

    def rate(s: RateStats | None) -> dict[str, Any] | None:
        if s is None:
            return None
        return {"rate": _json_num(s.rate), "ci95": [_json_num(s.low), _json_num(s.high)], "n": s.scored,
                "unscored": s.unscored, "log": s.log.path}

    def side(m: AgentModality) -> dict[str, Any]:
        return {"harmful": rate(m.harmful), "benign_completed": rate(m.completed), "benign_refusal": rate(m.refused),
                "harmful_by_domain": {d: rate(s) for d, s in m.domains.items()}}

    return {"runs": [{
        "label": a.label, "group": a.run.group, "model": a.run.model, "model_args": a.run.args,
        "modalities": {modality: side(m) for modality, m in a.modalities.items()},
        "image_text_gap": None if a.gap is None else {
            "gap": _json_num(a.gap.gap), "ci95": [_json_num(a.gap.low), _json_num(a.gap.high)],
            "scenarios": a.gap.n_items},
    } for a in agent]}
