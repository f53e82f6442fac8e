"""Tests for kbn/run_table and `kbn runs`: real tiny runs (finished, killed, diverged, live), a
search with stopped and diverged trials, a corrupt summary.json, read back as one table."""

import csv
import io
import json
import shutil
import sys

import keras
import pytest
import synthetic

import kbn
from kbn import Dataset, KbnError, Split, build_mlp, train
from kbn.cli import main
from kbn.fileio import read_json, write_json
from kbn.run_table import COLUMNS, Run, RunTable, runs
from kbn.training import TrainConfig
from kbn.training.runlock import RunLock
from tuning.search import SearchConfig, search

NUM_CLASSES = 3
EPOCHS = 3


def _dataset():
    x, y = synthetic.make_images(500, seed=0, num_classes=NUM_CLASSES)
    return Dataset(
        name="npz:tiny.npz",
        train=Split(x[:300], y[:300]),
        val=Split(x[300:400], y[300:400]),
        test=Split(x[400:], y[400:]),
        class_names=("a", "b", "c"),
    )


DATA = _dataset()


def _train(logdir, name, callbacks=(), batch_norm=True, lam=0.001, **config):
    model = build_mlp([8], NUM_CLASSES, batch_norm=batch_norm, lam=lam, adapt=DATA.train.x, seed=0)
    settings = dict(epochs=EPOCHS, batch_size=32, logdir=str(logdir), run_name=name, verbose=0)
    return train(model, DATA, TrainConfig(**{**settings, **config}), callbacks=list(callbacks))


class KillAfterFirstEpoch(keras.callbacks.Callback):
    """Ends the process's training as a kill would: summary.json says epoch 1, unfinished."""

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt


def _search(directory, project, **overrides):
    config = SearchConfig(
        **{
            "rounds": 1,
            "trials": 6,
            "epochs": EPOCHS,
            "directory": str(directory),
            "project": project,
            "verbose": 0,
            **overrides,
        }
    )
    return search(DATA, config, TrainConfig(batch_size=32, steps_per_execution=10))


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    """logs/: finished, killed, diverged and corrupt runs; logs/search/: a pruned project
    (finished and stopped trials) and one whose trials all diverge."""
    logs = tmp_path_factory.mktemp("logs")
    _train(logs, "finished")
    with pytest.raises(KeyboardInterrupt):
        _train(logs, "killed", callbacks=[KillAfterFirstEpoch()])
    # eta 1e4 without batch norm's help blows up in the first epoch.
    _train(logs, "diverged", batch_norm=False, eta=1e4, divergence_factor=1.5)
    shutil.copytree(logs / "finished", logs / "corrupt")
    (logs / "corrupt" / "summary.json").write_text('{"config": {"eta": 0.1')  # torn by hand
    _search(logs / "search", "pruned", eta_range=(1e-4, 0.5), pruning="asha")
    _search(logs / "search", "blown", trials=2, eta_range=(1e3, 1e4))
    return logs


def by_name(table):
    return {f"{run.project}/{run.name}" if run.project else run.name: run for run in table}


def test_every_run_and_trial_is_one_row(logs):
    rows = by_name(runs(logs))
    assert set(rows) == {
        "finished",
        "killed",
        "diverged",
        "corrupt",
        *(f"pruned/trial_{i}" for i in range(6)),
        "blown/trial_0",
        "blown/trial_1",
    }
    assert {rows[f"pruned/trial_{i}"].trial for i in range(6)} == {str(i) for i in range(6)}


def test_a_finished_runs_row_holds_what_its_summary_records(logs):
    run = by_name(runs(logs))["finished"]
    summary = read_json(logs / "finished" / "summary.json")
    final = summary["final"]
    assert run.status == "finished"
    assert (run.data, run.network, run.eta, run.lam) == ("npz:tiny.npz", "8 BN", 0.0864, 0.001)
    assert run.epochs == EPOCHS
    assert (run.train_acc, run.val_acc, run.test_acc) == (
        final["train_acc"],
        final["val_acc"],
        final["test_acc"],
    )
    assert run.seconds == pytest.approx(sum(summary["history"]["seconds"]))
    assert run.started == summary["started"]
    assert run.path == str(logs / "finished")


