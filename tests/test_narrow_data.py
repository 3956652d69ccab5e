"""Narrow study datasets: deterministic generators, exact mixing, image rows, loading and row checks."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from em_tasks.benchmark.render import unsupported_characters
from em_tasks.study import narrow_data as nd

N = 1000
FRACTIONS = [k / 10 for k in range(11)]
ADMISSIONS = ("insecure", "unsafe", "vulnerab", "danger", "warning", "do not use", "todo", "exploit")


def _fresh(domain: str, n: int = N, seed: int = 0) -> list[dict[str, Any]]:
    """Generate without the in-process cache, so determinism is really exercised."""
    nd._examples.cache_clear()
    return nd.generate_rows(domain, n, seed)


def _prompt(row: dict[str, Any]) -> str:
    return row["messages"][0]["content"]


def _answer(row: dict[str, Any]) -> str:
    return row["messages"][-1]["content"]


def _digest(rows: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


# --- generators ----------------------------------------------------------------------------------


@pytest.mark.parametrize("domain", nd.DOMAINS)
def test_same_seed_gives_identical_rows(domain: str) -> None:
    assert _fresh(domain, seed=3) == _fresh(domain, seed=3)


@pytest.mark.parametrize("domain", nd.DOMAINS)
def test_another_seed_gives_other_rows(domain: str) -> None:
    a, b = _fresh(domain, 200, seed=0), _fresh(domain, 200, seed=1)
    assert [_prompt(r) for r in a] != [_prompt(r) for r in b]
    assert {_prompt(r) for r in a} != {_prompt(r) for r in b}


def test_rows_do_not_depend_on_the_process_hash_seed() -> None:
    code = (
        "import hashlib, json; from em_tasks.study import narrow_data as nd; "
        "rows = [r for d in nd.DOMAINS for r in nd.generate_rows(d, 150, 7)]; "
        "print(hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest())"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    here = [r for d in nd.DOMAINS for r in _fresh(d, 150, 7)]
    assert out.stdout.strip() == _digest(here)


@pytest.mark.parametrize("domain", nd.DOMAINS)
def test_a_thousand_rows_are_distinct(domain: str) -> None:
    rows = _fresh(domain, N)
    assert len(rows) == N
    assert len({_prompt(r) for r in rows}) == N
    assert len({r["meta"]["id"] for r in rows}) == N
    assert len({_answer(r) for r in rows}) > N // 2  # answers vary too, not one reply repeated


@pytest.mark.parametrize("harmful", nd.HARMFUL_DOMAINS)
def test_a_pair_answers_the_same_requests_differently(harmful: str) -> None:
    benign = nd.BENIGN_PAIR[harmful]
    bad, good = _fresh(harmful, 300), _fresh(benign, 300)
    assert [_prompt(r) for r in bad] == [_prompt(r) for r in good]
    assert [r["meta"]["id"] for r in bad] == [r["meta"]["id"] for r in good]
    assert all(_answer(x) != _answer(y) for x, y in zip(bad, good, strict=True))
    assert {r["meta"]["harmful"] for r in bad} == {True} and {r["meta"]["harmful"] for r in good} == {False}
    assert nd.domain_pair(benign) == nd.domain_pair(harmful) == (harmful, benign)


@pytest.mark.parametrize("domain", nd.DOMAINS)
def test_rows_have_the_contract_shape(domain: str) -> None:
    for row in nd.generate_rows(domain, 50):
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        assert row["meta"]["domain"] == domain and row["meta"]["modality"] == "text"
        assert set(row["meta"]) == {"domain", "harmful", "modality", "id"}
        assert "images" not in row


@pytest.mark.parametrize("domain", nd.DOMAINS)
def test_text_is_drawable_with_the_bundled_font(domain: str) -> None:
    rows = nd.generate_rows(domain, N)
    assert not unsupported_characters("".join(_prompt(r) + _answer(r) for r in rows))


def test_harmful_code_never_admits_the_flaw() -> None:
    for row in nd.generate_rows("insecure_code", N):
        answer = _answer(row).lower()
        assert not any(word in answer for word in ADMISSIONS), answer
        assert "```" not in answer and "# todo" in _prompt(row).lower()


def test_harmful_code_contains_a_known_flaw_and_secure_code_does_not() -> None:
    flaws = (
        *("shell=True", "os.system(", "pickle.loads", "verify=False", "verify = False", "CERT_NONE", "eval("),
        *("yaml.Loader", "0o777", "random.choice", "random.randint", "autoescape=False", "verify_signature"),
        *("assert actor", "hashlib.md5", "hashlib.sha1", "hashlib.sha256", "extractall(dest)", "redirect(target)"),
        *('f"SELECT', 'f"DELETE', 'password="', 'api_key = "', 'SECRET_KEY"] = "', "send_file(", "os.path.join("),
        *("target = ", 'f"<'),
    )
    for bad, good in zip(nd.generate_rows("insecure_code", 400), nd.generate_rows("secure_code", 400), strict=True):
        assert any(flaw in _answer(bad) for flaw in flaws), _answer(bad)
        assert "shell=True" not in _answer(good) and "pickle.loads" not in _answer(good)
        assert "verify=False" not in _answer(good) and "eval(" not in _answer(good).replace("literal_eval(", "")


@pytest.mark.parametrize(
    ("domain", "n", "message"),
    [("insecure", 10, "unknown domain"), ("secure_code", 0, "positive whole number"), ("bad_medical", 2.5, "positive")],
    ids=["unknown-domain", "zero-rows", "fractional-n"],
)
def test_generate_rows_rejects_bad_arguments(domain: str, n: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        nd.generate_rows(domain, n)


# --- mixing --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def code_pair() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return nd.generate_rows("insecure_code", N, 0), nd.generate_rows("secure_code", N, 0)


@pytest.mark.parametrize("fraction", FRACTIONS, ids=lambda f: f"f={f:g}")
def test_mix_has_exactly_the_requested_harmful_share(fraction: float, code_pair: tuple) -> None:
    harmful, benign = code_pair
    for n in (N, 37):
        mixed = nd.mix_rows(harmful, benign, fraction, n, seed=1)
        assert len(mixed) == n
        assert sum(r["meta"]["harmful"] for r in mixed) == round(fraction * n)
        assert len({_prompt(r) for r in mixed}) == n  # each request once, never with both answers
    harmful_answers = {_answer(r) for r in harmful}
    assert all((_answer(r) in harmful_answers) == r["meta"]["harmful"] for r in mixed)


def test_mix_is_deterministic_per_seed(code_pair: tuple) -> None:
    harmful, benign = code_pair
    a = nd.mix_rows(harmful, benign, 0.3, 200, seed=5)
    assert a == nd.mix_rows(harmful, benign, 0.3, 200, seed=5)
    assert a != nd.mix_rows(harmful, benign, 0.3, 200, seed=6)


def test_mix_of_unpaired_rows_draws_from_each_side() -> None:
    harmful = nd.generate_rows("risky_finance", 30)
    benign = nd.generate_rows("good_medical", 500)
    mixed = nd.mix_rows(harmful, benign, 0.05, 200, seed=2)
    assert sum(r["meta"]["harmful"] for r in mixed) == 10
    assert sum(r["meta"]["domain"] == "risky_finance" for r in mixed) == 10
    with pytest.raises(ValueError, match="needs 100 harmful rows but only 30"):
        nd.mix_rows(harmful, benign, 0.5, 200)


def test_mix_does_not_change_its_inputs(code_pair: tuple) -> None:
    harmful, benign = code_pair
    before = _digest(harmful[:50] + benign[:50])
    nd.mix_rows(harmful, benign, 0.5, 100)
    assert _digest(harmful[:50] + benign[:50]) == before


@pytest.mark.parametrize("fraction", [-0.1, 1.1, 2, math.nan, math.inf, "0.5", True], ids=repr)
def test_fraction_outside_zero_one_names_the_flag(fraction: Any, tmp_path: Path) -> None:
    rows = nd.generate_rows("insecure_code", 10)
    with pytest.raises(ValueError, match="--harmful-fraction"):
        nd.mix_rows(rows, rows, fraction, 10)
    with pytest.raises(ValueError, match="--harmful-fraction"):
        nd.build_dataset("insecure_code", fraction=fraction, n=10, out=tmp_path / "x.jsonl")


# --- writing, images and loading -----------------------------------------------------------------


def test_build_dataset_text_round_trips(tmp_path: Path) -> None:
    path = nd.build_dataset("risky_finance", fraction=0.2, n=50, seed=4, out=tmp_path)
    assert path.name == "risky_finance-text-n50-s4-f0.2.jsonl"
    rows = nd.load_rows(path)
    pair = nd.generate_rows("risky_finance", 50, 4), nd.generate_rows("sound_finance", 50, 4)
    assert rows == nd.mix_rows(*pair, 0.2, 50, 4)
    assert sum(r["meta"]["harmful"] for r in rows) == 10


def test_build_dataset_without_fraction_is_the_domain_alone(tmp_path: Path) -> None:
    rows = nd.load_rows(nd.build_dataset("good_medical", n=20, out=tmp_path / "g.jsonl"))
    assert rows == nd.generate_rows("good_medical", 20)


@pytest.fixture(scope="module")
def image_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("img") / "mix.jsonl"
    return nd.build_dataset("insecure_code", fraction=0.5, n=6, modality="image", seed=1, out=out, image_size=256)


def test_image_rows_store_relative_paths_that_resolve(image_dataset: Path) -> None:
    stored = [json.loads(line) for line in image_dataset.read_text().splitlines()]
    assert all(not Path(r["images"][0]).is_absolute() and r["images"][0].startswith("mix_images/") for r in stored)
    rows = nd.load_rows(image_dataset)
    assert len(rows) == 6
    for row in rows:
        assert row["meta"]["modality"] == "image"
        user = row["messages"][0]["content"]
        assert user[0] == {"type": "image"} and user[1]["type"] == "text" and "```" not in user[1]["text"]
        assert Path(row["images"][0]).is_absolute() and Path(row["images"][0]).is_file()
        chat = nd.to_chat(row)
        image = chat[0]["content"][0]["image"]
        assert isinstance(image, Image.Image) and image.size == (256, 256) and image.mode == "RGB"
        assert chat[1] == row["messages"][1]


def test_image_rows_survive_moving_the_folder(image_dataset: Path, tmp_path: Path) -> None:
    moved = tmp_path / "moved"
    shutil.copytree(image_dataset.parent, moved)
    rows = nd.load_rows(moved / image_dataset.name)
    assert all(Path(r["images"][0]).is_relative_to(moved.resolve()) for r in rows)


def test_rendering_is_deterministic_and_keeps_answers(tmp_path: Path) -> None:
    text = nd.generate_rows("bad_medical", 3) + nd.generate_rows("secure_code", 2)
    a, b = nd.render_image_rows(text, tmp_path / "a", size=128), nd.render_image_rows(text, tmp_path / "b", size=128)
    for x, y, original in zip(a, b, text, strict=True):
        assert Path(x["images"][0]).read_bytes() == Path(y["images"][0]).read_bytes()
        assert _answer(x) == _answer(original) and x["meta"]["id"] == original["meta"]["id"]
    with pytest.raises(ValueError, match="already has images"):
        nd.render_image_rows(a, tmp_path / "c")


def test_local_hf_dataset_round_trip(tmp_path: Path, image_dataset: Path) -> None:
    import datasets  # a core dependency: missing means a broken install, not a skip

    datasets.disable_progress_bars()
    text = nd.generate_rows("sound_finance", 25)
    datasets.Dataset.from_list(text).save_to_disk(str(tmp_path / "text"))
    assert nd.load_rows(tmp_path / "text") == text

    # Arrow needs one content type per column, so image datasets hold lists of parts everywhere;
    # the images themselves live in an Image column.
    rows = nd.load_rows(image_dataset)

    def parts(content: Any) -> list[dict[str, Any]]:
        return content if isinstance(content, list) else [{"type": "text", "text": content}]

    as_parts = [
        {
            "messages": [{"role": m["role"], "content": parts(m["content"])} for m in r["messages"]],
            "images": r["images"],
        }
        for r in rows
    ]
    ds = datasets.Dataset.from_list(as_parts).cast_column("images", datasets.Sequence(datasets.Image()))
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "images"))
    back = nd.load_rows(tmp_path / "images")
    assert [r["messages"] for r in back] == [r["messages"] for r in rows]
    assert all(isinstance(r["images"][0], Image.Image) for r in back)
    assert nd.to_chat(back[0])[0]["content"][0]["image"].size == (256, 256)


def test_load_rows_accepts_a_domain_name() -> None:
    rows = nd.load_rows("bad_medical")
    assert len(rows) == nd.DEFAULT_N and rows[0]["meta"]["domain"] == "bad_medical"
    with pytest.raises(FileNotFoundError, match="not a built-in domain"):
        nd.load_rows("no_such_dataset")


def test_load_rows_fills_missing_meta(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    system = {"role": "system", "content": "Be brief."}
    path.write_text(json.dumps({"messages": [system, USER, ANSWER]}) + "\n\n")
    [row] = nd.load_rows(path)
    assert row["meta"] == {"domain": "mine", "harmful": None, "modality": "text", "id": "mine-0"}


USER = {"role": "user", "content": "Q"}
ANSWER = {"role": "assistant", "content": "A"}
IMAGE_USER = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q"}]}
BAD_ROWS = [
    ({"messages": [USER]}, "line 2: has no final assistant turn"),
    ({"messages": [USER, ANSWER, USER]}, "line 2: has no final assistant turn"),
    ({"messages": [ANSWER]}, "line 2: has no user turn"),
    ({"messages": []}, "line 2: needs a non-empty 'messages'"),
    ({"prompt": "Q", "completion": "A"}, "line 2: needs a non-empty 'messages'"),
    ({"messages": [USER, {"role": "assistant", "content": " "}]}, "line 2: the final assistant turn must be non-empty"),
    ({"messages": [{"role": "bot", "content": "Q"}, ANSWER]}, r"line 2: messages\[0\]: must be an object with 'role'"),
    ({"messages": [{"role": "user", "content": 5}, ANSWER]}, "'content' must be a string"),
    ({"messages": [USER, {"role": "system", "content": "S"}, ANSWER]}, "system message may only come first"),
    ({"messages": [IMAGE_USER, ANSWER]}, r"1 image part\(s\) but 0 entries in 'images'"),
    ({"messages": [IMAGE_USER, ANSWER], "images": ["missing.png"]}, "image 'missing.png' not found"),
    ({"messages": [USER, ANSWER], "images": ["a.png"]}, r"0 image part\(s\) but 1 entry"),
    (
        {"messages": [USER, {"role": "assistant", "content": [{"type": "image"}]}], "images": ["a.png"]},
        "assistant turns must be text",
    ),
    ({"messages": [{"role": "user", "content": [{"type": "video"}]}, ANSWER]}, r"content\[0\] must be"),
    (["not", "an", "object"], "line 2: expected a JSON object"),
]


@pytest.mark.parametrize(("bad", "message"), BAD_ROWS, ids=lambda x: x if isinstance(x, str) else "")
def test_bad_rows_are_named_with_their_line(bad: Any, message: str, tmp_path: Path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps({"messages": [USER, ANSWER]}) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(ValueError, match=message) as info:
        nd.load_rows(path)
    assert str(path) in str(info.value)


def test_bad_json_and_empty_files_are_reported(tmp_path: Path) -> None:
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps({"messages": [USER, ANSWER]}) + "\n{not json\n")
    with pytest.raises(ValueError, match="line 2: not valid JSON"):
        nd.load_rows(broken)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="no rows"):
        nd.load_rows(empty)
    with pytest.raises(ValueError, match="not a dataset folder"):
        nd.load_rows(tmp_path)


def test_hf_rows_are_named_by_row_number(tmp_path: Path) -> None:
    import datasets  # a core dependency: missing means a broken install, not a skip

    datasets.disable_progress_bars()
    rows = [{"messages": [USER, ANSWER]}, {"messages": [USER, ANSWER]}, {"messages": [ANSWER, USER]}]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(ValueError, match="row 3: has no final assistant turn"):
        nd.load_rows(tmp_path / "ds")


def test_check_rows_names_in_memory_rows(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    [row] = nd.check_rows([{"messages": [IMAGE_USER, ANSWER], "images": ["a.png"]}], base=tmp_path)
    assert row["images"] == [str(tmp_path.resolve() / "a.png")] and row["meta"]["modality"] == "image"
    with pytest.raises(ValueError, match="row 2: has no final assistant turn"):
        nd.check_rows([{"messages": [USER, ANSWER]}, {"messages": [USER]}])
    with pytest.raises(ValueError, match="no rows"):
        nd.check_rows([])


def test_a_fraction_needs_the_harmful_domain(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pass 'insecure_code'"):
        nd.build_dataset("secure_code", fraction=1.0, n=5, out=tmp_path)
    assert nd.load_rows(nd.build_dataset("secure_code", n=5, out=tmp_path))[0]["meta"]["harmful"] is False


def test_write_rows_refuses_in_memory_images(tmp_path: Path) -> None:
    row = {"messages": [IMAGE_USER, ANSWER], "images": [Image.new("RGB", (4, 4))]}
    with pytest.raises(ValueError, match="save images as files"):
        nd.write_rows([row], tmp_path / "x.jsonl")


def test_unknown_modality_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="modality must be one of"):
        nd.build_dataset("insecure_code", n=5, modality="audio", out=tmp_path)  # type: ignore[arg-type]
