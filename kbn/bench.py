"""Seconds per epoch of the seed net: plain NumPy, Keras's own layers and `fit`, and kbn.

    SPEC or synthetic pixels -> the same (N, H, W, C) uint8 images for all three
      numpy   kbn.numpy_reference.NumpyMLP: forward and hand backward in NumPy
      keras   Keras's Dense, BatchNormalization and ReLU, `fit`, SGD with momentum
      kbn     build_mlp + kbn.train, the seconds_per_epoch of its summary.json
    -> per implementation: the median seconds per epoch over the epochs after
       the first (tracing and warm-up), the median of that over `repeats`
       runs, and its ratio to NumPy.

The runs are interleaved (numpy, keras, kbn, numpy, ...) so that a burst of
load on a shared machine lands on all three alike. NumPy runs in a child
process without `OPENBLAS_CORETYPE` and `OPENBLAS_L2_SIZE`: some machines
pin OpenBLAS to an old kernel (Haswell) for the sake of old builds, which
slows a current NumPy; the reference is NumPy at its best, and the result
names the kernel that ran (threadpoolctl). Each epoch does the same
work everywhere: one shuffled pass of mini-batch SGD with momentum over the
training images, and with `val_size > 0` the cost and accuracy of the
validation images.
"""

import dataclasses
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import keras
import numpy as np

from kbn.callbacks import EpochTimer
from kbn.data import Dataset, Split
from kbn.errors import KbnError
from kbn.model import build_mlp
from kbn.numpy_reference import NumpyMLP, load_arrays, preprocess
from kbn.training import TrainConfig, train

IMPLEMENTATIONS = ("numpy", "keras", "kbn")
SEED_NET = dict(hidden=(50, 30), classes=10, eta=0.0864, decay=0.8, lam=1.8245e-4, momentum=0.9)


@dataclasses.dataclass
class BenchResult:
    """What `epoch_times` measured.

    Attributes:
        data: the SPEC, or "synthetic".
        train_size, val_size: images per epoch, trained on and evaluated.
        epochs, repeats, batch_size: the protocol.
        seconds_per_epoch: {implementation: median over the repeats}.
        ratio_to_numpy: {implementation: seconds_per_epoch / NumPy's}, when
            NumPy ran.
        runs: {implementation: [each repeat's median seconds per epoch]}.
        blas: the BLAS kernel NumPy's runs used, e.g. "openblas SkylakeX",
            or None when NumPy did not run.
    """

    data: str
    train_size: int
    val_size: int
    epochs: int
    repeats: int
    batch_size: int
    seconds_per_epoch: dict
    ratio_to_numpy: dict
    runs: dict
    blas: str | None = None


def epoch_times(
    data="synthetic",
    *,
    train_size=10_000,
    val_size=0,
    epochs=6,
    repeats=3,
    batch_size=100,
    implementations=IMPLEMENTATIONS,
    data_dir=None,
    seed=0,
):
    """Time an epoch of the seed net in each implementation, on the same images.

    Args:
        data: a kbn data SPEC, or "synthetic" for random CIFAR-10-shaped
            pixels and labels (nothing to load).
        train_size: training images per epoch.
        val_size: validation images evaluated at the end of each epoch.
        epochs: epochs per run, >= 2: the first is left out of the median.
        repeats: runs per implementation.
        batch_size: examples per SGD step.
        implementations: any of "numpy", "keras", "kbn".
        data_dir: where the SPEC's files are.
        seed: seeds the split, the weights and the shuffles.

    Returns:
        a `BenchResult`.
    """
    unknown = sorted(set(implementations) - set(IMPLEMENTATIONS))
    if unknown:
        raise KbnError(f"unknown implementation {unknown[0]!r}; known: {', '.join(IMPLEMENTATIONS)}")
    if epochs < 2:
        raise KbnError(f"the benchmark needs at least 2 epochs (the first is warm-up), got {epochs}")
    if repeats < 1:
        raise KbnError(f"repeats must be at least 1, got {repeats}")
    x, y, x_val, y_val = load_arrays(data, train_size, val_size, seed, data_dir)
    if max(y.max(), y_val.max(initial=0)) >= SEED_NET["classes"]:
        raise KbnError(f"{data}: the benchmark's seed net has 10 classes, the data has more")
    runners = {"numpy": _numpy_epochs_native, "keras": _keras_epochs, "kbn": _kbn_epochs}
    runs = {name: [] for name in implementations}
    blas = None
    with tempfile.TemporaryDirectory() as folder:
        arrays = pathlib.Path(folder) / "arrays.npz"
        np.savez(arrays, x=x, y=y, x_val=x_val, y_val=y_val)
        for _ in range(repeats):
            for name in implementations:
                inputs = arrays if name == "numpy" else (x, y, x_val, y_val)
                seconds = runners[name](inputs, epochs, batch_size, seed)
                if name == "numpy":
                    seconds, blas = seconds
                runs[name].append(statistics.median(seconds[1:]))
    seconds_per_epoch = {name: statistics.median(values) for name, values in runs.items()}
    reference = seconds_per_epoch.get("numpy")
    ratios = {name: s / reference for name, s in seconds_per_epoch.items()} if reference else {}
    return BenchResult(
        data=data,
        train_size=len(x),
        val_size=len(x_val),
        epochs=epochs,
        repeats=repeats,
        batch_size=batch_size,
        seconds_per_epoch=seconds_per_epoch,
        ratio_to_numpy=ratios,
        runs=runs,
        blas=blas,
    )


