"""HeadEndEvents as IEC 61968-9 EventMessages: what subscribers (MDM, OMS, CIS) and the ESB
are sent when the head-end has stored something.

=====================  ==========================  ===================================================
HeadEndEvent           Verb / Noun                 Payload
=====================  ==========================  ===================================================
ReadingsStored         created MeterReadings       the readings read back from mdm for the event's
                                                   device, ReadingTypes and window, with the
                                                   ReadingTypes described (code and words)
EventsStored           created EndDeviceEvents     the event's meter events (type, time, device,
                                                   details)
ControlDone            created EndDeviceEvents     one EndDeviceEvent confirming (or reporting the
                                                   failure of) the control, see below
JobFinished            (none)                      a job's end is not a CIM noun; the job's
                                                   results went out as the events above
=====================  ==========================  ===================================================

**Control results** go out as ``created EndDeviceEvents``, the message an OMS or MDM already
takes for meter events, with the EndDeviceEventType that Annex E defines for the outcome
(the switch state read back from the meter), rather than as a ``changed EndDeviceControls``:
the control request's own reply (synchronous, or asynchronous through the outbox) already
answers the requester; the event tells everyone else what the meter's switch now is.

==============  ====================================  ======================================
action          done (verified)                       failed (error, or not verified)
==============  ====================================  ======================================
disconnect      3.31.0.68 RCD switch disconnected     3.31.0.84 disconnect failed
connect         3.31.0.42 connected (3.31.0.11 armed  3.31.0.67 connect failed
                for closure when the meter is ready
                for a manual reconnection)
arm             3.31.0.11 armed for closure           3.31.0.226 arm for closure failed
demand_reset    3.8.0.214 demand reset                3.8.0.65 demand reset failed
clock_sync      3.36.116.24 time sync changed         3.36.116.85 time sync failed
other           3.0.0.24 changed                      3.0.0.85 failed
==============  ====================================  ======================================

The event carries EndDeviceEventDetails ``action``, ``state``, ``verified``, ``jobId`` and,
on failure, ``errorCode``; its ``issuerTrackingID`` is the job id.

**MessageIDs are derived from the event** (a UUID 5 of the event's identity, the noun, the
verb and a scope such as the subscription name), not drawn at random. Every HeadEnd process
receives every event (C2's fanout), and a worker may publish an event again after a
restart; the same MessageID makes the outbox keep one row and lets receivers drop copies.
The Header also carries the job id as a Property ``jobId``, and the event's correlation id
(when it has one) as CorrelationID.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from cim.codelists.readingtype import ReadingType
from cim.end_device_events import EndDeviceEvents
from cim.envelope import Header, Message, MessageKind, Payload, Property, Verb
from cim.errors import CimError
from cim.messages import emit_message
from cim.meter_readings import (
    MeterReading,
    RationalNumber,
    Reading,
    ReadingQuality,
    ReadingTypeInfo,
)
from cim.meter_readings_stream import MeterReadingsWriter
from cim.model import EndDeviceEvent, EndDeviceEventDetail, Name, ObjectRef, Status
from mdm.database import Store, reading
from mdm.readings import read
from mdm.schema import devices, reading_types, readings
from mdm.series import Point

SOURCE = "OpenHES"
# UUID 5 namespace of OpenHES notification MessageIDs (a fixed random UUID).
MESSAGE_ID_NAMESPACE = uuid.UUID("6b1f0e62-8a53-4c1e-9a2f-0f2d7c4e5a91")
EVENT_ID_NAMESPACE = uuid.UUID("0d7c2a55-31b6-4f8e-b1f4-3c5a9e8d2b17")

MeterReadingsCreated = ("MeterReadings", Verb.CREATED.value)
EndDeviceEventsCreated = ("EndDeviceEvents", Verb.CREATED.value)

# HeadEndEvent class name -> the (noun, verb) of the messages it becomes.
NOTIFICATIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "ReadingsStored": (MeterReadingsCreated,),
    "EventsStored": (EndDeviceEventsCreated,),
    "ControlDone": (EndDeviceEventsCreated,),
    "JobFinished": (),
}

# (action, verified) -> EndDeviceEventType; see the module docstring.
CONTROL_EVENT_TYPES: dict[tuple[str, bool], str] = {
    ("disconnect", True): "3.31.0.68",
    ("disconnect", False): "3.31.0.84",
    ("connect", True): "3.31.0.42",
    ("connect", False): "3.31.0.67",
    ("arm", True): "3.31.0.11",
    ("arm", False): "3.31.0.226",
    ("demand_reset", True): "3.8.0.214",
    ("demand_reset", False): "3.8.0.65",
    ("clock_sync", True): "3.36.116.24",
    ("clock_sync", False): "3.36.116.85",
}
CONTROL_OTHER = {True: "3.0.0.24", False: "3.0.0.85"}
ARMED_FOR_CLOSURE = "3.31.0.11"


def kind_of(event: object) -> str:
    return type(event).__name__


def notifications_of(event: object) -> tuple[tuple[str, str], ...]:
    """The (noun, verb) of each message ``event`` becomes (empty for JobFinished and for
    anything that is not a HeadEndEvent)."""
    return NOTIFICATIONS.get(kind_of(event), ())


def event_key(event: object) -> str:
    """The identity of a HeadEndEvent: equal for the same event published twice."""
    kind = kind_of(event)
    job = getattr(event, "job_id", "")
    mrid = getattr(event, "mrid", "")
    if kind == "ReadingsStored":
        types = ",".join(sorted(event.reading_types))  # type: ignore[attr-defined]
        return (
            f"{kind}|{job}|{mrid}|{_iso(event.start)}|{_iso(event.end)}|"  # type: ignore[attr-defined]
            f"{types}|{event.count}"  # type: ignore[attr-defined]
        )
    if kind == "EventsStored":
        items = sorted(f"{e.device}@{e.event_type}@{_iso(e.time)}" for e in event.events)  # type: ignore[attr-defined]
        return f"{kind}|{job}|{mrid}|{';'.join(items)}"
    if kind == "ControlDone":
        return (
            f"{kind}|{job}|{mrid}|{event.action}|{event.state}|"  # type: ignore[attr-defined]
            f"{event.verified}|{event.error_code}"  # type: ignore[attr-defined]
        )
    return f"{kind}|{job}|{mrid}"


def message_id_for(event: object, noun: str, verb: str, scope: str = "") -> str:
    """The MessageID of the (noun, verb) message of ``event`` for ``scope`` (e.g. a
    subscription name; "" for the ESB)."""
    return str(uuid.uuid5(MESSAGE_ID_NAMESPACE, f"{scope}|{noun}|{verb}|{event_key(event)}"))


def event_message(
    store: Store, event: object, *, scope: str = "", source: str = SOURCE
) -> list[tuple[str, str, bytes]]:
    """``[(noun, verb, EventMessage bytes)]`` for a HeadEndEvent (see the module docstring);
    empty when the event is not notified (JobFinished, no readings stored). Reads mdm with
    its own connection; safe from any thread."""
    out: list[tuple[str, str, bytes]] = []
    for noun, verb in notifications_of(event):
        header = _header(event, noun, verb, scope, source)
        kind = kind_of(event)
        if kind == "ReadingsStored":
            body = _meter_readings(store, event, header)
        elif kind == "EventsStored":
            body = _end_device_events(_stored_events(event), header)
        else:
            body = _end_device_events([_control_event(event)], header)
        if body is not None:
            out.append((noun, verb, body))
    return out


def _header(event: object, noun: str, verb: str, scope: str, source: str) -> Header:
    properties = []
    job_id = getattr(event, "job_id", None)
    if job_id:
        properties.append(Property("jobId", str(job_id)))
    return Header(
        verb=verb,
        noun=noun,
        timestamp=datetime.now(UTC),
        source=source,
        message_id=message_id_for(event, noun, verb, scope),
        correlation_id=getattr(event, "correlation_id", None) or None,
        properties=properties,
    )


# ---------------------------------------------------------------------- MeterReadings


def readings_window(event: Any) -> tuple[datetime, datetime]:
    """The mdm window ``(start, end]`` holding a ReadingsStored event's readings. The event
    names its first and last stored timestamps (both included), so the window opens just
    before ``start``."""
    return event.start - timedelta(microseconds=1), event.end


def _meter_readings(store: Store, event: Any, header: Header) -> bytes | None:
    if not getattr(event, "count", 1):
        return None
    start, end = readings_window(event)
    codes = list(event.reading_types) or _stored_reading_types(store, event.mrid, start, end)
    if not codes:
        return None
    buffer = io.BytesIO()
    written = 0
    with MeterReadingsWriter(buffer, envelope=header) as writer:
        meter = ObjectRef(mrid=event.mrid)
        for series in read(store, [event.mrid], codes, start, end):
            if not series.points:
                continue
            written += len(series.points)
            code = series.key.reading_type
            if series.interval is not None:
                writer.write_interval_block(meter, code, map(_interval_item, series.points))
            else:
                writer.write(
                    MeterReading(
                        meter=meter,
                        readings=[
                            Reading(
                                code,
                                value=point.value,
                                timestamp=point.timestamp,
                                qualities=[ReadingQuality(q) for q in sorted(point.qualities)],
                            )
                            for point in series.points
                        ],
                    )
                )
        for info in _reading_type_infos(codes):
            writer.add_reading_type(info)
    return buffer.getvalue() if written else None


def _interval_item(point: Point) -> tuple:
    if point.qualities:
        return (point.timestamp, point.value, sorted(point.qualities))
    return (point.timestamp, point.value)


def _stored_reading_types(store: Store, mrid: str, start: datetime, end: datetime) -> list[str]:
    """Every ReadingType the device has readings of in the window (events without a list)."""
    query = (
        select(reading_types.c.code)
        .distinct()
        .select_from(
            readings.join(reading_types, reading_types.c.id == readings.c.reading_type_id).join(
                devices, devices.c.id == readings.c.device_id
            )
        )
        .where(devices.c.mrid == mrid, readings.c.ts > start, readings.c.ts <= end)
        .order_by(reading_types.c.code)
    )
    with reading(store) as conn:
        return list(conn.execute(query).scalars())


def _reading_type_infos(codes: Sequence[str]) -> list[ReadingTypeInfo]:
    infos = []
    for code in codes:
        try:
            rt = ReadingType.parse(code)
        except CimError:  # a vendor code: sent as a ref only
            continue
        argument = interharmonic = None
        if rt.argument_denominator:
            argument = RationalNumber(rt.argument_numerator, rt.argument_denominator)
        if rt.interharmonic_denominator:
            interharmonic = RationalNumber(rt.interharmonic_numerator, rt.interharmonic_denominator)
        infos.append(
            ReadingTypeInfo(
                mrid=rt.code,
                names=(Name(rt.describe()),),
                accumulation=str(rt.accumulation),
                aggregate=str(rt.aggregate),
                commodity=str(rt.commodity),
                consumption_tier=rt.consumption_tier,
                cpp=rt.cpp,
                currency=str(rt.currency),
                flow_direction=str(rt.flow_direction),
                macro_period=str(rt.macro_period),
                measurement_kind=str(rt.measurement_kind),
                measuring_period=str(rt.measuring_period),
                multiplier=str(rt.multiplier),
                phases=str(rt.phases),
                tou=rt.tou,
                unit=str(rt.unit),
                argument=argument,
                interharmonic=interharmonic,
            )
        )
    return infos


# ---------------------------------------------------------------------- EndDeviceEvents


def _stored_events(event: Any) -> list[EndDeviceEvent]:
    out = []
    for stored in event.events:
        details = [
            EndDeviceEventDetail(str(name), None if value is None else str(value))
            for name, value in sorted((stored.details or {}).items())
        ]
        out.append(
            EndDeviceEvent(
                event_type=stored.event_type,
                created=stored.time,
                mrid=str(
                    uuid.uuid5(
                        EVENT_ID_NAMESPACE,
                        f"{stored.device}|{stored.event_type}|{_iso(stored.time)}",
                    )
                ),
                issuer_id=SOURCE,
                issuer_tracking_id=getattr(event, "job_id", None) or None,
                asset=ObjectRef(mrid=stored.device),
                details=details,
            )
        )
    return out


def control_event_type(action: str, state: str | None, ok: bool) -> str:
    """The EndDeviceEventType reporting a control's outcome (see the module docstring)."""
    action = str(action).lower()
    if ok and action == "connect" and _state_name(state) == "ready_for_reconnection":
        return ARMED_FOR_CLOSURE
    return CONTROL_EVENT_TYPES.get((action, ok), CONTROL_OTHER[ok])


