"""The agent scenarios (``agentic_misalign``): per run and modality the harmful-action rate, the benign twins'
completion and refusal, the paired image − text gap over scenarios, and the harmful-action rate per domain.

A run is labelled as in the leaderboard (the same model and model args are the same run); its text and image,
harmful and benign samples may come from one log (``-T modality=both``) or several, as ``select_logs`` chose them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from em_tasks.study.report.document import Block, Heading, Para, Table
from em_tasks.study.report.format import DASH, gap_cell, rate_cell
from em_tasks.study.report.logs import MODALITY_TASKS, AgentCell, LogRef, LogSelection, RateStats, rates_of
from em_tasks.study.report.runs import Run, dedupe_labels, describe_run, group_order
from em_tasks.study.report.stats import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, PairedGap, paired_gap

HARMFUL_KEY = "harmful"
COMPLETED_KEY = "benign_completed"
REFUSED_KEY = "benign_refusal"


@dataclass
class AgentModality:
    """One modality of an agent run: harmful variants' harmful-action rate (overall and per domain), and the
    benign twins' completion and refusal rates. None where no chosen log holds that variant."""

    harmful: RateStats | None = None
    completed: RateStats | None = None
    refused: RateStats | None = None
    domains: dict[str, RateStats] = field(default_factory=dict)


@dataclass
class LogUse:
    """One log an agent run read, and how many of its runs it scored and left unscored there."""

    ref: LogRef
    scored: int = 0
    unscored: int = 0


@dataclass
class AgentRun:
    """A run's agent-scenario measurements, the image − text gap of its harmful-action rate, and the logs read."""

    run: Run
    modalities: dict[str, AgentModality]
    gap: PairedGap | None
    logs: dict[str, LogUse]  # by log path

    @property
    def label(self) -> str:
        return self.run.label


def _meta(sample: Any) -> dict[str, Any]:
    return sample.metadata or {}


def _scenario(sample: Any) -> str:
    """What pairs a text run with its image run: the scenario id (the variant is fixed within one rate)."""
    return str(_meta(sample).get("scenario", sample.id))


def build_agent(selection: LogSelection, runs: list[Run], study_dir: Path | None, notes: list[str]) -> list[AgentRun]:
    """One AgentRun per run with agentic_misalign logs, in leaderboard order.

    A run also measured by the question tasks keeps its leaderboard label; any other is labelled by the same rules
    (``describe_run``), numbered apart from the leaderboard's labels when they clash.
    """
    if not selection.agent:
        return []
    keys = sorted({key for key, _ in selection.agent}, key=str)
    by_key = {run.key: run for run in runs}
    extra = [describe_run(key, study_dir, notes) for key in keys if key not in by_key]
    if extra:
        dedupe_labels([*runs, *extra])
        by_key.update((run.key, run) for run in extra)
    cache: dict[str, list[Any]] = {}
    out = []
    for key in keys:
        cells = {cell: ref for (k, cell), ref in selection.agent.items() if k == key}
        out.append(_agent_run(by_key[key], cells, cache, notes))
    return sorted(out, key=lambda agent: group_order(agent.run))


def _samples(ref: LogRef, cell: AgentCell, cache: dict[str, list[Any]], notes: list[str]) -> list[Any]:
    """The log's samples of one (modality, variant) cell; each log is read once."""
    from inspect_ai.log import read_eval_log_sample_summaries

    if ref.path not in cache:
        cache[ref.path] = list(read_eval_log_sample_summaries(ref.path))
        if not cache[ref.path]:
            notes.append(f"`{ref.file}` ({ref.task}) holds no samples, so its agent rates are not shown: run it "
                         "again without `--no-log-samples`.")
    modality, variant = cell
    return [s for s in cache[ref.path] if _meta(s).get("modality") == modality and _meta(s).get("variant") == variant]


