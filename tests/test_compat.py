"""Tests for kbn/_compat.py: every private Keras and KerasTuner name kbn uses still exists in the
installed releases, and no other module of kbn or tuning reaches for one."""

import ast
import importlib
import pathlib

import keras_tuner
import pytest

from kbn import _compat

ROOT = pathlib.Path(__file__).resolve().parent.parent


def resolve(module, path):
    owner = importlib.import_module(module)
    for part in path.split("."):
        owner = getattr(owner, part)
    return owner


@pytest.mark.parametrize("module, path", _compat.READ, ids=[f"{m}.{p}" for m, p in _compat.READ])
def test_every_private_name_kbn_reads_exists(module, path):
    try:
        resolve(module, path)
    except (ImportError, AttributeError) as exc:
        pytest.fail(f"{module}.{path} is gone ({exc}): kbn/_compat.py must find another way")


@pytest.mark.parametrize(
    "module, cls, method", _compat.OVERRIDDEN, ids=[f"{c}.{m}" for _, c, m in _compat.OVERRIDDEN]
)
def test_every_private_method_kbn_overrides_still_exists(module, cls, method):
    assert callable(getattr(resolve(module, cls), method, None)), (
        f"{module}.{cls}.{method} is gone: kbn's override of it would never run"
    )


@pytest.mark.parametrize(
    "module, cls, attribute", _compat.INSTANCE, ids=[f"{c}.{a}" for _, c, a in _compat.INSTANCE]
)
def test_every_private_instance_attribute_kbn_reads_exists(module, cls, attribute, tmp_path):
    assert resolve(module, cls) is keras_tuner.Oracle  # the one owner today; build one to look
    oracle = keras_tuner.oracles.RandomSearchOracle(objective="val_accuracy", max_trials=1)
    assert hasattr(oracle, attribute), f"{module}.{cls}().{attribute} is gone"


def defined_private_names(trees):
    """Every `_name` that kbn's and tuning's own code defines: functions, classes, attributes,
    variables."""
    names = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.alias):
                names.add(node.asname or node.name.split(".")[-1])
    return {name for name in names if name.startswith("_")}


def test_no_module_but_compat_uses_a_private_name_of_keras_or_keras_tuner():
    files = [
        p for d in ("kbn", "tuning") for p in (ROOT / d).rglob("*.py") if p.name != "_compat.py"
    ]
    trees = {p: ast.parse(p.read_text()) for p in files}
    ours = defined_private_names(trees.values())
    stdlib = {("os", "_exit")}  # Python's own: a worker whose chief died leaves at once
    found = []
    for path, tree in trees.items():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                owner = node.value.id if isinstance(node.value, ast.Name) else None
                if node.attr not in ours and (owner, node.attr) not in stdlib:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} .{node.attr}")
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                modules = (
                    [node.module]
                    if isinstance(node, ast.ImportFrom)
                    else [a.name for a in node.names]
                )
                found += [
                    f"{path.relative_to(ROOT)}:{node.lineno} import {m}"
                    for m in modules
                    if m and m.split(".")[:2] in (["keras", "src"], ["keras_tuner", "src"])
                ]
    assert not found, f"private Keras/KerasTuner names outside kbn/_compat.py: {found}"
