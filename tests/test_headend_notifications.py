"""HeadEndEvents become schema-valid EventMessages (headend.notifications), and subscriptions
turn them into outbox rows (headend.subscriptions)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from mdm_samples import RT_15MIN_KWH, RT_REGISTER_KWH, T0, interval_rows

from cim.errors import CimError
from cim.messages import parse_message
from cim.validation import validate_bytes
from headend.events import ControlDone, EventsStored, JobFinished, ReadingsStored
from headend.notifications import (
    control_event_type,
    event_message,
    message_id_for,
    notifications_of,
)
from headend.outbox import Outbox
from headend.subscriptions import (
    Notifier,
    Subscription,
    add_subscription,
    list_subscriptions,
    remove_subscription,
    set_enabled,
)
from mdm.database import open_store
from mdm.devices import Device, create_devices
from mdm.events import EndDeviceEvent as StoredEvent
from mdm.events import store_events
from mdm.ingest import ingest
from mdm.normalise import RawValue

pytest_plugins = ["mdm_conftest"]


@pytest.fixture
def memory_store():
    """For tests where the database does not matter (nothing read, or refused before)."""
    db = open_store("sqlite://")
    yield db
    db.close()


@pytest.fixture
def fleet(store):
    create_devices(store, [Device("M1"), Device("M2")], who="test")
    ingest(store, interval_rows("M1", 4))
    ingest(store, interval_rows("M2", 4, values=[7, 7, 7, 7]))  # another meter: not sent
    ingest(
        store,
        [RawValue("M1", "1-0:1.8.0", T0 + timedelta(hours=1), 123456, "Wh", source_task="t1")],
    )
    return store


def readings_event(**changes) -> ReadingsStored:
    values = dict(
        job_id="job1",
        mrid="M1",
        start=T0 + timedelta(minutes=15),
        end=T0 + timedelta(hours=1),
        count=5,
        reading_types=(RT_15MIN_KWH, RT_REGISTER_KWH),
    )
    values.update(changes)
    return ReadingsStored(**values)


def test_readings_stored_becomes_a_valid_created_meter_readings(fleet):
    [(noun, verb, body)] = event_message(fleet, readings_event())
    assert (noun, verb) == ("MeterReadings", "created")
    assert validate_bytes(body) == []
    message = parse_message(body).message
    assert message.kind.value == "EventMessage"
    assert (message.header.verb, message.header.noun) == ("created", "MeterReadings")
    assert message.header.message_id == message_id_for(readings_event(), noun, verb)
    assert [(p.name, p.value) for p in message.header.properties] == [("jobId", "job1")]
    document = message.payload.document
    blocks = [b for mr in document.meter_readings for b in mr.interval_blocks]
    registers = [r for mr in document.meter_readings for r in mr.readings]
    assert {mr.meter.mrid for mr in document.meter_readings} == {"M1"}
    # The window includes the event's first timestamp (start is the earliest stored).
    assert [r.value for r in blocks[0].readings] == [
        Decimal("1.000"),
        Decimal("1.001"),
        Decimal("1.002"),
        Decimal("1.003"),
    ]
    assert blocks[0].readings[0].timestamp == T0 + timedelta(minutes=15)
    assert [(r.reading_type, r.value) for r in registers] == [(RT_REGISTER_KWH, Decimal("123.456"))]
    described = {rt.mrid: rt for rt in document.reading_types}
    assert set(described) == {RT_15MIN_KWH, RT_REGISTER_KWH}
    assert described[RT_15MIN_KWH].unit == "72" and described[RT_15MIN_KWH].names


def test_readings_without_a_list_of_reading_types_sends_what_is_stored(fleet):
    [(_, _, body)] = event_message(fleet, readings_event(reading_types=()))
    document = parse_message(body).message.payload.document
    assert {rt.mrid for rt in document.reading_types} == {RT_15MIN_KWH, RT_REGISTER_KWH}


def test_nothing_stored_sends_nothing(fleet):
    assert event_message(fleet, readings_event(count=0)) == []
    later = T0 + timedelta(days=3)
    assert event_message(fleet, readings_event(start=later, end=later)) == []
    assert event_message(fleet, JobFinished("job1", "completed", {"succeeded": 1})) == []
    assert notifications_of(object()) == ()


def test_message_ids_are_stable_and_scoped(fleet):
    first = event_message(fleet, readings_event())[0][2]
    again = event_message(fleet, readings_event())[0][2]
    other = event_message(fleet, readings_event(), scope="mdm")[0][2]
    ids = [parse_message(b).message.header.message_id for b in (first, again, other)]
    assert ids[0] == ids[1] != ids[2]


def test_events_stored_becomes_created_end_device_events(fleet):
    stored = (
        StoredEvent("M1", "3.26.0.85", T0 + timedelta(minutes=5), {"dlms_code": 1, "log": "std"}),
        StoredEvent("M1", "3.12.29.39", T0 + timedelta(minutes=9)),
    )
    store_events(fleet, stored)
    [(noun, verb, body)] = event_message(fleet, EventsStored("job2", "M1", stored))
    assert (noun, verb) == ("EndDeviceEvents", "created")
    assert validate_bytes(body) == []
    events = parse_message(body).message.payload.document.events
    assert [(e.event_type, e.created, e.asset.mrid) for e in events] == [
        ("3.26.0.85", T0 + timedelta(minutes=5), "M1"),
        ("3.12.29.39", T0 + timedelta(minutes=9), "M1"),
    ]
    assert {(d.name, d.value) for d in events[0].details} == {("dlms_code", "1"), ("log", "std")}
    assert events[0].issuer_tracking_id == "job2"
    assert events[0].mrid != events[1].mrid


@pytest.mark.parametrize(
    ("action", "state", "verified", "error", "expected"),
    [
        ("disconnect", "disconnected", True, None, "3.31.0.68"),
        ("disconnect", "connected", False, None, "3.31.0.84"),
        ("connect", "connected", True, None, "3.31.0.42"),
        ("connect", "ready_for_reconnection", True, None, "3.31.0.11"),
        ("connect", None, False, "6.1", "3.31.0.67"),
        ("arm", "ready_for_reconnection", True, None, "3.31.0.11"),
        ("demand_reset", None, True, None, "3.8.0.214"),
        ("clock_sync", None, False, "7.2", "3.36.116.85"),
        ("something_new", None, True, None, "3.0.0.24"),
    ],
)
def test_control_results_as_end_device_events(
    memory_store, action, state, verified, error, expected
):
    event = ControlDone("job3", "M9", action, state, verified, error)
    [(noun, verb, body)] = event_message(memory_store, event)
    assert (noun, verb) == ("EndDeviceEvents", "created")
    assert validate_bytes(body) == []
    [sent] = parse_message(body).message.payload.document.events
    assert sent.event_type == expected == control_event_type(action, state, verified and not error)
    details = {d.name: d.value for d in sent.details}
    assert details["action"] == action and details["jobId"] == "job3"
    assert details.get("errorCode") == error
    assert sent.asset.mrid == "M9"


def test_correlation_id_is_carried_when_the_event_has_one(memory_store):
    @dataclass(frozen=True)
    class ControlDone:  # an event type that carries a correlation id (same name and fields)
        job_id: str
        mrid: str
        action: str
        state: str | None
        verified: bool
        error_code: str | None
        correlation_id: str

    [(_, _, body)] = event_message(
        memory_store, ControlDone("j", "M1", "disconnect", "disconnected", True, None, "corr-7")
    )
    assert parse_message(body).message.header.correlation_id == "corr-7"


# ---------------------------------------------------------------------- subscriptions


def test_subscription_table_crud(store):
    add_subscription(store, "mdm", "http://mdm.example/in", nouns=["MeterReadings"])
    add_subscription(store, "oms", "https://oms.example/in", verbs=["created"], enabled=False)
    add_subscription(store, "mdm", "http://mdm2.example/in", nouns=["MeterReadings"])  # replace
    subs = list_subscriptions(store)
    assert [(s.name, s.address, s.nouns, s.verbs, s.enabled) for s in subs] == [
        ("mdm", "http://mdm2.example/in", ("MeterReadings",), (), True),
        ("oms", "https://oms.example/in", (), ("created",), False),
    ]
    assert set_enabled(store, "oms", True) and not set_enabled(store, "nobody", True)
    assert remove_subscription(store, "mdm") and not remove_subscription(store, "mdm")
    assert [s.name for s in list_subscriptions(store)] == ["oms"]


@pytest.mark.parametrize(
    ("name", "address", "nouns"),
    [
        ("", "http://x.example/", ()),
        ("x" * 101, "http://x.example/", ()),
        ("bad", "ftp://x.example/", ()),
        ("bad", "not a url", ()),
        ("bad", "http://x.example/", ("Meter,Readings",)),
    ],
)
def test_bad_subscriptions_are_refused(memory_store, name, address, nouns):
    with pytest.raises(CimError):
        add_subscription(memory_store, name, address, nouns=nouns)
    assert list_subscriptions(memory_store) == []


def test_subscription_matching():
    sub = Subscription("s", "http://x/", nouns=("meterreadings",), verbs=("CREATED",))
    assert sub.wants("MeterReadings", "created")
    assert not sub.wants("EndDeviceEvents", "created")
    assert Subscription("all", "http://x/").wants("Anything", "changed")
    assert not Subscription("off", "http://x/", enabled=False).wants("MeterReadings", "created")


def test_notifier_enqueues_once_per_interested_subscription(fleet):
    @dataclass(frozen=True)
    class Configured:  # the shape of adapters.config.Subscription
        name: str
        address: str
        nouns: tuple[str, ...] = ()
        verbs: tuple[str, ...] = ()

    add_subscription(fleet, "oms", "http://oms.example/events", nouns=["EndDeviceEvents"])
    add_subscription(fleet, "off", "http://off.example/", enabled=False)
    add_subscription(fleet, "mdm", "http://ignored.example/")  # the configured one wins
    woken = []
    outbox = Outbox(fleet)
    notifier = Notifier(
        fleet,
        outbox,
        configured=[Configured("mdm", "http://mdm.example/mr", ("MeterReadings",))],
        on_enqueued=lambda: woken.append(1),
    )
    assert notifier(readings_event()) == 1
    assert notifier(readings_event()) == 0  # the same event again (another HeadEnd): nothing
    assert notifier(ControlDone("j", "M1", "disconnect", "disconnected", True, None)) == 1
    assert notifier(JobFinished("j", "completed", {})) == 0
    rows = outbox.items()
    assert [(r.subscription, r.address, r.kind, r.soap_action) for r in rows] == [
        (
            "mdm",
            "http://mdm.example/mr",
            "event",
            "http://iec.ch/TC57/2011/MeterReadings/CreatedMeterReadings",
        ),
        (
            "oms",
            "http://oms.example/events",
            "event",
            "http://iec.ch/TC57/2011/EndDeviceEvents/CreatedEndDeviceEvents",
        ),
    ]
    for row in rows:
        assert validate_bytes(row.body) == []
        assert parse_message(row.body).message.header.message_id == row.message_id
    assert len(woken) == 2


def test_notifier_never_raises(store):
    notifier = Notifier(store, configured=[Subscription("mdm", "http://mdm.example/")])
    # M404 is not a device: reading it back fails; the listener logs and carries on.
    event = readings_event(mrid="M404")
    assert notifier(event) == 0
    assert notifier.failures == 1


def test_notifier_refuses_a_configured_bad_address(memory_store):
    with pytest.raises(CimError):
        Notifier(memory_store, configured=[Subscription("x", "mailto:someone@example.com")])


def test_readings_window_includes_a_register_stamped_at_start(fleet):
    at = T0 + timedelta(hours=1)
    [(_, _, body)] = event_message(
        fleet, readings_event(start=at, end=at, count=1, reading_types=(RT_REGISTER_KWH,))
    )
    document = parse_message(body).message.payload.document
    assert [r.timestamp for mr in document.meter_readings for r in mr.readings] == [at]
    assert at.tzinfo is UTC and datetime.now(UTC) > at


# ---------------------------------------------------------------------- end to end


def test_a_job_pushes_its_results_to_subscribers(store):
    """HeadEnd + Worker (fake driver) -> Notifier -> outbox -> Delivery -> Receiver."""
    import asyncio
    import uuid

    from headend_samples import keyring, register

    from adapters.delivery import Delivery, DeliveryPolicy
    from adapters.receiver import Receiver
    from drivers.fake import FakeDriver
    from headend import commands
    from headend.service import HeadEnd, JobRequest
    from headend.taskbus import TaskBus
    from headend.worker import Worker

    register(store)
    bus = TaskBus.from_url("memory://", namespace=f"t{uuid.uuid4().hex[:10]}")
    headend = HeadEnd(store, bus, keyring=keyring())
    outbox = Outbox(store)
    policy = DeliveryPolicy(initial_backoff=0.02, timeout=2, lease=5, poll_interval=0.02)
    delivery = Delivery(outbox, policy=policy)

    async def scenario(receiver: Receiver) -> None:
        add_subscription(store, "mdm", receiver.url("/mdm"), nouns=["MeterReadings"])
        add_subscription(store, "oms", receiver.url("/oms"), nouns=["EndDeviceEvents"])
        headend.add_listener(Notifier(store, outbox, on_enqueued=delivery.wake))
        worker = Worker(store, bus, FakeDriver(), concurrency=10, keyring=keyring())
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(worker.run(stop)),
            asyncio.create_task(delivery.run(stop)),
        ]
        try:
            async with headend:
                read = commands.ReadRegisters(device="M1", obis=("1.0.1.8.0.255",))
                job = headend.submit(JobRequest(read, devices=["M1"]))
                await headend.wait(job.job_id, timeout=20)
                control = commands.Control(device="M1", action="disconnect")
                job = headend.submit(JobRequest(control, devices=["M1"]))
                await headend.wait(job.job_id, timeout=20)
                for _ in range(1000):
                    if len(receiver.messages) >= 2:
                        break
                    await asyncio.sleep(0.01)
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 20)

    try:
        with Receiver() as receiver:
            asyncio.run(scenario(receiver))
            got = {m.path: m for m in receiver.messages}
    finally:
        bus.delete()
        bus.close()
    assert set(got) == {"/mdm", "/oms"}
    readings = got["/mdm"].message
    assert (readings.header.verb, readings.header.noun) == ("created", "MeterReadings")
    assert readings.payload.document.meter_readings[0].meter.mrid == "M1"
    [switch] = got["/oms"].message.payload.document.events
    assert switch.event_type == "3.31.0.68"
    assert got["/oms"].soap_action.endswith("/CreatedEndDeviceEvents")
    assert outbox.counts()["delivered"] == 2
