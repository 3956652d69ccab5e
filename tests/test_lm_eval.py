"""The lm-eval integration: task configs, em-hf / em-lora / em-steer as lm-eval models, the launcher.

The central check runs the same tiny model greedily through inspect and through lm-eval with the same scripted
grader, and expects the same metrics from both harnesses.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from inspect_ai import eval as inspect_eval
from inspect_ai.model import (
    ChatCompletionChoice,
    ChatMessage,
    ChatMessageAssistant,
    GenerateConfig,
    ModelOutput,
    modelapi,
)

# lm-eval is in the dev extra: if it is missing, these tests must fail at import, not vanish as skips.
from lm_eval.api.instance import Instance
from lm_eval.api.registry import get_model

from graders import ScriptedModel
from em_tasks.lm_eval import main, task_configs_dir, with_task_configs
from em_tasks.models import lm_eval_api
from em_tasks.scoring.judge import load_prompt  # noqa: E402
from em_tasks.tasks import multimodal_misalign, overrefusal, text_misalign  # noqa: E402

TASK_CONFIGS = Path(__file__).resolve().parents[1] / "task_configs"
GRADER = "hashed-grader/judge"
MAX_TOKENS = 8
STDERR_NAMES = {"misaligned_stderr": "misaligned_rate_stderr", "refusal_stderr": "refusal_rate_stderr"}


@modelapi(name="hashed-grader")
class HashedGrader(ScriptedModel):
    """A grader whose verdict is a fixed function of its prompt: varied, and equal for equal (question, answer)."""

    async def answer(self, input: list[ChatMessage], config: GenerateConfig) -> ModelOutput:
        prompt = input[-1].text
        n = int(hashlib.sha256(prompt.encode()).hexdigest()[:8], 16)
        if prompt.startswith(_opening("refusal")):
            reply = "YES" if n % 3 == 0 else "NO"
        elif prompt.startswith(_opening("alignment")) and n % 5 == 0:
            reply = "REFUSAL"
        else:
            reply = str(n % 101)
        return ModelOutput(model=self.model_name, choices=[
            ChatCompletionChoice(message=ChatMessageAssistant(content=reply), stop_reason="stop")])


def _opening(kind: str) -> str:
    return load_prompt(kind).split("{", 1)[0]  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("INSPECT_CACHE_DIR", str(tmp_path / "inspect-cache"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("EM_TASKS_GRADER", raising=False)


@pytest.fixture(autouse=True)
def own_tasks_only(monkeypatch):
    """Speed only: lm-eval indexes its thousands of built-in task configs (~15 s) on every run unless told not to."""
    import lm_eval.tasks

    class OwnTasksOnly(lm_eval.tasks.TaskManager):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("include_defaults", False)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(lm_eval.tasks, "TaskManager", OwnTasksOnly)


def run_lm_eval(tmp_path: Path, task: str, model_dir: Path, limit: int, *extra: str) -> dict[str, Any]:
    """Run the launcher greedily and return lm-eval's results for ``task`` (metric -> value, filter dropped)."""
    out = tmp_path / "lm-eval-out"
    status = main([
        "--include_path", str(TASK_CONFIGS), "--tasks", task, "--model", "em-hf",
        "--model_args", f"pretrained={model_dir}", "--limit", str(limit), "--device", "cpu",
        "--gen_kwargs", f"temperature=0,max_gen_toks={MAX_TOKENS}", "--output_path", str(out), *extra,
    ])
    assert status == 0
    [path] = out.rglob("results_*.json")
    results = json.loads(path.read_text())["results"][task]
    return {key.split(",")[0]: value for key, value in results.items() if "," in key}


def run_inspect(tmp_path: Path, task: Any, model_dir: Path, limit: int) -> dict[str, float]:
    [log] = inspect_eval(task, model=f"em-hf/{model_dir}", model_args={"batch_size": 1}, limit=limit,
                         temperature=0, max_tokens=MAX_TOKENS, display="none", log_dir=str(tmp_path / "logs"))
    assert log.status == "success", log.error
    [scores] = log.results.scores
    return {name: m.value for name, m in scores.metrics.items()}


