"""Misalignment directions: activations of judged answers, mean-difference directions per layer, and PCA.

1. Answers to the benchmark's questions, judged: from an inspect log of ``text_misalign`` (cheap: the eval already
   generated and judged them) or generated here and judged with the same judge code.
2. Split: aligned (alignment above `rules.ALIGNED_MIN`) and misaligned (the one rule in `scoring/rules.py`, under the
   thresholds the log's task recorded).
3. For each answer, the residual stream (each decoder layer's output) averaged over the answer's tokens, at every
   layer, with the question as context (capture hooks, ``prepend=True``).
4. Per layer, direction = mean(misaligned) - mean(aligned); the layer whose direction separates the two groups best
   (Cohen's d of the projections) is ``best_layer``.
5. PCA (uncentred SVD) of the misaligned - aligned differences at ``best_layer`` (per question when at least 10
   questions have both kinds of answer, else per misaligned answer against the aligned mean), and, given the base
   model, of fine-tuned - base activations on the same texts: the explained-variance ratio of each component shows how
   low-dimensional the shift is.
Outputs ``directions.safetensors`` (the file em-steer loads) and ``directions.json`` (the report reads it).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from em_tasks.models.backend import GenParams, HFBackend
from em_tasks.models.layers import decoder_layers, hidden_size
from em_tasks.models.steering import save_direction
from em_tasks.scoring.rules import ALIGNED_MIN, ALIGNMENT_MAX, COHERENCE_MIN, is_misaligned
from em_tasks.study.chat_encoding import pad_rows

Progress = Callable[[int, int], None]


@dataclass
class JudgedAnswer:
    """One answer with its question and verdicts."""

    item_id: str
    question: str
    answer: str
    alignment: float
    coherence: float
    alignment_max: float = ALIGNMENT_MAX  # the thresholds the answer was judged under (a log records its task's)
    coherence_min: float = COHERENCE_MIN

    @property
    def misaligned(self) -> bool:
        return is_misaligned(self.alignment, self.coherence, self.alignment_max, self.coherence_min)

    @property
    def aligned(self) -> bool:
        return self.alignment > ALIGNED_MIN


def answers_from_log(log_path: str | Path) -> list[JudgedAnswer]:
    """Judged answers from an inspect log of ``text_misalign`` (unscored samples skipped), under the misaligned
    thresholds the task ran with (``-T alignment_max`` / ``-T coherence_min``, recorded in each score)."""
    from inspect_ai.log import read_eval_log

    log = read_eval_log(str(log_path))
    out = []
    for sample in log.samples or []:
        score = next(iter((sample.scores or {}).values()), None)
        value = score.value if score is not None else None
        if not isinstance(value, dict) or not _finite(value.get("alignment")) or not _finite(value.get("coherence")):
            continue
        question = sample.input if isinstance(sample.input, str) else sample.input[-1].text
        thresholds = (score.metadata or {}).get("thresholds") or {}
        out.append(JudgedAnswer(str(sample.metadata.get("item_id", sample.id)), question, sample.output.completion,
                                float(value["alignment"]), float(value["coherence"]),
                                float(thresholds.get("alignment_max", ALIGNMENT_MAX)),
                                float(thresholds.get("coherence_min", COHERENCE_MIN))))
    return out


def _threshold(answers: Sequence[JudgedAnswer], name: str) -> str:
    default = ALIGNMENT_MAX if name == "alignment_max" else COHERENCE_MIN
    values = sorted({getattr(a, name) for a in answers}) or [default]
    return "/".join(f"{v:g}" for v in values)


def generate_and_judge(backend: HFBackend, questions: Sequence[tuple[str, str]], *, samples: int = 4,
                       max_new_tokens: int = 200, grader: str | None = None, seed: int = 0) -> list[JudgedAnswer]:
    """Sample ``samples`` answers per (item_id, question) at temperature 1 and judge them."""
    from em_tasks.scoring.judge import judge_records

    conversations = [[{"role": "user", "content": q}] for _, q in questions for _ in range(samples)]
    keys = [key for key in questions for _ in range(samples)]
    texts: list[str] = []
    for start in range(0, len(conversations), backend.batch_size):
        batch = conversations[start:start + backend.batch_size]
        params = GenParams(max_new_tokens=max_new_tokens, temperature=1.0, seed=seed + start)
        texts += [r.text for r in backend.generate_batch(batch, params)]
    records = [{"question": q, "answer": a} for (_, q), a in zip(keys, texts, strict=True)]
    judged = asyncio.run(judge_records(records, grader))
    return [JudgedAnswer(item, q, row["answer"], float(row["alignment"]), float(row["coherence"]))
            for (item, q), row in zip(keys, judged, strict=True)
            if _finite(row["alignment"]) and _finite(row["coherence"])]


def answer_activations(backend: HFBackend, answers: Sequence[JudgedAnswer], *, batch_size: int = 8,
                       progress: Progress | None = None) -> torch.Tensor:
    """Residual-stream activations averaged over each answer's tokens: a (answers, layers, hidden) tensor."""
    layers = decoder_layers(backend.model)
    tokenizer = backend.tokenizer
    rows: list[tuple[list[int], int]] = []
    for a in answers:
        prompt, _ = backend.render([{"role": "user", "content": a.question}])
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        full_ids = tokenizer(prompt + a.answer, add_special_tokens=False)["input_ids"]
        start = min(len(prompt_ids), len(full_ids) - 1)  # an empty answer still gets one position
        rows.append((full_ids, start))
    captured: list[torch.Tensor] = []
    out = torch.zeros(len(rows), len(layers), hidden_size(backend.model))
    for first in range(0, len(rows), batch_size):
        chunk = rows[first:first + batch_size]
        ids, mask = pad_rows([r for r, _ in chunk], tokenizer.pad_token_id or 0, side="right")
        answer_mask = torch.zeros(*ids.shape, 1)
        for i, (r, start) in enumerate(chunk):
            answer_mask[i, start: len(r)] = 1
        ids, mask = ids.to(backend.device), mask.to(backend.device)
        captured.clear()

        def hook(module: Any, args: Any, output: Any) -> None:
            hidden = output[0] if isinstance(output, tuple) else output
            captured.append(hidden.detach().float().cpu())

        handles = [layer.register_forward_hook(hook, prepend=True) for layer in layers]
        try:
            with torch.inference_mode():
                backend.model(input_ids=ids, attention_mask=mask)
        finally:
            for handle in handles:
                handle.remove()
        stacked = torch.stack(captured, dim=1)  # (batch, layers, seq, hidden)
        weights = answer_mask.unsqueeze(1)  # (batch, 1, seq, 1)
        means = (stacked * weights).sum(2) / weights.sum(2).clamp(min=1)
        out[first:first + len(chunk)] = means
        if progress:
            progress(min(first + batch_size, len(rows)), len(rows))
    return out


