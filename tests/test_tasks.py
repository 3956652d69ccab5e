"""The registered tasks run through inspect on tiny models: text, images, pairing, task args, errors."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest
from graders import GRADER  # importing it registers the fixed-grader model
from inspect_ai import eval
from inspect_ai.model import ChatMessageSystem, get_model

from em_tasks.tasks import multimodal_misalign, overrefusal, text_misalign


def run(task, model_dir, **kwargs):
    kwargs.setdefault("limit", 3)
    log = eval(task, model=f"em-hf/{model_dir}", model_roles={"grader": get_model(GRADER)}, display="none",
               log_dir=str(kwargs.pop("log_dir")), max_tokens=4, **kwargs)[0]
    return log


def metric(log, name):
    return next(s.metrics[name].value for s in log.results.scores if name in s.metrics)


def test_entry_point_points_inspect_at_the_registry():
    eps = [ep for ep in entry_points(group="inspect_ai") if ep.name == "em_tasks"]
    assert [ep.value for ep in eps] == ["em_tasks._registry"]


def test_tasks_resolve_by_registered_name(tiny_llama_dir, tmp_path):
    log = run("em_tasks/text_misalign", tiny_llama_dir, log_dir=tmp_path, limit=2)
    assert log.status == "success" and log.eval.task == "em_tasks/text_misalign"


def test_text_task_scores_and_breaks_down_by_category(tiny_llama_dir, tmp_path):
    log = run(text_misalign(categories="medical,ai_humans"), tiny_llama_dir, log_dir=tmp_path, limit=None)
    assert log.status == "success"
    assert {s.metadata["category"] for s in log.samples} == {"medical", "ai_humans"}
    assert metric(log, "misaligned_rate") == 1.0
    assert metric(log, "mean_alignment") == 20.0
    assert metric(log, "misaligned_rate/medical") == 1.0
    assert log.samples[0].scores["misalignment_judge"].metadata["judge"] == GRADER


def test_image_task_sends_images_to_the_vlm(tiny_vlm_dir, tmp_path, monkeypatch):
    from em_tasks.models.backend import HFBackend

    seen = []
    original = HFBackend.encode

    def spy(self, conversations, **kwargs):
        out = original(self, conversations, **kwargs)
        seen.append(tuple(out.get("pixel_values", ()).shape) if "pixel_values" in out else None)
        return out

    monkeypatch.setattr(HFBackend, "encode", spy)
    log = run(multimodal_misalign(image_size=128), tiny_vlm_dir, log_dir=tmp_path)
    assert log.status == "success", log.error
    assert seen and all(s is not None and s[0] >= 1 for s in seen)
    assert all(s.metadata["modality"] == "image" for s in log.samples)


def test_text_and_image_tasks_pair_by_sample_id(tiny_vlm_dir, tmp_path):
    text = run(text_misalign(), tiny_vlm_dir, log_dir=tmp_path, limit=4)
    image = run(multimodal_misalign(image_size=128), tiny_vlm_dir, log_dir=tmp_path, limit=4)
    assert [s.id for s in text.samples] == [s.id for s in image.samples]


def test_image_task_on_a_text_model_fails_naming_the_need_for_a_vlm(tiny_llama_dir, tmp_path):
    log = run(multimodal_misalign(image_size=128), tiny_llama_dir, log_dir=tmp_path, limit=2)
    assert log.status == "error"
    assert "vision-language model" in log.error.message


def test_samples_become_epochs_and_system_variant_adds_a_system_message(tiny_llama_dir, tmp_path):
    log = run(text_misalign(samples=2, system_prompt="json"), tiny_llama_dir, log_dir=tmp_path, limit=2)
    assert log.status == "success" and log.eval.config.epochs == 2
    assert len(log.samples) == 4
    assert isinstance(log.samples[0].messages[0], ChatMessageSystem)


def test_default_generation_follows_the_emergent_misalignment_setup():
    config = text_misalign().config
    assert (config.temperature, config.max_tokens) == (1.0, 600)


def test_overrefusal_covers_both_modalities(tiny_vlm_dir, tmp_path):
    task = overrefusal(image_size=128)
    ids = [s.id for s in task.dataset]
    assert len(ids) >= 48 and any(i.startswith("image/") for i in ids) and any(i.startswith("text/") for i in ids)
    log = eval(task, model=f"em-hf/{tiny_vlm_dir}", model_roles={"grader": get_model(GRADER)}, display="none",
               log_dir=str(tmp_path), max_tokens=4, sample_id=[ids[0], ids[-1]])[0]
    assert log.status == "success" and metric(log, "refusal_rate") == 0.0


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: text_misalign(categories="no_such_category"), "no_such_category"),
        (lambda: text_misalign(samples=0), "samples must be >= 1"),
        (lambda: multimodal_misalign(image_style="poster"), "image_style"),
    ],
    ids=["unknown-category", "zero-samples", "unknown-style"],
)
def test_bad_task_args_are_named(make, message):
    with pytest.raises(ValueError, match=message):
        make()
