"""A task's driver result into mdm in one transaction with the task's final state: readings
through ingest (readable with mdm.readings.read), events through store_events, a control's
outcome as the task's result; a task already finished is not finished twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from headend_samples import register
from sqlalchemy import func, select

from cim.codelists.obis import obis_to_reading_type
from drivers.base import (
    ClockReading,
    ControlState,
    FirmwareProgress,
    ImageTransferStatus,
    MeterEvent,
    PingResult,
    ProfileRow,
    RegisterValue,
    SwitchState,
)
from headend import commands, jobstore
from headend.command_json import CodecError
from headend.events import (
    ControlDone,
    EventsStored,
    JobFinished,
    ReadingsStored,
    from_json,
    to_json,
)
from headend.results import complete_task, event_type_for, fail_task, interval_minutes
from mdm.devices import device_ids
from mdm.events import EndDeviceEvent, read_events
from mdm.normalise import channel
from mdm.readings import read
from mdm.schema import raw_values

pytest_plugins = ["mdm_conftest"]

ENERGY = "1.0.1.8.0.255"
T0 = datetime(2026, 1, 10, tzinfo=UTC)


@pytest.fixture
def fleet(store):
    register(store)
    return store


def _spec(store, command, *mrids, parameters=None):
    with store.connect() as conn:
        ids = device_ids(conn, list(mrids))
    job = jobstore.create_job(
        store,
        kind="group",
        name="t",
        command=command,
        devices=[(ids[m][0], m) for m in mrids],
        priority=30,
        parameters=parameters,
    )
    return [jobstore.load_task(store, task_id) for task_id, _ in job.tasks]


def _regs(mrid="M1"):
    return commands.ReadRegisters(device=mrid, obis=(ENERGY,))


def test_registers_are_stored_and_readable(fleet):
    (spec,) = _spec(fleet, _regs(), "M1")
    at = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
    result = commands.Readings(
        spec.command, registers=(RegisterValue.exact(ENERGY, 1234567, 0, "Wh", status=3),)
    )
    events = complete_task(fleet, spec, result, read_at=at)
    code = channel(ENERGY, None, None, "Wh", 0).code
    assert events == [
        ReadingsStored(spec.job_id, "M1", at, at, 1, (code,)),
        JobFinished(spec.job_id, "completed", jobstore.counts(fleet, spec.job_id)),
    ]
    (series,) = read(fleet, ["M1"], [code], at - timedelta(hours=1), at)
    assert [(p.timestamp, p.value, p.status_bits) for p in series.points] == [
        (at, Decimal("1234.567"), 3)
    ]
    (task,) = jobstore.task_records(fleet, spec.job_id)
    assert task.state == "succeeded"
    assert task.result == {
        "readings": 1,
        "registers": 1,
        "events": 0,
        "start": "2026-01-10T12:00:00Z",
        "end": "2026-01-10T12:00:00Z",
    }


def test_a_wall_clock_load_profile_lands_in_utc_and_unmapped_columns_are_listed(fleet):
    command = commands.ReadIntervalData(device="AMS", start=T0, end=T0 + timedelta(hours=1))
    (spec,) = _spec(fleet, command, "AMS")
    rows = tuple(
        ProfileRow(
            datetime(2026, 1, 10, 0, 15) + timedelta(minutes=15 * i),  # Amsterdam wall time
            8 if i == 1 else 0,
            {
                ENERGY: RegisterValue.exact(ENERGY, 1000 + i, 1, "Wh"),
                "1.0.1.29.0.255": RegisterValue.exact("1.0.1.29.0.255", 5, 0, "Wh"),
                "0.0.96.10.1.255:3": RegisterValue.exact("0.0.96.10.1.255:3", 1, 0, ""),
            },
            dst=False,
        )
        for i in range(4)
    )
    events = complete_task(fleet, spec, commands.Readings(spec.command, profile=rows))
    stored = events[0]
    delta = channel(ENERGY, 15, None, "Wh", 1).code
    total = obis_to_reading_type(ENERGY, interval_minutes=15, cumulative=True).code
    assert isinstance(stored, ReadingsStored) and stored.reading_types == (total, delta)
    first = datetime(2026, 1, 9, 23, 15, tzinfo=UTC)  # 00:15 CET
    assert (stored.start, stored.end, stored.count) == (first, first + timedelta(minutes=45), 7)
    # the captured totals as read, and the deltas between them stamped at the interval end
    (totals,) = read(fleet, ["AMS"], [total], first - timedelta(minutes=15), stored.end)
    assert [p.value for p in totals.points] == [
        Decimal(v) for v in ("10.00", "10.01", "10.02", "10.03")
    ]
    assert [p.status_bits for p in totals.points] == [0, 8, 0, 0]
    (deltas,) = read(fleet, ["AMS"], [delta], first - timedelta(minutes=15), stored.end)
    assert [(p.timestamp, p.value, p.status_bits) for p in deltas.points] == [
        (first + timedelta(minutes=15 * i), Decimal("0.01"), 8 if i == 1 else 0) for i in (1, 2, 3)
    ]
    (task,) = jobstore.task_records(fleet, spec.job_id)
    assert set(task.result["unmapped"]) == {"1.0.1.29.0.255", "0.0.96.10.1.255:3"}
    assert task.result["readings"] == 7


def test_the_profile_interval_is_the_rows_spacing():
    def rows(*minutes):
        return [ProfileRow(T0 + timedelta(minutes=m), 0, {}) for m in minutes]

    assert interval_minutes(rows(0, 60, 120, 240), {}) == 60
    assert interval_minutes(rows(0), {"interval_minutes": 30}) == 30
    assert interval_minutes(rows(0), {}) == 15


def test_data_mdm_refuses_fails_the_task_and_stores_nothing(fleet):
    (spec,) = _spec(fleet, _regs("AMS"), "AMS")
    gap = datetime(2026, 3, 29, 2, 30)  # does not exist in Amsterdam
    value = RegisterValue.exact(ENERGY, 1, 0, "Wh", capture_time=gap)
    events = complete_task(fleet, spec, commands.Readings(spec.command, registers=(value,)))
    assert [type(e) for e in events] == [JobFinished]
    (task,) = jobstore.task_records(fleet, spec.job_id)
    assert (task.state, task.error_code) == ("failed", "2.2")
    assert "does not exist" in task.error_text
    with fleet.connect() as conn:
        assert conn.execute(select(func.count()).select_from(raw_values)).scalar() == 0


def test_a_task_is_not_completed_twice(fleet):
    (spec,) = _spec(fleet, _regs(), "M1")
    result = commands.Readings(spec.command, registers=(RegisterValue.exact(ENERGY, 5, 0, "Wh"),))
    assert complete_task(fleet, spec, result)
    assert complete_task(fleet, spec, result) == []  # a redelivery with a stale spec
    assert fail_task(fleet, spec, state="failed", error_code="6.1", error_text="x") == []
    with fleet.connect() as conn:
        assert conn.execute(select(func.count()).select_from(raw_values)).scalar() == 1
    (task,) = jobstore.task_records(fleet, spec.job_id)
    assert task.state == "succeeded" and task.error_code is None


def test_events_are_stored_once_and_only_new_ones_announced(fleet):
    when = datetime(2026, 2, 1, 8, 0, tzinfo=UTC)
    log = "0.0.99.98.2.255"
    meter_events = (
        MeterEvent(62, when, log),
        MeterEvent(999, when + timedelta(minutes=1), log, details=(("0.0.1.0.0.255", b"\x01"),)),
    )
    first, _second = _spec(fleet, commands.ReadEvents(device="M1"), "M1", "M2")
    events = complete_task(fleet, first, commands.Events(first.command, meter_events))
    (announced,) = [e for e in events if isinstance(e, EventsStored)]
    assert [e.event_type for e in announced.events] == ["3.31.0.68", "3.17.43.0"]
    stored = list(read_events(fleet, ["M1"], when - timedelta(hours=1), when + timedelta(hours=1)))
    assert [(e.event_type, e.time) for e in stored] == [
        ("3.31.0.68", when),
        ("3.17.43.0", when + timedelta(minutes=1)),
    ]
    assert stored[1].details == {"dlms_code": 999, "log": log, "0.0.1.0.0.255": "01"}
    # the same log read again (another task): nothing new, no EventsStored
    again = _spec(fleet, commands.ReadEvents(device="M1"), "M1")[0]
    events = complete_task(fleet, again, commands.Events(again.command, meter_events))
    assert not [e for e in events if isinstance(e, EventsStored)]
    (task,) = jobstore.task_records(fleet, again.job_id)
    assert (task.result["events"], task.result["new_events"]) == (2, 0)
    assert event_type_for(1) == "3.26.0.47"


def test_naive_event_times_use_the_meters_zone(fleet):
    (spec,) = _spec(fleet, commands.ReadEvents(device="AMS"), "AMS")
    naive = MeterEvent(1, datetime(2026, 7, 1, 12, 0), "0.0.99.98.0.255", dst=True)
    events = complete_task(fleet, spec, commands.Events(spec.command, (naive,)))
    assert events[0].events[0].time == datetime(2026, 7, 1, 10, 0, tzinfo=UTC)


def test_control_outcomes(fleet):
    control = commands.Control(device="M1", action="disconnect")
    done, refused, failed = _spec(fleet, control, "M1", "M2", "AMS")
    off = SwitchState(False, ControlState.DISCONNECTED)
    events = complete_task(fleet, done, commands.ControlOutcome(done.command, switch=off))
    assert events == [ControlDone(done.job_id, "M1", "disconnect", "disconnected", True, None)]
    on = SwitchState(True, ControlState.CONNECTED)
    events = complete_task(fleet, refused, commands.ControlOutcome(refused.command, switch=on))
    assert events == [ControlDone(done.job_id, "M2", "disconnect", "connected", False, "6.7")]
    failure = commands.Failure(failed.command, "timeout", "no answer", retryable=True)
    events = complete_task(fleet, failed, failure)
    assert events[0] == ControlDone(done.job_id, "AMS", "disconnect", None, False, "7.2")
    assert isinstance(events[1], JobFinished) and events[1].state == "completed_with_errors"
    records = {t.mrid: t for t in jobstore.task_records(fleet, done.job_id)}
    assert records["M1"].result == {
        "action": "disconnect",
        "state": "disconnected",
        "verified": True,
        "operated": True,
    }
    assert (records["M2"].state, records["M2"].error_code) == ("failed", "6.7")
    assert records["M2"].result["verified"] is False
    assert (records["AMS"].state, records["AMS"].error_text) == ("failed", "no answer")


def test_clock_sync_ping_and_firmware_outcomes(fleet):
    sync, ping, fw = _spec(
        fleet, commands.Control(device="x", action="clock_sync"), "M1", "M2", "AMS"
    )
    clock = ClockReading(T0, 0, False, 0)
    complete_task(fleet, sync, commands.ControlOutcome(sync.command, clock=clock))
    complete_task(
        fleet, ping, commands.PingOutcome(commands.Ping(device="M2"), PingResult("LDN", 0.2))
    )
    progress = FirmwareProgress(
        b"v2", 10, 5, 2, 2, 0, 0, ImageTransferStatus.VERIFICATION_FAILED, "verify"
    )
    command = commands.FirmwareUpdate(device="AMS", image_ref="img", identifier="v2")
    complete_task(fleet, fw, commands.FirmwareOutcome(command, progress))
    records = {t.mrid: t for t in jobstore.task_records(fleet, sync.job_id)}
    assert records["M1"].result["clock"] == T0.isoformat() and records["M1"].state == "succeeded"
    assert records["M2"].result == {"logical_device_name": "LDN", "round_trip_s": 0.2}
    assert (records["AMS"].state, records["AMS"].error_code) == ("failed", "6.7")
    assert records["AMS"].result["status"] == "verification_failed"
    with pytest.raises(TypeError):
        complete_task(fleet, sync, object())


def test_fail_task_states(fleet):
    (spec,) = _spec(fleet, _regs(), "M1")
    with pytest.raises(ValueError, match="state must be"):
        fail_task(fleet, spec, state="succeeded", error_code="6.1", error_text="x")
    events = fail_task(
        fleet,
        spec,
        state="expired",
        error_code=commands.ErrorCode.DEADLINE_EXPIRED,
        error_text="not started in time",
    )
    assert events == [
        JobFinished(spec.job_id, "completed_with_errors", jobstore.counts(fleet, spec.job_id))
    ]


def test_events_round_trip_through_json():
    samples = [
        ReadingsStored(
            "j", "M1", T0, T0 + timedelta(minutes=15), 2, ("0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0",)
        ),
        EventsStored(
            "j",
            "M1",
            (EndDeviceEvent("M1", "3.26.0.47", T0, {"dlms_code": 1, "x": [1, "a"]}, "7"),),
        ),
        ControlDone("j", "M1", "connect", "connected", True, None),
        JobFinished("j", "completed", {"succeeded": 1, "total": 1}),
    ]
    for event in samples:
        assert from_json(to_json(event)) == event
    for bad in ("{}", '{"type": "Boom"}', "nope", '{"type": "JobFinished", "job_id": "j"}'):
        with pytest.raises(CodecError):
            from_json(bad)
