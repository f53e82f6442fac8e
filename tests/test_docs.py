"""The README and the documentation site (docs/, mkdocs.yml) say what the code is.

These read files only: no TensorFlow, no MkDocs (CI builds the site with
`make docs`, whose `mkdocs build --strict` also fails on a broken link or
anchor). Each test fails when the docs drift from the code or from each
other.
"""

import ast
import functools
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
API = DOCS / "api"
CHANGELOG = ROOT / "CHANGELOG.md"

README_MAX_LINES = 250


def docs_pages():
    """docs/**/*.md as written here: the changelog and the reports are links to
    files outside docs/ (CHANGELOG.md, reports/), read where they live."""
    return sorted(p for p in DOCS.rglob("*.md") if not p.is_symlink())


def reports():
    return sorted((ROOT / "reports").rglob("*.md"))


def prose(text):
    """Markdown without its fenced code blocks and inline code: what links live in."""
    text = re.sub(r"^[ \t]*(```|~~~).*?^[ \t]*\1", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def code_block(text, heading):
    """The first fenced block after `heading`."""
    return text.split(f"{heading}\n\n```\n", 1)[1].split("```", 1)[0]


def test_readme_is_at_most_250_lines():
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines: move the detail to a page under docs/"
    )


def test_readme_quick_start_is_exactly_make_reproduce_and_make_test():
    block = code_block(README.read_text(), "## Quick start")
    assert block.splitlines() == ["make reproduce", "make test"]


def test_readme_points_to_the_docs_site_and_the_reports():
    text = README.read_text()
    for target in (
        "docs/index.md",
        "docs/cli.md",
        "docs/api/index.md",
        "docs/results.md",
        "docs/performance.md",
        "docs/architecture.md",
        "reports/cifar10/report.md",
        "reports/fashion_mnist/report.md",
        "reports/cifar10-mlp/report.md",
        "CHANGELOG.md",
    ):
        assert f"]({target}" in text, target


def test_the_cli_page_carries_the_readmes_synopsis():
    # tests/test_cli.py checks the README's block against the real parser.
    readme = code_block(README.read_text(), "## Command line")
    page = (DOCS / "cli.md").read_text()
    assert f"```\n{readme}```" in page, "docs/cli.md's synopsis differs from README.md's"


LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def test_every_relative_link_leads_to_a_file():
    broken = []
    for page in [README, CHANGELOG, *docs_pages(), *reports()]:
        for target in LINK.findall(prose(page.read_text())):
            if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # a URL, or an anchor in the same page (mkdocs --strict checks those)
            path = target.split("#", 1)[0]
            if not (page.parent / path).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, f"links to files that do not exist: {broken}"


NAV_ENTRY = re.compile(r"^\s*(?:-\s*)?(?:[^:#\n]+:\s*)?([\w./-]+\.md)\s*$", re.M)


def test_every_page_is_in_the_nav():
    nav = set(NAV_ENTRY.findall((ROOT / "mkdocs.yml").read_text()))
    pages = {str(p.relative_to(DOCS)) for p in docs_pages()} | {"changelog.md"}
    assert pages - nav == set(), "pages missing from mkdocs.yml's nav"
    assert {p for p in nav if not (DOCS / p).exists()} == set(), "nav entries without a page"


# ---------------------------------------------------------------------------
# Names: read from the source with ast, so that no test imports TensorFlow.


@functools.cache
def parse(path):
    return ast.parse(path.read_text())


def module_file(parts):
    """The file of the module `parts` names, or None."""
    path = ROOT.joinpath(*parts)
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return None


