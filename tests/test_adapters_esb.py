"""The ESB edge on memory://, through the real router and a real store: requests in and
replies out (correlation, reply_to, ReplyAddress, the default reply queue), idempotency,
poison messages to the dead-letter queue with their reason, events on the topic exchange,
and a dead broker (reconnect with backoff, nothing acknowledged early)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import pytest
from esb_helpers import (
    A_RESPONSE,
    HOSTILE,
    WRONG_NAMESPACE,
    bus_settings,
    client,
    get_readings_request,
    is_reply_ok,
    reading_count,
    readings_store,
    unique,
    unknown_noun_request,
    wait_connected,
)
from kombu import Exchange
from mdm_samples import RT_15MIN_KWH, T0

from adapters.esb import (
    HEADER_CODE,
    HEADER_QUEUE,
    HEADER_REASON,
    EsbConsumer,
    EsbSettings,
    EventForwarder,
    EventPublisher,
    reply_queue_of,
    routing_key,
)
from cim.envelope import MessageKind, Result
from cim.xmlsafe import XmlLimits
from headend.access import Principal, Role
from headend.router import Router
from mdm.database import Store, open_store


@pytest.fixture(scope="module")
def db() -> Iterator[Store]:
    """One store for the module (migrating one costs ~0.3 s); tests only add to it."""
    store = open_store("sqlite://")
    try:
        yield readings_store(store)
    finally:
        store.close()


@contextlib.asynccontextmanager
async def consuming(
    router: Router, settings: EsbSettings, **options: Any
) -> AsyncIterator[EsbConsumer]:
    consumer = EsbConsumer(router, settings, asyncio.get_running_loop(), **options)
    consumer.start()
    try:
        await wait_connected(consumer)
        yield consumer
    finally:
        await asyncio.to_thread(consumer.stop, 10)


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_request_answered_to_reply_to_with_correlation_id(db: Store) -> None:
    settings = bus_settings("memory://")

    async def scenario() -> None:
        async with consuming(Router(db, None), settings) as consumer:
            with client(settings) as bus:
                mine = bus.listen(unique("mine")).name
                bus.publish(get_readings_request("m-1"), reply_to=mine, correlation_id="corr-9")
                (got,) = await asyncio.to_thread(bus.collect, 1)
                assert got.queue == mine
                assert got.properties["correlation_id"] == "corr-9"
                assert got.content_type == "application/xml"
                assert got.headers["openhes-result"] == "OK"
                assert is_reply_ok(got)
                assert reading_count(got) == 4
                assert got.reply.header.correlation_id == "m-1"
                assert got.properties["message_id"] == got.reply.header.message_id
                # Acknowledged: nothing left on the request queue, nothing dead-lettered.
                assert await asyncio.to_thread(bus.depth, settings.request_queue) == 0
                assert await asyncio.to_thread(bus.depth, settings.dead_letters) == 0
                assert consumer.stats.replied == 1

    run(scenario())


def test_correlation_falls_back_to_message_id_and_reply_address_queue(db: Store) -> None:
    settings = bus_settings("memory://")

    async def scenario() -> None:
        async with consuming(Router(db, None), settings):
            with client(settings) as bus:
                named = bus.listen(unique("named")).name
                mine = bus.listen(unique("mine")).name
                # ReplyAddress only: the reply goes to the queue it names.
                bus.publish(get_readings_request("m-2", reply_address=f"queue:{named}"))
                # reply_to and a bare-name ReplyAddress: both get the reply.
                bus.publish(get_readings_request("m-3", reply_address=named), reply_to=mine)
                await asyncio.to_thread(bus.collect, 3)
                on_named, on_mine = bus.on(named), bus.on(mine)
                assert sorted(r.properties["correlation_id"] for r in on_named) == ["m-2", "m-3"]
                assert [r.properties["correlation_id"] for r in on_mine] == ["m-3"]
                assert all(is_reply_ok(r) for r in bus.received)

    run(scenario())


def test_request_naming_no_destination_goes_to_the_default_reply_queue(db: Store) -> None:
    settings = bus_settings("memory://")

    async def scenario() -> None:
        async with consuming(Router(db, None), settings):
            with client(settings) as bus:
                bus.listen(settings.reply_queue)
                bus.publish(get_readings_request("m-4"))
                (got,) = await asyncio.to_thread(bus.collect, 1)
                assert got.queue == settings.reply_queue
                assert got.properties["correlation_id"] == "m-4"

    run(scenario())


def test_router_refusals_are_replies_not_poison(db: Store) -> None:
    settings = bus_settings("memory://")
    reader_only = Principal("esb-reader", frozenset({Role.READER}), "esb")

    async def scenario() -> None:
        async with consuming(Router(db, None), settings, principal=reader_only) as consumer:
            with client(settings) as bus:
                mine = bus.listen(unique("mine")).name
                bus.publish(unknown_noun_request(), reply_to=mine)
                control = (
                    get_readings_request("m-5")
                    .replace(b"<Verb>get</Verb>", b"<Verb>create</Verb>")
                    .replace(b"MeterReadings</Noun>", b"EndDeviceControls</Noun>")
                )
                bus.publish(control, reply_to=mine)
                got = await asyncio.to_thread(bus.collect, 2)
                codes = sorted(r.reply.reply.errors[0].code for r in got)
                assert codes == ["3.1", "5.2"]  # unknown noun; the principal is a reader
                assert all(r.reply.reply.result is Result.FAILED for r in got)
                assert await asyncio.to_thread(bus.depth, settings.dead_letters) == 0
                assert consumer.stats.dead_lettered == 0

    run(scenario())


POISON = [
    ("not XML", b"this is not XML", "1.1", True),
    ("hostile", HOSTILE, "1.3", True),
    ("wrong namespace", WRONG_NAMESPACE, "1.8", True),
    ("empty", b"", "1.1", True),
    ("a reply on the request queue", A_RESPONSE, "1.8", False),
]


@pytest.mark.parametrize(
    ("body", "code", "answered"), [p[1:] for p in POISON], ids=[p[0] for p in POISON]
)
def test_poison_goes_to_the_dead_letter_queue_with_its_reason(
    db: Store, body: bytes, code: str, answered: bool
) -> None:
    settings = bus_settings("memory://")

    async def scenario() -> None:
        async with consuming(Router(db, None), settings) as consumer:
            with client(settings) as bus:
                mine = bus.listen(unique("mine")).name
                bus.listen(settings.dead_letters)
                bus.publish(body, reply_to=mine, correlation_id="bad-1", headers={"origin": "test"})
                await asyncio.to_thread(bus.collect, 2 if answered else 1)
                (dead,) = bus.on(settings.dead_letters)
                assert dead.body == body
                assert dead.headers[HEADER_CODE] == code
                assert dead.headers[HEADER_REASON].startswith(code + " ")
                assert dead.headers[HEADER_QUEUE] == settings.request_queue
                assert dead.headers["origin"] == "test"  # the original headers are kept
                assert dead.properties["correlation_id"] == "bad-1"
                replies = bus.on(mine)
                if answered:  # the sender hears why, correlated
                    (reply,) = replies
                    assert reply.properties["correlation_id"] == "bad-1"
                    assert reply.reply.reply.result is Result.FAILED
                    assert reply.reply.reply.errors[0].code == code
                else:  # a reply is never answered: no reply loops
                    time.sleep(0.05)
                    await asyncio.to_thread(bus.collect, 2, 0.1)
                    assert bus.on(mine) == []
                assert await asyncio.to_thread(bus.depth, settings.request_queue) == 0
                assert consumer.stats.dead_lettered == 1

    run(scenario())


def test_too_large_undecodable_and_redelivered_too_often_are_poison(db: Store) -> None:
    settings = bus_settings("memory://", limits=XmlLimits(max_bytes=2000), max_deliveries=3)

    async def scenario() -> None:
        async with consuming(Router(db, None, limits=settings.limits), settings):
            with client(settings) as bus:
                bus.listen(settings.dead_letters)
                big = get_readings_request("big").replace(
                    b"<Header>", b"<Header><Comment>" + b"x" * 3000 + b"</Comment>"
                )
                bus.publish(big, correlation_id="too-large")
                bus.publish(
                    b"\x00\x01not gzip",
                    correlation_id="undecodable",
                    headers={"compression": "application/x-gzip"},
                )
                bus.publish(
                    get_readings_request("loop"),
                    correlation_id="looping",
                    headers={"x-delivery-count": 3},
                )
                # A compressed request that decompresses fine is served.
                bus.publish(
                    zlib.compress(get_readings_request("zipped")),
                    correlation_id="zipped",
                    reply_to=settings.reply_queue,
                    headers={"compression": "application/x-gzip"},
                )
                bus.listen(settings.reply_queue)
                await asyncio.to_thread(bus.collect, 4)
                dead = {r.properties["correlation_id"]: r for r in bus.on(settings.dead_letters)}
                assert dead["too-large"].headers[HEADER_CODE] == "1.4"
                assert dead["undecodable"].headers[HEADER_CODE] == "1.2"
                assert "decompressed" in dead["undecodable"].headers[HEADER_REASON]
                assert dead["undecodable"].body == b"\x00\x01not gzip"
                assert dead["undecodable"].headers["x-openhes-compression"] == "application/x-gzip"
                assert dead["looping"].headers[HEADER_CODE] == "8.1"
                assert "delivered 3 times" in dead["looping"].headers[HEADER_REASON]
                (zipped,) = bus.on(settings.reply_queue)
                assert zipped.properties["correlation_id"] == "zipped" and is_reply_ok(zipped)

    run(scenario())


class _CrashingRouter(Router):
    """Fault injection: the real router, made to raise (Router.handle itself never does)."""

    async def handle(self, data: bytes, *, principal: Principal, channel: str) -> Any:
        raise RuntimeError("injected crash")


class _SlowRouter(Router):
    """Fault injection: the real router, answering late."""

    async def handle(self, data: bytes, *, principal: Principal, channel: str) -> Any:
        await asyncio.sleep(2.0)
        return await super().handle(data, principal=principal, channel=channel)


def test_router_crash_and_router_time_out_are_dead_lettered(db: Store) -> None:
    crash = bus_settings("memory://")
    slow = bus_settings("memory://", handle_timeout=0.1, stop_grace=0.1)

    async def scenario() -> None:
        async with consuming(_CrashingRouter(db, None), crash):
            with client(crash) as bus:
                bus.listen(crash.dead_letters)
                bus.publish(get_readings_request("crash"), correlation_id="crash")
                (dead,) = await asyncio.to_thread(bus.collect, 1)
                assert dead.headers[HEADER_CODE] == "8.1"
                assert "router crash: RuntimeError" in dead.headers[HEADER_REASON]
        async with consuming(_SlowRouter(db, None), slow):
            with client(slow) as bus:
                bus.listen(slow.dead_letters)
                bus.publish(get_readings_request("slow"), correlation_id="slow")
                (dead,) = await asyncio.to_thread(bus.collect, 1)
                assert "did not answer within" in dead.headers[HEADER_REASON]

    run(scenario())


def test_same_message_id_twice_runs_once_and_gets_the_first_reply(db: Store) -> None:
    settings = bus_settings("memory://")
    push = (
        b'<?xml version="1.0" encoding="UTF-8"?>'
        b'<RequestMessage xmlns="http://iec.ch/TC57/2011/schema/message"><Header>'
        b"<Verb>create</Verb><Noun>MeterReadings</Noun><MessageID>push-1</MessageID></Header>"
        b'<Payload><MeterReadings xmlns="http://iec.ch/TC57/2011/MeterReadings#"><MeterReading>'
        b"<Meter><mRID>M1</mRID></Meter><Readings><timeStamp>2024-02-01T00:00:00Z</timeStamp>"
        b'<value>12.5</value><ReadingType ref="0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0"/>'
        b"</Readings></MeterReading></MeterReadings></Payload></RequestMessage>"
    )

    async def scenario() -> None:
        async with consuming(Router(db, None), settings):
            with client(settings) as bus:
                mine = bus.listen(unique("mine")).name
                bus.publish(push, reply_to=mine, correlation_id="first")
                await asyncio.to_thread(bus.collect, 1)
                bus.publish(push, reply_to=mine, correlation_id="second")
                first, second = await asyncio.to_thread(bus.collect, 2)
                assert first.body == second.body  # the first reply, again
                assert [
                    first.properties["correlation_id"],
                    second.properties["correlation_id"],
                ] == [
                    "first",
                    "second",
                ]

    run(scenario())


def test_events_are_published_with_noun_verb_routing_keys() -> None:
    settings = bus_settings("memory://")
    body = (
        b'<EventMessage xmlns="http://iec.ch/TC57/2011/schema/message"><Header><Verb>created'
        b"</Verb><Noun>MeterReadings</Noun><MessageID>ev-1</MessageID></Header></EventMessage>"
    )
    publisher = EventPublisher(settings)
    try:
        with client(settings) as bus:
            exchange = Exchange(settings.event_exchange, type="topic", durable=True)
            exchange(bus.conn.default_channel).declare()
            readings = bus.listen(unique("mdm"), exchange=exchange, routing_key="meterreadings.*")
            everything = bus.listen(unique("all"), exchange=exchange, routing_key="#")
            assert publisher.publish("MeterReadings", "created", body)
            assert publisher.publish("EndDeviceEvents", "created", body.replace(b"ev-1", b"ev-2"))
            bus.collect(3)
            (on_readings,) = bus.on(readings.name)
            assert on_readings.routing_key == "meterreadings.created"
            assert on_readings.body == body
            assert on_readings.properties["message_id"] == "ev-1"
            assert on_readings.headers == {"noun": "MeterReadings", "verb": "created"}
            keys = sorted(r.routing_key for r in bus.on(everything.name))
            assert keys == ["enddeviceevents.created", "meterreadings.created"]
    finally:
        publisher.close()
    assert routing_key("EndDeviceControls", "Changed") == "enddevicecontrols.changed"


def test_reply_address_forms() -> None:
    assert reply_queue_of("queue:erp.replies") == "erp.replies"
    assert reply_queue_of("queue://erp.replies") == "erp.replies"
    assert reply_queue_of("erp.replies") == "erp.replies"
    assert reply_queue_of("https://erp.example/reply") is None
    assert reply_queue_of("queue:bad name") is None
    assert reply_queue_of("") is None and reply_queue_of(None) is None


def test_dead_broker_is_retried_with_backoff_and_nothing_is_acknowledged(db: Store) -> None:
    # Nothing listens on port 9 of loopback: every connection attempt is refused.
    settings = bus_settings(
        "amqp://guest:guest@127.0.0.1:9//", retry_start=0.01, retry_max=0.04, connect_timeout=0.5
    )

    async def scenario() -> None:
        consumer = EsbConsumer(Router(db, None), settings, asyncio.get_running_loop())
        consumer.start()
        deadline = time.monotonic() + 5
        while consumer.stats.reconnects < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert consumer.stats.reconnects >= 4
        assert not consumer.stats.connected.is_set()
        started = time.monotonic()
        await asyncio.to_thread(consumer.stop, 5)
        assert time.monotonic() - started < 1.0  # stops promptly while backing off

    run(scenario())
    publisher = EventPublisher(settings)
    started = time.monotonic()
    assert publisher.publish("MeterReadings", "created", b"<x/>", timeout=0.2) is False
    assert 0.15 < time.monotonic() - started < 2.0
    assert publisher.retries >= 2
    publisher.close()


def test_many_requests_in_flight_are_all_answered(db: Store) -> None:
    settings = bus_settings("memory://", prefetch=8)

    async def scenario() -> None:
        with client(settings) as bus:
            mine = bus.listen(unique("mine")).name
            for number in range(10):
                bus.publish(get_readings_request(f"n-{number}"), reply_to=mine)
            async with consuming(Router(db, None), settings):
                await asyncio.to_thread(bus.collect, 10)
            assert len(bus.on(mine)) == 10
            assert await asyncio.to_thread(bus.depth, settings.request_queue) == 0

    run(scenario())


def test_headend_events_are_forwarded_as_event_messages(db: Store) -> None:
    from headend.events import ControlDone, JobFinished, ReadingsStored

    settings = bus_settings("memory://")
    publisher = EventPublisher(settings)
    forwarder = EventForwarder(db, publisher)
    forwarder.start()
    try:
        with client(settings) as bus:
            exchange = Exchange(settings.event_exchange, type="topic", durable=True)
            exchange(bus.conn.default_channel).declare()
            everything = bus.listen(unique("all"), exchange=exchange, routing_key="#")
            forwarder(
                ReadingsStored(
                    "job-1",
                    "M1",
                    T0 + timedelta(minutes=15),
                    T0 + timedelta(hours=1),
                    4,
                    (RT_15MIN_KWH,),
                )
            )
            forwarder(ControlDone("job-2", "M1", "disconnect", "disconnected", True, None))
            forwarder(JobFinished("job-1", "completed", {"succeeded": 1}))  # not notified
            assert forwarder.join(5)
            bus.collect(2)
            got = {r.routing_key: r for r in bus.on(everything.name)}
            assert sorted(got) == ["enddeviceevents.created", "meterreadings.created"]
            readings = got["meterreadings.created"].reply
            assert readings.kind is MessageKind.EVENT
            assert reading_count(got["meterreadings.created"]) == 4
            assert got["meterreadings.created"].properties["message_id"] == (
                readings.header.message_id
            )
            assert forwarder.failed == 0 and publisher.published == 2
    finally:
        forwarder.stop()
        publisher.close()
