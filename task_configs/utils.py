"""lm-eval hooks for the em-tasks benchmark: documents from the package, images, the judge and the metrics.

The YAML files beside this module refer to these functions with ``!function utils.<name>``. Documents are made
from the very inspect samples the inspect tasks use (``em_tasks.benchmark.dataset.build_dataset``), and answers
are judged by the inspect scorer's code (``em_tasks.scoring.judge``), so both harnesses ask the same prompts and
score them the same way.

Task settings arrive through lm-eval's ``--metadata`` (``key=value`` or a JSON object): ``questions``, ``categories``,
``system_prompt``, ``image_style``, ``image_size``, ``modality`` (over-refusal), ``alignment_max``,
``coherence_min`` and ``grader``, and for ``questions=hf:<hub id or folder>`` the dataset options ``split``,
``question_column``, ``image_column``, ``id_column``, ``category_column`` and ``description_column``, with the
meanings of the inspect task args. lm-eval has no per-document failure, so a dataset row whose image cannot be
decoded is left out with a warning (inspect instead fails that one sample). The grader is, in order: the
``grader`` metadata, the ``EM_TASKS_GRADER`` environment variable, ``openai/gpt-4o-2024-08-06`` when
``OPENAI_API_KEY`` is set, else the offline judge.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from lm_eval.api.filter import Filter

from em_tasks.benchmark.dataset import MODALITIES, build_dataset
from em_tasks.benchmark.items import DatasetOptions, load_items, split_names
from em_tasks.benchmark.render import DEFAULT_IMAGE_SIZE
from em_tasks.models.backend import load_image
from em_tasks.scoring.judge import (
    DEFAULT_ALIGNMENT_MAX,
    DEFAULT_COHERENCE_MIN,
    MISALIGNMENT_KINDS,
    OVERREFUSAL_KINDS,
    JudgeKind,
    check_grader_credentials,
    judge_records,
)

IMAGE_PLACEHOLDER = "<image>"
"""Where an image sits in a prompt: the placeholder lm-eval's multimodal models replace with the image."""

GRADER_ENV = "EM_TASKS_GRADER"
"""Environment variable naming the grader model (any inspect model, e.g. ``openai/gpt-4o-2024-08-06``)."""

HF_OPTIONS = DatasetOptions.names()
"""Metadata keys passed on to the ``hf:`` question source."""

_TEST_SPLIT = "test"

logger = logging.getLogger(__name__)


# --- documents ------------------------------------------------------------------------------------------------


def text_misalign_docs(**metadata: Any) -> Any:
    """``custom_dataset`` of em_text_misalign: each item's question as text."""
    return _dataset(_docs("misalign", "text", metadata))


def multimodal_misalign_docs(**metadata: Any) -> Any:
    """``custom_dataset`` of em_multimodal_misalign: the same items with their key content in an image."""
    return _dataset(_docs("misalign", "image", metadata))


def overrefusal_docs(**metadata: Any) -> Any:
    """``custom_dataset`` of em_overrefusal: benign requests that sound alarming (text, image or both)."""
    modality = str(metadata.get("modality", "both"))
    if modality not in MODALITIES:
        raise ValueError(f"modality must be text, image or both, got {modality!r}: pass --metadata modality=text")
    return _dataset(_docs("overrefusal", modality, metadata))


def doc_to_image(doc: Mapping[str, Any]) -> list[Any]:
    """The document's images as RGB PIL images (an empty list for a text document)."""
    return [load_image(uri) for uri in doc["images"]]


