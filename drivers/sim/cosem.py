"""COSEM interface classes served by the simulator (IEC 62056-6-2 / Blue Book): Data (1),
Register (3), Profile generic (7), Clock (8), Association LN (15), Image transfer (18),
Security setup (64) and Disconnect control (70).

Objects are views: their state lives in the :class:`~drivers.sim.meter.Meter` they are
built for. ``get``/``set``/``act`` return A-XDR values and result codes; they never raise
for bad client input.
"""

from __future__ import annotations

import struct
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, ClassVar

from drivers.sim import axdr
from drivers.sim.axdr import AxdrError, BitString, CosemDateTime, Data, Encoded, Tag
from drivers.sim.xdlms import AccessSelection, DataAccessResult

if TYPE_CHECKING:
    from drivers.sim.meter import Meter
    from drivers.sim.server import Association


class Level(IntEnum):
    """What a client may do; each client SAP of a meter has one."""

    PUBLIC = 0
    READER = 1
    MANAGEMENT = 2


class AccessMode(IntEnum):
    NO_ACCESS = 0
    READ_ONLY = 1
    WRITE_ONLY = 2
    READ_AND_WRITE = 3


Value = Data | Encoded
GetOutcome = Value | DataAccessResult
ActOutcome = tuple[DataAccessResult, Data | None]


@dataclass(frozen=True, slots=True)
class AttrDef:
    id: int
    read: Level | None = Level.PUBLIC  # lowest level that may read; None: nobody
    write: Level | None = None
    selectors: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class MethodDef:
    id: int
    level: Level | None = Level.MANAGEMENT


@dataclass(slots=True)
class Ctx:
    meter: Meter
    association: Association
    level: Level


def obis(text: str) -> bytes:
    """'1.0.1.8.0.255' (or five groups, F = 255) as the 6-octet logical name."""
    parts = [int(p) for p in text.replace(":", ".").replace("-", ".").replace("*", ".").split(".")]
    if len(parts) == 5:
        parts.append(255)
    if len(parts) != 6 or not all(0 <= p <= 255 for p in parts):
        raise ValueError(f"bad OBIS code {text!r}")
    return bytes(parts)


def obis_text(ln: bytes) -> str:
    return ".".join(str(b) for b in ln)


def capture_object(class_id: int, ln: bytes, attribute: int = 2, data_index: int = 0) -> Data:
    return axdr.structure(
        axdr.long_unsigned(class_id),
        axdr.octet_string(ln),
        axdr.integer(attribute),
        axdr.long_unsigned(data_index),
    )


class CosemObject:
    class_id: ClassVar[int]
    version: ClassVar[int] = 0
    attributes: ClassVar[tuple[AttrDef, ...]] = ()
    methods: ClassVar[tuple[MethodDef, ...]] = ()

    def __init__(self, ln: bytes, public: bool = False) -> None:
        if len(ln) != 6:
            raise ValueError("a logical name is 6 octets")
        self.ln = ln
        self.public = public  # listed for (and readable by) the public client

    # attribute 1 is always the logical name, readable by anyone who sees the object.
    def attr_def(self, attr: int) -> AttrDef | None:
        if attr == 1:
            return AttrDef(1)
        for a in self.attributes:
            if a.id == attr:
                return a
        return None

    def method_def(self, method: int) -> MethodDef | None:
        for m in self.methods:
            if m.id == method:
                return m
        return None

    def visible(self, level: Level) -> bool:
        return self.public or level >= Level.READER

    def access_mode(self, a: AttrDef, level: Level) -> AccessMode:
        can_read = a.read is not None and level >= a.read and self.visible(level)
        can_write = a.write is not None and level >= a.write
        return AccessMode(int(can_read) | (int(can_write) << 1))

    def access_rights(self, level: Level) -> Data:
        attrs = [AttrDef(1), *self.attributes]
        attr_items = [
            axdr.structure(
                axdr.integer(a.id),
                axdr.enum(self.access_mode(a, level)),
                axdr.array([axdr.integer(s) for s in a.selectors]) if a.selectors else axdr.NULL,
            )
            for a in attrs
        ]
        method_items = [
            axdr.structure(
                axdr.integer(m.id), axdr.enum(int(m.level is not None and level >= m.level))
            )
            for m in self.methods
        ]
        return axdr.structure(axdr.array(attr_items), axdr.array(method_items))

    # The three services; subclasses override the _-prefixed hooks.
    def get(self, attr: int, ctx: Ctx, access: AccessSelection | None) -> GetOutcome:
        if attr == 1:
            return axdr.octet_string(self.ln) if access is None else DataAccessResult.OTHER_REASON
        return self._get(attr, ctx, access)

    def set(self, attr: int, value: Data, ctx: Ctx) -> DataAccessResult:
        return self._set(attr, value, ctx)

    def act(self, method: int, params: Data | None, ctx: Ctx) -> ActOutcome:
        return self._act(method, params, ctx)

    def _get(self, attr: int, ctx: Ctx, access: AccessSelection | None) -> GetOutcome:
        return DataAccessResult.OBJECT_UNAVAILABLE

    def _set(self, attr: int, value: Data, ctx: Ctx) -> DataAccessResult:
        return DataAccessResult.READ_WRITE_DENIED

    def _act(self, method: int, params: Data | None, ctx: Ctx) -> ActOutcome:
        return DataAccessResult.READ_WRITE_DENIED, None


