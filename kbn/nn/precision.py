"""Precision: the Keras dtype policy a kbn model computes in, and which one pays here.

    float32          float32 variables, float32 compute (kbn's default)
    mixed_bfloat16   float32 variables, bfloat16 matmuls and element-wise work
    mixed_float16    float32 variables, float16 compute, the loss scaled
                     (`keras.optimizers.LossScaleOptimizer`) so that small
                     gradients do not flush to zero

Under a mixed policy the variables stay float32, so the optimizer updates
full-precision weights and a saved model keeps them; the matmuls (most of a
step) run in 16 bits. A few things stay float32 whatever the policy, where
16 bits would lose the answer: BatchNorm's batch statistics, its moving
averages and the two sums of its backward pass, the logits and the loss,
and the L2 penalty (see `kbn.nn.builder.build_mlp`, `kbn.nn.batch_norm`).

bfloat16 pays only where the hardware multiplies it natively: CPUs with
AVX512-BF16 or AMX-BF16 (Intel Cooper Lake, Sapphire Rapids and later; AMD
Zen 4) and NVIDIA GPUs of compute capability 8.0 or more (Ampere on).
Elsewhere TensorFlow emulates it and it runs slower than float32:
`best_available` is then float32.
"""

import os
import pathlib

import keras
import tensorflow as tf

from kbn.errors import KbnError

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
AUTO = "auto"  # kbn train's --precision auto: best_available()
# /proc/cpuinfo flags of a CPU with native bfloat16 matrix instructions.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
BF16_GPU_CAPABILITY = (8, 0)


def check(precision: str) -> str:
    """`precision` if it is one of PRECISIONS; KbnError otherwise."""
    if precision not in PRECISIONS:
        raise KbnError(
            f"precision must be one of {', '.join(PRECISIONS)}. Received: precision={precision!r}"
        )
    return precision


def cpu_flags(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags, a set of str; empty where there is no cpuinfo.

    Linux names them on each processor's `flags` line of /proc/cpuinfo;
    other systems have no such file, and kbn then assumes no native
    bfloat16 on the CPU.

    Args:
        cpuinfo: the file to read.
    """
    try:
        text = pathlib.Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return set()


def gpu_capabilities() -> list[tuple[int, int]]:
    """Compute capability (major, minor) of each visible GPU, a list of tuples."""
    import tensorflow as tf

    capabilities = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        if details.get("compute_capability"):
            capabilities.append(tuple(details["compute_capability"]))
    return capabilities


def supported(precision: str) -> bool:
    """Whether `precision` runs natively here, so that it can pay.

    float32 always does; mixed_bfloat16 on a CPU with AVX512-BF16 or
    AMX-BF16 or a GPU of compute capability >= 8.0; mixed_float16 on a GPU
    of compute capability >= 7.0 (tensor cores). Training in a precision
    that is not supported still works, only slower.

    Args:
        precision: one of PRECISIONS.

    Returns:
        bool.
    """
    check(precision)
    if precision == "float32":
        return True
    if precision == "mixed_float16":
        return any(c >= (7, 0) for c in gpu_capabilities())
    if any(flag in cpu_flags() for flag in BF16_CPU_FLAGS):
        return True
    return any(c >= BF16_GPU_CAPABILITY for c in gpu_capabilities())


def best_available() -> str:
    """The precision that trains fastest here: mixed_bfloat16 where supported, else float32.

    >>> best_available()  # on a Sapphire Rapids CPU
    'mixed_bfloat16'
    """
    return "mixed_bfloat16" if supported("mixed_bfloat16") else "float32"


def resolve(precision: str) -> tuple[str, str | None]:
    """A concrete precision: `precision` itself, or `best_available()` for "auto".

    Returns:
        (precision, notice): notice is one line saying what "auto" picked and
        why, or None when nothing was detected.
    """
    if precision != AUTO:
        return check(precision), None
    chosen = best_available()
    why = (
        "this CPU or GPU multiplies bfloat16 natively"
        if chosen != "float32"
        else ("no native bfloat16 on this CPU or GPU")
    )
    return chosen, f"precision: {chosen} ({why}; --precision float32 forces float32)"


def model_precision(model: keras.Model) -> str:
    """The precision a model computes in: the dtype policy of its hidden layers.

    A `build_mlp` model gives every hidden layer its policy (the input
    stages and the logits stay float32), so the first layer with a mixed
    policy names it; a model without one is "float32" (or "float64").

    Args:
        model: a Keras model.

    Returns:
        str, a policy name such as "mixed_bfloat16", or the plain dtype.
    """
    names = [
        layer.dtype_policy.name for layer in model.layers if getattr(layer, "dtype_policy", None)
    ]
    mixed = [name for name in names if name.startswith("mixed_")]
    if mixed:
        return mixed[0]
    return names[-1] if names else "float32"


def island_dtype(dtype: tf.DType | str) -> tf.DType:
    """The dtype a sum or a statistic over a batch is taken in: float32 for 16-bit inputs.

    The "float32 islands" of a mixed-precision step (as Keras's own
    BatchNormalization keeps them): 16-bit floats carry 8 (bfloat16) or 11
    (float16) bits of mantissa, too few for a mean over a batch, a variance,
    or a moving average that adds a small fraction (1 - momentum) of a new
    value at each step.
    float32 and float64 stay as they are.
    """
    dtype = tf.as_dtype(dtype)
    return tf.float32 if dtype in (tf.bfloat16, tf.float16) else dtype
