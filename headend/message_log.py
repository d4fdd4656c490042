"""The router's message log: every request the router must remember, and the reply it gave.

It makes the router idempotent on MessageID and lets asynchronous requests survive a restart:

- A request with a MessageID is *claimed* before its work starts (a row in state
  ``accepted``; the MessageID column is unique, so of two copies racing, in this process or
  another, exactly one claims it). When the work is done the reply bytes are stored and the
  row becomes ``answered``. A copy arriving later gets the stored reply; one arriving while the
  first still runs waits for it (:meth:`MessageLog.wait_answered`).
- An asynchronous request (AsyncReplyFlag with a ReplyAddress) is always recorded, with the
  acknowledgement it was given, before the acknowledgement goes out; its row stays
  ``accepted`` until the final reply is in the outbox, which happens in the same transaction
  as :meth:`MessageLog.answer`. After a restart, :meth:`MessageLog.unanswered` lists what
  is left to finish.
- A request without a MessageID cannot be recognised when sent again: it is served every
  time and is recorded only when it is asynchronous (``message_id`` NULL).

The request bytes are kept so a request can be run again after a restart; the principal
(name, roles, how authenticated) so it runs with the caller's rights and audit name.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

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
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from headend.access import Principal, Role
from mdm.database import Store, reading, transaction
from mdm.schema import WHO_LENGTH, metadata
from mdm.sqltypes import UtcDateTime

ACCEPTED = "accepted"
ANSWERED = "answered"
STATES = (ACCEPTED, ANSWERED)
ID_LENGTH = 200
ADDRESS_LENGTH = 2000

router_messages = Table(
    "router_messages",
    metadata,
    Column("id", Integer, Identity(), primary_key=True),
    # The request's MessageID; NULL for an (asynchronous) request that had none.
    Column("message_id", String(ID_LENGTH), unique=True),
    Column("verb", String(16), nullable=False),
    Column("noun", String(64), nullable=False),
    Column("principal", String(WHO_LENGTH), nullable=False),
    Column("roles", String(64), nullable=False),  # comma-separated Role values
    Column("authenticated_by", String(16), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    Column("answered_at", UtcDateTime),
    Column("state", String(16), nullable=False),
    Column("async_reply", Boolean(create_constraint=False), nullable=False),
    Column("request", LargeBinary, nullable=False),
    Column("ack", LargeBinary),  # the acknowledgement of an asynchronous request
    Column("reply", LargeBinary),  # the ResponseMessage, once answered
    Column("result", String(8)),  # OK | PARTIAL | FAILED
    Column("correlation_id", String(ID_LENGTH)),
    Column("reply_address", String(ADDRESS_LENGTH)),
    Column("reply_message_id", String(ID_LENGTH)),
    CheckConstraint("state IN ('accepted', 'answered')", name="state"),
    Index(None, "state"),
)
# Built once: building them per request cost more than running them on SQLite (the claim
# takes its values as parameters, not .values(), for the same reason).
_CLAIM = insert(router_messages)
_ANSWER = (
    update(router_messages)
    .where(router_messages.c.id == bindparam("row"), router_messages.c.state == ACCEPTED)
    .values(
        state=ANSWERED,
        reply=bindparam("new_reply"),
        result=bindparam("new_result"),
        reply_message_id=bindparam("new_reply_message_id"),
        answered_at=bindparam("new_answered_at"),
    )
)


@dataclass(frozen=True)
class LoggedMessage:
    id: int
    message_id: str | None
    verb: str
    noun: str
    principal: Principal
    channel: str
    received_at: datetime
    answered_at: datetime | None
    state: str
    async_reply: bool
    request: bytes
    ack: bytes | None
    reply: bytes | None
    result: str | None
    correlation_id: str | None
    reply_address: str | None
    reply_message_id: str | None

    @property
    def answered(self) -> bool:
        return self.state == ANSWERED


@dataclass(frozen=True)
class Claim:
    """The outcome of :meth:`MessageLog.claim`: ``new`` True when this caller owns the work
    (row ``entry``); False when the MessageID was logged before (``entry`` is that row)."""

    new: bool
    entry: LoggedMessage


def _fit(text: str | None, length: int) -> str | None:
    return None if text is None else text[:length]


class MessageLog:
    def __init__(self, store: Store, *, clock: Callable[[], datetime] | None = None) -> None:
        self.store = store
        self.clock = clock or (lambda: datetime.now(UTC))

    def claim(
        self,
        *,
        message_id: str | None,
        verb: str,
        noun: str,
        principal: Principal,
        channel: str,
        request: bytes,
        async_reply: bool = False,
        ack: bytes | None = None,
        correlation_id: str | None = None,
        reply_address: str | None = None,
    ) -> Claim:
        """Record a request as ``accepted``; if its MessageID is already logged, nothing is
        written and the earlier row is returned (``Claim.new`` False)."""
        if message_id is not None and len(message_id) > ID_LENGTH:
            raise ValueError(f"a MessageID is at most {ID_LENGTH} characters")
        values: dict[str, Any] = {
            "message_id": message_id,
            "verb": verb[:16],
            "noun": noun[:64],
            "principal": principal.name[:WHO_LENGTH],
            "roles": ",".join(sorted(r.value for r in principal.roles)),
            "authenticated_by": principal.authenticated_by[:16],
            "channel": channel[:16],
            "received_at": self.clock(),
            "state": ACCEPTED,
            "async_reply": async_reply,
            "request": request,
            "ack": ack,
            "correlation_id": _fit(correlation_id, ID_LENGTH),
            "reply_address": _fit(reply_address, ADDRESS_LENGTH),
        }
        # Insert first: the unique MessageID finds a copy (a new request, the common case,
        # costs one statement, not a look-up, the insert and a read back).
        try:
            with transaction(self.store) as conn:
                row_id = conn.execute(_CLAIM, values).inserted_primary_key[0]
        except IntegrityError:
            # Logged before (by this process or another, earlier or racing this one).
            existing = self.find(message_id) if message_id is not None else None
            if existing is None:
                raise
            return Claim(False, existing)
        entry = LoggedMessage(
            id=row_id,
            message_id=message_id,
            verb=values["verb"],
            noun=values["noun"],
            principal=_principal(values["principal"], values["roles"], values["authenticated_by"]),
            channel=values["channel"],
            received_at=values["received_at"].astimezone(UTC),
            answered_at=None,
            state=ACCEPTED,
            async_reply=async_reply,
            request=bytes(request),
            ack=None if ack is None else bytes(ack),
            reply=None,
            result=None,
            correlation_id=values["correlation_id"],
            reply_address=values["reply_address"],
            reply_message_id=None,
        )
        return Claim(True, entry)

    def answer(
        self,
        row_id: int,
        *,
        reply: bytes,
        result: str,
        reply_message_id: str | None,
        conn: Connection | None = None,
    ) -> bool:
        """Store the reply and mark the row answered; False (and nothing changed) when it was
        answered already, e.g. by a concurrent :meth:`Router.resume`. With ``conn``, joins
        that transaction (so the outbox row and the answer land together)."""
        values = {
            "row": row_id,
            "new_reply": reply,
            "new_result": result,
            "new_reply_message_id": _fit(reply_message_id, ID_LENGTH),
            "new_answered_at": self.clock(),
        }
        if conn is not None:
            return conn.execute(_ANSWER, values).rowcount == 1
        with transaction(self.store) as own:
            return own.execute(_ANSWER, values).rowcount == 1

    def get(self, row_id: int) -> LoggedMessage | None:
        return self._one(select(router_messages).where(router_messages.c.id == row_id))

    def find(self, message_id: str) -> LoggedMessage | None:
        return self._one(select(router_messages).where(router_messages.c.message_id == message_id))

    def unanswered(self) -> list[LoggedMessage]:
        """Rows still ``accepted``, oldest first."""
        query = (
            select(router_messages)
            .where(router_messages.c.state == ACCEPTED)
            .order_by(router_messages.c.received_at, router_messages.c.id)
        )
        with reading(self.store) as conn:
            return [_entry(row) for row in conn.execute(query).mappings()]

    async def wait_answered(
        self, row_id: int, timeout: float, *, poll: float = 0.05
    ) -> LoggedMessage | None:
        """Poll the row until it is answered (another process runs it); None on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            entry = self.get(row_id)
            if entry is None or entry.answered:
                return entry
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            await asyncio.sleep(min(poll, left))

    def _one(self, query: object) -> LoggedMessage | None:
        with reading(self.store) as conn:
            row = conn.execute(query).mappings().first()  # type: ignore[call-overload]
        return _entry(row) if row is not None else None


def _principal(name: str, roles: str, authenticated_by: str) -> Principal:
    return Principal(name, frozenset(Role(v) for v in roles.split(",") if v), authenticated_by)


def _entry(row: object) -> LoggedMessage:
    r = dict(row)  # type: ignore[call-overload]
    principal = _principal(r.pop("principal"), r.pop("roles"), r.pop("authenticated_by"))
    for name in ("request", "ack", "reply"):
        if r[name] is not None:
            r[name] = bytes(r[name])
    return LoggedMessage(principal=principal, **r)


__all__ = [
    "ACCEPTED",
    "ANSWERED",
    "Claim",
    "LoggedMessage",
    "MessageLog",
    "router_messages",
]
