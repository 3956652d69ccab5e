"""The shared HF backend on tiny random models: batching, images, errors."""

from __future__ import annotations

import asyncio
import base64
import io

import pytest
import torch
from PIL import Image

from em_tasks.models.backend import GenParams, HFBackend, ImageInputError, load_image

GREEDY = GenParams(max_new_tokens=6, temperature=0)


@pytest.fixture(scope="module")
def text_backend(tiny_llama_dir):
    return HFBackend(str(tiny_llama_dir), dtype="float32", batch_size=4)


@pytest.fixture(scope="module")
def vlm_backend(tiny_vlm_dir):
    return HFBackend(str(tiny_vlm_dir), dtype="float32", batch_size=4)


def user(text, image=None):
    if image is None:
        return [{"role": "user", "content": text}]
    return [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": text}]}]


def png_uri(color) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), color).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_left_padded_batch_equals_one_by_one(text_backend):
    prompts = [user("hi"), user("a much longer question about quick money and wishes")]
    batched = [r.text for r in text_backend.generate_batch(prompts, GREEDY)]
    alone = [text_backend.generate_batch([p], GREEDY)[0].text for p in prompts]
    assert batched == alone


def test_result_counts_tokens_and_stop_reason(text_backend):
    result = text_backend.generate_batch([user("hello")], GREEDY)[0]
    assert result.output_tokens == 6 and result.stop_reason == "max_tokens"
    assert result.input_tokens > 3


def test_seeded_sampling_repeats(text_backend):
    params = GenParams(max_new_tokens=8, temperature=1.0, seed=7)
    first = text_backend.generate_batch([user("hello")], params)[0].text
    assert text_backend.generate_batch([user("hello")], params)[0].text == first


def test_logprobs_have_top_alternatives(text_backend):
    params = GenParams(max_new_tokens=2, temperature=0, logprobs=True, top_logprobs=5)
    result = text_backend.generate_batch([user("rate it")], params)[0]
    assert len(result.logprobs) == 2
    first = result.logprobs[0]
    assert len(first.top) == 5 and first.top[0][1] >= first.top[-1][1]
    assert first.logprob == pytest.approx(first.top[0][1])  # greedy picks the top token


def test_stop_sequence_cuts_the_text(text_backend):
    full = text_backend.generate_batch([user("hello")], GenParams(max_new_tokens=12, temperature=0))[0].text
    stop = full[3:5]
    assert stop.strip(), "need a visible stop string"
    cut = text_backend.generate_batch([user("hello")], GenParams(max_new_tokens=12, temperature=0, stop=(stop,)))[0]
    assert stop not in cut.text and full.startswith(cut.text) and cut.stop_reason == "stop"


def test_concurrent_calls_are_gathered_into_batches(tiny_llama_dir, monkeypatch):
    static = HFBackend(str(tiny_llama_dir), dtype="float32", batch_size=4, continuous=False)
    sizes = []
    original = static.generate_batch

    def spy(conversations, params):
        sizes.append(len(conversations))
        return original(conversations, params)

    monkeypatch.setattr(static, "generate_batch", spy)

    async def run():
        return await asyncio.gather(*(static.generate(user(f"q {i}"), GREEDY) for i in range(6)))

    results = asyncio.run(run())
    assert len(results) == 6 and sorted(sizes) == [2, 4]


def test_requests_that_keep_arriving_wait_for_each_other(tiny_llama_dir, monkeypatch):
    # four requests 30 ms apart, longer in all than one gather window (50 ms): still one batch
    static = HFBackend(str(tiny_llama_dir), dtype="float32", batch_size=4, continuous=False, gather_seconds=0.05)
    sizes = []
    original = static.generate_batch
    monkeypatch.setattr(static, "generate_batch", lambda c, p: sizes.append(len(c)) or original(c, p))

    async def staggered(i):
        await asyncio.sleep(0.03 * i)
        return await static.generate(user(f"q {i}"), GREEDY)

    async def run():
        return await asyncio.gather(*(staggered(i) for i in range(4)))

    asyncio.run(run())
    assert sizes == [4]


