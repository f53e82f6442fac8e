"""The one error type the `kbn` command turns into a one-line message."""


class KbnError(ValueError):
    """Bad input from the user: a data SPEC, a path, a hyper-parameter.

    The library raises it with what it received and what it expected; the
    CLI prints `error: <message>` on stderr, never a traceback, and exits
    with status 2 (the command is wrong), or 1 when it is raised once the
    work began (training, searching, writing a report). It subclasses
    `ValueError` so callers that already catch `ValueError` keep working.
    """
