"""The DLMS/COSEM driver: :class:`drivers.base.Driver` over :class:`DlmsSession`.

Every operation runs under the session lock and the operation timeout. An error that leaves
the association usable (object not found, access denied, another result code) keeps the
session; anything else (timeout, malformed frame, lost connection, counter trouble) marks it
broken: later operations raise ConnectionLost and ``release`` closes it without waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

from drivers.base import (
    AuthenticationKind,
    ClockReading,
    ConnectionParams,
    ControlState,
    Driver,
    FirmwareProgress,
    MeterEvent,
    MeterSession,
    PingResult,
    ProfileRow,
    ProgressCallback,
    RegisterValue,
    SwitchState,
)
from drivers.dlms import axdr, cosem
from drivers.dlms.cosem import ClassId, normalise_obis
from drivers.dlms.counters import InvocationCounterStore, MemoryCounterStore
from drivers.dlms.errmap import map_exception
from drivers.dlms.firmware import transfer_image
from drivers.dlms.profile import CaptureObject, RowDecoder, capture_objects, range_access
from drivers.dlms.session import DlmsSession
from drivers.dlms.values import clock_reading, register_value, scaler_unit, text
from drivers.errors import (
    AccessDenied,
    AssociationRefused,
    AuthenticationFailed,
    ConfigurationError,
    ConnectionLost,
    CounterOutOfSync,
    DeviceError,
    DriverError,
    DriverTimeout,
    FirmwareTransferFailed,
    MalformedFrame,
    ObjectNotFound,
)

T = TypeVar("T")

# Errors after which the association is still in a known state.
_SESSION_KEEPING = (
    ObjectNotFound,
    AccessDenied,
    DeviceError,
    ConfigurationError,
    FirmwareTransferFailed,
)
# Errors of a ciphered association that a stale invocation counter can cause.
_MAYBE_COUNTER = (CounterOutOfSync, AuthenticationFailed, AssociationRefused)


async def _bounded(seconds: float, what: str, work: Awaitable[T]) -> T:
    try:
        async with asyncio.timeout(seconds):
            return await work
    except TimeoutError as exc:
        raise DriverTimeout(f"{what}: not finished within {seconds} s") from exc


def _check_range(start: datetime, end: datetime) -> None:
    if not isinstance(start, datetime) or not isinstance(end, datetime):
        raise ConfigurationError("a range is two datetimes")
    if (start.tzinfo is None) != (end.tzinfo is None):
        raise ConfigurationError("a range is two aware or two naive datetimes, not one of each")
    if end < start:
        raise ConfigurationError("the range ends before it starts")


class DlmsDriver(Driver):
    """One instance for any number of meters and concurrent sessions. ``counters`` persists
    the invocation counters of ciphered meters (in memory by default: use
    :class:`drivers.dlms.counters.SqliteCounterStore` in production)."""

    protocol = "dlms"

    def __init__(self, counters: InvocationCounterStore | None = None) -> None:
        self.counters = counters if counters is not None else MemoryCounterStore()

    async def associate(self, params: ConnectionParams) -> DlmsMeterSession:
        what = f"association with {params.meter_id}"
        try:
            session = await _bounded(params.timeouts.operation, what, self._open(params))
        except DriverError:
            raise
        except Exception as exc:
            raise map_exception(exc, what) from exc
        return DlmsMeterSession(session)

    async def _open_once(self, params: ConnectionParams) -> DlmsSession:
        session = DlmsSession(params, self.counters if params.ciphered else None)
        try:
            await session.open()
        except BaseException:
            await session.close(graceful=False)
            raise
        return session

    async def _open(self, params: ConnectionParams) -> DlmsSession:
        if not params.ciphered:
            return await self._open_once(params)
        try:
            return await self._open_once(params)
        except _MAYBE_COUNTER as exc:
            behind = await self.resynchronise(params)
            # A meter that says "invocation counter" is believed; an authentication failure
            # or refusal is retried only if our counter really was behind the meter's.
            if not (behind or (isinstance(exc, CounterOutOfSync) and behind is not None)):
                raise
            first_error = exc
        try:
            return await self._open_once(params)
        except _MAYBE_COUNTER as exc:
            raise type(exc)(
                f"{exc.message} (after re-synchronising the invocation counter)",
                detail=exc.detail,
            ) from first_error

    async def read_meter_counter(self, params: ConnectionParams) -> int:
        """The meter's invocation counter object, read over a public (no security)
        association."""
        public = replace(
            params,
            client_address=params.public_client_address,
            authentication=AuthenticationKind.NONE,
            password=None,
            security_suite=None,
            block_cipher_key=None,
            authentication_key=None,
            server_system_title=None,
        )
        session = await self._open_once(public)
        try:
            value = await session.get(
                ClassId.DATA, normalise_obis(params.invocation_counter_obis), 2
            )
        finally:
            await session.close()
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise MalformedFrame(f"invocation counter object holds {value!r}")
        return value

    async def resynchronise(self, params: ConnectionParams) -> bool | None:
        """Move this meter's stored counter past the meter's counter object (read over the
        public association). True when the meter was ahead of the store, False when not,
        None when the counter could not be read."""
        try:
            meter_counter = await self.read_meter_counter(params)
        except DriverError:
            return None
        before = await self._peek(params.meter_id)
        if self.counters.blocking:
            await asyncio.to_thread(self.counters.advance_to, params.meter_id, meter_counter + 1)
        else:
            self.counters.advance_to(params.meter_id, meter_counter + 1)
        return meter_counter > before

    async def _peek(self, meter_id: str) -> int:
        if self.counters.blocking:
            return await asyncio.to_thread(self.counters.peek, meter_id)
        return self.counters.peek(meter_id)

    async def ping(self, params: ConnectionParams) -> PingResult:
        started = time.perf_counter()
        async with await self.associate(params) as meter:
            name = await meter.read_logical_device_name()
        return PingResult(name, time.perf_counter() - started)


class DlmsMeterSession(MeterSession):
    def __init__(self, session: DlmsSession) -> None:
        self._session = session
        self.params = session.params
        self._lock = asyncio.Lock()
        self._broken: DriverError | None = None
        self._closed = False
        self._scalers: dict[tuple[int, str], tuple[int, int]] = {}
        self._profiles: dict[str, tuple[list[CaptureObject], int | None]] = {}

    @property
    def dlms(self) -> DlmsSession:
        """The underlying session, for COSEM-level access beyond this interface."""
        return self._session

    async def _run(
        self, what: str, work: Callable[[], Awaitable[T]], timeout: float | None = None
    ) -> T:
        async with self._lock:
            if self._closed:
                raise ConnectionLost(f"{what}: the session was released")
            if self._broken is not None:
                raise ConnectionLost(f"{what}: the session failed earlier ({self._broken.code})")
            try:
                return await _bounded(timeout or self.params.timeouts.operation, what, work())
            except _SESSION_KEEPING:
                raise
            except DriverError as exc:
                self._broken = exc
                raise
            except Exception as exc:
                error = map_exception(exc, what)
                self._broken = error
                raise error from exc
            except asyncio.CancelledError:
                self._broken = DriverError(f"{what}: cancelled")
                raise

    async def release(self) -> None:
        """Release politely even after an error (most meters allow one association at a
        time), unless the connection itself is gone; bounded by the release timeout."""
        async with self._lock:
            if self._closed:
                return
            self._closed = True
            await self._session.close(graceful=not isinstance(self._broken, ConnectionLost))

    # -- registers --------------------------------------------------------------------------

    async def _scalers_for(self, objects: Sequence[tuple[int, str, int]]) -> None:
        """Fill the scaler cache for (class_id, obis, scaler attribute) not yet known."""
        wanted = [o for o in objects if (o[0], o[1]) not in self._scalers]
        if not wanted:
            return
        results = await self._session.get_many(wanted)
        for (class_id, obis, _), value in zip(wanted, results, strict=True):
            if isinstance(value, DriverError):
                raise value
            self._scalers[(class_id, obis)] = scaler_unit(value, obis)

    async def _read_registers(self, identifiers: Sequence[str]) -> list[RegisterValue]:
        names = [normalise_obis(i) for i in identifiers]
        items: list[tuple[int, str, int]] = []
        for obis in names:
            if (ClassId.REGISTER, obis) not in self._scalers:
                items.append((ClassId.REGISTER, obis, cosem.REGISTER_SCALER_UNIT))
            items.append((ClassId.REGISTER, obis, cosem.REGISTER_VALUE))
        results = iter(await self._session.get_many(items))
        out = []
        for obis in names:
            if (ClassId.REGISTER, obis) not in self._scalers:
                su = next(results)
                if isinstance(su, DriverError):
                    next(results)
                    out.append(await self._read_other_register(obis, su))
                    continue
                self._scalers[(ClassId.REGISTER, obis)] = scaler_unit(su, obis)
            value = next(results)
            if isinstance(value, DriverError):
                raise value
            scaler, unit = self._scalers[(ClassId.REGISTER, obis)]
            out.append(register_value(obis, value, scaler, unit))
        return out

    async def _read_other_register(self, obis: str, error: DriverError) -> RegisterValue:
        """Not a Register (IC 3): try Extended register (IC 4, with status and capture time),
        then Data (IC 1, no scaler)."""
        if not isinstance(error, ObjectNotFound):
            raise error
        try:
            su, value, status, captured = await self._session.get_many(
                [
                    (ClassId.EXTENDED_REGISTER, obis, 3),
                    (ClassId.EXTENDED_REGISTER, obis, 2),
                    (ClassId.EXTENDED_REGISTER, obis, 4),
                    (ClassId.EXTENDED_REGISTER, obis, 5),
                ]
            )
            for part in (su, value):
                if isinstance(part, DriverError):
                    raise part
            scaler, unit = scaler_unit(su, obis)
            self._scalers[(ClassId.EXTENDED_REGISTER, obis)] = (scaler, unit)
            when = None
            if captured is not None and not isinstance(captured, DriverError):
                parsed = (
                    axdr.CosemDateTime.from_bytes(captured)
                    if isinstance(captured, bytes) and len(captured) == 12
                    else captured
                )
                when = parsed.to_datetime() if isinstance(parsed, axdr.CosemDateTime) else None
            return register_value(
                obis,
                value,
                scaler,
                unit,
                status=status if isinstance(status, int) and not isinstance(status, bool) else None,
                capture_time=when,
            )
        except ObjectNotFound:
            pass
        value = await self._session.get(ClassId.DATA, obis, 2)
        return register_value(obis, value, 0, 255)

    async def read_registers(self, identifiers: Sequence[str]) -> list[RegisterValue]:
        if not identifiers:
            return []
        return await self._run("read registers", lambda: self._read_registers(identifiers))

    # -- profiles -------------------------------------------------------------------------------

    async def _profile_columns(self, obis: str) -> tuple[list[CaptureObject], int | None]:
        cached = self._profiles.get(obis)
        if cached is not None:
            return cached
        captures, period = await self._session.get_many(
            [
                (ClassId.PROFILE_GENERIC, obis, cosem.PROFILE_CAPTURE_OBJECTS),
                (ClassId.PROFILE_GENERIC, obis, cosem.PROFILE_CAPTURE_PERIOD),
            ]
        )
        if isinstance(captures, DriverError):
            raise captures
        columns = capture_objects(captures, obis)
        seconds = period if isinstance(period, int) and not isinstance(period, bool) else None
        self._profiles[obis] = (columns, seconds)
        return columns, seconds

    async def _read_buffer(
        self, obis: str, start: datetime | None, end: datetime | None
    ) -> tuple[RowDecoder, Any]:
        columns, period = await self._profile_columns(obis)
        await self._scalers_for(
            [
                (c.class_id, c.obis, attr)
                for c in columns
                if (attr := c.scaler_attribute) is not None
            ]
        )
        access = None
        if start is not None or end is not None:
            clock = next((c for c in columns if c.is_clock), None)
            if clock is None:
                raise DeviceError(f"{obis}: the profile captures no clock to select a range by")
            if start is None or end is None:
                raise ConfigurationError("a range needs both start and end")
            access = range_access(
                clock,
                axdr.CosemDateTime.from_datetime(start),
                axdr.CosemDateTime.from_datetime(end),
            )
        buffer = await self._session.get(
            ClassId.PROFILE_GENERIC, obis, cosem.PROFILE_BUFFER, access
        )
        return RowDecoder(columns, self._scalers, period, obis), buffer

    async def read_load_profile(
        self, start: datetime, end: datetime, profile: str | None = None
    ) -> list[ProfileRow]:
        obis = normalise_obis(profile or cosem.LOAD_PROFILE_OBIS)
        _check_range(start, end)

        async def work() -> list[ProfileRow]:
            decoder, buffer = await self._read_buffer(obis, start, end)
            return decoder.profile_rows(buffer)

        return await self._run(f"read load profile {obis}", work)

    async def read_events(
        self, log: str | None = None, start: datetime | None = None, end: datetime | None = None
    ) -> list[MeterEvent]:
        obis = normalise_obis(log or cosem.EVENT_LOG_OBIS)
        if (start is None) != (end is None):
            raise ConfigurationError("a range needs both start and end")
        if start is not None and end is not None:
            _check_range(start, end)

        async def work() -> list[MeterEvent]:
            decoder, buffer = await self._read_buffer(obis, start, end)
            return decoder.events(buffer, obis)

        return await self._run(f"read event log {obis}", work)

    # -- clock ---------------------------------------------------------------------------------

    async def _read_clock(self) -> ClockReading:
        value = await self._session.get(ClassId.CLOCK, cosem.CLOCK_OBIS, cosem.CLOCK_TIME)
        return clock_reading(value)

    async def read_clock(self) -> ClockReading:
        return await self._run("read clock", self._read_clock)

    async def set_clock(
        self, time: datetime, *, deviation: int | None = None, dst: bool | None = None
    ) -> ClockReading:
        try:
            encoded = axdr.CosemDateTime.from_datetime(time, deviation=deviation, dst=dst)
        except ValueError as exc:
            raise ConfigurationError(f"set clock: {exc}") from exc
        if encoded.deviation is None:
            raise ConfigurationError("set clock: give an aware time or a deviation")

        async def work() -> ClockReading:
            await self._session.set(
                ClassId.CLOCK,
                cosem.CLOCK_OBIS,
                cosem.CLOCK_TIME,
                axdr.date_time_octets(encoded),
            )
            return await self._read_clock()

        return await self._run("set clock", work)

    # -- disconnect control --------------------------------------------------------------------

    async def _switch_state(self) -> SwitchState:
        obis = cosem.DISCONNECT_CONTROL_OBIS
        output, control, mode = await self._session.get_many(
            [
                (ClassId.DISCONNECT_CONTROL, obis, cosem.DC_OUTPUT_STATE),
                (ClassId.DISCONNECT_CONTROL, obis, cosem.DC_CONTROL_STATE),
                (ClassId.DISCONNECT_CONTROL, obis, cosem.DC_CONTROL_MODE),
            ]
        )
        for part in (output, control):
            if isinstance(part, DriverError):
                raise part
        if not isinstance(output, bool) or control not in (0, 1, 2):
            raise MalformedFrame(f"disconnect control state {output!r}/{control!r}")
        return SwitchState(
            output,
            ControlState(control),
            mode if isinstance(mode, int) and not isinstance(mode, bool) else None,
        )

    async def _switch(self, method: int) -> SwitchState:
        await self._session.action(
            ClassId.DISCONNECT_CONTROL, cosem.DISCONNECT_CONTROL_OBIS, method, axdr.int8(0)
        )
        return await self._switch_state()

    async def read_switch_state(self) -> SwitchState:
        return await self._run("read switch state", self._switch_state)

    async def disconnect(self) -> SwitchState:
        return await self._run("disconnect", lambda: self._switch(cosem.DC_REMOTE_DISCONNECT))

    async def arm(self) -> SwitchState:
        async def work() -> SwitchState:
            state = await self._switch_state()
            if state.control_state == ControlState.READY_FOR_RECONNECTION:
                return state
            return await self._switch(cosem.DC_REMOTE_RECONNECT)

        return await self._run("arm", work)

    async def connect(self) -> SwitchState:
        """remote_reconnect; in the control modes where that only arms, once more if the mode
        allows a remote reconnection. A refusal is not an error when the meter ends up
        connected or armed (the read-back says which); it is when it stays disconnected."""

        async def work() -> SwitchState:
            state = await self._switch_state()
            for _ in range(2):
                if state.control_state == ControlState.CONNECTED:
                    break
                try:
                    state = await self._switch(cosem.DC_REMOTE_RECONNECT)
                except (DeviceError, AccessDenied):
                    state = await self._switch_state()
                    if state.control_state == ControlState.DISCONNECTED:
                        raise
                    break
            return state

        return await self._run("connect", work)

    # -- firmware and identity --------------------------------------------------------------------

    async def transfer_firmware(
        self,
        image: bytes,
        identifier: bytes,
        *,
        activate: bool = True,
        progress: ProgressCallback | None = None,
        timeout: float | None = None,
    ) -> FirmwareProgress:
        return await self._run(
            "firmware transfer",
            lambda: transfer_image(
                self._session, image, identifier, activate=activate, progress=progress
            ),
            timeout,
        )

    async def read_firmware_version(self) -> str:
        async def work() -> str:
            value = await self._session.get(ClassId.DATA, cosem.FIRMWARE_VERSION_OBIS, 2)
            return text(value, "firmware version")

        return await self._run("read firmware version", work)

    async def read_logical_device_name(self) -> str:
        async def work() -> str:
            value = await self._session.get(ClassId.DATA, cosem.LOGICAL_DEVICE_NAME_OBIS, 2)
            return text(value, "logical device name")

        return await self._run("read logical device name", work)
