"""The router end to end, with real messages built by cim/, the real HeadEnd and an
in-process Worker running drivers.fake.FakeDriver on the memory:// bus: every Verb/Noun
route, per-device errors and PARTIAL, idempotency on MessageID (a repeated disconnect
operates the switch once), authorisation per role, refusals of bad input, asynchronous
acknowledgements with the reply in the outbox, and resume after a simulated restart."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest
from mdm_samples import RT_15MIN_KWH, RT_REGISTER_KWH, T0, interval_rows
from worker_helpers import KEYRING, register_fake

from cim.end_device_controls import EndDeviceControl, EndDeviceControls, EndDeviceTiming
from cim.end_device_events import GetEndDeviceEvents
from cim.envelope import (
    Header,
    Identifier,
    Message,
    MessageKind,
    Option,
    Payload,
    Request,
)
from cim.get_meter_readings import GetMeterReadings, ReadingSelector
from cim.messages import emit_message, parse_message
from cim.meter_read_schedule import MeterReadSchedule, TimeSchedule
from cim.meter_readings import IntervalBlock, IntervalReading, MeterReading, MeterReadings, Reading
from cim.model import DateTimeInterval, Name, ObjectRef
from drivers.errors import ConnectionLost
from drivers.fake import FakeDriver
from headend.access import SYSTEM, Principal, Role
from headend.engine import EngineConfig
from headend.handlers.end_device_controls import action_for
from headend.message_log import MessageLog
from headend.outbox import Outbox
from headend.retry import RetryPolicy
from headend.router import Router, RouterReply
from headend.schedules import get_schedule, list_schedules
from headend.service import HeadEnd
from headend.taskbus import TaskBus
from headend.worker import Worker
from mdm.audit import entries
from mdm.database import Store
from mdm.devices import Device, add_name, add_to_group, create_devices, create_group
from mdm.events import EndDeviceEvent, store_events
from mdm.ingest import ingest
from mdm.readings import read_one

pytest_plugins = ["mdm_conftest"]

T = TypeVar("T")
FAST = EngineConfig(
    retry=RetryPolicy(max_attempts=2, base=0.005, factor=2.0, jitter=0.5, seed=1),
    task_timeout=5.0,
)
READER = Principal("rita", frozenset({Role.READER}), "basic")
OPERATOR = Principal("otto", frozenset({Role.OPERATOR}), "wss")
ADMIN = Principal("ada", frozenset({Role.ADMIN}), "basic")
DISCONNECT, CONNECT, ARM, CLOCK_SYNC = "3.31.0.23", "3.31.0.18", "0.31.0.5", "0.36.116.24"
REPLY_TO = "http://127.0.0.1:9/replies"


def run(body: Callable[[], Awaitable[T]], timeout: float = 30.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(body(), timeout)

    return asyncio.run(bounded())


# --- building and reading messages ------------------------------------------------------------


def request(
    verb: str,
    noun: str,
    *,
    get: Any = None,
    payload: Any = None,
    message_id: str | None = None,
    correlation_id: str | None = "corr-1",
    options: Sequence[tuple[str, str]] = (),
    ids: Sequence[str] = (),
    start: datetime | None = None,
    end: datetime | None = None,
    reply_to: str | None = None,
) -> bytes:
    header = Header(
        verb=verb,
        noun=noun,
        timestamp=datetime.now(UTC),
        source="test",
        async_reply_flag=True if reply_to else None,
        reply_address=reply_to,
        message_id=message_id,
        correlation_id=correlation_id,
    )
    req = None
    if get is not None or options or ids or start or end:
        req = Request(
            start_time=start,
            end_time=end,
            options=[Option(n, v) for n, v in options],
            ids=[Identifier(i) for i in ids],
            get_profile=get,
        )
    body = Payload(document=payload) if payload is not None else None
    return emit_message(Message(MessageKind.REQUEST, header, request=req, payload=body))


@dataclass
class Answer:
    result: str
    codes: list[str]
    by_id: dict[str, list[str]]  # Error/ID -> its codes
    message: Message
    deferred: bool


def answer(reply: RouterReply) -> Answer:
    message = parse_message(reply.body, require_served_noun=False).message
    assert message.kind is MessageKind.RESPONSE and message.reply is not None
    assert message.reply.result.value == reply.result
    by_id: dict[str, list[str]] = {}
    for error in message.reply.errors:
        if error.id is not None:
            by_id.setdefault(error.id.value, []).append(error.code)
    return Answer(
        reply.result,
        [e.code for e in message.reply.errors],
        by_id,
        message,
        reply.deferred,
    )


def controls(code: str, *mrids: str, **control: Any) -> EndDeviceControls:
    return EndDeviceControls(
        controls=[
            EndDeviceControl(
                control_type=code, end_devices=[ObjectRef(mrid=m) for m in mrids], **control
            )
        ]
    )


def get_readings(*mrids: str, codes: Sequence[str] = (), period: Any = None) -> GetMeterReadings:
    return GetMeterReadings(
        end_devices=[ObjectRef(mrid=m) for m in mrids],
        reading_types=[ObjectRef(mrid=c) for c in codes],
        readings=[ReadingSelector(time_period=period)] if period else [],
    )


DAY = DateTimeInterval(T0, T0 + timedelta(days=1))


# --- the hub: store, head-end, worker, router ---------------------------------------------------


@dataclass
class Hub:
    store: Store
    router: Router
    driver: FakeDriver
    headend: HeadEnd
    outbox: Outbox

    async def send(self, data: bytes, principal: Principal = SYSTEM) -> Answer:
        return answer(await self.router.handle(data, principal=principal, channel="test"))


@asynccontextmanager
async def running_worker(store: Store, bus: TaskBus, driver: FakeDriver) -> AsyncIterator[Worker]:
    worker = Worker(store, bus, driver, concurrency=4, keyring=KEYRING, config=FAST)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        await task


@asynccontextmanager
async def hub(
    store: Store,
    *,
    worker: bool = True,
    bus: TaskBus | None = None,
    driver: FakeDriver | None = None,
    sync_timeout: float = 10.0,
) -> AsyncIterator[Hub]:
    own_bus = bus is None
    bus = bus or TaskBus.from_url("memory://", namespace=f"router-{uuid.uuid4().hex[:10]}")
    driver = driver or FakeDriver()
    headend = HeadEnd(store, bus, keyring=KEYRING, poll_interval=0.01)
    outbox = Outbox(store)
    router = Router(store, headend, outbox=outbox, sync_timeout=sync_timeout)
    await headend.start()
    try:
        if worker:
            async with running_worker(store, bus, driver):
                yield Hub(store, router, driver, headend, outbox)
                await router.drain(10)
        else:
            yield Hub(store, router, driver, headend, outbox)
    finally:
        await headend.stop()
        if own_bus:
            bus.delete()
            bus.close()


@pytest.fixture
def meters(store: Store) -> Store:
    """Meters m0, m1, m2 reachable by the fake driver; m0 and m1 with a day of readings."""
    register_fake(store, 3)
    ingest(store, interval_rows("m0", 96) + interval_rows("m1", 96))
    return store


# --- get MeterReadings ---------------------------------------------------------------------


def test_get_meter_readings_from_the_store_correlated(meters: Store) -> None:
    async def body() -> None:
        async with hub(meters) as h:
            data = request(
                "get",
                "MeterReadings",
                get=get_readings("m0", codes=[RT_15MIN_KWH], period=DAY),
                message_id="g-1",
                correlation_id="corr-g",
            )
            got = await h.send(data, READER)
            assert got.result == "OK" and got.codes == ["0.0"]
            header = got.message.header
            assert header is not None and header.verb == "reply"
            assert header.correlation_id == "corr-g" and header.message_id not in (None, "g-1")
            document = got.message.payload.document  # type: ignore[union-attr]
            assert isinstance(document, MeterReadings)
            (reading,) = document.meter_readings
            assert reading.meter_key == "m0"
            (block,) = reading.interval_blocks
            assert block.reading_type == RT_15MIN_KWH and len(block.readings) == 96
            assert block.readings[0].value == Decimal("1.000") and h.driver.associations == {}
            # the same get again is answered afresh (gets are not logged)
            again = await h.send(data, READER)
            assert again.message.header.message_id != header.message_id  # type: ignore[union-attr]

    run(body)


def test_get_meter_readings_without_reading_types_and_by_group_and_name(meters: Store) -> None:
    create_group(meters, "feeder-7", who="test")
    add_to_group(meters, "feeder-7", ["m1"], who="test")
    add_name(meters, "m0", "serial", "SER-0", who="test")

    async def body() -> None:
        async with hub(meters, worker=False) as h:
            query = GetMeterReadings(
                end_devices=[ObjectRef(names=(Name("SER-0", "serial"),))],
                end_device_groups=[ObjectRef(names=(Name("feeder-7"),))],
            )
            got = await h.send(
                request("get", "MeterReadings", get=query, start=T0, end=T0 + timedelta(hours=1))
            )
            assert got.result == "OK"
            document = got.message.payload.document  # type: ignore[union-attr]
            assert [
                (m.meter_key, len(m.interval_blocks[0].readings)) for m in document.meter_readings
            ] == [("m0", 4), ("m1", 4)]

    run(body)


def test_unknown_devices_get_one_error_each_and_partial(meters: Store) -> None:
    async def body() -> None:
        async with hub(meters, worker=False) as h:
            got = await h.send(
                request(
                    "get", "MeterReadings", get=get_readings("m0", "ghost-1", "ghost-2", period=DAY)
                )
            )
            assert got.result == "PARTIAL" and got.codes[0] == "0.2"
            assert got.by_id == {"ghost-1": ["4.1"], "ghost-2": ["4.1"]}
            document = got.message.payload.document  # type: ignore[union-attr]
            assert [m.meter_key for m in document.meter_readings] == ["m0"]
            failed = await h.send(
                request("get", "MeterReadings", get=get_readings("ghost-1", period=DAY))
            )
            assert failed.result == "FAILED" and failed.by_id == {"ghost-1": ["4.1"]}
            assert failed.message.payload is None

    run(body)


def test_get_reads_on_demand_what_the_store_lacks_in_the_present(meters: Store) -> None:
    async def body() -> None:
        async with hub(meters) as h:
            # m2 has no readings: its registers are read, then the store answers
            got = await h.send(
                request(
                    "get",
                    "MeterReadings",
                    get=get_readings("m2", codes=[RT_REGISTER_KWH]),
                    message_id="od-1",
                )
            )
            assert got.result == "OK", got.codes
            assert h.driver.associations == {"m2": 1}
            (reading,) = got.message.payload.document.meter_readings  # type: ignore[union-attr]
            assert reading.meter_key == "m2" and reading.readings[0].reading_type == RT_REGISTER_KWH
            # a past window is answered from the store only
            await h.send(request("get", "MeterReadings", get=get_readings("m2", period=DAY)))
            assert h.driver.associations == {"m2": 1}
            # Option OnDemand forces a read of a device whose data is there
            forced = await h.send(
                request(
                    "get",
                    "MeterReadings",
                    get=get_readings("m0", codes=[RT_REGISTER_KWH]),
                    options=[("OnDemand", "true")],
                )
            )
            assert forced.result == "OK" and h.driver.associations["m0"] == 1

    run(body)


def test_a_failed_on_demand_read_is_a_device_error(meters: Store) -> None:
    driver = FakeDriver()
    driver.fail["m1"] = [ConnectionLost("gone")] * 5

    async def body() -> None:
        async with hub(meters, driver=driver) as h:
            got = await h.send(
                request(
                    "get",
                    "MeterReadings",
                    get=get_readings("m1", "m2", codes=[RT_REGISTER_KWH]),
                    options=[("OnDemand", "true")],
                )
            )
            assert got.result == "PARTIAL"
            assert got.by_id == {"m1": ["6.1"]}

    run(body)


def test_get_meter_readings_bad_requests(meters: Store) -> None:
    async def body() -> None:
        async with hub(meters, worker=False) as h:
            nothing = await h.send(request("get", "MeterReadings"))
            assert nothing.result == "FAILED" and nothing.codes == ["2.6"]
            no_devices = await h.send(request("get", "MeterReadings", get=GetMeterReadings()))
            assert no_devices.codes == ["2.6"]
            backwards = await h.send(
                request(
                    "get",
                    "MeterReadings",
                    get=get_readings("m0", period=DateTimeInterval(T0, T0 - timedelta(1))),
                )
            )
            assert backwards.codes == ["2.2"]
            wrong = await h.send(
                request("get", "MeterReadings", get=GetEndDeviceEvents(meters=[ObjectRef("m0")]))
            )
            assert wrong.codes == ["2.6"]

    run(body)


# --- create EndDeviceControls --------------------------------------------------------------


def test_a_repeated_disconnect_operates_the_switch_once(meters: Store) -> None:
    async def body() -> None:
        async with hub(meters) as h:
            data = request(
                "create",
                "EndDeviceControls",
                payload=controls(DISCONNECT, "m0", "m1"),
                message_id="ctl-1",
            )
            first = await h.router.handle(data, principal=OPERATOR, channel="soap")
            second = await h.router.handle(data, principal=OPERATOR, channel="soap")
            assert second == first  # the very same reply
            got = answer(first)
            assert got.result == "OK" and got.by_id == {"m0": ["0.0"], "m1": ["0.0"]}
            assert dict(h.driver.controls) == {"m0": 1, "m1": 1}
            assert h.driver.switches == {"m0": False, "m1": False}
            notes = [e for e in got.message.reply.errors if e.id]  # type: ignore[union-attr]
            assert notes[0].reason == "disconnected, verified"
            assert "state=disconnected" in (notes[0].details or "")
            assert isinstance(got.message.payload.document, EndDeviceControls)  # type: ignore[union-attr]
            audit = entries(meters, object_type="EndDevice", object_id="m0")
            controls_audit = [e for e in audit if e.attribute == "control"]
            assert len(controls_audit) == 1
            assert controls_audit[0].who == "otto"
            assert controls_audit[0].new_value.startswith("disconnect ok")  # type: ignore[union-attr]
            assert "ctl-1" in (controls_audit[0].note or "")

    run(body)


def test_concurrent_duplicates_wait_for_the_first_and_run_once(meters: Store) -> None:
    async def body() -> None:
        async with hub(meters, driver=FakeDriver(latency=0.05)) as h:
            data = request(
                "create",
                "EndDeviceControls",
                payload=controls(DISCONNECT, "m2"),
                message_id="ctl-race",
            )
            replies = await asyncio.gather(
                *(h.router.handle(data, principal=OPERATOR, channel="esb") for _ in range(3))
            )
            assert len({r.body for r in replies}) == 1 and replies[0].result == "OK"
            assert dict(h.driver.controls) == {"m2": 1}

    run(body)


def test_a_message_id_reused_by_another_caller_or_request_is_refused(meters: Store) -> None:
    async def body() -> None:
        async with hub(meters) as h:
            data = request(
                "create", "EndDeviceControls", payload=controls(CONNECT, "m0"), message_id="mine"
            )
            assert (await h.send(data, OPERATOR)).result == "OK"
            other = await h.send(data, Principal("eve", frozenset({Role.OPERATOR}), "basic"))
            assert other.result == "FAILED" and other.codes == ["4.4"]
            assert other.message.payload is None
            schedule = request(
                "cancel", "MeterReadSchedule", message_id="mine", options=[("ScheduleName", "x")]
            )
            assert (await h.send(schedule, OPERATOR)).codes == ["5.2"]
            reused = await h.send(schedule, Principal("otto", frozenset(Role), "wss"))
            assert reused.codes == ["4.4"]

    run(body)


def test_controls_partial_with_errors_per_device(meters: Store) -> None:
    async def body() -> None:
        async with hub(meters) as h:
            document = EndDeviceControls(
                controls=[
                    EndDeviceControl(
                        control_type=DISCONNECT,
                        end_devices=[ObjectRef(mrid="m0"), ObjectRef(mrid="nope")],
                    ),
                    EndDeviceControl(control_type="0.15.0.54", end_devices=[ObjectRef("m1")]),
                    EndDeviceControl(control_type=ARM, end_devices=[ObjectRef("m2")]),
                    EndDeviceControl(control_type=CLOCK_SYNC, end_devices=[ObjectRef("m1")]),
                    EndDeviceControl(control_type="0.8.0.214", end_devices=[ObjectRef("m2")]),
                ]
            )
            got = await h.send(
                request("create", "EndDeviceControls", payload=document, message_id="mix")
            )
            assert got.result == "PARTIAL"
            assert got.by_id == {
                "nope": ["4.1"],
                "m1": ["2.4", "0.0"],  # load control is not carried out; clock sync is
                "m2": ["3.3", "0.0"],  # demand reset not run by the engine; arm done
                "m0": ["0.0"],
            }
            assert dict(h.driver.controls) == {"m0": 1}
            refused = [
                e
                for e in entries(meters, object_type="EndDevice", object_id="m1")
                if e.attribute == "control"
            ]
            assert any("refused: 2.4" in (e.new_value or "") for e in refused)

    run(body)


def test_a_failing_meter_fails_its_control(meters: Store) -> None:
    driver = FakeDriver()
    driver.fail["m0"] = [ConnectionLost("no answer")] * 5

    async def body() -> None:
        async with hub(meters, driver=driver) as h:
            got = await h.send(
                request("create", "EndDeviceControls", payload=controls(DISCONNECT, "m0"))
            )
            assert got.result == "FAILED" and got.by_id == {"m0": ["6.1"]}
            (audit,) = [
                e
                for e in entries(meters, object_type="EndDevice", object_id="m0")
                if e.attribute == "control"
            ]
            assert audit.new_value.startswith("disconnect failed: 6.1")  # type: ignore[union-attr]

    run(body)


def test_control_types_and_bad_control_payloads(meters: Store) -> None:
    assert action_for("3.31.0.23").value == "disconnect"
    assert action_for("0.31.0.18").value == "connect"
    assert action_for("3.36.116.0").value == "clock_sync"

    async def body() -> None:
        async with hub(meters, worker=False) as h:
            empty = await h.send(request("create", "EndDeviceControls"))
            assert empty.codes == ["1.11"]
            none = await h.send(request("create", "EndDeviceControls", payload=EndDeviceControls()))
            assert none.codes == ["2.6"]
            nobody = await h.send(
                request("create", "EndDeviceControls", payload=controls(DISCONNECT))
            )
            assert nobody.result == "FAILED" and nobody.codes == ["2.6"]
            later = EndDeviceTiming(
                interval=DateTimeInterval(start=datetime.now(UTC) + timedelta(hours=2))
            )
            scheduled = await h.send(
                request(
                    "create",
                    "EndDeviceControls",
                    payload=controls(DISCONNECT, "m0", primary_device_timing=later),
                )
            )
            assert scheduled.by_id == {"m0": ["2.5"]} and h.driver.controls == {}

    run(body)


# --- get EndDeviceEvents -------------------------------------------------------------------


def test_get_end_device_events_from_the_store(meters: Store) -> None:
    store_events(
        meters,
        [
            EndDeviceEvent("m0", "3.26.0.85", T0 + timedelta(hours=1), {"phase": "L1"}),
            EndDeviceEvent("m0", "3.12.29.39", T0 + timedelta(hours=2)),
            EndDeviceEvent("m1", "3.26.0.85", T0 + timedelta(hours=3)),
        ],
    )

    async def body() -> None:
        async with hub(meters, worker=False) as h:
            query = GetEndDeviceEvents(
                meters=[ObjectRef("m0"), ObjectRef("m1"), ObjectRef("m9")],
                event_types=[ObjectRef("3.26.0.85")],
                time_schedules=[DAY],
            )
            got = await h.send(request("get", "EndDeviceEvents", get=query), READER)
            assert got.result == "PARTIAL" and got.by_id == {"m9": ["4.1"]}
            events = got.message.payload.document.events  # type: ignore[union-attr]
            assert [(e.asset.mrid, e.event_type) for e in events] == [
                ("m0", "3.26.0.85"),
                ("m1", "3.26.0.85"),
            ]
            assert [(d.name, d.value) for d in events[0].details] == [("phase", "L1")]
            no_query = await h.send(request("get", "EndDeviceEvents"))
            assert no_query.codes == ["2.6"]

    run(body)


def test_connexo_get_end_device_events_sample(store: Store, fixtures_dir: Path) -> None:
    sample = fixtures_dir / "connexo/samples/comu/getenddeviceevents/GetEndDeviceEventsRequest.xml"
    mrid = "a13d9a4c-3de7-47f5-8e8d-9b50cf29f8a5"
    create_devices(store, [Device(mrid), Device("other", name="SPE01000003")], who="test")
    store_events(store, [EndDeviceEvent(mrid, "3.26.0.85", datetime(2017, 10, 5, tzinfo=UTC))])

    async def body() -> None:
        async with hub(store, worker=False) as h:
            got = await h.send(sample.read_bytes(), READER)
            assert got.result == "OK"
            assert [e.asset.mrid for e in got.message.payload.document.events] == [mrid]  # type: ignore[union-attr]

    run(body)


# --- create MeterReadings ------------------------------------------------------------------


def test_pushed_meter_readings_are_ingested(meters: Store) -> None:
    stamp = T0 + timedelta(days=2)
    document = MeterReadings(
        meter_readings=[
            MeterReading(
                meter=ObjectRef("m2"),
                readings=[Reading(RT_REGISTER_KWH, Decimal("1234.567"), stamp)],
                interval_blocks=[
                    IntervalBlock(
                        RT_15MIN_KWH,
                        [
                            IntervalReading(stamp + timedelta(minutes=15), Decimal("0.25")),
                            IntervalReading(stamp + timedelta(minutes=30), Decimal("0.5")),
                        ],
                    )
                ],
            ),
            MeterReading(
                meter=ObjectRef("ghost"), readings=[Reading(RT_REGISTER_KWH, Decimal("1"), stamp)]
            ),
        ]
    )

    async def body() -> None:
        async with hub(meters, worker=False) as h:
            got = await h.send(
                request("create", "MeterReadings", payload=document, message_id="push-1"),
                OPERATOR,
            )
            assert got.result == "PARTIAL" and got.by_id == {"ghost": ["4.1"], "m2": ["0.0"]}
            series = read_one(meters, "m2", RT_15MIN_KWH, stamp, stamp + timedelta(hours=1))
            assert [p.value for p in series.points] == [Decimal("0.25"), Decimal("0.5")]
            register = read_one(meters, "m2", RT_REGISTER_KWH, stamp - timedelta(1), stamp)
            assert [p.value for p in register.points] == [Decimal("1234.567")]
            assert (await h.send(request("create", "MeterReadings"), OPERATOR)).codes == ["1.11"]
            refused = await h.send(
                request("create", "MeterReadings", payload=document, message_id="push-2"),
                READER,
            )
            assert refused.codes == ["5.2"]
            bad = MeterReadings(
                meter_readings=[
                    MeterReading(
                        meter=ObjectRef("m2"),
                        readings=[Reading(RT_REGISTER_KWH, Decimal("1"), None)],
                    )
                ]
            )
            missing_time = await h.send(request("create", "MeterReadings", payload=bad))
            assert missing_time.by_id == {"m2": ["2.6"]}

    run(body)


def test_epri_sample_with_a_meter_reading_without_meter_fails(
    meters: Store, fixtures_dir: Path
) -> None:
    sample = (
        fixtures_dir / "openwms-epri/soapui-extracted/MeterConnect_MDMS-6/CreateMeterReadings.xml"
    )

    async def body() -> None:
        async with hub(meters, worker=False) as h:
            got = await h.send(sample.read_bytes(), OPERATOR)
            assert got.result == "FAILED" and got.codes == ["2.6"]
            assert got.message.header.correlation_id == "String"  # type: ignore[union-attr]

    run(body)


# --- MeterReadSchedule ------------------------------------------------------------------------


def schedule_document(
    *mrids: str, every: Decimal | None = Decimal(3600), disabled: bool | None = None
) -> MeterReadSchedule:
    start = datetime.now(UTC).replace(microsecond=0)
    return MeterReadSchedule(
        end_devices=[ObjectRef(mrid=m) for m in mrids],
        reading_types=[ObjectRef(mrid=RT_REGISTER_KWH)] if mrids else [],
        time_schedules=[
            TimeSchedule(
                schedule_interval=DateTimeInterval(start, start + timedelta(days=30)),
                recurrence_period=every,
                disabled=disabled,
            )
        ],
    )


def test_meter_read_schedules_are_created_changed_and_cancelled(meters: Store) -> None:
    async def body() -> None:
        async with hub(meters, worker=False) as h:
            created = await h.send(
                request(
                    "create",
                    "MeterReadSchedule",
                    payload=schedule_document("m0", "m1"),
                    options=[("ScheduleName", "hourly")],
                ),
                ADMIN,
            )
            assert created.result == "OK" and created.by_id == {"hourly": ["0.0"]}
            record = get_schedule(meters, "hourly")
            assert record.rule == "every 1 hours" and record.devices == ("m0", "m1")
            assert record.action.read == "registers" and record.created_by == "ada"
            off = await h.send(
                request(
                    "change",
                    "MeterReadSchedule",
                    options=[("ScheduleName", "hourly")],
                    payload=MeterReadSchedule(
                        time_schedules=[
                            TimeSchedule(schedule_interval=DateTimeInterval(), disabled=True)
                        ]
                    ),
                ),
                ADMIN,
            )
            assert off.result == "OK" and not get_schedule(meters, "hourly").enabled
            changed = await h.send(
                request(
                    "change",
                    "MeterReadSchedule",
                    ids=["hourly"],
                    payload=schedule_document("m2", every=Decimal(900)),
                ),
                ADMIN,
            )
            assert changed.result == "OK"
            record = get_schedule(meters, "hourly")
            assert record.rule == "every 15 minutes" and record.devices == ("m2",)
            gone = await h.send(request("cancel", "MeterReadSchedule", ids=["hourly"]), ADMIN)
            assert gone.result == "OK" and list_schedules(meters) == []

    run(body)


def test_meter_read_schedule_refusals(meters: Store) -> None:
    async def body() -> None:
        async with hub(meters, worker=False) as h:

            async def send(verb: str, **kw: Any) -> list[str]:
                return (await h.send(request(verb, "MeterReadSchedule", **kw), ADMIN)).codes

            assert await send(
                "create", payload=schedule_document("m0", every=Decimal(61)), ids=["s"]
            ) == ["2.5"]
            assert await send(
                "create", payload=schedule_document("m0", every=Decimal(60)), ids=["s"]
            ) == ["2.5"]  # more often than the minimum interval
            assert await send("create", payload=schedule_document("ghost"), ids=["s"]) == ["4.1"]
            assert await send("create", payload=schedule_document(), ids=["s"]) == ["2.6"]
            assert await send("create") == ["1.11"]
            assert await send("cancel") == ["2.6"]  # no name
            assert await send("cancel", ids=["never-made"]) == ["2.5"]
            assert await send("get") == ["3.3"]
            assert list_schedules(meters) == []

    run(body)


# --- authorisation and refusals ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("principal", "verb", "noun", "allowed"),
    [
        (READER, "get", "MeterReadings", True),
        (READER, "create", "EndDeviceControls", False),
        (READER, "create", "MeterReadSchedule", False),
        (OPERATOR, "create", "EndDeviceControls", True),
        (OPERATOR, "create", "MeterReadSchedule", False),
        (ADMIN, "create", "MeterReadSchedule", True),
        (Principal("none", frozenset(), "basic"), "get", "MeterReadings", False),
    ],
)
def test_authorisation_per_role(
    meters: Store, principal: Principal, verb: str, noun: str, allowed: bool
) -> None:
    payloads = {
        "EndDeviceControls": controls(CONNECT, "m0"),
        "MeterReadSchedule": schedule_document("m0"),
    }
    data = request(
        verb,
        noun,
        payload=payloads.get(noun),
        options=[("ScheduleName", "auth")],
        get=get_readings("m0", period=DAY) if verb == "get" else None,
        message_id="auth-1",
    )

    async def body() -> None:
        async with hub(meters) as h:
            got = await h.send(data, principal)
            if allowed:
                assert got.result == "OK", got.codes
            else:
                assert got.result == "FAILED" and got.codes == ["5.2"]
                assert principal.name in (got.message.reply.errors[0].reason or "")  # type: ignore[union-attr]
                assert h.driver.controls == {}
                assert MessageLog(meters).find("auth-1") is None

    run(body)
    if noun == "EndDeviceControls" and not allowed:
        (refusal,) = entries(meters, object_type="EndDeviceControls")
        assert refusal.who == principal.name and "not authorised" in (refusal.new_value or "")


def test_unknown_noun_verb_and_bad_messages(meters: Store, fixtures_dir: Path) -> None:
    disconnect_sample = (
        fixtures_dir / "openwms-epri/soapui-extracted/Disconnect-soapui-project/"
        "CreateEndDeviceControls.xml"
    )
    xxe = (
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b"<RequestMessage xmlns='http://iec.ch/TC57/2011/schema/message'>&x;</RequestMessage>"
    )
    bad_verb = request("create", "MeterReadings").replace(b">create<", b">shout<")

    async def body() -> None:
        async with hub(meters, worker=False) as h:
            cases = [
                (request("get", "Invoices", correlation_id="c-9"), "3.1"),
                (bad_verb, "3.2"),
                (request("delete", "MeterReadings"), "3.3"),
                (request("reply", "EndDeviceControls"), "3.3"),
                (b"this is not XML", "1.1"),
                (xxe, "1.3"),
                (b"<foo/>", "1.8"),
                (disconnect_sample.read_bytes(), "2.4"),  # EndDeviceControlType ref="?"
            ]
            for data, code in cases:
                got = await h.send(data, SYSTEM)
                assert (got.result, got.codes) == ("FAILED", [code]), data[:80]
            unknown = await h.send(cases[0][0])
            assert unknown.message.header.correlation_id == "c-9"  # type: ignore[union-attr]
            assert unknown.message.header.noun == "Invoices"  # type: ignore[union-attr]

    run(body)


# --- asynchronous replies ------------------------------------------------------------------


def test_async_request_acknowledged_then_replied_through_the_outbox(meters: Store) -> None:
    async def body() -> None:
        async with hub(meters) as h:
            data = request(
                "create",
                "EndDeviceControls",
                payload=controls(DISCONNECT, "m1"),
                message_id="async-1",
                correlation_id="corr-a",
                reply_to=REPLY_TO,
            )
            ack = await h.send(data, OPERATOR)
            assert ack.deferred and ack.result == "OK" and ack.codes == ["0.0"]
            assert ack.message.header.correlation_id == "corr-a"  # type: ignore[union-attr]
            logged = MessageLog(meters).find("async-1")
            assert logged is not None and logged.async_reply and logged.reply_address == REPLY_TO
            await h.router.drain(10)
            (item,) = h.outbox.items()
            assert (item.kind, item.address, item.correlation_id) == ("reply", REPLY_TO, "corr-a")
            assert item.soap_action and item.soap_action.endswith("CreatedEndDeviceControls")
            final = answer(RouterReply(item.body, "OK"))
            assert final.by_id == {"m1": ["0.0"]}
            assert final.message.header.message_id == item.message_id  # type: ignore[union-attr]
            answered = MessageLog(meters).find("async-1")
            assert answered is not None and answered.answered and answered.reply == item.body
            # the same request again: the same acknowledgement, nothing run, nothing queued
            again = await h.router.handle(data, principal=OPERATOR, channel="soap")
            assert again.deferred and again.body == logged.ack
            await h.router.drain(10)
            assert len(h.outbox.items()) == 1 and dict(h.driver.controls) == {"m1": 1}
            # asked synchronously, the same MessageID gives the final reply
            sync_copy = request(
                "create",
                "EndDeviceControls",
                payload=controls(DISCONNECT, "m1"),
                message_id="async-1",
                correlation_id="corr-a",
            )
            assert (
                await h.router.handle(sync_copy, principal=OPERATOR, channel="soap")
            ).body == item.body

    run(body)


def test_async_get_without_message_id_and_bad_reply_addresses(meters: Store) -> None:
    async def body() -> None:
        async with hub(meters, worker=False) as h:
            get = get_readings("m0", period=DAY)
            ack = await h.send(
                request("get", "MeterReadings", get=get, reply_to=REPLY_TO, correlation_id=None)
            )
            assert ack.deferred
            await h.router.drain(10)
            (item,) = h.outbox.items()
            final = answer(RouterReply(item.body, "OK"))
            assert final.result == "OK" and item.soap_action is None
            # no MessageID, no CorrelationID: correlated to nothing, but delivered
            assert item.correlation_id is None
            for address in ("NONE", "ftp://host/x", "http://"):
                refused = await h.send(request("get", "MeterReadings", get=get, reply_to=address))
                assert refused.result == "FAILED" and refused.codes == ["1.9"]
            assert len(h.outbox.items()) == 1

    run(body)


def test_without_an_outbox_an_async_request_is_answered_at_once(meters: Store) -> None:
    async def body() -> None:
        router = Router(meters, None)
        got = answer(
            await router.handle(
                request(
                    "get", "MeterReadings", get=get_readings("m0", period=DAY), reply_to=REPLY_TO
                ),
                principal=READER,
                channel="file",
            )
        )
        assert not got.deferred and got.result == "OK" and "0.1" in got.codes
        no_headend = answer(
            await router.handle(
                request("create", "EndDeviceControls", payload=controls(CONNECT, "m0")),
                principal=OPERATOR,
                channel="file",
            )
        )
        assert no_headend.codes == ["8.1"]

    run(body)


def test_resume_finishes_accepted_requests_after_a_restart(meters: Store) -> None:
    """The first router accepts an asynchronous disconnect and dies before the job runs; a
    new router resumes it: the job made before is awaited (not a second one), the switch
    operates once and the reply lands in the outbox once."""
    driver = FakeDriver()
    bus = TaskBus.from_url("memory://", namespace=f"router-{uuid.uuid4().hex[:10]}")
    data = request(
        "create",
        "EndDeviceControls",
        payload=controls(DISCONNECT, "m0"),
        message_id="restart-1",
        reply_to=REPLY_TO,
    )
    sync_data = request(
        "create", "EndDeviceControls", payload=controls(DISCONNECT, "m1"), message_id="restart-2"
    )

    async def body() -> None:
        async with hub(meters, worker=False, bus=bus, driver=driver) as first:
            ack = await first.send(data, OPERATOR)
            assert ack.deferred
            await asyncio.sleep(0.1)  # the job is submitted; no worker runs it
            for task in list(first.router._tasks):
                task.cancel()  # the process dies
            await asyncio.gather(*first.router._tasks, return_exceptions=True)
        # a synchronous request recorded but never answered (died while running)
        MessageLog(meters).claim(
            message_id="restart-2",
            verb="create",
            noun="EndDeviceControls",
            principal=OPERATOR,
            channel="soap",
            request=sync_data,
        )
        assert [e.message_id for e in MessageLog(meters).unanswered()] == ["restart-1", "restart-2"]
        async with hub(meters, bus=bus, driver=driver) as second:
            assert await second.router.resume() == 2
            assert MessageLog(meters).unanswered() == []
            (item,) = second.outbox.items()
            assert answer(RouterReply(item.body, "OK")).by_id == {"m0": ["0.0"]}
            assert dict(driver.controls) == {"m0": 1, "m1": 1}
            again = await second.send(sync_data, OPERATOR)
            assert again.by_id == {"m1": ["0.0"]} and dict(driver.controls)["m1"] == 1
            assert await second.router.resume() == 0

    try:
        run(body)
    finally:
        bus.delete()
        bus.close()