def test_statuses_tell_killed_diverged_stopped_and_finished_apart(logs):
    rows = by_name(runs(logs))
    assert rows["killed"].status == "killed"
    assert rows["killed"].epochs == 1
    assert rows["killed"].test_acc is None  # a killed run's last epoch has no test pass
    assert (
        rows["killed"].val_acc
        == read_json(logs / "killed" / "summary.json")["history"]["val_accuracy"][-1]
    )
    assert rows["diverged"].status == "diverged"
    assert "nan" in rows["diverged"].note or "rose" in rows["diverged"].note
    trials = [rows[f"pruned/trial_{i}"].status for i in range(6)]
    assert "stopped" in trials and "finished" in trials
    assert set(trials) == {"stopped", "finished"}
    assert [rows[f"blown/trial_{i}"].status for i in range(2)] == ["diverged", "diverged"]
    with open(logs / "search/pruned/results.csv") as file:
        results = {r["trial_id"]: r for r in csv.DictReader(file)}
    for i in range(6):
        row = rows[f"pruned/trial_{i}"]
        assert (
            row.status == {"COMPLETED": "finished", "STOPPED": "stopped"}[results[str(i)]["status"]]
        )
        assert row.eta == pytest.approx(float(results[str(i)]["eta"]))
        assert row.lam == pytest.approx(float(results[str(i)]["lam"]))
        assert row.val_acc == pytest.approx(float(results[str(i)]["val_acc"]))


def test_a_corrupt_summary_is_an_unreadable_row_not_a_traceback(logs, capsys):
    run = by_name(runs(logs))["corrupt"]
    assert run.status == "unreadable"
    assert run.note == "summary.json is not a JSON object"
    assert run.eta is None and run.val_acc is None
    assert main(["runs", str(logs)]) == 0
    assert "corrupt" in capsys.readouterr().out


def test_a_summary_of_the_wrong_shape_is_unreadable_too(tmp_path):
    write_json(tmp_path / "odd" / "summary.json", {"config": ["not", "a", "mapping"]})
    [run] = runs(tmp_path)
    assert run.status == "unreadable"
    assert run.note.startswith("summary.json has an unexpected shape")


def test_a_folder_a_live_process_holds_is_running(logs, tmp_path):
    folder = shutil.copytree(logs / "killed", tmp_path / "live")
    with RunLock(folder):
        assert runs(folder)[0].status == "running"
    assert runs(folder)[0].status == "killed"


def test_a_summary_from_kbn_0_1_takes_its_start_from_the_event_files(logs, tmp_path):
    folder = shutil.copytree(logs / "finished", tmp_path / "old")
    summary = read_json(folder / "summary.json")
    for key in ("started", "data", "network"):
        del summary[key]
    write_json(folder / "summary.json", summary)
    [run] = runs(folder)
    assert run.status == "finished"
    assert (run.data, run.network, run.lam) == (None, None, None)
    # Same second as summary.json's own `started`, give or take the first epoch's tracing.
    assert run.started[:15] == read_json(logs / "finished" / "summary.json")["started"][:15]


def test_rows_sort_by_any_column_with_missing_values_last(logs):
    table = runs(logs).sorted_by("val_acc", descending=True)
    values = [run.val_acc for run in table]
    present = [v for v in values if v is not None]
    assert present == sorted(present, reverse=True)
    assert values[len(present) :] == [None] * (len(values) - len(present))
    assert [run.eta for run in runs(logs).sorted_by("eta") if run.eta is not None] == sorted(
        run.eta for run in table if run.eta is not None
    )


