"""One rule for every on-disk cache entry em-tasks builds (converted GGUFs, the embedded defaults, merged LoRA).

:func:`build_once` makes a build safe when several processes (parallel evals, a sweep's workers) ask for the same
entry at once:

1. A complete entry (its completion marker present) is returned at once, without locking.
2. Otherwise the process takes an exclusive file lock beside the entry (``.<name>.lock`` in the same folder); a
   process that has to wait logs what it waits for, and again every minute.
3. Inside the lock the marker is checked again: whoever waited finds the entry the first process built and builds
   nothing.
4. The build writes into a temporary folder in the same folder as the entry (so the final rename is atomic and an
   interrupted build never looks complete), and is moved into place only once its marker is written.
5. A complete entry is never deleted or replaced, so a process reading it is never pulled from under. Only an
   incomplete leftover (no marker: a crash before this rule, an older layout) is moved aside and removed, and only
   by the lock holder; so are temporary folders that builds killed mid-way left behind.

Lock files stay in place (removing them safely needs more care than they cost); they are empty.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = ["build_once", "cache_lock", "is_complete", "staging_for", "remove_staged", "replace_folder", "write_file"]

WAIT_LOG_SECONDS = 60.0


def lock_path(out: Path) -> Path:
    """The lock file guarding ``out``: a hidden file beside it."""
    return out.parent / f".{out.name}.lock"


def _staging_prefix(out: Path) -> str:
    return f".{out.name}.building-"


def is_complete(out: Path, marker: str | None) -> bool:
    """Whether ``out`` is a finished entry: a folder holding ``marker``, or (no marker) an existing file."""
    return (out / marker).is_file() if marker else out.is_file()


@contextmanager
def cache_lock(out: str | Path, what: str | None = None) -> Iterator[None]:
    """Hold the exclusive lock for cache entry ``out`` (blocking; logs while it waits for another process)."""
    from filelock import FileLock, Timeout

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path(out)))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        label = what or out.name
        logger.warning("Waiting for another process to finish building %s at %s (lock %s)", label, out, lock.lock_file)
        while True:
            try:
                lock.acquire(timeout=WAIT_LOG_SECONDS)
                break
            except Timeout:
                logger.warning("Still waiting for %s (lock %s held by another process)", label, lock.lock_file)
        logger.info("Lock for %s acquired", label)
    try:
        yield
    finally:
        lock.release()


def build_once(out: str | Path, build: Callable[[Path], object], *, marker: str | None = None,
               what: str | None = None) -> Path:
    """Return cache entry ``out``, building it first if no process has (see the module docstring for the rule).

    Args:
        out: The entry: a folder (with ``marker``) or a single file (``marker`` None).
        build: Called with a staging path that does not exist yet (``<tmp>/<out.name>``, on the same filesystem as
            ``out``); it must create it: the folder, with ``marker`` written last, or the file.
        marker: File inside a folder entry whose presence means "complete"; None for a file entry.
        what: Words for log lines ("the merged model", "SmolLM2 GGUF").

    Raises:
        RuntimeError: ``build`` returned without creating a complete entry at the staging path.
    """
    out = Path(out)
    if is_complete(out, marker):
        return out
    with cache_lock(out, what):
        if is_complete(out, marker):  # built by the process we waited for
            return out
        _remove_stale_staging(out)
        tmp = Path(tempfile.mkdtemp(prefix=_staging_prefix(out), dir=out.parent))
        try:
            stage = tmp / out.name
            build(stage)
            if not is_complete(stage, marker):
                expected = f"a folder with {marker}" if marker else "a file"
                raise RuntimeError(f"Building {what or out.name} did not produce {expected} at {stage}")
            if out.exists() or out.is_symlink():  # incomplete leftover: nobody reads it, we hold the lock
                aside = tmp / f"{out.name}.stale"
                os.replace(out, aside)
            os.replace(stage, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _remove_stale_staging(out: Path) -> None:
    """Remove staging folders for ``out`` left by builds that were killed (only the lock holder may build)."""
    prefix = _staging_prefix(out)
    for path in out.parent.glob(prefix + "*"):
        if path.is_dir():
            logger.info("Removing %s, left by an interrupted build", path)
            shutil.rmtree(path, ignore_errors=True)


# --- outputs a run replaces (adapters, directions): staged beside, renamed in ------------------------------------


def staging_for(out: Path) -> Path:
    """A fresh hidden sibling of ``out`` to write into (``.<name>.partial-<pid>``) before :func:`replace_folder`."""
    return out.parent / f".{out.name}.partial-{os.getpid()}"


def remove_staged(out: Path) -> None:
    """Delete staging folders that earlier (killed) writes into ``out`` left beside it."""
    for stale in out.parent.glob(f".{out.name}.partial-*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)


def replace_folder(staging: Path, out: Path) -> None:
    """Put a complete ``staging`` folder at ``out`` by renames: an older ``out`` (folder or link) is moved aside, the
    new one renamed in, the old one deleted; ``out`` is never half-written. Should renaming the new one in fail, the
    old one is put back, so ``out`` stays as it was."""
    old = None
    if out.exists() or out.is_symlink():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    try:
        os.replace(staging, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    if old is None:
        return
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink()


def write_file(path: Path, write: Callable[[Path], object]) -> Path:
    """Write one file whole or not at all: ``write`` fills a hidden sibling (``.<stem>.partial-<pid><suffix>``),
    which is renamed onto ``path`` once it returns; a run killed mid-way leaves no truncated ``path`` that a rerun
    would take for finished."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")
    try:
        write(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path
