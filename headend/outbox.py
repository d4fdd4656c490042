"""The durable outbox: every message OpenHES sends on its own initiative (asynchronous
replies to a ReplyAddress, EventMessages to subscribers) is first a row here.

A row is written before anyone tries to send it (:meth:`Outbox.enqueue` returns once the row
is committed, or joins the caller's transaction with ``conn=``, so a reply is recorded in
the same transaction as the work it reports). :mod:`adapters.delivery` then claims due rows,
POSTs them and marks them ``delivered``; a refused delivery is retried with backoff until the
row's maximum age, then the row is ``dead``: kept, listed, and re-triable by an operator.
Nothing is ever deleted by the outbox itself.

Claiming is safe with several delivery processes on one database: a claim sets
``claimed_until`` (a lease) and ``claimed_by`` in one short transaction; other claimers skip
rows under a live lease. On PostgreSQL the candidate rows are also locked with ``FOR UPDATE
SKIP LOCKED``, so two claimers never wait for each other nor take the same row; SQLite has
one writer at a time (``BEGIN IMMEDIATE``), which serialises claims. A process killed while
delivering leaves its rows leased; once the lease runs out another claimer takes them again
and sends them with the same MessageID (at-least-once: the receiver drops the duplicate).

``subscriptions`` holds the endpoints that receive EventMessages (see
:mod:`headend.subscriptions`): a unique name, an address, the nouns and verbs it takes
(comma-separated, empty for all) and whether it is enabled.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    Connection,
    Identity,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    bindparam,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from cim.errors import CimError, ErrorCode
from mdm.database import Store, reading, transaction
from mdm.schema import metadata
from mdm.sqltypes import UtcDateTime

KINDS = ("reply", "event")
PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
STATES = (PENDING, DELIVERED, DEAD)
MESSAGE_ID_LENGTH = 100
ADDRESS_LENGTH = 2000
ERROR_LENGTH = 2000

outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, Identity(), primary_key=True),
    Column("message_id", String(MESSAGE_ID_LENGTH), nullable=False, unique=True),
    Column("correlation_id", String(MESSAGE_ID_LENGTH)),
    Column("kind", String(8), nullable=False),
    Column("address", String(ADDRESS_LENGTH), nullable=False),
    Column("soap_action", String(500)),
    # The bare message document (ResponseMessage or EventMessage, UTF-8 XML); the SOAP
    # envelope is added at delivery.
    Column("body", LargeBinary, nullable=False),
    Column("subscription", String(100)),  # the subscription it was made for (events)
    Column("state", String(12), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UtcDateTime, nullable=False),
    Column("claimed_until", UtcDateTime),
    Column("claimed_by", String(200)),
    Column("last_error", String(ERROR_LENGTH)),
    Column("created_at", UtcDateTime, nullable=False),
    Column("last_attempt_at", UtcDateTime),
    Column("delivered_at", UtcDateTime),
    CheckConstraint("kind IN ('reply', 'event')", name="kind"),
    CheckConstraint("state IN ('pending', 'delivered', 'dead')", name="state"),
    Index(None, "state", "next_attempt_at"),
)
_ID_OF = select(outbox.c.id).where(outbox.c.message_id == bindparam("message_id"))
_INSERT = outbox.insert().returning(outbox.c.id)

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("id", Integer, Identity(), primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("address", String(ADDRESS_LENGTH), nullable=False),
    Column("nouns", String(500), nullable=False),  # comma-separated; "" = every noun
    Column("verbs", String(200), nullable=False),  # comma-separated; "" = every verb
    Column("enabled", Boolean, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)


@dataclass(frozen=True)
class OutboxItem:
    id: int
    message_id: str
    correlation_id: str | None
    kind: str
    address: str
    soap_action: str | None
    body: bytes
    subscription: str | None
    state: str
    attempts: int
    next_attempt_at: datetime
    claimed_until: datetime | None
    claimed_by: str | None
    last_error: str | None
    created_at: datetime
    last_attempt_at: datetime | None
    delivered_at: datetime | None


def utcnow() -> datetime:
    return datetime.now(UTC)


def address_problem(address: str) -> str | None:
    """Why ``address`` cannot be delivered to (None when it can): an absolute http or https
    URL with a host, at most 2,000 characters."""
    if not isinstance(address, str) or not address.strip():
        return "the address is empty"
    if len(address) > ADDRESS_LENGTH:
        return f"the address is longer than {ADDRESS_LENGTH} characters"
    try:
        parts = urlsplit(address.strip())
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        return f"the address is not a URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return f"the address {address!r} is not an http or https URL"
    if not parts.hostname:
        return f"the address {address!r} names no host"
    return None


def default_worker_name() -> str:
    """``host:pid:random``: who holds a claim (unique per Outbox user)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def soap_action_for(verb: str, noun: str) -> str:
    """The soapAction of the IEC 61968-100 per-noun WSDLs (schemas/Send*, Receive*, Reply*),
    e.g. ``http://iec.ch/TC57/2011/MeterReadings/CreatedMeterReadings``."""
    return f"http://iec.ch/TC57/2011/{noun}/{verb[:1].upper()}{verb[1:]}{noun}"


