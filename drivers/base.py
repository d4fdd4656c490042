"""The driver interface every protocol implements (DLMS/COSEM now, ANSI C12.22 later), and the
neutral result types the head-end maps. Nothing here knows a protocol's bytes.

A driver opens a :class:`MeterSession` (transport + association) with :meth:`Driver.associate`
and runs operations on it; every operation is bounded by the session's timeouts and raises only
:mod:`drivers.errors` types. Use it as an async context manager so the association is released
(and the transport closed) on every path::

    async with await driver.associate(params) as meter:
        registers = await meter.read_registers(["1.0.1.8.0.255"])

Values are exact: a register's ``value`` is ``raw * 10**scaler`` as a Decimal. Units are CIM unit
symbols (``Wh``, ``V``, ``""`` for none), as :mod:`mdm.normalise` takes them; ``unit_code`` keeps
the protocol's own code. Times are aware datetimes (UTC) when the meter said its UTC offset, else
the meter's naive wall-clock time with its DST flag.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, fields
from datetime import datetime
from decimal import Decimal
from types import TracebackType
from typing import Self

from drivers.errors import ConfigurationError

#: The frame observer of the running task (a per-communication debug log,
#: :class:`headend.commlog.FrameRecorder`): a driver that sees whole frames calls it with
#: ("tx" | "rx", frame) for each one it sends or receives, from the task that set it. None: off.
FrameObserver = Callable[[str, bytes], None]
frame_observer: ContextVar[FrameObserver | None] = ContextVar("frame_observer", default=None)

# ---------------------------------------------------------------------------------------------
# Connection parameters


class TransportKind(enum.StrEnum):
    WRAPPER = "wrapper"  # DLMS TCP/UDP wrapper (IEC 62056-47)
    HDLC = "hdlc"  # HDLC frames carried over a TCP stream


class AuthenticationKind(enum.StrEnum):
    NONE = "none"
    LLS = "lls"  # low-level security: a password
    HLS_GMAC = "hls-gmac"  # high-level security, mechanism 5 (GMAC), needs the keys


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds. ``frame`` bounds the wait for one answer (then the frame is sent again, up to
    ``ConnectionParams.retries`` times); ``operation`` bounds one whole driver operation,
    association included; ``release`` bounds the polite goodbye after an error."""

    connect: float = 5.0
    frame: float = 5.0
    operation: float = 60.0
    release: float = 2.0

    def __post_init__(self) -> None:
        for name in ("connect", "frame", "operation", "release"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not value > 0:
                raise ConfigurationError(f"timeout {name} must be > 0 seconds, not {value!r}")


def _check_bytes(name: str, value: bytes | None, lengths: tuple[int, ...]) -> None:
    if value is not None and (not isinstance(value, bytes) or len(value) not in lengths):
        raise ConfigurationError(f"{name} must be {' or '.join(map(str, lengths))} bytes")


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionParams:
    """How to reach and talk to one meter. Secrets are left out of ``repr``.

    ``meter_id`` names the meter for the invocation-counter store and for logs. With
    ``security_suite`` set (only 0, AES-GCM-128, is supported) every APDU after the AARQ is
    authenticated and encrypted with the global unicast key; HLS-GMAC needs it."""

    meter_id: str
    host: str
    port: int = 4059
    transport: TransportKind = TransportKind.WRAPPER
    client_address: int = 16
    server_address: int = 1  # logical device address (WRAPPER destination / HDLC upper)
    physical_address: int | None = None  # HDLC lower address; None: one-byte address
    authentication: AuthenticationKind = AuthenticationKind.NONE
    password: bytes | None = field(default=None, repr=False)
    security_suite: int | None = None
    block_cipher_key: bytes | None = field(default=None, repr=False)
    authentication_key: bytes | None = field(default=None, repr=False)
    system_title: bytes | None = None  # the client's, 8 bytes
    server_system_title: bytes | None = None  # expected; checked against the AARE if given
    invocation_counter_obis: str = "0.0.43.1.0.255"
    public_client_address: int = 16  # used to read the counter when re-synchronising
    timeouts: Timeouts = field(default_factory=Timeouts)
    retries: int = 2
    max_pdu_size: int = 0xFFFF
    hdlc_max_info: int = 128  # information field size proposed in SNRM (the meter may lower it)

    def __post_init__(self) -> None:
        if not self.meter_id or not isinstance(self.meter_id, str):
            raise ConfigurationError("meter_id is required")
        if not isinstance(self.port, int) or not 0 < self.port < 65536:
            raise ConfigurationError(f"port {self.port!r} is not 1..65535")
        object.__setattr__(self, "transport", TransportKind(self.transport))
        object.__setattr__(self, "authentication", AuthenticationKind(self.authentication))
        for name, top in (
            ("client_address", 0x7F if self.transport is TransportKind.HDLC else 0xFFFF),
            ("server_address", 0x3FFF),
            ("public_client_address", 0xFFFF),
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value <= top:
                raise ConfigurationError(f"{name} {value!r} is not 0..{top}")
        if self.physical_address is not None and not 0 <= self.physical_address <= 0x3FFF:
            raise ConfigurationError("physical_address is not 0..16383")
        if not isinstance(self.retries, int) or not 0 <= self.retries <= 10:
            raise ConfigurationError("retries must be 0..10")
        if not 32 <= self.hdlc_max_info <= 2030:
            raise ConfigurationError("hdlc_max_info must be 32..2030")
        if not 64 <= self.max_pdu_size <= 0xFFFF:
            raise ConfigurationError("max_pdu_size must be 64..65535")
        if self.security_suite not in (None, 0):
            raise ConfigurationError(f"security suite {self.security_suite} is not supported")
        _check_bytes("block_cipher_key", self.block_cipher_key, (16,))
        _check_bytes("authentication_key", self.authentication_key, (16,))
        _check_bytes("system_title", self.system_title, (8,))
        _check_bytes("server_system_title", self.server_system_title, (8,))
        if self.authentication is AuthenticationKind.LLS and not self.password:
            raise ConfigurationError("LLS needs a password")
        ciphered = self.security_suite is not None
        if self.authentication is AuthenticationKind.HLS_GMAC and not ciphered:
            raise ConfigurationError("HLS-GMAC needs security_suite 0 and its keys")
        if ciphered and not (
            self.block_cipher_key and self.authentication_key and self.system_title
        ):
            raise ConfigurationError(
                "ciphering needs block_cipher_key, authentication_key and system_title"
            )

    @property
    def ciphered(self) -> bool:
        return self.security_suite is not None


# ---------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True, slots=True)
class RegisterValue:
    """One value with its scaler and unit. ``value == raw * 10**scaler`` exactly.

    ``obis`` is the register's identifier (dotted OBIS ``1.0.1.8.0.255`` for DLMS). ``status``
    is the register's status when it has one (extended register, profile status column)."""

    obis: str
    raw: int
    scaler: int
    unit: str
    value: Decimal
    status: int | None = None
    unit_code: int | None = None
    capture_time: datetime | None = None

    @classmethod
    def exact(
        cls,
        obis: str,
        raw: int,
        scaler: int,
        unit: str,
        *,
        status: int | None = None,
        unit_code: int | None = None,
        capture_time: datetime | None = None,
    ) -> RegisterValue:
        value = Decimal(raw) if scaler == 0 else Decimal(raw).scaleb(scaler)
        return cls(obis, raw, scaler, unit, value, status, unit_code, capture_time)


@dataclass(frozen=True, slots=True)
class ProfileRow:
    """One load-profile entry: its time, the profile status bits (if the profile captures a
    status) and one RegisterValue per captured quantity, keyed by identifier."""

    timestamp: datetime
    status: int | None
    values: Mapping[str, RegisterValue]
    dst: bool | None = None


@dataclass(frozen=True, slots=True)
class MeterEvent:
    """One entry of an event log. ``log`` identifies the log (OBIS of the profile for DLMS);
    ``details`` carries the log's other captured columns as (identifier, raw value) pairs."""

    code: int
    timestamp: datetime
    log: str
    dst: bool | None = None
    details: tuple[tuple[str, object], ...] = ()


# Positional constructors that set the slots directly, for drivers building load-profile rows
# in bulk: the generated __init__ of a frozen dataclass goes through object.__setattr__ per
# field, which was half the cost of decoding a 96-row profile. Same objects, every field
# passed, in declaration order, no checks.
_new = object.__new__
_RV = tuple(RegisterValue.__dict__[f.name].__set__ for f in fields(RegisterValue))
_PR = tuple(ProfileRow.__dict__[f.name].__set__ for f in fields(ProfileRow))


def new_register_value(
    obis: str,
    raw: int,
    scaler: int,
    unit: str,
    value: Decimal,
    status: int | None,
    unit_code: int | None,
    capture_time: datetime | None,
) -> RegisterValue:
    obj = _new(RegisterValue)
    s_obis, s_raw, s_scaler, s_unit, s_value, s_status, s_code, s_time = _RV
    s_obis(obj, obis)
    s_raw(obj, raw)
    s_scaler(obj, scaler)
    s_unit(obj, unit)
    s_value(obj, value)
    s_status(obj, status)
    s_code(obj, unit_code)
    s_time(obj, capture_time)
    return obj


def new_profile_row(
    timestamp: datetime,
    status: int | None,
    values: Mapping[str, RegisterValue],
    dst: bool | None,
) -> ProfileRow:
    obj = _new(ProfileRow)
    s_time, s_status, s_values, s_dst = _PR
    s_time(obj, timestamp)
    s_status(obj, status)
    s_values(obj, values)
    s_dst(obj, dst)
    return obj


@dataclass(frozen=True, slots=True)
class ClockReading:
    """The meter's clock. ``time`` is aware (UTC) when the meter gave its UTC deviation, else
    the naive wall-clock time. ``deviation`` is in minutes as DLMS defines it (local time =
    UTC - deviation; CET is -60); ``status`` the raw clock status bits."""

    time: datetime
    deviation: int | None
    dst: bool | None
    status: int | None
    local_time: datetime | None = None


class ControlState(enum.IntEnum):
    DISCONNECTED = 0
    CONNECTED = 1
    READY_FOR_RECONNECTION = 2


@dataclass(frozen=True, slots=True)
class SwitchState:
    """The supply switch as read back from the meter. ``output_state`` True = supply on."""

    output_state: bool
    control_state: ControlState
    control_mode: int | None = None


class ImageTransferStatus(enum.IntEnum):
    NOT_INITIATED = 0
    INITIATED = 1
    VERIFICATION_INITIATED = 2
    VERIFICATION_SUCCESSFUL = 3
    VERIFICATION_FAILED = 4
    ACTIVATION_INITIATED = 5
    ACTIVATION_SUCCESSFUL = 6
    ACTIVATION_FAILED = 7


@dataclass(frozen=True, slots=True)
class FirmwareProgress:
    """Where an image transfer stands. ``blocks_resent`` counts blocks sent again because the
    meter's transferred-blocks status showed them missing."""

    identifier: bytes
    image_size: int
    block_size: int
    blocks_total: int
    blocks_sent: int
    blocks_missing: int
    blocks_resent: int
    status: ImageTransferStatus
    phase: str  # "initiate", "blocks", "resume", "verify", "activate", "done"


@dataclass(frozen=True, slots=True)
class PingResult:
    logical_device_name: str
    round_trip_s: float


ProgressCallback = Callable[[FirmwareProgress], None]

# ---------------------------------------------------------------------------------------------
# Interface


class MeterSession(ABC):
    """One open association with one meter. Operations run one at a time."""

    params: ConnectionParams

    @abstractmethod
    async def read_registers(self, identifiers: Sequence[str]) -> list[RegisterValue]:
        """Value, scaler and unit of each register, in the order asked."""

    @abstractmethod
    async def read_load_profile(
        self, start: datetime, end: datetime, profile: str | None = None
    ) -> list[ProfileRow]:
        """The profile's entries with start <= time <= end (aware or meter wall-clock)."""

    @abstractmethod
    async def read_events(
        self, log: str | None = None, start: datetime | None = None, end: datetime | None = None
    ) -> list[MeterEvent]:
        """An event log, whole or by time range."""

    @abstractmethod
    async def read_clock(self) -> ClockReading: ...

    @abstractmethod
    async def set_clock(
        self, time: datetime, *, deviation: int | None = None, dst: bool | None = None
    ) -> ClockReading:
        """Set the clock and return it as read back."""

    @abstractmethod
    async def read_switch_state(self) -> SwitchState: ...

    @abstractmethod
    async def disconnect(self) -> SwitchState:
        """Open the supply switch; returns the state read back after the command."""

    @abstractmethod
    async def connect(self) -> SwitchState:
        """Close the supply switch (or allow it, per the meter's control mode)."""

    @abstractmethod
    async def arm(self) -> SwitchState:
        """Make the meter ready for a local (manual) reconnection."""

    @abstractmethod
    async def transfer_firmware(
        self,
        image: bytes,
        identifier: bytes,
        *,
        activate: bool = True,
        progress: ProgressCallback | None = None,
        timeout: float | None = None,
    ) -> FirmwareProgress:
        """Initiate, send the blocks, re-send the blocks the meter lacks, verify, activate.
        Calling it again with the same image and identifier resumes an interrupted transfer.
        ``timeout`` replaces the operation timeout (a large image takes longer)."""

    @abstractmethod
    async def read_firmware_version(self) -> str: ...

    @abstractmethod
    async def read_logical_device_name(self) -> str: ...

    @abstractmethod
    async def release(self) -> None:
        """End the association and close the transport. Never raises."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.release()


class Driver(ABC):
    """A protocol driver. Stateless apart from shared stores (e.g. invocation counters); one
    instance serves any number of concurrent sessions."""

    protocol: str

    @abstractmethod
    async def associate(self, params: ConnectionParams) -> MeterSession:
        """Open the transport and the association."""

    @abstractmethod
    async def ping(self, params: ConnectionParams) -> PingResult:
        """Associate, read the logical device name, release."""


__all__ = [
    "AuthenticationKind",
    "ClockReading",
    "ConnectionParams",
    "ControlState",
    "Driver",
    "FirmwareProgress",
    "ImageTransferStatus",
    "MeterEvent",
    "MeterSession",
    "PingResult",
    "ProfileRow",
    "ProgressCallback",
    "RegisterValue",
    "SwitchState",
    "Timeouts",
    "TransportKind",
]


# The device-import file (docs/device-import.md): the simulator writes it, the head-end's
# `openhes meters import` reads it; these are its base columns, in order.
DEVICE_IMPORT_FORMAT = "openhes-device-import/1"
DEVICE_IMPORT_COLUMNS = (
    "mRID",
    "serial",
    "name",
    "protocol",
    "transport",
    "host",
    "port",
    "client_address",
    "server_logical",
    "server_physical",
    "wport",
    "authentication",
    "password",
    "security_policy",
    "security_suite",
    "encryption_key",
    "authentication_key",
    "system_title",
    "invocation_counter_obis",
    "time_zone",
    "logical_device_name",
)
