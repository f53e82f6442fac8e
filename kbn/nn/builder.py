"""build_mlp(): a k-layer fully connected classifier from a list of widths.

The network of the report (DD2424 assignment 3: k-layer networks with batch
normalization), as one Keras functional model that owns its
preprocessing, so a saved model takes raw pixels exactly as a data source
yields them:

    pixels (N, H, W, C) -> [random flip, random shift: training only]
      -> flatten -> / 255 minus the training mean
      -> [Dense -> BatchNorm -> ReLU -> (Dropout)] x (k - 1) -> Dense -> logits (N, K)

With ZCA whitening (`whiten`), the fixed stages come first, so that a
training run computes them once (`kbn.training.loop.split_fixed_stages`), and the
augmentation moves the whitened images:

    pixels -> flatten -> / 255 minus the mean -> whiten -> reshape (N, H, W, C)
      -> [random flip, random shift] -> flatten -> the layers above

With `pca`, a fixed projection onto the leading principal components comes
last, after the augmentation, so that the first Dense takes k inputs instead
of H * W * C:

    ... -> flatten -> PrincipalComponents (N, k) -> the layers above

With test-time flip averaging (`test_time_flip`), `MirrorImages` stacks each
image's mirror under the images just before the random flip, or where it
would be without one (after the whitening, else before everything), and
`AverageMirrors` turns the logits of each pair into the log of their mean
softmax; both do nothing in training (`kbn.nn.flip_averaging`).

The model comes compiled with the loss that matches its logits (softmax
cross-entropy, `kbn.nn.SoftmaxCrossEntropy`) and an accuracy metric, so `fit`,
`evaluate` and the gradient checker cannot pair it with the wrong loss.
"""

import warnings
from collections.abc import Sequence

import keras
import numpy as np

from kbn.errors import KbnError
from kbn.nn import precision as precision_lib
from kbn.nn.batch_norm import BatchNorm
from kbn.nn.cross_entropy import SoftmaxCrossEntropy
from kbn.nn.dense import Dense
from kbn.nn.flip_averaging import AverageMirrors, MirrorImages
from kbn.nn.preprocessing import Centering, PrincipalComponents, Whitening, principal_axes
from kbn.optim.sgd import SGD

INITS = ("he", "xavier", "small")
SMALL_INIT_STDDEV = 1e-4  # the report's tiny init: without BN the signal dies


def kernel_initializer(init: str, seed: int | None = None) -> keras.initializers.Initializer:
    """The Keras initializer for a kbn `init` name.

    `he`: N(0, 2 / fan_in), for ReLU nets. `xavier`: N(0, 2 / (fan_in +
    fan_out)). `small`: N(0, 1e-4^2), the report's tiny init, where a deep
    net without batch normalisation cannot learn.
    """
    if init == "he":
        return keras.initializers.HeNormal(seed=seed)
    if init == "xavier":
        return keras.initializers.GlorotNormal(seed=seed)
    if init == "small":
        return keras.initializers.RandomNormal(stddev=SMALL_INIT_STDDEV, seed=seed)
    raise KbnError(f"init must be one of {', '.join(INITS)}. Received: init={init!r}")


def loss(label_smoothing: float = 0.0) -> keras.losses.Loss:
    """The loss that matches build_mlp's logits: softmax cross-entropy.

    Args:
        label_smoothing: float in [0, 1): the target puts 1 - label_smoothing
            on the true class and spreads label_smoothing evenly over all K
            classes (Szegedy et al., 2016); 0 is the report's plain loss.
    """
    return SoftmaxCrossEntropy(label_smoothing)


# Arguments renamed for one name per concept across kbn (lambda is `lam`
# everywhere; `momentum` is SGD's alone): the old names work, with a
# DeprecationWarning, until the release after 0.1.
RENAMED_ARGUMENTS = {"l2": "lam", "momentum": "bn_momentum"}


