"""Tests for kbn.training.runlock: one writer per folder; a second one, in another process or in
this one, gets an error naming the first; a SIGKILLed holder leaves the folder free."""

import contextlib
import fcntl
import os
import signal
import socket
import threading
import time

import pytest

from kbn.errors import KbnError
from kbn.training.runlock import RunLock, is_held


@contextlib.contextmanager
def held_in_another_process(folder):
    """Fork a child that holds `folder` until killed; yield its pid once it holds it.

    fork, not a fresh interpreter: the child needs no imports, so the test stays fast.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: hold the folder, say so, wait to be killed
        try:
            os.close(read_end)
            with RunLock(folder):
                os.write(write_end, b"held")
                time.sleep(120)
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        assert os.read(read_end, 4) == b"held", "the child could not take the lock"
        yield pid
    finally:
        os.close(read_end)
        with contextlib.suppress(ProcessLookupError, ChildProcessError):  # a test killed it
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def test_second_holder_in_another_process_gets_an_error_naming_the_first(tmp_path):
    folder = tmp_path / "run"
    with (
        held_in_another_process(folder) as pid,
        pytest.raises(KbnError) as error,
        RunLock(folder),
    ):
        pytest.fail("took a folder another process holds")
    message = str(error.value)
    assert f"run folder {folder} is in use by process {pid} on {socket.gethostname()}" in message
    assert "\n" not in message  # the CLI prints it as one line


def test_message_names_what_is_held(tmp_path):
    with (
        held_in_another_process(tmp_path),
        pytest.raises(KbnError, match=f"^search project {tmp_path} is in use by process"),
    ):
        RunLock(tmp_path, what="search project").__enter__()


def test_a_sigkilled_holder_leaves_the_folder_free(tmp_path):
    folder = tmp_path / "run"
    with held_in_another_process(folder) as pid:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        # The dead holder's pid is still written in the file; only the flock counts.
        assert (folder / ".lock").read_text().split()[0] == str(pid)
        with RunLock(folder):
            assert (folder / ".lock").read_text().split()[0] == str(os.getpid())


def test_nested_use_of_one_folder_in_one_process_raises(tmp_path):
    with (
        RunLock(tmp_path / "run"),
        pytest.raises(KbnError, match=f"in use by process {os.getpid()} "),
        RunLock(tmp_path / "run"),
    ):
        pytest.fail("took a folder this process already holds")


def test_other_folders_are_independent(tmp_path):
    with RunLock(tmp_path / "a"), RunLock(tmp_path / "b"):
        pass


def test_leaving_releases_the_folder_and_clears_the_holder(tmp_path):
    folder = tmp_path / "deep" / "run"
    with RunLock(folder):
        assert folder.is_dir()
    assert (folder / ".lock").read_text() == ""
    with RunLock(folder):  # taken again at once
        pass


def test_leaving_on_an_exception_releases_the_folder(tmp_path):
    with pytest.raises(RuntimeError), RunLock(tmp_path):
        raise RuntimeError("the run failed")
    with RunLock(tmp_path):
        pass


def test_one_runlock_cannot_be_entered_twice(tmp_path):
    lock = RunLock(tmp_path)
    with lock, pytest.raises(KbnError, match="already held"):
        lock.__enter__()
    with lock:  # reusable once released
        pass


def test_is_held_is_true_only_while_a_runlock_holds_the_folder(tmp_path):
    assert not is_held(tmp_path / "never")  # no folder, no lock file
    with RunLock(tmp_path / "r"):
        assert is_held(tmp_path / "r")
    assert not is_held(tmp_path / "r")


def test_a_writer_starting_while_is_held_looks_still_gets_the_folder(tmp_path):
    folder = tmp_path / "r"
    with RunLock(folder):
        pass
    fd = os.open(folder / ".lock", os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH)  # is_held's probe, caught mid-way
    timer = threading.Timer(0.02, os.close, [fd])
    timer.start()
    try:
        with RunLock(folder):
            assert is_held(folder)
    finally:
        timer.join()
