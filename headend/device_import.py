"""Bulk import of meters from the device-import format (``openhes meters import FILE``).

The format is the address book ``openhes simulate`` writes (docs/simulator.md), CSV with a
header row or JSON ``{"format": "openhes-device-import/1", "devices": [{column: value}]}``,
plus optional columns for what a real fleet has and a simulator does not (docs/device-import.md):
location, usage point, groups, a backup path and serial lines.

A file is imported whole or not at all: every row is checked first, and any bad row refuses the
file with each problem named by row (data rows count from 1; in CSV, row N is line N + 1) and
column. Importing the same file again changes nothing; a changed row updates its meter, with an
audit entry per changed attribute. Secret values never appear in a problem.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.exc import SQLAlchemyError

from drivers.base import DEVICE_IMPORT_COLUMNS as BASE_COLUMNS
from drivers.base import DEVICE_IMPORT_FORMAT as FORMAT
from headend.keys import MasterKeyError
from headend.registry import (
    CommPath,
    MeterKeys,
    MeterRecord,
    Registry,
    SecurityProfile,
    UpsertSummary,
)
from mdm.database import open_store
from mdm.devices import Device
from mdm.errors import MdmError
from mdm.schema import DEVICE_KINDS, DEVICE_STATUSES

EXTENSION_COLUMNS = (
    "kind",
    "status",
    "manufacturer",
    "model",
    "usage_point",
    "latitude",
    "longitude",
    "groups",
    "serial_port",
    "baud_rate",
    "backup_transport",
    "backup_host",
    "backup_port",
    "backup_serial_port",
    "backup_baud_rate",
    "backup_server_logical",
    "backup_server_physical",
    "backup_wport",
)
COLUMNS = BASE_COLUMNS + EXTENSION_COLUMNS
SECRET_COLUMNS = frozenset({"password", "encryption_key", "authentication_key"})
AUTHENTICATION_NAMES = {
    "none": "none",
    "low": "lls",
    "lls": "lls",
    "high_gmac": "hls-gmac",
    "hls-gmac": "hls-gmac",
}
WHO = "openhes meters import"
MAX_SHOWN = 50


@dataclass(frozen=True, slots=True)
class RowProblem:
    row: int  # 1-based data row; 0 for the file as a whole
    mrid: str | None
    column: str
    reason: str

    def __str__(self) -> str:
        where = f"row {self.row}" if self.row else "file"
        if self.mrid:
            where += f" (mRID {self.mrid})"
        return f"{where}, {self.column}: {self.reason}"


class ImportRefused(Exception):
    """The file was not imported; ``problems`` names each bad row and column."""

    def __init__(self, problems: list[RowProblem]) -> None:
        self.problems = problems
        shown = "\n".join(f"  {p}" for p in problems[:MAX_SHOWN])
        more = len(problems) - MAX_SHOWN
        tail = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(f"{len(problems)} problem(s), nothing imported:\n{shown}{tail}")


# --- reading the file ---------------------------------------------------------------------


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV (``.csv``) or JSON file as column -> string."""
    try:
        if path.suffix.lower() == ".csv":
            with path.open(newline="", encoding="utf-8-sig") as f:
                return _csv_rows(f)
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportRefused([RowProblem(0, None, "file", f"cannot read it: {exc}")]) from None
    except json.JSONDecodeError as exc:
        raise ImportRefused([RowProblem(0, None, "file", f"not JSON: {exc}")]) from None
    return _json_rows(doc)


def _csv_rows(f: TextIO) -> list[dict[str, str]]:
    reader = csv.DictReader(f)
    _check_columns(reader.fieldnames or [])
    rows = []
    for number, row in enumerate(reader, 1):
        if None in row:
            raise ImportRefused([RowProblem(number, None, "row", "more values than columns")])
        rows.append({k: (v or "").strip() for k, v in row.items()})
    return rows


def _json_rows(doc: object) -> list[dict[str, str]]:
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ImportRefused([RowProblem(0, None, "format", f"not an {FORMAT} document")])
    devices = doc.get("devices")
    if not isinstance(devices, list):
        raise ImportRefused([RowProblem(0, None, "devices", "must be a list")])
    rows = []
    for number, item in enumerate(devices, 1):
        if not isinstance(item, dict):
            raise ImportRefused([RowProblem(number, None, "row", "must be an object")])
        _check_columns(item)
        rows.append({k: "" if v is None else str(v).strip() for k, v in item.items()})
    return rows


