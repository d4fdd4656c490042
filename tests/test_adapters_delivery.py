"""The delivery loop (adapters.delivery) against the loopback receiver (adapters.receiver),
over real HTTP on loopback: delivery, refusals and retries, dead rows, duplicates, a
delivery process killed mid-delivery, and two loops side by side."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from mdm_conftest import postgres_store
from sqlalchemy import update

from adapters.delivery import Delivery, DeliveryPolicy, judge, soap_envelope
from adapters.receiver import Receiver
from cim.end_device_events import EndDeviceEvents
from cim.envelope import Header, Message, MessageKind, Payload, Reply
from cim.messages import emit_message, parse_message
from cim.model import EndDeviceEvent, ObjectRef
from headend.outbox import DEAD, DELIVERED, PENDING, Outbox
from headend.outbox import outbox as table
from mdm.database import open_store

pytest_plugins = ["mdm_conftest"]

ROOT = Path(__file__).resolve().parent.parent
FAST = DeliveryPolicy(initial_backoff=0.02, max_backoff=0.2, timeout=1.0, lease=3.0)


def reply_body(message_id: str) -> bytes:
    return emit_message(
        Message(
            kind=MessageKind.RESPONSE,
            header=Header(
                verb="reply", noun="MeterReadings", message_id=message_id, correlation_id="req-1"
            ),
            reply=Reply.ok(),
        )
    )


def event_body(message_id: str) -> bytes:
    document = EndDeviceEvents(
        events=[
            EndDeviceEvent(
                "3.26.0.85", datetime(2024, 1, 1, tzinfo=UTC), asset=ObjectRef(mrid="M1")
            )
        ]
    )
    return emit_message(
        Message(
            kind=MessageKind.EVENT,
            header=Header(verb="created", noun="EndDeviceEvents", message_id=message_id),
            payload=Payload(document=document),
        )
    )


def put(outbox: Outbox, receiver_url: str, message_id: str = "m1", **changes) -> int:
    values = dict(
        address=receiver_url,
        body=reply_body(message_id),
        message_id=message_id,
        kind="reply",
        correlation_id="req-1",
        soap_action="http://iec.ch/TC57/2011/MeterReadings/ReplyMeterReadings",
    )
    values.update(changes)
    return outbox.enqueue(**values)


def until(predicate, timeout: float = 10.0, step: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


async def deliver_until(delivery: Delivery, predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("not delivered in time")
        if not await delivery.deliver_due():
            await asyncio.sleep(0.01)


@pytest.fixture
def receiver():
    with Receiver() as running:
        yield running


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------------- delivering


def test_delivers_a_reply_over_http(store, receiver):
    outbox = Outbox(store)
    row = put(outbox, receiver.url("/replies"))
    delivery = Delivery(outbox, policy=FAST)
    assert asyncio.run(delivery.deliver_due()) == 1
    item = outbox.get(row)
    assert (item.state, item.attempts, item.last_error) == (DELIVERED, 1, None)
    [got] = receiver.messages
    assert (got.message_id, got.correlation_id, got.kind) == ("m1", "req-1", "ResponseMessage")
    assert got.soap_action == "http://iec.ch/TC57/2011/MeterReadings/ReplyMeterReadings"
    assert got.path == "/replies"
    # What arrived is a SOAP 1.1 envelope holding exactly the stored message.
    assert parse_message(got.body).message.header.message_id == "m1"
    assert got.body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<soapenv:Envelope')
    assert delivery.delivered == 1


def test_an_event_message_is_delivered_too(store, receiver):
    outbox = Outbox(store)
    outbox.enqueue(
        address=receiver.url("/oms"),
        body=event_body("ev-1"),
        message_id="ev-1",
        kind="event",
        soap_action="http://iec.ch/TC57/2011/EndDeviceEvents/CreatedEndDeviceEvents",
    )
    asyncio.run(Delivery(outbox, policy=FAST).drain())
    [got] = receiver.messages
    assert (got.kind, got.verb, got.noun) == ("EventMessage", "created", "EndDeviceEvents")
    assert got.message.payload.document.events[0].asset.mrid == "M1"


@pytest.mark.parametrize("mode", ["fault", "http500", "failed"])
def test_refusals_are_retried_with_backoff_until_delivered(store, receiver, mode):
    receiver.refuse_next(3, mode)
    outbox = Outbox(store)
    row = put(outbox, receiver.url())
    delivery = Delivery(outbox, policy=FAST, rng=random.Random(1))
    waits = []
    assert asyncio.run(delivery.deliver_due()) == 1
    item = outbox.get(row)
    assert item.state == PENDING and item.attempts == 1
    expected = {
        "fault": "SOAP Fault soapenv:Server",
        "http500": "HTTP 500: refused for the test",
        "failed": "Result FAILED",
    }[mode]
    assert expected in item.last_error
    waits.append((item.next_attempt_at - item.last_attempt_at).total_seconds())
    asyncio.run(deliver_until(delivery, lambda: outbox.get(row).state == DELIVERED))
    item = outbox.get(row)
    assert item.attempts == 4 and receiver.refused == 3
    assert len(receiver.messages) == 1 and receiver.duplicates == 0
    assert 0.015 <= waits[0] < 0.5  # first backoff 0.02 s +- 25 %, after the HTTP round trip
    assert delivery.refused == 3 and delivery.delivered == 1


def test_connection_refused_is_retried_until_the_receiver_is_up(store):
    port = free_port()
    outbox = Outbox(store)
    row = put(outbox, f"http://127.0.0.1:{port}/late")
    delivery = Delivery(outbox, policy=FAST)
    asyncio.run(delivery.deliver_due())
    item = outbox.get(row)
    assert item.state == PENDING and item.last_error.startswith("connection failed")
    with Receiver(port=port) as late:
        asyncio.run(deliver_until(delivery, lambda: outbox.get(row).state == DELIVERED))
        assert [m.message_id for m in late.messages] == ["m1"]


def test_a_timeout_then_a_duplicate_that_the_receiver_drops(store, receiver):
    outbox = Outbox(store)
    row = put(outbox, receiver.url())
    receiver.hold("m1", 5.0)  # kept at once, answered too late
    policy = DeliveryPolicy(initial_backoff=0.02, timeout=0.3, lease=3.0)
    delivery = Delivery(outbox, policy=policy)
    asyncio.run(delivery.deliver_due())
    item = outbox.get(row)
    assert item.state == PENDING and item.last_error.startswith("timed out")
    asyncio.run(deliver_until(delivery, lambda: outbox.get(row).state == DELIVERED))
    assert len(receiver.messages) == 1 and receiver.duplicates == 1 and receiver.deliveries == 2


def test_dead_after_the_maximum_age_then_retried_by_the_operator(store, receiver):
    receiver.refuse_next(10_000, "fault")
    outbox = Outbox(store)
    row = put(outbox, receiver.url())
    policy = DeliveryPolicy(
        initial_backoff=0.05, timeout=1.0, lease=3.0, max_age=timedelta(seconds=0.4)
    )
    delivery = Delivery(outbox, policy=policy)
    started = time.monotonic()
    asyncio.run(deliver_until(delivery, lambda: outbox.get(row).state == DEAD))
    item = outbox.get(row)
    assert time.monotonic() - started >= 0.35
    assert item.attempts >= 3 and "SOAP Fault" in item.last_error
    # Dead once refused at or after the maximum age: the last try started near it (a try
    # scheduled just before it and refused after it also ends the row).
    assert (item.last_attempt_at - item.created_at) >= timedelta(seconds=0.35)
    assert [i.id for i in outbox.items(DEAD)] == [row] and delivery.dead == 1
    assert asyncio.run(delivery.deliver_due()) == 0  # dead rows stay put
    receiver.refuse_next(0)
    assert outbox.retry([row]) == 1
    asyncio.run(delivery.drain())
    assert outbox.get(row).state == DELIVERED
    assert [m.message_id for m in receiver.messages] == ["m1"]


def test_an_unusable_row_is_dead_at_once(store):
    # A row written by hand (or by an older version) whose address cannot work.
    outbox = Outbox(store)
    row = put(outbox, "http://127.0.0.1:9/x")
    with store.begin() as conn:
        conn.execute(update(table).where(table.c.id == row).values(address="gopher://x/"))
    asyncio.run(Delivery(outbox, policy=FAST).deliver_due())
    item = outbox.get(row)
    assert item.state == DEAD and "http or https" in item.last_error


def test_the_loop_runs_wakes_and_stops(store, receiver):
    outbox = Outbox(store)
    delivery = Delivery(outbox, policy=DeliveryPolicy(poll_interval=30.0, timeout=1, lease=3))

    async def scenario() -> float:
        stop = asyncio.Event()
        task = asyncio.create_task(delivery.run(stop))
        await asyncio.sleep(0.05)  # idle, waiting up to 30 s
        started = time.monotonic()
        put(outbox, receiver.url(), "woken")
        delivery.wake()
        while outbox.by_message_id("woken").state != DELIVERED:
            await asyncio.sleep(0.005)
        elapsed = time.monotonic() - started
        stop.set()
        await asyncio.wait_for(task, 2)
        return elapsed

    assert asyncio.run(scenario()) < 2.0
    assert [m.message_id for m in receiver.messages] == ["woken"]


def test_policy_checks_and_backoff_growth():
    with pytest.raises(ValueError):
        DeliveryPolicy(timeout=30, lease=60)
    with pytest.raises(ValueError):
        DeliveryPolicy(jitter=1.5)
    with pytest.raises(ValueError):
        DeliveryPolicy(concurrency=0)
    policy = DeliveryPolicy(initial_backoff=1, multiplier=2, max_backoff=10, jitter=0.25)
    rng = random.Random(7)
    for attempts, base in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 10), (500, 10)]:
        value = policy.backoff(attempts, rng)
        assert base * 0.75 <= value <= base * 1.25
    assert len({round(policy.backoff(3, rng), 6) for _ in range(20)}) > 10  # jittered


def test_soap_envelope_forms():
    wrapped = soap_envelope(reply_body("x"))
    assert wrapped.count(b"<?xml") == 1
    assert parse_message(wrapped).message.header.message_id == "x"
    bare = soap_envelope(b"<a xmlns='urn:x'>1</a>")
    assert b"<soapenv:Body><a xmlns='urn:x'>1</a></soapenv:Body>" in bare
    already = (
        b"<s:Envelope xmlns:s='http://schemas.xmlsoap.org/soap/envelope/'><s:Body/></s:Envelope>"
    )
    assert soap_envelope(already).endswith(already)
    latin = "<?xml version='1.0' encoding='ISO-8859-1'?><a>é</a>".encode("latin-1")
    assert "<a>é</a>".encode() in soap_envelope(latin)
    for bad in (b"", b"not xml", b"<?xml version='1.0' encoding='ISO-8859-1'?><a>"):
        with pytest.raises(ValueError):
            soap_envelope(bad)


def test_judging_answers():
    fault = (
        b"<s:Envelope xmlns:s='http://schemas.xmlsoap.org/soap/envelope/'><s:Body><s:Fault>"
        b"<faultcode>s:Client</faultcode><faultstring>nope</faultstring></s:Fault></s:Body>"
        b"</s:Envelope>"
    )
    assert judge(200, b"").delivered
    assert judge(202, b"accepted").delivered
    assert judge(200, reply_body("ack")).delivered
    assert not judge(200, fault).delivered and "s:Client: nope" in judge(200, fault).error
    assert "SOAP Fault" in judge(500, fault).error
    assert judge(404, b"no such path").error == "HTTP 404: no such path"
    assert not judge(302, b"").delivered
    assert judge(200, b"<!DOCTYPE x [<!ENTITY e SYSTEM 'file:///etc/passwd'>]><x>&e;</x>").delivered


# ---------------------------------------------------------------------- the receiver


def test_receiver_answers_and_rejects(receiver):
    headers = {"Content-Type": "text/xml", "SOAPAction": '"urn:a"'}
    ok = requests.post(receiver.url("/r"), data=soap_envelope(reply_body("r1")), headers=headers)
    assert ok.status_code == 200
    answer = parse_message(ok.content, require_served_noun=False).message
    assert answer.reply.result.value == "OK" and answer.header.correlation_id == "r1"
    again = requests.post(receiver.url("/r"), data=soap_envelope(reply_body("r1")), headers=headers)
    assert again.status_code == 200 and receiver.duplicates == 1 and len(receiver.messages) == 1
    bad = requests.post(receiver.url("/r"), data=b"not xml", headers=headers)
    assert bad.status_code == 500 and b"Fault" in bad.content and receiver.rejected == 1
    xxe = b"<!DOCTYPE x [<!ENTITY e SYSTEM 'file:///etc/passwd'>]><x>&e;</x>"
    assert requests.post(receiver.url("/r"), data=xxe).status_code == 500
    assert requests.get(receiver.url("/r")).status_code == 405
    assert receiver.wait_for(1, timeout=0.1) and not receiver.wait_for(2, timeout=0.05)
    assert receiver.by_message_id("r1").soap_action == "urn:a"


def test_receiver_size_cap():
    with Receiver(max_bytes=200) as small:
        response = requests.post(small.url(), data=soap_envelope(reply_body("big")))
        assert response.status_code == 413 and small.messages == []


# ---------------------------------------------------------------------- restarts


def _shared_database(kind: str, tmp_path: Path, request: pytest.FixtureRequest):
    """(url, schema, store) of a database several processes can open."""
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'shared.sqlite3'}"
        store = open_store(url)
        try:
            yield url, None, store
        finally:
            store.close()
    else:
        for store in postgres_store(request.getfixturevalue("postgres_url")):
            url = store.engine.url.render_as_string(hide_password=False)
            yield url, store.schema, store


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def shared(request, tmp_path):
    yield from _shared_database(request.param, tmp_path, request)


def _delivery_process(url: str, schema: str | None, lease: float) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "adapters.delivery",
        "--database",
        url,
        "--lease",
        str(lease),
        "--timeout",
        str(lease / 3),
        "--poll",
        "0.02",
        "--initial-backoff",
        "0.02",
    ]
    if schema:
        command += ["--schema", schema]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def test_a_delivery_process_killed_mid_delivery_delivers_exactly_once_after_restart(
    shared, receiver
):
    url, schema, store = shared
    outbox = Outbox(store)
    row = put(outbox, receiver.url("/async-replies"), "reply-after-crash")
    receiver.hold("reply-after-crash", 60.0)  # got the body; the answer never comes back
    first = _delivery_process(url, schema, lease=1.0)
    try:
        assert receiver.wait_for(1, timeout=20), first.stderr and first.stderr.read()
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    item = outbox.get(row)
    assert item.state == PENDING and item.attempts == 1 and item.claimed_until is not None
    second = _delivery_process(url, schema, lease=1.0)
    try:
        assert until(lambda: outbox.get(row).state == DELIVERED, timeout=20)
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(10) == 0
    item = outbox.get(row)
    assert item.attempts == 2
    # The receiver got it twice and kept it once.
    assert receiver.deliveries == 2 and receiver.duplicates == 1
    assert [m.message_id for m in receiver.messages] == ["reply-after-crash"]


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def test_two_delivery_loops_never_send_a_row_twice(kind, tmp_path, request, receiver):
    for url, schema, store in _shared_database(kind, tmp_path, request):
        _two_loops(url, schema, store, receiver)


def _two_loops(url: str, schema: str | None, store, receiver: Receiver) -> None:
    outbox = Outbox(store)
    for n in range(60):
        put(outbox, receiver.url(), f"m{n}")
    policy = DeliveryPolicy(timeout=2.0, lease=10.0, concurrency=4, poll_interval=0.01)
    stores = [open_store(url, schema=schema, migrate=False) for _ in range(2)]
    loops = [Delivery(Outbox(s), policy=policy, worker=f"loop{n}") for n, s in enumerate(stores)]
    errors: list[BaseException] = []

    def run(delivery: Delivery) -> None:
        async def work() -> None:
            while True:
                if not await delivery.deliver_due() and not delivery.outbox.counts()[PENDING]:
                    return

        try:
            asyncio.run(work())
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(d,)) for d in loops]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for s in stores:
        s.close()
    assert errors == []
    assert outbox.counts() == {PENDING: 0, DELIVERED: 60, DEAD: 0}
    assert len(receiver.arrivals) == len(set(receiver.arrivals)) == 60  # no copy ever sent
    assert receiver.duplicates == 0
    assert all(d.delivered for d in loops)  # both took part
