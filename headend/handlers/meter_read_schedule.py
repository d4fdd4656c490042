"""MeterReadSchedule: ``create``, ``change`` and ``cancel`` (or ``delete``) persisted read
schedules, through :mod:`headend.schedules` (which checks them).

A MeterReadSchedule document maps to schedules like this:

- **name**: the Request Option ``ScheduleName``, else the Request's first ID, else (create
  only) the request's MessageID. With several TimeSchedules, the n-th (from 2) is named
  ``<name>-<n>``. change and cancel need the name.
- **what**: interval ReadingTypes (or none) read the load profile over the time since the
  last successful firing; register ReadingTypes read their OBIS registers. Both kinds in
  one document are refused (make two schedules).
- **whom**: the EndDevices (by mRID), or one EndDeviceGroup (by name); not both.
- **when**: each TimeSchedule: ``recurrencePattern`` (a cron expression or ``every N
  minutes|hours|days``), else ``recurrencePeriod`` in seconds (a whole number of minutes);
  ``scheduleInterval`` start/end bound it; ``disabled`` true creates it disabled.
  The rule runs in UTC unless the Request Option ``TimeZone`` names an IANA zone.

change replaces the named schedule(s) by the document's (in one transaction); a change that
only sets ``disabled`` enables or disables. cancel/delete removes the named schedule(s).
"""

from __future__ import annotations

from cim.codelists.obis import reading_type_to_obis
from cim.codelists.readingtype import ReadingType, RefKind, classify_reading_type_ref
from cim.envelope import Identifier, ReplyError
from cim.errors import CimError, ErrorCode
from cim.meter_read_schedule import MeterReadSchedule, TimeSchedule
from headend import schedules
from headend.handlers import Context, Outcome, device_note
from headend.job_actions import Action
from mdm.database import transaction


def _base_name(ctx: Context, *, create: bool) -> str:
    name = ctx.option("ScheduleName")
    if not name and ctx.message.request is not None and ctx.message.request.ids:
        name = ctx.message.request.ids[0].value
    if not name and create:
        name = ctx.message_id
    if not name:
        raise CimError(
            ErrorCode.MISSING_ELEMENT,
            "name the schedule: Request Option ScheduleName or a Request ID",
        )
    return name.strip()


def _names(base: str, count: int) -> list[str]:
    return [base if i == 0 else f"{base}-{i + 1}" for i in range(max(count, 1))]


