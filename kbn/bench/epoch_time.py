"""Seconds per epoch: plain NumPy, Keras's own layers and `fit`, and kbn in each precision.

    SPEC or synthetic pixels -> the same (N, H, W, C) uint8 images for all three
      numpy   kbn.bench.numpy_reference.NumpyMLP: forward and hand backward in NumPy
      keras   Keras's Dense, BatchNormalization and ReLU, `fit`, SGD with momentum
      kbn     build_mlp + kbn.train, the seconds_per_epoch of its summary.json,
              once per precision ("kbn" in float32, "kbn mixed_bfloat16", ...)
    -> per row: the median seconds per epoch over the epochs after the first
       (tracing and warm-up), the median of that over `repeats` runs, its
       ratio to NumPy and, for kbn's rows, to kbn in float32.

NumPy and Keras run the network of the report (DD2424 assignment 3: k-layer
networks with batch normalization), 3072-50-30-10 with BN; kbn runs the net
`hidden` names (the report's network by default, or e.g. the cifar10-mlp preset's
[2048, 1024, 512]) in each of `precisions`. The runs are interleaved (numpy,
keras, kbn float32, kbn mixed_bfloat16, numpy, ...) so that a burst of load
on a shared machine lands on all of them alike. NumPy runs in a child
process without `OPENBLAS_CORETYPE` and `OPENBLAS_L2_SIZE`: some machines
pin OpenBLAS to an old kernel (Haswell) for the sake of old builds, which
slows a current NumPy; the reference is NumPy at its best, and the result
names the kernel that ran (threadpoolctl). Each epoch does the same
work everywhere: one shuffled pass of mini-batch SGD with momentum over the
training images, and with `val_size > 0` the cost and accuracy of the
validation images.
"""

import dataclasses
import pathlib
import statistics
import tempfile
import time
from typing import Any

import keras
import numpy as np

from kbn.bench.numpy_reference import NumpyMLP, load_arrays, native_child, preprocess
from kbn.data import Dataset, Split
from kbn.errors import KbnError
from kbn.nn.builder import build_mlp
from kbn.nn.precision import check as check_precision
from kbn.training import TrainConfig, train
from kbn.training.callbacks import EpochTimer

IMPLEMENTATIONS = ("numpy", "keras", "kbn")
# The report's network, 3072-50-30-10 with batch norm (hidden widths and classes; 3072
# inputs on CIFAR-10), with the report's best eta and lambda, its decay and momentum:
# what NumPy and Keras run, and kbn by default.
SEED_NET: dict[str, Any] = dict(
    hidden=(50, 30), classes=10, eta=0.0864, decay=0.8, lam=1.8245e-4, momentum=0.9
)


