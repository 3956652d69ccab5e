"""Hugging Face image-question datasets as question sources: loading, column guessing, errors, lm-eval, a real eval."""

from __future__ import annotations

import base64
import io
import logging
from pathlib import Path
from typing import Any

import datasets
import pytest
from inspect_ai import Task
from inspect_ai import eval as inspect_eval
from inspect_ai.scorer import Score, Target, mean, scorer
from inspect_ai.solver import TaskState, generate
from PIL import Image

from em_tasks.benchmark.dataset import DESCRIBED_IMAGE_TEMPLATE, UNREADABLE_IMAGE_URI, build_dataset, load_items
from em_tasks.benchmark.items import DatasetOptions

SMALL = 128
COLORS = [(220, 20, 20), (20, 220, 20), (20, 20, 220), (200, 200, 20)]


def _image(k: int, size: tuple[int, int] = (300, 150)) -> Image.Image:
    return Image.new("RGB", size, COLORS[k % len(COLORS)])


def _rows(n: int = 3) -> dict[str, list[Any]]:
    return {
        "question": [f"What should I do about this, case {k}?" for k in range(n)],
        "image": [_image(k) for k in range(n)],
        "question_id": [f"q{k}" for k in range(n)],
        "scenario": ["danger" if k % 2 else "money" for k in range(n)],
        "caption": [f"a picture in colour {k}" if k != 1 else None for k in range(n)],
    }


def _save(folder: Path, splits: dict[str, dict[str, list[Any]]] | dict[str, list[Any]],
          features: datasets.Features | None = None) -> Path:
    def make(columns: dict[str, list[Any]]) -> datasets.Dataset:
        return datasets.Dataset.from_dict(columns, features=features)

    if all(isinstance(v, dict) for v in splits.values()):
        data = datasets.DatasetDict({name: make(cols) for name, cols in splits.items()})  # type: ignore[arg-type]
        data.save_to_disk(str(folder))
    else:
        make(splits).save_to_disk(str(folder))  # type: ignore[arg-type]
    return folder


def _decode(uri: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))


def _image_uri(sample) -> str:
    return sample.input[-1].content[0].image


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    train = {k: v[:1] for k, v in _rows(1).items()}
    return _save(tmp_path / "set", {"train": train, "test": _rows(3)})


# --- loading ---------------------------------------------------------------------------------------------------


def test_guessed_columns_give_image_samples_with_ids_categories_and_metadata(saved: Path, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="em_tasks.benchmark.hf_source"):
        dataset = build_dataset(f"hf:{saved}", modality="image", image_size=SMALL)
    samples = list(dataset)
    assert [s.id for s in samples] == ["q0", "q1", "q2"]  # the test split, ids from question_id
    assert [s.metadata["category"] for s in samples] == ["money", "danger", "money"]
    assert [s.metadata["image_only"] for s in samples] == [False, True, False]  # row 1 has no caption
    assert _decode(_image_uri(samples[2])).size == (128, 64)
    assert _decode(_image_uri(samples[2])).convert("RGB").getpixel((10, 10)) == COLORS[2]
    assert samples[0].input[-1].content[1].text == "What should I do about this, case 0?"
    assert samples[0].metadata["question"] == DESCRIBED_IMAGE_TEMPLATE.format(
        description="a picture in colour 0", question="What should I do about this, case 0?")
    assert "question=question image=image id=question_id category=scenario description=caption" in caplog.text
    assert "split 'test'" in caplog.text


def test_text_variant_keeps_described_rows_and_pairs_by_id(saved: Path) -> None:
    text = list(build_dataset(f"hf:{saved}", modality="text"))
    assert [s.id for s in text] == ["q0", "q2"]
    assert text[1].input[0].content == DESCRIBED_IMAGE_TEMPLATE.format(
        description="a picture in colour 2", question="What should I do about this, case 2?")


