"""The persisted job store: commands as exact JSON, jobs with their tasks in one transaction,
tasks loaded for execution with their endpoint, attempts, retries, the job state roll-up and
the re-run of a job's error group."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from headend_samples import AK, EK, keyring, register
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from headend import commands, jobstore
from headend.command_json import (
    CodecError,
    command_from_json,
    command_to_json,
    from_json,
    to_json,
)
from headend.commands import (
    Configure,
    Control,
    ControlAction,
    FirmwareUpdate,
    Ping,
    ReadEvents,
    ReadIntervalData,
    ReadRegisters,
    Setting,
)
from headend.keys import Keyring, MasterKey
from headend.schema import jobs, meter_security, tasks
from mdm.devices import device_ids

pytest_plugins = ["mdm_conftest"]

T0 = datetime(2026, 3, 1, tzinfo=UTC)
AMS = ZoneInfo("Europe/Amsterdam")

# --- the command codec --------------------------------------------------------------------

aware = st.datetimes(
    min_value=datetime(1990, 1, 1),
    max_value=datetime(2090, 1, 1),
    timezones=st.sampled_from([UTC, AMS, ZoneInfo("America/New_York")]),
    # A wall time inside a spring-forward gap names no instant of its own: it comes back as
    # the instant it denotes (test_an_imaginary_local_time_comes_back_as_its_instant).
    allow_imaginary=False,
)
mrid = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=20)
key = st.text(min_size=1, max_size=40)
priority = st.sampled_from(list(commands.Priority))
plain_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
    | st.binary(max_size=10)
    | st.decimals(allow_nan=False, allow_infinity=False)
    | aware,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.lists(inner, max_size=3).map(tuple)
        | st.dictionaries(st.text(max_size=5) | st.integers(), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def windows(draw):
    start = draw(aware)
    return start, start + draw(st.timedeltas(timedelta(seconds=1), timedelta(days=400)))


@st.composite
def any_command(draw):
    common = {"device": draw(mrid), "idempotency_key": draw(key), "priority": draw(priority)}
    kind = draw(st.sampled_from(["regs", "lp", "ev", "ctl", "ping", "fw", "cfg"]))
    if kind == "regs":
        obis = draw(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=4))
        return ReadRegisters(obis=tuple(obis), **common)
    if kind == "lp":
        start, end = draw(windows())
        profile = draw(st.none() | st.text(min_size=1, max_size=12))
        return ReadIntervalData(start=start, end=end, profile=profile, **common)
    if kind == "ev":
        start, end = draw(st.none() | windows()) or (None, None)
        return ReadEvents(
            log=draw(st.none() | st.text(max_size=12)), start=start, end=end, **common
        )
    if kind == "ctl":
        return Control(action=draw(st.sampled_from(list(ControlAction))), **common)
    if kind == "ping":
        return Ping(**common)
    if kind == "fw":
        return FirmwareUpdate(
            image_ref=draw(st.text(min_size=1)),
            identifier=draw(st.text(min_size=1)),
            activate=draw(st.booleans()),
            **common,
        )
    settings_ = draw(
        st.lists(
            st.builds(Setting, st.text(min_size=1, max_size=12), st.integers(0, 20), plain_values),
            min_size=1,
            max_size=3,
        )
    )
    return Configure(settings=tuple(settings_), **common)


def test_an_imaginary_local_time_comes_back_as_its_instant():
    in_the_gap = datetime(1999, 3, 28, 2, 30, tzinfo=AMS)  # clocks jumped 02:00 -> 03:00
    back = from_json(to_json({"at": in_the_gap}))["at"]
    assert back.astimezone(UTC) == in_the_gap.astimezone(UTC)
    assert back.tzinfo == AMS and back.hour == 3


def _same(a, b) -> bool:
    """Equal and of the same types all the way down (datetimes: same zone too)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, datetime):
        return a == b and a.utcoffset() == b.utcoffset() and str(a.tzinfo) == str(b.tzinfo)
    if isinstance(a, Decimal):
        return a.as_tuple() == b.as_tuple() or (a.is_nan() and b.is_nan())
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if dataclasses.is_dataclass(a):
        return all(_same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    return a == b


@settings(max_examples=150, deadline=None)
@given(any_command())
def test_every_command_round_trips_exactly_through_json(command):
    back = command_from_json(command_to_json(command))
    assert _same(back, command)
    assert back == command


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(max_size=8), plain_values, max_size=4))
def test_parameters_round_trip_exactly(parameters):
    assert _same(from_json(to_json(parameters)), parameters)


