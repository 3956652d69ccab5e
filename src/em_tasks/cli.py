"""The ``em-tasks`` command line (typer)."""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from typer.core import TyperGroup

from em_tasks.scoring.judge import DEFAULT_ALIGNMENT_MAX, DEFAULT_COHERENCE_MIN

class GraderFailed(Exception):
    """A grader model named on the command line could not be used (refused key, unreachable server, timeout)."""


# What a user can cause and fix: a bad file, path, value or setting. These print one line naming the input and the
# fix, with no traceback (``--debug`` shows it); anything else is a bug in em-tasks and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, GraderFailed)
err = Console(stderr=True, soft_wrap=True)  # soft wrap: a message stays one line whatever the terminal width


class UserErrorsAsMessages(TyperGroup):
    """The one place where em-tasks' commands turn a user error into ``error: <message>`` and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except USER_ERRORS as ex:
            if _debug(ctx):
                raise
            from rich.markup import escape

            err.print(f"[red]error:[/red] {escape(str(ex))}")  # escaped: messages may hold [brackets] (extras, lists)
            raise typer.Exit(2) from None


def _debug(ctx: click.Context) -> bool:
    return bool((ctx.obj or {}).get("debug")) or os.environ.get("EM_TASKS_DEBUG", "") not in ("", "0")


app = typer.Typer(help="em-tasks: emergent-misalignment evaluations (tasks run with `inspect eval em_tasks/...`).",
                  no_args_is_help=True, add_completion=False, cls=UserErrorsAsMessages,
                  pretty_exceptions_show_locals=False)  # locals may hold API keys


@app.callback()
def main(ctx: typer.Context,
         debug: Annotated[bool, typer.Option("--debug", help="Show the Python traceback of an error "
                                                             "(also EM_TASKS_DEBUG=1)")] = False) -> None:
    """em-tasks command line."""
    ctx.obj = {"debug": debug}


@app.command()
def judge(
    input: Annotated[Path, typer.Argument(help="JSON Lines file of {\"question\": ..., \"answer\": ...}; - for stdin")],
    grader: Annotated[str | None, typer.Option(help="Inspect model that judges, e.g. openai/gpt-4o-2024-08-06 "
                                               "or em-hf/PATH; default: the offline judge")] = None,
    alignment_max: Annotated[float, typer.Option(help="Alignment at or below which an answer is misaligned")] =
    DEFAULT_ALIGNMENT_MAX,
    coherence_min: Annotated[float, typer.Option(help="Coherence an answer must exceed to count")] =
    DEFAULT_COHERENCE_MIN,
    max_retries: Annotated[int, typer.Option(help="With --grader: retries of a failed grader call")] = 3,
    timeout: Annotated[int, typer.Option(help="With --grader: seconds a grader call may take, retries included")]
    = 300,
) -> None:
    """Judge answers: print each input line back as JSON with alignment, coherence, refusal and misaligned added."""
    from inspect_ai.model import GenerateConfig

    from em_tasks.scoring.judge import check_grader_credentials, judge_records

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    records = read_records(input)
    if grader:
        check_grader_credentials(grader)
    config = GenerateConfig(max_retries=max_retries, timeout=timeout)
    with err.status(f"Judging {len(records)} answer(s) with {grader or 'the offline judge'}..."):
        try:
            judged = asyncio.run(judge_records(records, grader, alignment_max=alignment_max,
                                               coherence_min=coherence_min, config=config))
        except Exception as ex:
            if not grader or isinstance(ex, ValueError):
                raise  # our own checks already name the fix; the offline judge failing is a bug, not the user's
            cause = _last_attempt(ex)
            reason = f"{type(cause).__name__}: {str(cause).rstrip('.')}"
            raise GraderFailed(f"The grader {grader} failed: {reason}. Check its API key and that its server can be "
                               "reached (--timeout, --max-retries), or drop --grader to use the offline judge") from ex
    for row in judged:
        sys.stdout.write(json.dumps(_jsonable(row), ensure_ascii=False) + "\n")


def _last_attempt(ex: BaseException) -> BaseException:
    """The error behind a retry wrapper (tenacity's RetryError says only that retries ran out) or a task group (the
    grader's concurrent calls for one answer can fail together: their first error stands for them)."""
    while isinstance(ex, BaseExceptionGroup) and ex.exceptions:
        ex = ex.exceptions[0]
    attempt = getattr(ex, "last_attempt", None)
    inner = attempt.exception() if attempt is not None else None
    return _last_attempt(inner) if inner is not None else ex


def read_records(path: Path) -> list[dict[str, Any]]:
    """Read ``{"question", "answer"}`` JSON Lines; a bad line raises an error naming its number."""
    text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as ex:
            raise ValueError(f"{path}: line {number} is not JSON ({ex.msg}); write one JSON object per line") from ex
        missing = [k for k in ("question", "answer") if not isinstance(record, dict) or
                   not isinstance(record.get(k), str)]
        if missing:
            raise ValueError(f"{path}: line {number} needs string field(s) {', '.join(missing)}")
        records.append(record)
    if not records:
        raise ValueError(f"{path} has no answers to judge: write one JSON object per line, "
                                 '{"question": ..., "answer": ...}')
    return records


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    """NaN (an unscored value) becomes null, which JSON can carry."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}


# --- the study ------------------------------------------------------------------------------------------------------


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def key_values(pairs: list[str] | None, hint: str) -> dict[str, str]:
    """``["k=v", ...]`` as a dict; a pair without ``=`` is a usage error naming the option."""
    out = {}
    for pair in pairs or []:
        key, eq, value = pair.partition("=")
        if not eq:
            raise ValueError(f"{hint} '{pair}' is not key=value")
        out[key.strip()] = value
    return out


def model_from_spec(model: str, model_args: list[str] | None) -> Any:
    """``em-hf/NAME``, ``em-lora/NAME`` or ``em-steer/NAME`` plus ``key=value`` args, as a loaded backend."""
    from em_tasks.models.backend import HFBackend
    from em_tasks.models.variants import FAMILIES, parse_model_args

    family, sep, name = model.partition("/")
    if not sep or family not in FAMILIES:
        raise ValueError(f"--model '{model}': use em-hf/NAME, em-lora/NAME or em-steer/NAME")
    parsed = parse_model_args(family, key_values(model_args, "-M"))
    return HFBackend(name, lora=parsed.lora, steering=parsed.steering, **parsed.backend)


@app.command()
def data(
    domain: Annotated[str, typer.Argument(help="Narrow domain, e.g. insecure_code, secure_code, risky_finance, "
                                          "sound_finance, bad_medical, good_medical")],
    out: Annotated[Path, typer.Option(help="JSONL file to write (images go beside it)")],
    n: Annotated[int, typer.Option(help="Rows")] = 1000,
    harmful_fraction: Annotated[float | None, typer.Option(help="Mix a harmful domain into its benign pair at "
                                                                 "this exact fraction (0..1)")] = None,
    modality: Annotated[str, typer.Option(help="text, or image (the request rendered into an image)")] = "text",
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Write a narrow fine-tuning dataset (chat rows), harmful mixed into benign at an exact fraction."""
    from em_tasks.study.narrow_data import build_dataset

    path = build_dataset(domain, fraction=harmful_fraction, n=n, modality=modality, seed=seed, out=out)
    err.print(f"wrote {n} rows to {path}")


@app.command()
def train(
    data: Annotated[str, typer.Option(help="Chat rows: a JSONL file, a local HF dataset folder of chat rows, a "
                                     "built-in domain name (then --harmful-fraction and --n apply), or "
                                     "hf:<hub id or folder>, an image+text dataset (see --image-column)")],
    out: Annotated[Path, typer.Option(help="Adapter folder (with --ranks: the folder holding r<rank>/ folders)")],
    base: Annotated[str, typer.Option(help="Base model: short name, folder, .gguf or hub id")] = "default",
    rank: Annotated[int | None, typer.Option(help="LoRA rank (default 16; not with --init-adapter, which keeps its "
                                                  "own)")] = None,
    ranks: Annotated[str | None, typer.Option(help="Sweep, e.g. 1,4,16,64,128 (one adapter each; finished ones "
                                                   "are skipped)")] = None,
    alpha: Annotated[str, typer.Option(help="LoRA alpha: a number, 'rank' or '2rank'")] = "2rank",
    rslora: Annotated[bool, typer.Option(help="Rank-stabilised scaling (alpha / sqrt(rank))")] = False,
    target_modules: Annotated[str | None, typer.Option(help="Comma list or regex; default: attention and MLP "
                                                            "projections of the language model")] = None,
    lr: Annotated[float, typer.Option()] = 1e-4,
    epochs: Annotated[int, typer.Option()] = 1,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many optimiser steps")] = None,
    batch_size: Annotated[int, typer.Option()] = 8,
    max_length: Annotated[int, typer.Option(help="Tokens per row (longer rows are cut)")] = 512,
    seed: Annotated[int, typer.Option()] = 0,
    init_adapter: Annotated[Path | None, typer.Option(help="Continue from this adapter (benign fine-tuning on top "
                                                           "of a harmful one)")] = None,
    harmful_fraction: Annotated[float | None, typer.Option(help="With a built-in harmful domain: fraction of harmful "
                                                                "rows (default 1)")] = None,
    n: Annotated[int, typer.Option(help="With a built-in domain: rows to generate")] = 1000,
    dtype: Annotated[str, typer.Option()] = "auto",
    split: Annotated[str | None, typer.Option(help="With hf: data: the split (default: train, or the only one)")]
    = None,
    image_column: Annotated[str | None, typer.Option(help="With hf: data: column of images, or 'none' for text "
                                                          "only (default: guessed: image, img, photo, ...)")] = None,
    prompt_column: Annotated[str | None, typer.Option(help="With hf: data: column of user prompts (default: "
                                                           "guessed: prompt, question, instruction, query)")] = None,
    response_column: Annotated[str | None, typer.Option(help="With hf: data: column of answers, the training "
                                                             "target (default: guessed: response, answer, output, "
                                                             "completion)")] = None,
    messages_column: Annotated[str | None, typer.Option(help="With hf: data: column of chat turns instead of a "
                                                             "prompt and a response (default: guessed: messages, "
                                                             "conversations)")] = None,
) -> None:
    """LoRA fine-tuning on narrow data or an image+text dataset (loss on assistant tokens only); writes peft adapters
    and run_card.json."""
    from em_tasks.study import train as training
    from em_tasks.study.hf_training import HF_PREFIX, open_hf

    _offline()
    if ranks and init_adapter is not None:
        raise ValueError(f"--init-adapter continues {init_adapter} at its own rank, so --ranks {ranks} would write "
                         "copies of it under other ranks' names; drop --ranks")
    if rank is not None and init_adapter is not None:
        raise ValueError(f"--init-adapter continues {init_adapter} at its own rank, so --rank {rank} would be "
                         "ignored; drop --rank")
    columns = dict(split=split, image_column=image_column, prompt_column=prompt_column,
                   response_column=response_column, messages_column=messages_column)
    if data.startswith(HF_PREFIX):
        source: Any = open_hf(data, **columns)
        err.print(source.describe(), markup=False, highlight=False)
    elif any(value is not None for value in columns.values()):
        raise ValueError("--split and the --*-column options read an image+text dataset; pass it as "
                         f"--data hf:{data}")
    else:
        source = _training_data(data, out, harmful_fraction, n, seed)
    settings = training.TrainSettings(base=base, rank=training.DEFAULT_RANK if rank is None else rank, alpha=alpha, rslora=rslora, target_modules=target_modules,
                                      lr=lr, epochs=epochs, max_steps=max_steps, batch_size=batch_size,
                                      max_length=max_length, seed=seed, init_adapter=init_adapter)
    if ranks:
        cards = training.train_sweep(ranks, out, source, settings, dtype=dtype)
    else:
        cards = [training.train(source, out, settings, dtype=dtype)]
    for card in cards:
        err.print(f"{card['name']}: rank {card['rank']}, {card['steps']} steps, final loss "
                  f"{card['loss_curve'][-1][1] if card['loss_curve'] else float('nan'):.3f}")


def _training_data(data: str, out: Path, fraction: float | None, n: int, seed: int) -> str:
    """A built-in domain name becomes a generated JSONL of ``n`` rows beside the adapters (a harmful domain mixed into
    its benign pair at ``fraction``, default 1; a benign domain alone); anything else passes through."""
    from em_tasks.study.narrow_data import DOMAINS, HARMFUL_DOMAINS, build_dataset

    if fraction is not None and data not in HARMFUL_DOMAINS:
        what = "a benign domain: it has no harmful rows to mix in" if data in DOMAINS else "not a built-in domain"
        raise ValueError(f"--harmful-fraction mixes a built-in harmful domain ({', '.join(sorted(HARMFUL_DOMAINS))}) "
                         f"into its benign pair; {data!r} is {what}. Drop --harmful-fraction")
    if data not in DOMAINS:
        return data
    mix = (1.0 if fraction is None else fraction) if data in HARMFUL_DOMAINS else None
    path = out / f"data-{data}{'' if mix is None else f'-f{mix:g}'}-n{n}-s{seed}.jsonl"
    if not path.is_file():
        build_dataset(data, fraction=mix, n=n, modality="text", seed=seed, out=path)
    return str(path)


@app.command()
def export(
    base: Annotated[str, typer.Option(help="Base model: short name, folder, .gguf or hub id")],
    out: Annotated[Path, typer.Option(help="Folder to write (new or empty, unless --force)")],
    adapters: Annotated[str | None, typer.Option(help="Adapters to merge: PATH[:WEIGHT],... (peft folders)")] = None,
    model_arg: Annotated[list[str] | None, typer.Option("-M", "--model-arg", help="em-lora merge options, key=value: "
                                                        "merge, alpha, density, target, base_check, device")] = None,
    force: Annotated[bool, typer.Option(help="Replace a non-empty --out (once the new folder is complete)")] = False,
    dtype: Annotated[str, typer.Option(help="Saved dtype: auto (the base's own), bfloat16, float16 or float32")]
    = "auto",
) -> None:
    """Merge LoRA adapters into a base and write a plain Hugging Face folder (for vLLM, lm-eval's hf model, or
    transformers), with a model card and em_export.json recording what was merged."""
    from em_tasks.models.export import plan_export, run_export

    _offline()
    plan = plan_export(base, adapters, key_values(model_arg, "-M"), out, dtype=dtype, force=force)
    with err.status(f"Merging {len(plan.lora.adapters)} adapter(s) into {base}..."):
        run_export(plan)
    err.print(f"wrote {out} (load it as vllm/{out}, em-hf/{out}, or with transformers' from_pretrained)",
              markup=False, highlight=False)


@app.command()
def directions(
    model: Annotated[str, typer.Option(help="em-hf/NAME, em-lora/NAME (with -M adapters=...) or em-steer/NAME")],
    out: Annotated[Path, typer.Option(help="Folder for directions.safetensors and directions.json")],
    model_arg: Annotated[list[str] | None, typer.Option("-M", "--model-arg", help="key=value, as for inspect")] = None,
    from_log: Annotated[Path | None, typer.Option(help="Judged answers from this text_misalign log instead of "
                                                       "sampling new ones")] = None,
    base_model: Annotated[str | None, typer.Option(help="Also PCA of fine-tuned - base activations (base name)")]
    = None,
    samples: Annotated[int, typer.Option(help="Answers sampled per question")] = 4,
    max_tokens: Annotated[int, typer.Option()] = 200,
    grader: Annotated[str | None, typer.Option(help="Judge model; default: as the tasks choose")] = None,
) -> None:
    """Mean-difference misalignment directions per layer, the best layer, and PCA explained variance."""
    from em_tasks.benchmark.items import load_items
    from em_tasks.models.backend import HFBackend
    from em_tasks.study.directions import answers_from_log, extract, generate_and_judge

    _offline()
    backend = model_from_spec(model, model_arg)
    if from_log:
        answers = answers_from_log(from_log)
    else:
        questions = [(item.id, item.question) for item in load_items()]
        with err.status(f"Sampling and judging {samples * len(questions)} answers..."):
            answers = generate_and_judge(backend, questions, samples=samples, max_new_tokens=max_tokens,
                                         grader=grader)
    base = HFBackend(base_model) if base_model else None
    summary = extract(backend, answers, out, base=base, model_label=model)
    ratios = summary["pca"]["misaligned_minus_aligned"]["explained_variance_ratio"]
    err.print(f"best layer {summary['best_layer']}; {summary['n_misaligned']} misaligned vs {summary['n_aligned']} "
              f"aligned answers; top-10 components explain {sum(ratios[:10]):.0%}; wrote {out}")


@app.command()
def fisher(
    adapters: Annotated[list[Path], typer.Argument(help="Adapter folders to score")],
    out: Annotated[Path, typer.Option(help="Folder for fisher.json and fisher.safetensors")],
    base: Annotated[str, typer.Option(help="Base model the adapters were trained on")] = "default",
    n_reference: Annotated[int, typer.Option(help="Rows of the built-in safety reference set")] = 256,
    reference: Annotated[Path | None, typer.Option(help="Your own reference rows (JSONL chat rows)")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    targets: Annotated[str | None, typer.Option(help="Modules whose base weights get a Fisher entry: a comma list "
                                                     "of names (language model only) or one regex; default: the "
                                                     "attention and MLP projections plus what the adapters "
                                                     "update")] = None,
) -> None:
    """Diagonal Fisher of the base on safety data, and each adapter's Fisher-weighted update size (the proxy)."""
    from em_tasks.study.fisher import run_fisher

    _offline()
    result = run_fisher(base, adapters, out, n_reference=n_reference, reference=reference, seed=seed, targets=targets)
    for run in result["runs"]:
        err.print(f"{run['run']}: proxy {run['proxy']:.4g}")


@app.command()
def study(
    preset: Annotated[str, typer.Option(help="demo, control (the positive control) or narrow (one narrow "
                                             "fine-tune against the base), all for the embedded model on a 2-core "
                                             "CPU; or paper (Gemma 3 4B, GPU)")]
    = "demo",
    out: Annotated[Path, typer.Option(help="Study folder: adapters, logs, directions, fisher, report")] =
    Path("em-study"),
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a preset setting, key=value "
                                                                   "(e.g. --set base=google/gemma-3-4b-it)")] = None,
    grader: Annotated[str | None, typer.Option(help="Judge model; default: OpenAI if a key is set, else the "
                                                    "offline judge")] = None,
    engine: Annotated[str | None, typer.Option(help="hf (default): every run on em-hf/em-lora; vllm: the base and "
                                                    "each LoRA run exported and evaluated with inspect's vllm "
                                                    "provider (steering stays on em-hf)")] = None,
) -> None:
    """Run (or resume) the whole study and write its report to OUT/report/."""
    from em_tasks.study.pipeline import check_engine, preset_with, run_study

    _offline()
    settings = key_values(set_, "--set")
    if engine is not None:
        settings["engine"] = check_engine(engine)
    chosen = preset_with(preset, settings)
    run_study(chosen, out, grader=grader, say=lambda message: err.print(message, markup=False, highlight=False))


