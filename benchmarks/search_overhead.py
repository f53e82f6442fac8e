"""Where a search's time goes: the training passes, and each per-trial and per-epoch cost.

    python benchmarks/search_overhead.py --data folder:PATH [--trials 50] [--epochs 10]
        [--validation-freq N] [--backup-interval SECONDS] [--json]

Runs the report's search (`tuning.search`, one process, no pruning, the
search's own validation and backup settings unless given) with
timers around each piece a trial runs besides its training steps (the fixed
input stages, the initial loss, the validations, the backups,
summary.json, TensorBoard, the oracle's report, the final metrics, the
saved model, the HParams session) and measures, before and after it in the
same process, the report's network's training pass alone: `kbn.train` with no
validation images, the median epoch of 2 to 6, as `kbn bench --only kbn`.
The bar is the search's time over 500 such passes (50 trials x 10 epochs).

Each figure is given twice: wall seconds, and CPU seconds of this process
(all its threads). On a machine that other jobs share, a niced search waits
for the CPU in spells, which inflates wall time and nothing else; CPU time
is the steadier measure of the work done, wall time the one a user waits.
"""

import argparse
import collections
import contextlib
import json
import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import keras

import kbn
import kbn.training.trainer as training
from kbn.training.callbacks import Backup, EpochTensorBoard, SaveModel
from kbn.training.callbacks import run_log as run_log_module
from kbn.training.loop import TrainingLoop
from kbn.training.loop_cache import LoopCache
from tuning import tuner as tuner_lib
from tuning.search import SearchConfig, search

SPENT = collections.defaultdict(lambda: [0.0, 0.0, 0])  # piece -> [wall, cpu, calls]
_STATE = {"in_fit": False}


@contextlib.contextmanager
def timed(piece):
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        entry = SPENT[piece]
        entry[0] += time.perf_counter() - wall
        entry[1] += time.process_time() - cpu
        entry[2] += 1


def wrap(owner, name, piece):
    """Time every call of `owner.name` as `piece` (a str, or a function of the call's args)."""
    original = getattr(owner, name)

    def timed_call(*args, **kwargs):
        with timed(piece(*args) if callable(piece) else piece):
            return original(*args, **kwargs)

    setattr(owner, name, timed_call)


def evaluation_kind(loop, x, y, batch_size):
    if _STATE["in_fit"]:
        return "validation, in fit"
    return "initial loss (1,000 images)" if len(x) == 1000 else "final metrics"


def install_timers():
    original_fit = keras.Model.fit

    def fit(self, *args, **kwargs):
        _STATE["in_fit"] = True
        try:
            with timed("fit (training passes and what runs inside it)"):
                return original_fit(self, *args, **kwargs)
        finally:
            _STATE["in_fit"] = False

    keras.Model.fit = fit
    wrap(TrainingLoop, "evaluate", evaluation_kind)
    wrap(TrainingLoop, "inputs", "fixed input stages")
    wrap(Backup, "save", "backup")
    wrap(
        run_log_module,
        "write_json",
        lambda path, obj: "summary.json, final" if obj.get("finished") else "summary.json, in fit",
    )
    wrap(SaveModel, "on_train_end", "model.keras")
    wrap(training, "write_hparams", "HParams session")
    wrap(LoopCache, "compile", "compile (or reuse the loop)")
    wrap(EpochTensorBoard, "on_epoch_end", "TensorBoard, every epoch")
    wrap(EpochTensorBoard, "on_train_batch_end", "TensorBoard, every call")
    wrap(tuner_lib.ReportEpochs, "on_epoch_end", "oracle report, each validated epoch")
    wrap(tuner_lib.KbnTuner, "_model_for", "model for the trial (build or reset)")
    wrap(tuner_lib, "train", "kbn.train, whole")


