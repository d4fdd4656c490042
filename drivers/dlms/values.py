"""Decoded COSEM values -> the neutral result types, exactly (no float on the way)."""

from __future__ import annotations

import math
from datetime import datetime
from decimal import Decimal

from drivers.base import ClockReading, RegisterValue
from drivers.dlms import axdr
from drivers.dlms.cosem import unit_symbol
from drivers.errors import DeviceError, MalformedFrame


def scaler_unit(value: object, what: str) -> tuple[int, int]:
    """scaler_unit ::= structure {scaler integer, unit enum}."""
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        and -128 <= value[0] <= 127
        and 0 <= value[1] <= 255
    ):
        return value[0], value[1]
    raise MalformedFrame(f"{what}: scaler_unit {value!r} is not {{integer, enum}}")


def exact_number(value: object, scaler: int, what: str) -> tuple[int, int]:
    """(raw integer, scaler) meaning ``value * 10**scaler`` exactly. A float32/64 register is
    taken at its shortest decimal form and folded into the scaler (230.1 -> 2301, -1)."""
    if isinstance(value, bool) or value is None:
        raise DeviceError(f"{what}: value {value!r} is not a number", result=12)
    if isinstance(value, int):
        return value, scaler
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DeviceError(f"{what}: value {value!r} is not a finite number", result=12)
        text = value.decimal_text if isinstance(value, axdr.Float32) else repr(value)
        decimal = Decimal(text)
        exponent = int(decimal.as_tuple().exponent)
        return int(decimal.scaleb(-exponent)), scaler + exponent
    raise DeviceError(f"{what}: value of type {type(value).__name__} is not a number", result=12)


def register_value(
    obis: str,
    value: object,
    scaler: int,
    unit_code: int,
    *,
    status: int | None = None,
    capture_time: datetime | None = None,
) -> RegisterValue:
    raw, exponent = exact_number(value, scaler, obis)
    return RegisterValue.exact(
        obis,
        raw,
        exponent,
        unit_symbol(unit_code),
        status=status,
        unit_code=unit_code,
        capture_time=capture_time,
    )


def cosem_datetime(value: object, what: str) -> axdr.CosemDateTime | None:
    """A date-time given as octet-string(12) or date-time; None for null/empty (a profile's
    omitted timestamp)."""
    if isinstance(value, axdr.CosemDateTime):
        return value
    if value is None or value == b"":
        return None
    if isinstance(value, bytes) and len(value) == 12:
        return axdr.CosemDateTime.from_bytes(value)
    raise MalformedFrame(f"{what}: {value!r} is not a date-time")


def clock_reading(value: object) -> ClockReading:
    parsed = cosem_datetime(value, "clock")
    time = parsed.to_datetime() if parsed else None
    if parsed is None or time is None:
        raise DeviceError(f"clock: the meter's time is not specified ({value!r})")
    return ClockReading(
        time=time,
        deviation=parsed.deviation,
        dst=parsed.dst,
        status=parsed.status,
        local_time=parsed.local_time(),
    )


def text(value: object, what: str) -> str:
    """A name or version given as octet-string or visible-string."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("latin-1").rstrip("\x00")
    raise MalformedFrame(f"{what}: {value!r} is not a string")
