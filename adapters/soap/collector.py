"""Garbage collection in a serving process: only young collections run automatically, and
they run less often; the older generations are collected when requests pause.

CPython's defaults (a young collection every 700 allocations, a middle one every 10 young
ones, a full one when the heap has grown by a quarter) paused a server's loop for up to
160 ms per full collection while thousands of asynchronous requests waited for their jobs:
each pending request keeps its coroutines and message alive, and a full collection walks all
of them. A middle collection walks everything that survived the young collections since the
last one, which mid-burst is every pending request accepted meanwhile: with full collections
off, middle ones held a process for 230-250 ms (bench/soap.py, 2 processes, control ack p99
150 ms in the rounds where one fell). So :func:`tune` leaves only young collections automatic
(every 10,000 allocations: a few milliseconds, whatever the backlog), and
:class:`QuietCollector` runs full collections (all generations) when no request has arrived
for a moment, and at least every few minutes whatever the load (reference cycles are still
freed; a busy server pauses then, as before, but rarely).
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable

YOUNG = 10_000  # allocations between young collections (CPython's default: 700)
#: Young collections between middle ones, and middle between full ones: never, in practice.
NO_AUTOMATIC = 1_000_000
QUIET_S = 0.1  # no request for this long: a full collection may run
EVERY_S = 30.0  # full collections at most this often when quiet...
AT_MOST_S = 300.0  # ... and at least this often, quiet or not


def tune() -> None:
    """Set this process's collector thresholds for serving (see the module docstring)."""
    gc.set_threshold(YOUNG, NO_AUTOMATIC, NO_AUTOMATIC)


def tuned() -> bool:
    """Whether automatic middle and full collections are off here (:func:`tune` was
    called): the :class:`QuietCollector` has to run them."""
    return min(gc.get_threshold()[1:]) >= NO_AUTOMATIC


class QuietCollector:
    """Runs full collections when requests pause (``quiet_for()``: seconds since the last
    request arrived)."""

    def __init__(
        self,
        quiet_for: Callable[[], float],
        *,
        quiet: float = QUIET_S,
        every: float = EVERY_S,
        at_most: float = AT_MOST_S,
        clock: Callable[[], float] = time.monotonic,
        collect: Callable[[], object] = gc.collect,
    ) -> None:
        self.quiet_for = quiet_for
        self.quiet = quiet
        self.every = every
        self.at_most = at_most
        self.clock = clock
        self.collect = collect
        self.last = clock()
        self.collections = 0

    def due(self) -> bool:
        since = self.clock() - self.last
        return since >= self.at_most or (since >= self.every and self.quiet_for() >= self.quiet)

    def collect_if_due(self) -> bool:
        if not self.due():
            return False
        self.collect()
        self.last = self.clock()
        self.collections += 1
        return True

    async def run(self, poll: float = 0.05) -> None:
        while True:
            await asyncio.sleep(poll)
            self.collect_if_due()
