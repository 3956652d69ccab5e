"""On-disk caches under concurrency: two processes building the same entry at once both succeed, one build runs,
one complete entry is left and no temporary folder; a complete entry is never rebuilt or replaced."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from em_tasks import atomic
from em_tasks.models import sources

ROOT = Path(__file__).resolve().parents[1]


def run_together(script: str, n: int, tmp_path: Path, timeout: float = 120) -> list[subprocess.CompletedProcess]:
    """Start ``n`` copies of ``script`` at once (each waits at a barrier until all have started)."""
    barrier = tmp_path / "barrier"
    barrier.mkdir(exist_ok=True)
    prelude = textwrap.dedent(f"""
        import logging, os, sys, time
        from pathlib import Path
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
        WORKER = int(sys.argv[1])
        barrier = Path({str(barrier)!r})
        (barrier / f"ready-{{WORKER}}").touch()
        while len(list(barrier.glob("ready-*"))) < {n}:
            time.sleep(0.01)
    """)
    env = {**os.environ, "EM_TASKS_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    code = prelude + textwrap.dedent(script)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(i)], env=env, cwd=tmp_path, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(n)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    for r in results:
        assert r.returncode == 0, r.stderr[-3000:]
    return results


def entries(folder: Path) -> list[str]:
    """What a user sees in a cache folder (lock files are hidden and empty)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


# --- the helper itself ------------------------------------------------------------------------------------------

HELPER_SCRIPT = """
    from em_tasks.atomic import build_once

    out = Path(os.environ["EM_TASKS_CACHE"]) / "things" / "entry"

    def build(stage):
        with open(out.parent.parent / "builds.log", "a") as log:
            log.write(f"{WORKER}\\n")
        stage.mkdir()
        (stage / "data.txt").write_text(f"built by {WORKER}")
        time.sleep(2.0)  # long enough for the other process to arrive and wait
        (stage / "done.json").write_text("{}")

    build_once(out, build, marker="done.json", what="the test entry")
    print((out / "data.txt").read_text())
"""


def test_two_processes_build_one_entry_once(tmp_path):
    results = run_together(HELPER_SCRIPT, 2, tmp_path)
    cache = tmp_path / "cache"
    assert (cache / "builds.log").read_text().count("\n") == 1  # one build ran
    assert entries(cache / "things") == ["entry"]  # no temporary folder left
    assert (cache / "things" / "entry" / "done.json").is_file()
    outputs = {r.stdout.strip() for r in results}
    assert len(outputs) == 1 and outputs.pop().startswith("built by")  # both read the same entry
    assert any("Waiting for another process to finish building the test entry" in r.stderr for r in results)


def test_complete_entry_is_never_rebuilt_or_replaced(tmp_path):
    out = tmp_path / "entry"
    out.mkdir()
    (out / "done.json").write_text("{}")
    inode = out.stat().st_ino

    def build(stage):
        raise AssertionError("rebuilt a complete entry")

    with atomic.cache_lock(out):  # even while another holder has the lock, a complete entry is returned at once
        assert atomic.build_once(out, build, marker="done.json") == out
    assert out.stat().st_ino == inode


def test_incomplete_leftovers_are_replaced(tmp_path):
    out = tmp_path / "entry"
    out.mkdir()
    (out / "half-written").write_text("x")  # no marker: a build that died before this rule
    stale = tmp_path / ".entry.building-dead"
    stale.mkdir()  # the staging folder of a killed build

    def build(stage):
        stage.mkdir()
        (stage / "done.json").write_text("{}")

    atomic.build_once(out, build, marker="done.json")
    assert sorted(p.name for p in out.iterdir()) == ["done.json"]
    assert entries(tmp_path) == ["entry"]


def test_failed_build_leaves_nothing(tmp_path):
    out = tmp_path / "entry"

    def build(stage):
        stage.mkdir()
        (stage / "part").write_text("x")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic.build_once(out, build, marker="done.json")
    assert entries(tmp_path) == []

    with pytest.raises(RuntimeError, match="did not produce a folder with done.json"):
        atomic.build_once(out, lambda stage: stage.mkdir(), marker="done.json")
    assert entries(tmp_path) == []


