"""The command and result model: the one pivot between CIM (northbound) and drivers
(southbound).

A router turns a CIM request into commands; a worker runs a command on a driver session and
returns a result; the router maps results back to CIM. Commands name their meter by mRID and
carry an idempotency key (a control is never executed twice for one key) and a priority
(lower runs first). Results reuse the neutral types of :mod:`drivers.base`; a failure carries
its cause (the driver's error code) and the :class:`cim.errors.ErrorCode` for the reply.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from cim.errors import ErrorCode
from drivers.base import (
    ClockReading,
    ControlState,
    FirmwareProgress,
    MeterEvent,
    PingResult,
    ProfileRow,
    RegisterValue,
    SwitchState,
)
from drivers.errors import DriverError


class CommandError(ValueError):
    """A command that cannot be built (empty OBIS list, window the wrong way round...)."""


class Priority(enum.IntEnum):
    """Lower runs first: an operator's control before an on-demand read before bulk work."""

    CONTROL = 0
    ON_DEMAND = 1
    SCHEDULED = 2
    BULK = 3


def new_idempotency_key() -> str:
    return uuid.uuid4().hex


def _aware(name: str, value: datetime | None) -> None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise CommandError(f"{name} must be an aware datetime")


def _window(start: datetime | None, end: datetime | None) -> None:
    _aware("start", start)
    _aware("end", end)
    if start is not None and end is not None and not start < end:
        raise CommandError("the window's start must be before its end")


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    device: str  # mRID
    idempotency_key: str = field(default_factory=new_idempotency_key)
    priority: Priority = Priority.ON_DEMAND

    def __post_init__(self) -> None:
        if not self.device or not isinstance(self.device, str):
            raise CommandError("a command names its device (mRID)")
        if not self.idempotency_key:
            raise CommandError("the idempotency key must not be empty")
        object.__setattr__(self, "priority", Priority(self.priority))

    @property
    def kind(self) -> str:
        return type(self).__name__


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadRegisters(Command):
    obis: tuple[str, ...]

    def __post_init__(self) -> None:
        Command.__post_init__(self)
        object.__setattr__(self, "obis", tuple(self.obis))
        if not self.obis or not all(isinstance(o, str) and o for o in self.obis):
            raise CommandError("ReadRegisters needs at least one OBIS code")


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadIntervalData(Command):
    start: datetime
    end: datetime
    profile: str | None = None  # None: the meter's default load profile

    def __post_init__(self) -> None:
        Command.__post_init__(self)
        _window(self.start, self.end)


@dataclass(frozen=True, slots=True, kw_only=True)
class FullRead(Command):
    """A meter's full read in one session: its load profile over ``start``..``end`` and the
    registers ``obis`` (one association instead of one per command: the daily read of a
    population). The result is one :class:`Readings` with both."""

    start: datetime
    end: datetime
    obis: tuple[str, ...]
    profile: str | None = None  # None: the meter's default load profile

    def __post_init__(self) -> None:
        Command.__post_init__(self)
        _window(self.start, self.end)
        object.__setattr__(self, "obis", tuple(self.obis))
        if not self.obis or not all(isinstance(o, str) and o for o in self.obis):
            raise CommandError("FullRead needs at least one OBIS code")


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadEvents(Command):
    log: str | None = None  # None: the standard event log
    start: datetime | None = None
    end: datetime | None = None

    def __post_init__(self) -> None:
        Command.__post_init__(self)
        _window(self.start, self.end)


#: The commands that read data from a meter: the read-success KPI counts their jobs.
READ_COMMANDS: tuple[type[Command], ...] = (ReadRegisters, ReadIntervalData, FullRead, ReadEvents)


class ControlAction(enum.StrEnum):
    DISCONNECT = "disconnect"
    CONNECT = "connect"
    ARM = "arm"
    DEMAND_RESET = "demand_reset"
    CLOCK_SYNC = "clock_sync"


SWITCH_ACTIONS = frozenset({ControlAction.DISCONNECT, ControlAction.CONNECT, ControlAction.ARM})


@dataclass(frozen=True, slots=True, kw_only=True)
class Control(Command):
    action: ControlAction
    priority: Priority = Priority.CONTROL

    def __post_init__(self) -> None:
        Command.__post_init__(self)
        object.__setattr__(self, "action", ControlAction(self.action))


@dataclass(frozen=True, slots=True, kw_only=True)
class Ping(Command):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class FirmwareUpdate(Command):
    image_ref: str  # where the image is (a store key or URI); the bytes are not in the command
    identifier: str  # the image identifier the meter will report once activated
    activate: bool = True
    priority: Priority = Priority.SCHEDULED

    def __post_init__(self) -> None:
        Command.__post_init__(self)
        if not self.image_ref or not self.identifier:
            raise CommandError("FirmwareUpdate needs an image reference and an identifier")


@dataclass(frozen=True, slots=True)
class Setting:
    """One attribute to write: object identifier (OBIS), attribute index, value."""

    obis: str
    attribute: int
    value: object


@dataclass(frozen=True, slots=True, kw_only=True)
class Configure(Command):
    settings: tuple[Setting, ...]

    def __post_init__(self) -> None:
        Command.__post_init__(self)
        object.__setattr__(self, "settings", tuple(self.settings))
        if not self.settings:
            raise CommandError("Configure needs at least one setting")


