"""xs:dateTime reading and writing.

Strict about shape (no date-only values, no week dates, no space separator), tolerant about
precision (fractions beyond microseconds are truncated, never rounded into the next second).
Values without an offset stay naive: xs:dateTime allows them and a round trip keeps them so.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from cim.errors import CimError, ErrorCode

_XS_DATETIME = re.compile(
    r"-?\d{4,}-\d\d-\d\dT\d\d:\d\d:\d\d(?P<fraction>\.\d+)?(?P<zone>Z|[+-]\d\d:\d\d)?"
)


def parse_datetime(text: str | None, *, where: str | None = None) -> datetime:
    """Parse an xs:dateTime; raise CimError BAD_DATETIME (2.2) naming ``where``."""
    if text is None:
        raise CimError(ErrorCode.BAD_DATETIME, "a date-time is empty", xpath=where)
    value = text.strip()
    match = _XS_DATETIME.fullmatch(value)
    if match is None:
        raise CimError(ErrorCode.BAD_DATETIME, f"{value!r} is not an xs:dateTime", xpath=where)
    fraction = match.group("fraction")
    if fraction and len(fraction) > 7:
        value = value.replace(fraction, fraction[:7], 1)
    if value.startswith("24:00:00", 11):
        # xs:dateTime allows 24:00:00 as the end of a day; Python does not.
        try:
            day = datetime.fromisoformat(value[:11] + "00:00:00" + value[19:])
        except ValueError as exc:
            raise CimError(ErrorCode.BAD_DATETIME, f"{value!r}: {exc}", xpath=where) from None
        return day + timedelta(days=1)
    try:
        return datetime.fromisoformat(value)
    except ValueError as exc:
        raise CimError(ErrorCode.BAD_DATETIME, f"{value!r}: {exc}", xpath=where) from None


def format_datetime(value: datetime) -> str:
    """Write an xs:dateTime: UTC as 'Z', other offsets as '+hh:mm', naive as given."""
    text = value.isoformat()
    if value.tzinfo is not None and value.utcoffset() == timedelta(0):
        text = text[:-6] + "Z"
    return text


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)
