"""A meter's full read in one session (FullRead), the bytes of every attempt and the debug log
of frames, switched on per meter or per job, on simulated DLMS meters; the batched task
loading and the worker's registry prefetch; one task update per finishing transaction."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest
from sqlalchemy import event
from worker_helpers import (
    KEYRING,
    PER_CHANNEL,
    attempt_rows,
    device_ids,
    fleet_in_thread,
    job_done,
    readings_per_device,
    register_fake,
    register_fleet,
    submit,
    task_rows,
    until,
    yesterday,
)

from drivers.dlms import DlmsDriver
from drivers.fake import FakeDriver
from headend import commands, commlog, jobstore, results
from headend.command_json import command_from_json, command_to_json
from headend.engine import EngineConfig
from headend.jobs import CommandOperation
from headend.retry import RetryPolicy
from headend.taskbus import TaskBus
from headend.worker import CachingRegistry, Worker, _DebugSwitches, _Frames
from mdm.database import Store, open_store

T = TypeVar("T")
FAST = EngineConfig(retry=RetryPolicy(max_attempts=2, base=0.005, seed=1), task_timeout=10.0)
REGISTERS = ("1.0.1.8.0.255", "1.0.2.8.0.255")


def run(body: Callable[[], Awaitable[T]], timeout: float = 30.0) -> T:
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
    b = TaskBus.from_url("memory://", namespace=f"comm-{uuid.uuid4().hex[:10]}")
    try:
        yield b
    finally:
        b.delete()
        b.close()


@asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[Worker]:
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        await task


def full_read(mrid: str) -> commands.FullRead:
    start, end = yesterday()
    return commands.FullRead(device=mrid, start=start, end=end, obis=REGISTERS)


# --- the command ------------------------------------------------------------------------------


def test_full_read_command_checks_and_round_trips() -> None:
    command = full_read("m1")
    assert command_from_json(command_to_json(command)) == command
    assert CommandOperation(command).name == "FullRead"
    start, end = yesterday()
    with pytest.raises(commands.CommandError):
        commands.FullRead(device="m1", start=end, end=start, obis=REGISTERS)
    with pytest.raises(commands.CommandError):
        commands.FullRead(device="m1", start=start, end=end, obis=())
    with pytest.raises(commands.CommandError):
        commands.FullRead(device="m1", start=start.replace(tzinfo=None), end=end, obis=REGISTERS)
    with pytest.raises(commands.CommandError):
        commands.FullRead(device="m1", start=start, end=end, obis=("",))


# --- simulated meters -------------------------------------------------------------------------


def test_full_read_one_session_bytes_and_debug_log_per_meter(store: Store, bus: TaskBus) -> None:
    """Three simulated meters read with one FullRead task each: profile and registers land in
    the store from one attempt; every attempt has its bytes; frames are recorded for the
    meter whose debug logging is on, and only for it."""
    with fleet_in_thread(3) as fleet:
        mrids = register_fleet(store, fleet)
        commlog.enable(store, meter=mrids[1], who="test", max_frames=500)

        async def body() -> str:
            worker = Worker(store, bus, DlmsDriver(), concurrency=3, config=FAST)
            async with running(worker):
                job_id = submit(store, bus, full_read(mrids[0]), mrids)[0]
                await until(lambda: job_done(store, job_id), timeout=20)
            return job_id

        job_id = run(body)
    assert jobstore.job_state(store, job_id) == "completed", task_rows(store, job_id)
    stored = readings_per_device(store)
    channels = (stored[mrids[0]] - len(REGISTERS)) / PER_CHANNEL  # deltas and totals
    assert channels == int(channels) and channels >= 1
    assert stored == dict.fromkeys(mrids, stored[mrids[0]])
    tasks = task_rows(store, job_id)
    for task in tasks:
        (attempt,) = attempt_rows(store, task.id)
        assert attempt.outcome == "ok" and attempt.finished_at is not None
        assert attempt.bytes_sent > 0 and attempt.bytes_received > attempt.bytes_sent
    result = jobstore.task_records(store, job_id)
    assert {r.result["registers"] for r in result} == {len(REGISTERS)}
    logged = commlog.frames(store, mrid=mrids[1])
    assert logged and {f.direction for f in logged} == {"tx", "rx"}
    task = next(t for t in tasks if t.mrid == mrids[1])
    assert {(f.job_id, f.task_id, f.attempt) for f in logged} == {(job_id, task.id, 1)}
    assert [f.seq for f in logged] == list(range(1, len(logged) + 1))
    (attempt,) = attempt_rows(store, task.id)
    assert sum(f.length for f in logged if f.direction == "tx") == attempt.bytes_sent
    assert sum(f.length for f in logged if f.direction == "rx") == attempt.bytes_received
    assert commlog.frames(store, mrid=mrids[0]) == []
    assert commlog.frames(store, mrid=mrids[2]) == []


def test_debug_log_for_a_job_is_bounded_per_attempt(store: Store, bus: TaskBus) -> None:
    with fleet_in_thread(2) as fleet:
        mrids = register_fleet(store, fleet)
        command = commands.ReadRegisters(device=mrids[0], obis=REGISTERS)
        job = jobstore.create_job(
            store,
            kind="group",
            name="debugged",
            command=command,
            devices=device_ids(store, mrids),
            priority=30,
        )
        commlog.enable(store, job=job.job_id, who="test", max_frames=3)
        other = jobstore.create_job(
            store,
            kind="group",
            name="not debugged",
            command=command,
            devices=device_ids(store, mrids),
            priority=30,
        )

        async def body() -> None:
            from headend.taskbus import TaskMessage

            worker = Worker(store, bus, DlmsDriver(), concurrency=2, config=FAST)
            async with running(worker):
                for made in (job, other):
                    bus.publish_tasks(
                        [TaskMessage(t, made.job_id, made.priority, k) for t, k in made.tasks]
                    )
                await until(lambda: job_done(store, job.job_id) and job_done(store, other.job_id))

        run(body)
    logged = commlog.frames(store, job_id=job.job_id)
    assert len(logged) == 6  # 3 frames per attempt, 2 meters
    assert {f.mrid for f in logged} == set(mrids)
    assert commlog.frames(store, job_id=other.job_id) == []
    for task in task_rows(store, other.job_id):
        (attempt,) = attempt_rows(store, task.id)
        assert attempt.bytes_sent > 0 and attempt.bytes_received > 0


def test_a_failed_attempt_keeps_its_bytes_and_frames(store: Store, bus: TaskBus) -> None:
    """A register the meter does not have: the attempt fails after talking to the meter, and
    the bytes and frames of that conversation are recorded with the failure."""
    with fleet_in_thread(1) as fleet:
        (mrid,) = register_fleet(store, fleet)
        commlog.enable(store, meter=mrid, who="test")
        command = commands.ReadRegisters(device=mrid, obis=("1.0.99.99.0.255",))

        async def body() -> str:
            worker = Worker(store, bus, DlmsDriver(), concurrency=1, config=FAST)
            async with running(worker):
                job_id = submit(store, bus, command, [mrid])[0]
                await until(lambda: job_done(store, job_id))
            return job_id

        job_id = run(body)
    (task,) = task_rows(store, job_id)
    assert task.state == "failed"
    attempts = attempt_rows(store, task.id)
    assert attempts and all(a.outcome not in (None, "ok") for a in attempts)
    assert all(a.bytes_sent > 0 and a.bytes_received > 0 for a in attempts)
    logged = commlog.frames(store, task_id=task.id)
    assert {f.attempt for f in logged} == {a.number for a in attempts}


# --- pieces -----------------------------------------------------------------------------------


def test_frames_observer_counts_and_records() -> None:
    recorder = commlog.FrameRecorder("m1", max_frames=1)
    frames = _Frames(recorder)
    frames("tx", b"\x01\x02")
    frames("rx", b"\x03\x04\x05")
    assert (frames.sent, frames.received) == (2, 3)
    assert len(recorder.frames) == 1 and recorder.dropped == 1
    counting = _Frames()
    counting("tx", b"abc")
    assert (counting.sent, counting.received, counting.recorder) == (3, 0, None)


def test_debug_switches_are_read_once_per_refresh(store: Store) -> None:
    register_fake(store, 3)
    switches = _DebugSwitches(store, refresh=3600)
    assert switches.limit("m1", "j1") is None
    commlog.enable(store, meter="m1", who="test", max_frames=7)
    assert switches.limit("m1", "j1") is None  # not read again yet
    switches.refresh = 0
    assert switches.limit("m1", "j1") == 7
    commlog.enable(store, job="j1", who="test", max_frames=9)
    assert switches.limit("m1", "j1") == 9
    assert switches.limit("m2", "j1") == 9
    assert switches.limit("m2", "j2") is None
    commlog.enable(
        store,
        meter="m2",
        who="test",
        duration=timedelta(seconds=1),
        now=datetime.now(UTC) - timedelta(seconds=5),
    )
    assert switches.limit("m2", "j2") is None  # expired


def test_registry_prefetch_and_batched_loading(store: Store) -> None:
    mrids = register_fake(store, 5)
    _, messages = submit(store, None, commands.Ping(device="m0"), mrids)
    registry = CachingRegistry(store, KEYRING, ttl=60.0)
    statements: list[str] = []

    def count(*args: object) -> None:
        if str(args[2]).startswith("SELECT"):
            statements.append(str(args[2]))

    event.listen(store.engine, "before_cursor_execute", count)
    try:
        specs = jobstore.load_tasks(
            store, [m.task_id for m in messages] + [10**9], registry=registry
        )
    finally:
        event.remove(store.engine, "before_cursor_execute", count)
    assert sorted(spec.mrid for spec in specs.values()) == mrids
    assert len(statements) <= 5  # tasks, devices, paths, security, groups: not per task
    assert all(spec.endpoint is not None and spec.job_state == "queued" for spec in specs.values())
    assert registry.prefetch(mrids) == 0  # all cached
    assert registry.prefetch(["nobody"]) == 0
    registry.ttl = 0
    assert registry.prefetch(mrids) == 0  # no caching: nothing kept
    single = jobstore.load_task(store, messages[0].task_id)
    assert single is not None and single == specs[messages[0].task_id]


def test_begin_with_what_the_worker_knows_and_finish_in_one_transaction(store: Store) -> None:
    (mrid,) = register_fake(store, 1)
    job_id, (message,) = submit(store, None, commands.Ping(device=mrid), [mrid])
    spec = jobstore.load_task(store, message.task_id)
    assert spec is not None
    number = jobstore.begin_attempt(
        store, spec.task_id, path="p", worker="w", device_type="Acme X1", job_queued=False
    )
    assert jobstore.job_state(store, job_id) == "queued"  # told it was running already
    end = jobstore.AttemptEnd(number, "timeout", "no answer", 10, 20)
    assert jobstore.mark_retry(
        store,
        spec.task_id,
        error_code="7.2",
        error_text="x",
        path="p",
        on_backup=False,
        attempt=end,
    )
    number = jobstore.begin_attempt(store, spec.task_id, path="p", worker="w")
    assert jobstore.job_state(store, job_id) == "running"
    end = jobstore.AttemptEnd(number, "ok", None, 5, 7)
    events = results.fail_task(
        store, spec, state="failed", error_code="6.1", error_text="broken", attempt=end
    )
    assert [type(e).__name__ for e in events] == ["JobFinished"]
    first, second = jobstore.attempts_of(store, spec.task_id)
    assert (first.device_type, first.outcome, first.bytes_sent, first.bytes_received) == (
        "Acme X1",
        "timeout",
        10,
        20,
    )
    assert (second.outcome, second.bytes_sent, second.bytes_received) == ("ok", 5, 7)
    assert jobstore.counts(store, job_id)["failed"] == 1


def test_a_task_row_is_updated_once_when_finished(store: Store) -> None:
    """State and result in one UPDATE of the task row (a second one would make PostgreSQL
    check the foreign key to the job again: the key-share lock the finishers deadlocked on)."""
    (mrid,) = register_fake(store, 1)
    command = commands.ReadRegisters(device=mrid, obis=("1.0.1.8.0.255",))
    job_id, (message,) = submit(store, None, command, [mrid])
    spec = jobstore.load_task(store, message.task_id)
    assert spec is not None
    number = jobstore.begin_attempt(store, spec.task_id, path="p", worker="w")
    from drivers.base import RegisterValue

    value = RegisterValue.exact("1.0.1.8.0.255", 5, 0, "Wh")
    updates: list[str] = []

    def watch(*args: object) -> None:
        sql = str(args[2])
        if sql.startswith("UPDATE tasks"):
            updates.append(sql)

    event.listen(store.engine, "before_cursor_execute", watch)
    try:
        events = results.complete_task(
            store,
            spec,
            commands.Readings(command, registers=(value,)),
            attempt=jobstore.AttemptEnd(number, "ok", None, 3, 4),
        )
    finally:
        event.remove(store.engine, "before_cursor_execute", watch)
    assert len(updates) == 1
    assert [type(e).__name__ for e in events] == ["ReadingsStored", "JobFinished"]
    (task,) = jobstore.task_records(store, job_id)
    assert task.state == "succeeded" and task.result["readings"] == 1
    (attempt,) = jobstore.attempts_of(store, spec.task_id)
    assert (attempt.outcome, attempt.bytes_sent, attempt.bytes_received) == ("ok", 3, 4)
    assert store.reading_type_ids  # the committed ReadingType ids are remembered


def test_fake_driver_reads_record_zero_bytes(store: Store, bus: TaskBus) -> None:
    """A driver that sees no frames (the in-process fake) reports no bytes."""
    mrids = register_fake(store, 2)

    async def body() -> str:
        worker = Worker(store, bus, FakeDriver(), concurrency=2, config=FAST)
        async with running(worker):
            job_id = submit(store, bus, full_read(mrids[0]), mrids)[0]
            await until(lambda: job_done(store, job_id))
        return job_id

    job_id = run(body)
    for task in task_rows(store, job_id):
        (attempt,) = attempt_rows(store, task.id)
        assert (attempt.bytes_sent, attempt.bytes_received) == (0, 0)
