"""Helpers for the worker tests (tests/test_headend_worker.py, tests/test_services_workers.py):
register meters, create a job and publish its tasks, count what the store holds."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from drivers.sim.fleet import Fleet, FleetConfig
from headend import commands, jobstore
from headend.device_import import check_rows
from headend.keys import Keyring, MasterKey
from headend.registry import CommPath, MeterRecord, Registry
from headend.schema import task_attempts, tasks
from headend.taskbus import TaskBus, TaskMessage
from mdm.database import Store, reading
from mdm.devices import Device
from mdm.schema import devices, reading_history, readings

REGISTER = "1.0.1.8.0.255"
MASTER_KEY_HEX = "6f70656e6865732d776f726b65722d74657374732d6d61737465722d6b657921"
KEYRING = Keyring(MasterKey(bytes.fromhex(MASTER_KEY_HEX)))


def register_fake(store: Store, count: int, *, host: str = "seg0", start: int = 0) -> list[str]:
    """Meters m<start>..: reached (by drivers.fake) on ``host``."""
    records = [
        MeterRecord(Device(f"m{i}", protocol="dlms"), CommPath(host=host, port=4059))
        for i in range(start, start + count)
    ]
    Registry(store, KEYRING).upsert(records, who="test")
    return [r.mrid for r in records]


def register_fleet(store: Store, fleet: Fleet) -> list[str]:
    """The simulated fleet's meters (its address book, as ``openhes meters import`` reads)."""
    records = check_rows(fleet.address_book())
    Registry(store, KEYRING).upsert(records, who="test")
    return [r.mrid for r in records]


def device_ids(store: Store, mrids: Sequence[str]) -> list[tuple[int, str]]:
    with reading(store) as conn:
        query = select(devices.c.mrid, devices.c.id).where(devices.c.mrid.in_(mrids))
        found = {mrid: id_ for mrid, id_ in conn.execute(query)}
    return [(found[m], m) for m in mrids]


def submit(
    store: Store,
    bus: TaskBus | None,
    command: commands.Command,
    mrids: Sequence[str],
    *,
    priority: int = 90,
    kind: str = "bulk",
    deadline: datetime | None = None,
    parameters: dict[str, Any] | None = None,
) -> tuple[str, list[TaskMessage]]:
    """Create a job of ``command`` over ``mrids`` and publish its tasks (unless ``bus`` is
    None); returns the job id and the messages."""
    job = jobstore.create_job(
        store,
        kind=kind,
        name=f"test {command.kind}",
        command=command,
        devices=device_ids(store, mrids),
        priority=priority,
        deadline=deadline,
        parameters=parameters,
    )
    messages = [TaskMessage(tid, job.job_id, job.priority, key) for tid, key in job.tasks]
    if bus is not None:
        bus.publish_tasks(messages)
    return job.job_id, messages


#: What a day's read stores per cumulative profile channel: 96 quarter-hour deltas ending in
#: (start, end] and the 97 captured totals they are computed from (start and end included).
DAY_DELTAS, DAY_TOTALS = 96, 97
PER_CHANNEL = DAY_DELTAS + DAY_TOTALS


def yesterday() -> tuple[datetime, datetime]:
    """Yesterday (UTC) as the window (start, end]: 96 quarter-hour intervals."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=1), today


def task_rows(store: Store, job_id: str) -> list[Any]:
    with reading(store) as conn:
        return conn.execute(
            select(tasks).where(tasks.c.job_id == job_id).order_by(tasks.c.id)
        ).all()


def attempt_rows(store: Store, task_id: int) -> list[Any]:
    with reading(store) as conn:
        return conn.execute(
            select(task_attempts)
            .where(task_attempts.c.task_id == task_id)
            .order_by(task_attempts.c.number)
        ).all()


def readings_per_device(store: Store) -> dict[str, int]:
    with reading(store) as conn:
        rows = conn.execute(
            select(devices.c.mrid, func.count())
            .join(readings, readings.c.device_id == devices.c.id)
            .group_by(devices.c.mrid)
        ).all()
    return {mrid: n for mrid, n in rows}


def superseded_readings(store: Store) -> int:
    """Readings stored more than once (each repeat of a different value makes a version)."""
    with reading(store) as conn:
        return int(conn.execute(select(func.count()).select_from(reading_history)).scalar())


def job_done(store: Store, job_id: str) -> bool:
    return jobstore.job_state(store, job_id) in ("completed", "completed_with_errors")


async def until(predicate: Callable[[], bool], timeout: float = 10.0, step: float = 0.01) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(step)


@contextlib.contextmanager
def fleet_in_thread(meters: int, **options: Any) -> Iterator[Fleet]:
    """A simulated DLMS fleet on a loopback port (shared, one wPort per meter), served by an
    event loop in a thread of its own; the fleet's meters can be inspected meanwhile."""
    config = FleetConfig(
        meters=meters, base_port=0, shared_port=True, key_secret=b"worker-tests" * 3, **options
    )
    fleet = Fleet(config)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    servers: list[Any] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)

        async def start() -> None:
            servers.extend(await fleet.serve())
            ready.set()

        loop.run_until_complete(start())
        loop.run_forever()
        loop.run_until_complete(fleet.close(servers))
        loop.close()

    thread = threading.Thread(target=serve, name="sim-fleet", daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("the simulated fleet did not start")
    try:
        yield fleet
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
