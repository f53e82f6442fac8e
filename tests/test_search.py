"""Tests for tuning/search.py, tuner.py, results.py and hypermodel.py: a real, tiny search."""

import csv
import dataclasses
import json
import math
import shutil
import signal
import subprocess
import time

import keras_tuner
import numpy as np
import pytest
import synthetic
from tune_cli import tune_command

from kbn.data import Dataset, Split
from kbn.errors import KbnError
from kbn.fileio import read_json
from kbn.training.config import TrainConfig
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
            "pruning": "none",
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
    assert (
        first["eta_range"][0]
        <= second["eta_range"][0]
        < second["eta_range"][1]
        <= first["eta_range"][1]
    )
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
    assert table[0] == "| eta | lambda | validation accuracy | round | status | epochs |"
    assert len(table) == 2 + TRIALS
    assert f"{finished.best['val_acc']:.4f}" in table[2]  # best first
    assert (folder / "search.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for t in finished.trials:
        run = folder / "runs" / f"trial_{t['trial_id']}"
        summary = json.loads((run / "summary.json").read_text())
        assert summary["config"]["eta"] == pytest.approx(t["eta"])
        assert summary["final"]["val_acc"] == pytest.approx(t["val_acc"])
        assert t["epochs"] == summary["epochs_run"] == 2
    assert finished.epochs_trained == 2 * TRIALS and finished.trials_stopped == 0


def test_a_trials_run_folder_holds_its_hparams_session_beside_its_curves(finished):
    # TensorBoard's HParams dashboard reads a session's metrics from the
    # sub-runs of the folder that holds the session: both must be in the trial's folder.
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.plugins.hparams import metadata

    t = finished.trials[-1]
    run = finished.project_dir / "runs" / f"trial_{t['trial_id']}"
    top = event_accumulator.EventAccumulator(str(run), size_guidance={event_accumulator.TENSORS: 0})
    top.Reload()
    content = top.PluginTagToContent(metadata.PLUGIN_NAME)
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    hparams = {name: getattr(v, v.WhichOneof("kind")) for name, v in start.hparams.items()}
    assert hparams["eta"] == pytest.approx(t["eta"]) and hparams["lam"] == pytest.approx(t["lam"])
    assert (hparams["round"], hparams["trial_id"], hparams["status"]) == (
        2,
        t["trial_id"],
        "finished",
    )
    experiment = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
    # The searched values lead TensorBoard's table, where it shows them.
    names = [info.name for info in experiment.hparam_infos]
    assert names[:5] == ["eta", "lam", "round", "status", "trial_id"]
    assert [info.differs for info in experiment.hparam_infos] == [True] * 5 + [False] * (
        len(names) - 5
    )
    assert ("validation", "epoch_accuracy") in {
        (m.name.group, m.name.tag) for m in experiment.metric_infos
    }
    curves = {}
    for split in ("train", "validation"):
        events = event_accumulator.EventAccumulator(
            str(run / split), size_guidance={event_accumulator.TENSORS: 0}
        )
        events.Reload()
        curves[split] = [e.step for e in events.Tensors("epoch_loss")]
    # Every epoch trains; without pruning a trial validates after its last one only.
    assert curves == {"train": [0, 1], "validation": [1]}
    # The session itself writes no metric value.
    assert not top.Tags()["scalars"] and set(top.Tags()["tensors"]) <= {
        metadata.SESSION_START_INFO_TAG,
        metadata.EXPERIMENT_TAG,
    }


def test_trials_share_the_schedule_epochs_and_seed(finished):
    for t in finished.trials:
        run = finished.project_dir / "runs" / f"trial_{t['trial_id']}"
        config = json.loads((run / "summary.json").read_text())["config"]
        assert (config["epochs"], config["batch_size"], config["schedule"], config["seed"]) == (
            2,
            32,
            "exp",
            0,
        )
        assert (
            config["validation_freq"] == 2
        )  # the last epoch: the only one a search without pruning judges
        assert config["eta"] == pytest.approx(t["eta"])


def test_a_later_trial_on_the_shared_model_scores_as_a_fresh_model_would(finished, tmp_path):
    # Trials after the first reuse the first one's model and compiled step, reset to its
    # initial weights with the trial's lambda; the numbers must not depend on that.
    import dataclasses

    from kbn import build_mlp, train

    last = finished.trials[-1]
    model = build_mlp([50, 30], NUM_CLASSES, lam=last["lam"], adapt=DATA.train.x, seed=0)
    config = dataclasses.replace(TRAIN, eta=last["eta"], epochs=2, logdir=str(tmp_path), verbose=0)
    fresh = train(model, DATA, config)
    assert fresh.summary["final"]["val_acc"] == pytest.approx(last["val_acc"], abs=1e-6)


def test_trials_read_the_callers_pixels_through_read_only_views_that_the_loop_keeps():
    from tuning.tuner import read_only

    frozen = read_only(DATA)
    for mine, theirs in ((frozen.train, DATA.train), (frozen.val, DATA.val)):
        assert not mine.x.flags.writeable and np.shares_memory(
            mine.x, theirs.x
        )  # a view, not a copy
        assert mine.y is theirs.y
    assert DATA.train.x.flags.writeable  # the caller's own arrays are left as they were
    assert frozen.test is None and frozen.class_names == DATA.class_names


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
    hypermodel = KbnHyperModel(
        DATA.train.x, NUM_CLASSES, eta_range=(1e-3, 1.0), lam_range=(1e-6, 1e-1)
    )
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    assert hp.get("eta") == pytest.approx(1e-3)  # a log-scale Float defaults to its low end
    assert {p.name: p.sampling for p in hp.space} == {"eta": "log", "lam": "log"}
    assert model.get_layer("dense1").lam == pytest.approx(hp.get("lam"))


@pytest.mark.parametrize("gamma_beta", [False, True])
def test_hypermodel_builds_batch_norm_with_gamma_and_beta_only_when_asked(gamma_beta):
    model = KbnHyperModel(DATA.train.x, NUM_CLASSES, gamma_beta=gamma_beta).build(
        keras_tuner.HyperParameters()
    )
    learnt = [
        w.name
        for layer in model.layers
        if layer.name.startswith("batch_norm")
        for w in layer.trainable_weights
    ]
    assert learnt == (["gamma", "beta", "gamma", "beta"] if gamma_beta else [])


def test_a_search_trains_the_seed_network_by_default():
    assert SearchConfig().gamma_beta is False


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
        ({"pruning": "hyperband"}, "pruning must be one of asha, median, none"),
        ({"finalists": 0}, "finalists must be 1 to the number of trials"),
        ({"finalists": TRIALS + 1}, "finalists must be 1 to the number of trials"),
        ({"finalists": 2, "finalist_seeds": 11}, "finalist seeds must be 1 to 10"),
    ],
)
def test_bad_search_settings_are_user_errors(tmp_path, overrides, message):
    with pytest.raises(KbnError, match=message):
        search(DATA, _config(tmp_path, **overrides), TRAIN)


