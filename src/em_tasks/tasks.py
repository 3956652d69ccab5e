"""The inspect tasks: ``text_misalign``, ``multimodal_misalign`` (same item ids, so runs pair up) and ``overrefusal``.

    inspect eval em_tasks/text_misalign --model em-hf/default
    inspect eval em_tasks/multimodal_misalign --model em-hf/google/gemma-3-4b-it \\
        --model-role grader=openai/gpt-4o-2024-08-06
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from inspect_ai import Epochs, Task, task
from inspect_ai.dataset import MemoryDataset
from inspect_ai.model import GenerateConfig
from inspect_ai.solver import generate

from em_tasks.benchmark.dataset import build_dataset, load_items
from em_tasks.benchmark.render import DEFAULT_IMAGE_SIZE
from em_tasks.scoring.judge import DEFAULT_ALIGNMENT_MAX, DEFAULT_COHERENCE_MIN, misalignment_judge, overrefusal_judge

TASK_VERSION = "0.1.0"
# As in the emergent-misalignment work: sampled answers, long enough for a real reply.
DEFAULT_TEMPERATURE = 1.0
DEFAULT_MAX_TOKENS = 600
# A few failing samples (a corrupt image, say) should not stop the run; a broken setup should.
FAIL_ON_ERROR = 0.1

ImageStyleArg = Literal["item", "typo", "document", "screenshot"]
SystemPromptArg = Literal["none", "json", "template"]


@task
def text_misalign(
    questions: str | None = None,
    categories: str | Sequence[str] | None = None,
    samples: int | None = None,
    system_prompt: SystemPromptArg = "none",
    alignment_max: float = DEFAULT_ALIGNMENT_MAX,
    coherence_min: float = DEFAULT_COHERENCE_MIN,
    grader: str | None = None,
) -> Task:
    """Open-ended questions asked as text; the judge rates alignment and coherence of each answer.

    Args:
        questions: Question file (em-tasks YAML or the emergent-misalignment question YAML); default: bundled items.
        categories: Keep only these categories (comma-separated or a list).
        samples: Answers sampled per item (inspect epochs); default: the file's samples_per_paraphrase, else 1.
        system_prompt: Prompt variant: none, json (answer as JSON) or template (fill in a template).
        alignment_max: Alignment at or below which a coherent answer counts as misaligned.
        coherence_min: Coherence an answer must exceed to count as misaligned.
        grader: Grader model, overriding the grader model role (default: role, then OpenAI if keyed, else offline).
    """
    return _misalign_task("text", questions, categories, samples, system_prompt, "item", DEFAULT_IMAGE_SIZE,
                          alignment_max, coherence_min, grader)


@task
def multimodal_misalign(
    questions: str | None = None,
    categories: str | Sequence[str] | None = None,
    samples: int | None = None,
    system_prompt: SystemPromptArg = "none",
    image_style: ImageStyleArg = "item",
    image_size: int = DEFAULT_IMAGE_SIZE,
    alignment_max: float = DEFAULT_ALIGNMENT_MAX,
    coherence_min: float = DEFAULT_COHERENCE_MIN,
    grader: str | None = None,
) -> Task:
    """The same items with the key content in an image (typographic card, document or app screenshot).

    Args:
        questions: Question file (em-tasks YAML or the emergent-misalignment question YAML); default: bundled items.
        categories: Keep only these categories (comma-separated or a list).
        samples: Answers sampled per item (inspect epochs); default: the file's samples_per_paraphrase, else 1.
        system_prompt: Prompt variant: none, json (answer as JSON) or template (fill in a template).
        image_style: item (each item's own style), or force typo, document or screenshot for all items.
        image_size: Side of the square rendered images, in pixels.
        alignment_max: Alignment at or below which a coherent answer counts as misaligned.
        coherence_min: Coherence an answer must exceed to count as misaligned.
        grader: Grader model, overriding the grader model role (default: role, then OpenAI if keyed, else offline).
    """
    return _misalign_task("image", questions, categories, samples, system_prompt, image_style, image_size,
                          alignment_max, coherence_min, grader)


@task
def overrefusal(
    modality: Literal["text", "image", "both"] = "both",
    questions: str | None = None,
    categories: str | Sequence[str] | None = None,
    image_style: ImageStyleArg = "item",
    image_size: int = DEFAULT_IMAGE_SIZE,
    grader: str | None = None,
) -> Task:
    """Benign requests that sound alarming; scores how often the model refuses them anyway.

    Args:
        modality: text, image, or both (sample ids then carry a text/ or image/ prefix; item_id pairs them).
        questions: Question file in em-tasks YAML; default: the bundled over-refusal items.
        categories: Keep only these categories (comma-separated or a list).
        image_style: item (each item's own style), or force typo, document or screenshot for all items.
        image_size: Side of the square rendered images, in pixels.
        grader: Grader model, overriding the grader model role (default: role, then OpenAI if keyed, else offline).
    """
    modalities = ["text", "image"] if modality == "both" else [modality]
    samples = []
    for m in modalities:
        part = build_dataset(questions, kind="overrefusal", modality=m, categories=_split(categories),
                             image_style=image_style, image_size=image_size)
        for sample in part:
            if modality == "both":
                sample.id = f"{m}/{sample.id}"
            samples.append(sample)
    return Task(
        dataset=MemoryDataset(samples, name=f"em_overrefusal_{modality}"),
        solver=generate(),
        scorer=overrefusal_judge(grader=grader),
        config=GenerateConfig(temperature=DEFAULT_TEMPERATURE, max_tokens=DEFAULT_MAX_TOKENS),
        fail_on_error=FAIL_ON_ERROR,
        version=TASK_VERSION,
        metadata={"modality": modality, "kind": "overrefusal"},
    )


def _misalign_task(
    modality: Literal["text", "image"],
    questions: str | None,
    categories: str | Sequence[str] | None,
    samples: int | None,
    system_prompt: SystemPromptArg,
    image_style: ImageStyleArg,
    image_size: int,
    alignment_max: float,
    coherence_min: float,
    grader: str | None,
) -> Task:
    cats = _split(categories)
    dataset = build_dataset(questions, kind="misalign", modality=modality, categories=cats,
                            image_style=image_style, image_size=image_size, system_prompt=system_prompt)
    if samples is None:
        samples = max((item.samples or 1 for item in load_items(questions, "misalign", cats)), default=1)
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    return Task(
        dataset=dataset,
        solver=generate(),
        scorer=misalignment_judge(alignment_max=alignment_max, coherence_min=coherence_min, grader=grader),
        config=GenerateConfig(temperature=DEFAULT_TEMPERATURE, max_tokens=DEFAULT_MAX_TOKENS),
        epochs=Epochs(samples) if samples > 1 else None,
        fail_on_error=FAIL_ON_ERROR,
        version=TASK_VERSION,
        metadata={"modality": modality, "kind": "misalign", "system_prompt": system_prompt},
    )


def _split(categories: str | Sequence[str] | None) -> list[str] | None:
    if categories is None or categories == "":
        return None
    if isinstance(categories, str):
        return [c.strip() for c in categories.split(",") if c.strip()]
    return list(categories)
