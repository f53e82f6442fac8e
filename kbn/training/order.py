"""EpochOrder: the order of the training examples in each epoch, and its mini-batches.

Epoch e's order is a stateless function of (seed, e), computed inside the
compiled loop: new each epoch, the same for the same seed, the same for a
resumed run as for an uninterrupted one, and the same on every worker of a
multi-worker run. Each replica takes its slice of every mini-batch.
"""

import tensorflow as tf


class EpochOrder:
    """The order of the training examples in each epoch, and its mini-batches.

    Keras's own shuffle of arrays repeats one permutation in every epoch once
    a global seed is set (its shuffle op restarts with each epoch's iterator),
    and the same batches every epoch cost the report's network validation
    accuracy. Here epoch e's order is a stateless function of
    (seed, e): new each epoch, the same for the same seed, the same for a
    resumed run as for an uninterrupted one, and the same on every worker.

    Args:
        n: N, training examples.
        batch_size: B, examples per mini-batch; the last mini-batch of an
            epoch holds the N mod B left over, when there are some.
        seed: int.

    Attributes:
        steps: mini-batches per epoch, ceil(N / B).
    """

    def __init__(self, n, batch_size, seed):
        self.n = int(n)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.steps = -(-self.n // self.batch_size)

    def order(self, epoch):
        """The permutation of range(N) for `epoch`, int64 (N,)."""
        return epoch_order(self.seed, epoch, self.n)

    def batch(self, order, step, replica=0, replicas=1):
        """Indices of one replica's share of mini-batch `step`, int64 (about B/R,)."""
        return batch_indices(order, step, self.batch_size, replica, replicas)


def epoch_order(seed, epoch, n):
    """The permutation of range(n) for (seed, epoch), int64 (n,); any may be a tensor."""
    key = tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.random.experimental.stateless_shuffle(tf.range(tf.cast(n, tf.int64)), seed=key)


def batch_indices(order, step, batch_size, replica=0, replicas=1):
    """Replica r's share of mini-batch `step` of `order` (N,), int64 (about B/R,).

    The batch is order[step B : (step + 1) B], cut at N; replica r of R takes
    the r-th of R nearly equal slices of it.
    """
    n = tf.shape(order, out_type=tf.int64)[0]
    step, batch_size = tf.cast(step, tf.int64), tf.cast(batch_size, tf.int64)
    lo = step * batch_size
    if (
        isinstance(replicas, int) and replicas == 1
    ):  # one device: the whole batch, fewer ops per step
        return order[lo : tf.minimum(lo + batch_size, n)]
    replica, replicas = tf.cast(replica, tf.int64), tf.cast(replicas, tf.int64)
    size = tf.minimum(lo + batch_size, n) - lo
    return order[lo + size * replica // replicas : lo + size * (replica + 1) // replicas]