def test_file_entries(tmp_path):
    out = tmp_path / "model.gguf"
    assert atomic.build_once(out, lambda stage: stage.write_bytes(b"GGUF")) == out
    assert out.read_bytes() == b"GGUF" and entries(tmp_path) == ["model.gguf"]


# --- every cache goes through it --------------------------------------------------------------------------------


def test_source_caches_use_the_helper(tmp_path, monkeypatch):
    monkeypatch.setenv("EM_TASKS_CACHE", str(tmp_path / "cache"))
    calls: list[tuple[Path, str | None]] = []

    def record(out, build, *, marker=None, what=None):
        calls.append((Path(out), marker))
        return Path(out)

    monkeypatch.setattr(sources, "build_once", record)
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    sources.convert_gguf(gguf)
    sources.default_gguf()
    monkeypatch.setattr(sources, "default_text_model", lambda: tmp_path / "text")
    sources.default_vlm()
    cache = tmp_path / "cache"
    assert calls[0][0].parent == cache / "gguf" and calls[0][1] == sources.BUILD_MARKER
    assert calls[1] == (cache / "smollm2" / Path(sources.SMOLLM2_GGUF).name, None)
    assert calls[2] == (cache / "models" / f"default-vlm-v{sources._BUILD_VERSION}", sources.BUILD_MARKER)


# --- real caches, two processes ---------------------------------------------------------------------------------


def test_two_processes_merge_the_same_adapter(tiny_llama_dir, tmp_path, monkeypatch):
    from em_tasks.models.backend import HFBackend
    from em_tasks.models.lora import LoraSpec, parse_adapters, random_adapter

    base = HFBackend(str(tiny_llama_dir), dtype="float32")
    adapter = random_adapter(base.model, tmp_path / "adapter", rank=4, seed=5, scale=0.2,
                             base_name=str(tiny_llama_dir))
    script = f"""
        from em_tasks.models.backend import HFBackend
        from em_tasks.models.lora import LoraSpec, parse_adapters
        spec = LoraSpec(parse_adapters({str(adapter)!r}))
        backend = HFBackend({str(tiny_llama_dir)!r}, dtype="float32", lora=spec)
        print(backend.lora_info["merge_cache"])
    """
    results = run_together(script, 2, tmp_path)
    assert {r.stdout.strip() for r in results} <= {"written", "hit"}
    merged = tmp_path / "cache" / "merged"
    assert len(entries(merged)) == 1 and not entries(merged)[0].startswith(".")
    assert (merged / entries(merged)[0] / "em_merge.json").is_file()

    monkeypatch.setenv("EM_TASKS_CACHE", str(tmp_path / "cache"))
    spec = LoraSpec(parse_adapters(str(adapter)))
    cached = HFBackend(str(tiny_llama_dir), dtype="float32", lora=spec)
    assert cached.lora_info["merge_cache"] == "hit"
    fresh = HFBackend(str(tiny_llama_dir), dtype="float32", lora=LoraSpec(parse_adapters(str(adapter)), cache=False))
    ids = torch.tensor([[1, 5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.allclose(cached.model(input_ids=ids).logits, fresh.model(input_ids=ids).logits, atol=1e-5)


def test_two_processes_build_the_default_vlm(tiny_llama_dir, tmp_path):
    """The real default-vlm build (LLaVA around a text model), on the tiny Llama instead of SmolLM2."""
    script = f"""
        from em_tasks.models import sources
        sources.default_text_model = lambda: Path({str(tiny_llama_dir)!r})
        print(sources.default_vlm())
    """
    results = run_together(script, 2, tmp_path)
    assert len({r.stdout.strip() for r in results}) == 1
    models = tmp_path / "cache" / "models"
    assert entries(models) == [f"default-vlm-v{sources._BUILD_VERSION}"]
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(models / entries(models)[0])
    assert config.model_type == "llava"
