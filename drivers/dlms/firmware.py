"""Image transfer (IC 18, 0.0.44.0.0.255): initiate, blocks, resume the blocks the meter lacks
(from image_transferred_blocks_status), verify, activate.

Resume: after image_transfer_initiate the transferred-blocks bit string is read and only the
missing blocks are sent. A meter that keeps the blocks of an unfinished transfer when it is
initiated again with the same identifier and size (Blue Book, IC 18) therefore gets only what
it lacks; one that starts over reports no blocks and gets them all. After each pass the bit
string is read again and the blocks the meter lost are sent again, up to MAX_ROUNDS passes.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, replace

from drivers.base import FirmwareProgress, ImageTransferStatus, ProgressCallback
from drivers.dlms import axdr
from drivers.dlms.cosem import (
    IMAGE_TRANSFER_OBIS,
    IT_ACTIVATE,
    IT_BLOCK_SIZE,
    IT_BLOCK_TRANSFER,
    IT_ENABLED,
    IT_INITIATE,
    IT_STATUS,
    IT_TRANSFERRED_BLOCKS,
    IT_VERIFY,
    RESULT_TEMPORARY_FAILURE,
    ClassId,
)
from drivers.dlms.session import DlmsSession
from drivers.errors import DeviceError, DriverError, FirmwareTransferFailed, MalformedFrame

IC = ClassId.IMAGE_TRANSFER
MAX_ROUNDS = 4  # passes over the missing blocks before giving up
MAX_IMAGE = 64 * 1024 * 1024


@dataclass(slots=True)
class _State:
    progress: FirmwareProgress
    callback: ProgressCallback | None

    def update(self, **changes: object) -> None:
        self.progress = replace(self.progress, **changes)  # type: ignore[arg-type]
        if self.callback is not None:
            # A caller's callback must not break the transfer.
            with contextlib.suppress(Exception):
                self.callback(self.progress)


async def _status(session: DlmsSession, obis: str) -> ImageTransferStatus:
    value = await session.get(IC, obis, IT_STATUS)
    try:
        return ImageTransferStatus(value)
    except (ValueError, TypeError) as exc:
        raise MalformedFrame(f"image transfer status {value!r}") from exc


async def _missing(session: DlmsSession, obis: str, total: int) -> list[int]:
    bits = await session.get(IC, obis, IT_TRANSFERRED_BLOCKS)
    if not isinstance(bits, axdr.BitString):
        raise MalformedFrame(f"image_transferred_blocks_status {bits!r} is not a bit-string")
    return [n for n in range(total) if n >= len(bits) or not bits[n]]


async def _method_then_poll(
    session: DlmsSession,
    obis: str,
    method: int,
    running: ImageTransferStatus,
    done: ImageTransferStatus,
    failed: ImageTransferStatus,
    poll_interval: float,
) -> ImageTransferStatus:
    """Invoke verify/activate; a meter that needs time answers temporary-failure (or
    success while still running): poll the status until it is final."""
    try:
        await session.action(IC, obis, method, axdr.int8(0))
    except DeviceError as exc:
        if exc.result != RESULT_TEMPORARY_FAILURE:
            raise
    while True:
        status = await _status(session, obis)
        if status in (done, failed):
            return status
        if status != running and status != ImageTransferStatus.VERIFICATION_SUCCESSFUL:
            raise FirmwareTransferFailed(f"unexpected image transfer status {status.name}")
        await asyncio.sleep(poll_interval)


async def transfer_image(
    session: DlmsSession,
    image: bytes,
    identifier: bytes,
    *,
    activate: bool = True,
    progress: ProgressCallback | None = None,
    obis: str = IMAGE_TRANSFER_OBIS,
    poll_interval: float = 0.2,
) -> FirmwareProgress:
    if not image or len(image) > MAX_IMAGE:
        raise FirmwareTransferFailed(f"image of {len(image)} bytes")
    if not identifier:
        raise FirmwareTransferFailed("an image identifier is required")
    enabled, block_size, status = await session.get_many(
        [(IC, obis, IT_ENABLED), (IC, obis, IT_BLOCK_SIZE), (IC, obis, IT_STATUS)]
    )
    for value in (enabled, block_size, status):
        if isinstance(value, DriverError):
            raise value
    if enabled is False:
        raise FirmwareTransferFailed("image transfer is disabled in the meter")
    if not isinstance(block_size, int) or isinstance(block_size, bool) or block_size <= 0:
        raise MalformedFrame(f"image_block_size {block_size!r}")
    total = -(-len(image) // block_size)
    state = _State(
        FirmwareProgress(
            identifier=identifier,
            image_size=len(image),
            block_size=block_size,
            blocks_total=total,
            blocks_sent=0,
            blocks_missing=total,
            blocks_resent=0,
            status=ImageTransferStatus(status) if status in range(8) else ImageTransferStatus(0),
            phase="initiate",
        ),
        progress,
    )

    async def initiate() -> None:
        await session.action(
            IC,
            obis,
            IT_INITIATE,
            axdr.structure(axdr.octet_string(identifier), axdr.uint32(len(image))),
        )
        state.update(status=ImageTransferStatus.INITIATED, phase="blocks")

    async def send_blocks(missing: list[int]) -> None:
        for rounds in range(MAX_ROUNDS):
            if rounds:
                state.update(
                    phase="resume", blocks_resent=state.progress.blocks_resent + len(missing)
                )
            for number in missing:
                chunk = image[number * block_size : (number + 1) * block_size]
                await session.action(
                    IC,
                    obis,
                    IT_BLOCK_TRANSFER,
                    axdr.structure(axdr.uint32(number), axdr.octet_string(chunk)),
                )
                state.update(blocks_sent=state.progress.blocks_sent + 1)
            missing = await _missing(session, obis, total)
            state.update(blocks_missing=len(missing))
            if not missing:
                return
        raise FirmwareTransferFailed(
            f"{len(missing)} of {total} blocks still missing after {MAX_ROUNDS} passes"
        )

    await initiate()
    missing = await _missing(session, obis, total)
    if len(missing) < total:
        state.update(phase="resume", blocks_missing=len(missing))
    await send_blocks(missing)

    state.update(phase="verify", status=ImageTransferStatus.VERIFICATION_INITIATED)
    verified = await _method_then_poll(
        session,
        obis,
        IT_VERIFY,
        ImageTransferStatus.VERIFICATION_INITIATED,
        ImageTransferStatus.VERIFICATION_SUCCESSFUL,
        ImageTransferStatus.VERIFICATION_FAILED,
        poll_interval,
    )
    state.update(status=verified)
    if verified != ImageTransferStatus.VERIFICATION_SUCCESSFUL:
        raise FirmwareTransferFailed("the meter could not verify the image")
    if activate:
        state.update(phase="activate", status=ImageTransferStatus.ACTIVATION_INITIATED)
        activated = await _method_then_poll(
            session,
            obis,
            IT_ACTIVATE,
            ImageTransferStatus.ACTIVATION_INITIATED,
            ImageTransferStatus.ACTIVATION_SUCCESSFUL,
            ImageTransferStatus.ACTIVATION_FAILED,
            poll_interval,
        )
        state.update(status=activated)
        if activated != ImageTransferStatus.ACTIVATION_SUCCESSFUL:
            raise FirmwareTransferFailed("the meter could not activate the image")
    state.update(phase="done")
    return state.progress