def _check_columns(names: Iterable[str]) -> None:
    names = list(names)
    unknown = [n for n in names if n not in COLUMNS]
    problems = [RowProblem(0, None, n, "unknown column") for n in unknown]
    if "mRID" not in names:
        problems.append(RowProblem(0, None, "mRID", "the column is missing"))
    if problems:
        raise ImportRefused(problems)


# --- checking rows ------------------------------------------------------------------------


class _Row:
    """One row being checked: typed getters that note problems instead of raising."""

    def __init__(self, number: int, values: Mapping[str, str]) -> None:
        self.number = number
        self.values = values
        self.mrid = values.get("mRID") or None
        self.problems: list[RowProblem] = []

    def problem(self, column: str, reason: str) -> None:
        self.problems.append(RowProblem(self.number, self.mrid, column, reason))

    def text(self, column: str) -> str | None:
        return self.values.get(column) or None

    def integer(self, column: str, default: int | None = None) -> int | None:
        value = self.text(column)
        if value is None:
            return default
        try:
            return int(value, 10)
        except ValueError:
            shown = "value" if column in SECRET_COLUMNS else repr(value)
            self.problem(column, f"{shown} is not an integer")
            return default

    def number_in(self, column: str, low: float, high: float) -> float | None:
        value = self.text(column)
        if value is None:
            return None
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not low <= number <= high:
            self.problem(column, f"{value!r} is not a number in {low}..{high}")
            return None
        return number

    def octets(self, column: str, length: int) -> bytes | None:
        value = self.text(column)
        if value is None:
            return None
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            self.problem(column, "is not hex")
            return None
        if len(raw) != length:
            self.problem(column, f"must be {length} octets ({2 * length} hex digits)")
            return None
        return raw

    def choice(
        self, column: str, allowed: Mapping[str, str] | tuple[str, ...], default: str
    ) -> str:
        value = self.text(column)
        if value is None:
            return default
        if value not in allowed:
            self.problem(column, f"{value!r} is not one of {', '.join(allowed)}")
            return default
        return allowed[value] if isinstance(allowed, Mapping) else value


def _path(row: _Row, prefix: str, fallback: CommPath | None) -> CommPath | None:
    def col(name: str) -> str:
        return prefix + name

    if fallback is not None and not any(row.text(col(n)) for n in _BACKUP_MARKERS):
        return None
    path = CommPath(
        transport=row.text(col("transport")) or (fallback.transport if fallback else ""),
        host=row.text(col("host")),
        port=row.integer(col("port")),
        serial_port=row.text(col("serial_port")),
        baud_rate=row.integer(col("baud_rate")),
        server_logical=row.integer(
            col("server_logical"), fallback.server_logical if fallback else 1
        )
        or 0,
        server_physical=row.integer(
            col("server_physical"), fallback.server_physical if fallback else None
        ),
        wport=row.integer(col("wport"), fallback.wport if fallback else None),
    )
    if not path.transport:
        row.problem(col("transport"), "missing")
    return path


_BACKUP_MARKERS = ("host", "port", "serial_port", "transport", "wport", "server_physical")


def check_row(
    number: int, values: Mapping[str, str]
) -> tuple[MeterRecord | None, list[RowProblem]]:
    row = _Row(number, values)
    if row.mrid is None:
        row.problem("mRID", "missing")
    time_zone = row.text("time_zone") or "UTC"
    try:
        ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        row.problem("time_zone", f"{time_zone!r} is not an IANA time zone")
        time_zone = "UTC"
    groups = tuple(g.strip() for g in (row.text("groups") or "").split(";") if g.strip())
    device = Device(
        mrid=row.mrid or "",
        kind=row.choice("kind", DEVICE_KINDS, "electricity"),
        serial=row.text("serial"),
        name=row.text("name"),
        protocol=row.text("protocol"),
        manufacturer=row.text("manufacturer"),
        model=row.text("model"),
        status=row.choice("status", DEVICE_STATUSES, "active"),
        latitude=row.number_in("latitude", -90, 90),
        longitude=row.number_in("longitude", -180, 180),
        usage_point=row.text("usage_point"),
        time_zone=time_zone,
    )
    if device.protocol is None:
        row.problem("protocol", "missing")
    primary = _path(row, "", None)
    assert primary is not None
    security = SecurityProfile(
        client_address=row.integer("client_address", 16) or 0,
        authentication=row.choice("authentication", AUTHENTICATION_NAMES, "none"),
        security_policy=row.text("security_policy") or "none",
        security_suite=row.integer("security_suite"),
        server_system_title=(st.hex() if (st := row.octets("system_title", 8)) else None),
        invocation_counter_obis=row.text("invocation_counter_obis") or "0.0.43.1.0.255",
        logical_device_name=row.text("logical_device_name"),
    )
    password = row.text("password")
    keys = MeterKeys(
        encryption_key=row.octets("encryption_key", 16),
        authentication_key=row.octets("authentication_key", 16),
        password=password.encode() if password else None,
    )
    record = MeterRecord(
        device=device,
        primary=primary,
        backup=_path(row, "backup_", primary),
        security=security,
        keys=keys,
        groups=groups,
    )
    already = {p.column for p in row.problems}
    for column, reason in record.problems():
        column = "system_title" if column == "server_system_title" else column
        if column not in already:
            row.problem(column, reason)
    return (None if row.problems else record), row.problems


