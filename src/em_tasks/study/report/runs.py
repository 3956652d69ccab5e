"""Runs: one model with its answer-changing model args, labelled and grouped from its adapters' run cards.

Also the study folder's files a run or section points at (adapter folders, run cards, study JSON files) and
the comparison of each run with its base model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from em_tasks.models.lora import split_adapter
from em_tasks.study.report.logs import MODALITY_TASKS, REFUSAL_TASK, LogSelection, RateStats, RunKey, read_rates
from em_tasks.study.report.stats import PairedGap, VsBase, compare_intervals, paired_gap

if TYPE_CHECKING:
    from em_tasks.study.report.control import ControlRun

GROUP_TITLES = {
    "base": "Base model",
    "rank sweep": "Rank sweep (harmful fraction 1, no mitigation)",
    "fraction mix": "Harmful-fraction mix (fraction < 1)",
    "mitigations": "Mitigations",
    "other": "Other runs",
}


@dataclass
class Adapter:
    """One entry of the ``adapters`` model arg, with its folder and run card when found."""

    spec: str
    weight: float
    path: Path | None
    card: dict[str, Any] | None

    @property
    def name(self) -> str:
        if self.card and self.card.get("name"):
            return str(self.card["name"])
        return Path(self.spec).name or self.spec

    @property
    def identity(self) -> str:
        return str(self.path) if self.path else self.spec


@dataclass
class Run:
    """A model with its answer-changing model args, its labels and its measurements."""

    key: RunKey
    model: str
    args: dict[str, str]
    system_prompt: str | None
    adapters: list[Adapter]
    alpha: float
    steering: dict[str, str] | None
    label: str = ""
    group: str = "other"
    mitigation: str | None = None
    parent: str | None = None
    rank: int | None = None
    fraction: float | None = None
    text: RateStats | None = None
    image: RateStats | None = None
    overrefusal: RateStats | None = None
    gap: PairedGap | None = None
    vs_base: dict[str, VsBase] = field(default_factory=dict)

    @property
    def family(self) -> str:
        return self.model.split("/", 1)[0]

    @property
    def base(self) -> str:
        return self.model.split("/", 1)[1] if "/" in self.model else self.model

    @property
    def identity(self) -> str | None:
        """What a mitigation of this run points back to: its one adapter, or its base model."""
        if self.steering or self.alpha != 1 or len(self.adapters) > 1:
            return None
        if not self.adapters:
            return f"base:{self.base}" if self.family.startswith("em-") else None
        return self.adapters[0].identity if self.adapters[0].weight == 1 else None

    def stats(self, modality: str) -> RateStats | None:
        return self.text if modality == "text" else self.image


def resolve_path(spec: str, study_dir: Path | None, subdir: str) -> Path | None:
    """A file or folder named in a model arg: as given, then inside the study folder, then by name in ``subdir``."""
    raw = Path(spec).expanduser()
    candidates = [raw]
    if not raw.is_absolute() and study_dir is not None:
        candidates.append(study_dir / raw)
    if study_dir is not None:
        candidates.append(study_dir / subdir / raw.name)
    for candidate in candidates:
        if candidate.exists():
            return candidate.resolve()
    return None


def parse_adapters(value: str, study_dir: Path | None, notes: list[str]) -> list[Adapter]:
    """The ``adapters=PATH[:WEIGHT],...`` model arg as adapters with their run cards."""
    adapters = []
    for part in (p.strip() for p in value.split(",") if p.strip()):
        spec, weight = split_adapter(part)
        path = resolve_path(spec, study_dir, "adapters")
        card = _read_card(path, notes) if path else None
        if path is None:
            notes.append(f"Adapter `{spec}` not found (looked as given and in the study folder): its run is "
                         "labelled from the path alone; pass the study folder (`--study DIR`) if the adapters moved.")
        adapters.append(Adapter(spec, weight, path, card))
    return adapters


def _read_card(path: Path, notes: list[str]) -> dict[str, Any] | None:
    card_file = path / "run_card.json" if path.is_dir() else path.parent / "run_card.json"
    if not card_file.is_file():
        notes.append(f"No run_card.json in `{path}`: rank and harmful fraction unknown for its runs.")
        return None
    try:
        card = json.loads(card_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        notes.append(f"Unreadable run card `{card_file}` ({error}); rewrite it with `em-tasks train`.")
        return None
    return card if isinstance(card, dict) else None


def to_float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _short_model(name: str) -> str:
    tail = name.split("/", 1)[1] if name.startswith("em-") and "/" in name else name
    return Path(tail).name if ("/" in tail and Path(tail).is_absolute()) else tail


def describe_run(key: RunKey, study_dir: Path | None, notes: list[str]) -> Run:
    """Label a run and put it in its group from its model args and the adapters' run cards."""
    model, arg_items, system_prompt = key
    args = dict(arg_items)
    adapters = parse_adapters(args["adapters"], study_dir, notes) if args.get("adapters") else []
    alpha = to_float(args.get("alpha", 1.0))
    steering = {k: args[k] for k in ("direction", "layers", "coeff", "mode", "positions") if k in args} or None
    if steering is not None and "direction" not in steering:
        steering = None
    run = Run(key, model, args, system_prompt, adapters, 1.0 if alpha is None else alpha, steering)
    cards = [a.card for a in adapters if a.card]
    card = adapters[0].card if len(adapters) == 1 else None
    if card:
        rank = to_float(card.get("rank"))
        run.rank = None if rank is None else int(rank)
        run.fraction = to_float(card.get("harmful_fraction"))
    run.mitigation, run.parent = _mitigation(run, study_dir)
    if run.mitigation:
        run.group = "mitigations"
    elif adapters and len(cards) == len(adapters):
        run.group = "fraction mix" if run.fraction is not None and run.fraction < 1 else "rank sweep"
    elif not adapters and run.family in ("em-hf", "em-lora", "em-steer"):
        run.group = "base"
    run.label = _label(run)
    return run


