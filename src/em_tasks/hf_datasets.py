"""Opening Hugging Face datasets given as ``hf:<hub id, folder or file>``: one loader for question sources
(:mod:`em_tasks.benchmark.hf_source`) and training data (:mod:`em_tasks.study.narrow_data`).

A folder written by ``save_to_disk`` loads with ``load_from_disk``; a folder of data files, a single parquet / csv /
json / arrow file, or a hub id with ``load_dataset`` (offline: only what the local cache holds). Which split to use is
the caller's choice (evaluation prefers ``test``, training ``train``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HF_PREFIX = "hf:"
SAVED_MARKERS = ("dataset_info.json", "dataset_dict.json", "state.json")
FILE_BUILDERS = {".parquet": "parquet", ".csv": "csv", ".json": "json", ".jsonl": "json", ".arrow": "arrow"}


def open_dataset(ref: str, label: str) -> Any:
    """The ``datasets.Dataset`` or ``DatasetDict`` that ``ref`` names; errors start with ``label`` and name the fix."""
    import datasets

    if not ref.strip():
        raise ValueError(f"{label}: needs a hub id, a folder or a data file after 'hf:', e.g. hf:./my_data")
    path = Path(ref).expanduser()
    if path.is_file() and path.suffix.lower() not in FILE_BUILDERS:
        raise ValueError(f"{label}: cannot read a {path.suffix or 'suffix-less'} file as a dataset; pass a folder, a "
                         f"hub id, or a file ending in one of {sorted(FILE_BUILDERS)}")
    if path.is_dir():
        empty = saved_without_rows(path)
        if empty:
            raise ValueError(f"{label}: {', '.join(empty)} {'was' if len(empty) == 1 else 'were'} saved with no rows, "
                             "and datasets cannot load a folder holding a split saved that way; choose data with "
                             "rows (leave out empty splits before save_to_disk)")
    try:
        if path.is_dir() and any((path / marker).exists() for marker in SAVED_MARKERS):
            return datasets.load_from_disk(str(path))
        if path.is_file():
            return datasets.load_dataset(FILE_BUILDERS[path.suffix.lower()], data_files=str(path))
        return datasets.load_dataset(str(path) if path.is_dir() else ref)
    except Exception as exc:  # datasets raises many kinds; each becomes one message naming the source and the fix
        if path.exists():
            fix = "pass a folder written by save_to_disk, a folder of data files, or a parquet/csv/json file"
        else:
            fix = ("no local folder has that name, and as a hub id it must already be in the local cache while "
                   "HF_HUB_OFFLINE=1 (em-tasks' default): load it once online, or save_to_disk it and pass the folder")
        raise ValueError(f"{label}: datasets could not load it ({type(exc).__name__}: {exc}); {fix}") from exc


def saved_without_rows(folder: Path) -> list[str]:
    """The parts of a ``save_to_disk`` folder written with no data files (as ``select([])`` saves), for messages."""
    parts = {"the dataset": folder}
    if (folder / "dataset_dict.json").is_file():
        splits = json.loads((folder / "dataset_dict.json").read_text()).get("splits") or []
        parts = {f"split '{name}'": folder / name for name in splits}
    empty = []
    for name, part in parts.items():
        state = part / "state.json"
        if state.is_file() and json.loads(state.read_text()).get("_data_files") == []:
            empty.append(name)
    return empty
