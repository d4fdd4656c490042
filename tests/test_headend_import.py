"""`openhes meters import`: the simulator's address book imports as it is, twice without
change, a changed row updates with audit entries, and a bad row refuses the whole file naming
the row and the column. Ends with a read over the imported connection parameters."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from drivers.dlms import DlmsDriver
from drivers.sim.fleet import ADDRESS_BOOK_FIELDS, Fleet, FleetConfig
from headend.device_import import (
    FORMAT,
    ImportRefused,
    check_rows,
    import_file,
    read_rows,
    run_meters_import,
)
from headend.keys import Keyring, MasterKey
from headend.registry import Registry
from headend.schema import meter_security
from mdm import audit
from mdm.devices import get_device, group_members
from mdm.schema import devices

pytest_plugins = ["mdm_conftest"]

MASTER_HEX = "5a" * 32
SECRET = b"openhes-test-secret-0123456789ab"


def fleet(meters: int = 5, **config) -> Fleet:
    config.setdefault("security", "suite0")
    config.setdefault("authentication", "high_gmac")
    return Fleet(FleetConfig(meters=meters, key_secret=SECRET, **config))


def write_csv(path: Path, rows: list[dict[str, str]], extra: tuple[str, ...] = ()) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*ADDRESS_BOOK_FIELDS, *extra])
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def registry(store) -> Registry:
    return Registry(store, Keyring(MasterKey(bytes.fromhex(MASTER_HEX))))


def count(store, table) -> int:
    with store.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_the_simulators_address_book_imports_idempotently(registry, tmp_path, suffix):
    sim = fleet()
    path = tmp_path / f"fleet{suffix}"
    sim.write_address_book(path)
    first = import_file(registry, path)
    assert (first.created, first.updated, first.unchanged) == (5, 0, 0)
    logged = len(audit.entries(registry.store))
    again = import_file(registry, path)
    assert (again.created, again.updated, again.unchanged, again.audit_entries) == (0, 0, 5, 0)
    assert len(audit.entries(registry.store)) == logged
    assert count(registry.store, devices) == 5 and count(registry.store, meter_security) == 5
    row = sim.address_book()[2]
    params = registry.connection_params(row["mRID"])
    assert params.block_cipher_key == bytes.fromhex(row["encryption_key"])
    assert params.server_system_title == bytes.fromhex(row["system_title"])
    assert params.port == int(row["port"]) and params.client_address == 1
    assert get_device(registry.store, row["mRID"]).time_zone == "Europe/Amsterdam"


def test_a_changed_row_updates_with_audit_and_extensions_apply(registry, tmp_path):
    rows = fleet(3, transport="hdlc", authentication="low", security="none").address_book()
    import_file(registry, write_csv(tmp_path / "a.csv", rows))
    rows[1]["port"] = "5000"
    rows[1]["password"] = "changed1"
    extra = {
        "groups": "feeder-7; north",
        "latitude": "52.1",
        "longitude": "5.2",
        "usage_point": "UP-1",
        "backup_host": "10.1.1.1",
        "backup_port": "4061",
    }
    rows[1].update(extra)
    summary = import_file(registry, write_csv(tmp_path / "b.csv", rows, tuple(extra)))
    assert (summary.created, summary.updated, summary.unchanged) == (0, 1, 2)
    mrid = rows[1]["mRID"]
    changes = {
        (e.object_type, e.attribute) for e in audit.entries(registry.store) if mrid in e.object_id
    }
    assert {
        ("meter_path", "port"),
        ("meter_security", "password"),
        ("device", "latitude"),
        ("device", "usage_point"),
    } <= changes
    assert group_members(registry.store, "north") == [mrid]
    backup = registry.connection_params(mrid, "backup")
    assert (backup.host, backup.port, backup.transport) == ("10.1.1.1", 4061, "hdlc")
    assert backup.physical_address == int(rows[1]["server_physical"])
    assert registry.connection_params(mrid).password == b"changed1"
    assert all("changed1" not in str(e) for e in audit.entries(registry.store))


BAD_ROWS = [
    ({"protocol": "modbus"}, "protocol", "is not one of"),
    ({"host": ""}, "host", "missing"),
    ({"port": "http"}, "port", "is not an integer"),
    ({"port": "70000"}, "port", "is not 1..65535"),
    ({"encryption_key": "zz" * 16}, "encryption_key", "is not hex"),
    ({"authentication_key": "00" * 15}, "authentication_key", "must be 16 octets"),
    ({"encryption_key": ""}, "encryption_key", "missing for a ciphered"),
    ({"system_title": "0102"}, "system_title", "must be 8 octets"),
    ({"authentication": "kerberos"}, "authentication", "is not one of"),
    ({"time_zone": "Mars/Olympus"}, "time_zone", "IANA"),
    ({"mRID": ""}, "mRID", "missing"),
]


@pytest.mark.parametrize(("change", "column", "reason"), BAD_ROWS)
def test_bad_rows_refuse_the_file_naming_row_and_column(registry, tmp_path, change, column, reason):
    rows = fleet(3).address_book()
    rows[2].update(change)
    path = write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(ImportRefused) as caught:
        import_file(registry, path)
    problem = caught.value.problems[0]
    assert (problem.row, problem.column) == (3, column)
    assert reason in problem.reason
    assert "row 3" in str(caught.value) and column in str(caught.value)
    assert count(registry.store, devices) == 0  # all or nothing
    secret = rows[0]["encryption_key"]
    assert secret not in str(caught.value)


def test_duplicates_missing_path_and_unknown_columns(tmp_path):
    rows = fleet(3, security="none", authentication="none").address_book()
    rows[2]["mRID"] = rows[0]["mRID"]
    rows[1]["host"] = rows[1]["port"] = ""
    with pytest.raises(ImportRefused) as caught:
        check_rows(rows)
    found = {(p.row, p.column) for p in caught.value.problems}
    assert (3, "mRID") in found and (2, "host") in found
    assert "duplicate of row 1" in str(caught.value)
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"format": FORMAT, "devices": [{"mRID": "a", "colour": "red"}]}))
    with pytest.raises(ImportRefused, match="colour: unknown column"):
        read_rows(path)
    path.write_text(json.dumps({"format": "other", "devices": []}))
    with pytest.raises(ImportRefused, match="format"):
        read_rows(path)


def test_run_meters_import_exit_codes_and_dry_run(tmp_path, monkeypatch):
    db = str(tmp_path / "hes.sqlite3")
    path = tmp_path / "fleet.csv"
    fleet(4).write_address_book(path)
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.delenv("OPENHES_MASTER_KEY", raising=False)
    assert run_meters_import(path, db, out=out, err=err) == 2
    assert "no master key" in err.getvalue()
    monkeypatch.setenv("OPENHES_MASTER_KEY", MASTER_HEX)
    assert run_meters_import(path, db, dry_run=True, out=out, err=err) == 0
    assert "would import" in out.getvalue() and "4 created" in out.getvalue()
    assert run_meters_import(path, db, out=out, err=err) == 0
    assert out.getvalue().count("4 created") == 2
    assert run_meters_import(path, db, out=out, err=err) == 0
    assert "4 unchanged" in out.getvalue()
    assert run_meters_import(tmp_path / "missing.csv", db, out=out, err=err) == 2
    bad = tmp_path / "bad.csv"
    bad.write_text(path.read_text().replace(",4059,", ",0,", 1))
    assert run_meters_import(bad, db, out=out, err=err) == 1
    assert "row 1 (mRID " in err.getvalue() and "port: 0 is not 1..65535" in err.getvalue()
    monkeypatch.setenv("OPENHES_MASTER_KEY", "11" * 32)
    changed = tmp_path / "changed.csv"
    rows = fleet(4).address_book()
    rows[0]["encryption_key"] = "ff" * 16
    write_csv(changed, rows)
    assert run_meters_import(changed, db, out=out, err=err) == 2  # cannot compare stored keys
    assert "master key" in err.getvalue()


def test_imported_meter_is_read_over_its_connection_params(registry, tmp_path):
    async def scenario() -> list[Any]:
        sim = Fleet(
            FleetConfig(
                meters=2,
                base_port=0,
                shared_port=True,
                key_secret=SECRET,
                security="suite0",
                authentication="high_gmac",
            )
        )
        servers = await sim.serve()
        try:
            path = tmp_path / "live.json"
            sim.write_address_book(path)
            import_file(registry, path)
            params = registry.connection_params(sim.address_book()[1]["mRID"])
            async with await DlmsDriver().associate(params) as session:
                name = await session.read_logical_device_name()
                return [name, *await session.read_registers(["1.0.1.8.0.255"])]
        finally:
            await sim.close(servers)

    name, energy = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert energy.unit == "Wh" and energy.value >= 0
    assert name == fleet(2).address_book()[1]["logical_device_name"]
