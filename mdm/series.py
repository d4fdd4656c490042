"""Plain value types shared by ingest, VEE, TOU, calculations and exports.

The store's tables (mdm.schema) hold these values; the processing modules work on them
without touching the database, so each rule can be tested on crafted series alone.
All timestamps are timezone-aware UTC; interval timestamps mark the *end* of the interval
(the IEC 61968-9 convention for IntervalReading.timeStamp). Values are exact Decimals.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal

# ReadingQualityType codes used by OpenHES (IEC 61968-9 Annex D; cim.codelists.quality).
QUALITY_VALID = "1.0.0"
QUALITY_POWER_FAIL = "1.2.32"
QUALITY_CLOCK_CHANGED = "1.4.9"
QUALITY_KNOWN_MISSING = "2.5.259"
QUALITY_FAILED_VALIDATION = "2.6.0"
QUALITY_MANUALLY_EDITED = "2.7.0"
QUALITY_ESTIMATED = "2.8.0"
QUALITY_DERIVED = "2.11.0"


@dataclass(frozen=True, slots=True)
class Point:
    """One interval or register value as the store and the processing modules see it."""

    timestamp: datetime
    value: Decimal | None
    qualities: frozenset[str] = frozenset()
    status_bits: int = 0

    def with_qualities(self, *codes: str) -> Point:
        return replace(self, qualities=self.qualities | frozenset(codes))

    @property
    def is_estimated(self) -> bool:
        return QUALITY_ESTIMATED in self.qualities


@dataclass(frozen=True, slots=True)
class SeriesKey:
    device: str  # device mRID
    reading_type: str  # 18-field ReadingType code


@dataclass(slots=True)
class Series:
    """Consecutive values of one device and reading type, ordered by timestamp.

    ``interval`` is the grid spacing for interval data, None for registers.
    """

    key: SeriesKey
    points: list[Point] = field(default_factory=list)
    interval: timedelta | None = None

    def __iter__(self) -> Iterator[Point]:
        return iter(self.points)

    def __len__(self) -> int:
        return len(self.points)