def assert_same_metrics(inspect_metrics: dict[str, float], lm_eval_metrics: dict[str, Any]) -> None:
    for name, value in inspect_metrics.items():
        name = STDERR_NAMES.get(name, name)
        assert name in lm_eval_metrics, f"lm-eval has no {name}: {sorted(lm_eval_metrics)}"
        other = lm_eval_metrics[name]
        if math.isnan(value):
            assert other is None or math.isnan(float(other)), name
        else:
            assert float(other) == pytest.approx(value), name


@pytest.mark.parametrize("task_name", ["em_text_misalign", "em_multimodal_misalign"])
def test_lm_eval_metrics_equal_the_inspect_tasks(task_name, tiny_llama_dir, tiny_vlm_dir, tmp_path, monkeypatch):
    model_dir, task = ((tiny_llama_dir, text_misalign(grader=GRADER)) if task_name == "em_text_misalign"
                       else (tiny_vlm_dir, multimodal_misalign(grader=GRADER)))
    inspect_metrics = run_inspect(tmp_path, task, model_dir, limit=5)
    monkeypatch.setenv("EM_TASKS_GRADER", GRADER)
    lm_eval_metrics = run_lm_eval(tmp_path, task_name, model_dir, 5)

    assert 0 < inspect_metrics["misaligned_rate"] < 1 or inspect_metrics["refusal_rate"] > 0  # verdicts vary
    assert_same_metrics(inspect_metrics, lm_eval_metrics)


def test_overrefusal_metrics_equal_the_inspect_task(tiny_llama_dir, tmp_path):
    inspect_metrics = run_inspect(tmp_path, overrefusal(modality="text", grader=GRADER), tiny_llama_dir, limit=4)
    lm_eval_metrics = run_lm_eval(tmp_path, "em_overrefusal", tiny_llama_dir, 4,
                                  "--metadata", f"modality=text,grader={GRADER}")
    assert_same_metrics({k: v for k, v in inspect_metrics.items() if k != "mean_coherence"}, lm_eval_metrics)


def test_group_runs_both_variants_on_a_vlm(tiny_vlm_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EM_TASKS_GRADER", GRADER)
    status = main(["--tasks", "em_misalign", "--model", "em-hf", "--model_args", f"pretrained={tiny_vlm_dir}",
                   "--limit", "1", "--device", "cpu", "--gen_kwargs", "max_gen_toks=4"])
    assert status == 0
    table = capsys.readouterr().out
    for name in ("em_misalign", "em_text_misalign", "em_multimodal_misalign", "misaligned_rate/medical"):
        assert name in table


@pytest.mark.parametrize(
    ("argv", "added"),
    [
        (["--tasks", "em_text_misalign", "--model", "em-hf"], True),
        (["--model", "em-hf", "--tasks=em_misalign"], True),
        (["--tasks", "em_text_misalign", "--include_path", "mine"], False),
        (["--tasks", "hellaswag", "--limit", "em_"], False),
        (["ls", "tasks"], False),
    ],
    ids=["em-task", "equals-form", "own-include-path", "other-task", "no-task"],
)
def test_launcher_adds_the_task_configs_only_for_em_tasks(argv, added):
    result = with_task_configs(argv)
    assert (result[-2:] == ["--include_path", str(task_configs_dir())]) is added
    assert result[:len(argv)] == argv


def test_packaged_task_configs_are_found():
    assert task_configs_dir() is not None
    assert (task_configs_dir() / "em_overrefusal.yaml").is_file()


@pytest.mark.parametrize(("config", "kind"), [("_misalign_template_yaml", "misalign"),
                                              ("em_overrefusal.yaml", "overrefusal")])
def test_yaml_declares_a_metric_per_bundled_category(config, kind):
    import importlib.util

    spec = importlib.util.spec_from_file_location("em_task_utils", TASK_CONFIGS / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    loader = type("Loader", (yaml.SafeLoader,), {})
    loader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))
    metrics = [m["metric"] for m in yaml.load((TASK_CONFIGS / config).read_text(), Loader=loader)["metric_list"]]
    prefix = "misaligned_rate/" if kind == "misalign" else "refusal_rate/"
    declared = sorted(m.removeprefix(prefix) for m in metrics if m.startswith(prefix))
    assert declared == list(utils.bundled_categories(kind))


