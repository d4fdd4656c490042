"""The enterprise service bus edge (kombu): RequestMessages in, ResponseMessages and
EventMessages out, over RabbitMQ (``amqp://``) or in one process (``memory://``).

**Requests.** :class:`EsbConsumer` consumes the request queue (durable) and hands each
message to ``Router.handle(data, principal=<the ESB service principal>, channel="esb")`` on
the application's asyncio loop. The ResponseMessage goes to the request's AMQP ``reply_to``
through the default exchange, with the request's AMQP ``correlation_id`` (or, without one,
its CIM MessageID, which is also the reply's CorrelationID). A CIM Header ``ReplyAddress``
that names a queue (``queue:NAME``, ``queue://NAME`` or a bare queue name such as
``erp.replies``) receives the reply too; with neither, the reply goes to the configured
default reply queue. A request is acknowledged only once every copy of its reply is
published *and confirmed by the broker* (publisher confirms); if the connection drops first,
the broker delivers the request again and the router, idempotent on MessageID, returns the
same reply without doing the work twice.

**Poison.** A message the router cannot read at all -- not XML, hostile XML, too large, not
an IEC 61968-100 message (wrong namespace), a ResponseMessage or FaultMessage on the request
queue, a body that cannot be decompressed, a router crash or time-out, or a message
delivered too many times -- is published (confirmed) to the dead-letter queue with its
original body and properties and the headers ``x-openhes-error-code``,
``x-openhes-reason``, ``x-openhes-queue`` and ``x-openhes-dead-lettered-at``, then
acknowledged: never requeued for ever. When it had a ``reply_to`` and is not itself a reply,
the sender also gets a FAILED ResponseMessage with the code.

**Events.** :class:`EventPublisher` publishes EventMessages to a durable topic exchange with
the routing key ``<noun>.<verb>`` in lower case (``meterreadings.created``,
``enddeviceevents.created``); :class:`EventForwarder` is the HeadEnd listener that turns each
HeadEndEvent into EventMessages (``headend.notifications.event_message``) and publishes them
from its own thread. A publish that is not confirmed is retried with backoff until it is.

**A dead broker.** Both sides reconnect with exponential backoff (``retry_start`` doubling
to ``retry_max`` seconds) and carry on; nothing unconfirmed is dropped and no request is
acknowledged before its reply is out.

``memory://`` (the default) keeps everything in the process, polled every
``polling_interval`` (10 ms; kombu's default of 1 s would add up to a second to every
request). Publisher confirms, persistence and heartbeats apply to ``amqp://`` only.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import re
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from amqp.exceptions import MessageNacked
from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.exceptions import OperationalError

from adapters.intake import Intake, is_reply_kind, refusal_text, reply_message_id, screen
from cim.errors import CimError, ErrorCode
from cim.messages import emit_message, failure_response, salvage_header
from cim.xmlsafe import DEFAULT_LIMITS, XmlLimits

if TYPE_CHECKING:
    from headend.access import Principal
    from headend.router import Router, RouterReply
    from mdm.database import Store

log = logging.getLogger(__name__)

XML = "application/xml"
HEADER_CODE = "x-openhes-error-code"
HEADER_REASON = "x-openhes-reason"
HEADER_QUEUE = "x-openhes-queue"
HEADER_WHEN = "x-openhes-dead-lettered-at"
_AMQP_SCHEMES = frozenset({"amqp", "amqps", "pyamqp", "librabbitmq"})


@dataclass(frozen=True)
class EsbSettings:
    """Where and how the ESB edge talks to the broker (``openhes serve``'s ``esb.*``)."""

    url: str = "memory://"
    request_queue: str = "openhes.requests"
    dead_letter_queue: str = ""  # default: "<request_queue>.dead"
    reply_queue: str = "openhes.replies"  # for requests naming no reply destination
    event_exchange: str = "openhes.events.cim"
    prefetch: int = 16  # requests handled at once
    polling_interval: float = 0.01  # memory:// (and other virtual transports)
    heartbeat: float = 20.0  # amqp:// seconds; 0 disables
    connect_timeout: float = 5.0
    retry_start: float = 0.2  # reconnect / republish backoff, doubling ...
    retry_max: float = 5.0  # ... up to this many seconds
    handle_timeout: float = 300.0  # a router call longer than this is a crash
    max_deliveries: int = 5  # deliveries of one message before it is poison
    stop_grace: float = 10.0  # seconds pending requests may finish at shutdown
    limits: XmlLimits = DEFAULT_LIMITS
    principal_name: str = "esb"
    principal_roles: tuple[str, ...] = ("reader", "operator")
    connection_name: str = "openhes-esb"

    @property
    def dead_letters(self) -> str:
        return self.dead_letter_queue or f"{self.request_queue}.dead"

    @property
    def is_amqp(self) -> bool:
        return urlparse(self.url).scheme in _AMQP_SCHEMES


def connect(settings: EsbSettings, *, role: str) -> Connection:
    """A kombu Connection (not yet connected): confirms on and a named connection for
    amqp://, a short polling interval for memory://."""
    if settings.is_amqp:
        options: dict[str, Any] = {
            "confirm_publish": True,
            "client_properties": {"connection_name": f"{settings.connection_name}:{role}"},
        }
        return Connection(
            settings.url,
            heartbeat=settings.heartbeat or None,
            connect_timeout=settings.connect_timeout,
            transport_options=options,
        )
    return Connection(
        settings.url, transport_options={"polling_interval": settings.polling_interval}
    )


def service_principal(settings: EsbSettings, authenticated_by: str = "esb") -> Principal:
    """The configured principal requests from a trusted channel act as."""
    from headend.access import Principal, Role

    return Principal(
        settings.principal_name,
        frozenset(Role(role) for role in settings.principal_roles),
        authenticated_by,
    )


def routing_key(noun: str, verb: str) -> str:
    """``<noun>.<verb>``, lower case: ``meterreadings.created``."""
    return f"{noun.lower()}.{verb.lower()}"


_BARE_QUEUE = re.compile(r"^[A-Za-z0-9_.\-]{1,255}$")


def reply_queue_of(address: str | None) -> str | None:
    """The queue a CIM ReplyAddress names, or None when it names none (an HTTP URL is
    the outbox's business). ``queue:NAME``, ``queue://NAME``, or a bare queue name."""
    if not address:
        return None
    text = address.strip()
    for prefix in ("queue://", "queue:"):
        if text.lower().startswith(prefix):
            name = text[len(prefix) :]
            return name if _BARE_QUEUE.match(name) else None
    return text if _BARE_QUEUE.match(text) else None


def _open(conn: Connection) -> None:
    """Connect once (kombu's own ``connect()`` sleeps 2 s before giving up); the callers
    back off between attempts themselves."""
    conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, interval_max=0)