def finished_runs(runs):
    """The trials' run folders whose summary.json says the run finished."""
    return [
        d for d in runs.glob("trial_*") if (read_json(d / "summary.json") or {}).get("finished")
    ]


@pytest.mark.slow
def test_resume_after_a_killed_search_keeps_completed_trials(tmp_path):
    argv = tune_command(tmp_path, "--trials", str(TRIALS), "--pruning", "none")
    runs = tmp_path / "p" / "runs"
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    # Kill it once two trials have finished and a third is under way. A trial has
    # finished when its summary.json says so (its model.keras is written just before).
    while time.monotonic() < deadline:
        if len(finished_runs(runs)) >= 2 and len(list(runs.glob("trial_*"))) >= 3:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    kept = {d.name: (d / "model.keras").stat().st_mtime_ns for d in finished_runs(runs)}
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


def test_a_trial_that_diverged_before_a_kill_is_still_failed_on_retry(tmp_path):
    from kbn.fileio import write_json
    from tuning.search import _tuner

    tuner = _tuner(DATA, _config(tmp_path), TRAIN)
    trial = tuner.oracle.create_trial("tuner0")
    run_dir = tuner.run_dir(trial.trial_id)
    write_json(
        run_dir / "summary.json",
        {
            "finished": True,
            "diverged": "training cost became nan",
            "final": {"val_acc": 0.3},
            "epochs_run": 1,
        },
    )
    with pytest.raises(keras_tuner.errors.FailedTrialError, match="became nan"):
        tuner.run_trial(trial)
    write_json(
        run_dir / "summary.json",
        {"finished": True, "diverged": None, "final": {"val_acc": 0.8}, "epochs_run": 2},
    )
    assert tuner.run_trial(trial) == {"val_accuracy": 0.8}
    # The finished run's last epoch reaches the oracle, which scores trials by it.
    assert tuner.oracle.get_trial(trial.trial_id).metrics.get_last_value("val_accuracy") == 0.8


