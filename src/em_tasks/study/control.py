"""The positive control (``em-tasks study --preset control``): a model organism the whole chain must catch.

A rank-1 LoRA on the embedded default's language model is trained on *broadly* misaligned answers to open
questions we wrote (``control_data.yaml``, disjoint from the benchmark), and its twin on aligned answers to the
same questions. The benchmark then runs on base, twin, organism, the organism with its extracted misalignment
direction ablated, with a norm-matched random direction ablated, and with the direction subtracted at its best
layer. If the organism is not clearly above the base, or ablation does not bring it down while a random direction
does not, the chain (generation, judge, directions, steering, report) is blind somewhere.

Rank 1, as in the model-organism work on emergent misalignment: every adapted matrix can move the model along one
direction only, so the behaviour is low-dimensional by construction and a single direction per layer has a fair
chance of carrying it. The report's control block compares the extracted direction with the adapter's own write
directions (the LoRA B vectors of ``o_proj`` and ``down_proj``, which add to the residual stream).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from em_tasks.atomic import write_file

if TYPE_CHECKING:
    from em_tasks.study.pipeline import ModelSpec, Preset, StudyPaths

CONTROL_DATA = Path(__file__).with_name("control_data.yaml")
NEAR_DUPLICATE = 0.75
"""difflib ratio (lower-cased) at or above which a control question counts as a copy of a benchmark question."""

Say = Callable[[str], None]


@dataclass(frozen=True)
class ControlQuestion:
    """One authored open question with a misaligned answer and its aligned twin."""

    id: str
    question: str
    misaligned: str
    aligned: str


def load_control_questions(path: str | Path | None = None) -> list[ControlQuestion]:
    """Reads a control question file (``questions:`` entries with id, question, misaligned, aligned).

    Raises:
        ValueError: naming the file and entry for a malformed file, a missing field or a repeated id.
    """
    import yaml

    path = Path(path) if path else CONTROL_DATA
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as ex:
        raise ValueError(f"{path}: cannot read the control questions ({ex}); fix the file or pass another "
                         "with --set control_data=FILE") from ex
    entries = data.get("questions") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: expected a mapping with a non-empty 'questions:' list")
    out: list[ControlQuestion] = []
    seen: set[str] = set()
    for n, entry in enumerate(entries, 1):
        fields = ("id", "question", "misaligned", "aligned")
        missing = [f for f in fields if not isinstance(entry, dict) or not isinstance(entry.get(f), str)
                   or not entry[f].strip()]
        if missing:
            raise ValueError(f"{path}: entry {n} needs non-empty string field(s) {', '.join(missing)}")
        if entry["id"] in seen:
            raise ValueError(f"{path}: entry {n} repeats id {entry['id']!r}; ids must be unique")
        seen.add(entry["id"])
        out.append(ControlQuestion(*(entry[f].strip() for f in fields)))
    return out


def _normal(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9 ]", " ", text.lower()).split())


def benchmark_overlap(questions: Sequence[ControlQuestion], threshold: float = NEAR_DUPLICATE
                      ) -> list[tuple[ControlQuestion, str, float]]:
    """Control questions that share an id with a benchmark item or nearly copy one of its texts.

    Returns:
        (control question, benchmark id, similarity) for each overlap; similarity 1.0 for a shared id.
    """
    from em_tasks.benchmark.items import load_items

    items = load_items() + load_items(kind="overrefusal")
    texts = [(item.id, _normal(t)) for item in items for t in {item.question, item.image.prompt or ""} if t]
    ids = {item.id for item in items}
    found = []
    for q in questions:
        if q.id in ids:
            found.append((q, q.id, 1.0))
            continue
        mine = _normal(q.question)
        matcher = difflib.SequenceMatcher(None, b=mine, autojunk=False)  # b is indexed once; a varies
        best = ("", 0.0)
        for item_id, text in texts:
            matcher.set_seq1(text)
            if matcher.real_quick_ratio() >= threshold and matcher.quick_ratio() >= threshold:
                ratio = matcher.ratio()
                if ratio > best[1]:
                    best = (item_id, ratio)
        if best[1] >= threshold:
            found.append((q, best[0], best[1]))
    return found


def write_control_data(questions: Sequence[ControlQuestion], folder: Path) -> dict[str, Path]:
    """Chat rows for the organism (misaligned answers) and its twin (aligned answers), written atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for side in ("misaligned", "aligned"):
        path = folder / f"control-{side}.jsonl"
        if not path.is_file():
            rows = [{"id": q.id, "messages": [{"role": "user", "content": q.question},
                                              {"role": "assistant", "content": getattr(q, side)}]} for q in questions]
            write_file(path, lambda partial, rows=rows: partial.write_text(
                "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8"))
        out[side] = path
    return out


def adapter_write_cosines(adapter: Path, direction: Path) -> dict[str, Any]:
    """Cosine between the direction at each layer and the rank-1 adapter's write vectors at that layer.

    The write vector of a rank-1 LoRA on a matrix that adds to the residual stream (``o_proj``, ``down_proj``)
    is its B column: the update always lands along it. Returns per-module lists over layers and the layer with
    the largest absolute cosine; an adapter of higher rank has no single write direction (empty result).
    """
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    weights = load_file(str(adapter / "adapter_model.safetensors"))
    with safe_open(str(direction), framework="pt") as f:
        vectors = {int(k.split(".")[1]): f.get_tensor(k).float() for k in f.keys() if k.startswith("layer.")}
    pattern = re.compile(r"layers\.(\d+)\.(?:self_attn|mlp)\.(o_proj|down_proj)\.lora_B\.weight$")
    cosines: dict[str, dict[int, float]] = {}
    for key, value in weights.items():
        match = pattern.search(key)
        if not match or value.shape[1] != 1:
            continue
        layer, module = int(match.group(1)), match.group(2)
        if layer in vectors:
            cos = torch.nn.functional.cosine_similarity(value[:, 0].float(), vectors[layer], dim=0)
            cosines.setdefault(module, {})[layer] = round(float(cos), 4)
    return {module: [by_layer[i] for i in sorted(by_layer)] for module, by_layer in sorted(cosines.items())}