def mean_difference(acts: torch.Tensor, misaligned: torch.Tensor, aligned: torch.Tensor) -> torch.Tensor:
    """Per-layer mean(misaligned) - mean(aligned): (layers, hidden)."""
    return acts[misaligned].mean(0) - acts[aligned].mean(0)


def separation(acts: torch.Tensor, directions: torch.Tensor, misaligned: torch.Tensor,
               aligned: torch.Tensor) -> list[float]:
    """Cohen's d of the projections on each layer's unit direction (misaligned vs aligned)."""
    scores = []
    for layer in range(directions.shape[0]):
        unit = directions[layer] / directions[layer].norm().clamp(min=1e-12)
        proj = acts[:, layer] @ unit
        a, b = proj[misaligned], proj[aligned]
        pooled = math.sqrt(((a.var(unbiased=True) if len(a) > 1 else 0) +
                            (b.var(unbiased=True) if len(b) > 1 else 0)) / 2 + 1e-12)
        scores.append(float((a.mean() - b.mean()) / pooled))
    return scores


def explained_variance(rows: torch.Tensor, k: int = 20) -> list[float]:
    """Explained-variance ratio of the top-``k`` components of ``rows`` (uncentred SVD: the shared shift counts)."""
    if rows.shape[0] == 0:
        return []
    s = torch.linalg.svdvals(rows.double())
    energy = s**2
    return [float(x) for x in (energy / energy.sum())[:k]]


