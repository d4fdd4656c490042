"""OBIS codes (IEC 62056-61) and their mapping to and from IEC 61968-9 ReadingTypes.

An OBIS code is ``A-B:C.D.E*F`` (also written ``A.B.C.D.E.F``): A medium (1 = electricity),
B channel, C quantity, D processing, E tariff or detail, F historical value (255 = current).

The mapping is rule-based: value group C sets the flow direction, unit and phases
(``data/obis_quantity.csv``), D sets aggregate, accumulation and measurement kind
(``data/obis_processing.csv``), E sets the ReadingType ``tou`` where D is a tariffed register.
Only A = 1, B = 0 and F = 255 are mapped. A code outside the tables raises
``CimError(BAD_READING_TYPE)``; there is no ``None``-returning variant, so a reason always
reaches the caller.

Load profiles: the OBIS code of a channel captured in a profile is the register's own
(``1-0:1.8.0``), so the profile's capture period is an explicit argument, ``interval_minutes``.
It sets the ReadingType measuringPeriod. An energy register (D = 8) is cumulative: each capture
is the register's total at the capture time, so a profile channel of it has two ReadingTypes
with that measuring period: the interval's delta (accumulation 4, the default: what a head-end
reports per interval, computed as cumulative(end) - cumulative(start) by
:mod:`headend.results`) and, with ``cumulative=True``, the captured total itself
(accumulation 1, bulkQuantity). :func:`is_cumulative_register` says which channels are such.

Units and DLMS scaling: a DLMS register carries ``scaler_unit`` = (scaler, unit enum); the
value it means is ``raw * 10**scaler`` in that unit (DLMS unit 30 = Wh, 32 = varh, 31 = VAh,
27 = W, 29 = var, 28 = VA, 35 = V, 33 = A, 44 = Hz). The ReadingType's multiplier is the prefix
of the number OpenHES reports, not the device's scaler: with the default ``kilo=True`` energy
and power are reported in kWh/kvarh/kVAh and kW/kvar/kVA (multiplier 3), so a reported value is
``raw * 10**(scaler - 3)``. This module does no DLMS; it only fixes the ReadingType side.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from cim.codelists import load_rows
from cim.codelists.readingtype import ReadingType, interval_seconds_of, measuring_period_for
from cim.errors import CimError, ErrorCode

_ERR = ErrorCode.BAD_READING_TYPE

_IEC_FORM = re.compile(
    r"(\d{1,3})-(\d{1,3}):(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?:[*.&](\d{1,3}))?", re.ASCII
)
_DOTTED_FORM = re.compile(
    r"(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?:\.(\d{1,3}))?", re.ASCII
)

ELECTRICITY = 1
CURRENT_VALUE = 255  # F = 255: the current value, not a historical (billing-period) one
MAX_TARIFF = 63
_KILO_UNITS = frozenset({71, 72, 73, 38, 61, 63})  # VAh, Wh, varh, W, VA, var
_LINES = (1, 2, 3)


@dataclass(frozen=True, order=True)
class ObisCode:
    """One OBIS code; each value group is 0..255."""

    a: int
    b: int
    c: int
    d: int
    e: int
    f: int = CURRENT_VALUE

    def __post_init__(self) -> None:
        for group in "abcdef":
            value = getattr(self, group)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
                raise CimError(_ERR, f"OBIS value group {group.upper()}: {value!r} is not 0..255")

    @classmethod
    def parse(cls, text: str) -> ObisCode:
        """``A-B:C.D.E``, ``A-B:C.D.E*F``, ``A.B.C.D.E`` or ``A.B.C.D.E.F``; F defaults to 255."""
        if not isinstance(text, str):
            raise CimError(_ERR, f"OBIS code must be a string, not {type(text).__name__}")
        match = _IEC_FORM.fullmatch(text) or _DOTTED_FORM.fullmatch(text)
        if match is None:
            shown = repr(text) if len(text) <= 60 else repr(text[:60]) + "..."
            raise CimError(_ERR, f"{shown} is not an OBIS code (A-B:C.D.E*F or A.B.C.D.E.F)")
        groups = [int(g) for g in match.groups(default=str(CURRENT_VALUE))]
        return cls(*groups)

    @property
    def iec(self) -> str:
        """``1-0:1.8.0*255``."""
        return f"{self.a}-{self.b}:{self.c}.{self.d}.{self.e}*{self.f}"

    @property
    def short(self) -> str:
        """``1-0:1.8.0`` (F left out when it is 255)."""
        base = f"{self.a}-{self.b}:{self.c}.{self.d}.{self.e}"
        return base if self.f == CURRENT_VALUE else f"{base}*{self.f}"

    @property
    def dotted(self) -> str:
        """``1.0.1.8.0.255``."""
        return f"{self.a}.{self.b}.{self.c}.{self.d}.{self.e}.{self.f}"

    def __str__(self) -> str:
        return self.short


@dataclass(frozen=True)
class ObisChannel:
    """An OBIS code with the load-profile capture period it was read in (None: a register).

    ``cumulative``: a profile channel of an energy register reported as the captured totals
    (bulkQuantity) rather than as the interval deltas."""

    obis: ObisCode
    interval_minutes: int | None = None
    cumulative: bool = False


@dataclass(frozen=True)
class _Quantity:
    c: int
    name: str
    flow_direction: int
    energy_unit: int | None
    power_unit: int
    instant_kind: int
    phases: int

    @property
    def is_total_energy(self) -> bool:
        """An energy quantity over all phases; per-line ones (C > 20) map only as D = 7."""
        return self.energy_unit is not None and self.c <= 20


@dataclass(frozen=True)
class _Processing:
    d: int
    name: str
    applies_to: str
    aggregate: int
    accumulation: int
    kind: str
    macro_period: int
    tariffs: bool

    def applies(self, quantity: _Quantity) -> bool:
        return self.applies_to == "all" or quantity.is_total_energy


def _opt_int(text: str) -> int | None:
    return int(text) if text else None


@functools.cache
def _quantities() -> Mapping[int, _Quantity]:
    """C -> quantity, with the per-line C values (C + 20 * line) expanded."""
    out: dict[int, _Quantity] = {}
    for row in load_rows("obis_quantity.csv"):
        base = int(row["c"])
        phases_by_c = {base: _opt_int(row["phases_total"])}
        for line in _LINES:
            phases_by_c[base + 20 * line] = _opt_int(row[f"phases_l{line}"])
        for c, phases in phases_by_c.items():
            if phases is None:
                continue
            name = row["name"] if c == base or base > 20 else f"{row['name']} L{(c - base) // 20}"
            out[c] = _Quantity(
                c=c,
                name=name,
                flow_direction=int(row["flow_direction"]),
                energy_unit=_opt_int(row["energy_unit"]),
                power_unit=int(row["power_unit"]),
                instant_kind=int(row["instant_kind"]),
                phases=phases,
            )
    return MappingProxyType(dict(sorted(out.items())))


@functools.cache
def _processings() -> Mapping[int, _Processing]:
    return MappingProxyType(
        {
            int(row["d"]): _Processing(
                d=int(row["d"]),
                name=row["name"],
                applies_to=row["applies_to"],
                aggregate=int(row["aggregate"]),
                accumulation=int(row["accumulation"]),
                kind=row["kind"],
                macro_period=int(row["macro_period"]),
                tariffs=row["tariffs"] == "yes",
            )
            for row in load_rows("obis_processing.csv")
        }
    )


def _rule(obis: ObisCode) -> tuple[_Quantity, _Processing]:
    """The quantity and processing rows of a supported code, or CimError with the reason."""
    if obis.a != ELECTRICITY:
        raise CimError(_ERR, f"OBIS {obis}: medium A={obis.a} is not mapped (only 1, electricity)")
    if obis.b != 0:
        raise CimError(_ERR, f"OBIS {obis}: channel B={obis.b} is not mapped (only 0)")
    if obis.f != CURRENT_VALUE:
        raise CimError(
            _ERR, f"OBIS {obis}: historical value F={obis.f} is not mapped (only 255, current)"
        )
    quantity = _quantities().get(obis.c)
    if quantity is None:
        raise CimError(_ERR, f"OBIS {obis}: quantity C={obis.c} is not mapped")
    processing = _processings().get(obis.d)
    if processing is None:
        raise CimError(_ERR, f"OBIS {obis}: processing D={obis.d} is not mapped")
    if not processing.applies(quantity):
        raise CimError(
            _ERR, f"OBIS {obis}: {processing.name} (D={obis.d}) is not mapped for {quantity.name}"
        )
    max_e = MAX_TARIFF if processing.tariffs else 0
    if obis.e > max_e:
        detail = f"tariff 0..{MAX_TARIFF}" if processing.tariffs else "only 0"
        raise CimError(
            _ERR, f"OBIS {obis}: E={obis.e} is not mapped for {processing.name} ({detail})"
        )
    return quantity, processing


def _measuring_period(interval_minutes: int | None) -> int:
    if interval_minutes is None:
        return 0
    if isinstance(interval_minutes, bool) or not isinstance(interval_minutes, int):
        raise CimError(_ERR, f"interval_minutes: {interval_minutes!r} is not an integer")
    code = measuring_period_for(interval_minutes * 60) if interval_minutes > 0 else None
    if code is None:
        raise CimError(
            _ERR, f"interval_minutes: {interval_minutes} is not a ReadingType measuring period"
        )
    return code


def obis_to_reading_type(
    obis: ObisCode | str,
    *,
    interval_minutes: int | None = None,
    kilo: bool = True,
    cumulative: bool = False,
) -> ReadingType:
    """The ReadingType of an OBIS register, or of a load-profile channel of it.

    ``interval_minutes``: the profile's capture period (15 -> measuringPeriod 2, 60 -> 7);
    energy registers then become interval deltas, or with ``cumulative=True`` the captured
    totals (bulkQuantity with the measuring period; only for energy registers, D = 8).
    ``kilo``: report energy and power with multiplier 3 (kWh, kW...) instead of 0 (Wh, W...).
    Raises CimError BAD_READING_TYPE.
    """
    code = obis if isinstance(obis, ObisCode) else ObisCode.parse(obis)
    quantity, processing = _rule(code)
    measuring_period = _measuring_period(interval_minutes)
    if cumulative and processing.kind != "energy":
        raise CimError(
            _ERR, f"OBIS {code}: {processing.name} is not cumulative (only energy registers are)"
        )
    if processing.kind == "energy":
        kind, unit = 12, quantity.energy_unit or 0
    elif processing.kind == "demand":
        kind, unit = 8, quantity.power_unit
    else:
        kind, unit = quantity.instant_kind, quantity.power_unit
    accumulation = processing.accumulation
    if measuring_period and processing.kind == "energy" and not cumulative:
        accumulation = 4  # delta over the capture period
    return ReadingType(
        macro_period=processing.macro_period,
        aggregate=processing.aggregate,
        measuring_period=measuring_period,
        accumulation=accumulation,
        flow_direction=quantity.flow_direction,
        commodity=1,
        measurement_kind=kind,
        tou=code.e if processing.tariffs else 0,
        phases=quantity.phases,
        multiplier=3 if kilo and unit in _KILO_UNITS else 0,
        unit=unit,
    )


def is_cumulative_register(obis: ObisCode | str) -> bool:
    """Whether ``obis`` is a mapped energy register (D = 8): its value, in a load profile too,
    is a running total, so interval consumption is the difference of two captures. False for
    anything else, including codes (or native ids) outside the mapping."""
    try:
        code = obis if isinstance(obis, ObisCode) else ObisCode.parse(obis)
        _, processing = _rule(code)
    except CimError:
        return False
    return processing.kind == "energy" and processing.accumulation == 1


def supported_obis(max_tariff: int = MAX_TARIFF) -> Iterator[ObisCode]:
    """Every mapped OBIS code, tariffs up to ``max_tariff``, in table order."""
    for d, processing in _processings().items():
        for c, quantity in _quantities().items():
            if processing.applies(quantity):
                tariffs = range(min(max_tariff, MAX_TARIFF) + 1) if processing.tariffs else [0]
                for e in tariffs:
                    yield ObisCode(ELECTRICITY, 0, c, d, e)


@functools.cache
def _reverse_index() -> Mapping[ReadingType, ObisCode]:
    return MappingProxyType(
        {obis_to_reading_type(obis, kilo=False): obis for obis in supported_obis()}
    )


def reading_type_to_obis(reading_type: ReadingType | str) -> ObisChannel:
    """The OBIS code (and load-profile interval) of a ReadingType this module maps.

    The inverse of :func:`obis_to_reading_type`: the multiplier may be 0 or 3 for energy and
    power units. An energy ReadingType with a measuring period is a profile channel of the
    register: the interval delta (accumulation 4) or, with accumulation 1 (bulkQuantity), the
    captured totals (``cumulative=True``). Raises CimError BAD_READING_TYPE for a ReadingType
    with no OBIS equivalent.
    """
    rt = reading_type if isinstance(reading_type, ReadingType) else ReadingType.parse(reading_type)
    interval_minutes = None
    if rt.measuring_period:
        seconds = interval_seconds_of(rt.measuring_period)
        if seconds is None or measuring_period_for(seconds) != rt.measuring_period:
            raise CimError(
                _ERR,
                f"ReadingType {rt.code}: measuring period "
                f"{rt.measuring_period} is not a load-profile interval",
            )
        interval_minutes = seconds // 60
    base = rt.replace(measuring_period=0, multiplier=0)
    energy_channel = bool(rt.measuring_period) and base.measurement_kind == 12
    if energy_channel and base.accumulation == 4:
        base = base.replace(accumulation=1)
    cumulative = energy_channel and rt.accumulation == 1
    obis = _reverse_index().get(base)
    if obis is not None:
        kilo = rt.multiplier == 3
        again = obis_to_reading_type(
            obis, interval_minutes=interval_minutes, kilo=kilo, cumulative=cumulative
        )
        if again == rt:
            return ObisChannel(obis, interval_minutes, cumulative)
    raise CimError(
        _ERR, f"ReadingType {rt.code} ({rt.describe()}) has no OBIS equivalent in the mapping"
    )


def describe_obis(obis: ObisCode | str, interval_minutes: int | None = None) -> str:
    """E.g. "active import (+A), register (time integral 1), tariff 1"."""
    code = obis if isinstance(obis, ObisCode) else ObisCode.parse(obis)
    quantity, processing = _rule(code)
    words = [quantity.name, processing.name]
    if processing.tariffs:
        words.append(f"tariff {code.e}" if code.e else "total")
    if interval_minutes is not None:
        words.append(f"{interval_minutes}-minute load profile")
    return ", ".join(words)


def _doc_rows() -> Iterator[ObisChannel]:
    for obis in supported_obis(max_tariff=0):
        yield ObisChannel(obis)
        if obis.d in (8, 6) and obis.c in (1, 2):
            yield ObisChannel(ObisCode(obis.a, obis.b, obis.c, obis.d, 1))
    for minutes in (15, 60):
        for cumulative in (False, True):
            for c in (1, 2, 3, 4):
                yield ObisChannel(ObisCode(ELECTRICITY, 0, c, 8, 0), minutes, cumulative)


def mapping_table_markdown() -> str:
    """The table of docs/obis-readingtype.md (total registers, tariff 1 and profile examples)."""
    lines = [
        "| OBIS | profile | ReadingType | ReadingType in words | OBIS meaning |",
        "|---|---|---|---|---|",
    ]
    for channel in _doc_rows():
        rt = obis_to_reading_type(
            channel.obis, interval_minutes=channel.interval_minutes, cumulative=channel.cumulative
        )
        profile = f"{channel.interval_minutes} min" if channel.interval_minutes else ""
        if channel.interval_minutes:
            profile += ", captured total" if channel.cumulative else ", delta"
        cells = [
            f"`{channel.obis}`",
            profile,
            f"`{rt.code}`",
            rt.describe(),
            describe_obis(channel.obis),
        ]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)
