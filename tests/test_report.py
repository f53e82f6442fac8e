"""Tests for kbn/report.py: a tiny `kbn reproduce` on synthetic data."""

import re

import numpy as np

import synthetic
from kbn import report
from kbn.layers import BatchNorm
from kbn.report import Sizes, reproduce

TINY = Sizes(train=120, val=60, test=60, epochs=2, final_epochs=2, trials=3, trial_epochs=1,
             gradcheck_entries=10)


def test_reproduce_writes_the_four_studies_with_every_figure(tmp_path, monkeypatch):
    models = record_models(monkeypatch)
    x, y = synthetic.make_images(400, seed=0, num_classes=3, shape=(6, 6, 1))
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y)  # no test split: one is carved
    lines = []
    path = reproduce(f"npz:{tmp_path / 'd.npz'}", tmp_path / "out", sizes=TINY, progress=lines.append)
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
    assert lines[0].startswith("data: npz:") and lines[-1].startswith("report: ")
    assert any(line.startswith("3/4 coarse-to-fine search") for line in lines)  # progress shows
    # The studies train the report's net: batch norm without gamma and beta.
    norms = [layer for model in models for layer in model.layers if isinstance(layer, BatchNorm)]
    assert len(models) == 4 + 2 + 6 and len(norms) == 2 * 2 + 2 * 2 + 3
    assert all(not n.center and not n.scale and len(n.trainable_weights) == 0 for n in norms)


def record_models(monkeypatch):
    """Collect every model kbn.report builds for its studies."""
    models = []

    def build(*args, **kwargs):
        models.append(report_build(*args, **kwargs))
        return models[-1]

    report_build = report.build_mlp
    monkeypatch.setattr(report, "build_mlp", build)
    return models
