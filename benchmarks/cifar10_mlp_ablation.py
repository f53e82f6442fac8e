"""Ablation of the cifar10-mlp preset: which feature buys how many points.

    python benchmarks/cifar10_mlp_ablation.py --data folder:../shared/data/cifar10-jpeg/train

Each row trains the preset's recipe with one thing changed, on the same 45k training
images, scored on the same 5k held-out images it never trains on, for a shorter run
than the preset's (`--epochs`, `--hidden`: a smaller net, so that the table takes half
an hour on 2 cores). Writes a markdown table (`--out`) and prints each row as it ends.
"""

import argparse
import dataclasses
import json
import pathlib
import time

import kbn
from kbn.presets import get_preset

# (name, what changes: build_mlp settings, TrainConfig settings, training images)
ROWS = [
    ("the preset's recipe", {}, {}, None),
    ("without horizontal flips", {"flip": False}, {}, None),
    ("without translations", {"translate": 0.0}, {}, None),
    ("without flips and translations", {"flip": False, "translate": 0.0}, {}, None),
    ("without dropout", {"dropout": 0.0}, {}, None),
    ("without label smoothing", {}, {"label_smoothing": 0.0}, None),
    ("without batch norm", {"batch_norm": False}, {}, None),
    ("batch norm without gamma and beta", {"center": False, "scale": False}, {}, None),
    ("Xavier init instead of He", {"init": "xavier"}, {}, None),
    ("cyclic eta (0.005 to 0.1, three cycles) instead of cosine", {},
     {"schedule": "cyclic", "eta": 0.1, "eta_min": 0.005}, None),
    ("the report's exp decay (0.8 per epoch) instead of cosine", {}, {"schedule": "exp"}, None),
    ("10k training images instead of 45k", {}, {}, 10_000),
    ("the report's net and protocol ([50, 30], exp decay, no regularisers but L2)",
     {"hidden": [50, 30], "dropout": 0.0, "flip": False, "translate": 0.0, "lam": 1.8245e-4},
     {"schedule": "exp", "eta": 0.0864, "label_smoothing": 0.0}, None),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="folder:../shared/data/cifar10-jpeg/train")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--hidden", default="1024,512,256")
    parser.add_argument("--val-size", type=int, default=5000)
    parser.add_argument("--out", default="reports/cifar10-mlp/ablation.md")
    parser.add_argument("--logdir", default="logs/ablation")
    args = parser.parse_args()

    preset = get_preset("cifar10-mlp")
    pool = kbn.load_data(args.data, val_size=args.val_size, seed=0)
    hidden = [int(w) for w in args.hidden.split(",")]
    rows = []
    for i, (name, model_change, train_change, train_size) in enumerate(ROWS):
        data = pool
        if train_size:
            data = dataclasses.replace(pool, train=kbn.Split(pool.train.x[:train_size], pool.train.y[:train_size]))
        settings = {**preset.model, "hidden": hidden, **model_change}
        model = kbn.build_mlp(num_classes=data.num_classes, adapt=data.train.x, seed=0, **settings)
        train_settings = {**preset.train, "epochs": args.epochs, **train_change}
        if train_settings["schedule"] == "cyclic":  # three whole cycles: the run ends at the bottom
            steps = -(-len(data.train.x) // train_settings["batch_size"])
            train_settings["step_size"] = args.epochs * steps // 6
        config = kbn.TrainConfig(**train_settings,
                                 logdir=args.logdir, run_name=f"row{i:02d}", verbose=0, plot_curves=False)
        start = time.perf_counter()
        result = kbn.train(model, data, config)
        final = result.summary["final"]
        row = {"change": name, "train_images": len(data.train.x), "train_acc": final["train_acc"],
               "val_acc": final["val_acc"], "seconds_per_epoch": result.summary["seconds_per_epoch"],
               "minutes": (time.perf_counter() - start) / 60}
        rows.append(row)
        print(json.dumps(row), flush=True)
    base = rows[0]["val_acc"]
    lines = [
        f"Ablation of `--preset cifar10-mlp`: hidden {hidden}, {args.epochs} epochs, "
        f"{len(pool.train.x)} training images, {len(pool.val.x)} held-out images "
        f"(`python benchmarks/cifar10_mlp_ablation.py`).",
        "",
        "| change | held-out accuracy | points vs the recipe | training accuracy | s/epoch |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row['change']} | {100 * row['val_acc']:.2f}% | {100 * (row['val_acc'] - base):+.2f} | "
            f"{100 * row['train_acc']:.2f}% | {row['seconds_per_epoch']:.1f} |"
        )
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
