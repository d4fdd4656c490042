"""MeterReadings: ``get`` (a GetMeterReadings request) and ``create`` (readings pushed in;
the EventMessage ``created`` MeterReadings another system sends is taken the same way).

**get.** The devices (EndDevice by mRID or name, EndDeviceGroup by name, UsagePoint by mRID
or name) x the ReadingTypes asked for (all the store holds for them in the window when none
is given) x one window: the union of the Reading.timePeriod and TimeSchedule intervals, else
the Request's StartTime/EndTime; a missing end is now, a missing start one day before the end.
The answer comes from the store (:func:`mdm.export.meter_readings_xml`, the document
:func:`mdm.export.export_cim` writes: interval data as IntervalBlocks, registers as Readings),
current values. The database work runs off the event loop (:meth:`Context.run_blocking`).

Before answering, an on-demand read job goes through the head-end (its priority is the
on-demand one) for the devices the store has no reading for in the window when the window
ends less than :data:`PRESENT` before now, or for every device when the Request Option
``OnDemand`` is ``true``. Interval ReadingTypes become one profile read over the window (up
to now), register ReadingTypes one register read of their OBIS codes; without ReadingTypes a
profile read. A device whose read fails gets an Error (with what the store has all the same).

**create.** Each MeterReading's readings and interval readings are ingested
(:func:`mdm.ingest.ingest`, one batch per device: a device's readings are stored all or none,
normalised and versioned as meter values), its EndDeviceEvents stored with
:func:`mdm.events.store_events`. A value ``v`` of ReadingType ``rt`` is handed to ingest
exactly: raw integer ``v * 10**-e``, scaler ``e + multiplier(rt)``, the unit symbol of
``rt``. ReadingQualities sent with the readings are not stored (the store's validation sets
its own); a warning says so.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from lxml import etree
from sqlalchemy import Connection, select

from cim.codelists.obis import reading_type_to_obis
from cim.codelists.readingtype import ReadingType, RefKind, classify_reading_type_ref, unit_symbols
from cim.envelope import ReplyError
from cim.errors import CimError, ErrorCode
from cim.get_meter_readings import GetMeterReadings
from cim.meter_readings import MeterReadings
from cim.model import ObjectRef
from headend import commands
from headend.handlers import (
    Context,
    Devices,
    Outcome,
    device_error,
    device_note,
    requested_periods,
    resolve_devices,
    window,
)
from headend.handlers.jobs import run_job
from mdm.database import reading
from mdm.events import EndDeviceEvent as StoredEvent
from mdm.events import store_events
from mdm.export import meter_readings_xml
from mdm.ingest import ingest
from mdm.normalise import SCALER_MAX, SCALER_MIN, RawValue
from mdm.schema import reading_types as reading_type_table
from mdm.schema import readings as reading_table

#: A window ending less than this before now "reaches the present": missing data is read.
PRESENT = timedelta(minutes=15)
ON_DEMAND_OPTION = "OnDemand"
#: Device-days up to which a get is answered on the event loop on an embedded SQLite store
#: (see Context.run_blocking); larger requests, groups and other databases use a thread.
SMALL_REQUEST = timedelta(days=7)
_TEMPLATE = "*"  # headend.job_actions.TEMPLATE_DEVICE: the job gives each task its meter


# --- get ---------------------------------------------------------------------------------------


def _query(ctx: Context) -> GetMeterReadings:
    request = ctx.message.request
    profile: Any = request.get_profile if request is not None else None
    if profile is None and ctx.message.payload is not None:
        profile = ctx.message.payload.document
    if profile is None:
        ids = [ident.value for ident in request.ids] if request is not None else []
        if ids:
            return GetMeterReadings(end_devices=[ObjectRef(mrid=i) for i in ids])
        raise CimError(
            ErrorCode.MISSING_ELEMENT,
            "a get MeterReadings request needs a GetMeterReadings in its Request",
        )
    if not isinstance(profile, GetMeterReadings):
        raise CimError(
            ErrorCode.MISSING_ELEMENT,
            f"a get MeterReadings request carries {type(profile).__name__}, not GetMeterReadings",
        )
    return profile


def _codes(ctx: Context, query: GetMeterReadings) -> list[str]:
    codes: list[str] = []
    for ref in query.reading_types:
        if not ref.mrid:
            ctx.warnings.append(
                "a ReadingType given by name only was ignored: give its 18-field code as mRID"
            )
            continue
        if classify_reading_type_ref(ref.mrid).kind is RefKind.VENDOR_CODE:
            ctx.warnings.append(f"vendor code {ref.mrid!r} is not a ReadingType; ignored")
            continue
        if ref.mrid not in codes:
            codes.append(ref.mrid)
    return codes


async def get_meter_readings(ctx: Context) -> Outcome:
    query = _query(ctx)
    if not (query.end_devices or query.end_device_groups or query.usage_points):
        raise CimError(
            ErrorCode.MISSING_ELEMENT,
            "GetMeterReadings names no EndDevice, EndDeviceGroup or UsagePoint",
        )
    periods = requested_periods(ctx, query.time_periods)
    now = datetime.now(UTC)
    start, end = window(periods, now=now)
    codes = _codes(ctx, query)
    forced = ctx.flag(ON_DEMAND_OPTION)
    if ctx.headend is None and forced:
        ctx.warnings.append("no head-end here: answered from the store only")
    # Which devices to read first: every one (forced), those the store lacks data for
    # (the window reaches the present), or none. Database work runs off the event loop, in
    # one hop when nothing is to be read.
    check = "none"
    if ctx.headend is not None:
        check = "all" if forced else ("lacking" if end > now - PRESENT else "none")
    small = (
        not (query.end_device_groups or query.usage_points)
        and len(query.end_devices) * (end - start) <= SMALL_REQUEST
    )
    found, targets, document = await ctx.run_blocking(
        _from_store, ctx, query, codes, start, end, check, small=small
    )
    errors: list[ReplyError] = list(found.errors)
    mrids = found.mrids
    if not mrids:
        return Outcome(errors=errors)
    if targets:
        errors.extend(await _read(ctx, targets, codes, start, end, now))
        if end >= now:  # open-ended: include what was just read (registers read "now")
            end = max(end, datetime.now(UTC))
        document = await ctx.run_blocking(_export, ctx, mrids, codes, start, end, small=small)
    failed = {e.id.value for e in errors if e.id is not None}
    return Outcome(document, errors, succeeded=sum(1 for m in mrids if m not in failed))


def _from_store(
    ctx: Context,
    query: GetMeterReadings,
    codes: list[str],
    start: datetime,
    end: datetime,
    check: str,
) -> tuple[Devices, list[str], etree._Element | None]:
    """The devices asked for, those to read first (``check``: "all", "lacking" or "none"),
    and the answer from the store when none is to be read (else None); one connection."""
    with reading(ctx.store) as conn:
        found = resolve_devices(
            ctx.store, query.end_devices, query.end_device_groups, query.usage_points, conn=conn
        )
        mrids = found.mrids
        if not mrids:
            return found, [], None
        targets = mrids if check == "all" else []
        if check == "lacking":
            targets = _lacking(ctx, mrids, codes, start, end, conn)
        if targets:
            return found, targets, None
        return found, [], _export(ctx, mrids, codes, start, end, conn)


def _lacking(
    ctx: Context,
    mrids: list[str],
    codes: list[str],
    start: datetime,
    end: datetime,
    conn: Connection,
) -> list[str]:
    """The devices with no stored reading (of ``codes``, or any) in ``(start, end]``."""
    ids = {id_: mrid for mrid, id_ in ctx.store.ids.devices(conn, mrids).items()}
    query = (
        select(reading_table.c.device_id)
        .distinct()
        .where(
            reading_table.c.device_id.in_(list(ids)),
            reading_table.c.ts > start,
            reading_table.c.ts <= end,
        )
    )
    if codes:
        query = query.join(
            reading_type_table, reading_type_table.c.id == reading_table.c.reading_type_id
        ).where(reading_type_table.c.code.in_(codes))
    present = {ids[i] for i in conn.execute(query).scalars()}
    return [m for m in mrids if m not in present]


def _export(
    ctx: Context,
    mrids: list[str],
    codes: list[str],
    start: datetime,
    end: datetime,
    conn: Connection | None = None,
) -> etree._Element:
    """The MeterReadings document of ``codes`` (every ReadingType stored in the window when
    none is given) for the devices, from the store (on ``conn`` when given)."""
    db = ctx.store if conn is None else conn
    data = meter_readings_xml(db, mrids, codes or None, start, end, ids=ctx.store.ids)
    return etree.fromstring(data, _parser())


_PARSERS = threading.local()  # lxml parsers are not thread-safe: one per thread


def _parser() -> etree.XMLParser:
    parser = getattr(_PARSERS, "parser", None)
    if parser is None:
        parser = _PARSERS.parser = etree.XMLParser(
            huge_tree=True, resolve_entities=False, no_network=True
        )
    return parser


def read_commands(
    ctx: Context, codes: list[str], start: datetime, end: datetime, now: datetime
) -> list[commands.Command]:
    """The on-demand read commands (templates) for ``codes`` over ``(start, end]``."""
    stop = min(end, now)
    interval = False
    registers: list[str] = []
    for code in codes:
        try:
            rt = ReadingType.parse(code)
            channel = reading_type_to_obis(rt)
        except CimError:
            ctx.warnings.append(f"ReadingType {code} has no OBIS equivalent: not read on demand")
            continue
        if channel.interval_minutes:
            interval = True
        elif channel.obis.dotted not in registers:
            registers.append(channel.obis.dotted)
    out: list[commands.Command] = []
    if (interval or not codes) and start < stop:
        out.append(commands.ReadIntervalData(device=_TEMPLATE, start=start, end=stop))
    if registers:
        out.append(commands.ReadRegisters(device=_TEMPLATE, obis=tuple(registers)))
    return out


async def _read(
    ctx: Context,
    mrids: list[str],
    codes: list[str],
    start: datetime,
    end: datetime,
    now: datetime,
) -> list[ReplyError]:
    errors: dict[str, ReplyError] = {}
    planned = read_commands(ctx, codes, start, end, now)
    results = await asyncio.gather(
        *(
            run_job(ctx, command, mrids, name="GetMeterReadings", key=f"read{index}")
            for index, command in enumerate(planned)
        )
    )
    for result in results:
        for mrid, error in result.errors.items():
            errors.setdefault(mrid, error)
    return list(errors.values())


# --- create ------------------------------------------------------------------------------------


async def create_meter_readings(ctx: Context) -> Outcome:
    document = ctx.document(MeterReadings)
    if not document.meter_readings:
        raise CimError(ErrorCode.MISSING_ELEMENT, "the MeterReadings payload is empty")
    errors: list[ReplyError] = []
    by_key: dict[str, list[Any]] = defaultdict(list)
    for meter_reading in document.meter_readings:
        key = meter_reading.meter_key
        if key is None:
            errors.append(
                device_error("?", ErrorCode.MISSING_ELEMENT, "a MeterReading names no Meter")
            )
            continue
        by_key[key].append(meter_reading)
    resolved: dict[str, str] = {}
    for key, group in by_key.items():
        ref = next(m.meter for m in group if m.meter is not None)
        found = resolve_devices(ctx.store, [ref])
        errors.extend(found.errors)
        if found.mrids:
            resolved[key] = found.mrids[0]
    notes: list[ReplyError] = []
    qualities_dropped = False
    who = ctx.principal.name
    for key, group in by_key.items():
        mrid = resolved.get(key)
        if mrid is None:
            continue
        try:
            rows, events, dropped = _raw_rows(ctx, mrid, group)
            qualities_dropped = qualities_dropped or dropped
            result = (
                ingest(ctx.store, rows, who=who, reason=f"CIM MeterReadings ({ctx.channel})")
                if rows
                else None
            )
            new_events = store_events(ctx.store, events) if events else 0
        except CimError as error:  # MdmError too
            errors.append(device_error(mrid, error.error, error.reason))
            continue
        stored = result.rows if result is not None else 0
        changed = result.readings_versioned if result is not None else 0
        notes.append(
            device_note(
                mrid,
                f"{stored} reading(s) received, {changed} changed a stored value; "
                f"{new_events} new event(s)",
            )
        )
    if qualities_dropped:
        ctx.warnings.append(
            "ReadingQualities sent with readings are not stored; the store's validation sets "
            "its own"
        )
    return Outcome(errors=errors, notes=notes, succeeded=len(notes))


def _raw_rows(
    ctx: Context, mrid: str, group: list[Any]
) -> tuple[list[RawValue], list[StoredEvent], bool]:
    rows: list[RawValue] = []
    events: list[StoredEvent] = []
    dropped = False
    task = f"cim:{ctx.message_id}"[:64] if ctx.message_id else ""
    for meter_reading in group:
        for item in meter_reading.readings:
            dropped = dropped or bool(item.qualities)
            raw = _raw(mrid, item.reading_type, item.value, item.timestamp, task)
            if raw is not None:
                rows.append(raw)
        for block in meter_reading.interval_blocks:
            for point in block.readings:
                dropped = dropped or bool(point.qualities)
                raw = _raw(mrid, block.reading_type, point.value, point.timestamp, task)
                if raw is not None:
                    rows.append(raw)
        for event in meter_reading.events:
            details = {d.name: d.value for d in event.details} or None
            events.append(StoredEvent(mrid, event.event_type, event.created, details))
    return rows, events, dropped


def _raw(
    mrid: str, code: str, value: Decimal | None, ts: datetime | None, task: str
) -> RawValue | None:
    """One CIM value as the exact raw value ingest takes (see the module docstring)."""
    if value is None:
        return None
    if ts is None:
        raise CimError(ErrorCode.MISSING_ELEMENT, f"a {code} reading has no timeStamp")
    if ts.utcoffset() is None:
        raise CimError(ErrorCode.BAD_DATETIME, f"timeStamp {ts.isoformat()} has no UTC offset")
    try:
        rt = ReadingType.parse(code)
    except CimError as error:
        raise CimError(ErrorCode.BAD_READING_TYPE, error.reason) from None
    unit = unit_symbols().get(rt.unit)
    if unit is None:
        raise CimError(ErrorCode.BAD_READING_TYPE, f"ReadingType {code} has an unknown unit")
    if not value.is_finite():
        raise CimError(ErrorCode.BAD_VALUE, f"value {value} is not a finite number")
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    if exponent + rt.multiplier > SCALER_MAX:
        value = value.normalize()
        exponent = min(int(value.as_tuple().exponent), SCALER_MAX - rt.multiplier)
    if not SCALER_MIN <= exponent + rt.multiplier <= SCALER_MAX:
        raise CimError(ErrorCode.BAD_VALUE, f"value {value} has too many decimals")
    return RawValue(
        device=mrid,
        source_id=rt.code,
        time=ts,
        value=int(value.scaleb(-exponent)),
        unit=unit,
        scaler=exponent + rt.multiplier,
        reading_type=rt.code,
        source_task=task,
    )


__all__ = ["ON_DEMAND_OPTION", "PRESENT", "create_meter_readings", "get_meter_readings"]
