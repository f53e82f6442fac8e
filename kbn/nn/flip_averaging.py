"""Test-time flip averaging: at inference, a classifier's probabilities on an image and its mirror.

A network trained on randomly mirrored images has learnt both views of every
image; at inference it can ask both and average what they say:

    p(x) = (softmax(s(x)) + softmax(s(flip(x)))) / 2

where `s` is the network's logits and `flip` mirrors the image left to right.
The model keeps giving logits: it returns `log p(x)`, whose softmax is `p(x)`
itself, so the argmax, the cross-entropy (`from_logits=True`) and the
softmax of `kbn predict` and `kbn export` are those of the averaged
probabilities with no change of theirs.

Two layers do it inside the functional model, so a `.keras` file keeps it:

    images (N, H, W, C) -> MirrorImages -> (2N, H, W, C): the images, then their mirrors
      -> the rest of the network, image by image -> logits (2N, K)
      -> AverageMirrors -> (N, K): log of the mean of each pair's softmax

In training both are identity maps: one pass over the images, as without
them. At inference every layer between them maps each example on its own
(BatchNorm uses its moving statistics, Dropout does nothing), so stacking the
mirrors under the images changes no other example's result.

`MirrorImages` goes where `build_mlp`'s training flip (`keras.layers.RandomFlip`)
takes the images, so the mirror is the one the network saw in training: with
ZCA whitening that is the whitened image, after the fixed input stages
(`kbn.training.stages`), which the compiled loop then still runs once per
split. A model without a training flip is mirrored where the flip would be:
after the whitening (the whitened vectors made images again), or, without
whitening, its raw pixels, first of all.
"""

import math

import keras
import tensorflow as tf

from kbn.errors import KbnError
from kbn.nn.preprocessing import Whitening


@keras.saving.register_keras_serializable(package="kbn")
class MirrorImages(keras.layers.Layer):
    """At inference, stack the left-right mirror of every image under the images.

    `concat([x, x[:, :, ::-1, :]])` along the batch, the mirror reversing the
    width axis as `keras.layers.RandomFlip("horizontal")` does; in training
    the images pass unchanged. `AverageMirrors` at the logits undoes the
    stacking.

    Args:
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: images of shape (N, H, W, C).
        training: bool; True passes the images through.

    Input shape:
        (N, H, W, C).

    Output shape:
        (2N, H, W, C) at inference, the mirrors in rows N..2N-1; (N, H, W, C) in training.
    """

    def call(self, inputs: tf.Tensor, training: bool = False) -> tf.Tensor:
        if training:
            return inputs
        return keras.ops.concatenate([inputs, keras.ops.flip(inputs, axis=2)], axis=0)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (None, *input_shape[1:])  # N in training, 2N at inference


@keras.saving.register_keras_serializable(package="kbn")
class AverageMirrors(keras.layers.Layer):
    """At inference, each image's logits and its mirror's -> the log of their mean softmax.

    `log((softmax(s[i]) + softmax(s[N + i])) / 2)` for logits s of shape (2N, K)
    whose rows N..2N-1 are the mirrors of rows 0..N-1 (`MirrorImages`),
    computed as `logaddexp(log_softmax(s[i]), log_softmax(s[N + i])) - log 2`,
    which stays finite where a probability underflows. Its softmax is the
    mean of the two softmaxes. In training the logits pass unchanged.

    Args:
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: logits of shape (2N, K) at inference, (N, K) in training.
        training: bool; True passes the logits through.

    Input shape:
        (2N, K) at inference; (N, K) in training.

    Output shape:
        (N, K): log-probabilities at inference, the logits in training.
    """

    def call(self, inputs: tf.Tensor, training: bool = False) -> tf.Tensor:
        if training:
            return inputs
        n = keras.ops.shape(inputs)[0] // 2
        log_p = keras.ops.log_softmax(inputs, axis=-1)  # (2N, K)
        return keras.ops.logaddexp(log_p[:n], log_p[n:]) - math.log(2.0)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (None, *input_shape[1:])


FLIP_AVERAGING = (MirrorImages, AverageMirrors)


def is_flip_averaged(model: keras.Model) -> bool:
    """Whether `model` averages its probabilities over each image and its mirror at inference."""
    return any(isinstance(layer, FLIP_AVERAGING) for layer in model.layers)


def flip_averaged(model: keras.Model, average: bool = True) -> keras.Model:
    """`model` with test-time flip averaging turned on (or, with `average=False`, off).

    At inference the returned model's probabilities are the mean of the
    softmax of `model`'s logits on each image and on its left-right mirror;
    it returns their log as its logits (N, K), so `evaluate`, `predict`,
    `export` and a `.keras` file saved from it all average, with no option
    of their own. Training is unchanged: in training mode it is the same
    network, one pass over the images. This module's docstring has the
    layers and where they go.

    The network is rebuilt with `MirrorImages` before `model`'s training flip
    (`keras.layers.RandomFlip`); without one, after its ZCA whitening (made
    images, mirrored, flattened again) or before its first layer when it has
    none; and `AverageMirrors` after its output; the layers are new copies holding
    `model`'s weights (its own layers are left as they were, so `model`
    keeps working). The new model is compiled as `model` was, with a fresh
    optimizer of the same settings (no slots or step count carried over),
    and uncompiled when `model` is. A `.keras` file's training record
    (`kbn.inference.record`) belongs to the file, not to the model: saving
    the result writes a file without it.

    Args:
        model: a functional Keras classifier (`build_mlp`, or a loaded
            `.keras` file) from images (N, H, W, C) to logits (N, K).
        average: True to turn the averaging on, False to take it off.

    Returns:
        A `keras.Model`; `model` itself when it already is as asked.

    Raises:
        KbnError: `model` does not take images of shape (H, W, C), does
            not give logits (N, K), or is not a functional model with one
            input and one output.

    >>> model = flip_averaged(kbn.inference.load_model("cifar.keras"))
    >>> model.save("cifar-flip-averaged.keras")
    """
    if is_flip_averaged(model) == average:
        return model
    if not average:
        clone = _rebuilt(model, _without_averaging)
    else:
        _check_averageable(model)
        mirrored = _rebuilt(model, _mirroring(model))
        logits = AverageMirrors(dtype=model.outputs[0].dtype, name="average_mirrors")(
            mirrored.outputs[0]
        )
        clone = keras.Model(mirrored.inputs[0], logits, name=model.name)
    clone.set_weights(model.get_weights())
    _compile_as(clone, model)
    return clone