def _check_scale(adapt, rescale):
    """Refuse inputs already scaled to [0, 1] that `rescale` would shrink again.

    Divided by 255 a second time, they are too small for the network to learn from:
    batch norm's epsilon outweighs their variance, and a run stays at chance level
    with no error. kbn's models take raw pixel values, as its image sources yield them.
    """
    x = np.asarray(adapt)
    if not np.issubdtype(x.dtype, np.floating) or not np.isclose(rescale, 1 / 255):
        return
    low, high = float(x.min()), float(x.max())
    if low >= 0 and 0 < high <= 1:
        raise KbnError(
            f"the training inputs are already scaled to [0, 1] (from {low:.3g} to "
            f"{high:.3g}), and the model divides them by 255 again: give raw pixel "
            "values, 0 to 255 (x * 255), as kbn's image sources yield them, or pass "
            "build_mlp(rescale=1)"
        )


def build_mlp(
    hidden: Sequence[int] = (50, 30),
    num_classes: int = 10,
    *,
    batch_norm: bool = True,
    init: str = "he",
    lam: float = 0.0,
    adapt: np.ndarray | None = None,
    input_shape: Sequence[int] | None = None,
    rescale: float = 1 / 255,
    bn_momentum: float = 0.99,
    epsilon: float = 1e-3,
    center: bool = True,
    scale: bool = True,
    dropout: float = 0.0,
    flip: bool = False,
    translate: float = 0.0,
    whiten: float = 0.0,
    pca: int = 0,
    test_time_flip: bool = False,
    dtype: str | None = None,
    precision: str = "float32",
    seed: int | None = None,
    class_names: Sequence[str] | None = None,
    name: str = "mlp",
    **renamed: float,
) -> keras.Model:
    """Build the report's k-layer network, k = len(hidden) + 1.

    Layers: optional augmentation (random horizontal flips and shifts of the
    images, active in training only), Flatten, `Centering` (`x * rescale -
    training mean`), then for each hidden width
    `Dense -> BatchNorm -> ReLU` (`Dense -> ReLU` without batch norm), with
    `Dropout` after each ReLU when `dropout > 0`, then `Dense(num_classes)`
    giving logits. Before a BatchNorm the Dense has no
    bias: the mean subtraction cancels it, and BatchNorm's beta shifts instead.

    Args:
        hidden: widths of the k - 1 hidden layers, e.g. [50, 30]; [] gives a
            linear (softmax regression) classifier.
        num_classes: K, width of the logits.
        batch_norm: whether to normalise after each hidden Dense.
        init: kernel init, one of `he`, `xavier`, `small`.
        lam: lambda of the report's cost, the L2 penalty on every kernel
            (`lam * sum(W ** 2)` per Dense). Formerly `l2`.
        adapt: training inputs of shape (N, ...): the model subtracts their
            per-feature mean (after rescaling) and takes its input shape from
            them. Without it the mean is 0.
        input_shape: shape of one example, e.g. (32, 32, 3); needed only
            without `adapt`.
        rescale: factor from raw values to [0, 1] (1/255 for 8-bit pixels).
        bn_momentum: BatchNorm's moving-average factor, the report's alpha:
            `moving = bn_momentum * moving + (1 - bn_momentum) * batch`.
            Formerly `momentum` (now SGD's alone, in `TrainConfig`).
        epsilon: BatchNorm's epsilon.
        center, scale: BatchNorm's learnable beta and gamma.
        dropout: rate in [0, 1) of `keras.layers.Dropout` after each hidden
            ReLU; 0 adds none.
        flip: random horizontal flips of the images in training
            (`keras.layers.RandomFlip`); needs inputs of shape (H, W, C).
        translate: random shifts of the images in training, up to this
            fraction of their height and width (`keras.layers.RandomTranslation`,
            edges reflected); 0 adds none. Needs inputs of shape (H, W, C).
        whiten: epsilon of a ZCA `Whitening` of the centred inputs, learnt
            from `adapt` (needed then); 0 adds none. On CIFAR-10 (pixels
            scaled to [0, 1]) 0.1 is the `cifar10-mlp` preset's, more
            accurate than 1e-2 (docs/results.md). The augmentation, if any,
            follows it.
        pca: k > 0 keeps the k leading principal components of the
            centred (with `whiten`, whitened: PCA whitening) and augmented
            inputs, a fixed projection (`PrincipalComponents`) learnt from
            `adapt` (needed then) in front of the first Dense, which then
            costs k / D of its products; 0 keeps all D inputs.
        test_time_flip: test-time flip averaging: at inference the model's
            probabilities are the mean of its softmax on each image and on
            its left-right mirror, and its logits their log
            (`kbn.nn.flip_averaging`); training is unchanged. The mirror is
            taken where the training flip is, or would be without
            `flip`: the whitened image with `whiten`, else the raw
            pixels. Needs inputs of shape (H, W, C).
            `kbn.nn.flip_averaged` turns it on for a built or saved model.
        dtype: "float32" (default floatx) or "float64".
        precision: the hidden layers' Keras dtype policy: "float32",
            "mixed_bfloat16" or "mixed_float16" (float32 variables, 16-bit
            compute; `kbn.nn.precision`). The input stages, BatchNorm's
            statistics, the logits and the loss stay float32. Not with
            dtype="float64".
        seed: int seeding the kernel initializers, for repeatable models.
        class_names: optional num_classes strings, the name of each class
            (e.g. `dataset.class_names`); the saved model keeps them and
            `class_names(model)` gives them back.
        name: the model's name.
        **renamed: `l2` and `momentum`, the old names of `lam` and
            `bn_momentum`, accepted with a DeprecationWarning.

    Returns:
        A `keras.Model` from raw inputs (N, ...) to logits (N, num_classes),
        compiled with softmax cross-entropy (`from_logits=True`), accuracy,
        and kbn's SGD (`kbn.train` replaces it with the run's).

    Raises:
        KbnError: an argument out of range, or `flip`/`translate`/`test_time_flip`
            on inputs that are not images of shape (H, W, C).

    >>> model = build_mlp([50, 30], adapt=x_train, lam=1e-4)
    >>> model.fit(x_train, y_train, epochs=1)
    """
    for old, value in renamed.items():
        if old not in RENAMED_ARGUMENTS:
            raise TypeError(f"build_mlp() got an unexpected keyword argument {old!r}")
        new = RENAMED_ARGUMENTS[old]
        warnings.warn(
            f"build_mlp's {old}= is now {new}=; {old}= goes in kbn 0.3",
            DeprecationWarning,
            stacklevel=2,
        )
        if new == "lam":
            lam = value
        else:
            bn_momentum = value
    hidden = list(hidden)
    for width in hidden:
        if not isinstance(width, (int, np.integer)) or width < 1:
            raise KbnError(f"hidden widths must be positive integers. Received: hidden={hidden}")
    if not 0 <= dropout < 1:
        raise KbnError(f"dropout must be in [0, 1). Received: dropout={dropout!r}")
    if not 0 <= translate < 1:
        raise KbnError(f"translate must be in [0, 1). Received: translate={translate!r}")
    if whiten < 0:
        raise KbnError(f"whiten must be 0 (none) or an epsilon > 0. Received: whiten={whiten!r}")
    if whiten and adapt is None:
        raise KbnError("whiten learns its matrix from the training inputs: pass adapt=x_train.")
    if not isinstance(pca, (int, np.integer)) or pca < 0:
        raise KbnError(
            f"pca must be 0 (none) or a number of components >= 1. Received: pca={pca!r}"
        )
    if pca and adapt is None:
        raise KbnError("pca learns its components from the training inputs: pass adapt=x_train.")
    if not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise KbnError(f"num_classes must be an integer >= 2. Received: {num_classes!r}")
    if class_names is not None and (
        isinstance(class_names, str)
        or len(class_names) != num_classes
        or not all(isinstance(c, str) for c in class_names)
    ):
        raise KbnError(
            f"class_names must be {num_classes} strings, one per class. "
            f"Received: class_names={class_names!r}"
        )
    if adapt is not None:
        if len(adapt) == 0:
            raise KbnError("adapt needs at least one training example. Received: 0")
        input_shape = tuple(np.shape(adapt)[1:])
        _check_scale(adapt, rescale)
        if pca > np.prod(input_shape):
            raise KbnError(
                f"pca keeps at most the {np.prod(input_shape)} values of an input "
                f"(0 keeps them all). Received: pca={pca}"
            )
    elif input_shape is None:
        raise KbnError("build_mlp needs adapt (training inputs) or input_shape.")
    else:
        input_shape = tuple(input_shape)
    if (flip or translate) and len(input_shape) != 3:
        raise KbnError(
            f"flip and translate augment images of shape (H, W, C). "
            f"Received: input_shape={input_shape}"
        )
    if test_time_flip and len(input_shape) != 3:
        raise KbnError(
            f"test_time_flip averages over images of shape (H, W, C) and their mirrors. "
            f"Received: input_shape={input_shape}"
        )
    precision_lib.check(precision)
    if precision != "float32" and dtype not in (None, "float32"):
        raise KbnError(
            f"precision {precision} computes in 16 bits over float32 variables; it cannot go with "
            f"dtype={dtype!r}. Received: precision={precision!r}, dtype={dtype!r}"
        )
    dtype = dtype or keras.config.floatx()
    # The hidden layers' policy; a mixed one is fixed when a layer is built,
    # so it is the model's, not a global setting's.
    hidden_dtype = keras.DTypePolicy(precision) if precision != "float32" else dtype

    def seed_for(i):
        return None if seed is None else seed + i

    inputs = keras.Input(shape=input_shape, dtype=dtype, name="pixels")
    centering = Centering(rescale, class_names=class_names, dtype=dtype, name="center")
    x = inputs
    # The mirror is taken where the training flip takes the images, or would
    # (`kbn.nn.flip_averaging`): the raw pixels without whitening, the whitened image with it.
    if test_time_flip and not whiten:
        x = MirrorImages(dtype=dtype, name="mirror")(x)
    # Whitening and the principal components share the covariance's axes: the
    # covariance of every training image is summed and decomposed once, not per layer.
    axes = principal_axes(adapt, scale=rescale) if (whiten or pca) and adapt is not None else None
    if whiten:
        x = centering(keras.layers.Flatten(dtype=dtype, name="flatten_pixels")(x))
        whitening = Whitening(whiten, dtype=dtype, name="whiten")
        x = whitening(x)
        assert axes is not None  # for mypy: whiten without adapt was refused above
        whitening.set_axes(*axes)
        if flip or translate or test_time_flip:
            x = keras.layers.Reshape(input_shape, dtype=dtype, name="unflatten")(x)
        if test_time_flip:
            x = MirrorImages(dtype=dtype, name="mirror")(x)
    # Augmentation layers are identity maps at inference: a saved model
    # classifies the images as given.
    if flip:
        x = keras.layers.RandomFlip("horizontal", seed=seed_for(1000), dtype=dtype, name="flip")(x)
    if translate:
        x = keras.layers.RandomTranslation(
            translate, translate, seed=seed_for(2000), dtype=dtype, name="translate"
        )(x)
    if not whiten or flip or translate or test_time_flip:
        x = keras.layers.Flatten(dtype=dtype, name="flatten")(x)
    if not whiten:
        x = centering(x)
    if adapt is not None:
        centering.adapt(np.reshape(adapt, (len(adapt), -1)))
    if pca:
        # In the hidden layers' dtype: after the augmentation it runs every
        # step, and its output is the first Dense's input, in that dtype anyway.
        components = PrincipalComponents(pca, dtype=hidden_dtype, name="pca")
        x = components(x)
        assert axes is not None  # for mypy: pca without adapt was refused above
        components.set_axes(*axes)
    for i, width in enumerate(hidden, start=1):
        x = Dense(
            width,
            lam=lam,
            use_bias=not batch_norm,
            kernel_initializer=kernel_initializer(init, seed_for(i)),
            dtype=hidden_dtype,
            name=f"dense{i}",
        )(x)
        if batch_norm:
            x = BatchNorm(
                momentum=bn_momentum,
                epsilon=epsilon,
                center=center,
                scale=scale,
                dtype=hidden_dtype,
                name=f"batch_norm{i}",
            )(x)
        x = keras.layers.ReLU(dtype=hidden_dtype, name=f"relu{i}")(x)
        if dropout:
            x = keras.layers.Dropout(
                dropout, seed=seed_for(3000 + i), dtype=hidden_dtype, name=f"dropout{i}"
            )(x)
    k = len(hidden) + 1
    # The logits in float32 (dtype, not the policy): the softmax and the loss
    # need more than 16 bits, and this layer is a sliver of the step.
    logits = Dense(
        num_classes,
        lam=lam,
        kernel_initializer=kernel_initializer(init, seed_for(k)),
        dtype=dtype,
        name=f"dense{k}",
    )(x)
    if test_time_flip:
        logits = AverageMirrors(dtype=dtype, name="average_mirrors")(logits)
    model = keras.Model(inputs, logits, name=name)
    # kbn's SGD: `kbn.train` replaces it with the run's (another optimizer stays).
    compile_model(model, SGD())
    return model


