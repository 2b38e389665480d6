"""Files that processes on one host share: an exclusive lock (``flock`` on a lock file), lines
appended durably (``append_durably``), and a directory entry made durable (``fsync_dir``)."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def exclusive(lock_file: str | Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_file`` (created if missing) for the block."""
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def fsync_dir(path: str | Path) -> None:
    """fsync a directory, so a file created or renamed in it survives a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def append_durably(path: str | Path, data: bytes) -> None:
    """Append lines (``data`` ends with a newline) to ``path`` (created if missing) and fsync it: on
    disk when this returns. Hold the file's lock around it when other processes append too.

    A crash in the middle of an earlier append leaves a torn last line with no newline; it is
    closed first, so it stays one unreadable line and ``data``'s first line is not glued to it."""
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