def test_the_repeated_autumn_hour_keeps_its_occurrence():
    first = datetime(2026, 10, 25, 2, 30, tzinfo=AMS)
    second = first.replace(fold=1)
    for moment in (first, second):
        back = from_json(to_json(moment))
        assert back.fold == moment.fold and back.utcoffset() == moment.utcoffset()
        assert back.tzinfo.key == "Europe/Amsterdam"
    assert from_json(to_json(Decimal("1.2300"))).as_tuple() == Decimal("1.2300").as_tuple()


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '{"type": "Format"}',
        '{"type": "Ping", "device": "M1", "color": "red"}',
        '{"type": "Ping", "device": ""}',
        '{"type": "ReadRegisters", "device": "M1", "obis": {"$what": 1}}',
        '{"type": "ReadIntervalData", "device": "M1", "start": {"$dt": "2026-01-02T00:00:00Z"},'
        ' "end": {"$dt": "2026-01-01T00:00:00Z"}}',
    ],
)
def test_bad_command_documents_are_refused(text):
    with pytest.raises(CodecError):
        command_from_json(text)


def test_values_without_an_exact_json_form_are_refused():
    for bad in (float("nan"), object(), {1, 2}):
        with pytest.raises(CodecError):
            to_json(bad)


# --- jobs and tasks -----------------------------------------------------------------------


@pytest.fixture
def fleet(store):
    register(store)
    return store


def _devices(store, *mrids):
    with store.connect() as conn:
        ids = device_ids(conn, list(mrids))
    return [(ids[m][0], m) for m in mrids]


def _job(store, *mrids, command=None, **kw):
    command = command or ReadRegisters(device=mrids[0], obis=("1.0.1.8.0.255",))
    options = {"kind": "group", "name": "test", "priority": 30, **kw}
    return jobstore.create_job(store, command=command, devices=_devices(store, *mrids), **options)


def test_a_job_and_its_tasks_are_created_together(fleet):
    job = _job(fleet, "M1", "M2", parameters={"start": T0}, created_by="ops")
    assert len(job.tasks) == 2 and not job.existing
    record = jobstore.get_job(fleet, job.job_id)
    assert (record.kind, record.state, record.total, record.created_by) == (
        "group",
        "queued",
        2,
        "ops",
    )
    assert record.parameters == {"start": T0}
    assert isinstance(record.command, ReadRegisters)
    assert jobstore.counts(fleet, job.job_id) | {} == {
        "queued": 2,
        "running": 0,
        "retry_wait": 0,
        "succeeded": 0,
        "failed": 0,
        "expired": 0,
        "cancelled": 0,
        "total": 2,
        "done": 0,
    }
    assert [t.mrid for t in jobstore.task_records(fleet, job.job_id)] == ["M1", "M2"]
    assert [j.id for j in jobstore.list_jobs(fleet)] == [job.job_id]
    assert jobstore.list_jobs(fleet, state="completed") == []
    with pytest.raises(jobstore.JobNotFound):
        jobstore.get_job(fleet, "nope")
    with pytest.raises(ValueError, match="at least one device"):
        jobstore.create_job(
            fleet, kind="group", name="x", command=record.command, devices=[], priority=1
        )


def test_a_refused_task_insert_leaves_no_job(fleet):
    devices = _devices(fleet, "M1") * 2  # the same device twice: duplicate task key
    with pytest.raises(IntegrityError):
        jobstore.create_job(
            fleet, kind="group", name="x", priority=1, devices=devices, command=Ping(device="M1")
        )
    with fleet.connect() as conn:
        assert conn.execute(select(jobs)).all() == []


def test_the_same_idempotency_key_returns_the_first_job(fleet):
    first = _job(fleet, "M1", idempotency_key="req-1")
    again = _job(fleet, "M1", "M2", idempotency_key="req-1")
    assert (again.job_id, again.existing, again.tasks) == (first.job_id, True, [])
    with fleet.connect() as conn:
        assert len(conn.execute(select(tasks)).all()) == 1


