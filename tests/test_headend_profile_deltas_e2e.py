"""A day's load profile of simulated DLMS meters, read on demand through the router, the
head-end and a worker: the store holds 96 quarter-hour deltas per cumulative channel whose
sum is exactly the register's advance over the day, plus the 97 captured totals, and
GetMeterReadings answers the deltas (not the meter's running total). A meter with a supply
outage during the day has the intervals around it absent, never a value spanning two."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from worker_helpers import KEYRING, fleet_in_thread, register_fleet, yesterday

from cim.codelists.obis import obis_to_reading_type
from cim.envelope import Header, Message, MessageKind, Option, Request
from cim.get_meter_readings import GetMeterReadings, ReadingSelector
from cim.messages import emit_message, parse_message
from cim.meter_readings import MeterReadings
from cim.model import DateTimeInterval, ObjectRef
from drivers.dlms import DlmsDriver
from headend.access import SYSTEM
from headend.engine import EngineConfig
from headend.retry import RetryPolicy
from headend.router import Router
from headend.service import HeadEnd
from headend.taskbus import TaskBus
from headend.worker import Worker
from mdm.database import open_store
from mdm.readings import read

FAST = EngineConfig(
    retry=RetryPolicy(max_attempts=2, base=0.005, factor=2.0, jitter=0.5, seed=1),
    task_timeout=10.0,
)
STEP = timedelta(minutes=15)
PLUS_A = "1.0.1.8.0.255"
DELTA = obis_to_reading_type(PLUS_A, interval_minutes=15).code
TOTAL = obis_to_reading_type(PLUS_A, interval_minutes=15, cumulative=True).code


def get_request(mrids: list[str], start: datetime, end: datetime) -> bytes:
    header = Header(
        verb="get",
        noun="MeterReadings",
        timestamp=datetime.now(UTC),
        source="test",
        message_id=uuid.uuid4().hex,
    )
    query = GetMeterReadings(
        end_devices=[ObjectRef(mrid=m) for m in mrids],
        reading_types=[ObjectRef(mrid=DELTA)],
        readings=[ReadingSelector(time_period=DateTimeInterval(start, end))],
    )
    request = Request(options=[Option("OnDemand", "true")], get_profile=query)
    return emit_message(Message(MessageKind.REQUEST, header, request=request))


def test_a_days_read_stores_and_answers_exact_interval_deltas() -> None:
    start, end = yesterday()
    outage = (start + timedelta(hours=10, minutes=5), start + timedelta(hours=10, minutes=40))
    store = open_store("sqlite://")
    bus = TaskBus.from_url("memory://", namespace=f"deltas-{uuid.uuid4().hex[:10]}")
    try:
        with fleet_in_thread(2) as fleet:
            mrids = register_fleet(store, fleet)
            fleet.meter(1).power_outage(outage[0].timestamp(), outage[1].timestamp())

            async def body() -> bytes:
                headend = HeadEnd(store, bus, keyring=KEYRING, poll_interval=0.01)
                router = Router(store, headend, sync_timeout=20)
                worker = Worker(
                    store, bus, DlmsDriver(), concurrency=2, keyring=KEYRING, config=FAST
                )
                stop = asyncio.Event()
                await headend.start()
                running = asyncio.create_task(worker.run(stop))
                try:
                    reply = await router.handle(
                        get_request(mrids, start, end), principal=SYSTEM, channel="test"
                    )
                    return reply.body
                finally:
                    stop.set()
                    await running
                    await headend.stop()

            body_bytes = asyncio.run(asyncio.wait_for(body(), 40))
            energy = [
                (
                    fleet.meter(i).energy(start.timestamp())[0],
                    fleet.meter(i).energy(end.timestamp())[0],
                )
                for i in range(2)
            ]
        message = parse_message(body_bytes, require_served_noun=False).message
        assert message.reply is not None and message.reply.result.value == "OK", message.reply
        document = message.payload.document  # type: ignore[union-attr]
        assert isinstance(document, MeterReadings)
        answered = {
            r.meter_key: {b.reading_type: b.readings for b in r.interval_blocks}
            for r in document.meter_readings
        }

        # Meter 0: 96 deltas, end-stamped, summing exactly to the register's advance.
        (deltas,) = read(store, [mrids[0]], [DELTA], start, end)
        assert [p.timestamp for p in deltas.points] == [start + i * STEP for i in range(1, 97)]
        (totals,) = read(store, [mrids[0]], [TOTAL], start - STEP, end)
        assert [p.timestamp for p in totals.points] == [start + i * STEP for i in range(97)]
        advance = totals.points[-1].value - totals.points[0].value
        assert sum(p.value for p in deltas.points) == advance
        assert advance == Decimal(energy[0][1] - energy[0][0]).scaleb(-3)
        assert all(0 <= p.value < 100 for p in deltas.points)  # kWh per quarter-hour
        got = answered[mrids[0]][DELTA]
        assert len(got) == 96
        assert sum(r.value for r in got) == advance  # type: ignore[misc]
        assert max(r.value for r in got) < 100  # type: ignore[type-var]

        # Meter 1: the captures at 10:15 and 10:30 were lost in the outage, so the intervals
        # ending 10:15, 10:30 and 10:45 are absent; everything else is there and exact.
        (deltas,) = read(store, [mrids[1]], [DELTA], start, end)
        missing = {start + timedelta(hours=10, minutes=m) for m in (15, 30, 45)}
        expected = [start + i * STEP for i in range(1, 97)]
        assert [p.timestamp for p in deltas.points] == [t for t in expected if t not in missing]
        (totals,) = read(store, [mrids[1]], [TOTAL], start - STEP, end)
        by_time = {p.timestamp: p.value for p in totals.points}
        for p in deltas.points:
            assert p.value == by_time[p.timestamp] - by_time[p.timestamp - STEP]
        assert len(answered[mrids[1]][DELTA]) == 93
    finally:
        store.close()
        bus.delete()
        bus.close()
