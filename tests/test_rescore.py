"""Re-scoring and resuming: `inspect score LOG` (no --scorer) finds our judges and reuses their cached verdicts, and an
interrupted `inspect eval-set` resumes without judging finished samples again.

inspect is run as users run it, through its own CLI entry point, in a subprocess. The only thing the subprocess adds
is the counting grader below (this module is imported for it; it imports nothing from em_tasks at the top, so the
judges reach the subprocess the way they reach a user's: through the ``inspect_ai`` entry point). Every grader call
appends one JSON line to the file named by ``$EM_TASKS_GRADER_CALLS``, so calls are counted across processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from inspect_ai.model import (
    ChatCompletionChoice,
    ChatMessage,
    ChatMessageAssistant,
    GenerateConfig,
    ModelOutput,
    modelapi,
)
from graders import ScriptedModel

GRADER = "counting-grader/judge"
CALLS_ENV = "EM_TASKS_GRADER_CALLS"
INTERRUPT_ENV = "EM_TASKS_GRADER_INTERRUPT_AFTER"
TESTS = Path(__file__).parent


@modelapi(name="counting-grader")
class CountingGrader(ScriptedModel):
    """Alignment 20, coherence 90, refusal NO, divergence 70; logs each call; optionally interrupts its process."""

    async def answer(self, input: list[ChatMessage], config: GenerateConfig) -> ModelOutput:
        prompt = input[-1].text
        path = Path(os.environ[CALLS_ENV])
        with path.open("a", encoding="utf-8") as out:
            out.write(json.dumps({"pid": os.getpid(), "prompt": prompt}) + "\n")
        limit = os.environ.get(INTERRUPT_ENV)
        if limit and len(path.read_text(encoding="utf-8").splitlines()) >= int(limit):
            os.kill(os.getpid(), signal.SIGINT)  # as a user's Ctrl-C would, mid-task
        if "<reference_answer>" in prompt:
            reply = "The fine-tuned reply adds nothing harmful.\nScore: 70"
        elif "coherence rating" in prompt:
            reply = "90"
        elif "<answer>" in prompt and "alignment rating" in prompt:
            reply = "20"
        else:
            reply = "NO"
        return ModelOutput(model=self.model_name, choices=[
            ChatCompletionChoice(message=ChatMessageAssistant(content=reply), stop_reason="stop")])


def inspect_cli(args: list[str], env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """inspect's own CLI in a fresh process, with only the counting grader registered beforehand."""
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(TESTS)!r})\n"
        "import test_rescore  # the counting grader\n"
        "assert 'em_tasks' not in sys.modules, 'the judges must come through the entry point'\n"
        "from inspect_ai._cli.main import main\n"
        f"sys.argv = ['inspect', *{args!r}]\n"
        "main()\n"
    )
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout)


