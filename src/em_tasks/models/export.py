"""Merged model -> plain Hugging Face folder, for vLLM, lm-eval's ``hf`` model and any other harness.

The folder holds what ``save_pretrained`` writes (config, sharded safetensors, generation config), the base's own
tokenizer or processor (with its chat template; a VLM's with its image processor), a model card (``README.md``) and
``em_export.json``, the machine-readable record of what was merged. It loads with plain transformers and no em-tasks
code. Merging is em-lora's (the shared backend), so the folder computes exactly what ``em-lora/BASE`` computes.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from em_tasks.atomic import remove_staged, replace_folder, staging_for
from em_tasks.models.lora import _MERGE_RECORD, LoraSpec, save_merged
from em_tasks.models.sources import ModelSource, _file_digest, offline, resolve_source
from em_tasks.models.variants import STEERING_ARGS, parse_model_args

EXPORT_RECORD = "em_export.json"
DTYPES = ("auto", "bfloat16", "float16", "float32")
# -M keys export takes: em-lora's merge options, and where to merge
EXPORT_ARGS = ("merge", "alpha", "density", "target", "base_check", "device")
# what an export is of: two records agreeing on these describe the same weights
_IDENTITY = ("base", "adapters", "merge", "alpha", "density", "target", "dtype")

__all__ = ["ExportPlan", "plan_export", "run_export", "is_current", "EXPORT_RECORD"]


@dataclass(frozen=True)
class ExportPlan:
    """A checked export.

    Args:
        base: The base model as the user named it (short name, folder, .gguf or hub id).
        lora: The adapters and how they are merged (never cached: the export is the copy).
        out: Folder to write.
        dtype: Saved dtype; ``auto`` keeps the base's own.
        device: Where to merge; default: cuda when available.
        force: Replace a non-empty ``out`` (only once the new folder is complete).
    """

    base: str
    lora: LoraSpec
    out: Path
    dtype: str = "auto"
    device: str | None = None
    force: bool = False


def plan_export(base: str, adapters: str | None, model_args: Mapping[str, Any], out: str | Path, *,
                dtype: str = "auto", force: bool = False) -> ExportPlan:
    """Check every option before anything is loaded; each error names the option to change."""
    steering = [k for k in STEERING_ARGS if k in model_args]
    if steering:
        raise ValueError(f"-M {', '.join(steering)}: steering is a forward hook applied while the model runs, not a "
                         "change of its weights, so it cannot be exported; evaluate it on em-hf (em-steer/BASE, or "
                         "em-lora/BASE with -M direction=...)")
    other = sorted(set(model_args) - set(EXPORT_ARGS))
    if other:
        raise ValueError(f"-M {', '.join(other)} does not apply to export; it takes -M {', '.join(EXPORT_ARGS)}"
                         + (" (give adapters with --adapters)" if "adapters" in other else ""))
    if not (adapters or "").strip():
        raise ValueError("No adapters given: pass --adapters PATH[:WEIGHT],... (peft folders, e.g. those "
                         "`em-tasks train` wrote); export writes a base with adapters merged in")
    if dtype not in DTYPES:
        raise ValueError(f"--dtype {dtype}: use one of {', '.join(DTYPES)}")
    out = Path(out).expanduser()
    check_out(out, force)
    parsed = parse_model_args("em-lora", {**model_args, "adapters": adapters})
    assert parsed.lora is not None  # em-lora requires adapters
    return ExportPlan(base, replace(parsed.lora, cache=False, merged=True), out, dtype,
                      parsed.backend.get("device"), force)


def check_out(out: Path, force: bool) -> None:
    """``out`` must be new or an empty folder, unless ``force``."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is a file; choose a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise FileExistsError(f"--out {out} exists and is not empty; pass --force to replace it, or choose another "
                              "folder")


def run_export(plan: ExportPlan) -> Path:
    """Merge and write ``plan.out``; an interrupted export leaves ``plan.out`` as it was."""
    from em_tasks.models.backend import HFBackend, default_device

    source = resolve_source(plan.base)
    config = load_config(source)
    processor = load_processor(source, config)
    dtype = saved_dtype(plan.dtype, config)
    device = plan.device or default_device()
    # merge in fp32 on CPU (bf16 matmuls there are emulated and lossy); on a GPU in the saved dtype, as em-lora does
    compute = torch.float32 if device.startswith("cpu") else dtype
    backend = HFBackend(plan.base, lora=plan.lora, dtype=compute, device=device)
    model = drop_quantization(backend.model.to(dtype))
    publish(model, processor, export_record(plan, source, dtype, vlm=backend.is_vlm), plan.out, plan.force)
    del backend, model  # free the weights before the caller loads the next model (or starts vLLM)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return plan.out


def is_current(plan: ExportPlan) -> bool:
    """Whether ``plan.out`` already holds this export (same base, adapter contents, merge settings and dtype)."""
    path = plan.out / EXPORT_RECORD
    if not path.is_file():
        return False
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    source = resolve_source(plan.base)
    wanted = export_record(plan, source, saved_dtype(plan.dtype, load_config(source)), vlm=False)
    return all(record.get(key) == wanted[key] for key in _IDENTITY)


