"""Per-meter invocation counters for suite-0 ciphering.

A counter value must never be used twice with the same key (AES-GCM nonce reuse breaks both
confidentiality and authenticity), so counters are *reserved* before use: a session takes a
block, the store persists the end of the block, and only then does the session cipher with
values from it. A crash loses at most the rest of a block, never repeats a value. At the end of
a session the unused tail is given back if nobody reserved after it.

The store holds, per meter, the next counter value that may be used. Re-synchronisation from
the meter's counter object only ever moves it forward.
"""

from __future__ import annotations

import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

from drivers.errors import CounterOutOfSync

MAX_COUNTER = 0xFFFFFFFF
DEFAULT_START = 1


class InvocationCounterStore(ABC):
    """Thread-safe. ``blocking`` says whether calls may wait on disk (the driver then runs
    them in a worker thread)."""

    blocking = False

    @abstractmethod
    def reserve(self, meter_id: str, count: int) -> int:
        """Take ``count`` consecutive values and return the first, persisted before return.
        Raises CounterOutOfSync when the 32-bit space is exhausted (new keys are needed)."""

    @abstractmethod
    def give_back(self, meter_id: str, reserved_end: int, next_unused: int) -> None:
        """Return ``next_unused..reserved_end-1`` if no reservation was made after it."""

    @abstractmethod
    def advance_to(self, meter_id: str, value: int) -> None:
        """Make the next value at least ``value`` (re-synchronisation); never moves back."""

    @abstractmethod
    def peek(self, meter_id: str) -> int:
        """The next value that would be reserved."""


def _check_reserve(start: int, count: int) -> int:
    if count < 1:
        raise ValueError("reserve at least one counter value")
    end = start + count
    if end - 1 > MAX_COUNTER:
        raise CounterOutOfSync(
            "invocation counter space exhausted; the meter needs new keys",
            detail={"next": start},
        )
    return end


class MemoryCounterStore(InvocationCounterStore):
    """For tests and single-process tools: counters live as long as the object."""

    def __init__(self, start: int = DEFAULT_START) -> None:
        self._start = start
        self._next: dict[str, int] = {}
        self._lock = threading.Lock()

    def reserve(self, meter_id: str, count: int) -> int:
        with self._lock:
            start = self._next.get(meter_id, self._start)
            self._next[meter_id] = _check_reserve(start, count)
            return start

    def give_back(self, meter_id: str, reserved_end: int, next_unused: int) -> None:
        with self._lock:
            if self._next.get(meter_id) == reserved_end and next_unused < reserved_end:
                self._next[meter_id] = next_unused

    def advance_to(self, meter_id: str, value: int) -> None:
        with self._lock:
            if value > self._next.get(meter_id, self._start):
                self._next[meter_id] = min(value, MAX_COUNTER + 1)

    def peek(self, meter_id: str) -> int:
        with self._lock:
            return self._next.get(meter_id, self._start)


class SqliteCounterStore(InvocationCounterStore):
    """Counters in an SQLite file, committed with ``synchronous=FULL`` so a reservation
    survives a power cut. Several processes may share the file (``BEGIN IMMEDIATE``)."""

    blocking = True

    def __init__(self, path: str | Path, start: int = DEFAULT_START) -> None:
        self._start = start
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            str(path), timeout=10.0, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS invocation_counter ("
            " meter_id TEXT PRIMARY KEY, next_value INTEGER NOT NULL)"
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _read(self, meter_id: str) -> int:
        row = self._db.execute(
            "SELECT next_value FROM invocation_counter WHERE meter_id = ?", (meter_id,)
        ).fetchone()
        return self._start if row is None else int(row[0])

    def _write(self, meter_id: str, value: int) -> None:
        self._db.execute(
            "INSERT INTO invocation_counter (meter_id, next_value) VALUES (?, ?)"
            " ON CONFLICT(meter_id) DO UPDATE SET next_value = excluded.next_value",
            (meter_id, value),
        )

    def _transaction(self, meter_id: str, change: Callable[[int], int]) -> int:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                current = self._read(meter_id)
                new = change(current)
                if new != current:
                    self._write(meter_id, new)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return current

    def reserve(self, meter_id: str, count: int) -> int:
        return self._transaction(meter_id, lambda current: _check_reserve(current, count))

    def give_back(self, meter_id: str, reserved_end: int, next_unused: int) -> None:
        self._transaction(
            meter_id,
            lambda current: (
                next_unused if current == reserved_end and next_unused < reserved_end else current
            ),
        )

    def advance_to(self, meter_id: str, value: int) -> None:
        self._transaction(meter_id, lambda current: max(current, min(value, MAX_COUNTER + 1)))

    def peek(self, meter_id: str) -> int:
        with self._lock:
            return self._read(meter_id)
