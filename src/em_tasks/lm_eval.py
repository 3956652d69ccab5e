"""``em-tasks lm-eval ...`` / ``python -m em_tasks.lm_eval ...``: lm-eval's CLI with em-tasks' models registered.

lm-eval has no plugin entry point for models, so this launcher imports :mod:`em_tasks.models.lm_eval_api` (which
registers ``em-hf``, ``em-lora`` and ``em-steer``) and hands every argument to lm-eval's own CLI unchanged:

    em-tasks lm-eval --include_path task_configs --tasks em_text_misalign \\
        --model em-hf --model_args pretrained=default --limit 2

When the command names an ``em_`` task and no ``--include_path``, the task configs that ship with em-tasks are
added, so the command also works outside a checkout.
"""

from __future__ import annotations

import sys
from importlib.resources import files
from pathlib import Path

TASK_PREFIX = "em_"


def main(argv: list[str] | None = None) -> int:
    """Run lm-eval's CLI on ``argv`` (default: this process's arguments) with em-tasks' models registered.

    Returns:
        The exit status: 0 on success, else argparse's status.
    """
    try:
        from lm_eval._cli import HarnessCLI
        from lm_eval.utils import setup_logging
    except ImportError:
        print("lm-eval is not installed: pip install 'em-tasks[lm-eval]'", file=sys.stderr)
        return 1
    import em_tasks.models.lm_eval_api  # noqa: F401  (registers the models)

    args = with_task_configs(list(sys.argv[1:] if argv is None else argv))
    saved = sys.argv
    sys.argv = ["lm-eval", *args]  # HarnessCLI reads sys.argv (it inserts `run` for the flag-only form)
    try:
        setup_logging()
        cli = HarnessCLI()
        cli.execute(cli.parse_args())
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        sys.argv = saved
    return 0


def with_task_configs(argv: list[str]) -> list[str]:
    """``argv`` plus ``--include_path <em-tasks task configs>`` when it runs an ``em_`` task without one."""
    if any(a == "--include_path" or a.startswith("--include_path=") for a in argv):
        return argv
    if not any(TASK_PREFIX in a for a in _task_args(argv)):
        return argv
    folder = task_configs_dir()
    return argv if folder is None else [*argv, "--include_path", str(folder)]


def task_configs_dir() -> Path | None:
    """The lm-eval task configs: the installed ``em_tasks.task_configs`` package, else a checkout's folder."""
    try:
        folder = Path(str(files("em_tasks.task_configs")))
    except ModuleNotFoundError:
        folder = Path(__file__).resolve().parents[2] / "task_configs"
    return folder if (folder / "em_text_misalign.yaml").is_file() else None


def _task_args(argv: list[str]) -> list[str]:
    values: list[str] = []
    for i, arg in enumerate(argv):
        if arg in ("--tasks", "-t"):
            for value in argv[i + 1:]:
                if value.startswith("-"):
                    break
                values.append(value)
        elif arg.startswith("--tasks="):
            values.append(arg.split("=", 1)[1])
    return values


if __name__ == "__main__":
    raise SystemExit(main())
