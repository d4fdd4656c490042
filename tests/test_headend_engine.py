"""The engine with an in-process fake DEVICE driver (drivers.fake) and once against the DLMS
simulator: priority and pre-emption, throttles, deadlines, retries, failover, error groups,
a scheduled job across a DST change, graceful stop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar
from zoneinfo import ZoneInfo

from drivers.base import ConnectionParams
from drivers.dlms import DlmsDriver, MemoryCounterStore
from drivers.errors import AuthenticationFailed, ConnectionLost, ObjectNotFound
from drivers.fake import FakeDriver
from headend import commands
from headend.engine import Engine, EngineConfig
from headend.jobs import (
    Endpoint,
    JobKind,
    JobState,
    Priority,
    ReadLoadProfile,
    ReadRegisters,
    TaskState,
    bulk_job,
    command_job,
    group_job,
    quick_job,
    scheduled_job,
)
from headend.retry import Backoff, RetryPolicy
from headend.scheduler import Schedule, ScheduledJob, Scheduler, Window, data_window
from headend.throttle import Limits, Throttles

T = TypeVar("T")
READ = ReadRegisters(("1.0.1.8.0.255",))


def run(body: Callable[[], Awaitable[T]], timeout: float = 20.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(body(), timeout)

    return asyncio.run(bounded())


def endpoint(i: int, path: str = "seg0", backup: str | None = None) -> Endpoint:
    primary = ConnectionParams(meter_id=f"m{i}", host=path)
    spare = ConnectionParams(meter_id=f"m{i}", host=backup) if backup else None
    return Endpoint(f"m{i}", primary, path, spare, backup)


def fast_retry(**kw: object) -> RetryPolicy:
    values: dict = {"max_attempts": 3, "base": 0.005, "factor": 2.0, "jitter": 0.5, "seed": 1}
    values.update(kw)
    return RetryPolicy(**values)


def test_on_demand_preempts_bulk() -> None:
    async def body() -> None:
        driver = FakeDriver(latency=0.002)
        config = EngineConfig(max_sessions=1, queue_share=10)
        async with Engine(driver, config=config) as engine:
            bulk = engine.submit(bulk_job([endpoint(i) for i in range(30)], READ))
            while not driver.order:
                await asyncio.sleep(0)
            quick = [engine.submit(quick_job(endpoint(100 + i), READ)) for i in range(3)]
            control = engine.submit(quick_job(endpoint(200), READ, priority=Priority.CONTROL))
            await engine.wait(bulk)
            for job in quick:
                assert job.state is JobState.COMPLETED
        assert driver.order[:5] == ["m0", "m200", "m100", "m101", "m102"]
        assert control.tasks[0].started_at is not None

    run(body)


def test_bulk_is_not_starved() -> None:
    async def body() -> None:
        driver = FakeDriver(latency=0.001)
        async with Engine(driver, config=EngineConfig(max_sessions=1, queue_share=5)) as engine:
            bulk = engine.submit(bulk_job([endpoint(i) for i in range(4)], READ))
            ods = [engine.submit(quick_job(endpoint(100 + i), READ)) for i in range(40)]
            await engine.wait(bulk)
            assert sum(job.finished for job in ods) < 40  # bulk finished while on-demand waited
        first = driver.order[:21]  # the first on-demand read started at submission
        assert [m for m in first if int(m[1:]) < 100] == ["m0", "m1", "m2", "m3"]

    run(body)


def test_throttles_never_exceeded() -> None:
    async def body() -> None:
        driver = FakeDriver(latency=0.004)
        limits = Limits(max_sessions=4, connections_per_s=400.0, burst=4)
        throttles = Throttles(limits, {"seg1": Limits(2, 200.0, 2)}, clock=time.monotonic)
        engine = Engine(
            driver,
            config=EngineConfig(max_sessions=100),
            throttles=throttles,
            clock=time.monotonic,
        )
        engine.start()
        job = bulk_job([endpoint(i, f"seg{i % 2}") for i in range(240)], READ)
        await engine.run(job)
        await engine.stop()
        assert job.state is JobState.COMPLETED
        assert driver.peak["seg0"] == 4 and driver.peak["seg1"] == 2
        for host, rate, size in (("seg0", 400.0, 4), ("seg1", 200.0, 2)):
            times = driver.connect_times[host]
            for i in range(0, len(times), 7):
                for j in range(i, min(len(times), i + 60)):
                    assert j - i + 1 <= size + rate * (times[j] - times[i]) + 1

    run(body)


def test_deadline_expiry() -> None:
    async def body() -> None:
        driver = FakeDriver(latency=0.05)
        async with Engine(driver, config=EngineConfig(max_sessions=1)) as engine:
            job = group_job(
                "tight", [endpoint(i) for i in range(3)], READ, deadline=time.time() + 0.02
            )
            await engine.run(job)
        states = [t.state for t in job.tasks]
        assert states == [TaskState.SUCCEEDED, TaskState.EXPIRED, TaskState.EXPIRED]
        assert job.progress()["expired"] == 2 and len(job.error_group) == 2
        assert driver.associations["m1"] == 0

    run(body)


def test_retry_backoff_schedule_and_failover() -> None:
    async def body() -> None:
        driver = FakeDriver()
        driver.fail_hosts["primary"] = ConnectionLost("no carrier")
        policy = fast_retry(max_attempts=4, failover_after=2)
        expected = Backoff(policy)
        async with Engine(driver, config=EngineConfig(retry=policy)) as engine:
            job = await engine.run(quick_job(endpoint(1, "primary", backup="backup"), READ))
        task = job.tasks[0]
        assert task.state is TaskState.SUCCEEDED and task.on_backup
        assert [(a.number, a.path, a.outcome) for a in task.history] == [
            (1, "primary", "connection_lost"),
            (2, "primary", "connection_lost"),
            (3, "backup", "ok"),
        ]
        assert [a.delay_after for a in task.history[:2]] == [expected.delay(1), expected.delay(2)]
        assert 0.0025 <= task.history[0].delay_after < 0.005
        assert 0.005 <= task.history[1].delay_after < 0.01

    run(body)


def test_timeouts_retried_and_non_retryable_fail_at_once() -> None:
    async def body() -> None:
        driver = FakeDriver(latency=0.2)
        config = EngineConfig(task_timeout=0.02, retry=fast_retry(max_attempts=2))
        async with Engine(driver, config=config) as engine:
            slow = await engine.run(quick_job(endpoint(1), READ))
        assert [a.outcome for a in slow.tasks[0].history] == ["timeout", "timeout"]
        assert slow.tasks[0].state is TaskState.FAILED

        driver = FakeDriver()
        driver.fail["m2"] = [AuthenticationFailed("bad key")]
        async with Engine(driver, config=EngineConfig(retry=fast_retry())) as engine:
            denied = await engine.run(quick_job(endpoint(2), READ))
        assert [a.outcome for a in denied.tasks[0].history] == ["authentication_failed"]
        assert denied.error_group == denied.tasks

    run(body)


def test_error_group_rerun() -> None:
    async def body() -> None:
        driver = FakeDriver()
        for meter in ("m1", "m3"):
            driver.fail[meter] = [ConnectionLost("down")] * 2
        driver.fail["m4"] = [ObjectNotFound("no such register")]
        async with Engine(driver, config=EngineConfig(retry=fast_retry(max_attempts=2))) as e:
            job = await e.run(group_job("feeder 7", [endpoint(i) for i in range(6)], READ))
            assert job.state is JobState.COMPLETED_WITH_ERRORS
            assert sorted(t.device_id for t in job.error_group) == ["m1", "m3", "m4"]
            assert job.progress()["succeeded"] == 3 and job.progress()["failed"] == 3
            rerun = await e.run(job.rerun_errors())
        assert rerun.parent is job and rerun.state is JobState.COMPLETED
        assert sorted(t.device_id for t in rerun.tasks) == ["m1", "m3", "m4"]
        assert driver.associations["m1"] == 3 and driver.associations["m0"] == 1

    run(body)


def test_scheduled_job_fires_at_local_times_across_dst() -> None:
    async def body() -> None:
        zone = ZoneInfo("Europe/Amsterdam")
        schedule = Schedule.create(
            "30 2 * * *", zone="Europe/Amsterdam", start=datetime(2026, 3, 27, tzinfo=UTC)
        )
        scheduler = Scheduler()
        scheduler.add(ScheduledJob("daily profile", schedule, None, Window.YESTERDAY))
        driver = FakeDriver()
        fired: list[tuple[str, int]] = []
        async with Engine(driver) as engine:
            now = datetime(2026, 3, 27, tzinfo=UTC)
            while now < datetime(2026, 3, 31, tzinfo=UTC):
                for entry, at in scheduler.due(now):
                    window = data_window(entry.window, at, zone)
                    job = scheduled_job(
                        entry.name,
                        [endpoint(1)],
                        ReadLoadProfile(),
                        fired_at=at,
                        window=window,
                    )
                    await engine.run(job)
                    rows = job.tasks[0].result
                    fired.append((at.astimezone(zone).strftime("%d %H:%M %Z"), len(rows)))
                now += timedelta(minutes=15)
        # 96 quarter hours a day, 92 on the 23-hour day (the end is inclusive: +1)
        assert fired == [
            ("27 02:30 CET", 97),
            ("28 02:30 CET", 97),
            ("29 03:00 CEST", 97),
            ("30 02:30 CEST", 93),
        ]

    run(body)


def test_graceful_stop_finishes_running_and_keeps_queued() -> None:
    async def body() -> None:
        driver = FakeDriver(latency=0.03)
        engine = Engine(driver, config=EngineConfig(max_sessions=2))
        engine.start()
        job = engine.submit(bulk_job([endpoint(i) for i in range(10)], READ))
        await asyncio.sleep(0.01)
        left = await engine.stop()
        assert left == 8
        assert job.progress()["succeeded"] == 2 and job.progress()["queued"] == 8

    run(body)


def test_against_the_dlms_simulator() -> None:
    from test_driver_dlms import simulated

    async def body() -> None:
        async with simulated(meters=3) as sim:
            endpoints = [Endpoint(f"sim{i}", sim.params(i), "loopback") for i in range(3)]
            driver = DlmsDriver(MemoryCounterStore())
            throttles = Throttles(Limits(max_sessions=2, connections_per_s=100.0))
            async with Engine(driver, throttles=throttles) as engine:
                job = await engine.run(
                    group_job("sim", endpoints, ReadRegisters(("1.0.1.8.0.255", "1.0.32.7.0.255")))
                )
        assert job.state is JobState.COMPLETED, [t.error for t in job.tasks]
        for task in job.tasks:
            energy, volts = task.result
            assert energy.unit == "Wh" and volts.unit == "V"

    run(body, timeout=30.0)


def test_commands_run_and_a_control_acts_once() -> None:
    async def body() -> None:
        driver = FakeDriver()
        cut = commands.Control(device="m1", action=commands.ControlAction.DISCONNECT)
        read = commands.ReadRegisters(device="m2", obis=("1.0.1.8.0.255",))
        async with Engine(driver) as engine:
            job = await engine.run(
                command_job(JobKind.GROUP, "mixed", [(endpoint(1), cut), (endpoint(2), read)])
            )
            again = await engine.run(command_job(JobKind.ON_DEMAND, "again", [(endpoint(1), cut)]))
        assert job.priority == Priority.CONTROL and job.state is JobState.COMPLETED
        outcome, readings = (t.result for t in job.tasks)
        assert outcome.verified and not outcome.already
        assert readings.registers[0].unit == "Wh"
        assert again.tasks[0].result.already and driver.controls["m1"] == 1
        assert job.tasks[0].idempotency_key == cut.idempotency_key

    run(body)
