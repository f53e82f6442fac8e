"""Ablation of the cifar10-mlp preset: which choice buys how many points.

    python benchmarks/cifar10_mlp_ablation.py --data folder:../shared/data/cifar10-jpeg/train
    # two rows; run another pair beside it
    python benchmarks/cifar10_mlp_ablation.py --rows 0,1 --threads 1
    # the table from the rows run so far
    python benchmarks/cifar10_mlp_ablation.py --table

Each row trains the preset's recipe with one thing changed, on the same 45k training
images, scored on the same 5k held-out images it never trains on (standard error about
0.65 points), for a shorter run than the preset's (`--epochs`). Each row that ends
appends one JSON line to `--results`, with the recipe it changed (the preset's settings
when it ran), the commit and the date; `--table` writes the markdown table (`--out`) from
them, the last run of each row, and marks a row run on another recipe than row 0's.
"""

import argparse
import datetime
import json
import pathlib
import subprocess
import time

# (name, build_mlp settings that change, TrainConfig settings that change)
ROWS = [
    ("the preset's recipe", {}, {}),
    ("without ZCA whitening", {"whiten": 0.0}, {}),
    ("ZCA epsilon 0.01 instead of 0.1", {"whiten": 0.01}, {}),
    ("float32 instead of mixed bfloat16", {"precision": "float32"}, {"precision": "float32"}),
    (
        "batch 100 and eta 0.05 instead of batch 250 and eta 0.1",
        {},
        {"batch_size": 100, "eta": 0.05},
    ),
    ("with dropout 0.2 (the previous preset's)", {"dropout": 0.2}, {}),
    ("without flips and translations", {"flip": False, "translate": 0.0}, {}),
    (
        "the previous preset (all 3072 values, 2048, 1024, 512, no whitening, dropout 0.2, "
        "label smoothing 0.1, batch 100, eta 0.05, no averaging over mirrors)",
        {
            "pca": 0,
            "hidden": [2048, 1024, 512],
            "whiten": 0.0,
            "dropout": 0.2,
            "test_time_flip": False,
        },
        {"batch_size": 100, "eta": 0.05},
    ),
    ("without test-time flip averaging", {"test_time_flip": False}, {}),
    ("without BatchNorm's gamma and beta", {"center": False, "scale": False}, {}),
    # Regularisers that pay late: judge them at the full schedule (`--epochs 140`).
    ("without label smoothing", {}, {"label_smoothing": 0.0}),
    ("with MixUp, alpha 0.2", {}, {"mixup": 0.2}),
    # PCA whitening to fewer components (Lin et al. 2015 kept 800), and the width its
    # cheaper first layer pays for: the s/epoch column gives each row its time.
    ("all 3072 values instead of 400 principal components", {"pca": 0}, {}),
    ("800 principal components instead of 400", {"pca": 800}, {}),
    ("narrower: 2048, 1024, 512", {"hidden": [2048, 1024, 512]}, {}),
    (
        "the recipe before principal components: all 3072 values, 2048, 1024, 512",
        {"pca": 0, "hidden": [2048, 1024, 512]},
        {},
    ),
    ("deeper: 3072, 1536, 768, 384", {"hidden": [3072, 1536, 768, 384]}, {}),
]


