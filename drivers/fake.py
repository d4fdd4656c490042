"""An in-process driver with no network: a stand-in for the DEVICES in engine tests and
benchmarks. It implements :class:`drivers.base.Driver` completely and returns generated,
deterministic data (values follow from the meter id and the time asked), with a configurable
latency and failures injected per meter and per attempt.

``FakeDriver.fail`` scripts failures: ``fail["m1"] = [ConnectionLost("x"), None]`` makes the
first association with m1 fail and the second succeed; ``fail_hosts`` makes every association
to a host fail (a dead primary path). The driver counts what it saw: associations per meter
and host, and the most sessions that were open at once per host.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from drivers.base import (
    ClockReading,
    ConnectionParams,
    ControlState,
    Driver,
    FirmwareProgress,
    ImageTransferStatus,
    MeterEvent,
    MeterSession,
    PingResult,
    ProfileRow,
    ProgressCallback,
    RegisterValue,
    SwitchState,
)
from drivers.errors import DriverError, ObjectNotFound

_UNITS = {"1.0.1.8.0.255": ("Wh", 0), "1.0.2.8.0.255": ("Wh", 0), "1.0.32.7.0.255": ("V", -1)}


def _seed(text: str) -> int:
    return zlib.crc32(text.encode())


class FakeSession(MeterSession):
    def __init__(self, driver: FakeDriver, params: ConnectionParams) -> None:
        self.driver = driver
        self.params = params
        self._switch = driver.switches.setdefault(params.meter_id, True)
        self._open = True

    async def _pause(self) -> None:
        if self.driver.latency:
            await asyncio.sleep(self.driver.latency)

    async def read_registers(self, identifiers: Sequence[str]) -> list[RegisterValue]:
        await self._pause()
        base = _seed(self.params.meter_id)
        out = []
        for obis in identifiers:
            if obis not in _UNITS:
                raise ObjectNotFound(f"{obis} is not on this meter")
            unit, scaler = _UNITS[obis]
            out.append(
                RegisterValue.exact(obis, base % 1_000_000 + _seed(obis) % 997, scaler, unit)
            )
        return out

    async def read_load_profile(
        self, start: datetime, end: datetime, profile: str | None = None
    ) -> list[ProfileRow]:
        await self._pause()
        rows = []
        t = start.replace(minute=start.minute - start.minute % 15, second=0, microsecond=0)
        if t < start:
            t += timedelta(minutes=15)
        while t <= end:
            raw = (_seed(self.params.meter_id) + int(t.timestamp()) // 900) % 5000
            value = RegisterValue.exact("1.0.1.29.0.255", raw, 0, "Wh", capture_time=t)
            rows.append(ProfileRow(t, 0, {"1.0.1.29.0.255": value}))
            t += timedelta(minutes=15)
        return rows

    async def read_events(
        self, log: str | None = None, start: datetime | None = None, end: datetime | None = None
    ) -> list[MeterEvent]:
        await self._pause()
        return [MeterEvent(1, datetime(2026, 1, 1, tzinfo=UTC), log or "0.0.99.98.0.255")]

    async def read_clock(self) -> ClockReading:
        await self._pause()
        return ClockReading(datetime.now(UTC), 0, False, 0)

    async def set_clock(
        self, time: datetime, *, deviation: int | None = None, dst: bool | None = None
    ) -> ClockReading:
        await self._pause()
        return ClockReading(time, deviation, dst, 0)

    def _state(self) -> SwitchState:
        on = self.driver.switches[self.params.meter_id]
        state = ControlState.CONNECTED if on else ControlState.DISCONNECTED
        return SwitchState(on, state)

    async def read_switch_state(self) -> SwitchState:
        await self._pause()
        return self._state()

    async def disconnect(self) -> SwitchState:
        await self._pause()
        self.driver.switches[self.params.meter_id] = False
        self.driver.controls[self.params.meter_id] += 1
        return self._state()

    async def connect(self) -> SwitchState:
        await self._pause()
        self.driver.switches[self.params.meter_id] = True
        self.driver.controls[self.params.meter_id] += 1
        return self._state()

    async def arm(self) -> SwitchState:
        await self._pause()
        return SwitchState(False, ControlState.READY_FOR_RECONNECTION)

    async def transfer_firmware(
        self,
        image: bytes,
        identifier: bytes,
        *,
        activate: bool = True,
        progress: ProgressCallback | None = None,
        timeout: float | None = None,
    ) -> FirmwareProgress:
        await self._pause()
        blocks = max(1, -(-len(image) // 200))
        status = (
            ImageTransferStatus.ACTIVATION_SUCCESSFUL
            if activate
            else ImageTransferStatus.VERIFICATION_SUCCESSFUL
        )
        result = FirmwareProgress(identifier, len(image), 200, blocks, blocks, 0, 0, status, "done")
        if progress is not None:
            progress(result)
        return result

    async def read_firmware_version(self) -> str:
        await self._pause()
        return "fake-1.0"

    async def read_logical_device_name(self) -> str:
        await self._pause()
        return f"FAKE{self.params.meter_id}"

    async def release(self) -> None:
        if self._open:
            self._open = False
            self.driver.open[self.params.host] -= 1


class FakeDriver(Driver):
    protocol = "fake"

    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency
        self.fail: dict[str, list[DriverError | None]] = {}
        self.fail_hosts: dict[str, DriverError] = {}
        self.associations: Counter[str] = Counter()
        self.by_host: Counter[str] = Counter()
        self.open: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self.connect_times: defaultdict[str, list[float]] = defaultdict(list)
        self.switches: dict[str, bool] = {}
        self.controls: Counter[str] = Counter()
        self.order: list[str] = []

    async def associate(self, params: ConnectionParams) -> MeterSession:
        meter, host = params.meter_id, params.host
        self.associations[meter] += 1
        self.by_host[host] += 1
        self.connect_times[host].append(time.monotonic())
        self.order.append(meter)
        self.open[host] += 1
        if self.open[host] > self.peak[host]:
            self.peak[host] = self.open[host]
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            if host in self.fail_hosts:
                raise self.fail_hosts[host]
            script = self.fail.get(meter)
            if script:
                error = script.pop(0)
                if error is not None:
                    raise error
        except BaseException:
            self.open[host] -= 1
            raise
        return FakeSession(self, params)

    async def ping(self, params: ConnectionParams) -> PingResult:
        async with await self.associate(params) as session:
            name = await session.read_logical_device_name()
        return PingResult(name, self.latency)


__all__ = ["FakeDriver", "FakeSession"]
