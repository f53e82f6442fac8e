"""Centering: the report's input preprocessing as a layer inside the model."""

import keras
import numpy as np
import tensorflow as tf


@keras.saving.register_keras_serializable(package="kbn")
class Centering(keras.layers.Layer):
    """Scale raw inputs to [0, 1] and subtract the training mean.

    `x * scale - mean`, where `mean` is the per-feature mean of the scaled
    training inputs, learnt by `adapt`. The mean is a non-trainable weight,
    so a saved model keeps it exactly, in its own dtype, and takes raw pixels
    as a data source yields them.

    The layer also carries the model's class names (`class_names`), so that
    a saved model brings them back with its config: the input stage is in
    every kbn model and runs once per split in training, so the names cost
    nothing there. `kbn.model.class_names(model)` reads them.

    Args:
        scale: float, raw value to [0, 1] (1/255 for 8-bit pixels).
        class_names: optional sequence of K strings, the name of each of the
            model's output classes; the layer's computation ignores them.
        **kwargs: base layer arguments (`name`, `dtype`, ...).

    Input shape:
        (batch, D).

    Output shape:
        (batch, D).

    >>> layer = Centering(1 / 255)
    >>> layer.adapt(x_train.reshape(len(x_train), -1))
    """

    def __init__(self, scale=1 / 255, class_names=None, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)
        if class_names is not None:
            class_names = [str(name) for name in class_names]
        self.class_names = class_names

    def build(self, input_shape):
        self.mean = self.add_weight(
            name="mean", shape=(input_shape[-1],), initializer="zeros", trainable=False
        )

    def adapt(self, x):
        """Learn the mean of `x * scale` over examples; x of shape (N, D).

        Accumulates in float64 without a float copy of the whole of x.
        """
        x = np.asarray(x)
        if len(x) == 0:
            raise ValueError("adapt needs at least one training example. Received: 0")
        if not self.built:
            self.build(x.shape)
        self.mean.assign(x.reshape(len(x), -1).mean(axis=0, dtype=np.float64) * self.scale)

    def call(self, inputs):
        x = tf.cast(inputs, self.compute_dtype)
        # The scale as a constant of x's own dtype: float64 models stay exact.
        return x * tf.constant(self.scale, x.dtype) - tf.cast(self.mean, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "class_names": self.class_names}
