"""Shared fixtures: offline settings and tiny random models built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("INSPECT_DISPLAY", "none")
os.environ.pop("OPENAI_API_KEY", None)  # tests never reach a paid grader
# the same numbers on every CPU: dtype=auto is float32 whether or not this CPU has native bf16 (subprocesses inherit it)
os.environ["EM_TASKS_CPU_BF16"] = "0"


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_models import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_vlm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_models import build_tiny_gemma3_vlm

    return build_tiny_gemma3_vlm(tmp_path_factory.mktemp("tiny-gemma3-vlm"))
