"""The GetMeterReadings hot path: the router takes a document its caller parsed already
(``Router.handle(data, root=...)``, as the SOAP edge does), and database work goes to a worker
thread unless the store or the request says it should not (Context.run_blocking): a store
shared by every thread (SQLite in memory) and small requests on SQLite run on the loop."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from mdm_samples import T0, interval_rows

from cim.end_device_controls import EndDeviceControls
from cim.end_device_events import EndDeviceEvents
from cim.envelope import Header, Message, MessageKind, Payload, Request
from cim.errors import CimError, ErrorCode
from cim.get_meter_readings import GetMeterReadings, ReadingSelector
from cim.messages import emit_message, parse_message
from cim.meter_read_schedule import MeterReadSchedule
from cim.meter_readings import MeterReadings
from cim.model import DateTimeInterval, ObjectRef
from cim.xmlsafe import XmlLimits, parse_bytes
from headend.access import SYSTEM
from headend.handlers import Context, threads_allowed
from headend.handlers import meter_readings as readings_handler
from headend.router import Router
from mdm.database import Store, open_store
from mdm.devices import Device, add_to_group, create_devices, create_group
from mdm.ingest import ingest

DAY = DateTimeInterval(T0, T0 + timedelta(days=1))
SOAP = (
    b'<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s='
    b'"http://schemas.xmlsoap.org/soap/envelope/"><s:Body>%s</s:Body></s:Envelope>'
)


def filled(store: Store) -> Store:
    create_devices(store, [Device(f"m{i}") for i in range(3)], who="test")
    create_group(store, "all", who="test")
    add_to_group(store, "all", ["m0", "m1", "m2"], who="test")
    ingest(store, [r for i in range(3) for r in interval_rows(f"m{i}", 96)], who="test")
    return store


@pytest.fixture
def file_store(tmp_path: Path) -> Iterator[Store]:
    store = open_store(f"sqlite:///{tmp_path / 'store.sqlite3'}")
    try:
        yield filled(store)
    finally:
        store.close()


@pytest.fixture
def memory_store() -> Iterator[Store]:
    store = open_store("sqlite://")
    try:
        yield filled(store)
    finally:
        store.close()


def get_request(*mrids: str, groups: tuple[str, ...] = (), period=DAY, wrapper=None) -> bytes:
    query = GetMeterReadings(
        end_devices=[ObjectRef(mrid=m) for m in mrids],
        end_device_groups=[ObjectRef(mrid=g) for g in groups],
        readings=[ReadingSelector(time_period=period)],
    )
    header = Header(verb="get", noun="MeterReadings", message_id="q-1", correlation_id="c-1")
    message = Message(MessageKind.REQUEST, header, request=Request(get_profile=query))
    if wrapper:
        message.wrapper = wrapper
    return emit_message(message)


def soap(body: bytes) -> bytes:
    return SOAP % body[body.index(b"?>") + 2 :]


def same_reply(a: bytes, b: bytes) -> bool:
    fresh = re.compile(rb"<(\w+:)?(Timestamp|MessageID)>[^<]*<")
    return fresh.sub(b"<x><", a) == fresh.sub(b"<x><", b)


def readings_of(body: bytes) -> list[tuple[str, int]]:
    document = parse_message(body).message.payload.document  # type: ignore[union-attr]
    assert isinstance(document, MeterReadings)
    return [(m.meter_key, len(m.interval_blocks[0].readings)) for m in document.meter_readings]


# --- Router.handle(root=...) ------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        soap(get_request("m0", "ghost")),
        soap(get_request("m1", wrapper="GetMeterReadings")),
        get_request("m0", "m2"),
        soap(get_request()),  # names no device: refused
        SOAP % b"<Unknown xmlns='urn:x'/>",
        SOAP % b"",  # an empty Body
    ],
    ids=["soap-partial", "soap-wrapper", "bare", "no-device", "unknown-root", "empty-body"],
)
def test_a_parsed_root_gives_the_reply_of_the_bytes(file_store: Store, data: bytes) -> None:
    router = Router(file_store, None)

    async def both() -> tuple[bytes, bytes, str, str]:
        plain = await router.handle(data, principal=SYSTEM, channel="soap")
        shared = await router.handle(data, principal=SYSTEM, channel="soap", root=parse_bytes(data))
        return plain.body, shared.body, plain.result, shared.result

    plain, shared, result, shared_result = asyncio.run(both())
    assert result == shared_result and same_reply(plain, shared)


def test_a_root_is_still_held_to_the_routers_size_limit(file_store: Store) -> None:
    data = soap(get_request("m0"))
    router = Router(file_store, None, limits=XmlLimits(max_bytes=len(data) - 1))
    reply = asyncio.run(
        router.handle(data, principal=SYSTEM, channel="soap", root=parse_bytes(data))
    )
    assert reply.result == "FAILED" and b"<code>1.4</code>" in reply.body


def test_the_soap_edge_hands_its_parsed_envelope_to_the_router(file_store: Store) -> None:
    import httpx

    from adapters.soap.app import create_app
    from adapters.soap.settings import SoapSettings

    seen: list[object] = []

    class Recording(Router):
        async def handle(self, data, *, principal, channel, root=None):  # type: ignore[override]
            seen.append(root)
            return await super().handle(data, principal=principal, channel=channel, root=root)

    app = create_app(Recording(file_store, None), None, SoapSettings())
    body = soap(get_request("m0", wrapper="GetMeterReadings"))

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://edge") as client:
            return await client.post(
                "/openhes/GetMeterReadings",
                content=body,
                headers={
                    "Content-Type": "text/xml",
                    "SOAPAction": "http://iec.ch/TC57/2011/GetMeterReadings/GetMeterReadings",
                },
            )

    response = asyncio.run(post())
    assert response.status_code == 200 and b"<msg:Result>OK</msg:Result>" in response.content
    assert response.content.count(b"<IntervalReadings>") == 96
    (root,) = seen
    assert root is not None and root.tag.endswith("}Envelope")  # type: ignore[attr-defined]
    # An edge parsing more deeply nested XML than the router allows does not share its parse.
    deep = create_app(Recording(file_store, None), None, SoapSettings(max_depth=10_000))
    assert not deep.state.soap_edge._share


# --- database work off the event loop ---------------------------------------------------------


def test_threads_allowed_only_where_connections_are_per_thread(
    file_store: Store, memory_store: Store
) -> None:
    assert threads_allowed(file_store) and not threads_allowed(memory_store)


@pytest.mark.parametrize(
    ("kind", "small", "in_thread"),
    [("file", False, True), ("file", True, False), ("memory", False, False)],
)
def test_run_blocking_uses_a_thread_when_it_helps(
    file_store: Store, memory_store: Store, kind: str, small: bool, in_thread: bool
) -> None:
    store = file_store if kind == "file" else memory_store

    async def body() -> tuple[int, int]:
        request = Message(MessageKind.REQUEST, Header(verb="get", noun="MeterReadings"))
        ctx = Context(store, None, SYSTEM, "test", request, 1.0)
        worker = await ctx.run_blocking(threading.get_ident, small=small)
        return worker, threading.get_ident()

    worker, loop = asyncio.run(body())
    assert (worker != loop) is in_thread


def test_concurrent_gets_from_worker_threads_answer_right(
    file_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Groups and long windows go to worker threads (several at once, each with its own
    connection); one device-day is answered on the loop. Every answer is complete."""
    threads: list[int] = []
    export = readings_handler._export

    def recording(*args, **kwargs):
        threads.append(threading.get_ident())
        return export(*args, **kwargs)

    monkeypatch.setattr(readings_handler, "_export", recording)
    router = Router(file_store, None)
    week = DateTimeInterval(T0 - timedelta(days=7), T0 + timedelta(days=1))
    requests = [get_request(groups=("all",)), get_request("m1", period=week), get_request("m2")]

    async def body() -> tuple[list[bytes], int]:
        replies = await asyncio.gather(
            *(router.handle(r, principal=SYSTEM, channel="t") for r in requests * 4)
        )
        assert {r.result for r in replies} == {"OK"}
        return [r.body for r in replies], threading.get_ident()

    bodies, loop = asyncio.run(body())
    assert [readings_of(b) for b in bodies[:3]] == [
        [("m0", 96), ("m1", 96), ("m2", 96)],
        [("m1", 96)],
        [("m2", 96)],
    ]
    assert all(same_reply(a, b) for a, b in zip(bodies, bodies[3:], strict=False))
    on_loop = [t == loop for t in threads]
    assert on_loop.count(True) == 4 and on_loop.count(False) == 8  # the 4 small ones


