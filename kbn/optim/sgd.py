"""SGD: Keras's SGD with momentum, its update as TensorFlow's one fused kernel.

The update of the report (DD2424 assignment 3: k-layer networks with batch
normalization), for every trainable variable w with gradient g:

    v = momentum * v - eta * g        (v: the velocity, 0 at the start)
    w = w + v

Keras's `SGD` writes it as five ops per variable (two multiplies, a
subtraction, an assignment, an add-assignment), each a pass over the
variable and a scheduling of its own. TensorFlow's `ResourceApplyKerasMomentum`
kernel computes the same two lines, in the same order, in one op: one pass
and one scheduling per variable instead of five (the saving is measured by
`kbn bench`, see docs/performance.md).

`update_step` finds a variable's velocity as every Keras optimizer's own
`update_step` does, through a private lookup (`kbn._compat.variable_index`).
"""

import keras
import tensorflow as tf

from kbn import _compat


@keras.saving.register_keras_serializable(package="kbn")
class SGD(keras.optimizers.SGD):
    """`keras.optimizers.SGD` with its momentum update fused into one op.

    The same arguments, variables, configuration and numbers as Keras's
    (`v = momentum * v - eta * g; w = w + v`). The fused kernel runs for
    dense gradients of plain TensorFlow variables with momentum > 0 and
    without Nesterov; everything else (momentum 0, Nesterov, sparse
    gradients, another backend, a `tf.distribute` strategy) goes through
    Keras's own update step.

    >>> model.compile(optimizer=SGD(0.05, momentum=0.9), loss=...)
    """

    def update_step(
        self,
        gradient: tf.Tensor | tf.IndexedSlices,
        variable: keras.Variable,
        learning_rate: tf.Tensor,
    ) -> None:
        if not self._fusable(gradient, variable):
            return super().update_step(gradient, variable, learning_rate)
        velocity = self.momentums[_compat.variable_index(self, variable)].value
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=variable.handle,
            accum=velocity.handle,
            lr=tf.cast(learning_rate, variable.dtype),
            grad=tf.cast(gradient, variable.dtype),
            momentum=keras.ops.cast(self.momentum, variable.dtype),  # as Keras rounds it
            use_nesterov=False,
        )

    def _fusable(self, gradient: tf.Tensor | tf.IndexedSlices, variable: keras.Variable) -> bool:
        return (
            self.momentum != 0
            and not self.nesterov
            and keras.backend.backend() == "tensorflow"
            and not tf.distribute.has_strategy()
            and not isinstance(gradient, tf.IndexedSlices)
            and isinstance(variable, tf.Variable)
            and hasattr(variable, "handle")
        )
