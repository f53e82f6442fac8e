"""The public API is typed: kbn ships py.typed and claims "Typing :: Typed".

The public API is what docs/api/*.md documents with a `::: name` directive: a
module or package documents its public functions and classes (defined in it or
listed in its `__all__`), a class its public methods, `__init__` and
properties, a function itself. Imports only: no TensorFlow work.
"""

import importlib
import inspect
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
API = ROOT / "docs" / "api"
PACKAGES = ("kbn", "tuning")


def directives():
    """The names of every `::: name` directive of docs/api/*.md."""
    names = set()
    for page in sorted(API.glob("*.md")):
        names.update(re.findall(r"^:::[ \t]+(\S+)", page.read_text(), flags=re.M))
    return sorted(names)


def resolve(name):
    """The module, class or function a dotted name documents."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name != name:
            raise
    parent, _, attr = name.rpartition(".")
    return getattr(resolve(parent), attr)


def ours(obj):
    return (getattr(obj, "__module__", None) or "").split(".")[0] in PACKAGES


def as_written(function):
    """`function` as kbn or tuning wrote it, under its decorators. KerasTuner's
    `synchronized` keeps the method only in its wrapper's closure (no `__wrapped__`)."""
    function = inspect.unwrap(function)
    if ours(function):
        return function
    for cell in function.__closure__ or ():
        try:
            inner = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if inspect.isfunction(inner) and ours(as_written(inner)):
            return as_written(inner)
    return None


def module_members(module):
    """Public functions and classes defined in `module` or listed in its `__all__`."""
    listed = set(getattr(module, "__all__", ()))
    for name, obj in vars(module).items():
        if name.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue
        if obj.__module__ == module.__name__ or name in listed:
            yield f"{module.__name__}.{name}", obj


def class_members(cls):
    """(qualified name, function) for the class's own public methods, `__init__` and
    properties: those in its own `__dict__`, not those inherited (from Keras or else)."""
    prefix = f"{cls.__module__}.{cls.__qualname__}"
    for name, attr in vars(cls).items():
        if name.startswith("_") and name != "__init__":
            continue
        if isinstance(attr, (staticmethod, classmethod)):
            attr = attr.__func__
        if isinstance(attr, property):
            attr = attr.fget
        if inspect.isfunction(attr) and as_written(attr) is not None:
            yield f"{prefix}.{name}", as_written(attr)


def documented_functions():
    """{qualified name: function} of every documented function and method."""
    found = {}
    seen = set()

    def visit(qualname, obj):
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if inspect.ismodule(obj):
            for name, member in module_members(obj):
                visit(name, member)
        elif inspect.isclass(obj):
            if ours(obj):
                for name, method in class_members(obj):
                    found[name] = method
        elif inspect.isfunction(obj) and ours(obj):
            found[f"{obj.__module__}.{obj.__qualname__}"] = obj

    for name in directives():
        visit(name, resolve(name))
    return found


def missing_hints(qualname, function):
    """`module.name(param)` for each parameter without an annotation, and
    `module.name -> ?` for a missing return annotation (all but `__init__`)."""
    missing = []
    for index, param in enumerate(inspect.signature(function).parameters.values()):
        if index == 0 and param.name in ("self", "cls"):
            continue
        # `*args` and `**kwargs` in kbn's API are pass-throughs to Keras or
        # KerasTuner (a layer's base keywords, the oracle's and the tuner's
        # options and calls), which type none of them: they stay unannotated.
        # Any other star parameter (`**renamed`: old keyword names) is kbn's own.
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) and param.name in (
            "args",
            "kwargs",
        ):
            continue
        if param.annotation is inspect.Parameter.empty:
            missing.append(f"{qualname}({param.name})")
    returns = inspect.signature(function).return_annotation
    if function.__name__ != "__init__" and returns is inspect.Signature.empty:
        missing.append(f"{qualname} -> ?")
    return missing


def test_the_documented_api_is_found():
    functions = documented_functions()
    for name in (
        "kbn.data.dataset.load_data",
        "kbn.nn.batch_norm.BatchNorm.call",
        "kbn.training.trainer.train",
        "tuning.search.search",
        "tuning.tuner.KbnTuner.__init__",
    ):
        assert name in functions
    assert not any(".Layer." in name or "keras." in name for name in functions)


def test_every_documented_function_has_type_hints():
    missing = [
        hint
        for qualname, function in sorted(documented_functions().items())
        for hint in missing_hints(qualname, function)
    ]
    assert not missing, f"{len(missing)} missing type hints:\n" + "\n".join(missing)
