"""PNG plots for the report, drawn with matplotlib's object API on the Agg canvas (no pyplot, no display).

Each function takes plain numbers (rates in 0–1 with their interval) and writes one PNG.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

MODALITY_COLORS = {"text": "#1f77b4", "image": "#d62728"}
DPI = 110


@dataclass(frozen=True)
class Point:
    """One measured rate at position ``x``, with its 95 % interval."""

    x: float
    rate: float
    low: float
    high: float
    label: str = ""


@dataclass(frozen=True)
class Bar:
    """One run's rates per modality (None where that modality was not measured)."""

    label: str
    text: Point | None
    image: Point | None


def rate_curve(
    path: Path,
    series: dict[str, Sequence[Point]],
    *,
    title: str,
    xlabel: str,
    baseline: dict[str, float] | None = None,
    log2_x: bool = False,
    xlim: tuple[float, float] | None = None,
) -> Path:
    """Misaligned rate against a run property, one line per modality, base model as dashed lines."""
    fig, ax = _figure(6.0, 4.0)
    for modality, points in series.items():
        if not points:
            continue
        pts = sorted(points, key=lambda p: p.x)
        color = MODALITY_COLORS.get(modality)
        ax.errorbar([p.x for p in pts], [100 * p.rate for p in pts], yerr=_yerr(pts), marker="o", capsize=3,
                    color=color, label=modality)
    for modality, rate in (baseline or {}).items():
        ax.axhline(100 * rate, linestyle="--", linewidth=1, color=MODALITY_COLORS.get(modality),
                   label=f"base ({modality})")
    xs = sorted({p.x for pts in series.values() for p in pts})
    if log2_x and xs and min(xs) > 0:
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.minorticks_off()
    if xlim is not None:
        ax.set_xlim(*xlim)
    ax.set(title=title, xlabel=xlabel, ylabel="misaligned answers (%)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    return _save(fig, path)


def explained_variance(path: Path, panels: dict[str, tuple[Sequence[float], int | None]], *, target: float,
                       max_components: int = 20) -> Path:
    """Explained variance ratio (bars) and its cumulative sum (line) per PCA, with the k reaching ``target``."""
    fig = Figure(figsize=(5.0 * len(panels), 3.8), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, (ratios, k)) in zip(axes, panels.items()):
        shown = list(ratios)[:max_components]
        xs = list(range(1, len(shown) + 1))
        cumulative = [sum(shown[:i]) for i in xs]
        ax.bar(xs, shown, color="#7f7f7f", label="explained variance ratio")
        ax.plot(xs, cumulative, marker="o", color="#2ca02c", label="cumulative")
        ax.axhline(target, linestyle=":", color="black", linewidth=1, label=f"{target:.0%}")
        if k is not None and k <= len(shown):
            ax.axvline(k, linestyle="--", color="#ff7f0e", linewidth=1, label=f"k = {k}")
        ax.set_xticks(xs)
        ax.set(title=title, xlabel="principal component", ylabel="fraction of variance", ylim=(0, 1.05))
        ax.legend(fontsize=8, loc="center right")
    return _save(fig, path)


def grouped_bars(path: Path, bars: Sequence[Bar], *, title: str) -> Path:
    """Horizontal bars of misaligned rate per run, text and image side by side, with 95 % intervals."""
    height = max(2.5, 0.6 * len(bars) + 1.2)
    fig, ax = _figure(8.0, height)
    ys = list(range(len(bars)))
    for offset, modality in ((-0.2, "text"), (0.2, "image")):
        rows = [(y + offset, getattr(bar, modality)) for y, bar in zip(ys, bars) if getattr(bar, modality)]
        if not rows:
            continue
        points = [p for _, p in rows]
        ax.barh([y for y, _ in rows], [100 * p.rate for p in points], height=0.38, xerr=_yerr(points), capsize=3,
                color=MODALITY_COLORS[modality], label=modality)
    ax.set_yticks(ys, [textwrap.fill(bar.label, 32) for bar in bars], fontsize=7)
    ax.invert_yaxis()
    ax.set(title=title, xlabel="misaligned answers (%)")
    ax.set_xlim(left=0)
    ax.legend(fontsize=8)
    return _save(fig, path)


def scatter(path: Path, series: dict[str, Sequence[Point]], *, title: str, xlabel: str) -> Path:
    """Misaligned rate against a per-run number (the Fisher proxy), points labelled by run."""
    fig, ax = _figure(6.0, 4.2)
    xs = [p.x for pts in series.values() for p in pts]
    for modality, points in series.items():
        if not points:
            continue
        ax.errorbar([p.x for p in points], [100 * p.rate for p in points], yerr=_yerr(points), fmt="o",
                    capsize=3, color=MODALITY_COLORS.get(modality), label=modality)
        for p in points:
            ax.annotate(p.label, (p.x, 100 * p.rate), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if xs and min(xs) > 0 and max(xs) / min(xs) > 100:
        ax.set_xscale("log")
    ax.set(title=title, xlabel=xlabel, ylabel="misaligned answers (%)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _figure(width: float, height: float) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _yerr(points: Sequence[Point]) -> list[list[float]]:
    lower = [max(0.0, 100 * (p.rate - p.low)) if math.isfinite(p.low) else 0.0 for p in points]
    upper = [max(0.0, 100 * (p.high - p.rate)) if math.isfinite(p.high) else 0.0 for p in points]
    return [lower, upper]


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path