def commit():
    """The checkout's commit, with "+changes" when its code differs from it; None outside git.

    The code is kbn/ and benchmarks/: the results file and the docs change with every row.
    """
    here = pathlib.Path(__file__).parent

    def git(*args):
        done = subprocess.run(["git", *args], cwd=here, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else None

    head = git("rev-parse", "--short", "HEAD")
    code = [str(here.parent / "kbn"), str(here)]
    if head and git("status", "--porcelain", "--untracked-files=no", "--", *code):
        head += "+changes"
    return head


def run_row(index, data, epochs, logdir):
    """Train row `index`; its figures as a dict."""
    import kbn
    from kbn.nn.precision import resolve
    from kbn.training.presets import get_preset

    name, model_change, train_change = ROWS[index]
    preset = get_preset("cifar10-mlp")
    train_settings = {**preset.train, "epochs": epochs, **train_change}
    train_settings["precision"] = resolve(train_settings["precision"])[0]
    model_settings = {**preset.model, "precision": train_settings["precision"], **model_change}
    model = kbn.build_mlp(
        num_classes=data.num_classes, adapt=data.train.x, seed=0, **model_settings
    )
    config = kbn.TrainConfig(
        **train_settings, logdir=logdir, run_name=f"row{index:02d}", verbose=0, plot_curves=False
    )
    start = time.perf_counter()
    final = kbn.train(model, data, config).summary
    return {
        "row": index,
        "change": name,
        "epochs": epochs,
        "train_images": len(data.train.x),
        "val_images": len(data.val.x),
        "val_acc": final["final"]["val_acc"],
        "train_acc": final["final"]["train_acc"],
        "seconds_per_epoch": final["seconds_per_epoch"],
        "minutes": (time.perf_counter() - start) / 60,
        "recipe": {"model": dict(preset.model), "train": dict(preset.train)},
        "commit": commit(),
        "date": datetime.date.today().isoformat(),
    }


def write_table(results, out):
    """The last run of each row, as markdown, in `out`."""
    rows = {}
    for line in pathlib.Path(results).read_text().splitlines():
        row = json.loads(line)
        rows[row["row"]] = row
    if 0 not in rows:
        raise SystemExit(f"{results} has no run of row 0, the preset's recipe, to compare with")
    base = rows[0]
    lines = [
        f"Ablation of `--preset cifar10-mlp`: {base['epochs']} epochs, {base['train_images']} "
        f"training images, {base['val_images']} held-out images "
        f"(`python benchmarks/cifar10_mlp_ablation.py`).",
        "",
    ]
    if "recipe" in base:  # rows written before the recipe was recorded have none
        lines += [
            f"The recipe (row 0, commit {base['commit']}, {base['date']}): "
            f"`build_mlp` {json.dumps(base['recipe']['model'])}, "
            f"`TrainConfig` {json.dumps(base['recipe']['train'])}.",
            "",
        ]
    lines += [
        "| change | held-out accuracy | points vs the recipe | training accuracy | s/epoch |",
        "| --- | --- | --- | --- | --- |",
    ]
    for _, row in sorted(rows.items()):
        change = row["change"]
        if "recipe" in base and "recipe" in row and row["recipe"] != base["recipe"]:
            change += f" (on another recipe: commit {row['commit']}, {row['date']})"
        lines.append(
            f"| {change} | {100 * row['val_acc']:.2f}% | "
            f"{100 * (row['val_acc'] - base['val_acc']):+.2f} | {100 * row['train_acc']:.2f}% | "
            f"{row['seconds_per_epoch']:.1f} |"
        )
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="folder:../shared/data/cifar10-jpeg/train")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument(
        "--rows",
        default=",".join(str(i) for i in range(len(ROWS))),
        help="comma-separated row numbers (0 is the preset's recipe)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="TensorFlow threads per op; 0 for all cores (1 to run two rows side by side)",
    )
    parser.add_argument("--results", default="reports/cifar10-mlp/ablation.jsonl")
    parser.add_argument("--out", default="reports/cifar10-mlp/ablation.md")
    parser.add_argument("--logdir", default="logs/ablation")
    parser.add_argument("--table", action="store_true", help="only write the table from --results")
    args = parser.parse_args()
    if args.table:
        write_table(args.results, args.out)
        return

    import tensorflow as tf

    import kbn

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    data = kbn.load_data(args.data, val_size=5000, seed=0)
    results = pathlib.Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    for index in (int(i) for i in args.rows.split(",")):
        row = run_row(index, data, args.epochs, args.logdir)
        with results.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
