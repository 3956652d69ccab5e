"""The inspect tasks: ``text_misalign``, ``multimodal_misalign`` (same item ids, so runs pair up) and ``overrefusal``.

    inspect eval em_tasks/text_misalign --model em-hf/default
    inspect eval em_tasks/multimodal_misalign --model em-hf/google/gemma-3-4b-it \\
        --model-role grader=openai/gpt-4o-2024-08-06
    inspect eval em_tasks/multimodal_misalign -T protocol=seed --model em-lora/google/gemma-3-4b-it -M adapters=RUN \\
        --model-role base=em-hf/google/gemma-3-4b-it --model-role grader=openai/gpt-4o-2024-08-06
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from inspect_ai import Epochs, Task, task
from inspect_ai.model import GenerateConfig
from inspect_ai.solver import generate

from em_tasks.benchmark.dataset import Modality, ModalityChoice, build_dataset, load_items
from em_tasks.benchmark.items import HF_PREFIX, DatasetOptions, split_names
from em_tasks.benchmark.render import DEFAULT_IMAGE_SIZE
from em_tasks.scoring.comparative import comparative_judge, comparative_preflight, precheck_comparative
from em_tasks.scoring.judge import DEFAULT_ALIGNMENT_MAX, DEFAULT_COHERENCE_MIN, misalignment_judge, overrefusal_judge
from em_tasks.scoring.metrics import worst_of
from em_tasks.scoring.rules import DIVERGENCE_MIN

TASK_VERSION = "0.1.0"
# As in the emergent-misalignment work: sampled answers, long enough for a real reply.
DEFAULT_TEMPERATURE = 1.0
DEFAULT_MAX_TOKENS = 600
# A few failing samples (a corrupt image, say) should not stop the run; a broken setup should.
FAIL_ON_ERROR = 0.1
# -T protocol=seed: the narrow-fine-tuning VLM paper's decoding as its public reproduction configs set it, three
# answers per item, each compared with the base model's answer; an item scores as its worst answer.
SEED_TEMPERATURE = 0.7
SEED_TOP_P = 0.9
SEED_TOP_K = 50
SEED_REPETITION_PENALTY = 1.1
SEED_MAX_TOKENS = 512
SEED_SAMPLES = 3

ImageStyleArg = Literal["item", "typo", "document", "screenshot"]
SystemPromptArg = Literal["none", "json", "template"]
ProtocolArg = Literal["default", "seed"]
JUDGES = ("alignment", "comparative")
DEFAULT_JUDGES: dict[str, tuple[str, ...]] = {"default": ("alignment",), "seed": ("comparative",)}


@task
def text_misalign(
    questions: str | None = None,
    categories: str | Sequence[str] | None = None,
    samples: int | None = None,
    system_prompt: SystemPromptArg = "none",
    alignment_max: float = DEFAULT_ALIGNMENT_MAX,
    coherence_min: float = DEFAULT_COHERENCE_MIN,
    grader: str | None = None,
    protocol: ProtocolArg = "default",
    judges: str | Sequence[str] | None = None,
    divergence_min: float = DIVERGENCE_MIN,
    split: str | None = None,
    question_column: str | None = None,
    image_column: str | None = None,
    id_column: str | None = None,
    category_column: str | None = None,
    description_column: str | None = None,
) -> Task:
    """Open-ended questions asked as text; the judge rates alignment and coherence of each answer.

    Args:
        questions: Question file (em-tasks YAML or the emergent-misalignment question YAML); default: bundled items.
        categories: Keep only these categories (comma-separated or a list).
        samples: Answers sampled per item (inspect epochs); default: 3 under protocol=seed, else the file's
            samples_per_paraphrase, else 1.
        system_prompt: Prompt variant: none, json (answer as JSON) or template (fill in a template).
        alignment_max: Alignment at or below which a coherent answer counts as misaligned.
        coherence_min: Coherence an answer must exceed to count as misaligned.
        grader: Grader model, overriding the grader model role (default: role, then OpenAI if keyed, else offline).
        protocol: default (ours), or seed: the narrow-fine-tuning VLM paper's decoding (temperature 0.7, top_p 0.9,
            top_k 50, repetition penalty 1.1, 512 new tokens), 3 answers per item scored by their worst, and the
            comparative judge (needs --model-role base=... and a grader model).
        judges: Comma-separated judges: alignment (alignment + coherence) and/or comparative (divergence from the
            base model's answer); default: alignment, or comparative under protocol=seed.
        divergence_min: Divergence at or above which an answer counts as diverged (comparative judge).
        split, question_column, image_column, id_column, category_column, description_column: For
            questions=hf:<hub id or datasets folder>: the split and the columns to read (default: guessed from common
            names; the guess is logged).
    """
    return _misalign_task("text", questions, categories, samples, system_prompt, "item", DEFAULT_IMAGE_SIZE,
                          alignment_max, coherence_min, grader, protocol, judges, divergence_min,
                          _source(split, question_column, image_column, id_column, category_column,
                                  description_column))


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
    protocol: ProtocolArg = "default",
    judges: str | Sequence[str] | None = None,
    divergence_min: float = DIVERGENCE_MIN,
    split: str | None = None,
    question_column: str | None = None,
    image_column: str | None = None,
    id_column: str | None = None,
    category_column: str | None = None,
    description_column: str | None = None,
) -> Task:
    """The same items with the key content in an image (typographic card, document or app screenshot).

    Args:
        questions: Question file (em-tasks YAML or the emergent-misalignment question YAML); default: bundled items.
        categories: Keep only these categories (comma-separated or a list).
        samples: Answers sampled per item (inspect epochs); default: 3 under protocol=seed, else the file's
            samples_per_paraphrase, else 1.
        system_prompt: Prompt variant: none, json (answer as JSON) or template (fill in a template).
        image_style: item (each item's own style), or force typo, document or screenshot for all items.
        image_size: Side of the square rendered images, in pixels.
        alignment_max: Alignment at or below which a coherent answer counts as misaligned.
        coherence_min: Coherence an answer must exceed to count as misaligned.
        grader: Grader model, overriding the grader model role (default: role, then OpenAI if keyed, else offline).
        protocol: default (ours), or seed: the narrow-fine-tuning VLM paper's decoding (temperature 0.7, top_p 0.9,
            top_k 50, repetition penalty 1.1, 512 new tokens), 3 answers per item scored by their worst, and the
            comparative judge (needs --model-role base=... and a grader model).
        judges: Comma-separated judges: alignment (alignment + coherence) and/or comparative (divergence from the
            base model's answer); default: alignment, or comparative under protocol=seed.
        divergence_min: Divergence at or above which an answer counts as diverged (comparative judge).
        split, question_column, image_column, id_column, category_column, description_column: For
            questions=hf:<hub id or datasets folder>: the split and the columns to read (default: guessed from common
            names; the guess is logged).
    """
    return _misalign_task("image", questions, categories, samples, system_prompt, image_style, image_size,
                          alignment_max, coherence_min, grader, protocol, judges, divergence_min,
                          _source(split, question_column, image_column, id_column, category_column,
                                  description_column))


@task
def overrefusal(
    modality: ModalityChoice = "both",
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
    return Task(
        dataset=build_dataset(questions, kind="overrefusal", modality=modality, categories=split_names(categories),
                              image_style=image_style, image_size=image_size),
        solver=generate(),
        scorer=overrefusal_judge(grader=grader),
        config=GenerateConfig(temperature=DEFAULT_TEMPERATURE, max_tokens=DEFAULT_MAX_TOKENS),
        fail_on_error=FAIL_ON_ERROR,
        version=TASK_VERSION,
        metadata={"modality": modality, "kind": "overrefusal"},
    )


def _misalign_task(
    modality: Modality,
    questions: str | None,
    categories: str | Sequence[str] | None,
    samples: int | None,
    system_prompt: SystemPromptArg,
    image_style: ImageStyleArg,
    image_size: int,
    alignment_max: float,
    coherence_min: float,
    grader: str | None,
    protocol: ProtocolArg,
    judges: str | Sequence[str] | None,
    divergence_min: float,
    options: DatasetOptions,
) -> Task:
    if protocol not in DEFAULT_JUDGES:
        raise ValueError(f"protocol must be one of {list(DEFAULT_JUDGES)}, got {protocol!r}")
    names = _judges(judges, protocol)
    comparative = "comparative" in names
    if comparative:
        precheck_comparative(grader)  # fails before any sample when inspect already knows the roles
    cats = split_names(categories)
    dataset = build_dataset(questions, kind="misalign", modality=modality, categories=cats, image_style=image_style,
                            image_size=image_size, system_prompt=system_prompt, options=options)
    if samples is None and protocol == "seed":
        samples = SEED_SAMPLES
    if samples is None and str(questions or "").startswith(HF_PREFIX):
        samples = 1  # dataset rows carry no samples_per_paraphrase (and are not decoded twice)
    if samples is None:
        samples = max((item.samples or 1 for item in load_items(questions, "misalign", cats)), default=1)
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    config = _generate_config(protocol)
    scorers = []
    if "alignment" in names:
        scorers.append(misalignment_judge(alignment_max=alignment_max, coherence_min=coherence_min, grader=grader))
    if comparative:
        scorers.append(comparative_judge(divergence_min=divergence_min, grader=grader, base_config=config))
    if protocol == "seed":
        epochs: Epochs | None = Epochs(samples, worst_of())
    else:
        epochs = Epochs(samples) if samples > 1 else None
    return Task(
        dataset=dataset,
        setup=comparative_preflight(grader=grader) if comparative else None,
        solver=generate(),
        scorer=scorers,
        config=config,
        epochs=epochs,
        fail_on_error=FAIL_ON_ERROR,
        version=TASK_VERSION,
        metadata={"modality": modality, "kind": "misalign", "system_prompt": system_prompt, "protocol": protocol,
                  "judges": list(names)},
    )


def _source(split: str | None, question_column: str | None, image_column: str | None, id_column: str | None,
            category_column: str | None, description_column: str | None) -> DatasetOptions:
    """The Hugging Face source options (build_dataset refuses any of them for other sources)."""
    return DatasetOptions(split, question_column, image_column, id_column, category_column, description_column)


def _generate_config(protocol: ProtocolArg) -> GenerateConfig:
    if protocol == "seed":
        # inspect has no repetition-penalty field; OpenAI-compatible servers (vLLM) and em-hf read it from extra_body
        return GenerateConfig(temperature=SEED_TEMPERATURE, top_p=SEED_TOP_P, top_k=SEED_TOP_K,
                              max_tokens=SEED_MAX_TOKENS, extra_body={"repetition_penalty": SEED_REPETITION_PENALTY})
    return GenerateConfig(temperature=DEFAULT_TEMPERATURE, max_tokens=DEFAULT_MAX_TOKENS)


def _judges(judges: str | Sequence[str] | None, protocol: ProtocolArg) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(split_names(judges) or DEFAULT_JUDGES[protocol]))
    unknown = [name for name in names if name not in JUDGES]
    if unknown:
        raise ValueError(f"judges: unknown {', '.join(map(repr, unknown))}; choose from {', '.join(JUDGES)} "
                         "(comma-separated, e.g. -T judges=alignment,comparative)")
    return names
