"""The driver against every fault the simulator injects: latency, loss, garbage, stalls
(a meter going silent, also half way through a block transfer), counter resets and jumps
(re-synchronisation), authentication failures, clock drift and power outages."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from test_driver_dlms import REGISTERS, run, simulated

from drivers.base import Timeouts
from drivers.dlms import DlmsDriver, MemoryCounterStore, SqliteCounterStore
from drivers.errors import (
    AssociationRefused,
    AuthenticationFailed,
    ConnectionLost,
    CounterOutOfSync,
    DriverTimeout,
    MalformedFrame,
)
from drivers.sim.faults import FaultSpec, Latency

FAST = Timeouts(connect=1.0, frame=0.3, operation=10.0, release=0.3)
CIPHERED = {"security": "suite0", "authentication": "high_gmac"}


async def _full_read(driver: DlmsDriver, params: object) -> int:
    async with await driver.associate(params) as meter:  # type: ignore[arg-type]
        await meter.read_registers(REGISTERS)
        now = datetime.now(UTC)
        rows = await meter.read_load_profile(now - timedelta(hours=24), now)
        return len(rows)


@pytest.mark.parametrize("transport", ["wrapper", "hdlc"])
def test_latency_within_the_frame_timeout_is_only_slower(transport: str) -> None:
    async def body() -> None:
        async with simulated(
            transport=transport, faults=FaultSpec(latency=Latency("uniform", 0.01, 0.05))
        ) as sim:
            started = time.monotonic()
            assert await _full_read(DlmsDriver(), sim.params()) == 96
            assert time.monotonic() - started > 0.08

    run(body)


def test_latency_beyond_the_frame_timeout_is_a_timeout() -> None:
    async def body() -> None:
        async with simulated(faults=FaultSpec(latency=Latency("fixed", 2.0))) as sim:
            params = sim.params(timeouts=FAST, retries=1)
            started = time.monotonic()
            with pytest.raises(DriverTimeout):
                await DlmsDriver().associate(params)
            assert time.monotonic() - started < 2 * 0.3 + 0.5

    run(body)


@pytest.mark.parametrize(
    ("transport", "security"),
    [("wrapper", "none"), ("hdlc", "none"), ("wrapper", "suite0"), ("hdlc", "suite0")],
)
@pytest.mark.parametrize("fault", ["loss", "garbage"])
def test_lost_and_garbled_answers_are_recovered_by_frame_retries(
    transport: str, security: str, fault: str
) -> None:
    async def body() -> None:
        spec = FaultSpec(**{fault: 0.15})
        extra = CIPHERED if security == "suite0" else {}
        meters = 3 if transport == "wrapper" else 2
        async with simulated(meters=meters, transport=transport, faults=spec, **extra) as sim:
            driver = DlmsDriver(MemoryCounterStore())
            for index in range(meters):
                # HDLC: larger frames, fewer of them to lose
                params = sim.params(index, timeouts=FAST, retries=6, hdlc_max_info=512)
                assert await _full_read(driver, params) == 96

    run(body)


def test_garbage_only_is_a_malformed_frame_error() -> None:
    async def body() -> None:
        async with simulated(faults=FaultSpec(garbage=1.0)) as sim:
            with pytest.raises(MalformedFrame) as caught:
                await DlmsDriver().associate(sim.params(timeouts=FAST, retries=1))
            assert caught.value.detail["bytes"] > 0

    run(body)


def test_a_stalled_meter_is_a_timeout_and_the_next_session_works() -> None:
    async def body() -> None:
        async with simulated(faults=FaultSpec(stall=1.0, stall_seconds=0.8)) as sim:
            params = sim.params(timeouts=FAST, retries=1)
            with pytest.raises(DriverTimeout):
                await DlmsDriver().associate(params)

    run(body)


@pytest.mark.parametrize("transport", ["wrapper", "hdlc"])
def test_meter_going_silent_half_way_through_a_block_transfer(transport: str) -> None:
    async def body() -> None:
        spec = FaultSpec(latency=Latency("fixed", 0.01))
        async with simulated(transport=transport, faults=spec, max_pdu_size=128) as sim:
            params = sim.params(
                timeouts=Timeouts(connect=1, frame=0.4, operation=20, release=0.2), retries=1
            )
            meter_model = sim.meter()
            async with await DlmsDriver().associate(params) as meter:
                await meter.read_registers(REGISTERS[:1])
                now = datetime.now(UTC)
                read = asyncio.ensure_future(meter.read_load_profile(now - timedelta(days=3), now))
                await asyncio.sleep(0.25)  # many small blocks in, the meter loses power
                assert not read.done()
                clock_now = meter_model.clock.now()
                meter_model.power_outage(clock_now, clock_now + 3600)
                started = time.monotonic()
                with pytest.raises(DriverTimeout):
                    await read
                assert time.monotonic() - started < 0.4 * 2 + 0.3
                with pytest.raises(ConnectionLost):  # the session is spent, not half-alive
                    await meter.read_clock()

    run(body)


def test_operation_timeout_bounds_a_slow_trickle() -> None:
    async def body() -> None:
        spec = FaultSpec(latency=Latency("fixed", 0.05))
        async with simulated(faults=spec, max_pdu_size=128) as sim:
            params = sim.params(timeouts=Timeouts(connect=1, frame=1, operation=0.6, release=0.2))
            started = time.monotonic()
            async with await DlmsDriver().associate(params) as meter:
                now = datetime.now(UTC)
                with pytest.raises(DriverTimeout):
                    await meter.read_load_profile(now - timedelta(days=3), now)
            assert time.monotonic() - started < 2.0

    run(body)


def test_counter_jump_is_resynchronised_from_the_counter_object() -> None:
    async def body() -> None:
        async with simulated(**CIPHERED) as sim:
            store = MemoryCounterStore()
            driver = DlmsDriver(store)
            params = sim.params()
            assert await _full_read(driver, params) == 96
            before = store.peek(params.meter_id)
            sim.meter().rx_invocation_counter += 1_000_000  # another head-end used the meter
            assert await _full_read(driver, params) == 96
            assert store.peek(params.meter_id) > before + 1_000_000

    run(body)


def test_counters_persisted_in_sqlite_survive_a_restart(tmp_path: Path) -> None:
    async def body() -> None:
        async with simulated(**CIPHERED) as sim:
            params = sim.params()
            first = SqliteCounterStore(tmp_path / "counters.db")
            assert await _full_read(DlmsDriver(first), params) == 96
            used = first.peek(params.meter_id)
            first.close()
            again = SqliteCounterStore(tmp_path / "counters.db")  # a new head-end process
            assert again.peek(params.meter_id) == used
            sim.meter().rx_invocation_counter += 5000
            assert await _full_read(DlmsDriver(again), params) == 96
            assert again.peek(params.meter_id) > used + 5000

    run(body)


def test_lost_counter_store_is_resynchronised() -> None:
    async def body() -> None:
        async with simulated(**CIPHERED) as sim:
            params = sim.params()
            for _ in range(3):
                # a fresh store each time: as if the head-end had lost its counters
                assert await _full_read(DlmsDriver(MemoryCounterStore()), params) == 96

    run(body)


def test_counter_jumping_at_every_release_ends_in_counter_out_of_sync() -> None:
    async def body() -> None:
        async with simulated(faults=FaultSpec(counter_jump=1.0), **CIPHERED) as sim:
            driver = DlmsDriver()
            params = sim.params()
            assert await _full_read(driver, params) == 96
            # each release (the public one used to re-synchronise included) jumps again
            with pytest.raises(CounterOutOfSync):
                await driver.associate(params)

    run(body)


def test_meter_counter_reset_is_harmless() -> None:
    async def body() -> None:
        async with simulated(faults=FaultSpec(counter_reset=1.0), **CIPHERED) as sim:
            driver = DlmsDriver()
            for _ in range(3):
                assert await _full_read(driver, sim.params()) == 96
            assert sim.meter().tx_invocation_counter < 50  # it did restart its own counter

    run(body)


@pytest.mark.parametrize(
    "config", [{"authentication": "low"}, CIPHERED, {"authentication": "low", "security": "suite0"}]
)
def test_authentication_failure(config: dict[str, str]) -> None:
    async def body() -> None:
        async with simulated(faults=FaultSpec(auth_failure=1.0), **config) as sim:
            with pytest.raises(AuthenticationFailed):
                await DlmsDriver().associate(sim.params())

    run(body)


def test_wrong_password_and_keys() -> None:
    async def body() -> None:
        async with simulated(authentication="low") as sim:
            with pytest.raises(AuthenticationFailed):
                await DlmsDriver().associate(sim.params(password=b"wrong!!!"))
        async with simulated(**CIPHERED) as sim:
            # wrong keys: the meter cannot decipher the AARQ and refuses it
            with pytest.raises((AuthenticationFailed, AssociationRefused)):
                await DlmsDriver().associate(sim.params(authentication_key=bytes(16)))
            with pytest.raises(AuthenticationFailed):  # not the system title we expect
                await DlmsDriver().associate(sim.params(server_system_title=b"EVILMETR"))

    run(body)


def test_clock_drift_shows_in_the_reading() -> None:
    async def body() -> None:
        async with simulated(faults=FaultSpec(clock_offset_s=-300.0)) as sim:
            async with await DlmsDriver().associate(sim.params()) as meter:
                clock = await meter.read_clock()
            skew = (datetime.now(UTC) - clock.time).total_seconds()
            assert 295 < skew < 305

    run(body)


def test_power_outages_leave_gaps_flags_and_events() -> None:
    async def body() -> None:
        spec = FaultSpec(outages_per_month=4.0, outage_minutes=(60, 120))
        async with simulated(faults=spec) as sim:
            params = sim.params(timeouts=Timeouts(connect=1, frame=5, operation=20, release=1))
            async with await DlmsDriver().associate(params) as meter:
                events = await meter.read_events()
                downs = [e.timestamp for e in events if e.code == 1]
                ups = [e.timestamp for e in events if e.code == 2]
                assert downs and ups, "the seeded meter has outages in its standard log"
                down, up = downs[-1], ups[-1]
                assert timedelta(minutes=60) <= up - down <= timedelta(minutes=120)
                rows = await meter.read_load_profile(
                    down - timedelta(hours=1), up + timedelta(hours=1)
                )
            stamps = [r.timestamp for r in rows]
            assert not [t for t in stamps if down < t < up]  # no entries while without power
            after = next(r for r in rows if r.timestamp >= up)
            assert after.status is not None and after.status & 0x80  # power-down flag
            before = [r for r in rows if r.timestamp <= down]
            assert before and all(not r.status & 0x80 for r in before)

    run(body)
