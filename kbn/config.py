"""TrainConfig: every setting of a training run, in one place.

Printed at the start of `kbn train`, saved in each run's summary.json, and
the source of `kbn train`'s options.
"""

import dataclasses

from kbn.errors import KbnError
from kbn.schedules import SCHEDULES

STRATEGIES = ("default", "mirrored", "multi-worker")


@dataclasses.dataclass
class TrainConfig:
    """Every training setting in one place, printed and saved with each run."""

    # Mini-batch SGD with momentum, the report's protocol.
    eta: float = 0.0864  # initial learning rate (top of the cycle for `cyclic`)
    momentum: float = 0.9
    schedule: str = "exp"  # exp: eta * decay**epoch | cyclic | cosine | constant
    decay: float = 0.8  # exp's factor per epoch
    eta_min: float | None = None  # cyclic's bottom (default eta / 10), cosine's end (0)
    step_size: int | None = None  # cyclic's half cycle in steps; default 2 epochs
    epochs: int = 20
    batch_size: int = 100
    label_smoothing: float = 0.0  # 0: the report's plain cross-entropy
    seed: int = 0  # weights, shuffling: same seed, same numbers
    # Another Keras optimizer instead of SGD with `momentum` (None: SGD).
    optimizer: object = None
    # Devices: default (one), mirrored (all GPUs, else `replicas` logical
    # CPU devices), multi-worker (machines named by TF_CONFIG).
    strategy: str = "default"
    replicas: int | None = None  # mirrored on a CPU-only machine: logical devices
    # Mini-batches per call of the compiled training loop (kbn.loop): tiny
    # nets on a CPU are bound by per-call overhead.
    steps_per_execution: int = 50
    # Guards and checks.
    divergence_factor: float = 3.0  # stop when the cost exceeds this x epoch 1's
    gradcheck_every: int = 0  # re-run the gradient check every N epochs; 0: never
    # Where things go.
    logdir: str = "logs"
    run_name: str | None = None  # default: a timestamp
    save: str | None = None  # .keras path for the trained model
    plot_curves: bool = True  # draw curves.png (TensorBoard has the curves either way)
    resume: bool = False  # continue the run named run_name where it stopped
    verbose: int = 1  # Keras progress bar: 0 silent, 1 bar, 2 one line per epoch

    def validate(self):
        """Raise KbnError naming the first setting out of range."""
        checks = [
            (self.eta > 0, f"eta must be positive, got {self.eta}"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"),
            (0 < self.decay <= 1, f"decay must be in (0, 1], got {self.decay}"),
            (self.eta_min is None or 0 < self.eta_min <= self.eta, f"eta_min must be in (0, eta], got {self.eta_min}"),
            (self.step_size is None or self.step_size >= 1, f"step_size must be a positive number of steps, got {self.step_size}"),
            (self.epochs >= 0, f"epochs must be 0 or more, got {self.epochs}"),
            (self.batch_size >= 1, f"batch size must be a positive integer, got {self.batch_size}"),
            (0 <= self.label_smoothing < 1, f"label smoothing must be in [0, 1), got {self.label_smoothing}"),
            (self.strategy in STRATEGIES, f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}"),
            (self.replicas is None or self.replicas >= 1, f"replicas must be a positive integer, got {self.replicas}"),
            (self.steps_per_execution >= 1, f"steps_per_execution must be positive, got {self.steps_per_execution}"),
            (self.divergence_factor > 1, f"divergence factor must exceed 1, got {self.divergence_factor}"),
            (self.gradcheck_every >= 0, f"gradcheck_every must be 0 or more, got {self.gradcheck_every}"),
            (not self.resume or self.run_name, "--resume needs --run-name, the run to continue"),
        ]
        for ok, message in checks:
            if not ok:
                raise KbnError(message)
        if self.save and not str(self.save).endswith(".keras"):
            raise KbnError(f"the model file must end in .keras, got {self.save}")
