"""At most ``per_host`` requests at once to one host, across every poller
that shares a database (DESIGN §5, §10).

Within a process a semaphore per host is enough. Across processes (an
`aggregator poll` from cron beside a running `aggregator run`) the slots are
lock files next to the SQLite database: slot *n* of a host is held by
whoever holds an exclusive ``flock`` on its file. The kernel releases a lock
when its process dies, even by SIGKILL, so a crashed poller never keeps a
host's slot. (PostgreSQL keeps the slots in the database instead, for
pollers on several machines.)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

# How often a poller waiting for a host held by another process looks again.
POLL_EVERY = 0.05
POLL_MAX = 0.5


class HostSlots(Protocol):
    def hold(self, host: str, limit: int, abort: threading.Event) -> contextlib.AbstractContextManager[bool]:
        """Hold one of the host's ``limit`` slots for the block; waits for one.
        The value is False when ``abort`` was set while waiting (no slot held)."""
        ...


class LocalHostSlots:
    """Slots shared by the threads of this process only."""

    def __init__(self) -> None:
        self._slots: dict[tuple[str, int], threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()

    def _semaphore(self, host: str, limit: int) -> threading.BoundedSemaphore:
        with self._lock:
            slot = self._slots.get((host, limit))
            if slot is None:
                slot = self._slots[host, limit] = threading.BoundedSemaphore(limit)
            return slot

    @contextlib.contextmanager
    def hold(self, host: str, limit: int, abort: threading.Event) -> Iterator[bool]:
        semaphore = self._semaphore(host, limit)
        while not semaphore.acquire(timeout=POLL_MAX):
            if abort.is_set():
                yield False
                return
        try:
            yield True
        finally:
            semaphore.release()


class FileHostSlots(LocalHostSlots):
    """Slots shared by every process using the same directory of lock files."""

    def __init__(self, directory: Path):
        super().__init__()
        self.directory = directory

    def _path(self, host: str, index: int) -> Path:
        digest = hashlib.sha256(host.encode("utf-8", "surrogatepass")).hexdigest()[:24]
        return self.directory / f"{digest}.{index}"

    def _try_files(self, host: str, limit: int) -> int | None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for index in range(limit):
            fd = os.open(self._path(host, index), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return fd
        return None

    @contextlib.contextmanager
    def hold(self, host: str, limit: int, abort: threading.Event) -> Iterator[bool]:
        with super().hold(host, limit, abort) as held:
            if not held:
                yield False
                return
            wait = POLL_EVERY
            fd = self._try_files(host, limit)
            while fd is None:
                if abort.wait(wait):
                    yield False
                    return
                wait = min(wait * 2, POLL_MAX)
                fd = self._try_files(host, limit)
            try:
                yield True
            finally:
                os.close(fd)  # closing the descriptor releases the lock
