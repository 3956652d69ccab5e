"""Hugging Face image-question datasets as a question source: ``questions=hf:<hub id or local folder>``.

A folder written by ``save_to_disk`` is read with ``datasets.load_from_disk``; any other folder (data files) or a hub
id with ``datasets.load_dataset``, which caches downloads and honours ``HF_HUB_OFFLINE``. Each row becomes an item
whose image variant is the row's image and whose text variant is the image's description (if the dataset has one)
followed by the question. Image bytes are kept as stored and decoded once, when samples are built, so one bad image
fails its own sample instead of the load.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from em_tasks.benchmark.items import FILE_STYLE, DatasetOptions, ImageSpec, Item, TaskKind
from em_tasks.hf_datasets import open_dataset

logger = logging.getLogger(__name__)

SPLIT_PREFERENCE = ("test", "validation", "train")
"""Splits tried in order when none is given (then the only split, if there is one)."""

QUESTION_COLUMNS = ("question", "prompt", "query", "instruction", "text")
IMAGE_COLUMNS = ("image", "img", "picture", "photo")
ID_COLUMNS = ("id", "question_id", "image_id")
CATEGORY_COLUMNS = ("category", "type", "label", "scenario")
DESCRIPTION_COLUMNS = ("description", "caption")
"""Column names guessed, in order (case-insensitive), when a column option is not given."""

NO_COLUMN = "none"
"""Value of an optional column option that turns the column off (ids from row indices, no categories, ...)."""



@dataclass(frozen=True)
class ColumnMap:
    """Which dataset column plays which part; None where the dataset has no such column."""

    question: str
    image: str
    id: str | None
    category: str | None
    description: str | None


def load_hf_items(ref: str, kind: TaskKind = "misalign", options: DatasetOptions | None = None) -> list[Item]:
    """Read one split of a Hugging Face image-question dataset as items.

    Args:
        ref: A hub id, a folder written by ``save_to_disk``, or a folder of data files.
        kind: The task kind every item is tagged with.
        options: The split and the columns to read; what is not given is guessed: the split from test, validation,
            train, else the only split; the columns from `QUESTION_COLUMNS`, `IMAGE_COLUMNS` (else the only image
            column), `ID_COLUMNS` (used only if unique), `CATEGORY_COLUMNS` and `DESCRIPTION_COLUMNS`.

    Returns:
        The items, in row order.

    Raises:
        ValueError: If the dataset cannot be loaded (offline and not cached, say), the split does not exist or is
            empty, a column option names no column (the message lists the columns), no question or image column
            can be guessed, an explicit id column repeats a value, or a row has no question.
    """
    label = f"hf:{ref}"
    options = options or DatasetOptions()
    dataset, split_name = _load_split(ref, options.split)
    columns = _map_columns(dataset, label, options)
    ids = _ids(dataset, label, columns, explicit=options.id_column is not None)
    if ids is None:
        columns = ColumnMap(columns.question, columns.image, None, columns.category, columns.description)
    logger.info(
        "%s: split %r, %d rows; columns: question=%s image=%s id=%s category=%s description=%s",
        label, split_name, len(dataset), columns.question, columns.image, columns.id or "(row index)",
        columns.category or "(dataset name)", columns.description or "(none: image-only items)",
    )
    return _items(dataset, label, split_name, columns, ids, kind, default_category=_dataset_name(ref))


def _load_split(ref: str, split: str | None) -> tuple[Any, str | None]:
    """The requested (or guessed) split as a `datasets.Dataset`, and its name (None for a dataset without splits)."""
    import datasets

    data = open_dataset(ref, f"questions=hf:{ref}")
    if isinstance(data, datasets.Dataset):
        if split is not None:
            raise ValueError(f"hf:{ref} holds a single dataset without splits; drop split={split!r}")
        name = None
        dataset = data
    else:
        names = list(data)
        if split is not None:
            if split not in names:
                raise ValueError(f"hf:{ref} has no split {split!r}; its splits: {names}")
            name = split
        else:
            name = next((s for s in SPLIT_PREFERENCE if s in names), names[0] if len(names) == 1 else None)
            if name is None:
                raise ValueError(f"hf:{ref} has splits {names} and none of {list(SPLIT_PREFERENCE)}; "
                                 "pick one with split=")
        dataset = data[name]
    if len(dataset) == 0:
        where = f"split {name!r}" if name is not None else "the dataset"
        raise ValueError(f"hf:{ref}: {where} is empty (no rows); pick another split with split=")
    return dataset, name


def _map_columns(dataset: Any, label: str, options: DatasetOptions) -> ColumnMap:
    import datasets

    names = list(dataset.column_names)
    image_names = [n for n in names if isinstance(dataset.features[n], datasets.Image)]

    def pick(option: str, guesses: Sequence[str], required: bool) -> str | None:
        given = getattr(options, option)
        if given is not None:
            if not required and given.lower() == NO_COLUMN:
                return None
            if given not in names:
                raise ValueError(f"{label}: {option}={given!r} is not a column; the dataset's columns: {names}")
            return given
        lowered = {n.lower(): n for n in names}
        found = next((lowered[g] for g in guesses if g in lowered), None)
        if found is None and option == "image_column" and len(image_names) == 1:
            found = image_names[0]
        if found is None and required:
            raise ValueError(
                f"{label}: no {option.removesuffix('_column')} column found among {names} (looked for "
                f"{list(guesses)}); name it with {option}=<column>"
            )
        return found

    columns = ColumnMap(
        question=pick("question_column", QUESTION_COLUMNS, required=True),  # type: ignore[arg-type]
        image=pick("image_column", IMAGE_COLUMNS, required=True),  # type: ignore[arg-type]
        id=pick("id_column", ID_COLUMNS, required=False),
        category=pick("category_column", CATEGORY_COLUMNS, required=False),
        description=pick("description_column", DESCRIPTION_COLUMNS, required=False),
    )
    if not isinstance(dataset.features[columns.image], datasets.Image):
        raise ValueError(
            f"{label}: column {columns.image!r} holds {dataset.features[columns.image]}, not images; "
            f"name the image column with image_column= (columns with images: {image_names or 'none'})"
        )
    return columns


def _ids(dataset: Any, label: str, columns: ColumnMap, explicit: bool) -> list[str] | None:
    """Item ids from the id column, or None for row-index ids (no column, or a guessed one that repeats)."""
    if columns.id is None:
        return None
    values = dataset[columns.id]
    missing = [k for k, v in enumerate(values) if v is None or str(v).strip() == ""]
    ids = [str(v) for v in values]
    repeated = sorted(i for i, n in Counter(ids).items() if n > 1)
    if not missing and not repeated:
        return ids
    problem = f"has no value in rows {missing[:5]}" if missing else f"repeats values {repeated[:5]}"
    if explicit:
        raise ValueError(f"{label}: id_column={columns.id!r} {problem}; pick a column of unique ids, "
                         f"or id_column={NO_COLUMN} for ids from row indices (hf-<row>)")
    logger.warning("%s: guessed id column %r %s; using row indices (hf-<row>) instead", label, columns.id, problem)
    return None


def _items(
    dataset: Any,
    label: str,
    split: str | None,
    columns: ColumnMap,
    ids: list[str] | None,
    kind: TaskKind,
    default_category: str,
) -> list[Item]:
    import datasets

    used = [c for c in (columns.question, columns.image, columns.category, columns.description) if c is not None]
    category_feature = dataset.features[columns.category] if columns.category else None
    rows = dataset.select_columns(list(dict.fromkeys(used))).cast_column(columns.image, datasets.Image(decode=False))
    where_split = f" split {split!r}" if split is not None else ""
    items = []
    for index, row in enumerate(rows):
        item_id = ids[index] if ids is not None else f"hf-{index}"
        where = f"{label}{where_split} row {index} (id {item_id!r})"
        question = row[columns.question]
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"{where}: no question in column {columns.question!r}; drop the row "
                             "(dataset.filter) or pick another column with question_column=")
        description = row[columns.description] if columns.description else None
        items.append(
            Item(
                id=item_id,
                category=_category(row, columns.category, category_feature, default_category),
                question=question,
                image=ImageSpec(
                    style=FILE_STYLE,
                    prompt=question,
                    description=description.strip() if isinstance(description, str) and description.strip()
                    else None,
                    origin=where,
                    **_image_source(row[columns.image]),
                ),
                kind=kind,
            )
        )
    return items


def _image_source(cell: Any) -> dict[str, Any]:
    """The stored image of a row: its bytes, else a local file; neither for an empty cell (its sample fails)."""
    if not isinstance(cell, dict):
        return {}
    if cell.get("bytes") is not None:
        return {"data": bytes(cell["bytes"])}
    if cell.get("path"):
        return {"file": Path(cell["path"])}
    return {}


def _category(row: dict[str, Any], column: str | None, feature: Any, default: str) -> str:
    import datasets

    if column is None or row[column] is None or str(row[column]).strip() == "":
        return default
    value = row[column]
    if isinstance(feature, datasets.ClassLabel) and isinstance(value, int):
        return feature.int2str(value) if value >= 0 else default  # -1: unlabelled
    return str(value)


def _dataset_name(ref: str) -> str:
    name = Path(ref.rstrip("/")).name
    return name or ref
