"""The task bus on memory:// (kombu's in-process transport with priority queues): tasks in
priority order, acknowledge late, prefetch, redelivery of what was not acknowledged, events
to every consumer, and bad input."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
from kombu import Producer

from headend.taskbus import (
    MAX_PRIORITY,
    Delivery,
    TaskBus,
    TaskMessage,
    amqp_priority,
)

T = TypeVar("T")


def run(body: Callable[[], Awaitable[T]], timeout: float = 10.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(body(), timeout)

    return asyncio.run(bounded())


def new_bus() -> TaskBus:
    return TaskBus.from_url("memory://", namespace=f"test-{uuid.uuid4().hex[:10]}")


def message(i: int, priority: int = 90) -> TaskMessage:
    return TaskMessage(i, "job1", priority, f"key-{i}")


async def until(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


def test_message_json_round_trip() -> None:
    m = message(7, 10)
    assert TaskMessage.from_json(m.to_json()) == m
    assert TaskMessage.from_json(
        '{"task_id": 1, "job_id": "j", "priority": 0, "idempotency_key": "k"}'
    ) == TaskMessage(1, "j", 0, "k")


@pytest.mark.parametrize(
    "bad",
    [
        "[]",
        "not json at all",
        {"job_id": "j", "priority": 0, "idempotency_key": "k"},
        {"task_id": "1", "job_id": "j", "priority": 0, "idempotency_key": "k"},
        {"task_id": True, "job_id": "j", "priority": 0, "idempotency_key": "k"},
        {"task_id": 1, "job_id": 5, "priority": 0, "idempotency_key": "k"},
        {"task_id": 1, "job_id": "j", "priority": 1.5, "idempotency_key": "k"},
    ],
)
def test_bad_messages_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        TaskMessage.from_json(bad)


def test_amqp_priority_is_inverted_and_bounded() -> None:
    ordered = [amqp_priority(p) for p in (0, 10, 30, 50, 90, 500)]
    assert ordered == sorted(ordered, reverse=True)
    assert ordered[0] == MAX_PRIORITY and ordered[-1] == 0
    assert amqp_priority(-5) == MAX_PRIORITY


@pytest.mark.parametrize(
    ("url", "namespace"),
    [
        ("redis://localhost", "openhes"),
        ("localhost", "openhes"),
        ("memory://", ""),
        ("memory://", "has space"),
    ],
)
def test_bad_bus_configuration(url: str, namespace: str) -> None:
    with pytest.raises(ValueError):
        TaskBus.from_url(url, namespace=namespace)


def test_prefetch_must_be_positive() -> None:
    bus = new_bus()
    with pytest.raises(ValueError):
        bus.task_consumer(0)


def test_urgent_tasks_overtake_bulk_and_ack_late() -> None:
    async def body() -> None:
        bus = new_bus()
        bus.publish_tasks([message(i, 90) for i in range(5)])
        bus.publish_tasks([message(100, 10), message(101, 0), message(102, 50)])
        assert bus.pending_tasks() == 8
        got: list[Delivery] = []
        consumer = bus.task_consumer(prefetch=100)
        consumer.start(got.append)
        await until(lambda: len(got) == 8)
        assert [d.message.task_id for d in got[:3]] == [101, 100, 102]
        assert [d.message.task_id for d in got[3:]] == [0, 1, 2, 3, 4]  # FIFO within a level
        assert consumer.in_flight == 8
        for d in got:
            d.ack()
            d.ack()  # a second ack is ignored
        await until(lambda: consumer.in_flight == 0)
        consumer.stop()
        assert bus.pending_tasks() == 0 and consumer.acked == 8
        bus.delete()
        bus.close()

    run(body)


def test_prefetch_bounds_unacknowledged_tasks() -> None:
    async def body() -> None:
        bus = new_bus()
        bus.publish_tasks([message(i) for i in range(10)])
        got: list[Delivery] = []
        consumer = bus.task_consumer(prefetch=3)
        consumer.start(got.append)
        await until(lambda: len(got) == 3)
        await asyncio.sleep(0.1)
        assert len(got) == 3
        got[0].ack()
        await until(lambda: len(got) == 4)
        await asyncio.sleep(0.05)
        assert len(got) == 4
        consumer.stop()
        bus.close()

    run(body)


def test_unacknowledged_tasks_go_to_the_next_consumer() -> None:
    async def body() -> None:
        bus = new_bus()
        bus.publish_tasks([message(i) for i in range(4)])
        first: list[Delivery] = []
        consumer = bus.task_consumer(prefetch=10)
        consumer.start(first.append)
        await until(lambda: len(first) == 4)
        first[0].ack()
        first[1].requeue()
        await until(lambda: consumer.in_flight == 2 or len(first) == 5)
        consumer.stop()  # "dies" holding tasks 2 and 3 (and 1 again)
        again: list[Delivery] = []
        other = bus.task_consumer(prefetch=10)
        other.start(again.append)
        await until(lambda: {d.message.task_id for d in again} == {1, 2, 3})
        assert all(d.redelivered for d in again if d.message.task_id in (2, 3))
        for d in again:
            d.ack()
        await until(lambda: other.in_flight == 0)
        other.stop()
        assert bus.pending_tasks() == 0
        bus.close()

    run(body)


def test_paused_consumer_takes_nothing_more() -> None:
    async def body() -> None:
        bus = new_bus()
        got: list[Delivery] = []
        consumer = bus.task_consumer(prefetch=10)
        consumer.start(got.append)
        bus.publish_tasks([message(1)])
        await until(lambda: len(got) == 1)
        consumer.pause()
        bus.publish_tasks([message(2)])
        await asyncio.sleep(0.1)
        assert len(got) == 1
        got[0].ack()
        await until(lambda: consumer.acked == 1)  # acknowledgements go on while paused
        consumer.stop()
        assert bus.pending_tasks() == 1  # task 2 went back
        bus.close()

    run(body)


def test_malformed_task_messages_are_dropped() -> None:
    async def body() -> None:
        bus = new_bus()
        with bus.connection() as conn:
            producer = Producer(conn, serializer="json")
            bus.task_queue(producer.channel).declare()
            producer.publish({"task_id": "x"}, exchange=bus.task_exchange, routing_key="task")
        bus.publish_tasks([message(5)])
        got: list[Delivery] = []
        consumer = bus.task_consumer(prefetch=10)
        consumer.start(got.append)
        await until(lambda: len(got) == 1)
        assert got[0].message.task_id == 5
        got[0].ack()
        await until(lambda: consumer.in_flight == 0)
        consumer.stop()
        assert bus.pending_tasks() == 0
        bus.close()

    run(body)


def test_namespaces_are_separate() -> None:
    async def body() -> None:
        a, b = new_bus(), new_bus()
        a.publish_tasks([message(1)])
        assert b.pending_tasks() == 0 and a.pending_tasks() == 1
        a.purge()
        assert a.pending_tasks() == 0

    run(body)


def test_closed_bus_refuses_to_publish() -> None:
    bus = new_bus()
    bus.close()
    with pytest.raises(RuntimeError):
        bus.publish_tasks([message(1)])


def test_events_reach_every_consumer() -> None:
    from headend.events import ControlDone, JobFinished

    async def body() -> None:
        bus = new_bus()
        a: list[object] = []
        b: list[object] = []
        first, second = bus.event_consumer(a.append), bus.event_consumer(b.append)
        events = [
            ControlDone("job1", "m1", "disconnect", "disconnected", True, None),
            JobFinished("job1", "completed", {"succeeded": 1, "total": 1}),
        ]
        for event in events:
            bus.publish_event(event)
        await until(lambda: len(a) == 2 and len(b) == 2)
        assert a == events and b == events
        first.stop()
        bus.publish_event(events[0])
        await until(lambda: len(b) == 3)
        assert len(a) == 2
        second.stop()
        bus.close()

    run(body)


def test_an_undecodable_event_is_dropped() -> None:
    from headend.events import JobFinished

    async def body() -> None:
        bus = new_bus()
        got: list[object] = []
        consumer = bus.event_consumer(got.append)
        with bus.connection() as conn:
            producer = Producer(conn, serializer="json")
            producer.publish({"type": "Nonsense"}, exchange=bus.event_exchange, routing_key="")
        event = JobFinished("j", "completed", {"total": 0})
        bus.publish_event(event)
        await until(lambda: len(got) == 1)
        assert got == [event] and consumer.received == 1
        consumer.stop()
        bus.close()

    run(body)


def test_a_failing_listener_does_not_stop_the_events() -> None:
    from headend.events import JobFinished

    async def body() -> None:
        bus = new_bus()
        got: list[object] = []

        def listener(event: object) -> None:
            got.append(event)
            raise RuntimeError("listener bug")

        consumer = bus.event_consumer(listener)
        for i in range(2):
            bus.publish_event(JobFinished(f"j{i}", "completed", {"total": 0}))
        await until(lambda: len(got) == 2)
        consumer.stop()
        bus.close()

    run(body)
