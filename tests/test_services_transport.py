"""CIM messages over the real services this project runs on: PostgreSQL and RabbitMQ.

PostgreSQL: emitted messages are stored in an `xml` column and queried with server-side
XPath, so a second XML implementation checks our output's well-formedness and namespaces.
RabbitMQ: an EventMessage published with kombu arrives byte-exact and parses to an equal
model; a hostile message on the bus gets a FAILED reply, never a crash.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from lxml import etree

from cim import namespaces as ns
from cim.envelope import Header, Message, MessageKind, Payload
from cim.messages import emit_message, parse_message, respond
from cim.model import EndDeviceEvent, EndDeviceEventDetail, ObjectRef

pytestmark = pytest.mark.services


def _outage_event_message() -> Message:
    from cim.end_device_events import EndDeviceEvents

    events = EndDeviceEvents(
        events=[
            EndDeviceEvent(
                event_type="3.26.0.85",
                created=datetime(2026, 11, 21, 23, 59, 30, tzinfo=UTC),
                mrid=str(uuid.uuid4()),
                asset=ObjectRef(mrid="meter-0001"),
                details=[EndDeviceEventDetail("LastGasp", "true")],
            )
        ]
    )
    header = Header(
        "created",
        "EndDeviceEvents",
        timestamp=datetime(2026, 11, 22, tzinfo=UTC),
        source="OpenHES",
        message_id=str(uuid.uuid4()),
    )
    return Message(MessageKind.EVENT, header, payload=Payload(document=events))


def test_postgresql_accepts_and_queries_emitted_messages(postgres_url: str) -> None:
    import psycopg

    message = _outage_event_message()
    data = emit_message(message)
    table = f"cim_messages_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(f"CREATE TEMP TABLE {table} (id serial PRIMARY KEY, body xml NOT NULL)")
        connection.execute(
            f"INSERT INTO {table} (body) VALUES (XMLPARSE(DOCUMENT convert_from(%s, 'UTF8')))",
            (data,),
        )
        row = connection.execute(
            f"""SELECT (xpath('/m:EventMessage/m:Header/m:MessageID/text()', body,
                        ARRAY[ARRAY['m', %s]]))[1]::text,
                       (xpath('//e:EndDeviceEvent/e:EndDeviceEventType/@ref', body,
                        ARRAY[ARRAY['e', %s]]))[1]::text,
                       body::text
                FROM {table}""",
            (ns.MESSAGE, ns.payload_namespace("EndDeviceEvents")),
        ).fetchone()
    assert row is not None
    message_id, event_type, stored = row
    assert message.header is not None and message_id == message.header.message_id
    assert event_type == "3.26.0.85"
    assert parse_message(stored.encode("utf-8")).message == message


def test_rabbitmq_carries_messages_and_answers_hostile_ones(amqp_url: str) -> None:
    from kombu import Connection, Exchange, Queue

    queue_name = f"openhes.test.{uuid.uuid4().hex[:8]}"
    exchange = Exchange("openhes.test", type="direct", durable=False, auto_delete=True)
    queue = Queue(queue_name, exchange, routing_key=queue_name, auto_delete=True, durable=False)
    message = _outage_event_message()
    good = emit_message(message)
    hostile = (
        b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b'<EventMessage xmlns="http://iec.ch/TC57/2011/schema/message"><Header>'
        b"<Verb>created</Verb><Noun>&x;</Noun><MessageID>evil-1</MessageID></Header></EventMessage>"
    )
    received: list[bytes] = []
    with Connection(amqp_url, connect_timeout=5) as connection:
        producer = connection.Producer()
        for body in (good, hostile):
            producer.publish(
                body,
                exchange=exchange,
                routing_key=queue_name,
                declare=[queue],
                content_type="application/xml",
                content_encoding="binary",
            )
        with connection.Consumer(
            queue,
            accept=["application/xml"],
            callbacks=[lambda body, msg: (received.append(msg.body), msg.ack())],
        ):
            deadline = datetime.now(UTC).timestamp() + 10
            while len(received) < 2 and datetime.now(UTC).timestamp() < deadline:
                connection.drain_events(timeout=2)
    assert received == [good, hostile]
    assert parse_message(received[0]).message == message
    answer = etree.fromstring(respond(received[1], lambda parsed: pytest.fail("must not run")))
    m = f"{{{ns.MESSAGE}}}"
    assert answer.findtext(f"{m}Reply/{m}Result") == "FAILED"
    assert answer.findtext(f"{m}Reply/{m}Error/{m}code") == "1.3"
