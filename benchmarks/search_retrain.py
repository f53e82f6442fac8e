"""Retrain searches' best pairs with other seeds and score them on images no search saw.

    python benchmarks/search_retrain.py --data folder:PATH --train-size 10000 --val-size 10000 \\
        PROJECT [PROJECT ...] [--seeds 1,2,3] [--held-out 20000] [--pair best|winner]

A search reports the best validation accuracy among its trials: the maximum
of many noisy scores (one run on 10k images: a standard error of about 0.5
points), so it flatters the pair it picked, and more so the more trials it
compares (a search that ran 50 trials to the end against one that ran 11).
This script takes each project's best pair (eta, lambda), trains it again
on the same training images with other seeds (weights and order of the
examples; the trial's network and epochs), and scores each run on the
search's validation images and on `--held-out` further images of the same
pool that no search looked at. The data seed and sizes must be the
search's (`kbn tune --seed`, default 0), so the training and validation
images are the same.

Prints one row per project: the search's best score, the mean of the
retrained runs on the validation images and on the held-out images. With
`--pair winner` (a search run with `--finalists`), the pair is the
finalists' winner and its score the mean of its finalist runs: the
estimate the finalists give instead of the maximum.
"""

import argparse
import json
import pathlib
import statistics
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import kbn
from kbn.data import Dataset, Split
from kbn.training import LoopCache


def best_pair(project, which="best"):
    """A search's pair and its score: (eta, lam, score, the trial's config).

    `best`: the rounds' best completed trial and its score; `winner`: the finalists' pair
    with the best mean of its runs (results.csv rows with a seed), and that mean.
    """
    import csv

    with open(pathlib.Path(project) / "results.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["status"] == "COMPLETED"]
    if which == "best":
        best = max((r for r in rows if not r.get("seed")), key=lambda r: float(r["val_acc"]))
        score = float(best["val_acc"])
    else:
        runs = {}
        for r in rows:
            if r.get("seed"):
                runs.setdefault((r["eta"], r["lam"]), []).append(r)
        if not runs:
            raise SystemExit(f"{project}: no finalist runs (search it with --finalists K)")
        pair = max(runs.values(), key=lambda rs: statistics.mean(float(r["val_acc"]) for r in rs))
        best, score = pair[0], statistics.mean(float(r["val_acc"]) for r in pair)
    summary = json.loads(
        (pathlib.Path(project) / "runs" / f"trial_{best['trial_id']}" / "summary.json").read_text()
    )
    return float(best["eta"]), float(best["lam"]), score, summary["config"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("projects", nargs="+")
    parser.add_argument("--data", required=True)
    parser.add_argument("--train-size", type=int, default=10000)
    parser.add_argument("--val-size", type=int, default=10000)
    parser.add_argument("--held-out", type=int, default=20000)
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--pair", choices=("best", "winner"), default="best")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]

    pool = kbn.load_data(
        args.data,
        train_size=args.train_size,
        val_size=args.val_size + args.held_out,
        seed=args.data_seed,
    )
    val = Split(pool.val.x[: args.val_size], pool.val.y[: args.val_size])
    held = Split(pool.val.x[args.val_size :], pool.val.y[args.val_size :])
    dataset = Dataset(pool.name, pool.train, val, None, pool.class_names)
    print(
        "| search | eta | lambda | search's best | retrained, its val images "
        "| retrained, held-out images |"
    )
    print("|---|---|---|---|---|---|")
    for project in args.projects:
        eta, lam, score, config = best_pair(project, args.pair)
        on_val, on_held = [], []
        for seed in seeds:
            model = kbn.build_mlp(
                [50, 30],
                dataset.num_classes,
                lam=lam,
                center=False,
                scale=False,
                adapt=dataset.train.x,
                seed=seed,
            )
            loops = LoopCache()
            with tempfile.TemporaryDirectory() as logdir:
                result = kbn.train(
                    model,
                    dataset,
                    kbn.TrainConfig(
                        eta=eta,
                        epochs=config["epochs"],
                        seed=seed,
                        logdir=logdir,
                        verbose=0,
                        plot_curves=False,
                    ),
                    loops=loops,
                )
            on_val.append(result.summary["final"]["val_acc"])
            loop = loops.get(model)
            on_held.append(loop.evaluate(loop.inputs(held.x), held.y, 1000)["accuracy"])
        print(
            f"| {project} | {eta:.4g} | {lam:.3g} | {100 * score:.2f}% | "
            f"{100 * statistics.mean(on_val):.2f}% "
            f"({', '.join(f'{100 * v:.2f}' for v in on_val)}) | "
            f"{100 * statistics.mean(on_held):.2f}% "
            f"({', '.join(f'{100 * v:.2f}' for v in on_held)}) |",
            flush=True,
        )


if __name__ == "__main__":
    main()
