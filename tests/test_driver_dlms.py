"""The DLMS driver against our simulator: every operation, WRAPPER and HDLC, unciphered and
suite-0 ciphered, with none / LLS / HLS-GMAC authentication.

The simulator runs in the test's own event loop (``drivers.sim.fleet.Fleet``); ``Sim`` turns
its address book into ConnectionParams. Other driver test modules import the helpers here.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import pytest

from drivers.base import (
    ConnectionParams,
    ControlState,
    ImageTransferStatus,
    Timeouts,
)
from drivers.dlms import DlmsDriver, MemoryCounterStore
from drivers.errors import ConfigurationError, DeviceError, ObjectNotFound
from drivers.sim.faults import FaultSpec, FleetFaults
from drivers.sim.fleet import Fleet, FleetConfig

T = TypeVar("T")
CLIENT_TITLE = b"OPENHES1"
TEST_TIMEOUT = 30.0
_AUTH = {"none": "none", "low": "lls", "high_gmac": "hls-gmac"}


def run(work: Callable[[], Awaitable[T]], timeout: float = TEST_TIMEOUT) -> T:
    """Run an async test body with a hard bound, so no test can hang."""

    async def bounded() -> T:
        return await asyncio.wait_for(work(), timeout)

    return asyncio.run(bounded())


class Sim:
    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    def meter(self, index: int = 0) -> Any:
        return self.fleet.meter(index)

    def params(self, index: int = 0, **overrides: Any) -> ConnectionParams:
        row = self.fleet.address_book()[index]
        keyed = row["security_suite"] == "0" or row["authentication"] == "high_gmac"
        params = ConnectionParams(
            meter_id=row["mRID"],
            host=row["host"],
            port=int(row["port"]),
            transport=row["transport"],
            client_address=int(row["client_address"]),
            server_address=int(row["wport"] or row["server_logical"]),
            physical_address=int(row["server_physical"]) if row["server_physical"] else None,
            authentication=_AUTH[row["authentication"]],
            password=row["password"].encode() or None,
            security_suite=0 if row["security_suite"] == "0" else None,
            block_cipher_key=bytes.fromhex(row["encryption_key"]) if keyed else None,
            authentication_key=bytes.fromhex(row["authentication_key"]) if keyed else None,
            system_title=CLIENT_TITLE if keyed else None,
            server_system_title=bytes.fromhex(row["system_title"]) if keyed else None,
            timeouts=Timeouts(connect=2.0, frame=1.0, operation=15.0, release=1.0),
        )
        return dataclasses.replace(params, **overrides)


@contextlib.asynccontextmanager
async def simulated(
    meters: int = 1,
    faults: FaultSpec | None = None,
    per_meter: dict[int, FaultSpec] | None = None,
    **config: Any,
) -> AsyncIterator[Sim]:
    fleet_faults = FleetFaults(default=faults or FaultSpec(), per_meter=per_meter or {})
    fleet = Fleet(
        FleetConfig(
            meters=meters,
            base_port=0,
            shared_port=True,
            key_secret=b"openhes-test-secret-0123456789ab",
            faults=fleet_faults,
            **config,
        )
    )
    servers = await fleet.serve()
    try:
        yield Sim(fleet)
    finally:
        await fleet.close(servers)


MATRIX = [
    ("wrapper", "none", "none"),
    ("hdlc", "none", "none"),
    ("wrapper", "low", "none"),
    ("hdlc", "low", "suite0"),
    ("wrapper", "high_gmac", "suite0"),
    ("hdlc", "high_gmac", "suite0"),
]
REGISTERS = ["1.0.1.8.0.255", "1.0.2.8.0.255", "1.0.32.7.0.255", "1.0.31.7.0.255"]


@pytest.mark.parametrize(("transport", "authentication", "security"), MATRIX)
def test_every_operation(transport: str, authentication: str, security: str) -> None:
    async def body() -> None:
        async with simulated(
            transport=transport, authentication=authentication, security=security
        ) as sim:
            driver = DlmsDriver(MemoryCounterStore())
            params = sim.params()
            ping = await driver.ping(params)
            assert ping.logical_device_name == sim.meter().spec.logical_device_name.decode()
            async with await driver.associate(params) as meter:
                # registers: exact values with scaler and unit
                values = await meter.read_registers(REGISTERS)
                assert [v.obis for v in values] == REGISTERS
                assert [v.unit for v in values] == ["Wh", "Wh", "V", "A"]
                volts = values[2]
                assert volts.scaler == -1 and volts.value == Decimal(volts.raw).scaleb(-1)
                assert isinstance(volts.value, Decimal) and volts.unit_code == 35

                # load profile by range: 96 quarter-hours, the last one matches the register
                clock = await meter.read_clock()
                end = clock.time.replace(
                    minute=clock.time.minute // 15 * 15, second=0, microsecond=0
                )
                rows = await meter.read_load_profile(end - timedelta(minutes=15 * 95), end)
                assert len(rows) == 96
                assert [r.timestamp for r in rows] == [
                    end - timedelta(minutes=15 * (95 - i)) for i in range(96)
                ]
                assert all(r.timestamp.tzinfo is UTC for r in rows)
                assert set(rows[0].values) == {f"1.0.{c}.8.0.255" for c in (1, 2, 3, 4)}
                imports = [r.values["1.0.1.8.0.255"].value for r in rows]
                assert imports == sorted(imports)  # cumulative energy never decreases
                assert rows[-1].values["1.0.1.8.0.255"].unit == "Wh"

                # clock: deviation and DST as the meter says; set and read back
                assert clock.deviation in (-60, -120) and clock.dst == (clock.deviation == -120)
                assert abs(clock.time - datetime.now(UTC)) < timedelta(seconds=5)
                target = datetime.now(UTC) + timedelta(hours=2)
                after = await meter.set_clock(target, deviation=-60, dst=False)
                assert abs(after.time - target) < timedelta(seconds=3)

                # disconnector with read-back; its log records the actions
                state = await meter.disconnect()
                assert (state.output_state, state.control_state) == (
                    False,
                    ControlState.DISCONNECTED,
                )
                state = await meter.connect()
                assert (state.output_state, state.control_state) == (True, ControlState.CONNECTED)
                assert (await meter.read_switch_state()).output_state is True
                events = await meter.read_events("0.0.99.98.2.255")
                assert [e.code for e in events][-2:] == [62, 63]
                standard = await meter.read_events()  # the clock change was logged
                assert {4, 5} <= {e.code for e in standard}
                meter_now = (await meter.read_clock()).time  # two hours ahead since set_clock
                recent = await meter.read_events(
                    "0.0.99.98.2.255",
                    meter_now - timedelta(minutes=5),
                    meter_now + timedelta(minutes=1),
                )
                assert [e.code for e in recent] == [62, 63]

                # identity and firmware
                assert await meter.read_firmware_version() == "OHS-SIM-1.0.0"
                image = bytes(range(256)) * 3 + b"tail"
                progress = await meter.transfer_firmware(image, b"OHS-SIM-2.0.0")
                assert progress.status == ImageTransferStatus.ACTIVATION_SUCCESSFUL
                assert progress.blocks_total == progress.blocks_sent == 4
                assert await meter.read_firmware_version() == "OHS-SIM-2.0.0"
                assert sim.meter().image_activated == image

                # an object the meter lacks: a specific error, the session stays usable
                with pytest.raises(ObjectNotFound):
                    await meter.read_registers(["1.0.99.99.0.255"])
                assert len(await meter.read_registers(REGISTERS[:1])) == 1

    run(body)


def test_register_of_other_classes_and_with_list_fallback() -> None:
    async def body() -> None:
        async with simulated() as sim, await DlmsDriver().associate(sim.params()) as meter:
            # a Data object holding a number (power failures): scaler 0, no unit
            (failures,) = await meter.read_registers(["0.0.96.7.21.255"])
            assert failures.scaler == 0 and failures.unit == ""
            # many registers at once: GET-with-list in chunks of ten
            many = [f"1.0.{c}.8.{t}.255" for c in (1, 2) for t in (0, 1, 2)] + [
                f"1.0.{v}.7.0.255" for v in (32, 52, 72, 31, 51, 71, 14, 13)
            ]
            values = await meter.read_registers(many)
            assert len(values) == 14 and values[-1].unit == ""
            t1, t2 = values[1].raw, values[2].raw
            assert abs(t1 + t2 - values[0].raw) <= 1

    run(body)


def test_arm_then_manual_reconnection_in_control_mode_1() -> None:
    async def body() -> None:
        async with simulated() as sim, await DlmsDriver().associate(sim.params()) as meter:
            sim.meter().disconnector.mode = 1  # remote reconnection only arms
            assert (await meter.disconnect()).control_state == ControlState.DISCONNECTED
            armed = await meter.arm()
            assert (armed.output_state, armed.control_state) == (
                False,
                ControlState.READY_FOR_RECONNECTION,
            )
            assert armed.control_mode == 1
            # connect cannot do more than arm in this mode: the state says so
            assert (await meter.connect()).control_state == ControlState.READY_FOR_RECONNECTION
            sim.meter().manual_reconnect()  # the customer presses the button
            state = await meter.read_switch_state()
            assert (state.output_state, state.control_state) == (True, ControlState.CONNECTED)
            sim.meter().disconnector.mode = 0  # no remote switching at all
            with pytest.raises(DeviceError):
                await meter.disconnect()
            assert (await meter.read_switch_state()).output_state is True

    run(body)


def test_bad_arguments_keep_the_session() -> None:
    async def body() -> None:
        async with simulated() as sim, await DlmsDriver().associate(sim.params()) as meter:
            now = datetime.now(UTC)
            for start, end in (
                (now, now - timedelta(hours=1)),
                (now.replace(tzinfo=None), now),
                ("yesterday", now),
            ):
                with pytest.raises(ConfigurationError):
                    await meter.read_load_profile(start, end)  # type: ignore[arg-type]
            with pytest.raises(ConfigurationError):
                await meter.read_registers(["not.an.obis"])
            with pytest.raises(ConfigurationError):
                await meter.read_events(None, now, None)
            with pytest.raises(ConfigurationError):
                await meter.set_clock(now.replace(tzinfo=None))  # no offset, no deviation
            assert len(await meter.read_registers(REGISTERS)) == 4

    run(body)


def test_concurrent_sessions_to_many_meters() -> None:
    async def body() -> None:
        async with simulated(meters=20, security="suite0", authentication="high_gmac") as sim:
            driver = DlmsDriver()

            async def read(index: int) -> int:
                async with await driver.associate(sim.params(index)) as meter:
                    return len(await meter.read_registers(REGISTERS))

            assert await asyncio.gather(*(read(i) for i in range(20))) == [4] * 20

    run(body)
