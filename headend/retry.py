"""Retries: which failures are retried, how long to wait, and when to fail over to the backup
path.

Backoff ("equal jitter"). Before attempt ``n + 1`` (after ``n`` failed attempts, n >= 1)::

    ceiling = min(cap, base * factor ** (n - 1))
    delay   = ceiling * (1 - jitter) + ceiling * jitter * U,   U uniform in [0, 1)

so the delay lies in ``[ceiling * (1 - jitter), ceiling)``: it grows exponentially and
spreads meters that failed together. ``U`` comes from a ``random.Random`` seeded by the
policy's ``seed``, so a schedule is reproducible.

Only :class:`drivers.errors.DriverError` with ``retryable`` true (timeouts, lost
connections, malformed frames, counter resynchronisation, temporary device failures) are
retried; a refused association, bad keys or a missing object fail at once: running it again
would not help. Failover: after the primary path has failed ``failover_after`` attempts of a
task, the remaining attempts go over the backup path (when the device has one).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from drivers.errors import DriverError


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 3
    base: float = 30.0  # seconds before the second attempt (before jitter)
    factor: float = 2.0
    cap: float = 3600.0
    jitter: float = 0.5  # 0: exact exponential; 1: full jitter
    failover_after: int = 2  # primary failures before the backup path is used
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.base < 0 or self.cap < 0 or self.factor < 1:
            raise ValueError("base and cap must be >= 0 and factor >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be in [0, 1]")
        if self.failover_after < 1:
            raise ValueError("failover_after must be >= 1")

    def ceiling(self, failures: int) -> float:
        return min(self.cap, self.base * self.factor ** (failures - 1))


class Backoff:
    """A policy with its random source."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self._rng = random.Random(policy.seed)

    def delay(self, failures: int) -> float:
        """Seconds to wait before the next attempt, after ``failures`` failed attempts."""
        ceiling = self.policy.ceiling(failures)
        jitter = self.policy.jitter
        return ceiling * (1.0 - jitter) + ceiling * jitter * self._rng.random()

    def should_retry(self, error: BaseException, attempts_made: int) -> bool:
        return (
            isinstance(error, DriverError)
            and bool(error.retryable)
            and attempts_made < self.policy.max_attempts
        )

    def use_backup(self, primary_failures: int, has_backup: bool) -> bool:
        return has_backup and primary_failures >= self.policy.failover_after


__all__ = ["Backoff", "RetryPolicy"]
