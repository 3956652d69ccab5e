"""Registration of em-tasks' inspect model providers (the heavy modules import only when a model is made)."""

from __future__ import annotations

from typing import Any

from inspect_ai.model import modelapi


@modelapi(name="em-hf")
def em_hf() -> type[Any]:
    """``em-hf/<default | default-vlm | file.gguf | folder | hub id>``: the shared HF backend."""
    from em_tasks.models.inspect_api import EmHFAPI

    return EmHFAPI


@modelapi(name="em-lora")
def em_lora() -> type[Any]:
    """``em-lora/<base> -M adapters=PATH[:WEIGHT],... [-M merge= alpha= cache=]``: merged LoRA fine-tunes."""
    from em_tasks.models.inspect_api import EmLoraAPI

    return EmLoraAPI


@modelapi(name="em-steer")
def em_steer() -> type[Any]:
    """``em-steer/<base> -M direction=FILE|random:SEED -M layers=N -M coeff=C -M mode=add|ablate|clamp``."""
    from em_tasks.models.inspect_api import EmSteerAPI

    return EmSteerAPI
