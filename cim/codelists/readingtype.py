"""The ReadingType code of IEC 61968-9 Annex C: 18 dotted integers.

``macroPeriod.aggregate.measuringPeriod.accumulation.flowDirection.commodity.measurementKind.
interharmonicNumerator.interharmonicDenominator.argumentNumerator.argumentDenominator.tou.cpp.
consumptionTier.phases.multiplier.unit.currency``

Fields with an enumeration in the standard must hold a number from its table
(``data/rt_*.csv``); interharmonic, argument, tou, cpp and consumptionTier are plain
non-negative integers; multiplier is a power of ten from the multiplier table (it may be
negative); currency is 0 (none) or an ISO 4217 numeric code (1..999).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from cim.codelists import check_int, load_names, load_rows, split_int_fields
from cim.errors import CimError, ErrorCode

_ERR = ErrorCode.BAD_READING_TYPE

#: Attribute names, in code order, with the standard's field names.
FIELDS: tuple[tuple[str, str], ...] = (
    ("macro_period", "macroPeriod"),
    ("aggregate", "aggregate"),
    ("measuring_period", "measuringPeriod"),
    ("accumulation", "accumulation"),
    ("flow_direction", "flowDirection"),
    ("commodity", "commodity"),
    ("measurement_kind", "measurementKind"),
    ("interharmonic_numerator", "interharmonicNumerator"),
    ("interharmonic_denominator", "interharmonicDenominator"),
    ("argument_numerator", "argumentNumerator"),
    ("argument_denominator", "argumentDenominator"),
    ("tou", "tou"),
    ("cpp", "cpp"),
    ("consumption_tier", "consumptionTier"),
    ("phases", "phases"),
    ("multiplier", "multiplier"),
    ("unit", "unit"),
    ("currency", "currency"),
)
_ATTRS = tuple(attr for attr, _ in FIELDS)
_CIM_NAMES = tuple(cim for _, cim in FIELDS)
_MULTIPLIER_INDEX = _ATTRS.index("multiplier")

#: The data file holding each enumerated field's table.
TABLE_FILES: Mapping[str, str] = {
    "macro_period": "rt_macro_period.csv",
    "aggregate": "rt_aggregate.csv",
    "measuring_period": "rt_measuring_period.csv",
    "accumulation": "rt_accumulation.csv",
    "flow_direction": "rt_flow_direction.csv",
    "commodity": "rt_commodity.csv",
    "measurement_kind": "rt_measurement_kind.csv",
    "phases": "rt_phase.csv",
    "multiplier": "rt_multiplier.csv",
    "unit": "rt_unit.csv",
}

MAX_CURRENCY = 999

# Units that are a ratio of like quantities: with multiplier -2 they read as a percentage.
_RATIO_UNITS = frozenset({143, 144, 146, 148, 149, 150, 151, 152, 153, 168})
# measurementKind energy/power/demand get "active"/"reactive"/"apparent" from their unit.
_POWER_FAMILY = {
    72: "active",
    73: "reactive",
    71: "apparent",
    38: "active",
    63: "reactive",
    61: "apparent",
}
_QUALIFIED_KINDS = frozenset({8, 12, 37})
_DEFAULT_COMMODITIES = frozenset({0, 1})


def field_names(attr: str) -> Mapping[int, str]:
    """``code -> name`` of an enumerated field (``attr`` as in :data:`FIELDS`)."""
    if attr not in TABLE_FILES:
        raise CimError(_ERR, f"ReadingType field {attr!r} has no code table")
    return load_names(TABLE_FILES[attr])


def unit_symbols() -> Mapping[int, str]:
    return load_names("rt_unit.csv", "symbol")


def multiplier_prefixes() -> Mapping[int, str]:
    return load_names("rt_multiplier.csv", "prefix")


@functools.cache
def _period_seconds() -> Mapping[int, int | None]:
    return MappingProxyType(
        {
            int(row["code"]): int(row["seconds"]) if row["seconds"] else None
            for row in load_rows("rt_measuring_period.csv")
        }
    )


@functools.cache
def _plain_periods() -> Mapping[int, int]:
    return MappingProxyType(
        {
            int(row["seconds"]): int(row["code"])
            for row in load_rows("rt_measuring_period.csv")
            if row["kind"] == "interval"
        }
    )


def interval_seconds_of(measuring_period: int) -> int | None:
    """Seconds of a measuring period that is a fixed duration, else None."""
    return _period_seconds().get(measuring_period)


def measuring_period_for(seconds: int) -> int | None:
    """The plain (not block) measuring-period code of an interval length, if there is one."""
    return _plain_periods().get(seconds)


@dataclass(frozen=True, kw_only=True)
class ReadingType:
    """One ReadingType. Constructing it validates every field (CimError BAD_READING_TYPE)."""

    macro_period: int = 0
    aggregate: int = 0
    measuring_period: int = 0
    accumulation: int = 0
    flow_direction: int = 0
    commodity: int = 0
    measurement_kind: int = 0
    interharmonic_numerator: int = 0
    interharmonic_denominator: int = 0
    argument_numerator: int = 0
    argument_denominator: int = 0
    tou: int = 0
    cpp: int = 0
    consumption_tier: int = 0
    phases: int = 0
    multiplier: int = 0
    unit: int = 0
    currency: int = 0

    def __post_init__(self) -> None:
        for index, (attr, cim) in enumerate(FIELDS):
            label = f"field {index + 1} ({cim})"
            value = check_int(getattr(self, attr), label, _ERR, signed=attr == "multiplier")
            table = TABLE_FILES.get(attr)
            if table is not None and value not in load_names(table):
                raise CimError(_ERR, f"{label}: {value} is not a known code")
            if attr == "currency" and value > MAX_CURRENCY:
                raise CimError(
                    _ERR, f"{label}: {value} is not an ISO 4217 numeric code (0 or 1..999)"
                )

    @classmethod
    def parse(cls, code: str) -> ReadingType:
        """Strict parse of an 18-field code; raises CimError BAD_READING_TYPE."""
        values = split_int_fields(
            code,
            count=len(FIELDS),
            names=_CIM_NAMES,
            error=_ERR,
            what="ReadingType code",
            signed=frozenset({_MULTIPLIER_INDEX}),
        )
        return cls(**dict(zip(_ATTRS, values, strict=True)))

    @classmethod
    def build(cls, **fields: int) -> ReadingType:
        """A ReadingType from named fields (attribute names of :data:`FIELDS`); others are 0."""
        _check_names(fields)
        return cls(**fields)

    def replace(self, **changes: int) -> ReadingType:
        """A copy with some fields changed (validated like :meth:`build`)."""
        _check_names(changes)
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, int]:
        return {attr: getattr(self, attr) for attr in _ATTRS}

    @property
    def code(self) -> str:
        return ".".join(str(getattr(self, attr)) for attr in _ATTRS)

    def __str__(self) -> str:
        return self.code

    @property
    def unit_symbol(self) -> str:
        """The unit with its multiplier's prefix: "kWh", "V", "kvar", "%"; "" for no unit."""
        if self.multiplier == -2 and self.unit in _RATIO_UNITS:
            return "%"
        symbol = unit_symbols()[self.unit]
        if not symbol:
            return f"×10^{self.multiplier}" if self.multiplier else ""
        return multiplier_prefixes()[self.multiplier] + symbol

    @property
    def interval_seconds(self) -> int | None:
        """Length of the measuring period in seconds; None if unset or not a fixed duration."""
        return interval_seconds_of(self.measuring_period)

    def describe(self) -> str:
        """In words, e.g. "15-minute delta forward active energy, kWh".

        Secondary-metered electricity, the usual commodity, is not mentioned.
        """
        words = [
            _name("macro_period", self.macro_period),
            _name("aggregate", self.aggregate),
            _name("measuring_period", self.measuring_period),
            _name("accumulation", self.accumulation),
            _name("flow_direction", self.flow_direction),
            self._commodity_words(),
            self._kind_words(),
        ]
        head = " ".join(word for word in words if word) or "unspecified"
        parts = [head, *self._qualifiers()]
        if self.unit_symbol:
            parts.append(self.unit_symbol)
        if self.currency:
            parts.append(f"currency {self.currency:03d}")
        return ", ".join(parts)

    def _commodity_words(self) -> str:
        if self.commodity in _DEFAULT_COMMODITIES:
            return ""
        if self.commodity == 2:
            return "primary-metered"
        return field_names("commodity")[self.commodity]

    def _kind_words(self) -> str:
        kind = _name("measurement_kind", self.measurement_kind)
        family = _POWER_FAMILY.get(self.unit)
        if self.measurement_kind in _QUALIFIED_KINDS and family:
            return f"{family} {kind}"
        return kind

    def _qualifiers(self) -> list[str]:
        out = []
        num, den = self.interharmonic_numerator, self.interharmonic_denominator
        if num or den:
            out.append(f"harmonic {num}" if den in (0, 1) else f"interharmonic {num}/{den}")
        num, den = self.argument_numerator, self.argument_denominator
        if num or den:
            out.append(f"argument {num}" if den in (0, 1) else f"argument {num}/{den}")
        if self.tou:
            out.append(f"tariff {self.tou}")
        if self.cpp:
            out.append(f"critical peak {self.cpp}")
        if self.consumption_tier:
            out.append(f"tier {self.consumption_tier}")
        if self.phases:
            out.append(_name("phases", self.phases))
        return out


