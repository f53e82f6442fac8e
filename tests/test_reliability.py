"""Reliability of kbn as a whole: a run killed with SIGKILL at any moment resumes with
every epoch exactly once, the same seed gives the same numbers, an interrupted write
never damages a good file, and a saved model predicts the same in a fresh process.

The kill test starts real `kbn train` processes and kills them; the rest run in this
process, except one fresh process that loads saved models. Bad input is tested in
`tests/test_cli.py` (`BAD_INPUTS`), one table for every case.
"""

import contextlib
import io
import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
import synthetic
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import kbn
from kbn.cli import main
from kbn.fileio import read_json
from kbn.training.callbacks import EpochTensorBoard

KBN = pathlib.Path(sys.executable).parent / "kbn"  # the console script of this venv
EPOCHS = 6
NUM_CLASSES = 3
KILL_POOL = 3050  # 3000 train + 50 val images of 8x8x1, batch 8: about 0.3 s per epoch
KILL_VAL = 50
HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds")
FIGURES = ("train_acc", "val_acc", "test_acc", "train_loss", "val_loss")
START_TIMEOUT = 90  # seconds for a `kbn` process to reach its kill point


def run_main(argv):
    """(exit status, stdout, stderr) of `kbn.cli.main(argv)` in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


def write_npz(path, n, shape, test=0):
    x, y = synthetic.make_images(n, 0, NUM_CLASSES, shape)
    arrays = {"x_train": x, "y_train": y}
    if test:
        arrays["x_test"], arrays["y_test"] = synthetic.make_images(test, 1, NUM_CLASSES, shape)
    np.savez(path, **arrays)
    return path


def epoch_steps(folder, tag="epoch_loss"):
    """(step, value) of every `tag` event in every event file of `folder`, duplicates kept."""
    files = sorted(pathlib.Path(folder).glob("events.out.tfevents.*"))
    assert files, f"no TensorBoard event file in {folder}"
    events = []
    for file in files:
        accumulator = EventAccumulator(
            str(file), size_guidance={"tensors": 0}, purge_orphaned_data=False
        ).Reload()
        if tag in accumulator.Tags()["tensors"]:
            events += [
                (e.step, float(tf.make_ndarray(e.tensor_proto))) for e in accumulator.Tensors(tag)
            ]
    return events


# --- 1. SIGKILL at any moment, then --resume ------------------------------------------------


@pytest.fixture(scope="module")
def kill_data(tmp_path_factory):
    """The kill test's npz and the history of the same run, uninterrupted, in this process."""
    root = tmp_path_factory.mktemp("kill")
    data = write_npz(root / "data.npz", KILL_POOL, (8, 8, 1))
    status, stdout, stderr = run_main(train_argv(data, root / "logs", "uninterrupted"))
    assert status == 0, stderr
    history = read_json(root / "logs" / "uninterrupted" / "summary.json")["history"]
    return data, history


def train_argv(data, logdir, run_name):
    return [
        "train",
        "--data",
        f"npz:{data}",
        "--epochs",
        EPOCHS,
        "--batch-size",
        8,
        "--hidden",
        16,
        "--val-size",
        KILL_VAL,
        "--logdir",
        logdir,
        "--run-name",
        run_name,
        "--json",
    ]


def epochs_recorded(run_dir):
    summary = read_json(run_dir / "summary.json") or {}
    return len((summary.get("history") or {}).get("loss", []))


