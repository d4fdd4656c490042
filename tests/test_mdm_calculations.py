"""Aggregates over groups and hierarchies with missing devices; main/check difference."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest

from mdm.calculations import aggregate, aggregate_hierarchy, difference
from mdm.series import QUALITY_ESTIMATED, Point, Series, SeriesKey

T0 = datetime(2026, 1, 1, tzinfo=UTC)
QH = timedelta(minutes=15)
RT = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
DERIVED = "2.11.0"


def series(device, values, rt=RT):
    pts = [
        Point(T0 + QH * (k + 1), None if v is None else D(str(v)))
        for k, v in enumerate(values)
        if v != "gap"
    ]
    return Series(SeriesKey(device, rt), pts, QH)


GROUP = {
    "a": series("a", [1, 2, 3]),
    "b": series("b", ["0.5", None, 4]),
    "c": series("c", [2, 2, "gap"]),
}


def test_sum_mean_max_with_counts():
    total = aggregate(GROUP, how="sum", name="feeder-1")
    assert [p.value for p in total.series] == [D("3.5"), D(4), D(7)]
    assert total.counts == [3, 2, 2] and total.expected == 3 and not total.complete
    assert total.series.key == SeriesKey("feeder-1", RT)
    mean = aggregate(GROUP, how="mean")
    assert [p.value for p in mean.series] == [D("1.166666667"), D(2), D("3.5")]
    maximum = aggregate(GROUP, how="max")
    assert [p.value for p in maximum.series] == [D(2), D(2), D(4)]


def test_incomplete_points_are_flagged_questionable():
    total = aggregate(GROUP)
    assert [p.qualities for p in total.series] == [
        {DERIVED},
        {DERIVED, "2.10.0"},
        {DERIVED, "2.10.0"},
    ]


def test_missing_null_mode_and_devices_without_any_series():
    strict = aggregate(GROUP, missing="null")
    assert [p.value for p in strict.series] == [D("3.5"), None, None]
    assert strict.series.points[1].qualities == {DERIVED, "2.5.259"}
    # "d" is in the group but sent nothing: every point is incomplete.
    wider = aggregate(GROUP, ["a", "b", "c", "d"])
    assert wider.expected == 4 and wider.counts == [3, 2, 2]
    assert all("2.10.0" in p.qualities for p in wider.series)


def test_window_adds_empty_slots():
    window = (T0, T0 + QH * 5)
    total = aggregate(GROUP, window=window)
    assert [p.value for p in total.series] == [D("3.5"), D(4), D(7), None, None]
    assert total.counts == [3, 2, 2, 0, 0]


def test_estimated_contributions_propagate():
    est = Series(SeriesKey("e", RT), [Point(T0 + QH, D(1), frozenset({QUALITY_ESTIMATED}))], QH)
    result = aggregate({"a": GROUP["a"], "e": est})
    assert QUALITY_ESTIMATED in result.series.points[0].qualities
    assert QUALITY_ESTIMATED not in result.series.points[1].qualities


def test_mixed_reading_types_are_refused():
    other = series("x", [1], rt="0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.0.72.0")
    with pytest.raises(ValueError, match="cannot aggregate"):
        aggregate({"a": GROUP["a"], "x": other})


def test_hierarchy_aggregates_over_devices_below_each_node():
    tree = {"region": ["north", "south"], "north": ["a", "b"], "south": ["c", "d"]}
    results = aggregate_hierarchy(tree, GROUP)
    assert [p.value for p in results["north"].series] == [D("1.5"), D(2), D(7)]
    assert results["north"].counts == [2, 1, 2]
    assert results["south"].expected == 2 and results["south"].counts == [1, 1, 0]
    assert [p.value for p in results["region"].series] == [D("3.5"), D(4), D(7)]
    assert results["region"].expected == 4
    mean = aggregate_hierarchy(tree, GROUP, how="mean")["region"]
    assert mean.series.points[1].value == D(2)  # (2 + 2) / 2 devices, not a mean of means


def test_hierarchy_cycle_is_refused():
    with pytest.raises(ValueError, match="cycle"):
        aggregate_hierarchy({"x": ["y"], "y": ["x"]}, GROUP)


def test_main_check_difference():
    main = series("main", [10, 11, None, 12])
    check = series("check", ["9.5", 11, 3, "gap"])
    diff = difference(main, check)
    assert [p.value for p in diff] == [D("0.5"), D(0), None, None]
    assert diff.key.device == "main-check"
    assert diff.points[2].qualities == {DERIVED, "2.5.259"}
    assert diff.points[0].qualities == {DERIVED}
