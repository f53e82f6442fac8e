"""Every private name of Keras and KerasTuner that kbn uses, in one place.

Keras and KerasTuner offer no public way to do the few things below; each
function names the private attribute it reads and says why kbn needs it.
Everything else in kbn and tuning uses their public APIs only. When an
upgrade removes or renames one of these names, `tests/test_compat.py` fails
naming it, and this module is the one place to change.

`OVERRIDDEN` lists the private methods that kbn's subclasses override; a
test checks that they still exist where kbn expects them (an override of a
method that was renamed would silently never run).

KerasTuner's names are imported inside the functions that need them, so
that `import kbn` does not load KerasTuner.
"""

import importlib


def variable_index(optimizer, variable):
    """The index of `variable` in the optimizer's slot lists (`optimizer.momentums[i]`).

    Every Keras optimizer's own `update_step` looks its slots up this way;
    Keras has no public lookup. Used by `kbn.optim.SGD`.
    """
    return optimizer._get_variable_index(variable)


def tensorboard_writers(callback):
    """The train and validation summary writers of a `keras.callbacks.TensorBoard`.

    The callback offers no flush: kbn flushes them at every epoch end, so a
    killed run keeps its last epochs' curves.
    """
    return callback._train_writer, callback._val_writer


def oracle_random_values(oracle):
    """KerasTuner's random draw of every hyperparameter of the oracle's space (None when
    exhausted)."""
    return oracle._random_values()


def oracle_retry_queue(oracle):
    """The trial ids KerasTuner hands out again before new ones: a dead worker's trial goes
    there."""
    return oracle._retry_queue


def oracle_state_file(oracle):
    """The path of the oracle's `oracle.json`, which kbn writes whole (KerasTuner writes it in
    place)."""
    return oracle._get_oracle_fname()


def oracle_trial_dir(oracle, trial_id):
    """The folder of one trial's `trial.json`, which kbn writes whole."""
    return oracle._get_trial_dir(trial_id)


def tuner_state_file(tuner):
    """The path of the tuner's own state file, which kbn writes whole."""
    return tuner._get_tuner_fname()


def tuner_is_worker(tuner):
    """Whether the tuner runs in a worker process of a distributed search (whose oracle is the
    chief's)."""
    return tuner._is_worker()


def oracle_service():
    """KerasTuner's gRPC oracle service: (add_servicer_to_server, OracleServicer, exit_chief).

    The chief serves the oracle with KerasTuner's own servicer and protocol,
    but with a loop of its own (KerasTuner's waits for its workers forever);
    KerasTuner exports neither.
    """
    protos = importlib.import_module("keras_tuner.src.protos")
    chief = importlib.import_module("keras_tuner.src.distribute.oracle_chief")
    return (
        protos.get_service_grpc().add_OracleServicer_to_server,
        chief.OracleServicer,
        chief.exit_chief,
    )


# (module, class, private method): the private methods kbn's subclasses override.
OVERRIDDEN = (
    # EpochTensorBoard logs the rate the epoch ran at, not the next epoch's.
    ("keras.callbacks", "TensorBoard", "_collect_learning_rate"),
    # CoarseToFineOracle writes trial.json whole, and only when a pruning rung needs it.
    ("keras_tuner", "Oracle", "_save_trial"),
)

# (module, attribute path) of every private name the functions above read.
READ = (
    ("keras.optimizers", "Optimizer._get_variable_index"),
    ("keras.callbacks", "TensorBoard._train_writer"),
    ("keras.callbacks", "TensorBoard._val_writer"),
    ("keras_tuner", "Oracle._random_values"),
    ("keras_tuner", "Oracle._get_oracle_fname"),
    ("keras_tuner", "Oracle._get_trial_dir"),
    ("keras_tuner", "Tuner._get_tuner_fname"),
    ("keras_tuner", "Tuner._is_worker"),
    ("keras_tuner.src.protos", "get_service_grpc"),
    ("keras_tuner.src.distribute.oracle_chief", "OracleServicer"),
    ("keras_tuner.src.distribute.oracle_chief", "exit_chief"),
)

# Instance attributes that the owner's __init__ sets: (module, class, attribute).
INSTANCE = (("keras_tuner", "Oracle", "_retry_queue"),)
