"""The declarative meter model: what one simulated meter is (:class:`MeterSpec`), its
state (:class:`Meter`: clock, energy, disconnector, firmware image, event logs, security
counters) and the COSEM objects that expose it.

Energy is integer Wh/varh throughout. Registers and the load profile read the same
curves, so the profile's last row equals the registers at that instant, and supply
interruptions (outages, an open disconnector) stop both.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import math
import struct
import time as _time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache

from drivers.sim import axdr
from drivers.sim.acse import Mechanism
from drivers.sim.axdr import Data, Tag
from drivers.sim.cosem import (
    AssociationLN,
    Clock,
    CosemObject,
    DataObject,
    DisconnectControl,
    ImageTransfer,
    Level,
    ProfileGeneric,
    ProfileSource,
    Register,
    SecuritySetup,
    Unit,
    capture_object,
    datetime_column,
    obis,
    u8_column,
)
from drivers.sim.faults import FaultInjector, FaultSpec
from drivers.sim.loadshape import DAY_SECONDS, SLOT_SECONDS, LoadShape, mix
from drivers.sim.meterclock import MeterClock
from drivers.sim.xdlms import DataAccessResult

# AMR profile status bits (IDIS): power down, clock adjusted, daylight saving.
STATUS_POWER_DOWN = 0x80
STATUS_CLOCK_ADJUSTED = 0x20
STATUS_DST = 0x08


class EventCode:
    """IDIS-style event codes written to the logs."""

    POWER_DOWN = 1
    POWER_UP = 2
    CLOCK_ADJUSTED_OLD = 4
    CLOCK_ADJUSTED_NEW = 5
    FIRMWARE_READY = 17
    FIRMWARE_ACTIVATED = 18
    TERMINAL_COVER_REMOVED = 40
    TERMINAL_COVER_CLOSED = 41
    AUTHENTICATION_FAILURE = 46
    READY_FOR_RECONNECTION = 59
    MANUAL_CONNECTION = 61
    REMOTE_DISCONNECTION = 62
    REMOTE_CONNECTION = 63
    UNDER_VOLTAGE_L1 = 76
    OVER_VOLTAGE_L1 = 79
    MISSING_VOLTAGE_L1 = 82


STANDARD_LOG, FRAUD_LOG, DISCONNECTOR_LOG, POWER_QUALITY_LOG = 0, 1, 2, 4
_DATETIME_HEAD = b"\x09\x0c"  # octet-string of 12
_U8_COLUMNS = tuple(bytes((Tag.UNSIGNED, v)) for v in range(256))
_u32 = struct.Struct(">BI").pack  # (tag 6, value)


@dataclass(frozen=True, slots=True)
class ClientPolicy:
    """One client SAP the meter accepts: how it must authenticate, whether it must
    cipher (suite 0, authenticated and encrypted), and what it may do."""

    sap: int
    mechanism: Mechanism
    level: Level
    ciphered: bool = False


@dataclass(frozen=True, slots=True)
class MeterSpec:
    index: int
    serial: str
    seed: int
    time_zone: str = "Europe/Amsterdam"
    system_title: bytes = b"OHS\x00\x00\x00\x00\x00"
    ek: bytes | None = None  # global unicast encryption key
    ak: bytes | None = None  # authentication key
    password: bytes = b"00000000"  # LLS secret
    clients: tuple[ClientPolicy, ...] = (
        ClientPolicy(16, Mechanism.NONE, Level.PUBLIC),
        ClientPolicy(1, Mechanism.NONE, Level.MANAGEMENT),
    )
    firmware: bytes = b"OHS-SIM-1.0.0"
    max_pdu_size: int = 0xFFFF
    profile_days: int = 40
    event_log_entries: int = 200
    image_block_size: int = 200
    control_mode: int = 2
    commissioned: datetime | None = None  # default: 400..799 days before now, from the seed
    faults: FaultSpec = field(default_factory=FaultSpec)

    @property
    def logical_device_name(self) -> bytes:
        return b"OHS" + self.serial.encode("ascii")[-13:].rjust(13, b"0")

    def policy(self, sap: int) -> ClientPolicy | None:
        for p in self.clients:
            if p.sap == sap:
                return p
        return None


@dataclass(slots=True)
class Interruption:
    """No energy flows in [start, end); an outage also loses profile rows and the meter
    does not answer."""

    start: float
    end: float
    outage: bool


def _merge(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


class _GapIndex:
    """Interruptions merged and prefix-summed, so the energy lost before any instant is
    a binary search, however many outages a meter has had."""

    def __init__(
        self, interruptions: list[Interruption], curves: tuple[Callable[[float], int], ...]
    ) -> None:
        spans = _merge([(i.start, i.end) for i in interruptions])
        self.starts = [a for a, _ in spans]
        self.ends = [b for _, b in spans]
        self.curves = curves
        self.prefix: list[tuple[int, ...]] = [(0,) * len(curves)]
        for a, b in spans:
            if b == math.inf:
                break  # an open interruption is always the last
            prev = self.prefix[-1]
            self.prefix.append(tuple(p + c(b) - c(a) for p, c in zip(prev, curves, strict=True)))
        outages = _merge([(i.start, i.end) for i in interruptions if i.outage])
        self.outages = ([a for a, _ in outages], [b for _, b in outages])

    def lost(self, t: float, *now_values: int) -> tuple[int, ...]:
        """Energy of each curve that did not flow before ``t`` (``now_values``: each
        curve at ``t``)."""
        k = bisect.bisect_left(self.starts, t)
        if k == 0:
            return (0,) * len(self.curves)
        if self.ends[k - 1] <= t:
            return self.prefix[k]
        start = self.starts[k - 1]
        return tuple(
            p + v - c(start)
            for p, v, c in zip(self.prefix[k - 1], now_values, self.curves, strict=True)
        )


class Disconnector:
    """Class 70 state machine. States: 0 disconnected, 1 connected, 2 ready for
    reconnection. ``mode`` (0..6) selects which transitions are allowed."""

    DISCONNECTED, CONNECTED, READY = 0, 1, 2

    def __init__(self, mode: int) -> None:
        self.state = self.CONNECTED
        self.mode = mode
        self.operations = 0  # remote disconnect/reconnect commands carried out

    @property
    def output_state(self) -> bool:
        return self.state == self.CONNECTED

    def remote_disconnect(self) -> bool:
        if self.mode == 0:
            return False
        self.state = self.DISCONNECTED
        self.operations += 1
        return True

    def remote_reconnect(self) -> bool:
        """Modes 1, 3: disconnected -> ready (a local action connects); 2, 4, 5, 6:
        disconnected -> connected; from ready, only 2, 4, 5, 6 connect remotely."""
        if self.mode == 0 or (self.state == self.READY and self.mode in (1, 3)):
            return False
        self.operations += 1
        if self.state == self.DISCONNECTED:
            self.state = self.READY if self.mode in (1, 3) else self.CONNECTED
        elif self.state == self.READY:
            self.state = self.CONNECTED
        return True

    def manual_reconnect(self) -> bool:
        if self.state != self.READY:
            return False
        self.state = self.CONNECTED
        return True


class ImageTransferState:
    """Class 18 state machine with resume: initiating again with the same identifier and
    size keeps the blocks already received."""

    NOT_INITIATED, INITIATED, VERIFY_INITIATED, VERIFY_OK, VERIFY_FAILED = 0, 1, 2, 3, 4
    ACTIVATE_INITIATED, ACTIVATE_OK, ACTIVATE_FAILED = 5, 6, 7
    MAX_IMAGE = 16 * 1024 * 1024

    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self.enabled = True
        self.status = self.NOT_INITIATED
        self.identifier = b""
        self.size = 0
        self._blocks: dict[int, bytes] = {}
        self._image: bytes | None = None

    @property
    def block_count(self) -> int:
        return (self.size + self.block_size - 1) // self.block_size

    def blocks_status(self) -> axdr.BitString:
        return axdr.BitString.from_bools([i in self._blocks for i in range(self.block_count)])

    def first_not_transferred(self) -> int:
        for i in range(self.block_count):
            if i not in self._blocks:
                return i
        return self.block_count

    def to_activate_info(self) -> list[tuple[int, bytes, bytes]]:
        if self._image is None:
            return []
        return [(self.size, self.identifier, hashlib.sha256(self._image).digest())]

    def initiate(self, identifier: bytes, size: int, meter: Meter) -> DataAccessResult:
        if not self.enabled:
            return DataAccessResult.TEMPORARY_FAILURE
        if not identifier or size == 0 or size > self.MAX_IMAGE:
            return DataAccessResult.OTHER_REASON
        if (
            identifier != self.identifier
            or size != self.size
            or self.status not in (self.INITIATED, self.VERIFY_FAILED)
        ):
            self._blocks.clear()
        self.identifier, self.size = identifier, size
        self._image = None
        self.status = self.INITIATED
        return DataAccessResult.SUCCESS

    def block(self, number: int, value: bytes, meter: Meter) -> DataAccessResult:
        if self.status not in (self.INITIATED, self.VERIFY_FAILED) or number >= self.block_count:
            return DataAccessResult.OTHER_REASON
        expected = min(self.block_size, self.size - number * self.block_size)
        if len(value) != expected:
            return DataAccessResult.OTHER_REASON
        if not meter.faults.lose_block():
            self._blocks[number] = value
        self.status = self.INITIATED
        return DataAccessResult.SUCCESS

    def verify(self, meter: Meter) -> DataAccessResult:
        if self.status == self.NOT_INITIATED:
            return DataAccessResult.OTHER_REASON
        if self.status in (self.VERIFY_OK, self.ACTIVATE_OK):
            return DataAccessResult.SUCCESS
        if len(self._blocks) != self.block_count:
            self.status = self.VERIFY_FAILED
            return DataAccessResult.OTHER_REASON
        self._image = b"".join(self._blocks[i] for i in range(self.block_count))
        self.status = self.VERIFY_OK
        meter.log(STANDARD_LOG, EventCode.FIRMWARE_READY)
        return DataAccessResult.SUCCESS

    def activate(self, meter: Meter) -> DataAccessResult:
        if self.status != self.VERIFY_OK and self.verify(meter) != DataAccessResult.SUCCESS:
            if self.status != self.NOT_INITIATED:
                self.status = self.ACTIVATE_FAILED
            return DataAccessResult.OTHER_REASON
        self.status = self.ACTIVATE_OK
        meter.firmware = self.identifier
        meter.image_activated = self._image
        meter.log(STANDARD_LOG, EventCode.FIRMWARE_ACTIVATED)
        return DataAccessResult.SUCCESS


# -- profiles ----------------------------------------------------------------------------
CLOCK_LN = obis("0.0.1.0.0.255")
AMR_STATUS_LN = obis("0.0.96.10.1.255")
SECURITY_SETUP_LN = obis("0.0.43.0.0.255")
ENERGY_LNS = tuple(obis(f"1.0.{c}.8.0.255") for c in (1, 2, 3, 4))


class LoadProfile(ProfileSource):
    """15-minute profile: clock, AMR status, +A, -A, +R, -R (cumulative Wh/varh)."""

    capture_period = SLOT_SECONDS

    def __init__(self, days: int) -> None:
        self.capacity = days * (DAY_SECONDS // SLOT_SECONDS)
        self.capture_objects = (
            capture_object(8, CLOCK_LN),
            capture_object(1, AMR_STATUS_LN),
            *(capture_object(3, ln) for ln in ENERGY_LNS),
        )

    def _segments(self, meter: Meter) -> list[tuple[int, int]]:
        """Inclusive boundary ranges that hold rows, oldest first."""
        last = int(meter.clock.now()) // SLOT_SECONDS
        first = max(last - self.capacity + 1, -(-int(meter.commissioned) // SLOT_SECONDS))
        segments = []
        lo = first
        for gap_start, gap_end in meter.missing_boundaries(first, last):
            if gap_start > lo:
                segments.append((lo, gap_start - 1))
            lo = max(lo, gap_end + 1)
        if lo <= last:
            segments.append((lo, last))
        return segments

    def count(self, meter: Meter) -> int:
        return sum(b - a + 1 for a, b in self._segments(meter))

    def rows_by_entry(self, meter: Meter, first: int, last: int) -> list[tuple[bytes, ...]]:
        boundaries: list[int] = []
        index = 1
        for a, b in self._segments(meter):
            n = b - a + 1
            lo, hi = max(first, index), min(last, index + n - 1)
            if lo <= hi:
                boundaries.extend(range(a + lo - index, a + hi - index + 1))
            index += n
        return meter.profile_rows(boundaries)

    def rows_by_time(self, meter: Meter, start: float, end: float) -> list[tuple[bytes, ...]]:
        lo = (
            -(-int(start) // SLOT_SECONDS)
            if start == int(start)
            else int(start) // SLOT_SECONDS + 1
        )
        hi = int(end) // SLOT_SECONDS
        boundaries: list[int] = []
        for a, b in self._segments(meter):
            boundaries.extend(range(max(a, lo), min(b, hi) + 1))
        return meter.profile_rows(boundaries)


class EventLog(ProfileSource):
    """An event log: clock and the event code object, newest ``capacity`` events."""

    def __init__(self, log: int, capacity: int) -> None:
        self.log = log
        self.capacity = capacity
        self.capture_objects = (
            capture_object(8, CLOCK_LN),
            capture_object(1, obis(f"0.0.96.11.{log}.255")),
        )

    def _events(self, meter: Meter) -> list[tuple[float, int]]:
        return meter.events(self.log)[-self.capacity :]

    def _row(self, meter: Meter, t: float, code: int) -> tuple[bytes, ...]:
        return datetime_column(meter.clock.cosem_bytes(t)), u8_column(code)

    def count(self, meter: Meter) -> int:
        return len(self._events(meter))

    def rows_by_entry(self, meter: Meter, first: int, last: int) -> list[tuple[bytes, ...]]:
        return [self._row(meter, t, c) for t, c in self._events(meter)[first - 1 : last]]

    def rows_by_time(self, meter: Meter, start: float, end: float) -> list[tuple[bytes, ...]]:
        return [self._row(meter, t, c) for t, c in self._events(meter) if start <= t <= end]


# -- the meter ---------------------------------------------------------------------------
class Meter:
    """One simulated meter: state shared by every connection and association to it."""

    def __init__(self, spec: MeterSpec, source: Callable[[], float] = _time.time) -> None:
        self.spec = spec
        self.clock = MeterClock.for_zone(spec.time_zone, source)
        self.faults = FaultInjector(spec.faults, mix(spec.seed, 0xFA17))
        self.clock.offset = spec.faults.clock_offset_s
        self.clock.drift_ppm = spec.faults.clock_drift_ppm
        now = source()
        if spec.commissioned is not None:
            commissioned = spec.commissioned
        else:
            days = 400 + mix(spec.seed, 0xC0) % 400
            commissioned = datetime.fromtimestamp(
                (int(now) // DAY_SECONDS - days) * DAY_SECONDS, UTC
            )
        self.commissioned = commissioned.timestamp()
        self.shape = LoadShape(spec.seed, spec.time_zone, commissioned)
        self.tariff1_permille = 550 + mix(spec.seed, 0x7A) % 200
        self.disconnector = Disconnector(spec.control_mode)
        self.image = ImageTransferState(spec.image_block_size)
        self.firmware = spec.firmware
        self.image_activated: bytes | None = None
        self.preset_time: tuple[float, float, float] | None = None
        # Security: the highest invocation counter accepted from clients, our own next one.
        self.rx_invocation_counter = 0
        self.tx_invocation_counter = 1
        self.interruptions: list[Interruption] = self._historic_outages(now)
        self._gaps: _GapIndex | None = None
        self.power_failures = sum(1 for i in self.interruptions if i.outage)
        self._live_events: dict[int, list[tuple[float, int]]] = {}
        self._clock_adjustments: list[float] = []
        self.security_setup_ln = SECURITY_SETUP_LN
        self.objects = object_model(spec.profile_days, spec.event_log_entries)
        self._by_ln = _index(self.objects)

    # -- time and supply -------------------------------------------------------------
    def set_time(self, utc_seconds: float) -> None:
        old = self.clock.set_time(utc_seconds)
        self._clock_adjustments.append(utc_seconds)
        self.log(STANDARD_LOG, EventCode.CLOCK_ADJUSTED_OLD, old)
        self.log(STANDARD_LOG, EventCode.CLOCK_ADJUSTED_NEW, utc_seconds)

    def _historic_outages(self, now: float) -> list[Interruption]:
        rate = self.spec.faults.outages_per_month
        if rate <= 0:
            return []
        out = []
        lo, hi = self.spec.faults.outage_minutes
        first = int(self.commissioned) // DAY_SECONDS
        for day in range(first, int(now) // DAY_SECONDS + 1):
            h = mix(self.spec.seed, 0x0D7, day)
            if h % 1_000_000 < rate / 30.0 * 1_000_000:
                start = day * DAY_SECONDS + (h >> 20) % DAY_SECONDS
                minutes = lo + (h >> 40) % (hi - lo + 1)
                end = start + minutes * 60
                if end < now:
                    out.append(Interruption(float(start), float(end), True))
        return out

    def power_outage(self, start: float, end: float) -> None:
        """A supply outage [start, end) in meter time: no energy, no profile rows, no
        answers while it lasts, power-down/up events."""
        self.interruptions.append(Interruption(start, end, True))
        self.interruptions.sort(key=lambda i: i.start)
        self.power_failures += 1
        self._gaps = None

    def in_outage(self) -> bool:
        now = self.clock.now()
        starts, ends = self._index().outages
        k = bisect.bisect_right(starts, now)
        return k > 0 and now < ends[k - 1]

    def remote_disconnect(self) -> bool:
        was = self.disconnector.state
        if not self.disconnector.remote_disconnect():
            return False
        if was != Disconnector.DISCONNECTED:
            if was == Disconnector.CONNECTED:
                self.interruptions.append(Interruption(self.clock.now(), math.inf, False))
                self._gaps = None
            self.log(DISCONNECTOR_LOG, EventCode.REMOTE_DISCONNECTION)
        return True

    def remote_reconnect(self) -> bool:
        was = self.disconnector.state
        if not self.disconnector.remote_reconnect():
            return False
        if self.disconnector.state != was:
            if self.disconnector.state == Disconnector.CONNECTED:
                self._close_disconnection()
                self.log(DISCONNECTOR_LOG, EventCode.REMOTE_CONNECTION)
            else:
                self.log(DISCONNECTOR_LOG, EventCode.READY_FOR_RECONNECTION)
        return True

    def manual_reconnect(self) -> bool:
        """The customer presses the button (state 2 -> 1)."""
        if not self.disconnector.manual_reconnect():
            return False
        self._close_disconnection()
        self.log(DISCONNECTOR_LOG, EventCode.MANUAL_CONNECTION)
        return True

    def _close_disconnection(self) -> None:
        now = self.clock.now()
        for i in self.interruptions:
            if not i.outage and i.end == math.inf:
                i.end = now
        self._gaps = None

    def _index(self) -> _GapIndex:
        if self._gaps is None:
            self._gaps = _GapIndex(
                self.interruptions, (self.shape.imports.at, self.shape.exports.at)
            )
        return self._gaps

    def missing_boundaries(self, first: int, last: int) -> list[tuple[int, int]]:
        """Inclusive boundary ranges without a profile row (outages), sorted."""
        starts, ends = self._index().outages
        gaps = []
        k = max(0, bisect.bisect_right(ends, first * SLOT_SECONDS) - 1)
        while k < len(starts) and starts[k] <= last * SLOT_SECONDS:
            a = math.ceil(starts[k] / SLOT_SECONDS)
            b = math.ceil(ends[k] / SLOT_SECONDS) - 1 if ends[k] != math.inf else last
            if a <= b and b >= first:
                gaps.append((a, b))
            k += 1
        return gaps

    # -- energy ----------------------------------------------------------------------
    def energy(self, t: float) -> tuple[int, int, int, int]:
        """(+A Wh, -A Wh, +R varh, -R varh) cumulative at meter time ``t``."""
        shape = self.shape
        imp = shape.imports.at(t)
        exp = shape.exports.at(t)
        if self.interruptions:
            lost_imp, lost_exp = self._index().lost(t, imp, exp)
            imp -= lost_imp
            exp -= lost_exp
        return (
            imp,
            exp,
            imp * self.shape.reactive_import_permille // 1000,
            (imp + exp) * self.shape.reactive_export_permille // 1000,
        )

    def profile_rows(self, boundaries: Sequence[int]) -> list[tuple[bytes, ...]]:
        """Load-profile rows (A-XDR columns) captured at the given boundaries, ascending."""
        if not boundaries:
            return []
        first, last = boundaries[0], boundaries[-1]
        gap_ends = {b for _, b in self.missing_boundaries(first - 1, last)}
        adjusted = sorted(int(t) // SLOT_SECONDS for t in self._clock_adjustments)
        shape = self.shape
        imports = shape.imports.boundaries(first, last)
        exports = shape.exports.boundaries(first, last)
        index = self._index() if self.interruptions else None
        r_imp, r_exp = shape.reactive_import_permille, shape.reactive_export_permille
        stamp_of = self.clock.cosem_bytes
        rows = []
        for b in boundaries:
            t = b * SLOT_SECONDS
            a, e = imports[b - first], exports[b - first]
            if index is not None:
                lost_a, lost_e = index.lost(t, a, e)
                a, e = a - lost_a, e - lost_e
            status = STATUS_POWER_DOWN if b - 1 in gap_ends else 0
            if adjusted:
                k = bisect.bisect_left(adjusted, b)
                if k < len(adjusted) and adjusted[k] == b:
                    status |= STATUS_CLOCK_ADJUSTED
            stamp = stamp_of(t)
            if stamp[11] & axdr.STATUS_DST_ACTIVE:
                status |= STATUS_DST
            rows.append(
                (
                    _DATETIME_HEAD + stamp,
                    _U8_COLUMNS[status],
                    _u32(6, a & 0xFFFFFFFF),
                    _u32(6, e & 0xFFFFFFFF),
                    _u32(6, a * r_imp // 1000 & 0xFFFFFFFF),
                    _u32(6, (a + e) * r_exp // 1000 & 0xFFFFFFFF),
                )
            )
        return rows

    def _instant_power(self) -> tuple[int, int]:
        """(+P W, -P W) now: the current slot's energy as a mean power, with jitter."""
        t = self.clock.now()
        b = int(t) // SLOT_SECONDS
        lo, hi = self.energy(b * SLOT_SECONDS), self.energy((b + 1) * SLOT_SECONDS)
        jitter = 950 + mix(self.spec.seed, 0x9, int(t) // 10) % 101
        return (hi[0] - lo[0]) * 4 * jitter // 1000, (hi[1] - lo[1]) * 4 * jitter // 1000

    def voltage(self, phase: int) -> int:
        """Decivolts."""
        if self.in_outage():
            return 0
        return 2300 + mix(self.spec.seed, 0x7, phase, int(self.clock.now()) // 60) % 121 - 60

    def current(self, phase: int) -> int:
        """Centiamperes per phase: the power spread over three phases."""
        imp, exp = self._instant_power()
        v = self.voltage(phase)
        return (imp + exp) * 1000 // (3 * v) if v else 0

    # -- events ----------------------------------------------------------------------
    def log(self, log: int, code: int, at: float | None = None) -> None:
        self._live_events.setdefault(log, []).append((self.clock.now() if at is None else at, code))

    def events(self, log: int) -> list[tuple[float, int]]:
        """Events of one log up to now, oldest first: generated history plus live ones."""
        now = self.clock.now()
        horizon = now - self.spec.profile_days * DAY_SECONDS
        out: list[tuple[float, int]] = []
        if log == STANDARD_LOG:
            starts, ends = self._index().outages
            for k in range(bisect.bisect_left(starts, horizon), bisect.bisect_right(starts, now)):
                out.append((starts[k], EventCode.POWER_DOWN))
                if ends[k] <= now:
                    out.append((ends[k], EventCode.POWER_UP))
        elif log in (FRAUD_LOG, POWER_QUALITY_LOG):
            # Background events: rare cover openings, weekly-ish voltage excursions.
            odds = 40 if log == FRAUD_LOG else 150
            for day in range(
                max(int(horizon), int(self.commissioned)) // DAY_SECONDS,
                int(now) // DAY_SECONDS + 1,
            ):
                h = mix(self.spec.seed, 0xE7, log, day)
                if h % 1000 < odds:
                    t = float(day * DAY_SECONDS + (h >> 16) % DAY_SECONDS)
                    if t > now:
                        continue
                    if log == FRAUD_LOG:
                        out += [
                            (t, EventCode.TERMINAL_COVER_REMOVED),
                            (t + 120 + (h >> 40) % 600, EventCode.TERMINAL_COVER_CLOSED),
                        ]
                    else:
                        out.append(
                            (
                                t,
                                (
                                    EventCode.UNDER_VOLTAGE_L1,
                                    EventCode.OVER_VOLTAGE_L1,
                                    EventCode.MISSING_VOLTAGE_L1,
                                )[(h >> 40) % 3]
                                + (h >> 50) % 3,
                            )
                        )
        out.extend(e for e in self._live_events.get(log, ()) if e[0] <= now)
        out.sort(key=lambda e: e[0])  # stable: same-instant events keep their order
        return [e for e in out if e[0] <= now]

    def last_event(self, log: int) -> int:
        events = self.events(log)
        return events[-1][1] if events else 0

    # -- security counters -------------------------------------------------------------
    def next_tx_counter(self) -> int:
        ic = self.tx_invocation_counter
        self.tx_invocation_counter = (ic + 1) & 0xFFFFFFFF
        return ic

    def reset_counters(self) -> None:
        """What a meter does after a cold start that loses its counters."""
        self.rx_invocation_counter = 0
        self.tx_invocation_counter = 1

    # -- objects ---------------------------------------------------------------------
    def find(self, class_id: int, ln: bytes) -> CosemObject | int | None:
        """The object; None if absent; the real class id (int) if the class differs."""
        obj = self._by_ln.get(ln)
        if obj is None:
            return None
        return obj if obj.class_id == class_id else obj.class_id

    def object_list(self, level: Level) -> Data:
        return axdr.array(
            [
                axdr.structure(
                    axdr.long_unsigned(o.class_id),
                    axdr.unsigned(o.version),
                    axdr.octet_string(o.ln),
                    o.access_rights(level),
                )
                for o in self.objects
                if o.visible(level)
            ]
        )


@lru_cache(maxsize=16)
def object_model(profile_days: int, event_log_entries: int) -> tuple[CosemObject, ...]:
    """The COSEM objects of a meter. They hold no meter state (each call gets the meter
    in its context), so meters with the same profile sizes share one list."""
    wh, varh = Unit.WATT_HOUR, Unit.VAR_HOUR
    u32 = Tag.DOUBLE_LONG_UNSIGNED

    def now_energy(i: int) -> Callable[[Meter], int]:
        return lambda m: m.energy(m.clock.now())[i] & 0xFFFFFFFF

    def tariff(i: int, t1: bool) -> Callable[[Meter], int]:
        def value(m: Meter) -> int:
            total = m.energy(m.clock.now())[i]
            day = total * m.tariff1_permille // 1000
            return (day if t1 else total - day) & 0xFFFFFFFF

        return value

    objects: list[CosemObject] = [
        AssociationLN(obis("0.0.40.0.0.255"), public=True),
        DataObject(
            obis("0.0.42.0.0.255"),
            lambda m: axdr.octet_string(m.spec.logical_device_name),
            public=True,
        ),
        DataObject(
            obis("0.0.96.1.0.255"),
            lambda m: axdr.octet_string(m.spec.serial.encode()),
            public=True,
        ),
        DataObject(obis("1.0.0.2.0.255"), lambda m: axdr.octet_string(m.firmware), public=True),
        DataObject(
            obis("0.0.43.1.0.255"),
            lambda m: axdr.double_long_unsigned(m.rx_invocation_counter),
            public=True,
        ),
        SecuritySetup(SECURITY_SETUP_LN, public=True),
        Clock(CLOCK_LN, public=True),
        DataObject(
            AMR_STATUS_LN,
            lambda m: axdr.unsigned(STATUS_DST if m.clock.utc_offset(m.clock.now())[1] else 0),
        ),
        DataObject(
            obis("0.0.96.14.0.255"),
            lambda m: axdr.unsigned(1 if 7 <= m.clock.local(m.clock.now()).hour < 23 else 2),
        ),
        DataObject(
            obis("0.0.96.7.21.255"), lambda m: axdr.long_unsigned(min(m.power_failures, 0xFFFF))
        ),
        Register(ENERGY_LNS[0], now_energy(0), u32, 0, wh),
        Register(obis("1.0.1.8.1.255"), tariff(0, True), u32, 0, wh),
        Register(obis("1.0.1.8.2.255"), tariff(0, False), u32, 0, wh),
        Register(ENERGY_LNS[1], now_energy(1), u32, 0, wh),
        Register(obis("1.0.2.8.1.255"), tariff(1, True), u32, 0, wh),
        Register(obis("1.0.2.8.2.255"), tariff(1, False), u32, 0, wh),
        Register(ENERGY_LNS[2], now_energy(2), u32, 0, varh),
        Register(ENERGY_LNS[3], now_energy(3), u32, 0, varh),
        Register(obis("1.0.1.7.0.255"), lambda m: m._instant_power()[0], u32, 0, Unit.WATT),
        Register(obis("1.0.2.7.0.255"), lambda m: m._instant_power()[1], u32, 0, Unit.WATT),
    ]
    for phase, (v, a) in enumerate(((32, 31), (52, 51), (72, 71)), start=1):
        objects.append(
            Register(
                obis(f"1.0.{v}.7.0.255"),
                lambda m, p=phase: m.voltage(p),
                Tag.LONG_UNSIGNED,
                -1,
                Unit.VOLT,
            )
        )
        objects.append(
            Register(
                obis(f"1.0.{a}.7.0.255"),
                lambda m, p=phase: m.current(p),
                Tag.LONG_UNSIGNED,
                -2,
                Unit.AMPERE,
            )
        )
    objects += [
        Register(
            obis("1.0.14.7.0.255"),
            lambda m: 5000 + mix(m.spec.seed, 0xF, int(m.clock.now()) // 10) % 17 - 8,
            Tag.LONG_UNSIGNED,
            -2,
            Unit.HERTZ,
        ),
        Register(
            obis("1.0.13.7.0.255"),
            lambda m: 900 + mix(m.spec.seed, 0xC, int(m.clock.now()) // 60) % 100,
            Tag.LONG,
            -3,
            Unit.NONE,
        ),
        ProfileGeneric(obis("1.0.99.1.0.255"), LoadProfile(profile_days)),
    ]
    for log in (STANDARD_LOG, FRAUD_LOG, DISCONNECTOR_LOG, POWER_QUALITY_LOG):
        objects.append(
            ProfileGeneric(obis(f"0.0.99.98.{log}.255"), EventLog(log, event_log_entries))
        )
        objects.append(
            DataObject(
                obis(f"0.0.96.11.{log}.255"), lambda m, g=log: axdr.unsigned(m.last_event(g))
            )
        )
    objects += [
        DisconnectControl(obis("0.0.96.3.10.255")),
        ImageTransfer(obis("0.0.44.0.0.255")),
    ]
    return tuple(objects)


@lru_cache(maxsize=16)
def _index(objects: tuple[CosemObject, ...]) -> dict[bytes, CosemObject]:
    return {o.ln: o for o in objects}


def derive_keys(secret: bytes, serial: str) -> tuple[bytes, bytes]:
    """(EK, AK) for a meter, from a fleet secret: HMAC-SHA256 halves, so a fleet restarted
    with the same secret keeps its keys."""
    d = hmac.new(secret, b"openhes-sim-keys:" + serial.encode(), hashlib.sha256).digest()
    return d[:16], d[16:]


def system_title(index: int) -> bytes:
    """'OHS' and a 5-octet device number."""
    return b"OHS" + struct.pack(">Q", index)[-5:]
