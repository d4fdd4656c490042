"""Versioned history on every database: as-of reconstruction and restoring a past version."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from mdm_samples import RT_15MIN_KWH, T0, count, interval_rows

from mdm.audit import entries
from mdm.errors import MdmError
from mdm.history import as_of, restore, versions
from mdm.ingest import ingest, store_points
from mdm.readings import read_one
from mdm.series import Point, Series, SeriesKey

pytest_plugins = ["mdm_conftest"]

DAY = (T0, T0 + timedelta(days=1))


def tick() -> datetime:
    """A moment strictly between two writes (the clock is read at each write)."""
    time.sleep(0.002)
    moment = datetime.now(UTC)
    time.sleep(0.002)
    return moment


def snapshot(store, at):
    return [
        [(p.timestamp, p.value) for p in s] for s in as_of(store, ["M1"], [RT_15MIN_KWH], *DAY, at)
    ]


@pytest.fixture
def three_versions(meters):
    """M1 at 00:30 stored as 2 kWh, then 3, then 4 (with moments before, between, after)."""
    moments = [tick()]
    for second in (2000, 3000, 4000):
        ingest(
            meters, interval_rows(values=[1000, second], task=str(second)), reason=f"load {second}"
        )
        moments.append(tick())
    return meters, moments


def test_as_of_rebuilds_every_past_state(three_versions):
    store, (before, after1, after2, after3) = three_versions
    t1, t2 = T0 + timedelta(minutes=15), T0 + timedelta(minutes=30)
    assert snapshot(store, before) == []
    assert snapshot(store, after1) == [[(t1, 1), (t2, 2)]]
    assert snapshot(store, after2) == [[(t1, 1), (t2, 3)]]
    assert snapshot(store, after3) == [[(t1, 1), (t2, 4)]]
    assert snapshot(store, after3) == [
        [(p.timestamp, p.value) for p in read_one(store, "M1", RT_15MIN_KWH, *DAY)]
    ]


def test_nothing_read_is_deleted(three_versions):
    store, _ = three_versions
    assert count(store, "raw_values") == 6  # every row as received (three tasks, two rows)
    history = versions(store, "M1", RT_15MIN_KWH, T0 + timedelta(minutes=30))
    assert [(v.version, v.value, v.is_current) for v in history] == [
        (1, 2, False),
        (2, 3, False),
        (3, 4, True),
    ]
    assert [v.reason for v in history[:2]] == ["load 3000", "load 4000"]


def test_restoring_a_past_version_makes_it_current_with_audit_and_history(three_versions):
    store, moments = three_versions
    ts = T0 + timedelta(minutes=30)
    new = restore(store, "M1", RT_15MIN_KWH, ts, 1, who="alice", note="meter swap mix-up")
    assert new == 4
    assert read_one(store, "M1", RT_15MIN_KWH, *DAY).points[1].value == 2
    history = versions(store, "M1", RT_15MIN_KWH, ts)
    assert [(v.version, v.value, v.source) for v in history] == [
        (1, 2, "meter"),
        (2, 3, "meter"),
        (3, 4, "meter"),
        (4, 2, "edited"),
    ]
    replaced = history[2]
    assert (replaced.superseded_by, replaced.reason, replaced.note) == (
        "alice",
        "restored",
        "meter swap mix-up",
    )
    log = entries(store, object_type="reading")
    assert {(e.attribute, e.old_value, e.new_value) for e in log} == {
        ("version", "3", "4"),
        ("value", "4.000000000", "2.000000000"),
    }
    assert all(e.who == "alice" and "restored version 1" in e.note for e in log)
    # the state before the restore can still be rebuilt
    assert snapshot(store, moments[-1])[0][1][1] == 4


def test_re_ingesting_after_a_restore_keeps_the_restored_value(three_versions):
    store, _ = three_versions
    ts = T0 + timedelta(minutes=30)
    restore(store, "M1", RT_15MIN_KWH, ts, 1, who="alice")
    result = ingest(store, interval_rows(values=[1000, 4000], task="4000"))
    assert (result.readings_new, result.readings_versioned) == (0, 0)
    assert read_one(store, "M1", RT_15MIN_KWH, *DAY).points[1].value == 2


def test_restore_refuses_the_current_or_a_missing_version(three_versions):
    store, _ = three_versions
    ts = T0 + timedelta(minutes=30)
    for version in (3, 9):
        with pytest.raises(MdmError):
            restore(store, "M1", RT_15MIN_KWH, ts, version, who="alice")
    with pytest.raises(MdmError):
        restore(store, "M1", RT_15MIN_KWH, ts + timedelta(days=3), 1, who="alice")


def test_as_of_sees_estimates_and_edits_as_they_were(meters):
    rows = interval_rows(values=[1000, 1000])
    ingest(meters, rows)
    before_edit = tick()
    edit = Series(SeriesKey("M1", RT_15MIN_KWH), [Point(rows[1].time, Decimal("7.5"))])
    store_points(meters, [edit], source="edited", who="bob", reason="manual")
    assert snapshot(meters, before_edit)[0][1][1] == 1
    assert snapshot(meters, tick())[0][1][1] == Decimal("7.5")
