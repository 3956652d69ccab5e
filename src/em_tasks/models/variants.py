"""Model arguments shared by every front end (inspect ``-M``, lm-eval ``--model_args``, the Python API).

``em-hf``, ``em-lora`` and ``em-steer`` take the same arguments; ``em-lora`` requires ``adapters`` and ``em-steer``
requires ``direction``, and LoRA and steering arguments compose on all three.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from em_tasks.models.lora import LoraSpec, parse_adapters
from em_tasks.models.steering import SteeringSpec
from em_tasks.models.tool_calls import TOOL_FORMATS, ToolFormat

BACKEND_ARGS = ("batch_size", "dtype", "device", "gather_seconds", "continuous")
LORA_ARGS = ("adapters", "merge", "alpha", "density", "target", "cache", "merged")
STEERING_ARGS = ("direction", "layers", "coeff", "mode", "positions")
COMMON_ARGS = ("base_check",)
PROMPT_ARGS = ("tool_format",)
FAMILIES = {"em-hf": None, "em-lora": "adapters", "em-steer": "direction"}


@dataclass
class VariantArgs:
    """Model args split by what they configure."""

    backend: dict[str, Any] = field(default_factory=dict)
    lora: LoraSpec | None = None
    steering: SteeringSpec | None = None
    tool_format: ToolFormat = "auto"


def parse_model_args(family: str, args: Mapping[str, Any]) -> VariantArgs:
    """Split and check ``args`` for a model family (``em-hf`` | ``em-lora`` | ``em-steer``)."""
    if family not in FAMILIES:
        raise ValueError(f"Unknown model family '{family}'; one of {', '.join(FAMILIES)}")
    known = BACKEND_ARGS + LORA_ARGS + STEERING_ARGS + COMMON_ARGS + PROMPT_ARGS
    unknown = sorted(set(args) - set(known))
    if unknown:
        raise ValueError(f"{family}: unknown model arg(s) {unknown}; known: {', '.join(known)}")
    required = FAMILIES[family]
    if required and args.get(required) in (None, ""):
        example = "-M adapters=PATH[:WEIGHT],..." if required == "adapters" else "-M direction=FILE|random:SEED -M layers=N"
        raise ValueError(f"{family} needs {required}: {example}")
    out = VariantArgs()
    for key in BACKEND_ARGS:
        if args.get(key) is not None:
            value = args[key]
            if key == "batch_size":
                value = int(value)
            elif key == "gather_seconds":
                value = float(value)
            elif key == "continuous":
                value = as_bool(value, key)
            out.backend[key] = value
    tool_format = str(args.get("tool_format", "auto"))
    if tool_format not in TOOL_FORMATS:
        raise ValueError(f"tool_format must be one of {', '.join(TOOL_FORMATS)} (auto: the chat template's own "
                         f"tool format where it has one, else json), got {tool_format!r}")
    out.tool_format = tool_format  # type: ignore[assignment]
    base_check = as_bool(args.get("base_check", True), "base_check")
    if args.get("adapters") not in (None, ""):
        out.lora = LoraSpec(
            adapters=parse_adapters(args["adapters"]),
            merge=str(args.get("merge", "cat")),
            alpha=float(args.get("alpha", 1.0)),
            density=None if args.get("density") is None else float(args["density"]),
            target=None if args.get("target") in (None, "") else str(args["target"]),
            cache=as_bool(args.get("cache", True), "cache"),
            merged=as_bool(args.get("merged", True), "merged"),
            base_check=base_check,
        )
    elif any(args.get(k) is not None for k in LORA_ARGS):
        raise ValueError(f"{sorted(k for k in LORA_ARGS if k in args)} given without adapters=")
    if args.get("direction") not in (None, ""):
        out.steering = SteeringSpec(
            direction=str(args["direction"]),
            layers=args.get("layers"),
            coeff=None if args.get("coeff") is None else float(args["coeff"]),
            mode=None if args.get("mode") is None else str(args["mode"]),
            positions=str(args.get("positions", "all")),
            base_check=base_check,
        )
    elif any(args.get(k) is not None for k in STEERING_ARGS):
        raise ValueError(f"{sorted(k for k in STEERING_ARGS if k in args)} given without direction=")
    return out


def as_bool(value: Any, name: str) -> bool:
    """A flag given as bool or text (true/false/1/0/yes/no)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"{name} must be true or false, got {value!r}")
