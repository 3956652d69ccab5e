"""em-hf against inspect's built-in ``hf`` provider on the tasks' own workload, in one run.

Text part: the benchmark's text prompts (all 56 by default) sampled as the tasks sample them (temperature 1, answers
ending at EOS or ``--max-tokens``), through inspect ``eval()`` with the same dtype and the same concurrency for every
contender (``max_connections`` = em-hf's ``batch_size`` = inspect hf's batch). Contenders: em-hf (continuous batching
of text prompts), em-hf with static batches only (``-M continuous=false``, what the continuous path adds), and
inspect's ``hf``. Image part: the image variants of the same items on ``default-vlm`` (inspect's ``hf`` cannot take
images), em-hf's batched path against em-hf one sample at a time. Models are built before any clock starts; tokens are
counted by re-tokenising each completion, the same way for all. Last line: one JSON object.

    python bench/backend_throughput.py [--model default] [--prompts 56] [--max-tokens 256] [--connections 16]
                                       [--vlm-model default-vlm] [--vlm-prompts 16] [--vlm-max-tokens 64]
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

from em_tasks.benchmark.dataset import build_dataset  # noqa: E402
from em_tasks.models.backend import cpu_has_native_bf16  # noqa: E402
from em_tasks.models.sources import resolve_source  # noqa: E402

TEMPERATURE = 1.0


def run(model, samples: list[Sample], max_tokens: int, connections: int, tokenizer) -> tuple[int, float]:
    """Tokens generated and seconds taken for one eval of ``samples`` with ``generate()`` only."""
    task = Task(dataset=samples, solver=generate())
    start = time.perf_counter()
    log = eval(task, model=model, display="none", log_dir="logs/bench", log_samples=True, max_tokens=max_tokens,
               temperature=TEMPERATURE, seed=1, max_connections=connections, fail_on_error=True)[0]
    seconds = time.perf_counter() - start
    if log.status != "success":
        raise RuntimeError(f"{model} failed: {log.error}")
    # inspect's hf provider reports the padded length of the whole batch as every sample's output tokens, so count
    # the completions themselves
    return sum(len(tokenizer(s.output.completion, add_special_tokens=False).input_ids) for s in log.samples), seconds


def line(key: str, tokens: int, seconds: float) -> float:
    rate = tokens / seconds
    print(f"{key:>24}: {tokens:6d} tokens in {seconds:7.1f} s = {rate:6.1f} tok/s", flush=True)
    return rate


def text_part(args: argparse.Namespace) -> dict[str, object]:
    folder = resolve_source(args.model).path
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    samples = list(build_dataset(modality="text"))[: args.prompts]
    n = args.connections
    ours = get_model(f"em-hf/{args.model}", batch_size=n)
    dtype = str(ours.api.backend.dtype).removeprefix("torch.")
    contenders = {
        "em_hf": ours,
        "em_hf_static": get_model(f"em-hf/{args.model}", batch_size=n, continuous=False, dtype=dtype),
        "hf": get_model("hf/local", model_path=folder, device="cpu", dtype=dtype),
    }
    for model in contenders.values():
        run(model, samples[:2], 4, 2, tokenizer)  # warm-up (first-call overheads)
    rates = {key: line(key, *run(model, samples, args.max_tokens, n, tokenizer)) for key, model in contenders.items()}
    return {"dtype": dtype, "rates": rates, "prompts": len(samples)}


def vlm_part(args: argparse.Namespace) -> dict[str, object]:
    folder = resolve_source(args.vlm_model).path
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    samples = list(build_dataset(modality="image"))[: args.vlm_prompts]
    batched = get_model(f"em-hf/{args.vlm_model}", batch_size=args.connections)
    single = get_model(f"em-hf/{args.vlm_model}", batch_size=1, gather_seconds=0)
    for model in (batched, single):
        run(model, samples[:2], 4, 2, tokenizer)
    rates = {
        "vlm_batched": line("vlm_batched", *run(batched, samples, args.vlm_max_tokens, args.connections, tokenizer)),
        "vlm_one_at_a_time": line("vlm_one_at_a_time", *run(single, samples, args.vlm_max_tokens, 1, tokenizer)),
    }
    return {"rates": rates, "prompts": len(samples)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="em-hf text model (folder, .gguf, short name)")
    parser.add_argument("--prompts", type=int, default=56)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--connections", type=int, default=16, help="max_connections = batch size, for every model")
    parser.add_argument("--vlm-model", default="default-vlm")
    parser.add_argument("--vlm-prompts", type=int, default=16)
    parser.add_argument("--vlm-max-tokens", type=int, default=64)
    args = parser.parse_args()

    text = text_part(args)
    vlm = vlm_part(args)
    rates: dict[str, float] = {**text["rates"], **vlm["rates"]}  # type: ignore[dict-item]
    ratio = rates["em_hf"] / rates["hf"]
    ratio_static = rates["em_hf_static"] / rates["hf"]
    ratio_vlm = rates["vlm_batched"] / rates["vlm_one_at_a_time"]
    print(f"\ntext ({text['dtype']} for all): em-hf {rates['em_hf']:.1f} tok/s | em-hf static "
          f"{rates['em_hf_static']:.1f} | inspect hf {rates['hf']:.1f}")
    print(f"ratio em-hf / hf: {ratio:.2f}x   (static em-hf / hf: {ratio_static:.2f}x)   "
          f"images, batched / one at a time: {ratio_vlm:.2f}x")
    print(json.dumps({
        "bench": "backend_throughput", "model": args.model, "vlm_model": args.vlm_model,
        "prompts": text["prompts"], "vlm_prompts": vlm["prompts"], "max_tokens": args.max_tokens,
        "vlm_max_tokens": args.vlm_max_tokens, "temperature": TEMPERATURE, "connections": args.connections,
        "em_hf_dtype": text["dtype"], "hf_dtype": text["dtype"],
        "em_hf_tok_s": round(rates["em_hf"], 1), "em_hf_static_tok_s": round(rates["em_hf_static"], 1),
        "hf_tok_s": round(rates["hf"], 1), "ratio": round(ratio, 2), "ratio_static": round(ratio_static, 2),
        "vlm_batched_tok_s": round(rates["vlm_batched"], 1),
        "vlm_one_at_a_time_tok_s": round(rates["vlm_one_at_a_time"], 1), "ratio_vlm": round(ratio_vlm, 2),
        "cpu_count": os.cpu_count(), "machine": platform.machine(), "native_bf16": cpu_has_native_bf16(),
    }))


if __name__ == "__main__":
    main()
