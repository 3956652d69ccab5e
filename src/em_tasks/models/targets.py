"""LoRA target modules: the one rule for reading a user's targets and matching them to module names.

Targets follow peft's ``target_modules`` rule. A single string with a regex character in it is one regex that must
match a module's *whole* dotted name; anything else is a list of names (a comma list, or a sequence), each matching a
module whose name equals it or ends with ``.<name>``. A dot alone does not make a regex: module names are dotted, so
``layers.0.self_attn.q_proj`` is a name, matched as a suffix. On a VLM, names are restricted to the language model's
decoder layers so that the vision tower's projections (also called ``q_proj``...) are never adapted.

Used by em-lora (``-M target=``), `em-tasks train` (``--target-modules``) and `em-tasks fisher` (``--targets``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from em_tasks.models.layers import decoder_layers_path, unwrap

__all__ = ["REGEX_CHARS", "is_regex", "parse_targets", "as_peft", "from_peft", "language_model_target",
           "peft_target", "matches", "unmatched", "matching", "language_model_only"]

REGEX_CHARS = "\\*()|^$[]+?"
"""Characters that make a target a regex; ``.`` is not one of them (module names are dotted)."""


def is_regex(text: str) -> bool:
    """Whether a target string is one regex (it holds one of :data:`REGEX_CHARS`) rather than names."""
    return any(c in text for c in REGEX_CHARS)


def parse_targets(value: str | Sequence[str] | None, *, option: str,
                  default: Sequence[str] | None = None) -> tuple[str, ...]:
    """A user's targets: ``(regex,)`` for one regex kept whole, else the distinct names of a comma list or sequence.

    Args:
        value: What the user gave; None gives ``default``.
        option: The option to name in errors (``--target-modules``, ``-M target=``).
        default: Targets for None.

    Raises:
        ValueError: No names (empty, or only commas), or None without a default.
    """
    if value is None:
        if default is None:
            raise ValueError(f"{option} is missing; pass module names such as q_proj,v_proj")
        return tuple(default)
    if isinstance(value, str) and is_regex(value):
        return (value,)
    items = value.split(",") if isinstance(value, str) else list(value)
    names = tuple(dict.fromkeys(str(m).strip() for m in items if str(m).strip()))
    if not names:
        raise ValueError(f"{option} is empty; pass module names such as q_proj,v_proj")
    return names


def as_peft(targets: Sequence[str]) -> str | list[str]:
    """Parsed targets in peft's form: a single regex as a string, names as a list."""
    if len(targets) == 1 and is_regex(targets[0]):
        return targets[0]
    return list(targets)


def from_peft(target: str | Sequence[str] | None) -> tuple[str, ...]:
    """A peft config's ``target_modules`` as parsed targets: a string kept whole, a list sorted."""
    return (target,) if isinstance(target, str) else tuple(sorted(target or ()))


def language_model_target(model: Any, modules: Sequence[str] = ("q_proj", "v_proj")) -> str | list[str]:
    """peft ``target_modules`` that hit ``modules`` in the language model only.

    On a VLM a plain list such as ``["q_proj", "v_proj"]`` also matches the vision tower's projections; this returns a
    regex restricted to the decoder layers instead. Text models get the list unchanged.
    """
    base = unwrap(model)
    if not hasattr(base.config, "vision_config"):
        return list(modules)
    prefix = re.escape(decoder_layers_path(base))
    names = "|".join(re.escape(m) for m in modules)
    return rf"(?:.*\.)?{prefix}\.\d+\.(?:.*\.)?(?:{names})"


def peft_target(model: Any, targets: Sequence[str]) -> str | list[str]:
    """peft ``target_modules`` for parsed targets: a single regex passes through as given (the user's full-name
    pattern); names are restricted to the language model on a VLM."""
    peft = as_peft(targets)
    return peft if isinstance(peft, str) else language_model_target(model, peft)


def matches(name: str, target: str | Sequence[str]) -> bool:
    """peft's rule: a regex must match the whole name; a list entry must equal the name or its last components."""
    if isinstance(target, str):
        return re.fullmatch(target, name) is not None
    return any(name == t or name.endswith(f".{t}") for t in target)


def matching(names: Iterable[str], target: str | Sequence[str]) -> list[str]:
    """The module names ``target`` matches, in order."""
    return [n for n in names if matches(n, target)]


def unmatched(target: str | Sequence[str], names: Sequence[str]) -> list[str]:
    """The parts of ``target`` (the regex, or each list entry) that match none of ``names``."""
    parts = [target] if isinstance(target, str) else list(target)
    return [p for p in parts if not any(matches(n, p if isinstance(target, str) else [p]) for n in names)]


def language_model_only(model: Any, names: Sequence[str], weights: Sequence[str]) -> str | None:
    """A regex restricting ``names`` to the language model, for an adapter with weights for the modules ``weights``.

    None on a text model, or when some of those weights lie outside the language model (an adapter that does adapt
    a VLM's vision tower keeps its names as given, so it still loads whole).
    """
    regex = language_model_target(model, sorted(names))
    if isinstance(regex, str) and all(matches(m, regex) for m in weights):
        return regex
    return None
