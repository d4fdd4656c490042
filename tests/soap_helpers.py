"""Shared by the SOAP edge tests: CIM requests as bytes, SOAP envelopes around them, and the
real stack (store, registry, head-end, router, authenticator) behind a server on loopback."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cim.end_device_controls import EndDeviceControl, EndDeviceControls
from cim.envelope import Header, Message, MessageKind, Payload, Request
from cim.get_meter_readings import GetMeterReadings
from cim.messages import emit_message
from cim.model import DateTimeInterval, ObjectRef
from headend.keys import Keyring, MasterKey

SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
DAY = datetime(2024, 1, 1, tzinfo=UTC)
METERS = ("M1", "M2")
DISCONNECT = "3.31.0.23"
KEYRING = Keyring(MasterKey(bytes(range(32))))


def new_id() -> str:
    return str(uuid.uuid4())


def get_readings_message(
    mrid: str = "M1", *, wrapper: str | None = "GetMeterReadings", message_id: str | None = None
) -> bytes:
    message = Message(
        kind=MessageKind.REQUEST,
        header=Header(verb="get", noun="MeterReadings", message_id=message_id or new_id()),
        request=Request(
            get_profile=GetMeterReadings(
                end_devices=[ObjectRef(mrid)],
                time_schedules=[DateTimeInterval(DAY, DAY + timedelta(days=1))],
            )
        ),
        wrapper=wrapper,
    )
    return emit_message(message)


def control_message(
    mrid: str = "M1",
    *,
    verb: str = "create",
    wrapper: str | None = "CreateEndDeviceControls",
    message_id: str | None = None,
    reply_address: str | None = None,
) -> bytes:
    header = Header(verb=verb, noun="EndDeviceControls", message_id=message_id or new_id())
    if reply_address:
        header = dataclasses.replace(header, async_reply_flag=True, reply_address=reply_address)
    controls = EndDeviceControls(
        controls=[EndDeviceControl(control_type=DISCONNECT, end_devices=[ObjectRef(mrid)])]
    )
    message = Message(
        kind=MessageKind.REQUEST,
        header=header,
        payload=Payload(document=controls),
        wrapper=wrapper,
    )
    return emit_message(message)


def envelope(body: bytes, version: str = SOAP11, header: bytes = b"") -> bytes:
    if body.startswith(b"<?xml"):
        body = body[body.index(b"?>") + 2 :].lstrip()
    head = b"<s:Header>" + header + b"</s:Header>" if header else b""
    return (
        b'<?xml version="1.0" encoding="UTF-8"?>'
        + f'<s:Envelope xmlns:s="{version}">'.encode()
        + head
        + b"<s:Body>"
        + body
        + b"</s:Body></s:Envelope>"
    )


@dataclasses.dataclass
class Stack:
    url: str
    store: object
    router: object
    authenticator: object | None


@contextmanager
def running_stack(tmp_path: Path, *, authenticate: bool = False, **settings) -> Iterator[Stack]:
    """The real pieces behind a uvicorn server on a loopback port chosen by the OS."""
    from adapters.soap.app import create_app
    from adapters.soap.server import start_in_thread
    from adapters.soap.settings import SoapSettings
    from mdm.database import open_store

    store = open_store(f"sqlite:///{tmp_path / 'soap.sqlite3'}")
    fill_store(store)
    router, headend, close = build_router(store)
    authenticator = None
    if authenticate:
        from adapters.auth.authenticator import Authenticator
        from adapters.auth.passwords import ScryptParams
        from adapters.auth.users import add_user

        fast = ScryptParams(n=2**4, r=1, p=1)
        for name, roles in (("reader", ["reader"]), ("operator", ["operator"])):
            add_user(store, name, f"{name}-pw", roles, params=fast, digest=True, keyring=KEYRING)
        authenticator = Authenticator(store, params=fast, keyring=KEYRING)
    app = create_app(router, authenticator, SoapSettings(**settings), lifespan=headend)
    url, stop = start_in_thread(app)
    try:
        yield Stack(url, store, router, authenticator)
    finally:
        stop()
        close()
        store.close()


def fill_store(store) -> None:
    """Two meters; M1 has one day of 15-minute readings (96)."""
    from headend.registry import CommPath, MeterRecord, Registry, SecurityProfile
    from mdm.devices import Device
    from mdm.ingest import ingest
    from mdm.normalise import RawValue

    registry = Registry(store, KEYRING)
    registry.upsert(
        [
            MeterRecord(
                device=Device(mrid, serial=f"S-{mrid}", name=f"N-{mrid}", protocol="dlms"),
                primary=CommPath("wrapper", host="127.0.0.1", port=9, wport=1),
                security=SecurityProfile(client_address=16, authentication="none"),
            )
            for mrid in METERS
        ],
        who="test",
    )
    ingest(
        store,
        [
            RawValue(
                "M1",
                "1-0:1.8.0",
                DAY + timedelta(minutes=15 * (i + 1)),
                1000 + i,
                "Wh",
                interval_minutes=15,
            )
            for i in range(96)
        ],
    )


def build_router(store):
    """The router with a head-end on a memory bus, one worker whose meters are the project's
    in-process device stand-in (drivers.fake.FakeDriver), and an outbox; returns (router,
    lifespan, close)."""
    import asyncio
    from contextlib import asynccontextmanager

    from drivers.fake import FakeDriver
    from headend.outbox import Outbox
    from headend.router import Router
    from headend.service import HeadEnd
    from headend.taskbus import TaskBus
    from headend.worker import Worker

    # A namespace of its own: memory:// queues are shared by everything in the process.
    bus = TaskBus.from_url("memory://", namespace=f"soap-test-{uuid.uuid4().hex[:8]}")
    headend = HeadEnd(store, bus, keyring=KEYRING)
    router = Router(store, headend, outbox=Outbox(store), sync_timeout=10.0, async_timeout=10.0)
    worker = Worker(store, bus, FakeDriver(), concurrency=4, keyring=KEYRING)

    @asynccontextmanager
    async def lifespan(_app):
        stop = asyncio.Event()
        await headend.start()
        running = asyncio.create_task(worker.run(stop))
        try:
            yield
        finally:
            try:
                await router.drain(5.0)
            finally:
                stop.set()
                await running
            await headend.stop()

    return router, lifespan, bus.close