def _rule(schedule: TimeSchedule) -> str:
    if schedule.recurrence_pattern:
        return schedule.recurrence_pattern
    period = schedule.recurrence_period
    if period is None:
        raise CimError(
            ErrorCode.MISSING_ELEMENT,
            "a TimeSchedule needs a recurrencePattern or a recurrencePeriod",
        )
    if period <= 0 or period % 60:
        raise CimError(
            ErrorCode.BAD_VALUE,
            f"recurrencePeriod {period} s is not a positive whole number of minutes",
        )
    minutes = int(period // 60)
    for size, unit in ((1440, "days"), (60, "hours")):
        if minutes % size == 0:
            return f"every {minutes // size} {unit}"
    return f"every {minutes} minutes"


def _action(ctx: Context, document: MeterReadSchedule) -> tuple[Action, str]:
    interval = False
    registers: list[str] = []
    for ref in document.reading_types:
        if not ref.mrid or classify_reading_type_ref(ref.mrid).kind is RefKind.VENDOR_CODE:
            ctx.warnings.append("a ReadingType without an 18-field code was ignored")
            continue
        try:
            channel = reading_type_to_obis(ReadingType.parse(ref.mrid))
        except CimError as error:
            raise CimError(ErrorCode.UNKNOWN_READING_TYPE, error.reason) from None
        if channel.interval_minutes:
            interval = True
        elif channel.obis.dotted not in registers:
            registers.append(channel.obis.dotted)
    if interval and registers:
        raise CimError(
            ErrorCode.BAD_VALUE,
            "one schedule reads either interval data or registers: make two schedules",
        )
    if registers:
        return Action(read="registers", obis=tuple(registers)), "none"
    return Action(read="profile"), "since_last_success"


def _definitions(
    ctx: Context, document: MeterReadSchedule, base: str
) -> list[schedules.ScheduleDefinition]:
    if not document.time_schedules:
        raise CimError(ErrorCode.MISSING_ELEMENT, "the MeterReadSchedule has no TimeSchedule")
    if document.end_devices and document.end_device_groups:
        raise CimError(
            ErrorCode.BAD_VALUE, "a schedule targets EndDevices or one EndDeviceGroup, not both"
        )
    if len(document.end_device_groups) > 1:
        raise CimError(ErrorCode.BAD_VALUE, "a schedule targets at most one EndDeviceGroup")
    group = None
    if document.end_device_groups:
        ref = document.end_device_groups[0]
        group = ref.names[0].name if ref.names else ref.mrid
    devices = tuple(ref.mrid for ref in document.end_devices if ref.mrid)
    if not devices and group is None:
        raise CimError(
            ErrorCode.MISSING_ELEMENT, "the MeterReadSchedule names no EndDevice or group"
        )
    action, data_window = _action(ctx, document)
    zone = ctx.option("TimeZone") or "UTC"
    out = []
    for name, time_schedule in zip(
        _names(base, len(document.time_schedules)), document.time_schedules, strict=True
    ):
        interval = time_schedule.schedule_interval
        out.append(
            schedules.ScheduleDefinition(
                name=name,
                rule=_rule(time_schedule),
                action=action,
                zone=zone,
                start=interval.start,
                end=interval.end,
                devices=devices,
                group=group,
                window=data_window,
                enabled=not time_schedule.disabled,
            )
        )
    return out


def _who(ctx: Context) -> str:
    return ctx.principal.name[:64] or "?"


async def create_meter_read_schedule(ctx: Context) -> Outcome:
    document = ctx.document(MeterReadSchedule)
    definitions = _definitions(ctx, document, _base_name(ctx, create=True))
    with transaction(ctx.store) as conn:
        created = [schedules.create_schedule(conn, d, who=_who(ctx)) for d in definitions]
    return Outcome(
        document=document,
        notes=[_note(record) for record in created],
        succeeded=len(created),
    )


async def change_meter_read_schedule(ctx: Context) -> Outcome:
    document = ctx.document(MeterReadSchedule)
    base = _base_name(ctx, create=False)
    names = _names(base, len(document.time_schedules))
    with transaction(ctx.store) as conn:
        current = [schedules.get_schedule(conn, name) for name in names]
        if _only_disabled(document):
            changed = [
                schedules.set_enabled(
                    conn, record.name, not document.time_schedules[i].disabled, who=_who(ctx)
                )
                for i, record in enumerate(current)
            ]
        else:
            definitions = _definitions(ctx, document, base)
            for record in current:
                schedules.delete_schedule(conn, record.name, who=_who(ctx))
            changed = [schedules.create_schedule(conn, d, who=_who(ctx)) for d in definitions]
    return Outcome(
        document=document, notes=[_note(record) for record in changed], succeeded=len(changed)
    )


def _only_disabled(document: MeterReadSchedule) -> bool:
    """A change that names no targets, reading types or recurrences: only ``disabled``."""
    return (
        not document.end_devices
        and not document.end_device_groups
        and not document.reading_types
        and all(
            t.disabled is not None and not t.recurrence_pattern and t.recurrence_period is None
            for t in document.time_schedules
        )
        and bool(document.time_schedules)
    )


async def cancel_meter_read_schedule(ctx: Context) -> Outcome:
    document = ctx.payload_document
    count = len(document.time_schedules) if isinstance(document, MeterReadSchedule) else 1
    names = _names(_base_name(ctx, create=False), count)
    with transaction(ctx.store) as conn:
        for name in names:
            schedules.delete_schedule(conn, name, who=_who(ctx))
    notes = [_named(device_note(name, f"schedule {name!r} deleted"), name) for name in names]
    return Outcome(notes=notes, succeeded=len(names))


def _named(note: ReplyError, name: str) -> ReplyError:
    note.id = Identifier(name, object_type="MeterReadSchedule")
    return note


def _note(record: schedules.ScheduleRecord) -> ReplyError:
    return _named(
        device_note(
            record.name,
            f"schedule {record.name!r}: {record.rule} ({record.zone}), "
            f"{'enabled' if record.enabled else 'disabled'}, next "
            f"{record.next_due_at.isoformat() if record.next_due_at else 'never'}",
        ),
        record.name,
    )


__all__ = [
    "cancel_meter_read_schedule",
    "change_meter_read_schedule",
    "create_meter_read_schedule",
]