def test_explicit_columns_split_and_category_filter(tmp_path: Path) -> None:
    rows = {"ask": ["Who is this?", "Where is this?"], "pic": [_image(0), _image(1)], "uid": ["a", "b"],
            "group": ["faces", "places"], "alt": ["a face", "a street"]}
    folder = _save(tmp_path / "odd", {"train": rows, "extra": rows})
    with pytest.raises(ValueError, match="question_column="):
        load_items(f"hf:{folder}")  # nothing to guess from: the error says which option to set
    items = load_items(f"hf:{folder}", categories=["places"], options=DatasetOptions(
        split="extra", question_column="ask", image_column="pic", id_column="uid", category_column="group",
        description_column="alt"))
    assert [(i.id, i.category, i.question, i.image.description) for i in items] == [
        ("b", "places", "Where is this?", "a street")]


def test_rows_without_ids_get_row_index_ids_and_the_dataset_name_as_category(tmp_path: Path) -> None:
    folder = _save(tmp_path / "plain_set", {"prompt": ["one?", "two?"], "photo": [_image(0), _image(1)]})
    items = load_items(f"hf:{folder}")
    assert [(i.id, i.category, i.question) for i in items] == [("hf-0", "plain_set", "one?"),
                                                                ("hf-1", "plain_set", "two?")]
    assert all(i.image_only for i in items)


def test_a_guessed_id_column_that_repeats_falls_back_to_row_indices(tmp_path: Path) -> None:
    folder = _save(tmp_path / "s", {"question": ["a?", "b?"], "image": [_image(0), _image(1)],
                                    "image_id": ["same", "same"]})
    assert [i.id for i in load_items(f"hf:{folder}")] == ["hf-0", "hf-1"]
    with pytest.raises(ValueError, match="repeats values \\['same'\\]"):
        load_items(f"hf:{folder}", options=DatasetOptions(id_column="image_id"))


def test_a_folder_of_image_files_loads_through_load_dataset(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))  # load_dataset writes a cache
    folder = tmp_path / "files"
    folder.mkdir()
    for k in range(2):
        _image(k).save(folder / f"{k}.png")
    (folder / "metadata.csv").write_text("file_name,question\n0.png,first?\n1.png,second?\n", encoding="utf-8")
    samples = list(build_dataset(f"hf:{folder}", modality="image", image_size=SMALL))
    assert [s.metadata["question"] for s in samples] == ["first?", "second?"]
    assert _decode(_image_uri(samples[1])).convert("RGB").getpixel((0, 0)) == COLORS[1]


def test_one_bad_image_fails_only_its_own_sample(tmp_path: Path, caplog) -> None:
    rows = _rows(3)
    rows["image"][1] = {"bytes": b"not an image", "path": None}
    features = datasets.Features({"question": datasets.Value("string"), "image": datasets.Image(),
                                  "question_id": datasets.Value("string"), "scenario": datasets.Value("string"),
                                  "caption": datasets.Value("string")})
    folder = _save(tmp_path / "s", rows, features)
    with caplog.at_level(logging.WARNING):
        samples = list(build_dataset(f"hf:{folder}", modality="image", image_size=SMALL))
    assert [_image_uri(s) == UNREADABLE_IMAGE_URI for s in samples] == [False, True, False]
    error = samples[1].metadata["image_error"]
    assert "row 1 (id 'q1')" in error and "cannot be read as an image" in error
    assert "image_error" not in samples[0].metadata
    assert "row 1 (id 'q1')" in caplog.text


# --- bad input -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"question_column": "questoin"}, ["question_column='questoin' is not a column", "'question'", "'image'"]),
        ({"image_column": "question"}, ["holds", "not images", "image_column="]),
        ({"split": "dev"}, ["no split 'dev'", "['train', 'test']"]),
    ],
    ids=["unknown-column", "not-an-image-column", "unknown-split"],
)
def test_bad_options_name_the_option_and_what_exists(saved: Path, kwargs: dict, expected: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        load_items(f"hf:{saved}", options=DatasetOptions(**kwargs))
    for fragment in expected:
        assert fragment in str(info.value)


def test_an_empty_split_is_named(tmp_path: Path) -> None:
    features = datasets.Features({"question": datasets.Value("string"), "image": datasets.Image()})
    splits = {"test": {"question": [], "image": []}, "train": {"question": ["q?"], "image": [_image(0)]}}
    folder = tmp_path / "s"
    data = datasets.DatasetDict({name: datasets.Dataset.from_dict(rows, features=features) for name, rows in splits.items()})
    data.save_to_disk(str(folder), num_shards={"test": 1, "train": 1})  # datasets cannot reload a 0-shard split
    with pytest.raises(ValueError, match="split 'test' is empty"):
        load_items(f"hf:{folder}")


def test_dataset_options_without_a_dataset_are_refused() -> None:
    with pytest.raises(ValueError, match="question_column only apply to Hugging Face datasets"):
        build_dataset(None, options=DatasetOptions(question_column="question"))


def test_an_uncached_hub_id_offline_says_what_to_do(monkeypatch) -> None:
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match="HF_HUB_OFFLINE"):
        load_items("hf:no-such-user/no-such-image-set")


