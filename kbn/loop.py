"""The compiled training loop under `fit`: chunks of mini-batches, one call each.

Tiny networks on a CPU are bound by per-step framework work, not arithmetic.
Keras's `fit` pays for each mini-batch a `tf.data` hand-off, an optional
wrapper and a nested function call, even with `steps_per_execution`, and
for each epoch a new input pipeline: the seed net trained at 1.9x the time
of plain NumPy that way. Here `fit` gets a stream of index chunks that runs
across epochs, and the model's `train_function` runs a whole chunk in one
`tf.function` loop that gathers each mini-batch from the training tensors
and takes a training step with the model's compiled loss (penalties
included), optimizer and metrics:

    x --fixed input stages, once per run--> x' (N, D)              Loops.inputs
    epoch e -> permutation of (seed, e) -> chunks (s, B) of indices   tf.data
      -> train_function(chunk): for i < s: step(x'[chunk[i]], y[chunk[i]])

The fixed stages (flatten, scale, subtract the mean) learn nothing, so
their output is computed once, as NumPy code centres its data once; the
step runs the rest of the model (`split_fixed_stages`). A model without
such stages, or with its own `train_step`, gets Keras's `train_step` on
raw inputs instead.

Everything around the loop is `fit`'s: callbacks, progress bar (counting
chunks), TensorBoard, BackupAndRestore. Validation runs in a compiled loop
of its own (`Loops.evaluate`), from a callback.
"""

import functools

import keras
import tensorflow as tf

from kbn.preprocessing import Centering

# Layers that learn nothing and map an input the same way in training and at
# inference: their output is computed once per split (`split_fixed_stages`).
FIXED_STAGES = (keras.layers.Flatten, keras.layers.Reshape, keras.layers.Rescaling, Centering)