def _recoverable(conn: Connection) -> tuple[type[BaseException], ...]:
    return (
        OperationalError,
        *conn.connection_errors,
        *conn.channel_errors,
        MessageNacked,
        OSError,
        socket.timeout,
    )


def _backoff(settings: EsbSettings) -> Iterable[float]:
    delay = settings.retry_start
    while True:
        yield delay
        delay = min(delay * 2, settings.retry_max)


def raw_body(message: Any) -> bytes:
    """The message body as the publisher's bytes (pyamqp hands out text when the
    publisher named a content encoding; encoding it back gives the same bytes), then
    already decompressed by kombu when its ``compression`` header says so (a body that
    cannot be is refused through the Consumer's ``on_decode_error``). CimError if
    undecodable."""
    body = message.body
    if isinstance(body, str):
        encoding = message.content_encoding or "utf-8"
        try:
            body = body.encode(encoding)
        except (LookupError, UnicodeError) as exc:
            raise CimError(ErrorCode.BAD_ENCODING, f"undecodable body: {exc}") from None
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise CimError(ErrorCode.BAD_ENCODING, f"undecodable body of type {type(body).__name__}")
    body = bytes(body)
    return body


@dataclass
class _Pending:
    message: Any
    data: bytes
    intake: Intake
    future: concurrent.futures.Future[RouterReply]
    started: float


@dataclass
class EsbStats:
    received: int = 0
    replied: int = 0
    dead_lettered: int = 0
    reconnects: int = 0
    connected: threading.Event = field(default_factory=threading.Event)


