"""Persisted scheduled jobs: create, list, enable, disable and delete them (table
``schedules`` of :mod:`headend.ops_schema`), and the :class:`ScheduleRunner` that submits
their firings to the head-end as jobs.

Creation checks everything that would otherwise fail hours later: a cron expression that does
not parse (the message names the field), a schedule that never fires (30 February, an end
before the first firing, an end already past), one that fires more often than the minimum
interval (5 minutes unless configured), an unknown time zone, unknown meters, meters without
a communication path, an unknown group, an action that makes no command. The rules
themselves (cron, every N, time zones, DST) are :mod:`headend.scheduler`'s.

Restarts. Each row keeps ``next_due_at`` (the next firing owed) and ``last_fired_at``. A
runner submits a due firing with an idempotency key made of the schedule and the firing
time, then moves ``next_due_at`` on with a conditional update (only if nobody else did): a
crash between the two submits the same key again and the head-end returns the job it already
has, so a firing is never doubled; ``next_due_at`` only moves after the submission, so none
is skipped. A runner that was down fires each schedule once for the firings it missed (at the
latest missed time), not once per missed firing. Several runners on one database are safe:
the conditional update lets one of them move each schedule on.

Data windows (:func:`headend.scheduler.data_window`): ``yesterday`` is the previous local
day in the schedule's zone; ``since_last_success`` runs from the last firing whose job read
every meter (``last_success_at``) to this firing, or the last day when there is none.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, delete, insert, select, update

from cim.errors import CimError, ErrorCode
from headend.job_actions import TEMPLATE_DEVICE, Action
from headend.ops_schema import schedules
from headend.scheduler import Cron, Every, Schedule, ScheduleError, Unit, Window, data_window
from headend.schema import meter_paths
from mdm.audit import record, record_created
from mdm.database import Store, reading, transaction
from mdm.devices import device_ids
from mdm.schema import NAME_LENGTH, device_groups

log = logging.getLogger(__name__)

MIN_INTERVAL = timedelta(minutes=5)
_EVERY = re.compile(r"every\s+(\d+)\s*(m|min|mins|minutes?|h|hours?|d|days?)", re.IGNORECASE)
_UNITS = {"m": Unit.MINUTES, "h": Unit.HOURS, "d": Unit.DAYS}
_TINY = timedelta(microseconds=1)


class ScheduleRefused(CimError):
    """A schedule that cannot be created or changed; nothing was written."""


def _refuse(reason: str, code: ErrorCode = ErrorCode.BAD_VALUE) -> ScheduleRefused:
    return ScheduleRefused(code, reason)


def parse_rule(text: str) -> str | Every:
    """``every N minutes|hours|days`` (also ``every 15m``, ``every 2 h``), else a cron
    expression (checked by :class:`headend.scheduler.Cron`)."""
    cleaned = " ".join(str(text).split())
    if not cleaned:
        raise _refuse("the rule is empty: give a cron expression or 'every N minutes'")
    match = _EVERY.fullmatch(cleaned)
    if match:
        n, unit = int(match.group(1)), _UNITS[match.group(2)[0].lower()]
        try:
            return Every(n, unit)
        except ScheduleError as exc:
            raise _refuse(str(exc)) from None
    if cleaned.lower().startswith("every"):
        raise _refuse(f"rule {text!r}: write 'every N minutes', 'every N hours' or 'every N days'")
    try:
        Cron.parse(cleaned)
    except ScheduleError as exc:
        raise _refuse(str(exc)) from None
    return cleaned


def rule_text(rule: str | Every) -> str:
    return rule if isinstance(rule, str) else f"every {rule.n} {rule.unit.value}"


@dataclass(frozen=True)
class ScheduleDefinition:
    """What an operator asks for. Exactly one target: ``devices``, ``group`` or
    ``everyone``. ``start`` defaults to now (to the minute)."""

    name: str
    rule: str
    action: Action
    zone: str = "UTC"
    start: datetime | None = None
    end: datetime | None = None
    exceptions: tuple[date, ...] = ()
    devices: tuple[str, ...] = ()
    group: str | None = None
    everyone: bool = False
    priority: int | None = None
    window: str = Window.NONE.value
    enabled: bool = True


@dataclass(frozen=True)
class ScheduleRecord:
    id: int
    name: str
    rule: str
    zone: str
    start: datetime
    end: datetime | None
    exceptions: tuple[date, ...]
    target_kind: str
    devices: tuple[str, ...]
    group: str | None
    action: Action
    priority: int | None
    window: Window
    enabled: bool
    last_fired_at: datetime | None
    last_job_id: str | None
    last_success_at: datetime | None
    last_error: str | None
    next_due_at: datetime | None
    created_by: str
    created_at: datetime

    def schedule(self) -> Schedule:
        """The rule as a :class:`headend.scheduler.Schedule` (checked when it was created)."""
        rule = parse_rule(self.rule)
        return Schedule(
            Cron.parse(rule) if isinstance(rule, str) else rule,
            ZoneInfo(self.zone),
            self.start,
            self.end,
            frozenset(self.exceptions),
        )

    @property
    def target(self) -> str:
        if self.target_kind == "everyone":
            return "everyone"
        if self.target_kind == "group":
            return f"group {self.group}"
        shown = ", ".join(self.devices[:3])
        more = f" (+{len(self.devices) - 3})" if len(self.devices) > 3 else ""
        return f"{shown}{more}"

    def as_dict(self) -> dict[str, Any]:
        def when(value: datetime | None) -> str | None:
            return value.isoformat() if value is not None else None

        return {
            "id": self.id,
            "name": self.name,
            "rule": self.rule,
            "zone": self.zone,
            "start": when(self.start),
            "end": when(self.end),
            "exceptions": [d.isoformat() for d in self.exceptions],
            "target_kind": self.target_kind,
            "devices": list(self.devices),
            "group": self.group,
            "action": self.action.to_dict(),
            "priority": self.priority,
            "window": self.window.value,
            "enabled": self.enabled,
            "last_fired_at": when(self.last_fired_at),
            "last_job_id": self.last_job_id,
            "last_success_at": when(self.last_success_at),
            "last_error": self.last_error,
            "next_due_at": when(self.next_due_at),
            "created_by": self.created_by,
            "created_at": when(self.created_at),
        }


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(name: str, value: datetime | None) -> None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise _refuse(f"{name} must be a date-time with a time zone or UTC offset")


def _targets(definition: ScheduleDefinition) -> tuple[str, str | None]:
    chosen = sum((bool(definition.devices), definition.group is not None, definition.everyone))
    if chosen != 1:
        raise _refuse("a schedule targets exactly one of: meters, a group, or everyone")
    if definition.devices:
        if any(not isinstance(m, str) or not m for m in definition.devices):
            raise _refuse("meter mRIDs must be non-empty text")
        return "devices", json.dumps(sorted(set(definition.devices)))
    if definition.group is not None:
        return "group", definition.group
    return "everyone", None


def _check_targets(conn: Connection, definition: ScheduleDefinition) -> None:
    if definition.devices:
        mrids = sorted(set(definition.devices))
        found = device_ids(conn, mrids)
        unknown = [m for m in mrids if m not in found]
        if unknown:
            listed = ", ".join(unknown[:5]) + (
                f" (+{len(unknown) - 5})" if len(unknown) > 5 else ""
            )
            raise _refuse(f"unknown meter(s): {listed}", ErrorCode.UNKNOWN_DEVICE)
        ids = [id_ for id_, _ in found.values()]
        with_path: set[int] = set()
        for first in range(0, len(ids), 500):
            chunk = ids[first : first + 500]
            query = select(meter_paths.c.device_id).where(
                meter_paths.c.device_id.in_(chunk), meter_paths.c.role == "primary"
            )
            with_path.update(conn.execute(query).scalars())
        pathless = [m for m in mrids if found[m][0] not in with_path]
        if pathless:
            raise _refuse(f"meter(s) without a communication path: {', '.join(pathless[:5])}")
    elif definition.group is not None:
        query = select(device_groups.c.id).where(device_groups.c.name == definition.group)
        if conn.execute(query).first() is None:
            raise _refuse(f"no device group {definition.group!r}")


def check_definition(
    definition: ScheduleDefinition, *, now: datetime, min_interval: timedelta = MIN_INTERVAL
) -> tuple[Schedule, datetime]:
    """The schedule and its first firing from ``now``; ScheduleRefused when it cannot run."""
    name = definition.name
    if not isinstance(name, str) or not name.strip() or len(name) > NAME_LENGTH:
        raise _refuse(f"a schedule needs a name of 1..{NAME_LENGTH} characters")
    _aware("start", definition.start)
    _aware("end", definition.end)
    try:
        window = Window(definition.window)
    except ValueError:
        known = ", ".join(w.value for w in Window)
        raise _refuse(f"data window {definition.window!r} is not one of {known}") from None
    if window is not Window.NONE and not definition.action.uses_window:
        raise _refuse(
            f"a data window applies to profile and event reads, not to "
            f"{definition.action.describe()}"
        )
    if definition.priority is not None and not 0 <= definition.priority <= 1000:
        raise _refuse("priority must be 0..1000 (lower is more urgent)")
    rule = parse_rule(definition.rule)
    start = definition.start or now.replace(second=0, microsecond=0)
    try:
        schedule = Schedule.create(
            rule,
            zone=definition.zone,
            start=start,
            end=definition.end,
            exceptions=tuple(definition.exceptions),
            min_interval=min_interval,
        )
    except ScheduleError as exc:
        raise _refuse(str(exc)) from None
    first = schedule.next_after(now - _TINY)
    if first is None:
        raise _refuse(
            f"the schedule {rule_text(rule)!r} never fires again: its window ends at "
            f"{definition.end.isoformat() if definition.end else '?'}"
        )
    return schedule, first


def create_schedule(
    store: Store | Connection,
    definition: ScheduleDefinition,
    *,
    who: str,
    now: datetime | None = None,
    min_interval: timedelta = MIN_INTERVAL,
) -> ScheduleRecord:
    """Check and store a schedule; raises :class:`ScheduleRefused` with the reason."""
    now = now or _utcnow()
    schedule, first = check_definition(definition, now=now, min_interval=min_interval)
    kind, target = _targets(definition)
    rule = rule_text(parse_rule(definition.rule))
    row = {
        "name": definition.name,
        "rule": rule,
        "time_zone": definition.zone,
        "starts_at": schedule.start,
        "ends_at": definition.end,
        "exceptions": json.dumps(sorted(d.isoformat() for d in definition.exceptions)),
        "target_kind": kind,
        "target": target,
        "command": definition.action.to_json(),
        "priority": definition.priority,
        "data_window": Window(definition.window).value,
        "enabled": definition.enabled,
        "next_due_at": first if definition.enabled else None,
        "created_by": who,
        "created_at": now,
        "updated_at": now,
    }
    with transaction(store) as conn:
        exists = conn.execute(select(schedules.c.id).where(schedules.c.name == definition.name))
        if exists.first() is not None:
            raise _refuse(f"a schedule named {definition.name!r} exists")
        _check_targets(conn, definition)
        new_id = conn.execute(insert(schedules).values(row)).inserted_primary_key[0]
        record_created(
            conn,
            who=who,
            object_type="schedule",
            objects={definition.name: {k: v for k, v in row.items() if k not in ("next_due_at",)}},
            at=now,
        )
        return _get(conn, new_id)


def _record(row: Any) -> ScheduleRecord:
    kind = row.target_kind
    devices: tuple[str, ...] = tuple(json.loads(row.target)) if kind == "devices" else ()
    return ScheduleRecord(
        id=row.id,
        name=row.name,
        rule=row.rule,
        zone=row.time_zone,
        start=row.starts_at,
        end=row.ends_at,
        exceptions=tuple(date.fromisoformat(d) for d in json.loads(row.exceptions or "[]")),
        target_kind=kind,
        devices=devices,
        group=row.target if kind == "group" else None,
        action=Action.from_json(row.command),
        priority=row.priority,
        window=Window(row.data_window),
        enabled=bool(row.enabled),
        last_fired_at=row.last_fired_at,
        last_job_id=row.last_job_id,
        last_success_at=row.last_success_at,
        last_error=row.last_error,
        next_due_at=row.next_due_at,
        created_by=row.created_by,
        created_at=row.created_at,
    )


def _get(conn: Connection, id_: int) -> ScheduleRecord:
    return _record(conn.execute(select(schedules).where(schedules.c.id == id_)).one())


def _find(conn: Connection, name: str) -> Any:
    row = conn.execute(select(schedules).where(schedules.c.name == name)).first()
    if row is None:
        raise _refuse(f"no schedule named {name!r}")
    return row


def get_schedule(store: Store | Connection, name: str) -> ScheduleRecord:
    with reading(store) as conn:
        return _record(_find(conn, name))


def list_schedules(store: Store | Connection) -> list[ScheduleRecord]:
    with reading(store) as conn:
        rows = conn.execute(select(schedules).order_by(schedules.c.name)).all()
    return [_record(row) for row in rows]


def set_enabled(
    store: Store | Connection,
    name: str,
    enabled: bool,
    *,
    who: str,
    now: datetime | None = None,
) -> ScheduleRecord:
    """Enable (the next firing from now on: nothing missed while disabled is fired) or
    disable a schedule. Enabling one whose window has ended is refused."""
    now = now or _utcnow()
    with transaction(store) as conn:
        current = _record(_find(conn, name))
        if current.enabled == enabled:
            return current
        next_due = None
        if enabled:
            next_due = current.schedule().next_after(now - _TINY)
            if next_due is None:
                raise _refuse(f"schedule {name!r} never fires again: its window has ended")
        conn.execute(
            update(schedules)
            .where(schedules.c.id == current.id)
            .values(enabled=enabled, next_due_at=next_due, updated_at=now)
        )
        record(
            conn,
            who=who,
            object_type="schedule",
            object_id=name,
            changes=[("enabled", current.enabled, enabled)],
            at=now,
        )
        return _get(conn, current.id)


def delete_schedule(
    store: Store | Connection, name: str, *, who: str, now: datetime | None = None
) -> None:
    with transaction(store) as conn:
        current = _find(conn, name)
        conn.execute(delete(schedules).where(schedules.c.id == current.id))
        record(
            conn,
            who=who,
            object_type="schedule",
            object_id=name,
            changes=[("(deleted)", current.rule, None)],
            at=now or _utcnow(),
        )


# ---------------------------------------------------------------------------------------------
# Firing


class Submitter(Protocol):
    """What the runner needs of :class:`headend.service.HeadEnd`."""

    def submit(self, request: Any) -> Any: ...


@dataclass(frozen=True)
class Firing:
    """One firing the runner handled: the job it made (``existing`` when the head-end
    already had it: a repeat after a restart), or why it made none."""

    schedule: str
    schedule_id: int
    fired_at: datetime
    job_id: str | None
    existing: bool = False
    error: str | None = None
    refused: tuple[str, ...] = field(default_factory=tuple)


def latest_due(schedule: Schedule, due: datetime, now: datetime) -> datetime | None:
    """The last firing in [due, now] (``due`` being a firing), looking back in growing steps
    so a long outage of an every-5-minutes schedule costs no walk over every missed firing."""
    if due > now:
        return None
    for back in (timedelta(hours=2), timedelta(days=2), timedelta(days=40), timedelta(days=800)):
        floor = now - back
        if floor <= due:
            break
        latest = None
        for instant in schedule.firings(floor):
            if instant > now:
                break
            latest = instant
        if latest is not None:
            return latest
    latest = None
    for instant in schedule.firings(due - _TINY):
        if instant > now:
            break
        latest = instant
    return latest


def firing_key(schedule_id: int, fired_at: datetime) -> str:
    return f"schedule-{schedule_id}-{fired_at.astimezone(UTC):%Y%m%dT%H%M%SZ}"


class ScheduleRunner:
    """Submits due firings of enabled schedules to ``headend`` (:class:`HeadEnd` of
    :mod:`headend.service`). :meth:`tick` handles what is due now; :meth:`run` ticks until
    stopped, sleeping until the next firing (at most ``poll`` seconds)."""

    def __init__(
        self,
        store: Store,
        headend: Submitter,
        *,
        clock: Callable[[], datetime] = _utcnow,
        poll: float = 30.0,
        fallback: timedelta = timedelta(days=1),
    ) -> None:
        self.store = store
        self.headend = headend
        self.clock = clock
        self.poll = poll
        self.fallback = fallback

    def due(self, now: datetime | None = None) -> list[ScheduleRecord]:
        now = now or self.clock()
        query = (
            select(schedules)
            .where(schedules.c.enabled.is_(True), schedules.c.next_due_at <= now)
            .order_by(schedules.c.next_due_at, schedules.c.id)
        )
        with reading(self.store) as conn:
            return [_record(row) for row in conn.execute(query)]

    def next_due(self) -> datetime | None:
        query = select(schedules.c.next_due_at).where(
            schedules.c.enabled.is_(True), schedules.c.next_due_at.is_not(None)
        )
        with reading(self.store) as conn:
            values = [v for v in conn.execute(query).scalars() if v is not None]
        return min(values, default=None)

    def tick(self) -> list[Firing]:
        now = self.clock()
        return [firing for rec in self.due(now) if (firing := self._fire(rec, now)) is not None]

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                self.tick()
            except Exception:  # a database hiccup must not end the runner
                log.exception("schedule runner tick failed")
            wait = self.poll
            upcoming = self.next_due()
            if upcoming is not None:
                wait = min(wait, max(0.0, (upcoming - self.clock()).total_seconds()))
            try:
                async with asyncio.timeout(wait):
                    await stop.wait()
            except TimeoutError:
                pass

    # -- one schedule --------------------------------------------------------------------------

    def _fire(self, rec: ScheduleRecord, now: datetime) -> Firing | None:
        assert rec.next_due_at is not None
        schedule = rec.schedule()
        fired_at = latest_due(schedule, rec.next_due_at, now) or rec.next_due_at
        next_due = schedule.next_after(max(fired_at, now))
        last_success = self._last_success(rec)
        firing = self._submit(rec, schedule, fired_at, next_due, last_success)
        values: dict[str, Any] = {
            "last_fired_at": fired_at,
            "next_due_at": next_due,
            "last_success_at": last_success,
            "last_error": firing.error,
            "updated_at": now,
        }
        if firing.job_id is not None:
            values["last_job_id"] = firing.job_id
        with transaction(self.store) as conn:
            moved = conn.execute(
                update(schedules)
                .where(schedules.c.id == rec.id, schedules.c.next_due_at == rec.next_due_at)
                .values(**values)
            ).rowcount
        if not moved:  # another runner moved it on first; our submission was the same job
            return None
        if firing.error:
            log.warning("schedule %s at %s: %s", rec.name, fired_at.isoformat(), firing.error)
        return firing

    def _last_success(self, rec: ScheduleRecord) -> datetime | None:
        """The firing of the last job of this schedule that read every meter."""
        if rec.last_job_id is None or rec.last_fired_at is None:
            return rec.last_success_at
        from headend.schema import jobs  # C1, written by the job store

        with reading(self.store) as conn:
            state = conn.execute(select(jobs.c.state).where(jobs.c.id == rec.last_job_id)).scalar()
        if state == "completed":
            return rec.last_fired_at
        return rec.last_success_at

    def _submit(
        self,
        rec: ScheduleRecord,
        schedule: Schedule,
        fired_at: datetime,
        next_due: datetime | None,
        last_success: datetime | None,
    ) -> Firing:
        from headend.jobs import JobKind
        from headend.service import JobRefused, JobRequest

        key = firing_key(rec.id, fired_at)
        window = data_window(rec.window, fired_at, schedule.zone, last_success, self.fallback)
        try:
            command = rec.action.command(TEMPLATE_DEVICE, window, now=fired_at, idempotency_key=key)
        except CimError as exc:
            return Firing(rec.name, rec.id, fired_at, None, error=exc.reason)
        local = fired_at.astimezone(schedule.zone)
        parameters: dict[str, Any] = {"fired_at": fired_at, "window": rec.window.value}
        if window is not None:
            parameters["start"], parameters["end"] = window
        # A firing's tasks not started by the next firing expire rather than pile up (only a
        # deadline still ahead: a runner catching up after an outage sets none).
        deadline = next_due if next_due is not None and next_due > _utcnow() else None
        request = JobRequest(
            command=command,
            devices=rec.devices,
            group=rec.group,
            everyone=rec.target_kind == "everyone",
            kind=JobKind.SCHEDULED,
            name=f"{rec.name} {local:%Y-%m-%d %H:%M %Z}",
            priority=rec.priority,
            deadline=deadline,
            idempotency_key=key,
            created_by=f"schedule:{rec.name}"[:64],
            schedule_id=rec.id,
            partial=True,
            parameters=parameters,
        )
        try:
            created = self.headend.submit(request)
        except JobRefused as exc:
            return Firing(rec.name, rec.id, fired_at, None, error=f"[{exc.code.code}] {exc.reason}")
        refused = tuple(f"{p.mrid}: {p.reason}" for p in created.refused)
        return Firing(rec.name, rec.id, fired_at, created.job_id, created.existing, None, refused)


__all__ = [
    "MIN_INTERVAL",
    "Firing",
    "ScheduleDefinition",
    "ScheduleRecord",
    "ScheduleRefused",
    "ScheduleRunner",
    "check_definition",
    "create_schedule",
    "delete_schedule",
    "firing_key",
    "get_schedule",
    "latest_due",
    "list_schedules",
    "parse_rule",
    "rule_text",
    "set_enabled",
]