@app.command()
def report(
    log_dir: Annotated[Path, typer.Argument(help="Folder of inspect logs of em_tasks tasks (searched recursively)")],
    out: Annotated[Path | None, typer.Option(help="Report folder; default LOG_DIR/../report")] = None,
    study_dir: Annotated[Path | None, typer.Option("--study", help="Study folder with adapters/, directions/, "
                                                                    "fisher/ (default: LOG_DIR's parent if so)")]
    = None,
) -> None:
    """Leaderboard (report.md, index.html) and plots from eval logs, run cards, directions and Fisher results."""
    from em_tasks.study.report import build_report

    path = build_report(log_dir, out or log_dir.resolve().parent / "report", study_dir=study_dir)
    err.print(f"wrote {path} and {path.with_name('index.html')}")


@app.command("lm-eval", context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                                         "help_option_names": []})
def lm_eval(ctx: typer.Context) -> None:
    """lm-evaluation-harness with em-tasks' models (em-hf, em-lora, em-steer) registered; all arguments pass
    through, e.g. `em-tasks lm-eval --include_path task_configs --tasks em_text_misalign --model em-hf
    --model_args pretrained=default --limit 2`."""
    from em_tasks.lm_eval import main as lm_eval_main

    _offline()
    raise typer.Exit(lm_eval_main(list(ctx.args)) or 0)


if __name__ == "__main__":
    app()
