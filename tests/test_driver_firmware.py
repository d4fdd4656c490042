"""Firmware image transfer against the simulator: lost blocks re-sent from
image_transferred_blocks_status, an interrupted transfer resumed in a new session, and the
refusals that end in a specific error."""

from __future__ import annotations

import asyncio

import pytest
from test_driver_dlms import run, simulated

from drivers.base import FirmwareProgress, ImageTransferStatus
from drivers.dlms import DlmsDriver
from drivers.errors import DriverError, FirmwareTransferFailed
from drivers.sim.faults import FaultSpec

IMAGE = bytes((i * 7 + 3) & 0xFF for i in range(200 * 30 + 17))  # 31 blocks of 200 bytes


@pytest.mark.parametrize(("transport", "security"), [("wrapper", "none"), ("hdlc", "suite0")])
def test_lost_blocks_are_sent_again(transport: str, security: str) -> None:
    async def body() -> None:
        extra = {"authentication": "high_gmac"} if security == "suite0" else {}
        async with simulated(
            transport=transport, security=security, faults=FaultSpec(block_loss=0.3), **extra
        ) as sim:
            seen: list[FirmwareProgress] = []
            async with await DlmsDriver().associate(sim.params()) as meter:
                result = await meter.transfer_firmware(IMAGE, b"FW-2.1", progress=seen.append)
                assert await meter.read_firmware_version() == "FW-2.1"
            assert result.status == ImageTransferStatus.ACTIVATION_SUCCESSFUL
            assert result.blocks_total == 31 and result.blocks_missing == 0
            assert result.blocks_resent > 0 and result.blocks_sent == 31 + result.blocks_resent
            assert "resume" in {p.phase for p in seen}
            assert sim.meter().image_activated == IMAGE

    run(body)


def test_interrupted_transfer_resumes_in_a_new_session() -> None:
    async def body() -> None:
        async with simulated() as sim:
            driver = DlmsDriver()
            ten = asyncio.Event()

            def watch(p: FirmwareProgress) -> None:
                if p.blocks_sent >= 10:
                    ten.set()

            meter = await driver.associate(sim.params())
            transfer = asyncio.ensure_future(
                meter.transfer_firmware(IMAGE, b"FW-3.0", progress=watch)
            )
            await ten.wait()
            transfer.cancel()  # the link drops half way
            with pytest.raises(asyncio.CancelledError):
                await transfer
            await meter.release()
            assert sim.meter().image.status == ImageTransferStatus.INITIATED

            async with await driver.associate(sim.params()) as meter:
                result = await meter.transfer_firmware(IMAGE, b"FW-3.0", activate=False)
            assert 10 <= 31 - result.blocks_sent <= 12  # only what the meter lacked
            assert result.status == ImageTransferStatus.VERIFICATION_SUCCESSFUL
            assert sim.meter().firmware != b"FW-3.0"  # verified, not activated

    run(body)


def test_blocks_always_lost_is_a_firmware_error() -> None:
    async def body() -> None:
        async with (
            simulated(faults=FaultSpec(block_loss=1.0)) as sim,
            await DlmsDriver().associate(sim.params()) as meter,
        ):
            with pytest.raises(FirmwareTransferFailed, match="missing"):
                await meter.transfer_firmware(IMAGE[:1000], b"FW-X")
            # the session is still usable after a firmware refusal
            assert await meter.read_firmware_version() == "OHS-SIM-1.0.0"

    run(body)


def test_disabled_transfer_and_bad_arguments() -> None:
    async def body() -> None:
        async with simulated() as sim:
            sim.meter().image.enabled = False
            async with await DlmsDriver().associate(sim.params()) as meter:
                with pytest.raises(FirmwareTransferFailed, match="disabled"):
                    await meter.transfer_firmware(IMAGE, b"FW-Y")
                for image, identifier in ((b"", b"id"), (IMAGE, b"")):
                    with pytest.raises(DriverError):
                        await meter.transfer_firmware(image, identifier)

    run(body)
