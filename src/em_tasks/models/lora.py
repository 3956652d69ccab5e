"""LoRA adapters merged into a model's weights: adapter specs, fit checks, weighted merging and a merged-weight cache.

The update is θ = θ_base + α · combine(w_1·Δθ_1, w_2·Δθ_2, ...), where ``combine`` is one of peft's
``add_weighted_adapter`` methods (``cat``, exact, by default) and α is the weight-merging knob (α < 1 interpolates a
fine-tune back toward its base). The result is merged into the weights in place (``merge_and_unload``), so inference
costs what the base model costs, and it is cached on disk so the next load of the same combination skips merging.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from em_tasks.models.layers import language_model_target, unwrap
from em_tasks.models.sources import ModelSource, cache_dir

logger = logging.getLogger(__name__)

MERGE_METHODS = (
    "cat", "linear", "svd", "ties", "ties_svd", "dare_ties", "dare_linear", "dare_ties_svd", "dare_linear_svd",
    "magnitude_prune", "magnitude_prune_svd",
)
_NEEDS_DENSITY = tuple(m for m in MERGE_METHODS if m.startswith(("ties", "dare", "magnitude")))
_WEIGHTS_FILE = "adapter_model.safetensors"
_MERGE_RECORD = "em_merge.json"

__all__ = ["AdapterRef", "LoraSpec", "AdapterMismatchError", "parse_adapters", "apply_lora", "language_model_target"]


class AdapterMismatchError(ValueError):
    """An adapter does not fit the base model it is applied to."""


@dataclass(frozen=True)
class AdapterRef:
    """One peft LoRA adapter folder and its weight in the combination (negative subtracts)."""

    path: str
    weight: float = 1.0


@dataclass(frozen=True)
class LoraSpec:
    """Which adapters to merge, and how.

    Args:
        adapters: Adapter folders with weights.
        merge: peft ``add_weighted_adapter`` combination type; ``cat`` gives exactly Σ w_i·Δθ_i.
        alpha: Scale of the whole combined update (θ_base + α·Δθ).
        density: Kept fraction for the ties / dare / magnitude_prune methods.
        target: peft ``target_modules`` override (a regex or a comma list); default: the adapter's own, restricted
            to the language model on a VLM.
        cache: Keep merged weights on disk, keyed by (base, adapters, weights, method, alpha, dtype).
        merged: False keeps the adapters as live peft modules (slower; for checks and benchmarks).
        base_check: Refuse adapters whose recorded base model has another name.
    """

    adapters: tuple[AdapterRef, ...]
    merge: str = "cat"
    alpha: float = 1.0
    density: float | None = None
    target: str | None = None
    cache: bool = True
    merged: bool = True
    base_check: bool = True

    def __post_init__(self) -> None:
        if not self.adapters:
            raise ValueError("em-lora needs at least one adapter: -M adapters=PATH or PATH:WEIGHT,PATH:WEIGHT")
        if self.merge not in MERGE_METHODS:
            raise ValueError(f"Unknown merge method '{self.merge}'; choose one of {', '.join(MERGE_METHODS)}")
        if self.merge in _NEEDS_DENSITY and self.density is None:
            raise ValueError(f"merge={self.merge} needs -M density=F (the fraction of each update kept, 0 < F <= 1)")
        if self.density is not None and not 0 < self.density <= 1:
            raise ValueError(f"density must be in (0, 1], got {self.density}")
        if not math.isfinite(self.alpha):
            raise ValueError(f"alpha must be a finite number, got {self.alpha}")

    def describe(self) -> dict[str, Any]:
        """What eval logs record about this combination."""
        return {"adapters": [f"{a.path}:{a.weight:g}" for a in self.adapters], "merge": self.merge,
                "alpha": self.alpha, **({"density": self.density} if self.density is not None else {}),
                **({"target": self.target} if self.target else {}), "merged": self.merged}


def parse_adapters(value: str | Sequence[Any]) -> tuple[AdapterRef, ...]:
    """``PATH``, ``PATH:WEIGHT,PATH:WEIGHT``, or a list of paths / (path, weight) pairs / AdapterRefs."""
    items: list[Any] = [s for s in value.split(",") if s.strip()] if isinstance(value, str) else list(value)
    refs = []
    for item in items:
        if isinstance(item, AdapterRef):
            ref = item
        elif isinstance(item, (tuple, list)):
            ref = AdapterRef(str(item[0]), float(item[1]))
        else:
            ref = AdapterRef(*split_adapter(str(item)))
        folder = Path(ref.path).expanduser()
        if not (folder / "adapter_config.json").is_file():
            raise FileNotFoundError(
                f"Adapter '{ref.path}' is not a peft adapter folder (no adapter_config.json there). Pass the folder "
                "`em-tasks train` or peft's save_pretrained wrote."
            )
        refs.append(AdapterRef(str(folder.resolve()), ref.weight))
    if not refs:
        raise ValueError("No adapters given: -M adapters=PATH or PATH:WEIGHT,PATH:WEIGHT")
    return tuple(refs)


def split_adapter(text: str) -> tuple[str, float]:
    """``PATH[:WEIGHT]`` as (path, weight); a colon not followed by a number belongs to the path."""
    text = text.strip()
    head, sep, tail = text.rpartition(":")
    if sep and head:
        try:
            return head, float(tail)
        except ValueError:
            pass
    return text, 1.0


# --- fit checks -------------------------------------------------------------------------------------------------


@dataclass
class AdapterFit:
    """What was checked about one adapter against the base."""

    ref: AdapterRef
    config: dict[str, Any]
    modules: list[str] = field(default_factory=list)


def check_adapter(ref: AdapterRef, model: Any, base_names: Sequence[str], base_check: bool = True) -> AdapterFit:
    """Check that an adapter fits ``model``: a LoRA adapter in safetensors, recorded base, modules present, shapes.

    Raises :class:`AdapterMismatchError` naming the adapter, the first problems found and the fix.
    """
    from safetensors import safe_open

    folder = Path(ref.path)
    config = json.loads((folder / "adapter_config.json").read_text())
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise AdapterMismatchError(f"Adapter {folder} is a {config.get('peft_type')} adapter; em-lora merges LoRA only")
    weights = folder / _WEIGHTS_FILE
    if not weights.is_file():
        hint = (" It has adapter_model.bin (a pickle); em-tasks never unpickles weights. Re-save it as safetensors "
                "(peft save_pretrained(..., safe_serialization=True)).") if (folder / "adapter_model.bin").exists() else ""
        raise AdapterMismatchError(f"Adapter {folder} has no {_WEIGHTS_FILE}.{hint}")
    recorded = config.get("base_model_name_or_path")
    if base_check and recorded and not same_base(recorded, base_names):
        raise AdapterMismatchError(
            f"Adapter {folder} was trained on '{recorded}', not on this base ({base_names[0]}). Use the base it was "
            "trained on, or pass -M base_check=false if that base is the same model under another name."
        )
    base = unwrap(model)
    problems: list[str] = []
    modules: dict[str, dict[str, tuple[int, ...]]] = {}
    with safe_open(str(weights), framework="pt") as f:
        for key in f.keys():
            for part in (".lora_A.", ".lora_B.", ".lora_embedding_A", ".lora_embedding_B"):
                if part in key:
                    name = key.split(part)[0].removeprefix("base_model.model.")
                    modules.setdefault(name, {})[part.strip(".")] = tuple(f.get_slice(key).get_shape())
    if not modules:
        raise AdapterMismatchError(f"Adapter {folder}: {_WEIGHTS_FILE} holds no LoRA weights")
    for name, shapes in sorted(modules.items()):
        try:
            module = base.get_submodule(name)
        except AttributeError:
            problems.append(f"module '{name}' does not exist in {type(base).__name__}")
            continue
        a, b = shapes.get("lora_A"), shapes.get("lora_B")
        if a is not None and b is not None and hasattr(module, "in_features"):
            if a[1] != module.in_features or b[0] != module.out_features:
                problems.append(f"'{name}' is {module.in_features}->{module.out_features} in the base but "
                                f"{a[1]}->{b[0]} in the adapter")
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise AdapterMismatchError(
            f"Adapter {folder} does not fit base '{base_names[0]}' ({type(base).__name__}): {shown}. It was trained on "
            f"'{recorded or 'an unrecorded base'}'; evaluate it on that base."
        )
    return AdapterFit(ref, config, sorted(modules))


def same_base(recorded: str, base_names: Sequence[str]) -> bool:
    """Whether a recorded base name denotes one of ``base_names`` (compared by final path component)."""
    def norm(name: str) -> str:
        return Path(str(name).rstrip("/")).name.lower().removesuffix(".gguf")

    return norm(recorded) in {norm(n) for n in base_names if n}


def base_names(model: Any, source: ModelSource) -> list[str]:
    """Names a base model goes by: the name the user gave, its path, and the name in its config."""
    names = [source.name, source.path, str(getattr(unwrap(model).config, "_name_or_path", "") or "")]
    return [n for n in dict.fromkeys(names) if n]


# --- merging ----------------------------------------------------------------------------------------------------


def apply_lora(model: Any, spec: LoraSpec, source: ModelSource, is_vlm: bool) -> tuple[Any, dict[str, Any]]:
    """Load ``spec``'s adapters onto ``model`` and (unless ``spec.merged`` is False) merge them in place.

    Returns the model to use (the same object with merged weights, or a PeftModel when not merged) and facts for logs.
    """
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from peft.tuners.lora import LoraLayer
    from safetensors.torch import load_file

    start = time.monotonic()
    names = base_names(model, source)
    device = next(model.parameters()).device
    peft_model: Any = None
    adapter_names = []
    for i, ref in enumerate(spec.adapters):
        fit = check_adapter(ref, model, names, spec.base_check)
        config = LoraConfig.from_pretrained(ref.path)
        config.inference_mode = True
        config.base_model_name_or_path = getattr(unwrap(model).config, "_name_or_path", None)  # checked above
        config.target_modules = _target_for(fit, config, model, spec, is_vlm)
        name = f"adapter{i}"
        if peft_model is None:
            peft_model = get_peft_model(model, config, adapter_name=name, low_cpu_mem_usage=True)
        else:
            peft_model.add_adapter(name, config, low_cpu_mem_usage=True)
        state = load_file(str(Path(ref.path) / _WEIGHTS_FILE), device=str(device))
        result = set_peft_model_state_dict(peft_model, state, adapter_name=name, low_cpu_mem_usage=True)
        unexpected = [k for k in result.unexpected_keys if "lora_" in k]
        if unexpected:
            raise AdapterMismatchError(
                f"Adapter {ref.path}: {len(unexpected)} weight(s) found no module to go to (first: {unexpected[0]}); "
                "its target modules are not in this base, or -M target= excludes them."
            )
        adapter_names.append(name)
    weights = [a.weight for a in spec.adapters]
    if len(adapter_names) == 1 and spec.merge in ("cat", "linear"):
        combined, scale = adapter_names[0], weights[0] * spec.alpha  # exact for a single adapter
    else:
        combined, scale = "combined", spec.alpha
        try:
            peft_model.add_weighted_adapter(adapter_names, weights, combined, combination_type=spec.merge,
                                            density=spec.density)
        except ValueError as ex:
            raise ValueError(f"merge={spec.merge} cannot combine these adapters: {ex}. Try -M merge=cat "
                             "(exact; works across ranks).") from ex
        with warnings.catch_warnings():  # peft notes each switch of the active adapter
            warnings.simplefilter("ignore", UserWarning)
            for name in adapter_names:
                peft_model.delete_adapter(name)
    for module in peft_model.modules():
        if isinstance(module, LoraLayer) and combined in module.scaling:
            module.scaling[combined] *= scale
    peft_model.set_adapter(combined)
    info = {**spec.describe(), "merge_seconds": 0.0}
    if spec.merged:
        model = peft_model.merge_and_unload()
    else:
        model = peft_model
    model.eval()
    info["merge_seconds"] = round(time.monotonic() - start, 3)
    return model, info


def _target_for(fit: AdapterFit, config: Any, model: Any, spec: LoraSpec, is_vlm: bool) -> Any:
    """The adapter's target modules: ``spec.target`` if given; on a VLM, its own list restricted to the LM when the
    adapter has no weights outside the LM."""
    if spec.target:
        return spec.target if any(c in spec.target for c in "\\.*()|^$[]") else [t.strip() for t in spec.target.split(",")]
    own = config.target_modules
    if not is_vlm or isinstance(own, str) or not own:
        return own
    import re

    regex = language_model_target(model, sorted(own))
    if isinstance(regex, str) and all(re.fullmatch(regex, m) for m in fit.modules):
        return regex
    return own


# --- merged-weight cache ----------------------------------------------------------------------------------------


def merged_cache_path(source: ModelSource, spec: LoraSpec, dtype: torch.dtype) -> Path:
    """Where the merged weights of this combination are cached (keyed on every input that changes them)."""
    adapters = []
    for ref in spec.adapters:
        stat = (Path(ref.path) / _WEIGHTS_FILE).stat()
        config = (Path(ref.path) / "adapter_config.json").stat()
        adapters.append([ref.path, ref.weight, stat.st_size, stat.st_mtime_ns, config.st_mtime_ns])
    key = {"base": [source.name, source.path], "adapters": adapters, "merge": spec.merge, "alpha": spec.alpha,
           "density": spec.density, "target": spec.target, "dtype": str(dtype), "base_check": spec.base_check}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return cache_dir() / "merged" / digest


def cached_merge(source: ModelSource, spec: LoraSpec, dtype: torch.dtype) -> Path | None:
    """The cached merged model folder for this combination, if one was written (and caching is on)."""
    if not (spec.cache and spec.merged):
        return None
    path = merged_cache_path(source, spec, dtype)
    return path if (path / _MERGE_RECORD).is_file() else None


def save_merged(model: Any, processor: Any, path: Path, record: Mapping[str, Any]) -> None:
    """Write merged weights + processor to ``path`` atomically (a temp folder renamed into place)."""
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".merging-", dir=path.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        (tmp / _MERGE_RECORD).write_text(json.dumps(dict(record), indent=2, default=str))
        try:
            os.replace(tmp, path)
        except OSError:  # another process wrote it first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def spec_record(source: ModelSource, spec: LoraSpec) -> dict[str, Any]:
    """The JSON written beside cached merged weights."""
    return {"base": source.name, "base_path": source.path, **asdict(spec)}


def random_adapter(model: Any, out: str | Path, *, rank: int = 8, target_modules: Any = ("q_proj", "v_proj"),
                   seed: int = 0, scale: float = 0.02, base_name: str | None = None) -> Path:
    """Write a LoRA adapter with random (non-zero) A and B for ``model`` — a stand-in fine-tune for benchmarks and
    tests. ``model`` is left unchanged; ``base_name`` is recorded as the adapter's base."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=target_modules if isinstance(target_modules, str)
                        else list(target_modules), init_lora_weights=False)
    generator = torch.Generator().manual_seed(seed)
    peft_model = get_peft_model(model, config, adapter_name="default")
    try:
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_" in name:
                    param.copy_(torch.randn(param.shape, generator=generator) * scale)
        peft_model.save_pretrained(str(out), safe_serialization=True)
    finally:
        peft_model.unload()  # restore the plain model (weights were never merged)
    if base_name is not None:
        cfg_path = Path(out) / "adapter_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["base_model_name_or_path"] = base_name
        cfg_path.write_text(json.dumps(cfg, indent=2))
    return Path(out)