def check_rows(rows: list[dict[str, str]]) -> list[MeterRecord]:
    """The meters of a file's rows, or ImportRefused naming every problem."""
    problems: list[RowProblem] = []
    records: list[MeterRecord] = []
    first_row: dict[str, int] = {}
    first_name: dict[str, int] = {}
    for number, values in enumerate(rows, 1):
        record, found = check_row(number, values)
        problems += found
        mrid = values.get("mRID")
        if mrid:
            if mrid in first_row:
                problems.append(
                    RowProblem(number, mrid, "mRID", f"duplicate of row {first_row[mrid]}")
                )
            first_row.setdefault(mrid, number)
        name = values.get("name")
        if name:
            if name in first_name:
                problems.append(
                    RowProblem(number, mrid, "name", f"duplicate of row {first_name[name]}")
                )
            first_name.setdefault(name, number)
        if record is not None:
            records.append(record)
    if problems:
        raise ImportRefused(problems)
    if not records:
        raise ImportRefused([RowProblem(0, None, "devices", "the file has no meters")])
    return records


# --- importing ----------------------------------------------------------------------------


def import_file(
    registry: Registry, path: Path, *, who: str = WHO, dry_run: bool = False
) -> UpsertSummary:
    """Import ``path`` into the registry in one transaction (rolled back with ``dry_run``)."""
    records = check_rows(read_rows(Path(path)))
    note = f"import of {Path(path).name}"
    if not dry_run:
        return registry.upsert(records, who=who, note=note)
    with registry.store.engine.connect() as conn:
        conn = conn.execution_options(openhes_write=True)
        outer = conn.begin()
        try:
            return registry.upsert(records, who=who, note=note, conn=conn)
        finally:
            outer.rollback()


def run_meters_import(
    path: str | Path,
    database_url: str | None,
    *,
    dry_run: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """``openhes meters import FILE``: 0 imported (or would be, with ``dry_run``), 1 the file
    was refused (each problem printed), 2 it could not run (no file, no master key,
    database)."""
    out = out or sys.stdout
    err = err or sys.stderr
    if not Path(path).is_file():
        print(f"openhes meters import: no such file: {path}", file=err)
        return 2
    try:
        store = open_store(database_url)
    except (SQLAlchemyError, ValueError, OSError) as exc:
        print(f"openhes meters import: cannot open the database: {exc}", file=err)
        return 2
    started = time.perf_counter()
    try:
        summary = import_file(Registry(store), Path(path), dry_run=dry_run)
    except ImportRefused as exc:
        print(f"openhes meters import: {path}: {exc}", file=err)
        return 1
    except MdmError as exc:
        print(f"openhes meters import: {path}: refused: {exc}", file=err)
        return 1
    except MasterKeyError as exc:
        print(f"openhes meters import: {exc}", file=err)
        return 2
    finally:
        store.close()
    verb = "would import" if dry_run else "imported"
    print(
        f"{verb} {path}: {summary.created} created, {summary.updated} updated, "
        f"{summary.unchanged} unchanged, {summary.audit_entries} audit entries "
        f"({time.perf_counter() - started:.2f} s)",
        file=out,
    )
    return 0


__all__ = [
    "COLUMNS",
    "EXTENSION_COLUMNS",
    "FORMAT",
    "ImportRefused",
    "RowProblem",
    "check_rows",
    "import_file",
    "read_rows",
    "run_meters_import",
]