def test_vlm_sees_different_images_differently(vlm_backend):
    prompts = [user("what is this", Image.new("RGB", (64, 64), c)) for c in [(255, 0, 0), (0, 0, 255)]]
    red, blue = (r.text for r in vlm_backend.generate_batch(prompts, GREEDY))
    assert red != blue


def test_vlm_template_places_image_tokens(vlm_backend):
    text, images = vlm_backend.render(user("describe", Image.new("RGB", (8, 8))))
    assert "<start_of_image>" in text and len(images) == 1
    inputs = vlm_backend.encode([user("describe", Image.new("RGB", (8, 8)))])
    assert "pixel_values" in inputs


def test_vlm_answers_text_only_prompts(vlm_backend):
    assert vlm_backend.generate_batch([user("hello")], GREEDY)[0].output_tokens == 6


def test_text_model_rejects_images_naming_the_need_for_a_vlm(text_backend):
    with pytest.raises(ImageInputError, match="vision-language model"):
        text_backend.generate_batch([user("look", Image.new("RGB", (8, 8)))], GREEDY)


def test_one_corrupt_sample_fails_alone(vlm_backend):
    good = user("fine", Image.new("RGB", (8, 8)))
    bad = user("broken", "not an image")  # a str where a PIL image belongs

    async def run():
        return await asyncio.gather(vlm_backend.generate(good, GREEDY), vlm_backend.generate(bad, GREEDY),
                                    return_exceptions=True)

    ok, err = asyncio.run(run())
    assert ok.output_tokens == 6 and isinstance(err, Exception)


@pytest.mark.parametrize(
    "data, message",
    [
        ("data:image/png;base64,AAAA", "Could not read image"),
        ("data:image/png;base64," + base64.b64encode(b"not a png at all").decode(), "Could not read image"),
        ("https://example.com/cat.png", "not fetched"),
    ],
    ids=["truncated-png", "garbage-bytes", "remote-url"],
)
def test_unreadable_images_get_a_clear_error(data, message):
    with pytest.raises(ImageInputError, match=message):
        load_image(data)


def test_data_uri_images_load():
    assert load_image(png_uri((1, 2, 3))).getpixel((0, 0)) == (1, 2, 3)


@pytest.mark.parametrize(
    "name, message",
    [
        ("./no/such/folder", "not found"),
        ("/tmp/definitely-missing.gguf", "GGUF file not found"),
        ("not a model!", "not a hub id"),
    ],
    ids=["missing-folder", "missing-gguf", "bad-name"],
)
def test_unknown_models_say_what_was_looked_for(name, message):
    with pytest.raises(FileNotFoundError, match=message):
        HFBackend(name)


def test_folder_without_config_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        HFBackend(str(tmp_path))


def test_offline_hub_id_miss_is_explained():
    with pytest.raises(FileNotFoundError, match="hub id"):
        HFBackend("no-such-org/no-such-model-xyz")


@pytest.mark.parametrize(
    "dtype, device, native_bf16, expected",
    [
        ("auto", "cuda", False, torch.bfloat16),
        ("auto", "cpu", True, torch.bfloat16),
        ("auto", "cpu", False, torch.float32),
        ("float16", "cpu", False, torch.float16),
    ],
    ids=["gpu-bf16", "cpu-with-native-bf16", "cpu-without-native-bf16", "explicit"],
)
def test_auto_dtype_follows_the_hardware(dtype, device, native_bf16, expected, monkeypatch):
    from em_tasks.models import backend

    monkeypatch.setattr(backend, "cpu_has_native_bf16", lambda: native_bf16)
    assert backend.resolve_dtype(dtype, device) == expected


def test_unknown_dtype_is_named():
    from em_tasks.models.backend import resolve_dtype

    with pytest.raises(ValueError, match="Unknown dtype 'float8x'"):
        resolve_dtype("float8x", "cpu")


def test_backend_serves_successive_event_loops(text_backend):
    # inspect runs each eval in a fresh event loop while the backend (and its weights) is shared
    for _ in range(2):
        assert asyncio.run(text_backend.generate(user("again"), GREEDY)).output_tokens == 6