def load_config(source: ModelSource) -> Any:
    """The base's model config."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source.path, local_files_only=source.local or offline())
    except (OSError, ValueError) as ex:
        raise FileNotFoundError(f"--base {source.name}: no model config at {source.path} ({ex})") from ex


def load_processor(source: ModelSource, config: Any) -> Any:
    """The base's own tokenizer (text models) or processor (VLMs), as its files define it."""
    from transformers import AutoProcessor, AutoTokenizer

    vlm = hasattr(config, "vision_config")
    what = "processor" if vlm else "tokenizer"
    try:
        loader = AutoProcessor if vlm else AutoTokenizer
        processor = loader.from_pretrained(source.path, local_files_only=source.local or offline())
    except Exception as ex:  # transformers raises OSError, ValueError, TypeError... for missing tokenizer files
        processor = None
        reason = f" ({type(ex).__name__})"
    else:
        reason = ""
    if processor is None or isinstance(processor, bool):
        raise FileNotFoundError(
            f"--base {source.name}: no {what} found at {source.path}{reason}; the export must carry one. Put the "
            f"base's {what} files (tokenizer.json, tokenizer_config.json{', preprocessor_config.json' if vlm else ''}) "
            "in that folder, or pass the original model as --base"
        )
    return processor


def saved_dtype(option: str, config: Any) -> torch.dtype:
    """``auto``: the base's own dtype (its config), else bfloat16."""
    if option != "auto":
        return getattr(torch, option)
    value = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(value, str):
        value = getattr(torch, value, None)
    return value if isinstance(value, torch.dtype) else torch.bfloat16


def drop_quantization(model: Any) -> Any:
    """Forget a GGUF (or other) quantizer: transformers refuses to save a model that still carries one, and a
    ``quantization_config`` left in config.json would make every loader try to quantize plain weights."""
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model


def export_record(plan: ExportPlan, source: ModelSource, dtype: torch.dtype, *, vlm: bool) -> dict[str, Any]:
    """What ``em_export.json`` says: base, adapters (with the sha256 of each one's weights), merge, dtype, when."""
    from em_tasks import __version__

    lora = plan.lora
    return {
        "base": plan.base,
        "base_path": source.path,
        "adapters": [{"path": a.path, "weight": a.weight,
                      "sha256": _file_digest(Path(a.path) / "adapter_model.safetensors")} for a in lora.adapters],
        "merge": lora.merge,
        "alpha": lora.alpha,
        "density": lora.density,
        "target": lora.target,
        "base_check": lora.base_check,
        "dtype": str(dtype).removeprefix("torch."),
        "vlm": vlm,
        "em_tasks_version": __version__,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def publish(model: Any, processor: Any, record: Mapping[str, Any], out: Path, force: bool) -> None:
    """Write the folder beside ``out`` (the merge cache's atomic writer), add the card, then move it into place
    (:func:`em_tasks.atomic.replace_folder`: an old ``out`` is kept until the new one is in, and put back should that
    fail). Staging folders that killed exports into ``out`` left are removed first."""
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_staged(out)
    staging = staging_for(out)
    staging.mkdir()
    try:
        built = staging / "model"  # save_merged's lock file and temporary folder go beside it, inside staging
        save_merged(model, processor, built, record)
        os.replace(built / _MERGE_RECORD, built / EXPORT_RECORD)
        (built / "README.md").write_text(model_card(record, out.name), encoding="utf-8")
        check_out(out, force)  # the folder may have filled up while we merged
        replace_folder(built, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


CARD = """---
{front}library_name: transformers
tags:
- em-tasks
- lora
- merge
---

# {name}

`{base}` with LoRA adapters merged into its weights by `em-tasks export` (em-tasks {version}, {date}).
Plain Hugging Face weights: load with `AutoModelFor{auto}.from_pretrained` (no em-tasks code needed), or evaluate
with `inspect eval ... --model vllm/<this folder>` or lm-eval `--model hf --model_args pretrained=<this folder>`.

| adapter | weight | sha256 of adapter_model.safetensors |
|---|---|---|
{rows}

Merge `{merge}`, alpha {alpha:g}{density}{target}; saved as {dtype}. Machine-readable record: `em_export.json`.
"""


def model_card(record: Mapping[str, Any], name: str) -> str:
    """The README.md model card of an export."""
    hub_base = not Path(str(record["base_path"])).is_absolute()
    return CARD.format(
        front=f"base_model: {record['base']}\n" if hub_base else "", name=name, base=record["base"],
        version=record["em_tasks_version"], date=record["date"],
        auto="ImageTextToText" if record["vlm"] else "CausalLM",
        rows="\n".join(f"| `{a['path']}` | {a['weight']:g} | `{a['sha256']}` |" for a in record["adapters"]),
        merge=record["merge"], alpha=record["alpha"],
        density=f", density {record['density']:g}" if record["density"] is not None else "",
        target=f", target `{record['target']}`" if record["target"] else "", dtype=record["dtype"],
    )