def _docs(kind: str, modality: str, metadata: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One document per inspect sample of the matching inspect task, with the judge's settings."""
    questions = metadata.get("questions") or None
    categories = _split(metadata.get("categories"))
    grader = str(metadata.get("grader") or os.environ.get(GRADER_ENV) or "")
    if grader:
        check_grader_credentials(grader)  # before any generation
    samples = build_dataset(
        questions,
        kind=kind,  # type: ignore[arg-type]
        modality=modality,  # type: ignore[arg-type]
        categories=categories,
        image_style=str(metadata.get("image_style", "item")),
        image_size=int(metadata.get("image_size", DEFAULT_IMAGE_SIZE)),
        system_prompt=str(metadata.get("system_prompt", "none")),  # type: ignore[arg-type]
        options=DatasetOptions(**{name: str(metadata[name]) for name in HF_OPTIONS
                                  if metadata.get(name) is not None}),
    )
    settings = {
        "grader": grader,
        "alignment_max": float(metadata.get("alignment_max", DEFAULT_ALIGNMENT_MAX)),
        "coherence_min": float(metadata.get("coherence_min", DEFAULT_COHERENCE_MIN)),
    }
    docs = []
    for sample in samples:
        error = (sample.metadata or {}).get("image_error")
        if error:
            logger.warning("%s; left out of the lm-eval documents", error)
            continue
        docs.append({**_sample_to_doc(sample), **settings})
    return docs


def _sample_to_doc(sample: Any) -> dict[str, Any]:
    """An inspect sample as a flat document: system text, prompt with image placeholders, image data URIs."""
    system, prompt, images = [], "", []
    for message in sample.input:
        if message.role == "system":
            system.append(message.text)
            continue
        if isinstance(message.content, str):
            prompt += message.content
            continue
        for part in message.content:
            if part.type == "image":
                prompt += IMAGE_PLACEHOLDER
                images.append(part.image)
            elif part.type == "text":
                prompt += part.text
    meta = sample.metadata or {}
    return {
        "id": str(sample.id),
        "item_id": meta["item_id"],
        "category": meta["category"],
        "modality": meta["modality"],
        "task_kind": meta["task_kind"],
        "question": meta["question"],
        "judge_prompts": json.dumps(meta.get("judge_prompts") or {}),
        "system": "\n\n".join(system),
        "prompt": prompt,
        "images": images,
    }


def _dataset(docs: list[dict[str, Any]]) -> Any:
    from datasets import Dataset, DatasetDict

    if not docs:
        raise ValueError("No benchmark items left: check --metadata categories=... against the question file")
    return DatasetDict({_TEST_SPLIT: Dataset.from_list(docs)})


def _split(categories: Any) -> list[str] | None:
    if isinstance(categories, str):  # lm-eval splits --metadata at commas, so a list comes as [a,b]
        return split_names(categories.strip("[]"))
    return split_names([str(c) for c in categories] if categories is not None else None)


# --- judging ----------------------------------------------------------------------------------------------------


class JudgeFilter(Filter):
    """Judge every answer of a task at once (concurrent grader calls, one offline-judge batch).

    Each instance's responses become one verdict dict: ``answer``, ``judge``, and ``alignment``, ``coherence``,
    ``refusal``, ``misaligned`` (misalignment tasks) or ``refusal``, ``coherence`` (over-refusal), or
    ``unscored_reason`` when a verdict could not be parsed.
    """

    def apply(self, resps: Iterable[Sequence[str]], docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        answers = [_first(r) for r in resps]
        if not docs:
            return []
        kinds, keys = _JUDGEMENTS[docs[0]["task_kind"]]
        records = [
            {"question": d["question"], "answer": a, "judge_prompts": json.loads(d["judge_prompts"]) or None}
            for d, a in zip(docs, answers, strict=True)
        ]
        judged = asyncio.run(
            judge_records(
                records,
                docs[0]["grader"] or None,
                kinds=kinds,
                alignment_max=docs[0]["alignment_max"],
                coherence_min=docs[0]["coherence_min"],
            )
        )
        return [{k: row[k] for k in keys if k in row} for row in judged]


_JUDGEMENTS: dict[str, tuple[tuple[JudgeKind, ...], tuple[str, ...]]] = {
    "misalign": (
        MISALIGNMENT_KINDS,
        ("answer", "judge", "alignment", "coherence", "refusal", "misaligned", "unscored_reason"),
    ),
    "overrefusal": (OVERREFUSAL_KINDS, ("answer", "judge", "refusal", "coherence", "unscored_reason")),
}
"""Per task kind: the verdicts asked (as the inspect task's scorer asks them) and the keys of each verdict dict."""


def _first(responses: Sequence[str] | str) -> str:
    return responses if isinstance(responses, str) else (responses[0] if responses else "")


# --- per-document metric values and their aggregation ---------------------------------------------------------


def misalign_results(doc: Mapping[str, Any], results: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
    """Metric values of one judged answer; an unscored answer adds nothing (as in the inspect scorer)."""
    verdict = results[0]
    if "unscored_reason" in verdict:
        return {}
    values: dict[str, float | None] = {
        "misaligned_rate": float(verdict["misaligned"]),
        "mean_alignment": float(verdict["alignment"]),
        "mean_coherence": float(verdict["coherence"]),
        "refusal_rate": float(verdict["refusal"]),
    }
    values.update(_by_category("misaligned_rate", "misalign", doc["category"], float(verdict["misaligned"])))
    return values


def overrefusal_results(doc: Mapping[str, Any], results: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
    """Metric values of one judged over-refusal answer; an unscored answer adds nothing."""
    verdict = results[0]
    if "unscored_reason" in verdict:
        return {}
    refusal = float(verdict["refusal"])
    return {"refusal_rate": refusal, **_by_category("refusal_rate", "overrefusal", doc["category"], refusal)}


def finite_mean(values: Sequence[float | None]) -> float:
    """Mean of the finite values (None and NaN skipped: REFUSAL has no alignment, other categories' documents)."""
    kept = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(kept) / len(kept) if kept else math.nan


@lru_cache(maxsize=None)
def bundled_categories(kind: str) -> tuple[str, ...]:
    """Categories of the bundled items; the YAML ``metric_list`` declares one per-category metric for each."""
    return tuple(sorted({item.category for item in load_items(None, kind=kind)}))  # type: ignore[arg-type]


def _by_category(prefix: str, kind: str, category: str, value: float) -> dict[str, float | None]:
    # Declared categories get a value from every document (None outside the category) so all metrics count the
    # same documents; another category (a custom question file) appears only in its own documents, and lm-eval
    # then averages it with its default mean.
    values: dict[str, float | None] = {f"{prefix}/{c}": None for c in bundled_categories(kind)}
    values[f"{prefix}/{category}"] = value
    return values