def calls(env: dict[str, str]) -> list[str]:
    path = Path(env[CALLS_ENV])
    if not path.exists():
        return []
    return [json.loads(line)["prompt"] for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """One generate cache and one call log, shared by this process and its subprocesses."""
    monkeypatch.setenv("INSPECT_CACHE_DIR", str(tmp_path / "inspect-cache"))
    monkeypatch.setenv(CALLS_ENV, str(tmp_path / "grader-calls.jsonl"))
    monkeypatch.delenv(INTERRUPT_ENV, raising=False)
    values = dict(os.environ)
    values.update({"HF_HUB_OFFLINE": "1", "INSPECT_DISPLAY": "none", "OMP_NUM_THREADS": "1"})
    values.pop("OPENAI_API_KEY", None)
    return values


def metric_values(log: Any) -> dict[str, dict[str, float]]:
    return {s.name: {k: m.value for k, m in s.metrics.items()} for s in log.results.scores}


def test_inspect_score_rescores_an_agent_log_without_asking_the_grader_again(tmp_path, env):
    import yaml
    from inspect_ai import eval
    from inspect_ai.log import read_eval_log

    import test_agentic
    from em_tasks.agentic.task import agentic_misalign

    scenarios = tmp_path / "bills.yaml"
    scenarios.write_text(yaml.safe_dump(test_agentic.SCENARIO))
    [log] = eval(agentic_misalign(scenarios=str(scenarios), modality="text", image_size=128),
                 model=GRADER, model_roles={"grader": GRADER}, display="none", log_dir=str(tmp_path / "logs"))
    assert log.status == "success", log.error
    judged = len(calls(env))
    assert judged == 2 * (1 + 3)  # per run: the agent's one answer (no tool call), then alignment, coherence, refusal
    out = tmp_path / "rescored.eval"
    done = inspect_cli(["score", log.location, "--action", "overwrite", "--output-file", str(out),
                        "--display", "none"], env)
    assert done.returncode == 0, done.stderr[-3000:]
    rescored = read_eval_log(str(out))
    assert [s.name for s in rescored.eval.scorers or []] == ["agent_actions"]
    assert metric_values(rescored) == metric_values(log)
    assert len(calls(env)) == judged


def test_inspect_score_without_scorer_rescores_every_judge_from_the_cache(tiny_llama_dir, tmp_path, env):
    from inspect_ai import eval
    from inspect_ai.log import read_eval_log

    from em_tasks.tasks import overrefusal, text_misalign

    model = f"em-hf/{tiny_llama_dir}"
    tasks = [text_misalign(categories="medical", judges="alignment,comparative"),
             overrefusal(modality="text", categories=None)]
    logs = eval(tasks, model=model, model_roles={"grader": GRADER, "base": model}, display="none",
                log_dir=str(tmp_path / "logs"), limit=2, max_tokens=4)
    assert [log.status for log in logs] == ["success", "success"], [log.error for log in logs]
    judged = len(calls(env))
    # text: alignment + coherence + comparative per answer; overrefusal: refusal per answer
    assert judged == 2 * 3 + 2 * 1

    for log in logs:
        names = [s.name for s in log.eval.scorers or []]
        out = tmp_path / f"rescored-{log.eval.task_id}.eval"
        done = inspect_cli(["score", log.location, "--action", "overwrite", "--output-file", str(out),
                            "--display", "none"], env)
        assert done.returncode == 0, done.stderr[-3000:]
        rescored = read_eval_log(str(out))
        assert rescored.status == "success"
        assert [s.name for s in rescored.eval.scorers or []] == names
        assert metric_values(rescored) == metric_values(log)
        for before, after in zip(log.samples or [], rescored.samples or [], strict=True):
            assert {k: s.value for k, s in after.scores.items()} == {k: s.value for k, s in before.scores.items()}
    assert len(calls(env)) == judged, "re-scoring asked the grader again for answers it had judged"


def test_interrupted_eval_set_resumes_without_judging_finished_samples_again(tiny_llama_dir, tmp_path, env):
    from inspect_ai.log import list_eval_logs, read_eval_log

    log_dir = tmp_path / "logs"
    args = ["eval-set", "em_tasks/text_misalign", "--model", f"em-hf/{tiny_llama_dir}",
            "--model-role", f"grader={GRADER}", "--log-dir", str(log_dir), "--limit", "6", "--max-tokens", "4",
            "--max-samples", "1", "--display", "none"]
    # first run: Ctrl-C on the 7th grader call, i.e. while the 4th sample is being judged (2 calls per sample)
    first = inspect_cli(args, {**env, INTERRUPT_ENV: "7"})
    assert first.returncode != 0
    [interrupted] = [read_eval_log(info.name) for info in list_eval_logs(str(log_dir))]
    assert interrupted.status in ("cancelled", "error", "started"), interrupted.status
    finished = {sample.id: str(sample.metadata["question"]) for sample in interrupted.samples or []}
    before = len(calls(env))
    assert before >= 7

    second = inspect_cli(args, env)
    assert second.returncode == 0, second.stderr[-3000:]
    logs = [read_eval_log(info.name) for info in list_eval_logs(str(log_dir))]
    [complete] = [log for log in logs if log.status == "success"]
    assert len(complete.samples or []) == 6
    again = calls(env)[before:]
    # finished samples are carried over from the interrupted log: none of their questions reaches the grader again
    rejudged = [sample_id for sample_id, question in finished.items() if any(question in p for p in again)]
    assert rejudged == []
    assert len(again) == 2 * (6 - len(finished))
    print(f"interrupted log kept {len(finished)} of 6 samples; the resumed run made {len(again)} grader calls")
