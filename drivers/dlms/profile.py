"""Profile generic (IC 7): capture objects, selective access, and rows -> ProfileRow/MeterEvent.

A profile's columns are its capture objects. The clock column gives the time (an omitted
time -- null or empty, as compressing meters send -- is the previous one plus the capture
period); a Data object 0.x.96.10.x.255 is the status word; an event-code object 0.x.96.11.x.255
is the event code of a log; register columns use their register's scaler and unit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from drivers.base import (
    MeterEvent,
    ProfileRow,
    RegisterValue,
    new_profile_row,
    new_register_value,
)
from drivers.dlms import axdr
from drivers.dlms.cosem import ClassId, obis_text, parse_obis, unit_symbol
from drivers.dlms.values import cosem_datetime, register_value
from drivers.errors import DeviceError, MalformedFrame

SCALED_CLASSES = frozenset({ClassId.REGISTER, ClassId.EXTENDED_REGISTER, ClassId.DEMAND_REGISTER})


@dataclass(frozen=True, slots=True)
class CaptureObject:
    class_id: int
    obis: str
    attribute: int
    data_index: int = 0

    @property
    def key(self) -> str:
        """The column's identifier in results: the OBIS code for a value attribute."""
        return self.obis if self.attribute == 2 else f"{self.obis}:{self.attribute}"

    @property
    def is_clock(self) -> bool:
        return self.class_id == ClassId.CLOCK and self.attribute == 2

    @property
    def is_status(self) -> bool:
        parts = self.obis.split(".")
        return self.class_id == ClassId.DATA and parts[2:4] == ["96", "10"]

    @property
    def is_event_code(self) -> bool:
        parts = self.obis.split(".")
        return self.class_id == ClassId.DATA and parts[2:4] == ["96", "11"]

    @property
    def scaler_attribute(self) -> int | None:
        """Where this column's scaler_unit lives, if it has one."""
        if self.class_id in (ClassId.REGISTER, ClassId.EXTENDED_REGISTER) and self.attribute == 2:
            return 3
        if self.class_id == ClassId.DEMAND_REGISTER and self.attribute in (2, 3):
            return 4
        return None


def capture_objects(value: object, what: str) -> list[CaptureObject]:
    """capture_objects ::= array of structure {class_id, logical_name, attribute_index,
    data_index}."""
    if not isinstance(value, list):
        raise MalformedFrame(f"{what}: capture objects {value!r} are not an array")
    out = []
    for item in value:
        if (
            not isinstance(item, tuple)
            or len(item) != 4
            or not isinstance(item[0], int)
            or not isinstance(item[1], bytes)
            or len(item[1]) != 6
            or not isinstance(item[2], int)
            or not isinstance(item[3], int)
        ):
            raise MalformedFrame(f"{what}: capture object {item!r} is malformed")
        out.append(CaptureObject(item[0], obis_text(item[1]), item[2], item[3]))
    return out


def range_access(
    restricting: CaptureObject, start: axdr.CosemDateTime, end: axdr.CosemDateTime
) -> bytes:
    """Access selector 1 (range_descriptor) over the restricting (clock) column, all columns."""
    return bytes([1]) + axdr.structure(
        axdr.structure(
            axdr.uint16(restricting.class_id),
            axdr.octet_string(parse_obis(restricting.obis)),
            axdr.int8(restricting.attribute),
            axdr.uint16(restricting.data_index),
        ),
        axdr.date_time_octets(start),
        axdr.date_time_octets(end),
        axdr.array([]),
    )


def entry_access(first: int, last: int) -> bytes:
    """Access selector 2 (entry_descriptor): entries first..last (1-based; last 0 = to the
    end), all columns."""
    return bytes([2]) + axdr.structure(
        axdr.uint32(first), axdr.uint32(last), axdr.uint16(1), axdr.uint16(0)
    )


_CLOCK, _STATUS, _VALUE = 0, 1, 2


