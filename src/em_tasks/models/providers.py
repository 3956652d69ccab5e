"""Registration of em-tasks' inspect model providers (the heavy modules import only when a model is made)."""

from __future__ import annotations

from typing import Any

from inspect_ai.model import modelapi


@modelapi(name="em-hf")
def em_hf() -> type[Any]:
    """``em-hf/<default | default-vlm | file.gguf | folder | hub id>``: the shared HF backend."""
    from em_tasks.models.inspect_api import EmHFAPI

    return EmHFAPI
