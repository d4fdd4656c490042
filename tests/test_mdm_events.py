"""End device events on every database: stored once, read back by window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from mdm_samples import T0, count

from cim.errors import ErrorCode
from mdm.errors import MdmError
from mdm.events import EndDeviceEvent, read_events, store_events

pytest_plugins = ["mdm_conftest"]

LAST_GASP = "3.26.0.85"  # electric meter / power / failed


def test_events_are_stored_once_and_read_back(meters):
    cet = timezone(timedelta(hours=1))
    batch = [
        EndDeviceEvent("M1", LAST_GASP, T0 + timedelta(hours=1), {"phase": "L1"}, "t1"),
        EndDeviceEvent("M1", "3.26.0.216", (T0 + timedelta(hours=2)).astimezone(cet)),
        EndDeviceEvent("M2", LAST_GASP, T0 + timedelta(hours=1)),
    ]
    assert store_events(meters, [*batch, batch[0]]) == 3
    assert store_events(meters, batch) == 0
    assert count(meters, "events") == 3
    found = list(read_events(meters, ["M1"], T0, T0 + timedelta(days=1)))
    assert [(e.event_type, e.time, e.details) for e in found] == [
        (LAST_GASP, T0 + timedelta(hours=1), {"phase": "L1"}),
        ("3.26.0.216", T0 + timedelta(hours=2), None),
    ]
    assert all(e.time.tzinfo is UTC for e in found)


@pytest.mark.parametrize(
    ("event", "error"),
    [
        (EndDeviceEvent("GHOST", LAST_GASP, T0), ErrorCode.UNKNOWN_DEVICE),
        (EndDeviceEvent("M1", "3.26.0", T0), ErrorCode.BAD_END_DEVICE_TYPE),
        (EndDeviceEvent("M1", LAST_GASP, datetime(2024, 1, 1)), ErrorCode.BAD_DATETIME),
    ],
)
def test_bad_events_are_refused_naming_the_row(meters, event, error):
    with pytest.raises(MdmError) as caught:
        store_events(meters, [EndDeviceEvent("M1", LAST_GASP, T0), event])
    assert (caught.value.error, caught.value.row) == (error, 1)
    assert count(meters, "events") == 0
