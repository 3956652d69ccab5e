"""Table cells: rates with their intervals, the paired gap, numbers, and a leaderboard row."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from em_tasks.study.report.logs import MODALITY_TASKS, RateStats
from em_tasks.study.report.stats import PairedGap

if TYPE_CHECKING:
    from em_tasks.study.report.runs import Run

VS_BASE_WORDS: dict[str, str] = {"above": "above base", "below": "below base",
                                 "no detectable difference": "no detectable difference from base"}


DASH = "—"


def pct(x: float) -> str:
    return f"{100 * x:.1f} %" if math.isfinite(x) else DASH


def rate_cell(stats: RateStats | None) -> str:
    if stats is None:
        return DASH
    if stats.scored == 0:
        return "no scored answers"
    cell = f"{pct(stats.rate)} [{100 * stats.low:.1f}, {100 * stats.high:.1f}] n={stats.scored}"
    return cell + " (from metrics)" if stats.from_metrics else cell


def gap_cell(gap: PairedGap | None, unit: str = "items") -> str:
    if gap is None:
        return DASH
    return f"{100 * gap.gap:+.1f} pp [{100 * gap.low:+.1f}, {100 * gap.high:+.1f}] ({gap.n_items} {unit})"


def _pair(run: Run, fmt: Callable[[float], str], attr: str) -> str:
    values = [fmt(getattr(s, attr)) if s else DASH for s in (run.text, run.image)]
    return " / ".join(values)


def num(x: float | None, digits: int = 1) -> str:
    return f"{x:.{digits}f}" if x is not None and math.isfinite(x) else DASH


def _unscored(run: Run) -> str:
    return " / ".join(str(s.unscored) if s else DASH for s in (run.text, run.image))


def vs_base_cell(run: Run | None) -> str:
    if run is None or not run.vs_base:
        return DASH
    return " / ".join(VS_BASE_WORDS[v] if (v := run.vs_base.get(m)) else DASH for m in MODALITY_TASKS)


def run_row(run: Run, with_mitigation: bool) -> list[str]:
    row = [run.label]
    if with_mitigation:
        row.append(run.mitigation or DASH)
    row += [
        str(run.rank) if run.rank is not None else DASH,
        f"{run.fraction:g}" if run.fraction is not None else DASH,
        rate_cell(run.text),
        rate_cell(run.image),
        gap_cell(run.gap),
        _pair(run, num, "coherence"),
        _pair(run, pct, "refusal"),
        rate_cell(run.overrefusal),
        _unscored(run),
        vs_base_cell(run),
    ]
    return row


RUN_HEADERS = ["Run", "Rank", "Harmful fraction", "Text misaligned [95 % CI]", "Image misaligned [95 % CI]",
               "Image − text gap [95 % CI]", "Coherence (text / image)", "Refusal (text / image)",
               "Over-refusal [95 % CI]", "Unscored (text / image)", "Vs base (text / image)"]
