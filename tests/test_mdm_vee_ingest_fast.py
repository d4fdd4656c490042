"""The VEE ingest hook's columnar ``is_clean``: True exactly when the hook would return the
series unchanged, and ingest stores the same with or without it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mdm.database import open_store
from mdm.devices import Device, create_devices
from mdm.history import versions
from mdm.ingest import ingest
from mdm.normalise import RawValue
from mdm.readings import read_one
from mdm.series import Point, Series, SeriesKey
from mdm.vee import VeeEngine

T0 = datetime(2026, 1, 1, tzinfo=UTC)
QH = timedelta(minutes=15)
KWH_15 = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
CONFIG = {
    "rules": [
        {"reading_type": "*", "gaps": True, "status": {}, "estimation": "linear"},
        {"reading_type": "*", "limits": {"min": 0, "max": 25}},
        {"reading_type": KWH_15, "spike": {"factor": "10", "floor": "0.5"}},
        {"reading_type": KWH_15, "zero_run": {"count": 4}},
        {"reading_type": KWH_15, "group": "big", "limits": {"max": 2500}, "spike": None},
    ]
}


def _columns(series: Series) -> tuple:
    pts = series.points
    return (
        series.key,
        series.interval,
        [p.timestamp for p in pts],
        [p.value for p in pts],
        [p.status_bits for p in pts],
    )


values = st.one_of(
    st.none(),
    st.decimals(min_value=-5, max_value=40, places=3, allow_nan=False, allow_infinity=False),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(values, st.sampled_from([0, 0, 0, 0x04, 0x08]), st.booleans()), max_size=30),
    st.sampled_from([None, "big"]),
)
def test_is_clean_agrees_with_the_hook(cells, group):
    engine = VeeEngine(CONFIG)
    hook = engine.as_ingest_hook(lambda device: group)
    points, k = [], 0
    for value, status, gap in cells:
        k += 2 if gap else 1  # some gaps
        points.append(Point(T0 + QH * k, value, frozenset(), status))
    sent = Series(SeriesKey("m1", KWH_15), points, QH)
    assert hook.is_clean(*_columns(sent)) == (hook(sent) is sent)


def test_is_clean_is_false_with_a_window():
    engine = VeeEngine(CONFIG)
    hook = engine.as_ingest_hook(window_of=lambda s: (T0, T0 + QH * 4))
    sent = Series(SeriesKey("m1", KWH_15), [Point(T0 + QH, D(1))], QH)
    assert hook.is_clean(*_columns(sent)) is False
    assert hook(sent) is not sent  # the window's missing intervals are estimated


class _PointsOnly:
    """The same hook without ``is_clean``: ingest builds Points for every series."""

    def __init__(self, hook):
        self.hook = hook

    def __call__(self, series: Series) -> Series:
        return self.hook(series)


@pytest.mark.parametrize("wrap", [False, True])
def test_ingest_stores_the_same_with_and_without_is_clean(wrap):
    store = open_store("sqlite://")
    create_devices(store, [Device(f"m{i}") for i in range(3)], who="test")
    hook = VeeEngine(CONFIG).as_ingest_hook()
    validator = _PointsOnly(hook) if wrap else hook
    sent = {"m0": [250, 260, 270, 280], "m1": [250, 99_999, 270, 280], "m2": [1, 2, 3, 4]}
    rows = [
        RawValue(m, "1-0:1.8.0", T0 + QH * (k + 1), wh, "Wh", interval_minutes=15, status=st_)
        for m, whs in sent.items()
        for k, wh in enumerate(whs)
        for st_ in [4 if (m, k) == ("m2", 2) else 0]
    ]
    result = ingest(store, rows, validator=validator)
    assert (result.rows, result.readings_new, result.estimates_stored) == (12, 12, 2)
    stored = {m: read_one(store, m, KWH_15, T0, T0 + QH * 4) for m in sent}
    assert [p.value for p in stored["m0"]] == [D("0.25"), D("0.26"), D("0.27"), D("0.28")]
    assert all(not p.qualities for p in stored["m0"])
    assert stored["m1"].points[1].qualities == {"2.8.0"}
    assert [v.qualities for v in versions(store, "m1", KWH_15, T0 + QH * 2)] == [
        {"2.6.3"},
        {"2.8.0"},
    ]
    assert stored["m2"].points[2].qualities == {"2.8.0"}
    assert versions(store, "m2", KWH_15, T0 + QH * 3)[0].qualities == {
        "1.5.258",
        "2.6.0",
    }
    store.close()
