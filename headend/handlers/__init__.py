"""The router's handlers, one module per noun, and what they share.

A handler is ``async def handler(ctx: Context) -> Outcome``. It gets the parsed request, the
caller and the services (store, head-end); it returns the payload of the reply and one
:class:`~cim.envelope.ReplyError` per object (device) that failed, and the router turns that
into a ResponseMessage: OK when nothing failed, PARTIAL when some objects failed and others
succeeded, FAILED when all failed. A whole-request refusal is a raised
:class:`~cim.errors.CimError`. Handlers never see bytes and never build envelopes.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection, select

from cim.envelope import Header, Identifier, Message, ReplyError
from cim.errors import CimError, ErrorCode
from cim.model import ObjectRef
from headend.access import Principal
from mdm.database import Store, reading, threads_allowed
from mdm.devices import find_device, group_members
from mdm.errors import MdmError
from mdm.schema import devices as device_table
from mdm.schema import usage_points as usage_point_table

if TYPE_CHECKING:
    from headend.service import HeadEnd

#: Without a window, a get covers the last day.
DEFAULT_SPAN = timedelta(days=1)


T = TypeVar("T")


@dataclass
class Context:
    """One request on its way through a handler."""

    store: Store
    headend: HeadEnd | None
    principal: Principal
    channel: str
    message: Message
    timeout: float  # seconds a handler may wait for head-end work
    source: str = "OpenHES"
    warnings: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    #: Set for deferred work (an asynchronous request's, after its acknowledgement): its
    #: blocking steps take turns through this lane (see :func:`run_blocking`).
    lane: DeferredLane | None = None

    @property
    def header(self) -> Header:
        assert self.message.header is not None
        return self.message.header

    @property
    def message_id(self) -> str | None:
        return self.header.message_id or None

    @property
    def payload_document(self) -> Any:
        """The document the request's Payload carries (a noun model), or None."""
        payload = self.message.payload
        return payload.document if payload is not None else None

    def document(self, kind: type[T]) -> T:
        """The Payload's document, which must be a ``kind`` (else FAILED, missing payload)."""
        document = self.payload_document
        if not isinstance(document, kind):
            noun = kind.__name__
            article = "an" if noun[0] in "AEIOU" else "a"
            raise CimError(
                ErrorCode.MISSING_PAYLOAD,
                f"{self.header.verb} {noun} needs {article} {noun} payload",
            )
        return document

    def time_left(self) -> float:
        return max(0.0, self.timeout - (time.monotonic() - self.started))

    def idempotency_key(self, *parts: str) -> str | None:
        """A stable key for work done for this request (None without a MessageID, so a
        request without one runs afresh each time). At most 64 characters."""
        if not self.message_id:
            return None
        text = "\x1f".join((self.message_id, *parts))
        return "msg:" + hashlib.sha256(text.encode()).hexdigest()[:60]

    def option(self, name: str) -> str | None:
        """The value of the Request Option ``name`` (case-insensitive), or None."""
        request = self.message.request
        if request is None:
            return None
        for option in request.options:
            if option.name.strip().lower() == name.lower():
                return (option.value or "").strip()
        return None

    def flag(self, name: str) -> bool:
        value = self.option(name)
        return value is not None and value.lower() in ("true", "1", "yes")

    async def run_blocking(
        self, function: Callable[..., Any], *args: Any, small: bool = False, **kwargs: Any
    ) -> Any:
        """Database work off the event loop (see :func:`run_blocking`)."""
        return await run_blocking(
            self.store, function, *args, small=small, lane=self.lane, **kwargs
        )


