"""Tests for kbn.lr_find and `kbn lr-find`: eta rises geometrically step by step, each step's
loss is recorded before its update, the test stops when the loss blows up, the model comes
back untouched, the rules suggest an eta inside the range, the JSON and the figure, and bad
input ends in one `error:` line, exit status 2 and nothing written."""

import contextlib
import io
import json
import math
import os

import keras
import numpy as np
import pytest
import synthetic

import kbn
from kbn import Dataset, KbnError, LrFindConfig, Split, build_mlp, lr_find
from kbn.cli import build_parser, main
from kbn.lr_range.config import MIN_STEPS
from kbn.lr_range.suggest import RULES, blow_up, smooth, suggest
from kbn.optim.schedules import ExponentialRange
from kbn.training.order import epoch_order

NUM_TRAIN = 320
NUM_CLASSES = 3
BATCH_SIZE = 16
STEPS_PER_EPOCH = NUM_TRAIN // BATCH_SIZE  # 20
LAM = 1e-3
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_dataset(n=NUM_TRAIN):
    x, y = synthetic.make_images(n, 0, NUM_CLASSES)
    empty = Split(x[:0], y[:0].astype(np.int64))
    return Dataset("synthetic", Split(x, y.astype(np.int64)), empty, None, ("a", "b", "c"))


DATA = make_dataset()


def fresh_model(seed=0):
    return build_mlp([8], NUM_CLASSES, adapt=DATA.train.x, seed=seed, lam=LAM)


def config(**overrides):
    return LrFindConfig(**{"batch_size": BATCH_SIZE, **overrides})


@pytest.fixture(scope="module")
def full_range(tmp_path_factory):
    """One test from eta 1e-5 to 1e3 over three epochs, its figure written: the tiny net blows
    up on the way."""
    keras.utils.set_random_seed(0)
    plot = tmp_path_factory.mktemp("figure") / "out" / "curve.png"
    settings = config(eta_range=(1e-5, 1e3), steps=3 * STEPS_PER_EPOCH, plot=str(plot))
    return plot, lr_find(fresh_model(), DATA, settings)


# --- the curve ------------------------------------------------------------------------------


def test_exponential_range_rises_geometrically_then_holds_eta_max():
    schedule = ExponentialRange(1e-4, 1.0, 5)
    values = keras.ops.convert_to_numpy(schedule(np.arange(7)))
    np.testing.assert_allclose(values, [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 1.0, 1.0], rtol=1e-5)
    assert ExponentialRange.from_config(schedule.get_config()).get_config() == {
        "eta_min": 1e-4,
        "eta_max": 1.0,
        "steps": 5,
    }


def test_curve_etas_rise_geometrically_from_eta_min_to_eta_max_over_one_epoch():
    result = lr_find(fresh_model(), DATA, config(eta_range=(1e-4, 1e-2), batch_size=8))
    etas = np.asarray(result.etas)
    assert result.stopped_at is None
    assert len(etas) == result.steps == NUM_TRAIN // 8 == 40  # the default: one epoch
    assert etas[0] == pytest.approx(1e-4, rel=1e-5)
    assert etas[-1] == pytest.approx(1e-2, rel=1e-5)
    np.testing.assert_allclose(etas[1:] / etas[:-1], 10 ** (2 / 39), rtol=1e-4)


def test_default_steps_are_at_least_the_minimum_going_on_into_the_next_epoch():
    short = lr_find(fresh_model(), DATA, config(eta_range=(1e-4, 1e-3), batch_size=64))
    assert NUM_TRAIN // 64 == 5 < MIN_STEPS == short.steps == len(short.losses)


def test_first_loss_is_the_first_mini_batch_of_train_before_any_update():
    model = fresh_model()
    result = lr_find(model, DATA, config(eta_range=(1e-4, 1e-3), seed=7))
    index = epoch_order(7, 0, NUM_TRAIN)[:BATCH_SIZE].numpy()  # kbn.train's first mini-batch
    x, y = DATA.train.x[index], DATA.train.y[index]
    logits = model(x, training=True)  # BatchNorm on the batch's own statistics, as in training
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, logits)
    expected = float(cross_entropy) + float(sum(model.losses))  # plus the L2 penalty
    assert float(sum(model.losses)) > 0
    assert result.losses[0] == pytest.approx(expected, rel=1e-5)


def test_each_step_trains_at_its_eta():
    # One mini-batch holds the whole split: each step sees the same examples, so the loss
    # moves only through the updates. At eta 1e-9 it stays put; from 0.01 to 0.1 it falls.
    whole = config(batch_size=NUM_TRAIN, steps=MIN_STEPS, momentum=0.0, smoothing=0.0)
    tiny = lr_find(fresh_model(), DATA, LrFindConfig(**{**vars(whole), "eta_range": (1e-9, 2e-9)}))
    moving = lr_find(fresh_model(), DATA, LrFindConfig(**{**vars(whole), "eta_range": (0.01, 0.1)}))
    assert np.ptp(tiny.losses) < 1e-5
    assert tiny.losses[0] == pytest.approx(moving.losses[0], rel=1e-6)  # same start
    assert moving.losses[-1] < moving.losses[0] - 0.05
    assert np.all(np.diff(moving.losses) < 0)  # full-batch gradient descent at a small eta


