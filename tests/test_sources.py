"""Model sources: the default VLM build on an empty cache, and GGUF cache keys."""

from __future__ import annotations

from PIL import Image

from em_tasks.models import sources
from em_tasks.models.backend import GenParams, HFBackend


def test_default_vlm_builds_on_an_empty_cache(tiny_llama_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("EM_TASKS_CACHE", str(tmp_path / "fresh"))
    monkeypatch.setattr(sources, "default_text_model", lambda: tiny_llama_dir)
    source = sources.resolve_source("default-vlm")
    assert "UNTRAINED" in source.info["note"]
    backend = HFBackend(source.path, dtype="float32")
    assert backend.is_vlm
    prompt = [{"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (32, 32))},
                                            {"type": "text", "text": "what is this"}]}]
    assert backend.generate_batch([prompt], GenParams(max_new_tokens=3, temperature=0))[0].output_tokens == 3
    assert sources.resolve_source("default-vlm").path == source.path  # built once, then reused
