"""From a raw value as a meter sent it to a normalised value: ReadingType, exact decimal, UTC.

Everything here is pure (no database); :mod:`mdm.ingest` applies it to batches.

**Value.** A raw value is an integer with a decimal ``scaler`` and a ``unit`` symbol as the CIM
unit table spells it (``Wh``, ``varh``, ``V``, ``A``, ``Hz``, ``m³``...), optionally with an SI
prefix (``kWh``). The value it means is ``raw * 10**scaler`` in that unit. The ReadingType
fixes the unit and the multiplier of the stored number, so the stored value is
``raw * 10**(scaler + prefix - multiplier)``, exact: 1234 Wh with scaler 0 into a kWh
ReadingType (multiplier 3) is ``Decimal("1.234")``. A unit that is not the ReadingType's
(varh into a Wh ReadingType) is refused; no conversion factor other than a power of ten is
applied. The store keeps 9 decimals and 19 integer digits (:mod:`mdm.sqltypes`); a value that
needs more is refused, never rounded.

**ReadingType.** ``reading_type`` (an 18-field code) when the raw value gives one, else the
OBIS mapping of ``cim.codelists.obis`` for ``source_id`` with the load-profile capture period
``interval_minutes`` (energy in kWh, power in kW). When both are given and the OBIS code is a
mapped one, they must agree (apart from the multiplier). A load-profile channel of an energy
register (D = 8) maps to the interval delta by default; the captured totals of that channel
are given the bulkQuantity ReadingType with the same measuring period explicitly
(``obis_to_reading_type(..., cumulative=True)``), which also agrees. Nothing here computes a
delta: the value is stored as given (:mod:`headend.results` computes the deltas).

**Time.** ``time`` is either aware (an instant: a UTC timestamp, or the meter's wall time with
the UTC offset it sent) or naive: the meter's wall-clock time in the device's IANA time zone,
with the meter's DST flag ``dst`` when it sent one (the DLMS clock status "daylight saving
active" bit). For a naive time:

- a wall time that does not exist (the spring-forward gap) is refused;
- a wall time that exists twice (the autumn repeated hour) is resolved by ``dst`` when given;
  without it, by the series order (see :func:`resolve_repeated_hour`), else refused;
- a ``dst`` flag that contradicts the zone at an unambiguous wall time is refused (the meter's
  clock or the registry's time zone is wrong, and storing either guess would be silent
  corruption).
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cim.codelists.obis import ObisCode, obis_to_reading_type
from cim.codelists.readingtype import ReadingType, multiplier_prefixes, unit_symbols
from cim.errors import CimError, ErrorCode
from mdm.sqltypes import MAX_ABS, PRECISION, SCALE

RAW_MIN = -(2**63)
RAW_MAX = 2**63 - 1
SCALER_MIN, SCALER_MAX = -128, 127  # DLMS scaler is an int8
STATUS_MAX = 2**63 - 1


@dataclass(frozen=True, slots=True)
class RawValue:
    """One value exactly as a meter sent it (see the module docstring for the fields)."""

    device: str  # device mRID
    source_id: str  # OBIS code ("1-0:1.8.0") or the protocol's native id
    time: datetime  # aware: an instant; naive: meter wall-clock time in the device's zone
    value: int
    unit: str  # CIM unit symbol, optionally SI-prefixed: "Wh", "kWh", "V", "" (none)
    scaler: int = 0
    status: int = 0  # meter status bits
    dst: bool | None = None  # the meter's DST flag, for a naive ``time``
    interval_minutes: int | None = None  # load-profile capture period; None for a register
    reading_type: str | None = None  # an explicit 18-field code (native ids need one)
    source_task: str = ""  # the head-end task that read it


@dataclass(frozen=True, slots=True)
class Channel:
    """What a (source id, interval, reading type, unit, scaler) combination normalises to."""

    reading_type: ReadingType
    code: str
    interval: timedelta | None
    exponent: int  # stored value = raw * 10**exponent
    step: int = field(init=False)  # interval length in seconds; 0 for a register
    # whether some 64-bit raw values cannot be stored exactly (see fit_problem)
    may_not_fit: bool = field(init=False)

    def __post_init__(self) -> None:
        step = int(self.interval.total_seconds()) if self.interval is not None else 0
        object.__setattr__(self, "step", step)
        object.__setattr__(self, "may_not_fit", self.exponent < -SCALE or self.exponent > 0)

    def scale(self, raw: int) -> Decimal:
        return Decimal(raw) if self.exponent == 0 else Decimal(raw).scaleb(self.exponent)

    def fit_problem(self, raw: int) -> str | None:
        """Why ``raw`` cannot be stored exactly, or None."""
        e = self.exponent
        if e < -SCALE and raw % 10 ** (-SCALE - e):
            return (
                f"{raw} x 10^{e} has more than {SCALE} decimals; the store keeps "
                f"NUMERIC({PRECISION}, {SCALE}) and does not round"
            )
        if e > 0 and abs(raw) * 10**e >= MAX_ABS:
            return f"{raw} x 10^{e} exceeds the store's {PRECISION - SCALE} integer digits"
        return None


class Refused(ValueError):
    """One raw value cannot be normalised; ingest turns it into an MdmError naming the row."""

    def __init__(self, error: ErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.error = error
        self.reason = reason


def check_raw(raw: RawValue) -> None:
    """Refuse what does not fit the raw_values columns."""
    if isinstance(raw.value, bool) or not isinstance(raw.value, int):
        raise Refused(ErrorCode.BAD_VALUE, f"raw value {raw.value!r} is not an integer")
    if not RAW_MIN <= raw.value <= RAW_MAX:
        raise Refused(ErrorCode.BAD_VALUE, f"raw value {raw.value} does not fit 64 bits")
    if (
        isinstance(raw.scaler, bool)
        or not isinstance(raw.scaler, int)
        or not (SCALER_MIN <= raw.scaler <= SCALER_MAX)
    ):
        raise Refused(ErrorCode.BAD_VALUE, f"scaler {raw.scaler!r} is not an integer -128..127")
    if (
        isinstance(raw.status, bool)
        or not isinstance(raw.status, int)
        or not (0 <= raw.status <= STATUS_MAX)
    ):
        raise Refused(ErrorCode.BAD_VALUE, f"status {raw.status!r} is not 0..2^63-1")
    for name, text, limit in (
        ("source id", raw.source_id, 64),
        ("unit", raw.unit, 16),
        ("source task", raw.source_task, 64),
    ):
        if not isinstance(text, str) or len(text) > limit:
            raise Refused(ErrorCode.BAD_VALUE, f"{name} {text!r} is not a text of <= {limit}")
    if not raw.source_id:
        raise Refused(ErrorCode.BAD_VALUE, "source id is empty")
    if not isinstance(raw.time, datetime):
        raise Refused(ErrorCode.BAD_DATETIME, f"time {raw.time!r} is not a datetime")


@functools.cache
def _units() -> dict[str, tuple[int, int]]:
    """Unit symbol (with or without an SI prefix) -> (CIM unit code, power of ten)."""
    plain: dict[str, int] = {}
    for code, symbol in unit_symbols().items():
        plain.setdefault(symbol, code)
    prefixes = {prefix: exponent for exponent, prefix in multiplier_prefixes().items() if prefix}
    prefixes["u"] = -6  # ASCII micro, common in meter firmware
    out = {symbol: (code, 0) for symbol, code in plain.items()}
    for prefix, exponent in prefixes.items():
        for symbol, code in plain.items():
            if symbol:
                out.setdefault(prefix + symbol, (code, exponent))
    return out


def parse_unit(symbol: str) -> tuple[int, int]:
    """``"kWh"`` -> (72, 3): the CIM unit code and the SI prefix's power of ten."""
    try:
        return _units()[symbol]
    except KeyError:
        raise Refused(
            ErrorCode.BAD_READING_TYPE, f"unit {symbol!r} is not a known unit symbol"
        ) from None


