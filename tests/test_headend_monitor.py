"""The transaction monitor over crafted job rows: progress and success percentages, task and
attempt detail, durations ranked by the database (on SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from job_rows import CONTROL, T0, add_job, add_task, at, attempt

from cim.errors import CimError
from headend import monitor
from headend.sql_seconds import seconds_between
from mdm.devices import Device, create_devices

pytest_plugins = ["mdm_conftest"]


@pytest.fixture
def jobs_db(store):
    """Job A: 4 tasks (2 succeeded, 1 failed after 3 attempts, 1 queued); job B, older, a
    finished control of one meter."""
    create_devices(store, [Device(m) for m in ("M1", "M2", "M3", "M4")], who="test")
    with store.begin() as conn:
        add_job(conn, "a" * 32, total=4, created=at(0), started=at(1))
        add_task(
            conn,
            "a" * 32,
            "M1",
            "succeeded",
            created=at(0),
            started=at(1),
            finished=at(3),
            attempts=[attempt("net1", at(1), 2, "ok", 100, 400)],
            result={"readings": 2, "registers": 2},
        )
        add_task(
            conn,
            "a" * 32,
            "M2",
            "succeeded",
            created=at(0),
            started=at(2),
            finished=at(6),
            attempts=[attempt("net1", at(2), 4, "ok", 120, 380)],
        )
        add_task(
            conn,
            "a" * 32,
            "M3",
            "failed",
            created=at(0),
            started=at(4),
            finished=at(14),
            error_code="7.2",
            attempts=[
                attempt("net1", at(4), 1, "timeout", 50),
                attempt("net1", at(6), 1, "timeout", 50),
                attempt("backup", at(10), 4, "timeout", 50),
            ],
        )
        add_task(conn, "a" * 32, "M4", "queued", created=at(0))
        add_job(
            conn,
            "b" * 32,
            command=CONTROL,
            kind="on_demand",
            state="completed",
            total=1,
            created=at(-3600),
            started=at(-3599),
            finished=at(-3590),
        )
        add_task(
            conn,
            "b" * 32,
            "M1",
            "succeeded",
            created=at(-3600),
            started=at(-3599),
            finished=at(-3590),
            attempts=[attempt("net1", at(-3599), 9, "ok")],
        )
    return store


def test_list_jobs_newest_first_with_progress_and_success(jobs_db):
    found = monitor.list_jobs(jobs_db)
    assert [j.id for j in found] == ["a" * 32, "b" * 32]
    a, b = found
    assert a.counts == {"succeeded": 2, "failed": 1, "queued": 1}
    assert a.done == 3 and a.total == 4
    assert a.progress == 75.0
    assert a.success == pytest.approx(200 / 3)
    assert a.duration is None  # still running
    assert b.progress == 100.0 and b.success == 100.0 and b.duration == 9.0
    assert a.as_dict()["progress"] == 75.0


def test_list_jobs_filters(jobs_db):
    assert [j.id for j in monitor.list_jobs(jobs_db, states=["completed"])] == ["b" * 32]
    assert [j.id for j in monitor.list_jobs(jobs_db, kinds=["group"])] == ["a" * 32]
    assert [j.id for j in monitor.list_jobs(jobs_db, since=T0)] == ["a" * 32]
    assert len(monitor.list_jobs(jobs_db, limit=1)) == 1
    assert monitor.list_jobs(jobs_db, schedule_id=7) == []


def test_job_summary_and_unknown_job(jobs_db):
    assert monitor.job_summary(jobs_db, "b" * 32).kind == "on_demand"
    with pytest.raises(CimError, match="no job"):
        monitor.job_summary(jobs_db, "nope")
    with pytest.raises(CimError, match="no job"):
        monitor.job_durations(jobs_db, "nope")


def test_durations_are_ranked_in_the_database(jobs_db):
    d = monitor.job_durations(jobs_db, "a" * 32)
    # queue waits 1, 2, 4 s (the queued task has none): nearest rank p50 = 2nd, p95 = 3rd
    assert d.queue_wait.count == 3
    assert d.queue_wait.p50 == pytest.approx(2.0, abs=0.01)
    assert d.queue_wait.p95 == pytest.approx(4.0, abs=0.01)
    assert d.queue_wait.mean == pytest.approx(7 / 3, abs=0.01)
    # run times 2, 4, 10 s
    assert d.run_time.p50 == pytest.approx(4.0, abs=0.01)
    assert d.run_time.p95 == pytest.approx(10.0, abs=0.01)
    assert d.run_time.max == pytest.approx(10.0, abs=0.01)
    # attempts 2, 4, 1, 1, 4 s
    assert d.attempt_time.count == 5
    assert d.attempt_time.p50 == pytest.approx(2.0, abs=0.01)
    assert d.attempts == 5
    assert (d.bytes_sent, d.bytes_received) == (370, 780)
    assert d.as_dict()["run_time"]["p95"] == pytest.approx(10.0, abs=0.01)


def test_durations_of_a_job_not_started(jobs_db):
    with jobs_db.begin() as conn:
        add_job(conn, "c" * 32, total=1)
        add_task(conn, "c" * 32, "M1", "queued")
    d = monitor.job_durations(jobs_db, "c" * 32)
    assert d.queue_wait.count == 0 and d.queue_wait.p50 is None
    assert d.attempts == 0 and d.bytes_sent == 0


def test_tasks_with_attempts(jobs_db):
    detail = monitor.job_tasks(jobs_db, "a" * 32, with_attempts=True)
    assert [t.mrid for t in detail] == ["M1", "M2", "M3", "M4"]
    m1, _, m3, m4 = detail
    assert m1.result == {"readings": 2, "registers": 2}
    assert m1.queue_wait == 1.0 and m1.run_time == 2.0
    assert [a.outcome for a in m3.attempt_list] == ["timeout"] * 3
    assert m3.attempt_list[2].path == "backup" and m3.attempt_list[2].seconds == 4.0
    assert m3.error_code == "7.2"
    assert m4.queue_wait is None and m4.attempt_list == []
    failed = monitor.job_tasks(jobs_db, "a" * 32, states=["failed"])
    assert [t.mrid for t in failed] == ["M3"] and failed[0].attempt_list == []
    page = monitor.job_tasks(jobs_db, "a" * 32, limit=2, offset=2)
    assert [t.mrid for t in page] == ["M3", "M4"]
    assert monitor.task_attempts_of(jobs_db, m3.id)[0].number == 1
    assert m3.as_dict()["attempt_list"][0]["outcome"] == "timeout"


def test_error_causes(jobs_db):
    assert monitor.error_causes(jobs_db, "a" * 32) == {"7.2": 1}
    assert monitor.error_causes(jobs_db, "b" * 32) == {}


def test_seconds_between_compiles_for_every_database():
    from sqlalchemy import column, select, table
    from sqlalchemy.dialects import oracle, postgresql, sqlite

    t = table("t", column("a"), column("b"))
    query = select(seconds_between(t.c.a, t.c.b))
    assert "julianday" in str(query.compile(dialect=sqlite.dialect()))
    assert "EPOCH" in str(query.compile(dialect=postgresql.dialect()))
    assert "EXTRACT(DAY" in str(query.compile(dialect=oracle.dialect()))
