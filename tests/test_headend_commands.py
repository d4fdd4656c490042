"""The command and result model: construction rules, priorities, verified control outcomes and
the mapping of driver errors to northbound error codes."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from cim.errors import ErrorCode
from drivers import errors
from drivers.base import ClockReading, ControlState, RegisterValue, SwitchState
from headend.commands import (
    ERROR_CODES,
    CommandError,
    Configure,
    Control,
    ControlAction,
    ControlOutcome,
    Failure,
    FirmwareUpdate,
    Ping,
    Priority,
    ReadEvents,
    Readings,
    ReadIntervalData,
    ReadRegisters,
    Setting,
    error_code_for,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def test_commands_are_frozen_and_carry_key_and_priority():
    read = ReadRegisters(device="M1", obis=["1.0.1.8.0.255", "1.0.2.8.0.255"])
    assert read.obis == ("1.0.1.8.0.255", "1.0.2.8.0.255")
    assert read.priority is Priority.ON_DEMAND
    assert (
        read.idempotency_key
        and read.idempotency_key
        != ReadRegisters(device="M1", obis=["1.0.1.8.0.255"]).idempotency_key
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        read.device = "M2"  # type: ignore[misc]
    assert Control(device="M1", action="disconnect").priority is Priority.CONTROL
    assert FirmwareUpdate(device="M1", image_ref="fw/1", identifier="v2").priority == 2
    bulk = ReadRegisters(device="M1", obis=["1.0.1.8.0.255"], priority=3, idempotency_key="k1")
    assert bulk.priority is Priority.BULK and bulk.idempotency_key == "k1"
    assert Priority.CONTROL < Priority.ON_DEMAND < Priority.SCHEDULED < Priority.BULK
    assert Ping(device="M1").kind == "Ping"


@pytest.mark.parametrize(
    "build",
    [
        lambda: ReadRegisters(device="M1", obis=[]),
        lambda: ReadRegisters(device="", obis=["1.0.1.8.0.255"]),
        lambda: ReadIntervalData(device="M1", start=T0, end=T0),
        lambda: ReadIntervalData(device="M1", start=T0, end=T0 - timedelta(hours=1)),
        lambda: ReadIntervalData(device="M1", start=datetime(2026, 3, 1), end=T0),
        lambda: ReadEvents(device="M1", start=T0 + timedelta(days=1), end=T0),
        lambda: FirmwareUpdate(device="M1", image_ref="", identifier="v2"),
        lambda: Configure(device="M1", settings=()),
        lambda: Ping(device="M1", idempotency_key=""),
    ],
)
def test_bad_commands_are_refused(build):
    with pytest.raises(CommandError):
        build()


def test_control_actions_and_other_commands():
    assert Control(device="M1", action="clock_sync").action is ControlAction.CLOCK_SYNC
    with pytest.raises(ValueError):
        Control(device="M1", action="explode")
    events = ReadEvents(device="M1", log="0.0.99.98.2.255", start=T0)
    assert events.end is None
    setting = Setting("0.0.96.3.10.255", 4, 2)
    assert Configure(device="M1", settings=[setting]).settings == (setting,)


@pytest.mark.parametrize(
    ("action", "state", "verified"),
    [
        ("disconnect", ControlState.DISCONNECTED, True),
        ("disconnect", ControlState.CONNECTED, False),
        ("connect", ControlState.CONNECTED, True),
        ("connect", ControlState.READY_FOR_RECONNECTION, True),  # control modes 1 and 3
        ("connect", ControlState.DISCONNECTED, False),
        ("arm", ControlState.READY_FOR_RECONNECTION, True),
        ("arm", ControlState.CONNECTED, False),
    ],
)
def test_control_outcome_is_verified_by_the_state_read_back(action, state, verified):
    command = Control(device="M1", action=action)
    switch = SwitchState(state is ControlState.CONNECTED, state, 2)
    outcome = ControlOutcome(command, switch=switch)
    assert outcome.verified is verified and outcome.ok is verified
    assert not ControlOutcome(command).verified  # nothing read back: not verified


def test_clock_sync_outcome_and_readings():
    sync = Control(device="M1", action="clock_sync")
    assert ControlOutcome(sync, clock=ClockReading(T0, -60, False, 0)).verified
    assert not ControlOutcome(sync).verified
    read = ReadRegisters(device="M1", obis=["1.0.1.8.0.255"])
    value = RegisterValue.exact("1.0.1.8.0.255", 12345, -1, "Wh")
    assert Readings(read, registers=(value,)).ok


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (errors.DriverTimeout("t"), ErrorCode.DEVICE_TIMEOUT),
        (errors.ConnectionLost("c"), ErrorCode.DEVICE_UNREACHABLE),
        (errors.MalformedFrame("m"), ErrorCode.DEVICE_MALFORMED_FRAME),
        (errors.AssociationRefused("a"), ErrorCode.DEVICE_ASSOCIATION_FAILED),
        (errors.AuthenticationFailed("a"), ErrorCode.DEVICE_ASSOCIATION_FAILED),
        (errors.CounterOutOfSync("c"), ErrorCode.DEVICE_COUNTER_OUT_OF_SYNC),
        (errors.ObjectNotFound("o"), ErrorCode.DEVICE_OBJECT_NOT_FOUND),
        (errors.AccessDenied("a"), ErrorCode.DEVICE_ACCESS_DENIED),
        (errors.ConfigurationError("c"), ErrorCode.BAD_VALUE),
        (errors.DeviceError("d", result=2), ErrorCode.DEVICE_ERROR),
        (errors.FirmwareTransferFailed("f"), ErrorCode.DEVICE_ERROR),
    ],
)
def test_driver_errors_map_to_northbound_codes(exc, code):
    command = ReadRegisters(device="M1", obis=["1.0.1.8.0.255"])
    failure = Failure.from_driver_error(command, exc)
    assert failure.cause == exc.code
    assert failure.error is code
    assert failure.retryable is bool(exc.retryable)
    assert not failure.ok
    assert failure.error.code == code.code  # e.g. "7.2" for a timeout


def test_every_driver_error_code_is_mapped():
    codes = {
        cls.code
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.DriverError)
    }
    assert codes - {"driver_error"} <= set(ERROR_CODES)
    assert error_code_for("timeout").code == "7.2"
    assert error_code_for("deadline_expired") is ErrorCode.DEADLINE_EXPIRED
    assert error_code_for("something new") is ErrorCode.INTERNAL
