"""Activation steering: direction files, layer selection, and hook context managers (add / ablate / clamp).

A direction file is safetensors with one vector per layer (``layer.<i>``, or one ``direction`` for any layer) and
metadata (base_model, layers, hidden_size, method, source, created). lm-eval's steered-model ``.pt`` files
(hookpoint -> steering_vector, steering_coefficient, action, bias) load too, with ``torch.load(weights_only=True)``.
``random:SEED`` is a random direction per layer — unit norm, or ``random:SEED@FILE`` with the norms of FILE's
vectors — the control that shows an effect is specific to a direction.

Modes on a layer's output h: ``add`` h + c·v; ``ablate`` h − (h·v̂)v̂; ``clamp`` h − (h·v̂)v̂ + c·v̂.
Hooks are registered with ``prepend=True`` (transformers adds its own capture hooks) and removed on exit.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from torch import nn

from em_tasks.models.layers import decoder_layers, hidden_size

Mode = Literal["add", "ablate", "clamp"]
"""add: h + coeff·v; ablate: remove h's component along v; clamp: set that component to coeff (lm-eval's clamp)."""
Positions = Literal["all", "generated"]
"""all: every token position; generated: only positions after the prompt (the prompt's own states stay untouched)."""
MODES: tuple[str, ...] = get_args(Mode)
POSITIONS: tuple[str, ...] = get_args(Positions)

__all__ = ["SteeringSpec", "Steering", "steer", "load_direction", "save_direction", "parse_layers", "decoder_layers"]


class SteeringError(ValueError):
    """A direction does not fit the model, or a steering setting is invalid."""


@dataclass(frozen=True)
class SteeringSpec:
    """How to steer: which direction, where, how strongly.

    ``coeff`` / ``mode`` left as None take the file's own settings (lm-eval ``.pt``) or ``1.0`` / ``add``; ``layers``
    None takes the file's ``best_layer`` metadata (or its hookpoints).
    """

    direction: str
    layers: str | int | tuple[int, ...] | list[int] | None = None  # a list is stored as a tuple
    coeff: float | None = None
    mode: Mode | None = None
    positions: Positions = "all"
    base_check: bool = True

    def __post_init__(self) -> None:
        if self.mode is not None and self.mode not in MODES:
            raise SteeringError(f"Unknown steering mode '{self.mode}'; choose one of {', '.join(MODES)}")
        if self.positions not in POSITIONS:
            raise SteeringError(f"positions must be one of {', '.join(POSITIONS)}, got '{self.positions}'")
        if isinstance(self.layers, list):
            object.__setattr__(self, "layers", tuple(self.layers))
        if self.coeff is not None and not math.isfinite(float(self.coeff)):
            raise SteeringError(f"coeff must be a finite number, got {self.coeff}")

    def describe(self) -> dict[str, Any]:
        return {"direction": self.direction, "layers": self.layers, "coeff": self.coeff, "mode": self.mode or "add",
                "positions": self.positions}


@dataclass
class LayerEdit:
    """One layer's steering: a vector and what to do with it."""

    vector: torch.Tensor
    mode: Mode
    coeff: float
    bias: torch.Tensor | None = None


@dataclass(frozen=True)
class Direction:
    """Loaded direction vectors by layer (``-1``: one vector for any layer), the file's metadata, and per-layer
    (action, coefficient, bias) settings from an lm-eval ``.pt`` file."""

    vectors: Mapping[int, torch.Tensor]
    metadata: Mapping[str, str] = field(default_factory=dict)
    settings: Mapping[int, tuple[str, float, torch.Tensor | None]] = field(default_factory=dict)

    def vector(self, layer: int) -> torch.Tensor:
        if layer in self.vectors:
            return self.vectors[layer]
        if -1 in self.vectors:
            return self.vectors[-1]
        raise SteeringError(
            f"The direction file has no vector for layer {layer}; it has layers {sorted(self.vectors)}. Pick one of "
            "those with -M layers=, or extract directions at that layer (em-tasks directions)."
        )


# --- layers -----------------------------------------------------------------------------------------------------


def parse_layers(value: str | int | Sequence[int] | None, num_layers: int) -> tuple[int, ...]:
    """``13``, ``"1,2,3"``, ``"10-20"`` (inclusive), ``"10:20"`` (end excluded), ``"all"`` or a list; negative
    indices count from the end. Raises for a layer out of range."""
    if value is None:
        raise SteeringError("No steering layers: pass -M layers=N (or 1,2,3 / 10-20 / all)")
    if isinstance(value, bool):
        raise SteeringError(f"layers must be integers, got {value!r}")
    items: list[int] = []
    if isinstance(value, int):
        items = [value]
    elif isinstance(value, str):
        text = value.strip().strip("[]()")
        if text == "all":
            items = list(range(num_layers))
        else:
            for part in (p.strip() for p in text.split(",") if p.strip()):
                m = re.fullmatch(r"(-?\d+)\s*([-:])\s*(-?\d+)", part)
                try:
                    if m:
                        lo, hi = int(m.group(1)), int(m.group(3))
                        items += list(range(lo, hi + 1 if m.group(2) == "-" else hi))
                    else:
                        items.append(int(part))
                except ValueError:
                    raise SteeringError(f"Cannot read layers '{value}': use 13, 1,2,3, 10-20, 10:20 or all") from None
    else:
        items = [int(v) for v in value]
    out = []
    for layer in items:
        index = layer + num_layers if layer < 0 else layer
        if not 0 <= index < num_layers:
            raise SteeringError(f"Layer {layer} is out of range: the model has {num_layers} decoder layers "
                                f"(0-{num_layers - 1}).")
        out.append(index)
    if not out:
        raise SteeringError(f"layers={value!r} selects no layer")
    return tuple(dict.fromkeys(out))


# --- direction files --------------------------------------------------------------------------------------------


def save_direction(
    path: str | Path,
    vectors: Mapping[int, torch.Tensor],
    *,
    base_model: str,
    method: str,
    source: str,
    extra: Mapping[str, str] | None = None,
) -> Path:
    """Write per-layer direction vectors (``layer.<i>``) to a safetensors file with metadata."""
    from safetensors.torch import save_file

    if not vectors:
        raise SteeringError("No vectors to save")
    sizes = {int(v.numel()) for v in vectors.values()}
    if len(sizes) != 1:
        raise SteeringError(f"All vectors must have the same size, got {sorted(sizes)}")
    tensors = {f"layer.{int(i)}": v.detach().float().reshape(-1).contiguous().cpu() for i, v in vectors.items()}
    metadata = {
        "base_model": str(base_model), "layers": ",".join(str(int(i)) for i in sorted(vectors)),
        "hidden_size": str(sizes.pop()), "method": method, "source": source,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "format": "em-tasks-direction/1",
        **{k: str(v) for k, v in (extra or {}).items()},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path


def load_direction(spec: str | Path | torch.Tensor | Mapping[int, torch.Tensor], *, hidden: int,
                   num_layers: int) -> Direction:
    """Read a direction: a safetensors file, an lm-eval ``.pt`` file, ``random:SEED[@FILE]``, a tensor (any layer)
    or a {layer: tensor} mapping. Checks the hidden size."""
    if isinstance(spec, torch.Tensor):
        direction = Direction({-1: spec.detach().reshape(-1).float()}, {"source": "tensor"})
    elif isinstance(spec, Mapping):
        direction = Direction({int(k): v.detach().reshape(-1).float() for k, v in spec.items()}, {"source": "mapping"})
    else:
        text = str(spec)
        if text.startswith("random:"):
            direction = _random_direction(text, hidden=hidden, num_layers=num_layers)
        else:
            path = Path(text).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"Direction file {path} not found. Make one with `em-tasks directions`, or use "
                                        "-M direction=random:SEED for a random control.")
            direction = _read_pt(path) if path.suffix in (".pt", ".pth") else _read_safetensors(path)
    where_from = direction.metadata.get("source") if not isinstance(spec, (str, Path)) else str(spec)
    if not direction.vectors:
        raise SteeringError(
            f"Direction {where_from} is empty: it holds no direction vector. Write one with `em-tasks directions` "
            "(or save_direction), or use -M direction=random:SEED for a random control."
        )
    for layer, vector in direction.vectors.items():
        if vector.numel() != hidden:
            where = f"layer {layer}" if layer >= 0 else "the direction"
            made_for = direction.metadata.get("base_model")
            raise SteeringError(
                f"Hidden-size mismatch: {where} has size {vector.numel()} but the model's residual stream is {hidden}"
                + (f"; the file was made for '{made_for}'" if made_for else "")
                + ". Use a direction extracted from this model."
            )
    for layer, vector in direction.vectors.items():
        check_vector(vector, where_from, layer)
        bias = direction.settings.get(layer, (None, None, None))[2]
        if bias is not None and not bool(torch.isfinite(bias).all()):
            raise SteeringError(f"Direction {where_from}, layer {layer}: its bias is not finite (NaN or inf). The file "
                                "is broken; write it again.")
    if all(not bool(v.any()) for v in direction.vectors.values()):
        raise SteeringError(
            f"Direction {where_from} is all zeros at every layer ({_layer_list(direction.vectors)}): adding it "
            "changes nothing (the base model) and ablating it cannot normalise it. The extraction that wrote it "
            "found no difference; check its inputs (em-tasks directions) or pass another direction."
        )
    return direction


def check_vector(vector: torch.Tensor, where: str, layer: int) -> None:
    """A direction vector must be finite (NaN / inf would poison every activation it touches)."""
    if not bool(torch.isfinite(vector).all()):
        bad = int((~torch.isfinite(vector)).sum())
        raise SteeringError(
            f"Direction {where}, {_layer_name(layer)}: the vector is not finite ({bad} of {vector.numel()} values are "
            "NaN or inf). The extraction that wrote it went wrong (e.g. activations overflowed in float16); extract "
            "it again, in float32."
        )


def _layer_name(layer: int) -> str:
    return f"layer {layer}" if layer >= 0 else "the any-layer vector"


def _layer_list(vectors: Mapping[int, torch.Tensor]) -> str:
    return ", ".join(_layer_name(i).removeprefix("layer ") for i in sorted(vectors))


def _read_safetensors(path: Path) -> Direction:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            vectors: dict[int, torch.Tensor] = {}
            keys = list(f.keys())
            for key in keys:
                m = re.fullmatch(r"(?:layer|layers)\.(\d+)", key)
                if m:
                    vectors[int(m.group(1))] = f.get_tensor(key).reshape(-1).float()
                elif key == "direction":
                    vectors[-1] = f.get_tensor(key).reshape(-1).float()
    except Exception as ex:  # safetensors raises its own error types
        size = path.stat().st_size
        empty = " The file is empty (0 bytes): the write that made it did not finish." if size == 0 else ""
        raise SteeringError(f"Cannot read direction file {path} as safetensors: {ex}.{empty}") from ex
    if not vectors:
        what = f"holds only {', '.join(repr(k) for k in keys[:5])}" if keys else "is empty: it holds no tensors"
        raise SteeringError(
            f"Direction file {path} {what}; expected 'layer.<i>' tensors (or one 'direction'). Write it with "
            "`em-tasks directions` or save_direction."
        )
    return Direction(vectors, metadata)


def _read_pt(path: Path) -> Direction:
    """lm-eval's steered-model format: {hookpoint: {steering_vector, steering_coefficient, action, bias}}."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as ex:
        raise SteeringError(f"Cannot load {path} with torch.load(weights_only=True): {ex}. em-tasks never unpickles "
                            "arbitrary objects; save plain tensors/dicts or use safetensors.") from ex
    if isinstance(data, list):  # the list form: [{"hookpoint": ..., ...}, ...]
        data = {entry["hookpoint"]: entry for entry in data}
    if not isinstance(data, Mapping):
        raise SteeringError(f"{path}: expected a dict of hookpoint -> steering settings, got {type(data).__name__}")
    vectors, settings = {}, {}
    for hookpoint, info in data.items():
        m = re.search(r"(?:^|\.)(?:layers|h)\.(\d+)$", str(hookpoint))
        if not m:
            raise SteeringError(f"{path}: hookpoint '{hookpoint}' is not a decoder layer (expected e.g. 'layers.13')")
        layer = int(m.group(1))
        action = str(info.get("action", "add"))
        if action not in ("add", "clamp"):
            raise SteeringError(f"{path}: hookpoint '{hookpoint}' has action '{action}'; lm-eval knows add and clamp")
        vectors[layer] = torch.as_tensor(info["steering_vector"]).reshape(-1).float()
        bias = info.get("bias")
        settings[layer] = (action, float(info.get("steering_coefficient", 1.0)),
                           None if bias is None else torch.as_tensor(bias).reshape(-1).float())
    return Direction(vectors, {"source": str(path), "format": "lm-eval-steer"}, settings)


def _random_direction(text: str, *, hidden: int, num_layers: int) -> Direction:
    m = re.fullmatch(r"random:(\d+)(?:@(.+))?", text)
    if not m:
        raise SteeringError(f"Cannot read '{text}': use random:SEED or random:SEED@DIRECTION_FILE")
    seed = int(m.group(1))
    like = load_direction(m.group(2), hidden=hidden, num_layers=num_layers) if m.group(2) else None
    generator = torch.Generator().manual_seed(seed)
    vectors = {}
    layers = sorted(like.vectors) if like else range(num_layers)
    for layer in layers:
        v = torch.randn(hidden, generator=generator)
        norm = float(like.vectors[layer].norm()) if like else 1.0
        vectors[layer] = v / v.norm() * norm
    meta = {"source": text, "method": "random"}
    if like:
        meta.update({k: like.metadata[k] for k in ("base_model", "best_layer") if k in like.metadata})
    return Direction(vectors, meta)


# --- hooks ------------------------------------------------------------------------------------------------------


class Steering:
    """Steering bound to a model: resolved layers and per-layer edits; :meth:`active` installs the hooks."""

    def __init__(self, model: Any, spec: SteeringSpec, base_names: Sequence[str] = (),
                 vectors: torch.Tensor | Mapping[int, torch.Tensor] | None = None) -> None:
        self.model = model
        self.spec = spec
        self.layers = decoder_layers(model)
        direction = load_direction(spec.direction if vectors is None else vectors, hidden=hidden_size(model),
                                   num_layers=len(self.layers))
        made_for = direction.metadata.get("base_model")
        if spec.base_check and made_for and base_names:
            from em_tasks.models.lora import same_base

            if not same_base(made_for, base_names):
                raise SteeringError(
                    f"Direction {spec.direction} was made for '{made_for}', not for this model ({base_names[0]}). "
                    "Extract a direction from this model (em-tasks directions), or pass -M base_check=false if it "
                    "is the same model under another name."
                )
        layer_arg = spec.layers
        if layer_arg is None:
            if direction.settings:
                layer_arg = tuple(sorted(direction.settings))
            elif "best_layer" in direction.metadata:
                layer_arg = int(direction.metadata["best_layer"])
        self.layer_ids = parse_layers(layer_arg, len(self.layers))
        self.edits: dict[int, LayerEdit] = {}
        for layer in self.layer_ids:
            mode, coeff, bias = direction.settings.get(layer, ("add", 1.0, None))
            edit = LayerEdit(direction.vector(layer), spec.mode or mode,
                             coeff if spec.coeff is None else float(spec.coeff), bias)
            if not bool(edit.vector.any()):
                raise SteeringError(
                    f"Direction {spec.direction}, layer {layer}: the vector is all zeros. "
                    + ("With mode=add it changes nothing: the eval would silently be the base model. "
                       if edit.mode == "add" else
                       f"With mode={edit.mode} it cannot be normalised to a unit direction. ")
                    + "Pick layers where the file has a real direction "
                    f"({_layer_list({i: v for i, v in direction.vectors.items() if v.any()})}), "
                    "or extract it again."
                )
            self.edits[layer] = edit

    def describe(self) -> dict[str, Any]:
        return {**self.spec.describe(), "layers": list(self.layer_ids),
                "mode": sorted({e.mode for e in self.edits.values()})}

    @contextmanager
    def active(self) -> Iterator[None]:
        """Install the hooks for the duration of the block; removal restores the model exactly."""
        handles = []
        try:
            for layer in self.layer_ids:
                hook = _make_hook(self.edits[layer], self.spec.positions, layer)
                handles.append(self.layers[layer].register_forward_hook(hook, prepend=True, with_kwargs=True))
            yield
        finally:
            for handle in handles:
                handle.remove()


def _make_hook(edit: LayerEdit, positions: str, layer: int) -> Any:
    cast: dict[tuple[Any, Any], tuple[torch.Tensor, torch.Tensor | None]] = {}

    def hook(module: nn.Module, args: Any, kwargs: dict[str, Any], output: Any) -> Any:
        hidden = output[0] if isinstance(output, tuple) else output
        if positions == "generated" and _is_prompt_pass(module, kwargs, hidden, layer):
            return output
        key = (hidden.dtype, hidden.device)
        if key not in cast:
            bias = edit.bias.to(hidden.device, hidden.dtype) if edit.bias is not None else None
            cast[key] = (edit.vector.to(hidden.device, hidden.dtype), bias)
        vector, bias = cast[key]
        steered = apply_edit(hidden, vector, edit.mode, edit.coeff, bias)
        return (steered, *output[1:]) if isinstance(output, tuple) else steered

    return hook


def apply_edit(h: torch.Tensor, v: torch.Tensor, mode: str, coeff: float,
               bias: torch.Tensor | None = None) -> torch.Tensor:
    """One steering edit on activations ``h`` (..., hidden)."""
    if mode == "add":
        return h + coeff * v
    unit = v / v.norm()
    if bias is not None:
        h = h - bias
    projected = h - (h @ unit).unsqueeze(-1) * unit
    if mode == "clamp":
        projected = projected + coeff * unit
    if bias is not None:
        projected = projected + bias
    return projected


def _is_prompt_pass(module: nn.Module, kwargs: dict[str, Any], hidden: torch.Tensor, layer: int) -> bool:
    """Whether this forward pass processes the prompt (no cache, or the cache holds only this pass's tokens)."""
    cache = kwargs.get("cache", kwargs.get("past_key_values"))
    if cache is None or not hasattr(cache, "get_seq_length"):
        return True
    index = getattr(getattr(module, "self_attn", None), "layer_idx", layer)
    return int(cache.get_seq_length(index)) <= hidden.shape[-2]


@contextmanager
def steer(
    model: Any,
    direction: str | Path | torch.Tensor | Mapping[int, torch.Tensor],
    layers: str | int | Sequence[int] | None = None,
    coeff: float | None = None,
    mode: str | None = None,
    positions: str = "all",
) -> Iterator[Steering]:
    """Steer ``model`` (an :class:`~em_tasks.models.backend.HFBackend` or a transformers model) inside a block.

    ``direction`` is a direction file, ``random:SEED``, a tensor (every chosen layer) or a {layer: tensor} mapping.
    ``coeff`` / ``mode`` default to the file's own settings (lm-eval ``.pt``), else 1.0 / ``add``.

    >>> with steer(backend, "dirs/em.safetensors", layers=13, coeff=-8):   # doctest: +SKIP
    ...     backend.generate_batch(conversations, GenParams(max_new_tokens=64))
    """
    target = model if isinstance(model, nn.Module) else model.model
    tensors = direction if isinstance(direction, (torch.Tensor, Mapping)) else None
    spec = SteeringSpec(direction="<tensor>" if tensors is not None else str(direction),
                        layers=layers, coeff=coeff, mode=mode,
                        positions=positions)
    steering = Steering(target, spec, vectors=tensors)
    with steering.active():
        yield steering