class EsbConsumer:
    """Consumes the request queue in its own thread; the router runs on ``loop``."""

    def __init__(
        self,
        router: Router,
        settings: EsbSettings,
        loop: asyncio.AbstractEventLoop,
        *,
        principal: Principal | None = None,
    ) -> None:
        self.router = router
        self.settings = settings
        self.loop = loop
        self.principal = principal if principal is not None else service_principal(settings)
        self.stats = EsbStats()
        self._pending: list[_Pending] = []
        self._deliveries: OrderedDict[str, int] = OrderedDict()
        self._producer: Producer | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.connection: Connection | None = None  # the current one (for diagnostics)

    # -- thread control

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, args=(self._stop,), name="openhes-esb")
        self._thread.daemon = True
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop consuming; pending requests get ``stop_grace`` seconds to finish. Call from
        a thread other than the router's loop (or see :func:`serve`)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set, reconnecting with backoff when the broker goes."""
        delays = iter(_backoff(self.settings))
        while not stop.is_set():
            conn = connect(self.settings, role="consumer")
            errors = _recoverable(conn)
            try:
                self._session(conn, stop)
            except Exception as exc:
                if self.stats.connected.is_set():  # it had worked: back off from the start
                    delays = iter(_backoff(self.settings))
                self.stats.connected.clear()
                self._pending.clear()  # their deliveries died with the channel: redelivered
                self.stats.reconnects += 1
                delay = next(delays)
                if isinstance(exc, errors):
                    log.warning("ESB: broker connection lost (%s); retrying in %.1f s", exc, delay)
                else:  # a bug must not stop the bus for good
                    log.exception("ESB: consumer failed; reconnecting in %.1f s", delay)
                stop.wait(delay)
                continue
            finally:
                self._producer = None
                self.connection = None
                try:
                    conn.release()
                except Exception:
                    log.debug("ESB: closing a dead connection failed", exc_info=True)
            delays = iter(_backoff(self.settings))

    def _session(self, conn: Connection, stop: threading.Event) -> None:
        _open(conn)
        self.connection = conn
        channel = conn.channel()
        requests = Queue(self.settings.request_queue, durable=True, channel=channel)
        requests.declare()
        Queue(self.settings.dead_letters, durable=True, channel=channel).declare()
        self._producer = Producer(channel)
        consumer = Consumer(
            channel,
            queues=[requests],
            on_message=self._on_message,
            on_decode_error=self._on_decode_error,
            prefetch_count=self.settings.prefetch,
        )
        with consumer:
            self.stats.connected.set()
            log.info("ESB: consuming %s", self.settings.request_queue)
            while not stop.is_set():
                self._drain(conn, 0.01 if self._pending else 0.1)
                self._finish_ready()
                if self.settings.is_amqp:
                    conn.heartbeat_check()
            consumer.cancel()
        deadline = time.monotonic() + self.settings.stop_grace
        while self._pending and time.monotonic() < deadline:
            self._drain(conn, 0.01)
            self._finish_ready()
        self.stats.connected.clear()

    @staticmethod
    def _drain(conn: Connection, timeout: float) -> None:
        with contextlib.suppress(socket.timeout):
            conn.drain_events(timeout=timeout)

    # -- one message

    def _on_message(self, message: Any) -> None:
        self.stats.received += 1
        try:
            data = raw_body(message)
        except CimError as error:
            self._dead_letter(message, _body_bytes(message), error)
            return
        try:
            intake = screen(data, self.settings.limits)
        except CimError as error:
            self._dead_letter(message, data, error)
            return
        if self._too_many_deliveries(message, data, intake):
            self._dead_letter(
                message,
                data,
                CimError(
                    ErrorCode.INTERNAL,
                    f"delivered {self.settings.max_deliveries} times without being answered",
                ),
            )
            return
        future = asyncio.run_coroutine_threadsafe(
            self.router.handle(data, principal=self.principal, channel="esb"), self.loop
        )
        self._pending.append(_Pending(message, data, intake, future, time.monotonic()))

    def _on_decode_error(self, message: Any, exc: Exception) -> None:
        self.stats.received += 1
        compression = (message.headers or {}).get("compression")
        how = f" as {compression!r}" if compression else ""
        error = CimError(
            ErrorCode.BAD_ENCODING,
            f"body cannot be decompressed{how}: {type(exc).__name__}",
        )
        self._dead_letter(message, _body_bytes(message), error)

    def _too_many_deliveries(self, message: Any, data: bytes, intake: Intake) -> bool:
        counted = (message.headers or {}).get("x-delivery-count")  # quorum queues
        if isinstance(counted, int) and counted >= self.settings.max_deliveries:
            return True
        if not message.delivery_info.get("redelivered"):
            return False
        key = intake.message_id or str(hash(data))
        seen = self._deliveries.pop(key, 1) + 1
        self._deliveries[key] = seen
        while len(self._deliveries) > 10_000:
            self._deliveries.popitem(last=False)
        return seen > self.settings.max_deliveries

    def _finish_ready(self) -> None:
        now = time.monotonic()
        for pending in list(self._pending):
            if not pending.future.done():
                if now - pending.started < self.settings.handle_timeout:
                    continue
                pending.future.cancel()
                self._pending.remove(pending)
                self._dead_letter(
                    pending.message,
                    pending.data,
                    CimError(
                        ErrorCode.INTERNAL,
                        f"the router did not answer within {self.settings.handle_timeout:g} s",
                    ),
                )
                continue
            self._pending.remove(pending)
            try:
                reply = pending.future.result()
            except Exception as exc:
                log.error("ESB: the router failed on a message", exc_info=exc)
                self._dead_letter(
                    pending.message,
                    pending.data,
                    CimError(ErrorCode.INTERNAL, f"router crash: {type(exc).__name__}"),
                )
                continue
            self._reply(pending, reply)

    def _reply(self, pending: _Pending, reply: RouterReply) -> None:
        properties = pending.message.properties
        destinations: list[str] = []
        if properties.get("reply_to"):
            destinations.append(properties["reply_to"])
        named = reply_queue_of(pending.intake.reply_address)
        # A deferred reply is only the acknowledgement: the real one goes to the
        # ReplyAddress through the outbox, so the address does not get the ack.
        if named and not reply.deferred and named not in destinations:
            destinations.append(named)
        if not destinations and self.settings.reply_queue:
            destinations.append(self.settings.reply_queue)
        correlation = (
            properties.get("correlation_id")
            or pending.intake.message_id
            or pending.intake.correlation_id
        )
        headers = {
            "openhes-result": reply.result,
            "openhes-deferred": bool(reply.deferred),
            "verb": "reply",
            "noun": pending.intake.noun or "",
        }
        message_id = reply_message_id(reply.body)
        assert self._producer is not None
        for destination in destinations:
            self._producer.publish(
                reply.body,
                exchange="",
                routing_key=destination,
                content_type=XML,
                content_encoding="utf-8",
                correlation_id=correlation,
                message_id=message_id,
                headers=headers,
                delivery_mode=2,
                retry=False,
            )
        pending.message.ack()
        self.stats.replied += 1

    def _dead_letter(self, message: Any, data: bytes, error: CimError) -> None:
        reason = refusal_text(error)
        log.warning(
            "ESB: dead-lettering a message from %s: %s", self.settings.request_queue, reason
        )
        properties = message.properties
        headers = dict(message.headers or {})
        # The DLQ copy's body is as received (decompressed when that worked): the original
        # compression header would make kombu consumers of the DLQ try again.
        compression = headers.pop("compression", None)
        if compression:
            headers["x-openhes-compression"] = compression
        headers.update(
            {
                HEADER_CODE: error.code,
                HEADER_REASON: reason[:2000],
                HEADER_QUEUE: self.settings.request_queue,
                HEADER_WHEN: datetime.now(UTC).isoformat(),
            }
        )
        assert self._producer is not None
        self._producer.publish(
            data,
            exchange="",
            routing_key=self.settings.dead_letters,
            content_type=message.content_type or "application/octet-stream",
            content_encoding="binary",
            correlation_id=properties.get("correlation_id"),
            reply_to=properties.get("reply_to"),
            message_id=properties.get("message_id"),
            headers=headers,
            delivery_mode=2,
            retry=False,
        )
        reply_to = properties.get("reply_to")
        if reply_to and not is_reply_kind(data, self.settings.limits):
            request = salvage_header(data, self.settings.limits)
            body = emit_message(failure_response([error], request))
            self._producer.publish(
                body,
                exchange="",
                routing_key=reply_to,
                content_type=XML,
                content_encoding="utf-8",
                correlation_id=properties.get("correlation_id")
                or (request.message_id if request else None),
                message_id=reply_message_id(body),
                headers={"openhes-result": "FAILED", "verb": "reply"},
                delivery_mode=2,
                retry=False,
            )
        message.ack()
        self.stats.dead_lettered += 1