def definition(dotted):
    """The ast node that defines `dotted` (a module, class, function or
    assignment), following `from ... import` re-exports; None if none does."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        path = module_file(parts[:i])
        if path is not None:
            break
    else:
        return None
    node = parse(path)
    for j in range(i, len(parts)):
        node = member(node, parts[j])
        if node is None:
            return None
        if isinstance(node, str):  # re-exported: resolve where it comes from
            return definition(".".join([node, *parts[j + 1 :]]))
    return node


def member(scope, name):
    """`name` in a module or class body: its node, or the dotted path an import names."""
    for node in scope.body:
        if (
            isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            and node.name == name
        ):
            return node
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return node
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.target.id == name
        ):
            return node
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    return f"{node.module}.{alias.name}"
    if isinstance(scope, ast.ClassDef):  # an attribute set on self in a method
        for node in ast.walk(scope):
            if (
                isinstance(node, ast.Attribute)
                and node.attr == name
                and isinstance(node.ctx, ast.Store)
                and isinstance(node.value, ast.Name)
                and node.value.id == "self"
            ):
                return node
    return None


def kbn_all():
    for node in parse(ROOT / "kbn" / "__init__.py").body:
        if isinstance(node, ast.Assign) and any(
            getattr(t, "id", None) == "__all__" for t in node.targets
        ):
            return [element.value for element in node.value.elts]
    raise AssertionError("kbn/__init__.py has no __all__")


def api_directives():
    """The identifiers of every mkdocstrings `::: identifier` on the API pages."""
    return {
        name
        for page in API.glob("*.md")
        for name in re.findall(r"^::: ([\w.]+)\s*$", page.read_text(), re.M)
    }


def test_every_name_of_kbn_all_is_documented_on_an_api_page():
    names = kbn_all()
    assert len(names) >= 12
    directives = api_directives()
    missing = [name for name in names if f"kbn.{name}" not in directives]
    assert not missing, f"add `::: kbn.NAME` to docs/api/kbn.md for {missing}"


def test_every_name_of_kbn_all_has_a_docstring():
    undocumented = []
    for name in kbn_all():
        node = definition(f"kbn.{name}")
        assert isinstance(node, (ast.FunctionDef, ast.ClassDef)), f"kbn.{name} is not found"
        if not (ast.get_docstring(node) or "").strip():
            undocumented.append(name)
    assert not undocumented, f"these names of kbn.__all__ have no docstring: {undocumented}"


def test_every_api_directive_names_something_that_exists():
    missing = sorted(name for name in api_directives() if definition(name) is None)
    assert not missing, f"docs/api names what the code does not have: {missing}"


DOTTED = re.compile(r"(?<![\w./-])((?:kbn|tuning)(?:\.[A-Za-z_]\w*)+)")
FILE_SUFFIXES = {"py", "md", "keras", "json", "png", "csv"}


def test_every_dotted_name_the_docs_give_exists():
    # Catches the 0.1 module names (kbn.sgd, kbn.layers, ...): the docs write the new ones.
    # The changelog names the old ones on purpose.
    missing = set()
    for page in [README, *docs_pages()]:
        for name in DOTTED.findall(page.read_text()):
            if name.rsplit(".", 1)[1] in FILE_SUFFIXES:  # a file such as kbn.py
                continue
            if definition(name) is None:
                missing.add(f"{page.relative_to(ROOT)}: {name}")
    assert not missing, f"names that do not exist (moved or renamed?): {sorted(missing)}"


PATH = re.compile(r"(?<![\w./:-])((?:kbn|tuning|tests|benchmarks|docs|reports)/[\w./-]*)")


def test_every_path_the_docs_name_exists():
    missing = set()
    for page in [README, *docs_pages()]:
        text = page.read_text()
        for match in PATH.finditer(text):
            path = match.group(1).rstrip(".")
            if text[match.end() : match.end() + 1] == "<" or re.search(r"/[A-Z_]+(/|$)", path):
                continue  # a pattern: tests/test_data_<name>.py, reports/NAME
            if not (ROOT / path).exists():
                missing.add(f"{page.relative_to(ROOT)}: {path}")
    assert not missing, f"paths that do not exist: {sorted(missing)}"


def test_the_changelog_lists_every_moved_module():
    moved = None
    for node in parse(ROOT / "kbn" / "_moved.py").body:
        if isinstance(node, ast.Assign) and any(
            getattr(t, "id", None) == "MOVED" for t in node.targets
        ):
            moved = ast.literal_eval(node.value)
    assert moved, "kbn/_moved.py has no MOVED"
    rows = CHANGELOG.read_text().splitlines()
    missing = [
        f"{old} -> {new}"
        for old, new in moved.items()
        if not any(line.lstrip().startswith(f"| `{old}` | `{new}`") for line in rows)
    ]
    assert not missing, f"CHANGELOG.md's table of moved modules lacks {missing}"


def test_the_changelog_has_this_version():
    version = None
    for node in parse(ROOT / "kbn" / "__init__.py").body:
        if isinstance(node, ast.Assign) and any(
            getattr(t, "id", None) == "__version__" for t in node.targets
        ):
            version = node.value.value
    assert f"## [{version}] - " in CHANGELOG.read_text(), f"CHANGELOG.md has no entry for {version}"


def test_the_train_guide_has_a_row_for_every_trainconfig_field():
    config = definition("kbn.training.config.TrainConfig")
    fields = [node.target.id for node in config.body if isinstance(node, ast.AnnAssign)]
    assert len(fields) > 20
    guide = (DOCS / "guide" / "train.md").read_text()
    missing = [name for name in fields if f"\n| `{name}` |" not in guide]
    assert not missing, f"docs/guide/train.md's TrainConfig table lacks {missing}"