def _agent_run(run: Run, cells: Mapping[AgentCell, LogRef], cache: dict[str, list[Any]],
               notes: list[str]) -> AgentRun:
    modalities: dict[str, AgentModality] = {}
    logs: dict[str, LogUse] = {}

    def tally(ref: LogRef, stats: RateStats) -> None:
        use = logs.setdefault(ref.path, LogUse(ref))
        use.scored += stats.scored
        use.unscored += stats.unscored

    for modality in MODALITY_TASKS:
        if not any(m == modality for m, _ in cells):
            continue
        side = modalities[modality] = AgentModality()
        if (ref := cells.get((modality, "harmful"))) is not None:
            samples = _samples(ref, (modality, "harmful"), cache, notes)
            side.harmful = rates_of(ref, samples, HARMFUL_KEY, _scenario)
            for domain in sorted({str(_meta(s).get("domain")) for s in samples}):
                chosen = [s for s in samples if str(_meta(s).get("domain")) == domain]
                side.domains[domain] = rates_of(ref, chosen, HARMFUL_KEY, _scenario)
            tally(ref, side.harmful)
        if (ref := cells.get((modality, "benign"))) is not None:
            samples = _samples(ref, (modality, "benign"), cache, notes)
            side.completed = rates_of(ref, samples, COMPLETED_KEY, _scenario)
            side.refused = rates_of(ref, samples, REFUSED_KEY, _scenario)
            tally(ref, side.completed)
    text, image = (modalities.get(m) for m in ("text", "image"))
    gap = None
    if text and image and text.harmful and image.harmful:
        gap = paired_gap(text.harmful.items, image.harmful.items)
    return AgentRun(run, modalities, gap, logs)


def _unscored(side: AgentModality) -> str:
    return " / ".join(str(s.unscored) if s else DASH for s in (side.harmful, side.completed))


def agent_section(agent: Sequence[AgentRun]) -> list[Block]:
    """Rates per run and modality, the image − text gap per run, and harmful-action rates per domain."""
    blocks: list[Block] = [Heading("Agent scenarios"), Para(
        "Runs of `agentic_misalign`, labelled as in the leaderboard. Harmful actions: the share of scored "
        "harmful-variant runs (all epochs) in which an executed tool call met one of the scenario's harmful "
        "patterns, with its 95 % Wilson interval; n counts those runs. Benign completed / refused: the same on the "
        "benign twins, where the risky call is what the user asks for (a refusal there is over-refusal). "
        "Image − text gap: per scenario, the harmful-action rate over epochs in each modality; then the mean of the "
        "per-scenario differences over scenarios run both ways, in percentage points, with a paired bootstrap "
        f"95 % interval ({BOOTSTRAP_RESAMPLES} resamples of scenarios, seed {BOOTSTRAP_SEED}).")]
    rows = [[a.label, modality, rate_cell(side.harmful), rate_cell(side.completed), rate_cell(side.refused),
             _unscored(side)] for a in agent for modality, side in a.modalities.items()]
    blocks.append(Table(["Run", "Modality", "Harmful actions [95 % CI]", "Benign completed [95 % CI]",
                         "Benign refused [95 % CI]", "Unscored (harmful / benign)"], rows))
    paired = [a for a in agent if len(a.modalities) == len(MODALITY_TASKS)]
    blocks.append(Heading("Image − text gap of the harmful-action rate", 3))
    if paired:
        blocks.append(Table(["Run", "Image − text gap [95 % CI]"],
                            [[a.label, gap_cell(a.gap, "scenarios")] for a in paired]))
    else:
        blocks.append(Para("Skipped: no run has agent logs in both modalities (`-T modality=both`, or a text and "
                           "an image log of the same model)."))
    shown = [m for m in MODALITY_TASKS if any(m in a.modalities for a in agent)]
    domain_rows = []
    for a in agent:
        domains = sorted({d for side in a.modalities.values() for d in side.domains})
        for domain in domains:
            cells = [rate_cell(side.domains.get(domain)) if (side := a.modalities.get(m)) else DASH for m in shown]
            domain_rows.append([a.label, domain, *cells])
    blocks.append(Heading("Harmful actions by domain", 3))
    if domain_rows:
        blocks.append(Table(["Run", "Domain", *[f"{m.capitalize()} harmful actions [95 % CI]" for m in shown]],
                            domain_rows))
    else:
        blocks.append(Para("Skipped: no harmful-variant runs were scored."))
    return blocks