@pytest.mark.parametrize(
    ("kind", "text"),
    [
        (MeterReadings, "create MeterReadings needs a MeterReadings payload"),
        (EndDeviceControls, "create EndDeviceControls needs an EndDeviceControls payload"),
        (EndDeviceEvents, "create EndDeviceEvents needs an EndDeviceEvents payload"),
        (MeterReadSchedule, "create MeterReadSchedule needs a MeterReadSchedule payload"),
    ],
)
def test_a_missing_or_foreign_payload_document_is_refused_by_name(
    memory_store: Store, kind: type, text: str
) -> None:
    bare = Message(MessageKind.REQUEST, Header(verb="create", noun=kind.__name__))
    ctx = Context(memory_store, None, SYSTEM, "test", bare, 1.0)
    assert ctx.payload_document is None
    with pytest.raises(CimError) as refused:
        ctx.document(kind)
    assert (refused.value.error, refused.value.reason) == (ErrorCode.MISSING_PAYLOAD, text)
    other = MeterReadings() if kind is not MeterReadings else EndDeviceEvents()
    foreign = Message(
        MessageKind.REQUEST,
        Header(verb="create", noun=kind.__name__),
        payload=Payload(document=other),
    )
    ctx = Context(memory_store, None, SYSTEM, "test", foreign, 1.0)
    with pytest.raises(CimError, match="payload"):
        ctx.document(kind)
    document = kind()
    ctx = Context(
        memory_store,
        None,
        SYSTEM,
        "test",
        Message(MessageKind.REQUEST, bare.header, payload=Payload(document=document)),
        1.0,
    )
    assert ctx.document(kind) is document
