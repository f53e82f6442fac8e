"""Tests for kbn/report/reproduction.py and `kbn reproduce`: a tiny reproduce run on synthetic
data."""

import contextlib
import io
import json
import pathlib
import re

import numpy as np
import pytest
import synthetic

from kbn.cli import main
from kbn.nn import BatchNorm
from kbn.report import reproduction as report
from kbn.report.reproduction import Sizes

TINY = Sizes(
    train=120,
    val=60,
    test=60,
    epochs=2,
    final_epochs=2,
    trials=3,
    trial_epochs=1,
    gradcheck_entries=10,
)


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    """One tiny `kbn reproduce --quick --json`: its report folder, stdout, stderr and models.

    The report's tests and its command line's share it: a reproduce run is among the
    suite's slowest tests.
    """
    tmp_path = tmp_path_factory.mktemp("reproduce")
    x, y = synthetic.make_images(400, seed=0, num_classes=3, shape=(6, 6, 1))
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y)  # no test split: one is carved
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        models = record_models(patch)
        patch.setattr(report, "QUICK", TINY)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(
                [
                    "reproduce",
                    "--data",
                    f"npz:{tmp_path / 'd.npz'}",
                    "--out",
                    str(tmp_path / "out"),
                    "--quick",
                    "--json",
                ]
            )
    assert status == 0, err.getvalue()
    return tmp_path / "out", out.getvalue(), err.getvalue(), models


def test_reproduce_writes_the_four_studies_with_every_figure(reproduced):
    out, _, stderr, models = reproduced
    path = out / "report.md"
    text = path.read_text()
    assert [line for line in text.splitlines() if line.startswith("## ")] == [
        "## 1. Gradient check",
        "## 2. 3-layer network with and without batch normalization",
        "## 3. Coarse-to-fine search of eta and lambda",
        "## 4. Influence of eta on a 2-layer network with and without batch normalization",
    ]
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert {f"figure{i}.png" for i in range(1, 10)} <= set(links)
    for link in links:  # every link resolves to a PNG beside report.md
        assert (path.parent / link).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "120 training, 60 validation and 60 test examples" in text
    assert "*report* (CIFAR-10) | 0.0864 | 0.00018245 | 62.68% | 45.02%" in text
    worst = float(re.search(r"Largest relative error over both tables: (\S+);", text).group(1))
    assert worst < 1e-6
    assert "### Conclusion (computed from the table)" in text
    lines = stderr.splitlines()  # with --json the progress goes to stderr
    assert lines[0].startswith("data: npz:") and lines[-1].startswith("report: ")
    assert any(line.startswith("3/4 coarse-to-fine search") for line in lines)
    # The studies train the report's net: batch norm without gamma and beta.
    norms = [layer for model in models for layer in model.layers if isinstance(layer, BatchNorm)]
    assert len(models) == 4 + 2 + 6 and len(norms) == 2 * 2 + 2 * 2 + 3
    assert all(not n.center and not n.scale and len(n.trainable_weights) == 0 for n in norms)


def test_reproduce_json_reports_the_report_and_every_studys_run(reproduced):
    out, stdout, _, _ = reproduced
    assert len(stdout.splitlines()) == 1  # progress went to stderr
    result = json.loads(stdout)
    assert result["report"] == str(out / "report.md")
    assert {f"figure{i}.png" for i in range(1, 10)} <= {
        pathlib.Path(f).name for f in result["figures"]
    }
    runs = result["runs"]
    assert {"study2-bn-he", "study2-no-bn-small", "study3-best", "study4-eta0.2-bn"} <= set(runs)
    for figures in runs.values():
        assert 0 <= figures["val_acc"] <= 1 and figures["epochs_run"] == TINY.epochs


def record_models(monkeypatch):
    """Collect every model kbn.report builds for its studies (`monkeypatch`: a
    `pytest.MonkeyPatch`)."""
    models = []

    def build(*args, **kwargs):
        models.append(report_build(*args, **kwargs))
        return models[-1]

    report_build = report.build_mlp
    monkeypatch.setattr(report, "build_mlp", build)
    return models
