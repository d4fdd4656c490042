"""The example messages the README shows (docs/examples/) are valid against OpenHES's schemas
and are served by the router as documented: each answered OK (the asynchronous one
acknowledged at once), against a store holding the example meter and its readings."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from mdm_samples import interval_rows
from worker_helpers import KEYRING

from cim.messages import parse_message
from cim.validation import validate_file
from drivers.fake import FakeDriver
from headend.access import SYSTEM
from headend.outbox import Outbox
from headend.registry import CommPath, MeterRecord, Registry
from headend.router import Router
from headend.service import HeadEnd
from headend.taskbus import TaskBus
from headend.worker import Worker
from mdm.database import Store
from mdm.devices import Device
from mdm.ingest import ingest

pytest_plugins = ["mdm_conftest"]

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"
FILES = sorted(EXAMPLES.glob("*.xml"))
METER = "METER-0001"
DAY = datetime(2026, 11, 21, tzinfo=UTC)


def test_there_are_examples_for_every_operation_the_readme_lists():
    names = {f.stem for f in FILES}
    assert {
        "get-meter-readings",
        "get-end-device-events",
        "create-end-device-controls-disconnect",
        "create-end-device-controls-async",
        "create-meter-read-schedule",
        "create-meter-readings",
    } <= names


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_each_example_is_schema_valid(path: Path):
    assert validate_file(path) == []
    assert parse_message(path.read_bytes()).message.header.message_id


@pytest.fixture
def example_store(store: Store) -> Store:
    Registry(store, KEYRING).upsert(
        [MeterRecord(Device(METER, protocol="dlms"), CommPath(host="seg0", port=4059))], who="test"
    )
    ingest(store, interval_rows(METER, 96, DAY))
    return store


def test_each_example_is_answered_by_the_router(example_store: Store):
    bodies: dict[str, bytes] = {}

    async def body() -> dict[str, tuple[str, bool]]:
        bus = TaskBus.from_url("memory://", namespace=f"examples-{uuid.uuid4().hex[:8]}")
        headend = HeadEnd(example_store, bus, keyring=KEYRING, poll_interval=0.01)
        router = Router(example_store, headend, outbox=Outbox(example_store), sync_timeout=10)
        worker = Worker(example_store, bus, FakeDriver(), concurrency=2, keyring=KEYRING)
        stop = asyncio.Event()
        await headend.start()
        running = asyncio.create_task(worker.run(stop))
        results = {}
        try:
            for path in FILES:
                reply = await router.handle(path.read_bytes(), principal=SYSTEM, channel="file")
                results[path.stem] = (reply.result, reply.deferred)
                bodies[path.stem] = reply.body
            await router.drain(10)
        finally:
            stop.set()
            await running
            await headend.stop()
            bus.delete()
            bus.close()
        return results

    results = asyncio.run(asyncio.wait_for(body(), 60))
    assert results.pop("create-end-device-controls-async") == ("OK", True)
    assert results == {name: ("OK", False) for name in results}
    assert len(results) == len(FILES) - 1
    document = parse_message(bodies["get-meter-readings"]).message.payload.document
    (block,) = document.meter_readings[0].interval_blocks
    assert len(block.readings) == 96