class _EpochClock(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.wall, self.cpu = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = (time.perf_counter(), time.process_time())

    def on_epoch_end(self, epoch, logs=None):
        self.wall.append(time.perf_counter() - self._start[0])
        self.cpu.append(time.process_time() - self._start[1])


def training_pass(dataset, epochs=6):
    """The report's network's training epoch, no validation: median (wall, cpu) of epochs 2 to
    `epochs`."""
    no_val = kbn.Dataset(
        dataset.name,
        dataset.train,
        kbn.data.Split(dataset.train.x[:0], dataset.train.y[:0]),
        None,
        dataset.class_names,
    )
    model = kbn.build_mlp(
        [50, 30], dataset.num_classes, center=False, scale=False, adapt=dataset.train.x, seed=0
    )
    clock = _EpochClock()
    with tempfile.TemporaryDirectory() as logdir:
        kbn.train(
            model,
            no_val,
            kbn.TrainConfig(epochs=epochs, logdir=logdir, verbose=0, plot_curves=False),
            callbacks=[clock],
        )
    return statistics.median(clock.wall[1:]), statistics.median(clock.cpu[1:])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--train-size", type=int, default=10000)
    parser.add_argument("--val-size", type=int, default=10000)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument(
        "--validation-freq",
        type=int,
        default=None,
        help="trials validate every N epochs (default: the search's, the last epoch)",
    )
    parser.add_argument(
        "--backup-interval",
        type=float,
        default=SearchConfig.backup_interval,
        help="seconds between a trial's backups (0: every epoch)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    dataset = kbn.load_data(args.data, train_size=args.train_size, val_size=args.val_size, seed=0)
    before = training_pass(dataset)
    install_timers()
    with tempfile.TemporaryDirectory() as directory:
        wall, cpu = time.perf_counter(), time.process_time()
        result = search(
            dataset,
            SearchConfig(
                trials=args.trials,
                epochs=args.epochs,
                directory=directory,
                validation_freq=args.validation_freq,
                backup_interval=args.backup_interval,
                verbose=0,
            ),
        )
        search_wall, search_cpu = time.perf_counter() - wall, time.process_time() - cpu
    spent = {piece: list(entry) for piece, entry in SPENT.items()}  # the search's alone
    after = training_pass(dataset)
    epochs = args.trials * args.epochs
    pass_wall = epochs * (before[0] + after[0]) / 2
    pass_cpu = epochs * (before[1] + after[1]) / 2

    inside_fit = [
        k
        for k in spent
        if k.startswith(("validation", "backup", "summary.json, in fit", "TensorBoard", "oracle"))
    ]
    fit_wall, fit_cpu, _ = spent.pop("fit (training passes and what runs inside it)")
    train_wall, train_cpu, _ = spent.pop("kbn.train, whole")
    model_for = spent.pop("model for the trial (build or reset)")
    rows = dict(spent)
    rows["training steps and Keras's fit loop"] = [
        fit_wall - sum(spent[k][0] for k in inside_fit),
        fit_cpu - sum(spent[k][1] for k in inside_fit),
        epochs,
    ]
    inside_train = [k for k in rows if k not in inside_fit]
    rows["rest of kbn.train"] = [
        train_wall
        - fit_wall
        - sum(rows[k][0] for k in inside_train if k != "training steps and Keras's fit loop"),
        train_cpu
        - fit_cpu
        - sum(rows[k][1] for k in inside_train if k != "training steps and Keras's fit loop"),
        0,
    ]
    rows["model for the trial (build or reset)"] = model_for
    rows["KerasTuner and the search outside kbn.train"] = [
        search_wall - train_wall - model_for[0],
        search_cpu - train_cpu - model_for[1],
        0,
    ]
    figures = {
        "search_seconds": search_wall,
        "search_cpu_seconds": search_cpu,
        "training_pass": {
            "wall": (before[0] + after[0]) / 2,
            "cpu": (before[1] + after[1]) / 2,
            "before": before,
            "after": after,
        },
        "ratio_wall": search_wall / pass_wall,
        "ratio_cpu": search_cpu / pass_cpu,
        "best": result.best,
        "epochs_trained": result.epochs_trained,
        "pieces": {k: {"wall": v[0], "cpu": v[1], "calls": v[2]} for k, v in rows.items()},
    }
    print(
        f"search: {search_wall:.1f} s wall, {search_cpu:.1f} s CPU; {epochs} training passes: "
        f"{pass_wall:.1f} s wall, {pass_cpu:.1f} s CPU "
        f"(epoch {before[0]:.3f}/{after[0]:.3f} s before/after); "
        f"ratio {figures['ratio_wall']:.2f} wall, {figures['ratio_cpu']:.2f} CPU; "
        f"best {result.best}"
    )
    print("| piece | calls | wall s | CPU s | CPU share |")
    print("|---|---|---|---|---|")
    for name, (w, c, n) in sorted(rows.items(), key=lambda kv: -kv[1][1]):
        print(f"| {name} | {n or ''} | {w:.1f} | {c:.1f} | {c / search_cpu:.1%} |")
    if args.json:
        print(json.dumps(figures, default=float))


if __name__ == "__main__":
    main()
