"""Dispatch throughput of the head-end engine (``dispatch_per_s``) and the queue wait of
on-demand reads while a bulk job runs (``on_demand_wait_p99_ms``).

    python bench/engine.py            # 3 runs, a bulk job over 100,000 meters
    python bench/engine.py --quick    # 3 runs over 20,000 meters

One process, one event loop. The driver is drivers.fake.FakeDriver with zero latency (a
device that answers at once), so the figure is the engine's own cost per task: queue,
throttle, deadline check, an asyncio task per attempt, associate/read/release, outcome
bookkeeping. The meters sit on 200 network segments (50 sessions and 10,000 connections/s
each); the engine holds at most 2,000 sessions. While the bulk job runs, 100 on-demand reads
(one meter each) arrive spread over its expected duration; their queue wait is the time from
submission to the start of their first attempt. Figures are medians of the runs; the last
line is JSON. Each run is done twice: with the engine's default urgent reserve (100 of the
2,000 slots kept for on-demand work, so an on-demand read usually starts at submission) and
with none (every slot busy with bulk work: the on-demand read waits in the queue for the next
free slot, ahead of the bulk tasks), reported as ``on_demand_wait_p99_ms_no_reserve``.

``sim_full_reads_per_s``: the full daily read of simulated DLMS meters (10,000; ``--quick``
1,000) end to end: yesterday's 96 quarter-hours of the load profile (every channel) and 4
registers, as one FullRead task per meter (one session; ``--two-tasks``: a ReadIntervalData
job and a ReadRegisters job, two sessions per meter), published on the task bus (memory://
by default or ``--broker``), run by one worker
(headend.worker.Worker, ``--concurrency`` sessions, the DLMS driver) and stored in the
database (a fresh SQLite file by default, or ``--database``) with their task and attempt
records. The simulator serves every meter on one port in a process of its own: one
communication path where the field has one per meter, so the worker's throttle for that
path is opened up (``--concurrency`` sessions, 10,000 connections/s; the default limits of
a path, 100 sessions and 50 new connections/s, model one gateway and would cap the figure
at 50 sessions/s). The figure is meters whose full read is stored, per second of wall time,
for this one worker process; its CPU and the simulator's are given per full read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from drivers.base import ConnectionParams
from drivers.fake import FakeDriver
from headend.engine import Engine, EngineConfig
from headend.jobs import Endpoint, JobState, ReadRegisters, bulk_job, quick_job
from headend.throttle import Limits, Throttles

TARGET_DISPATCH_PER_S = 5000
TARGET_ON_DEMAND_P99_MS = 100.0
TARGET_SIM_FULL_READS_PER_S = 80.0
SIM_REGISTERS = ("1.0.1.8.0.255", "1.0.2.8.0.255", "1.0.32.7.0.255", "1.0.31.7.0.255")
SEGMENTS = 200
ON_DEMAND = 100
READ = ReadRegisters(("1.0.1.8.0.255",))


def population(n: int) -> list[Endpoint]:
    out = []
    for i in range(n):
        segment = f"seg{i % SEGMENTS}"
        out.append(Endpoint(f"m{i}", ConnectionParams(meter_id=f"m{i}", host=segment), segment))
    return out


async def one_run(endpoints: list[Endpoint], reserve: int) -> dict[str, float]:
    driver = FakeDriver()
    throttles = Throttles(Limits(max_sessions=50, connections_per_s=10_000.0, burst=1000))
    config = EngineConfig(max_sessions=2000, urgent_reserve=reserve)
    engine = Engine(driver, config=config, throttles=throttles)
    engine.start()
    started = time.perf_counter()
    bulk = engine.submit(bulk_job(endpoints, READ))

    async def on_demand() -> list[float]:
        jobs = []
        total = len(endpoints)
        for i in range(ON_DEMAND):
            while bulk.done < total * (i + 1) // (ON_DEMAND + 1):
                await asyncio.sleep(0.0005)
            jobs.append(engine.submit(quick_job(endpoints[(i * 7919) % len(endpoints)], READ)))
        for job in jobs:
            await engine.wait(job)
        return [(j.tasks[0].started_at - j.tasks[0].submitted_at) * 1000 for j in jobs]

    async def bulk_done() -> float:
        await engine.wait(bulk)
        return time.perf_counter() - started

    waits, elapsed = await asyncio.gather(on_demand(), bulk_done())
    await engine.stop()
    if bulk.state is not JobState.COMPLETED:
        raise SystemExit(f"bulk job did not complete: {bulk.progress()}")
    waits.sort()
    return {
        "dispatch_per_s": len(endpoints) / elapsed,
        "on_demand_wait_p99_ms": waits[int(0.99 * len(waits)) - 1 if len(waits) >= 100 else -1],
        "on_demand_wait_median_ms": statistics.median(waits),
        "seconds": elapsed,
    }


def sim_full_reads(
    meters: int, concurrency: int, database: str | None, broker: str, two_tasks: bool = False
) -> dict[str, float]:
    """``sim_full_reads_per_s`` (see the module docstring)."""
    import tempfile
    from datetime import UTC, datetime, timedelta

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from dlms_read import SimProcess, _book, _raise_fd_limit

    from headend import commands, jobstore
    from headend.device_import import check_rows
    from headend.keys import Keyring, MasterKey
    from headend.registry import Registry
    from headend.taskbus import TaskMessage
    from mdm.database import open_store

    _raise_fd_limit()
    sim = SimProcess(meters)
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(database or f"sqlite:///{tmp}/bench.sqlite3")
        try:
            started = time.perf_counter()
            rows = _book(meters, "none")
            for row in rows:
                row["port"] = str(sim.port)
            registry = Registry(store, Keyring(MasterKey.generate()))
            records = check_rows(rows)
            for i in range(0, len(records), 5000):
                registry.upsert(records[i : i + 5000], who="bench")
            with store.engine.connect() as conn:
                from sqlalchemy import select

                from mdm.schema import devices

                ids = dict(conn.execute(select(devices.c.mrid, devices.c.id)).all())
            pairs = [(ids[r.mrid], r.mrid) for r in records]
            today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            first = pairs[0][1]
            start = today - timedelta(days=1) + timedelta(minutes=15)
            work: list[commands.Command] = [
                commands.FullRead(device=first, start=start, end=today, obis=SIM_REGISTERS)
            ]
            if two_tasks:
                work = [
                    commands.ReadIntervalData(device=first, start=start, end=today),
                    commands.ReadRegisters(device=first, obis=SIM_REGISTERS),
                ]
            jobs = [
                jobstore.create_job(
                    store, kind="bulk", name=c.kind, command=c, devices=pairs, priority=50
                )
                for c in work
            ]
            setup = time.perf_counter() - started
            per_job = [
                [TaskMessage(tid, job.job_id, job.priority, key) for tid, key in job.tasks]
                for job in jobs
            ]
            messages = [
                message for pair in zip(*per_job, strict=True) for message in pair
            ]  # the tasks of each meter one after the other
            result = asyncio.run(
                _sim_run(
                    store, broker, messages, {j.job_id for j in jobs}, concurrency, sim, meters
                )
            )
            counts = [jobstore.counts(store, j.job_id) for j in jobs]
            with store.engine.connect() as conn:
                from sqlalchemy import func

                from mdm.schema import readings

                stored = conn.execute(select(func.count()).select_from(readings)).scalar()
        finally:
            store.close()
            sim.stop()
    succeeded = min(c["succeeded"] for c in counts)
    return {
        **result,
        "sim_full_reads_per_s": succeeded / result["seconds"],
        "meters": meters,
        "failed_tasks": sum(c["total"] - c["succeeded"] for c in counts),
        "readings_stored": stored,
        "setup_s": setup,
    }


async def _sim_run(
    store, broker: str, messages: list, job_ids: set[str], concurrency: int, sim, full_reads: int
) -> dict[str, float]:
    import uuid

    from drivers.dlms import DlmsDriver
    from headend.engine import EngineConfig
    from headend.events import JobFinished
    from headend.retry import RetryPolicy
    from headend.taskbus import TaskBus
    from headend.worker import Worker

    bus = TaskBus.from_url(broker, namespace=f"bench-{uuid.uuid4().hex[:8]}")
    finished: set[str] = set()
    done = asyncio.Event()

    def on_event(event: object) -> None:
        if isinstance(event, JobFinished) and event.job_id in job_ids:
            finished.add(event.job_id)
            if finished == job_ids:
                done.set()

    listener = bus.event_consumer(on_event)
    config = EngineConfig(task_timeout=60.0, retry=RetryPolicy(max_attempts=3, base=1.0))
    # Every simulated meter is behind the simulator's one port, i.e. on one path: not a
    # gateway's limits (see the module docstring).
    throttles = Throttles(Limits(max_sessions=concurrency, connections_per_s=10_000.0))
    worker = Worker(
        store, bus, DlmsDriver(), concurrency=concurrency, config=config, throttles=throttles
    )
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    cpu, sim_cpu, started = time.process_time(), sim.cpu_seconds(), time.perf_counter()
    bus.publish_tasks(messages)
    await done.wait()
    seconds = time.perf_counter() - started
    cpu, sim_cpu = time.process_time() - cpu, sim.cpu_seconds() - sim_cpu
    stop.set()
    await running
    listener.stop()
    bus.delete()
    bus.close()
    return {
        "seconds": seconds,
        "worker_cpu_ms_per_full_read": cpu / full_reads * 1000,
        "sim_cpu_ms_per_full_read": sim_cpu / full_reads * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 / 1,000 meters (< 2 min)")
    parser.add_argument("--meters", type=int, default=None)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sim-meters", type=int, default=None, help="default 10,000 (quick 1,000)")
    parser.add_argument("--concurrency", type=int, default=200, help="the worker's sessions")
    parser.add_argument("--database", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--broker", default="memory://", help="default memory://")
    parser.add_argument("--no-sim", action="store_true", help="skip sim_full_reads_per_s")
    parser.add_argument(
        "--two-tasks",
        action="store_true",
        help="a full read as two tasks (profile, registers), two sessions per meter",
    )
    parser.add_argument("--sim-only", action="store_true", help="only sim_full_reads_per_s")
    args = parser.parse_args()
    summary: dict[str, object] = {}
    if not args.sim_only:
        summary.update(dispatch(args))
    sim: dict[str, float] | None = None
    if not args.no_sim:
        sim_meters = args.sim_meters or (1_000 if args.quick else 10_000)
        sim = sim_full_reads(
            sim_meters, args.concurrency, args.database, args.broker, args.two_tasks
        )
        shape = "2 tasks" if args.two_tasks else "1 FullRead task"
        print(
            f"sim: {sim['meters']} full daily reads (96 profile rows x every channel + "
            f"{len(SIM_REGISTERS)} registers, {shape} per meter) in {sim['seconds']:.1f} s "
            f"through the bus, one worker ({args.concurrency} sessions) and the store: "
            f"{sim['sim_full_reads_per_s']:.1f} full reads/s; worker CPU "
            f"{sim['worker_cpu_ms_per_full_read']:.1f} ms, simulator CPU "
            f"{sim['sim_cpu_ms_per_full_read']:.1f} ms per full read; "
            f"{sim['readings_stored']} readings stored, {sim['failed_tasks']} tasks failed "
            f"(setup {sim['setup_s']:.1f} s)"
        )
    rate = round(sim["sim_full_reads_per_s"], 1) if sim else None
    summary.update(
        {
            "sim_full_reads_per_s": rate,
            "target_sim_full_reads_per_s": TARGET_SIM_FULL_READS_PER_S,
            "sim_full_reads_ratio": round(rate / TARGET_SIM_FULL_READS_PER_S, 2) if rate else None,
            "sim_meters": sim["meters"] if sim else None,
            "sim_failed_tasks": sim["failed_tasks"] if sim else None,
            "sim_worker_cpu_ms_per_full_read": round(sim["worker_cpu_ms_per_full_read"], 2)
            if sim
            else None,
            "sim_simulator_cpu_ms_per_full_read": round(sim["sim_cpu_ms_per_full_read"], 2)
            if sim
            else None,
        }
    )
    if rate is None:
        print("sim_full_reads_per_s: not measured")
    else:
        print(
            f"sim_full_reads_per_s: {rate} (target >= {TARGET_SIM_FULL_READS_PER_S:.0f} per "
            f"worker process; ratio {rate / TARGET_SIM_FULL_READS_PER_S:.2f})"
        )
    print(json.dumps(summary))


def dispatch(args: argparse.Namespace) -> dict[str, object]:
    meters = args.meters or (20_000 if args.quick else 100_000)
    endpoints = population(meters)
    runs, queued = [], []
    for i in range(1, args.runs + 1):
        for reserve, into in ((100, runs), (0, queued)):
            result = asyncio.run(one_run(endpoints, reserve))
            into.append(result)
            print(
                f"run {i}, urgent reserve {reserve}: {meters} tasks in {result['seconds']:.2f} s"
                f" = {result['dispatch_per_s']:.0f} tasks/s; on-demand queue wait p99 "
                f"{result['on_demand_wait_p99_ms']:.2f} ms (median "
                f"{result['on_demand_wait_median_ms']:.2f} ms, {ON_DEMAND} reads)"
            )
    summary = {
        "meters": meters,
        "runs": len(runs),
        "dispatch_per_s": round(statistics.median(r["dispatch_per_s"] for r in runs)),
        "on_demand_wait_p99_ms": round(
            statistics.median(r["on_demand_wait_p99_ms"] for r in runs), 2
        ),
        "on_demand_wait_p99_ms_no_reserve": round(
            statistics.median(r["on_demand_wait_p99_ms"] for r in queued), 2
        ),
        "target_dispatch_per_s": TARGET_DISPATCH_PER_S,
        "target_on_demand_wait_p99_ms": TARGET_ON_DEMAND_P99_MS,
    }
    print(
        f"dispatch_per_s (median of {len(runs)}): {summary['dispatch_per_s']} "
        f"(target >= {TARGET_DISPATCH_PER_S})"
    )
    print(
        f"on_demand_wait_p99_ms (median of {len(runs)}): {summary['on_demand_wait_p99_ms']} "
        f"(target < {TARGET_ON_DEMAND_P99_MS:.0f})"
    )
    print(
        "on_demand_wait_p99_ms without the urgent reserve (through the queue only): "
        f"{summary['on_demand_wait_p99_ms_no_reserve']}"
    )
    return summary


if __name__ == "__main__":
    main()
