"""What inspect discovers through the ``inspect_ai`` entry point: em-tasks' tasks and model providers."""

# ruff: noqa: F401
from em_tasks.models.providers import em_hf
from em_tasks.tasks import multimodal_misalign, overrefusal, text_misalign
