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
import re
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, get_args

import torch

from em_tasks.atomic import build_once, is_complete
from em_tasks.models.layers import unwrap
from em_tasks.models.targets import as_peft, language_model_only, language_model_target, parse_targets, unmatched
from em_tasks.models.sources import ModelSource, cache_dir

logger = logging.getLogger(__name__)

MergeMethod = Literal[
    "cat", "linear", "svd", "ties", "ties_svd", "dare_ties", "dare_linear", "dare_ties_svd", "dare_linear_svd",
    "magnitude_prune", "magnitude_prune_svd",
]
"""peft ``add_weighted_adapter`` combination types; ``cat`` is exact (Σ w_i·Δθ_i) across ranks."""
MERGE_METHODS: tuple[str, ...] = get_args(MergeMethod)
_NEEDS_DENSITY = tuple(m for m in MERGE_METHODS if m.startswith(("ties", "dare", "magnitude")))
_WEIGHTS_FILE = "adapter_model.safetensors"
_MERGE_RECORD = "em_merge.json"

__all__ = ["AdapterRef", "LoraSpec", "AdapterMismatchError", "LoraKey", "parse_adapters", "apply_lora",
           "split_lora_key", "language_model_target"]


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
    merge: MergeMethod = "cat"
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


class LoraKey(NamedTuple):
    """One LoRA factor's key in a peft state dict, taken apart."""

    module: str  # the adapted module's name in the base model (``model.layers.0.self_attn.q_proj``)
    factor: Literal["A", "B"]
    embedding: bool  # ``lora_embedding_A/B`` (an nn.Embedding's factors, stored transposed)
    adapter: str | None  # the adapter-name infix of a live peft model's keys (``...lora_A.default.weight``)


# "[base_model.model.]<module>.lora_[embedding_]<A|B>[.<adapter>][.weight]"; the adapter infix is in live peft keys
_LORA_KEY = re.compile(r"(?:base_model\.model\.)?(.+)\.lora_(embedding_)?(A|B)(?:\.([^.]+))??(?:\.weight)?")


