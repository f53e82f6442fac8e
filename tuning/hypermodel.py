"""KbnHyperModel: the search space of the report's search, over kbn's builder.

The report: DD2424 assignment 3, k-layer networks with batch normalization.

The HyperModel only describes the search: eta and lambda on a log scale
(`hp.Float(..., sampling="log")`) and, when asked, the architecture (depth,
width, batch norm on or off). Building is `kbn.build_mlp`; training is
`kbn.train` (see `tuning.search.KbnTuner`).
"""

from collections.abc import Sequence

import keras
import keras_tuner
import numpy as np

from kbn.nn.builder import build_mlp

ETA_RANGE = (0.01, 0.7)  # the report's first interval
LAM_RANGE = (1e-6, 0.1)


class KbnHyperModel(keras_tuner.HyperModel):
    """eta and lambda (log scale), optionally depth, width and batch norm.

    Args:
        adapt: training inputs of shape (N, ...): the models subtract their
            mean (see `build_mlp`).
        num_classes: width of the logits.
        hidden: hidden widths when the architecture is not searched.
        batch_norm: batch norm when the architecture is not searched.
        init: kernel init of every model.
        eta_range: (low, high) of the learning rate, low > 0.
        lam_range: (low, high) of the L2 penalty, low > 0.
        architecture: also search depth (1 to 3 hidden layers), width
            (50, 100 or 200 units) and batch norm on or off.
        gamma_beta: BatchNorm's learnable gamma and beta (`build_mlp`'s
            `center` and `scale`).
        seed: seeds every model's initial weights alike, so trials differ
            only by their hyper-parameters.

    >>> hypermodel = KbnHyperModel(ds.train.x, ds.num_classes)
    >>> model = hypermodel.build(keras_tuner.HyperParameters())
    """

    def __init__(
        self,
        adapt: np.ndarray,
        num_classes: int,
        *,
        hidden: Sequence[int] = (50, 30),
        batch_norm: bool = True,
        init: str = "he",
        eta_range: tuple[float, float] = ETA_RANGE,
        lam_range: tuple[float, float] = LAM_RANGE,
        architecture: bool = False,
        gamma_beta: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(name="kbn_mlp")
        self.adapt = adapt
        self.num_classes = num_classes
        self.hidden = list(hidden)
        self.batch_norm = batch_norm
        self.init = init
        self.eta_range = tuple(eta_range)
        self.lam_range = tuple(lam_range)
        self.architecture = architecture
        self.gamma_beta = gamma_beta
        self.seed = seed

    def build(self, hp: keras_tuner.HyperParameters, seed: int | None = None) -> keras.Model:
        """The trial's network; `seed` replaces the search's for its initial weights (a
        finalist's run)."""
        # eta is not the model's: kbn's training reads it from the trial's hp.
        hp.Float("eta", *self.eta_range, sampling="log")
        lam = hp.Float("lam", *self.lam_range, sampling="log")
        hidden, batch_norm = self.hidden, self.batch_norm
        if self.architecture:
            depth = hp.Int("depth", 1, 3)
            width = hp.Choice("width", [50, 100, 200])
            hidden = [width] * depth
            batch_norm = hp.Boolean("batch_norm", default=True)
        return build_mlp(
            hidden,
            self.num_classes,
            batch_norm=batch_norm,
            init=self.init,
            lam=lam,
            center=self.gamma_beta,
            scale=self.gamma_beta,
            adapt=self.adapt,
            seed=self.seed if seed is None else seed,
        )
