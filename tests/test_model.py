"""Tests for kbn.nn.builder: the builder's layers, preprocessing, compiled loss, initializers,
seeds, float64, and the report's claim that batch norm rescues a tiny init."""

import re

import keras
import numpy as np
import pytest

from kbn.errors import KbnError
from kbn.nn import BatchNorm, Dense, SoftmaxCrossEntropy
from kbn.nn.builder import build_mlp, compile_model, kernel_initializer, loss
from kbn.training.stages import split_fixed_stages

NUM_SAMPLES = 64
NUM_FEATURES = 6
NUM_CLASSES = 3
IMAGE_SHAPE = (4, 5, 3)


def kbn_layers(model, cls):
    return [layer for layer in model.layers if type(layer) is cls]


def raw_images(n=NUM_SAMPLES, shape=IMAGE_SHAPE, seed=0):
    """uint8-valued pixels with a different brightness per position, 0 and 255 included."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, *shape)).astype("uint8")
    x[0] = 0
    x[1] = 255
    return x


# --- layers -------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_norm", [True, False], ids=["bn", "no_bn"])
@pytest.mark.parametrize("k", range(1, 10))
def test_builder_makes_k_layers_for_k_from_1_to_9(k, batch_norm):
    model = build_mlp(
        [8] * (k - 1), NUM_CLASSES, batch_norm=batch_norm, input_shape=(NUM_FEATURES,)
    )
    dense = kbn_layers(model, Dense)
    assert len(dense) == k
    assert len(kbn_layers(model, BatchNorm)) == (k - 1 if batch_norm else 0)
    assert [layer.units for layer in dense] == [8] * (k - 1) + [NUM_CLASSES]
    # Order after preprocessing: [Dense, (BatchNorm,) ReLU] * (k - 1), Dense.
    block = ["Dense", "BatchNorm", "ReLU"] if batch_norm else ["Dense", "ReLU"]
    names = [type(layer).__name__ for layer in model.layers]
    assert names == ["InputLayer", "Flatten", "Centering"] + block * (k - 1) + ["Dense"]
    logits = model(np.ones((5, NUM_FEATURES), "float32"))
    assert tuple(logits.shape) == (5, NUM_CLASSES)
    assert model.output_shape == (None, NUM_CLASSES)


@pytest.mark.parametrize("batch_norm", [True, False])
def test_dense_before_batch_norm_has_no_bias_and_the_last_dense_has_one(batch_norm):
    model = build_mlp([8, 8], NUM_CLASSES, batch_norm=batch_norm, input_shape=(NUM_FEATURES,))
    *hidden, last = kbn_layers(model, Dense)
    for layer in hidden:
        assert layer.use_bias is (not batch_norm)
        assert len(layer.trainable_weights) == (1 if batch_norm else 2)
    assert last.use_bias and len(last.trainable_weights) == 2
    num_params = (6 * 8 + 8 * 8 + 8 * 3 + 3) + (2 * (2 * 8) if batch_norm else 2 * 8)
    # + moving statistics, + the centering mean (one per input feature)
    assert model.count_params() == num_params + (2 * 2 * 8 if batch_norm else 0) + NUM_FEATURES


def test_batch_norm_options_reach_every_batch_norm_layer():
    model = build_mlp(
        [8, 8],
        NUM_CLASSES,
        input_shape=(NUM_FEATURES,),
        momentum=0.7,
        epsilon=1e-5,
        center=False,
        scale=True,
    )
    bns = kbn_layers(model, BatchNorm)
    assert len(bns) == 2
    for layer in bns:
        options = (layer.momentum, layer.epsilon, layer.center, layer.scale)
        assert options == (0.7, 1e-5, False, True)
        assert [w.path.split("/")[-1] for w in layer.trainable_weights] == ["gamma"]


def test_l2_reaches_every_kernel():
    model = build_mlp([8, 8], NUM_CLASSES, lam=0.01, input_shape=(NUM_FEATURES,))
    expected = sum(0.01 * np.sum(layer.kernel.numpy() ** 2) for layer in kbn_layers(model, Dense))
    assert len(model.losses) == 3
    np.testing.assert_allclose(float(sum(model.losses)), expected, rtol=1e-5)


# --- preprocessing ------------------------------------------------------------------------


def test_preprocessing_maps_raw_pixels_to_unit_range_minus_the_adapt_mean():
    x = raw_images()
    model = build_mlp([8], NUM_CLASSES, adapt=x)
    assert model.input_shape == (None, *IMAGE_SHAPE)

    centered = keras.Model(model.input, model.get_layer("center").output)(x).numpy()
    assert centered.shape == (NUM_SAMPLES, int(np.prod(IMAGE_SHAPE)))
    np.testing.assert_allclose(centered.mean(axis=0), 0.0, atol=1e-6)
    flat = x.reshape(NUM_SAMPLES, -1) / 255.0
    assert np.abs(flat.mean(axis=0)).min() > 0.3  # the mean was really subtracted
    np.testing.assert_allclose(centered, flat - flat.mean(axis=0), atol=1e-6)

    # Raw uint8 images go in as they come and give the same logits as floats.
    logits = model.predict(x, verbose=0)
    assert logits.shape == (NUM_SAMPLES, NUM_CLASSES)
    np.testing.assert_allclose(logits, model.predict(x.astype("float32"), verbose=0))


def test_without_adapt_the_model_takes_input_shape_and_subtracts_nothing():
    x = raw_images(n=4)
    model = build_mlp([8], NUM_CLASSES, input_shape=IMAGE_SHAPE)
    centered = keras.Model(model.input, model.get_layer("center").output)(x).numpy()
    np.testing.assert_allclose(centered, x.reshape(4, -1) / 255.0, atol=1e-7)


# --- compiled loss ------------------------------------------------------------------------


def test_model_is_compiled_with_softmax_cross_entropy_from_logits():
    model = build_mlp([], NUM_CLASSES, batch_norm=False, input_shape=(2,))
    assert isinstance(model.loss, SoftmaxCrossEntropy)
    assert model.loss.label_smoothing == 0.0
    assert isinstance(loss(), SoftmaxCrossEntropy)

    # Raw 255 * I becomes I after rescaling, so the logits are the rows of W plus b.
    W = np.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    b = np.array([0.5, 0.0, 0.0])
    kbn_layers(model, Dense)[0].set_weights([W, b])
    x = np.array([[255, 0], [0, 255]], "float32")
    labels = np.array([0, 2])
    logits = np.array([[2.5, 0.0, -1.0], [0.5, 1.0, 0.0]])
    np.testing.assert_allclose(model.predict(x, verbose=0), logits, rtol=1e-6)

    by_hand = np.mean(
        [np.log(np.exp(row).sum()) - row[label] for row, label in zip(logits, labels)]
    )
    assert by_hand == pytest.approx(0.8933, abs=1e-4)  # (0.1064 + 1.6803) / 2
    result = model.evaluate(x, labels, verbose=0, return_dict=True)
    assert result["loss"] == pytest.approx(by_hand, rel=1e-5)
    assert result["accuracy"] == pytest.approx(0.5)


# --- initializers and seeds ---------------------------------------------------------------

FAN_IN, FAN_OUT = 400, 300


@pytest.mark.parametrize(
    "init, stddev",
    [
        ("he", np.sqrt(2 / FAN_IN)),
        ("xavier", np.sqrt(2 / (FAN_IN + FAN_OUT))),
        ("small", 1e-4),
    ],
)
def test_initializers_have_the_documented_spread(init, stddev):
    direct = keras.ops.convert_to_numpy(kernel_initializer(init, seed=1)((FAN_IN, FAN_OUT)))
    model = build_mlp([FAN_OUT], NUM_CLASSES, init=init, input_shape=(FAN_IN,), seed=1)
    in_model = model.get_layer("dense1").kernel.numpy()
    for kernel in (direct, in_model):
        assert kernel.shape == (FAN_IN, FAN_OUT)
        assert kernel.std() == pytest.approx(stddev, rel=0.03)
        assert abs(kernel.mean()) < 0.05 * stddev


def test_unknown_init_raises_value_error_naming_it():
    with pytest.raises(ValueError, match=re.escape("Received: init='uniform'")):
        kernel_initializer("uniform")
    with pytest.raises(ValueError, match=re.escape("Received: init='uniform'")):
        build_mlp([8], NUM_CLASSES, init="uniform", input_shape=(NUM_FEATURES,))


def test_same_seed_gives_identical_weights_and_another_seed_different_ones():
    def weights(seed):
        model = build_mlp([8, 8], NUM_CLASSES, input_shape=(NUM_FEATURES,), seed=seed)
        keras.random.normal((3,))  # global random state moves between builds
        np.random.rand(3)
        return [w.numpy() for w in model.weights]

    first, again, other = weights(7), weights(7), weights(8)
    assert len(first) == len(again) == len(other) == 13  # 12 + the centering mean
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    kernels = [i for i, w in enumerate(first) if w.ndim == 2]
    assert len(kernels) == 3
    for i in kernels:
        assert not np.allclose(first[i], other[i])


# --- the report's claim -------------------------------------------------------------------


def blobs(n=200, d=16, k=3, seed=0):
    """k Gaussian blobs in d dimensions, as raw 0..255 pixel values."""
    rng = np.random.default_rng(seed)
    centers = 3.0 * rng.standard_normal((k, d))
    labels = rng.integers(0, k, n)
    x = centers[labels] + rng.standard_normal((n, d))
    return ((x - x.min()) / (x.max() - x.min()) * 255).astype("float32"), labels


def test_small_init_without_batch_norm_cannot_learn_but_with_batch_norm_can():
    x, labels = blobs()
    majority = np.bincount(labels).max() / len(labels)
    assert majority < 0.45
    results = {}
    for batch_norm in (False, True):
        # epsilon far below the tiny first-layer variance (~1e-9), as in the report;
        # Keras's 1e-3 would swamp it and normalise nothing.
        model = build_mlp(
            [16, 16, 16],
            3,
            batch_norm=batch_norm,
            init="small",
            adapt=x,
            momentum=0.9,
            epsilon=1e-8,
            seed=0,
        )
        model.compile(
            optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
            loss=loss(),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )
        model.fit(x, labels, batch_size=20, epochs=5, verbose=0)
        results[batch_norm] = model.evaluate(x, labels, verbose=0, return_dict=True)
    assert results[False]["accuracy"] <= majority + 0.02
    assert results[False]["loss"] > 0.95 * np.log(3)  # still the uniform guess
    assert results[True]["accuracy"] >= 0.9
    assert results[True]["loss"] < 0.5


# --- float64 ------------------------------------------------------------------------------


@pytest.mark.parametrize("global_floatx", [False, True])
def test_float64_model_has_only_float64_weights(global_floatx):
    if global_floatx:
        keras.config.set_floatx("float64")
        dtype = None
    else:
        dtype = "float64"
    x = raw_images(n=8)
    model = build_mlp([8, 8], NUM_CLASSES, adapt=x, dtype=dtype)
    assert len(model.weights) == 13  # 12 + the centering mean
    for w in model.weights:
        assert keras.backend.standardize_dtype(w.dtype) == "float64", w.path
    logits = model(x.astype("float64"), training=True)
    assert keras.backend.standardize_dtype(logits.dtype) == "float64"
    centered = keras.Model(model.input, model.get_layer("center").output)(x.astype("float64"))
    assert keras.backend.standardize_dtype(centered.dtype) == "float64"
    history = model.fit(x, np.arange(8) % NUM_CLASSES, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])

    # Every step after preprocessing computes in float64: the logits match a float64
    # NumPy forward pass (preprocessing: test_float64_preprocessing_is_exact).
    assert keras.backend.standardize_dtype(model.input.dtype) == "float64"
    for layer in model.layers[1:]:  # after the InputLayer
        assert layer.compute_dtype == "float64", layer.name
    h = centered.numpy()
    *hidden, last = kbn_layers(model, Dense)
    for dense, bn in zip(hidden, kbn_layers(model, BatchNorm)):
        h = h @ dense.kernel.numpy()
        inv_std = 1 / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
        h = (h - bn.moving_mean.numpy()) * inv_std * bn.gamma.numpy() + bn.beta.numpy()
        h = np.maximum(h, 0.0)
    expected = h @ last.kernel.numpy() + last.bias.numpy()
    np.testing.assert_allclose(model(x.astype("float64")).numpy(), expected, rtol=1e-11, atol=1e-11)


def test_float64_preprocessing_is_exact():
    x = raw_images(n=8)
    model = build_mlp([8], NUM_CLASSES, adapt=x, dtype="float64")
    centered = keras.Model(model.input, model.get_layer("center").output)(x.astype("float64"))
    flat = x.reshape(8, -1).astype("float64")
    expected = flat / 255 - flat.mean(0) / 255
    np.testing.assert_allclose(centered.numpy(), expected, rtol=0, atol=1e-15)


def test_float64_model_with_l2_penalty_evaluates_and_fits():
    x = raw_images(n=8)
    labels = np.arange(8) % NUM_CLASSES
    model = build_mlp([8], NUM_CLASSES, adapt=x, lam=0.01, dtype="float64")
    penalty = float(sum(model.losses))
    plain = build_mlp([8], NUM_CLASSES, adapt=x, lam=0.0, dtype="float64")
    plain.set_weights(model.get_weights())
    expected = plain.evaluate(x, labels, verbose=0, return_dict=True)["loss"] + penalty
    assert model.evaluate(x, labels, verbose=0, return_dict=True)["loss"] == pytest.approx(
        expected, rel=1e-6
    )
    assert np.isfinite(model.fit(x, labels, epochs=1, verbose=0).history["loss"][0])


# --- arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, received",
    [
        ({"hidden": [0]}, "hidden=[0]"),
        ({"hidden": [8, -3]}, "hidden=[8, -3]"),
        ({"hidden": [8, 2.5]}, "hidden=[8, 2.5]"),
        ({"num_classes": 1}, "Received: 1"),
        ({"num_classes": 0}, "Received: 0"),
    ],
)
def test_bad_widths_and_class_counts_raise_value_error(kwargs, received):
    kwargs = {"hidden": [8], "num_classes": NUM_CLASSES, **kwargs}
    with pytest.raises(ValueError, match=re.escape(received)):
        build_mlp(input_shape=(NUM_FEATURES,), **kwargs)


def test_neither_adapt_nor_input_shape_raises_value_error():
    with pytest.raises(ValueError, match="adapt .* or input_shape"):
        build_mlp([8], NUM_CLASSES)


def test_empty_adapt_raises_value_error():
    with pytest.raises(ValueError, match="Received: 0"):
        build_mlp([8], NUM_CLASSES, adapt=np.zeros((0, *IMAGE_SHAPE), "uint8"))


def test_inputs_already_scaled_to_zero_one_are_refused_unless_rescale_is_one():
    pixels = np.random.default_rng(0).integers(0, 256, (20, *IMAGE_SHAPE)).astype("float32")
    with pytest.raises(KbnError, match=r"already scaled to \[0, 1\].*build_mlp\(rescale=1\)"):
        build_mlp([8], NUM_CLASSES, adapt=pixels / 255)
    build_mlp([8], NUM_CLASSES, adapt=pixels / 255, rescale=1.0)
    build_mlp([8], NUM_CLASSES, adapt=pixels)  # raw values, as float
    build_mlp([8], NUM_CLASSES, adapt=pixels / 255 - 0.5)  # centred: not pixels in [0, 1]


def test_numpy_integer_widths_are_accepted():
    model = build_mlp(np.array([8, 4]), np.int64(NUM_CLASSES), input_shape=(NUM_FEATURES,))
    assert [layer.units for layer in kbn_layers(model, Dense)] == [8, 4, NUM_CLASSES]


# --- regularisers of the cifar10-mlp recipe: dropout, augmentation, label smoothing ------


def test_dropout_follows_every_hidden_relu_and_acts_only_in_training():
    model = build_mlp([8, 8], NUM_CLASSES, input_shape=(NUM_FEATURES,), dropout=0.5, seed=0)
    names = [type(layer).__name__ for layer in model.layers]
    assert names[3:] == ["Dense", "BatchNorm", "ReLU", "Dropout"] * 2 + ["Dense"]
    assert all(layer.rate == 0.5 for layer in model.layers if type(layer).__name__ == "Dropout")
    x = np.random.default_rng(0).normal(size=(16, NUM_FEATURES)).astype("float32")
    inference = model(x, training=False).numpy()
    np.testing.assert_array_equal(model(x, training=False).numpy(), inference)
    assert not np.allclose(model(x, training=True).numpy(), model(x, training=True).numpy())


def test_horizontal_flip_gives_the_image_or_its_mirror_in_training_and_the_image_at_inference():
    x = raw_images(32)
    model = build_mlp([], NUM_CLASSES, adapt=x, flip=True, seed=0)
    assert [type(layer).__name__ for layer in model.layers][:3] == [
        "InputLayer",
        "RandomFlip",
        "Flatten",
    ]
    plain = model(x, training=False).numpy()
    mirrored = model(x[:, :, ::-1], training=False).numpy()
    assert not np.allclose(plain, mirrored, atol=1e-4)
    trained = model(x, training=True).numpy()
    is_plain = np.isclose(trained, plain, atol=1e-4).all(axis=1)
    is_mirrored = np.isclose(trained, mirrored, atol=1e-4).all(axis=1)
    assert (is_plain | is_mirrored).all()
    assert 0 < is_mirrored.sum() < len(x)  # about half of them flipped


def test_translation_shifts_training_images_within_its_fraction_and_leaves_inference_alone():
    x = np.zeros((8, 8, 8, 1), "uint8")
    x[:, 3:5, 3:5] = 255  # a bright 2x2 square in the middle
    model = build_mlp([], NUM_CLASSES, input_shape=x.shape[1:], translate=0.25, seed=0)
    layer = model.get_layer("translate")
    np.testing.assert_array_equal(layer(x.astype("float32"), training=False), x)
    shifted = keras.ops.convert_to_numpy(layer(x.astype("float32"), training=True))
    assert not np.allclose(shifted, x)
    # The square moves by at most 0.25 * 8 = 2 pixels each way: its centre of mass stays
    # inside the 4x4 block around the image's centre.
    rows, cols = np.indices((8, 8))
    weight = shifted[..., 0].sum(axis=(1, 2))
    centre_row = (shifted[..., 0] * rows).sum(axis=(1, 2)) / weight
    centre_col = (shifted[..., 0] * cols).sum(axis=(1, 2)) / weight
    assert (np.abs(centre_row - 3.5) <= 2.0 + 1e-4).all() and (
        np.abs(centre_col - 3.5) <= 2.0 + 1e-4
    ).all()


@pytest.mark.parametrize("kwargs", [{"flip": True}, {"translate": 0.1}])
def test_augmentation_of_inputs_that_are_not_images_raises_value_error(kwargs):
    with pytest.raises(ValueError, match=r"augment images of shape \(H, W, C\).*\(6,\)"):
        build_mlp([8], NUM_CLASSES, input_shape=(NUM_FEATURES,), **kwargs)


@pytest.mark.parametrize("kwargs", [{"dropout": 1.0}, {"dropout": -0.1}, {"translate": 1.5}])
def test_rates_outside_zero_to_one_raise_value_error(kwargs):
    with pytest.raises(ValueError, match="must be in \\[0, 1\\)"):
        build_mlp([8], NUM_CLASSES, input_shape=IMAGE_SHAPE, **kwargs)


def test_label_smoothing_loss_is_cross_entropy_against_the_smoothed_one_hot_target():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 4))
    labels = np.array([0, 3, 1, 1, 2])
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    target = 0.9 * np.eye(4)[labels] + 0.1 / 4
    expected = -(target * log_p).sum(axis=1).mean()
    assert float(loss(0.1)(labels, logits)) == pytest.approx(expected, rel=1e-6)
    plain = -log_p[np.arange(5), labels].mean()
    assert float(loss(0.0)(labels, logits)) == pytest.approx(plain, rel=1e-6)
    assert float(loss(0.1)(labels, logits)) > plain  # the smoothed target costs confidence


def test_a_model_compiled_with_label_smoothing_saves_and_loads_with_it(tmp_path):
    model = build_mlp(
        [8], NUM_CLASSES, adapt=raw_images(), flip=True, translate=0.1, dropout=0.3, seed=0
    )
    compile_model(model, keras.optimizers.SGD(0.1), label_smoothing=0.2)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.loss.get_config()["label_smoothing"] == 0.2
    x = raw_images(8, seed=1)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)


# --- class names -----------------------------------------------------------------------------


def test_class_names_survive_saving_and_loading(tmp_path):
    from kbn.nn.builder import class_names

    x = np.random.default_rng(0).integers(0, 255, (NUM_SAMPLES,) + IMAGE_SHAPE).astype("uint8")
    model = build_mlp([4], NUM_CLASSES, adapt=x, class_names=("cat", "dog", "ship"))
    assert class_names(model) == ["cat", "dog", "ship"]
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert class_names(loaded) == ["cat", "dog", "ship"]


def test_class_names_of_a_model_without_names_are_the_indices():
    from kbn.nn.builder import class_names

    assert class_names(build_mlp([4], NUM_CLASSES, input_shape=IMAGE_SHAPE)) == ["0", "1", "2"]
    plain = keras.Sequential([keras.Input((NUM_FEATURES,)), keras.layers.Dense(4)])
    assert class_names(plain) == ["0", "1", "2", "3"]


@pytest.mark.parametrize(
    "names", [("a", "b"), "abc", ("a", "b", 3)], ids=["too-few", "a-string", "not-str"]
)
def test_class_names_must_be_one_string_per_class(names):
    with pytest.raises(ValueError, match="class_names"):
        build_mlp([4], NUM_CLASSES, input_shape=IMAGE_SHAPE, class_names=names)


# --- renamed arguments -----------------------------------------------------------------------


def test_old_argument_names_still_work_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match="l2= is now lam="):
        old = build_mlp([4], NUM_CLASSES, input_shape=(NUM_FEATURES,), l2=0.01)
    with pytest.warns(DeprecationWarning, match="momentum= is now bn_momentum="):
        old_bn = build_mlp([4], NUM_CLASSES, input_shape=(NUM_FEATURES,), momentum=0.5)
    new = build_mlp([4], NUM_CLASSES, input_shape=(NUM_FEATURES,), lam=0.01, bn_momentum=0.5)
    assert old.get_layer("dense1").lam == new.get_layer("dense1").lam == 0.01
    assert old_bn.get_layer("batch_norm1").momentum == new.get_layer("batch_norm1").momentum == 0.5
    with pytest.raises(TypeError, match="unexpected keyword argument 'lambda_'"):
        build_mlp([4], NUM_CLASSES, input_shape=(NUM_FEATURES,), lambda_=0.1)


def test_flip_on_flat_vectors_is_a_kbn_error_naming_the_shape():
    from kbn import KbnError

    with pytest.raises(
        KbnError, match=r"images of shape \(H, W, C\). Received: input_shape=\(16,\)"
    ):
        build_mlp([4], NUM_CLASSES, input_shape=(16,), flip=True)


def test_whitening_comes_before_the_augmentation_as_fixed_stages_and_survives_saving(tmp_path):
    x = raw_images(64)
    model = build_mlp([8], NUM_CLASSES, adapt=x, whiten=1e-2, flip=True, translate=0.1, seed=0)
    names = [layer.name for layer in model.layers]
    assert names[:8] == [
        "pixels",
        "flatten_pixels",
        "center",
        "whiten",
        "unflatten",
        "flip",
        "translate",
        "flatten",
    ]
    stages, _ = split_fixed_stages(model)
    assert [layer.name for layer in stages.layers][1:] == [
        "flatten_pixels",
        "center",
        "whiten",
        "unflatten",
    ]
    # The stages centre and whiten: the training images' features come out decorrelated.
    y = stages(x, training=False).numpy().reshape(len(x), -1)
    assert np.abs(y.mean(axis=0)).max() < 1e-4
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5
    )


def test_whitening_without_augmentation_feeds_the_dense_layers_directly():
    x = raw_images(64)
    model = build_mlp([8], NUM_CLASSES, adapt=x, whiten=1e-2, seed=0)
    assert [layer.name for layer in model.layers][:5] == [
        "pixels",
        "flatten_pixels",
        "center",
        "whiten",
        "dense1",
    ]


def test_pca_projects_the_augmented_images_onto_k_components_and_survives_saving(tmp_path):
    x = raw_images(64)
    model = build_mlp(
        [8], NUM_CLASSES, adapt=x, whiten=1e-2, pca=5, flip=True, translate=0.1, seed=0
    )
    names = [layer.name for layer in model.layers]
    assert names[5:10] == ["flip", "translate", "flatten", "pca", "dense1"]
    assert model.get_layer("dense1").kernel.shape == (5, 8)
    # The whitened, augmented images' 5 leading components are what the first layer sees.
    stages, trunk = split_fixed_stages(model)
    assert stages.layers[-1].name == "unflatten"
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5
    )
    # Without augmentation the projection is a fixed stage too, computed once per split.
    plain = build_mlp([8], NUM_CLASSES, adapt=x, pca=5, seed=0)
    stages, _ = split_fixed_stages(plain)
    assert [layer.name for layer in stages.layers][1:] == ["flatten", "center", "pca"]
    assert stages(x).shape == (64, 5)


def test_pca_needs_adapt_and_at_most_the_inputs_values():
    with pytest.raises(KbnError, match="pca learns its components from the training inputs"):
        build_mlp([8], NUM_CLASSES, input_shape=(4, 4, 3), pca=4)
    with pytest.raises(KbnError, match=r"at most the 60 values of an input \(0 keeps them all\)"):
        build_mlp([8], NUM_CLASSES, adapt=raw_images(8), pca=61)
    with pytest.raises(KbnError, match="pca must be 0"):
        build_mlp([8], NUM_CLASSES, adapt=raw_images(8), pca=-1)


def test_whitening_needs_adapt_and_a_non_negative_epsilon():
    with pytest.raises(KbnError, match="pass adapt=x_train"):
        build_mlp([8], NUM_CLASSES, input_shape=(4, 4, 3), whiten=1e-2)
    with pytest.raises(KbnError, match="whiten must be 0"):
        build_mlp([8], NUM_CLASSES, adapt=raw_images(8), whiten=-1.0)
