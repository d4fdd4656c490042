"""The task queue: priority, then attempt, then age; the reserved share for bulk work."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from headend.queue import TaskQueue


@dataclass(eq=False)
class Item:
    name: str
    priority: int
    attempt: int = 0


def drain(queue: TaskQueue[Item]) -> list[str]:
    out = []
    while queue:
        out.append(queue.pop()[0].name)
    return out


def test_priority_then_attempt_then_age() -> None:
    queue: TaskQueue[Item] = TaskQueue(share=1000)
    for item in [
        Item("bulk-1", 90),
        Item("retry-od", 10, attempt=1),
        Item("od-1", 10),
        Item("bulk-retry", 90, attempt=2),
        Item("od-2", 10),
        Item("control", 0),
        Item("bulk-2", 90),
    ]:
        queue.push(item)
    assert drain(queue) == [
        "control",
        "od-1",
        "od-2",
        "retry-od",
        "bulk-1",
        "bulk-2",
        "bulk-retry",
    ]


def test_reserved_share_prevents_starvation() -> None:
    queue: TaskQueue[Item] = TaskQueue(share=5)
    for i in range(10):
        queue.push(Item(f"bulk{i}", 90))
    for i in range(100):
        queue.push(Item(f"od{i}", 10))
    first = [queue.pop()[0].name for _ in range(50)]
    bulk = [n for n in first if n.startswith("bulk")]
    # one pop in five goes to bulk while on-demand floods: bulk is served, in age order
    assert bulk == [f"bulk{i}" for i in range(10)]
    assert first[:4] == ["od0", "od1", "od2", "od3"] and first[4] == "bulk0"


def test_keeping_age_on_requeue() -> None:
    queue: TaskQueue[Item] = TaskQueue()
    a, b = Item("a", 50), Item("b", 50)
    seq_a = queue.push(a)
    queue.push(b)
    assert queue.pop()[0] is a
    queue.push(a, seq_a)
    assert queue.pop()[0] is a


def test_empty_pop_and_bad_share() -> None:
    with pytest.raises(IndexError):
        TaskQueue().pop()
    with pytest.raises(ValueError, match="share"):
        TaskQueue(share=1)


def test_hundred_thousand_tasks_fast() -> None:
    queue: TaskQueue[Item] = TaskQueue()
    items = [Item(str(i), (i % 3) * 40, i % 2) for i in range(100_000)]
    started = time.perf_counter()
    for item in items:
        queue.push(item)
    popped = 0
    while queue:
        queue.pop()
        popped += 1
    assert popped == 100_000
    assert time.perf_counter() - started < 5.0
