"""Training rows from Hugging Face image+text datasets (``em-tasks train --data hf:...``): the split, the columns
(given or guessed from common names) and each row as the chat row shape :mod:`em_tasks.study.narrow_data` checks,
images kept as PIL images."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from em_tasks.hf_datasets import HF_PREFIX, open_dataset
from em_tasks.study.narrow_data import _check_row

logger = logging.getLogger(__name__)

NO_COLUMN = "none"
"""`--image-column none`: train on a dataset's text alone."""
COLUMN_ROLES: tuple[str, ...] = ("image", "prompt", "response", "messages")
COMMON_COLUMNS: dict[str, tuple[str, ...]] = {
    "image": ("image", "img", "photo", "picture", "images"),
    "prompt": ("prompt", "question", "instruction", "query"),
    "response": ("response", "answer", "output", "completion"),
    "messages": ("messages", "conversations"),
}
"""Column names tried in order (case-insensitively) for each part of a row whose column is not given."""
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
_IMAGE_PLACEHOLDER = "<image>"  # LLaVA-style conversations mark the image's place in the text


@dataclass(frozen=True)
class HFColumns:
    """The dataset column that holds each part of a chat row (None: the dataset has no such column)."""

    image: str | None = None
    prompt: str | None = None
    response: str | None = None
    messages: str | None = None


@dataclass(frozen=True)
class HFData:
    """An image+text dataset opened for training: one split and its settled column mapping (see `open_hf`)."""

    source: str
    split: str | None
    columns: HFColumns
    guessed: tuple[str, ...]  # the parts whose column was guessed from its name or feature
    dataset: Any = field(compare=False, repr=False)

    @property
    def label(self) -> str:
        """How the user names it: `hf:<source>`."""
        return f"{HF_PREFIX}{self.source}"

    @property
    def name(self) -> str:
        """Short name for `meta.domain` and row ids: the folder's or the hub dataset's own name."""
        return Path(self.source.rstrip("/")).name or self.source

    def describe(self) -> str:
        """One line naming the split, the row count and each part's column, guesses marked."""
        parts = [
            f"{role}={getattr(self.columns, role)}" + (" (guessed)" if role in self.guessed else "")
            for role in COLUMN_ROLES
            if getattr(self.columns, role) is not None
        ]
        if self.columns.image is None:
            parts.append("no image column (text rows)")
        split = f"split '{self.split}', " if self.split else ""
        return f"{self.label} ({split}{len(self.dataset)} rows): {', '.join(parts)}"


def open_hf(
    source: str,
    *,
    split: str | None = None,
    image_column: str | None = None,
    prompt_column: str | None = None,
    response_column: str | None = None,
    messages_column: str | None = None,
) -> HFData:
    """Open an image+text dataset with `datasets` and settle which column holds each part of a chat row.

    Args:
        source: `hf:` (optional here) followed by a hub id (read from the local cache when HF_HUB_OFFLINE=1), a
            folder written by `save_to_disk`, a folder of data files (as `datasets.load_dataset` reads it, e.g. an
            imagefolder), or one parquet, csv, json(l) or arrow file.
        split: Split to read; default: "train", or the only split.
        image_column: Images: an Image feature, a list of them, or file paths (relative to the dataset's folder).
            "none" trains on the text alone. Default: the first name in `COMMON_COLUMNS["image"]`, else the
            first column with an Image feature, else none (text rows).
        prompt_column: The user's request (shown beside the image). Default: guessed from its name.
        response_column: The assistant's answer, the only text the loss is taken on. Default: guessed.
        messages_column: Chat turns (`{"role", "content"}`, or ShareGPT's `{"from", "value"}`) instead of a
            prompt and a response. Default: guessed, and used only when no prompt and response columns are found.

    Returns:
        The opened split and its mapping; the guess is logged (and `HFData.describe` says it in one line).

    Raises:
        ValueError: The dataset cannot be loaded, the split is unknown or empty, a named column does not exist, or
            no prompt and response can be found. The message lists what the dataset has and the option to set.
    """
    text = (source[len(HF_PREFIX) :] if source.startswith(HF_PREFIX) else source).strip()
    if not text:
        raise ValueError("hf: needs a hub id or a folder after it, e.g. --data hf:data/faces or hf:owner/name")
    label = f"{HF_PREFIX}{text}"
    dataset, split, sizes = _pick_split(open_dataset(text, label), split, label)
    if len(dataset) == 0:
        where = f"split '{split}'" if split else "the dataset"
        raise ValueError(f"{label}: {where} has no rows; choose a split that has rows with --split "
                         f"(rows per split: {sizes})")
    given = {"image": image_column, "prompt": prompt_column, "response": response_column,
             "messages": messages_column}
    columns, guessed = _settle_columns(dataset.features, label, given)
    data = HFData(text, split, columns, guessed, dataset)
    if guessed:
        logger.info("%s", data.describe())
    return data