def test_the_test_stops_at_the_first_step_whose_loss_blows_up(full_range):
    _, result = full_range
    assert result.stopped_at is not None
    assert len(result.etas) == len(result.losses) == result.stopped_at + 1 < result.steps
    last, best = result.smoothed[-1], min(result.smoothed[:-1])
    assert not math.isfinite(result.losses[-1]) or last > 4.0 * best
    assert all(value <= 4.0 * best for value in result.smoothed[:-1])
    assert result.etas[-1] > 1.0  # the tiny net with batch norm trains on below eta 1


def test_the_model_comes_back_with_its_weights_and_optimizer_state_exactly():
    model = fresh_model()
    model.fit(DATA.train.x[:64], DATA.train.y[:64], batch_size=32, epochs=1, verbose=0)
    weights = [w.copy() for w in model.get_weights()]  # moving statistics included
    optimizer = model.optimizer
    state = [v.numpy().copy() for v in optimizer.variables]  # iterations, momenta
    lr_find(model, DATA, config(steps=2 * STEPS_PER_EPOCH))
    assert model.optimizer is optimizer
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights()))
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(state, optimizer.variables))
    assert int(optimizer.iterations.numpy()) == 2


# --- the suggestion -------------------------------------------------------------------------


def test_suggestions_lie_inside_the_range_and_below_the_smoothed_minimum(full_range):
    _, result = full_range
    lowest = result.etas[int(np.nanargmin(result.smoothed))]
    assert set(result.suggestions) == set(RULES)
    for rule, eta in result.suggestions.items():
        assert eta is not None, rule
        assert result.etas[0] <= eta < lowest, rule
    assert result.suggestion == result.suggestions["min/10"]
    assert result.rule == "min/10"


ETAS = np.logspace(-5, 1, 61)  # ten points a decade


def made_up_curve():
    """Flat at 2, falling to 1 around eta 1e-2 (a logistic in log eta), rising past eta 1."""
    x = np.log10(ETAS)
    return 1.0 + 1.0 / (1.0 + np.exp(4 * (x + 2))) + np.maximum(0.0, x) ** 2


def test_steepest_is_where_the_curve_falls_fastest_against_log_eta():
    assert suggest(ETAS, made_up_curve(), "steepest") == pytest.approx(1e-2, rel=1e-6)


def test_min_over_ten_is_a_tenth_of_the_eta_at_the_minimum():
    curve = made_up_curve()
    lowest = ETAS[int(np.argmin(curve))]
    assert 1e-1 <= lowest <= 1.0
    assert suggest(ETAS, curve, "min/10") == pytest.approx(lowest / 10)


def test_no_suggestion_when_the_loss_never_falls():
    rising = 1.0 + np.linspace(0.0, 1.0, len(ETAS))
    assert suggest(ETAS, rising, "steepest") is None
    assert suggest(ETAS, rising, "min/10") is None


def test_smoothing_is_the_bias_corrected_moving_average():
    np.testing.assert_allclose(smooth([3.0, 3.0, 3.0], 0.98), [3.0, 3.0, 3.0])
    np.testing.assert_allclose(smooth([0.0, 1.0], 0.5), [0.0, 2 / 3])
    np.testing.assert_allclose(smooth([1.0, 5.0], 0.0), [1.0, 5.0])


def test_blow_up_is_the_first_non_finite_loss_or_the_first_past_the_factor():
    assert blow_up([2.0, 1.0, 3.9, 4.1], [2.0, 1.0, 3.9, 4.1], 4.0) == 3
    assert blow_up([2.0, math.nan, 1.0], [2.0, 2.0, 1.0], 4.0) == 1
    assert blow_up([2.0, 1.0, 3.0], [2.0, 1.0, 3.0], 4.0) is None


# --- the figure and the JSON ----------------------------------------------------------------


def test_the_figure_is_written_where_the_config_says(full_range):
    path, result = full_range
    assert result.plot_path == path
    assert path.read_bytes().startswith(PNG_SIGNATURE)


def test_json_holds_the_curve_and_the_suggestion_and_is_strict_json(full_range):
    _, result = full_range
    out = json.loads(json.dumps(result.as_json(), allow_nan=False))
    assert out["suggestion"] == result.suggestion
    assert out["rule"] == "min/10" and out["rule_text"]
    assert out["steps"] == 3 * STEPS_PER_EPOCH
    assert out["steps_run"] == out["stopped_at"] + 1 == len(out["curve"]["eta"])
    assert out["stopped_at_eta"] == out["curve"]["eta"][-1]
    assert {k: len(v) for k, v in out["curve"].items()} == dict.fromkeys(
        ("eta", "loss", "smoothed"), out["steps_run"]
    )
    assert set(out["suggestions"]) == set(RULES)
    assert 0 < out["step_seconds"] <= out["seconds"]


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"eta_range": (1.0, 0.1)}, "eta_range must rise"),
        ({"eta_range": (0.0, 1.0)}, "eta_range must rise"),
        ({"eta_range": (1e-5, math.inf)}, "eta_range must rise"),
        ({"steps": MIN_STEPS - 1}, f"steps must be at least {MIN_STEPS}"),
        ({"rule": "valley"}, "rule must be one of min/10, steepest"),
        ({"smoothing": 1.0}, "smoothing must be in [0, 1)"),
        ({"stop_factor": 1.0}, "stop factor must exceed 1"),
        ({"plot": "curve.jpg"}, "must end in .png"),
    ],
)
def test_settings_out_of_range_raise_one_line_kbn_errors(settings, message):
    with pytest.raises(KbnError) as error:
        LrFindConfig(**settings).check()
    assert message in str(error.value) and "\n" not in str(error.value)


