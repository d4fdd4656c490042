"""What the head-end tells its listeners, after the data is committed: readings stored, events
stored, a control done, a job finished. Published by whichever worker did the work, to every
HeadEnd (across processes through the task bus's fanout exchange), as JSON.

``to_json``/``from_json`` round-trip exactly (datetimes keep their offset, event details their
values: see :mod:`headend.command_json`).

Every event of a job's tasks carries the job's ``correlation_id`` (last field, default None):
the CorrelationID of the CIM request the job was made for (the router sets it from the
request's CorrelationID, else its MessageID), which :mod:`headend.notifications` puts in the
Header of the EventMessages pushed for the event. None for jobs made otherwise (schedules,
the CLI). A JSON form without the field (from an older process) reads as None.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from headend.command_json import CodecError, decode, encode
from mdm.events import EndDeviceEvent


@dataclass(frozen=True, slots=True)
class ReadingsStored:
    job_id: str
    mrid: str
    start: datetime  # the earliest stored timestamp (UTC)
    end: datetime  # the latest
    count: int
    reading_types: tuple[str, ...]
    correlation_id: str | None = None  # the job's: its request's CorrelationID
    kind: ClassVar[str] = "ReadingsStored"


@dataclass(frozen=True, slots=True)
class EventsStored:
    job_id: str
    mrid: str
    events: tuple[EndDeviceEvent, ...]  # the ones new to the store
    correlation_id: str | None = None
    kind: ClassVar[str] = "EventsStored"


@dataclass(frozen=True, slots=True)
class ControlDone:
    job_id: str
    mrid: str
    action: str
    state: str | None  # the switch state read back ("connected"...); None if not known
    verified: bool
    error_code: str | None  # None: success
    correlation_id: str | None = None
    kind: ClassVar[str] = "ControlDone"


@dataclass(frozen=True, slots=True)
class JobFinished:
    job_id: str
    state: str
    counts: dict[str, int]
    correlation_id: str | None = None
    kind: ClassVar[str] = "JobFinished"


HeadEndEvent = ReadingsStored | EventsStored | ControlDone | JobFinished
_TYPES: dict[str, type] = {
    cls.kind: cls for cls in (ReadingsStored, EventsStored, ControlDone, JobFinished)
}


def _event_dict(event: EndDeviceEvent) -> dict[str, Any]:
    return {f.name: encode(getattr(event, f.name)) for f in dataclasses.fields(event)}


def to_json(event: HeadEndEvent) -> str:
    body: dict[str, Any] = {"type": event.kind}
    for f in dataclasses.fields(event):
        value = getattr(event, f.name)
        if isinstance(event, EventsStored) and f.name == "events":
            body[f.name] = [_event_dict(e) for e in value]
        else:
            body[f.name] = encode(value)
    return json.dumps(body, separators=(",", ":"), allow_nan=False)


def from_json(text: str | bytes) -> HeadEndEvent:
    """The event; raises CodecError for anything that is not one."""
    try:
        body = json.loads(text)
        cls = _TYPES[body.pop("type")]
        values = {}
        for f in dataclasses.fields(cls):
            if f.name not in body and f.default is not dataclasses.MISSING:
                continue  # a field added later (correlation_id): its default
            raw = body.pop(f.name)
            if cls is EventsStored and f.name == "events":
                values[f.name] = tuple(
                    EndDeviceEvent(**{k: decode(v) for k, v in item.items()}) for item in raw
                )
            else:
                values[f.name] = decode(raw)
        if body:
            raise CodecError(f"unexpected field(s) {sorted(body)}")
        correlation = values.get("correlation_id")
        if correlation is not None and not isinstance(correlation, str):
            raise CodecError(f"correlation_id {correlation!r} is not a string")
        return cls(**values)
    except CodecError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CodecError(f"not a head-end event: {exc!r}") from None


__all__ = [
    "ControlDone",
    "EventsStored",
    "HeadEndEvent",
    "JobFinished",
    "ReadingsStored",
    "from_json",
    "to_json",
]