class DataObject(CosemObject):
    """Class 1: one value, computed on each read."""

    class_id = 1
    attributes = (AttrDef(2),)

    def __init__(self, ln: bytes, value: Callable[[Meter], Data], public: bool = False) -> None:
        super().__init__(ln, public)
        self._value = value

    def _get(self, attr: int, ctx: Ctx, access: AccessSelection | None) -> GetOutcome:
        if attr != 2:
            return DataAccessResult.OBJECT_UNAVAILABLE
        if access is not None:
            return DataAccessResult.OTHER_REASON
        return self._value(ctx.meter)


class Unit(IntEnum):
    """Blue Book unit codes used here."""

    WATT = 27
    VOLT_AMPERE = 28
    VAR = 29
    WATT_HOUR = 30
    VAR_HOUR = 32
    AMPERE = 33
    VOLT = 35
    HERTZ = 44
    NONE = 255


class Register(CosemObject):
    """Class 3: an integer value with a fixed A-XDR type, scaler and unit."""

    class_id = 3
    attributes = (AttrDef(2), AttrDef(3))
    methods = (MethodDef(1, None),)  # reset: not allowed on any register served

    def __init__(
        self, ln: bytes, value: Callable[[Meter], int], tag: Tag, scaler: int, unit: Unit
    ) -> None:
        super().__init__(ln)
        self._value = value
        self.tag = tag
        self.scaler = scaler
        self.unit = unit
        self._scaler_unit = axdr.structure(axdr.integer(scaler), axdr.enum(unit))

    def raw(self, meter: Meter) -> int:
        return self._value(meter)

    def _get(self, attr: int, ctx: Ctx, access: AccessSelection | None) -> GetOutcome:
        if attr not in (2, 3):
            return DataAccessResult.OBJECT_UNAVAILABLE
        if access is not None:
            return DataAccessResult.OTHER_REASON
        if attr == 3:
            return self._scaler_unit
        return Data(self.tag, self._value(ctx.meter))


