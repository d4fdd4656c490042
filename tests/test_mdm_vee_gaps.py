"""Gap audit: missing intervals of many series become merged re-read requests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest

from mdm.series import Point, Series, SeriesKey
from mdm.vee import ReReadRequest, VeeEngine, audit, requests_from_missing

T0 = datetime(2026, 1, 1, tzinfo=UTC)
QH = timedelta(minutes=15)
RT = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
KEY = SeriesKey("m1", RT)


def at(*quarters):
    return [T0 + QH * q for q in quarters]


def series(device, present, values=None):
    values = values or [D(1)] * len(present)
    pts = [Point(t, v) for t, v in zip(at(*present), values, strict=True)]
    return Series(SeriesKey(device, RT), pts, QH)


def test_adjacent_missing_intervals_merge():
    requests = requests_from_missing(KEY, QH, at(5, 3, 4, 9))
    assert requests == [
        ReReadRequest("m1", RT, T0 + QH * 2, T0 + QH * 5, 3),
        ReReadRequest("m1", RT, T0 + QH * 8, T0 + QH * 9, 1),
    ]


def test_bridge_spans_short_present_stretches():
    requests = requests_from_missing(KEY, QH, at(1, 2, 4, 8), bridge=1)
    assert requests == [
        ReReadRequest("m1", RT, T0, T0 + QH * 4, 3),
        ReReadRequest("m1", RT, T0 + QH * 7, T0 + QH * 8, 1),
    ]


def test_max_intervals_splits_long_requests():
    requests = requests_from_missing(KEY, QH, at(*range(1, 11)), max_intervals=4)
    assert [(r.start, r.end, r.missing) for r in requests] == [
        (T0, T0 + QH * 4, 4),
        (T0 + QH * 4, T0 + QH * 8, 4),
        (T0 + QH * 8, T0 + QH * 10, 2),
    ]
    with pytest.raises(ValueError):
        requests_from_missing(KEY, QH, [], max_intervals=0)


def test_audit_across_series_including_ends_nulls_and_silent_devices():
    window = (T0, T0 + QH * 8)
    complete = series("a", range(1, 9))
    holes = series("b", [2, 3, 4, 5, 6], [D(1), D(1), None, D(1), D(1)])
    silent = series("c", [])
    register = Series(SeriesKey("d", RT), [Point(T0 + QH, D(5))])  # no interval: skipped
    requests = audit([silent, holes, complete, register], *window)
    assert requests == [
        ReReadRequest("b", RT, T0, T0 + QH, 1),
        ReReadRequest("b", RT, T0 + QH * 3, T0 + QH * 4, 1),
        ReReadRequest("b", RT, T0 + QH * 6, T0 + QH * 8, 2),
        ReReadRequest("c", RT, T0, T0 + QH * 8, 8),
    ]


def test_dst_day_in_utc_has_no_false_gaps():
    # Europe/Berlin spring-forward day: 92 quarter-hours, contiguous in UTC.
    start = datetime(2026, 3, 28, 23, tzinfo=UTC)
    end = datetime(2026, 3, 29, 22, tzinfo=UTC)
    pts = [Point(start + QH * (k + 1), D(1)) for k in range(92)]
    assert pts[-1].timestamp == end
    assert audit([Series(KEY, pts, QH)], start, end) == []


def test_requests_from_a_vee_result():
    engine = VeeEngine({"rules": [{"gaps": True}]})
    result = engine.validate(series("m1", [1, 2, 5]), window=(T0, T0 + QH * 6))
    requests = requests_from_missing(result.series.key, QH, result.missing)
    assert [(r.start, r.end) for r in requests] == [
        (T0 + QH * 2, T0 + QH * 4),
        (T0 + QH * 5, T0 + QH * 6),
    ]
