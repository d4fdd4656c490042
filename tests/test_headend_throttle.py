"""Per-path throttles: session limits and the connection-rate token bucket, on a fake clock."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headend.throttle import Limits, PathThrottle, Throttles


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_session_limit_and_rate() -> None:
    clock = FakeClock()
    throttle = PathThrottle(Limits(max_sessions=3, connections_per_s=2.0), clock)
    assert throttle.try_start() and throttle.try_start()
    assert not throttle.try_start()  # rate: two tokens in the bucket
    assert throttle.wait_time() == pytest.approx(0.5)
    clock.now = 0.5
    assert throttle.try_start()
    clock.now = 10.0
    assert not throttle.try_start()  # three sessions open
    assert throttle.wait_time() == math.inf
    throttle.release()
    assert throttle.try_start()
    with pytest.raises(ValueError):
        Limits(max_sessions=0)


def test_paths_are_independent_and_configurable() -> None:
    throttles = Throttles(Limits(1, 100.0), {"slow": Limits(2, 1.0)}, clock=FakeClock())
    assert throttles.get("a").try_start() and not throttles.get("a").try_start()
    assert throttles.get("b").try_start()
    assert throttles.get("slow").limits.max_sessions == 2
    assert throttles.active() == {"a": 1, "b": 1}
    with pytest.raises(RuntimeError):
        throttles.get("c").release()


ops = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), st.floats(0.0, 2.0)),
        st.tuples(st.just("start"), st.just(0.0)),
        st.tuples(st.just("release"), st.just(0.0)),
    ),
    max_size=300,
)


@settings(max_examples=200, deadline=None)
@given(
    ops=ops,
    sessions=st.integers(1, 5),
    rate=st.floats(0.5, 20.0),
    burst=st.none() | st.floats(1.0, 5.0),
)
def test_limits_are_never_exceeded(
    ops: list[tuple[str, float]], sessions: int, rate: float, burst: float | None
) -> None:
    clock = FakeClock()
    limits = Limits(sessions, rate, burst)
    throttle = PathThrottle(limits, clock)
    starts: list[float] = []
    for op, value in ops:
        if op == "advance":
            clock.now += value
        elif op == "start":
            if throttle.try_start():
                starts.append(clock.now)
        elif throttle.active:
            throttle.release()
        assert 0 <= throttle.active <= sessions
    # over any interval [t_i, t_j] at most bucket + rate * (t_j - t_i) connections started
    for i in range(len(starts)):
        for j in range(i, len(starts)):
            allowed = limits.bucket_size + rate * (starts[j] - starts[i])
            assert j - i + 1 <= allowed + 1e-9
