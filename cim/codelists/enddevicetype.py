"""EndDeviceEventType and EndDeviceControlType codes of IEC 61968-9 Annex E.

Both are ``type.domain.subDomain.eventOrAction``, four non-negative integers, each from its
table in ``data/ed_*.csv``. 0 means "not applicable" in every part.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cim.codelists import check_int, load_names, split_int_fields
from cim.errors import CimError, ErrorCode

_ERR = ErrorCode.BAD_END_DEVICE_TYPE

#: Attribute name, the standard's part name, and the data file of each part, in code order.
PARTS: tuple[tuple[str, str, str], ...] = (
    ("type", "EndDeviceType", "ed_type.csv"),
    ("domain", "EndDeviceDomain", "ed_domain.csv"),
    ("sub_domain", "EndDeviceSubDomain", "ed_subdomain.csv"),
    ("event_or_action", "EndDeviceEventOrAction", "ed_event_or_action.csv"),
)
_PART_NAMES = tuple(name for _, name, _ in PARTS)


def part_names(attr: str) -> Mapping[int, str]:
    """``code -> name`` of one part (``attr`` as in :data:`PARTS`)."""
    for part_attr, _, filename in PARTS:
        if part_attr == attr:
            return load_names(filename)
    raise CimError(_ERR, f"unknown EndDevice code part {attr!r}")


@dataclass(frozen=True)
class EndDeviceTypeCode:
    """One EndDeviceEventType or EndDeviceControlType code.

    Construct with ``strict=False`` (or parse with it) to accept numbers missing from the
    tables, e.g. vendor additions; they are still four non-negative integers.
    """

    type: int
    domain: int
    sub_domain: int
    event_or_action: int
    # How the code was checked, not part of its identity.
    strict: bool = field(default=True, compare=False, repr=False)

    def __post_init__(self) -> None:
        for index, (attr, name, filename) in enumerate(PARTS):
            label = f"part {index + 1} ({name})"
            value = check_int(getattr(self, attr), label, _ERR)
            if self.strict and value not in load_names(filename):
                raise CimError(_ERR, f"{label}: {value} is not a known code")

    @classmethod
    def parse(cls, code: str, *, strict: bool = True) -> EndDeviceTypeCode:
        """Parse ``type.domain.subDomain.eventOrAction``; raises CimError BAD_END_DEVICE_TYPE."""
        values = split_int_fields(
            code,
            count=4,
            names=_PART_NAMES,
            error=_ERR,
            what="EndDevice event/control type",
            label="part",
        )
        return cls(*values, strict=strict)

    @property
    def code(self) -> str:
        return f"{self.type}.{self.domain}.{self.sub_domain}.{self.event_or_action}"

    def __str__(self) -> str:
        return self.code

    @property
    def is_known(self) -> bool:
        """Whether every part is in the tables (always true for a strict code)."""
        return all(getattr(self, attr) in load_names(filename) for attr, _, filename in PARTS)

    @property
    def names(self) -> tuple[str, str, str, str]:
        """Names of the four parts; "n/a" for 0, "unknown N" for a number not in its table."""
        type_, domain, sub_domain, event = (
            load_names(filename).get(getattr(self, attr), f"unknown {getattr(self, attr)}")
            for attr, _, filename in PARTS
        )
        return type_, domain, sub_domain, event

    def describe(self) -> str:
        """E.g. "electric meter / RCD switch / disconnected" (parts that are 0 are left out)."""
        words = [name for value, name in zip(self._values(), self.names, strict=True) if value]
        return " / ".join(words) if words else "unspecified"

    def _values(self) -> tuple[int, int, int, int]:
        return self.type, self.domain, self.sub_domain, self.event_or_action


def _code(text: str) -> EndDeviceTypeCode:
    return EndDeviceTypeCode.parse(text)


# Well-known codes for the head-end. "seen" = used in published samples or open code (see
# shared research, section 4.3); "derived" = composed by us from the Annex E tables.

#: Remote disconnect (open the supply switch), EndDeviceControlType. Seen (Connexo).
REMOTE_DISCONNECT = _code("3.31.0.23")
#: Remote connect (close the supply switch), EndDeviceControlType. Seen (Connexo).
REMOTE_CONNECT = _code("3.31.0.18")
#: Arm the switch for closure (customer closes it locally). Seen (Connexo).
ARM_FOR_CLOSURE = _code("0.31.0.5")
#: Arm the switch for open. Seen (Connexo).
ARM_FOR_OPEN = _code("0.31.0.6")
#: Disable / enable the supply switch. Seen (Connexo).
SWITCH_DISABLE = _code("0.31.0.22")
SWITCH_ENABLE = _code("0.31.0.26")
#: Demand (maximum demand) reset. Seen (Connexo).
DEMAND_RESET = _code("0.8.0.214")
#: Load control start / stop. Seen (Connexo).
LOAD_CONTROL_START = _code("0.15.0.54")
LOAD_CONTROL_STOP = _code("0.15.0.55")
#: Power failed (outage, last gasp). Derived; also in a vendor alarm list.
POWER_FAILED = _code("3.26.0.85")
#: Power restored. Seen (a utility's analytics code, with 3.26.0.47 for power loss).
POWER_RESTORED = _code("3.26.0.216")
#: Power loss detected. Seen (same source as POWER_RESTORED).
POWER_LOSS_DETECTED = _code("3.26.0.47")
#: Supply switch disconnected / connected (event confirming the control). Derived.
SWITCH_DISCONNECTED = _code("3.31.0.68")
SWITCH_CONNECTED = _code("3.31.0.42")
#: The meter's clock was set: Clock / TimeSync / Changed. Derived; Connexo's protocol event
#: mapping uses the same parts with type 0 (0.36.116.24) for "clock set, new time".
CLOCK_SET = _code("3.36.116.24")
#: Battery charge at its minimum (low battery). Seen (Connexo EndDeviceEvents sample).
LOW_BATTERY = _code("3.2.22.150")
#: Meter cover opened (tamper): Security / Cover / Opened. Derived.
COVER_OPENED = _code("3.12.29.39")
#: Tamper detected, no sub-domain: Security / TamperDetected. Derived.
TAMPER_DETECTED = _code("3.12.0.257")
