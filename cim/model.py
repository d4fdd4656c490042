"""CIM classes shared by several nouns (IEC 61968-9 profiles of CIM15)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Name:
    """IdentifiedObject.Names: an alternative name, with its type and authority."""

    name: str
    name_type: str | None = None
    name_type_description: str | None = None
    authority: str | None = None
    authority_description: str | None = None


@dataclass(frozen=True)
class ObjectRef:
    """A reference to an identified object (Meter, UsagePoint, EndDevice, Asset)."""

    mrid: str | None = None
    names: tuple[Name, ...] = ()
    serial_number: str | None = None

    @property
    def key(self) -> str | None:
        """The identifier a head-end looks a device up by: the mRID, else the first name."""
        if self.mrid:
            return self.mrid
        return self.names[0].name if self.names else None


@dataclass(frozen=True)
class DateTimeInterval:
    start: datetime | None = None
    end: datetime | None = None


@dataclass(frozen=True)
class Status:
    value: str | None = None
    date_time: datetime | None = None
    reason: str | None = None
    remark: str | None = None


@dataclass(frozen=True)
class EndDeviceEventDetail:
    name: str
    value: str | None = None


@dataclass
class EndDeviceEvent:
    """A meter event or alarm (IEC 61968-9 EndDeviceEvent)."""

    event_type: str  # EndDeviceEventType ref: type.domain.subDomain.eventOrAction
    created: datetime
    mrid: str | None = None
    issuer_id: str | None = None
    issuer_tracking_id: str | None = None
    reason: str | None = None
    severity: str | None = None
    user_id: str | None = None
    asset: ObjectRef | None = None
    details: list[EndDeviceEventDetail] = field(default_factory=list)
    names: tuple[Name, ...] = ()
    status: Status | None = None
    usage_point: ObjectRef | None = None