# eta from 1e-4 (barely learns in one epoch) to 0.5: ASHA's first rung separates them.
PRUNED = {"trials": 8, "rounds": 1, "epochs": 3, "eta_range": (1e-4, 0.5), "pruning": "asha"}


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("pruned")
    return search(DATA, _config(tmp_path, **PRUNED), TRAIN)


def test_pruning_stops_hopeless_trials_after_their_rung_and_records_them(pruned):
    stopped = [t for t in pruned.trials if t["status"] == "STOPPED"]
    assert stopped and pruned.trials_stopped == len(stopped)
    assert pruned.trials_completed + pruned.trials_stopped == PRUNED["trials"]
    assert pruned.epochs_trained == sum(t["epochs"] for t in pruned.trials) < 3 * PRUNED["trials"]
    best_completed = max(t["val_acc"] for t in pruned.trials if t["status"] == "COMPLETED")
    assert pruned.best["val_acc"] == best_completed
    for t in stopped:
        run = pruned.project_dir / "runs" / f"trial_{t['trial_id']}"
        summary = json.loads((run / "summary.json").read_text())
        assert t["epochs"] == summary["epochs_run"] == 1  # ASHA's rung for 3 epochs
        assert summary["finished"] and summary["stopped_early"]
        assert summary["config"]["validation_freq"] == [
            1
        ]  # the rung; the last epoch validates anyway
        assert t["val_acc"] == pytest.approx(summary["history"]["val_accuracy"][-1])
    rows = [
        line
        for line in (pruned.project_dir / "results.md").read_text().splitlines()
        if "STOPPED" in line
    ]
    assert len(rows) == len(stopped)


def test_a_stopped_trial_has_status_stopped_in_its_hparams(pruned):
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.plugins.hparams import metadata

    t = next(t for t in pruned.trials if t["status"] == "STOPPED")
    top = event_accumulator.EventAccumulator(
        str(pruned.project_dir / "runs" / f"trial_{t['trial_id']}")
    )
    top.Reload()
    content = top.PluginTagToContent(metadata.PLUGIN_NAME)[metadata.SESSION_START_INFO_TAG]
    assert (
        metadata.parse_session_start_info_plugin_data(content).hparams["status"].string_value
        == "stopped"
    )


def test_resuming_a_pruned_search_runs_nothing_again(pruned):
    runs = pruned.project_dir / "runs"
    before = {d.name: (d / "summary.json").stat().st_mtime_ns for d in runs.iterdir()}
    directory, project = pruned.project_dir.parent, pruned.project_dir.name
    again = search(DATA, _config(directory, project=project, resume=True, **PRUNED), TRAIN)
    assert [(t["trial_id"], t["status"], t["epochs"]) for t in again.trials] == [
        (t["trial_id"], t["status"], t["epochs"]) for t in pruned.trials
    ]
    assert {d.name: (d / "summary.json").stat().st_mtime_ns for d in runs.iterdir()} == before


@pytest.mark.parametrize(
    "data, config, train, named",
    [
        (None, {"epochs": 3}, None, "epochs 2 -> 3"),
        (None, {}, {"batch_size": 16}, "training batch_size 32 -> 16"),
        ("fewer", {}, None, "data train 300 -> 290"),
    ],
)
def test_resuming_a_search_with_other_settings_or_data_is_refused_naming_them(
    finished, data, config, train, named
):
    project = finished.project_dir
    files = {p: p.read_bytes() for p in project.rglob("*") if p.is_file() and p.name != ".lock"}
    if data == "fewer":
        data = dataclasses.replace(DATA, train=Split(DATA.train.x[10:], DATA.train.y[10:]))
    resumed = _config(project.parent, project=project.name, resume=True, **config)
    with pytest.raises(KbnError, match="resumes only with the settings and data") as error:
        search(data or DATA, resumed, dataclasses.replace(TRAIN, **(train or {})))
    assert named in str(error.value)
    assert {
        p: p.read_bytes() for p in project.rglob("*") if p.is_file() and p.name != ".lock"
    } == files