def hf_rows(data: HFData) -> list[dict[str, Any]]:
    """The opened split as checked chat rows: a user turn with the image part(s) and the prompt, then the response.

    Images are decoded here, once, into RGB PIL images (Pillow's decompression-bomb limit stays on).

    Raises:
        ValueError: A row without a response (or prompt), or whose image cannot be decoded; the message names the
            row by its index in the split (`dataset[i]`).
    """
    import datasets

    dataset, columns = data.dataset, data.columns
    decoder = datasets.Image()
    if columns.image is not None:
        feature = dataset.features[columns.image]
        if _is_image_feature(feature):  # decoded by us, row by row, so a bad image is named by its row
            decoder = feature if isinstance(feature, datasets.Image) else _list_item(feature)
            undecoded = datasets.Image(mode=decoder.mode, decode=False)
            dataset = dataset.cast_column(
                columns.image, undecoded if isinstance(feature, datasets.Image) else _with_item(feature, undecoded)
            )
    folder = _local_folder(data.source)
    rows = []
    for index, record in enumerate(dataset):
        where = f"{data.label}: row {index}"
        images = [] if columns.image is None else _decode(record[columns.image], decoder, where, columns.image, folder)
        if columns.messages is not None:
            messages = _chat_turns(record[columns.messages], where, columns.messages, len(images))
        else:
            messages = _prompt_turns(record, columns, where, len(images))
        raw = {"messages": messages, "images": images, "meta": {"domain": data.name, "id": f"{data.name}-{index}"}}
        rows.append(_check_row(raw, where, folder or Path.cwd(), data.name, index))
    return rows


def parse_hf_options(text: str | None) -> dict[str, str]:
    """`image=img,prompt=q,response=a,split=test` (the study's `data_columns`) as `open_hf` keyword arguments.

    Raises:
        ValueError: A pair that is not `KEY=NAME` with KEY one of image, prompt, response, messages, split.
    """
    keys = {**{role: f"{role}_column" for role in COLUMN_ROLES}, "split": "split"}
    options: dict[str, str] = {}
    for pair in (text or "").split(","):
        if not pair.strip():
            continue
        key, eq, value = (s.strip() for s in pair.partition("="))
        if not eq or key not in keys or not value:
            raise ValueError(f"data_columns: '{pair.strip()}' is not KEY=NAME with KEY one of {', '.join(keys)} "
                             "(e.g. --set data_columns=image=img,prompt=question,response=answer)")
        options[keys[key]] = value
    return options


def _flag(role: str) -> str:
    return f"--{role}-column ({role}= in the study's data_columns)"


