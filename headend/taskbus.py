"""The task bus: tasks and head-end events over kombu, so N worker processes on M machines
share one job (issue #5, point 5).

Two transports, one code path:

- ``memory://`` (the default): everything inside one process. It is kombu's in-memory
  transport with two changes that make it behave like the broker for our purposes: its task
  queues are priority queues (urgent work overtakes bulk work, as with RabbitMQ's
  ``x-max-priority``), and messages delivered but not acknowledged go back to their queue
  when a consumer closes (kombu's memory transport drops them). Consumers poll every 10 ms
  (kombu's default is 1 s).
- ``amqp://`` (RabbitMQ): the task queue is durable with ``x-max-priority``, messages are
  persistent and every publish waits for the broker's confirmation.

Tasks: :meth:`TaskBus.publish_tasks` puts :class:`TaskMessage` s (ids only: the worker loads
the rest from the database) on the task queue with an AMQP priority derived from the task's
(lower is more urgent, :class:`headend.jobs.Priority`). A :class:`TaskConsumer` runs kombu's
blocking consumer in a thread of its own and hands each delivery to an asyncio loop
(``loop.call_soon_threadsafe``); the asyncio side acknowledges a :class:`Delivery` once the
task's outcome is committed (acknowledge late) and the acknowledgement itself is made by the
consumer thread, because kombu channels are not thread-safe. ``prefetch`` bounds the tasks
a consumer holds unacknowledged. A consumer that dies leaves its deliveries unacknowledged:
the broker hands them to another consumer.

Events: :meth:`TaskBus.publish_event` sends a :mod:`headend.events` event to a fanout
exchange; each :class:`EventConsumer` (one per HeadEnd instance) has its own exclusive,
auto-delete queue bound to it, so every HeadEnd sees every event.

Names: everything is under a ``namespace`` (default ``openhes``): the task exchange and queue
``<namespace>.tasks``, the event exchange ``<namespace>.events``. Tests use a namespace of
their own so stale messages never interfere.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import queue as queue_module
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.transport import memory, virtual

log = logging.getLogger(__name__)

MAX_PRIORITY = 10  # the task queue's x-max-priority; AMQP priority 0..10, higher first
POLL_INTERVAL = 0.01  # seconds: the memory transport's polling interval
_TICK = 0.02  # seconds: how long a consumer thread blocks before looking at its acks


def amqp_priority(priority: int) -> int:
    """The AMQP priority (higher first) for a task priority (lower first): controls 0 -> 10,
    on-demand 10 -> 9, group 30 -> 7, scheduled 50 -> 5, bulk 90 -> 1."""
    return max(0, min(MAX_PRIORITY, MAX_PRIORITY - int(priority) // 10))


@dataclass(frozen=True, slots=True)
class TaskMessage:
    """What travels on the bus for one task: its id, its job, its priority and its
    idempotency key. Everything else is in the database."""

    task_id: int
    job_id: str
    priority: int
    idempotency_key: str = ""  # informative: the worker takes the task's from the database

    def to_json(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "job_id": self.job_id,
            "priority": self.priority,
            "idempotency_key": self.idempotency_key,
        }

    @classmethod
    def from_json(cls, data: object) -> TaskMessage:
        """Raises ValueError for anything but a well-formed task message."""
        if isinstance(data, str | bytes):
            data = json.loads(data)
        if not isinstance(data, dict):
            raise ValueError("a task message is a JSON object")
        try:
            task_id, job_id = data["task_id"], data["job_id"]
            priority, key = data["priority"], data["idempotency_key"]
        except KeyError as exc:
            raise ValueError(f"a task message lacks {exc.args[0]!r}") from None
        if not isinstance(task_id, int) or isinstance(task_id, bool):
            raise ValueError(f"task_id {task_id!r} is not an integer")
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise ValueError(f"priority {priority!r} is not an integer")
        if not isinstance(job_id, str) or not isinstance(key, str):
            raise ValueError("job_id and idempotency_key are strings")
        return cls(task_id, job_id, priority, key)


# -- the in-process transport ----------------------------------------------------------------


class _PriorityQueue(queue_module.PriorityQueue):  # type: ignore[type-arg]
    """Messages by AMQP priority (highest first), then in arrival order."""

    _seq = itertools.count()

    def put_message(self, message: dict[str, Any], priority: int) -> None:
        self.put((-priority, next(self._seq), message))

    def get_message(self) -> dict[str, Any]:
        return self.get(block=False)[2]


class PriorityMemoryChannel(memory.Channel):
    """kombu's memory channel with priority queues, restoring unacknowledged messages."""

    # The broker's state, per process (class attributes, as in kombu's memory channel).
    events: ClassVar[defaultdict[str, set[Any]]] = defaultdict(set)
    queues: ClassVar[dict[str, _PriorityQueue]] = {}
    do_restore = True
    max_priority = MAX_PRIORITY

    def _new_queue(self, queue: str, **kwargs: Any) -> None:
        self._queue_for(queue)

    def _queue_for(self, queue: str) -> _PriorityQueue:
        found = self.queues.get(queue)
        if found is None:
            found = self.queues.setdefault(queue, _PriorityQueue())
        return found

    def _get(self, queue: str, timeout: float | None = None) -> dict[str, Any]:
        return self._queue_for(queue).get_message()

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        self._queue_for(queue).put_message(message, self._get_message_priority(message))

    def _put_fanout(
        self, exchange: str, message: dict[str, Any], routing_key: str = "", **kwargs: Any
    ) -> None:
        for queue in self._lookup(exchange, routing_key):
            self._put(queue, message)

    def _restore(self, message: Any) -> None:
        """Back to its queue, marked redelivered (as the broker marks it)."""
        info = message.delivery_info
        raw = message.serializable()
        properties = raw["properties"] = dict(raw["properties"])
        properties["delivery_info"] = {
            **(properties.get("delivery_info") or {}),
            "redelivered": True,
        }
        for queue in self._lookup(info["exchange"], info["routing_key"]):
            self._put(queue, raw)

    def _delete(self, queue: str, *args: Any, **kwargs: Any) -> None:
        self.queues.pop(queue, None)

    def _purge(self, queue: str) -> int:
        q = self._queue_for(queue)
        with q.mutex:
            size = len(q.queue)
            q.queue.clear()
        return size

    def close(self) -> None:
        # memory.Channel.close empties every queue of the process; keep them (the broker
        # outlives a consumer), only restore this channel's unacknowledged messages.
        virtual.Channel.close(self)