class Clock(CosemObject):
    """Class 8 over the meter's :class:`~drivers.sim.meterclock.MeterClock`."""

    class_id = 8
    attributes = (
        AttrDef(2, write=Level.MANAGEMENT),
        AttrDef(3, write=Level.MANAGEMENT),
        AttrDef(4),
        AttrDef(5, write=Level.MANAGEMENT),
        AttrDef(6, write=Level.MANAGEMENT),
        AttrDef(7, write=Level.MANAGEMENT),
        AttrDef(8, write=Level.MANAGEMENT),
        AttrDef(9),
    )
    methods = tuple(MethodDef(i) for i in range(1, 7))

    def _get(self, attr: int, ctx: Ctx, access: AccessSelection | None) -> GetOutcome:
        if access is not None:
            return DataAccessResult.OTHER_REASON
        c = ctx.meter.clock
        if attr == 2:
            return axdr.octet_string(c.cosem_bytes(c.now(), c.status))
        if attr == 3:
            return axdr.long(-c.standard_offset)
        if attr == 4:
            _, dst = c.utc_offset(c.now())
            return axdr.unsigned(c.status | (axdr.STATUS_DST_ACTIVE if dst else 0))
        if attr in (5, 6):
            rule = c.dst_begin if attr == 5 else c.dst_end
            if rule is None:
                return axdr.octet_string(b"\xff" * 9 + b"\x80\x00\xff")
            return axdr.octet_string(rule.to_cosem().to_bytes())
        if attr == 7:
            return axdr.integer(c.dst_deviation)
        if attr == 8:
            return axdr.boolean(c.dst_enabled)
        if attr == 9:
            return axdr.enum(1)  # internal crystal
        return DataAccessResult.OBJECT_UNAVAILABLE

    def _set(self, attr: int, value: Data, ctx: Ctx) -> DataAccessResult:
        from drivers.sim.meterclock import DstRule

        meter = ctx.meter
        c = meter.clock
        try:
            if attr == 2:
                if value.tag not in (Tag.OCTET_STRING, Tag.DATE_TIME) or len(value.value) != 12:
                    return DataAccessResult.TYPE_UNMATCHED
                meter.set_time(c.to_utc(CosemDateTime.from_bytes(value.value)))
            elif attr == 3:
                if value.tag != Tag.LONG or not -840 <= value.value <= 840:
                    return DataAccessResult.TYPE_UNMATCHED
                c.standard_offset = -value.value
            elif attr in (5, 6):
                if value.tag != Tag.OCTET_STRING or len(value.value) != 12:
                    return DataAccessResult.TYPE_UNMATCHED
                rule = DstRule.from_cosem(CosemDateTime.from_bytes(value.value))
                if attr == 5:
                    c.dst_begin = rule
                else:
                    c.dst_end = rule
            elif attr == 7:
                if value.tag != Tag.INTEGER or not -120 <= value.value <= 120:
                    return DataAccessResult.TYPE_UNMATCHED
                c.dst_deviation = value.value
            elif attr == 8:
                if value.tag != Tag.BOOLEAN:
                    return DataAccessResult.TYPE_UNMATCHED
                c.dst_enabled = value.value
            else:
                return DataAccessResult.READ_WRITE_DENIED
        except (AxdrError, ValueError):
            return DataAccessResult.TYPE_UNMATCHED
        c.rules_changed()
        return DataAccessResult.SUCCESS

    def _act(self, method: int, params: Data | None, ctx: Ctx) -> ActOutcome:
        meter = ctx.meter
        now = meter.clock.now()
        if method in (1, 2, 3):
            step = 60 if method == 3 else 900
            meter.set_time(round(now / step) * step)
        elif method == 4:
            if meter.preset_time is None:
                return DataAccessResult.TEMPORARY_FAILURE, None
            preset, start, end = meter.preset_time
            if not start <= now <= end:
                return DataAccessResult.TEMPORARY_FAILURE, None
            meter.set_time(preset)
        elif method == 5:
            try:
                items = params.value if params is not None and params.tag == Tag.STRUCTURE else None
                if not items or len(items) != 3:
                    return DataAccessResult.TYPE_UNMATCHED, None
                meter.preset_time = tuple(
                    meter.clock.to_utc(CosemDateTime.from_bytes(i.value)) for i in items
                )
            except (AxdrError, TypeError, ValueError):
                return DataAccessResult.TYPE_UNMATCHED, None
        elif method == 6:
            if params is None or params.tag != Tag.LONG or not -900 <= params.value <= 900:
                return DataAccessResult.TYPE_UNMATCHED, None
            meter.set_time(now + params.value)
        else:
            return DataAccessResult.OBJECT_UNAVAILABLE, None
        return DataAccessResult.SUCCESS, None


class ProfileSource(ABC):
    """The rows behind a profile; rows are tuples of A-XDR-encoded column values."""

    capture_objects: tuple[Data, ...] = ()
    capture_period: int = 0
    capacity: int = 0

    @abstractmethod
    def count(self, meter: Meter) -> int:
        """Entries in use."""

    @abstractmethod
    def rows_by_entry(self, meter: Meter, first: int, last: int) -> Sequence[tuple[bytes, ...]]:
        """1-based, inclusive; ``last`` already clipped to ``count``."""

    @abstractmethod
    def rows_by_time(self, meter: Meter, start: float, end: float) -> Sequence[tuple[bytes, ...]]:
        """Rows whose capture time t has start <= t <= end (UTC seconds)."""


