"""Scale-out against the real RabbitMQ and PostgreSQL: two ``openhes worker`` processes share
a job of reads and controls over simulated DLMS meters; one is SIGKILLed in the middle of a
control. Every task still finishes, every reading is in the store exactly once, and every
control operated its meter's switch once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text
from worker_helpers import (
    PER_CHANNEL,
    fleet_in_thread,
    job_done,
    readings_per_device,
    register_fleet,
    submit,
    superseded_readings,
    task_rows,
    yesterday,
)

from drivers.sim.faults import FaultSpec, FleetFaults, Latency
from headend import commands, jobstore
from headend.schema import task_attempts, tasks
from headend.taskbus import TaskBus
from mdm.database import Store, open_store, reading, resolve_url

pytestmark = pytest.mark.services

ROOT = Path(__file__).resolve().parent.parent
METERS = 24
CONTROLLED = 12


@pytest.fixture
def database(postgres_url: str) -> Iterator[str]:
    """A database of its own (the workers open it by URL), dropped afterwards."""
    name = f"openhes_workers_{uuid.uuid4().hex[:10]}"
    admin = create_engine(resolve_url(postgres_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    url = resolve_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


@pytest.fixture
def bus(amqp_url: str) -> Iterator[TaskBus]:
    b = TaskBus.from_url(amqp_url, namespace=f"openhes-test-{uuid.uuid4().hex[:10]}")
    try:
        yield b
    finally:
        b.delete()
        b.close()


def start_worker(name: str, database: str, bus: TaskBus, log: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "adapters.cli", "worker",
        "--database", database, "--broker", bus.url, "--namespace", bus.namespace,
        "--concurrency", "8", "--grace", "10", "--name", name,
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENHES_")}
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def open_attempts(store: Store, worker: str, task_ids: list[int]) -> int:
    with reading(store) as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(task_attempts)
                .where(
                    task_attempts.c.worker == worker,
                    task_attempts.c.finished_at.is_(None),
                    task_attempts.c.task_id.in_(task_ids),
                )
            ).scalar()
        )


def finished_by(store: Store, worker: str) -> int:
    with reading(store) as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(task_attempts)
                .where(task_attempts.c.worker == worker, task_attempts.c.outcome == "ok")
            ).scalar()
        )


def test_a_worker_killed_mid_job_loses_nothing_and_operates_no_switch_twice(
    database: str, bus: TaskBus, tmp_path: Path
) -> None:
    store = open_store(database)
    # Every answer from a meter takes 30 ms, so sessions last long enough to be cut.
    slow = FleetFaults(default=FaultSpec(latency=Latency("fixed", 0.03)))
    with fleet_in_thread(METERS, faults=slow) as fleet:
        mrids = register_fleet(store, fleet)
        start, end = yesterday()
        profile = commands.ReadIntervalData(device=mrids[0], start=start, end=end)
        registers = commands.ReadRegisters(device=mrids[0], obis=("1.0.1.8.0.255",))
        disconnect = commands.Control(device=mrids[0], action=commands.ControlAction.DISCONNECT)
        workers = {
            name: start_worker(name, database, bus, tmp_path / f"{name}.log") for name in ("A", "B")
        }
        try:
            reads = [submit(store, bus, cmd, mrids)[0] for cmd in (profile, registers)]
            wait_for(lambda: finished_by(store, "A") >= 2, 60, "worker A's first reads")
            controls, messages = submit(
                store, bus, disconnect, mrids[:CONTROLLED], priority=0, kind="group"
            )
            control_tasks = [m.task_id for m in messages]

            def acted_not_committed() -> bool:
                # A has opened a switch and not yet committed that control: the worst moment.
                return any(
                    fleet.meter(i).disconnector.operations and open_attempts(store, "A", [task_id])
                    for i, task_id in enumerate(control_tasks)
                )

            wait_for(acted_not_committed, 30, "worker A between a switch operation and its commit")
            workers["A"].send_signal(signal.SIGKILL)
            workers["A"].wait(10)
            killed_controls = open_attempts(store, "A", control_tasks)
            operated_by_a = [
                i
                for i, task_id in enumerate(control_tasks)
                if open_attempts(store, "A", [task_id]) and fleet.meter(i).disconnector.operations
            ]
            jobs = [*reads, controls]
            wait_for(lambda: all(job_done(store, j) for j in jobs), 90, "every job to finish")
            workers["B"].send_signal(signal.SIGTERM)
            assert workers["B"].wait(30) == 0
        finally:
            for process in workers.values():
                if process.poll() is None:
                    process.kill()
                    process.wait(10)

        logs = {name: (tmp_path / f"{name}.log").read_text() for name in workers}
        assert "Traceback" not in logs["B"], logs["B"]
        for job_id in jobs:
            rows = task_rows(store, job_id)
            assert {r.state for r in rows} == {"succeeded"}, [
                (r.mrid, r.state, r.error_text) for r in rows
            ]
        # The kill cut sessions short: those tasks were run again by B.
        with reading(store) as conn:
            cut = conn.execute(
                select(tasks.c.id)
                .join(task_attempts, task_attempts.c.task_id == tasks.c.id)
                .where(task_attempts.c.worker == "A", task_attempts.c.finished_at.is_(None))
            ).all()
        assert killed_controls >= 1 and len(cut) >= killed_controls
        # Every reading exactly once: 96 deltas and 97 totals of each cumulative profile
        # channel and 1 register.
        stored = readings_per_device(store)
        per_meter = stored[mrids[0]]
        assert (per_meter - 1) % PER_CHANNEL == 0 and per_meter > PER_CHANNEL
        assert stored == dict.fromkeys(mrids, per_meter)
        assert superseded_readings(store) == 0
        # Each control operated its switch exactly once, whoever ran it.
        operations = [fleet.meter(i).disconnector.operations for i in range(METERS)]
        assert operations == [1] * CONTROLLED + [0] * (METERS - CONTROLLED)
        results = [r.result for r in jobstore.task_records(store, controls)]
        assert all(r["verified"] and r["state"] == "disconnected" for r in results)
        # The controls A carried out but never committed were completed by B without acting.
        assert operated_by_a
        assert [results[i]["operated"] for i in operated_by_a] == [False] * len(operated_by_a)
        print(
            f"killed A with {len(cut)} sessions open ({killed_controls} controls); "
            f"{sum(not r['operated'] for r in results)} control(s) found the switch open"
        )
    assert bus.pending_tasks() == 0
    store.close()
