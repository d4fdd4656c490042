"""Communication statistics and KPIs over crafted attempt rows: the summary and every
grouping, the time window, per-day rates in a local zone, non-communicating meters."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from job_rows import CONTROL, T0, add_job, add_task, at, attempt

from cim.errors import CimError
from headend import statistics
from mdm.devices import Device, create_devices

pytest_plugins = ["mdm_conftest"]

DAY = 86400


@pytest.fixture
def comm_db(store):
    """Day 1 (2 March): M1 ok on net1; M2 timeout then ok on net1; M3 refused twice on net2.
    Day 2: M1 ok on net2; a control of M2 succeeds (not a read). M4 never talked."""
    create_devices(
        store,
        [
            Device("M1", manufacturer="Acme", model="A1"),
            Device("M2", manufacturer="Acme", model="A1"),
            Device("M3", manufacturer="Zeta", model="Z9"),
            Device("M4", manufacturer="Zeta", model="Z9"),
            Device("OLD", status="removed"),
        ],
        who="test",
    )
    with store.begin() as conn:
        add_job(conn, "r1" + "0" * 30, total=3)
        add_task(
            conn,
            "r1" + "0" * 30,
            "M1",
            "succeeded",
            started=at(10),
            finished=at(12),
            attempts=[attempt("net1", at(10), 2, "ok", 100, 1000)],
        )
        add_task(
            conn,
            "r1" + "0" * 30,
            "M2",
            "succeeded",
            started=at(10),
            finished=at(40),
            attempts=[
                attempt("net1", at(10), 5, "timeout", 50, 0),
                attempt("net1", at(30), 10, "ok", 100, 900),
            ],
        )
        add_task(
            conn,
            "r1" + "0" * 30,
            "M3",
            "failed",
            started=at(10),
            finished=at(20),
            error_code="6.2",
            attempts=[
                attempt("net2", at(10), 1, "refused", 10, 5),
                attempt("net2", at(15), 1, "refused", 10, 5),
            ],
        )
        add_job(conn, "r2" + "0" * 30, total=1)
        add_task(
            conn,
            "r2" + "0" * 30,
            "M1",
            "succeeded",
            started=at(DAY),
            finished=at(DAY + 3),
            attempts=[attempt("net2", at(DAY), 3, "ok", 100, 1000)],
        )
        add_task(
            conn,
            "r2" + "0" * 30,
            "M4",
            "running",
            started=at(DAY),
            attempts=[attempt("net2", at(DAY), None, None)],
        )  # still running: not counted
        add_job(conn, "c1" + "0" * 30, command=CONTROL, total=1)
        add_task(
            conn,
            "c1" + "0" * 30,
            "M2",
            "succeeded",
            started=at(DAY),
            finished=at(DAY + 1),
            attempts=[attempt("net1", at(DAY), 1, "ok", 20, 20)],
        )
    return store


def test_summary(comm_db):
    (total,) = statistics.comm_statistics(comm_db)
    assert total.key is None
    assert (total.attempts, total.successes, total.failures) == (7, 4, 3)
    assert total.by_cause == {"refused": 2, "timeout": 1}
    assert (total.bytes_sent, total.bytes_received) == (390, 2930)
    assert total.seconds == pytest.approx(23.0, abs=0.05)
    assert total.success_rate == pytest.approx(4 / 7)
    assert total.mean_seconds == pytest.approx(23 / 7, abs=0.01)
    assert total.as_dict()["failures"] == 3


def test_by_meter_most_failures_first(comm_db):
    rows = statistics.comm_statistics(comm_db, by="meter")
    assert [r.key for r in rows] == ["M3", "M2", "M1"]
    m3, m2, m1 = rows
    assert (m3.attempts, m3.successes, m3.by_cause) == (2, 0, {"refused": 2})
    assert (m2.attempts, m2.successes, m2.by_cause) == (3, 2, {"timeout": 1})
    assert (m1.attempts, m1.failures, m1.by_cause) == (2, 0, {})
    assert m1.bytes_received == 2000
    assert [r.key for r in statistics.comm_statistics(comm_db, by="meter", limit=1)] == ["M3"]


def test_by_path(comm_db):
    rows = {r.key: r for r in statistics.comm_statistics(comm_db, by="path")}
    assert set(rows) == {"net1", "net2"}
    assert (rows["net1"].attempts, rows["net1"].successes) == (4, 3)
    assert rows["net1"].by_cause == {"timeout": 1}
    assert (rows["net2"].attempts, rows["net2"].successes) == (3, 1)
    assert rows["net2"].by_cause == {"refused": 2}


def test_by_device_type(comm_db):
    rows = {r.key: r for r in statistics.comm_statistics(comm_db, by="type")}
    assert set(rows) == {"Acme A1", "Zeta Z9"}
    assert (rows["Acme A1"].attempts, rows["Acme A1"].successes) == (5, 4)
    assert rows["Zeta Z9"].by_cause == {"refused": 2}


def test_window(comm_db):
    (day2,) = statistics.comm_statistics(comm_db, since=T0 + timedelta(days=1))
    assert (day2.attempts, day2.successes) == (2, 2)
    (day1,) = statistics.comm_statistics(comm_db, until=T0 + timedelta(days=1))
    assert (day1.attempts, day1.successes) == (5, 2)
    (none,) = statistics.comm_statistics(comm_db, since=T0 + timedelta(days=9))
    assert none.attempts == 0 and none.success_rate is None and none.mean_seconds is None
    assert statistics.comm_statistics(comm_db, by="meter", since=T0 + timedelta(days=9)) == []


def test_bad_grouping(comm_db):
    with pytest.raises(CimError, match="meter, path, type"):
        statistics.comm_statistics(comm_db, by="colour")


def test_daily_kpis(comm_db):
    first = date(2026, 3, 2)
    kpis = statistics.daily_kpis(comm_db, first, first + timedelta(days=2))
    assert [k.day for k in kpis] == [first, first + timedelta(1), first + timedelta(2)]
    d1, d2, d3 = kpis
    assert (d1.attempts, d1.successful_attempts) == (5, 2)
    assert d1.comm_success_rate == pytest.approx(0.4)
    assert (d1.meters, d1.meters_read) == (3, 2)  # M3 failed
    assert d1.read_success_rate == pytest.approx(2 / 3)
    assert (d2.attempts, d2.successful_attempts) == (2, 2)
    assert (d2.meters, d2.meters_read) == (1, 1)  # the control of M2 is not a read
    assert d3.comm_success_rate is None and d3.read_success_rate is None
    assert d1.as_dict()["day"] == "2026-03-02"


def test_daily_kpis_follow_the_local_day(comm_db):
    # 08:00 UTC is 17:00 in Tokyo: the same days; in Honolulu (UTC-10) 22:00 the day before.
    kpis = statistics.daily_kpis(
        comm_db, date(2026, 3, 1), date(2026, 3, 2), zone="Pacific/Honolulu"
    )
    assert [(k.attempts, k.meters) for k in kpis] == [(5, 3), (2, 1)]


def test_daily_kpis_with_interval_completeness(comm_db):
    rt = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
    kpis = statistics.daily_kpis(comm_db, date(2026, 3, 2), date(2026, 3, 2), reading_type=rt)
    assert kpis[0].completeness == 0.0  # no interval data stored at all


def test_daily_kpis_bad_input(comm_db):
    with pytest.raises(CimError, match="before"):
        statistics.daily_kpis(comm_db, date(2026, 3, 2), date(2026, 3, 1))
    with pytest.raises(CimError, match="IANA"):
        statistics.daily_kpis(comm_db, date(2026, 3, 2), date(2026, 3, 2), zone="Mars/Base")
    with pytest.raises(CimError, match="at most"):
        statistics.daily_kpis(comm_db, date(2020, 1, 1), date(2026, 1, 1))


def test_silent_meters(comm_db):
    now = T0 + timedelta(days=1, hours=1)
    silent = statistics.silent_meters(comm_db, 1, now=now)
    # M1 talked on day 2; M2's control on day 2 was a successful session; M3 never succeeded;
    # M4's only attempt is still running; OLD is removed.
    assert [(s.mrid, s.last_success) for s in silent] == [("M3", None), ("M4", None)]
    later = statistics.silent_meters(comm_db, 2, now=now + timedelta(days=3))
    assert [s.mrid for s in later] == ["M1", "M2", "M3", "M4"]
    assert later[0].last_success == at(DAY + 3)
    assert later[1].last_success == at(DAY + 1)
    assert later[0].as_dict()["last_success"] == at(DAY + 3).isoformat()
    assert len(statistics.silent_meters(comm_db, 2, now=now + timedelta(days=3), limit=2)) == 2
    with pytest.raises(CimError, match="at least 1"):
        statistics.silent_meters(comm_db, 0)


def test_every_statement_of_the_operations_modules_compiles_for_oracle(comm_db):
    """Monitor, statistics, schedules and the debug log, run on SQLite, compiled for Oracle."""
    from typing import Any

    from sqlalchemy import event
    from sqlalchemy.dialects import oracle
    from sqlalchemy.sql import ClauseElement

    from headend import commlog, monitor, schedules
    from headend.job_actions import Action

    if comm_db.dialect != "sqlite":
        pytest.skip("one database is enough to collect the statements")
    seen: list[ClauseElement] = []

    def capture(conn: Any, clause: Any, *args: Any) -> None:
        if isinstance(clause, ClauseElement):
            seen.append(clause)

    event.listen(comm_db.engine, "before_execute", capture)
    try:
        statistics.comm_statistics(comm_db)
        for by in statistics.GROUPINGS:
            statistics.comm_statistics(comm_db, by=by, since=T0, until=T0 + timedelta(days=3))
        statistics.daily_kpis(comm_db, date(2026, 3, 2), date(2026, 3, 3))
        statistics.silent_meters(comm_db, 1, now=T0, limit=5)
        monitor.list_jobs(comm_db, states=["running"], kinds=["group"], since=T0)
        job = "r1" + "0" * 30
        monitor.job_durations(comm_db, job)
        monitor.job_tasks(comm_db, job, states=["failed"], with_attempts=True, offset=1)
        monitor.error_causes(comm_db, job)
        commlog.enable(comm_db, meter="M1", who="ops")
        commlog.debug_limit(comm_db, "M1", job)
        recorder = commlog.FrameRecorder("M1", job, 1, 1)
        recorder.record("tx", b"\x01")
        recorder.save(comm_db, meter_cap=0, global_cap=0)
        commlog.frames(comm_db, mrid="M1", job_id=job, task_id=1, attempt=1)
        commlog.switches(comm_db)
        commlog.disable(comm_db, meter="M1", who="ops")
        rec = schedules.create_schedule(
            comm_db,
            schedules.ScheduleDefinition("s", "0 2 * * *", Action(read="registers"), everyone=True),
            who="ops",
        )
        schedules.ScheduleRunner(comm_db, None).due()  # type: ignore[arg-type]
        schedules.ScheduleRunner(comm_db, None).next_due()  # type: ignore[arg-type]
        schedules.set_enabled(comm_db, rec.name, False, who="ops")
        schedules.delete_schedule(comm_db, rec.name, who="ops")
    finally:
        event.remove(comm_db.engine, "before_execute", capture)
    text = "\n".join(str(clause.compile(dialect=oracle.dialect())) for clause in seen)
    assert "EXTRACT(DAY FROM" in text  # seconds_between
    assert "FETCH FIRST" in text  # percentiles and pruning by rank
    for table in ("comm_frames", "comm_debug", "schedules"):
        assert f"INSERT INTO {table}" in text


def test_read_success_counts_every_read_command_and_nothing_else(comm_db):
    """Reads are the jobs whose command type is one of READ_COMMANDS, matched by exact type
    name: a FullRead job counts, a Ping does not, nor a type that only starts like a read."""
    from datetime import UTC, datetime

    from headend import commands
    from headend.command_json import command_to_json

    start = datetime(2026, 3, 1, tzinfo=UTC)
    full = command_to_json(
        commands.FullRead(device="*", start=start, end=T0, obis=("1.0.1.8.0.255",))
    )
    ping = command_to_json(commands.Ping(device="*"))
    lookalike = '{"type":"ReadRegistersLater","device":"*"}'
    day3 = 2 * DAY
    with comm_db.begin() as conn:
        for job_id, command, mrid, state in (
            ("f" * 32, full, "M1", "succeeded"),
            ("e" * 32, full, "M3", "failed"),
            ("d" * 32, ping, "M2", "succeeded"),
            ("c" * 32, lookalike, "M4", "succeeded"),
        ):
            add_job(conn, job_id, command=command, total=1)
            add_task(conn, job_id, mrid, state, started=at(day3), finished=at(day3 + 5))
    (kpi,) = statistics.daily_kpis(comm_db, date(2026, 3, 4), date(2026, 3, 4))
    assert (kpi.meters, kpi.meters_read) == (2, 1)  # M1 and M3 by FullRead; M1 read


def test_each_read_type_prefix_is_how_its_json_begins():
    from datetime import UTC, datetime

    from headend import commands
    from headend.command_json import CodecError, command_to_json, type_prefix

    start, end = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC)
    samples = {
        commands.ReadRegisters: commands.ReadRegisters(device="m", obis=("1.0.1.8.0.255",)),
        commands.ReadIntervalData: commands.ReadIntervalData(device="m", start=start, end=end),
        commands.FullRead: commands.FullRead(device="m", start=start, end=end, obis=("x",)),
        commands.ReadEvents: commands.ReadEvents(device="m"),
    }
    assert set(samples) == set(commands.READ_COMMANDS)
    for cls, command in samples.items():
        assert command_to_json(command).startswith(type_prefix(cls))
        assert "%" not in type_prefix(cls) and "_" not in type_prefix(cls)  # LIKE wildcards
    with pytest.raises(CodecError, match="is not a head-end command"):
        type_prefix(commands.Command)
