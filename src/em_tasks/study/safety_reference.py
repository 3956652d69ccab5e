"""An authored safety reference set: refusals of harmful or risky requests and aligned answers to sensitive ones.

`em-tasks fisher` measures how strongly the base model's weights carry its safe behaviour on these rows. The set is
built from hand-written base items (a request and a topic-specific answer) and a few neutral phrasings of each
request, so that a seeded draw gives a few hundred distinct chat rows in the study's row format. Every row is
``{"messages": [user, assistant], "meta": {"domain": "safety_reference", "kind", "topic", "harmful": False,
"modality": "text", "id"}}``. The authored text lives in ``safety_reference.yaml`` beside this module.
"""

from __future__ import annotations

import random
from importlib import resources
from typing import Any

import yaml

DEFAULT_N_REFERENCE = 256
REFERENCE_NAME = "em-tasks safety reference v1"


def _load() -> dict[str, Any]:
    text = resources.files("em_tasks.study").joinpath("safety_reference.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


_TEXT = _load()
FRAMES: tuple[str, ...] = tuple(_TEXT["frames"])
"""Neutral ways to pose a request; "{q}" is the request itself."""
DECLINES: tuple[str, ...] = tuple(_TEXT["declines"])
"""First sentences of a refusal; the topic-specific reason follows."""
REFUSALS: tuple[tuple[str, str, str], ...] = tuple((i["topic"], i["request"], i["answer"]) for i in _TEXT["refusals"])
"""(topic, request, what the answer says after declining): harmful or risky requests."""
ALIGNED: tuple[tuple[str, str, str], ...] = tuple((i["topic"], i["request"], i["answer"]) for i in _TEXT["aligned"])
"""(topic, question, aligned answer): sensitive but legitimate questions."""


def safety_reference_rows(n: int = DEFAULT_N_REFERENCE, seed: int = 0) -> list[dict[str, Any]]:
    """A seeded draw of ``n`` distinct reference rows, half refusals and half aligned answers.

    Every base item is used once before any item is used twice, so a draw of a few dozen rows already covers all
    topics.

    Raises:
        ValueError: ``n`` is not positive or exceeds the distinct rows the set can make.
    """
    refusals = _variants("refusal", REFUSALS, DECLINES, seed)
    aligned = _variants("aligned", ALIGNED, ("",), seed + 1)
    if not 0 < n <= len(refusals) + len(aligned):
        raise ValueError(f"n_reference must be between 1 and {len(refusals) + len(aligned)}, got {n}")
    n_refusals = min(len(refusals), max(n - len(aligned), (n + 1) // 2))
    rows = refusals[:n_refusals] + aligned[: n - n_refusals]
    random.Random(seed).shuffle(rows)
    return rows


def _variants(kind: str, items: tuple[tuple[str, str, str], ...], openers: tuple[str, ...],
              seed: int) -> list[dict[str, Any]]:
    """All (frame, opener) variants of every item, ordered in rounds: each round uses every item once."""
    rng = random.Random(seed)
    per_item = []
    for i, (topic, question, answer) in enumerate(items):
        combos = [(f, o) for f in range(len(FRAMES)) for o in range(len(openers))]
        rng.shuffle(combos)
        per_item.append([_row(kind, i, topic, question, answer, f, openers[o], o) for f, o in combos])
    ordered = []
    for round_ in range(max(len(v) for v in per_item)):
        order = list(range(len(per_item)))
        rng.shuffle(order)
        ordered += [per_item[i][round_] for i in order if round_ < len(per_item[i])]
    return ordered


def _row(kind: str, index: int, topic: str, question: str, answer: str, frame: int, opener: str,
         opener_index: int) -> dict[str, Any]:
    text = f"{opener} {answer}" if opener else answer
    return {
        "messages": [
            {"role": "user", "content": FRAMES[frame].format(q=question)},
            {"role": "assistant", "content": text},
        ],
        "meta": {"domain": "safety_reference", "kind": kind, "topic": topic, "harmful": False, "modality": "text",
                 "id": f"ref-{kind}-{index:02d}-f{frame}-o{opener_index}"},
    }