@pytest.mark.parametrize(
    "kill_after",
    [0, 2, EPOCHS - 2],  # EPOCHS - 2: two epochs (~0.6 s) of margin before the final save
    ids=["during-the-first-epoch", "after-two-epochs", "late-in-the-run"],
)
@pytest.mark.slow
def test_train_killed_at_any_moment_resumes_every_epoch_exactly_once(
    kill_data, tmp_path, kill_after
):
    data, uninterrupted = kill_data
    run_dir = tmp_path / "r"
    argv = [str(a) for a in train_argv(data, tmp_path, "r")]

    stderr = tmp_path / "killed.stderr"
    with open(stderr, "w") as err:  # a file, not a pipe that could fill and stall the process
        process = subprocess.Popen([str(KBN), *argv], stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        # kill_after=0: once the TensorBoard folder exists, i.e. while epoch 1 trains
        # (about a second before its end); otherwise as soon as summary.json records
        # kill_after epochs, i.e. while the next epoch runs or its files are written.
        while not (
            (run_dir / "train").exists()
            if kill_after == 0
            else epochs_recorded(run_dir) >= kill_after
        ):
            assert process.poll() is None, (
                f"kbn train ended before the kill: {stderr.read_text()[-3000:]}"
            )
            assert time.monotonic() < deadline, "kbn train did not reach the kill point"
            time.sleep(0.005)
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    killed = read_json(run_dir / "summary.json") or {}
    recorded = epochs_recorded(run_dir)
    if kill_after == 0:
        assert recorded == 0  # killed before the first epoch ended: no history yet
    else:
        assert kill_after <= recorded < EPOCHS
    assert not killed.get("finished")

    resumed = subprocess.run(
        [str(KBN), *argv, "--resume"], capture_output=True, text=True, timeout=120
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    figures = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert figures["epochs_run"] == EPOCHS

    summary = read_json(run_dir / "summary.json")
    assert summary["epochs_run"] == EPOCHS
    assert summary["finished"] is True
    history = summary["history"]
    assert set(HISTORY_KEYS) <= set(history)
    for key, values in history.items():
        assert len(values) == EPOCHS, (key, values)
    # The backup is at most one epoch behind summary.json (the history is written
    # first): those epochs are not run again, and keep even their recorded times.
    kept = max(recorded - 1, 0)
    for key in ("seconds", "loss", "val_loss"):
        assert history[key][:kept] == (killed.get("history") or {}).get(key, [])[:kept], key
    # Killed and resumed or not: the same epochs with the same numbers.
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"):
        np.testing.assert_allclose(history[key], uninterrupted[key], rtol=1e-6, err_msg=key)

    for split, key in (("train", "loss"), ("validation", "val_loss")):
        events = epoch_steps(run_dir / split)
        assert sorted(step for step, _ in events) == list(range(EPOCHS)), (split, events)
        np.testing.assert_allclose(
            [value for _, value in sorted(events)], history[key], rtol=0, atol=1e-5, err_msg=split
        )
    assert not (run_dir / "backup").exists()


# --- 2. same seed, same numbers -------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_npz(tmp_path_factory.mktemp("tiny") / "data.npz", 300, (4, 4, 1), test=100)


def train_figures(data, logdir, run_name, seed):
    status, stdout, stderr = run_main(
        [
            "train",
            "--data",
            f"npz:{data}",
            "--epochs",
            2,
            "--batch-size",
            16,
            "--hidden",
            8,
            "--val-size",
            50,
            "--logdir",
            logdir,
            "--run-name",
            run_name,
            "--seed",
            seed,
            "--json",
        ]
    )
    assert status == 0, stderr
    figures = json.loads(stdout.strip().splitlines()[-1])
    return {key: figures[key] for key in FIGURES}


def test_same_seed_gives_identical_json_figures(tiny_data, tmp_path):
    first = train_figures(tiny_data, tmp_path, "a", seed=3)
    second = train_figures(tiny_data, tmp_path, "b", seed=3)
    other = train_figures(tiny_data, tmp_path, "c", seed=4)
    assert set(first) == set(FIGURES)
    assert first == second  # exactly, every figure
    assert other["train_loss"] != first["train_loss"]
    assert other["val_loss"] != first["val_loss"]
    assert other["test_acc"] != first["test_acc"] or other["train_acc"] != first["train_acc"]


# --- 3. bad input: see BAD_INPUTS in tests/test_cli.py --------------------------------------
# --- 4. nothing damaged ---------------------------------------------------------------------


def small_dataset(n=240, val=60, seed=0, dtype=None):
    x, y = synthetic.make_images(n + val, seed, NUM_CLASSES, (4, 4, 1))
    if dtype:
        x = x.astype(dtype)
    return kbn.Dataset(
        name="synthetic",
        train=kbn.Split(x[:n], y[:n]),
        val=kbn.Split(x[n:], y[n:]),
        test=None,
        class_names=("a", "b", "c"),
    )


DATA = small_dataset()


def train_small(logdir, run_name, epochs=2, dtype=None, data=DATA, **overrides):
    model = kbn.build_mlp([8], NUM_CLASSES, adapt=data.train.x, dtype=dtype, seed=0)
    config = kbn.TrainConfig(
        epochs=epochs,
        batch_size=32,
        eta=0.05,
        logdir=str(logdir),
        run_name=run_name,
        verbose=0,
        **overrides,
    )
    return model, kbn.train(model, data, config)


def test_interrupted_save_leaves_the_previous_model_whole(tmp_path, monkeypatch):
    models = tmp_path / "models"
    path = models / "m.keras"
    train_small(tmp_path / "logs", "first", save=str(path))
    good = path.read_bytes()
    assert len(good) > 1000

    def torn_save(self, filepath, *args, **kwargs):
        pathlib.Path(filepath).write_bytes(good[: len(good) // 2])  # half a model, then killed
        raise KeyboardInterrupt

    monkeypatch.setattr(keras.Model, "save", torn_save)
    with pytest.raises(KeyboardInterrupt):
        train_small(tmp_path / "logs", "second", epochs=1, save=str(path))
    assert path.read_bytes() == good
    # The first run's model and card; no temporary file left.
    assert sorted(p.name for p in models.iterdir()) == [
        "m.card.confusion.png",
        "m.card.md",
        "m.keras",
    ]
    monkeypatch.undo()
    loaded = keras.saving.load_model(path)
    assert loaded.get_layer("batch_norm1").moving_mean.shape == (8,)
    # The interrupted run's own summary is its last finished epoch's, whole.
    summary = read_json(tmp_path / "logs" / "second" / "summary.json")
    assert summary["finished"] is False
    assert len(summary["history"]["loss"]) == 1


def test_interrupted_summary_write_leaves_the_previous_summary_readable(tmp_path, monkeypatch):
    run_dir = tmp_path / "r"
    original = pathlib.Path.write_text
    writes = []

    def torn_write_text(self, data, *args, **kwargs):
        if self.name.endswith("summary.json"):
            writes.append(data)
            if len(writes) == 3:  # epoch 1, epoch 2, then the final summary: torn
                original(self, data[: len(data) // 2], *args, **kwargs)
                raise KeyboardInterrupt
        return original(self, data, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", torn_write_text)
    with pytest.raises(KeyboardInterrupt):
        train_small(tmp_path, "r", epochs=2)
    monkeypatch.undo()

    assert len(writes) == 3
    assert (run_dir / "summary.json").read_text() == writes[1]  # epoch 2's, whole
    summary = read_json(run_dir / "summary.json")
    assert summary["finished"] is False
    assert summary["epochs_run"] == 2 and len(summary["history"]["loss"]) == 2
    assert not [p.name for p in run_dir.iterdir() if p.name.startswith(".tmp")]


# --- 5. saved models ------------------------------------------------------------------------

PREDICT_IN_A_FRESH_PROCESS = textwrap.dedent(
    """
    import sys
    import numpy as np
    import keras
    import kbn  # registers kbn's layers

    x = np.load(sys.argv[1])
    for path, out in zip(sys.argv[2::2], sys.argv[3::2]):
        model = keras.saving.load_model(path)
        logits = model(x.astype(model.inputs[0].dtype), training=False)
        np.save(out, keras.ops.convert_to_numpy(logits))
    """
)


@pytest.fixture(scope="module")
def fresh_process_predictions(tmp_path_factory):
    """{dtype: (logits of the trained model, logits of its .keras file loaded in a fresh
    process)}, for a float32 and a float64 model; one fresh process loads both."""
    root = tmp_path_factory.mktemp("saved")
    x = DATA.val.x
    np.save(root / "x.npy", x)
    argv, trained = [], {}
    for dtype in ("float32", "float64"):
        data = small_dataset(dtype=dtype)
        path = root / f"{dtype}.keras"
        model, result = train_small(root / "logs", dtype, dtype=dtype, data=data, save=str(path))
        assert result.model_path == path
        trained[dtype] = keras.ops.convert_to_numpy(model(x.astype(dtype), training=False))
        argv += [str(path), str(root / f"{dtype}.npy")]

    fresh = subprocess.run(
        [sys.executable, "-c", PREDICT_IN_A_FRESH_PROCESS, str(root / "x.npy"), *argv],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    return {dtype: (logits, np.load(root / f"{dtype}.npy")) for dtype, logits in trained.items()}


@pytest.mark.parametrize(
    "dtype",
    [
        "float32",
        "float64",
    ],
)
@pytest.mark.slow
def test_saved_model_predicts_identically_in_a_fresh_process_float32_and_float64(
    fresh_process_predictions, dtype
):
    trained, loaded = fresh_process_predictions[dtype]
    assert trained.shape == (len(DATA.val), NUM_CLASSES) and not np.allclose(trained, 0)
    assert trained.dtype == loaded.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(loaded, trained)


def moving_statistics(model):
    layer = model.get_layer("batch_norm1")
    return (
        keras.ops.convert_to_numpy(layer.moving_mean),
        keras.ops.convert_to_numpy(layer.moving_variance),
    )


def test_moving_statistics_survive_save_and_resume_in_their_places(tmp_path, monkeypatch):
    path = tmp_path / "m.keras"
    model, _ = train_small(tmp_path, "whole", epochs=2, save=str(path))
    mean, variance = moving_statistics(model)
    # They have moved from their initial 0 and 1, and differ, so a swap or a loss shows.
    assert not np.allclose(mean, 0) and not np.allclose(variance, 1)
    assert not np.allclose(mean, variance)

    loaded_mean, loaded_variance = moving_statistics(keras.saving.load_model(path))
    np.testing.assert_array_equal(loaded_mean, mean)
    np.testing.assert_array_equal(loaded_variance, variance)

    # Killed after epoch 1 has ended (its backup written), then resumed.
    original = EpochTensorBoard.on_epoch_end

    def killed_after_first_epoch(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch == 0:
            raise KeyboardInterrupt

    monkeypatch.setattr(EpochTensorBoard, "on_epoch_end", killed_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_small(tmp_path, "killed", epochs=2)
    monkeypatch.undo()
    resumed, result = train_small(tmp_path, "killed", epochs=2, resume=True)
    assert result.summary["epochs_run"] == 2
    resumed_mean, resumed_variance = moving_statistics(resumed)
    np.testing.assert_allclose(resumed_mean, mean, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(resumed_variance, variance, rtol=1e-6, atol=1e-7)