def split_lora_key(key: str) -> LoraKey | None:
    """A peft LoRA state-dict key as (module, factor, embedding, adapter); None for any other key (biases, DoRA
    magnitudes, base weights)."""
    match = None if key.endswith(".bias") else _LORA_KEY.fullmatch(key)
    if match is None:
        return None
    module, embedding, factor, adapter = match.groups()
    return LoraKey(module, "A" if factor == "A" else "B", embedding is not None, adapter)


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
    try:
        config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as ex:
        raise AdapterMismatchError(f"Adapter {folder}: adapter_config.json is not valid JSON ({ex}); re-save the "
                                   "adapter with peft's save_pretrained") from ex
    if not isinstance(config, dict):
        raise AdapterMismatchError(f"Adapter {folder}: adapter_config.json must hold a JSON object (peft's LoraConfig)")
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise AdapterMismatchError(f"Adapter {folder} is a {config.get('peft_type')} adapter; em-lora merges LoRA only")
    rank = config.get("r", 8)
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise AdapterMismatchError(f"Adapter {folder}: adapter_config.json has rank r={rank!r}; a LoRA adapter has a "
                                   "positive integer rank. Its config was edited or written by another tool: re-save "
                                   "it from the training run")
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
    try:
        with safe_open(str(weights), framework="pt") as f:
            for key in f.keys():
                if lora := split_lora_key(key):
                    kind = f"lora_{'embedding_' if lora.embedding else ''}{lora.factor}"
                    modules.setdefault(lora.module, {})[kind] = tuple(f.get_slice(key).get_shape())
    except Exception as ex:  # safetensors raises its own error type for a damaged file
        if isinstance(ex, AdapterMismatchError):
            raise
        raise AdapterMismatchError(f"Adapter {folder}: {_WEIGHTS_FILE} cannot be read ({ex}); the file is damaged or "
                                   "was cut short (an interrupted copy or save): copy or save it again") from ex
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

    Guards (each raises :class:`AdapterMismatchError` naming the adapter and the fix), so that "the LoRA did nothing"
    and non-finite weights never reach an eval:

    - the target (the adapter's own ``target_modules`` or ``-M target=``) must name modules the base has, and every
      module it wraps must receive weights (else peft leaves them empty), and no weight may be left without a module;
    - each adapter's weights must be finite, and must not be a zero update (an untrained adapter: peft initialises
      ``lora_B`` to zeros; rank 0);
    - the combined update (after weights, merge method and alpha) is computed per layer before merging: it must be
      finite and not (numerically) zero, so combinations that cancel (``A:1,A:-1``) are caught too. A zero combined
      update the user asked for explicitly (``-M alpha=0``, or every adapter weight 0) is allowed with a logged
      warning: it evaluates as the base model, on purpose;
    - after ``merge_and_unload`` every merged weight of the touched modules must be finite.

    These checks apply to the unmerged (``merged=False``) path too, except the last, which has no merged weights.
    """
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    start = time.monotonic()
    names = base_names(model, source)
    device = next(model.parameters()).device
    module_names = [n for n, _ in unwrap(model).named_modules() if n]
    peft_model: Any = None
    adapter_names = []
    for i, ref in enumerate(spec.adapters):
        fit = check_adapter(ref, model, names, spec.base_check)
        config = LoraConfig.from_pretrained(ref.path)
        config.inference_mode = True
        config.base_model_name_or_path = getattr(unwrap(model).config, "_name_or_path", None)  # checked above
        config.target_modules = _target_for(fit, config, model, spec, is_vlm)
        check_target(ref, fit, config.target_modules, unwrap(model), module_names, spec.target)
        state = load_file(str(Path(ref.path) / _WEIGHTS_FILE), device=str(device))
        check_adapter_weights(ref, state)
        name = f"adapter{i}"
        if peft_model is None:
            peft_model = get_peft_model(model, config, adapter_name=name, low_cpu_mem_usage=True)
        else:
            peft_model.add_adapter(name, config, low_cpu_mem_usage=True)
        result = set_peft_model_state_dict(peft_model, state, adapter_name=name, low_cpu_mem_usage=True)
        unexpected = [k for k in result.unexpected_keys if "lora_" in k]
        if unexpected:
            raise AdapterMismatchError(
                f"Adapter {ref.path}: {len(unexpected)} weight(s) found no module to go to (first: {unexpected[0]}); "
                "its target modules are not in this base, or -M target= excludes them."
            )
        empty = sorted({lora.module for k in result.missing_keys
                        if (lora := split_lora_key(k)) and lora.adapter == name})
        if empty:
            raise AdapterMismatchError(
                f"Adapter {ref.path}: the target wraps {len(empty)} module(s) the adapter has no weights for "
                f"(first: {empty[0]}), which would be left empty. Pass -M target={_short_names(fit.modules)} (the "
                "modules it has weights for), or leave out -M target= to use the adapter's own."
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
    layers = _lora_layers(peft_model, combined)
    for _, module in layers:
        module.scaling[combined] *= scale
    peft_model.set_adapter(combined)
    check_combined_update(spec, layers, combined)
    info = {**spec.describe(), "merge_seconds": 0.0}
    if spec.merged:
        touched = [n for n, _ in layers]
        model = peft_model.merge_and_unload()
        check_merged(spec, model, touched)
    else:
        model = peft_model
    model.eval()
    info["merge_seconds"] = round(time.monotonic() - start, 3)
    return model, info


# --- guards -----------------------------------------------------------------------------------------------------

# A combined update whose largest entry is below this fraction of the largest value its factors could produce
# (rank x max|A| x max|B| x |scaling|) is rounding left over from terms that cancel: it is zero. Real updates are
# orders of magnitude above it, and an update this small vanishes when merged into bf16 weights anyway.
ZERO_UPDATE_RTOL = 1e-4


def _short_names(modules: Sequence[str]) -> str:
    """Last name components, as a ``-M target=`` value (``q_proj,v_proj``)."""
    return ",".join(sorted({m.rsplit(".", 1)[-1] for m in modules}))


def check_target(ref: AdapterRef, fit: AdapterFit, target: Any, base: Any, module_names: Sequence[str],
                 override: str | None) -> None:
    """Refuse a target (``-M target=`` or the adapter's own ``target_modules``) naming modules the base lacks."""
    if target is None or target == "all-linear":
        return
    missing = unmatched(target, module_names)
    if not missing:
        return
    kinds = (torch.nn.Linear, torch.nn.Embedding, torch.nn.Conv1d, torch.nn.Conv2d)
    linear = sorted({n.rsplit(".", 1)[-1] for n, m in base.named_modules()
                     if isinstance(m, kinds) and ".lora_" not in n and not n.endswith("base_layer")})
    shown = ", ".join(linear[:15]) + (", ..." if len(linear) > 15 else "")
    if override:
        raise AdapterMismatchError(
            f"-M target={override}: {', '.join(map(str, missing))} matches no module of {type(base).__name__} "
            f"(adapter {ref.path}). Modules it has that LoRA can wrap: {shown}. Name some of those, or leave out "
            f"-M target= to use the adapter's own (-M target={_short_names(fit.modules)})."
        )
    raise AdapterMismatchError(
        f"Adapter {ref.path} names target module(s) {', '.join(map(str, missing))} in its adapter_config.json, which "
        f"{type(base).__name__} does not have (it was made for another architecture, or its config was edited). "
        f"Evaluate it on the base it was trained on, or pass -M target={_short_names(fit.modules)} to apply only "
        "the modules it has weights for."
    )


def check_adapter_weights(ref: AdapterRef, state: Mapping[str, torch.Tensor]) -> None:
    """Each adapter's own weights: all finite, and not a zero update (no module with both A and B non-zero)."""
    bad = [k for k, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise AdapterMismatchError(
            f"Adapter {ref.path}: its LoRA weights are not finite ({len(bad)} of {len(state)} tensors hold NaN or "
            f"inf; first: {bad[0]}). The training run that wrote it diverged: check that run (a learning rate too "
            "high, or fp16 overflow, are the usual causes) and retrain; evaluating it would give garbage."
        )
    factors: dict[str, dict[str, bool]] = {}
    for key, t in state.items():
        if lora := split_lora_key(key):
            factors.setdefault(lora.module, {})[lora.factor] = t.numel() > 0 and bool(t.any())
    if factors and not any(f.get("A") and f.get("B") for f in factors.values()):
        raise AdapterMismatchError(
            f"Adapter {ref.path} has a zero update: in all {len(factors)} of its modules lora_B or lora_A is all "
            "zeros (or the rank is 0), so B·A = 0. It is an untrained adapter (peft initialises lora_B to zeros) and "
            "would evaluate as the base model. Pass the folder a finished training run saved."
        )


def _lora_layers(peft_model: Any, adapter: str) -> list[tuple[str, Any]]:
    """(name in the base model, LoraLayer) for every module carrying ``adapter``."""
    from peft.tuners.lora import LoraLayer

    return [(n.removeprefix("base_model.model."), m) for n, m in peft_model.named_modules()
            if isinstance(m, LoraLayer) and adapter in m.scaling]


def _factors(module: Any, adapter: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    if adapter in getattr(module, "lora_A", {}):
        return module.lora_A[adapter].weight, module.lora_B[adapter].weight
    if adapter in getattr(module, "lora_embedding_A", {}):
        return module.lora_embedding_A[adapter], module.lora_embedding_B[adapter]
    return None


def check_combined_update(spec: LoraSpec, layers: Sequence[tuple[str, Any]], adapter: str) -> None:
    """The update about to be applied, per layer: finite, and not zero (unless alpha=0 or all weights 0)."""
    what = ", ".join(f"{a.path}:{a.weight:g}" for a in spec.adapters)
    how = f"merge={spec.merge}, alpha={spec.alpha:g}"
    if not layers:
        raise AdapterMismatchError(f"No module of the model received the adapter(s) {what}: nothing to apply. Check "
                                   "-M target= and that the adapters were trained for this base.")
    nonfinite: list[str] = []
    nonzero = False
    with torch.no_grad():
        for name, module in layers:
            delta = module.get_delta_weight(adapter)
            if not bool(torch.isfinite(delta).all()):
                nonfinite.append(name)
                continue
            if nonzero:
                continue
            peak = float(delta.abs().max()) if delta.numel() else 0.0
            factors = _factors(module, adapter)
            bound = 0.0
            if factors is not None and factors[0].numel() and factors[1].numel():
                a, b = factors
                rank = min(a.shape[0], b.shape[1]) if a.dim() > 1 and b.dim() > 1 else 1
                bound = rank * float(a.abs().max()) * float(b.abs().max()) * abs(float(module.scaling[adapter]))
            nonzero = peak > ZERO_UPDATE_RTOL * bound if bound > 0 else peak > 0
    if nonfinite:
        raise AdapterMismatchError(
            f"The combined LoRA update of {what} ({how}) is not finite in {len(nonfinite)} module(s) (first: "
            f"{nonfinite[0]}): it overflows the model's dtype. Lower the weights or -M alpha, load with "
            "-M dtype=float32, or check the adapters' training runs."
        )
    if nonzero:
        return
    if spec.alpha == 0 or all(a.weight == 0 for a in spec.adapters):
        logger.warning("LoRA %s with %s is a zero update, as asked: this evaluates as the base model", what, how)
        return
    raise AdapterMismatchError(
        f"The combined LoRA update of {what} ({how}) is a zero update in all {len(layers)} modules: the adapters "
        "cancel (for example the same adapter at +1 and -1), so this would evaluate as the base model. Change the "
        "weights, or pass -M alpha=0 if the base model is what you want."
    )


def check_merged(spec: LoraSpec, model: Any, touched: Sequence[str]) -> None:
    """After merging: every weight of the modules the adapters touched is finite."""
    bad = []
    for name in touched:
        weight = getattr(unwrap(model).get_submodule(name), "weight", None)
        if weight is not None and not bool(torch.isfinite(weight).all()):
            bad.append(name)
    if bad:
        what = ", ".join(f"{a.path}:{a.weight:g}" for a in spec.adapters)
        raise AdapterMismatchError(
            f"Merging {what} (merge={spec.merge}, alpha={spec.alpha:g}) left weights that are not finite in "
            f"{len(bad)} module(s) (first: {bad[0]}): base + update overflows the model's dtype. Load with "
            "-M dtype=float32, lower -M alpha, or check the base model's weights."
        )


def _target_for(fit: AdapterFit, config: Any, model: Any, spec: LoraSpec, is_vlm: bool) -> Any:
    """The adapter's target modules (``-M target=`` if given, else its own), read by
    :mod:`em_tasks.models.targets`' rule; on a VLM, names are restricted to the language model when the adapter has
    no weights outside it."""
    target = as_peft(parse_targets(spec.target, option="-M target=")) if spec.target else config.target_modules
    if not is_vlm or isinstance(target, str) or not target:
        return target
    return language_model_only(model, target, fit.modules) or target


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
    return path if is_complete(path, _MERGE_RECORD) else None


def save_merged(model: Any, processor: Any, path: Path, record: Mapping[str, Any]) -> None:
    """Write merged weights + processor to ``path`` once: under a lock, into a temp folder renamed into place
    (:func:`em_tasks.atomic.build_once`); a process that finds the entry written meanwhile writes nothing."""
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()

    def build(stage: Path) -> None:
        model.save_pretrained(stage, safe_serialization=True)
        processor.save_pretrained(stage)
        (stage / _MERGE_RECORD).write_text(json.dumps(dict(record), indent=2, default=str))  # last: complete

    build_once(path, build, marker=_MERGE_RECORD, what="the merged model")


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
