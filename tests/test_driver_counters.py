"""Invocation counter stores: reservation, give-back, re-synchronisation, persistence."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from drivers.dlms.counters import (
    MAX_COUNTER,
    InvocationCounterStore,
    MemoryCounterStore,
    SqliteCounterStore,
)
from drivers.errors import CounterOutOfSync


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> InvocationCounterStore:
    if request.param == "memory":
        return MemoryCounterStore()
    return SqliteCounterStore(tmp_path / "counters.db")


def test_reservations_never_overlap(store: InvocationCounterStore) -> None:
    first = store.reserve("m1", 64)
    second = store.reserve("m1", 64)
    assert second == first + 64
    assert store.reserve("m2", 1) == 1  # per meter


def test_give_back_only_when_nobody_reserved_after(store: InvocationCounterStore) -> None:
    start = store.reserve("m1", 64)
    store.give_back("m1", start + 64, start + 5)
    assert store.peek("m1") == start + 5
    a = store.reserve("m1", 64)
    b = store.reserve("m1", 64)
    store.give_back("m1", a + 64, a + 1)  # b was reserved after a: a's tail stays used
    assert store.peek("m1") == b + 64


def test_advance_never_moves_back(store: InvocationCounterStore) -> None:
    store.advance_to("m1", 1000)
    assert store.peek("m1") == 1000
    store.advance_to("m1", 10)
    assert store.peek("m1") == 1000


def test_exhausted_counter_space_needs_new_keys(store: InvocationCounterStore) -> None:
    store.advance_to("m1", MAX_COUNTER - 1)
    store.reserve("m1", 2)
    with pytest.raises(CounterOutOfSync):
        store.reserve("m1", 1)


def test_sqlite_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    first = SqliteCounterStore(path)
    start = first.reserve("meter", 64)
    first.close()  # as if the process died with the block in use
    again = SqliteCounterStore(path)
    assert again.reserve("meter", 1) == start + 64


def _reserve_concurrently(group: list[InvocationCounterStore]) -> list[int]:
    taken: list[int] = []
    lock = threading.Lock()

    def work() -> None:
        for i in range(50):
            start = group[i % len(group)].reserve("m", 3)
            with lock:
                taken.extend(range(start, start + 3))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return taken


def test_concurrent_reservations_are_disjoint(tmp_path: Path) -> None:
    shared = [SqliteCounterStore(tmp_path / "shared.db") for _ in range(2)]
    for group in (shared, [MemoryCounterStore()]):
        taken = _reserve_concurrently(group)
        assert len(taken) == len(set(taken)) == 600
