"""A task's driver result into mdm, in ONE transaction with the task's final state.

:func:`complete_task` takes what a worker got from the meter:

- :class:`headend.commands.Readings`: register values and load-profile rows become
  :class:`mdm.normalise.RawValue` (OBIS as the source id, the raw integer with its scaler and
  unit, status bits, the meter's time as it sent it with its DST flag: mdm normalises it in
  the device's time zone) and go through :func:`mdm.ingest.ingest`. A register without a
  capture time is stamped with the time the result is stored. A load profile's interval is
  the most common spacing of its rows (a single row: the job parameter ``interval_minutes``,
  else 15). Values of channels mdm has no ReadingType for (an OBIS code outside the mapping,
  a non-value column) are not stored; the task's result lists them under ``unmapped``.
  A profile channel of a cumulative energy register (D = 8) is stored twice: the captures
  under the captured-total (bulkQuantity) ReadingType with the capture period, and the
  interval deltas (:mod:`headend.profile_deltas`: consecutive captures one period apart,
  end-stamped, no delta across a missing capture) under the delta ReadingType, with the
  source id ``delta(<obis>)``. The stored total just before a read's first capture closes the
  first interval. A negative difference (reset, meter replaced, rollover) is no delta: the
  total after it gets the quality ``2.4.8`` (MDC, reset occurred) and the task's result lists
  it under ``resets``.
- :class:`headend.commands.Events`: log entries become :class:`mdm.events.EndDeviceEvent`
  (the IDIS event code mapped to an EndDeviceEventType, the DLMS code and log kept in the
  details) and are stored with :func:`mdm.events.store_events`; only new ones are announced.
- :class:`headend.commands.ControlOutcome`: the task's result is
  ``{"action", "state", "verified", "operated"}``; a control whose read-back does not show it
  took effect fails with DEVICE_ERROR (its result is kept).
- a :class:`headend.commands.Failure` is :func:`fail_task`.

If mdm refuses the data (a time in the DST gap, a value that does not fit...), nothing of it
is stored and the task fails with mdm's error code. A task already finished (a redelivered
message, a second worker) is not finished again: the state is checked and changed under the
same transaction's row lock, and the call returns no events.

Both return the :mod:`headend.events` to publish once committed: ReadingsStored,
EventsStored, ControlDone, and JobFinished when this was the job's last open task; each
carries the job's correlation id (:attr:`TaskSpec.correlation_id`).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import operator
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Select, bindparam, select

from cim.codelists.obis import is_cumulative_register, obis_to_reading_type
from cim.codelists.readingtype import ReadingType
from cim.errors import CimError, ErrorCode
from drivers.base import MeterEvent, ProfileRow, RegisterValue
from headend import commands
from headend.events import ControlDone, EventsStored, HeadEndEvent, JobFinished, ReadingsStored
from headend.jobstore import (
    AttemptEnd,
    TaskSpec,
    error_code_text,
    finish_task,
    record_attempt_end,
    roll_up,
)
from headend.profile_deltas import Capture, Point, Reset, point_deltas
from mdm.database import Store, transaction
from mdm.errors import MdmError
from mdm.events import EndDeviceEvent, store_events
from mdm.ingest import ingest
from mdm.normalise import (
    Ambiguous,
    RawValue,
    Refused,
    channel,
    parse_unit,
    resolve_repeated_hour,
    to_utc,
)
from mdm.schema import SOURCE_METER, reading_types, readings
from mdm.schema import events as events_table
from mdm.series import Series

DEFAULT_INTERVAL_MINUTES = 15
FAILED_STATES = ("failed", "expired", "cancelled")
UNKNOWN_EVENT = "3.17.43.0"  # electric meter, logs, event, (not mapped)
#: ReadingQualityType "reset occurred" (category 4 alarm, sub-category 8) set by the MDC
#: (system 2, the head-end): on the captured total that came out lower than the one before.
QUALITY_RESET = "2.4.8"

#: IDIS / DLMS standard event codes -> IEC 61968-9 EndDeviceEventType.
EVENT_TYPES: dict[int, str] = {
    1: "3.26.0.47",  # power down: power, loss detected
    2: "3.26.0.216",  # power up: power restored
    4: "3.36.114.24",  # clock adjusted (old time): clock, time, changed
    5: "3.36.114.24",  # clock adjusted (new time)
    17: "3.11.0.280",  # firmware ready for activation
    18: "3.11.0.4",  # firmware activated
    40: "3.12.29.39",  # terminal cover removed: security, cover, opened
    41: "3.12.29.16",  # terminal cover closed
    46: "3.12.1.38",  # authentication failure: security, access, not authorized
    59: "3.31.0.11",  # ready for reconnection: RCD switch, armed for closure
    61: "3.31.0.42",  # manual connection: RCD switch, connected
    62: "3.31.0.68",  # remote disconnection: RCD switch, disconnected
    63: "3.31.0.42",  # remote connection
    76: "3.26.131.223",  # under voltage L1: power, phase A voltage, sag started
    79: "3.26.131.248",  # over voltage L1: swell started
    82: "3.26.131.47",  # missing voltage L1: loss detected
}


def event_type_for(code: int) -> str:
    return EVENT_TYPES.get(code, UNKNOWN_EVENT)


# --- mapping --------------------------------------------------------------------------------


def _iso(ts: datetime | None) -> str | None:
    return ts.isoformat().replace("+00:00", "Z") if ts is not None else None


def interval_minutes(rows: Sequence[ProfileRow], parameters: Mapping[str, Any]) -> int:
    """The profile's capture period in minutes: the most common spacing of its rows."""
    spacing: Counter[int] = Counter()
    for a, b in itertools.pairwise(rows):
        if (a.timestamp.tzinfo is None) != (b.timestamp.tzinfo is None):
            continue
        seconds = (b.timestamp - a.timestamp).total_seconds()
        if seconds > 0 and seconds % 60 == 0:
            spacing[int(seconds // 60)] += 1
    if spacing:
        return spacing.most_common(1)[0][0]
    given = parameters.get("interval_minutes")
    return given if isinstance(given, int) and given > 0 else DEFAULT_INTERVAL_MINUTES


def _raw(
    mrid: str,
    value: RegisterValue,
    time: datetime,
    status: int | None,
    dst: bool | None,
    interval: int | None,
    task: str,
) -> RawValue:
    return RawValue(
        device=mrid,
        source_id=value.obis,
        time=time,
        value=value.raw,
        unit=value.unit,
        scaler=value.scaler,
        status=status or 0,
        dst=dst,
        interval_minutes=interval,
        source_task=task,
    )


_DELTA_SOURCE = "delta({})"


def delta_source_id(obis: str) -> str:
    """The source id under which the interval deltas derived from ``obis`` are stored (its
    raw_values rows say they were computed, not received)."""
    return _DELTA_SOURCE.format(obis)


@functools.lru_cache(maxsize=1024)
def _profile_codes(obis: str, interval: int) -> tuple[str, str] | None:
    """(captured-total code, delta code) of a profile channel of a cumulative register."""
    if not is_cumulative_register(obis):
        return None
    try:
        total = obis_to_reading_type(obis, interval_minutes=interval, cumulative=True)
        delta = obis_to_reading_type(obis, interval_minutes=interval)
    except CimError:
        return None
    return total.code, delta.code


class _Unresolved(Exception):
    pass


def profile_instants(rows: Sequence[ProfileRow], zone: str) -> list[datetime | None]:
    """The UTC instant of each profile row, as mdm will resolve it (the repeated autumn hour
    without a DST flag by the rows' order); None where mdm will refuse the time."""
    out: list[datetime | None] = [None] * len(rows)
    items: list[tuple[int, datetime | Ambiguous]] = []
    for index, row in enumerate(rows):
        try:
            ts = to_utc(row.timestamp, row.dst, zone)
        except Ambiguous as exc:
            items.append((index, exc))
            continue
        except (Refused, TypeError, AttributeError):
            continue
        out[index] = ts
        items.append((index, ts))
    if any(isinstance(ts, Ambiguous) for _, ts in items):
        try:
            resolved = resolve_repeated_hour(items, lambda _index, reason: _Unresolved(reason))
        except _Unresolved:
            return out  # ingest refuses the batch, with the reason
        for index, ts in resolved.items():
            out[index] = ts
    return out


#: [(source id, captured-total ReadingType code, UTC instant, unit)] -> source id -> the
#: total stored at that instant, in that unit
PreviousLookup = Callable[[Sequence[tuple[str, str, datetime, str]]], Mapping[str, Capture]]


def raw_values(
    spec: TaskSpec,
    result: commands.Readings,
    *,
    read_at: datetime,
    previous: PreviousLookup | None = None,
) -> tuple[list[RawValue], dict[str, str], list[tuple[str, Reset]]]:
    """The values to ingest, the channels left out (source id -> why) and the register resets
    seen in the profile ((source id, reset)).

    A profile channel of a cumulative register (D = 8) gives two series: each capture under
    the captured-total ReadingType (bulkQuantity with the capture period) and the interval
    deltas under the delta ReadingType (see :mod:`headend.profile_deltas`), stamped at the
    interval end in UTC with the source id ``delta(<obis>)``. ``previous`` looks up stored
    totals for the interval before each channel's first capture."""
    task = str(spec.task_id)
    mrid = spec.mrid
    unmapped: dict[str, str] = {}
    known: dict[tuple[str, int | None, str | None, str, int], bool] = {}

    def mapped(key: tuple[str, int | None, str | None, str, int]) -> bool:
        ok = known.get(key)
        if ok is None:
            try:
                channel(*key)
                ok = True
            except (Refused, TypeError) as exc:
                ok = False
                unmapped.setdefault(key[0], str(exc))
            known[key] = ok
        return ok

    kept: list[RawValue] = []
    append = kept.append
    for value in result.registers:
        if mapped((value.obis, None, None, value.unit, value.scaler)):
            time = value.capture_time or read_at
            append(_raw(mrid, value, time, value.status, None, None, task))
    resets: list[tuple[str, Reset]] = []
    if not result.profile:
        return kept, unmapped, resets
    profile = result.profile
    interval = interval_minutes(profile, spec.parameters)
    # per (obis, unit, scaler), decided once: whether it is stored, its captured-total code,
    # and the capture list of a cumulative channel (None: no deltas from it)
    channels: dict[tuple[str, str, int], tuple[bool, str | None, list[Point] | None]] = {}
    captures: dict[str, list[Point]] = {}  # source id -> captures, in row order
    codes_of: dict[str, tuple[str, str]] = {}  # source id -> (total code, delta code)
    instants = profile_instants(profile, spec.time_zone)
    for row, at in zip(profile, instants, strict=True):
        stamp, dst, row_status = row.timestamp, row.dst, row.status
        for value in row.values.values():
            obis, unit, scaler = value.obis, value.unit, value.scaler
            info = channels.get((obis, unit, scaler))
            if info is None:
                codes = _profile_codes(obis, interval)
                total = codes[0] if codes is not None else None
                ok = mapped((obis, interval, total, unit, scaler))
                series = None
                if ok and codes is not None:
                    series = captures.setdefault(obis, [])
                    codes_of[obis] = codes
                info = channels[(obis, unit, scaler)] = (ok, total, series)
            ok, total, series = info
            if not ok:
                continue
            status = value.status if value.status is not None else row_status
            status = status or 0
            raw = value.raw
            append(
                RawValue(mrid, obis, stamp, raw, unit, scaler, status, dst, interval, total, task)
            )
            if series is not None and at is not None:
                series.append((at, raw, scaler, unit, status))
    if captures:
        deltas, resets = _deltas(spec, interval, captures, codes_of, previous)
        kept.extend(deltas)
    return kept, unmapped, resets


def _deltas(
    spec: TaskSpec,
    interval: int,
    captures: Mapping[str, list[Point]],
    codes: Mapping[str, tuple[str, str]],
    previous: PreviousLookup | None,
) -> tuple[list[RawValue], list[tuple[str, Reset]]]:
    """The delta RawValues of the profile's cumulative channels (see :func:`raw_values`):
    ``captures`` (source id -> its captures, UTC) in the order the channels came."""
    step = timedelta(minutes=interval)
    for series in captures.values():
        if any(a[0] >= b[0] for a, b in itertools.pairwise(series)):
            series.sort(key=_instant)  # stable: as sorted() in interval_deltas
    before: Mapping[str, Capture] = {}
    if previous is not None:
        wanted = [
            (source, codes[source][0], series[0][0] - step, series[0][3])
            for source, series in captures.items()
            if series
        ]
        before = previous(wanted) if wanted else {}
    out: list[RawValue] = []
    append = out.append
    resets: list[tuple[str, Reset]] = []
    task = str(spec.task_id)
    mrid = spec.mrid
    for source, series in captures.items():
        stored = before.get(source)
        if stored is not None and (not series or stored.at < series[0][0]):
            series = [(stored.at, stored.raw, stored.scaler, stored.unit, stored.status), *series]
        found, lost = point_deltas(series, step)
        code = codes[source][1]
        delta_source = delta_source_id(source)
        resets.extend((source, reset) for reset in lost)
        for end, raw, scaler, unit, status in found:
            append(
                RawValue(
                    mrid, delta_source, end, raw, unit, scaler, status, None, interval, code, task
                )
            )
    return out, resets


def _instant(point: Point) -> datetime:
    return point[0]


def _reset_json(source: str, reset: Reset) -> dict[str, str]:
    return {
        "source": source,
        "end": _iso(reset.end) or "",
        "before": str(reset.before),
        "after": str(reset.after),
    }


def _flag_resets(resets: Sequence[tuple[str, Reset]], codes: Mapping[str, str]):
    """The ingest validator that flags the captured total after a reset with
    QUALITY_RESET (the interval's delta is left out)."""
    flagged: dict[str, set[datetime]] = {}
    for source, reset in resets:
        flagged.setdefault(codes[source], set()).add(reset.end)

    def hook(series: Series) -> Series:
        stamps = flagged.get(series.key.reading_type)
        if not stamps:
            return series
        points = [
            p.with_qualities(QUALITY_RESET) if p.timestamp in stamps else p for p in series.points
        ]
        return Series(series.key, points, series.interval)

    return hook


@functools.cache
def _previous_query() -> Select:
    """Stored meter values of one device, ReadingTypes (codes) and instants: built once (a
    statement built per task costs more than running it)."""
    return (
        select(reading_types.c.code, readings.c.ts, readings.c.value)
        .join(reading_types, reading_types.c.id == readings.c.reading_type_id)
        .where(
            readings.c.device_id == bindparam("device_id"),
            readings.c.source == SOURCE_METER,
            reading_types.c.code.in_(bindparam("codes", expanding=True)),
            readings.c.ts.in_(bindparam("instants", expanding=True)),
        )
    )


def _previous_lookup(conn: Connection, spec: TaskSpec) -> PreviousLookup:
    """Stored meter totals (the capture before a window, read by an earlier task)."""

    def lookup(wanted: Sequence[tuple[str, str, datetime, str]]) -> Mapping[str, Capture]:
        parameters = {
            "device_id": spec.device_id,
            "codes": sorted({code for _, code, _, _ in wanted}),
            "instants": sorted({at for _, _, at, _ in wanted}),
        }
        stored = {
            (code, ts.astimezone(UTC)): value
            for code, ts, value in conn.execute(_previous_query(), parameters)
        }
        out: dict[str, Capture] = {}
        for source, code, at, unit in wanted:
            value = stored.get((code, at))
            if value is not None:
                with contextlib.suppress(ValueError):  # another unit: no delta from it
                    out[source] = capture_of(value, at, code, unit)
        return out

    return lookup


def capture_of(value: Decimal, at: datetime, code: str, unit: str) -> Capture:
    """A stored total (in its ReadingType's unit and multiplier) as an exact Capture in
    ``unit`` (the meter's unit symbol, maybe SI-prefixed: "Wh", "kWh")."""
    rt = ReadingType.parse(code)
    unit_code, prefix = parse_unit(unit)
    if unit_code != rt.unit:
        raise ValueError(f"unit {unit!r} is not the unit of ReadingType {code}")
    scaled = value.scaleb(rt.multiplier - prefix).normalize()
    sign, digits, exponent = scaled.as_tuple()
    assert isinstance(exponent, int)
    raw = int("".join(map(str, digits)) or "0") * (-1 if sign else 1)
    if exponent > 0:
        raw, exponent = raw * 10**exponent, 0
    return Capture(at, raw, exponent, unit)


def _utc(time: datetime, dst: bool | None, zone: str) -> datetime:
    try:
        return to_utc(time, dst, zone)
    except Ambiguous as exc:
        return exc.earlier


_TIME_OF = operator.attrgetter("time", "dst")
_CHANNEL_OF = operator.attrgetter("source_id", "interval_minutes", "reading_type", "unit", "scaler")


def _readings_stored(
    spec: TaskSpec, rows: Sequence[RawValue]
) -> tuple[ReadingsStored | None, dict[str, Any]]:
    if not rows:
        return None, {"start": None, "end": None}
    zone = spec.time_zone
    try:  # rows share their times (a profile row's channels): each converted once
        stamps = [_utc(time, dst, zone) for time, dst in set(map(_TIME_OF, rows))]
    except Refused as exc:  # what ingest would refuse the batch for (a time in the DST gap)
        raise MdmError(exc.error, exc.reason) from None
    codes = sorted(
        {
            channel(source, interval, reading_type, unit, scaler).code
            for source, interval, reading_type, unit, scaler in set(map(_CHANNEL_OF, rows))
        }
    )
    start, end = min(stamps), max(stamps)
    event = ReadingsStored(
        spec.job_id, spec.mrid, start, end, len(rows), tuple(codes), spec.correlation_id
    )
    return event, {"start": _iso(start), "end": _iso(end)}


def end_device_events(spec: TaskSpec, events: Sequence[MeterEvent]) -> list[EndDeviceEvent]:
    out = []
    for e in events:
        details: dict[str, Any] = {"dlms_code": e.code, "log": e.log}
        for name, value in e.details:
            details[str(name)] = value.hex() if isinstance(value, bytes) else value
        time = e.timestamp
        if time.tzinfo is None or time.utcoffset() is None:
            try:
                time = _utc(time, e.dst, spec.time_zone)
            except Refused:  # a wall time the zone skips: the meter's clock, taken as is
                time = _utc(time, None, "UTC")
                details["time_note"] = "wall time not in the meter's zone; read as UTC"
        out.append(
            EndDeviceEvent(
                device=spec.mrid,
                event_type=event_type_for(e.code),
                time=time.astimezone(UTC),
                details=details,
                source_task=str(spec.task_id),
            )
        )
    return out


def _new_events(conn: Connection, spec: TaskSpec, items: list[EndDeviceEvent]) -> list:
    """The events not stored yet (and each once)."""
    if not items:
        return []
    lo = min(e.time for e in items)
    hi = max(e.time for e in items)
    stored = {
        (ts.astimezone(UTC), code)
        for ts, code in conn.execute(
            select(events_table.c.ts, events_table.c.event_type).where(
                events_table.c.device_id == spec.device_id,
                events_table.c.ts >= lo,
                events_table.c.ts <= hi,
            )
        )
    }
    out = []
    for e in items:
        key = (e.time, e.event_type)
        if key not in stored:
            stored.add(key)
            out.append(e)
    return out


def control_result(outcome: commands.ControlOutcome) -> dict[str, Any]:
    state = outcome.switch.control_state.name.lower() if outcome.switch is not None else None
    result: dict[str, Any] = {
        "action": outcome.command.action.value,
        "state": state,
        "verified": outcome.verified,
        "operated": not outcome.already,
    }
    if outcome.clock is not None:
        result["clock"] = outcome.clock.time.isoformat()
    return result


def _other_result(result: object) -> dict[str, Any]:
    if isinstance(result, commands.PingOutcome):
        return {
            "logical_device_name": result.ping.logical_device_name,
            "round_trip_s": result.ping.round_trip_s,
        }
    if isinstance(result, commands.FirmwareOutcome):
        p = result.progress
        return {
            "phase": p.phase,
            "status": p.status.name.lower(),
            "blocks_total": p.blocks_total,
            "blocks_sent": p.blocks_sent,
            "blocks_resent": p.blocks_resent,
        }
    if isinstance(result, commands.ConfigurationOutcome):
        return {"applied": len(result.applied), "asked": len(result.command.settings)}
    raise TypeError(f"{type(result).__name__} is not a task result")


# --- finishing --------------------------------------------------------------------------------


def _job_finished(conn: Connection, job_id: str) -> list[HeadEndEvent]:
    done = roll_up(conn, job_id)
    if done is None:
        return []
    return [JobFinished(done.job_id, done.state, done.counts, done.correlation_id)]


def complete_task(
    store: Store,
    spec: TaskSpec,
    result: object,
    *,
    read_at: datetime | None = None,
    attempt: AttemptEnd | None = None,
) -> list[HeadEndEvent]:
    """Store ``result`` and finish the task (see the module docstring); returns the events to
    publish after this returns (empty when the task had already been finished). ``attempt``:
    how the attempt that got the result ended, recorded in the same transaction."""
    if isinstance(result, commands.Failure):
        return fail_task(
            store,
            spec,
            state="failed",
            error_code=result.error,
            error_text=result.message,
            attempt=attempt,
        )
    read_at = read_at or datetime.now(UTC).replace(microsecond=0)
    types: dict[str, int] = {}
    try:
        with transaction(store) as conn:
            if attempt is not None:
                record_attempt_end(conn, spec.task_id, attempt)
            out = _complete(conn, spec, result, read_at, store.reading_type_ids, types)
        store.reading_type_ids.update(types)  # committed now
        return out
    except MdmError as exc:
        return fail_task(
            store, spec, state="failed", error_code=exc.error, error_text=str(exc), attempt=attempt
        )


def _complete(
    conn: Connection,
    spec: TaskSpec,
    result: object,
    read_at: datetime,
    known_types: Mapping[str, int] | None = None,
    types: dict[str, int] | None = None,
) -> list[HeadEndEvent]:
    """The task row is updated once (state and result together; see ``finish_task``).
    ``known_types``: ReadingType ids committed before; ``types`` receives the batch's."""
    out: list[HeadEndEvent] = []
    if isinstance(result, commands.ControlOutcome):
        payload = control_result(result)
        error = None if result.verified else ErrorCode.DEVICE_ERROR
        text = None
        if error is not None:
            text = f"the meter reports {payload['state']} after {payload['action']}"
        state = "succeeded" if error is None else "failed"
        if not finish_task(
            conn, spec.task_id, state=state, error_code=error, error_text=text, result=payload
        ):
            return []
        out.append(
            ControlDone(
                spec.job_id,
                spec.mrid,
                payload["action"],
                payload["state"],
                result.verified,
                error_code_text(error),
                spec.correlation_id,
            )
        )
        return out + _job_finished(conn, spec.job_id)
    if isinstance(result, commands.PingOutcome | commands.FirmwareOutcome):
        return _finish_other(conn, spec, result)
    if isinstance(result, commands.ConfigurationOutcome):
        return _finish_other(conn, spec, result)
    if isinstance(result, commands.Readings):
        lookup = _previous_lookup(conn, spec) if spec.device_id else None
        rows, unmapped, resets = raw_values(spec, result, read_at=read_at, previous=lookup)
        event, window = _readings_stored(spec, rows)
        payload: dict[str, Any] = {
            "readings": len(rows),
            "registers": len(result.registers),
            "events": 0,
            **window,
        }
        if unmapped:
            payload["unmapped"] = unmapped
        validator = None
        if resets:
            payload["resets"] = [_reset_json(source, reset) for source, reset in resets]
            totals = {
                raw.source_id: raw.reading_type
                for raw in rows
                if raw.reading_type is not None and raw.source_id in {s for s, _ in resets}
            }
            validator = _flag_resets(resets, totals)
        if not finish_task(conn, spec.task_id, state="succeeded", result=payload):
            return []  # already finished: nothing is stored twice
        devices = {spec.mrid: (spec.device_id, spec.time_zone)} if spec.device_id else None
        stored = ingest(
            conn,
            rows,
            validator=validator,
            who="headend",
            reason=f"task {spec.task_id}",
            reading_type_ids=known_types,
            devices=devices,
        )
        if types is not None:
            types.update(stored.reading_type_ids)
        if event is not None:
            out.append(event)
        return out + _job_finished(conn, spec.job_id)
    if not isinstance(result, commands.Events):
        raise TypeError(f"{type(result).__name__} is not a task result")
    items = end_device_events(spec, result.events)
    new = _new_events(conn, spec, items)
    stamps = [e.time for e in items]
    payload = {
        "readings": 0,
        "registers": 0,
        "events": len(items),
        "new_events": len(new),
        "start": _iso(min(stamps)) if stamps else None,
        "end": _iso(max(stamps)) if stamps else None,
    }
    if not finish_task(conn, spec.task_id, state="succeeded", result=payload):
        return []  # already finished: nothing is stored twice
    store_events(conn, new)
    if new:
        out.append(EventsStored(spec.job_id, spec.mrid, tuple(new), spec.correlation_id))
    return out + _job_finished(conn, spec.job_id)


def _finish_other(
    conn: Connection,
    spec: TaskSpec,
    result: commands.PingOutcome | commands.FirmwareOutcome | commands.ConfigurationOutcome,
) -> list[HeadEndEvent]:
    payload = _other_result(result)
    ok = result.ok
    if not finish_task(
        conn,
        spec.task_id,
        state="succeeded" if ok else "failed",
        error_code=None if ok else ErrorCode.DEVICE_ERROR,
        error_text=None if ok else "the device did not complete the operation",
        result=payload,
    ):
        return []
    return _job_finished(conn, spec.job_id)


def fail_task(
    store: Store,
    spec: TaskSpec,
    *,
    state: str,
    error_code: ErrorCode | str,
    error_text: str,
    attempt: AttemptEnd | None = None,
) -> list[HeadEndEvent]:
    """Finish the task as ``failed``, ``expired`` or ``cancelled`` with its error; returns
    the events to publish (a ControlDone for a control, JobFinished if it was the last).
    ``attempt``: how the last attempt ended, recorded in the same transaction."""
    if state not in FAILED_STATES:
        raise ValueError(f"state must be one of {FAILED_STATES}, not {state!r}")
    code = error_code_text(error_code)
    with transaction(store) as conn:
        if attempt is not None:
            record_attempt_end(conn, spec.task_id, attempt)
        if not finish_task(conn, spec.task_id, state=state, error_code=code, error_text=error_text):
            return []
        out: list[HeadEndEvent] = []
        if isinstance(spec.command, commands.Control):
            out.append(
                ControlDone(
                    spec.job_id,
                    spec.mrid,
                    spec.command.action.value,
                    None,
                    False,
                    code,
                    spec.correlation_id,
                )
            )
        return out + _job_finished(conn, spec.job_id)


__all__ = [
    "EVENT_TYPES",
    "complete_task",
    "control_result",
    "delta_source_id",
    "end_device_events",
    "event_type_for",
    "fail_task",
    "interval_minutes",
    "profile_instants",
    "raw_values",
]