def test_filters_keep_the_named_statuses_and_projects(logs):
    table = runs(logs)
    stopped = table.where(status=["stopped"])
    assert stopped and all(run.status == "stopped" for run in stopped)
    both = table.where(status=["stopped", "finished"], project=["pruned"])
    assert len(both) == 6
    assert table.where(project=["blown"]).where(status=["finished"]) == RunTable()


def test_json_and_csv_give_every_field_of_every_row(logs, capsys):
    expected = runs(logs).as_dicts()
    assert main(["runs", str(logs), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == expected
    assert main(["runs", str(logs), "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [list(row) for row in rows] == [list(COLUMNS)] * len(expected)
    assert [row["name"] for row in rows] == [row["name"] for row in expected]
    finished = next(row for row in rows if row["name"] == "finished")
    assert float(finished["val_acc"]) == next(
        row["val_acc"] for row in expected if row["name"] == "finished"
    )


def test_the_command_sorts_and_filters_as_the_api_does(logs, capsys):
    assert main(["runs", str(logs), "--sort", "val_acc", "--desc", "--filter", "project=pruned",
                 "--json"]) == 0  # fmt: skip
    got = json.loads(capsys.readouterr().out)
    want = runs(logs).where(project=["pruned"]).sorted_by("val_acc", descending=True).as_dicts()
    assert got == want


def test_the_text_table_has_a_header_and_a_line_per_row(logs, capsys):
    assert main(["runs", str(logs)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "name", "started", "data", "network", "eta", "lambda", "epochs", "status",
        "train", "val", "test", "seconds",
    ]  # fmt: skip
    assert len(lines) == 1 + len(runs(logs))
    finished = next(line for line in lines if line.startswith("finished "))
    assert f"{runs(logs).where(name=['finished'])[0].val_acc:.2%}" in finished
    assert any(line.startswith("pruned/trial_0 ") for line in lines)


def test_the_api_is_kbn_runs():
    assert kbn.runs is runs and kbn.Run is Run


def test_a_dataframe_needs_pandas_and_says_so(logs, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if not installed
    with pytest.raises(KbnError, match="pip install pandas"):
        runs(logs).to_dataframe()


@pytest.mark.parametrize(
    ("make", "args", "message"),
    [
        (lambda p: p.mkdir(), [], "no kbn runs or search projects in"),
        (lambda p: None, [], "does not exist"),
        (lambda p: p.write_text("x"), [], "is not a folder"),
        (lambda p: (p.mkdir(), (p / "notes.txt").write_text("x")), [], "no kbn runs"),
        (lambda p: None, ["--filter", "status=done"], "cannot filter on status 'done'"),
        (lambda p: None, ["--filter", "eta=0.1"], "cannot filter on 'eta'"),
        (lambda p: None, ["--sort", "speed"], "cannot sort by 'speed'"),
        (lambda p: None, ["--filter", "status"], "expected COLUMN=VALUE"),
    ],
)
def test_bad_input_is_one_error_line_and_exit_status_2(logs, tmp_path, capsys, make, args, message):
    folder = tmp_path / "given"
    make(folder)
    target = folder if not args else logs
    assert main(["runs", str(target), *args]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("error: ") and err.count("\n") == 1
    assert message in err


def test_a_trial_the_search_recorded_as_failed_without_diverging_is_failed(logs, tmp_path):
    project = shutil.copytree(logs / "search" / "pruned", tmp_path / "pruned")
    record = read_json(project / "trial_0" / "trial.json")
    record["status"] = "FAILED"  # as KerasTuner records a trial whose build raised
    write_json(project / "trial_0" / "trial.json", record)
    (project / "trial_1" / "trial.json").write_text("{")
    rows = {run.name: run for run in runs(project)}
    assert rows["trial_0"].status == "failed"
    assert rows["trial_1"].status == "unreadable"
    assert rows["trial_1"].note == "trial.json is not a JSON object"
