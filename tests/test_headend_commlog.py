"""The per-communication debug log: switching it on and off per meter or job, the bounds
(frames per attempt, bytes per frame, rows per meter and in total), and the frames a real
DLMS session with the simulator leaves in it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from test_driver_dlms import simulated

from cim.errors import CimError
from drivers.base import frame_observer
from drivers.dlms import DlmsDriver, MemoryCounterStore
from headend import commlog
from headend.ops_schema import comm_frames
from mdm.audit import entries
from mdm.devices import Device, create_devices

pytest_plugins = ["mdm_conftest"]

NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


@pytest.fixture
def db(store):
    create_devices(store, [Device("M1"), Device("M2")], who="test")
    return store


def test_switch_on_per_meter_and_job(db):
    assert commlog.debug_limit(db, "M1", now=NOW) is None
    on = commlog.enable(db, meter="M1", duration=timedelta(minutes=30), who="ops", now=NOW)
    assert on.until == NOW + timedelta(minutes=30) and on.max_frames == 500
    assert commlog.debug_limit(db, "M1", now=NOW) == 500
    assert commlog.debug_limit(db, "M2", now=NOW) is None
    commlog.enable(db, job="j1", max_frames=20, who="ops", now=NOW)
    assert commlog.debug_limit(db, "M2", "j1", now=NOW) == 20
    assert commlog.debug_limit(db, "M1", "j1", now=NOW) == 500  # the larger of the two
    # expired: off, but still listed with expired=True
    later = NOW + timedelta(minutes=45)
    assert commlog.debug_limit(db, "M1", now=later) is None
    assert [s.target for s in commlog.switches(db, now=later)] == ["j1"]
    assert len(commlog.switches(db, now=later, expired=True)) == 2
    # enabling again replaces the switch
    commlog.enable(db, meter="M1", duration=timedelta(hours=2), max_frames=7, who="ops", now=NOW)
    assert commlog.debug_limit(db, "M1", now=later) == 7
    assert commlog.disable(db, meter="M1", who="ops") is True
    assert commlog.disable(db, meter="M1", who="ops") is False
    assert commlog.debug_limit(db, "M1", now=NOW) is None
    audited = [e.object_id for e in entries(db, object_type="comm_debug", object_id="meter:M1")]
    assert len(audited) == 3
    assert commlog.switches(db, now=NOW)[0].as_dict()["scope"] == "job"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "one meter or one job"),
        ({"meter": "M1", "job": "j"}, "one meter or one job"),
        ({"meter": ""}, "must be named"),
        ({"meter": "M1", "duration": timedelta(days=8)}, "at most"),
        ({"meter": "M1", "duration": timedelta(0)}, "more than 0"),
        ({"meter": "M1", "max_frames": 0}, "max_frames"),
        ({"meter": "M1", "max_frames": 10**6}, "max_frames"),
        ({"meter": "NOPE"}, "no device"),
    ],
)
def test_enable_refuses(db, kwargs, message):
    with pytest.raises(CimError, match=message):
        commlog.enable(db, who="ops", **kwargs)
    assert commlog.switches(db, expired=True) == []


def test_enable_needs_a_who(db):
    with pytest.raises(ValueError, match="who"):
        commlog.enable(db, meter="M1", who="")


def test_recorder_for_only_when_on(db):
    assert commlog.recorder_for(db, "M1", job_id="j", task_id=1, attempt=1, now=NOW) is None
    commlog.enable(db, job="j", max_frames=3, who="ops", now=NOW)
    recorder = commlog.recorder_for(db, "M1", job_id="j", task_id=1, attempt=2, now=NOW)
    assert recorder is not None
    assert (recorder.max_frames, recorder.task_id, recorder.attempt) == (3, 1, 2)


def test_recorder_bounds_frames_and_bytes(db):
    recorder = commlog.FrameRecorder(
        "M1", "j", 5, 1, max_frames=3, max_frame_bytes=4, clock=lambda: NOW
    )
    recorder.record("tx", b"\x00\x01\x00\x10\x00\x01")
    recorder("received", b"\xaa\xbb")
    recorder.record("sideways", b"\x00")  # unknown direction: dropped, no exception
    recorder.record("rx", b"\x01")
    recorder.record("rx", b"\x02")  # beyond the cap
    assert len(recorder.frames) == 3 and recorder.dropped == 2
    assert recorder.save(db) == 3
    assert recorder.save(db) == 0
    recorder.max_frames = 10
    recorder.record("tx", b"\x03")
    recorder.save(db)
    rows = commlog.frames(db, task_id=5)
    assert [(r.seq, r.direction, r.length, r.frame) for r in rows] == [
        (1, "tx", 6, "00010010"),
        (2, "rx", 2, "aabb"),
        (3, "rx", 1, "01"),
        (4, "tx", 1, "03"),
    ]
    assert rows[0].truncated and not rows[1].truncated
    text = commlog.format_frames(rows)
    assert "M1 ->     6 B  00 01 00 10 ..." in text
    assert "M1 <-     2 B  aa bb" in text
    assert rows[0].as_dict()["truncated"] is True


def test_caps_per_meter_and_in_total(db):
    for mrid, count in (("M1", 30), ("M2", 10)):
        recorder = commlog.FrameRecorder(mrid, max_frames=100)
        for k in range(count):
            recorder.record("tx", bytes([k]))
        recorder.save(db, meter_cap=12, global_cap=1000)
    m1 = commlog.frames(db, mrid="M1")
    assert len(m1) == 12 and [r.frame for r in m1][:2] == ["12", "13"]  # the oldest went
    assert len(commlog.frames(db, mrid="M2")) == 10
    recorder = commlog.FrameRecorder("M2", max_frames=100)
    recorder.record("rx", b"\xff")
    recorder.save(db, meter_cap=100, global_cap=15)
    with db.connect() as conn:
        assert conn.execute(select(func.count()).select_from(comm_frames)).scalar() == 15
    left = commlog.frames(db)
    assert left[-1].frame == "ff" and left[0].mrid == "M1"  # only the oldest of M1 pruned
    assert len(commlog.frames(db, limit=4)) == 4
    assert commlog.frames(db, limit=4)[-1].frame == "ff"  # the newest, oldest first


def test_observing_sets_and_resets_the_driver_hook():
    recorder = commlog.FrameRecorder("M1")
    assert frame_observer.get() is None
    with commlog.observing(recorder):
        observer = frame_observer.get()
        assert observer is not None
        observer("tx", b"\x01")
    assert frame_observer.get() is None
    with commlog.observing(None) as nothing:
        assert nothing is None and frame_observer.get() is None
    assert len(recorder.frames) == 1


def test_frames_of_a_real_dlms_session(db):
    commlog.enable(db, meter="M1", who="ops")

    async def body() -> commlog.FrameRecorder:
        async with simulated(transport="hdlc") as sim:
            driver = DlmsDriver(MemoryCounterStore())
            recorder = commlog.recorder_for(db, "M1", job_id="j", task_id=9, attempt=1)
            assert recorder is not None
            with commlog.observing(recorder):
                async with await driver.associate(sim.params()) as session:
                    await session.read_registers(["1.0.1.8.0.255"])
            # a session opened outside the block is not recorded
            async with await driver.associate(sim.params()) as session:
                await session.read_registers(["1.0.1.8.0.255"])
            return recorder

    recorder = asyncio.run(asyncio.wait_for(body(), 30))
    count = len(recorder.frames)
    assert recorder.save(db) == count
    rows = commlog.frames(db, mrid="M1", task_id=9)
    assert len(rows) == count >= 6  # SNRM/UA, AARQ/AARE, GET/response, DISC/UA
    assert rows[0].direction == "tx" and rows[1].direction == "rx"
    assert all(r.frame.startswith("7e") and r.frame.endswith("7e") for r in rows)  # HDLC flags
    assert {r.direction for r in rows} == {"tx", "rx"}
