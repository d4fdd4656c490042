"""The head-end service: jobs checked when they are submitted (every refusal), persisted and
published; idempotency keys; wait and view; events to listeners; the error group re-run; and
one end to end run through a worker with the in-process fake driver."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from headend_samples import keyring, register
from mdm_conftest import open_test_store
from sqlalchemy import func, select, update

from cim.errors import ErrorCode
from drivers.base import RegisterValue
from drivers.fake import FakeDriver
from headend import commands, jobstore
from headend.events import JobFinished, ReadingsStored
from headend.jobs import JobKind, Priority
from headend.keys import Keyring, MasterKey
from headend.results import complete_task, fail_task
from headend.schema import jobs, meter_security, tasks
from headend.service import DeviceProblem, HeadEnd, JobRefused, JobRequest
from headend.taskbus import TaskBus
from mdm.devices import create_group, update_device

pytest_plugins = ["mdm_conftest"]

ENERGY = "1.0.1.8.0.255"


def read(mrid: str = "M1") -> commands.ReadRegisters:
    return commands.ReadRegisters(device=mrid, obis=(ENERGY,))


@pytest.fixture
def bus():
    bus = TaskBus.from_url("memory://", namespace=f"t{uuid.uuid4().hex[:10]}")
    yield bus
    bus.delete()
    bus.close()


@pytest.fixture
def headend(store, bus):
    """On every database."""
    register(store)
    return HeadEnd(store, bus, keyring=keyring())


@pytest.fixture
def lite(request, bus):
    """On SQLite only: checks that do not depend on the database."""
    stores = open_test_store("sqlite", request)
    store = next(stores)
    register(store)
    yield HeadEnd(store, bus, keyring=keyring())
    stores.close()


def _jobs(store) -> int:
    with store.connect() as conn:
        return conn.execute(select(func.count()).select_from(jobs)).scalar()


def test_a_quick_job_is_persisted_and_published(headend, bus):
    created = headend.submit(JobRequest(read(), devices=["M1"]))
    assert created.refused == [] and not created.existing
    view = headend.view(created.job_id)
    assert (view.kind, view.state, view.name) == ("on_demand", "queued", "ReadRegisters M1")
    assert [(t.mrid, t.state, t.attempts) for t in view.tasks] == [("M1", "queued", 0)]
    assert view.counts["queued"] == 1 and view.counts["total"] == 1
    assert bus.pending_tasks() == 1
    assert jobstore.get_job(headend.store, created.job_id).priority == Priority.ON_DEMAND


def test_kinds_priorities_and_selections(lite, bus):
    group = lite.submit(JobRequest(read(), group="feeder-1"))
    everyone = lite.submit(JobRequest(read(), everyone=True))
    control = lite.submit(
        JobRequest(commands.Control(device="M1", action="disconnect"), devices=["M1", "M2"])
    )
    store = lite.store
    assert [t.mrid for t in lite.view(group.job_id).tasks] == ["AMS", "M1", "M2"]
    record = jobstore.get_job(store, group.job_id)
    assert (record.kind, record.priority, record.name) == (
        "group",
        30,
        "ReadRegisters group feeder-1",
    )
    bulk = lite.view(everyone.job_id)
    assert bulk.kind == "bulk" and {t.mrid for t in bulk.tasks} == {"M1", "M2", "AMS", "K1"}
    assert jobstore.get_job(store, everyone.job_id).priority == Priority.BULK
    ctl = jobstore.get_job(store, control.job_id)
    assert (ctl.kind, ctl.priority) == ("group", Priority.CONTROL)
    assert bus.pending_tasks() == 3 + 4 + 2
    scheduled = lite.submit(
        JobRequest(
            read(),
            devices=["M1"],
            kind=JobKind.SCHEDULED,
            schedule_id=7,
            parameters={"start": datetime(2026, 1, 1, tzinfo=UTC)},
            name="daily",
        )
    )
    record = jobstore.get_job(store, scheduled.job_id)
    assert (record.kind, record.schedule_id, record.name) == ("scheduled", 7, "daily")
    assert record.parameters == {"start": datetime(2026, 1, 1, tzinfo=UTC)}


def test_the_same_idempotency_key_returns_the_existing_job(headend, bus):
    first = headend.submit(JobRequest(read(), devices=["M1"], idempotency_key="msg-1"))
    again = headend.submit(JobRequest(read(), devices=["M1", "M2"], idempotency_key="msg-1"))
    assert (again.job_id, again.existing) == (first.job_id, True)
    assert _jobs(headend.store) == 1 and bus.pending_tasks() == 1


def _refused(headend, request, code):
    before = _jobs(headend.store)
    with pytest.raises(JobRefused) as caught:
        headend.submit(request)
    assert caught.value.code is code, caught.value
    assert _jobs(headend.store) == before  # nothing was created
    return caught.value


def test_unknown_meters_are_refused_at_once(lite):
    refused = _refused(lite, JobRequest(read(), devices=["M1", "GHOST"]), ErrorCode.UNKNOWN_DEVICE)
    assert refused.problems == [
        DeviceProblem("GHOST", ErrorCode.UNKNOWN_DEVICE, "no meter 'GHOST' is registered")
    ]
    assert "1 of 2 meters refused" in str(refused) and str(refused).startswith("[4.1]")


def test_a_meter_without_a_path_or_retired_is_refused(lite):
    refused = _refused(lite, JobRequest(read(), devices=["NOPATH"]), ErrorCode.DEVICE_UNREACHABLE)
    assert "no communication path" in refused.problems[0].reason
    update_device(lite.store, "M2", who="test", status="removed")
    refused = _refused(lite, JobRequest(read(), devices=["M2"]), ErrorCode.UNKNOWN_DEVICE)
    assert "removed" in refused.reason


def test_missing_or_undecryptable_keys_are_refused(headend, store, bus):
    other = HeadEnd(store, bus, keyring=Keyring(MasterKey(bytes(32))))
    refused = _refused(other, JobRequest(read(), devices=["K1"]), ErrorCode.INTERNAL)
    assert "not configured" in refused.reason
    with store.begin() as conn:
        conn.execute(update(meter_security).values(authentication_key=None))
    refused = _refused(headend, JobRequest(read(), devices=["K1"]), ErrorCode.BAD_VALUE)
    assert "keys missing" in refused.reason and "authentication_key" in refused.reason


def test_no_master_key_configured(store, bus, monkeypatch):
    register(store)
    monkeypatch.delenv("OPENHES_MASTER_KEY", raising=False)
    refused = _refused(HeadEnd(store, bus), JobRequest(read(), devices=["K1"]), ErrorCode.INTERNAL)
    assert "no master key" in refused.reason
    created = HeadEnd(store, bus).submit(JobRequest(read(), devices=["M1"]))  # no keys needed
    assert created.job_id


BAD_REQUESTS = [
    (JobRequest(read()), ErrorCode.MISSING_ELEMENT, "no devices"),
    (JobRequest(read(), devices=["M1"], everyone=True), ErrorCode.BAD_VALUE, "only one"),
    (JobRequest(read(), devices="M1"), ErrorCode.BAD_VALUE, "not a string"),
    (JobRequest(read(), devices=["M1", ""]), ErrorCode.BAD_VALUE, "not an mRID"),
    (JobRequest(read(), group="nowhere"), ErrorCode.UNKNOWN_DEVICE, "no device group"),
    (JobRequest(read(), group="empty"), ErrorCode.MISSING_ELEMENT, "has no devices"),
    (
        JobRequest(read(), devices=["M1"], deadline=datetime.now(UTC) - timedelta(seconds=1)),
        ErrorCode.BAD_DATETIME,
        "in the past",
    ),
    (
        JobRequest(read(), devices=["M1"], deadline=datetime(2099, 1, 1)),
        ErrorCode.BAD_DATETIME,
        "aware",
    ),
    (JobRequest(commands.Ping(device="M1"), devices=["M1"]), ErrorCode.UNSUPPORTED_VERB, "Ping"),
    (
        JobRequest(commands.Control(device="M1", action="demand_reset"), devices=["M1"]),
        ErrorCode.UNSUPPORTED_VERB,
        "demand_reset",
    ),
    (JobRequest("read", devices=["M1"]), ErrorCode.BAD_VALUE, "no command"),
    (JobRequest(read(), devices=["M1"], idempotency_key="k" * 201), ErrorCode.BAD_VALUE, "1..200"),
    (JobRequest(read(), devices=["M1"], kind="weekly"), ErrorCode.BAD_VALUE, "job kind"),
    (JobRequest(read(), devices=["M1"], priority="high"), ErrorCode.BAD_VALUE, "priority"),
    (
        JobRequest(read(), devices=["M1"], parameters={"x": object()}),
        ErrorCode.BAD_VALUE,
        "JSON",
    ),
]


def test_bad_requests_are_refused_clearly(lite):
    create_group(lite.store, "empty", who="test")
    for request, code, words in BAD_REQUESTS:
        refused = _refused(lite, request, code)
        assert words in refused.reason, (request, refused)


def test_partial_runs_the_good_meters_and_reports_the_rest(lite, bus):
    created = lite.submit(JobRequest(read(), devices=["GHOST", "M1", "NOPATH", "M2"], partial=True))
    assert [(p.mrid, p.code) for p in created.refused] == [
        ("GHOST", ErrorCode.UNKNOWN_DEVICE),
        ("NOPATH", ErrorCode.DEVICE_UNREACHABLE),
    ]
    view = lite.view(created.job_id)
    assert [t.mrid for t in view.tasks] == ["M1", "M2"]
    assert view.name == "ReadRegisters (2 meters)"  # the meters run, not the 4 asked for
    assert bus.pending_tasks() == 2
    one = lite.submit(JobRequest(read(), devices=["GHOST", "M1"], partial=True))
    assert lite.view(one.job_id).name == "ReadRegisters M1"
    refused = _refused(
        lite, JobRequest(read(), devices=["GHOST"], partial=True), ErrorCode.UNKNOWN_DEVICE
    )
    assert len(refused.problems) == 1


def test_a_bus_that_refuses_the_tasks_cancels_the_job(lite, bus):
    bus.close()
    with pytest.raises(JobRefused) as caught:
        lite.submit(JobRequest(read(), devices=["M1"]))
    assert caught.value.code is ErrorCode.INTERNAL
    (job,) = jobstore.list_jobs(lite.store)
    assert job.state == "cancelled"


def _work(store, bus, job_id, outcome):
    """What a worker does with each task of the job: load, attempt, finish, publish."""
    for task_id, *_ in jobstore.open_tasks(store, job_id):
        spec = jobstore.load_task(store, task_id, keyring=keyring())
        number = jobstore.begin_attempt(store, task_id, path=spec.endpoint.primary_path, worker="t")
        jobstore.end_attempt(store, task_id, number, outcome="ok", detail=None)
        for event in outcome(store, spec):
            bus.publish_event(event)


def _readings(store, spec):
    result = commands.Readings(spec.command, registers=(RegisterValue.exact(ENERGY, 7, 0, "Wh"),))
    return complete_task(store, spec, result)


def _timeout(store, spec):
    return fail_task(store, spec, state="failed", error_code="7.2", error_text="no answer")


def test_wait_view_and_listeners(headend, bus):
    asyncio.run(_wait_view_and_listeners(headend, bus))


async def _wait_view_and_listeners(headend, bus):
    seen = []
    headend.add_listener(seen.append)
    headend.add_listener(lambda event: 1 / 0)  # a failing listener does not stop the others
    async with headend:
        created = headend.submit(JobRequest(read(), group="feeder-1"))
        waiting = asyncio.create_task(headend.wait(created.job_id, timeout=10))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        _work(headend.store, bus, created.job_id, _readings)  # in-memory SQLite: one thread
        view = await waiting
        for _ in range(100):
            if any(isinstance(e, JobFinished) for e in seen):
                break
            await asyncio.sleep(0.01)
    assert view.state == "completed" and view.finished and view.finished_at is not None
    assert [(t.mrid, t.state, t.attempts) for t in view.tasks] == [
        ("AMS", "succeeded", 1),
        ("M1", "succeeded", 1),
        ("M2", "succeeded", 1),
    ]
    assert view.tasks[0].result["readings"] == 1
    assert {e.mrid for e in seen if isinstance(e, ReadingsStored)} == {"AMS", "M1", "M2"}
    assert [e.state for e in seen if isinstance(e, JobFinished)] == ["completed"]


def test_wait_times_out_and_knows_unknown_jobs(lite):
    asyncio.run(_wait_times_out_and_knows_unknown_jobs(lite))


async def _wait_times_out_and_knows_unknown_jobs(lite):
    created = lite.submit(JobRequest(read(), devices=["M1"]))
    with pytest.raises(TimeoutError):
        await lite.wait(created.job_id, timeout=0.12)
    with pytest.raises(jobstore.JobNotFound):
        await lite.wait("nope", timeout=1)
    with pytest.raises(jobstore.JobNotFound):
        lite.view("nope")


def test_rerun_of_the_error_group_and_cancel(lite, bus):
    asyncio.run(_rerun_of_the_error_group_and_cancel(lite, bus))


async def _rerun_of_the_error_group_and_cancel(lite, bus):
    created = lite.submit(JobRequest(read(), devices=["M1", "M2"]))
    _work(lite.store, bus, created.job_id, _timeout)
    view = await lite.wait(created.job_id, timeout=5)
    assert view.state == "completed_with_errors"
    assert {t.error_code for t in view.tasks} == {"7.2"}
    rerun = lite.rerun_errors(created.job_id, created_by="ops")
    record = jobstore.get_job(lite.store, rerun.job_id)
    assert (record.kind, record.parent_id, record.total) == ("rerun", created.job_id, 2)
    again = lite.rerun_errors(created.job_id, idempotency_key="r1")
    assert lite.rerun_errors(created.job_id, idempotency_key="r1").existing
    cancelled = lite.cancel(again.job_id)
    assert cancelled.state == "cancelled" and cancelled.counts["cancelled"] == 2
    assert lite.republish(rerun.job_id) == 2
    with pytest.raises(JobRefused, match="no job"):
        lite.rerun_errors("nope")
    ok = lite.submit(JobRequest(read(), devices=["M1"]))
    _work(lite.store, bus, ok.job_id, _readings)
    with pytest.raises(JobRefused, match="no failed"):
        lite.rerun_errors(ok.job_id)


def test_end_to_end_through_a_worker(headend, bus):
    asyncio.run(_end_to_end_through_a_worker(headend, bus))


async def _end_to_end_through_a_worker(headend, bus):
    from headend.worker import Worker

    driver = FakeDriver()
    worker = Worker(headend.store, bus, driver, concurrency=10, keyring=keyring())
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        async with headend:
            created = headend.submit(JobRequest(read(), group="feeder-1"))
            view = await headend.wait(created.job_id, timeout=20)
            control = headend.submit(
                JobRequest(commands.Control(device="M1", action="disconnect"), devices=["M1"])
            )
            done = await headend.wait(control.job_id, timeout=20)
    finally:
        stop.set()
        await asyncio.wait_for(running, 20)
    assert view.state == "completed", view
    assert all(t.result["readings"] == 1 for t in view.tasks)
    assert done.tasks[0].result == {
        "action": "disconnect",
        "state": "disconnected",
        "verified": True,
        "operated": True,
    }
    with headend.store.connect() as conn:
        assert conn.execute(select(func.count()).select_from(tasks)).scalar() == 4