def _rows(rows: Sequence[tuple[bytes, ...]], columns: slice | list[int] | None) -> Encoded:
    out = bytearray(b"\x01")
    out += axdr.encode_length(len(rows))
    if columns is None:
        for row in rows:
            out += b"\x02" + axdr.encode_length(len(row))
            for col in row:
                out += col
    else:
        for row in rows:
            picked = row[columns] if isinstance(columns, slice) else [row[i] for i in columns]
            out += b"\x02" + axdr.encode_length(len(picked))
            for col in picked:
                out += col
    return Encoded(bytes(out))


class ProfileGeneric(CosemObject):
    """Class 7 with selective access by range (selector 1) and by entry (selector 2)."""

    class_id = 7
    version = 1
    attributes = (
        AttrDef(2, selectors=(1, 2)),
        AttrDef(3),
        AttrDef(4),
        AttrDef(5),
        AttrDef(6),
        AttrDef(7),
        AttrDef(8),
    )
    methods = (MethodDef(1, None), MethodDef(2, None))

    def __init__(self, ln: bytes, source: ProfileSource) -> None:
        super().__init__(ln)
        self.source = source

    def _get(self, attr: int, ctx: Ctx, access: AccessSelection | None) -> GetOutcome:
        src = self.source
        meter = ctx.meter
        if attr != 2 and access is not None:
            return DataAccessResult.OTHER_REASON
        if attr == 2:
            if access is None:
                return _rows(src.rows_by_entry(meter, 1, src.count(meter)), None)
            if access.selector == 1:
                return self._by_range(meter, access.parameters)
            if access.selector == 2:
                return self._by_entry(meter, access.parameters)
            return DataAccessResult.OTHER_REASON
        if attr == 3:
            return axdr.array(list(src.capture_objects))
        if attr == 4:
            return axdr.double_long_unsigned(src.capture_period)
        if attr == 5:
            return axdr.enum(1)  # fifo
        if attr == 6:
            return src.capture_objects[0] if src.capture_objects else axdr.NULL
        if attr == 7:
            return axdr.double_long_unsigned(src.count(meter))
        if attr == 8:
            return axdr.double_long_unsigned(src.capacity)
        return DataAccessResult.OBJECT_UNAVAILABLE

    def _by_range(self, meter: Meter, params: Data) -> GetOutcome:
        items = params.value if params.tag == Tag.STRUCTURE else None
        if not items or len(items) != 4:
            return DataAccessResult.TYPE_UNMATCHED
        restricting, low, high, selected = items
        if restricting.tag != Tag.STRUCTURE or len(restricting.value) != 4:
            return DataAccessResult.TYPE_UNMATCHED
        # Only the clock column orders the buffer; it is the restricting object.
        clock_def = self.source.capture_objects[0].value
        if [v.value for v in restricting.value[:3]] != [v.value for v in clock_def[:3]]:
            return DataAccessResult.OTHER_REASON
        try:
            start = self._instant(meter, low)
            end = self._instant(meter, high)
        except (AxdrError, ValueError, OverflowError):
            return DataAccessResult.TYPE_UNMATCHED
        columns = self._selected(selected)
        if isinstance(columns, DataAccessResult):
            return columns
        return _rows(self.source.rows_by_time(meter, start, end), columns)

    @staticmethod
    def _instant(meter: Meter, v: Data) -> float:
        if v.tag not in (Tag.OCTET_STRING, Tag.DATE_TIME) or len(v.value) != 12:
            raise AxdrError("range bound is not a date-time")
        return meter.clock.to_utc(CosemDateTime.from_bytes(v.value))

    def _selected(self, selected: Data) -> list[int] | DataAccessResult | None:
        if selected.tag == Tag.NULL_DATA or (selected.tag == Tag.ARRAY and not selected.value):
            return None
        if selected.tag != Tag.ARRAY:
            return DataAccessResult.TYPE_UNMATCHED
        keys = [tuple(c.value[i].value for i in range(3)) for c in self.source.capture_objects]
        out = []
        for item in selected.value:
            if item.tag != Tag.STRUCTURE or len(item.value) != 4:
                return DataAccessResult.TYPE_UNMATCHED
            key = tuple(item.value[i].value for i in range(3))
            if key not in keys:
                return DataAccessResult.OTHER_REASON
            out.append(keys.index(key))
        return out

    def _by_entry(self, meter: Meter, params: Data) -> GetOutcome:
        items = params.value if params.tag == Tag.STRUCTURE else None
        if (
            not items
            or len(items) != 4
            or any(not isinstance(i.value, int) or isinstance(i.value, bool) for i in items)
        ):
            return DataAccessResult.TYPE_UNMATCHED
        first, last, first_col, last_col = (i.value for i in items)
        count = self.source.count(meter)
        columns = len(self.source.capture_objects)
        last = count if last == 0 else min(last, count)
        last_col = columns if last_col == 0 else last_col
        if first < 1 or first_col < 1 or last_col > columns or first_col > last_col:
            return DataAccessResult.OTHER_REASON
        rows = self.source.rows_by_entry(meter, first, last) if first <= last else []
        cols = None if (first_col, last_col) == (1, columns) else slice(first_col - 1, last_col)
        return _rows(rows, cols)


