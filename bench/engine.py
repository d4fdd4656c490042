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

``sim_full_reads_per_s`` (DLMS simulator end to end into the store) is not measured here yet.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 meters (< 60 s)")
    parser.add_argument("--meters", type=int, default=None)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
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
        "sim_full_reads_per_s": None,
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
    print("sim_full_reads_per_s: not measured")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
