"""Tests for kbn/training/hparams.py: a run's HParams session beside its own curves."""

import pytest
import synthetic
import tensorflow as tf
from tensorboard.plugins.hparams import metadata

from kbn import build_mlp, train
from kbn.data import Dataset, Split
from kbn.training.config import TrainConfig
from kbn.training.hparams import run_hparams, write_hparams

NUM_CLASSES = 3


def _events(folder):
    """{tag: [(step, event.summary.value)]} from every event file directly in `folder`."""
    found = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                found.setdefault(value.tag, []).append((event.step, value))
    return found


def _session(folder):
    """(hparams dict, experiment) of the HParams session written in `folder`."""
    events = _events(folder)
    start = events[metadata.SESSION_START_INFO_TAG][-1][1]
    info = metadata.parse_session_start_info_plugin_data(start.metadata.plugin_data.content)
    experiment = metadata.parse_experiment_plugin_data(
        events[metadata.EXPERIMENT_TAG][-1][1].metadata.plugin_data.content
    )
    values = {}
    for name, value in info.hparams.items():
        kind = value.WhichOneof("kind")
        values[name] = getattr(value, kind)
    return values, experiment


def test_run_hparams_reads_the_model_and_the_config():
    x, _ = synthetic.make_images(20, seed=0)
    model = build_mlp(
        [8, 6],
        NUM_CLASSES,
        batch_norm=False,
        init="xavier",
        lam=1e-3,
        dropout=0.25,
        flip=True,
        translate=0.125,
        whiten=1e-2,
        pca=5,
        adapt=x,
        seed=3,
    )
    config = TrainConfig(eta=0.05, schedule="cosine", batch_size=16, seed=3)
    assert run_hparams(model, config) == {
        "hidden": "8,6",
        "batch_norm": False,
        "init": "xavier",
        "eta": 0.05,
        "lam": 1e-3,
        "schedule": "cosine",
        "batch_size": 16,
        "dropout": 0.25,
        "flip": True,
        "translate": 0.125,
        "whiten": 1e-2,
        "pca": 5,
        "test_time_flip": False,
        "seed": 3,
    }
    plain = run_hparams(build_mlp([5], NUM_CLASSES, init="small", adapt=x), TrainConfig())
    assert (
        plain["hidden"],
        plain["batch_norm"],
        plain["init"],
        plain["dropout"],
        plain["flip"],
        plain["translate"],
        plain["whiten"],
        plain["pca"],
    ) == ("5", True, "small", 0.0, False, 0.0, 0.0, 0)
    averaged = build_mlp([5], NUM_CLASSES, adapt=x, flip=True, test_time_flip=True)
    assert run_hparams(averaged, TrainConfig())["test_time_flip"] is True


def test_write_hparams_writes_a_session_with_status_and_the_validation_metrics(tmp_path):
    run = tmp_path / "trial_03"
    write_hparams(run, {"eta": 0.1, "round": 2, "hidden": [50, 30], "init": None}, "stopped")
    values, experiment = _session(run)
    assert values == {
        "eta": pytest.approx(0.1),
        "round": 2.0,
        "hidden": "50,30",
        "status": "stopped",
    }
    metrics = {(m.name.group, m.name.tag) for m in experiment.metric_infos}
    assert {("validation", "epoch_accuracy"), ("validation", "epoch_loss")} <= metrics
    # The status is an hparam, never a metric value: nothing but the session is written.
    assert set(_events(run)) == {metadata.EXPERIMENT_TAG, metadata.SESSION_START_INFO_TAG}


def test_the_experiment_lists_eta_lambda_status_and_the_compared_hparams_first(tmp_path):
    # TensorBoard sorts the hparams marked as differing first, then by name,
    # and shows the first five: by name alone, lam came after batch_norm,
    # batch_size, dropout, eta and flip, and was hidden.
    hparams = {
        "batch_norm": True,
        "batch_size": 100,
        "dropout": 0.0,
        "eta": 0.1,
        "flip": False,
        "lam": 1e-4,
        "round": 2,
        "seed": 0,
        "trial_id": "3",
    }
    write_hparams(tmp_path, hparams, "finished", compared=["round", "trial_id"])
    _, experiment = _session(tmp_path)
    assert [(info.name, info.differs) for info in experiment.hparam_infos] == [
        ("eta", True),
        ("lam", True),
        ("round", True),
        ("status", True),
        ("trial_id", True),
        ("batch_norm", False),
        ("batch_size", False),
        ("dropout", False),
        ("flip", False),
        ("seed", False),
    ]


def test_a_second_write_replaces_the_first_session(tmp_path):
    write_hparams(tmp_path, {"eta": 0.1}, "stopped")
    write_hparams(tmp_path, {"eta": 0.1}, "finished")
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 1
    assert _session(tmp_path)[0]["status"] == "finished"


@pytest.mark.parametrize(
    "hparams, status", [({"eta": 0.1}, "done"), ({"eta": object()}, "finished")]
)
def test_bad_status_or_value_is_refused(tmp_path, hparams, status):
    with pytest.raises(ValueError):
        write_hparams(tmp_path, hparams, status)


def _tiny_data():
    x, y = synthetic.make_images(120, seed=0, num_classes=NUM_CLASSES)
    return Dataset("synthetic", Split(x[:80], y[:80]), Split(x[80:], y[80:]), None, ("a", "b", "c"))


def test_a_train_run_folder_holds_its_session_beside_its_curves(tmp_path):
    # The dashboard reads a session's metrics from the run's own sub-runs: the
    # session must be in the folder that holds validation/ with epoch_loss.
    data = _tiny_data()
    model = build_mlp([8], NUM_CLASSES, adapt=data.train.x, seed=0)
    config = TrainConfig(
        epochs=2, batch_size=20, logdir=str(tmp_path), run_name="r", verbose=0, plot_curves=False
    )
    result = train(model, data, config, hparams={"note": "extra"})
    values, experiment = _session(result.run_dir)
    assert values == {**run_hparams(model, config), "note": "extra", "status": "finished"}
    # The caller's extra hparams are what tells its runs apart: shown first.
    first = [info.name for info in experiment.hparam_infos if info.differs]
    assert first == ["eta", "lam", "note", "status"]
    losses = [step for step, _ in _events(result.run_dir / "validation")["epoch_loss"]]
    assert losses == [0, 1]


def test_a_diverged_run_says_so_and_writes_no_metric(tmp_path):
    data = _tiny_data()
    model = build_mlp([8], NUM_CLASSES, batch_norm=False, adapt=data.train.x, seed=0)
    config = TrainConfig(
        eta=1e4,
        epochs=3,
        batch_size=20,
        logdir=str(tmp_path),
        run_name="d",
        verbose=0,
        plot_curves=False,
    )
    result = train(model, data, config)
    assert result.diverged
    values, _ = _session(result.run_dir)
    assert values["status"] == "diverged"
    assert set(_events(result.run_dir)) == {
        metadata.EXPERIMENT_TAG,
        metadata.SESSION_START_INFO_TAG,
    }
