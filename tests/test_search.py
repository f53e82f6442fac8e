"""Tests for tuning/search.py and tuning/hypermodel.py: a real, tiny search."""

import csv
import json
import math
import signal
import subprocess
import sys
import time

import keras_tuner
import numpy as np
import pytest

import synthetic
from kbn.data import Dataset, Split
from kbn.errors import KbnError
from kbn.training import TrainConfig
from tuning.hypermodel import KbnHyperModel
from tuning.search import SearchConfig, search

NUM_CLASSES = 3
TRIALS = 6
ROUNDS = 2
TRAIN = TrainConfig(batch_size=32, steps_per_execution=10)


def _dataset():
    x, y = synthetic.make_images(400, seed=0, num_classes=NUM_CLASSES)
    return Dataset(
        name="synthetic",
        train=Split(x[:300], y[:300]),
        val=Split(x[300:], y[300:]),
        test=None,
        class_names=("a", "b", "c"),
    )


DATA = _dataset()


def _config(tmp_path, **overrides):
    return SearchConfig(
        **{
            "rounds": ROUNDS,
            "trials": TRIALS,
            "epochs": 2,
            "eta_range": (0.01, 0.5),
            "lam_range": (1e-6, 1e-2),
            "directory": str(tmp_path),
            "project": "p",
            "verbose": 0,
            **overrides,
        }
    )


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("search")
    return search(DATA, _config(tmp_path), TRAIN)


def test_search_runs_every_trial_in_its_rounds_and_finds_a_good_pair(finished):
    assert finished.trials_completed == TRIALS
    assert [t["round"] for t in finished.trials] == [1, 1, 1, 2, 2, 2]
    assert finished.best["val_acc"] == max(t["val_acc"] for t in finished.trials)
    assert finished.best["val_acc"] > 0.6  # chance is 1/3
    assert [r["trials"] for r in finished.rounds] == [3, 3]
    first, second = finished.rounds
    assert first["eta_range"] == [0.01, 0.5]
    assert first["eta_range"][0] <= second["eta_range"][0] < second["eta_range"][1] <= first["eta_range"][1]
    for t in finished.trials:
        box = finished.rounds[t["round"] - 1]
        assert box["eta_range"][0] <= t["eta"] <= box["eta_range"][1]
        assert box["lam_range"][0] <= t["lam"] <= box["lam_range"][1]


def test_search_writes_csv_markdown_plot_and_trial_runs(finished):
    folder = finished.project_dir
    with open(folder / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == TRIALS
    assert {float(r["val_acc"]) for r in rows} == {t["val_acc"] for t in finished.trials}
    table = (folder / "results.md").read_text().splitlines()
    assert table[0] == "| eta | lambda | validation accuracy | round | status |"
    assert len(table) == 2 + TRIALS
    assert f"{finished.best['val_acc']:.4f}" in table[2]  # best first
    assert (folder / "search.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for t in finished.trials:
        run = folder / "runs" / f"trial_{t['trial_id']}"
        summary = json.loads((run / "summary.json").read_text())
        assert summary["config"]["eta"] == pytest.approx(t["eta"])
        assert summary["final"]["val_acc"] == pytest.approx(t["val_acc"])
        assert list((run / "hparams").iterdir())  # TensorBoard HParams events


def test_trials_share_the_schedule_epochs_and_seed(finished):
    run = finished.project_dir / "runs" / f"trial_{finished.trials[0]['trial_id']}"
    config = json.loads((run / "summary.json").read_text())["config"]
    assert (config["epochs"], config["batch_size"], config["schedule"], config["seed"]) == (2, 32, "exp", 0)


def test_a_later_trial_on_the_shared_model_scores_as_a_fresh_model_would(finished, tmp_path):
    # Trials after the first reuse the first one's model and compiled step, reset to its
    # initial weights with the trial's lambda; the numbers must not depend on that.
    import dataclasses

    from kbn import build_mlp, train

    last = finished.trials[-1]
    model = build_mlp([50, 30], NUM_CLASSES, l2=last["lam"], adapt=DATA.train.x, seed=0)
    config = dataclasses.replace(TRAIN, eta=last["eta"], epochs=2, logdir=str(tmp_path), verbose=0)
    fresh = train(model, DATA, config)
    assert fresh.summary["final"]["val_acc"] == pytest.approx(last["val_acc"], abs=1e-6)


def test_a_diverging_trial_is_recorded_as_failed_not_a_crash(tmp_path):
    # eta of 1e3 to 1e4 without batch norm's help blows every trial up.
    result = search(
        DATA,
        _config(tmp_path, trials=2, rounds=1, eta_range=(1e3, 1e4), epochs=2),
        TrainConfig(batch_size=32, divergence_factor=1.5),
    )
    assert [t["status"] for t in result.trials] == ["FAILED", "FAILED"]
    assert result.best is None
    assert result.trials_completed == 0


def test_hypermodel_samples_eta_and_lambda_on_a_log_scale():
    hypermodel = KbnHyperModel(DATA.train.x, NUM_CLASSES, eta_range=(1e-3, 1.0), lam_range=(1e-6, 1e-1))
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    assert hp.get("eta") == pytest.approx(1e-3)  # a log-scale Float defaults to its low end
    assert {p.name: p.sampling for p in hp.space} == {"eta": "log", "lam": "log"}
    assert model.get_layer("dense1").l2 == pytest.approx(hp.get("lam"))


def test_hypermodel_can_search_the_architecture():
    hypermodel = KbnHyperModel(DATA.train.x, NUM_CLASSES, architecture=True)
    hp = keras_tuner.HyperParameters()
    hp.Fixed("depth", 3)
    hp.Fixed("width", 100)
    hp.Fixed("batch_norm", False)
    model = hypermodel.build(hp)
    widths = [layer.units for layer in model.layers if layer.name.startswith("dense")]
    assert widths == [100, 100, 100, NUM_CLASSES]
    assert not [layer for layer in model.layers if layer.name.startswith("batch_norm")]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"eta_range": (0.7, 0.01)}, "eta range must be low:high"),
        ({"lam_range": (0.0, 0.1)}, "lam range must be low:high"),
        ({"rounds": 0}, "rounds must be at least 1"),
        ({"trials": 1, "rounds": 2}, "trials must be at least"),
        ({"epochs": 0}, "epochs must be at least 1"),
    ],
)
def test_bad_search_settings_are_user_errors(tmp_path, overrides, message):
    with pytest.raises(KbnError, match=message):
        search(DATA, _config(tmp_path, **overrides), TRAIN)


