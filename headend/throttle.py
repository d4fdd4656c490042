"""Throttling per communication path (or network segment): at most ``max_sessions`` sessions
open at once and at most ``connections_per_s`` new connections per second.

The rate is a token bucket: it holds at most ``burst`` tokens (default: one second's worth,
at least 1), refills at ``connections_per_s`` tokens per second, and every new connection
takes one token. Over any interval of length ``t`` at most ``burst + rate * t`` connections
start. Time comes from an injectable clock (seconds as a float), so tests are deterministic.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Limits:
    max_sessions: int = 100
    connections_per_s: float = 50.0
    burst: float | None = None  # None: max(1, connections_per_s)

    def __post_init__(self) -> None:
        if not isinstance(self.max_sessions, int) or self.max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, not {self.max_sessions!r}")
        if not self.connections_per_s > 0:
            raise ValueError(f"connections_per_s must be > 0, not {self.connections_per_s!r}")
        if self.burst is not None and not self.burst >= 1:
            raise ValueError(f"burst must be >= 1, not {self.burst!r}")

    @property
    def bucket_size(self) -> float:
        return self.burst if self.burst is not None else max(1.0, self.connections_per_s)


class TokenBucket:
    def __init__(self, rate: float, size: float, clock: Clock) -> None:
        self.rate = rate
        self.size = size
        self._clock = clock
        self._tokens = size
        self._stamp = clock()

    def _refill(self) -> float:
        now = self._clock()
        if now > self._stamp:
            self._tokens = min(self.size, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
        return now

    def try_take(self) -> bool:
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def wait_time(self) -> float:
        """Seconds until a token is available (0 if one is)."""
        self._refill()
        return 0.0 if self._tokens >= 1.0 else (1.0 - self._tokens) / self.rate


class PathThrottle:
    """The limits of one path and its current use."""

    def __init__(self, limits: Limits, clock: Clock) -> None:
        self.limits = limits
        self.active = 0
        self.bucket = TokenBucket(limits.connections_per_s, limits.bucket_size, clock)

    def try_start(self) -> bool:
        """Take a session slot and a connection token, or neither."""
        if self.active >= self.limits.max_sessions or not self.bucket.try_take():
            return False
        self.active += 1
        return True

    def release(self) -> None:
        if self.active <= 0:
            raise RuntimeError("release without a matching start")
        self.active -= 1

    def wait_time(self) -> float:
        """Seconds until a start may succeed on rate alone; ``math.inf`` while all session
        slots are taken (a release, not time, frees one)."""
        if self.active >= self.limits.max_sessions:
            return math.inf
        return self.bucket.wait_time()


class Throttles:
    """Every path's throttle, created on first use with the default limits or the path's own."""

    def __init__(
        self,
        default: Limits | None = None,
        per_path: dict[str, Limits] | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.default = default or Limits()
        self.per_path = dict(per_path or {})
        self.clock = clock
        self._paths: dict[str, PathThrottle] = {}

    def get(self, path: str) -> PathThrottle:
        throttle = self._paths.get(path)
        if throttle is None:
            limits = self.per_path.get(path, self.default)
            throttle = self._paths[path] = PathThrottle(limits, self.clock)
        return throttle

    def active(self) -> dict[str, int]:
        return {path: t.active for path, t in self._paths.items() if t.active}


__all__ = ["Clock", "Limits", "PathThrottle", "Throttles", "TokenBucket"]