def test_bulk_creation_is_one_transaction_and_fast(fleet):
    import time

    many = [(1, f"X{i}") for i in range(20_000)]  # device 1 (M1) under 20,000 names
    begun = time.perf_counter()
    job = jobstore.create_job(
        fleet, kind="bulk", name="bulk", priority=90, devices=many, command=Ping(device="X0")
    )
    elapsed = time.perf_counter() - begun
    assert len(job.tasks) == 20_000 and len({t for t, _ in job.tasks}) == 20_000
    assert elapsed < 10  # ~1 s on SQLite, a few on PostgreSQL
    assert jobstore.counts(fleet, job.job_id)["queued"] == 20_000


def test_load_task_gives_the_command_parameters_and_endpoint(fleet):
    command = Control(device="whatever", action="disconnect")
    job = _job(fleet, "AMS", "K1", command=command, parameters={"why": "debt"})
    (ams_id, ams_key), (k1_id, _) = job.tasks
    spec = jobstore.load_task(fleet, ams_id, keyring=keyring())
    assert spec is not None and not spec.finished
    assert spec.command == Control(device="AMS", action="disconnect", idempotency_key=ams_key)
    assert (spec.mrid, spec.job_id, spec.state, spec.attempts) == ("AMS", job.job_id, "queued", 0)
    assert spec.parameters == {"why": "debt"} and spec.time_zone == "Europe/Amsterdam"
    assert spec.device_type == "ACME X1" and spec.priority == 30
    endpoint = spec.endpoint
    assert endpoint.device_id == "AMS"
    assert endpoint.primary_path == "wrapper://10.0.0.1:4061"
    assert endpoint.backup_path == "hdlc://10.0.0.2:4061"
    assert endpoint.backup.physical_address == 17
    k1 = jobstore.load_task(fleet, k1_id, keyring=keyring())
    assert (k1.endpoint.primary.block_cipher_key, k1.endpoint.primary.authentication_key) == (
        EK,
        AK,
    )
    assert EK.hex() not in repr(k1)
    assert jobstore.load_task(fleet, 999_999) is None


def test_load_task_reports_an_endpoint_it_cannot_build(fleet):
    job = _job(fleet, "K1")
    other = Keyring(MasterKey(bytes(32)))
    spec = jobstore.load_task(fleet, job.tasks[0][0], keyring=other)
    assert spec.endpoint is None and spec.problem_code == "8.1"
    assert "master key" in spec.problem and EK.hex() not in spec.problem


def test_attempts_retries_and_the_job_roll_up(fleet):
    from headend.results import fail_task

    job = _job(fleet, "M1", "M2")
    (t1, _), (t2, _) = job.tasks
    assert jobstore.begin_attempt(fleet, t1, path="p1", worker="h:1") == 1
    assert jobstore.job_state(fleet, job.job_id) == "running"
    jobstore.end_attempt(fleet, t1, 1, outcome="timeout", detail="no answer", bytes_sent=12)
    assert jobstore.mark_retry(
        fleet,
        t1,
        error_code=commands.ErrorCode.DEVICE_TIMEOUT,
        error_text="no answer",
        path="p2",
        on_backup=True,
    )
    spec = jobstore.load_task(fleet, t1)
    assert (spec.state, spec.attempts, spec.path, spec.on_backup) == ("retry_wait", 1, "p2", True)
    assert jobstore.begin_attempt(fleet, t1, path="p2", worker="h:2") == 2
    jobstore.end_attempt(fleet, t1, 2, outcome="ok", detail=None, bytes_received=99)
    attempts = jobstore.attempts_of(fleet, t1)
    assert [(a.number, a.path, a.outcome, a.worker) for a in attempts] == [
        (1, "p1", "timeout", "h:1"),
        (2, "p2", "ok", "h:2"),
    ]
    assert (attempts[0].bytes_sent, attempts[1].bytes_received) == (12, 99)
    assert attempts[0].device_type == "ACME X1" and attempts[1].finished_at is not None
    with fleet.begin() as conn:
        assert jobstore.finish_task(conn, t1, state="succeeded")
        assert jobstore.roll_up(conn, job.job_id) is None  # M2 still open
    assert fail_task(
        fleet,
        jobstore.load_task(fleet, t2),
        state="expired",
        error_code="7.1",
        error_text="not started in time",
    )
    record = jobstore.get_job(fleet, job.job_id)
    assert record.state == "completed_with_errors" and record.finished_at is not None
    counts = jobstore.counts(fleet, job.job_id)
    assert (counts["succeeded"], counts["expired"], counts["done"]) == (1, 1, 2)
    # a finished task is not started, retried or finished again
    with pytest.raises(jobstore.TaskFinished):
        jobstore.begin_attempt(fleet, t1, path="p1", worker="h:3")
    assert not jobstore.mark_retry(
        fleet, t1, error_code=None, error_text=None, path=None, on_backup=False
    )
    with fleet.begin() as conn:
        assert not jobstore.finish_task(conn, t1, state="failed")
    with pytest.raises(jobstore.TaskNotFound):
        jobstore.begin_attempt(fleet, 999_999, path="p", worker="w")
    with pytest.raises(jobstore.TaskNotFound):
        jobstore.end_attempt(fleet, t1, 7, outcome="ok", detail=None)
    with pytest.raises(ValueError, match="terminal"), fleet.begin() as conn:
        jobstore.finish_task(conn, t1, state="running")


