"""EndDeviceEvents: ``get`` (a GetEndDeviceEvents request), answered from the store, and
``created`` (an EventMessage another system sends: meter events to store) or ``create``.

Devices: Meter (by mRID or name), EndDeviceGroup (by name), UsagePoint (by mRID or name).
Window: the union of the TimeSchedule intervals, else the Request's StartTime/EndTime; a
missing end is now, a missing start one day before the end. EndDeviceEventType selectors
(4-part codes) keep only those types. Each stored event becomes an EndDeviceEvent with its
type, time, the device as ``Assets`` and its details as ``EndDeviceEventDetails``.

**created** (or create). Each EndDeviceEvent names its meter in ``Assets`` (mRID, else name);
the events are stored with :func:`mdm.events.store_events`, all or none per meter (an event
already stored, same meter, time and type, is not stored twice). Details kept: the
EndDeviceEventDetails, and the event's ``mRID``, ``reason``, ``severity``, ``issuerID`` and
``issuerTrackingID`` when given. One Error per meter: unknown meters 4.1, a bad event type or
a time without UTC offset that meter's code; an INFORM entry (0.0) for the others, "n
event(s) received, m new".
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from cim.end_device_events import EndDeviceEvents, GetEndDeviceEvents
from cim.envelope import ReplyError
from cim.errors import CimError, ErrorCode
from cim.model import EndDeviceEvent, EndDeviceEventDetail, ObjectRef
from headend.handlers import (
    Context,
    Outcome,
    device_error,
    device_note,
    requested_periods,
    resolve_devices,
    window,
)
from mdm.events import EndDeviceEvent as StoredEvent
from mdm.events import read_events, store_events


def _query(ctx: Context) -> GetEndDeviceEvents:
    request = ctx.message.request
    profile: Any = request.get_profile if request is not None else None
    if profile is None and ctx.message.payload is not None:
        profile = ctx.message.payload.document
    if not isinstance(profile, GetEndDeviceEvents):
        shown = type(profile).__name__ if profile is not None else "nothing"
        raise CimError(
            ErrorCode.MISSING_ELEMENT,
            f"a get EndDeviceEvents request needs a GetEndDeviceEvents, not {shown}",
        )
    return profile


async def get_end_device_events(ctx: Context) -> Outcome:
    query = _query(ctx)
    if not (query.meters or query.end_device_groups or query.usage_points):
        raise CimError(
            ErrorCode.MISSING_ELEMENT,
            "GetEndDeviceEvents names no Meter, EndDeviceGroup or UsagePoint",
        )
    periods = requested_periods(ctx, query.time_periods)
    start, end = window(periods)
    found = resolve_devices(ctx.store, query.meters, query.end_device_groups, query.usage_points)
    if not found.mrids:
        return Outcome(errors=found.errors)
    types = {ref.mrid for ref in query.event_types if ref.mrid}
    events = [
        EndDeviceEvent(
            event_type=stored.event_type,
            created=stored.time,
            asset=ObjectRef(mrid=stored.device),
            details=[
                EndDeviceEventDetail(str(k), None if v is None else str(v))
                for k, v in sorted((stored.details or {}).items())
            ],
        )
        for stored in read_events(ctx.store, found.mrids, start, end)
        if not types or stored.event_type in types
    ]
    return Outcome(EndDeviceEvents(events=events), found.errors, succeeded=len(found.mrids))


# --- created -----------------------------------------------------------------------------------


async def create_end_device_events(ctx: Context) -> Outcome:
    document = ctx.document(EndDeviceEvents)
    if not document.events:
        raise CimError(ErrorCode.MISSING_ELEMENT, "the EndDeviceEvents payload is empty")
    errors: list[ReplyError] = []
    by_key: dict[str, list[EndDeviceEvent]] = defaultdict(list)
    refs: dict[str, ObjectRef] = {}
    for event in document.events:
        key = event.asset.key if event.asset is not None else None
        if key is None:
            errors.append(
                device_error(
                    "?", ErrorCode.MISSING_ELEMENT, "an EndDeviceEvent names no meter (Assets)"
                )
            )
            continue
        by_key[key].append(event)
        refs.setdefault(key, event.asset)  # type: ignore[arg-type]
    return await ctx.run_blocking(_store, ctx, by_key, refs, errors, small=True)


def _store(
    ctx: Context,
    by_key: dict[str, list[EndDeviceEvent]],
    refs: dict[str, ObjectRef],
    errors: list[ReplyError],
) -> Outcome:
    notes: list[ReplyError] = []
    task = f"cim:{ctx.message_id}"[:64] if ctx.message_id else None
    for key, group in by_key.items():
        found = resolve_devices(ctx.store, [refs[key]])
        errors.extend(found.errors)
        if not found.mrids:
            continue
        mrid = found.mrids[0]
        try:
            new = store_events(ctx.store, [_stored(mrid, event, task) for event in group])
        except CimError as error:  # MdmError too
            errors.append(device_error(mrid, error.error, error.reason))
            continue
        notes.append(device_note(mrid, f"{len(group)} event(s) received, {new} new"))
    return Outcome(errors=errors, notes=notes, succeeded=len(notes))


def _stored(mrid: str, event: EndDeviceEvent, task: str | None) -> StoredEvent:
    details: dict[str, Any] = {d.name: d.value for d in event.details}
    for name, value in (
        ("mRID", event.mrid),
        ("reason", event.reason),
        ("severity", event.severity),
        ("issuerID", event.issuer_id),
        ("issuerTrackingID", event.issuer_tracking_id),
    ):
        if value is not None:
            details.setdefault(name, value)
    return StoredEvent(mrid, event.event_type, event.created, details or None, task)


__all__ = ["create_end_device_events", "get_end_device_events"]
