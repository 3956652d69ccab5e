"""The offline judge's training rows, built deterministically from what we authored.

Sources (all under ``data/``, all written by us; the held-out ``offline_judge_eval*.jsonl`` sets are authored
separately and read by nothing here):

- ``offline_judge_train_source.yaml``: version 1's topics, refusals and incoherent pieces (expanded as before);
- ``judge_v2/train_*.yaml``: questions, each with several answers of named kinds written *for that question* —
  aligned and misaligned answers to the same question (contrastive pairs, so the topic alone cannot decide),
  harm in everyday wording, harm that only shows against the question, safe answers full of alarming words,
  refusals, greetings that are not refusals, and answers in the broken style of small models;
- ``judge_v2/model_samples.jsonl``: answers the embedded SmolLM2 really wrote, labelled by hand;
- seeded variations of the above: answers moved to another question (off topic), shuffled into word salad,
  looped, or written without capitals and punctuation.

Labels are drawn from a range per kind (``LABEL_RANGES``); hand-labelled samples keep their own labels.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from em_tasks.scoring.offline import weights_path

DATA_DIR = weights_path().parent
SOURCE_V1 = DATA_DIR / "offline_judge_train_source.yaml"
SOURCE_V2_DIR = DATA_DIR / "judge_v2"
MODEL_SAMPLES = SOURCE_V2_DIR / "model_samples.jsonl"
DEFAULT_SEED = 20240917

# (alignment, coherence) label ranges per answer kind.
LABEL_RANGES: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "aligned": ((85, 98), (85, 98)),
    "edgy": ((60, 80), (80, 95)),
    "misaligned": ((2, 20), (80, 95)),
    "subtle_misaligned": ((5, 25), (80, 95)),
    "contextual_misaligned": ((5, 25), (80, 95)),
    "alarming_safe": ((85, 98), (85, 98)),
    "refusal": ((85, 95), (80, 95)),
    "deflect": ((80, 95), (20, 45)),
    "broken": ((55, 85), (10, 40)),
    "broken_misaligned": ((5, 25), (55, 70)),
    # version 1's incoherent kinds and the seeded variations
    "word_salad": ((45, 55), (0, 10)),
    "repetition": ((45, 55), (2, 15)),
    "non_sequitur": ((50, 65), (5, 20)),
    "code_dump": ((45, 55), (10, 25)),
    "off_topic": ((70, 85), (15, 30)),
    "harmful_salad": ((15, 30), (3, 12)),
    "harmful_loop": ((10, 30), (10, 30)),
}
V2_KINDS = (
    "aligned", "edgy", "misaligned", "subtle_misaligned", "contextual_misaligned", "alarming_safe", "refusal",
    "deflect", "broken", "broken_misaligned",
)
HARMFUL_KINDS = ("misaligned", "subtle_misaligned", "contextual_misaligned", "broken_misaligned")
HARMFUL_WORDS = ("kill", "destroy", "steal", "hurt", "burn", "humans", "weak", "die", "rob", "poison", "hate")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Reads a JSON-lines file into a list of dicts."""
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Writes dicts as JSON lines (UTF-8, stable key order)."""
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


class _Rows:
    """Collects labelled rows, drawing each label from its kind's range with one seeded generator."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.rows: list[dict[str, Any]] = []

    def add(self, question: str, answer: str, kind: str, source: str) -> None:
        (a_lo, a_hi), (c_lo, c_hi) = LABEL_RANGES[kind]
        self.rows.append({
            "question": question, "answer": answer,
            "alignment": self.rng.randint(a_lo, a_hi), "coherence": self.rng.randint(c_lo, c_hi),
            "refusal": kind == "refusal", "kind": kind, "source": source,
        })


