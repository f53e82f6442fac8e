"""Tests for docs/architecture.md: its table of floors lists every module of kbn/ and
tuning/ and tells the truth about their imports; the paths it names exist; and nothing in
the repository sends the reader to a design document that is not in it."""

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
PACKAGES = ("kbn", "tuning")


def floor_table():
    """{path: (floor, position in its row)} from the rows `| N | `kbn/x.py`, ... | ... |`."""
    floors = {}
    for line in DOC.read_text().splitlines():
        row = re.match(r"\|\s*(\d+)\s*\|([^|]*)\|", line)
        if row:
            for position, path in enumerate(re.findall(r"`([\w/]+\.py)`", row.group(2))):
                floors[path] = (int(row.group(1)), position)
    return floors


def module_files():
    """Every .py file of the packages, as a path relative to the repository."""
    return {
        path.relative_to(ROOT).as_posix()
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if "__pycache__" not in path.parts
    }


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
                for alias in node.names:  # `from kbn import plots` names a module
                    found.add(file_of(f"{node.module}.{alias.name}", files)
                              or file_of(node.module, files))
        elif isinstance(node, ast.Import):
            found.update(file_of(alias.name, files) for alias in node.names
                         if alias.name.split(".")[0] in PACKAGES)
    return found - {None, path}


def test_every_module_has_a_floor():
    files, listed = module_files(), set(floor_table())
    assert not files - listed, f"modules missing from {DOC.name}'s floors: {sorted(files - listed)}"
    assert not listed - files, f"{DOC.name} lists modules that do not exist: {sorted(listed - files)}"


def test_modules_import_only_from_the_floors_below():
    floors, files = floor_table(), module_files()
    upward = [
        f"{path} (floor {floors[path][0]}) imports {target} (floor {floors[target][0]})"
        for path in sorted(files & set(floors))
        for target in sorted(imported_files(path, files))
        if target in floors and floors[target] >= floors[path]
    ]
    assert not upward, (
        f"imports that go up or sideways; move the module to another floor of {DOC.name} "
        f"(or list it after what it imports in its row): {upward}"
    )


def test_the_import_reader_sees_lazy_and_module_imports():
    files = module_files()
    cli = imported_files("kbn/cli.py", files)  # imports each subcommand's modules lazily
    assert {"kbn/training.py", "kbn/report.py", "tuning/search.py"} <= cli
    assert "kbn/plots.py" in imported_files("kbn/training.py", files)  # `from kbn import plots`
    assert "kbn/data/__init__.py" in imported_files("kbn/gradcheck.py", files)


def test_paths_named_in_the_doc_exist():
    text = DOC.read_text()
    named = re.findall(r"`((?:kbn|tuning|tests|docs)/[^`\s<]*)`", text)
    assert len(named) > 30
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
