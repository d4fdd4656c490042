"""The ESB edge against a real RabbitMQ: request in and reply out with the correlation id,
events on the topic exchange received by a bound queue, poison in the dead-letter queue with
its reason, and the broker dropping the consumer's and the publisher's connections (closed
from the server side with ``rabbitmqctl close_connection``; without rabbitmqctl, by shutting
the client's socket) with nothing lost. Queue and exchange names are unique per run and
deleted afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from esb_helpers import (
    HOSTILE,
    bus_settings,
    client,
    get_readings_request,
    is_reply_ok,
    reading_count,
    readings_store,
    unique,
    wait_connected,
)
from kombu import Connection, Exchange

from adapters.esb import (
    HEADER_CODE,
    HEADER_REASON,
    EsbConsumer,
    EsbSettings,
    EventPublisher,
)
from headend.access import Principal
from headend.router import Router
from mdm.database import Store, open_store

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def db() -> Iterator[Store]:
    """One store for the module (migrating one costs ~0.3 s); tests only add to it."""
    store = open_store("sqlite://")
    try:
        yield readings_store(store)
    finally:
        store.close()


@contextlib.asynccontextmanager
async def consuming(router: Router, settings: EsbSettings) -> AsyncIterator[EsbConsumer]:
    consumer = EsbConsumer(router, settings, asyncio.get_running_loop())
    consumer.start()
    try:
        await wait_connected(consumer)
        yield consumer
    finally:
        await asyncio.to_thread(consumer.stop, 15)


def drop_connection(name: str, conn: Connection | None = None) -> None:
    """Close the broker connection whose client-given name is ``name`` from the server
    side; without rabbitmqctl, shut the client's socket (``conn``) instead."""
    if shutil.which("rabbitmqctl"):
        listing = subprocess.run(
            ["rabbitmqctl", "-q", "list_connections", "pid", "client_properties"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        pids = [line.split("\t")[0] for line in listing.splitlines() if f'"{name}"' in line]
        assert pids, f"no broker connection named {name}"
        for pid in pids:
            subprocess.run(
                ["rabbitmqctl", "-q", "close_connection", pid, "test: connection dropped"],
                capture_output=True,
                timeout=60,
                check=True,
            )
        return
    assert conn is not None and conn.connection is not None
    conn.connection.sock.shutdown(socket.SHUT_RDWR)


class _SlowRouter(Router):
    """Fault injection: the real router, answering after a delay (so a connection can be
    dropped while a request is being handled)."""

    delay = 0.0

    async def handle(self, data: bytes, *, principal: Principal, channel: str) -> Any:
        await asyncio.sleep(self.delay)
        return await super().handle(data, principal=principal, channel=channel)


def test_request_reply_and_poison_over_rabbitmq(db: Store, amqp_url: str) -> None:
    settings = bus_settings(amqp_url)

    async def scenario() -> None:
        async with consuming(Router(db, None), settings) as consumer:
            with client(settings) as bus:
                mine = bus.listen(unique("mine")).name
                bus.listen(settings.dead_letters)
                bus.publish(get_readings_request("r-1"), reply_to=mine, correlation_id="c-1")
                bus.publish(HOSTILE, reply_to=mine, correlation_id="c-2")
                await asyncio.to_thread(bus.collect, 3)
                replies = {r.properties["correlation_id"]: r for r in bus.on(mine)}
                assert is_reply_ok(replies["c-1"]) and reading_count(replies["c-1"]) == 4
                assert replies["c-1"].reply.header.correlation_id == "r-1"
                assert replies["c-1"].properties["delivery_mode"] == 2
                assert replies["c-2"].reply.reply.errors[0].code == "1.3"
                (dead,) = bus.on(settings.dead_letters)
                assert dead.body == HOSTILE
                assert dead.headers[HEADER_CODE] == "1.3"
                assert dead.headers[HEADER_REASON].startswith("1.3 FORBIDDEN_XML")
                assert await asyncio.to_thread(bus.depth, settings.request_queue) == 0
                assert consumer.stats.replied == 1 and consumer.stats.dead_lettered == 1

    asyncio.run(scenario())


def test_events_reach_a_bound_queue_by_routing_key(amqp_url: str) -> None:
    settings = bus_settings(amqp_url)
    body = (
        b'<EventMessage xmlns="http://iec.ch/TC57/2011/schema/message"><Header><Verb>created'
        b"</Verb><Noun>EndDeviceEvents</Noun><MessageID>ev-9</MessageID></Header></EventMessage>"
    )
    publisher = EventPublisher(settings)
    try:
        with client(settings) as bus:
            exchange = Exchange(settings.event_exchange, type="topic", durable=True)
            exchange(bus.conn.default_channel).declare()
            oms = bus.listen(unique("oms"), exchange=exchange, routing_key="enddeviceevents.#")
            mdm = bus.listen(unique("mdm"), exchange=exchange, routing_key="meterreadings.#")
            assert publisher.publish("EndDeviceEvents", "created", body)
            (got,) = bus.collect(1)
            assert got.queue == oms.name and got.routing_key == "enddeviceevents.created"
            assert got.body == body and got.properties["message_id"] == "ev-9"
            assert bus.depth(mdm.name) == 0
            # The broker drops the publisher's connection: the next publish reconnects and
            # is confirmed; nothing is lost.
            assert publisher._conn is not None
            drop_connection(f"{settings.connection_name}:events", publisher._conn)
            time.sleep(0.2)
            assert publisher.publish("EndDeviceEvents", "created", body.replace(b"9<", b"10<"))
            bus.collect(2)
            assert [r.properties["message_id"] for r in bus.on(oms.name)] == ["ev-9", "ev-10"]
            assert publisher.retries >= 1
    finally:
        publisher.close()


def test_broker_drops_the_consumer_and_nothing_is_lost(db: Store, amqp_url: str) -> None:
    settings = bus_settings(amqp_url, retry_start=0.3, retry_max=1.0)
    router = _SlowRouter(db, None)

    async def scenario() -> None:
        async with consuming(router, settings) as consumer:
            with client(settings) as bus:
                mine = bus.listen(unique("mine")).name
                bus.publish(get_readings_request("before"), reply_to=mine, correlation_id="before")
                await asyncio.to_thread(bus.collect, 1)
                # A request in the router when the connection goes: not acknowledged, so the
                # broker delivers it again once the consumer is back.
                router.delay = 0.6
                bus.publish(
                    get_readings_request("inflight"), reply_to=mine, correlation_id="inflight"
                )
                deadline = time.monotonic() + 5
                while consumer.stats.received < 2 and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                await asyncio.to_thread(
                    drop_connection, f"{settings.connection_name}:consumer", consumer.connection
                )
                # Requests sent while the consumer is away wait on the durable queue.
                bus.publish(get_readings_request("away"), reply_to=mine, correlation_id="away")
                deadline = time.monotonic() + 10
                while consumer.stats.reconnects < 1 and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                assert consumer.stats.reconnects >= 1
                await wait_connected(consumer, 10)
                router.delay = 0.0
                bus.publish(get_readings_request("after"), reply_to=mine, correlation_id="after")
                await asyncio.to_thread(bus.collect, 4, 15)
                answered = {r.properties["correlation_id"] for r in bus.on(mine)}
                assert answered == {"before", "inflight", "away", "after"}
                assert all(is_reply_ok(r) for r in bus.on(mine))
                assert await asyncio.to_thread(bus.depth, settings.request_queue) == 0

    asyncio.run(scenario())