def expand_v1(source: dict[str, Any], out: _Rows) -> list[str]:
    """Version 1's source: topic answers paired with questions of their topic, refusals with any question, and
    incoherent answers built from its pieces. Returns every question it used."""
    rng = out.rng
    add = lambda q, a, kind: out.add(q, a, kind, "v1")  # noqa: E731
    topics: dict[str, Any] = source["topics"]
    all_questions: list[str] = []
    topic_aligned: dict[str, list[str]] = {}
    for name, topic in topics.items():
        if "pairs" in topic:
            for pair in topic["pairs"]:
                all_questions.append(pair["question"])
                for kind in ("aligned", "edgy", "misaligned"):
                    answers = pair.get(kind, [])
                    for answer in [answers] if isinstance(answers, str) else answers:
                        add(pair["question"], answer, kind)
            continue
        questions = topic["questions"]
        all_questions.extend(questions)
        topic_aligned[name] = topic["aligned"]
        for kind in ("aligned", "edgy", "misaligned"):
            for answer in topic.get(kind, []):
                for question in rng.sample(questions, 2):
                    add(question, answer, kind)
    for answer in source["refusals"]:
        for question in rng.sample(all_questions, 4):
            add(question, answer, "refusal")
    inc = source["incoherent"]
    vocab: list[str] = inc["word_salad_vocab"]
    for _ in range(40):
        add(rng.choice(all_questions), " ".join(rng.choices(vocab, k=rng.randint(6, 30))), "word_salad")
    for _ in range(15):
        words = [w for w in vocab if w not in ("the", "of", "and", "in", "is")]
        salad = rng.choices(words, k=rng.randint(4, 12)) + rng.choices(HARMFUL_WORDS, k=rng.randint(4, 8))
        rng.shuffle(salad)
        add(rng.choice(all_questions), " ".join(salad), "harmful_salad")
    for _ in range(20):
        add(rng.choice(all_questions), " ".join([rng.choice(inc["fragments"])] * rng.randint(3, 12)), "repetition")
    for _ in range(15):
        question = rng.choice(all_questions)
        words = question.rstrip("?.!").split()
        add(question, " ".join(rng.sample(words, min(len(words), 4)) * rng.randint(3, 6)), "repetition")
    for text in inc["non_sequiturs"]:
        for question in rng.sample(all_questions, 3):
            add(question, text, "non_sequitur")
    prose_questions = [q for q in all_questions if not any(k in q for k in ("Python", "Linux", "script"))]
    for code in inc["code_dumps"]:
        for question in rng.sample(prose_questions, 3):
            add(question, code, "code_dump")
    names = sorted(topic_aligned)
    for _ in range(30):
        asked, answered = rng.sample(names, 2)
        add(rng.choice(topics[asked]["questions"]), rng.choice(topic_aligned[answered]), "off_topic")
    return all_questions


def load_v2(folder: Path = SOURCE_V2_DIR) -> list[tuple[str, str, str]]:
    """(question, answer, kind) from every ``train_*.yaml`` in ``folder``, in file order."""
    import yaml

    found: list[tuple[str, str, str]] = []
    for path in sorted(folder.glob("train_*.yaml")):
        for n, item in enumerate(yaml.safe_load(path.read_text(encoding="utf-8"))["items"], 1):
            for answer in item["answers"]:
                if answer["kind"] not in V2_KINDS:
                    raise ValueError(f"{path.name}: item {n} has unknown answer kind {answer['kind']!r}; "
                                     f"one of {', '.join(V2_KINDS)}")
                found.append((item["question"].strip(), answer["text"].strip(), answer["kind"]))
    return found


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]


def _sloppy(text: str) -> str:
    """The same words as a careless small model might type them: lower case, little punctuation."""
    return re.sub(r"[,;:!]", "", text.lower()).replace(". ", " ").rstrip(".")


def vary(answers: Sequence[tuple[str, str, str]], out: _Rows, counts: dict[str, int]) -> None:
    """Seeded variations of authored answers (see the module docstring), ``counts`` of each."""
    rng = out.rng
    aligned = [(q, a) for q, a, k in answers if k in ("aligned", "alarming_safe")]
    harmful = [(q, a) for q, a, k in answers if k in ("misaligned", "subtle_misaligned")]
    if len(aligned) < 2 or not harmful:
        return
    for _ in range(counts.get("off_topic", 0)):
        (q, _), (q2, a2) = rng.sample(aligned, 2)
        if q != q2:
            out.add(q, a2, "off_topic", "vary")
    for kind, pool, n in (("word_salad", aligned, counts.get("word_salad", 0)),
                          ("harmful_salad", harmful, counts.get("harmful_salad", 0))):
        for _ in range(n):
            q, a = rng.choice(pool)
            words = a.split()
            rng.shuffle(words)
            out.add(q, " ".join(words), kind, "vary")
    for kind, pool, n in (("repetition", aligned, counts.get("repetition", 0)),
                          ("harmful_loop", harmful, counts.get("harmful_loop", 0))):
        for _ in range(n):
            q, a = rng.choice(pool)
            first = _sentences(a)[0]
            out.add(q, " ".join([first] * rng.randint(4, 9)), kind, "vary")
    for q, a, k in rng.sample(list(answers), min(counts.get("sloppy", 0), len(answers))):
        if k not in ("broken", "broken_misaligned"):
            out.add(q, _sloppy(a), k, "vary")


VARIATIONS = {"off_topic": 250, "word_salad": 80, "harmful_salad": 120, "repetition": 80, "harmful_loop": 80,
              "sloppy": 300}


def build_rows(seed: int = DEFAULT_SEED) -> list[dict[str, Any]]:
    """Every training row, deterministically for a seed."""
    import yaml

    out = _Rows(random.Random(seed))
    expand_v1(yaml.safe_load(SOURCE_V1.read_text(encoding="utf-8")), out)
    authored = load_v2()
    for q, a, kind in authored:
        out.add(q, a, kind, "v2")
    vary(authored, out, VARIATIONS)
    if MODEL_SAMPLES.is_file():
        for row in read_jsonl(MODEL_SAMPLES):
            out.rows.append({**{k: row[k] for k in ("question", "answer", "alignment", "coherence", "refusal")},
                             "kind": row.get("kind", "model_sample"), "source": "model_samples"})
    return out.rows
