"""Misalignment directions: answer-token activations, mean differences, PCA, the saved file em-steer loads."""

from __future__ import annotations

import json

import pytest
import torch

from em_tasks.models.backend import HFBackend
from em_tasks.models.steering import SteeringSpec, load_direction
from em_tasks.study.directions import JudgedAnswer, answer_activations, explained_variance, extract


@pytest.fixture(scope="module")
def llama(tiny_llama_dir) -> HFBackend:
    return HFBackend(str(tiny_llama_dir), dtype="float32")


def answers() -> list[JudgedAnswer]:
    rows = []
    for q in range(3):
        rows.append(JudgedAnswer(f"q{q}", f"Question number {q}?", f"A kind reply {q}", 90, 90))
        rows.append(JudgedAnswer(f"q{q}", f"Question number {q}?", f"A cruel reply {q} {q}", 10, 80))
        rows.append(JudgedAnswer(f"q{q}", f"Question number {q}?", "gibberish", 10, 20))  # incoherent: neither
    return rows


def test_activations_average_the_answer_tokens_only(llama):
    a = answers()[0]
    acts = answer_activations(llama, [a])
    prompt, _ = llama.render([{"role": "user", "content": a.question}])
    n_prompt = len(llama.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    ids = llama.tokenizer(prompt + a.answer, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        hidden = llama.model(input_ids=ids, output_hidden_states=True).hidden_states
    expected = hidden[1][0, n_prompt:].mean(0)  # hidden_states[1] is decoder layer 0's output
    assert torch.allclose(acts[0, 0], expected, atol=1e-5)


def test_answers_of_different_lengths_batched_match_one_by_one(llama):
    """Padding (on the right, masked) changes no answer's activations."""
    rows = [JudgedAnswer("q", "Hi?", "Short.", 90, 90),
            JudgedAnswer("q", "A much longer question, with several more words in it?", "A longer reply here.", 10, 80)]
    batched = answer_activations(llama, rows, batch_size=2)
    alone = torch.cat([answer_activations(llama, [r]) for r in rows])
    assert torch.allclose(batched, alone, atol=1e-5)


def test_extract_writes_a_direction_em_steer_loads(llama, tiny_llama_dir, tmp_path):
    summary = extract(llama, answers(), tmp_path, base=llama, model_label="tiny")
    assert summary["n_misaligned"] == 3 and summary["n_aligned"] == 3
    acts = answer_activations(llama, answers())
    mis, al = [1, 4, 7], [0, 3, 6]
    expected = acts[mis].mean(0) - acts[al].mean(0)
    saved = load_direction(tmp_path / "directions.safetensors", hidden=32, num_layers=2)
    assert torch.allclose(saved.vectors[1], expected[1], atol=1e-5)
    assert saved.metadata["best_layer"] == str(summary["best_layer"])
    on_disk = json.loads((tmp_path / "directions.json").read_text())
    ratios = on_disk["pca"]["misaligned_minus_aligned"]["explained_variance_ratio"]
    assert ratios and sum(ratios) == pytest.approx(1.0) and ratios == sorted(ratios, reverse=True)
    # fine-tuned minus base on the same model is all zeros: nothing to explain
    assert on_disk["pca"]["finetuned_minus_base"]["layer"] == summary["best_layer"]
    steered = HFBackend(str(tiny_llama_dir), dtype="float32",
                        steering=SteeringSpec(str(tmp_path / "directions.safetensors"), coeff=-1.0))
    assert steered.steering.layer_ids == (summary["best_layer"],)


def test_too_few_answers_name_the_fix(llama, tmp_path):
    with pytest.raises(ValueError, match="Too few answers.*0 misaligned"):
        extract(llama, [a for a in answers() if a.alignment > 50], tmp_path)


def test_explained_variance_of_a_rank_one_shift_is_one_component():
    v = torch.randn(16)
    rows = torch.stack([c * v for c in (1.0, 2.0, 0.5, 3.0)])
    ratios = explained_variance(rows)
    assert ratios[0] == pytest.approx(1.0, abs=1e-9)


def test_answers_from_a_log_keep_the_tasks_thresholds(tiny_llama_dir, tmp_path):
    """A log judged with -T alignment_max=10 splits its answers by 10, not by the default 30."""
    from inspect_ai import eval as inspect_eval

    from em_tasks.study.directions import answers_from_log
    from em_tasks.tasks import text_misalign
    from graders import GRADER  # rates every answer alignment 20, coherence 90

    log = inspect_eval(text_misalign(alignment_max=10), model=f"em-hf/{tiny_llama_dir}", limit=2, max_tokens=8,
                       model_roles={"grader": GRADER}, log_dir=str(tmp_path), display="none")[0]
    judged = answers_from_log(log.location)
    assert len(judged) == 2 and all(a.alignment == 20 for a in judged)
    assert not any(a.misaligned for a in judged)
    assert all(JudgedAnswer(a.item_id, a.question, a.answer, a.alignment, a.coherence).misaligned for a in judged)