class Outbox:
    """The outbox of one store. Thread-safe as far as the Store is (each call uses its own
    connection or the caller's)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # ------------------------------------------------------------------ writing

    def enqueue(
        self,
        *,
        address: str,
        body: bytes,
        message_id: str,
        kind: str,
        correlation_id: str | None = None,
        soap_action: str | None = None,
        subscription: str | None = None,
        conn: Connection | None = None,
        not_before: datetime | None = None,
    ) -> int:
        """Record a message to send; returns its row id. Durable once this returns (with
        ``conn``: once the caller's transaction commits). Idempotent on ``message_id``: the
        same MessageID again returns the existing row's id and adds nothing.

        Refused (CimError BAD_HEADER_VALUE) when the address is not an http(s) URL, the
        kind is not reply or event, or the MessageID is empty or too long."""
        problem = address_problem(address)
        if problem is None and kind not in KINDS:
            problem = f"kind {kind!r} is not one of {', '.join(KINDS)}"
        if problem is None and not (message_id and len(message_id) <= MESSAGE_ID_LENGTH):
            problem = f"a MessageID must have 1 to {MESSAGE_ID_LENGTH} characters"
        if problem is None and correlation_id is not None and len(correlation_id) > 100:
            problem = f"a CorrelationID must have at most {MESSAGE_ID_LENGTH} characters"
        if problem is not None:
            raise CimError(ErrorCode.BAD_HEADER_VALUE, problem)
        if not isinstance(body, bytes | bytearray | memoryview) or not body:
            raise CimError(ErrorCode.MISSING_PAYLOAD, "an outbox message needs a body")
        now = utcnow()
        row = {
            "message_id": message_id,
            "correlation_id": correlation_id,
            "kind": kind,
            "address": address.strip(),
            "soap_action": soap_action,
            "body": bytes(body),
            "subscription": subscription,
            "state": PENDING,
            "attempts": 0,
            "next_attempt_at": not_before or now,
            "created_at": now,
        }
        db: Store | Connection = conn if conn is not None else self.store
        existing = self._id_of(db, message_id)
        if existing is not None:
            return existing
        try:
            with transaction(db) as c:
                return int(c.execute(_INSERT, row).scalar_one())
        except IntegrityError:  # a concurrent enqueue of the same MessageID won
            existing = self._id_of(db, message_id)
            if existing is None:
                raise
            return existing

    @staticmethod
    def _id_of(db: Store | Connection, message_id: str) -> int | None:
        with reading(db) as c:
            found = c.execute(_ID_OF, {"message_id": message_id}).scalar_one_or_none()
        return int(found) if found is not None else None

    # ------------------------------------------------------------------ delivering

    def claim(
        self,
        worker: str,
        *,
        limit: int = 20,
        lease: float = 120.0,
        now: datetime | None = None,
    ) -> list[OutboxItem]:
        """Take up to ``limit`` due rows (pending, next attempt due, no live lease), oldest
        due first, for ``lease`` seconds. Each claim counts as an attempt (a process killed
        mid-delivery has used one)."""
        now = now or utcnow()
        due = (
            select(outbox.c.id)
            .where(
                outbox.c.state == PENDING,
                outbox.c.next_attempt_at <= now,
                or_(outbox.c.claimed_until.is_(None), outbox.c.claimed_until < now),
            )
            .order_by(outbox.c.next_attempt_at, outbox.c.id)
            .limit(limit)
        )
        with self.store.begin() as conn:
            if conn.dialect.name == "postgresql":
                due = due.with_for_update(skip_locked=True)
            ids = list(conn.execute(due).scalars())
            if not ids:
                return []
            conn.execute(
                update(outbox)
                .where(outbox.c.id.in_(ids))
                .values(
                    claimed_until=now + timedelta(seconds=lease),
                    claimed_by=worker,
                    attempts=outbox.c.attempts + 1,
                    last_attempt_at=now,
                )
            )
            rows = conn.execute(select(outbox).where(outbox.c.id.in_(ids))).mappings().all()
        items = [_item(row) for row in rows]
        items.sort(key=lambda item: (item.next_attempt_at, item.id))
        return items

    def mark_delivered(self, item_id: int, worker: str, *, now: datetime | None = None) -> bool:
        """Record a delivery (the receiver accepted it). False when the row was no longer
        pending (an operator killed it meanwhile, or another claimer delivered it first)."""
        with self.store.begin() as conn:
            result = conn.execute(
                update(outbox)
                .where(outbox.c.id == item_id, outbox.c.state == PENDING)
                .values(
                    state=DELIVERED,
                    delivered_at=now or utcnow(),
                    claimed_until=None,
                    claimed_by=worker,
                    last_error=None,
                )
            )
        return result.rowcount == 1

    def mark_failed(
        self,
        item_id: int,
        worker: str,
        *,
        error: str,
        retry_at: datetime | None,
    ) -> bool:
        """Record a refused delivery: retry at ``retry_at``, or dead when it is None. Only
        the current claimer may do so (False when the lease was lost to another)."""
        values: dict[str, object] = {
            "last_error": error[:ERROR_LENGTH],
            "claimed_until": None,
        }
        if retry_at is None:
            values["state"] = DEAD
        else:
            values["next_attempt_at"] = retry_at
        with self.store.begin() as conn:
            result = conn.execute(
                update(outbox)
                .where(
                    outbox.c.id == item_id,
                    outbox.c.state == PENDING,
                    outbox.c.claimed_by == worker,
                )
                .values(**values)
            )
        return result.rowcount == 1

    def release(self, item_ids: Iterable[int], worker: str) -> int:
        """Give claimed rows back at once (a delivery loop stopping cleanly)."""
        ids = list(item_ids)
        if not ids:
            return 0
        with self.store.begin() as conn:
            result = conn.execute(
                update(outbox)
                .where(
                    outbox.c.id.in_(ids),
                    outbox.c.state == PENDING,
                    outbox.c.claimed_by == worker,
                )
                .values(claimed_until=None)
            )
        return int(result.rowcount)

    # ------------------------------------------------------------------ operating

    def retry(self, item_ids: Sequence[int] | None = None, *, now: datetime | None = None) -> int:
        """Make dead rows pending again, due now (all dead rows when ``item_ids`` is None).
        Their age starts again from now, so they get a full retry period."""
        now = now or utcnow()
        query = update(outbox).where(outbox.c.state == DEAD)
        if item_ids is not None:
            if not item_ids:
                return 0
            query = query.where(outbox.c.id.in_(list(item_ids)))
        with self.store.begin() as conn:
            result = conn.execute(
                query.values(
                    state=PENDING,
                    next_attempt_at=now,
                    created_at=now,
                    claimed_until=None,
                )
            )
        return int(result.rowcount)

    def get(self, item_id: int) -> OutboxItem | None:
        with reading(self.store) as conn:
            row = conn.execute(select(outbox).where(outbox.c.id == item_id)).mappings().first()
        return _item(row) if row is not None else None

    def by_message_id(self, message_id: str) -> OutboxItem | None:
        with reading(self.store) as conn:
            row = (
                conn.execute(select(outbox).where(outbox.c.message_id == message_id))
                .mappings()
                .first()
            )
        return _item(row) if row is not None else None

    def items(self, state: str | None = None, *, limit: int = 100) -> list[OutboxItem]:
        """Rows by id, optionally of one state (``dead`` for the operator's list)."""
        query = select(outbox).order_by(outbox.c.id).limit(limit)
        if state is not None:
            query = query.where(outbox.c.state == state)
        with reading(self.store) as conn:
            return [_item(row) for row in conn.execute(query).mappings()]

    def counts(self) -> dict[str, int]:
        """Rows per state (every state present, zero when none)."""
        query = select(outbox.c.state, func.count()).group_by(outbox.c.state)
        with reading(self.store) as conn:
            found = {state: int(n) for state, n in conn.execute(query)}
        return {state: found.get(state, 0) for state in STATES}

    def next_due(self) -> datetime | None:
        """When the earliest pending row falls due (ignoring leases), None if none is."""
        query = select(func.min(outbox.c.next_attempt_at)).where(outbox.c.state == PENDING)
        with reading(self.store) as conn:
            found = conn.execute(query).scalar_one_or_none()
        return _aware(found) if found is not None else None


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _item(row: object) -> OutboxItem:
    values = dict(row)  # type: ignore[call-overload]
    values["body"] = bytes(values["body"])
    return OutboxItem(**values)
