"""Tests for kbn.bench and kbn.bench.numpy_reference: the three implementations time the same
network (the report's) on the same images, ratios are to NumPy, and the NumPy reference is a
correct, learning implementation of the report's network."""

import json

import numpy as np
import pytest

from kbn import KbnError
from kbn.bench import epoch_time as bench
from kbn.bench.epoch_time import epoch_times, format_result
from kbn.bench.numpy_reference import NumpyMLP, gradient_check, native_child, run
from kbn.cli import main


@pytest.mark.slow
def test_every_implementation_is_timed_and_ratios_are_to_numpy():
    result = epoch_times(train_size=300, val_size=100, epochs=2, repeats=2)
    assert list(result.seconds_per_epoch) == ["numpy", "keras", "kbn"]
    for name, runs in result.runs.items():
        assert len(runs) == 2 and all(s > 0 for s in runs)
        assert result.seconds_per_epoch[name] == pytest.approx(np.median(runs))
        assert result.ratio_to_numpy[name] == pytest.approx(
            result.seconds_per_epoch[name] / result.seconds_per_epoch["numpy"]
        )
    assert result.ratio_to_numpy["numpy"] == 1.0
    assert (result.train_size, result.val_size) == (300, 100)
    table = format_result(result)
    assert "| kbn |" in table and "| numpy | " in table and "1.00x" in table


def test_keras_runs_again_after_kbn_turned_on_op_determinism_without_a_global_seed():
    import tensorflow as tf

    tf.random.set_seed(None)  # as in `kbn bench`: no test fixture's seed
    result = epoch_times(train_size=200, epochs=2, repeats=2, implementations=["kbn", "keras"])
    assert [len(runs) for runs in result.runs.values()] == [2, 2]


def test_without_numpy_there_are_no_ratios(tmp_path):
    result = epoch_times(train_size=200, epochs=2, repeats=1, implementations=["kbn"])
    assert list(result.seconds_per_epoch) == ["kbn"] and result.ratio_to_numpy == {}
    assert "| kbn |" in format_result(result) and "| - |" in format_result(result)


@pytest.mark.slow
def test_bench_reads_any_data_spec(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "d.npz",
        x_train=rng.integers(0, 256, (150, 8, 8, 3), dtype=np.uint8),
        y_train=rng.integers(0, 10, 150),
    )
    result = epoch_times(
        f"npz:{tmp_path / 'd.npz'}",
        train_size=100,
        val_size=50,
        epochs=2,
        repeats=1,
        implementations=["numpy"],
    )
    assert (result.train_size, result.val_size) == (100, 50)


def test_data_with_more_classes_than_the_seed_net_is_a_user_error(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "d.npz",
        x_train=rng.integers(0, 256, (60, 4, 4, 1), dtype=np.uint8),
        y_train=np.arange(60) % 12,
    )
    with pytest.raises(KbnError, match="network \\(the report's\\) has 10 classes"):
        epoch_times(f"npz:{tmp_path / 'd.npz'}", train_size=40, val_size=20, epochs=2, repeats=1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"implementations": ["torch"]}, "unknown implementation 'torch'"),
        ({"epochs": 1}, "at least 2 epochs"),
        ({"repeats": 0}, "repeats must be at least 1"),
    ],
)
def test_bad_settings_raise_kbn_error(kwargs, match):
    with pytest.raises(KbnError, match=match):
        epoch_times(train_size=100, **kwargs)


@pytest.mark.slow
def test_kbn_bench_json_is_the_result(capsys):
    status = main(
        [
            "bench",
            "--train-size",
            "200",
            "--epochs",
            "2",
            "--repeats",
            "1",
            "--only",
            "numpy,kbn",
            "--json",
        ]
    )
    assert status == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(figures["seconds_per_epoch"]) == {"numpy", "kbn"}
    assert figures["train_size"] == 200 and figures["repeats"] == 1