def _pick_split(loaded: Any, split: str | None, label: str) -> tuple[Any, str | None, dict[str, int]]:
    """The chosen split, its name, and the rows per split (for messages)."""
    if isinstance(loaded, Mapping):  # a DatasetDict
        sizes = {name: len(part) for name, part in loaded.items()}
        if split is None:
            if "train" in loaded or len(loaded) == 1:
                split = "train" if "train" in loaded else next(iter(loaded))
            else:
                raise ValueError(f"{label}: has splits {list(sizes)} and none is 'train'; choose one with --split")
        elif split not in loaded:
            raise ValueError(f"{label}: no split '{split}'; its splits are {list(sizes)}; choose one with --split")
        return loaded[split], split, sizes
    own = None if getattr(loaded, "split", None) is None else str(loaded.split)
    if split is not None and split != own:
        held = f"the single split '{own}'" if own else "one unnamed split"
        raise ValueError(f"{label}: holds {held}, not '{split}'; leave --split out")
    return loaded, own, {own or "(unnamed)": len(loaded)}


def _settle_columns(
    features: Mapping[str, Any], label: str, given: dict[str, str | None]
) -> tuple[HFColumns, tuple[str, ...]]:
    """Named columns checked, the rest guessed; the mapping and which parts were guessed."""
    names = list(features)
    chosen: dict[str, str | None] = {}
    for role, column in given.items():
        if column is None:
            continue
        if role == "image" and column.lower() == NO_COLUMN:
            chosen[role] = None
        elif column not in features:
            raise ValueError(f"{label}: no column '{column}' (given with {_flag(role)}); its columns are {names}")
        else:
            chosen[role] = column
    if chosen.get("messages") and (given["prompt"] or given["response"]):
        raise ValueError(f"{label}: give either {_flag('messages')} or a prompt and a response column, not both")

    lower = {name.lower(): name for name in names}
    guessed: list[str] = []

    def guess(role: str) -> str | None:
        found = next((lower[c] for c in COMMON_COLUMNS[role] if c in lower), None)
        if role == "image" and found is None:
            found = next((n for n in names if _is_image_feature(features[n])), None)
        if found is not None:
            guessed.append(role)
        return found

    image = chosen["image"] if "image" in chosen else guess("image")
    if chosen.get("messages"):
        return HFColumns(image=image, messages=chosen["messages"]), tuple(guessed)
    prompt = chosen.get("prompt") or guess("prompt")
    response = chosen.get("response") or guess("response")
    if prompt and response:
        return HFColumns(image=image, prompt=prompt, response=response), tuple(guessed)
    if not (given["prompt"] or given["response"]):
        messages = guess("messages")
        if messages:
            guessed = [g for g in guessed if g not in ("prompt", "response")]
            return HFColumns(image=image, messages=messages), tuple(guessed)
    missing = [role for role, column in (("prompt", prompt), ("response", response)) if column is None]
    looked = "; ".join(f"{role}: {', '.join(COMMON_COLUMNS[role])}" for role in missing)
    raise ValueError(
        f"{label}: found no {' and no '.join(missing)} column (looked for {looked}); its columns are {names}; "
        f"name {'it' if len(missing) == 1 else 'them'} with {' and '.join(_flag(r) for r in missing)}, "
        f"or a chat column with {_flag('messages')}"
    )


def _is_image_feature(feature: Any) -> bool:
    import datasets

    if isinstance(feature, datasets.Image):
        return True
    item = _list_item(feature)
    return isinstance(item, datasets.Image)


def _list_item(feature: Any) -> Any:
    """The item feature of a list feature (None for anything else)."""
    if isinstance(feature, list):
        return feature[0] if feature else None
    return getattr(feature, "feature", None)


def _with_item(feature: Any, item: Any) -> Any:
    """The same list feature holding `item` instead."""
    import dataclasses

    return [item] if isinstance(feature, list) else dataclasses.replace(feature, feature=item)


def _local_folder(source: str) -> Path | None:
    path = Path(source).expanduser()
    if path.is_dir():
        return path.resolve()
    return path.resolve().parent if path.is_file() else None