class PriorityMemoryTransport(memory.Transport):
    """``memory://`` for the task bus: state per process, separate from kombu's own."""

    Channel = PriorityMemoryChannel
    global_state = virtual.BrokerState()
    polling_interval = POLL_INTERVAL
    driver_type = "memory"
    driver_name = "memory"


# -- deliveries and consumers ----------------------------------------------------------------


class Delivery:
    """One task delivered to a consumer. :meth:`ack` (after the task's outcome is committed)
    and :meth:`requeue` may be called from any thread, once; the consumer thread performs
    them."""

    __slots__ = ("_consumer", "_generation", "_tag", "done", "message", "redelivered")

    def __init__(
        self,
        consumer: TaskConsumer,
        message: TaskMessage,
        tag: int,
        generation: int,
        redelivered: bool,
    ) -> None:
        self._consumer = consumer
        self._tag = tag
        self._generation = generation
        self.message = message
        self.redelivered = redelivered
        self.done = False

    def ack(self) -> None:
        self._settle("ack")

    def requeue(self) -> None:
        """Give the task back to the queue (another consumer, or this one, takes it)."""
        self._settle("requeue")

    def _settle(self, how: str) -> None:
        if not self.done:
            self.done = True
            self._consumer._settle(self._tag, self._generation, how)

    def __repr__(self) -> str:
        return f"Delivery({self.message!r}, redelivered={self.redelivered})"


