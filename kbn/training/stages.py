"""The fixed input stages of a model: layers that learn nothing, run once per split.

A model from `build_mlp` starts with stages that map an input the same way in
training and at inference (flatten, scale, subtract the mean, whiten). Their
output for a split is computed once per run instead of once per mini-batch,
as NumPy code centres its data once; the compiled loop runs the rest of the
model, the trunk, per mini-batch.
"""

import keras

from kbn.nn.preprocessing import Centering, PrincipalComponents, Whitening

# Layers that learn nothing and map an input the same way in training and at
# inference: their output is computed once per split (`split_fixed_stages`).
FIXED_STAGES = (
    keras.layers.Flatten,
    keras.layers.Reshape,
    keras.layers.Rescaling,
    Centering,
    Whitening,
    PrincipalComponents,
)


def split_fixed_stages(model):
    """The model as (stages, trunk): its fixed input stages, then the rest.

    Fixed stages (`Flatten`, `Reshape`, `Rescaling`, kbn's `Centering`
    and `Whitening`) learn nothing and map an input the same way at every
    step, in training as at inference. Their output for a split can be
    computed once per run instead of once per mini-batch: a cast, a multiply
    and a subtraction over every pixel of every batch saved (the report's
    network spends a good share of its epoch there; docs/performance.md).
    NumPy does the same: it centres the data once.

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