def _decode(value: Any, decoder: Any, where: str, column: str, folder: Path | None) -> list[Any]:
    """A row's image value(s) as RGB PIL images; None (no image in this row) gives none."""
    values = value if isinstance(value, list) else [value]
    images = []
    for item in values:
        if item is None:
            continue
        if isinstance(item, str):
            path = Path(item) if Path(item).is_absolute() else (folder or Path.cwd()) / item
            if not path.is_file():
                raise ValueError(f"{where}: image file {item!r} in column '{column}' not found (relative paths start "
                                 f"at {folder or Path.cwd()}); fix the path or drop the row")
            item = {"path": str(path), "bytes": None}
        if isinstance(item, Image.Image):
            images.append(item.convert("RGB"))
            continue
        if not isinstance(item, dict):
            raise ValueError(f"{where}: column '{column}' holds a {type(item).__name__}, not an image; "
                             f"name the image column with {_flag('image')}")
        try:
            images.append(decoder.decode_example(item).convert("RGB"))
        except Exception as exc:  # Pillow's errors (unreadable, truncated, decompression bomb) vary by format
            raise ValueError(f"{where}: the image in column '{column}' cannot be decoded "
                             f"({type(exc).__name__}: {exc}); replace or drop that row") from exc
    return images


def _prompt_turns(record: Mapping[str, Any], columns: HFColumns, where: str, n_images: int) -> list[dict[str, Any]]:
    response = record[columns.response]
    if not isinstance(response, str) or not response.strip():
        raise ValueError(f"{where}: no response in column '{columns.response}' (found {_short(response)}); "
                         "every row needs the answer to train on: fill it in or drop the row")
    prompt = record[columns.prompt]
    prompt = "" if prompt is None else prompt
    if not isinstance(prompt, str):
        raise ValueError(f"{where}: column '{columns.prompt}' holds a {type(prompt).__name__}, not text; "
                         f"name the prompt column with {_flag('prompt')}")
    if not prompt.strip() and not n_images:
        raise ValueError(f"{where}: no prompt in column '{columns.prompt}' and no image; fill it in or drop the row")
    user: Any = prompt
    if n_images:
        user = [{"type": "image"} for _ in range(n_images)]
        if prompt.strip():
            user.append({"type": "text", "text": prompt})
    return [{"role": "user", "content": user}, {"role": "assistant", "content": response}]


def _chat_turns(value: Any, where: str, column: str, n_images: int) -> list[dict[str, Any]]:
    """A messages column's turns in our shape; images with no image part go first in the first user turn."""
    if isinstance(value, Mapping) and value and all(isinstance(v, list) for v in value.values()):
        value = [dict(zip(value, items)) for items in zip(*value.values())]  # a Sequence feature's dict of lists
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where}: column '{column}' must hold a non-empty list of chat turns, got {_short(value)}")
    turns = []
    for turn in value:
        if isinstance(turn, Mapping):
            if turn.get("role") is None and turn.get("from") is not None:  # ShareGPT
                turn = {"role": _SHAREGPT_ROLES.get(str(turn["from"]).lower(), turn["from"]),
                        "content": turn.get("value")}
            turn = {"role": turn.get("role"), "content": turn.get("content")}
        turns.append(turn)
    has_part = any(
        isinstance(t, dict) and isinstance(t["content"], list)
        and any(isinstance(p, Mapping) and p.get("type") == "image" for p in t["content"])
        for t in turns
    )
    first_user = next((i for i, t in enumerate(turns) if isinstance(t, dict) and t["role"] == "user"), None)
    if n_images and not has_part and first_user is not None:
        content = turns[first_user]["content"]
        images = [{"type": "image"} for _ in range(n_images)]
        if isinstance(content, str):
            content = content.replace(_IMAGE_PLACEHOLDER, "").strip()
            content = images + ([{"type": "text", "text": content}] if content else [])
        elif isinstance(content, list):
            content = images + content
        turns[first_user] = {**turns[first_user], "content": content}
    return turns


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
