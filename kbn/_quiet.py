"""Load TensorFlow without its C++ start-up notices.

TensorFlow 2.21 prints notices at import and at device start (oneDNN, CPU
instructions, missing CUDA drivers) that ignore TF_CPP_MIN_LOG_LEVEL, and a
harmless C++ error line at the first `fit` (an attribute unknown to the
op), all of which would bury kbn's own one-line messages. Unless the user
set TF_CPP_MIN_LOG_LEVEL themselves, it is set to 3 and stderr is silenced
while TensorFlow loads and finds its devices; Python exceptions still
propagate.
"""

import contextlib
import os
import sys


def import_tensorflow():
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ or "tensorflow" in sys.modules:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            import tensorflow as tf

            tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@contextlib.contextmanager
def tensorflow_warnings_off():
    """Silence TensorFlow's Python warnings within the block.

    For code that builds many graphs on purpose (one per weight in the
    gradient check, one model per trial in a search), where TensorFlow's
    "frequent retracing" warning only alarms the user.
    """
    import tensorflow as tf

    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        yield
    finally:
        logger.setLevel(level)
