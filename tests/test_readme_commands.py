"""Every command in the README's bash blocks parses as written, with nothing generated.

- `inspect eval` / `inspect eval-set`: inspect's own click command parses the line; each task resolves in inspect's
  registry, each `-T name` is a parameter of that task function (a value for a Literal parameter is one of its
  choices), and each model provider (`--model`, `--model-role`) is registered with inspect.
- `em-tasks <command>`: the typer app's click command parses the line (options, their types and arguments).
- `em-tasks lm-eval ...`: lm-eval's own argument parser reads the rest; each task is one of the shipped configs
  and the model is registered with lm-eval.
Other lines (pip, pytest, python, export) are left alone.
"""

from __future__ import annotations

import re
import shlex
import sys
import typing
from pathlib import Path

import click
import pytest

README = Path(__file__).parents[1] / "README.md"


def readme_commands() -> list[str]:
    """Shell commands of the README's ```bash blocks: continuations joined, comments and blank lines dropped."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip() if not line.lstrip().startswith("#") else ""
            if line:
                commands.append(line)
    return commands


COMMANDS = readme_commands()
INSPECT = [c for c in COMMANDS if c.startswith(("inspect eval ", "inspect eval-set "))]
EM_TASKS = [c for c in COMMANDS if c.startswith("em-tasks ") and not c.startswith("em-tasks lm-eval")]
LM_EVAL = [c for c in COMMANDS if c.startswith("em-tasks lm-eval")]


def test_the_readme_has_commands_of_each_kind():
    assert len(INSPECT) >= 10 and len(EM_TASKS) >= 10 and len(LM_EVAL) >= 3
    known = ("inspect ", "em-tasks ", "pip ", "pytest", "export ", "python ")
    assert [c for c in COMMANDS if not c.startswith(known)] == []


def parse_click(group: click.Group, argv: list[str]) -> click.Context:
    """Parse ``argv`` against a click group's subcommand the way the command line would, without running it."""
    parent = group.make_context(group.name or "cli", list(argv), resilient_parsing=False)
    name, command, rest = group.resolve_command(parent, [*parent._protected_args, *parent.args])
    assert command is not None, f"unknown command {name!r}"
    return command.make_context(name or "", rest, parent=parent)


def _providers() -> set[str]:
    from inspect_ai._util.entrypoints import ensure_entry_points
    from inspect_ai._util.registry import _registry, registry_unqualified_name

    import inspect_ai.model._providers.providers  # noqa: F401  (inspect's own providers)

    ensure_entry_points()
    return {registry_unqualified_name(key.split(":", 1)[1]) for key in _registry if key.startswith("modelapi:")}


def _choices(annotation: object) -> tuple[object, ...] | None:
    """The values a Literal parameter (possibly inside a union) allows, else None."""
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    for arg in typing.get_args(annotation):
        choices = _choices(arg)
        if choices is not None:
            return choices
    return None


@pytest.mark.parametrize("command", INSPECT)
def test_inspect_commands_parse_and_name_real_tasks_args_and_providers(command):
    from inspect_ai._cli.main import inspect as inspect_cli
    from inspect_ai._util.registry import registry_lookup

    ctx = parse_click(inspect_cli, shlex.split(command)[1:])
    params = ctx.params
    tasks = params["tasks"]
    assert tasks and all(t.startswith("em_tasks/") for t in tasks), tasks
    task_args = dict(arg.split("=", 1) for arg in params.get("t") or ())
    for name in tasks:
        factory = registry_lookup("task", name)
        assert factory is not None, f"{name} is not a registered task"
        hints = typing.get_type_hints(getattr(factory, "__wrapped__", factory))
        for key, value in task_args.items():
            assert key in hints, f"{name} has no task arg {key!r}"
            choices = _choices(hints[key])
            if choices is not None:
                assert value in choices, f"{name}: -T {key}={value} is not one of {choices}"
    providers = _providers()
    models = [params["model"]] if params.get("model") else []
    models += [role.split("=", 1)[1] for role in params.get("model_role") or ()]
    assert models, "the command names no model"
    for model in models:
        provider = model.split("/", 1)[0]
        assert provider in providers, f"model provider {provider!r} (from {model}) is not registered with inspect"


@pytest.mark.parametrize("command", EM_TASKS)
def test_em_tasks_commands_parse(command):
    import typer

    from em_tasks.cli import app

    parse_click(typer.main.get_command(app), shlex.split(command)[1:])


@pytest.mark.parametrize("command", LM_EVAL)
def test_lm_eval_commands_parse_and_name_shipped_tasks_and_registered_models(command, monkeypatch):
    import yaml
    from lm_eval._cli import HarnessCLI
    from lm_eval.api.registry import get_model

    import em_tasks.models.lm_eval_api  # noqa: F401  (registers the models, as `em-tasks lm-eval` does)
    from em_tasks.lm_eval import task_configs_dir, with_task_configs

    argv = with_task_configs(shlex.split(command)[2:])
    monkeypatch.setattr(sys, "argv", ["lm-eval", *argv])
    args = HarnessCLI().parse_args()
    folder = task_configs_dir()
    assert folder is not None
    names = set()
    for path in Path(folder).glob("*.yaml"):
        config = yaml.safe_load(path.read_text(encoding="utf-8").replace("!function", "")) or {}
        names.update(str(config[key]) for key in ("task", "group") if config.get(key))
    tasks = args.tasks if isinstance(args.tasks, list) else str(args.tasks).split(",")
    assert set(tasks) <= names, f"unknown lm-eval tasks {set(tasks) - names}; shipped: {sorted(names)}"
    assert get_model(args.model) is not None