def _check_averageable(model):
    inputs = getattr(model, "inputs", None)
    outputs = getattr(model, "outputs", None)
    if not inputs or not outputs or len(inputs) != 1 or len(outputs) != 1 or not _layers(model):
        raise KbnError(
            f"test-time flip averaging needs a functional model with one input (images) and "
            f"one output (logits); {model.name!r} is not one"
        )
    shape = tuple(model.input_shape[1:])
    if len(shape) != 3:
        raise KbnError(
            f"test-time flip averaging mirrors images of shape (H, W, C); model {model.name!r} "
            f"takes inputs of shape {shape}"
        )
    if len(model.output_shape) != 2:
        raise KbnError(
            f"test-time flip averaging averages class probabilities of shape (N, K); model "
            f"{model.name!r} gives outputs of shape {tuple(model.output_shape)}"
        )


def _layers(model):
    return [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]


def _rebuilt(model, call_function):
    try:
        return keras.models.clone_model(model, call_function=call_function)
    except KbnError:
        raise
    except Exception as exc:  # Keras raises many types for models it cannot clone
        raise KbnError(
            f"cannot rebuild model {model.name!r} with test-time flip averaging: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _mirroring(model):
    """A `clone_model` call function that puts `MirrorImages` where the training flip is.

    Before `model`'s `RandomFlip`; without one, where `build_mlp` would put it:
    after the ZCA whitening (the whitened vectors made images again, mirrored,
    flattened), or before the first layer when there is none.
    """
    layers = _layers(model)
    flips = [layer for layer in layers if isinstance(layer, keras.layers.RandomFlip)]
    whitening = [layer for layer in layers if isinstance(layer, Whitening)]
    if flips or not whitening:
        return _mirroring_before((flips or layers)[0].name)
    following = [layer for layer in layers if _takes(layer, whitening[0])]
    if len(following) == 1 and isinstance(following[0], keras.layers.Reshape):
        # Already images again (`build_mlp`'s "unflatten", before a translation).
        return _mirroring_after(following[0].name, images=None)
    return _mirroring_after(whitening[0].name, images=tuple(model.input_shape[1:]))


def _takes(layer, source):
    """Whether `layer` is called on the output of `source` (each called once)."""
    try:
        return layer.input is source.output
    except (AttributeError, ValueError):  # a layer called several times has no one input
        return False


def _mirror(images, where):
    """`MirrorImages` on `images`; `where` names them in the error if they are not 4-D."""
    if len(images.shape) != 4:
        raise KbnError(
            f"test-time flip averaging mirrors images (N, H, W, C); {where} has shape "
            f"{tuple(images.shape)}"
        )
    return MirrorImages(dtype=images.dtype, name="mirror")(images)


def _mirroring_before(first):
    """A `clone_model` call function that puts `MirrorImages` before the layer `first`."""

    def call(layer, *args, **kwargs):
        if layer.name == first:
            args = (_mirror(args[0], f"the input of layer {first!r}"), *args[1:])
        return layer(*args, **kwargs)

    return call


def _mirroring_after(last, images):
    """A `clone_model` call function that mirrors the output of the layer `last`.

    With `images` (H, W, C), that output is flat: it is made images of that
    shape, mirrored and flattened again, as `build_mlp` lays it out.
    """

    def call(layer, *args, **kwargs):
        out = layer(*args, **kwargs)
        if layer.name != last:
            return out
        where = f"the output of layer {last!r}"
        if images is None:
            return _mirror(out, where)
        unflat = keras.layers.Reshape(images, dtype=out.dtype, name="unflatten")(out)
        return keras.layers.Flatten(dtype=out.dtype, name="flatten")(_mirror(unflat, where))

    return call


def _without_averaging(layer, *args, **kwargs):
    if isinstance(layer, FLIP_AVERAGING):
        return args[0]
    return layer(*args, **kwargs)


def _compile_as(clone, model):
    """Compile `clone` from `model`'s compile settings, fresh objects, in the model's dtype."""
    config = model.get_compile_config() if model.compiled else {}
    if not config:
        return
    floatx = keras.config.floatx()
    # Keras builds the loss in floatx: a float64 model needs a float64 loss (`compile_model`).
    keras.config.set_floatx(model.weights[0].dtype if model.weights else floatx)
    try:
        clone.compile_from_config(config)
    finally:
        keras.config.set_floatx(floatx)
