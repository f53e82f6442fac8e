"""The one error type the `kbn` command turns into a one-line message."""


class KbnError(ValueError):
    """Bad input from the user: a data SPEC, a path, a hyper-parameter.

    The library raises it with what it received and what it expected; the
    CLI prints `error: <message>` on stderr and exits with status 2, never a
    traceback. It subclasses `ValueError` so callers that already catch
    `ValueError` keep working.
    """
