"""Subscriptions: the endpoints that are pushed EventMessages (an MDM takes created
MeterReadings, an OMS created EndDeviceEvents, ...), and the HeadEnd listener that turns each
HeadEndEvent into outbox rows for them.

Subscriptions come from two places: the ``subscriptions`` table (managed with
:func:`add_subscription`, :func:`set_enabled`, :func:`remove_subscription`) and the
configuration file (``[[subscriptions]]`` of :mod:`adapters.config`, any objects with
``name``, ``address``, ``nouns`` and ``verbs``). A configured subscription wins over a table
row of the same name. Nouns and verbs match without regard to case; an empty list matches
all.

:class:`Notifier` is the listener to hand to ``HeadEnd.add_listener``. For each event it
builds the EventMessages once (:func:`headend.notifications.event_message`), then enqueues
one outbox row per interested subscription, with that subscription's own MessageID (a UUID 5
of the event, the message and the subscription name) and the soapAction of the receiving
WSDL (``http://iec.ch/TC57/2011/<Noun>/<Verb><Noun>``, schemas/ReceiveEndDeviceEvents.wsdl,
SendMeterReadings.wsdl). The rows are committed when the listener returns; the same event
seen again (every HeadEnd process gets every event) adds nothing. The listener never
raises: a failure is logged and counted, and the head-end carries on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, select, update

from cim.errors import CimError, ErrorCode
from headend.notifications import event_message, message_id_for, notifications_of
from headend.outbox import Outbox, address_problem, soap_action_for, subscriptions
from mdm.database import Store, reading, transaction

log = logging.getLogger("openhes.subscriptions")


@dataclass(frozen=True)
class Subscription:
    name: str
    address: str
    nouns: tuple[str, ...] = ()  # empty: every noun
    verbs: tuple[str, ...] = ()  # empty: every verb
    enabled: bool = True

    def wants(self, noun: str, verb: str) -> bool:
        return (
            self.enabled
            and (not self.nouns or noun.lower() in {n.lower() for n in self.nouns})
            and (not self.verbs or verb.lower() in {v.lower() for v in self.verbs})
        )

    @classmethod
    def of(cls, item: object) -> Subscription:
        """From any object with name, address, nouns, verbs (and optionally enabled)."""
        if isinstance(item, Subscription):
            return item
        return cls(
            name=str(item.name),  # type: ignore[attr-defined]
            address=str(item.address),  # type: ignore[attr-defined]
            nouns=tuple(getattr(item, "nouns", ()) or ()),
            verbs=tuple(getattr(item, "verbs", ()) or ()),
            enabled=bool(getattr(item, "enabled", True)),
        )


def _split(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _joined(items: Iterable[str], what: str) -> str:
    values = [str(item).strip() for item in items]
    for value in values:
        if not value or "," in value:
            raise CimError(ErrorCode.BAD_VALUE, f"{what} {value!r}: empty or with a comma")
    return ",".join(values)


def add_subscription(
    store: Store,
    name: str,
    address: str,
    *,
    nouns: Sequence[str] = (),
    verbs: Sequence[str] = (),
    enabled: bool = True,
) -> Subscription:
    """Create or replace the subscription ``name``. Refused (CimError) for an empty or
    overlong name, an address that is not an http(s) URL, or a noun/verb with a comma."""
    name = name.strip() if isinstance(name, str) else ""
    if not name or len(name) > 100:
        raise CimError(ErrorCode.BAD_VALUE, "a subscription name has 1 to 100 characters")
    problem = address_problem(address)
    if problem is not None:
        raise CimError(ErrorCode.BAD_VALUE, problem)
    row = {
        "name": name,
        "address": address.strip(),
        "nouns": _joined(nouns, "noun"),
        "verbs": _joined(verbs, "verb"),
        "enabled": enabled,
    }
    with transaction(store) as conn:
        found = conn.execute(
            select(subscriptions.c.id).where(subscriptions.c.name == name)
        ).scalar_one_or_none()
        if found is None:
            conn.execute(subscriptions.insert(), {**row, "created_at": datetime.now(UTC)})
        else:
            conn.execute(update(subscriptions).where(subscriptions.c.id == found).values(**row))
    return Subscription(name, row["address"], tuple(nouns), tuple(verbs), enabled)


def set_enabled(store: Store, name: str, enabled: bool) -> bool:
    with transaction(store) as conn:
        result = conn.execute(
            update(subscriptions).where(subscriptions.c.name == name).values(enabled=enabled)
        )
    return result.rowcount == 1


def remove_subscription(store: Store, name: str) -> bool:
    with transaction(store) as conn:
        result = conn.execute(delete(subscriptions).where(subscriptions.c.name == name))
    return result.rowcount == 1


def list_subscriptions(store: Store) -> list[Subscription]:
    """Every subscription of the table (enabled or not), by name."""
    query = select(
        subscriptions.c.name,
        subscriptions.c.address,
        subscriptions.c.nouns,
        subscriptions.c.verbs,
        subscriptions.c.enabled,
    ).order_by(subscriptions.c.name)
    with reading(store) as conn:
        return [
            Subscription(name, address, _split(nouns), _split(verbs), bool(enabled))
            for name, address, nouns, verbs, enabled in conn.execute(query)
        ]


class Notifier:
    """The HeadEnd listener (see the module docstring). ``configured``: subscriptions of the
    configuration file; the table is re-read at most every ``refresh`` seconds.
    ``on_enqueued`` is called after rows were added (e.g. ``Delivery.wake``)."""

    def __init__(
        self,
        store: Store,
        outbox: Outbox | None = None,
        *,
        configured: Iterable[object] = (),
        source: str = "OpenHES",
        refresh: float = 5.0,
        on_enqueued: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.outbox = outbox or Outbox(store)
        self.configured = [Subscription.of(item) for item in configured]
        for item in self.configured:
            problem = address_problem(item.address)
            if problem is not None:
                raise CimError(ErrorCode.BAD_VALUE, f"subscription {item.name!r}: {problem}")
        self.source = source
        self.refresh = refresh
        self.on_enqueued = on_enqueued
        self.enqueued = 0
        self.failures = 0
        self._table: list[Subscription] = []
        self._loaded_at: float | None = None
        self._lock = threading.Lock()

    def reload(self) -> None:
        """Read the table now (instead of at the next refresh)."""
        with self._lock:
            self._loaded_at = None

    def subscriptions(self) -> list[Subscription]:
        """The subscriptions in force: the configured ones, then the table's enabled rows
        whose names are not configured."""
        with self._lock:
            now = time.monotonic()
            if self._loaded_at is None or now - self._loaded_at >= self.refresh:
                self._table = list_subscriptions(self.store)
                self._loaded_at = now
            table = self._table
        names = {s.name for s in self.configured}
        return [*self.configured, *(s for s in table if s.enabled and s.name not in names)]

    def __call__(self, event: object) -> int:
        """Enqueue ``event``'s messages for every interested subscription; returns the
        number of rows added. Never raises."""
        try:
            added = self.notify(event)
        except Exception:
            self.failures += 1
            log.exception("notifying subscribers of %s failed", type(event).__name__)
            return 0
        if added and self.on_enqueued is not None:
            try:
                self.on_enqueued()
            except Exception:
                log.exception("on_enqueued failed")
        return added

    def notify(self, event: object) -> int:
        kinds = notifications_of(event)
        if not kinds:
            return 0
        targets = {
            (noun, verb): [s for s in self.subscriptions() if s.wants(noun, verb)]
            for noun, verb in kinds
        }
        # Only the rows not enqueued yet (every HeadEnd process sees every event).
        todo = {
            key: [
                s
                for s in subs
                if self.outbox.by_message_id(message_id_for(event, *key, s.name)) is None
            ]
            for key, subs in targets.items()
        }
        if not any(todo.values()):
            return 0
        added = 0
        for noun, verb, body in event_message(self.store, event, source=self.source):
            base = message_id_for(event, noun, verb).encode()
            for subscription in todo.get((noun, verb), ()):
                message_id = message_id_for(event, noun, verb, subscription.name)
                own = body.replace(
                    b"<MessageID>" + base + b"</MessageID>",
                    b"<MessageID>" + message_id.encode() + b"</MessageID>",
                    1,
                )
                self.outbox.enqueue(
                    address=subscription.address,
                    body=own,
                    message_id=message_id,
                    kind="event",
                    correlation_id=getattr(event, "correlation_id", None) or None,
                    soap_action=soap_action_for(verb, noun),
                    subscription=subscription.name,
                )
                added += 1
        self.enqueued += added
        return added