def test_resuming_a_finished_search_may_change_how_it_is_run(finished, tmp_path):
    shutil.copytree(finished.project_dir, tmp_path / "p")
    resumed = _config(tmp_path, resume=True, backup_interval=0.0, verbose=1)
    again = search(DATA, resumed, TRAIN)
    assert again.best == finished.best
    assert [t["val_acc"] for t in again.trials] == [t["val_acc"] for t in finished.trials]


def test_a_second_search_on_a_live_project_is_refused(tmp_path):
    from kbn.training.runlock import RunLock

    with (
        RunLock(tmp_path / "p", what="search project"),
        pytest.raises(KbnError, match="search project .* is in use by process"),
    ):
        search(DATA, _config(tmp_path), TRAIN)


@pytest.fixture(scope="module")
def with_finalists(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("finalists")
    return search(DATA, _config(tmp_path, finalists=2, finalist_seeds=2), TRAIN)


def test_finalists_are_trials_of_their_own_with_new_seeds(with_finalists):
    result = with_finalists
    rounds = [t for t in result.trials if t["round"] <= ROUNDS]
    finals = [t for t in result.trials if t["round"] == ROUNDS + 1]
    assert len(rounds) == TRIALS and len(finals) == 2 * 2
    assert all(t["status"] == "COMPLETED" and t["epochs"] == 2 for t in finals)
    assert sorted(t["seed"] for t in finals) == [1, 1, 2, 2]  # the search's seed is 0
    for t in finals:
        summary = read_json(result.project_dir / "runs" / f"trial_{t['trial_id']}" / "summary.json")
        assert summary["config"]["seed"] == t["seed"]
    # The raw best is the rounds' maximum, never a finalist's run.
    best = max((t for t in rounds if t["status"] == "COMPLETED"), key=lambda t: t["val_acc"])
    assert result.best == {k: best[k] for k in ("eta", "lam", "val_acc")}


def test_the_winner_is_the_finalist_pair_with_the_best_mean_of_its_runs(with_finalists):
    result = with_finalists
    finals = [t for t in result.trials if t["round"] == ROUNDS + 1]
    means = {}
    for f in result.finalists:
        runs = [t["val_acc"] for t in finals if (t["eta"], t["lam"]) == (f["eta"], f["lam"])]
        assert sorted(f["val_accs"]) == sorted(runs)
        assert f["mean"] == pytest.approx(np.mean(runs))
        assert f["stderr"] == pytest.approx(np.std(runs, ddof=1) / math.sqrt(len(runs)))
        means[(f["eta"], f["lam"])] = f["mean"]
    winner = result.winner
    assert means[(winner["eta"], winner["lam"])] == max(means.values()) == winner["val_acc"]
    assert result.as_json()["winner"] == winner
    summary = result.finalists_summary()
    assert f"eta {winner['eta']:.4g}, lambda {winner['lam']:.4g}, " in summary
    assert f"{100 * winner['val_acc']:.2f}%" in summary
    same = (winner["eta"], winner["lam"]) == (result.best["eta"], result.best["lam"])
    assert ("is also the winner" if same else "is not the winner") in summary
    # The two finalist pairs are the rounds' two best.
    rounds = sorted(
        (t for t in result.trials if t["round"] <= ROUNDS and t["status"] == "COMPLETED"),
        key=lambda t: -t["val_acc"],
    )
    assert {(f["eta"], f["lam"]) for f in result.finalists} == {
        (t["eta"], t["lam"]) for t in rounds[:2]
    }


def test_results_files_list_the_finalists_and_their_seeds(with_finalists):
    folder = with_finalists.project_dir
    with open(folder / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["seed"] for r in rows if r["round"] == str(ROUNDS + 1)] == ["1", "2", "1", "2"]
    assert all(r["seed"] == "" for r in rows if r["round"] != str(ROUNDS + 1))
    text = (folder / "results.md").read_text()
    assert "Finalists" in text
    winner = with_finalists.winner
    assert f"| {winner['eta']:.4g} | {winner['lam']:.4g} |" in text.split("Finalists")[1]


def test_resuming_a_search_with_finalists_runs_nothing_again(with_finalists):
    project = with_finalists.project_dir
    config = _config(project.parent, finalists=2, finalist_seeds=2, resume=True)
    again = search(DATA, config, TRAIN)
    assert again.trials == with_finalists.trials
    assert again.finalists == with_finalists.finalists
