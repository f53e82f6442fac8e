"""Tests for kbn.nn.flip_averaging: at inference the model's probabilities are the mean softmax of
each image and its mirror (checked in NumPy), the option survives saving and reaches evaluate,
predict, export and validation, training takes the same steps with it as without, and a model
that does not take images is refused in one KbnError."""

import json

import keras
import numpy as np
import pytest
import synthetic
from PIL import Image

from kbn import Dataset, KbnError, Split, build_mlp, flip_averaged
from kbn.cli import main
from kbn.inference.evaluate import evaluate
from kbn.inference.export import export
from kbn.inference.predict import predict
from kbn.nn.flip_averaging import AverageMirrors, MirrorImages, is_flip_averaged
from kbn.training import TrainConfig, train
from kbn.training.loop import TrainingLoop
from kbn.training.stages import split_fixed_stages

NUM_TRAIN = 120
NUM_VAL = 40
NUM_CLASSES = 3
IMAGE_SHAPE = (4, 6, 3)  # not square: a mirror along the wrong axis would not fit
CLASS_NAMES = ("cat", "dog", "ship")


def make_dataset():
    x, y = synthetic.make_images(NUM_TRAIN + NUM_VAL, 0, NUM_CLASSES, IMAGE_SHAPE)
    return Dataset(
        name="synthetic",
        train=Split(x[:NUM_TRAIN], y[:NUM_TRAIN]),
        val=Split(x[NUM_TRAIN:], y[NUM_TRAIN:]),
        test=None,
        class_names=CLASS_NAMES,
    )


DATA = make_dataset()


def softmax(logits):
    logits = np.asarray(logits, np.float64)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)  # (N, K)


def net(**kwargs):
    return build_mlp(
        [8], NUM_CLASSES, adapt=DATA.train.x, seed=0, class_names=CLASS_NAMES, **kwargs
    )


@pytest.fixture(scope="module")
def trained():
    """(plain, averaged): a net trained 3 epochs with flips, so BatchNorm's moving statistics
    and the centring mean are not their initial values, and the same net averaging."""
    plain = net(flip=True)
    plain.fit(DATA.train.x, DATA.train.y, epochs=3, batch_size=32, verbose=0)
    return plain, flip_averaged(plain)


def mean_of_mirrors(plain, x):
    """The mean softmax of `plain` on x and on x mirrored left to right, in NumPy: (N, K)."""
    return (
        softmax(plain.predict(x, verbose=0)) + softmax(plain.predict(x[:, :, ::-1], verbose=0))
    ) / 2


# --- the numbers ---------------------------------------------------------------------------


