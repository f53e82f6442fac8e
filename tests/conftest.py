"""Shared pytest fixtures: a seed per test, float32 restored after it, a fresh-process runner."""

import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import pytest


@pytest.fixture(autouse=True)
def seeded_float32():
    """Seed Python, NumPy, TensorFlow and Keras; undo a test's switch to float64."""
    keras.utils.set_random_seed(0)
    yield
    keras.config.set_floatx("float32")
    keras.config.set_dtype_policy("float32")


@pytest.fixture
def run_python():
    """Run `code` with this venv's interpreter in a fresh process; return its stdout."""

    def run(code, timeout=120):
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    return run