def _check_names(fields: Mapping[str, int]) -> None:
    unknown = sorted(set(fields) - set(_ATTRS))
    if unknown:
        raise CimError(_ERR, f"unknown ReadingType field(s): {', '.join(unknown)}")


def _name(attr: str, value: int) -> str:
    return "" if value == 0 else field_names(attr)[value]


_VENDOR_CODE = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,9}){3}", re.ASCII)


class RefKind(enum.StrEnum):
    READING_TYPE = "reading_type"
    VENDOR_CODE = "vendor_code"


@dataclass(frozen=True)
class ReadingTypeRef:
    """What a ``ReadingType ref`` turned out to be.

    ``reading_type`` is set for an 18-field code; for a 4-part vendor code it is None, ``ref``
    keeps the code as sent (to be passed through opaquely) and ``warning`` says why.
    """

    ref: str
    kind: RefKind
    reading_type: ReadingType | None = None
    warning: str | None = None


def classify_reading_type_ref(ref: str) -> ReadingTypeRef:
    """Tell an 18-field ReadingType from a 4-part vendor code; raise CimError for anything else.

    Some HES vendors put 4-part codes such as ``3.0.129.160`` where a ReadingType is expected.
    Those are kept as opaque vendor codes with a warning, never refused. Surrounding whitespace
    is ignored here (but not by :meth:`ReadingType.parse`).
    """
    if not isinstance(ref, str):
        raise CimError(_ERR, f"ReadingType ref must be a string, not {type(ref).__name__}")
    text = ref.strip()
    if text.count(".") == 3:
        if not _VENDOR_CODE.fullmatch(text):
            raise CimError(
                _ERR,
                f"ReadingType ref {text[:60]!r} has 4 parts that are not all non-negative integers",
            )
        return ReadingTypeRef(
            ref=text,
            kind=RefKind.VENDOR_CODE,
            warning=(
                f"ReadingType ref {text!r} is a 4-part vendor code, not an IEC 61968-9 "
                "ReadingType; it is passed on as an opaque code"
            ),
        )
    return ReadingTypeRef(ref=text, kind=RefKind.READING_TYPE, reading_type=ReadingType.parse(text))
