"""The Python API of docs/architecture.md's data flow, end to end, as users' scripts call it."""

import numpy as np
import synthetic

import kbn


def test_design_api_runs_end_to_end(tmp_path):
    x, y = synthetic.make_images(300, seed=0)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y)
    ds = kbn.load_data(f"npz:{tmp_path / 'd.npz'}", train_size=200, val_size=100, seed=0)
    model = kbn.build_mlp(
        hidden=[8, 6], batch_norm=True, lam=1.8e-4, num_classes=3, adapt=ds.train.x
    )
    result = kbn.train(
        model, ds, kbn.TrainConfig(eta=0.0864, epochs=3, logdir=str(tmp_path), verbose=0)
    )
    assert isinstance(result, kbn.TrainResult)
    assert len(result.history["loss"]) == 3
    assert result.summary["final"]["val_acc"] > 0.5  # chance is 1/3
    checks = kbn.check_gradients(model, ds.train.x[:20], ds.train.y[:20])
    assert [c.param for c in checks][:3] == ["W1", "gamma1", "beta1"]
    assert max(c.rel_error for c in checks) < 1e-6
