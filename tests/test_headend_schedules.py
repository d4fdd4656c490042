"""Persisted schedules: every refusal at creation, the life cycle, and the runner firing at
the right local times across both DST changes, through restarts, once for missed firings,
never twice, with the data window in the job's command."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from mdm_conftest import DATABASES, open_test_store
from sqlalchemy import func, select, update

from cim.errors import CimError, ErrorCode
from headend import jobstore
from headend.job_actions import DEFAULT_REGISTERS, Action
from headend.keys import Keyring, MasterKey
from headend.registry import CommPath, MeterRecord, Registry
from headend.schedules import (
    ScheduleDefinition,
    ScheduleRefused,
    ScheduleRunner,
    create_schedule,
    delete_schedule,
    get_schedule,
    latest_due,
    list_schedules,
    parse_rule,
    set_enabled,
)
from headend.schema import jobs
from headend.service import HeadEnd
from headend.taskbus import TaskBus
from mdm.audit import entries
from mdm.devices import Device, add_to_group, create_devices, create_group, update_device

pytest_plugins = ["mdm_conftest"]

AMS = ZoneInfo("Europe/Amsterdam")
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
PROFILE = Action(read="profile")
REGISTERS = Action(read="registers")


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=AMS)


def register(store) -> None:
    """Meters M1, M2, M3 with a path (M1, M2 in group g1), NOPATH without one, group empty."""
    Registry(store, Keyring(MasterKey(bytes(32)))).upsert(
        [
            MeterRecord(
                Device(m, protocol="dlms"), CommPath("wrapper", host="127.0.0.1", port=4059)
            )
            for m in ("M1", "M2", "M3")
        ],
        who="test",
    )
    create_devices(store, [Device("NOPATH")], who="test")
    create_group(store, "g1", who="test")
    add_to_group(store, "g1", ["M1", "M2"], who="test")
    create_group(store, "empty", who="test")


@pytest.fixture
def db(store):
    register(store)
    return store


@pytest.fixture(scope="module", params=DATABASES)
def shared(request):
    """One registered store per database for the tests that leave nothing behind."""
    for store in open_test_store(request.param, request):
        register(store)
        yield store


@pytest.fixture
def bus():
    bus = TaskBus("memory://", namespace=f"sched-{uuid.uuid4().hex[:8]}")
    yield bus
    bus.close()


def define(**changes) -> ScheduleDefinition:
    base = {"name": "daily", "rule": "30 2 * * *", "action": REGISTERS, "devices": ("M1",)}
    base.update(changes)
    return ScheduleDefinition(**base)


# --- refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rule": "61 * * * *"}, "minute field"),
        ({"rule": "* * *"}, "expected 5"),
        ({"rule": "0 0 * 13 *"}, "month field"),
        ({"rule": ""}, "empty"),
        ({"rule": "every fortnight"}, "every N minutes"),
        ({"rule": "every 0 minutes"}, ">= 1"),
        ({"rule": "0 0 30 2 *"}, "never fires"),
        ({"rule": "*/2 * * * *"}, "more often"),
        ({"rule": "every 1 minutes"}, "more often"),
        ({"rule": "every 3m"}, "more often"),
        ({"zone": "Mars/Olympus"}, "IANA"),
        ({"start": datetime(2026, 3, 3)}, "time zone"),
        (  # the end comes before the first firing
            {
                "start": datetime(2026, 3, 3, 3, 0, tzinfo=UTC),
                "end": datetime(2026, 3, 4, 1, 0, tzinfo=UTC),
            },
            "never fires",
        ),
        (  # a window that ended before now
            {"start": datetime(2026, 1, 1, tzinfo=UTC), "end": datetime(2026, 2, 1, tzinfo=UTC)},
            "never fires again",
        ),
        ({"end": NOW - timedelta(days=1), "start": NOW - timedelta(days=2)}, "never fires again"),
        ({"devices": ("M1", "GHOST", "GHOST2")}, "unknown meter.*GHOST, GHOST2"),
        ({"devices": ("NOPATH",)}, "without a communication path"),
        ({"devices": (), "group": "nope"}, "no device group"),
        ({"devices": ()}, "exactly one"),
        ({"group": "g1"}, "exactly one"),
        ({"devices": ("",)}, "non-empty"),
        ({"name": ""}, "name"),
        ({"name": "x" * 200}, "name"),
        ({"window": "tomorrow"}, "data window"),
        ({"window": "yesterday"}, "applies to profile"),
        ({"priority": -1}, "priority"),
    ],
)
def test_creation_refuses(shared, changes, message):
    with pytest.raises(ScheduleRefused, match=message):
        create_schedule(shared, define(**changes), who="ops", now=NOW)
    assert list_schedules(shared) == []


def test_unknown_meters_have_their_own_code(shared):
    with pytest.raises(ScheduleRefused) as refused:
        create_schedule(shared, define(devices=("GHOST",)), who="ops", now=NOW)
    assert refused.value.error is ErrorCode.UNKNOWN_DEVICE
    assert isinstance(refused.value, CimError)


def test_duplicate_name_refused(db):
    create_schedule(db, define(), who="ops", now=NOW)
    with pytest.raises(ScheduleRefused, match="exists"):
        create_schedule(db, define(), who="ops", now=NOW)


def test_minimum_interval_is_configurable(db):
    rec = create_schedule(
        db, define(rule="every 2 minutes"), who="ops", now=NOW, min_interval=timedelta(minutes=1)
    )
    assert rec.rule == "every 2 minutes"


def test_rules():
    assert parse_rule("  0   2 * * *") == "0 2 * * *"
    every = parse_rule("every 15 minutes")
    assert (every.n, every.unit.value) == (15, "minutes")
    assert parse_rule("Every 2 h").unit.value == "hours"
    assert parse_rule("every 1 day").unit.value == "days"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "either a read or a control"),
        ({"read": "registers", "control": "connect"}, "either"),
        ({"read": "everything"}, "registers, profile, events"),
        ({"control": "explode"}, "disconnect"),
        ({"read": "registers", "obis": "1.0.1.8.0.255"}, "list"),
        ({"read": "registers", "obis": [""]}, "list"),
        ({"read": "profile", "colour": "red"}, "unknown action field"),
        ([], "JSON object"),
    ],
)
def test_actions_refused(data, message):
    with pytest.raises(CimError, match=message):
        Action.from_dict(data)


def test_action_json_round_trip_and_commands():
    assert Action.from_json(REGISTERS.to_json()).obis == DEFAULT_REGISTERS
    control = Action.from_json('{"control": "disconnect"}')
    assert control.is_control and control.describe() == "control disconnect"
    assert control.command("M1").action.value == "disconnect"
    with pytest.raises(CimError, match="not JSON"):
        Action.from_json("{")
    with pytest.raises(CimError, match="window or the current time"):
        PROFILE.command("M1")
    window = (NOW - timedelta(hours=1), NOW)
    assert PROFILE.command("M1", window).start == window[0]
    assert PROFILE.command("M1", now=NOW).start == NOW - timedelta(days=1)
    events = Action(read="events").command("M1", window)
    assert (events.start, events.end) == window
    with pytest.raises(CimError, match="start must be before"):
        PROFILE.command("M1", (NOW, NOW))


def test_a_full_read_action_is_one_full_read_command():
    from headend.commands import FullRead

    full = Action(read="full")
    assert full.uses_window and full.describe() == "read full"
    assert full.to_dict() == {"read": "full", "obis": list(DEFAULT_REGISTERS), "profile": None}
    again = Action.from_json(Action(read="full", obis=("1.0.1.8.0.255",)).to_json())
    assert again == Action(read="full", obis=("1.0.1.8.0.255",))
    window = (NOW - timedelta(hours=1), NOW)
    command = full.command("M1", window)
    assert isinstance(command, FullRead)
    assert (command.device, command.start, command.end) == ("M1", *window)
    assert command.obis == DEFAULT_REGISTERS
    assert full.command("M1", now=NOW).start == NOW - timedelta(days=1)
    with pytest.raises(CimError, match="a full read needs a window or the current time"):
        full.command("M1")
    with pytest.raises(CimError, match="start must be before"):
        full.command("M1", (NOW, NOW))
    with pytest.raises(CimError, match="obis must be a list"):
        Action(read="full", obis=("",))


# --- life cycle ---------------------------------------------------------------------------


def test_create_list_disable_enable_delete(db):
    rec = create_schedule(
        db,
        define(zone="Europe/Amsterdam", exceptions=(date(2026, 3, 3),)),
        who="ops",
        now=NOW,
    )
    assert rec.enabled and rec.next_due_at == local(2026, 3, 4, 2, 30)  # the 3rd is an exception
    assert rec.start == datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    assert rec.target == "M1" and rec.as_dict()["exceptions"] == ["2026-03-03"]
    assert [r.name for r in list_schedules(db)] == ["daily"]
    off = set_enabled(db, "daily", False, who="ops", now=NOW)
    assert not off.enabled and off.next_due_at is None
    assert set_enabled(db, "daily", False, who="ops", now=NOW) == off  # no change
    on = set_enabled(db, "daily", True, who="ops", now=NOW + timedelta(days=5))
    assert on.next_due_at == local(2026, 3, 8, 2, 30)  # nothing missed while disabled
    assert get_schedule(db, "daily").enabled
    delete_schedule(db, "daily", who="ops")
    assert list_schedules(db) == []
    changes = [e.attribute for e in entries(db, object_type="schedule", object_id="daily")]
    assert changes == ["(created)", "enabled", "enabled", "(deleted)"]
    for call in (
        lambda: get_schedule(db, "daily"),
        lambda: delete_schedule(db, "daily", who="ops"),
        lambda: set_enabled(db, "daily", True, who="ops"),
    ):
        with pytest.raises(ScheduleRefused, match="no schedule"):
            call()


def test_group_and_everyone_targets_and_disabled_creation(db):
    g = create_schedule(db, define(name="g", devices=(), group="g1"), who="ops", now=NOW)
    assert g.target == "group g1" and g.group == "g1"
    e = create_schedule(
        db, define(name="e", devices=(), everyone=True, enabled=False), who="ops", now=NOW
    )
    assert e.target == "everyone" and e.next_due_at is None
    many = create_schedule(db, define(name="m", devices=("M3", "M1", "M2", "M1")), who="o", now=NOW)
    assert many.devices == ("M1", "M2", "M3")


def test_enabling_an_ended_schedule_is_refused(db):
    create_schedule(db, define(end=NOW + timedelta(days=2), enabled=False), who="ops", now=NOW)
    with pytest.raises(ScheduleRefused, match="window has ended"):
        set_enabled(db, "daily", True, who="ops", now=NOW + timedelta(days=3))


# --- the runner ---------------------------------------------------------------------------


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now.astimezone(UTC)

    def __call__(self) -> datetime:
        return self.now


def runner(db, bus, clock) -> ScheduleRunner:
    return ScheduleRunner(db, HeadEnd(db, bus), clock=clock)


def job_count(db) -> int:
    with db.connect() as conn:
        return conn.execute(select(func.count()).select_from(jobs)).scalar_one()


def test_fires_at_local_times_across_both_dst_changes_with_restarts(db, bus):
    create_schedule(
        db,
        define(zone="Europe/Amsterdam", start=local(2026, 3, 27)),
        who="ops",
        now=local(2026, 3, 26, 12),
    )
    clock = Clock(local(2026, 3, 27))
    fired = []
    # Every ten minutes for four days, a new runner (a restart) every six hours.
    while clock.now < local(2026, 3, 31).astimezone(UTC):
        r = runner(db, bus, clock)
        for _ in range(36):
            fired += r.tick()
            clock.now += timedelta(minutes=10)
    assert [f.fired_at for f in fired] == [
        datetime(2026, 3, 27, 1, 30, tzinfo=UTC),  # 02:30 CET
        datetime(2026, 3, 28, 1, 30, tzinfo=UTC),
        datetime(2026, 3, 29, 1, 0, tzinfo=UTC),  # 02:30 does not exist: 03:00 CEST
        datetime(2026, 3, 30, 0, 30, tzinfo=UTC),  # 02:30 CEST
    ]
    assert job_count(db) == 4 and all(f.job_id and not f.existing for f in fired)
    # autumn: 02:30 occurs twice on 25 October; it fires once, at the first (CEST)
    clock.now = local(2026, 10, 24, 12).astimezone(UTC)
    set_enabled(db, "daily", False, who="ops", now=clock.now)
    set_enabled(db, "daily", True, who="ops", now=clock.now)
    fired = []
    while clock.now < local(2026, 10, 27).astimezone(UTC):
        fired += runner(db, bus, clock).tick()
        clock.now += timedelta(minutes=10)
    assert [f.fired_at for f in fired] == [
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC),  # 02:30 CEST, not again at 02:30 CET
        datetime(2026, 10, 26, 1, 30, tzinfo=UTC),  # 02:30 CET
    ]
    job = jobstore.get_job(db, fired[0].job_id)
    assert job.kind == "scheduled" and job.schedule_id == get_schedule(db, "daily").id
    assert job.created_by == "schedule:daily" and job.name == "daily 2026-10-25 02:30 CEST"


def test_missed_firings_run_once_and_state_survives_a_restart(db, bus):
    rec = create_schedule(db, define(rule="every 1 hours"), who="ops", now=NOW)
    assert rec.next_due_at == NOW
    clock = Clock(NOW + timedelta(days=3, minutes=20))  # down for three days
    (firing,) = runner(db, bus, clock).tick()
    assert firing.fired_at == NOW + timedelta(days=3)  # the latest missed, once
    after = get_schedule(db, "daily")
    assert after.last_fired_at == firing.fired_at and after.last_job_id == firing.job_id
    assert after.next_due_at == NOW + timedelta(days=3, hours=1)
    assert runner(db, bus, clock).tick() == []  # a restart at the same time: nothing again
    assert job_count(db) == 1


def test_a_crash_between_submitting_and_saving_does_not_double(db, bus):
    create_schedule(db, define(rule="every 1 hours"), who="ops", now=NOW)
    clock = Clock(NOW + timedelta(minutes=5))
    first = runner(db, bus, clock)
    rec = first.due()[0]
    schedule = rec.schedule()
    # the job is submitted, then the process dies before next_due_at moves on
    lost = first._submit(rec, schedule, NOW, NOW + timedelta(hours=1), None)
    (again,) = runner(db, bus, clock).tick()
    assert again.existing and again.job_id == lost.job_id
    assert job_count(db) == 1


def test_two_runners_fire_once(db, bus):
    create_schedule(db, define(rule="every 1 hours"), who="ops", now=NOW)
    clock = Clock(NOW)
    a, b = runner(db, bus, clock), runner(db, bus, clock)
    stale = a.due()
    assert len(b.tick()) == 1
    assert a._fire(stale[0], clock.now) is None  # b moved it on first
    assert job_count(db) == 1


def test_latest_due_looks_back_far():
    from headend.scheduler import Every, Schedule, Unit

    schedule = Schedule(Every(5, Unit.MINUTES), ZoneInfo("UTC"), NOW)
    later = NOW + timedelta(days=500, seconds=7)
    assert latest_due(schedule, NOW, later) == NOW + timedelta(days=500)
    assert latest_due(schedule, NOW, NOW - timedelta(seconds=1)) is None
    weekly = Schedule.create("0 3 * * 1", zone="UTC", start=NOW)
    due = weekly.next_after(NOW)
    assert latest_due(weekly, due, due + timedelta(days=6)) == due


def test_data_window_yesterday_in_the_command(db, bus):
    create_schedule(
        db,
        define(
            action=PROFILE, window="yesterday", zone="Europe/Amsterdam", start=local(2026, 3, 29)
        ),
        who="ops",
        now=local(2026, 3, 28),
    )
    clock = Clock(local(2026, 3, 30, 3))
    (firing,) = runner(db, bus, clock).tick()
    job = jobstore.get_job(db, firing.job_id)
    # 29 March had 23 hours in Amsterdam
    assert (job.command.start, job.command.end) == (local(2026, 3, 29), local(2026, 3, 30))
    assert job.command.end - job.command.start == timedelta(hours=23)
    assert job.parameters["window"] == "yesterday"
    assert job.parameters["fired_at"] == local(2026, 3, 30, 2, 30)


def test_data_window_since_last_success(db, bus):
    create_schedule(db, define(action=PROFILE, window="since_last_success"), who="ops", now=NOW)
    clock = Clock(datetime(2026, 3, 3, 3, 0, tzinfo=UTC))
    r = runner(db, bus, clock)
    (first,) = r.tick()
    one = jobstore.get_job(db, first.job_id).command
    assert (one.start, one.end) == (first.fired_at - timedelta(days=1), first.fired_at)
    # that job failed: the next window still starts a day before (no success yet)
    with db.begin() as conn:
        conn.execute(
            update(jobs).where(jobs.c.id == first.job_id).values(state="completed_with_errors")
        )
    clock.now += timedelta(days=1)
    (second,) = r.tick()
    two = jobstore.get_job(db, second.job_id).command
    assert two.start == second.fired_at - timedelta(days=1)
    # the second job read everything: the third window starts at the second firing
    with db.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.id == second.job_id).values(state="completed"))
    clock.now += timedelta(days=1)
    (third,) = r.tick()
    three = jobstore.get_job(db, third.job_id).command
    assert (three.start, three.end) == (second.fired_at, third.fired_at)
    assert get_schedule(db, "daily").last_success_at == second.fired_at


def test_a_refused_firing_is_recorded_and_the_schedule_moves_on(db, bus):
    create_schedule(db, define(devices=(), group="empty"), who="ops", now=NOW)
    clock = Clock(NOW + timedelta(days=1))
    (firing,) = runner(db, bus, clock).tick()
    assert firing.job_id is None and "has no devices" in firing.error
    rec = get_schedule(db, "daily")
    assert rec.last_error == firing.error and rec.next_due_at > clock.now
    assert job_count(db) == 0


def test_a_removed_meter_is_reported_and_the_rest_run(db, bus):
    create_schedule(db, define(devices=("M1", "M2")), who="ops", now=NOW)
    update_device(db, "M2", who="ops", status="removed")
    (firing,) = runner(db, bus, Clock(NOW + timedelta(days=1))).tick()
    assert firing.job_id is not None and firing.refused == ("M2: meter 'M2' is removed",)
    assert jobstore.get_job(db, firing.job_id).total == 1


def test_run_until_stopped(db, bus):
    create_schedule(db, define(rule="every 1 hours"), who="ops", now=NOW)
    clock = Clock(NOW + timedelta(minutes=1))

    async def body() -> None:
        stop = asyncio.Event()
        r = ScheduleRunner(db, HeadEnd(db, bus), clock=clock, poll=0.01)
        task = asyncio.create_task(r.run(stop))
        for _ in range(200):
            if job_count(db):
                break
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(body())
    assert job_count(db) == 1
    assert get_schedule(db, "daily").next_due_at == NOW + timedelta(hours=1)
