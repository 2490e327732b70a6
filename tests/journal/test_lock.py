"""journal/lock.py: one process at a time per data directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from journal.lock import DataDirBusy, DataDirLock


def test_second_lock_on_the_same_directory_is_refused_while_the_first_is_held(tmp_path):
    with DataDirLock(tmp_path) as first:
        assert first.path == tmp_path / ".lock" and first.path.exists()
        with pytest.raises(DataDirBusy, match="in use"), DataDirLock(tmp_path):
            pass
        with pytest.raises(DataDirBusy):  # still refused: the failed attempt released nothing
            DataDirLock(tmp_path).__enter__()
    with DataDirLock(tmp_path):  # released: a new holder gets it
        pass


def test_lock_can_be_taken_again_after_an_exception_in_the_body(tmp_path):
    with pytest.raises(RuntimeError), DataDirLock(tmp_path):
        raise RuntimeError("crash inside")
    with DataDirLock(tmp_path):
        pass


def test_different_directories_do_not_conflict(tmp_path):
    with DataDirLock(tmp_path / "a"), DataDirLock(tmp_path / "b"):
        pass
    assert (tmp_path / "a" / ".lock").exists()  # the directory is created on demand


def test_lock_file_is_private(tmp_path):
    with DataDirLock(tmp_path):
        assert (os.stat(tmp_path / ".lock").st_mode & 0o777) == 0o600 & ~_umask()


def test_failed_attempt_does_not_leak_file_descriptors(tmp_path):
    fds = lambda: len(os.listdir("/proc/self/fd"))  # noqa: E731
    with DataDirLock(tmp_path):
        n = fds()
        for _ in range(20):
            with pytest.raises(DataDirBusy):
                DataDirLock(tmp_path).__enter__()
        assert fds() == n


def test_another_process_is_refused_while_held(tmp_path):
    code = (
        "import sys\n"
        "from journal.lock import DataDirLock, DataDirBusy\n"
        "try:\n"
        f"    DataDirLock({str(tmp_path)!r}).__enter__()\n"
        "except DataDirBusy:\n"
        "    sys.exit(3)\n"
    )
    root = str(Path(__file__).resolve().parents[2])
    run = lambda: subprocess.run([sys.executable, "-c", code], cwd=root, timeout=60).returncode  # noqa: E731
    with DataDirLock(tmp_path):
        assert run() == 3
    assert run() == 0


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
