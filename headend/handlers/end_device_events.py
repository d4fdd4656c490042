"""EndDeviceEvents: ``get`` (a GetEndDeviceEvents request), answered from the store.

Devices: Meter (by mRID or name), EndDeviceGroup (by name), UsagePoint (by mRID or name).
Window: the union of the TimeSchedule intervals, else the Request's StartTime/EndTime; a
missing end is now, a missing start one day before the end. EndDeviceEventType selectors
(4-part codes) keep only those types. Each stored event becomes an EndDeviceEvent with its
type, time, the device as ``Assets`` and its details as ``EndDeviceEventDetails``.
"""

from __future__ import annotations

from typing import Any

from cim.end_device_events import EndDeviceEvents, GetEndDeviceEvents
from cim.errors import CimError, ErrorCode
from cim.model import EndDeviceEvent, EndDeviceEventDetail, ObjectRef
from headend.handlers import Context, Outcome, resolve_devices, window
from mdm.events import read_events


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
    request = ctx.message.request
    periods = [(p.start, p.end) for p in query.time_periods]
    if not periods and request is not None and (request.start_time or request.end_time):
        periods = [(request.start_time, request.end_time)]
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


__all__ = ["get_end_device_events"]
