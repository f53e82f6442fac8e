"""HParams: a run's settings beside its own curves, for TensorBoard's HParams dashboard.

    run_dir/                 one HParams session: the run's settings and its status
        train/, validation/  Keras's TensorBoard curves: epoch_loss, epoch_accuracy

The session is written in the run folder itself, the folder that holds the
`train/` and `validation/` runs, so the dashboard finds each run's metrics
(validation `epoch_accuracy` and `epoch_loss`, the last epoch's values) in
the run's own curves: every run under one `--logdir`, `kbn train`, a search
trial or a `kbn reproduce` study, compares with every other. A run that
ended early says so in its `status` hparam; no metric value is ever written
here, so a stopped or diverged run shows only the epochs it really ran.

TensorBoard's HParams table shows five hparams at first, those whose
values differ between sessions before the others, each group in
alphabetical order; it takes "differ" from the experiment kbn writes. Eta,
lambda, the status and whatever a search varies are marked so: they come
first and are shown, where alphabetical order alone would show batch_norm,
batch_size, dropout, eta and flip.

>>> hparams = run_hparams(model, config)   # {"hidden": "50,30", "batch_norm": True, ...}
>>> write_hparams(run_dir, {**hparams, "round": 2}, "finished", compared=["round"])
"""

import numbers
import pathlib

import keras
import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api
from tensorboard.plugins.hparams import metadata, plugin_data_pb2

from kbn.nn.batch_norm import BatchNorm
from kbn.nn.builder import SMALL_INIT_STDDEV
from kbn.nn.dense import Dense
from kbn.nn.flip_averaging import is_flip_averaged
from kbn.nn.preprocessing import PrincipalComponents, Whitening

STATUSES = ("finished", "diverged", "stopped", "failed")

# First in every run's HParams table: the two values the report searches,
# and whether the run went to its end (a diverged run's metrics mislead).
FIRST = ("eta", "lam", "status")

# (group, tag): the group is the sub-run of the run folder that holds the tag.
METRICS = (
    ("validation", "epoch_accuracy", "validation accuracy"),
    ("validation", "epoch_loss", "validation loss"),
    ("train", "epoch_accuracy", "training accuracy"),
    ("train", "epoch_loss", "training loss"),
)

_EVENTS = "events.out.tfevents.*"


