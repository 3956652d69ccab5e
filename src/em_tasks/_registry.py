"""What inspect discovers through the ``inspect_ai`` entry point: em-tasks' tasks and model providers."""

# ruff: noqa: F401
from em_tasks.agentic.task import agentic_misalign
from em_tasks.models.providers import em_hf, em_lora, em_steer
from em_tasks.tasks import multimodal_misalign, overrefusal, text_misalign