class _ConsumerThread:
    """The part shared by task and event consumers: a thread owning a kombu connection,
    reconnecting with backoff after a broker failure, until stopped."""

    name = "consumer"

    def __init__(self, bus: TaskBus) -> None:
        self.bus = bus
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None  # the last broker error, for health checks
        self.connected = False

    def _start_thread(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    def _run(self) -> None:
        delay = 0.2
        while not self._stop.is_set():
            try:
                with self.bus.connection() as conn:
                    conn.ensure_connection(max_retries=1)
                    self._consume(conn)
                    delay = 0.2
            except Exception as exc:
                if self._stop.is_set():
                    break
                self.error = exc
                self.connected = False
                log.warning("%s: broker error (%s); reconnecting in %.1f s", self.name, exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)
        self.connected = False

    def _consume(self, conn: Connection) -> None:
        raise NotImplementedError

    def _drain(self, conn: Connection) -> None:
        with contextlib.suppress(TimeoutError):
            conn.drain_events(timeout=_TICK)

    def _join(self, timeout: float) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("%s did not stop within %.1f s", self.name, timeout)


class TaskConsumer(_ConsumerThread):
    """Consumes the task queue in a thread; ``on_delivery`` is called on ``loop`` for each
    task. At most ``prefetch`` tasks are held unacknowledged."""

    name = "openhes-task-consumer"

    def __init__(self, bus: TaskBus, prefetch: int) -> None:
        if not isinstance(prefetch, int) or prefetch < 1:
            raise ValueError(f"prefetch must be >= 1, not {prefetch!r}")
        super().__init__(bus)
        self.prefetch = prefetch
        self._settlements: queue_module.SimpleQueue[tuple[int, int, str]] = (
            queue_module.SimpleQueue()
        )
        self._generation = 0  # a new connection makes older delivery tags meaningless
        self._pending: dict[int, Any] = {}  # delivery tag -> kombu message
        self._paused = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_delivery: Callable[[Delivery], None] | None = None
        self.delivered = 0
        self.acked = 0

    def start(
        self,
        on_delivery: Callable[[Delivery], None],
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        """Start consuming. ``loop`` defaults to the running loop."""
        self._loop = loop or asyncio.get_running_loop()
        self._on_delivery = on_delivery
        self._start_thread()

    def pause(self) -> None:
        """Hand over no more tasks (those that arrive stay unacknowledged and go back to the
        queue when the consumer stops); acknowledgements go on."""
        self._paused.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Perform the acknowledgements asked so far, then close: every delivery not
        acknowledged goes back to the queue."""
        self._paused.set()
        self._join(timeout)

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def _settle(self, tag: int, generation: int, how: str) -> None:
        self._settlements.put((tag, generation, how))

    def _apply_settlements(self) -> None:
        while True:
            try:
                tag, generation, how = self._settlements.get_nowait()
            except queue_module.Empty:
                return
            message = self._pending.pop(tag, None) if generation == self._generation else None
            if message is None:
                continue  # from a connection that is gone: the broker redelivers it
            if how == "ack":
                message.ack()
                self.acked += 1
            else:
                message.requeue()

    def _consume(self, conn: Connection) -> None:
        self._generation += 1
        self._pending.clear()
        bus = self.bus
        channel = conn.channel()
        consumer = Consumer(
            channel,
            queues=[bus.task_queue],
            callbacks=[self._received],
            accept=["json"],
            prefetch_count=self.prefetch,
            auto_declare=True,
        )
        with consumer:
            self.connected = True
            self._ready.set()
            while not self._stop.is_set():
                self._apply_settlements()
                self._drain(conn)
            self._apply_settlements()
        self.connected = False

    def _received(self, body: object, message: Any) -> None:
        tag = message.delivery_tag
        try:
            task = TaskMessage.from_json(body)
        except ValueError as exc:
            log.error("dropping a malformed task message: %s", exc)
            message.reject(requeue=False)
            return
        self._pending[tag] = message
        if self._paused.is_set() or self._loop is None or self._on_delivery is None:
            return  # held unacknowledged: back to the queue when this consumer closes
        redelivered = bool(
            getattr(message, "redelivered", False) or message.delivery_info.get("redelivered")
        )
        delivery = Delivery(self, task, tag, self._generation, redelivered)
        self.delivered += 1
        try:
            self._loop.call_soon_threadsafe(self._on_delivery, delivery)
        except RuntimeError:  # the loop is closed: keep it unacknowledged
            self._paused.set()


class EventConsumer(_ConsumerThread):
    """Receives every head-end event published on the bus, from its own exclusive
    auto-delete queue. ``on_event`` is called on the loop that was running when the consumer
    was created (or in the consumer thread when there was none). Consumption starts at once:
    events published after the constructor returns are received."""

    name = "openhes-event-consumer"

    def __init__(self, bus: TaskBus, on_event: Callable[[Any], None]) -> None:
        super().__init__(bus)
        self.on_event = on_event
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self.queue = Queue(
            f"{bus.namespace}.events.{uuid.uuid4().hex[:12]}",
            bus.event_exchange,
            exclusive=True,
            auto_delete=True,
            durable=False,
        )
        self.received = 0
        self._start_thread()
        if not self.wait_ready(10.0):
            log.warning("event consumer: the broker did not answer within 10 s")

    def start(self) -> None:
        """Nothing to do (consumption starts when the consumer is made); kept so callers may
        start it explicitly."""

    def stop(self, timeout: float = 5.0) -> None:
        self._join(timeout)

    close = stop

    def _consume(self, conn: Connection) -> None:
        channel = conn.channel()
        consumer = Consumer(
            channel, queues=[self.queue], callbacks=[self._received], accept=["json"], no_ack=False
        )
        with consumer:
            self.connected = True
            self._ready.set()
            while not self._stop.is_set():
                self._drain(conn)
        self.connected = False

    def _received(self, body: object, message: Any) -> None:
        message.ack()
        try:
            event = decode_event(message.body)
        except Exception as exc:  # a malformed or unknown event must not stop the consumer
            log.error("dropping an event that does not decode: %s", exc)
            return
        self.received += 1
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed
                self._loop.call_soon_threadsafe(self._call, event)
        else:
            self._call(event)

    def _call(self, event: object) -> None:
        try:
            self.on_event(event)
        except Exception:
            log.exception("an event listener failed")


def encode_event(event: object) -> str:
    """The event's JSON text (:func:`headend.events.to_json`)."""
    from headend import events

    return events.to_json(event)  # type: ignore[arg-type]


def decode_event(data: str | bytes) -> object:
    """The event from its JSON text; raises headend.command_json.CodecError otherwise."""
    from headend import events

    return events.from_json(data)


# -- the bus ---------------------------------------------------------------------------------


def _is_memory(url: str) -> bool:
    return url.split("://", 1)[0].lower() == "memory"


class TaskBus:
    """The task queue and the event exchange on one broker. Thread-safe: publishing from any
    thread; each consumer has a connection of its own."""

    def __init__(
        self,
        url: str = "memory://",
        *,
        namespace: str = "openhes",
        confirm: bool = True,
        connect_timeout: float = 10.0,
    ) -> None:
        if "://" not in url:
            raise ValueError(f"a broker URL is scheme://..., not {url!r}")
        scheme = url.split("://", 1)[0].lower()
        if scheme not in ("memory", "amqp", "amqps", "pyamqp"):
            raise ValueError(f"broker URL scheme {scheme!r}: use memory:// or amqp://")
        if not namespace or any(c.isspace() for c in namespace):
            raise ValueError(f"namespace {namespace!r} is empty or has spaces")
        self.url = url
        self.namespace = namespace
        self.memory = _is_memory(url)
        self.confirm = confirm and not self.memory
        self.connect_timeout = connect_timeout
        self.task_exchange = Exchange(f"{namespace}.tasks", "direct", durable=True)
        self.task_queue = Queue(
            f"{namespace}.tasks",
            self.task_exchange,
            routing_key="task",
            durable=True,
            queue_arguments={"x-max-priority": MAX_PRIORITY},
        )
        self.event_exchange = Exchange(f"{namespace}.events", "fanout", durable=True)
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self._producer: Producer | None = None
        self._closed = False

    @classmethod
    def from_url(cls, url: str = "memory://", **options: Any) -> TaskBus:
        return cls(url, **options)

    def __repr__(self) -> str:
        where = "memory" if self.memory else self.url.split("@")[-1]
        return f"TaskBus({where}, namespace={self.namespace!r})"

    def connection(self) -> Connection:
        """A new kombu connection to the broker (the caller closes it)."""
        if self.memory:
            return Connection(self.url, transport=PriorityMemoryTransport)
        options: dict[str, Any] = {"confirm_publish": True} if self.confirm else {}
        return Connection(self.url, connect_timeout=self.connect_timeout, transport_options=options)

    def _publisher(self) -> Producer:
        if self._closed:
            raise RuntimeError("the task bus is closed")
        if self._producer is None:
            self._conn = self.connection()
            self._producer = Producer(self._conn, serializer="json")
            self.task_queue.declare(channel=self._producer.channel)
            self.event_exchange.declare(channel=self._producer.channel)
        return self._producer

    def _publish(self, body: dict[str, Any] | str, **kwargs: Any) -> None:
        for attempt in range(2):
            producer = self._publisher()
            try:
                producer.publish(body, **kwargs)
                return
            except Exception as exc:
                if self.memory or attempt:
                    raise
                log.warning("publish failed (%s); reconnecting once", exc)
                self._drop_publisher()

    def _drop_publisher(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.release()
        self._conn = None
        self._producer = None

    def publish_tasks(self, messages: Sequence[TaskMessage]) -> None:
        """Persistent; with amqp:// each publish is confirmed by the broker before the next."""
        with self._lock:
            for message in messages:
                self._publish(
                    message.to_json(),
                    exchange=self.task_exchange,
                    routing_key="task",
                    delivery_mode=2,
                    priority=amqp_priority(message.priority),
                    retry=not self.memory,
                )

    def publish_event(self, event: object) -> None:
        """Fan out to every HeadEnd's event queue (not persistent: an event is a
        notification; the state it tells of is in the database)."""
        body = encode_event(event)
        with self._lock:
            self._publish(
                body,
                exchange=self.event_exchange,
                routing_key="",
                delivery_mode=1,
                retry=False,
                content_type="application/json",
                content_encoding="utf-8",
            )

    def task_consumer(self, prefetch: int) -> TaskConsumer:
        return TaskConsumer(self, prefetch)

    def event_consumer(self, on_event: Callable[[Any], None]) -> EventConsumer:
        return EventConsumer(self, on_event)

    def pending_tasks(self) -> int:
        """Tasks in the queue not yet delivered to a consumer."""
        with self.connection() as conn:
            _, count, _ = self.task_queue(conn.channel()).queue_declare()
            return int(count)

    def purge(self) -> int:
        with self.connection() as conn:
            return int(self.task_queue(conn.channel()).purge() or 0)

    def delete(self) -> None:
        """Delete the task queue and both exchanges (tests clean up with it)."""
        with self.connection() as conn:
            channel = conn.channel()
            for entity in (self.task_queue, self.task_exchange, self.event_exchange):
                with contextlib.suppress(Exception):
                    entity(channel).delete()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._drop_publisher()


__all__ = [
    "MAX_PRIORITY",
    "Delivery",
    "EventConsumer",
    "PriorityMemoryTransport",
    "TaskBus",
    "TaskConsumer",
    "TaskMessage",
    "amqp_priority",
    "decode_event",
    "encode_event",
]