def class_names(model: keras.Model) -> list[str]:
    """The names of `model`'s classes, in the order of its logits.

    The names `build_mlp(class_names=...)` stored in the model (they survive
    saving and loading); for a model without them (one saved before kbn
    kept names, or built another way), "0", "1", ..., "K-1".

    Args:
        model: a Keras classifier with outputs of shape (N, K).

    Returns:
        list of K strings.
    """
    num_classes = model.output_shape[-1]
    for layer in model.layers:
        names = getattr(layer, "class_names", None)
        if isinstance(layer, Centering) and names is not None and len(names) == num_classes:
            return list(names)
    return [str(i) for i in range(num_classes)]


def describe(model: keras.Model) -> dict:
    """What a run records of its network: the widths and settings `build_mlp` took.

    Read from the layers, so it holds for a loaded model too.

    Args:
        model: a Keras model; kbn's `Dense` and `BatchNorm` layers are the ones counted.

    Returns:
        {"name", "hidden": [width of each hidden Dense], "num_classes", "batch_norm":
        whether it has kbn's BatchNorm, "lam": the largest L2 factor of its Dense
        layers, "parameters": number of weights}.
    """
    dense = [layer for layer in model.layers if isinstance(layer, Dense)]
    return {
        "name": model.name,
        "hidden": [layer.units for layer in dense[:-1]],
        "num_classes": int(model.output_shape[-1]),
        "batch_norm": any(isinstance(layer, BatchNorm) for layer in model.layers),
        "lam": max((layer.lam for layer in dense), default=0.0),
        "parameters": int(model.count_params()),
    }


def compile_model(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    steps_per_execution: int = 1,
    label_smoothing: float = 0.0,
) -> None:
    """Compile a kbn classifier with the loss matching its logits and accuracy.

    The loss is made in the model's own dtype: Keras builds losses in floatx,
    and a float32 loss cannot be added to a float64 model's L2 penalties.

    Args:
        model: a Keras model from inputs to logits.
        optimizer: a Keras optimizer.
        steps_per_execution: steps per call of the compiled train function.
        label_smoothing: see `loss`.
    """
    dtype = model.weights[0].dtype if model.weights else keras.config.floatx()
    floatx = keras.config.floatx()
    keras.config.set_floatx(dtype)
    try:
        model.compile(
            optimizer=optimizer,
            loss=loss(label_smoothing),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            steps_per_execution=steps_per_execution,
        )
    finally:
        keras.config.set_floatx(floatx)
