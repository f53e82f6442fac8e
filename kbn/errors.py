"""The error types the `kbn` command turns into a one-line message."""

from collections.abc import Mapping


class KbnError(ValueError):
    """Bad input from the user (a data SPEC, a path, a hyper-parameter), or a run that cannot go on.

    The library raises it with what it received and what it expected; the
    CLI prints `error: <message>` on stderr, never a traceback, and exits
    with status 2 (the command is wrong), or 1 when it is raised once the
    work began (training, searching, writing a report). It subclasses
    `ValueError` so callers that already catch `ValueError` keep working.
    """


class WorkerLost(KbnError):
    """A worker of a multi-worker run stopped or cannot be reached, so the run cannot go on.

    `train` raises it, from TensorFlow's error, when a collective of
    `MultiWorkerMirroredStrategy` fails because a peer is gone; the message
    names the worker and says how to resume. It is raised once training
    began, so `kbn train` exits with status 1.

    Args:
        message: what happened and what to run next.
        workers: the lost workers, {task ("worker 1"): address
            ("10.0.0.2:12345")}, as TF_CONFIG names them; empty when
            TensorFlow's error does not tell which.
    """

    def __init__(self, message: str, workers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.workers = dict(workers or {})
