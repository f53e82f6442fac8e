"""TensorBoard itself over a `kbn train` run and a `kbn tune` project: a real server's data API.

The other tests read kbn's event files; these start the `tensorboard` a user
opens and ask its HTTP data API (the one its dashboards call) what it shows:
every run and trial, its curves, and the HParams table's columns and rows.
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest
import synthetic

from kbn.cli import main
from kbn.fileio import read_json

pytestmark = pytest.mark.slow  # starts a TensorBoard server

TRIALS = 4
EPOCHS = 2
TRAIN_RUN = "train_run"
PROJECT = "tuning/p"
# What the dashboard shows at first: the first five hparams of the experiment.
SHOWN = 5
SERVER_TIMEOUT = 90  # seconds to start and load every run, on a busy machine


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    """A log folder holding a tiny `kbn train` run and a tiny 4-trial `kbn tune` project."""
    root = tmp_path_factory.mktemp("tensorboard")
    data = root / "data.npz"
    x, y = synthetic.make_images(400, seed=0, num_classes=3)
    np.savez(data, x_train=x, y_train=y)
    logs = root / "logs"
    common = ["--data", f"npz:{data}", "--val-size", "100", "--epochs", str(EPOCHS)]
    assert (
        main(
            [
                "train",
                *common,
                "--hidden",
                "8",
                "--logdir",
                str(logs),
                "--run-name",
                TRAIN_RUN,
                "--no-plot-curves",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "tune",
                *common,
                "--rounds",
                "2",
                "--trials",
                str(TRIALS),
                "--directory",
                str(logs / "tuning"),
                "--project",
                "p",
            ]
        )
        == 0
    )
    return logs


@pytest.fixture(scope="module")
def sessions(logdir):
    """{TensorBoard run name of each run folder: its summary.json}."""
    runs = [TRAIN_RUN] + [f"{PROJECT}/runs/trial_{i}" for i in range(TRIALS)]
    return {run: read_json(logdir / run / "summary.json") for run in runs}


@pytest.fixture(scope="module")
def server(logdir, sessions):
    """The base URL of `tensorboard --logdir logdir` on a free port, once it has read every run."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tensorboard = pathlib.Path(sys.executable).parent / "tensorboard"
    log = logdir.parent / "tensorboard.log"
    with open(log, "w") as out:
        # A session of its own: the server and the data server it starts stop together.
        process = subprocess.Popen(
            [str(tensorboard), "--logdir", str(logdir), "--port", str(port), "--host", "127.0.0.1"],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for_runs(url, process, sessions, log)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _wait_for_runs(url, process, sessions, log):
    """Poll until the server lists every run's curves and every HParams session."""
    deadline = time.monotonic() + SERVER_TIMEOUT
    wanted = {f"{run}/{split}" for run in sessions for split in ("train", "validation")}
    while True:
        if process.poll() is not None:
            pytest.fail(f"tensorboard exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            if wanted <= set(_get(url, "/data/runs")) and len(_session_groups(url)) == len(
                sessions
            ):
                return
        except (OSError, urllib.error.URLError):
            pass  # not listening yet
        if time.monotonic() > deadline:
            pytest.fail(f"tensorboard did not show every run in time: {log.read_text()[-2000:]}")
        time.sleep(0.5)


def _get(url, path, **query):
    if query:
        path = f"{path}?{urllib.parse.urlencode(query)}"
    with urllib.request.urlopen(url + path, timeout=30) as response:
        return json.load(response)


def _post(url, path, body):
    """The hparams plugin's routes take their request as a JSON body."""
    request = urllib.request.Request(
        url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def _experiment(url):
    # As the HParams dashboard asks for it.
    return _post(
        url,
        "/data/plugin/hparams/experiment",
        {"experimentName": "", "hparamsLimit": 1000, "includeMetrics": True},
    )


def _session_groups(url):
    statuses = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]
    response = _post(
        url,
        "/data/plugin/hparams/session_groups",
        {"experimentName": "", "allowedStatuses": statuses, "startIndex": 0, "sliceSize": 100},
    )
    return response.get("sessionGroups", [])


def _scalars(url, run, tag):
    """[(step, value)] of one curve, as the scalars dashboard reads it."""
    points = _get(url, "/data/plugin/scalars/scalars", run=run, tag=tag)
    return [(step, value) for _, step, value in points]


def test_every_run_and_trial_is_listed_with_its_training_and_validation_curves(server, sessions):
    runs = set(_get(server, "/data/runs"))
    assert len(sessions) == 1 + TRIALS
    for run in sessions:
        assert {run, f"{run}/train", f"{run}/validation"} <= runs


def test_each_runs_curves_are_its_epochs_loss_and_accuracy(server, sessions):
    for run, summary in sessions.items():
        history = summary["history"]
        for split, prefix in (("train", ""), ("validation", "val_")):
            for tag, key in (("epoch_loss", "loss"), ("epoch_accuracy", "accuracy")):
                points = _scalars(server, f"{run}/{split}", tag)
                recorded = [
                    (epoch, value)
                    for epoch, value in enumerate(history[prefix + key])
                    if value is not None
                ]
                assert [step for step, _ in points] == [epoch for epoch, _ in recorded], (run, tag)
                assert [v for _, v in points] == pytest.approx([v for _, v in recorded], rel=1e-5)


def test_the_hparams_table_shows_eta_lambda_and_the_searched_values_first(server):
    experiment = _experiment(server)
    names = [info["name"] for info in experiment["hparamInfos"]]
    # TensorBoard takes the columns from one run's experiment; whichever it
    # picks, the compared hparams lead, and the dashboard shows the first five.
    assert names[:2] == ["eta", "lam"]
    assert "status" in names[:SHOWN]
    first = [info["name"] for info in experiment["hparamInfos"] if info["differs"]]
    assert names[: len(first)] == first
    assert set(first) in ({"eta", "lam", "status"}, {"eta", "lam", "round", "status", "trial_id"})
    metrics = [(m["name"]["group"], m["name"]["tag"]) for m in experiment["metricInfos"]]
    assert metrics[:2] == [("validation", "epoch_accuracy"), ("validation", "epoch_loss")]
    assert {("train", "epoch_accuracy"), ("train", "epoch_loss")} <= set(metrics)


def test_each_session_has_eta_lambda_status_and_its_final_metrics(server, logdir, sessions):
    groups = {group["name"]: group for group in _session_groups(server)}
    assert set(groups) == {pathlib.PurePosixPath(run).name for run in sessions}
    for run, summary in sessions.items():
        group = groups[pathlib.PurePosixPath(run).name]
        hparams = group["hparams"]
        assert hparams["eta"] == pytest.approx(summary["config"]["eta"])
        assert hparams["lam"] > 0
        assert hparams["status"] == "finished"
        if run != TRAIN_RUN:
            assert hparams["trial_id"] == run.rsplit("_", 1)[1]
            assert hparams["round"] in (1, 2)
        metrics = {
            (m["name"]["group"], m["name"]["tag"]): m["value"] for m in group["metricValues"]
        }
        history = summary["history"]
        assert metrics == pytest.approx(
            {
                ("validation", "epoch_accuracy"): summary["final"]["val_acc"],
                ("validation", "epoch_loss"): history["val_loss"][-1],
                ("train", "epoch_accuracy"): history["accuracy"][-1],
                ("train", "epoch_loss"): history["loss"][-1],
            },
            rel=1e-5,
        )
        # The session is the run whose sub-runs hold its curves: the link
        # from a table row to the trial's curves.
        (session,) = group["sessions"]
        assert session["name"] == run
        assert _scalars(server, f"{run}/validation", "epoch_accuracy")[-1][1] == pytest.approx(
            summary["final"]["val_acc"]
        )