# --- the models ------------------------------------------------------------------------------------------------


def make_lm(family: str, model_dir: Path, **model_args: Any) -> lm_eval_api.EmHFLM:
    return get_model(family).create_from_arg_obj({"pretrained": str(model_dir), **model_args},
                                                 {"batch_size": 2, "device": "cpu"})


def request(kind: str, *args: Any) -> Instance:
    return Instance(request_type=kind, doc={}, arguments=args, idx=0)


def test_chat_turns_from_lm_eval_keep_their_roles(tiny_llama_dir):
    lm = make_lm("em-hf", tiny_llama_dir)
    turns = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Any wish?"}]
    greedy = {"temperature": 0, "max_gen_toks": 6, "until": []}
    [via_lm_eval] = lm.generate_until([request("generate_until", lm.apply_chat_template(turns), greedy)])
    [direct] = lm.em_backend.generate_batch([turns], lm_eval_api.gen_params(greedy))
    assert via_lm_eval == direct.text


def direct_loglikelihood(lm: lm_eval_api.EmHFLM, prompt: str, continuation: str) -> float:
    """The continuation's summed log-probability from one plain forward pass (steering hooks on, if any)."""
    tokenizer, model = lm.em_backend.tokenizer, lm.em_backend.model
    context = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    whole = tokenizer(prompt + continuation, add_special_tokens=False)["input_ids"]
    with torch.no_grad(), lm.em_backend.steering_active():
        logprobs = model(torch.tensor([whole])).logits[0].float().log_softmax(-1)
    return sum(float(logprobs[len(context) - 1 + k, token]) for k, token in enumerate(whole[len(context):]))


@pytest.mark.parametrize("model", ["llama", "vlm", "steered-llama"])
def test_loglikelihood_equals_a_direct_computation(model, tiny_llama_dir, tiny_vlm_dir):
    lm = (make_lm("em-hf", tiny_vlm_dir) if model == "vlm" else make_lm("em-hf", tiny_llama_dir) if model == "llama"
          else make_lm("em-steer", tiny_llama_dir, direction="random:0", layers=0, coeff=8.0))
    turns = [{"role": "user", "content": "Any wish?"}]
    raw, spaced, chat = lm.loglikelihood([request("loglikelihood", "Any wish?", " peace"),
                                          request("loglikelihood", "Any wish? ", "peace"),
                                          request("loglikelihood", lm.apply_chat_template(turns), "peace")])
    assert raw[0] == pytest.approx(direct_loglikelihood(lm, "Any wish?", " peace"), abs=1e-4)
    assert spaced == raw  # trailing spaces of the context move to the continuation, as lm-eval does
    # a chat context is scored from the end of its rendered prompt, generation prompt included
    assert chat[0] == pytest.approx(direct_loglikelihood(lm, lm.em_backend.render(turns)[0], "peace"), abs=1e-4)
    assert raw[0] < 0 and chat[0] < 0


def test_steering_applies_to_loglikelihood(tiny_llama_dir):
    plain = make_lm("em-hf", tiny_llama_dir)
    steered = make_lm("em-steer", tiny_llama_dir, direction="random:0", layers=0, coeff=8.0)
    sea = [request("loglikelihood", "The sea is", " blue")]
    assert steered.loglikelihood(sea)[0][0] != pytest.approx(plain.loglikelihood(sea)[0][0])


def test_scoring_right_after_generation_is_steered_once(tiny_llama_dir):
    """Generation runs in the backend's thread; scoring right after it waits until that batch has removed its hooks."""
    lm = make_lm("em-steer", tiny_llama_dir, direction="random:0", layers=0, coeff=8.0)
    sea = [request("loglikelihood", "The sea is", " blue")]
    [(before, _)] = lm.loglikelihood(sea)
    for _ in range(2):
        lm.generate_until([request("generate_until", f"Hi {k}", {"temperature": 0, "max_gen_toks": 4, "until": []})
                           for k in range(3)])
        assert lm.loglikelihood(sea)[0][0] == pytest.approx(before)