def _mitigation(run: Run, study_dir: Path | None) -> tuple[str | None, str | None]:
    """(kind, identity of the run it changes), or (None, None) for a plain run."""
    first = run.adapters[0].identity if run.adapters else f"base:{run.base}"
    if run.steering:
        direction = run.steering["direction"]
        mode = run.steering.get("mode", "add")
        kind = "random-direction control" if direction.startswith("random:") else f"steering ({mode})"
        return kind, first
    if run.alpha != 1 or len(run.adapters) > 1 or any(a.weight != 1 for a in run.adapters):
        return "weight merge", first
    card = run.adapters[0].card if run.adapters else None
    if card and card.get("init_adapter"):
        init = str(card["init_adapter"])
        path = resolve_path(init, study_dir, "adapters")
        return "benign fine-tune", str(path) if path else init
    return None, None


def _label(run: Run) -> str:
    if run.adapters:
        parts = [a.name if a.weight == 1 else f"{a.name}×{a.weight:g}" for a in run.adapters]
        label = " + ".join(parts)
    elif run.family in ("em-hf", "em-lora", "em-steer"):
        label = f"base {_short_model(run.model)}"
    else:
        label = run.model
    if run.alpha != 1:
        label += f" α={run.alpha:g}"
    if run.steering:
        s = run.steering
        what = "random direction" if s["direction"].startswith("random:") else Path(s["direction"].split("@")[0]).stem
        detail = ", ".join(f"{k} {s[k]}" for k in ("mode", "layers", "coeff") if k in s)
        label += f" + steer {what} ({detail})" if detail else f" + steer {what}"
    shown = {"adapters", "alpha", "direction", "layers", "coeff", "mode"}
    extra = {k: v for k, v in run.args.items() if k not in shown}
    if extra:
        label += " (" + ", ".join(f"{k}={v}" for k, v in sorted(extra.items())) + ")"
    if run.system_prompt:
        label += f" [system prompt: {run.system_prompt}]"
    return label