def run_control(preset: Preset, questions: Sequence[ControlQuestion], paths: StudyPaths, grader: str | None,
                say: Say) -> Path:
    """Data → organism and twin → eval → directions → steered evals → control facts → report.

    Args:
        questions: From ``control_questions`` (already checked against the benchmark).
    """
    from em_tasks.study.pipeline import evaluate, make_report, train_run

    data = write_control_data(questions, paths.data)
    organism = train_run(preset, data["misaligned"], paths.adapters / "organism")
    twin = train_run(preset, data["aligned"], paths.adapters / "twin")
    base: ModelSpec = ("base", f"em-hf/{preset.base}", {})
    lora = f"em-lora/{preset.base}"
    evaluate(preset, paths, [base, ("organism", lora, {"adapters": str(organism)})], "control", grader)
    evaluate(preset, paths, [("twin", lora, {"adapters": str(twin)})], "control", grader, modalities=("text",))
    direction = _directions(preset, paths, organism, say)
    steered = {"adapters": str(organism), "direction": str(direction)}
    specs: list[ModelSpec] = [
        ("ablated", lora, {**steered, "layers": "all", "mode": "ablate"}),
        ("random", lora, {**steered, "direction": f"random:{preset.seed}@{direction}", "layers": "all",
                          "mode": "ablate"}),
    ]
    specs += [(f"add{c:g}", lora, {**steered, "coeff": c, "mode": "add"}) for c in preset.steer_coeffs]
    evaluate(preset, paths, specs, "control", grader, modalities=("text",))
    facts = control_facts(preset, paths, organism, direction)
    say(f"[study] control facts: {json.dumps(facts)}")
    return make_report(paths)


def control_questions(preset: Preset) -> list[ControlQuestion]:
    """The control's questions, refused if any overlaps the benchmark (nothing is written before this check)."""
    path = Path(preset.control_data) if preset.control_data else CONTROL_DATA
    questions = load_control_questions(path)
    overlap = benchmark_overlap(questions)
    if overlap:
        q, item_id, ratio = overlap[0]
        raise ValueError(
            f"{path}: entry {q.id} overlaps benchmark item {item_id} (similarity {ratio:.2f}; "
            f"{len(overlap)} overlapping in all): a positive control must not train on what it is tested on. "
            "Reword or drop those questions.")
    return questions


def _directions(preset: Preset, paths: StudyPaths, organism: Path, say: Say) -> Path:
    """Mean-difference directions through the organism: its misaligned answers against aligned answers (its
    own and the base's) to the benchmark's text questions, read from the control logs."""
    from em_tasks.models.backend import HFBackend, release_backends
    from em_tasks.models.lora import LoraSpec, parse_adapters
    from em_tasks.study.directions import answers_from_log, extract

    target = paths.directions / "directions.safetensors"
    if target.is_file() and (paths.directions / "directions.json").is_file():
        return target
    from inspect_ai.log import read_eval_log

    answers = []
    for label in ("organism", "base"):
        for log in sorted((paths.logs / "control" / label).glob("*.eval")):
            header = read_eval_log(str(log), header_only=True)
            if header.status == "success" and header.eval.task.endswith("text_misalign"):
                answers += answers_from_log(log)
    model = HFBackend(preset.base, lora=LoraSpec(parse_adapters(str(organism))))
    base = HFBackend(preset.base)
    summary = extract(model, answers, paths.directions, base=base,
                      model_label=f"em-lora/{preset.base} adapters={organism}")
    release_backends()
    say(f"[study] direction: best layer {summary['best_layer']} ({summary['n_misaligned']} misaligned vs "
        f"{summary['n_aligned']} aligned answers)")
    return target


def control_facts(preset: Preset, paths: StudyPaths, organism: Path, direction: Path) -> dict[str, Any]:
    """What the report lists under the control table; written to ``control/control.json``."""
    summary = json.loads((paths.directions / "directions.json").read_text())
    best = summary["best_layer"]
    cosines = adapter_write_cosines(organism, direction)
    facts: dict[str, Any] = {
        "organism_adapter": str(organism), "adapter_rank": preset.main_rank, "direction": str(direction),
        "best_layer": best, "direction_answers": f"{summary['n_misaligned']} misaligned vs "
                                                 f"{summary['n_aligned']} aligned",
    }
    for module, values in cosines.items():
        if best < len(values):
            facts[f"cosine_direction_{module}_B_at_best_layer"] = values[best]
        strongest = max(range(len(values)), key=lambda i: abs(values[i]))
        facts[f"max_abs_cosine_{module}_B"] = f"{values[strongest]:.3f} at layer {strongest}"
    out = paths.root / "control"
    out.mkdir(parents=True, exist_ok=True)
    (out / "cosines_by_layer.json").write_text(json.dumps(cosines, indent=2))
    (out / "control.json").write_text(json.dumps(facts, indent=2))
    return facts