class AssociationLN(CosemObject):
    """Class 15 (version 1): the current association."""

    class_id = 15
    version = 1
    attributes = (
        AttrDef(2),
        AttrDef(3),
        AttrDef(4),
        AttrDef(5),
        AttrDef(6),
        AttrDef(7, read=None),
        AttrDef(8),
        AttrDef(9),
    )
    methods = (MethodDef(1, Level.PUBLIC),)

    def _get(self, attr: int, ctx: Ctx, access: AccessSelection | None) -> GetOutcome:
        if access is not None:
            return DataAccessResult.OTHER_REASON
        a = ctx.association
        if attr == 2:
            return ctx.meter.object_list(ctx.level)
        if attr == 3:
            return axdr.structure(axdr.integer(a.client_sap), axdr.long_unsigned(a.server_sap))
        if attr == 4:
            return axdr.octet_string(a.context_oid)
        if attr == 5:
            return axdr.structure(
                axdr.bit_string(BitString(24, int(a.conformance).to_bytes(3, "big"))),
                axdr.long_unsigned(ctx.meter.spec.max_pdu_size),
                axdr.long_unsigned(a.client_max_pdu),
                axdr.unsigned(6),
                axdr.integer(0),
                axdr.octet_string(b""),
            )
        if attr == 6:
            return axdr.octet_string(a.mechanism_oid)
        if attr == 8:
            return axdr.enum(2 if a.associated else 1)
        if attr == 9:
            return axdr.octet_string(ctx.meter.security_setup_ln)
        return DataAccessResult.READ_WRITE_DENIED

    def _act(self, method: int, params: Data | None, ctx: Ctx) -> ActOutcome:
        if method != 1:
            return DataAccessResult.READ_WRITE_DENIED, None
        if params is None or params.tag != Tag.OCTET_STRING:
            return DataAccessResult.TYPE_UNMATCHED, None
        return ctx.association.reply_to_hls(params.value)


class SecuritySetup(CosemObject):
    """Class 64 (version 0), read-only: policy, suite and the two system titles."""

    class_id = 64
    attributes = (AttrDef(2), AttrDef(3), AttrDef(4), AttrDef(5))
    methods = (MethodDef(1, None), MethodDef(2, None))

    def _get(self, attr: int, ctx: Ctx, access: AccessSelection | None) -> GetOutcome:
        if access is not None:
            return DataAccessResult.OTHER_REASON
        a = ctx.association
        if attr == 2:
            return axdr.enum(3 if a.ciphered else 0)  # 3: authenticated and encrypted
        if attr == 3:
            return axdr.enum(0)
        if attr == 4:
            return axdr.octet_string(a.client_system_title or b"")
        if attr == 5:
            return axdr.octet_string(ctx.meter.spec.system_title)
        return DataAccessResult.OBJECT_UNAVAILABLE