def test_kbn_runs_the_given_net_once_per_precision_each_a_row(monkeypatch):
    built = []
    real_build_mlp = bench.build_mlp

    def recording_build_mlp(hidden, *args, precision="float32", **kwargs):
        built.append((tuple(hidden), precision))
        return real_build_mlp(hidden, *args, precision=precision, **kwargs)

    monkeypatch.setattr(bench, "build_mlp", recording_build_mlp)
    result = epoch_times(
        train_size=200,
        epochs=2,
        repeats=2,
        implementations=["kbn"],
        hidden=(12, 6),
        precisions=("float32", "mixed_bfloat16"),
    )
    assert built == [((12, 6), "float32"), ((12, 6), "mixed_bfloat16")] * 2  # interleaved
    assert list(result.seconds_per_epoch) == ["kbn", "kbn mixed_bfloat16"]
    assert result.precisions == {"kbn": "float32", "kbn mixed_bfloat16": "mixed_bfloat16"}
    assert result.hidden == (12, 6) and all(len(runs) == 2 for runs in result.runs.values())
    assert result.ratio_to_float32["kbn"] == 1.0
    assert result.ratio_to_float32["kbn mixed_bfloat16"] == pytest.approx(
        result.seconds_per_epoch["kbn"] / result.seconds_per_epoch["kbn mixed_bfloat16"]
    )
    table = format_result(result)
    assert (
        "net 12-6 with BN" in table
        and "| kbn | mixed_bfloat16 |" in table
        and "| kbn | float32 |" in table
    )


@pytest.mark.slow
def test_numpy_and_keras_keep_the_seed_net_and_the_table_says_so():
    result = epoch_times(
        train_size=200, epochs=2, repeats=1, implementations=["numpy", "kbn"], hidden=(12,)
    )
    assert list(result.seconds_per_epoch) == ["numpy", "kbn"] and result.ratio_to_float32 == {
        "kbn": 1.0
    }
    assert "kbn: net 12 with BN; numpy: the report's net 50-30 with BN" in format_result(result)


def test_an_unknown_precision_is_a_user_error():
    with pytest.raises(KbnError, match="precision must be one of"):
        epoch_times(train_size=100, precisions=("float8",))


def test_kbn_bench_hidden_and_precision_reach_the_json(capsys):
    status = main(
        [
            "bench",
            "--train-size",
            "200",
            "--epochs",
            "2",
            "--repeats",
            "1",
            "--only",
            "kbn",
            "--hidden",
            "8",
            "--precision",
            "float32,mixed_bfloat16",
            "--json",
        ]
    )
    assert status == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(figures["seconds_per_epoch"]) == {"kbn", "kbn mixed_bfloat16"}
    assert (
        figures["hidden"] == [8] and figures["precisions"]["kbn mixed_bfloat16"] == "mixed_bfloat16"
    )
    assert set(figures["ratio_to_float32"]) == {"kbn", "kbn mixed_bfloat16"}


def test_numpy_reference_backward_matches_finite_differences():
    assert gradient_check() < 1e-6


def test_numpy_reference_learns_a_separable_problem():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (3, 20))
    y = rng.integers(0, 3, 600)
    x = (centres[y] + rng.normal(0, 1, (600, 20))).astype(np.float32)
    net = NumpyMLP((16,), 3, lam=0.0, seed=0, input_dim=20)
    before = net.accuracy(x, y)
    for epoch in range(5):
        net.train_epoch(x, y, 0.05, batch_size=50, rng=np.random.default_rng(epoch))
    assert before < 0.7 < 0.95 <= net.accuracy(x, y)


def test_numpy_reference_protocol_records_the_validation_curve_and_times_both_passes():
    result = run(data="synthetic", train_size=300, val_size=200, epochs=3, verbose=False)
    assert len(result["val_costs"]) == len(result["val_accs"]) == 3
    assert result["val_accs"][-1] == result["val_acc"]  # the last epoch's is the final one
    assert result["val_costs"][-1] == pytest.approx(result["val_cost"])
    assert result["seconds_per_epoch_with_validation"] > result["seconds_per_epoch"] > 0


def test_native_child_runs_without_the_settings_that_pin_openblas(monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.setenv("OPENBLAS_L2_SIZE", "1048576")
    code = (
        "import json, os; print('noise'); "
        "print(json.dumps([os.environ.get(k) for k in "
        "('OPENBLAS_CORETYPE', 'OPENBLAS_L2_SIZE', 'EXTRA')]))"
    )
    assert native_child(["-c", code], "the check", EXTRA="1") == [None, None, "1"]


def test_a_failing_native_child_names_what_failed_and_its_error():
    with pytest.raises(RuntimeError, match=r"(?s)the check failed: .*ZeroDivisionError"):
        native_child(["-c", "1 / 0"], "the check")
