"""Tests for kbn.inference.export: the SavedModel serves uint8 images, loads with plain TensorFlow
in a process that cannot import kbn, and predicts what the .keras model predicts."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import synthetic

from kbn.cli import main
from kbn.errors import KbnError
from kbn.inference.export import export
from kbn.inference.predict import softmax
from kbn.nn.builder import build_mlp

NUM_TRAIN = 200
NUM_CLASSES = 3
IMAGE_SHAPE = (4, 4, 3)
CLASS_NAMES = ("cat", "dog", "ship")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(model, its .keras path, test images uint8 (20, 4, 4, 3)): a net trained 3 epochs,
    so BatchNorm's moving statistics and the centring mean are not their initial values."""
    root = tmp_path_factory.mktemp("export")
    x, y = synthetic.make_images(NUM_TRAIN, 0, NUM_CLASSES, IMAGE_SHAPE)
    model = build_mlp([8, 6], NUM_CLASSES, adapt=x, seed=0, class_names=CLASS_NAMES)
    model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    path = root / "m.keras"
    model.save(path)
    images, _ = synthetic.make_images(20, 1, NUM_CLASSES, IMAGE_SHAPE)
    return model, path, images


# Runs in a fresh interpreter (-I: no PYTHONPATH, no user site, no current folder on the
# path) after taking kbn's editable-install finders off the import system, so that only
# TensorFlow and the SavedModel's own graph are there to serve the images.
CHILD = textwrap.dedent("""
    import importlib.util, sys
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]
    sys.path_hooks[:] = [
        h for h in sys.path_hooks if "editable" not in getattr(h, "__module__", "")
    ]
    sys.path_importer_cache.clear()
    sys.path[:] = [p for p in sys.path if p.rstrip("/") != {repo!r}]
    assert importlib.util.find_spec("kbn") is None, "kbn is importable"
    import numpy as np
    import tensorflow as tf
    serve = tf.saved_model.load({directory!r}).signatures["serving_default"]
    out = serve(images=tf.constant(np.load({images!r})))
    assert "kbn" not in sys.modules
    np.savez({result!r}, probabilities=out["probabilities"].numpy(), classes=out["classes"].numpy(),
             class_names=np.array([n.decode() for n in out["class_names"].numpy()]))
""")


@pytest.mark.slow
def test_saved_model_loads_without_kbn_and_predicts_what_the_keras_model_predicts(saved, tmp_path):
    model, path, images = saved
    directory = export(path, tmp_path / "served")
    np.save(tmp_path / "images.npy", images)
    repo = str(__import__("pathlib").Path(__file__).resolve().parents[1])
    code = CHILD.format(
        repo=repo,
        directory=str(directory),
        images=str(tmp_path / "images.npy"),
        result=str(tmp_path / "out.npz"),
    )
    child = subprocess.run(
        [sys.executable, "-I", "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    out = np.load(tmp_path / "out.npz")
    expected = softmax(np.asarray(model.predict(images, verbose=0), np.float64))  # (20, K)
    assert out["probabilities"].shape == (20, NUM_CLASSES)
    assert out["probabilities"].dtype == np.float32
    np.testing.assert_allclose(out["probabilities"], expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(out["classes"], np.argmax(expected, axis=1))
    assert len(set(out["classes"])) > 1  # a constant answer would hide a wrong mapping
    assert list(out["class_names"]) == [CLASS_NAMES[k] for k in out["classes"]]


def test_export_of_a_model_object_serves_uint8_batches_of_any_size(saved, tmp_path):
    import tensorflow as tf

    model, _, images = saved
    serve = tf.saved_model.load(str(export(model, tmp_path / "served"))).signatures[
        "serving_default"
    ]
    spec = serve.structured_input_signature[1]["images"]
    assert spec.dtype == tf.uint8 and tuple(spec.shape) == (None,) + IMAGE_SHAPE
    for n in (1, 7):
        out = serve(images=tf.constant(images[:n]))
        assert out["probabilities"].shape == (n, NUM_CLASSES)
        np.testing.assert_allclose(np.sum(out["probabilities"], axis=1), 1.0, atol=1e-6)


def test_export_into_a_folder_that_holds_files_raises_kbn_error_and_keeps_them(saved, tmp_path):
    _, path, _ = saved
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    with pytest.raises(KbnError, match="already exists") as info:
        export(path, taken)
    assert str(taken) in str(info.value)
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]
    assert not list(tmp_path.glob(".taken.*"))  # no temporary folder left behind


def test_export_into_an_empty_folder_fills_it(saved, tmp_path):
    _, path, _ = saved
    (tmp_path / "empty").mkdir()
    assert (export(path, tmp_path / "empty") / "saved_model.pb").is_file()


def test_export_of_a_missing_model_raises_kbn_error(tmp_path):
    with pytest.raises(KbnError, match="does not exist"):
        export(tmp_path / "missing.keras", tmp_path / "served")
    assert not (tmp_path / "served").exists()


def test_cli_export_writes_the_saved_model_and_reports_its_signature(saved, tmp_path, capsys):
    _, path, _ = saved
    status = main(["export", str(path), str(tmp_path / "served"), "--json"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert result["directory"] == str(tmp_path / "served")
    assert result["signature"] == "serving_default"
    assert result["input_shape"] == [None, *IMAGE_SHAPE]
    assert result["class_names"] == list(CLASS_NAMES)
    assert (tmp_path / "served" / "saved_model.pb").is_file()


def test_cli_export_of_a_bad_model_file_is_one_error_line(tmp_path, capsys):
    (tmp_path / "x.keras").write_text("not a model\n")
    status = main(["export", str(tmp_path / "x.keras"), str(tmp_path / "served")])
    captured = capsys.readouterr()
    assert status == 2
    assert captured.err.startswith("error: ") and len(captured.err.strip().splitlines()) == 1
    assert str(tmp_path / "x.keras") in captured.err
