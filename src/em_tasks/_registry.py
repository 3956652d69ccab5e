"""What inspect discovers through the ``inspect_ai`` entry point: em-tasks' tasks and model providers."""

# ruff: noqa: F401
from em_tasks.models.providers import em_hf
