"""Named recipes: a data split, a network and a training run that go together.

    kbn train --data folder:cifar10-jpeg/train --preset cifar10-mlp

A preset is plain settings for the three API calls, so a script can use one
as the CLI does and override any part:

    preset = get_preset("cifar10-mlp")
    data = load_data(spec, **preset.data)
    model = build_mlp(num_classes=data.num_classes, adapt=data.train.x, **preset.model)
    result = train(model, data, TrainConfig(**preset.train))
"""

import dataclasses
import types

from kbn.errors import KbnError


@dataclasses.dataclass(frozen=True)
class Preset:
    """Settings for `load_data`, `build_mlp` and `TrainConfig`.

    Attributes:
        name: what `--preset` takes.
        description: one line on what it is for and what it reaches.
        data: `load_data` keyword arguments (train_size, val_size).
        model: `build_mlp` keyword arguments.
        train: `TrainConfig` fields.
    """

    name: str
    description: str
    data: types.MappingProxyType
    model: types.MappingProxyType
    train: types.MappingProxyType


def _preset(
    name: str,
    description: str,
    *,
    data: dict[str, object],
    model: dict[str, object],
    train: dict[str, object],
) -> Preset:
    frozen = types.MappingProxyType
    return Preset(name, description, frozen(data), frozen(model), frozen(train))


PRESETS = {
    preset.name: preset
    for preset in (
        _preset(
            "report",
            "the report's network and protocol: [50, 30] with plain BN (no gamma, beta), "
            "eta 0.0864 decayed 0.8 per epoch",
            data={"train_size": 10000, "val_size": 10000},
            # The report's batch norm only normalises: its gradients are b and W
            # alone, no gamma or beta.
            model={
                "hidden": [50, 30],
                "batch_norm": True,
                "center": False,
                "scale": False,
                "init": "he",
                "lam": 1.8245e-4,
            },
            train={"eta": 0.0864, "schedule": "exp", "decay": 0.8, "epochs": 20, "batch_size": 100},
        ),
        _preset(
            "cifar10-mlp",
            "the best fully connected CIFAR-10 net found: 45k images, ZCA-whitened inputs, "
            "flips and shifts, their 400 leading principal components, wide BN net, label "
            "smoothing, test-time flip averaging, cosine eta, mixed bfloat16 where native",
            # 5,000 held-out images: a split whose standard error can tell
            # recipes apart (docs/results.md).
            data={"val_size": 5000},
            model={
                # The 400 principal components make the first layer several times
                # cheaper; the width that buys was right more often, paired on the same
                # held-out images at the full schedule (docs/results.md).
                "hidden": [3072, 1536, 768],
                "batch_norm": True,
                "init": "he",
                "lam": 5e-4,
                "whiten": 0.1,
                "pca": 400,
                "flip": True,
                "translate": 0.125,
                # Averaging each image's probabilities with its mirror's was right more
                # often than the image alone, paired on the same held-out images
                # (docs/guide/network.md#test-time-flip-averaging).
                "test_time_flip": True,
            },
            train={
                "eta": 0.1,
                "schedule": "cosine",
                "epochs": 140,
                "batch_size": 250,
                # Over the full schedule, paired on the same held-out images, the nets
                # trained against smoothed labels were right more often (docs/results.md);
                # 20-epoch runs cannot show it: smoothing pays late.
                "label_smoothing": 0.1,
                # mixed_bfloat16 where the CPU or GPU has it natively, else
                # float32 (kbn.nn.precision.best_available); --precision overrides.
                "precision": "auto",
            },
        ),
    )
}


def get_preset(name: str) -> Preset:
    """The `Preset` called `name`; KbnError naming the known ones otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise KbnError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None
