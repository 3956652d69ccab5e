"""Throughput of em-hf's batched generation against inspect's built-in ``hf`` provider, in one run.

Both run the same model folder and the same prompts through inspect ``eval()`` (models are built before the clock
starts, so loading is not timed); tokens are counted by re-tokenising each completion, the same way for both. Prints tokens/s of each and their ratio, and inspect's ``hf`` again at em-hf's dtype (to separate the dtype choice
from the rest); the last line is one JSON object.

    python bench/backend_throughput.py [--model default] [--prompts 16] [--max-tokens 128] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from inspect_ai import Task, eval  # noqa: E402
from inspect_ai.dataset import Sample  # noqa: E402
from inspect_ai.model import get_model  # noqa: E402
from inspect_ai.solver import generate  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from em_tasks.benchmark.dataset import load_items  # noqa: E402
from em_tasks.models.sources import resolve_source  # noqa: E402


def run(model, prompts: list[str], max_tokens: int, tokenizer) -> tuple[int, float]:
    task = Task(dataset=[Sample(input=p, id=i) for i, p in enumerate(prompts)], solver=generate())
    start = time.perf_counter()
    log = eval(task, model=model, display="none", log_dir="logs/bench", log_samples=True,
               max_tokens=max_tokens, temperature=1.0, seed=1, max_connections=len(prompts))[0]
    seconds = time.perf_counter() - start
    if log.status != "success":
        raise RuntimeError(f"{model} failed: {log.error}")
    # Count the tokens of the completions themselves: inspect's hf provider reports the padded length of the whole
    # batch as every sample's output tokens, which would credit it with padding generated after an early stop.
    return sum(len(tokenizer(s.output.completion, add_special_tokens=False).input_ids) for s in log.samples), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="em-hf model name (folder, .gguf, short name)")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    folder = resolve_source(args.model).path
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    prompts = [item.question for item in load_items()][: args.prompts]
    ours = get_model(f"em-hf/{args.model}", batch_size=args.prompts)
    # inspect's hf provider as a user gets it (the folder's own dtype), and told to use em-hf's dtype, which shows how
    # much of the difference is the dtype choice and how much is the backend itself
    dtype = str(ours.api.backend.dtype).removeprefix("torch.")
    contenders = {
        "em_hf": ours,
        "inspect_hf": get_model("hf/local", model_path=folder, device="cpu"),
        f"inspect_hf_{dtype}": get_model("hf/local", model_path=folder, device="cpu", dtype=dtype),
    }
    for model in contenders.values():
        run(model, prompts[:2], 4, tokenizer)  # warm-up (first-call overheads)

    figures: dict[str, list[float]] = {key: [] for key in contenders}
    order = list(contenders)
    for repeat in range(args.repeats):
        for key in order[repeat % len(order):] + order[: repeat % len(order)]:  # rotate who goes first
            model = contenders[key]
            tokens, seconds = run(model, prompts, args.max_tokens, tokenizer)
            figures[key].append(tokens / seconds)
            print(f"{key:>20}: {tokens:5d} tokens in {seconds:6.2f} s = {tokens / seconds:7.1f} tok/s")
    best = {k: max(v) for k, v in figures.items()}
    same_dtype = f"inspect_hf_{dtype}"
    ratio = best["em_hf"] / best["inspect_hf"]
    ratio_same_dtype = best["em_hf"] / best[same_dtype]
    print(f"\nem-hf ({dtype}) {best['em_hf']:.1f} tok/s | inspect hf {best['inspect_hf']:.1f} tok/s "
          f"| inspect hf with dtype={dtype} {best[same_dtype]:.1f} tok/s")
    print(f"ratio vs inspect hf: {ratio:.2f}x   ratio vs inspect hf at the same dtype: {ratio_same_dtype:.2f}x")
    print(json.dumps({
        "bench": "backend_throughput", "model": args.model, "prompts": len(prompts), "max_tokens": args.max_tokens,
        "em_hf_dtype": dtype, **{f"{k}_tok_s": round(v, 1) for k, v in best.items()},
        "ratio": round(ratio, 2), "ratio_same_dtype": round(ratio_same_dtype, 2),
        "cpu_count": os.cpu_count(), "machine": platform.machine(),
    }))


if __name__ == "__main__":
    main()
