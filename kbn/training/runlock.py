"""One writer per run folder or search project.

Two processes writing one folder interleave their files: a scheduler that
wrongly believes a run died and starts `kbn train --run-name k --resume`
beside the live one ends with a history that misses epochs. `RunLock` makes
the second writer fail at once, with one line naming the live one:

    with RunLock(run_dir):
        ...  # the only process writing run_dir

The lock is `fcntl.flock` on `folder/.lock`. The operating system drops it
when the holder's file is closed, which happens when the process exits for
any reason, SIGKILL included: a killed run leaves nothing to clean up, and a
later `--resume` takes the folder. The pid and host written in the file are
only for the message; the flock alone decides who holds the folder.
"""

import fcntl
import os
import pathlib
import socket
import time

from kbn.errors import KbnError

LOCK_NAME = ".lock"


class RunLock:
    """Context manager: hold `folder` for one writer (fcntl.flock on folder/.lock, pid and host
    written in it).

    Entering creates `folder` if needed and takes an exclusive, non-blocking
    flock on `folder/.lock`; leaving releases it. A second holder, in another
    process or in this one (each `RunLock` opens its own file description,
    and flocks on two descriptions conflict), gets a `KbnError` instead of
    waiting. The `.lock` file stays in the folder: removing it on exit would
    let a waiter lock the removed file while a third process locks a new one.

    Args:
        folder: the run folder or search project to hold.
        what: how the message names the folder ("run folder", "search project").

    Raises:
        KbnError: on entering, when a live process holds `folder`; the
            message names its pid and host.

    Example:

    >>> with RunLock("runs/k"):
    ...     pass  # write runs/k
    """

    def __init__(self, folder, what="run folder"):
        self.folder = pathlib.Path(folder)
        self.what = what
        self.path = self.folder / LOCK_NAME
        self._fd = None

    def __enter__(self):
        if self._fd is not None:
            raise KbnError(
                f"{self.what} {self.folder}: this RunLock is already held; "
                "enter a RunLock once at a time"
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        # No O_TRUNC: the holder's pid and host must survive for the message.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            _lock(fd)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise KbnError(
                f"{self.what} {self.folder} is in use by {holder}; wait for it to end "
                "or stop it, then run again (a killed process releases the folder)"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc):
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            # Empty while nobody holds it, so a stale pid is never shown.
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # releases the flock


def _lock(fd, tries=4, pause=0.05):
    """An exclusive flock on `fd`, without waiting for a writer; BlockingIOError if one holds it.

    `is_held` (`kbn runs`) takes a shared flock for an instant: a writer that
    starts in that instant tries again a few times rather than failing.
    """
    for attempt in range(tries):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if attempt == tries - 1:
                raise
            time.sleep(pause)


def _read_holder(fd):
    """'process PID on HOST' from the lock file, as its holder wrote it."""
    fields = os.pread(fd, 512, 0).decode(errors="replace").split()
    if len(fields) >= 2:
        return f"process {fields[0]} on {fields[1]}"
    # The holder took the lock and has not yet written its pid.
    return "another process (pid not yet written)"


def is_held(folder):
    """Whether a live process holds `folder` (its `.lock`) now; False when it has no lock.

    Takes and drops a shared flock at once, so it never keeps a writer out for
    longer than the call.

    Args:
        folder: a run folder or search project.

    Returns:
        True while a `RunLock` on `folder` is held, in this process or another.
    """
    try:
        fd = os.open(pathlib.Path(folder) / LOCK_NAME, os.O_RDONLY)
    except OSError:  # no lock file: nobody ever held the folder
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # releases the shared flock, if taken
    return False
