"""The report's network in plain NumPy on the report's protocol: kbn's speed and accuracy reference.

    python benchmarks/numpy_reference.py                     # folder CIFAR-10, 20 epochs
    python benchmarks/numpy_reference.py --data synthetic    # random data, same shapes
    python benchmarks/numpy_reference.py --json              # last line: one JSON object

The network and its training live in `kbn.bench.numpy_reference`; this is its command line.
"""

import argparse
import json
import sys

from kbn.bench.numpy_reference import DEFAULT_DECAY, DEFAULT_ETA, DEFAULT_LAM, run

DEFAULT_DATA = "folder:../shared/data/cifar10-jpeg/train"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        default=DEFAULT_DATA,
        help="a kbn data SPEC, or `synthetic` (random CIFAR-10-shaped data)",
    )
    parser.add_argument("--train-size", type=int, default=10_000)
    parser.add_argument("--val-size", type=int, default=10_000)
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the split")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--eta", type=float, default=DEFAULT_ETA)
    parser.add_argument("--decay", type=float, default=DEFAULT_DECAY)
    parser.add_argument("--lam", type=float, default=DEFAULT_LAM)
    parser.add_argument("--epsilon", type=float, default=1e-3)
    parser.add_argument(
        "--no-gamma-beta", action="store_true", help="BatchNorm without learnable gamma and beta"
    )
    parser.add_argument(
        "--standardize", action="store_true", help="also divide by the per-feature training std"
    )
    parser.add_argument("--init", choices=("he", "xavier"), default="he")
    parser.add_argument("--seed", type=int, default=0, help="seed of the init and shuffles")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--json", action="store_true", help="last line: one JSON object")
    args = parser.parse_args(argv)

    result = run(
        data=args.data,
        train_size=args.train_size,
        val_size=args.val_size,
        data_seed=args.data_seed,
        epochs=args.epochs,
        eta=args.eta,
        decay=args.decay,
        lam=args.lam,
        epsilon=args.epsilon,
        gamma_beta=not args.no_gamma_beta,
        standardize=args.standardize,
        init=args.init,
        seed=args.seed,
        batch_size=args.batch_size,
        momentum=args.momentum,
    )
    print(
        f"train acc {result['train_acc']:.4f}  val acc {result['val_acc']:.4f}  "
        f"train cost {result['train_cost']:.4f}  val cost {result['val_cost']:.4f}"
    )
    print(
        f"seconds per epoch {result['seconds_per_epoch']:.4f} training pass, "
        f"{result['seconds_per_epoch_with_validation']:.4f} with the validation pass "
        f"(medians of epochs 2..{args.epochs})"
    )
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