def _state_name(state: object) -> str | None:
    if state is None:
        return None
    name = getattr(state, "name", None) or str(state)
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def _control_event(event: Any) -> EndDeviceEvent:
    ok = bool(event.verified) and not event.error_code
    action = str(getattr(event.action, "value", event.action))
    state = _state_name(event.state)
    details = [
        EndDeviceEventDetail("action", action),
        EndDeviceEventDetail("state", state),
        EndDeviceEventDetail("verified", "true" if event.verified else "false"),
        EndDeviceEventDetail("jobId", str(event.job_id)),
    ]
    if event.error_code:
        details.append(EndDeviceEventDetail("errorCode", str(event.error_code)))
    when = getattr(event, "time", None) or datetime.now(UTC)
    return EndDeviceEvent(
        event_type=control_event_type(action, state, ok),
        created=when,
        mrid=str(uuid.uuid5(EVENT_ID_NAMESPACE, event_key(event))),
        issuer_id=SOURCE,
        issuer_tracking_id=str(event.job_id),
        asset=ObjectRef(mrid=event.mrid),
        details=details,
        status=Status(
            value=state or ("done" if ok else "failed"),
            date_time=when,
            reason=str(event.error_code) if event.error_code else None,
        ),
    )


def _end_device_events(items: list[EndDeviceEvent], header: Header) -> bytes | None:
    if not items:
        return None
    message = Message(
        kind=MessageKind.EVENT,
        header=header,
        payload=Payload(document=EndDeviceEvents(events=items)),
    )
    return emit_message(message)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat() if moment.tzinfo else moment.isoformat()