class DeferredLane:
    """Where the blocking steps of deferred work (asynchronous requests', whose callers have
    their acknowledgements) take turns on the event loop, one at a time. A step holds the
    loop for a millisecond or more (and an SQLite store's write lock), so run between
    requests it delays the acknowledgements arriving meanwhile: a step waits until no
    request has arrived for ``quiet`` seconds, but never so long that deferred work gets
    less than ``share`` of the loop's time (after a step of d seconds the next one waits at
    most d * (1 - share) / share). Under a burst of requests the acknowledgements get the
    rest of the time and the deferred work keeps its share: it goes on under any load, and
    catches up at full speed when the burst ends."""

    def __init__(
        self,
        *,
        quiet: float = 0.002,
        share: float = 1 / 3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], not {share!r}")
        self.quiet = quiet
        self.ratio = (1 - share) / share
        self.clock = clock
        self.last_request = -math.inf
        self._due = -math.inf  # a step runs from here on, requests or not
        self._turn = asyncio.Semaphore(1)

    def request_arrived(self) -> None:
        self.last_request = self.clock()

    def quiet_for(self) -> float:
        """Seconds since the last request arrived (infinite before the first)."""
        return self.clock() - self.last_request

    async def run(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        async with self._turn:
            await asyncio.sleep(0)  # what is ready on the loop runs before this step
            while True:
                now = self.clock()
                quiet_from = self.last_request + self.quiet
                if now >= quiet_from or now >= self._due:
                    break
                await asyncio.sleep(min(quiet_from, self._due) - now)
            started = self.clock()
            try:
                return function(*args, **kwargs)
            finally:
                ended = self.clock()
                self._due = ended + (ended - started) * self.ratio


async def run_blocking(
    store: Store,
    function: Callable[..., Any],
    *args: Any,
    small: bool = False,
    lane: DeferredLane | None = None,
    **kwargs: Any,
) -> Any:
    """Database work off the event loop (in a worker thread), so other requests keep being
    served meanwhile. Run here instead when the store's connection cannot be used from
    another thread while this loop uses it (see :func:`threads_allowed`), and for ``small``
    work (the caller expects a few thousand rows at most) on an embedded SQLite store: that
    is CPU work of this process, which a thread would not overlap with anything, and the
    hand-off to a thread and back costs more CPU than it takes.

    ``lane``: deferred work (an asynchronous request's, whose caller has its
    acknowledgement) on an embedded SQLite store runs here too, one step at a time per lane
    and each when requests let it (see :class:`DeferredLane`), so acknowledgements and
    synchronous requests go first. In threads it would cost more CPU (GIL hand-offs, and
    writers of one process queueing on SQLite's write lock): measured 5.4 instead of 3.7 ms
    of CPU per asynchronous control request, before writers polled for the lock
    (mdm.database) instead of sleeping in SQLite's busy handler."""
    if lane is not None and store.dialect == "sqlite":
        return await lane.run(function, *args, **kwargs)
    if not threads_allowed(store) or (small and store.dialect == "sqlite"):
        return function(*args, **kwargs)
    return await asyncio.to_thread(function, *args, **kwargs)


@dataclass
class Outcome:
    document: Any = None  # the reply's payload (a noun model or an lxml element)
    errors: list[ReplyError] = field(default_factory=list)  # failed objects
    notes: list[ReplyError] = field(default_factory=list)  # per-object results that are OK
    succeeded: int = 0  # objects that were served


Handler = Callable[[Context], Awaitable[Outcome]]


def device_error(
    mrid: str, code: ErrorCode | str, reason: str, *, object_type: str = "EndDevice"
) -> ReplyError:
    """A Reply Error naming the device it is about (ID = its mRID or the name sent)."""
    error = code if isinstance(code, ErrorCode) else _error_code(code)
    return ReplyError(
        code=error.code,
        level=str(error.level),
        reason=reason,
        id=Identifier(mrid, object_type=object_type),
    )


def device_note(mrid: str, reason: str, details: str | None = None) -> ReplyError:
    """A per-device success entry: code 0.0, INFORM."""
    return ReplyError(
        code=ErrorCode.OK.code,
        level=str(ErrorCode.OK.level),
        reason=reason,
        details=details,
        id=Identifier(mrid, object_type="EndDevice"),
    )


def _error_code(code: str) -> ErrorCode:
    """An OpenHES code (``6.1``), or a driver's failure cause (``timeout``)."""
    try:
        return ErrorCode.from_code(code)
    except ValueError:
        from headend.commands import error_code_for

        return error_code_for(code)


@dataclass
class Devices:
    """The devices a request names, resolved to registered mRIDs (in request order, once
    each), and an error for each reference that names no registered device."""

    mrids: list[str] = field(default_factory=list)
    errors: list[ReplyError] = field(default_factory=list)


def resolve_devices(
    store: Store,
    devices: Sequence[ObjectRef] = (),
    groups: Sequence[ObjectRef] = (),
    usage_points: Sequence[ObjectRef] = (),
    *,
    conn: Connection | None = None,
) -> Devices:
    """Devices by mRID (or name / alternative name when no mRID is registered), devices of
    groups (by name, recursively) and of usage points (by mRID or name). ``conn``: a
    connection of ``store`` to read with (else one is opened)."""
    out = Devices()
    seen: set[str] = set()

    def add(mrid: str) -> None:
        if mrid not in seen:
            seen.add(mrid)
            out.mrids.append(mrid)

    with reading(store if conn is None else conn) as conn:
        wanted = [ref.mrid for ref in devices if ref.mrid]
        # mRID -> id is permanent (devices are never deleted): the store's cache serves it.
        known = store.ids.devices(conn, wanted) if wanted else {}
        for ref in devices:
            key = ref.key
            if key is None:
                out.errors.append(
                    device_error("?", ErrorCode.MISSING_ELEMENT, "an EndDevice has no mRID or name")
                )
                continue
            if ref.mrid and ref.mrid in known:
                add(ref.mrid)
                continue
            found = _by_names(conn, ref)
            if found is None:
                out.errors.append(
                    device_error(key, ErrorCode.UNKNOWN_DEVICE, f"no end device {key!r}")
                )
            else:
                add(found)
        for group in groups:
            name = group.names[0].name if group.names else group.mrid
            if not name:
                out.errors.append(
                    device_error(
                        "?",
                        ErrorCode.MISSING_ELEMENT,
                        "an EndDeviceGroup has no name",
                        object_type="EndDeviceGroup",
                    )
                )
                continue
            try:
                members = group_members(conn, name, recursive=True)
            except MdmError:
                members = None
            if members is None and group.mrid and group.mrid != name:
                try:
                    members = group_members(conn, group.mrid, recursive=True)
                except MdmError:
                    members = None
            if members is None:
                out.errors.append(
                    device_error(
                        name,
                        ErrorCode.UNKNOWN_DEVICE,
                        f"no end device group {name!r}",
                        object_type="EndDeviceGroup",
                    )
                )
                continue
            for mrid in members:
                add(mrid)
        for point in usage_points:
            key = point.key or "?"
            query = (
                select(device_table.c.mrid)
                .join(usage_point_table, usage_point_table.c.id == device_table.c.usage_point_id)
                .order_by(device_table.c.mrid)
            )
            if point.mrid:
                query = query.where(usage_point_table.c.mrid == point.mrid)
            else:
                names = [n.name for n in point.names]
                query = query.where(usage_point_table.c.name.in_(names or [""]))
            found = list(conn.execute(query).scalars())
            if not found:
                out.errors.append(
                    device_error(
                        key,
                        ErrorCode.UNKNOWN_USAGE_POINT,
                        f"no usage point {key!r} with a registered device",
                        object_type="UsagePoint",
                    )
                )
            for mrid in found:
                add(mrid)
    return out


def _by_names(conn: Any, ref: ObjectRef) -> str | None:
    candidates: list[tuple[str, str | None]] = []
    if ref.mrid:
        candidates.append((ref.mrid, None))
    candidates.extend((name.name, name.name_type) for name in ref.names)
    for name, name_type in candidates:
        try:
            return find_device(conn, name, name_type)
        except MdmError:
            continue
    return None


def requested_periods(
    ctx: Context, intervals: Iterable[Any]
) -> list[tuple[datetime | None, datetime | None]]:
    """The time periods a get asks for: its profile's intervals, else the Request's
    StartTime/EndTime, else none (the default window)."""
    periods = [(p.start, p.end) for p in intervals]
    request = ctx.message.request
    if not periods and request is not None and (request.start_time or request.end_time):
        periods = [(request.start_time, request.end_time)]
    return periods


def window(
    periods: Iterable[tuple[datetime | None, datetime | None]],
    *,
    now: datetime | None = None,
    span: timedelta = DEFAULT_SPAN,
) -> tuple[datetime, datetime]:
    """One ``(start, end]`` window covering every period given: a missing end is now, a
    missing start ``span`` before the end. Refused (BAD_DATETIME) when it runs backwards."""
    now = now or datetime.now(UTC)
    starts: list[datetime] = []
    ends: list[datetime] = []
    for start, end in periods:
        end = end or now
        start = start or end - span
        if end < start:
            raise CimError(ErrorCode.BAD_DATETIME, "a time window ends before it starts")
        starts.append(start)
        ends.append(end)
    if not starts:
        return now - span, now
    return min(starts).astimezone(UTC), max(ends).astimezone(UTC)


__all__ = [
    "DEFAULT_SPAN",
    "Context",
    "DeferredLane",
    "Devices",
    "Handler",
    "Outcome",
    "device_error",
    "device_note",
    "resolve_devices",
    "run_blocking",
    "threads_allowed",
    "window",
]
