"""One DLMS/COSEM association over one TCP connection: gurux builds and parses the bytes
(sans-IO), this class moves them, with timeouts, frame-level retries and invocation counters.

Requests are given as *builders* (callables returning gurux's frames) because building a
ciphered request consumes an invocation counter value: the counter reservation is checked
before each build, and a WRAPPER retry builds the request again (see ``_round_trip``).
Answers whose invoke-id is not the request's (a late answer to an earlier copy) are dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from gurux_dlms import GXReplyData
from gurux_dlms.enums import (
    Authentication,
    Command,
    Conformance,
    DataType,
    InterfaceType,
    Security,
)
from gurux_dlms.GetCommandType import GetCommandType
from gurux_dlms.GXByteBuffer import GXByteBuffer
from gurux_dlms.GXDLMS import GXDLMS
from gurux_dlms.GXDLMSClient import GXDLMSClient
from gurux_dlms.GXDLMSLNParameters import GXDLMSLNParameters
from gurux_dlms.secure import GXDLMSSecureClient

from drivers.base import AuthenticationKind, ConnectionParams, TransportKind
from drivers.dlms import gurux_hooks
from drivers.dlms.cosem import obis_bytes
from drivers.dlms.counters import InvocationCounterStore
from drivers.dlms.errmap import map_exception, result_error
from drivers.dlms.framing import HdlcFramer, WrapperFramer
from drivers.dlms.transport import FrameConnection
from drivers.errors import (
    AuthenticationFailed,
    ConnectionLost,
    DriverError,
    DriverTimeout,
    MalformedFrame,
)

log = logging.getLogger(__name__)

COUNTER_BLOCK = 64  # invocation counter values reserved at a time

_AUTHENTICATION = {
    AuthenticationKind.NONE: Authentication.NONE,
    AuthenticationKind.LLS: Authentication.LOW,
    AuthenticationKind.HLS_GMAC: Authentication.HIGH_GMAC,
}
_INVOKE_ID_RESPONSES = frozenset(
    {Command.GET_RESPONSE, Command.SET_RESPONSE, Command.METHOD_RESPONSE}
)

Frames = Sequence[Any]
Builder = Callable[[], Frames]


class _Target:
    """What gurux's write/method need of a COSEM object (its duck-typed, camelCase API), with
    a pre-encoded A-XDR value: gurux inserts bytes given as STRUCTURE verbatim."""

    __slots__ = ("_value", "logicalName", "objectType")

    def __init__(self, obis: str, class_id: int, value: bytes | None = None) -> None:
        self.logicalName = obis
        self.objectType = class_id
        self._value = value

    @property
    def name(self) -> str:
        return self.logicalName

    def getValue(self, settings: object, e: object) -> bytes | None:
        return self._value

    def getDataType(self, index: int) -> int:
        return DataType.STRUCTURE

    def getUIDataType(self, index: int) -> int:
        return DataType.NONE


class DlmsSession:
    """Transport + association. Not safe for concurrent use: the driver serialises calls."""

    def __init__(
        self, params: ConnectionParams, counters: InvocationCounterStore | None = None
    ) -> None:
        gurux_hooks.install()
        if params.ciphered and counters is None:
            raise ValueError("a ciphered session needs an invocation counter store")
        self.params = params
        self._counters = counters
        self.client = self._make_client(params)
        self._conn: FrameConnection | None = None
        self._notify = GXReplyData()
        self._reserved_end = 0
        self.associated = False

    @staticmethod
    def _make_client(p: ConnectionParams) -> GXDLMSSecureClient:
        hdlc = p.transport is TransportKind.HDLC
        server = p.server_address
        if hdlc and p.physical_address is not None:
            server = GXDLMSClient.getServerAddress(p.server_address, p.physical_address)
        client = GXDLMSSecureClient(
            True,
            p.client_address,
            server,
            _AUTHENTICATION[p.authentication],
            p.password,
            InterfaceType.HDLC if hdlc else InterfaceType.WRAPPER,
        )
        if hdlc and p.hdlc_max_info != 128:
            client.hdlcSettings.maxInfoTX = p.hdlc_max_info
            client.hdlcSettings.maxInfoRX = p.hdlc_max_info
        client.autoIncreaseInvokeID = True
        client.maxReceivePDUSize = p.max_pdu_size
        setattr(client.settings, gurux_hooks.RAW_VALUES, True)
        if p.ciphered:
            cipher = client.ciphering
            cipher.security = Security.AUTHENTICATION_ENCRYPTION
            cipher.securitySuite = 0
            cipher.systemTitle = p.system_title
            cipher.blockCipherKey = p.block_cipher_key
            cipher.authenticationKey = p.authentication_key
        return client

    # -- lifecycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, associate (SNRM/UA on HDLC, AARQ/AARE, HLS pass 3/4)."""
        p = self.params
        framer = (
            HdlcFramer(p.client_address)
            if p.transport is TransportKind.HDLC
            else WrapperFramer(p.client_address, p.server_address, p.max_pdu_size + 64)
        )
        self._conn = await FrameConnection.open(p.host, p.port, framer, p.timeouts.connect)
        client = self.client
        try:
            if p.ciphered:
                await self._reserve_counters()
            if p.transport is TransportKind.HDLC:
                reply = await self.request(lambda: [client.snrmRequest()], "SNRM")
                client.parseUAResponse(reply.data)
            reply = await self.request(client.aarqRequest, "AARQ")
            client.parseAareResponse(reply.data)
            if client.getIsAuthenticationRequired():
                reply = await self.request(client.getApplicationAssociationRequest, "HLS")
                client.parseApplicationAssociationResponse(reply.data)
        except DriverError:
            raise
        except Exception as exc:
            raise map_exception(exc, "association") from exc
        if p.ciphered and p.server_system_title is not None:
            seen = bytes(client.settings.sourceSystemTitle or b"")
            if seen != p.server_system_title:
                raise AuthenticationFailed(
                    f"the meter's system title is {seen.hex()}, "
                    f"expected {p.server_system_title.hex()}"
                )
        self.associated = True

    async def close(self, *, graceful: bool = True) -> None:
        """Release (RLRQ, then DISC on HDLC) within the release timeout, close the socket and
        give unused counter values back. Never raises."""
        conn = self._conn
        if conn is None:
            return
        try:
            if graceful and conn.is_open:
                async with asyncio.timeout(self.params.timeouts.release):
                    await self._release()
        except Exception as exc:  # DriverError, TimeoutError, anything: the goodbye is best effort
            log.debug("release of %s failed: %s", self.params.meter_id, exc)
        finally:
            self.associated = False
            self._conn = None
            await conn.close()
            await self._give_back_counters()

    async def _release(self) -> None:
        client = self.client
        if self.associated:
            self.associated = False
            frames = client.releaseRequest()
            if frames:
                await self.request(lambda: frames, "release", retries=0)
        if self.params.transport is TransportKind.HDLC:
            frame = client.disconnectRequest(True)
            if frame:
                await self.request(lambda: [frame], "disconnect", retries=0, check=False)

    # -- counters -------------------------------------------------------------------------------

    async def _call_store(self, method: Callable[..., Any], *args: Any) -> Any:
        assert self._counters is not None
        if self._counters.blocking:
            return await asyncio.to_thread(method, *args)
        return method(*args)

    async def _reserve_counters(self) -> None:
        assert self._counters is not None
        start = await self._call_store(self._counters.reserve, self.params.meter_id, COUNTER_BLOCK)
        cipher = self.client.ciphering
        if not self._reserved_end:
            cipher.invocationCounter = start
        else:  # the tail of the previous block may be skipped; gaps are allowed, reuse is not
            cipher.invocationCounter = max(int(cipher.invocationCounter), start)
        self._reserved_end = start + COUNTER_BLOCK

    async def _ensure_counters(self, needed: int = 2) -> None:
        if self.params.ciphered and (
            self.client.ciphering.invocationCounter + needed > self._reserved_end
        ):
            await self._reserve_counters()

    async def _give_back_counters(self) -> None:
        if not self.params.ciphered or not self._reserved_end or self._counters is None:
            return
        try:
            await self._call_store(
                self._counters.give_back,
                self.params.meter_id,
                self._reserved_end,
                self.client.ciphering.invocationCounter,
            )
        except Exception as exc:  # a failed give-back only wastes counter values
            log.warning("invocation counter give-back for %s: %s", self.params.meter_id, exc)

    @property
    def invocation_counter(self) -> int:
        return int(self.client.ciphering.invocationCounter)

    # -- exchanges ------------------------------------------------------------------------------

    async def request(
        self,
        build: Builder,
        what: str,
        *,
        retries: int | None = None,
        check: bool = True,
    ) -> GXReplyData:
        """Send what ``build`` makes, follow block transfer and HDLC segmentation to the end,
        return gurux's reply. Raises DriverError (result codes when ``check``)."""
        if self._conn is None:
            raise ConnectionLost(f"{what}: the session is closed")
        await self._ensure_counters()
        try:
            frames = build()
        except DriverError:
            raise
        except Exception as exc:
            raise map_exception(exc, what) from exc
        if frames is None:
            frames = []
        elif isinstance(frames, bytes | bytearray):
            frames = [frames]
        reply = GXReplyData()
        attempts = (self.params.retries if retries is None else retries) + 1
        wrapper = self.params.transport is TransportKind.WRAPPER
        for frame in frames:
            reply.clear()
            rebuild = None
            if wrapper and len(frames) == 1:
                rebuild = lambda: self._rebuild_first(build)  # noqa: E731
            await self._round_trip(frame, reply, what, attempts, first=True, rebuild=rebuild)
            while reply.isMoreData():
                await self._ensure_counters()
                try:
                    follow = self.client.receiverReady(reply)
                except Exception as exc:
                    raise map_exception(exc, what) from exc
                rebuild = None
                if wrapper:
                    rebuild = lambda reply=reply: self._rebuild_next(reply)  # noqa: E731
                await self._round_trip(follow, reply, what, attempts, first=False, rebuild=rebuild)
        if check and reply.error:
            raise result_error(int(reply.error), what)
        return reply

    def _rebuild_first(self, build: Builder) -> Any:
        frames = build()
        return frames[0] if isinstance(frames, list | tuple) else frames

    def _rebuild_next(self, reply: GXReplyData) -> Any:
        # receiverReady acknowledges settings.blockIndex and then advances it: step back to
        # ask for the same block again.
        settings = self.client.settings
        settings.blockIndex = max(1, settings.blockIndex - 1)
        return self.client.receiverReady(reply)

    async def _round_trip(
        self,
        frame: Any,
        reply: GXReplyData,
        what: str,
        attempts: int,
        *,
        first: bool,
        rebuild: Callable[[], Any] | None = None,
    ) -> None:
        """Send ``frame`` and feed answers to gurux until one completes it. After a frame
        timeout: over HDLC the identical frame goes again (its N(S) lets the meter answer
        a repeat with its last frame); over the WRAPPER, which has no sequence numbers,
        ``rebuild`` makes a fresh request (new invoke-id, new invocation counter), since a
        meter that did process the first copy refuses a replayed counter."""
        conn = self._conn
        if conn is None:
            raise ConnectionLost(f"{what}: the session is closed")
        loop = asyncio.get_running_loop()
        frame_timeout = self.params.timeouts.frame
        skipped_frames = skipped_bytes = 0
        for attempt in range(attempts):
            if attempt and rebuild is not None:
                await self._ensure_counters()
                try:
                    frame = rebuild()
                except Exception as exc:
                    raise map_exception(exc, what) from exc
            conn.discard()
            conn.framer.reset_stats()
            conn.send(frame)
            deadline = loop.time() + frame_timeout
            while (remaining := deadline - loop.time()) > 0:
                try:
                    data = await conn.receive(remaining)
                except DriverTimeout:
                    break
                if self._accept(data, reply, what, first):
                    return
            # What arrived but was not an answer, the start of a frame that never ended too.
            skipped_frames += conn.framer.skipped_frames
            skipped_bytes += conn.framer.skipped_bytes + conn.framer.pending
        if skipped_frames or skipped_bytes:
            raise MalformedFrame(
                f"{what}: no valid answer in {attempts} attempt(s) of {frame_timeout} s; "
                f"ignored {skipped_frames} frame(s) and {skipped_bytes} byte(s) that were not "
                "a valid frame for this client",
                detail={"frames": skipped_frames, "bytes": skipped_bytes},
            )
        raise DriverTimeout(f"{what}: no answer in {attempts} attempt(s) of {frame_timeout} s")

    def _accept(self, data: bytes, reply: GXReplyData, what: str, first: bool) -> bool:
        try:
            done = self.client.getData(GXByteBuffer(data), reply, self._notify)
        except Exception as exc:
            raise map_exception(exc, what) from exc
        if self._notify.data.size:
            self._notify.clear()  # unsolicited push: not for this request
        if not done:
            return False
        if (
            first
            and reply.command in _INVOKE_ID_RESPONSES
            and (reply.invokeId & 0x0F) != (self.client.settings.invokeId & 0x0F)
        ):
            log.debug("%s: dropped a late answer (invoke-id %s)", what, reply.invokeId & 0x0F)
            reply.clear()
            return False
        return True

    # -- COSEM services ---------------------------------------------------------------------------

    async def get(
        self, class_id: int, obis: str, attribute: int, access: bytes | None = None
    ) -> Any:
        """GET (normal, with block transfer as needed); ``access`` = selector + parameters."""
        what = f"GET {obis} attribute {attribute}"
        # A fresh buffer per build: gurux consumes it, and a retry builds again.
        reply = await self.request(
            lambda: self.client._read(
                obis, class_id, attribute, GXByteBuffer(access) if access else None
            ),
            what,
        )
        return reply.value

    @property
    def supports_get_with_list(self) -> bool:
        conformance = int(self.client.negotiatedConformance or 0)
        return bool(conformance & Conformance.MULTIPLE_REFERENCES)

    async def get_many(self, items: Sequence[tuple[int, str, int]]) -> list[Any | DriverError]:
        """Several attributes, with GET-with-list when the meter negotiated it. Each entry is
        the value or the DriverError for that attribute (the session stays usable)."""
        results: list[Any | DriverError] = []
        if len(items) > 1 and self.supports_get_with_list:
            for start in range(0, len(items), 10):
                chunk = items[start : start + 10]
                reply = await self.request(
                    lambda chunk=chunk: self._get_with_list_request(chunk),
                    f"GET-with-list of {len(chunk)}",
                    check=False,
                )
                values = reply.value if isinstance(reply.value, list) else []
                if len(values) != len(chunk):
                    raise MalformedFrame(
                        f"GET-with-list: {len(values)} results for {len(chunk)} attributes"
                    )
                results.extend(values)
            failed = [i for i, v in enumerate(results) if v is None]
        else:
            failed = list(range(len(items)))
            results = [None] * len(items)
        for i in failed:
            class_id, obis, attribute = items[i]
            try:
                results[i] = await self.get(class_id, obis, attribute)
            except (DriverTimeout, ConnectionLost, MalformedFrame):
                raise
            except DriverError as exc:
                results[i] = exc
        return results

    def _get_with_list_request(self, chunk: Sequence[tuple[int, str, int]]) -> Frames:
        """GET-Request-With-List, built here rather than by gurux's readList (whose byte-by-
        byte GXByteBuffer work was a seventh of a full read's CPU); gurux frames and ciphers
        it and parses the answer as usual."""
        descriptors = bytearray([len(chunk)])
        for class_id, obis, attribute in chunk:
            descriptors += class_id.to_bytes(2, "big") + obis_bytes(obis) + bytes([attribute, 0])
        settings = self.client.settings
        settings.resetBlockIndex()
        settings.setInvokeID((settings.invokeId + 1) & 0x0F)
        parameters = GXDLMSLNParameters(
            settings,
            0,
            Command.GET_REQUEST,
            GetCommandType.WITH_LIST,
            GXByteBuffer(bytes(descriptors)),
            None,
            0xFF,
        )
        return GXDLMS.getLnMessages(parameters)

    async def set(self, class_id: int, obis: str, attribute: int, value: bytes) -> None:
        """SET normal; ``value`` is the A-XDR encoded Data."""
        target = _Target(obis, class_id, value)
        await self.request(
            lambda: self.client.write(target, attribute), f"SET {obis} attribute {attribute}"
        )

    async def action(self, class_id: int, obis: str, method: int, parameter: bytes) -> Any:
        """ACTION normal; ``parameter`` is the A-XDR encoded Data. Returns the return data."""
        target = _Target(obis, class_id)
        reply = await self.request(
            lambda: self.client.method(target, method, parameter, DataType.STRUCTURE),
            f"ACTION {obis} method {method}",
        )
        return reply.value