def run_hparams(model, config):
    """The settings that tell one run from another, from its model and `TrainConfig`.

    Args:
        model: a kbn model (`build_mlp`, or one loaded from a `.keras` file).
        config: the run's `kbn.TrainConfig`.

    Returns:
        A dict of plain values: `hidden` (widths as "50,30", "" for none),
        `batch_norm`, `init` ("he", "xavier", "small"; absent when the
        kernel initializer is none of kbn's), `eta`, `lam` (the first layer's
        lambda), `schedule`, `batch_size`, `dropout`, `flip`, `translate`,
        `whiten` (the ZCA epsilon, 0 for none), `pca` (the principal
        components kept, 0 for all inputs), `test_time_flip` (whether
        its inference-mode figures, validation included, average each image
        with its mirror: `kbn.nn.flip_averaging`) and `seed`.
    """
    dense = [layer for layer in model.layers if isinstance(layer, Dense)]
    dropout = [layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    translate = [
        layer.height_factor
        for layer in model.layers
        if isinstance(layer, keras.layers.RandomTranslation)
    ]
    values = {
        "hidden": ",".join(str(layer.units) for layer in dense[:-1]),
        "batch_norm": any(isinstance(layer, BatchNorm) for layer in model.layers),
        "init": _init_name(dense[0].kernel_initializer) if dense else None,
        "eta": config.eta,
        "lam": dense[0].lam if dense else 0.0,
        "schedule": config.schedule,
        "batch_size": config.batch_size,
        "dropout": max(dropout, default=0.0),
        "flip": any(isinstance(layer, keras.layers.RandomFlip) for layer in model.layers),
        # RandomTranslation keeps a factor as given: a float or (low, high).
        "translate": float(abs(_high(translate[0]))) if translate else 0.0,
        "whiten": max(
            (layer.epsilon for layer in model.layers if isinstance(layer, Whitening)), default=0.0
        ),
        "pca": max(
            (layer.components for layer in model.layers if isinstance(layer, PrincipalComponents)),
            default=0,
        ),
        "test_time_flip": is_flip_averaged(model),
        "seed": config.seed,
    }
    return {name: value for name, value in values.items() if value is not None}


def write_hparams(run_dir, hparams, status, compared=()):
    """Write the run's HParams session in `run_dir`, replacing an earlier one.

    The session holds `hparams` and `status` as hparams, and the experiment
    names the metrics the dashboard reads from the run's own curves
    (`METRICS`). Lists and tuples become comma-separated strings, None values
    are left out. The experiment lists `FIRST` (eta, lam, status) and
    `compared` first, marked as differing between sessions, which is what
    brings them first into TensorBoard's table and shows them; then the
    others; each group in alphabetical order, as TensorBoard sorts them.

    Args:
        run_dir: the run's folder, which holds (or will hold) `train/` and
            `validation/`.
        hparams: dict name -> bool, int, float, str, list or None.
        status: one of `STATUSES`: "finished", "diverged", "stopped" (ended
            early on purpose, e.g. by a search's pruning) or "failed".
        compared: names of the hparams that tell this run from the others
            it is compared with, besides `FIRST` (a search's searched
            values, round and trial id).

    Raises:
        ValueError: for an unknown status or a value of another type.
    """
    if status not in STATUSES:
        raise ValueError(
            f"status must be one of {', '.join(STATUSES)}. Received: status={status!r}"
        )
    values = {name: _plain(name, value) for name, value in hparams.items() if value is not None}
    values["status"] = status
    run_dir = pathlib.Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # Only this function writes events at the top of a run folder: a resumed
    # run's new session replaces the old one instead of standing beside it.
    for old in run_dir.glob(_EVENTS):
        old.unlink()
    first = {*FIRST, *compared} & set(values)
    writer = tf.summary.create_file_writer(str(run_dir))
    with writer.as_default():
        tf.summary.experimental.write_raw_pb(
            _experiment(sorted(values, key=lambda name: (name not in first, name)), first),
            step=0,
        )
        hparams_api.hparams(values, trial_id=run_dir.name)
    writer.close()


def _experiment(names, first):
    """`hparams_api.hparams_config`'s summary, with the hparams in `first` marked as differing.

    The public `HParam` has no say in `differs`, which TensorBoard computes
    only for an experiment it infers; kbn writes its own experiment (for the
    metrics' names), so it sets the flag itself.
    """
    summary = hparams_api.hparams_config_pb(
        hparams=[hparams_api.HParam(name) for name in names],
        metrics=[
            hparams_api.Metric(tag, group=group, display_name=label)
            for group, tag, label in METRICS
        ],
    )
    (value,) = summary.value
    experiment = metadata.parse_experiment_plugin_data(value.metadata.plugin_data.content)
    for info in experiment.hparam_infos:
        info.differs = info.name in first
    value.metadata.CopyFrom(
        metadata.create_summary_metadata(plugin_data_pb2.HParamsPluginData(experiment=experiment))
    )
    return summary.SerializeToString()


def _plain(name, value):
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    raise ValueError(f"hparam {name} must be a bool, number or string. Received: {value!r}")


def _high(factor):
    return factor[1] if isinstance(factor, (list, tuple)) else factor


def _init_name(initializer):
    """kbn's name for a kernel initializer (see `kbn.nn.builder.kernel_initializer`), or None."""
    if isinstance(initializer, keras.initializers.HeNormal):
        return "he"
    if isinstance(initializer, keras.initializers.GlorotNormal):
        return "xavier"
    if (
        isinstance(initializer, keras.initializers.RandomNormal)
        and initializer.stddev == SMALL_INIT_STDDEV
    ):
        return "small"
    return None