@functools.cache
def channel(
    source_id: str, interval_minutes: int | None, reading_type: str | None, unit: str, scaler: int
) -> Channel:
    """The ReadingType and scaling of a raw value (cached: one per distinct combination)."""
    rt = _reading_type(source_id, interval_minutes, reading_type)
    unit_code, prefix = parse_unit(unit)
    if unit_code != rt.unit:
        expected = unit_symbols().get(rt.unit, str(rt.unit)) or "none"
        raise Refused(
            ErrorCode.BAD_READING_TYPE,
            f"unit {unit or 'none'!r} cannot be converted to ReadingType {rt.code} "
            f"({rt.describe()}), whose unit is {expected}",
        )
    seconds = rt.interval_seconds
    return Channel(
        reading_type=rt,
        code=rt.code,
        interval=timedelta(seconds=seconds) if seconds else None,
        exponent=scaler + prefix - rt.multiplier,
    )


def _reading_type(source_id: str, interval_minutes: int | None, code: str | None) -> ReadingType:
    try:
        mapped = _obis_reading_type(source_id, interval_minutes)
        if code is None:
            if mapped is None:
                raise Refused(
                    ErrorCode.BAD_READING_TYPE,
                    f"source id {source_id!r} is not a mapped OBIS code and no ReadingType was "
                    "given",
                )
            return mapped
        rt = ReadingType.parse(code)
    except CimError as exc:
        raise Refused(ErrorCode.BAD_READING_TYPE, exc.reason) from None
    if mapped is not None and not _agrees(mapped, rt):
        raise Refused(
            ErrorCode.BAD_READING_TYPE,
            f"ReadingType {rt.code} ({rt.describe()}) does not match OBIS {source_id} "
            f"({mapped.code}, {mapped.describe()})",
        )
    if interval_minutes is not None and rt.interval_seconds != interval_minutes * 60:
        raise Refused(
            ErrorCode.BAD_READING_TYPE,
            f"ReadingType {rt.code} has measuring period {rt.interval_seconds}s, not the "
            f"{interval_minutes}-minute capture period given",
        )
    return rt