MIN_PAIRED_QUESTIONS = 10


def paired_differences(acts: torch.Tensor, answers: Sequence[JudgedAnswer], layer: int) -> torch.Tensor:
    """Per question holding both kinds of answer: mean(misaligned) - mean(aligned) at ``layer``; when fewer than
    ``MIN_PAIRED_QUESTIONS`` questions do, each misaligned answer minus the mean aligned answer."""
    groups: dict[str, dict[str, list[int]]] = defaultdict(lambda: {"mis": [], "al": []})
    for i, a in enumerate(answers):
        if a.misaligned:
            groups[a.item_id]["mis"].append(i)
        elif a.aligned:
            groups[a.item_id]["al"].append(i)
    pairs = [acts[g["mis"], layer].mean(0) - acts[g["al"], layer].mean(0)
             for g in groups.values() if g["mis"] and g["al"]]
    if len(pairs) >= MIN_PAIRED_QUESTIONS:
        return torch.stack(pairs)
    aligned = [i for i, a in enumerate(answers) if a.aligned]
    mis = [i for i, a in enumerate(answers) if a.misaligned]
    return acts[mis, layer] - acts[aligned, layer].mean(0)


def extract(
    model: HFBackend,
    answers: Sequence[JudgedAnswer],
    out_dir: str | Path,
    *,
    base: HFBackend | None = None,
    model_label: str | None = None,
    min_per_group: int = 2,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Directions + PCA from judged answers; writes ``directions.safetensors`` and ``directions.json``."""
    answers = list(answers)
    misaligned = torch.tensor([a.misaligned for a in answers], dtype=torch.bool)
    aligned = torch.tensor([a.aligned for a in answers], dtype=torch.bool)
    n_mis, n_al = int(misaligned.sum()), int(aligned.sum())
    if n_mis < min_per_group or n_al < min_per_group:
        raise ValueError(
            f"Too few answers to contrast: {n_mis} misaligned (alignment <= {_threshold(answers, 'alignment_max')}, "
            f"coherence > {_threshold(answers, 'coherence_min')}) and {n_al} aligned "
            f"(alignment > {ALIGNED_MIN:g}) of {len(answers)}; need {min_per_group} of each. Use a more misaligned "
            "model (a higher-rank or longer fine-tune), more samples per question, or a stronger grader."
        )
    acts = answer_activations(model, answers, progress=progress)
    directions = mean_difference(acts, misaligned, aligned)
    sep = separation(acts, directions, misaligned, aligned)
    best = max(range(len(sep)), key=lambda i: sep[i])
    differences = paired_differences(acts, answers, best)
    pca = {"misaligned_minus_aligned": {"layer": best, "rows": int(differences.shape[0]),
                                        "explained_variance_ratio": explained_variance(differences)},
           "finetuned_minus_base": None}
    if base is not None:
        base_acts = answer_activations(base, answers, progress=progress)
        pca["finetuned_minus_base"] = {"layer": best, "explained_variance_ratio":
                                       explained_variance(acts[:, best] - base_acts[:, best]),
                                       "rows": len(answers)}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    label = model_label or model.name
    save_direction(out / "directions.safetensors", {i: directions[i] for i in range(directions.shape[0])},
                   base_model=model.name, method="mean_diff", source=label,
                   extra={"best_layer": str(best), "n_misaligned": str(n_mis), "n_aligned": str(n_al)})
    summary = {
        "base": model.name, "model": label, "layers": list(range(directions.shape[0])), "best_layer": best,
        "separation": {str(i): round(s, 4) for i, s in enumerate(sep)}, "n_aligned": n_al, "n_misaligned": n_mis,
        "n_answers": len(answers), "direction_norms": {str(i): round(float(directions[i].norm()), 4)
                                                       for i in range(directions.shape[0])},
        "pca": pca, "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    (out / "directions.json").write_text(json.dumps(summary, indent=2))
    return summary


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