def group_order(run: Run) -> tuple[Any, ...]:
    """Sort key of runs: by group (as in ``GROUP_TITLES``), then rank, harmful fraction (highest first), label."""
    groups = list(GROUP_TITLES)
    return (groups.index(run.group), run.rank if run.rank is not None else math.inf,
            -(run.fraction if run.fraction is not None else 1.0), run.parent or "", run.label)


def build_runs(selection: LogSelection, study_dir: Path | None, notes: list[str]) -> list[Run]:
    """One Run per (model, model args, system prompt), measured from the chosen logs."""
    keys = {key for task, key in selection.chosen if task != REFUSAL_TASK}
    refusal_only = {key for task, key in selection.chosen if task == REFUSAL_TASK}
    # over-refusal has no system-prompt variants: it joins every run of the same model and args
    for key in refusal_only:
        if not any(k[:2] == key[:2] for k in keys):
            keys.add(key)
    runs = [describe_run(key, study_dir, notes) for key in sorted(keys, key=str)]
    for run in runs:
        for modality, task in MODALITY_TASKS.items():
            ref = selection.chosen.get((task, run.key))
            if ref is not None:
                setattr(run, modality, read_rates(ref, "misaligned"))
        ref = selection.chosen.get((REFUSAL_TASK, (run.key[0], run.key[1], None)))
        if ref is not None:
            run.overrefusal = read_rates(ref, "refusal")
        if run.text and run.image:
            run.gap = paired_gap(run.text.items, run.image.items)
    dedupe_labels(runs)
    _compare_with_base(runs)
    return sorted(runs, key=group_order)


def versus(stats: RateStats | None, base: RateStats | None) -> VsBase | None:
    """``compare_intervals`` of two measured rates; None when either has no scored answers."""
    if stats is None or base is None or not stats.scored or not base.scored:
        return None
    return compare_intervals(stats.low, stats.high, base.low, base.high)


def _compare_with_base(runs: Sequence[Run]) -> None:
    """Set each non-base run's ``vs_base`` against the base run of its base model (same system prompt first)."""
    bases: dict[tuple[str, str | None], Run] = {}
    for run in sorted((r for r in runs if r.group == "base"), key=lambda r: (len(r.args), r.label)):
        bases.setdefault((run.base, run.system_prompt), run)
    for run in runs:
        base = bases.get((run.base, run.system_prompt)) or bases.get((run.base, None))
        if run.group != "base" and base is not None:
            set_vs_base(run, base)


def set_vs_base(run: Run | ControlRun, base: Run | ControlRun) -> None:
    """Fill ``run.vs_base`` per modality where both runs have scored answers."""
    for modality in MODALITY_TASKS:
        verdict = versus(run.stats(modality), base.stats(modality))
        if verdict is not None:
            run.vs_base[modality] = verdict


def dedupe_labels(runs: list[Run]) -> None:
    """Number repeated labels in list order (the second ``r8`` becomes ``r8 #2``)."""
    seen: dict[str, int] = {}
    for run in runs:
        seen[run.label] = seen.get(run.label, 0) + 1
        if seen[run.label] > 1:
            run.label = f"{run.label} #{seen[run.label]}"


def read_study_json(study_dir: Path | None, relative: str, command: str) -> tuple[dict[str, Any] | None, str]:
    """A JSON object from the study folder (``relative`` to it, written by ``command``), or (None, why)."""
    if study_dir is None:
        return None, ("no study folder (the log folder's parent holds no adapters/, directions/ or fisher/; "
                      "pass `--study DIR` to read them).")
    path = study_dir / relative
    if not path.is_file():
        return None, f"`{path}` not found (made by `{command}`)."
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        return None, f"`{path}` is not valid JSON ({error}); rerun `{command}` to rewrite it."
    if not isinstance(data, dict):
        return None, f"`{path}` should hold a JSON object; rerun `{command}` to rewrite it."
    return data, ""
