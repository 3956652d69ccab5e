"""em-tasks: emergent-misalignment evaluations for text and vision-language models.

Notebook API (imported lazily, so ``import em_tasks`` stays light): :func:`load_model` and :func:`steer`.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["load_model", "steer", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "load_model":
        from em_tasks.api import load_model

        return load_model
    if name == "steer":
        from em_tasks.models.steering import steer

        return steer
    raise AttributeError(f"module 'em_tasks' has no attribute {name!r}")
