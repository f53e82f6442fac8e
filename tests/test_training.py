"""Tests for kbn.training: a run learns, writes its run dir (summary.json, curves.png,
TensorBoard events), repeats itself under a seed, follows its schedule, stops
cleanly when it diverges, and resumes after a kill with every epoch exactly once."""

import dataclasses
import datetime
import math
import pathlib
import re
import shutil
import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import kbn
import kbn.training.loop
import kbn.training.trainer
from kbn import Dataset, KbnError, Split, build_mlp
from kbn.fileio import read_json, write_json
from kbn.training import LoopCache, TrainConfig, TrainResult, train
from kbn.training.callbacks import Backup, EpochTensorBoard, cadence
from kbn.training.callbacks import backup as backup_module

NUM_TRAIN = 300
NUM_VAL = 100
NUM_TEST = 100
NUM_CLASSES = 4  # class = the brightest quadrant of a 4x4 image
BATCH_SIZE = 32
STEPS_PER_EPOCH = math.ceil(NUM_TRAIN / BATCH_SIZE)  # 10
EPOCHS = 4
ETA = 0.05
DECAY = 0.5
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds")


def quadrant_split(n, rng):
    """n noisy 4x4 gray images whose label is the quadrant with a bright 2x2 patch."""
    x = rng.integers(0, 60, size=(n, 4, 4, 1))
    y = rng.integers(0, NUM_CLASSES, size=n)
    for i, label in enumerate(y):
        row, col = divmod(int(label), 2)
        x[i, 2 * row : 2 * row + 2, 2 * col : 2 * col + 2, 0] += 180
    return Split(x.astype(np.uint8), y.astype(np.int64))


def make_dataset():
    rng = np.random.default_rng(0)
    return Dataset(
        name="synthetic",
        train=quadrant_split(NUM_TRAIN, rng),
        val=quadrant_split(NUM_VAL, rng),
        test=quadrant_split(NUM_TEST, rng),
        class_names=("a", "b", "c", "d"),
    )


DATA = make_dataset()


def fresh_model(seed=0, **kwargs):
    return build_mlp([16], NUM_CLASSES, adapt=DATA.train.x, seed=seed, **kwargs)


def config(logdir, **overrides):
    settings = dict(
        eta=ETA,
        decay=DECAY,
        epochs=EPOCHS,
        batch_size=BATCH_SIZE,
        seed=0,
        logdir=str(logdir),
        verbose=0,
    )
    return TrainConfig(**{**settings, **overrides})


def tensorboard(folder, tag):
    """(step, value) of every `tag` event under `folder`, duplicates and all."""
    accumulator = EventAccumulator(
        str(folder), size_guidance={"tensors": 0}, purge_orphaned_data=False
    )
    accumulator.Reload()
    if tag not in accumulator.Tags()["tensors"]:
        return []
    return [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in accumulator.Tensors(tag)]


def epoch_curves(run_dir):
    """Every epoch_* scalar of a run, by split and tag, sorted by step."""
    curves = {}
    for split in ("train", "validation"):
        accumulator = EventAccumulator(
            str(run_dir / split), size_guidance={"tensors": 0}, purge_orphaned_data=False
        )
        accumulator.Reload()
        for tag in accumulator.Tags()["tensors"]:
            if tag.startswith("epoch_"):
                curves[split, tag] = sorted(tensorboard(run_dir / split, tag))
    return curves


def assert_tensorboard_matches(run_dir, history, epochs):
    """Each epoch's loss is in the train and validation events exactly once, equal to the
    history's."""
    for split, key in (("train", "loss"), ("validation", "val_loss")):
        events = tensorboard(run_dir / split, "epoch_loss")
        steps = [step for step, _ in events]
        assert sorted(steps) == list(range(epochs)), (split, steps)
        values = [value for _, value in sorted(events)]
        np.testing.assert_allclose(values, history[key], rtol=0, atol=1e-5)


def assert_same_weights(a, b):
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_allclose(wa, wb, rtol=1e-6, atol=1e-7)


