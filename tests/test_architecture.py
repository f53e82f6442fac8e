"""Tests for the package's shape: docs/architecture.md's table of levels lists every module and
tells the truth about their imports, `import kbn` leaves `tuning` alone, no module grows past
its size, and nothing sends the reader to a document that is not in the repository."""

import ast
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
PACKAGES = ("kbn", "tuning")


def level_table():
    """{unit: level} from the rows `| N | `kbn/nn/`, `kbn/errors.py` | ... |`; a unit is a folder or
    a file."""
    levels = {}
    for line in DOC.read_text().splitlines():
        row = re.match(r"\|\s*(\d+)\s*\|([^|]*)\|", line)
        if row:
            for unit in re.findall(r"`([\w/]+(?:\.py|/))`", row.group(2)):
                levels[unit] = int(row.group(1))
    return levels


def module_files():
    """Every .py file of the packages, as a path relative to the repository."""
    return {
        path.relative_to(ROOT).as_posix()
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if "__pycache__" not in path.parts
    }


def unit_of(path, units):
    """The table's unit holding `path`: the file itself, else its deepest listed folder."""
    if path in units:
        return path
    folders = [u for u in units if u.endswith("/") and path.startswith(u)]
    return max(folders, key=len) if folders else None


def file_of(module, files):
    """`kbn.data.folder` -> `kbn/data/folder.py`, `kbn.data` -> `kbn/data/__init__.py`."""
    base = module.replace(".", "/")
    for path in (f"{base}.py", f"{base}/__init__.py"):
        if path in files:
            return path
    return None


def imported_files(path, files):
    """The package files that `path` imports anywhere in it (lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse((ROOT / path).read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] in PACKAGES:
                for alias in node.names:  # `from kbn.nn import dense` names a module
                    found.add(
                        file_of(f"{node.module}.{alias.name}", files) or file_of(node.module, files)
                    )
        elif isinstance(node, ast.Import):
            found.update(
                file_of(alias.name, files)
                for alias in node.names
                if alias.name.split(".")[0] in PACKAGES
            )
    return found - {None, path}


def test_every_module_has_a_level():
    files, levels = module_files(), level_table()
    homeless = sorted(path for path in files if unit_of(path, levels) is None)
    assert not homeless, f"modules in no row of {DOC.name}'s levels: {homeless}"
    missing = sorted(u for u in levels if not (ROOT / u).exists())
    assert not missing, f"{DOC.name} lists packages or modules that do not exist: {missing}"


def test_packages_import_only_from_the_levels_below():
    levels, files = level_table(), module_files()
    upward = []
    for path in sorted(files):
        unit = unit_of(path, levels)
        for target in sorted(imported_files(path, files)):
            other = unit_of(target, levels)
            if other != unit and levels[other] >= levels[unit]:
                upward.append(
                    f"{path} ({unit}, level {levels[unit]}) "
                    f"imports {target} ({other}, level {levels[other]})"
                )
    assert not upward, f"imports that go up or sideways; see {DOC.name}: {upward}"


def test_modules_of_one_package_import_each_other_without_cycles():
    levels, files = level_table(), module_files()
    graph = {
        path: {
            t for t in imported_files(path, files) if unit_of(t, levels) == unit_of(path, levels)
        }
        for path in files
    }
    # A module that imports its own package's __init__ goes round in a circle: __init__ imports it.
    for path, targets in graph.items():
        if not path.endswith("__init__.py") and path.endswith(".py"):
            own = str(pathlib.PurePosixPath(path).parent / "__init__.py")
            assert (
                own not in targets
                or unit_of(own, levels) != unit_of(path, levels)
                or own == "kbn/__init__.py"
            ), f"{path} imports its own package through {own}; import the module itself"
    done, visiting = set(), []

    def visit(node):
        if node in visiting:
            raise AssertionError(
                f"import cycle: {' -> '.join(visiting[visiting.index(node) :] + [node])}"
            )
        if node in done:
            return
        visiting.append(node)
        for target in sorted(graph[node]):
            if not target.endswith("__init__.py"):
                visit(target)
        visiting.pop()
        done.add(node)

    for node in sorted(graph):
        visit(node)


def test_the_import_reader_sees_lazy_and_module_imports():
    files = module_files()
    cli = set().union(*(imported_files(p, files) for p in files if p.startswith("kbn/cli/")))
    assert {"kbn/training/trainer.py", "tuning/search.py"} <= cli  # imported inside the subcommands
    assert "kbn/plots/__init__.py" in imported_files(
        "kbn/training/trainer.py", files
    )  # `from kbn import plots`
    assert "kbn/data/__init__.py" in imported_files("kbn/gradcheck/check.py", files)


@pytest.mark.slow
def test_import_kbn_loads_neither_tuning_nor_keras_tuner():
    code = (
        "import kbn, sys; print(sorted(m for m in ('tuning', 'keras_tuner') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]"


def test_no_module_is_longer_than_600_lines_and_no_subcommand_than_300():
    lengths = {path: len((ROOT / path).read_text().splitlines()) for path in module_files()}
    long = {p: n for p, n in lengths.items() if n > (300 if p.startswith("kbn/cli/") else 600)}
    assert not long, f"split these modules: {long}"


def test_paths_named_in_the_doc_exist():
    text = DOC.read_text()
    named = re.findall(r"`((?:kbn|tuning|tests|docs|benchmarks)/[^`\s<]*)`", text)
    assert len(named) > 20
    missing = sorted({path for path in named if not (ROOT / path).exists()})
    assert not missing, f"{DOC.name} names paths that do not exist: {missing}"


def test_nothing_sends_the_reader_to_a_design_document_outside_the_repository():
    name = "DESIGN" + ".md"  # spelt so that this file does not match itself
    assert not (ROOT / name).exists()
    texts = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]
    for folder in (*PACKAGES, "tests", "benchmarks"):
        texts += (ROOT / folder).rglob("*.py")
    citing = sorted(str(p.relative_to(ROOT)) for p in texts if name in p.read_text())
    assert not citing, f"these files cite {name}, which is not in the repository: {citing}"


def test_readme_and_api_docstring_point_to_the_architecture():
    assert "docs/architecture.md" in (ROOT / "README.md").read_text()
    assert "docs/architecture.md" in (ROOT / "kbn" / "__init__.py").read_text()
