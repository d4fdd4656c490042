"""Bad input from the network side: a hostile peer that answers with garbage, truncated
frames, frames for another address, broken APDUs, or hangs up; wrong addresses and refused
associations against the simulator. Each ends in a specific DriverError within the
configured time, never another exception and never a hang."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_driver_dlms import run, simulated

from drivers.base import ConnectionParams, Timeouts
from drivers.dlms import DlmsDriver
from drivers.errors import (
    AssociationRefused,
    ConnectionLost,
    DriverError,
    DriverTimeout,
    MalformedFrame,
)
from drivers.sim.acse import Aare, ApplicationContext, AssociationResult, ServiceUserDiagnostic
from drivers.sim.xdlms import Conformance, InitiateResponse

FAST = Timeouts(connect=1.0, frame=0.2, operation=3.0, release=0.2)
AARE = Aare(
    ApplicationContext.LN,
    AssociationResult.ACCEPTED,
    ServiceUserDiagnostic.NULL,
    user_information=InitiateResponse(
        Conformance.GET | Conformance.SELECTIVE_ACCESS | Conformance.ACTION, 0xFFFF
    ).to_bytes(),
).to_bytes()


def wrapper(apdu: bytes, source: int = 1, dest: int = 16) -> bytes:
    head = b"\x00\x01" + source.to_bytes(2, "big") + dest.to_bytes(2, "big")
    return head + len(apdu).to_bytes(2, "big") + apdu


Answer = Callable[[int, bytes], bytes | None]  # (request number, request) -> reply, None: close


async def _hostile(answer: Answer) -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        count = 0
        try:
            while True:
                head = await reader.readexactly(8)
                body = await reader.readexactly(int.from_bytes(head[6:8], "big"))
                reply = answer(count, body)
                count += 1
                if reply is None:
                    break
                writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _associate_with(answer: Answer, retries: int = 1) -> DriverError:
    server, port = await _hostile(answer)
    params = ConnectionParams(
        meter_id="hostile", host="127.0.0.1", port=port, timeouts=FAST, retries=retries
    )
    try:
        async with server:
            started = time.monotonic()
            try:
                async with await DlmsDriver().associate(params) as meter:
                    await meter.read_registers(["1.0.1.8.0.255"])
                    now = datetime.now(UTC)
                    await meter.read_load_profile(now - timedelta(hours=1), now)
            except DriverError as exc:
                assert time.monotonic() - started < FAST.operation + 2 * FAST.release + 0.5
                return exc
    finally:
        server.close()
    raise AssertionError("the hostile peer was accepted")


def _after_aare(reply: bytes) -> Answer:
    return lambda n, _req: wrapper(AARE) if n == 0 else reply


CASES: dict[str, tuple[Answer, type[DriverError]]] = {
    "garbage": (lambda n, _r: bytes(range(7, 70)), MalformedFrame),
    "truncated frame": (lambda n, _r: wrapper(AARE)[:20], MalformedFrame),
    "frame for another client": (lambda n, _r: wrapper(AARE, dest=17), MalformedFrame),
    "frame from another meter": (lambda n, _r: wrapper(AARE, source=9), MalformedFrame),
    "not an AARE": (lambda n, _r: wrapper(b"\x61\x03\xa1\x01\x00"), MalformedFrame),
    "empty APDU": (lambda n, _r: wrapper(b"\x00"), MalformedFrame),
    "hang up": (lambda n, _r: None, ConnectionLost),
    "silence": (lambda n, _r: b"", DriverTimeout),
    "rejected AARE": (
        lambda n, _r: wrapper(
            Aare(
                ApplicationContext.LN,
                AssociationResult.REJECTED_PERMANENT,
                ServiceUserDiagnostic.APPLICATION_CONTEXT_NAME_NOT_SUPPORTED,
            ).to_bytes()
        ),
        AssociationRefused,
    ),
    "GET answer truncated data": (
        _after_aare(wrapper(b"\xc4\x01\xc1\x00\x06\x00\x01")),
        MalformedFrame,
    ),
    "GET answer unknown type": (_after_aare(wrapper(b"\xc4\x01\xc1\x00\x42\x00")), MalformedFrame),
    "GET answer huge array": (
        _after_aare(wrapper(b"\xc4\x01\xc1\x00\x01\x84\xff\xff\xff\xff")),
        MalformedFrame,
    ),
    "GET answer bad block number": (
        _after_aare(wrapper(b"\xc4\x02\xc1\x00\x00\x00\x00\x07\x00\x02\x01\x01")),
        MalformedFrame,
    ),
    "hang up after the AARE": (lambda n, _r: wrapper(AARE) if n == 0 else None, ConnectionLost),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_peer(case: str) -> None:
    answer, expected = CASES[case]
    error = run(lambda: _associate_with(answer))
    assert isinstance(error, expected), repr(error)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=1, max_size=60), st.booleans())
def test_fuzzed_answers_end_in_driver_errors(apdu: bytes, after_aare: bool) -> None:
    answer = _after_aare(wrapper(apdu)) if after_aare else (lambda n, _r: wrapper(apdu))
    assert isinstance(run(lambda: _associate_with(answer, retries=0)), DriverError)


def test_nobody_listening_is_connection_lost() -> None:
    async def body() -> None:
        server, port = await _hostile(lambda n, r: None)
        server.close()
        await server.wait_closed()
        params = ConnectionParams(meter_id="m", host="127.0.0.1", port=port, timeouts=FAST)
        with pytest.raises(ConnectionLost):
            await DlmsDriver().associate(params)

    run(body)


@pytest.mark.parametrize("transport", ["wrapper", "hdlc"])
def test_wrong_server_address_is_a_timeout(transport: str) -> None:
    async def body() -> None:
        async with simulated(transport=transport) as sim:
            wrong = {"server_address": 999} if transport == "wrapper" else {"physical_address": 99}
            started = time.monotonic()
            with pytest.raises(DriverTimeout):
                await DlmsDriver().associate(sim.params(timeouts=FAST, retries=1, **wrong))
            assert time.monotonic() - started < 2 * FAST.frame + 0.5

    run(body)


def test_unknown_client_and_missing_ciphering_are_refused() -> None:
    async def body() -> None:
        async with simulated(security="suite0", authentication="high_gmac") as sim:
            with pytest.raises(AssociationRefused):  # no such client SAP in the meter
                await DlmsDriver().associate(sim.params(client_address=99))
            plain = sim.params(
                authentication="none",
                security_suite=None,
                block_cipher_key=None,
                authentication_key=None,
                system_title=None,
                server_system_title=None,
            )
            with pytest.raises(AssociationRefused):  # this client must cipher
                await DlmsDriver().associate(plain)

    run(body)