def _body_bytes(message: Any) -> bytes:
    body = message.body
    if isinstance(body, str):
        return body.encode("utf-8", "surrogatepass")
    try:
        return bytes(body)
    except TypeError:
        return repr(body).encode("utf-8")


class EventPublisher:
    """Publishes EventMessages to the topic exchange, each confirmed by the broker;
    thread-safe; reconnects and republishes with backoff until confirmed or closed."""

    def __init__(self, settings: EsbSettings) -> None:
        self.settings = settings
        self.exchange = Exchange(settings.event_exchange, type="topic", durable=True)
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self._producer: Producer | None = None
        self._closed = threading.Event()
        self._errors = _recoverable(connect(settings, role="events"))
        self.published = 0
        self.retries = 0

    def _ensure(self) -> Producer:
        if self._producer is None:
            conn = connect(self.settings, role="events")
            try:
                _open(conn)
                channel = conn.channel()
                self.exchange(channel).declare()
            except BaseException:
                conn.release()
                raise
            self._conn, self._producer = conn, Producer(channel, exchange=self.exchange)
        return self._producer

    def _drop(self) -> None:
        conn, self._conn, self._producer = self._conn, None, None
        if conn is not None:
            try:
                conn.release()
            except Exception:
                log.debug("ESB events: closing a dead connection failed", exc_info=True)

    def publish(
        self,
        noun: str,
        verb: str,
        body: bytes,
        *,
        message_id: str | None = None,
        correlation_id: str | None = None,
        timeout: float | None = None,
    ) -> bool:
        """Publish one EventMessage; True once the broker confirmed it, False if
        ``timeout`` seconds passed (or the publisher was closed) first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delays = iter(_backoff(self.settings))
        key = routing_key(noun, verb)
        if message_id is None:
            message_id = reply_message_id(body)
        while not self._closed.is_set():
            with self._lock:
                try:
                    producer = self._ensure()
                    producer.publish(
                        body,
                        routing_key=key,
                        content_type=XML,
                        content_encoding="utf-8",
                        message_id=message_id,
                        correlation_id=correlation_id,
                        headers={"noun": noun, "verb": verb},
                        delivery_mode=2,
                        retry=False,
                    )
                    self.published += 1
                    return True
                except self._errors as exc:
                    self._drop()
                    self.retries += 1
                    log.warning("ESB events: publish of %s not confirmed (%s); retrying", key, exc)
            delay = next(delays)
            if deadline is not None:
                delay = min(delay, deadline - time.monotonic())
                if delay <= 0:
                    return False
            self._closed.wait(delay)
        return False

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            self._drop()


Converter = Callable[["Store", Any], Sequence[tuple[str, str, bytes]]]


class EventForwarder:
    """A HeadEnd listener: each HeadEndEvent is queued (the listener never blocks the
    head-end), turned into EventMessages by ``convert`` (default
    ``headend.notifications.event_message``) in this forwarder's thread, and published.
    Events still queued when the process dies are lost here; durable delivery to
    subscribers is the outbox's job."""

    def __init__(
        self,
        store: Store,
        publisher: EventPublisher,
        *,
        convert: Converter | None = None,
        capacity: int = 100_000,
    ) -> None:
        if convert is None:
            from headend.notifications import event_message

            convert = event_message
        self.store = store
        self.publisher = publisher
        self.convert = convert
        self._queue: queue.Queue[Any] = queue.Queue(capacity)
        self._thread: threading.Thread | None = None
        self.failed = 0

    def __call__(self, event: Any) -> None:
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.failed += 1
            log.error("ESB events: queue full, %s not published", type(event).__name__)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="openhes-esb-events")
        self._thread.daemon = True
        self._thread.start()

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            try:
                if event is _STOP:
                    return
                try:
                    messages = self.convert(self.store, event)
                except Exception:
                    self.failed += 1
                    log.exception("ESB events: %s could not be turned into a message", event)
                    continue
                for noun, verb, body in messages:
                    if not self.publisher.publish(noun, verb, body):
                        return  # closed while the broker was away
            finally:
                self._queue.task_done()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every queued event is published; True if it was within ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def stop(self, timeout: float | None = 10.0) -> None:
        """Publish what is queued (up to ``timeout`` seconds), then stop."""
        self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                self.publisher.close()
                self._thread.join(1.0)
            self._thread = None


_STOP = object()


async def serve(
    router: Router,
    settings: EsbSettings,
    stop: asyncio.Event,
    *,
    store: Store | None = None,
    add_listener: Callable[[Callable[[Any], None]], None] | None = None,
    principal: Principal | None = None,
) -> None:
    """Run the ESB edge until ``stop`` is set: the request consumer and, with ``store``
    and ``add_listener`` (``HeadEnd.add_listener``), the event forwarder."""
    consumer = EsbConsumer(router, settings, asyncio.get_running_loop(), principal=principal)
    publisher = forwarder = None
    if store is not None and add_listener is not None:
        publisher = EventPublisher(settings)
        forwarder = EventForwarder(store, publisher)
        forwarder.start()
        add_listener(forwarder)
    consumer.start()
    try:
        await stop.wait()
    finally:
        # The consumer waits for pending router calls, which need this loop running.
        await asyncio.to_thread(consumer.stop)
        if forwarder is not None and publisher is not None:
            await asyncio.to_thread(forwarder.stop)
            publisher.close()