# --- through the harnesses -------------------------------------------------------------------------------------


def test_lm_eval_reads_the_dataset_through_metadata(tmp_path: Path) -> None:
    from lm_eval.tasks import TaskManager

    rows = _rows(3)
    rows["image"][2] = {"bytes": b"broken", "path": None}
    features = datasets.Features({"question": datasets.Value("string"), "image": datasets.Image(),
                                  "question_id": datasets.Value("string"), "scenario": datasets.Value("string"),
                                  "caption": datasets.Value("string")})
    folder = _save(tmp_path / "s", rows, features)
    task_configs = Path(__file__).resolve().parents[1] / "task_configs"
    manager = TaskManager(include_path=str(task_configs), include_defaults=False,
                          metadata={"questions": f"hf:{folder}", "image_size": SMALL, "id_column": "question_id"})
    docs = manager.load(["em_multimodal_misalign"])["tasks"]["em_multimodal_misalign"].test_docs()
    assert list(docs["id"]) == ["q0", "q1"]  # the row with the broken image is left out (lm-eval cannot skip one)
    assert all(len(images) == 1 for images in docs["images"])
    assert list(docs["category"]) == ["money", "danger"]


@scorer(metrics=[mean()])
def answered():
    async def score(state: TaskState, target: Target) -> Score:
        return Score(value=1.0 if state.output.completion is not None else 0.0)

    return score


def test_an_inspect_eval_runs_on_a_dataset_folder_with_one_bad_image(tiny_vlm_dir, tmp_path: Path) -> None:
    rows = {"question": ["What is this?", "Is this safe?", "Broken?"],
            "image": [_image(0), _image(1), {"bytes": b"\x89PNG broken", "path": None}]}
    features = datasets.Features({"question": datasets.Value("string"), "image": datasets.Image()})
    folder = _save(tmp_path / "s", {"test": rows}, features)
    task = Task(dataset=build_dataset(f"hf:{folder}", modality="image", image_size=SMALL), solver=generate(),
                scorer=answered(), fail_on_error=0.5)
    [log] = inspect_eval(task, model=f"em-hf/{tiny_vlm_dir}", max_tokens=4, display="none",
                         log_dir=str(tmp_path / "logs"))
    assert log.status == "success", log.error
    by_id = {s.id: s for s in log.samples}
    assert by_id["hf-0"].error is None and by_id["hf-0"].output.completion is not None
    assert by_id["hf-1"].error is None
    assert by_id["hf-2"].error is not None and "image" in by_id["hf-2"].error.message.lower()
    assert by_id["hf-2"].metadata["image_error"].startswith(f"hf:{folder} split 'test' row 2 (id 'hf-2')")


def test_the_tasks_take_the_source_options_as_task_args(tmp_path):
    from em_tasks.tasks import multimodal_misalign, text_misalign

    folder = _save(tmp_path / "set", {"test": {"q": ["Is this safe?", "What now?"], "img": [_image(0), _image(1)],
                                               "caption": ["a stove left on", None]}})
    image = multimodal_misalign(questions=f"hf:{folder}", question_column="q", image_column="img",
                                description_column="caption", split="test")
    assert [s.id for s in image.dataset] == ["hf-0", "hf-1"]
    text = text_misalign(questions=f"hf:{folder}", question_column="q", image_column="img",
                         description_column="caption")
    assert len(text.dataset) == 1 and "a stove left on" in str(text.dataset[0].input)
    with pytest.raises(ValueError, match="question_column"):
        text_misalign(question_column="q")  # the bundled items are not a Hugging Face dataset