def _agrees(mapped: ReadingType, given: ReadingType) -> bool:
    """Whether an explicit ReadingType fits the OBIS mapping: the same apart from the
    multiplier, or, for a load-profile channel of an energy register (mapped to the interval
    delta), the captured total (bulkQuantity, accumulation 1) with the same measuring period."""
    mapped, given = mapped.replace(multiplier=0), given.replace(multiplier=0)
    if mapped == given:
        return True
    return (
        mapped.measuring_period != 0
        and mapped.measurement_kind == 12
        and mapped.accumulation == 4
        and given == mapped.replace(accumulation=1)
    )


def _obis_reading_type(source_id: str, interval_minutes: int | None) -> ReadingType | None:
    """The mapped ReadingType when ``source_id`` is an OBIS code, None for a native id.

    An OBIS code outside the mapping (or with an unusable interval) raises CimError."""
    try:
        obis = ObisCode.parse(source_id)
    except CimError:
        return None
    return obis_to_reading_type(obis, interval_minutes=interval_minutes)


@functools.cache
def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise Refused(ErrorCode.BAD_VALUE, f"time zone {name!r} is not an IANA zone") from None


class Ambiguous(Exception):
    """A wall time in the repeated hour without a DST flag; resolved by series order."""

    def __init__(self, earlier: datetime, later: datetime) -> None:
        super().__init__("ambiguous wall time")
        self.earlier = earlier
        self.later = later


def to_utc(time: datetime, dst: bool | None, zone_name: str) -> datetime:
    """UTC of a raw timestamp; raises Refused (gap, bad flag) or Ambiguous (repeated hour)."""
    if time.tzinfo is not None:
        if time.tzinfo is UTC:
            return time
        if time.utcoffset() is not None:
            return time.astimezone(UTC)
    return _wall_to_utc(time.replace(tzinfo=None), dst, zone_name)


@functools.lru_cache(maxsize=65536)
def _wall_to_utc(wall: datetime, dst: bool | None, zone_name: str) -> datetime:
    tz = zone(zone_name)
    first = wall.replace(tzinfo=tz, fold=0)
    second = wall.replace(tzinfo=tz, fold=1)
    if first.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != wall:
        raise Refused(
            ErrorCode.BAD_DATETIME,
            f"wall time {wall.isoformat()} does not exist in {zone_name} (the clocks skip it "
            "when summer time starts)",
        )
    if first.utcoffset() == second.utcoffset():
        if dst is not None and bool(first.dst()) != dst:
            raise Refused(
                ErrorCode.BAD_DATETIME,
                f"the meter's DST flag ({'summer' if dst else 'standard'} time) contradicts "
                f"{zone_name} at {wall.isoformat()}",
            )
        return first.astimezone(UTC)
    candidates = sorted((first.astimezone(UTC), second.astimezone(UTC)))
    if dst is None:
        raise Ambiguous(candidates[0], candidates[1])
    for candidate in (first, second):
        if bool(candidate.dst()) == dst:
            return candidate.astimezone(UTC)
    raise Refused(
        ErrorCode.BAD_DATETIME,
        f"the meter's DST flag does not match either occurrence of {wall.isoformat()} in "
        f"{zone_name}",
    )


def meter_time_text(time: datetime) -> str:
    """The timestamp as received, for raw_values.meter_time."""
    return time.isoformat()


def resolve_repeated_hour(
    rows: Sequence[tuple[int, datetime | Ambiguous]],
    fail: Callable[[int, str], Exception],
) -> dict[int, datetime]:
    """Resolve ambiguous wall times of one channel (one device and source id) by series order.

    ``rows``: (row index, UTC or Ambiguous) in batch order. The rule: within a channel, a
    repeated wall time without DST flag must occur exactly twice; the first occurrence is the
    earlier instant (still summer time), the second the later one. The resolved timestamps of
    the whole channel must then be non-decreasing in batch order, which is what a meter's load
    profile read in order gives; otherwise the batch order cannot be trusted and the row is
    refused. A repeated wall time that occurs once cannot be resolved and is refused.
    """
    seen: dict[datetime, list[int]] = defaultdict(list)
    for position, (_, value) in enumerate(rows):
        if isinstance(value, Ambiguous):
            seen[value.earlier].append(position)
    resolved: dict[int, datetime] = {}
    for positions in seen.values():
        index, first = rows[positions[0]]
        assert isinstance(first, Ambiguous)
        if len(positions) != 2:
            times = "once" if len(positions) == 1 else f"{len(positions)} times"
            raise fail(
                index,
                f"wall time in the repeated hour (either {_z(first.earlier)} or "
                f"{_z(first.later)}) occurs {times} without a DST flag or UTC offset; "
                "send the flag or offset, or both occurrences in chronological order",
            )
        resolved[positions[0]] = first.earlier
        resolved[positions[1]] = first.later
    previous: datetime | None = None
    for position, (index, value) in enumerate(rows):
        ts = resolved.get(position, value)
        assert isinstance(ts, datetime)
        if previous is not None and ts < previous:
            raise fail(
                index,
                "the repeated hour cannot be resolved from the series order: this channel's "
                f"rows are not in chronological order ({_z(ts)} after {_z(previous)})",
            )
        previous = ts
    return {rows[position][0]: ts for position, ts in resolved.items()}


def _z(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")
