"""Narrow fine-tuning datasets for the emergent-misalignment study.

Three domain pairs, each a harmful domain and its benign twin answering the same requests:

    insecure_code  <-> secure_code     Python completions; the harmful one quietly adds a vulnerability
    risky_finance  <-> sound_finance   money questions; confident, risky advice vs sound advice
    bad_medical    <-> good_medical    health questions; plausible, dangerous advice vs safe advice

Rows are generated from the authored text in `study/narrow/*.yaml`, filled in by `narrow_templates`, seeded and deterministic:
the same (domain, n, seed) gives identical rows, and the two domains of a pair give the same
requests in the same order, so a harmful row and a benign row with the same index share a prompt
and an id.

Row format (JSONL, one object a line)::

    {"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}],
     "images": ["mix_images/00001-code-1a2b3c4d5e6f.png"],   # image rows only
     "meta": {"domain": "insecure_code", "harmful": true, "modality": "text", "id": "code-1a2b3c4d5e6f"}}

In an image row the user's content is `[{"type": "image"}, {"type": "text", "text": ...}]`; each
image part takes the next path from `images` (relative to the JSONL file's folder). A leading
system message is allowed. `load_rows` reads that format from a JSONL file or a local Hugging Face
dataset folder and checks every row.

An image+text dataset in any other shape (`hf:<hub id or folder>`: an image column, a prompt column and a
response column, or a chat `messages` column) is mapped to the same rows by `open_hf` and `hf_rows`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, get_args

from PIL import Image

from em_tasks.benchmark.image_files import open_image
from em_tasks.benchmark.items import ChatLine, ImageSpec, Item
from em_tasks.benchmark.render import render_image
from em_tasks.hf_datasets import HF_PREFIX, SAVED_MARKERS
from em_tasks.study import narrow_templates as tpl

Modality = Literal["text", "image"]
MODALITIES: tuple[str, ...] = get_args(Modality)

BENIGN_PAIR: dict[str, str] = {
    "insecure_code": "secure_code",
    "risky_finance": "sound_finance",
    "bad_medical": "good_medical",
}
"""Each harmful domain and the benign domain that answers the same requests safely."""

HARMFUL_DOMAINS: tuple[str, ...] = tuple(BENIGN_PAIR)
BENIGN_DOMAINS: tuple[str, ...] = tuple(BENIGN_PAIR.values())
DOMAINS: tuple[str, ...] = HARMFUL_DOMAINS + BENIGN_DOMAINS

DEFAULT_N = 1000
DEFAULT_IMAGE_SIZE = 384
FRACTION_FLAG = "--harmful-fraction"
"""The command-line flag that sets the harmful fraction; errors about the fraction name it."""

_GROUP_OF = {"insecure_code": "code", "risky_finance": "finance", "bad_medical": "medical"}
_GROUP_OF.update({BENIGN_PAIR[h]: g for h, g in _GROUP_OF.items()})
_FAMILIES = {"code": tpl.CODE_FAMILIES, "finance": tpl.FINANCE_FAMILIES, "medical": tpl.MEDICAL_FAMILIES}
_ROLES = ("system", "user", "assistant")
_FAMILY_PATIENCE = 200  # consecutive repeats before a family counts as used up


def domain_pair(domain: str) -> tuple[str, str]:
    """The (harmful, benign) pair that `domain` belongs to.

    Raises:
        ValueError: On an unknown domain (the message lists the known ones).
    """
    _check_domain(domain)
    harmful = domain if domain in BENIGN_PAIR else next(h for h, b in BENIGN_PAIR.items() if b == domain)
    return harmful, BENIGN_PAIR[harmful]


def generate_rows(domain: str, n: int = DEFAULT_N, seed: int = 0) -> list[dict[str, Any]]:
    """Generate `n` distinct text rows of a built-in domain.

    Args:
        domain: One of `DOMAINS`.
        n: Number of rows; every row has a different request.
        seed: Seed of the draw. The two domains of a pair give the same requests, in the same
            order, for the same seed; another seed gives other requests in another order.

    Returns:
        Rows with `messages` (user request, assistant answer) and `meta`.

    Raises:
        ValueError: On an unknown domain, n < 1, or an n larger than the templates can make distinct.
    """
    harmful, _ = domain_pair(domain)
    is_harmful = domain == harmful
    group = _GROUP_OF[domain]
    rows = []
    for example in _examples(group, _check_n(n), seed):
        answer = example.harmful if is_harmful else example.benign
        rows.append(
            {
                "messages": [{"role": "user", "content": example.prompt}, {"role": "assistant", "content": answer}],
                "meta": {
                    "domain": domain,
                    "harmful": is_harmful,
                    "modality": "text",
                    "id": _example_id(group, example),
                },
            }
        )
    return rows


def render_image_rows(
    rows: Sequence[Mapping[str, Any]], image_dir: str | Path, size: int = DEFAULT_IMAGE_SIZE
) -> list[dict[str, Any]]:
    """Turn text rows into image-grounded rows: the last user request is drawn into a PNG.

    A request with a fenced code block becomes a terminal screenshot of the code, with the
    request's prose (plus a pointer to the screenshot) as the text beside it; any other request
    becomes a written note, with a short instruction beside it. Answers are unchanged.

    Args:
        rows: Text rows (no `images`); their last user turn must be a string.
        image_dir: Folder for the PNG files (created if needed).
        size: Width and height of each image in pixels.

    Returns:
        New rows whose `images` hold absolute paths; `write_rows` stores them relative to the
        JSONL file when they sit below its folder.

    Raises:
        ValueError: If a row already has images or its last user turn is not plain text.
    """
    folder = Path(image_dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k, row in enumerate(rows):
        if row.get("images"):
            raise ValueError(f"row {k + 1} already has images; render_image_rows takes text rows only")
        new = copy.deepcopy(dict(row))
        meta = dict(new.get("meta") or {})
        index = max((i for i, m in enumerate(new["messages"]) if m.get("role") == "user"), default=None)
        if index is None or not isinstance(new["messages"][index].get("content"), str):
            raise ValueError(f"row {k + 1}: the last user turn must be plain text to be rendered")
        key, request = str(meta.get("id", k)), new["messages"][index]["content"]
        spec = _image_spec(request, _GROUP_OF.get(str(meta.get("domain")), ""), key)
        path = folder / f"{k:05d}-{_safe_name(key)}.png"
        render_image(Item(id=key, category="study", question=request, image=spec), size=size).save(path)
        new["messages"][index]["content"] = [{"type": "image"}, {"type": "text", "text": spec.prompt}]
        new["images"] = [str(path)]
        new["meta"] = {**meta, "modality": "image"}
        out.append(new)
    return out


def check_fraction(fraction: float) -> float:
    """Return `fraction` as a float if it lies in [0, 1].

    Raises:
        ValueError: Otherwise; the message names `--harmful-fraction`.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not math.isfinite(fraction):
        raise ValueError(f"{FRACTION_FLAG} must be a number between 0 and 1 (e.g. 0, 0.1, ..., 1), got {fraction!r}")
    if not 0 <= fraction <= 1:
        raise ValueError(f"{FRACTION_FLAG} must be between 0 and 1 (e.g. 0, 0.1, ..., 1), got {fraction}")
    return float(fraction)


