"""What LoRA merging and steering hooks cost at inference, against the plain base model, in one run.

Same model (the embedded default unless told), same prompts, same generation length (greedy, exactly
``--max-tokens`` new tokens, so every variant does the same work): base; merged LoRA (rank ``--rank`` on all
attention and MLP projections, merged into the weights); the same adapter left unmerged as live peft modules; a
steering hook on one layer; hooks on all layers. Rounds are interleaved, since this machine is noisy: each round runs the variants in a rotated order and the fastest round of each is kept (the least
disturbed measurement). Peak RSS of loading the base alone and of loading + merging is measured in fresh subprocesses.
The adapter is random (a stand-in: cost does not depend on what a fine-tune learned). Last line: one JSON object.

    python bench/overhead.py [--model default] [--rank 128] [--prompts 16] [--max-tokens 64] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402

from em_tasks.benchmark.items import load_items  # noqa: E402
from em_tasks.models.backend import GenParams, HFBackend  # noqa: E402
from em_tasks.models.layers import decoder_layers  # noqa: E402
from em_tasks.models.lora import LoraSpec, parse_adapters, random_adapter  # noqa: E402
from em_tasks.models.steering import SteeringSpec  # noqa: E402

MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def peak_rss_mib(model: str, adapter: str | None) -> float:
    """Peak resident memory (VmHWM) of a fresh process that loads ``model`` and merges ``adapter`` when given.

    VmHWM belongs to the new process image; ``ru_maxrss`` would carry over the parent's peak across fork + exec.
    """
    code = (
        "import re\n"
        "from em_tasks.models.backend import HFBackend\n"
        "from em_tasks.models.lora import LoraSpec, parse_adapters\n"
        f"lora = LoraSpec(parse_adapters({adapter!r}), cache=False) if {adapter!r} else None\n"
        f"HFBackend({model!r}, dtype='float32', lora=lora)\n"
        "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024  # kB -> MiB


def time_generation(backend: HFBackend, conversations: list, params: GenParams) -> float:
    start = time.perf_counter()
    results = backend.generate_batch(conversations, params)
    seconds = time.perf_counter() - start
    assert all(r.output_tokens == params.max_new_tokens for r in results), "variants must generate equal lengths"
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--rank", type=int, default=128)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    conversations = [[{"role": "user", "content": item.question}] for item in load_items()][: args.prompts]
    params = GenParams(max_new_tokens=args.max_tokens, min_new_tokens=args.max_tokens, temperature=0.0)
    work = Path(tempfile.mkdtemp(prefix="em-overhead-"))

    # memory first, in fresh processes, before this one holds several models
    base_for_adapter = HFBackend(args.model, dtype="float32")
    adapter = random_adapter(base_for_adapter.model, work / f"r{args.rank}", rank=args.rank, target_modules=MODULES,
                             seed=0, base_name=args.model)
    weights_mib = sum(p.numel() * 4 for p in base_for_adapter.model.parameters()) / 2**20
    del base_for_adapter
    rss_base = peak_rss_mib(args.model, None)
    rss_merge = peak_rss_mib(args.model, str(adapter))

    base = HFBackend(args.model, dtype="float32", batch_size=args.prompts)
    lora = parse_adapters(str(adapter))
    n_layers = len(decoder_layers(base.model))
    middle = n_layers // 2
    variants = {
        "base": base,
        "merged_lora": HFBackend(args.model, dtype="float32", batch_size=args.prompts,
                                 lora=LoraSpec(lora, cache=False)),
        "unmerged_peft": HFBackend(args.model, dtype="float32", batch_size=args.prompts,
                                   lora=LoraSpec(lora, merged=False)),
        "steer_one_layer": HFBackend(args.model, dtype="float32", batch_size=args.prompts,
                                     steering=SteeringSpec("random:0", layers=middle, coeff=4.0)),
        "steer_all_layers": HFBackend(args.model, dtype="float32", batch_size=args.prompts,
                                      steering=SteeringSpec("random:0", layers="all", coeff=1.0)),
    }
    merge_seconds = variants["merged_lora"].lora_info["merge_seconds"]  # type: ignore[index]
    for backend in variants.values():  # warm-up: first calls pay for allocation
        backend.generate_batch(conversations[:2], GenParams(max_new_tokens=4, min_new_tokens=4, temperature=0.0))
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for round_ in range(args.rounds):
        for name in names[round_ % len(names):] + names[: round_ % len(names)]:
            times[name].append(time_generation(variants[name], conversations, params))
    best = {name: min(t) for name, t in times.items()}
    median = {name: statistics.median(t) for name, t in times.items()}

    print(f"model {args.model}, {n_layers} layers, fp32, {args.prompts} prompts x {args.max_tokens} tokens, "
          f"fastest of {args.rounds} rounds (median in brackets); torch threads {torch.get_num_threads()}; {platform.processor() or ''}")
    print(f"{'variant':<18}{'seconds':>10}{'x base':>9}{'(median x base)':>17}")
    for name, seconds in best.items():
        print(f"{name:<18}{seconds:>10.2f}{seconds / best['base']:>9.3f}{median[name] / median['base']:>17.3f}")
    print(f"merge (rank {args.rank}, {len(MODULES)} module kinds): {merge_seconds:.2f} s; peak RSS base load "
          f"{rss_base:.0f} MiB, load + merge {rss_merge:.0f} MiB ({rss_merge / rss_base:.2f}x); fp32 weights "
          f"{weights_mib:.0f} MiB")
    figures = {
        "model": args.model, "rank": args.rank, "prompts": args.prompts, "max_tokens": args.max_tokens,
        "rounds": args.rounds, "seconds": {k: round(v, 3) for k, v in best.items()},
        "ratio_to_base": {k: round(v / best["base"], 4) for k, v in best.items()},
        "median_ratio_to_base": {k: round(v / median["base"], 4) for k, v in median.items()},
        "merge_seconds": merge_seconds, "peak_rss_mib": {"base_load": round(rss_base), "load_and_merge":
                                                         round(rss_merge)},
        "weights_mib": round(weights_mib), "goals": {"merged_lora": 1.02, "steer_one_layer": 1.03},
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
