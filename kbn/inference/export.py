"""Export a kbn model as a TensorFlow SavedModel that serves raw uint8 images.

The SavedModel's `serving_default` signature takes

    images: uint8 of shape (N, H, W, C), pixels as a data source yields them

and returns

    probabilities: float32 (N, K), the softmax of the model's logits
    classes:       int64 (N,), the most probable class of each image
    class_names:   string (N,), that class's name

It is plain TensorFlow: `tf.saved_model.load(DIR).signatures["serving_default"]`
needs neither kbn nor Keras (kbn's hand-written gradients are not needed to
predict; the graph holds only forward ops). The model's fixed input stages
(flatten, / 255, minus the training mean) are inside it, as in the `.keras`
file.
"""

import os
import pathlib
import shutil
import tempfile

import keras
import tensorflow as tf

from kbn.errors import KbnError
from kbn.inference.evaluate import load_model
from kbn.nn.builder import class_names as model_class_names

SIGNATURE = "serving_default"


def export(model: keras.Model | str | os.PathLike, directory: str | os.PathLike) -> pathlib.Path:
    """Write `model` to `directory` as a SavedModel with a uint8 image signature.

    The folder is written next to `directory` and renamed into place, so a
    failure leaves no half-written SavedModel.

    Args:
        model: a kbn classifier, or the path of its `.keras` file, from
            inputs (N, ...) to logits (N, K).
        directory: the SavedModel's folder (str or path-like); it must not
            exist, or be empty.

    Returns:
        The `pathlib.Path` written.

    Raises:
        KbnError: the model file cannot be loaded, or `directory` exists and
            is not an empty folder.

    >>> export("m.keras", "m_savedmodel")
    >>> serve = tf.saved_model.load("m_savedmodel").signatures["serving_default"]
    >>> serve(images=tf.constant(x_uint8))["probabilities"]  # (N, K)
    """
    if not isinstance(model, keras.Model):
        model = load_model(model)
    directory = pathlib.Path(directory)
    if directory.exists() and not (directory.is_dir() and not any(directory.iterdir())):
        raise KbnError(
            f"{directory} already exists: export writes a new folder "
            f"(give another path, or remove it)"
        )
    directory.parent.mkdir(parents=True, exist_ok=True)
    archive = serving_archive(model)
    tmp = tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent)
    try:
        archive.write_out(tmp, verbose=False)
        os.replace(tmp, directory)  # an empty folder there is replaced too
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def serving_archive(model: keras.Model) -> keras.export.ExportArchive:
    """A `keras.export.ExportArchive` of `model` with the uint8 image signature.

    Args:
        model: a Keras classifier from inputs (N, ...) to logits (N, K).

    Returns:
        The archive, its endpoint `serving_default(images)` described in
        this module's docstring.
    """
    shape = tuple(model.input_shape[1:])
    dtype = model.inputs[0].dtype if model.inputs else keras.config.floatx()
    names = model_class_names(model)

    def serve(images):
        logits = model(tf.cast(images, dtype), training=False)  # (N, K)
        probabilities = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)  # (N, K)
        classes = tf.argmax(probabilities, axis=-1, output_type=tf.int64)  # (N,)
        return {
            "probabilities": probabilities,
            "classes": classes,
            "class_names": tf.gather(tf.constant(names, tf.string), classes),
        }

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name=SIGNATURE,
        fn=serve,
        input_signature=[tf.TensorSpec((None,) + shape, tf.uint8, name="images")],
    )
    return archive