def _tune_command(tmp_path, *options):
    """`kbn tune` in a new process on a tiny npz in tmp_path, project tmp_path/p."""
    data = tmp_path / "data.npz"
    x, y = synthetic.make_images(400, seed=0, num_classes=NUM_CLASSES)
    np.savez(data, x_train=x, y_train=y)
    return [
        sys.executable, "-m", "kbn.cli", "tune", "--data", f"npz:{data}", "--val-size", "100",
        "--rounds", "2", "--epochs", "3", "--directory", str(tmp_path), "--project", "p", "--json",
        *options,
    ]


def test_resume_after_a_killed_search_keeps_completed_trials(tmp_path):
    argv = _tune_command(tmp_path, "--trials", str(TRIALS))
    runs = tmp_path / "p" / "runs"
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    # Kill it once two trials have finished and a third is under way.
    while time.monotonic() < deadline:
        finished = [d for d in runs.glob("trial_*") if (d / "model.keras").exists()]
        if len(finished) >= 2 and len(list(runs.glob("trial_*"))) >= 3:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    kept = {d.name: (d / "model.keras").stat().st_mtime_ns for d in runs.glob("trial_*")
            if (d / "model.keras").exists()}
    assert len(kept) >= 2

    resumed = subprocess.run([*argv, "--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert result["trials_completed"] == TRIALS
    runs_now = sorted(d.name for d in runs.glob("trial_*"))
    assert len(runs_now) == TRIALS  # none created twice
    for name, mtime in kept.items():  # finished trials were not run again
        assert (runs / name / "model.keras").stat().st_mtime_ns == mtime
    for name in runs_now:  # every trial holds each epoch exactly once
        history = json.loads((runs / name / "summary.json").read_text())["history"]
        assert len(history["loss"]) == 3
        assert all(math.isfinite(v) for v in history["loss"])


def test_two_workers_on_loopback_share_the_trials(tmp_path):
    # Each worker process is replaced after 2 trials: the search goes on regardless.
    result = search(DATA, _config(tmp_path, workers=2, recycle_after=2), TRAIN)
    assert result.trials_completed == TRIALS
    assert len({t["trial_id"] for t in result.trials}) == TRIALS
    assert set(result.trials_by_worker) <= {"tuner0", "tuner1"}
    assert sum(result.trials_by_worker.values()) == TRIALS
    assert [r["trials"] for r in result.rounds] == [3, 3]
    assert all(t["peak_rss_mb"] > 0 for t in result.trials)


def test_workers_stop_when_their_chief_is_killed(tmp_path):
    argv = _tune_command(tmp_path, "--trials", "40", "--workers", "1")
    chief = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = tmp_path / "p" / "runs"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(runs.glob("trial_*/summary.json")):
        time.sleep(0.2)

    def workers_alive():
        ps = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True).stdout
        return [line for line in ps.splitlines() if "tuning.worker" in line and str(tmp_path) in line]

    assert workers_alive()  # a worker is training when the chief dies
    chief.send_signal(signal.SIGKILL)
    chief.wait()
    deadline = time.monotonic() + 15
    while workers_alive() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert workers_alive() == []


def test_a_trial_that_diverged_before_a_kill_is_still_failed_on_retry(tmp_path):
    from types import SimpleNamespace

    from kbn.fileio import write_json
    from tuning.search import _tuner

    tuner = _tuner(DATA, _config(tmp_path), TRAIN)
    run_dir = tuner.run_dir("07")
    write_json(run_dir / "summary.json", {"finished": True, "diverged": "training cost became nan",
                                          "final": {"val_acc": 0.3}})
    with pytest.raises(keras_tuner.errors.FailedTrialError, match="became nan"):
        tuner.run_trial(SimpleNamespace(trial_id="07", hyperparameters=None))
    write_json(run_dir / "summary.json", {"finished": True, "diverged": None, "final": {"val_acc": 0.8}})
    assert tuner.run_trial(SimpleNamespace(trial_id="07", hyperparameters=None)) == {"val_accuracy": 0.8}
