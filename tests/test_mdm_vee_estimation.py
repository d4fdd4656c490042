"""Estimation strategies through the engine: what gets estimated, with what, and that the
meter's points are never changed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mdm.series import Point, Series, SeriesKey
from mdm.vee import Estimation, Method, VeeEngine
from mdm.vee.estimation import estimate

T0 = datetime(2026, 1, 1, tzinfo=UTC)
QH = timedelta(minutes=15)
RT = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"


def series(values, status=None):
    status = status or [0] * len(values)
    pts = [
        Point(T0 + QH * (k + 1), None if v is None else D(str(v)), status_bits=s)
        for k, (v, s) in enumerate(zip(values, status, strict=True))
        if v != "gap"
    ]
    return Series(SeriesKey("m1", RT), pts, QH)


def engine(method, **extra):
    rules = {"reading_type": "*", "gaps": True, "status": True, "limits": {"max": "100"}}
    return VeeEngine({"rules": [{**rules, "estimation": {"method": method, **extra}}]})


def window(n):
    return (T0, T0 + QH * n)


def estimated(result):
    return [(int((p.timestamp - T0) / QH) - 1, p.value) for p in result.estimates]


def test_none_flags_but_estimates_nothing():
    result = engine("none").validate(series([1, 500, 3]))
    assert result.failed == (1,) and result.estimates == []


def test_null_marks_known_missing():
    result = engine("null").validate(series([1, 500, "gap", 3]))
    assert estimated(result) == [(1, None), (2, None)]
    assert all(p.qualities == {"2.8.0", "2.5.259"} for p in result.estimates)


def test_last_plausible_value():
    result = engine("last_plausible").validate(series(["1.5", 500, "gap", 3]))
    assert estimated(result) == [(1, D("1.5")), (2, D("1.5"))]
    assert all(p.qualities == {"2.8.0"} for p in result.estimates)


def test_mean_of_neighbours_and_its_rounding():
    result = engine("mean_of_neighbours").validate(series(["1.0", 500, "2.5"]))
    assert estimated(result) == [(1, D("1.8"))]  # 1.75 rounded half even at 0.1
    wide = engine("mean_of_neighbours", neighbours=2).validate(series([1, 2, 500, 4, 6]))
    assert estimated(wide) == [(2, D("3"))]


def test_linear_interpolation_over_time():
    result = engine("linear").validate(series(["1.00", 500, "gap", "gap", "3.00"]))
    assert estimated(result) == [(1, D("1.50")), (2, D("2.00")), (3, D("2.50"))]


def test_edges_gap_at_start_and_end():
    values = [None, 2, 4, None]
    assert estimated(engine("linear").validate(series(values))) == []
    assert estimated(engine("mean_of_neighbours").validate(series(values))) == []
    assert estimated(engine("last_plausible").validate(series(values))) == [(3, D(4))]
    s = series(["gap", 2, 4, "gap"])
    result = engine("last_plausible").validate(s, window=window(4))
    assert result.missing == [T0 + QH, T0 + QH * 4]
    assert estimated(result) == [(3, D(4))]


def test_history_supplies_the_anchor_before():
    history = [Point(T0, D(7))]
    result = engine("linear").validate(series([500, 9]), history=history)
    assert estimated(result) == [(0, D(8))]


def test_max_run_leaves_long_gaps_for_backfill():
    result = engine("linear", max_run=2).validate(series([1, "gap", "gap", "gap", 5, None, 7]))
    assert estimated(result) == [(5, D(6))]
    assert len(result.missing) == 3


@pytest.mark.parametrize("values", [[], [None], [None, None, None], [5], ["gap"]])
def test_degenerate_series(values):
    for method in Method:
        result = engine(method.value).validate(series(values))
        assert result.estimates == [] or method is Method.NULL


def test_all_null_series_with_null_method():
    result = engine("null").validate(series([None, None]))
    assert result.failed == (0, 1)
    assert [p.value for p in result.estimates] == [None, None]


def test_status_failure_is_estimated_power_fail_is_not():
    s = series([1, 2, 3, 4], status=[0, 0x02, 0x80, 0])
    result = engine("linear").validate(s)
    assert result.failed == (1,)
    assert estimated(result) == [(1, D(2))]
    assert result.series.points[2].qualities == {"1.2.32"}


def test_current_view_puts_estimates_in_place():
    result = engine("linear").validate(series([1, 500, "gap", 4]))
    current = result.current()
    assert [p.value for p in current] == [D(1), D(2), D(3), D(4)]
    assert [p.is_estimated for p in current] == [False, True, True, False]


def test_estimate_function_runs_between_anchors():
    anchors = [(T0, D(0)), (T0 + QH * 4, D(4))]
    targets = [T0 + QH, T0 + QH * 3, T0 + QH * 5]
    got = estimate(anchors, targets, Estimation(Method.LINEAR))
    assert [(p.timestamp, p.value) for p in got] == [(T0 + QH, D(1)), (T0 + QH * 3, D(3))]


def test_estimation_parameters_are_checked():
    with pytest.raises(ValueError, match="not one of"):
        Estimation("median")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_run"):
        Estimation(Method.LINEAR, max_run=0)


values_st = st.lists(
    st.one_of(st.none(), st.just("gap"), st.integers(-5, 300).map(lambda n: D(n) / 10)),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(values=values_st, method=st.sampled_from(list(Method)))
def test_estimation_never_changes_the_meters_points(values, method):
    config = {
        "rules": [
            {
                "reading_type": "*",
                "gaps": True,
                "limits": {"min": "0", "max": "25"},
                "spike": {"factor": "3", "window": 3},
                "zero_run": {"count": 3},
                "estimation": method.value,
            }
        ]
    }
    original = series(values)
    snapshot = list(original.points)
    result = VeeEngine(config).validate(original, window=window(len(values)))
    assert original.points == snapshot
    assert len(result.series) == len(original)
    for before, after in zip(original.points, result.series.points, strict=True):
        assert (after.timestamp, after.value, after.status_bits) == (
            before.timestamp,
            before.value,
            before.status_bits,
        )
        assert after.qualities >= before.qualities
    targets = {original.points[i].timestamp for i in result.failed} | set(result.missing)
    assert {p.timestamp for p in result.estimates} <= targets


@settings(max_examples=150, deadline=None)
@given(
    a=st.integers(-1000, 1000),
    b=st.integers(-50, 50),
    n=st.integers(3, 40),
    scale=st.integers(0, 4),
    data=st.data(),
)
def test_interpolation_is_exact_on_linear_data(a, b, n, scale, data):
    unit = D(1).scaleb(-scale)
    values = [(a + b * k) * unit for k in range(n)]
    holes = data.draw(st.sets(st.integers(1, n - 2)))
    shown = ["gap" if k in holes else v for k, v in enumerate(values)]
    only_gaps = VeeEngine({"rules": [{"gaps": True, "estimation": "linear"}]})
    result = only_gaps.validate(series(shown))
    assert {int((p.timestamp - T0) / QH) - 1: p.value for p in result.estimates} == {
        k: values[k] for k in holes
    }