AnyCommand = (
    ReadRegisters
    | ReadIntervalData
    | FullRead
    | ReadEvents
    | Control
    | Ping
    | FirmwareUpdate
    | Configure
)

# ---------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True, slots=True)
class Readings:
    command: Command
    registers: tuple[RegisterValue, ...] = ()
    profile: tuple[ProfileRow, ...] = ()
    ok = True


@dataclass(frozen=True, slots=True)
class Events:
    command: Command
    events: tuple[MeterEvent, ...]
    ok = True


def expected_states(action: ControlAction) -> frozenset[ControlState]:
    """The switch states that prove ``action`` took effect. A connect may leave the meter
    ready for a manual reconnection (control modes 1 and 3): that is what it was asked."""
    return {
        ControlAction.DISCONNECT: frozenset({ControlState.DISCONNECTED}),
        ControlAction.CONNECT: frozenset(
            {ControlState.CONNECTED, ControlState.READY_FOR_RECONNECTION}
        ),
        ControlAction.ARM: frozenset({ControlState.READY_FOR_RECONNECTION}),
    }.get(action, frozenset())


@dataclass(frozen=True, slots=True)
class ControlOutcome:
    """A control as verified on the meter: the switch state read back after acting (or the
    clock after a clock sync). ``verified`` says the read-back shows the action took effect;
    ``already`` that the meter was in that state before (nothing was sent)."""

    command: Control
    switch: SwitchState | None = None
    clock: ClockReading | None = None
    already: bool = False

    @property
    def verified(self) -> bool:
        if self.command.action in SWITCH_ACTIONS:
            return self.switch is not None and self.switch.control_state in expected_states(
                self.command.action
            )
        if self.command.action is ControlAction.CLOCK_SYNC:
            return self.clock is not None
        return True

    @property
    def ok(self) -> bool:
        return self.verified


@dataclass(frozen=True, slots=True)
class PingOutcome:
    command: Ping
    ping: PingResult
    ok = True


@dataclass(frozen=True, slots=True)
class FirmwareOutcome:
    command: FirmwareUpdate
    progress: FirmwareProgress

    @property
    def ok(self) -> bool:
        return self.progress.phase == "done"


@dataclass(frozen=True, slots=True)
class ConfigurationOutcome:
    command: Configure
    applied: tuple[Setting, ...]

    @property
    def ok(self) -> bool:
        return len(self.applied) == len(self.command.settings)


# The northbound code for each driver error code (drivers.errors ``code`` attributes).
ERROR_CODES: dict[str, ErrorCode] = {
    "timeout": ErrorCode.DEVICE_TIMEOUT,
    "connection_lost": ErrorCode.DEVICE_UNREACHABLE,
    "unreachable": ErrorCode.DEVICE_UNREACHABLE,
    "malformed_frame": ErrorCode.DEVICE_MALFORMED_FRAME,
    "association_refused": ErrorCode.DEVICE_ASSOCIATION_FAILED,
    "authentication_failed": ErrorCode.DEVICE_ASSOCIATION_FAILED,
    "counter_out_of_sync": ErrorCode.DEVICE_COUNTER_OUT_OF_SYNC,
    "object_not_found": ErrorCode.DEVICE_OBJECT_NOT_FOUND,
    "access_denied": ErrorCode.DEVICE_ACCESS_DENIED,
    "deadline_expired": ErrorCode.DEADLINE_EXPIRED,
    "unknown_device": ErrorCode.UNKNOWN_DEVICE,
    "configuration_error": ErrorCode.BAD_VALUE,
    # No device-side code fits these two yet; the operator's log has the driver's detail.
    "device_error": ErrorCode.DEVICE_ERROR,
    "firmware_transfer_failed": ErrorCode.DEVICE_ERROR,
}


def error_code_for(cause: str) -> ErrorCode:
    """The CIM error code for a failure cause (a driver error code); INTERNAL if unknown."""
    return ERROR_CODES.get(cause, ErrorCode.INTERNAL)


@dataclass(frozen=True, slots=True)
class Failure:
    """A command that did not succeed. ``cause`` is the driver's error code (or the
    head-end's: ``deadline_expired``, ``unknown_device``, ``unreachable``)."""

    command: Command
    cause: str
    message: str
    retryable: bool = False
    ok = False

    @property
    def error(self) -> ErrorCode:
        return error_code_for(self.cause)

    @classmethod
    def from_driver_error(cls, command: Command, exc: DriverError) -> Failure:
        return cls(command, exc.code, exc.message, bool(exc.retryable))


Result = (
    Readings
    | Events
    | ControlOutcome
    | PingOutcome
    | FirmwareOutcome
    | ConfigurationOutcome
    | Failure
)

__all__ = [
    "ERROR_CODES",
    "READ_COMMANDS",
    "AnyCommand",
    "Command",
    "CommandError",
    "ConfigurationOutcome",
    "Configure",
    "Control",
    "ControlAction",
    "ControlOutcome",
    "Events",
    "Failure",
    "FirmwareOutcome",
    "FirmwareUpdate",
    "FullRead",
    "Ping",
    "PingOutcome",
    "Priority",
    "ReadEvents",
    "ReadIntervalData",
    "ReadRegisters",
    "Readings",
    "Result",
    "Setting",
    "error_code_for",
    "expected_states",
    "new_idempotency_key",
]
