"""The `kbn tune` command line of the subprocess tests, on a tiny npz data set."""

import pathlib
import subprocess
import sys

import numpy as np
import synthetic

NUM_CLASSES = 3


def tune_command(tmp_path, *options, console_script=False):
    """`kbn tune` in a new process on a tiny npz in tmp_path, project tmp_path/p.

    With `console_script`, the installed `kbn` script (as a user runs it,
    the working folder off the import path), else `python -m kbn`.
    """
    data = tmp_path / "data.npz"
    x, y = synthetic.make_images(400, seed=0, num_classes=NUM_CLASSES)
    np.savez(data, x_train=x, y_train=y)
    kbn = (
        [str(pathlib.Path(sys.executable).parent / "kbn")]
        if console_script
        else [sys.executable, "-m", "kbn"]
    )
    return [
        *kbn,
        "tune",
        "--data",
        f"npz:{data}",
        "--val-size",
        "100",
        "--rounds",
        "2",
        "--epochs",
        "3",
        "--directory",
        str(tmp_path),
        "--project",
        "p",
        "--json",
        *options,
    ]


def worker_pids(tmp_path):
    """The pids of the search workers whose command line names tmp_path."""
    ps = subprocess.run(["ps", "-eww", "-o", "pid=,args="], capture_output=True, text=True).stdout
    return [
        int(line.split()[0])
        for line in ps.splitlines()
        if "tuning.worker" in line and str(tmp_path) in line
    ]
