"""A fleet of simulated meters in one process: asyncio transports around
:class:`~drivers.sim.server.ServerConnection`, either one TCP port per meter (a port
range) or one shared port where each meter has its own address (WRAPPER destination
wPort, or HDLC physical address), plus the address book in the device-import format.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hashlib
import hmac
import json
import secrets
import signal
import struct
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from drivers.base import DEVICE_IMPORT_COLUMNS as ADDRESS_BOOK_FIELDS
from drivers.base import DEVICE_IMPORT_FORMAT as ADDRESS_BOOK_FORMAT
from drivers.sim.acse import Mechanism
from drivers.sim.cosem import Level
from drivers.sim.faults import FaultSpec, FaultSpecError, FleetFaults
from drivers.sim.meter import ClientPolicy, Meter, MeterSpec, derive_keys
from drivers.sim.server import Event, ServerConnection

AUTHENTICATIONS = {"none": Mechanism.NONE, "low": Mechanism.LOW, "high_gmac": Mechanism.HIGH_GMAC}
SECURITIES = ("none", "suite0")
PUBLIC_SAP = 16
READER_SAP = 32
FIRST_PHYSICAL = 16  # HDLC physical addresses 16.. (0..15 are reserved)
INVOCATION_COUNTER_OBIS = "0.0.43.1.0.255"
_MRID_NAMESPACE = uuid.UUID("6f1c3a52-4f0e-4f43-9a57-0d9b3f0c5e11")


class FleetError(ValueError):
    """A fleet configuration that cannot run."""


@dataclass(frozen=True)
class FleetConfig:
    meters: int
    base_port: int = 4059
    transport: str = "wrapper"  # 'wrapper' or 'hdlc'
    shared_port: bool = False
    host: str = "127.0.0.1"
    seed: int = 1
    authentication: str = "none"  # the management client's: none | low | high_gmac
    security: str = "none"  # none | suite0 (authenticated and encrypted)
    management_sap: int = 1
    key_secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    time_zone: str = "Europe/Amsterdam"
    faults: FleetFaults = field(default_factory=FleetFaults)
    max_pdu_size: int = 0xFFFF
    profile_days: int = 40
    hdlc_max_info: int = 512
    idle_timeout: float = 120.0

    def __post_init__(self) -> None:
        if self.meters < 1:
            raise FleetError("a fleet has at least one meter")
        if self.transport not in ("wrapper", "hdlc"):
            raise FleetError("transport is 'wrapper' or 'hdlc'")
        if self.authentication not in AUTHENTICATIONS:
            raise FleetError(f"authentication is one of {', '.join(AUTHENTICATIONS)}")
        if self.security not in SECURITIES:
            raise FleetError("security is 'none' or 'suite0'")
        if self.management_sap in (PUBLIC_SAP, READER_SAP) or not 1 <= self.management_sap <= 0x7F:
            raise FleetError("the management client SAP is 1..127, not 16 or 32")
        last_port = self.base_port + (0 if self.shared_port else self.meters - 1)
        if not self.base_port >= 0 or last_port > 0xFFFF:
            raise FleetError("ports out of range")
        if self.shared_port and self.transport == "hdlc" and self.meters > 0x3FFF - FIRST_PHYSICAL:
            raise FleetError(f"one HDLC port addresses at most {0x3FFF - FIRST_PHYSICAL} meters")
        if self.shared_port and self.transport == "wrapper" and self.meters > 0xFFFE:
            raise FleetError("one WRAPPER port addresses at most 65534 meters")
        if self.base_port == 0 and not self.shared_port and self.meters > 1:
            raise FleetError("an ephemeral base port (0) needs shared_port")


class Fleet:
    """The meters (built on first contact) and their addresses."""

    def __init__(self, config: FleetConfig, source: Callable[[], float] = time.time) -> None:
        self.config = config
        self.source = source
        self._meters: dict[int, Meter] = {}
        self.events: list[Event] = []
        self.ports: list[int] = []  # bound ports, filled by serve()
        self.connections: set[MeterProtocol] = set()

    # -- addresses -------------------------------------------------------------------
    def physical_address(self, index: int) -> int:
        return FIRST_PHYSICAL + index

    def wport(self, index: int) -> int:
        return index + 1 if self.config.shared_port else 1

    def port(self, index: int) -> int:
        if self.ports:
            return self.ports[0] if self.config.shared_port else self.ports[index]
        return self.config.base_port + (0 if self.config.shared_port else index)

    def index_for(self, port_slot: int, address: tuple) -> int | None:
        """The meter addressed on the ``port_slot``-th port, or None."""
        c = self.config
        if address[0] == "wport":
            index = address[1] - 1 if c.shared_port else (port_slot if address[1] == 1 else -1)
        elif address[0] == "hdlc":
            _, logical, physical = address
            if logical != 1 or physical is None:
                return None
            index = physical - FIRST_PHYSICAL
            if not c.shared_port and index != port_slot:
                return None
        else:
            return None
        return index if 0 <= index < c.meters else None

    # -- meters ----------------------------------------------------------------------
    def serial(self, index: int) -> str:
        return f"{self.config.seed % 10_000:04d}{index:08d}"

    def spec(self, index: int) -> MeterSpec:
        c = self.config
        serial = self.serial(index)
        seed = int.from_bytes(hashlib.sha256(f"{c.seed}:{index}".encode()).digest()[:8], "big")
        ek, ak = derive_keys(c.key_secret, serial)
        mechanism = AUTHENTICATIONS[c.authentication]
        return MeterSpec(
            index=index,
            serial=serial,
            seed=seed,
            time_zone=c.time_zone,
            system_title=b"OHS" + struct.pack(">BI", c.seed & 0xFF, index),
            ek=ek,
            ak=ak,
            password=self.password(serial),
            clients=(
                ClientPolicy(PUBLIC_SAP, Mechanism.NONE, Level.PUBLIC),
                ClientPolicy(READER_SAP, Mechanism.LOW, Level.READER),
                ClientPolicy(c.management_sap, mechanism, Level.MANAGEMENT, c.security == "suite0"),
            ),
            max_pdu_size=c.max_pdu_size,
            profile_days=c.profile_days,
            faults=c.faults.for_meter(index, seed),
        )

    def password(self, serial: str) -> bytes:
        return (
            hmac.new(self.config.key_secret, b"lls:" + serial.encode(), hashlib.sha256)
            .hexdigest()[:8]
            .encode()
        )

    def meter(self, index: int) -> Meter:
        m = self._meters.get(index)
        if m is None:
            m = self._meters[index] = Meter(self.spec(index), self.source)
        return m

    @property
    def built(self) -> int:
        return len(self._meters)

    def resolver(self, port_slot: int) -> Callable[[tuple], Meter | None]:
        def resolve(address: tuple) -> Meter | None:
            index = self.index_for(port_slot, address)
            return None if index is None else self.meter(index)

        return resolve

    # -- address book ----------------------------------------------------------------
    def address_book(self) -> list[dict[str, str]]:
        c = self.config
        rows = []
        for index in range(c.meters):
            spec = self.spec(index)
            hdlc = c.transport == "hdlc"
            ciphered = c.security == "suite0"
            rows.append(
                {
                    "mRID": str(uuid.uuid5(_MRID_NAMESPACE, f"{c.seed}:{index}")),
                    "serial": spec.serial,
                    "name": f"SIM-{spec.serial}",
                    "protocol": "dlms",
                    "transport": c.transport,
                    "host": c.host,
                    "port": str(self.port(index)),
                    "client_address": str(c.management_sap),
                    "server_logical": "1",
                    "server_physical": str(self.physical_address(index)) if hdlc else "",
                    "wport": "" if hdlc else str(self.wport(index)),
                    "authentication": c.authentication,
                    "password": spec.password.decode() if c.authentication == "low" else "",
                    "security_policy": "authenticated_encrypted" if ciphered else "none",
                    "security_suite": "0" if ciphered else "",
                    "encryption_key": spec.ek.hex() if spec.ek else "",
                    "authentication_key": spec.ak.hex() if spec.ak else "",
                    "system_title": spec.system_title.hex(),
                    "invocation_counter_obis": INVOCATION_COUNTER_OBIS,
                    "time_zone": spec.time_zone,
                    "logical_device_name": spec.logical_device_name.decode(),
                }
            )
        return rows

    def write_address_book(self, path: Path) -> None:
        write_address_book(path, self.address_book())

    # -- serving ---------------------------------------------------------------------
    async def serve(self) -> list[asyncio.Server]:
        """Listen on every port; ``self.ports`` gets the bound port numbers."""
        loop = asyncio.get_running_loop()
        c = self.config
        slots = 1 if c.shared_port else c.meters
        servers: list[asyncio.Server] = []
        self.ports = []
        try:
            for slot in range(slots):
                resolve = self.resolver(slot)
                server = await loop.create_server(
                    lambda r=resolve: MeterProtocol(self, r),
                    c.host,
                    c.base_port + slot if c.base_port else 0,
                    reuse_address=True,
                    backlog=1024,
                )
                servers.append(server)
                self.ports.append(server.sockets[0].getsockname()[1])
        except OSError:
            for s in servers:
                s.close()
            raise
        return servers

    async def close(self, servers: list[asyncio.Server]) -> None:
        """Stop listening and drop every open connection."""
        for s in servers:
            s.close()
        for p in list(self.connections):
            if p.transport is not None:
                p.transport.close()
        for s in servers:
            await s.wait_closed()


class MeterProtocol(asyncio.Protocol):
    """One TCP connection to the fleet."""

    def __init__(self, fleet: Fleet, resolve: Callable[[tuple], Meter | None]) -> None:
        self.fleet = fleet
        self.conn = ServerConnection(
            fleet.config.transport, resolve, hdlc_max_info=fleet.config.hdlc_max_info
        )
        self.transport: asyncio.Transport | None = None
        self._last_send = 0.0
        self._last_activity = 0.0
        self._idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.fleet.connections.add(self)
        loop = asyncio.get_running_loop()
        self._last_activity = loop.time()
        self._idle = loop.call_later(self.fleet.config.idle_timeout, self._check_idle)

    def data_received(self, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        now = self._last_activity = loop.time()
        conn = self.conn
        outgoing = conn.receive_data(data)
        events = conn.next_events()
        if events:  # recorded before the answer leaves, so a client never sees it first
            self.fleet.events.extend(events)
            del self.fleet.events[:-1000]
        for out in outgoing:
            if out.delay <= 0 and self._last_send <= now:
                self.transport.write(out.data)
            else:
                at = max(now + out.delay, self._last_send + 1e-6)
                self._last_send = at
                loop.call_at(at, self._write, out.data)
        if conn.closed:
            self.transport.close()

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _check_idle(self) -> None:
        loop = asyncio.get_running_loop()
        idle = loop.time() - self._last_activity
        timeout = self.fleet.config.idle_timeout
        if idle >= timeout:
            if self.transport is not None:
                self.transport.close()
        else:
            self._idle = loop.call_later(timeout - idle, self._check_idle)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fleet.connections.discard(self)
        self.conn.connection_lost()
        if self._idle is not None:
            self._idle.cancel()
        self.transport = None


# -- address book files ----------------------------------------------------------------
def write_address_book(path: Path, rows: Iterable[dict[str, str]]) -> None:
    """CSV (``.csv``) or JSON (anything else) in the device-import format."""
    path = Path(path)
    rows = list(rows)
    if path.suffix.lower() == ".csv":
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=ADDRESS_BOOK_FIELDS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
    else:
        path.write_text(
            json.dumps({"format": ADDRESS_BOOK_FORMAT, "devices": rows}, indent=1) + "\n",
            encoding="utf-8",
        )


def read_address_book(path: Path) -> list[dict[str, str]]:
    path = Path(path)
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    doc = json.loads(path.read_text(encoding="utf-8"))
    if doc.get("format") != ADDRESS_BOOK_FORMAT:
        raise ValueError(f"not an {ADDRESS_BOOK_FORMAT} document")
    return list(doc["devices"])


# -- the command-line hook -------------------------------------------------------------
def run_simulate(
    meters: int,
    base_port: int = 4059,
    transport: str = "wrapper",
    *,
    address_book: Path,
    host: str = "127.0.0.1",
    shared_port: bool = False,
    seed: int = 1,
    authentication: str = "none",
    security: str = "none",
    key_secret: str | None = None,
    time_zone: str = "Europe/Amsterdam",
    faults: str = "",
    faulty_fraction: float = 1.0,
    duration: float | None = None,
    out=None,
) -> int:
    """Serve ``meters`` meters until SIGINT/SIGTERM (or ``duration`` seconds), after
    writing the address book. ``faults`` is a fault spec (see ``faults.FaultSpec.parse``)
    applied to ``faulty_fraction`` of the meters. ``key_secret`` (hex) derives the keys;
    without it they are random for this run. Returns 0, 1 if the ports cannot be bound,
    2 on a bad argument."""
    out = out or sys.stdout
    try:
        spec = FaultSpec.parse(faults)
        if not 0.0 <= faulty_fraction <= 1.0:
            raise FleetError("faulty_fraction is 0..1")
        fleet_faults = (
            FleetFaults(faulty=spec, fraction=faulty_fraction) if spec.active else FleetFaults()
        )
        secret = bytes.fromhex(key_secret) if key_secret else secrets.token_bytes(32)
        config = FleetConfig(
            meters=meters,
            base_port=base_port,
            transport=transport,
            shared_port=shared_port,
            host=host,
            seed=seed,
            authentication=authentication,
            security=security,
            key_secret=secret,
            time_zone=time_zone,
            faults=fleet_faults,
        )
    except (FleetError, FaultSpecError, ValueError) as exc:
        print(f"openhes simulate: {exc}", file=sys.stderr)
        return 2
    fleet = Fleet(config)
    return asyncio.run(_serve_until_stopped(fleet, Path(address_book), duration, out))


async def _serve_until_stopped(
    fleet: Fleet, address_book: Path, duration: float | None, out
) -> int:
    try:
        servers = await fleet.serve()
    except OSError as exc:
        print(f"openhes simulate: cannot listen: {exc}", file=sys.stderr)
        return 1
    fleet.write_address_book(address_book)
    c = fleet.config
    where = f"{c.host}:{fleet.ports[0]}" + ("" if c.shared_port else f"-{fleet.ports[-1]}")
    print(
        f"simulating {c.meters} meters ({c.transport}) on {where}; address book {address_book}",
        file=out,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        if duration is None:
            await stop.wait()
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), duration)
    finally:
        await fleet.close(servers)
    return 0