def run_killed_after_epoch(logdir, index, run_name="r", **overrides):
    """Train until epoch `index` has fully ended, then die as a killed process would.

    The kill comes from the last callback (TensorBoard), after the history,
    summary.json and backup of that epoch were written.
    """
    original = EpochTensorBoard.on_epoch_end

    def on_epoch_end(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch == index:
            raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(EpochTensorBoard, "on_epoch_end", on_epoch_end)
        with pytest.raises(KeyboardInterrupt):
            train(fresh_model(), DATA, config(logdir, run_name=run_name, **overrides))
    return logdir / run_name


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted EPOCHS-epoch run and its model: the numbers every other run is held to."""
    model = fresh_model()
    result = train(model, DATA, config(tmp_path_factory.mktemp("reference"), run_name="ref"))
    return result, model


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """The run dir of an EPOCHS-epoch run killed after its 2nd epoch; copy it, never resume it."""
    return run_killed_after_epoch(tmp_path_factory.mktemp("killed"), index=1)


def copy_run(run_dir, logdir):
    return pathlib.Path(shutil.copytree(run_dir, logdir / run_dir.name))


def test_train_learns_a_separable_problem(reference):
    result, _ = reference
    assert isinstance(result, TrainResult)
    final = result.summary["final"]
    assert set(final) == {"train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc"}
    assert final["train_acc"] >= 0.9  # chance is 0.25
    assert final["val_acc"] >= 0.9
    assert final["test_acc"] >= 0.9
    assert final["train_loss"] < 0.5 < math.log(NUM_CLASSES)
    assert result.history["loss"][-1] < result.history["loss"][0]
    assert result.history["val_accuracy"][-1] >= 0.9
    assert result.summary["epochs_run"] == EPOCHS
    assert result.summary["seconds_per_epoch"] > 0
    assert result.summary["finished"] is True
    assert result.summary["diverged"] is None and result.diverged is None
    assert result.model_path is None


def test_final_metrics_are_the_trained_models_in_inference_mode(reference):
    result, model = reference
    final = result.summary["final"]
    for name, split in (("train", DATA.train), ("val", DATA.val), ("test", DATA.test)):
        logits = keras.ops.convert_to_numpy(model(split.x, training=False))
        accuracy = np.mean(np.argmax(logits, axis=1) == split.y)
        assert final[f"{name}_acc"] == pytest.approx(accuracy, abs=1e-6)
    # The last epoch's validation numbers are the same model's, evaluated the same way.
    assert final["val_loss"] == pytest.approx(result.history["val_loss"][-1], rel=1e-5)


def test_run_dir_holds_summary_curves_and_tensorboard_events(reference):
    result, model = reference
    run_dir = result.run_dir
    assert run_dir.name == "ref"
    summary = read_json(run_dir / "summary.json")
    assert summary == result.summary
    assert summary["config"] == dataclasses.asdict(config(run_dir.parent, run_name="ref"))
    assert summary["run_dir"] == str(run_dir)
    assert summary["data"] == {
        "spec": DATA.name,
        "test_spec": None,
        "seed": None,  # a Dataset made by hand; load_data's records its seed
        "train": NUM_TRAIN,
        "val": NUM_VAL,
        "test": NUM_TEST,
        "input_shape": [4, 4, 1],
        "class_names": list(DATA.class_names),
    }
    assert summary["network"] == {
        "name": "mlp",
        "hidden": [16],
        "num_classes": NUM_CLASSES,
        "batch_norm": True,
        "lam": 0.0,
        "parameters": model.count_params(),
    }
    started = datetime.datetime.fromisoformat(summary["started"])
    assert abs((datetime.datetime.now() - started).total_seconds()) < 3600
    for key in HISTORY_KEYS:
        assert len(summary["history"][key]) == EPOCHS, key
    assert all(s > 0 for s in summary["history"]["seconds"])
    assert summary["history"] == result.history
    assert (run_dir / "curves.png").read_bytes()[:8] == PNG_SIGNATURE
    assert not (run_dir / "backup").exists()  # a finished run keeps no backup
    names = sorted(p.name for p in run_dir.iterdir())
    events = [
        name for name in names if name.startswith("events.out.tfevents")
    ]  # the HParams session
    assert len(events) == 1
    assert sorted(set(names) - set(events)) == [
        ".lock",
        "curves.png",
        "summary.json",
        "train",
        "validation",
    ]
    assert_tensorboard_matches(run_dir, result.history, EPOCHS)
    accuracy = sorted(tensorboard(run_dir / "validation", "epoch_accuracy"))
    np.testing.assert_allclose([v for _, v in accuracy], result.history["val_accuracy"], atol=1e-6)


def test_same_seed_gives_identical_numbers(reference, tmp_path):
    result, model = reference
    again_model = fresh_model()
    again = train(again_model, DATA, config(tmp_path, run_name="again"))
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"):
        assert again.history[key] == result.history[key], key
    assert again.summary["final"] == result.summary["final"]
    assert_same_weights(again_model, model)

    other = train(fresh_model(seed=1), DATA, config(tmp_path, run_name="other", seed=1, epochs=2))
    assert all(abs(a - b) > 1e-4 for a, b in zip(other.history["loss"], result.history["loss"][:2]))


def test_exp_schedule_decays_eta_per_epoch(reference):
    result, _ = reference
    expected = [ETA * DECAY**epoch for epoch in range(EPOCHS)]  # 0.05, 0.025, 0.0125, 0.00625
    np.testing.assert_allclose(result.history["learning_rate"], expected, rtol=1e-6)


def test_cyclic_schedule_follows_a_triangle_over_the_epochs(tmp_path):
    # step_size = 2 epochs of 10 steps: bottom, half way, top, half way, bottom.
    result = train(
        fresh_model(),
        DATA,
        config(
            tmp_path,
            run_name="cyclic",
            schedule="cyclic",
            eta_min=0.01,
            step_size=2 * STEPS_PER_EPOCH,
            epochs=5,
        ),
    )
    np.testing.assert_allclose(
        result.history["learning_rate"], [0.01, 0.03, 0.05, 0.03, 0.01], rtol=1e-6
    )


def test_divergence_guard_stops_a_blowing_up_run_cleanly(tmp_path):
    model = build_mlp([16, 16], NUM_CLASSES, adapt=DATA.train.x, seed=0, batch_norm=False)
    result = train(model, DATA, config(tmp_path, run_name="blowup", eta=1e6, epochs=5))
    assert result.diverged == "training cost became nan at epoch 1"
    assert result.summary["epochs_run"] == 1 < 5
    assert len(result.history["loss"]) == 1 and math.isnan(result.history["loss"][0])
    summary = read_json(result.run_dir / "summary.json")
    assert summary["diverged"] == result.diverged
    assert summary["finished"] is True
    assert summary["epochs_run"] == 1
    assert (result.run_dir / "curves.png").read_bytes()[:8] == PNG_SIGNATURE


def test_divergence_guard_flags_a_run_that_blows_up_within_its_first_epoch(tmp_path):
    model = fresh_model(batch_norm=False)
    result = train(model, DATA, config(tmp_path, run_name="blowup", eta=1e4, epochs=2))
    assert min(result.history["loss"]) > 100 * math.log(NUM_CLASSES)  # it did blow up
    assert result.diverged is not None


def test_save_writes_a_model_that_evaluates_identically(tmp_path):
    path = tmp_path / "m.keras"
    model = fresh_model()
    result = train(model, DATA, config(tmp_path / "logs", run_name="s", save=str(path), epochs=2))
    assert result.model_path == path
    assert result.summary["model_path"] == str(path)
    # The model, its card and the card's figure; no temporary left.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "logs",
        "m.card.confusion.png",
        "m.card.md",
        "m.keras",
    ]
    loaded = keras.saving.load_model(path)
    x = DATA.test.x
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x, training=False)),
        keras.ops.convert_to_numpy(model(x, training=False)),
        rtol=1e-6,
        atol=1e-6,
    )
    loss, accuracy = loaded.evaluate(x, DATA.test.y, verbose=0)
    assert accuracy == pytest.approx(result.summary["final"]["test_acc"], abs=1e-6)
    assert loss == pytest.approx(result.summary["final"]["test_loss"], rel=1e-5)


def test_resume_continues_from_the_last_finished_epoch(tmp_path, killed, reference):
    uninterrupted, reference_model = reference
    run_dir = copy_run(killed, tmp_path)
    killed_summary = read_json(run_dir / "summary.json")
    killed_summary["started"] = "2001-02-03T04:05:06"  # not a time this resume could take
    write_json(run_dir / "summary.json", killed_summary)
    before = killed_summary["history"]
    assert len(before["loss"]) == 2
    assert (run_dir / "backup" / "epoch-0.state").exists()  # after epoch 2

    model = fresh_model()
    result = train(model, DATA, config(tmp_path, run_name="r", resume=True))
    for key in HISTORY_KEYS:
        assert len(result.history[key]) == EPOCHS, key
        if key != "seconds":
            assert result.history[key][:2] == before[key][:2], key
    assert read_json(run_dir / "summary.json")["history"] == result.history
    assert result.summary["epochs_run"] == EPOCHS
    assert result.summary["finished"] is True
    assert result.summary["started"] == "2001-02-03T04:05:06"  # the run's, not the resume's
    assert_tensorboard_matches(run_dir, result.history, EPOCHS)
    assert not (run_dir / "backup").exists()
    # Killed and resumed, or not: the same epochs, the same numbers, the same weights.
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"):
        np.testing.assert_allclose(
            result.history[key], uninterrupted.history[key], rtol=1e-6, err_msg=key
        )
    assert result.summary["final"] == pytest.approx(uninterrupted.summary["final"], rel=1e-6)
    assert_same_weights(model, reference_model)


def test_resume_after_a_kill_at_the_last_epoch_end_keeps_every_epoch(tmp_path, reference):
    uninterrupted, reference_model = reference
    run_dir = run_killed_after_epoch(tmp_path, index=EPOCHS - 1)  # the backup holds every epoch
    model = fresh_model()
    result = train(model, DATA, config(tmp_path, run_name="r", resume=True))
    assert result.summary["epochs_run"] == EPOCHS
    np.testing.assert_allclose(result.history["loss"], uninterrupted.history["loss"], rtol=1e-6)
    assert read_json(run_dir / "summary.json")["history"] == result.history
    assert_tensorboard_matches(run_dir, result.history, EPOCHS)
    assert_same_weights(model, reference_model)
    assert (run_dir / "curves.png").exists()


def test_backup_interval_backs_up_once_that_long_has_passed_and_a_resume_redoes_the_rest(
    tmp_path, reference, monkeypatch
):
    uninterrupted, reference_model = reference
    # The run's cadence reads its clock once at the start (0 s) and once at each epoch's
    # end: epochs end at 20, 40, 60 s. Every 35 s, the record is due at the end of the second.
    clock = iter(range(0, 1000, 20))
    monkeypatch.setattr(
        cadence, "time", types.SimpleNamespace(perf_counter=lambda: float(next(clock)))
    )
    saved = []
    save = Backup.save
    monkeypatch.setattr(
        Backup, "save", lambda self, m, epoch: saved.append(epoch) or save(self, m, epoch)
    )
    run_dir = run_killed_after_epoch(tmp_path, index=2, backup_interval=35.0)
    assert saved == [2] and Backup(run_dir / "backup").epochs() == [2]
    assert (
        len(read_json(run_dir / "summary.json")["history"]["loss"]) == 2
    )  # written with the backup
    monkeypatch.undo()
    model = fresh_model()
    result = train(model, DATA, config(tmp_path, run_name="r", resume=True))
    # Epoch 3 was not backed up: the resume runs it again, and every epoch is there once.
    np.testing.assert_allclose(result.history["loss"], uninterrupted.history["loss"], rtol=1e-6)
    assert_tensorboard_matches(run_dir, result.history, EPOCHS)
    assert_same_weights(model, reference_model)


def test_resumed_tensorboard_curves_equal_an_uninterrupted_runs(tmp_path, killed, reference):
    uninterrupted, _ = reference
    copy_run(killed, tmp_path)
    result = train(fresh_model(), DATA, config(tmp_path, run_name="r", resume=True))
    expected = epoch_curves(uninterrupted.run_dir)
    resumed = epoch_curves(result.run_dir)
    assert set(resumed) == set(expected)
    for key, events in expected.items():
        assert [s for s, _ in resumed[key]] == [s for s, _ in events], key
        np.testing.assert_allclose(
            [v for _, v in resumed[key]], [v for _, v in events], rtol=1e-6, err_msg=str(key)
        )


@pytest.mark.parametrize(
    "name, torn",
    [
        ("epoch-0.state", b""),  # the weights the record names
        ("training_metadata.json", b'{"epo'),
    ],
)
def test_resume_survives_a_truncated_backup(tmp_path, killed, reference, name, torn):
    uninterrupted, reference_model = reference
    run_dir = copy_run(killed, tmp_path)
    (run_dir / "backup" / name).write_bytes(torn)
    model = fresh_model()
    result = train(model, DATA, config(tmp_path, run_name="r", resume=True))
    # The unreadable backup is dropped: the run starts over and runs every epoch.
    assert result.summary["epochs_run"] == EPOCHS
    assert result.summary["finished"] is True
    np.testing.assert_allclose(
        result.history["learning_rate"], uninterrupted.history["learning_rate"], rtol=1e-6
    )
    np.testing.assert_allclose(result.history["loss"], uninterrupted.history["loss"], rtol=1e-6)
    assert_same_weights(model, reference_model)
    assert_tensorboard_matches(run_dir, result.history, EPOCHS)


def test_resume_after_a_kill_between_the_backups_two_files_repeats_no_epoch(
    tmp_path, reference, monkeypatch
):
    uninterrupted, reference_model = reference
    original = backup_module.write_json
    metadata_writes = []

    def write_json(path, obj):
        if pathlib.Path(path).name == "record.json":
            metadata_writes.append(obj)
            if len(metadata_writes) == 2:  # epoch 2's weights are already on disk
                raise KeyboardInterrupt
        return original(path, obj)

    with monkeypatch.context() as patch:
        patch.setattr(backup_module, "write_json", write_json)
        with pytest.raises(KeyboardInterrupt):
            train(fresh_model(), DATA, config(tmp_path, run_name="r"))
    model = fresh_model()
    result = train(model, DATA, config(tmp_path, run_name="r", resume=True))
    np.testing.assert_allclose(result.history["loss"], uninterrupted.history["loss"], rtol=1e-6)
    assert_same_weights(model, reference_model)


def test_fresh_run_under_an_existing_name_starts_over(tmp_path, killed, reference):
    uninterrupted, _ = reference
    run_dir = copy_run(killed, tmp_path)  # 2 epochs, their TensorBoard events and a backup
    assert (run_dir / "backup").exists()
    result = train(fresh_model(), DATA, config(tmp_path, run_name="r", epochs=3))
    for key in HISTORY_KEYS:
        assert len(result.history[key]) == 3, key
    # Epoch 1 again, from fresh weights at eta: not a continuation of the old run.
    np.testing.assert_allclose(result.history["loss"], uninterrupted.history["loss"][:3], rtol=1e-6)
    np.testing.assert_allclose(result.history["learning_rate"][0], ETA, rtol=1e-6)
    assert read_json(run_dir / "summary.json")["history"] == result.history
    assert_tensorboard_matches(run_dir, result.history, 3)
    assert not (run_dir / "backup").exists()


def test_zero_epochs_evaluates_the_untrained_model_and_draws_no_curves(tmp_path):
    result = train(fresh_model(), DATA, config(tmp_path, run_name="zero", epochs=0))
    assert result.history == {}
    assert result.diverged is None
    summary = read_json(tmp_path / "zero" / "summary.json")
    assert summary["epochs_run"] == 0
    assert summary["seconds_per_epoch"] is None
    assert summary["finished"] is True
    assert summary["history"] == {}
    final = summary["final"]
    assert set(final) == {"train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc"}
    assert final["train_acc"] < 0.6  # untrained: near chance, 0.25
    assert final["train_loss"] == pytest.approx(math.log(NUM_CLASSES), rel=0.5)
    assert not (tmp_path / "zero" / "curves.png").exists()
    assert not (tmp_path / "zero" / "backup").exists()


def test_gradcheck_every_epoch_records_a_small_error_per_epoch(tmp_path):
    model = build_mlp([4], NUM_CLASSES, adapt=DATA.train.x, seed=0)
    result = train(model, DATA, config(tmp_path, run_name="g", epochs=2, gradcheck_every=1))
    errors = result.history["grad_rel_error"]
    assert len(errors) == 2
    assert all(0 <= e < 1e-6 for e in errors)
    assert sorted(tensorboard(tmp_path / "g" / "train", "epoch_grad_rel_error")) == [
        (0, pytest.approx(errors[0], rel=1e-5)),
        (1, pytest.approx(errors[1], rel=1e-5)),
    ]


def test_gradcheck_every_other_epoch_keeps_history_lists_one_entry_per_epoch(tmp_path):
    model = build_mlp([4], NUM_CLASSES, adapt=DATA.train.x, seed=0)
    result = train(model, DATA, config(tmp_path, run_name="g", epochs=2, gradcheck_every=2))
    assert len(result.history["grad_rel_error"]) == len(result.history["loss"]) == 2


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"eta": 0.0}, "eta must be positive"),
        ({"eta": -0.1}, "eta must be positive"),
        ({"momentum": 1.0}, r"momentum must be in \[0, 1\), got 1.0"),
        ({"momentum": -0.1}, "momentum must be in"),
        ({"schedule": "step"}, "schedule must be one of exp, cyclic, cosine, constant, got 'step'"),
        ({"decay": 0.0}, "decay must be in"),
        ({"eta_min": 0.1}, r"eta_min must be in \(0, eta\]"),
        ({"step_size": 0}, "step_size must be a positive"),
        ({"epochs": -1}, "epochs must be 0 or more, got -1"),
        ({"batch_size": 0}, "batch size must be a positive integer, got 0"),
        ({"steps_per_execution": 0}, "steps_per_execution must be positive"),
        ({"divergence_factor": 1.0}, "divergence factor must exceed 1"),
        ({"gradcheck_every": -1}, "gradcheck_every must be 0 or more"),
        ({"resume": True}, "resume.*run.name"),
        ({"save": "model.h5"}, "must end in .keras, got model.h5"),
        ({"validation_freq": 0}, "validation_freq must be a positive integer or a list of epochs"),
        ({"backup_interval": -1.0}, "backup_interval must be 0 or more seconds, got -1.0"),
        ({"validation_freq": ()}, "validation_freq must be"),
        ({"validation_freq": (2, 0)}, "validation_freq must be"),
        ({"validation_freq": 1.5}, "validation_freq must be"),
    ],
)
def test_config_validate_rejects_out_of_range_settings(overrides, match):
    bad = TrainConfig(**overrides)
    with pytest.raises(KbnError, match=match):
        bad.check()


def test_config_validate_accepts_the_defaults_and_edge_values():
    TrainConfig().check()
    TrainConfig(epochs=0, momentum=0.0, decay=1.0, eta_min=0.0864, step_size=1).check()
    TrainConfig(resume=True, run_name="r", save="out/m.keras").check()


def test_train_rejects_a_bad_config_before_creating_the_run_dir(tmp_path):
    with pytest.raises(KbnError, match="batch size"):
        train(fresh_model(), DATA, config(tmp_path / "logs", run_name="bad", batch_size=0))
    assert not (tmp_path / "logs").exists()


def test_resume_of_a_finished_run_gives_its_figures_and_leaves_it_alone(tmp_path, reference):
    uninterrupted, _ = reference
    run_dir = tmp_path / "ref"
    shutil.copytree(uninterrupted.run_dir, run_dir)
    files = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    model = fresh_model()
    before = model.get_weights()
    result = train(model, DATA, config(tmp_path, run_name="ref", resume=True))
    assert result.summary["final"] == uninterrupted.summary["final"]
    assert result.history == uninterrupted.history
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == files
    for kept, weight in zip(before, model.get_weights()):  # nothing trained
        np.testing.assert_array_equal(kept, weight)


@pytest.mark.parametrize(
    "model, data, change, named",
    [
        (None, None, {"eta": ETA / 2}, f"eta {ETA} -> {ETA / 2}"),
        (None, None, {"epochs": EPOCHS + 2}, f"epochs {EPOCHS} -> {EPOCHS + 2}"),
        (None, None, {"seed": 1}, "seed 0 -> 1"),
        ([8], None, {}, "network hidden [16] -> [8]"),
        (None, "fewer", {}, f"data train {NUM_TRAIN} -> {NUM_TRAIN - 10}"),
    ],
)
def test_resume_with_other_settings_data_or_network_is_refused_naming_them(
    tmp_path, reference, model, data, change, named
):
    uninterrupted, _ = reference
    run_dir = tmp_path / "ref"
    shutil.copytree(uninterrupted.run_dir, run_dir)
    files = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    model = build_mlp(model or [16], NUM_CLASSES, adapt=DATA.train.x, seed=0)
    if data == "fewer":
        train_split = Split(DATA.train.x[10:], DATA.train.y[10:])
        data = dataclasses.replace(DATA, train=train_split)
    with pytest.raises(KbnError, match="resumes only with the settings") as error:
        train(model, data or DATA, config(tmp_path, run_name="ref", resume=True, **change))
    assert named in str(error.value)
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == files


def test_resume_may_change_how_the_run_is_run_and_kept(tmp_path, reference):
    uninterrupted, _ = reference
    shutil.copytree(uninterrupted.run_dir, tmp_path / "ref")
    how = dict(steps_per_execution=3, backup_interval=60.0, plot_curves=False, verbose=1)
    result = train(fresh_model(), DATA, config(tmp_path, run_name="ref", resume=True, **how))
    assert result.summary["final"] == uninterrupted.summary["final"]


# --- one compiled model, many runs (a search's trials) -------------------------------------


def test_a_second_run_of_a_model_reuses_its_training_step_and_matches_a_fresh_model(tmp_path):
    model = fresh_model(lam=1e-3)
    initial = model.get_weights()
    cache = LoopCache()
    train(model, DATA, config(tmp_path, run_name="first", eta=0.2, epochs=2), loops=cache)
    loop = cache.get(model)
    traces = loop.tracing_counts()
    model.set_weights(initial)
    for layer in model.layers:
        if isinstance(layer, kbn.Dense):
            layer.lam = 1e-2
    second = train(
        model, DATA, config(tmp_path, run_name="second", eta=0.05, epochs=3), loops=cache
    )
    assert cache.get(model) is loop  # the same compiled loops,
    assert loop.tracing_counts() == traces  # not traced again
    fresh = train(
        fresh_model(lam=1e-2), DATA, config(tmp_path, run_name="fresh", eta=0.05, epochs=3)
    )
    np.testing.assert_allclose(second.history["learning_rate"], [0.05, 0.025, 0.0125], rtol=1e-6)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"):
        np.testing.assert_allclose(second.history[key], fresh.history[key], rtol=1e-5, err_msg=key)


def test_a_run_with_another_schedule_kind_or_momentum_compiles_a_new_step(tmp_path):
    model = fresh_model()
    cache = LoopCache()
    train(model, DATA, config(tmp_path, run_name="exp", epochs=1), loops=cache)
    loops = cache.get(model)
    train(
        model,
        DATA,
        config(tmp_path, run_name="constant", schedule="constant", epochs=1),
        loops=cache,
    )
    assert cache.get(model) is not loops
    loops = cache.get(model)
    result = train(
        model,
        DATA,
        config(tmp_path, run_name="constant2", schedule="constant", eta=0.01, epochs=1),
        loops=cache,
    )
    assert cache.get(model) is loops
    assert result.history["learning_rate"] == [pytest.approx(0.01)]
    train(
        model,
        DATA,
        config(tmp_path, run_name="momentum", schedule="constant", momentum=0.5, epochs=1),
        loops=cache,
    )
    assert cache.get(model) is not loops


def test_without_a_loop_cache_every_run_traces_its_own_loop(tmp_path):
    model = fresh_model()
    cache = LoopCache()
    train(model, DATA, config(tmp_path, run_name="kept", epochs=1), loops=cache)
    train(model, DATA, config(tmp_path, run_name="own", epochs=1))  # no cache: a loop of its own
    assert cache.get(model) is not None and LoopCache().get(model) is None


# Each setting traced into the loop, and a changed value for it.
CHANGED_TRACED_SETTINGS = {
    "schedule": lambda: "constant",
    "momentum": lambda: 0.5,
    "label_smoothing": lambda: 0.2,
    "mixup": lambda: 0.4,
    "optimizer": lambda: keras.optimizers.Adam(0.01),
    "steps_per_execution": lambda: 3,
}


def test_every_traced_setting_is_known_to_the_loop_reuse():
    assert set(CHANGED_TRACED_SETTINGS) == set(kbn.training.TRACED)


@pytest.mark.parametrize("name", sorted(CHANGED_TRACED_SETTINGS))
def test_changing_a_traced_setting_trains_as_a_fresh_model_with_it(tmp_path, name):
    model = fresh_model()
    initial = model.get_weights()
    cache = LoopCache()
    train(model, DATA, config(tmp_path, run_name="before", epochs=1), loops=cache)
    model.set_weights(initial)
    changed = {name: CHANGED_TRACED_SETTINGS[name]()}
    again = train(model, DATA, config(tmp_path, run_name="after", epochs=2, **changed), loops=cache)
    fresh = train(
        fresh_model(),
        DATA,
        config(tmp_path, run_name="fresh", epochs=2, **{name: CHANGED_TRACED_SETTINGS[name]()}),
    )
    plain = train(fresh_model(), DATA, config(tmp_path, run_name="plain", epochs=2))
    np.testing.assert_allclose(again.history["loss"], fresh.history["loss"], rtol=1e-5)
    if name != "steps_per_execution":  # the same steps in other calls: the same numbers
        assert not np.allclose(again.history["loss"], plain.history["loss"], rtol=1e-5)


def test_training_after_the_fixed_stages_matches_kerass_own_train_step(tmp_path, monkeypatch):
    split = train(fresh_model(lam=1e-3), DATA, config(tmp_path, run_name="split"))
    assert kbn.training.loop.split_fixed_stages(fresh_model()) is not None
    monkeypatch.setattr(kbn.training.loop, "split_fixed_stages", lambda model: None)
    whole = train(fresh_model(lam=1e-3), DATA, config(tmp_path, run_name="whole"))
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(split.history[key], whole.history[key], rtol=1e-5, err_msg=key)
    for key, value in whole.summary["final"].items():
        assert split.summary["final"][key] == pytest.approx(value, rel=1e-5), key
    assert split.history["accuracy"][-1] > 0.5  # it learnt, in both


def test_after_train_the_models_own_fit_trains_on_the_data_it_is_given(tmp_path):
    model = fresh_model()
    train(model, DATA, config(tmp_path, run_name="kbn", epochs=1))
    history = model.fit(DATA.val.x, DATA.val.y, batch_size=20, epochs=1, verbose=0)
    assert len(DATA.val.x) // 20 == 5
    # Keras's own step, one per batch of the data given, after kbn's STEPS_PER_EPOCH steps.
    assert model.optimizer.iterations.numpy() == STEPS_PER_EPOCH + 5
    assert np.isfinite(history.history["loss"][0])


# --- the caller's callbacks and optimizer, the progress bar -------------------------------


class RecordLogs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(dict(logs))


def test_user_callbacks_see_the_validation_metrics_of_every_epoch(tmp_path, reference):
    uninterrupted, _ = reference
    record = RecordLogs()
    train(fresh_model(), DATA, config(tmp_path, run_name="r"), callbacks=[record])
    assert len(record.epochs) == EPOCHS
    np.testing.assert_allclose(
        [e["val_loss"] for e in record.epochs], uninterrupted.history["val_loss"], rtol=1e-6
    )
    np.testing.assert_allclose(
        [e["loss"] for e in record.epochs], uninterrupted.history["loss"], rtol=1e-6
    )


@pytest.mark.parametrize("freq, validated", [(2, [2, 4, 5]), ((1, 3), [1, 3, 5])])
def test_validation_freq_validates_those_epochs_and_the_last(
    tmp_path, reference, monkeypatch, freq, validated
):
    uninterrupted, _ = reference
    record = RecordLogs()
    evaluated = []
    evaluate = kbn.training.loop.TrainingLoop.evaluate
    monkeypatch.setattr(
        kbn.training.loop.TrainingLoop,
        "evaluate",
        lambda self, x, y, b: evaluated.append(len(x)) or evaluate(self, x, y, b),
    )
    result = train(
        fresh_model(),
        DATA,
        config(tmp_path, run_name="r", epochs=5, validation_freq=freq),
        callbacks=[record],
    )
    # The initial loss, each validated epoch, then the final training and test figures: the
    # validation split is not evaluated again at the end.
    assert evaluated == [NUM_TRAIN] + [NUM_VAL] * len(validated) + [NUM_TRAIN, NUM_TEST]
    assert [i + 1 for i, e in enumerate(record.epochs) if "val_loss" in e] == validated
    val = result.history["val_loss"]
    assert [i + 1 for i, v in enumerate(val) if v is not None] == validated and len(val) == 5
    # The training is untouched: the same losses as the run that validates every epoch.
    np.testing.assert_allclose(
        result.history["loss"][:EPOCHS], uninterrupted.history["loss"], rtol=1e-6
    )
    events = tensorboard(result.run_dir / "validation", "epoch_loss")
    assert [step + 1 for step, _ in sorted(events)] == validated
    # The last epoch's validation is the run's final one.
    assert result.summary["final"]["val_loss"] == val[-1]
    assert result.summary["final"]["val_acc"] == result.history["val_accuracy"][-1]


class ZeroWeightsAtTheEnd(keras.callbacks.Callback):
    def on_train_end(self, logs=None):
        for variable in self.model.trainable_variables:
            variable.assign(keras.ops.zeros_like(variable))


def test_final_metrics_are_measured_again_when_a_callback_changed_the_weights_after_the_last_epoch(
    tmp_path,
):
    model = fresh_model()
    result = train(model, DATA, config(tmp_path, run_name="r"), callbacks=[ZeroWeightsAtTheEnd()])
    zeroed = model.evaluate(DATA.val.x, DATA.val.y, verbose=0, return_dict=True)
    # All-zero weights give every class the same logit: a loss of log 4, not the last epoch's.
    assert result.summary["final"]["val_loss"] == pytest.approx(math.log(NUM_CLASSES), rel=1e-5)
    assert result.summary["final"]["val_loss"] == pytest.approx(zeroed["loss"], rel=1e-5)
    assert result.history["val_loss"][-1] < 1.0


def test_early_stopping_on_val_loss_ends_the_run_as_stopped_early(tmp_path):
    # No epoch improves val_loss by 10: it stops after the second, as soon as it can.
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=0, min_delta=10)
    result = train(fresh_model(), DATA, config(tmp_path, run_name="r", epochs=8), callbacks=[stop])
    assert result.summary["epochs_run"] == 2
    assert len(result.history["val_loss"]) == 2
    assert result.summary["finished"] and result.summary["stopped_early"]
    assert result.diverged is None


def test_model_checkpoint_saves_the_best_model_by_validation_accuracy(tmp_path):
    path = tmp_path / "best.keras"
    checkpoint = keras.callbacks.ModelCheckpoint(
        str(path), monitor="val_accuracy", save_best_only=True
    )
    result = train(fresh_model(), DATA, config(tmp_path, run_name="r"), callbacks=[checkpoint])
    saved = keras.models.load_model(path)
    best = max(result.history["val_accuracy"])
    assert saved.evaluate(DATA.val.x, DATA.val.y, verbose=0, return_dict=True)[
        "accuracy"
    ] == pytest.approx(best, abs=1e-6)


def test_an_optimizer_given_in_the_config_or_compiled_by_the_caller_is_used(tmp_path):
    given = keras.optimizers.Adam(0.01)
    model = fresh_model()
    train(model, DATA, config(tmp_path, run_name="given", epochs=1, optimizer=given))
    assert model.optimizer is given and given.iterations.numpy() == STEPS_PER_EPOCH
    model = fresh_model()
    own = keras.optimizers.RMSprop(0.001)
    model.compile(optimizer=own, loss=model.loss)
    result = train(model, DATA, config(tmp_path, run_name="own", epochs=1))
    assert model.optimizer is own and own.iterations.numpy() == STEPS_PER_EPOCH
    assert result.summary["config"]["optimizer"] is None
    assert read_json(tmp_path / "given" / "summary.json")["config"]["optimizer"] == "Adam"


def test_the_progress_bar_counts_mini_batches(tmp_path, capfd):
    train(
        fresh_model(),
        DATA,
        config(tmp_path, run_name="r", epochs=1, verbose=1, steps_per_execution=4),
    )
    out = capfd.readouterr().out
    assert f"{STEPS_PER_EPOCH}/{STEPS_PER_EPOCH}" in out  # 10 mini-batches of 32, in calls of 4
    assert "ms/step" in out
    # The last call runs 2 mini-batches, not 4: the bar never shows 12/10.
    shown = [
        int(done) for done, of in re.findall(r"(\d+)/(\d+)\b", out) if int(of) == STEPS_PER_EPOCH
    ]
    assert shown and max(shown) == STEPS_PER_EPOCH


def test_train_compiles_a_keras_model_never_compiled(tmp_path):
    inputs = keras.Input((4, 4, 1))
    x = keras.layers.Rescaling(1 / 255)(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(NUM_CLASSES)(x))
    assert not hasattr(model, "optimizer")  # Keras sets it at compile
    result = train(model, DATA, config(tmp_path, run_name="plain", epochs=2))
    assert isinstance(model.optimizer, kbn.optim.SGD)
    assert result.history["loss"][1] < result.history["loss"][0]


def test_a_resumed_mixup_run_mixes_as_the_uninterrupted_one(tmp_path):
    # MixUp's weights are drawn from (seed, epoch, mini-batch), not from a stream a kill would lose.
    uninterrupted = train(fresh_model(), DATA, config(tmp_path, run_name="whole", mixup=0.4))
    run_killed_after_epoch(tmp_path, index=1, run_name="killed", mixup=0.4)
    resumed = train(
        fresh_model(), DATA, config(tmp_path, run_name="killed", mixup=0.4, resume=True)
    )
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(
            resumed.history[key], uninterrupted.history[key], rtol=1e-6, err_msg=key
        )