def test_lr_find_checks_its_config_before_it_copies_the_model():
    with pytest.raises(KbnError, match="eta_range must rise"):
        lr_find(keras.Sequential(), DATA, LrFindConfig(eta_range=(1.0, 0.1)))


def test_an_empty_training_split_is_refused():
    with pytest.raises(KbnError, match="training split is empty"):
        lr_find(fresh_model(), make_dataset(0), config())


# --- the command line -----------------------------------------------------------------------


def run_main(argv):
    """(exit status, stdout, stderr) of `main(argv)` in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    x, y = synthetic.make_images(NUM_TRAIN + 50, 0, NUM_CLASSES)
    path = tmp_path_factory.mktemp("data") / "data.npz"
    np.savez(path, x_train=x, y_train=y)
    return path


TINY = ["--val-size", "50", "--hidden", "8", "--batch-size", str(BATCH_SIZE)]


def test_cli_json_prints_the_curve_and_writes_the_figure(npz, tmp_path):
    path = tmp_path / "lr.png"
    status, stdout, stderr = run_main(
        ["lr-find", "--data", f"npz:{npz}", *TINY, "--plot", path, "--json"]
    )
    assert status == 0, stderr
    out = json.loads(stdout.strip().splitlines()[-1])
    assert out["steps"] == STEPS_PER_EPOCH
    assert out["curve"]["eta"][0] == pytest.approx(1e-5, rel=1e-5)
    assert out["plot"] == str(path) and path.read_bytes().startswith(PNG_SIGNATURE)
    assert out["suggestion"] is None or 1e-5 <= out["suggestion"] <= 10


def test_cli_prints_the_suggested_eta_with_its_rule(npz, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, stdout, stderr = run_main(["lr-find", "--data", f"npz:{npz}", *TINY, "--steps", "40"])
    assert status == 0, stderr
    assert "suggested eta: " in stdout and "(min/10: a tenth of the eta" in stdout
    assert "other rules: steepest " in stdout
    assert (tmp_path / "lr_find.png").read_bytes().startswith(PNG_SIGNATURE)  # the default


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--eta-range", "1:0.1"], "eta_range must rise"),
        (["--eta-range", "0:1"], "eta_range must rise"),
        (["--eta-range", "fast"], "expected LOW:HIGH"),
        (["--steps", str(MIN_STEPS - 1)], f"steps must be at least {MIN_STEPS}"),
        (["--rule", "valley"], "invalid choice"),
        (["--smoothing", "1"], "smoothing must be in [0, 1)"),
        (["--plot", "curve.jpg"], "must end in .png"),
        (["--preset", "nope"], "invalid choice"),
    ],
)
def test_cli_bad_input_is_one_error_line_exit_2_and_nothing_written(
    flags, message, npz, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    status, stdout, stderr = run_main(["lr-find", "--data", f"npz:{npz}", *TINY, *flags])
    assert status == 2, stderr
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert message in stderr
    assert stdout == "" and os.listdir(tmp_path) == []


def test_cli_bad_data_spec_exits_2_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, _, stderr = run_main(["lr-find", "--data", "npz:missing.npz"])
    assert status == 2 and stderr.startswith("error: ") and stderr.count("\n") == 1
    assert os.listdir(tmp_path) == []


def test_cli_preset_sets_the_network_and_batch_and_flags_override_it():
    parser = build_parser()
    argv = ["lr-find", "--data", "cifar10", "--preset", "cifar10-mlp", "--hidden", "64"]
    args = parser.parse_args(argv)
    args.apply_preset(args.preset)
    args = parser.parse_args(argv)
    assert args.hidden == [64]  # the flag given
    assert (args.batch_size, args.precision, args.whiten, args.lam) == (250, "auto", 0.1, 5e-4)
    assert args.val_size == 5000


def test_cli_and_api_refuse_the_same_range_with_the_same_message(npz):
    _, _, stderr = run_main(["lr-find", "--data", f"npz:{npz}", "--eta-range", "1:0.1"])
    with pytest.raises(KbnError) as error:
        LrFindConfig(eta_range=(1.0, 0.1)).check()
    assert stderr.strip() == f"error: {error.value}"


def test_lr_find_is_part_of_the_api():
    assert kbn.lr_find is lr_find
    assert {"lr_find", "LrFindConfig", "LrFindResult"} <= set(kbn.__all__)
