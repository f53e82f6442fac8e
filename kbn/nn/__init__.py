"""The network: kbn's layers and loss, the input stages, dtype policies, the k-layer builder.

dense.py          Dense, `s = x W + b`, and its hand-written backward pass
batch_norm.py     BatchNorm, its training and inference backward passes
cross_entropy.py  SoftmaxCrossEntropy, the loss, and its hand-written backward pass `P - T`
autodiff.py       `autodiff_backward()`: the same layers differentiated by TensorFlow
preprocessing.py  Centering (pixels / 255 minus the training mean), ZCA Whitening,
                  PrincipalComponents (the k leading principal components)
precision.py      the Keras dtype policy a model computes in
flip_averaging.py test-time flip averaging: MirrorImages, AverageMirrors, `flip_averaged()`
builder.py        `build_mlp`: the k-layer network, compiled with kbn's SGD
"""

from kbn.nn.autodiff import autodiff_backward
from kbn.nn.batch_norm import (
    BatchNorm,
    batch_norm_backward,
    batch_norm_forward,
    batch_norm_inference_backward,
)
from kbn.nn.builder import build_mlp, class_names, compile_model
from kbn.nn.cross_entropy import (
    SoftmaxCrossEntropy,
    cross_entropy_backward,
    cross_entropy_forward,
    smoothed_targets,
)
from kbn.nn.dense import Dense, L2Penalty, dense_backward, dense_forward
from kbn.nn.flip_averaging import AverageMirrors, MirrorImages, flip_averaged
from kbn.nn.preprocessing import Centering, PrincipalComponents, Whitening, principal_axes

__all__ = [
    "AverageMirrors",
    "BatchNorm",
    "Centering",
    "Dense",
    "L2Penalty",
    "MirrorImages",
    "PrincipalComponents",
    "SoftmaxCrossEntropy",
    "Whitening",
    "autodiff_backward",
    "batch_norm_backward",
    "batch_norm_forward",
    "batch_norm_inference_backward",
    "build_mlp",
    "class_names",
    "compile_model",
    "cross_entropy_backward",
    "cross_entropy_forward",
    "dense_backward",
    "dense_forward",
    "flip_averaged",
    "principal_axes",
    "smoothed_targets",
]