def test_averaged_probabilities_are_the_mean_softmax_of_the_image_and_its_mirror(trained):
    plain, averaged = trained
    x = DATA.val.x
    expected = mean_of_mirrors(plain, x)
    assert np.abs(softmax(plain.predict(x, verbose=0)) - expected).max() > 1e-3  # a real change
    logits = averaged.predict(x, verbose=0)  # (N, K): log of the mean probabilities
    np.testing.assert_allclose(np.exp(logits.astype(np.float64)), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(softmax(logits), expected, rtol=1e-5, atol=1e-6)


def test_with_whitening_the_mirror_is_the_whitened_images_as_the_training_flip_sees_it():
    plain = net(whiten=0.1, flip=True, translate=0.1)
    averaged = flip_averaged(plain)
    names = [layer.name for layer in averaged.layers]
    assert names[:7] == [
        "pixels",
        "flatten_pixels",
        "center",
        "whiten",
        "unflatten",
        "mirror",
        "flip",
    ]
    x = DATA.val.x
    # The fixed stages in NumPy: pixels / 255 minus the mean, times the ZCA matrix.
    mean = plain.get_layer("center").get_weights()[0]
    zca = plain.get_layer("whiten").get_weights()[0]
    whitened = ((x.reshape(len(x), -1) / 255 - mean) @ zca).reshape(x.shape).astype(np.float32)
    _, trunk = split_fixed_stages(plain)
    expected = (
        softmax(trunk(whitened, training=False))
        + softmax(trunk(whitened[:, :, ::-1], training=False))
    ) / 2
    np.testing.assert_allclose(softmax(averaged.predict(x, verbose=0)), expected, atol=1e-5)


@pytest.mark.parametrize("translate", [0.0, 0.1])
def test_without_a_training_flip_the_whitened_image_is_mirrored_after_the_fixed_stages(translate):
    plain = net(whiten=0.1, translate=translate)
    built = net(whiten=0.1, translate=translate, test_time_flip=True)
    made = flip_averaged(plain)
    names = [layer.name for layer in built.layers]
    assert names[:6] == ["pixels", "flatten_pixels", "center", "whiten", "unflatten", "mirror"]
    assert [layer.name for layer in made.layers] == names
    # Whitening stays a fixed stage: the loop computes it once per split, not per mini-batch.
    stages, _ = split_fixed_stages(built)
    assert [layer.name for layer in stages.layers][-2:] == ["whiten", "unflatten"]
    x = DATA.val.x
    mean = plain.get_layer("center").get_weights()[0]
    zca = plain.get_layer("whiten").get_weights()[0]
    whitened = ((x.reshape(len(x), -1) / 255 - mean) @ zca).reshape(x.shape).astype(np.float32)
    mirrored = whitened[:, :, ::-1]
    _, trunk = split_fixed_stages(plain)
    if not translate:  # the plain net's trunk takes the flat whitened vectors
        whitened, mirrored = whitened.reshape(len(x), -1), mirrored.reshape(len(x), -1)
    expected = (
        softmax(trunk(whitened, training=False)) + softmax(trunk(mirrored, training=False))
    ) / 2
    for model in (built, made):
        np.testing.assert_allclose(softmax(model.predict(x, verbose=0)), expected, atol=1e-5)


def test_a_probability_that_underflows_gives_a_finite_log():
    logits = np.array([[0.0, -200.0, 200.0], [0.0, 200.0, -200.0]], np.float32)  # row 1: mirror
    out = AverageMirrors()(logits, training=False).numpy()
    assert out.shape == (1, 3) and np.isfinite(out).all()
    np.testing.assert_allclose(np.exp(out), [[0.0, 0.5, 0.5]], atol=1e-7)


def test_both_layers_pass_their_input_through_in_training():
    x = DATA.val.x[:5].astype(np.float32)
    np.testing.assert_array_equal(MirrorImages()(x, training=True), x)
    logits = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    np.testing.assert_array_equal(AverageMirrors()(logits, training=True), logits)
    stacked = MirrorImages()(x, training=False).numpy()
    np.testing.assert_array_equal(stacked, np.concatenate([x, x[:, :, ::-1]]))


# --- where the option comes from ------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs", [{}, {"flip": True}, {"whiten": 0.1}, {"whiten": 0.1, "flip": True, "translate": 0.1}]
)
def test_build_mlp_with_test_time_flip_is_flip_averaged_of_the_plain_net(kwargs):
    built = net(test_time_flip=True, **kwargs)
    made = flip_averaged(net(**kwargs))
    assert [layer.name for layer in built.layers] == [layer.name for layer in made.layers]
    assert is_flip_averaged(built) and not is_flip_averaged(net(**kwargs))
    np.testing.assert_allclose(
        built.predict(DATA.val.x, verbose=0), made.predict(DATA.val.x, verbose=0), rtol=1e-6
    )


def test_flip_averaged_leaves_the_model_alone_and_can_be_undone(trained):
    plain, averaged = trained
    assert not is_flip_averaged(plain) and plain.get_layer("flip") is not averaged.get_layer("flip")
    assert flip_averaged(averaged) is averaged and flip_averaged(plain, False) is plain
    undone = flip_averaged(averaged, False)
    assert [layer.name for layer in undone.layers] == [layer.name for layer in plain.layers]
    np.testing.assert_array_equal(
        undone.predict(DATA.val.x, verbose=0), plain.predict(DATA.val.x, verbose=0)
    )