class DisconnectControl(CosemObject):
    """Class 70 over the meter's disconnector state machine."""

    class_id = 70
    attributes = (AttrDef(2), AttrDef(3), AttrDef(4, write=Level.MANAGEMENT))
    methods = (MethodDef(1), MethodDef(2))

    def _get(self, attr: int, ctx: Ctx, access: AccessSelection | None) -> GetOutcome:
        if access is not None:
            return DataAccessResult.OTHER_REASON
        d = ctx.meter.disconnector
        if attr == 2:
            return axdr.boolean(d.output_state)
        if attr == 3:
            return axdr.enum(d.state)
        if attr == 4:
            return axdr.enum(d.mode)
        return DataAccessResult.OBJECT_UNAVAILABLE

    def _set(self, attr: int, value: Data, ctx: Ctx) -> DataAccessResult:
        if attr != 4:
            return DataAccessResult.READ_WRITE_DENIED
        if value.tag != Tag.ENUM or not 0 <= value.value <= 6:
            return DataAccessResult.TYPE_UNMATCHED
        ctx.meter.disconnector.mode = value.value
        return DataAccessResult.SUCCESS

    def _act(self, method: int, params: Data | None, ctx: Ctx) -> ActOutcome:
        if params is not None and params.tag != Tag.INTEGER:
            return DataAccessResult.TYPE_UNMATCHED, None
        if method == 1:
            ok = ctx.meter.remote_disconnect()
        elif method == 2:
            ok = ctx.meter.remote_reconnect()
        else:
            return DataAccessResult.OBJECT_UNAVAILABLE, None
        return (DataAccessResult.SUCCESS if ok else DataAccessResult.TEMPORARY_FAILURE), None


class ImageTransfer(CosemObject):
    """Class 18 over the meter's image transfer state machine."""

    class_id = 18
    attributes = (
        AttrDef(2),
        AttrDef(3),
        AttrDef(4),
        AttrDef(5, write=Level.MANAGEMENT),
        AttrDef(6),
        AttrDef(7),
    )
    methods = tuple(MethodDef(i) for i in range(1, 5))

    def _get(self, attr: int, ctx: Ctx, access: AccessSelection | None) -> GetOutcome:
        if access is not None:
            return DataAccessResult.OTHER_REASON
        it = ctx.meter.image
        if attr == 2:
            return axdr.double_long_unsigned(it.block_size)
        if attr == 3:
            return axdr.bit_string(it.blocks_status())
        if attr == 4:
            return axdr.double_long_unsigned(it.first_not_transferred())
        if attr == 5:
            return axdr.boolean(it.enabled)
        if attr == 6:
            return axdr.enum(it.status)
        if attr == 7:
            return axdr.array(
                [
                    axdr.structure(
                        axdr.double_long_unsigned(size),
                        axdr.octet_string(ident),
                        axdr.octet_string(sig),
                    )
                    for size, ident, sig in it.to_activate_info()
                ]
            )
        return DataAccessResult.OBJECT_UNAVAILABLE

    def _set(self, attr: int, value: Data, ctx: Ctx) -> DataAccessResult:
        if attr != 5:
            return DataAccessResult.READ_WRITE_DENIED
        if value.tag != Tag.BOOLEAN:
            return DataAccessResult.TYPE_UNMATCHED
        ctx.meter.image.enabled = value.value
        return DataAccessResult.SUCCESS

    def _act(self, method: int, params: Data | None, ctx: Ctx) -> ActOutcome:
        it = ctx.meter.image
        if method in (1, 2):
            fields = params.value if params is not None and params.tag == Tag.STRUCTURE else None
            if not fields or len(fields) != 2:
                return DataAccessResult.TYPE_UNMATCHED, None
            if method == 1:
                ident, size = fields
                if ident.tag != Tag.OCTET_STRING or size.tag != Tag.DOUBLE_LONG_UNSIGNED:
                    return DataAccessResult.TYPE_UNMATCHED, None
                return it.initiate(ident.value, size.value, ctx.meter), None
            number, value = fields
            if number.tag != Tag.DOUBLE_LONG_UNSIGNED or value.tag != Tag.OCTET_STRING:
                return DataAccessResult.TYPE_UNMATCHED, None
            return it.block(number.value, value.value, ctx.meter), None
        if method == 3:
            return it.verify(ctx.meter), None
        if method == 4:
            return it.activate(ctx.meter), None
        return DataAccessResult.OBJECT_UNAVAILABLE, None


def datetime_column(raw12: bytes) -> bytes:
    """A capture-time column value: octet-string of 12."""
    return b"\x09\x0c" + raw12


def u8_column(v: int) -> bytes:
    return struct.pack(">BB", Tag.UNSIGNED, v)
