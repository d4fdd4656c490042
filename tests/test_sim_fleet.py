"""The fleet: address book, configuration checks, ``run_simulate`` and the asyncio
transport (latency, idle timeout, wrong addresses, garbage)."""

from __future__ import annotations

import io
import json
import socket
import threading
import time

import pytest
from test_sim_gurux import GuruxSession, SimServer, sim_config

from drivers.sim import hdlc, wrapper
from drivers.sim.acse import Aarq, ApplicationContext
from drivers.sim.faults import FaultSpec, FleetFaults, Latency
from drivers.sim.fleet import (
    ADDRESS_BOOK_FIELDS,
    ADDRESS_BOOK_FORMAT,
    Fleet,
    FleetConfig,
    FleetError,
    read_address_book,
    run_simulate,
)
from drivers.sim.xdlms import Conformance, InitiateRequest

AARQ = Aarq(
    ApplicationContext.LN, user_information=InitiateRequest(Conformance.GET, 0xFFFF).to_bytes()
).to_bytes()


def test_address_book_csv_and_json(tmp_path):
    fleet = Fleet(
        FleetConfig(
            meters=5, base_port=5000, authentication="low", security="suite0", key_secret=b"s" * 32
        )
    )
    rows = fleet.address_book()
    assert [r["port"] for r in rows] == ["5000", "5001", "5002", "5003", "5004"]
    assert len({r["mRID"] for r in rows}) == 5 and len({r["system_title"] for r in rows}) == 5
    assert all(r["password"] and len(bytes.fromhex(r["encryption_key"])) == 16 for r in rows)
    assert (
        rows[0]["security_suite"] == "0" and rows[0]["security_policy"] == "authenticated_encrypted"
    )
    for name in ("book.csv", "book.json"):
        path = tmp_path / name
        fleet.write_address_book(path)
        assert read_address_book(path) == rows
    header = (tmp_path / "book.csv").read_text().splitlines()[0]
    assert header == ",".join(ADDRESS_BOOK_FIELDS)
    doc = json.loads((tmp_path / "book.json").read_text())
    assert doc["format"] == ADDRESS_BOOK_FORMAT
    (tmp_path / "other.json").write_text('{"format": "x", "devices": []}')
    with pytest.raises(ValueError):
        read_address_book(tmp_path / "other.json")


def test_keys_are_stable_for_a_secret():
    def book(secret):
        return Fleet(FleetConfig(meters=2, key_secret=secret)).address_book()

    assert book(b"a" * 32) == book(b"a" * 32)
    assert book(b"a" * 32)[0]["encryption_key"] != book(b"b" * 32)[0]["encryption_key"]


def test_hdlc_and_shared_addresses():
    fleet = Fleet(FleetConfig(meters=3, transport="hdlc", shared_port=True))
    rows = fleet.address_book()
    assert [r["server_physical"] for r in rows] == ["16", "17", "18"] and {
        r["wport"] for r in rows
    } == {""}
    assert fleet.index_for(0, ("hdlc", 1, 18)) == 2
    assert fleet.index_for(0, ("hdlc", 2, 18)) is None
    assert fleet.index_for(0, ("hdlc", 1, None)) is None
    assert fleet.index_for(0, ("hdlc", 1, 19)) is None
    assert fleet.index_for(0, ("other",)) is None
    ranged = Fleet(FleetConfig(meters=3, transport="wrapper"))
    assert ranged.index_for(1, ("wport", 1)) == 1 and ranged.index_for(1, ("wport", 2)) is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"meters": 0},
        {"transport": "serial"},
        {"authentication": "high_md5"},
        {"security": "suite1"},
        {"management_sap": 16},
        {"base_port": 65535, "meters": 2},
        {"shared_port": True, "transport": "hdlc", "meters": 20000},
        {"shared_port": True, "meters": 70000},
        {"base_port": 0, "meters": 2},
    ],
)
def test_bad_configurations(kwargs):
    with pytest.raises(FleetError):
        FleetConfig(**({"meters": 1} | kwargs))