def test_flip_averaged_compiles_the_new_model_as_the_old_one_was():
    from kbn.nn.builder import compile_model

    plain = net(flip=True)
    compile_model(plain, keras.optimizers.SGD(0.05, momentum=0.5), label_smoothing=0.2)
    averaged = flip_averaged(plain)
    assert averaged.loss.get_config()["label_smoothing"] == 0.2
    assert averaged.optimizer is not plain.optimizer
    assert averaged.optimizer.get_config()["momentum"] == 0.5
    uncompiled = keras.Model(plain.inputs, plain.outputs)
    assert not flip_averaged(uncompiled).compiled


def test_saving_and_loading_keeps_the_averaging_and_the_predictions(trained, tmp_path):
    _, averaged = trained
    averaged.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert is_flip_averaged(loaded)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in averaged.layers]
    np.testing.assert_allclose(
        loaded.predict(DATA.val.x, verbose=0), averaged.predict(DATA.val.x, verbose=0), rtol=1e-6
    )


# --- training is one pass, validation averages -----------------------------------------------


@pytest.mark.parametrize(
    "kwargs", [{"whiten": 0.1, "flip": True, "translate": 0.1}, {"flip": True}]
)
def test_training_takes_the_same_steps_with_the_option_and_validation_averages(kwargs, tmp_path):
    config = TrainConfig(eta=0.05, epochs=2, batch_size=16, seed=0, logdir=str(tmp_path), verbose=0)
    plain, averaged = net(**kwargs), net(test_time_flip=True, **kwargs)
    assert (TrainingLoop(plain).stages is None) == (TrainingLoop(averaged).stages is None)
    first = train(plain, DATA, config)
    second = train(averaged, DATA, config)
    for a, b in zip(plain.get_weights(), averaged.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert second.history["loss"] == first.history["loss"]
    assert second.history["accuracy"] == first.history["accuracy"]
    loss, accuracy = averaged.evaluate(DATA.val.x, DATA.val.y, verbose=0)
    assert second.history["val_loss"][-1] == pytest.approx(loss, rel=1e-5)
    assert second.history["val_accuracy"][-1] == pytest.approx(accuracy, abs=1e-7)
    assert second.history["val_loss"][-1] != pytest.approx(first.history["val_loss"][-1])


# --- evaluate, predict, export ----------------------------------------------------------------


def test_evaluate_counts_the_argmax_of_the_averaged_probabilities(trained):
    plain, averaged = trained
    result = evaluate(averaged, DATA, "val")
    p = mean_of_mirrors(plain, DATA.val.x)
    assert result["accuracy"] == pytest.approx(np.mean(p.argmax(axis=1) == DATA.val.y), abs=1e-7)
    nll = -np.log(p[np.arange(NUM_VAL), DATA.val.y]).mean()
    assert result["loss"] == pytest.approx(nll, rel=1e-5)


def test_predict_gives_the_averaged_probabilities(trained, tmp_path):
    plain, averaged = trained
    images = DATA.val.x[:6]
    files = []
    for i, image in enumerate(images):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(image).save(files[-1])
    expected = mean_of_mirrors(plain, images)
    for r, p in zip(predict(averaged, files, top=NUM_CLASSES), expected, strict=True):
        assert [t["index"] for t in r["top"]] == list(np.argsort(-p, kind="stable"))
        assert [t["probability"] for t in r["top"]] == pytest.approx(sorted(p)[::-1], abs=1e-6)


def test_the_exported_serving_function_gives_the_averaged_probabilities(trained, tmp_path):
    import tensorflow as tf

    plain, averaged = trained
    averaged.save(tmp_path / "m.keras")
    serve = tf.saved_model.load(str(export(tmp_path / "m.keras", tmp_path / "served")))
    out = serve.signatures["serving_default"](images=tf.constant(DATA.val.x))
    expected = mean_of_mirrors(plain, DATA.val.x)
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-6)
    np.testing.assert_array_equal(out["classes"].numpy(), expected.argmax(axis=1))


