"""The task queue: priority, then attempt number, then age; on-demand pre-empts bulk without
starving it.

Order. Within one priority class a task's key is ``(attempt, seq)``: first attempts before
retries, then the order of arrival (``seq`` is a counter, so equal keys never compare the
tasks themselves). A lower ``priority`` number is more urgent (see :class:`headend.jobs.Priority`).

Anti-starvation rule (a reserved share). Pops are strict by priority, except that every
``share``-th pop (default 10) that finds more than one class waiting serves the class, other
than the most urgent, whose head task has waited longest. Bulk work therefore gets at least
``1/share`` of the dispatch slots while on-demand work floods in, and on-demand work is
delayed by at most one bulk task in ``share``.

Every operation is O(log n) in the number of queued tasks (one binary heap per priority class;
the number of classes is small and fixed by the jobs that use the queue).
"""

from __future__ import annotations

import heapq
import itertools
from typing import Generic, Protocol, TypeVar


class Queueable(Protocol):
    """What the queue needs to know of a task."""

    @property
    def priority(self) -> int: ...

    @property
    def attempt(self) -> int: ...


T = TypeVar("T", bound=Queueable)


class TaskQueue(Generic[T]):
    """A priority queue of tasks with a reserved share for the less urgent classes."""

    def __init__(self, share: int = 10) -> None:
        if share < 2:
            raise ValueError("share must be >= 2 (one pop in `share` goes to a lower class)")
        self.share = share
        self._heaps: dict[int, list[tuple[int, int, T]]] = {}
        self._seq = itertools.count()
        self._pops = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __bool__(self) -> bool:
        return self._size > 0

    def push(self, task: T, seq: int | None = None) -> int:
        """Queue ``task``; returns its sequence number. Pass ``seq`` to keep a task's age when
        it is queued again (it then sorts as if it had never left)."""
        if seq is None:
            seq = next(self._seq)
        heap = self._heaps.get(task.priority)
        if heap is None:
            heap = self._heaps[task.priority] = []
        heapq.heappush(heap, (task.attempt, seq, task))
        self._size += 1
        return seq

    def pop(self) -> tuple[T, int]:
        """The next task and its sequence number. Raises IndexError when empty."""
        if not self._size:
            raise IndexError("pop from an empty TaskQueue")
        classes = [p for p, h in self._heaps.items() if h]
        chosen = min(classes)
        if len(classes) > 1:
            self._pops += 1
            if self._pops % self.share == 0:
                # the reserved share: the longest-waiting head among the less urgent classes
                chosen = min(
                    (p for p in classes if p != chosen), key=lambda p: self._heaps[p][0][1]
                )
        _, seq, task = heapq.heappop(self._heaps[chosen])
        self._size -= 1
        return task, seq

    def peek_priority(self) -> int | None:
        """The most urgent priority waiting, or None."""
        return min((p for p, h in self._heaps.items() if h), default=None)

    def drain(self) -> list[T]:
        """Remove and return every task, in no particular order."""
        tasks = [t for h in self._heaps.values() for _, _, t in h]
        self._heaps.clear()
        self._size = 0
        return tasks


__all__ = ["Queueable", "TaskQueue"]
