"""Each VEE rule on crafted series, and the spike rule's fast path against a plain reference."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mdm.series import Point
from mdm.vee.rules import (
    QUALITY_ABOVE_MAXIMUM,
    QUALITY_BELOW_MINIMUM,
    QUALITY_CLOCK_ERROR,
    QUALITY_DIAGNOSTICS,
    QUALITY_DST_IN_EFFECT,
    QUALITY_MAIN_CHECK_MISMATCH,
    QUALITY_REGISTER_MISMATCH,
    QUALITY_SPIKE,
    QUALITY_SUSPECT,
    QUALITY_ZERO_USAGE,
    Columns,
    Limits,
    MainCheck,
    RegisterCheck,
    Spike,
    Status,
    StatusBit,
    ZeroRun,
    grid_range,
    is_failure,
    missing_timestamps,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
QH = timedelta(minutes=15)


def points(values, start=T0, step=QH, status=None):
    status = status or [0] * len(values)
    return [
        Point(start + step * (k + 1), None if v is None else D(str(v)), status_bits=s)
        for k, (v, s) in enumerate(zip(values, status, strict=True))
    ]


def cols(values, history=(), **kw):
    return Columns(points(values, **kw), points(history, start=T0 - QH * len(history)))


# -- limits ----------------------------------------------------------------------------


def test_limits_flag_below_and_above_bounds_pass():
    flags = Limits(min=D(0), max=D(10)).check(cols([0, 10, -1, 11, None, 5]))
    assert flags == [(2, QUALITY_BELOW_MINIMUM), (3, QUALITY_ABOVE_MAXIMUM)]


@pytest.mark.parametrize("values", [[], [None], [None, None], [5]])
def test_limits_on_empty_null_and_single(values):
    assert Limits(min=D(0), max=D(10)).check(cols(values)) == []


def test_limits_one_sided_and_exact_decimal_bound():
    assert Limits(max=D("0.1")).check(cols(["0.1", "0.1000000001"])) == [(1, QUALITY_ABOVE_MAXIMUM)]
    assert Limits(min=D("-1")).check(cols([-2, 100])) == [(0, QUALITY_BELOW_MINIMUM)]


def test_limits_refuse_inverted_bounds_and_non_numbers():
    with pytest.raises(ValueError, match="above max"):
        Limits(min=D(2), max=D(1))
    with pytest.raises(ValueError, match="not a number"):
        Limits(max="ten")  # type: ignore[arg-type]


# -- spikes ----------------------------------------------------------------------------


def test_spike_over_factor_times_median():
    rule = Spike(factor=D(3), window=4)
    assert rule.check(cols([1, 1, 1, 1, 10, 1])) == [(4, QUALITY_SPIKE)]
    assert rule.check(cols([1, 1, 1, 1, 3])) == []  # exactly 3 x median is not a spike


def test_spike_even_window_uses_mean_of_middle_values():
    rule = Spike(factor=D(2), window=4)
    assert rule.check(cols([1, 1, 3, 3, 4])) == []  # median 2
    assert rule.check(cols([1, 1, 3, 3, "4.01"])) == [(4, QUALITY_SPIKE)]


def test_spike_needs_full_window_and_respects_floor():
    assert Spike(factor=D(2), window=4).check(cols([1, 1, 1, 50])) == []
    rule = Spike(factor=D(2), window=2, floor=D("0.5"))
    assert rule.check(cols([0, 0, "0.5", "0.6"])) == [(3, QUALITY_SPIKE)]


def test_spike_looks_back_on_history_and_skips_nulls():
    rule = Spike(factor=D(3), window=3)
    assert rule.check(cols([10], history=[1, 1, 1])) == [(0, QUALITY_SPIKE)]
    assert rule.check(cols([1, None, 1, None, 1, 10, None])) == [(5, QUALITY_SPIKE)]


def _reference_spikes(values, window, factor, floor):
    present = [(k, v) for k, v in enumerate(values) if v is not None]
    found = []
    for j in range(window, len(present)):
        k, v = present[j]
        median = statistics.median([x for _, x in present[j - window : j]])
        if v > floor and v > factor * median:
            found.append(k)
    return found


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(st.one_of(st.none(), st.integers(0, 40).map(lambda n: D(n) / 4)), max_size=120),
    window=st.integers(1, 9),
    factor=st.sampled_from([D("1.5"), D(2), D(3), D(10)]),
    floor=st.sampled_from([D(0), D(1)]),
    split=st.integers(0, 30),
)
def test_spike_fast_path_matches_reference(values, window, factor, floor, split):
    split = min(split, len(values))
    history, own = values[:split], values[split:]
    flags = Spike(factor=factor, window=window, floor=floor).check(cols(own, history))
    expected = [k - split for k in _reference_spikes(values, window, factor, floor) if k >= split]
    assert [k for k, _ in flags] == expected


def test_spike_parameters_are_checked():
    with pytest.raises(ValueError, match="positive"):
        Spike(factor=D(0))
    with pytest.raises(ValueError, match="window"):
        Spike(factor=D(2), window=0)


# -- zero runs -------------------------------------------------------------------------


def test_zero_run_flags_every_point_of_a_long_run():
    rule = ZeroRun(count=3)
    assert rule.check(cols([0, 0, 1, 0, "0.000", 0, 0, 2])) == [
        (3, QUALITY_ZERO_USAGE),
        (4, QUALITY_ZERO_USAGE),
        (5, QUALITY_ZERO_USAGE),
        (6, QUALITY_ZERO_USAGE),
    ]


def test_zero_run_counts_history_and_a_null_ends_the_run():
    rule = ZeroRun(count=3)
    assert rule.check(cols([0, 1], history=[0, 0])) == [(0, QUALITY_ZERO_USAGE)]
    assert rule.check(cols([0, 0, None, 0])) == []
    assert rule.check(cols([0, 0, 0])) == [(k, QUALITY_ZERO_USAGE) for k in range(3)]


# -- status bits -----------------------------------------------------------------------


def test_status_bits_map_to_qualities_and_fail_bits_add_failed_validation():
    status = [0, 0x80, 0x02, 0x08 | 0x20, 0x01 | 0x04, 0x10]
    flags = Status().check(cols([1] * 6, status=status))
    assert flags == [
        (1, "1.2.32"),
        (2, QUALITY_CLOCK_ERROR),
        (2, "2.6.0"),
        (3, QUALITY_DST_IN_EFFECT),
        (3, "1.4.9"),
        (4, QUALITY_DIAGNOSTICS),
        (4, QUALITY_SUSPECT),
        (4, "2.6.0"),
    ]


def test_status_fail_bits_are_configurable():
    flags = Status(fail=StatusBit.POWER_DOWN).check(cols([1, 1], status=[0x02, 0x80]))
    assert flags == [(0, QUALITY_CLOCK_ERROR), (1, "1.2.32"), (1, "2.6.0")]
    assert Status().check(cols([1, 2])) == []


def test_is_failure_is_category_6():
    assert is_failure("2.6.0") and is_failure("3.6.1001") and is_failure("1.6.0")
    assert not is_failure("1.2.32") and not is_failure("2.8.0") and not is_failure("6")


# -- gaps ------------------------------------------------------------------------------


def stamps(*quarters):
    return [T0 + QH * q for q in quarters]


def test_missing_inner_intervals():
    assert missing_timestamps(stamps(1, 2, 5, 6), QH) == stamps(3, 4)
    assert missing_timestamps(stamps(1, 2, 3), QH) == []


def test_missing_at_start_and_end_of_a_window():
    window = (T0, T0 + QH * 6)
    assert missing_timestamps(stamps(3, 4), QH, *window) == stamps(1, 2, 5, 6)
    assert missing_timestamps(stamps(1, 2, 3, 4, 5, 6), QH, *window) == []
    assert missing_timestamps([], QH, *window) == stamps(1, 2, 3, 4, 5, 6)
    assert missing_timestamps([], QH) == []


def test_off_grid_timestamps_fill_no_slot():
    odd = [T0 + QH, T0 + QH + timedelta(minutes=5), T0 + QH * 3]
    assert missing_timestamps(odd, QH) == stamps(2)


def test_grid_range_is_epoch_aligned_and_half_open():
    start = T0 + timedelta(minutes=7)
    assert grid_range(start, T0 + QH * 2, QH) == stamps(1, 2)
    assert grid_range(T0, T0, QH) == []


# -- register versus intervals -----------------------------------------------------------


def registers(*values, step=timedelta(hours=1)):
    return points(values, start=T0 - step, step=step)


def test_register_advance_matches_interval_sum():
    rule = RegisterCheck()
    ok = points(["0.25"] * 8)
    assert rule.compare(registers(100, 101, 102), ok, QH) == ([], [])


def test_register_mismatch_flags_read_and_intervals():
    intervals = points(["0.25", "0.25", "0.25", "0.25", "0.25", "0.30", "0.25", "0.25"])
    reg_flags, int_flags = RegisterCheck().compare(registers(100, 101, 102), intervals, QH)
    assert reg_flags == [(2, QUALITY_REGISTER_MISMATCH)]
    assert int_flags == [(k, QUALITY_REGISTER_MISMATCH) for k in range(4, 8)]


def test_register_check_tolerances_and_missing_intervals():
    intervals = points(["0.25", "0.25", "0.25", "0.30"])
    assert RegisterCheck(tolerance=D("0.05")).compare(registers(100, 101), intervals, QH) == (
        [],
        [],
    )
    assert RegisterCheck(relative=D("0.05")).compare(registers(100, 101), intervals, QH) == (
        [],
        [],
    )
    gap = points(["0.25", None, "0.25", "0.30"])
    assert RegisterCheck().compare(registers(100, 101), gap, QH) == ([], [])


# -- main / check ----------------------------------------------------------------------


def test_main_check_flags_both_sides_outside_tolerance():
    main = points([10, 10, 10, None])
    check = points(["10.1", "10.6", 10, 10])
    rule = MainCheck(tolerance=D("0.5"))
    assert rule.compare(main, check) == (
        [(1, QUALITY_MAIN_CHECK_MISMATCH)],
        [(1, QUALITY_MAIN_CHECK_MISMATCH)],
    )
    assert MainCheck(relative=D("0.1")).compare(main, check) == ([], [])
    with pytest.raises(ValueError, match="negative"):
        MainCheck(tolerance=D(-1))


@settings(max_examples=200, deadline=None)
@given(
    present=st.lists(st.integers(-3, 40), max_size=30).map(sorted),
    window=st.one_of(st.none(), st.tuples(st.integers(-5, 20), st.integers(0, 45))),
    odd=st.booleans(),
)
def test_missing_timestamps_match_a_set_difference(present, window, odd):
    timestamps = [T0 + QH * q for q in present]
    if odd and timestamps:
        middle = len(timestamps) // 2
        timestamps.insert(middle + 1, timestamps[middle] + QH / 3)  # off the grid, in order
    if window is None:
        if not present:
            assert missing_timestamps(timestamps, QH) == []
            return
        lo, hi = min(present) - 1, max(present)
        got = missing_timestamps(timestamps, QH)
    else:
        lo, hi = window
        got = missing_timestamps(timestamps, QH, T0 + QH * lo, T0 + QH * hi)
    assert got == [T0 + QH * q for q in range(lo + 1, hi + 1) if q not in set(present)]