class RowDecoder:
    """Turns buffer entries into timestamps, status and values for one set of columns.
    This is the hot path of a load-profile read: per-column work is done once, up front."""

    def __init__(
        self,
        columns: Sequence[CaptureObject],
        scalers: Mapping[tuple[int, str], tuple[int, int]],
        capture_period: int | None,
        what: str,
    ) -> None:
        self.columns = list(columns)
        self.what = what
        self.period = timedelta(seconds=capture_period) if capture_period else None
        self.time_index = next((i for i, c in enumerate(self.columns) if c.is_clock), None)
        self.scalers = scalers
        self._previous: datetime | None = None
        self._plan: list[tuple[int, str, int, str, int]] = []
        for column in self.columns:
            kind = _CLOCK if column.is_clock else _STATUS if column.is_status else _VALUE
            scaler, unit_code = scalers.get((column.class_id, column.obis), (0, 255))
            self._plan.append((kind, column.key, scaler, unit_symbol(unit_code), unit_code))

    def _timestamp(self, value: object) -> tuple[datetime, bool | None]:
        if isinstance(value, bytes) and len(value) == 12:
            parsed = axdr.datetime_from_octets(value)
        else:
            cosem = cosem_datetime(value, self.what)
            moment = cosem.to_datetime() if cosem is not None else None
            parsed = None if moment is None or cosem is None else (moment, cosem.dst)
        if parsed is None:
            if self._previous is None or self.period is None:
                raise MalformedFrame(
                    f"{self.what}: an entry without a time and nothing to infer it from"
                )
            parsed = (self._previous + self.period, None)
        self._previous = parsed[0]
        return parsed

    def _entry(self, row: object) -> tuple[datetime, bool | None, tuple[object, ...]]:
        if not isinstance(row, tuple) or len(row) != len(self.columns):
            raise MalformedFrame(
                f"{self.what}: an entry of {len(row) if isinstance(row, tuple) else '?'} values "
                f"for {len(self.columns)} capture objects"
            )
        if self.time_index is None:
            raise DeviceError(f"{self.what}: the profile captures no clock")
        moment, dst = self._timestamp(row[self.time_index])
        return moment, dst, row

    def profile_rows(self, buffer: object) -> list[ProfileRow]:
        if not isinstance(buffer, list):
            raise MalformedFrame(f"{self.what}: buffer {buffer!r} is not an array")
        rows = []
        plan = self._plan
        for entry in buffer:
            moment, dst, row = self._entry(entry)
            status: int | None = None
            values: dict[str, RegisterValue] = {}
            for (kind, key, scaler, unit, unit_code), value in zip(plan, row, strict=True):
                if kind == _CLOCK:
                    continue
                if type(value) is int:
                    if kind == _STATUS:
                        status = value
                        continue
                    exact = Decimal(value) if scaler == 0 else Decimal(value).scaleb(scaler)
                    values[key] = new_register_value(
                        key, value, scaler, unit, exact, None, unit_code, None
                    )
                elif kind == _VALUE and isinstance(value, float):
                    values[key] = register_value(key, value, scaler, unit_code)
                # anything else (a time, a string) is not one of the row's quantities
            rows.append(new_profile_row(moment, status, values, dst))
        return rows

    def events(self, buffer: object, log: str) -> list[MeterEvent]:
        if not isinstance(buffer, list):
            raise MalformedFrame(f"{self.what}: buffer {buffer!r} is not an array")
        code_index = next((i for i, c in enumerate(self.columns) if c.is_event_code), None)
        if code_index is None:
            code_index = next(
                (
                    i
                    for i, c in enumerate(self.columns)
                    if not c.is_clock and c.class_id == ClassId.DATA
                ),
                None,
            )
        if code_index is None:
            raise DeviceError(f"{self.what}: the log captures no event code")
        events = []
        for entry in buffer:
            moment, dst, row = self._entry(entry)
            code = row[code_index]
            if not isinstance(code, int) or isinstance(code, bool):
                raise MalformedFrame(f"{self.what}: event code {code!r} is not an integer")
            details = tuple(
                (column.key, _plain(value))
                for i, (column, value) in enumerate(zip(self.columns, row, strict=True))
                if i not in (code_index, self.time_index)
            )
            events.append(MeterEvent(code, moment, log, dst, details))
        return events


def _plain(value: object) -> object:
    if isinstance(value, axdr.CosemDateTime):
        return value.to_datetime()
    return value
