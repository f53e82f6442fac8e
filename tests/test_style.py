"""Tests for the code's prose: no comment or docstring of kbn/ or tuning/ quotes a measurement.

A comment keeps the reason in one clause and points to the benchmark or doc that measures it
(docs/performance.md, docs/results.md, benchmarks/); a figure copied into a comment goes stale
the day the code or the machine changes, and nothing notices.
"""

import ast
import io
import pathlib
import re
import tokenize

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("kbn", "tuning")

# A number not glued to a word, a dot or another number: `float32`, `1e-7`, `v0.1` are not one.
_NUMBER = r"(?<![\w.])\d+(?:\.\d+)?"
MEASUREMENT = re.compile(
    # a duration: `4 ms`, `0.07 s`, `3 minutes`, `2h`
    rf"{_NUMBER}\s?(?:s|ms|us|µs|sec|secs|seconds?|min|mins|minutes?|h|hrs?|hours?)(?![\w])"
    # an accuracy: `72.84%`, `3 %`, `2.3 points`
    rf"|{_NUMBER}\s?(?:%|points?(?![\w]))"
    # a ratio: `1.3x`, `2x` (not `3x3`, `0x1f`, `x W + b`)
    rf"|(?!0x){_NUMBER}x(?![\w])"
)


def source_files():
    """Every .py file of the packages."""
    return sorted(
        path
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if "__pycache__" not in path.parts
    )


def prose(path):
    """(line, text) of every comment and docstring of `path`, one line of text each."""
    source = path.read_text()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            yield token.start[0], token.string
    for node in ast.walk(ast.parse(source)):
        # Module, class and function docstrings, and the bare strings that document attributes.
        if (
            isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            for offset, line in enumerate(node.value.value.splitlines()):
                yield node.lineno + offset, line


def measurements(path):
    """`file:line: text` for every comment or docstring line of `path` that quotes a measurement."""
    relative = path.relative_to(ROOT).as_posix()
    return [
        f"{relative}:{line}: {text.strip()}"
        for line, text in prose(path)
        if MEASUREMENT.search(text)
    ]


def test_no_comment_or_docstring_quotes_a_measurement():
    found = [hit for path in source_files() for hit in measurements(path)]
    assert not found, (
        "comments and docstrings give the reason and point to the benchmark or doc that measures "
        "it (docs/performance.md, docs/results.md, benchmarks/), without the figure; write a rule "
        "as `3 times`, not `3x`:\n" + "\n".join(found)
    )


def test_the_pattern_tells_a_measurement_from_a_shape():
    quoted = [
        "took 0.07 s",
        "4 ms vs 19",
        "72.84%",
        "1.3x faster",
        "2x the memory",
        "3 minutes",
        "about 5 minutes on 2 cores",
        "in 2h",
        "50 % of it",
        "10 seconds",
        "2.3 points above",
    ]
    plain = [
        "(N, D)",
        "3072-50-30-10",
        "s = x W + b",
        "tolerance 1e-7",
        "float32",
        "0x1f",
        "0x{raw}",
        "a 3x3 kernel",
        "3 times",
        "epochs 1 and 3 of 10",
        "kbn 0.1",
        "issue #42",
        "10 samples",
        "(D, M)",
        "version 2.16",
    ]
    assert [text for text in quoted if not MEASUREMENT.search(text)] == []
    assert [text for text in plain if MEASUREMENT.search(text)] == []