def test_the_model_card_lists_the_averaging_among_the_layers(trained):
    from kbn.inference.card import model_card

    _, averaged = trained
    text = model_card(averaged, DATA, evaluate(averaged, DATA, "val"))
    assert "mirror (each image and its left-right mirror, inference only)" in text
    assert "average_mirrors (log of the mean softmax of an image and its mirror" in text


def test_cli_evaluate_test_time_flip_turns_the_averaging_on_and_off(trained, tmp_path, capsys):
    plain, averaged = trained
    np.savez(
        tmp_path / "data.npz",
        x_train=DATA.val.x,
        y_train=DATA.val.y,
        class_names=np.array(CLASS_NAMES),
    )
    for model, name in ((plain, "plain"), (averaged, "averaged")):
        model.save(tmp_path / f"{name}.keras")

    def accuracy(name, *flags):
        argv = ["evaluate", str(tmp_path / f"{name}.keras"), "--data", f"npz:{tmp_path}/data.npz"]
        status = main([*argv, "--split", "train", "--val-size", "0", *flags, "--json"])
        captured = capsys.readouterr()
        assert status == 0, captured.err
        return json.loads(captured.out.strip().splitlines()[-1])["accuracy"]

    with_flips = evaluate(averaged, DATA, "val")["accuracy"]
    without = evaluate(plain, DATA, "val")["accuracy"]
    assert accuracy("averaged") == accuracy("plain", "--test-time-flip") == with_flips
    assert accuracy("plain") == accuracy("averaged", "--no-test-time-flip") == without


def test_cli_train_test_time_flip_saves_an_averaging_model(tmp_path):
    np.savez(tmp_path / "data.npz", x_train=DATA.train.x, y_train=DATA.train.y)
    argv = ["train", "--data", f"npz:{tmp_path}/data.npz", "--val-size", "20", "--hidden", "8"]
    argv += ["--epochs", "1", "--flip", "--test-time-flip", "--logdir", str(tmp_path / "logs")]
    assert main([*argv, "--save", str(tmp_path / "m.keras"), "--no-model-card", "--json"]) == 0
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert [layer.name for layer in loaded.layers][1:3] == ["mirror", "flip"]
    assert loaded.layers[-1].name == "average_mirrors"


# --- bad input --------------------------------------------------------------------------------


def test_a_model_of_flat_vectors_is_refused_in_one_kbn_error():
    flat = build_mlp([4], NUM_CLASSES, input_shape=(16,))
    with pytest.raises(KbnError, match=r"mirrors images of shape \(H, W, C\).*\(16,\)"):
        flip_averaged(flat)
    with pytest.raises(KbnError, match=r"test_time_flip .* Received: input_shape=\(16,\)"):
        build_mlp([4], NUM_CLASSES, input_shape=(16,), test_time_flip=True)


def test_a_model_that_does_not_give_logits_per_image_is_refused():
    inputs = keras.Input(IMAGE_SHAPE)
    maps = keras.Model(inputs, keras.layers.Conv2D(2, 1)(inputs), name="maps")
    with pytest.raises(KbnError, match=r"probabilities of shape \(N, K\).*'maps'"):
        flip_averaged(maps)


def test_cli_train_test_time_flip_on_flat_data_is_one_error_line(tmp_path, capsys):
    x = np.random.default_rng(0).integers(0, 255, (40, 16)).astype(np.uint8)
    np.savez(tmp_path / "flat.npz", x_train=x, y_train=np.arange(40) % 2)
    argv = ["train", "--data", f"npz:{tmp_path}/flat.npz", "--val-size", "10", "--epochs", "0"]
    assert main([*argv, "--test-time-flip", "--logdir", str(tmp_path)]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: test_time_flip averages over images of shape (H, W, C)")
    assert line.endswith("Received: input_shape=(16,)")
