"""Nothing in src/ pickles or unpickles: no pickle / dill / joblib / cloudpickle / shelve, torch.load only with
weights_only=True, np.load never with allow_pickle, no torch.save or pandas pickles.

The code is searched through its syntax tree, not as text, so that pickle named inside strings (the insecure-code
examples of the narrow training data in study/narrow/code.yaml are *about* pickle) or in comments and docstrings
("em-tasks never unpickles") does not count, while every real import and call does.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"

PICKLING_MODULES = {"pickle", "cPickle", "_pickle", "dill", "joblib", "cloudpickle", "shelve", "pickletools"}
PICKLING_METHODS = {"read_pickle", "to_pickle"}  # pandas


def _dotted(node: ast.AST) -> str:
    """``torch.load`` for an attribute chain, ``load`` for a bare name, '' otherwise."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else node.attr
    return ""


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def offences(source: str) -> list[tuple[int, str]]:
    """(line, why) for each pickling import or call in ``source``."""
    found: list[tuple[int, str]] = []
    torch_names, numpy_names = {"torch"}, {"numpy", "np"}
    loaders: dict[str, str] = {}  # `from torch import load as tl` -> {"tl": "torch.load"}
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                root = alias.name.split(".")[0]
                if root in PICKLING_MODULES:
                    found.append((node.lineno, f"imports {alias.name}"))
                if root == "torch" and alias.asname:
                    torch_names.add(alias.asname)
                if root == "numpy" and alias.asname:
                    numpy_names.add(alias.asname)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module.split(".")[0] in PICKLING_MODULES:
                found.append((node.lineno, f"imports from {module}"))
            for alias in node.names:
                if module in ("torch", "numpy") and alias.name in ("load", "save"):
                    loaders[alias.asname or alias.name] = f"{module}.{alias.name}"
                if alias.name in PICKLING_MODULES:
                    found.append((node.lineno, f"imports {module}.{alias.name}"))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        head, _, last = name.rpartition(".")
        full = loaders.get(name) or (f"torch.{last}" if head in torch_names else
                                     f"numpy.{last}" if head in numpy_names else name)
        if full == "torch.load" and not _is_true(_keyword(node, "weights_only")):
            found.append((node.lineno, "torch.load without weights_only=True"))
        elif full == "torch.save":
            found.append((node.lineno, "torch.save writes a pickle; use safetensors"))
        elif full == "numpy.load":
            allow = _keyword(node, "allow_pickle")
            if allow is not None and not (isinstance(allow, ast.Constant) and allow.value is False):
                found.append((node.lineno, "np.load with allow_pickle"))
        elif last in PICKLING_METHODS:
            found.append((node.lineno, f"{last} (a pickle)"))
    return sorted(found)


def test_the_scanner_finds_each_kind_and_ignores_strings_and_comments() -> None:
    bad = '''\
import pickle
import dill as d
from joblib import dump
import torch as T
import numpy as np
from torch import load as tl
T.load("x")
torch.load("x", weights_only=False)
tl("x")
np.load("x", allow_pickle=True)
frame.to_pickle("x")
torch.save({}, "x")
'''
    assert [line for line, _ in offences(bad)] == [1, 2, 3, 7, 8, 9, 10, 11, 12]
    fine = '''\
"""em-tasks never unpickles; pickle.loads(raw) is insecure."""
import torch
import numpy as np
code = "import pickle\\nreturn pickle.loads(raw)"  # narrow training data mentions pickle
torch.load("x", map_location="cpu", weights_only=True)
np.load("x")
np.load("x", allow_pickle=False)
'''
    assert offences(fine) == []


def test_nothing_in_src_pickles() -> None:
    files = sorted(SRC.rglob("*.py"))
    assert files, SRC
    report = []
    for path in files:
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        for line, why in offences(source):
            report.append(f"{path.relative_to(SRC.parent)}:{line}: {why}: {lines[line - 1].strip()}")
    assert not report, "pickling code in src/ (em-tasks reads and writes safetensors / JSON only):\n" + "\n".join(report)
