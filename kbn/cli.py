"""The `kbn` command: a thin argparse front over kbn's Python API.

Each subcommand parses its options, calls the library, and prints: a
readable summary for people, or with `--json` one JSON object as the last
line of stdout for scripts. Bad input of any kind ends as one line
`error: ...` on stderr and exit status 2, never a traceback.
"""

import argparse
import dataclasses
import json
import sys

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one `error:` line like every other."""

    def error(self, message):
        raise _UsageError(f"{self.prog}: {message}")


class _UsageError(Exception):
    pass


def _positive_int(text):
    return _number(text, int, lambda v: v > 0, "a positive integer")


def _non_negative_int(text):
    return _number(text, int, lambda v: v >= 0, "an integer >= 0")


FLOAT32_MAX = 3.4028235e38  # training computes in float32


def _positive_float(text):
    return _number(text, float, lambda v: 0 < v <= FLOAT32_MAX, "a positive number")


def _non_negative_float(text):
    return _number(text, float, lambda v: 0 <= v <= FLOAT32_MAX, "a number >= 0")


def _number(text, kind, ok, expected):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def _fraction(text):
    return _number(text, float, lambda v: 0 <= v < 1, "a number in [0, 1)")


def _int_list(text):
    """'50,30' -> [50, 30]; '' -> [] (no hidden layer)."""
    if not text.strip():
        return []
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers such as 50,30, got {text!r}"
        ) from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _add_data_options(parser, required=True):
    parser.add_argument("--data", required=required, metavar="SPEC",
                        help="fashion_mnist, cifar10, folder:PATH or npz:PATH")
    parser.add_argument("--data-dir", metavar="DIR", help="where the data set's files are")
    parser.add_argument("--train-size", type=_positive_int, metavar="N",
                        help="training examples (default: the pool less the validation ones)")
    parser.add_argument("--val-size", type=_non_negative_int, default=5000, metavar="N",
                        help="validation examples (default: 5000)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the split, weights, shuffling")


def _load(args):
    from kbn.data import load_data

    return load_data(
        args.data,
        train_size=args.train_size,
        val_size=args.val_size,
        seed=args.seed,
        data_dir=args.data_dir,
        test_spec=getattr(args, "test_data", None),
    )


def _emit(args, result, text):
    """Print `text` for people, or `result` as the last line for --json."""
    if args.json:
        print(json.dumps(result))
    else:
        print(text)


# --------------------------------------------------------------------------
# kbn train
# --------------------------------------------------------------------------


def _train_parser(sub):
    from kbn.presets import PRESETS
    from kbn.schedules import SCHEDULES
    from kbn.training import TrainConfig

    defaults = TrainConfig()
    p = sub.add_parser("train", help="train a k-layer network and log it to TensorBoard")
    _add_data_options(p)
    p.add_argument("--preset", choices=PRESETS, metavar="NAME",
                   help=f"a recipe ({', '.join(PRESETS)}) whose settings become the defaults; "
                        "flags given override them")
    p.add_argument("--test-data", metavar="SPEC", help="a second SPEC whose images form the test split")
    p.add_argument("--hidden", type=_int_list, default=[50, 30], help="hidden widths (default: 50,30)")
    p.add_argument("--no-batch-norm", action="store_true", help="no BatchNorm after the hidden layers")
    p.add_argument("--no-gamma-beta", action="store_true",
                   help="BatchNorm without its learnable scale gamma and shift beta")
    p.add_argument("--init", choices=("he", "xavier", "small"), default="he")
    p.add_argument("--dropout", type=_fraction, default=0.0, help="dropout rate after each hidden layer")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=False,
                   help="random horizontal flips of the training images")
    p.add_argument("--translate", type=_fraction, default=0.0, metavar="FRACTION",
                   help="random shifts of the training images, up to this fraction of their size")
    p.add_argument("--eta", type=_positive_float, default=defaults.eta, help="learning rate")
    p.add_argument("--lam", type=_non_negative_float, default=1.8245e-4, help="L2 penalty lambda")
    p.add_argument("--momentum", type=float, default=defaults.momentum)
    p.add_argument("--schedule", choices=SCHEDULES, default=defaults.schedule)
    p.add_argument("--decay", type=_positive_float, default=defaults.decay, help="exp: factor per epoch")
    p.add_argument("--eta-min", type=_positive_float,
                   help="cyclic: bottom of the cycle (default eta/10); cosine: the end (default 0)")
    p.add_argument("--step-size", type=_positive_int, help="cyclic: steps per half cycle (default 2 epochs)")
    p.add_argument("--epochs", type=_non_negative_int, default=defaults.epochs)
    p.add_argument("--batch-size", type=_positive_int, default=defaults.batch_size)
    p.add_argument("--label-smoothing", type=_fraction, default=0.0, metavar="EPSILON",
                   help="weight of the uniform target mixed into the labels")
    p.add_argument("--gradcheck-every", type=_non_negative_int, default=0, metavar="N",
                   help="re-run the gradient check every N epochs (0: never)")
    p.add_argument("--logdir", default=defaults.logdir, help="TensorBoard log root (default: logs)")
    p.add_argument("--run-name", help="run folder under --logdir (default: a timestamp)")
    p.add_argument("--save", metavar="MODEL.keras", help="write the trained model there")
    p.add_argument("--resume", action="store_true", help="continue the run --run-name where it stopped")
    p.add_argument("--json", action="store_true", help="last stdout line: the run's figures as JSON")
    p.set_defaults(func=_train, apply_preset=_apply_preset(p))


# A preset's settings under the names of the train command's options.
_PRESET_OPTIONS = {"l2": "lam"}


def _apply_preset(parser):
    """Make a preset's settings the train command's defaults, then reparse:
    flags on the command line still win."""

    def apply(name):
        from kbn.presets import get_preset

        preset = get_preset(name)
        settings = {**preset.data, **preset.model, **preset.train}
        defaults = {_PRESET_OPTIONS.get(k, k): v for k, v in settings.items()}
        defaults["no_batch_norm"] = not defaults.pop("batch_norm", True)
        defaults["no_gamma_beta"] = not (defaults.pop("center", True) and defaults.pop("scale", True))
        parser.set_defaults(**defaults)

    return apply


def _train(args):
    from kbn.model import build_mlp
    from kbn.training import TrainConfig, train

    config = TrainConfig(
        eta=args.eta,
        momentum=args.momentum,
        schedule=args.schedule,
        decay=args.decay,
        eta_min=args.eta_min,
        step_size=args.step_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        label_smoothing=args.label_smoothing,
        seed=args.seed,
        gradcheck_every=args.gradcheck_every,
        logdir=args.logdir,
        run_name=args.run_name,
        save=args.save,
        resume=args.resume,
        verbose=0 if args.json else 1,
    )
    config.validate()
    dataset = _load(args)
    model = build_mlp(
        args.hidden,
        dataset.num_classes,
        batch_norm=not args.no_batch_norm,
        init=args.init,
        l2=args.lam,
        center=not args.no_gamma_beta,
        scale=not args.no_gamma_beta,
        dropout=args.dropout,
        flip=args.flip,
        translate=args.translate,
        adapt=dataset.train.x,
        seed=args.seed,
        class_names=dataset.class_names,
    )
    if not args.json:
        print(f"data: {dataset.name}: {len(dataset.train)} train, {len(dataset.val)} val, "
              f"{len(dataset.test) if dataset.test else 0} test, {dataset.num_classes} classes")
        print(f"model: hidden={args.hidden} batch_norm={not args.no_batch_norm} "
              f"init={args.init} lambda={args.lam:g} dropout={args.dropout:g} "
              f"flip={args.flip} translate={args.translate:g}")
        print("config: " + ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(config).items()))
    result = train(model, dataset, config)
    final = result.summary["final"]
    figures = {
        **{k: final[k] for k in ("train_acc", "val_acc", "test_acc", "train_loss", "val_loss") if k in final},
        "epochs_run": result.summary["epochs_run"],
        "seconds_per_epoch": result.summary["seconds_per_epoch"],
        "diverged": result.diverged,
        "run_dir": str(result.run_dir),
        "model_path": str(result.model_path) if result.model_path else None,
    }
    lines = [f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}" for k, v in figures.items()]
    if result.diverged:
        lines.insert(0, f"stopped early: {result.diverged}")
    lines.append(f"curves: tensorboard --logdir {args.logdir}")
    _emit(args, figures, "\n".join(lines))


# --------------------------------------------------------------------------
# kbn evaluate
# --------------------------------------------------------------------------


def _evaluate_parser(sub):
    p = sub.add_parser("evaluate", help="accuracy, loss, per-class accuracy and confusion matrix "
                                        "of a saved model on a data split")
    p.add_argument("model", metavar="MODEL.keras")
    _add_data_options(p)
    p.add_argument("--split", choices=("test", "val", "train", "all"), default="test")
    p.add_argument("--confusion", metavar="PATH.png",
                   help="draw the confusion matrix (of all the splits evaluated) there")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_evaluate)


def _evaluate(args):
    from kbn.evaluate import evaluate, load_model

    model = load_model(args.model)
    if args.split == "test":
        args.train_size, args.val_size = None, 0  # the test split needs no cut of the pool
    dataset = _load(args)
    result = evaluate(model, dataset, args.split)
    # One line per split, its name first; the per-class accuracies on the same line.
    lines = [
        f"{name}: accuracy {r['accuracy']:.4f}, loss {r['loss']:.4f}, n {r['n']}; per class: "
        + ", ".join(f"{c} {'-' if a is None else format(a, '.4f')}" for c, a in r["per_class"].items())
        for name, r in result["splits"].items()
    ]
    if args.confusion:
        from kbn.plots import plot_confusion

        splits = "+".join(result["splits"])
        result["confusion_png"] = str(plot_confusion(
            result["confusion"], result["class_names"], args.confusion,
            title=f"{args.model} on {dataset.name} ({splits})",
        ))
        lines.append(f"confusion matrix: {result['confusion_png']}")
    _emit(args, result, "\n".join(lines))


# --------------------------------------------------------------------------
# kbn predict
# --------------------------------------------------------------------------


def _predict_parser(sub):
    p = sub.add_parser("predict", help="the class of each image file, with its probability")
    p.add_argument("model", metavar="MODEL.keras")
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files (JPEG, PNG, ...) or folders of them (searched recursively)")
    p.add_argument("--top", type=_positive_int, default=1, metavar="K",
                   help="the K most probable classes per image (default: 1)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_predict)


def _predict(args):
    from kbn.evaluate import load_model
    from kbn.predict import predict

    predictions = predict(load_model(args.model), args.images, top=args.top)
    lines = [
        f"{p['path']}: " + ", ".join(f"{t['class']} {t['probability']:.4f}" for t in p["top"])
        + (f" (resized from {p['resized'][1]}x{p['resized'][0]})" if p["resized"] else "")
        for p in predictions
    ]
    _emit(args, {"predictions": predictions}, "\n".join(lines))


# --------------------------------------------------------------------------
# kbn export
# --------------------------------------------------------------------------


def _export_parser(sub):
    p = sub.add_parser("export", help="a TensorFlow SavedModel serving raw uint8 images")
    p.add_argument("model", metavar="MODEL.keras")
    p.add_argument("directory", metavar="DIR", help="the SavedModel's folder (new, or empty)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_export)


def _export(args):
    from kbn.evaluate import load_model
    from kbn.export import SIGNATURE, export
    from kbn.model import class_names

    model = load_model(args.model)
    directory = export(model, args.directory)
    result = {"directory": str(directory), "signature": SIGNATURE,
              "input_shape": [None, *model.input_shape[1:]], "class_names": class_names(model)}
    shape = ", ".join(str(d) for d in result["input_shape"])
    text = (f"SavedModel in {directory}: {SIGNATURE}(images: uint8 ({shape})) -> "
            f"probabilities float32 (None, {len(result['class_names'])}), classes int64 (None,), "
            f"class_names string (None,)")
    _emit(args, result, text)


# --------------------------------------------------------------------------
# kbn gradcheck
# --------------------------------------------------------------------------


def _gradcheck_parser(sub):
    p = sub.add_parser("gradcheck", help="the report's gradient-check table")
    p.add_argument("--hidden", type=_int_list, default=[50], help="hidden widths (default: 50)")
    p.add_argument("--batch-sizes", type=_int_list, default=[10, 20, 30])
    p.add_argument("--no-batch-norm", action="store_true")
    p.add_argument("--lam", type=_non_negative_float, default=0.0, help="L2 penalty (the report: 0)")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                   help="of the hand-written and autodiff gradients; numerical ones are float64")
    p.add_argument("--data", metavar="SPEC", help="check on these images (default: random pixels)")
    p.add_argument("--data-dir", metavar="DIR")
    p.add_argument("--dim", type=_positive_int, default=100,
                   help="input features kept, the first DIM (default: 100)")
    p.add_argument("--max-entries", type=_positive_int, metavar="N",
                   help="check N random entries per weight instead of all")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_gradcheck)


def _gradcheck(args):
    from kbn.errors import KbnError
    from kbn.gradcheck import check_inputs, format_table, gradient_table

    if not args.batch_sizes:
        raise KbnError("--batch-sizes needs at least one batch size, e.g. 10,20,30")
    x, y, classes = check_inputs(
        max(args.batch_sizes), args.dim, spec=args.data, data_dir=args.data_dir, seed=args.seed
    )
    rows = gradient_table(
        x,
        y,
        hidden=args.hidden,
        batch_sizes=args.batch_sizes,
        batch_norm=not args.no_batch_norm,
        l2=args.lam,
        num_classes=classes,
        dtype=args.dtype,
        seed=args.seed,
        max_entries=args.max_entries,
    )
    result = {
        "rows": [{k: r[k] for k in ("batch_size", "param", "rel_error", "max_entry_error")} for r in rows],
        "max_rel_error": max(r["rel_error"] for r in rows),
        "max_rel_error_autodiff": max(r["rel_error_autodiff"] for r in rows),
    }
    text = "\n".join([
        "Relative error |g_a - g_n| / max(eps, |g_a| + |g_n|), hand-written vs numerical:",
        format_table(rows),
        "",
        "Largest single-entry error (noise-bound for entries below ~1e-5):",
        format_table(rows, "max_entry_error"),
        "",
        f"hand-written vs autodiff: {result['max_rel_error_autodiff']:.2e}",
    ])
    _emit(args, result, text)


# --------------------------------------------------------------------------
# kbn tune
# --------------------------------------------------------------------------


def _range(text):
    """'0.01:0.7' -> (0.01, 0.7)."""
    try:
        low, high = (float(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW:HIGH such as 0.01:0.7, got {text!r}") from None
    return low, high


def _tune_parser(sub):
    from tuning.search import SearchConfig

    defaults = SearchConfig()
    p = sub.add_parser("tune", help="coarse-to-fine search of eta and lambda (KerasTuner)")
    _add_data_options(p)
    p.add_argument("--rounds", type=int, default=defaults.rounds, help="shrinking intervals (default: 3)")
    p.add_argument("--trials", type=int, default=defaults.trials, help="trials in all rounds (default: 50)")
    p.add_argument("--epochs", type=int, default=defaults.epochs, help="epochs per trial (default: 10)")
    p.add_argument("--eta-range", type=_range, default=defaults.eta_range, metavar="LOW:HIGH")
    p.add_argument("--lam-range", type=_range, default=defaults.lam_range, metavar="LOW:HIGH")
    p.add_argument("--architecture", action="store_true", help="also search depth, width, batch norm")
    p.add_argument("--directory", default=defaults.directory, help="searches' root (default: logs/tuning)")
    p.add_argument("--project", default=defaults.project, help="this search's folder name")
    p.add_argument("--workers", type=_non_negative_int, default=0, metavar="N",
                   help="run N worker processes and a chief on 127.0.0.1 (default: 0, one process)")
    p.add_argument("--recycle-after", type=_positive_int, default=defaults.recycle_after, metavar="N",
                   help="with --workers: restart a worker after N trials, keeping memory flat")
    p.add_argument("--resume", action="store_true", help="continue the search --project where it stopped")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_tune)


def _tune(args):
    from tuning.search import SearchConfig, search

    config = SearchConfig(
        rounds=args.rounds,
        trials=args.trials,
        epochs=args.epochs,
        eta_range=args.eta_range,
        lam_range=args.lam_range,
        architecture=args.architecture,
        directory=args.directory,
        project=args.project,
        resume=args.resume,
        workers=args.workers,
        recycle_after=args.recycle_after,
        seed=args.seed,
        verbose=0 if args.json else 1,
    )
    config.validate()
    result = search(_load(args), config)
    if result is None:  # a worker of a search spanning machines: the chief reports
        return
    figures = {
        "best": result.best,
        "rounds": result.rounds,
        "trials_completed": result.trials_completed,
        "trials_by_worker": result.trials_by_worker,
        "seconds": result.seconds,
        "project_dir": str(result.project_dir),
    }
    best = result.best
    lines = [
        f"round {i}: eta {r['eta_range'][0]:.4g}..{r['eta_range'][1]:.4g}, "
        f"lambda {r['lam_range'][0]:.4g}..{r['lam_range'][1]:.4g}, {r['trials']} trials, "
        f"best val acc {r['best_val_acc'] if r['best_val_acc'] is None else format(r['best_val_acc'], '.4f')}"
        for i, r in enumerate(result.rounds, start=1)
    ]
    lines.append(
        f"best: eta {best['eta']:.4g}, lambda {best['lam']:.4g}, val acc {best['val_acc']:.4f}"
        if best else "best: none (every trial failed)"
    )
    lines.append(f"{result.trials_completed} trials in {result.seconds:.0f} s; results in {result.project_dir}")
    _emit(args, figures, "\n".join(lines))


# --------------------------------------------------------------------------
# kbn reproduce
# --------------------------------------------------------------------------


def _reproduce_parser(sub):
    p = sub.add_parser("reproduce", help="the seed report's four studies -> report.md and figures")
    p.add_argument("--data", required=True, metavar="SPEC")
    p.add_argument("--data-dir", metavar="DIR")
    p.add_argument("--out", metavar="DIR", help="report folder (default: reports/<data set name>)")
    p.add_argument("--quick", action="store_true", help="small sizes: about 5 minutes on 2 cores")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_reproduce)


def _reproduce(args):
    from kbn.report import default_out, reproduce

    out = args.out or default_out(args.data)
    command = "kbn " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["reproduce"] else None
    reproduce(args.data, out, quick=args.quick, data_dir=args.data_dir, seed=args.seed,
              command=command, progress=lambda line: print(line, flush=True))


# --------------------------------------------------------------------------
# kbn bench
# --------------------------------------------------------------------------


def _bench_parser(sub):
    from kbn.bench import IMPLEMENTATIONS

    p = sub.add_parser("bench", help="seconds per epoch of the seed net: NumPy vs Keras vs kbn")
    p.add_argument("--data", default="synthetic", metavar="SPEC",
                   help="synthetic (random CIFAR-10-shaped pixels, the default) or a data SPEC")
    p.add_argument("--data-dir", metavar="DIR")
    p.add_argument("--train-size", type=_positive_int, default=10_000, metavar="N")
    p.add_argument("--val-size", type=_non_negative_int, default=0, metavar="N",
                   help="validation images evaluated every epoch (default: 0)")
    p.add_argument("--epochs", type=_positive_int, default=6, help="per run; the first is warm-up")
    p.add_argument("--repeats", type=_positive_int, default=3, help="runs per implementation")
    p.add_argument("--batch-size", type=_positive_int, default=100)
    p.add_argument("--only", type=lambda text: text.split(","), default=list(IMPLEMENTATIONS),
                   metavar="NAMES", help=f"comma-separated subset of {','.join(IMPLEMENTATIONS)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_bench)


def _bench(args):
    from kbn.bench import epoch_times, format_result

    result = epoch_times(
        args.data, train_size=args.train_size, val_size=args.val_size, epochs=args.epochs,
        repeats=args.repeats, batch_size=args.batch_size, implementations=args.only,
        data_dir=args.data_dir, seed=args.seed,
    )
    _emit(args, dataclasses.asdict(result), format_result(result))


# --------------------------------------------------------------------------


def build_parser():
    parser = _Parser(prog="kbn", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _train_parser(sub)
    _evaluate_parser(sub)
    _predict_parser(sub)
    _export_parser(sub)
    _gradcheck_parser(sub)
    _tune_parser(sub)
    _reproduce_parser(sub)
    _bench_parser(sub)
    return parser


def main(argv=None):
    """Entry point of the `kbn` console script; returns the exit status."""
    from kbn.errors import KbnError

    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if getattr(args, "preset", None):
            args.apply_preset(args.preset)
            args = parser.parse_args(argv)
        args.func(args)
    except (_UsageError, KbnError) as exc:
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # an unwritable --logdir or --save, a full disk
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
