"""Shared by the ESB tests (memory:// and RabbitMQ): request documents, a store with
readings, the real router, and a client that publishes requests and collects what comes back."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kombu import Connection, Consumer, Producer, Queue
from mdm_samples import RT_15MIN_KWH, interval_rows

from adapters.esb import EsbConsumer, EsbSettings, connect, raw_body
from cim.envelope import MessageKind, Result
from cim.messages import parse_message
from mdm.database import Store
from mdm.devices import Device, create_devices
from mdm.ingest import ingest

MSG = "http://iec.ch/TC57/2011/schema/message"


def get_readings_request(
    message_id: str | None = None,
    *,
    device: str = "M1",
    reply_address: str | None = None,
    correlation_id: str | None = None,
) -> bytes:
    """get MeterReadings for ``device`` on 2024-01-01 00:00-01:00 UTC (stored, in the past)."""
    extra = ""
    if reply_address is not None:
        extra += f"<ReplyAddress>{reply_address}</ReplyAddress>"
    if message_id is not None:
        extra += f"<MessageID>{message_id}</MessageID>"
    if correlation_id is not None:
        extra += f"<CorrelationID>{correlation_id}</CorrelationID>"
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<RequestMessage xmlns="{MSG}">
  <Header><Verb>get</Verb><Noun>MeterReadings</Noun>{extra}</Header>
  <Request>
    <GetMeterReadings xmlns="http://iec.ch/TC57/2011/GetMeterReadings#">
      <EndDevice><mRID>{device}</mRID></EndDevice>
      <ReadingType><mRID>{RT_15MIN_KWH}</mRID></ReadingType>
      <TimeSchedule><scheduleInterval>
        <end>2024-01-01T01:00:00Z</end><start>2024-01-01T00:00:00Z</start>
      </scheduleInterval></TimeSchedule>
    </GetMeterReadings>
  </Request>
</RequestMessage>""".encode()


def unknown_noun_request(message_id: str = "unknown-noun") -> bytes:
    return (
        f'<RequestMessage xmlns="{MSG}"><Header><Verb>get</Verb><Noun>Pumpkins</Noun>'
        f"<MessageID>{message_id}</MessageID></Header></RequestMessage>"
    ).encode()


HOSTILE = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<RequestMessage xmlns="http://iec.ch/TC57/2011/schema/message"><Header>
<Verb>get</Verb><Noun>MeterReadings</Noun><MessageID>&x;</MessageID></Header></RequestMessage>"""
WRONG_NAMESPACE = (
    b'<RequestMessage xmlns="urn:not-iec"><Header><Verb>get</Verb><Noun>MeterReadings</Noun>'
    b"</Header></RequestMessage>"
)
A_RESPONSE = (
    f'<ResponseMessage xmlns="{MSG}"><Header><Verb>reply</Verb><Noun>MeterReadings</Noun>'
    f"</Header><Reply><Result>OK</Result></Reply></ResponseMessage>"
).encode()


def readings_store(store: Store) -> Store:
    """``store`` with device M1 and four 15-minute readings on 2024-01-01 00:00-01:00 UTC."""
    create_devices(store, [Device("M1")], who="test")
    ingest(store, interval_rows("M1", 4))
    return store


def unique(prefix: str) -> str:
    return f"openhes.test.{prefix}.{uuid.uuid4().hex[:10]}"


def bus_settings(url: str, **overrides: Any) -> EsbSettings:
    values: dict[str, Any] = dict(
        url=url,
        request_queue=unique("requests"),
        reply_queue=unique("replies"),
        event_exchange=unique("events"),
        retry_start=0.05,
        retry_max=0.5,
        connection_name=unique("conn"),
    )
    values.update(overrides)
    return EsbSettings(**values)


@dataclass
class Received:
    queue: str
    body: bytes
    properties: dict[str, Any]
    headers: dict[str, Any]
    routing_key: str
    content_type: str | None = None

    @property
    def reply(self) -> Any:
        return parse_message(self.body, require_served_noun=False).message


@dataclass
class Client:
    """A bus client on its own connection: publishes requests and collects messages from
    the queues it listens to."""

    settings: EsbSettings
    conn: Connection
    queues: dict[str, Queue] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)

    def listen(self, name: str, **bind: Any) -> Queue:
        queue = Queue(name, channel=self.conn.default_channel, durable=True, **bind)
        queue.declare()
        self.queues[name] = queue
        return queue

    def publish(self, body: bytes, **properties: Any) -> None:
        properties.setdefault("content_type", "application/xml")
        properties.setdefault("content_encoding", "binary")
        Producer(self.conn.default_channel).publish(
            body,
            exchange="",
            routing_key=self.settings.request_queue,
            delivery_mode=2,
            **properties,
        )

    def collect(self, count: int, timeout: float = 5.0) -> list[Received]:
        """Wait until ``count`` messages in all arrived (more may have); return them all."""

        def receiver(queue: str) -> Any:
            def on_message(message: Any) -> None:
                self.received.append(
                    Received(
                        queue,
                        raw_body(message),
                        dict(message.properties),
                        dict(message.headers or {}),
                        message.delivery_info.get("routing_key") or "",
                        message.content_type,
                    )
                )
                message.ack()

            return on_message

        deadline = time.monotonic() + timeout
        channel = self.conn.default_channel
        with contextlib.ExitStack() as stack:
            for name, queue in self.queues.items():
                stack.enter_context(Consumer(channel, queues=[queue], on_message=receiver(name)))
            while len(self.received) < count and time.monotonic() < deadline:
                with contextlib.suppress(socket.timeout):
                    self.conn.drain_events(timeout=0.05)
        return self.received

    def on(self, queue: str) -> list[Received]:
        return [r for r in self.received if r.queue == queue]

    def depth(self, name: str) -> int:
        _, count, _ = Queue(name, channel=self.conn.default_channel).queue_declare(passive=True)
        return int(count)


@contextlib.contextmanager
def client(settings: EsbSettings) -> Iterator[Client]:
    conn = connect(settings, role="test-client")
    conn.connect()
    made = Client(settings, conn)
    try:
        yield made
    finally:
        if settings.is_amqp:
            channel = conn.default_channel
            for name in (
                *made.queues,
                settings.request_queue,
                settings.dead_letters,
                settings.reply_queue,
            ):
                with contextlib.suppress(Exception):
                    channel.queue_delete(name)
            with contextlib.suppress(Exception):
                channel.exchange_delete(settings.event_exchange)
        conn.release()


async def wait_connected(consumer: EsbConsumer, timeout: float = 5.0) -> None:
    assert await asyncio.to_thread(consumer.stats.connected.wait, timeout)


def is_reply_ok(received: Received) -> bool:
    message = received.reply
    return message.kind is MessageKind.RESPONSE and message.reply.result is Result.OK


def reading_count(received: Received) -> int:
    """Readings in a reply's MeterReadings payload (interval and register)."""
    payload = received.reply.payload
    if payload is None or payload.document is None:
        return 0
    return sum(
        len(meter_reading.readings)
        + sum(len(block.readings) for block in meter_reading.interval_blocks)
        for meter_reading in payload.document.meter_readings
    )


T_READ = datetime(2024, 1, 1, tzinfo=UTC)
