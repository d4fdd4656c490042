"""Garbage collection in a serving process: young collections cheap and less often, full
collections when requests pause.

CPython's defaults (a young collection every 700 allocations, a full one when the heap has
grown by a quarter) paused a server's loop for up to 160 ms per full collection while
thousands of asynchronous requests waited for their jobs: each pending request keeps its
coroutines and message alive, and a full collection walks all of them. That made the tail of
the acknowledgement latency (bench/soap.py: control ack p99 ~60 ms, ~33 ms without
automatic full collections). :func:`tune` turns automatic full collections off and makes
young ones rarer; :class:`QuietCollector` runs the full collections instead, when no request
has arrived for a moment, and at least every few minutes whatever the load (reference cycles
are still freed; a busy server pauses then, as before, but rarely).
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable

YOUNG = 10_000  # allocations between young collections (CPython's default: 700)
MIDDLE = 50  # young collections between middle-generation ones (default: 10)
NO_AUTOMATIC_FULL = 1_000_000  # middle collections between full ones: never, in practice
QUIET_S = 0.1  # no request for this long: a full collection may run
EVERY_S = 30.0  # full collections at most this often when quiet...
AT_MOST_S = 300.0  # ... and at least this often, quiet or not


def tune() -> None:
    """Set this process's collector thresholds for serving (see the module docstring)."""
    gc.set_threshold(YOUNG, MIDDLE, NO_AUTOMATIC_FULL)


def tuned() -> bool:
    """Whether automatic full collections are off here (:func:`tune` was called)."""
    return gc.get_threshold()[2] >= NO_AUTOMATIC_FULL


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