@dataclasses.dataclass
class BenchResult:
    """What `epoch_times` measured.

    Attributes:
        data: the SPEC, or "synthetic".
        train_size, val_size: images per epoch, trained on and evaluated.
        epochs, repeats, batch_size: the protocol.
        seconds_per_epoch: {row: median over the repeats}; the rows are the
            implementations, kbn's once per precision ("kbn" is float32,
            "kbn mixed_bfloat16" another).
        ratio_to_numpy: {row: seconds_per_epoch / NumPy's}, when NumPy ran.
        runs: {row: [each repeat's median seconds per epoch]}.
        blas: the BLAS kernel NumPy's runs used, e.g. "openblas SkylakeX",
            or None when NumPy did not run.
        hidden: the hidden widths of kbn's net (NumPy and Keras: the report's network's).
        precisions: {row: its precision}.
        ratio_to_float32: {kbn row: kbn float32's seconds_per_epoch / the
            row's}, the speed-up of each precision, when kbn ran in float32.
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
    hidden: tuple = SEED_NET["hidden"]
    precisions: dict = dataclasses.field(default_factory=dict)
    ratio_to_float32: dict = dataclasses.field(default_factory=dict)


def row_name(implementation, precision="float32"):
    """The result's row for an implementation run in a precision: "kbn", "kbn mixed_bfloat16"."""
    return implementation if precision == "float32" else f"{implementation} {precision}"


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
    hidden=SEED_NET["hidden"],
    precisions=("float32",),
):
    """Time an epoch in each implementation (kbn: in each precision), on the same images.

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
        hidden: the hidden widths of kbn's net, with BN after each; NumPy and
            Keras keep the report's network.
        precisions: kbn's precisions (`kbn.nn.precision.PRECISIONS`), each a
            row of its own, interleaved with the others.

    Returns:
        a `BenchResult`.
    """
    unknown = sorted(set(implementations) - set(IMPLEMENTATIONS))
    if unknown:
        raise KbnError(
            f"unknown implementation {unknown[0]!r}; known: {', '.join(IMPLEMENTATIONS)}"
        )
    if epochs < 2:
        raise KbnError(
            f"the benchmark needs at least 2 epochs (the first is warm-up), got {epochs}"
        )
    if repeats < 1:
        raise KbnError(f"repeats must be at least 1, got {repeats}")
    precisions = tuple(dict.fromkeys(check_precision(p) for p in precisions))
    if not precisions:
        raise KbnError("the benchmark needs at least one precision")
    hidden = tuple(int(w) for w in hidden)
    if any(w < 1 for w in hidden):
        raise KbnError(f"hidden widths must be positive integers. Received: hidden={list(hidden)}")
    x, y, x_val, y_val = load_arrays(data, train_size, val_size, seed, data_dir)
    if max(y.max(), y_val.max(initial=0)) >= SEED_NET["classes"]:
        raise KbnError(
            f"{data}: the benchmark's network (the report's) has 10 classes, the data has more"
        )
    runners = {
        "numpy": lambda inputs, precision: _numpy_epochs_native(inputs, epochs, batch_size, seed),
        "keras": lambda inputs, precision: _keras_epochs(inputs, epochs, batch_size, seed),
        "kbn": lambda inputs, precision: _kbn_epochs(
            inputs, epochs, batch_size, seed, hidden, precision
        ),
    }
    rows = [
        (name, p)
        for name in implementations
        for p in (precisions if name == "kbn" else ("float32",))
    ]
    runs = {row_name(*row): [] for row in rows}
    blas = None
    with tempfile.TemporaryDirectory() as folder:
        arrays = pathlib.Path(folder) / "arrays.npz"
        np.savez(arrays, x=x, y=y, x_val=x_val, y_val=y_val)
        for _ in range(repeats):
            for name, precision in rows:
                inputs = arrays if name == "numpy" else (x, y, x_val, y_val)
                seconds = runners[name](inputs, precision)
                if name == "numpy":
                    seconds, blas = seconds
                runs[row_name(name, precision)].append(statistics.median(seconds[1:]))
    seconds_per_epoch = {name: statistics.median(values) for name, values in runs.items()}
    reference = seconds_per_epoch.get("numpy")
    ratios = {name: s / reference for name, s in seconds_per_epoch.items()} if reference else {}
    kbn_float32 = seconds_per_epoch.get("kbn")
    kbn_rows = [row_name("kbn", p) for p in precisions] if "kbn" in implementations else []
    speedups = (
        {row: kbn_float32 / seconds_per_epoch[row] for row in kbn_rows} if kbn_float32 else {}
    )
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
        hidden=hidden,
        precisions={row_name(*row): row[1] for row in rows},
        ratio_to_float32=speedups,
    )


