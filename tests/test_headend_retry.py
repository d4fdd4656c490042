"""Backoff schedule, what is retried, failover."""

from __future__ import annotations

import pytest

from drivers.errors import (
    AuthenticationFailed,
    ConnectionLost,
    DeviceError,
    DriverTimeout,
    ObjectNotFound,
)
from headend.retry import Backoff, RetryPolicy


def test_exponential_schedule_without_jitter() -> None:
    backoff = Backoff(RetryPolicy(base=10, factor=2, cap=50, jitter=0))
    assert [backoff.delay(n) for n in range(1, 6)] == [10, 20, 40, 50, 50]


def test_jitter_is_bounded_and_seeded() -> None:
    policy = RetryPolicy(base=10, factor=3, jitter=0.5, seed=7)
    first = [Backoff(policy).delay(n) for n in (1, 2, 3)]
    again = [Backoff(policy).delay(n) for n in (1, 2, 3)]
    assert first == again
    backoff = Backoff(policy)
    for n in range(1, 8):
        ceiling = policy.ceiling(n)
        assert ceiling * 0.5 <= backoff.delay(n) < ceiling


def test_only_retryable_errors_within_attempts() -> None:
    backoff = Backoff(RetryPolicy(max_attempts=3))
    assert backoff.should_retry(DriverTimeout("t"), 1)
    assert backoff.should_retry(ConnectionLost("c"), 2)
    assert not backoff.should_retry(ConnectionLost("c"), 3)
    assert not backoff.should_retry(AuthenticationFailed("a"), 1)
    assert not backoff.should_retry(ObjectNotFound("o"), 1)
    assert backoff.should_retry(DeviceError("temporary", result=2), 1)
    assert not backoff.should_retry(DeviceError("hardware", result=1), 1)
    assert not backoff.should_retry(RuntimeError("bug"), 1)


def test_failover_after_k_primary_failures() -> None:
    backoff = Backoff(RetryPolicy(failover_after=2))
    assert not backoff.use_backup(1, True)
    assert backoff.use_backup(2, True)
    assert not backoff.use_backup(5, False)


def test_bad_policy() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(jitter=2)
