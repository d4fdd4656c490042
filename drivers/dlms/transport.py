"""A TCP connection that delivers whole frames: an asyncio Protocol feeding a sans-IO framer.

Every wait is bounded by the caller's timeout; a closed or reset connection wakes the waiter
with ConnectionLost. No retry logic here (that is the session's business).
"""

from __future__ import annotations

import asyncio
import contextlib

from drivers.base import frame_observer
from drivers.dlms.framing import Framer
from drivers.errors import ConnectionLost, DriverTimeout


class _FrameProtocol(asyncio.Protocol):
    def __init__(self, framer: Framer) -> None:
        self.framer = framer
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.lost: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.framer.feed(data)
        if self.framer.has_frame():
            self._wake()

    def eof_received(self) -> bool:
        self.lost = ConnectionLost("the meter closed the connection")
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.lost is None:
            reason = f"connection lost: {exc}" if exc else "the connection was closed"
            self.lost = ConnectionLost(reason)
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class FrameConnection:
    """One TCP connection to a meter, read frame by frame."""

    def __init__(self, protocol: _FrameProtocol) -> None:
        self._protocol = protocol
        self._observe = frame_observer.get()  # the debug log of the task that opened it

    def _seen(self, direction: str, frame: bytes) -> None:
        if self._observe is not None:
            with contextlib.suppress(Exception):  # a debug log never breaks a session
                self._observe(direction, frame)

    @classmethod
    async def open(cls, host: str, port: int, framer: Framer, timeout: float) -> FrameConnection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, protocol = await loop.create_connection(
                    lambda: _FrameProtocol(framer), host, port
                )
        except TimeoutError as exc:
            raise DriverTimeout(f"no TCP connection to {host}:{port} within {timeout} s") from exc
        except OSError as exc:
            raise ConnectionLost(f"cannot connect to {host}:{port}: {exc}") from exc
        return cls(protocol)

    @property
    def framer(self) -> Framer:
        return self._protocol.framer

    @property
    def is_open(self) -> bool:
        return self._protocol.lost is None and self._protocol.transport is not None

    def send(self, data: bytes | bytearray) -> None:
        protocol = self._protocol
        if protocol.lost is not None or protocol.transport is None:
            raise protocol.lost or ConnectionLost("not connected")
        protocol.transport.write(bytes(data))
        self._seen("tx", bytes(data))

    async def receive(self, timeout: float) -> bytes:
        """The next complete frame; DriverTimeout after ``timeout`` seconds without one."""
        protocol = self._protocol
        frame = protocol.framer.next_frame()
        if frame is not None:
            self._seen("rx", frame)
            return frame
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if protocol.lost is not None:
                raise protocol.lost
            waiter: asyncio.Future[None] = loop.create_future()
            protocol.waiter = waiter
            handle = loop.call_at(deadline, _expire, waiter)
            try:
                await waiter
            finally:
                handle.cancel()
                protocol.waiter = None
            frame = protocol.framer.next_frame()
            if frame is not None:
                self._seen("rx", frame)
                return frame
            if protocol.lost is not None:
                raise protocol.lost
            if loop.time() >= deadline:
                raise DriverTimeout(f"no answer within {timeout} s")

    def discard(self) -> None:
        self._protocol.framer.discard()

    async def close(self) -> None:
        transport = self._protocol.transport
        if transport is None:
            return
        if self._protocol.lost is None:
            self._protocol.lost = ConnectionLost("the connection was closed")
        transport.close()
        # Let the loop run connection_lost; an abort if the peer never acknowledges.
        with contextlib.suppress(Exception):
            await asyncio.sleep(0)
        if not transport.is_closing():
            transport.abort()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