def format_result(result):
    """A markdown table of a `BenchResult`, one row per implementation and precision."""
    seed_net = "-".join(str(w) for w in SEED_NET["hidden"])
    net = "-".join(str(w) for w in result.hidden)
    other = [name for name in result.seconds_per_epoch if not name.startswith("kbn")]
    nets = (
        f"net {net} with BN"
        if net == seed_net or not other
        else (f"kbn: net {net} with BN; {', '.join(other)}: the report's net {seed_net} with BN")
    )
    lines = [
        f"{nets}, {result.train_size} images ({result.data}), batch {result.batch_size}"
        + (f", {result.val_size} validation images" if result.val_size else ""),
        f"median of epochs 2..{result.epochs}, median of {result.repeats} runs"
        + (f"; NumPy's BLAS: {result.blas}" if result.blas else ""),
        "",
        "| implementation | precision | s/epoch | vs NumPy | speed-up vs kbn float32 | runs |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, seconds in result.seconds_per_epoch.items():
        ratio = result.ratio_to_numpy.get(name)
        speedup = result.ratio_to_float32.get(name)
        runs = ", ".join(f"{s:.3f}" for s in result.runs[name])
        lines.append(
            f"| {name.split()[0]} | {result.precisions.get(name, 'float32')} | {seconds:.3f} | "
            f"{f'{ratio:.2f}x' if ratio else '-'} | "
            f"{f'{speedup:.2f}x' if speedup else '-'} | {runs} |"
        )
    return "\n".join(lines)


def _numpy_epochs_native(arrays, epochs, batch_size, seed):
    """`_numpy_epochs` in a child process with OpenBLAS free to pick its kernel.

    Returns:
        (seconds per epoch, "openblas SkylakeX"-like name of the kernel).
    """
    code = (
        "import json, sys; from kbn.bench.epoch_time import _numpy_child; "
        "print(json.dumps(_numpy_child(*sys.argv[1:])))"
    )
    result = native_child(
        ["-c", code, str(arrays), str(epochs), str(batch_size), str(seed)], "the NumPy reference"
    )
    return result["seconds"], result["blas"]


def _numpy_child(arrays, epochs, batch_size, seed):
    from threadpoolctl import threadpool_info

    with np.load(arrays) as saved:
        x, y, x_val, y_val = (saved[k] for k in ("x", "y", "x_val", "y_val"))
    seconds = _numpy_epochs((x, y, x_val, y_val), int(epochs), int(batch_size), int(seed))
    blas = next(
        (
            f"{i['internal_api']} {i.get('architecture') or ''}".strip()
            for i in threadpool_info()
            if i["user_api"] == "blas"
        ),
        "unknown",
    )
    return {"seconds": seconds, "blas": blas}


def _numpy_epochs(data, epochs, batch_size, seed):
    x, y, x_val, y_val = data
    xt, xv = preprocess(x, x_val)
    net = NumpyMLP(
        SEED_NET["hidden"],
        SEED_NET["classes"],
        lam=SEED_NET["lam"],
        seed=seed,
        input_dim=xt.shape[1],
    )
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
    """The report's network as a Keras user writes it: built-in layers, `fit` as it comes."""
    x, y, x_val, y_val = data
    # fit's shuffle is a random op, which TensorFlow's op determinism (turned on
    # for the process by kbn's runs) refuses without a global seed.
    keras.utils.set_random_seed(seed)
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
            keras.layers.Dense(
                width,
                use_bias=False,
                kernel_initializer=keras.initializers.HeNormal(seed + i),
                kernel_regularizer=keras.regularizers.L2(lam),
            ),
            keras.layers.BatchNormalization(epsilon=1e-3),
            keras.layers.ReLU(),
        ]
    layers.append(
        keras.layers.Dense(SEED_NET["classes"], kernel_regularizer=keras.regularizers.L2(lam))
    )
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
        x,
        y,
        batch_size=batch_size,
        epochs=epochs,
        verbose=0,
        callbacks=[timer],
        validation_data=(x_val, y_val) if len(x_val) else None,
    )
    return timer.seconds


def _kbn_epochs(data, epochs, batch_size, seed, hidden=SEED_NET["hidden"], precision="float32"):
    x, y, x_val, y_val = data
    dataset = Dataset(
        name="bench",
        train=Split(x, y),
        val=Split(x_val, y_val),
        test=None,
        class_names=tuple(str(k) for k in range(SEED_NET["classes"])),
    )
    model = build_mlp(
        hidden, SEED_NET["classes"], adapt=x, lam=SEED_NET["lam"], seed=seed, precision=precision
    )
    with tempfile.TemporaryDirectory() as logdir:
        config = TrainConfig(
            eta=SEED_NET["eta"],
            decay=SEED_NET["decay"],
            momentum=SEED_NET["momentum"],
            epochs=epochs,
            batch_size=batch_size,
            seed=seed,
            logdir=logdir,
            run_name="bench",
            verbose=0,
            precision=precision,
        )
        result = train(model, dataset, config)
    return result.history["seconds"]