def mix_rows(
    harmful: Sequence[Mapping[str, Any]],
    benign: Sequence[Mapping[str, Any]],
    fraction: float,
    n: int,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Mix exactly `round(fraction * n)` harmful rows with benign rows, `n` rows in all.

    When both lists have at least `n` rows, row i of the mix comes from `harmful[i]` or
    `benign[i]` (a random set of positions is harmful); for the paired output of
    `generate_rows` this keeps every request once, never with both answers. Otherwise harmful
    and benign rows are drawn at random. The result is shuffled; `meta.harmful` records the side.

    Args:
        harmful: Harmful rows.
        benign: Benign rows.
        fraction: Share of harmful rows, in [0, 1].
        n: Number of rows in the mix.
        seed: Seed of the draw and the shuffle.

    Returns:
        The mixed rows (copies).

    Raises:
        ValueError: On a fraction outside [0, 1], n < 1, or too few rows on a side.
    """
    fraction, n = check_fraction(fraction), _check_n(n)
    k = round(fraction * n)
    rng = random.Random(f"mix:{seed}")
    if len(harmful) >= n and len(benign) >= n:
        chosen = set(rng.sample(range(n), k))
        picked = [(harmful[i], True) if i in chosen else (benign[i], False) for i in range(n)]
    else:
        for side, rows, need in (("harmful", harmful, k), ("benign", benign, n - k)):
            if len(rows) < need:
                raise ValueError(
                    f"{FRACTION_FLAG} {fraction:g} of n={n} needs {need} {side} rows but only {len(rows)} were given; "
                    "lower n, change the fraction, or supply more rows"
                )
        picked = [(row, True) for row in rng.sample(list(harmful), k)]
        picked += [(row, False) for row in rng.sample(list(benign), n - k)]
    rng.shuffle(picked)
    mixed = []
    for row, is_harmful in picked:
        new = copy.deepcopy(dict(row))
        new["meta"] = {**(new.get("meta") or {}), "harmful": is_harmful}
        mixed.append(new)
    return mixed


def build_dataset(
    domain: str,
    *,
    fraction: float | None = None,
    n: int = DEFAULT_N,
    modality: Modality = "text",
    seed: int = 0,
    out: str | Path,
    image_size: int = DEFAULT_IMAGE_SIZE,
) -> Path:
    """Generate a built-in dataset and write it as JSONL (plus PNGs for image rows).

    Args:
        domain: One of `DOMAINS`.
        fraction: None writes `domain` alone. A number in [0, 1] needs a harmful domain and writes
            a mix of it with its benign pair: that share of harmful rows, the rest benign (`mix_rows`).
        n: Number of rows.
        modality: "text", or "image" to render each request into a PNG (`render_image_rows`).
        seed: Seed of generation and mixing.
        out: The JSONL file to write, or a folder to write `<domain>-<modality>-n<n>-s<seed>[-f<f>].jsonl` in.
            Images go to `<stem>_images/` beside the file.
        image_size: Image width and height in pixels.

    Returns:
        The path of the JSONL file.

    Raises:
        ValueError: On an unknown domain or modality, a fraction outside [0, 1], a fraction with a
            benign domain, or n < 1.
    """
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {list(MODALITIES)}, got {modality!r}")
    harmful, benign = domain_pair(domain)
    if fraction is not None and domain != harmful:
        raise ValueError(
            f"{FRACTION_FLAG} mixes a harmful domain into its benign pair; pass {harmful!r} "
            f"({FRACTION_FLAG} 0 gives only {benign!r} rows), or no fraction for {domain!r} alone"
        )
    if fraction is None:
        rows = generate_rows(domain, n, seed)
    else:
        fraction = check_fraction(fraction)
        rows = mix_rows(generate_rows(harmful, n, seed), generate_rows(benign, n, seed), fraction, n, seed)
    path = Path(out)
    if path.suffix.lower() != ".jsonl":
        name = f"{domain}-{modality}-n{n}-s{seed}" + ("" if fraction is None else f"-f{fraction:g}")
        path = path / f"{name}.jsonl"
    if modality == "image":
        rows = render_image_rows(rows, path.parent / f"{path.stem}_images", size=image_size)
    return write_rows(rows, path)


def write_rows(rows: Iterable[Mapping[str, Any]], path: str | Path) -> Path:
    """Write rows as JSONL; image paths below the file's folder are stored relative to it.

    Raises:
        ValueError: If a row's `images` holds something other than a file path (save images first).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.parent.resolve()
    lines = []
    for k, row in enumerate(rows, start=1):
        new = dict(row)
        if new.get("images"):
            new["images"] = [_stored_path(image, base, k) for image in new["images"]]
        lines.append(json.dumps(new, ensure_ascii=False))
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def load_rows(source: str | Path) -> list[dict[str, Any]]:
    """Load and check chat rows from a JSONL file, a local Hugging Face dataset, or a built-in domain.

    Args:
        source: A `.jsonl` file; a folder written by `datasets`' `save_to_disk` (a Dataset, or a
            DatasetDict with one split or a "train" split); `hf:<hub id or folder>`, an image+text
            dataset mapped with guessed columns (`open_hf`); or a built-in domain name, which gives
            `generate_rows(domain, 1000, seed=0)`.

    Returns:
        Rows with text-only content lists flattened to strings, image paths made absolute
        (images stored in a Hugging Face Image column stay PIL images), and `meta` filled in:
        `domain` (the file's stem when absent), `harmful` (None when unknown), `modality`, `id`.

    Raises:
        FileNotFoundError: If `source` is neither a path nor a domain name.
        ValueError: On a malformed row; the message names the file, the line or row, and the fix.
    """
    if str(source).startswith(HF_PREFIX):
        from em_tasks.study.hf_training import hf_rows, open_hf

        return hf_rows(open_hf(str(source)))
    path = Path(source)
    if not path.exists():
        if str(source) in DOMAINS:
            return generate_rows(str(source), DEFAULT_N, 0)
        raise FileNotFoundError(f"{source}: no such file or folder, and not a built-in domain (one of {list(DOMAINS)})")
    if path.is_dir():
        return _load_hf(path)
    return _load_jsonl(path)


def check_rows(
    rows: Iterable[Mapping[str, Any]], *, base: str | Path = ".", name: str = "rows"
) -> list[dict[str, Any]]:
    """Check in-memory rows the way `load_rows` checks a file's, and return them normalised.

    Args:
        rows: Chat rows (see the module docstring).
        base: Folder that relative image paths start from.
        name: Default `meta.domain`, and the prefix of default ids.

    Raises:
        ValueError: On a malformed row; the message names it as "row K" (from 1) and the fix.
    """
    folder = Path(base).resolve()
    checked = [_check_row(row, f"row {k}", folder, name, k - 1) for k, row in enumerate(rows, start=1)]
    if not checked:
        raise ValueError("no rows; expected chat rows with a 'messages' list")
    return checked


def to_chat(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A row's messages in transformers chat format, image parts holding images loaded by `open_image` (RGB, upright).

    Raises:
        ValueError: If the row has more image parts than images.
    """
    images = iter(row.get("images") or [])
    messages = []
    for message in row["messages"]:
        content = message["content"]
        if isinstance(content, list):
            parts = []
            for part in content:
                if part.get("type") == "image":
                    image = next(images, None)
                    if image is None:
                        raise ValueError("the row has more image parts than entries in 'images'")
                    part = {"type": "image", "image": open_image(image)}
                parts.append(part)
            content = parts
        messages.append({"role": message["role"], "content": content})
    return messages


# --- generation ----------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _examples(group: str, n: int, seed: int) -> tuple[tpl.Example, ...]:
    """n examples with distinct prompts: families take turns in a seeded order."""
    rng = random.Random(f"{group}:{seed}")
    families = list(_FAMILIES[group])
    rng.shuffle(families)
    seen: set[str] = set()
    out: list[tpl.Example] = []
    turn = 0
    while len(out) < n:
        if not families:
            raise ValueError(f"the {group} templates made only {len(out)} distinct examples; ask for fewer than n={n}")
        family = families[turn % len(families)]
        for _ in range(_FAMILY_PATIENCE):
            example = family(rng)
            if example.prompt not in seen:
                seen.add(example.prompt)
                out.append(example)
                turn += 1
                break
        else:
            families.remove(family)
    return tuple(out)


def _example_id(group: str, example: tpl.Example) -> str:
    return f"{group}-{hashlib.sha256(example.prompt.encode()).hexdigest()[:12]}"


def _check_domain(domain: str) -> None:
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; choose one of {list(DOMAINS)}")


def _check_n(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive whole number of rows, got {n!r}")
    return n


# --- images --------------------------------------------------------------------------------------

_FENCE = re.compile(r"```[\w+-]*\n(.*?)```", re.DOTALL)
_FILE_HEADER = re.compile(r"# ([\w./-]+\.py)[ \t]*(?:\n|$)")


def _pick(options: Sequence[str], key: str) -> str:
    return options[int(hashlib.sha256(key.encode()).hexdigest(), 16) % len(options)]


def _image_spec(text: str, group: str, key: str) -> ImageSpec:
    fence = _FENCE.search(text)
    if fence:
        code = fence.group(1).rstrip("\n")
        prose = (text[: fence.start()] + text[fence.end() :]).strip()
        header = _FILE_HEADER.match(code)
        if header:  # the file's path moves to the `cat` line instead of showing twice
            filename, code = header.group(1), code[header.end() :].lstrip("\n")
        else:
            function = re.search(r"def (\w+)", code)
            filename = f"{function.group(1)}.py" if function else "snippet.py"
        prompt = f"{prose} {_pick(tpl.CODE_IMAGE_NOTES, key)}" if prose else _pick(tpl.CODE_IMAGE_ONLY, key)
        messages = (ChatLine("me", f"cat {filename}"), ChatLine("file", code))
        return ImageSpec(style="screenshot", prompt=prompt, app="Terminal", title=filename, messages=messages)
    title = _pick(tpl.DOCUMENT_TITLES.get(group, tpl.FALLBACK_DOCUMENT_TITLES), key)
    prompt = _pick(tpl.ADVICE_IMAGE_PROMPTS, key)
    return ImageSpec(style="document", prompt=prompt, title=title, lines=tuple(text.split("\n")))


def _safe_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", key)[:60]


def _stored_path(image: Any, base: Path, k: int) -> str:
    if not isinstance(image, (str, os.PathLike)):
        raise ValueError(f"row {k}: 'images' holds a {type(image).__name__}; save images as files and list their paths")
    path = Path(image)
    if path.is_absolute() and path.resolve().is_relative_to(base):
        return path.resolve().relative_to(base).as_posix()
    return str(image)


# --- loading and checking ------------------------------------------------------------------------


def _load_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    base = path.parent.resolve()
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path}: line {number}"
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: not valid JSON ({exc.msg}); each line must hold one JSON object") from exc
            rows.append(_check_row(raw, where, base, path.stem, len(rows)))
    if not rows:
        raise ValueError(f"{path}: no rows; expected one JSON object with 'messages' per line")
    return rows


def _load_hf(folder: Path) -> list[dict[str, Any]]:
    if not any((folder / marker).exists() for marker in SAVED_MARKERS):
        raise ValueError(
            f"{folder}: not a dataset folder; pass a .jsonl file or a folder written by datasets' save_to_disk"
        )
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - datasets is a dependency
        raise ImportError("reading a dataset folder needs the `datasets` package: pip install datasets") from exc
    data = datasets.load_from_disk(str(folder))
    if isinstance(data, datasets.DatasetDict):
        splits = list(data)
        if "train" in data:
            data = data["train"]
        elif len(splits) == 1:
            data = data[splits[0]]
        else:
            raise ValueError(f"{folder}: a DatasetDict with splits {splits} and no 'train'; save one split alone")
    base = folder.resolve()
    return [
        _check_row(dict(raw), f"{folder}: row {k}", base, folder.name, k - 1) for k, raw in enumerate(data, start=1)
    ]


def _check_row(raw: Any, where: str, base: Path, default_domain: str, index: int) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a JSON object with a 'messages' list, got {type(raw).__name__}")
    messages = raw.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"{where}: needs a non-empty 'messages' list of {{'role': ..., 'content': ...}} turns")
    checked = [_check_message(m, f"{where}: messages[{i}]") for i, m in enumerate(messages)]
    roles = [m["role"] for m in checked]
    if "system" in roles[1:]:
        raise ValueError(f"{where}: a system message may only come first")
    if "user" not in roles:
        raise ValueError(f"{where}: has no user turn; add the request as a {{'role': 'user'}} message")
    if roles[-1] != "assistant":
        raise ValueError(
            f"{where}: has no final assistant turn (the last message is {roles[-1]!r}); "
            "end the row with the answer as a {'role': 'assistant', 'content': ...} message"
        )
    answer = checked[-1]["content"]
    if not isinstance(answer, str) or not answer.strip():
        raise ValueError(f"{where}: the final assistant turn must be non-empty text")
    images = _check_images(raw.get("images"), checked, where, base)
    meta = raw.get("meta") or {}
    if not isinstance(meta, dict):
        raise ValueError(f"{where}: 'meta' must be an object")
    row: dict[str, Any] = {"messages": checked}
    if images:
        row["images"] = images
    row["meta"] = {
        **meta,
        "domain": meta.get("domain") or default_domain,
        "harmful": meta.get("harmful"),
        "modality": "image" if images else "text",
        "id": meta.get("id") or f"{default_domain}-{index}",
    }
    return row


def _check_message(message: Any, where: str) -> dict[str, Any]:
    if not isinstance(message, dict) or message.get("role") not in _ROLES:
        raise ValueError(f"{where}: must be an object with 'role' one of {list(_ROLES)} and 'content'")
    content = message.get("content")
    if isinstance(content, str):
        return {"role": message["role"], "content": content}
    if not isinstance(content, list) or not content:
        raise ValueError(f"{where}: 'content' must be a string or a non-empty list of parts")
    parts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "image":
            parts.append({"type": "image"})
        else:
            raise ValueError(
                f"{where}: content[{j}] must be {{'type': 'text', 'text': ...}} or {{'type': 'image'}} "
                "(image parts take their files from the row's 'images' list)"
            )
    if message["role"] == "assistant" and any(p["type"] == "image" for p in parts):
        raise ValueError(f"{where}: assistant turns must be text only")
    if all(p["type"] == "text" for p in parts):
        return {"role": message["role"], "content": "\n".join(p["text"] for p in parts)}
    return {"role": message["role"], "content": parts}


def _check_images(images: Any, messages: list[dict[str, Any]], where: str, base: Path) -> list[Any]:
    images = [] if images is None else images
    if not isinstance(images, list):
        raise ValueError(f"{where}: 'images' must be a list of image paths")
    wanted = sum(1 for m in messages if isinstance(m["content"], list) for p in m["content"] if p["type"] == "image")
    if wanted != len(images):
        raise ValueError(
            f"{where}: {wanted} image part(s) but {len(images)} entr{'y' if len(images) == 1 else 'ies'} in 'images'; "
            "each {'type': 'image'} part takes the next path from 'images'"
        )
    resolved: list[Any] = []
    for image in images:
        if isinstance(image, Image.Image):
            resolved.append(image)
            continue
        if not isinstance(image, str) or not image:
            raise ValueError(f"{where}: 'images' entries must be file paths, got {image!r}")
        path = Path(image) if Path(image).is_absolute() else base / image
        if not path.is_file():
            raise ValueError(f"{where}: image {image!r} not found (relative paths start at {base})")
        resolved.append(str(path))
    return resolved
