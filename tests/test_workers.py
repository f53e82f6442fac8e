"""Tests for tuning/chief.py and tuning/worker.py: a chief and worker processes on 127.0.0.1."""

import json
import os
import signal
import subprocess
import time

import pytest
import synthetic
from tune_cli import tune_command, worker_pids

from kbn.data import Dataset, Split
from kbn.training.config import TrainConfig
from tuning.search import SearchConfig, search

TRIALS = 6
TRAIN = TrainConfig(batch_size=32, steps_per_execution=10)


def _dataset():
    x, y = synthetic.make_images(400, seed=0, num_classes=3)
    return Dataset(
        "synthetic", Split(x[:300], y[:300]), Split(x[300:], y[300:]), None, ("a", "b", "c")
    )


def _wait_for(condition, seconds=180):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def _every_trial_ran_each_epoch_once(project, trials, epochs=3):
    runs = sorted((project / "runs").glob("trial_*"))
    assert len(runs) == trials  # none created twice
    for run in runs:
        assert len(json.loads((run / "summary.json").read_text())["history"]["loss"]) == epochs


@pytest.mark.slow
def test_two_workers_on_loopback_share_the_trials(tmp_path):
    # Each worker process is replaced after 2 trials: the search goes on regardless.
    config = SearchConfig(
        rounds=2,
        trials=TRIALS,
        epochs=2,
        directory=str(tmp_path),
        project="p",
        pruning="none",
        verbose=0,
        workers=2,
        recycle_after=2,
    )
    result = search(_dataset(), config, TRAIN)
    assert result.trials_completed == TRIALS
    assert len({t["trial_id"] for t in result.trials}) == TRIALS
    assert set(result.trials_by_worker) <= {"tuner0", "tuner1"}
    assert sum(result.trials_by_worker.values()) == TRIALS
    assert [r["trials"] for r in result.rounds] == [3, 3]
    assert all(t["peak_rss_mb"] > 0 for t in result.trials)


@pytest.mark.slow
def test_a_tuning_py_in_the_working_folder_does_not_shadow_the_workers_package(tmp_path):
    # `python -m tuning.worker` would import this file and the search would never end.
    (tmp_path / "tuning.py").write_text("raise SystemExit('a user tuning.py was imported')\n")
    argv = tune_command(
        tmp_path,
        "--trials",
        "4",
        "--rounds",
        "1",
        "--workers",
        "2",
        "--pruning",
        "none",
        console_script=True,
    )
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["trials_completed"] == 4
    assert sum(result["trials_by_worker"].values()) == 4


@pytest.mark.slow
def test_killing_one_worker_mid_search_still_gives_every_trial(tmp_path):
    argv = tune_command(tmp_path, "--trials", str(TRIALS), "--workers", "2", "--pruning", "none")
    chief = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    runs = tmp_path / "p" / "runs"
    _wait_for(lambda: len(worker_pids(tmp_path)) == 2 and list(runs.glob("trial_*/summary.json")))
    os.kill(worker_pids(tmp_path)[0], signal.SIGKILL)  # mid-trial: its trial goes back to the queue
    out, err = chief.communicate(timeout=400)
    assert chief.returncode == 0, err[-2000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert result["trials_completed"] == TRIALS
    _every_trial_ran_each_epoch_once(tmp_path / "p", TRIALS)


@pytest.mark.slow
def test_when_every_worker_dies_the_chief_fails_and_resume_finishes_the_search(tmp_path):
    argv = tune_command(tmp_path, "--trials", str(TRIALS), "--workers", "2", "--pruning", "none")
    chief = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    runs = tmp_path / "p" / "runs"
    _wait_for(lambda: len(worker_pids(tmp_path)) == 2 and list(runs.glob("trial_*/summary.json")))
    for pid in worker_pids(tmp_path):
        os.kill(pid, signal.SIGKILL)
    out, err = chief.communicate(timeout=60)  # it must not wait forever
    assert chief.returncode not in (0, None)
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error: every search worker has died") and "--resume" in lines[-1]
    assert "Traceback" not in err

    resumed = subprocess.run([*argv, "--resume"], capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["trials_completed"] == TRIALS
    _every_trial_ran_each_epoch_once(tmp_path / "p", TRIALS)


@pytest.mark.slow
def test_workers_stop_when_their_chief_is_killed(tmp_path):
    argv = tune_command(tmp_path, "--trials", "40", "--workers", "1")
    chief = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = tmp_path / "p" / "runs"
    _wait_for(lambda: list(runs.glob("trial_*/summary.json")))
    assert worker_pids(tmp_path)  # a worker is training when the chief dies
    chief.send_signal(signal.SIGKILL)
    chief.wait()
    deadline = time.monotonic() + 15
    while worker_pids(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert worker_pids(tmp_path) == []


def test_a_search_with_a_dead_workers_trial_in_the_queue_has_not_ended(tmp_path):
    # A worker told "no trial left" ends; a worker dying after it hands its trial back:
    # the chief must not take the empty room for the search's end.
    import types

    import keras_tuner

    from kbn import _compat
    from tuning import chief

    oracle = keras_tuner.oracles.RandomSearchOracle(objective="val_accuracy", max_trials=2)
    told_to_stop = types.SimpleNamespace(stop_triggered=True)
    assert chief._search_ended(oracle, told_to_stop)
    _compat.oracle_retry_queue(oracle).append("1")
    assert not chief._search_ended(oracle, told_to_stop)


def test_the_pool_restarts_a_worker_that_ended_cleanly_and_no_other(tmp_path):
    from tuning.chief import WorkerPool

    pool = WorkerPool(tmp_path, 2, env={})
    started = []
    pool._start = started.append  # no process: only which worker would start
    assert not pool.restart_one()
    pool.done.append("tuner1")
    assert pool.restart_one() and started == [1] and pool.done == []