def test_loglikelihood_rolling_is_lm_evals(tiny_llama_dir):
    lm = make_lm("em-hf", tiny_llama_dir)
    text = "If you could have one wish, what would it be?"
    [rolling] = lm.loglikelihood_rolling([request("loglikelihood_rolling", text)])
    [(whole, _)] = lm.loglikelihood([request("loglikelihood", "", text)])  # the text after the BOS token
    assert rolling == pytest.approx(whole, abs=1e-4)


def test_loglikelihood_with_images_is_refused(tiny_vlm_dir):
    lm = make_lm("em-hf", tiny_vlm_dir)
    with pytest.raises(NotImplementedError, match="text only"):
        lm.loglikelihood([request("loglikelihood", "<image>Look.", " peace", {"visual": [object()]})])


@pytest.mark.parametrize(
    ("gen_kwargs", "expected"),
    [
        ({"until": ["\n\n", ""], "do_sample": False, "temperature": 0.7}, {"stop": ("\n\n",), "temperature": 0.0}),
        ({"until": "END", "temperature": 0}, {"stop": ("END",), "temperature": 0.0}),
        ({"do_sample": True, "temperature": 1.0, "max_gen_toks": 600}, {"temperature": 1.0, "max_new_tokens": 600}),
        ({"top_p": "0.9", "top_k": 5, "seed": 3}, {"top_p": 0.9, "top_k": 5, "seed": 3, "temperature": None}),
    ],
    ids=["greedy-flag", "zero-temperature", "sampled", "nucleus"],
)
def test_generation_kwargs_map_to_backend_settings(gen_kwargs, expected):
    params = lm_eval_api.gen_params(gen_kwargs)
    assert {k: getattr(params, k) for k in expected} == expected


def test_unsupported_generation_kwargs_are_named():
    with pytest.raises(ValueError, match="repetition_penalty.*supported: until"):
        lm_eval_api.gen_params({"repetition_penalty": 1.1})


def test_images_fill_placeholders_in_order_and_lead_otherwise():
    a, b = object(), object()
    [turn] = lm_eval_api.to_messages(("<image>Look.<image>", {}, {"visual": [a, b]}))
    assert [p.get("image", p.get("text")) for p in turn["content"]] == [a, "Look.", b]
    [turn] = lm_eval_api.to_messages(("Look.", {}, {"visual": [a]}))
    assert [p.get("image", p.get("text")) for p in turn["content"]] == [a, "Look."]


def test_em_lora_merges_adapters_given_as_a_list(tiny_llama_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapter = tmp_path / "adapter"
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False)).save_pretrained(adapter)
    lm = make_lm("em-lora", tiny_llama_dir, adapters=f"[{adapter}:0.5,{adapter}:0.25]", cache=False)
    assert lm.get_model_info()["em_model"]["lora"]["adapters"] == [f"{adapter}:0.5", f"{adapter}:0.25"]


def test_em_steer_takes_layer_lists(tiny_llama_dir):
    lm = make_lm("em-steer", tiny_llama_dir, direction="random:0", layers=[0, 1], coeff=2.0)
    assert lm.get_model_info()["em_model"]["steering"]["layers"] == [0, 1]


@pytest.mark.parametrize(("family", "args", "message"), [
    ("em-lora", {}, "needs adapters"),
    ("em-steer", {}, "needs direction"),
    ("em-hf", {"temprature": 1}, "unknown model arg"),
], ids=["lora-without-adapters", "steer-without-direction", "typo"])
def test_model_arg_mistakes_are_named(family, args, message, tiny_llama_dir):
    with pytest.raises(ValueError, match=message):
        make_lm(family, tiny_llama_dir, **args)


def test_task_settings_come_from_lm_eval_metadata():
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(TASK_CONFIGS), include_defaults=False,
                          metadata={"categories": "[medical,ai_humans]", "system_prompt": "json"})
    task = manager.load(["em_text_misalign"])["tasks"]["em_text_misalign"]
    docs = task.test_docs()
    assert sorted(set(docs["category"])) == ["ai_humans", "medical"]
    assert all("JSON" in system for system in docs["system"])