def test_run_simulate_serves_and_writes_the_book(tmp_path):
    book = tmp_path / "fleet.csv"
    out = io.StringIO()
    result = {}
    thread = threading.Thread(
        target=lambda: result.setdefault(
            "rc",
            run_simulate(
                3,
                0,
                "wrapper",
                address_book=book,
                shared_port=True,
                duration=1.5,
                faults="latency=0.01",
                out=out,
            ),
        )
    )
    thread.start()
    deadline = time.monotonic() + 5
    while not book.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    rows = read_address_book(book)
    with GuruxSession(rows[2]) as s:
        s.associate()
        s.release()
    thread.join(5)
    assert result["rc"] == 0 and "simulating 3 meters" in out.getvalue()


@pytest.mark.parametrize(
    "kwargs",
    [{"transport": "x25"}, {"faults": "loss=7"}, {"key_secret": "zz"}, {"faulty_fraction": 2.0}],
)
def test_run_simulate_usage_errors(tmp_path, kwargs, capsys):
    args = {"address_book": tmp_path / "b.csv", "duration": 0.1, "shared_port": True} | kwargs
    transport = args.pop("transport", "wrapper")
    assert run_simulate(1, 0, transport, **args) == 2
    assert "openhes simulate:" in capsys.readouterr().err


def test_run_simulate_port_in_use(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert run_simulate(1, port, "wrapper", address_book=tmp_path / "b.csv", duration=0.1) == 1
    assert "cannot listen" in capsys.readouterr().err


def _exchange(sock: socket.socket, data: bytes, timeout: float = 2.0) -> bytes:
    sock.settimeout(timeout)
    sock.sendall(data)
    return sock.recv(65536)


def test_latency_is_applied_on_the_wire():
    faults = FleetFaults(default=FaultSpec(latency=Latency("fixed", 0.3)))
    with (
        SimServer(sim_config(faults=faults)) as sim,
        socket.create_connection(("127.0.0.1", sim.port), 2) as sock,
    ):
        t = time.monotonic()
        answer = _exchange(sock, wrapper.encode(1, 1, AARQ))
        assert time.monotonic() - t >= 0.29 and answer[8] == 0x61


def test_idle_connections_are_closed():
    with (
        SimServer(sim_config(idle_timeout=0.3)) as sim,
        socket.create_connection(("127.0.0.1", sim.port), 2) as sock,
    ):
        sock.settimeout(2)
        assert sock.recv(10) == b""  # closed by the simulator


def test_garbage_closes_a_wrapper_connection_and_is_reported():
    with (
        SimServer(sim_config()) as sim,
        socket.create_connection(("127.0.0.1", sim.port), 2) as sock,
    ):
        assert _exchange(sock, b"\x47\x45\x54 / HTTP/1.1\r\n\r\n") == b""
        assert any(type(e).__name__ == "FrameRejected" for e in sim.fleet.events)


def test_wrong_hdlc_address_is_not_answered():
    with (
        SimServer(sim_config(transport="hdlc", meters=2)) as sim,
        socket.create_connection(("127.0.0.1", sim.port), 2) as sock,
    ):
        snrm = hdlc.Frame(
            hdlc.ServerAddress(1, 99).encode(), hdlc.encode_client_address(1), hdlc.SNRM | hdlc.PF
        ).to_bytes()
        with pytest.raises(TimeoutError):
            _exchange(sock, snrm, timeout=0.3)
        good = hdlc.Frame(
            hdlc.ServerAddress(1, 17).encode(), hdlc.encode_client_address(1), hdlc.SNRM | hdlc.PF
        ).to_bytes()
        (ua,) = hdlc.FrameReader().feed(_exchange(sock, good))
        assert ua.kind == hdlc.UA


def test_fleet_builds_meters_on_first_contact():
    with SimServer(sim_config(meters=500)) as sim:
        assert sim.fleet.built == 0
        with GuruxSession(sim.row(321)) as s:
            s.associate()
            s.release()
        assert sim.fleet.built == 1
