"""Workers on memory:// with the in-process fake driver and with simulated DLMS meters: tasks
from the bus run on the engine and land in the store; attempts are recorded; a redelivered
finished task is skipped; a control delivered twice acts once; a worker stopped mid-job leaves
its tasks to the next; retries, failures, deadlines, unknown meters and cancelled tasks."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest
from worker_helpers import (
    PER_CHANNEL,
    REGISTER,
    attempt_rows,
    fleet_in_thread,
    job_done,
    readings_per_device,
    register_fake,
    register_fleet,
    submit,
    superseded_readings,
    task_rows,
    until,
    yesterday,
)

from cim.errors import ErrorCode
from drivers.base import ConnectionParams
from drivers.dlms import DlmsDriver
from drivers.errors import ConnectionLost, ObjectNotFound
from drivers.fake import FakeDriver
from headend import commands, jobstore
from headend.engine import EngineConfig
from headend.events import ControlDone, JobFinished, ReadingsStored
from headend.retry import RetryPolicy
from headend.taskbus import TaskBus, TaskMessage
from headend.worker import Worker
from mdm.database import Store, open_store
from mdm.devices import Device, create_devices

T = TypeVar("T")
FAST = EngineConfig(
    retry=RetryPolicy(max_attempts=3, base=0.005, factor=2.0, jitter=0.5, seed=1),
    task_timeout=10.0,
)


def run(body: Callable[[], Awaitable[T]], timeout: float = 20.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(body(), timeout)

    return asyncio.run(bounded())


@pytest.fixture
def store() -> Iterator[Store]:
    db = open_store("sqlite://")
    try:
        yield db
    finally:
        db.close()


@pytest.fixture
def bus() -> Iterator[TaskBus]:
    b = TaskBus.from_url("memory://", namespace=f"worker-{uuid.uuid4().hex[:10]}")
    try:
        yield b
    finally:
        b.delete()
        b.close()


def read(mrid: str = "m0") -> commands.ReadRegisters:
    return commands.ReadRegisters(device=mrid, obis=(REGISTER,))


def disconnect(mrid: str = "m0") -> commands.Control:
    return commands.Control(device=mrid, action=commands.ControlAction.DISCONNECT)


@asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[Worker]:
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        await task


def test_reads_land_in_the_store_with_their_attempts(store: Store, bus: TaskBus) -> None:
    mrids = register_fake(store, 20)
    driver = FakeDriver()
    seen: list[object] = []

    async def body() -> None:
        listener = bus.event_consumer(seen.append)
        job_id, _ = submit(store, bus, read(), mrids)
        worker = Worker(store, bus, driver, concurrency=5, config=FAST, worker_name="w1")
        async with running(worker):
            await until(lambda: job_done(store, job_id))
            await until(lambda: any(isinstance(e, JobFinished) for e in seen))
        listener.stop()
        assert worker.completed == 20 and worker.failed == 0
        rows = task_rows(store, job_id)
        assert {r.state for r in rows} == {"succeeded"}
        assert all(r.attempts == 1 for r in rows)
        attempts = attempt_rows(store, rows[0].id)
        assert [(a.number, a.outcome, a.worker) for a in attempts] == [(1, "ok", "w1")]
        assert attempts[0].path == "wrapper://seg0:4059" and attempts[0].finished_at
        assert readings_per_device(store) == dict.fromkeys(mrids, 1)
        assert jobstore.job_state(store, job_id) == "completed"
        stored = [e for e in seen if isinstance(e, ReadingsStored)]
        assert sorted(e.mrid for e in stored) == sorted(mrids)
        finished = [e for e in seen if isinstance(e, JobFinished)]
        assert len(finished) == 1 and finished[0].counts["succeeded"] == 20
        assert bus.pending_tasks() == 0

    run(body)


def test_a_redelivered_finished_task_is_acknowledged_not_run(store: Store, bus: TaskBus) -> None:
    mrids = register_fake(store, 3)
    driver = FakeDriver()

    async def body() -> None:
        job_id, messages = submit(store, bus, read(), mrids)
        worker = Worker(store, bus, driver, concurrency=2, config=FAST)
        async with running(worker):
            await until(lambda: job_done(store, job_id))
            bus.publish_tasks(messages)  # as the broker does when the ack was lost
            bus.publish_tasks([TaskMessage(10**9, job_id, 90, "no-such-task")])
            await until(lambda: worker.skipped == 3)
            await until(lambda: bus.pending_tasks() == 0)
        assert sum(driver.associations.values()) == 3
        assert all(len(attempt_rows(store, m.task_id)) == 1 for m in messages)

    run(body)


def test_a_control_delivered_twice_operates_once(store: Store, bus: TaskBus) -> None:
    register_fake(store, 1)
    driver = FakeDriver()
    seen: list[object] = []

    async def body() -> None:
        # A first worker opened the switch and died before committing: the meter is open,
        # the task is still "running" with one attempt begun.
        job_id, messages = submit(store, None, disconnect(), ["m0"], priority=0, kind="on_demand")
        task_id = messages[0].task_id
        jobstore.begin_attempt(store, task_id, path="wrapper://seg0:4059", worker="dead:1")
        async with await driver.associate(ConnectionParams(meter_id="m0", host="seg0")) as s:
            await s.disconnect()
        assert driver.controls["m0"] == 1
        listener = bus.event_consumer(seen.append)
        bus.publish_tasks(messages)
        async with running(Worker(store, bus, driver, concurrency=2, config=FAST)):
            await until(lambda: job_done(store, job_id))
            await until(lambda: any(isinstance(e, ControlDone) for e in seen))
        listener.stop()
        assert driver.controls["m0"] == 1  # the switch state was read first: nothing sent
        (row,) = task_rows(store, job_id)
        assert row.state == "succeeded" and row.attempts == 2
        result = jobstore.task_records(store, job_id).__next__().result
        assert result == {
            "action": "disconnect",
            "state": "disconnected",
            "verified": True,
            "operated": False,
        }
        (done,) = [e for e in seen if isinstance(e, ControlDone)]
        assert done.verified and done.error_code is None

    run(body)


def test_urgent_work_overtakes_bulk(store: Store, bus: TaskBus) -> None:
    mrids = register_fake(store, 12)
    driver = FakeDriver(latency=0.002)

    async def body() -> None:
        bulk, _ = submit(store, bus, read(), mrids[:10], priority=90)
        control, _ = submit(store, bus, disconnect("m10"), ["m10"], priority=0, kind="on_demand")
        on_demand, _ = submit(store, bus, read("m11"), ["m11"], priority=10, kind="on_demand")
        worker = Worker(store, bus, driver, concurrency=1, prefetch=1, config=FAST)
        async with running(worker):
            await until(lambda: job_done(store, bulk))
        assert driver.order[:2] == ["m10", "m11"]
        assert job_done(store, control) and job_done(store, on_demand)

    run(body)


def test_retry_then_success_records_each_attempt(store: Store, bus: TaskBus) -> None:
    register_fake(store, 1)
    driver = FakeDriver()
    driver.fail["m0"] = [ConnectionLost("no carrier"), None]

    async def body() -> None:
        job_id, _ = submit(store, bus, read(), ["m0"])
        async with running(Worker(store, bus, driver, concurrency=1, config=FAST)):
            await until(lambda: job_done(store, job_id))
        (row,) = task_rows(store, job_id)
        assert row.state == "succeeded" and row.attempts == 2
        first, second = attempt_rows(store, row.id)
        assert (first.outcome, second.outcome) == ("connection_lost", "ok")
        assert first.detail == "connection_lost: no carrier"

    run(body)


def test_failures_are_recorded_with_their_code(store: Store, bus: TaskBus) -> None:
    register_fake(store, 2)
    driver = FakeDriver()
    driver.fail["m0"] = [ObjectNotFound("no such register")]
    driver.fail["m1"] = [ConnectionLost("a"), ConnectionLost("b"), ConnectionLost("c")]
    seen: list[object] = []

    async def body() -> None:
        listener = bus.event_consumer(seen.append)
        job_id, _ = submit(store, bus, read(), ["m0", "m1"])
        worker = Worker(store, bus, driver, concurrency=2, config=FAST)
        async with running(worker):
            await until(lambda: job_done(store, job_id))
            await until(lambda: any(isinstance(e, JobFinished) for e in seen))
        listener.stop()
        first, second = task_rows(store, job_id)
        assert (first.state, first.attempts) == ("failed", 1)
        assert first.error_code == ErrorCode.DEVICE_OBJECT_NOT_FOUND.code
        assert first.error_text == "object_not_found: no such register"
        assert (second.state, second.attempts) == ("failed", 3)
        assert second.error_code == ErrorCode.DEVICE_UNREACHABLE.code
        outcomes = [a.outcome for a in attempt_rows(store, second.id)]
        assert outcomes == ["connection_lost"] * 3
        assert jobstore.job_state(store, job_id) == "completed_with_errors"
        assert worker.failed == 2

    run(body)


def test_expired_unknown_and_cancelled_tasks(store: Store, bus: TaskBus) -> None:
    register_fake(store, 3)
    create_devices(store, [Device("bare", protocol="dlms")], who="test")  # no path
    driver = FakeDriver()

    async def body() -> None:
        past = datetime.now(UTC) - timedelta(seconds=1)
        expired, _ = submit(store, bus, read(), ["m0"], deadline=past)
        bare, _ = submit(store, bus, read("bare"), ["bare"])
        cancelled, _ = submit(store, bus, read(), ["m1", "m2"])
        jobstore.cancel_job(store, cancelled)
        worker = Worker(store, bus, driver, concurrency=2, config=FAST)
        async with running(worker):
            await until(lambda: job_done(store, expired) and job_done(store, bare))
            await until(lambda: bus.pending_tasks() == 0 and worker.skipped == 2)
        (row,) = task_rows(store, expired)
        assert (row.state, row.error_code) == ("expired", ErrorCode.DEADLINE_EXPIRED.code)
        (row,) = task_rows(store, bare)
        assert (row.state, row.error_code) == ("failed", ErrorCode.UNKNOWN_DEVICE.code)
        assert jobstore.job_state(store, cancelled) == "cancelled"
        assert sum(driver.associations.values()) == 0

    run(body)


def test_a_stopped_worker_leaves_its_tasks_to_the_next(store: Store, bus: TaskBus) -> None:
    mrids = register_fake(store, 12)
    slow = FakeDriver(latency=0.2)

    async def body() -> None:
        job_id, _ = submit(store, bus, read(), mrids)
        first = Worker(store, bus, slow, concurrency=3, config=FAST, grace=0.0, worker_name="a")
        stop = asyncio.Event()
        running_first = asyncio.create_task(first.run(stop))
        await until(lambda: slow.open["seg0"] == 3)  # three sessions in the middle of a read
        stop.set()
        await running_first  # stopped without finishing: nothing acknowledged, nothing stored
        assert first.completed == 0 and readings_per_device(store) == {}
        assert bus.pending_tasks() == 12
        second = Worker(store, bus, FakeDriver(), concurrency=4, config=FAST, worker_name="b")
        async with running(second):
            await until(lambda: job_done(store, job_id))
        rows = task_rows(store, job_id)
        assert {r.state for r in rows} == {"succeeded"}
        assert readings_per_device(store) == dict.fromkeys(mrids, 1)
        interrupted = [r for r in rows if r.attempts == 2]
        assert len(interrupted) == 3
        outcomes = [(a.worker, a.outcome) for a in attempt_rows(store, interrupted[0].id)]
        assert outcomes == [("a", "interrupted"), ("b", "ok")]

    run(body)


def test_bad_worker_configuration(store: Store, bus: TaskBus) -> None:
    with pytest.raises(ValueError):
        Worker(store, bus, FakeDriver(), concurrency=0)


def test_simulated_meters_full_read_and_controls(store: Store, bus: TaskBus) -> None:
    """Three simulated DLMS meters: yesterday's 96 values and the registers into the store,
    and a disconnect sent in two jobs operating each switch once."""
    with fleet_in_thread(3) as fleet:
        mrids = register_fleet(store, fleet)
        start, end = yesterday()
        profile = commands.ReadIntervalData(device=mrids[0], start=start, end=end)
        registers = commands.ReadRegisters(device=mrids[0], obis=("1.0.1.8.0.255", "1.0.2.8.0.255"))

        async def body() -> None:
            worker = Worker(store, bus, DlmsDriver(), concurrency=4, config=FAST)
            async with running(worker):
                jobs = [
                    submit(store, bus, profile, mrids)[0],
                    submit(store, bus, registers, mrids)[0],
                    submit(store, bus, disconnect(mrids[0]), mrids[:2], priority=0)[0],
                ]
                await until(lambda: all(job_done(store, j) for j in jobs), timeout=15)
                again = submit(store, bus, disconnect(mrids[0]), mrids[:2], priority=0)[0]
                await until(lambda: job_done(store, again), timeout=15)
            for job_id in [*jobs, again]:
                assert jobstore.job_state(store, job_id) == "completed", task_rows(store, job_id)
            stored = readings_per_device(store)
            # 96 deltas and 97 totals of each cumulative profile channel, plus 2 registers.
            channels = (stored[mrids[0]] - 2) / PER_CHANNEL
            assert channels == int(channels) and channels >= 1
            assert stored == dict.fromkeys(mrids, stored[mrids[0]])
            assert superseded_readings(store) == 0
            operations = [fleet.meter(i).disconnector.operations for i in range(3)]
            assert operations == [1, 1, 0]
            results = [r.result for r in jobstore.task_records(store, again)]
            assert [r["operated"] for r in results] == [False, False]

        run(body, timeout=30)


def test_transactions_aborted_by_a_deadlock_are_tried_again() -> None:
    import psycopg.errors
    from sqlalchemy.exc import OperationalError

    from headend.worker import _db

    calls: list[int] = []

    def flaky(value: int) -> int:
        calls.append(value)
        if len(calls) < 3:
            raise OperationalError("SELECT", {}, psycopg.errors.DeadlockDetected("deadlock"))
        return value * 2

    assert _db(flaky, 21) == 42 and len(calls) == 3

    def broken() -> None:
        raise OperationalError("SELECT", {}, psycopg.errors.UndefinedTable("no table"))

    with pytest.raises(OperationalError):
        _db(broken)


def test_the_registry_cache_expires(store: Store) -> None:
    from worker_helpers import KEYRING

    from headend.worker import CachingRegistry

    register_fake(store, 1)
    registry = CachingRegistry(store, KEYRING, ttl=60.0)
    assert registry.get("m0") is registry.get("m0")
    assert CachingRegistry(store, KEYRING, ttl=0).get("m0") == registry.get("m0")
    registry.ttl = 0
    assert registry.get("m0") is not registry.get("m0")


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["worker"], {}),
        (["worker", "--broker", "memory://"], {}),
        (["worker", "--broker", "redis://localhost"], {}),
        (["worker", "--broker", "amqp://127.0.0.1:1//", "--concurrency", "0"], {}),
        (["worker", "--broker", "amqp://127.0.0.1:1//"], {"OPENHES_WORKER_CONCURRENCY": "x"}),
        (["worker", "--broker", "amqp://127.0.0.1:1//", "--database", "/nonexistent/d/x.db"], {}),
        (["worker", "--config", "/nonexistent/openhes.toml"], {}),
        (["worker"], {"OPENHES_BROKER_URL": "amqp://127.0.0.1:1//", "OPENHES_SOAP_PORT": "x"}),
        (["worker"], {"OPENHES_BROKER_URL": "memory://"}),
    ],
)
def test_worker_command_refuses_bad_input(
    argv: list[str], env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from adapters.cli import main

    for name in (
        "OPENHES_BROKER_URL",
        "OPENHES_WORKER_CONCURRENCY",
        "OPENHES_DATABASE_URL",
        "OPENHES_CONFIG",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.strip() and "Traceback" not in err
