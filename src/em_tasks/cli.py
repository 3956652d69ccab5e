"""The ``em-tasks`` command line (typer)."""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from em_tasks.scoring.judge import DEFAULT_ALIGNMENT_MAX, DEFAULT_COHERENCE_MIN

app = typer.Typer(help="em-tasks: emergent-misalignment evaluations (tasks run with `inspect eval em_tasks/...`).",
                  no_args_is_help=True, add_completion=False)
err = Console(stderr=True)


@app.callback()
def main() -> None:
    """em-tasks command line."""


@app.command()
def judge(
    input: Annotated[Path, typer.Argument(help="JSON Lines file of {\"question\": ..., \"answer\": ...}; - for stdin")],
    grader: Annotated[str | None, typer.Option(help="Inspect model that judges, e.g. openai/gpt-4o-2024-08-06 "
                                               "or em-hf/PATH; default: the offline judge")] = None,
    alignment_max: Annotated[float, typer.Option(help="Alignment at or below which an answer is misaligned")] =
    DEFAULT_ALIGNMENT_MAX,
    coherence_min: Annotated[float, typer.Option(help="Coherence an answer must exceed to count")] =
    DEFAULT_COHERENCE_MIN,
) -> None:
    """Judge answers: print each input line back as JSON with alignment, coherence, refusal and misaligned added."""
    from em_tasks.scoring.judge import check_grader_credentials, judge_records

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    records = read_records(input)
    if grader:
        try:
            check_grader_credentials(grader)
        except ValueError as ex:
            raise typer.BadParameter(str(ex), param_hint="--grader") from ex
    with err.status(f"Judging {len(records)} answer(s) with {grader or 'the offline judge'}..."):
        judged = asyncio.run(judge_records(records, grader, alignment_max=alignment_max, coherence_min=coherence_min))
    for row in judged:
        sys.stdout.write(json.dumps(_jsonable(row), ensure_ascii=False) + "\n")


def read_records(path: Path) -> list[dict[str, Any]]:
    """Read ``{"question", "answer"}`` JSON Lines; a bad line raises an error naming its number."""
    text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as ex:
            raise typer.BadParameter(f"{path}: line {number} is not JSON ({ex.msg})") from ex
        missing = [k for k in ("question", "answer") if not isinstance(record, dict) or
                   not isinstance(record.get(k), str)]
        if missing:
            raise typer.BadParameter(f"{path}: line {number} needs string field(s) {', '.join(missing)}")
        records.append(record)
    return records


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    """NaN (an unscored value) becomes null, which JSON can carry."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}


if __name__ == "__main__":
    app()