def format_result(result):
    """A markdown table of a `BenchResult`, one row per implementation."""
    lines = [
        f"seed net {'-'.join(str(w) for w in SEED_NET['hidden'])} with BN, {result.train_size} "
        f"images ({result.data}), batch {result.batch_size}"
        + (f", {result.val_size} validation images" if result.val_size else ""),
        f"median of epochs 2..{result.epochs}, median of {result.repeats} runs"
        + (f"; NumPy's BLAS: {result.blas}" if result.blas else ""),
        "",
        "| implementation | s/epoch | vs NumPy | runs |",
        "| --- | --- | --- | --- |",
    ]
    for name, seconds in result.seconds_per_epoch.items():
        ratio = result.ratio_to_numpy.get(name)
        runs = ", ".join(f"{s:.3f}" for s in result.runs[name])
        lines.append(f"| {name} | {seconds:.3f} | {f'{ratio:.2f}x' if ratio else '-'} | {runs} |")
    return "\n".join(lines)


def _numpy_epochs_native(arrays, epochs, batch_size, seed):
    """`_numpy_epochs` in a child process with OpenBLAS free to pick its kernel.

    OpenBLAS reads `OPENBLAS_CORETYPE` when it loads, so only a new process
    can run without it.

    Returns:
        (seconds per epoch, "openblas SkylakeX"-like name of the kernel).
    """
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    code = (
        "import json, sys; from kbn.bench import _numpy_child; "
        "print(json.dumps(_numpy_child(*sys.argv[1:])))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(arrays), str(epochs), str(batch_size), str(seed)],
        env=env, capture_output=True, text=True, check=False,
    )
    if done.returncode:
        raise RuntimeError(f"the NumPy reference failed: {done.stderr.strip()[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["seconds"], result["blas"]


def _numpy_child(arrays, epochs, batch_size, seed):
    from threadpoolctl import threadpool_info

    with np.load(arrays) as saved:
        x, y, x_val, y_val = (saved[k] for k in ("x", "y", "x_val", "y_val"))
    seconds = _numpy_epochs((x, y, x_val, y_val), int(epochs), int(batch_size), int(seed))
    blas = next((f"{i['internal_api']} {i.get('architecture') or ''}".strip()
                 for i in threadpool_info() if i["user_api"] == "blas"), "unknown")
    return {"seconds": seconds, "blas": blas}


def _numpy_epochs(data, epochs, batch_size, seed):
    x, y, x_val, y_val = data
    xt, xv = preprocess(x, x_val)
    net = NumpyMLP(SEED_NET["hidden"], SEED_NET["classes"], l2=SEED_NET["lam"], seed=seed, input_dim=xt.shape[1])
    rng = np.random.default_rng([seed, 1])
    seconds = []
    for epoch in range(epochs):
        start = time.perf_counter()
        eta = SEED_NET["eta"] * SEED_NET["decay"] ** epoch
        net.train_epoch(xt, y, eta, batch_size, SEED_NET["momentum"], rng)
        if len(xv):
            net.evaluate(xv, y_val)
        seconds.append(time.perf_counter() - start)
    return seconds


def _keras_epochs(data, epochs, batch_size, seed):
    """The seed net as a Keras user writes it: built-in layers, `fit` as it comes."""
    x, y, x_val, y_val = data
    hidden, lam = SEED_NET["hidden"], SEED_NET["lam"]
    flat = x.reshape(len(x), -1) / 255.0
    layers = [
        keras.Input(x.shape[1:]),
        keras.layers.Flatten(),
        keras.layers.Rescaling(1 / 255),
        keras.layers.Normalization(mean=flat.mean(axis=0), variance=np.ones(flat.shape[1])),
    ]
    for i, width in enumerate(hidden):
        layers += [
            keras.layers.Dense(width, use_bias=False, kernel_initializer=keras.initializers.HeNormal(seed + i),
                               kernel_regularizer=keras.regularizers.L2(lam)),
            keras.layers.BatchNormalization(epsilon=1e-3),
            keras.layers.ReLU(),
        ]
    layers.append(keras.layers.Dense(SEED_NET["classes"], kernel_regularizer=keras.regularizers.L2(lam)))
    model = keras.Sequential(layers)
    steps = -(-len(x) // batch_size)
    rate = keras.optimizers.schedules.ExponentialDecay(
        SEED_NET["eta"], steps, SEED_NET["decay"], staircase=True
    )
    model.compile(
        keras.optimizers.SGD(rate, momentum=SEED_NET["momentum"]),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    timer = EpochTimer()
    model.fit(
        x, y, batch_size=batch_size, epochs=epochs, verbose=0, callbacks=[timer],
        validation_data=(x_val, y_val) if len(x_val) else None,
    )
    return timer.seconds


def _kbn_epochs(data, epochs, batch_size, seed):
    x, y, x_val, y_val = data
    dataset = Dataset(
        name="bench", train=Split(x, y), val=Split(x_val, y_val), test=None,
        class_names=tuple(str(k) for k in range(SEED_NET["classes"])),
    )
    model = build_mlp(SEED_NET["hidden"], SEED_NET["classes"], adapt=x, l2=SEED_NET["lam"], seed=seed)
    with tempfile.TemporaryDirectory() as logdir:
        config = TrainConfig(
            eta=SEED_NET["eta"], decay=SEED_NET["decay"], momentum=SEED_NET["momentum"],
            epochs=epochs, batch_size=batch_size, seed=seed, logdir=logdir, run_name="bench",
            verbose=0,
        )
        result = train(model, dataset, config)
    return result.history["seconds"]