def test_every_task_succeeding_completes_the_job(fleet):
    job = _job(fleet, "M1")
    with fleet.begin() as conn:
        jobstore.finish_task(conn, job.tasks[0][0], state="succeeded", result={"readings": 1})
        done = jobstore.roll_up(conn, job.job_id)
    assert (done.state, done.counts["succeeded"]) == ("completed", 1)
    assert next(jobstore.task_records(fleet, job.job_id)).result == {"readings": 1}


def test_cancel_finishes_what_did_not_start(fleet):
    job = _job(fleet, "M1", "M2")
    jobstore.begin_attempt(fleet, job.tasks[0][0], path="p", worker="w")
    assert jobstore.cancel_job(fleet, job.job_id) is None  # M1 is still running
    assert jobstore.counts(fleet, job.job_id)["cancelled"] == 1
    with pytest.raises(jobstore.JobNotFound):
        jobstore.cancel_job(fleet, "nope")
    other = _job(fleet, "M1")
    assert jobstore.cancel_job(fleet, other.job_id).state == "cancelled"


def test_rerun_of_the_error_group(fleet):
    job = _job(fleet, "M1", "M2", "AMS", parameters={"start": T0})
    (t1, _), (t2, _), (t3, _) = job.tasks
    with fleet.begin() as conn:
        jobstore.finish_task(conn, t1, state="succeeded")
        jobstore.finish_task(conn, t2, state="failed", error_code="7.2")
        jobstore.finish_task(conn, t3, state="expired", error_code="7.1")
        jobstore.roll_up(conn, job.job_id)
    assert [m for _, m in jobstore.error_group(fleet, job.job_id)] == ["M2", "AMS"]
    rerun = jobstore.rerun_errors(fleet, job.job_id, created_by="ops")
    record = jobstore.get_job(fleet, rerun.job_id)
    assert (record.kind, record.parent_id, record.total) == ("rerun", job.job_id, 2)
    assert record.parameters == {"start": T0} and record.name == "test (errors)"
    assert [t.mrid for t in jobstore.task_records(fleet, rerun.job_id)] == ["M2", "AMS"]
    assert len(jobstore.open_tasks(fleet, rerun.job_id)) == 2
    with pytest.raises(ValueError, match="no failed"):
        jobstore.rerun_errors(fleet, rerun.job_id)
    with pytest.raises(jobstore.JobNotFound):
        jobstore.error_group(fleet, "nope")


def test_a_task_whose_meter_lost_its_keys(fleet):
    job = _job(fleet, "K1")
    with fleet.begin() as conn:
        conn.execute(update(meter_security).values(encryption_key=None))
    spec = jobstore.load_task(fleet, job.tasks[0][0], keyring=keyring())
    assert spec.endpoint is None and spec.problem
    with fleet.connect() as conn:
        assert conn.execute(select(tasks.c.state)).scalar() == "queued"