class EpochChunks:
    """The order of the training examples, epoch after epoch, in chunks.

    Keras's own shuffle of arrays repeats one permutation in every epoch once
    a global seed is set (its shuffle op restarts with each epoch's
    iterator), and the same batches every epoch cost the seed net about a
    point of validation accuracy. Here epoch e's order is a stateless
    function of (seed, e): new each epoch, the same for the same seed, and
    the same for a resumed run as for an uninterrupted one.

    Args:
        n: N, training examples.
        batch_size: B, examples per mini-batch.
        steps: S, mini-batches per chunk.
        seed: int.

    Attributes:
        per_epoch: chunks in one epoch: the full batches in chunks of S,
            then the short last batch (N mod B examples), when there is one,
            as a chunk of its own.
        first_epoch: int64 variable, the epoch the stream starts at; set it
            before the first chunk is drawn (a resumed run starts late).
    """

    def __init__(self, n, batch_size, steps, seed):
        self.n = int(n)
        self.batch_size = int(batch_size)
        self.steps = int(steps)
        self.seed = int(seed)
        self.full = self.n // self.batch_size
        self.rest = self.n - self.full * self.batch_size
        self.per_epoch = -(-self.full // self.steps) + (1 if self.rest else 0)
        self.first_epoch = tf.Variable(0, dtype=tf.int64, trainable=False)

    def order(self, epoch):
        """The permutation of range(N) for `epoch`, an int64 tensor (N,)."""
        key = tf.stack([tf.constant(self.seed, tf.int64), epoch])
        return tf.random.experimental.stateless_shuffle(tf.range(self.n, dtype=tf.int64), seed=key)

    def _epoch_chunks(self, k):
        order = self.order(self.first_epoch.read_value() + k)
        cut = self.full * self.batch_size
        chunks = tf.data.Dataset.from_tensor_slices(
            tf.reshape(order[:cut], (self.full, self.batch_size))
        ).batch(self.steps)
        if self.rest:
            chunks = chunks.concatenate(
                tf.data.Dataset.from_tensors(tf.reshape(order[cut:], (1, self.rest)))
            )
        return chunks

    def dataset(self):
        """An endless `tf.data.Dataset` of int64 index chunks (s, B), s <= S."""
        return tf.data.Dataset.range(2**62).flat_map(self._epoch_chunks).prefetch(1)


def split_fixed_stages(model):
    """The model as (stages, trunk): its fixed input stages, then the rest.

    Fixed stages (`Flatten`, `Reshape`, `Rescaling`, kbn's `Centering`)
    learn nothing and map an input the same way at every step, in training
    as at inference. Their output for a split can be computed once per run
    instead of once per mini-batch; for the seed net that is a cast, a
    multiply and a subtraction over every pixel of every batch, a seventh
    of its epoch. NumPy does the same: it centres the data once.

    Args:
        model: a Keras model.

    Returns:
        (stages, trunk): two functional models over the model's own layers,
        stages from its inputs (N, ...) to the last fixed stage's output
        (N, D), trunk from there to its output. None when the model starts
        with no fixed stage (e.g. with random augmentation), is not a
        functional model with one input and one output, or uses a stage's
        output elsewhere.
    """
    if type(model).train_step is not keras.Model.train_step:
        return None  # a custom train_step: kbn keeps calling it
    if type(model).test_step is not keras.Model.test_step:
        return None
    try:
        inputs, outputs = model.inputs, model.outputs
    except AttributeError:  # a subclassed model: no graph to split
        return None
    if not inputs or not outputs or len(inputs) != 1 or len(outputs) != 1:
        return None
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    fixed = 0
    while (
        fixed < len(layers)
        and isinstance(layers[fixed], FIXED_STAGES)
        and not layers[fixed].trainable_weights
    ):
        fixed += 1
    if fixed == 0 or fixed == len(layers):
        return None
    try:
        boundary = layers[fixed - 1].output
        stages = keras.Model(inputs[0], boundary, name=f"{model.name}_stages")
        trunk = keras.Model(boundary, outputs[0], name=f"{model.name}_trunk")
    except (AttributeError, ValueError):  # a shared stage, or an input used past the stages
        return None
    if len(stages.weights) + len(trunk.weights) != len(model.weights):
        return None
    return stages, trunk


def train_step(model, trunk, x, y):
    """One SGD step: Keras's TensorFlow `train_step`, its forward pass `trunk(x)`.

    The model's compiled loss (with its penalties) and optimizer, on x
    already through the fixed stages (`split_fixed_stages`). The metrics
    are left to `update_metrics`, once per chunk of steps.

    Args:
        model: the compiled model.
        trunk: the model after its fixed stages.
        x: a mini-batch (B, D) from the stages.
        y: its labels (B,).

    Returns:
        (loss (), y_pred (B, K)), before the step's update.
    """
    with tf.GradientTape() as tape:
        y_pred = trunk(x, training=True)
        loss = model.compute_loss(x=x, y=y, y_pred=y_pred, training=True)
        scaled = model.optimizer.scale_loss(loss)
    variables = model.trainable_variables
    model.optimizer.apply(tape.gradient(scaled, variables), variables)
    return loss, y_pred


def evaluation_step(model, trunk, x, y):
    """Keras's TensorFlow `test_step`, its forward pass `trunk(x)`, metrics updated."""
    y_pred = trunk(x, training=False)
    loss = model.compute_loss(x=x, y=y, y_pred=y_pred, training=False)
    update_metrics(model, loss[None], tf.shape(x)[:1], y, y_pred)


def update_metrics(model, losses, sizes, y, y_pred):
    """The model's loss tracker and compiled metrics, over S batches at once.

    Keras updates them after every step, a dozen small ops each time, a
    tenth of the seed net's epoch; the means come out the same when the
    steps' losses are weighted by their batch sizes, as Keras does.

    Args:
        model: the compiled model.
        losses: each batch's mean loss (S,).
        sizes: each batch's size (S,).
        y: the labels of all S batches (N,).
        y_pred: their predictions (N, K).
    """
    model._loss_tracker.update_state(losses, sample_weight=tf.cast(sizes, losses.dtype))
    model.compute_metrics(None, y, y_pred)


class Loops:
    """The compiled loops of one compiled model, traced once, run for every run.

    Training runs over chunks of mini-batches (`EpochChunks`), evaluation over
    whole splits, each in one `tf.function` call. When the model starts with
    fixed stages (`split_fixed_stages`), both take the data through them once
    (`inputs`) and run the rest of the model per batch, with the model's
    compiled loss, optimizer and metrics (`train_step`, `evaluation_step`);
    otherwise they call the model's own `train_step` and `test_step` on raw
    inputs.

    Args:
        model: a compiled Keras model (TensorFlow backend, default strategy).

    Attributes:
        stages: the fixed stages, a functional model, or None.
        run_chunk: `tf.function` (x (N, D), y (N,), chunk (S, B)) -> metrics.
        run_split: `tf.function` (x (N, D), y (N,), batch_size ()) -> metrics.
    """

    def __init__(self, model):
        self.model = model
        split = split_fixed_stages(model)
        self.stages = split[0] if split else None
        if split:
            self._through_stages = tf.function(
                lambda x: split[0](x, training=False), reduce_retracing=True
            )
            self.run_chunk = self._split_chunk_loop(model, split[1])
            check = functools.partial(evaluation_step, model, split[1])
        else:
            self.run_chunk = self._chunk_loop(model)
            check = lambda x, y: model.test_step((x, y))  # noqa: E731

        # Keras's `evaluate` builds a new input pipeline on every call and
        # pays a function call per batch: validating the seed net on 10k
        # images took 0.07 s that way, 0.02 s in one loop.
        @tf.function(reduce_retracing=True)
        def run_split(x, y, batch_size):
            for start in tf.range(0, tf.shape(x)[0], batch_size):
                check(x[start : start + batch_size], y[start : start + batch_size])
            return model.get_metrics_result()

        self.run_split = run_split

    @staticmethod
    def _chunk_loop(model):
        @tf.function(reduce_retracing=True)
        def run_chunk(x, y, chunk):
            for i in tf.range(tf.shape(chunk)[0]):
                model.train_step((tf.gather(x, chunk[i]), tf.gather(y, chunk[i])))
            return model.get_metrics_result()

        return run_chunk

    @staticmethod
    def _split_chunk_loop(model, trunk):
        dtype = trunk.outputs[0].dtype

        @tf.function(reduce_retracing=True)
        def run_chunk(x, y, chunk):
            steps = tf.shape(chunk)[0]
            losses = tf.TensorArray(dtype, size=steps)
            predictions = tf.TensorArray(dtype, size=steps)
            for i in tf.range(steps):
                loss, y_pred = train_step(model, trunk, tf.gather(x, chunk[i]), tf.gather(y, chunk[i]))
                losses = losses.write(i, tf.cast(loss, dtype))
                predictions = predictions.write(i, y_pred)
            y_pred = predictions.concat()  # (S * B, K)
            sizes = tf.fill([steps], tf.shape(chunk)[1])
            update_metrics(model, losses.stack(), sizes, tf.gather(y, tf.reshape(chunk, [-1])), y_pred)
            return model.get_metrics_result()

        return run_chunk

    def inputs(self, x):
        """`x` as the loops take it: through the fixed stages, once, as a tensor.

        One compiled call over the whole split: TensorFlow reuses the
        buffer of each elementwise stage for the next, so the result is the
        only large new tensor (0.6 GB for 50k CIFAR-10 images in float32).

        Args:
            x: raw inputs (N, ...), as the model takes them.

        Returns:
            a tensor (N, D) of the stages' output, or x itself as a tensor
            when the model has no fixed stages.
        """
        if self.stages is None or len(x) == 0:
            return tf.convert_to_tensor(x)
        return self._through_stages(x)

    def train_function(self, x, y):
        """A `model.train_function` for `fit` over `EpochChunks.dataset()`.

        Keras calls it once per element of the data given to `fit`: here a
        chunk of indices into (x, y), trained on by `run_chunk`.

        Args:
            x: training inputs (N, ...), from `inputs`.
            y: training labels (N,).

        Returns:
            a function of Keras's iterator giving the logs dict, as Keras's own.
        """
        y = tf.convert_to_tensor(y)

        def run(iterator):
            return self.run_chunk(x, y, next(iterator))

        return run

    def evaluate(self, x, y, batch_size):
        """Loss (with penalties) and metrics in inference mode, as `model.evaluate`'s.

        Args:
            x: inputs (N, ...), N > 0, from `inputs`.
            y: labels (N,).
            batch_size: examples per batch.

        Returns:
            {"loss": float, "accuracy": float, ...}, as Keras names them.
        """
        self.model.reset_metrics()
        results = self.run_split(x, tf.convert_to_tensor(y), tf.constant(batch_size, tf.int32))
        return {name: float(value) for name, value in results.items()}
