"""``openhes export``: stored MeterReadings as CIM XML, CSV or JSON, to a file or a folder,
atomically; every bad input one line and a non-zero exit status."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from lxml import etree

from adapters.cli import main
from cim.validation import validate_file
from mdm.database import open_store
from mdm.devices import Device, create_devices
from mdm.ingest import ingest
from mdm.normalise import RawValue

DAY = datetime(2024, 3, 1, tzinfo=UTC)
WINDOW = ["--from", "2024-03-01T00:00:00Z", "--to", "2024-03-02T00:00:00Z"]


@pytest.fixture
def database(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'export.sqlite3'}"
    store = open_store(url)
    try:
        create_devices(store, [Device("M1"), Device("M2")], who="test")
        ingest(
            store,
            [
                RawValue(
                    mrid,
                    "1-0:1.8.0",
                    DAY + timedelta(minutes=15 * (i + 1)),
                    1000 + i,
                    "Wh",
                    interval_minutes=15,
                )
                for mrid in ("M1", "M2")
                for i in range(96)
            ],
        )
    finally:
        store.close()
    return url


def run(database: str, *args: str) -> int:
    return main(["export", "--database", database, *args])


def test_one_file_per_format(database: str, tmp_path: Path) -> None:
    xml, table, lines = tmp_path / "m.xml", tmp_path / "m.csv", tmp_path / "m.jsonl"
    assert run(database, "--meters", "M1", *WINDOW, "--out", str(xml)) == 0
    assert validate_file(xml) == []
    assert len(etree.parse(str(xml)).findall(".//{*}IntervalReadings")) == 96
    assert run(database, "--meters", "M1", "M2", *WINDOW, "--out", str(table)) == 0
    rows = list(csv.reader(table.open(newline="")))
    assert rows[0][:4] == ["device", "reading_type", "timestamp", "value"]
    assert len(rows) == 1 + 2 * 96
    assert run(database, "--all", *WINDOW, "--out", str(lines)) == 0
    items = [json.loads(line) for line in lines.read_text().splitlines()]
    assert len(items) == 2 * 96 and {i["device"] for i in items} == {"M1", "M2"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries


def test_into_a_folder_with_several_formats_and_parts(
    database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "exports"
    folder.mkdir()
    assert run(database, "--all", *WINDOW, "--out", str(folder), "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert sorted(Path(f["path"]).suffix for f in result["files"]) == [".csv", ".xml"]
    assert all(f["readings"] == 2 * 96 for f in result["files"])
    assert result["meters"] == 2
    parts = tmp_path / "parts/"
    assert (
        run(database, "--all", *WINDOW, "--out", f"{parts}/", "--per-devices", "1",
            "--format", "json", "--name", "day")
        == 0
    )  # fmt: skip
    assert sorted(p.name for p in parts.iterdir()) == ["day-0001.jsonl", "day-0002.jsonl"]


def test_default_window_is_yesterday(
    database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "y.csv"
    assert run(database, "--meters", "M1", "--out", str(out), "--json") == 0
    result = json.loads(capsys.readouterr().out)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    assert result["end"] == today.isoformat()
    assert result["files"][0]["readings"] == 0  # nothing stored for yesterday
    assert run(database, "--meters", "M1", "--day", "2024-03-01", "--out", str(out)) == 0
    assert "96 readings" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["--meters", "NOPE", *WINDOW, "--out", "{tmp}/x.xml"], 1, "no device 'NOPE'"),
        (["--group", "none", *WINDOW, "--out", "{tmp}/x.xml"], 1, "no device group"),
        (["--all", "--from", "2024-03-01T00:00Z", "--out", "{tmp}/x.xml"], 2, "both --from"),
        (["--all", *WINDOW, "--day", "2024-03-01", "--out", "{tmp}/x.xml"], 2, "not both"),
        (["--all", "--zone", "Mars/Base", "--out", "{tmp}/x.xml"], 2, "IANA"),
        (["--all", *WINDOW, "--out", "{tmp}/x.txt"], 2, "give --format"),
        (["--all", *WINDOW, "--out", "{tmp}/no/such/x.xml"], 1, "no such folder"),
        (["--all", *WINDOW, "--out", "{tmp}/x.xml", "--per-devices", "1"], 2, "needs a folder"),
        (["--all", "--from", "2024-03-02T00:00Z", "--to", "2024-03-01T00:00Z", "--out",
          "{tmp}/x.xml"], 2, "before --to"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line(
    database: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    status: int,
    message: str,
) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert run(database, *args) == status
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "x.xml").exists()


def test_bad_option_values_are_usage_errors(database: str, capsys) -> None:
    assert run(database, "--all", "--from", "yesterday", "--to", "today", "--out", "x.xml") == 2
    assert "not an ISO 8601" in capsys.readouterr().err
    assert run(database, "--all", "--from", "2024-03-01T00:00", "--to", "x", "--out", "x") == 2
    assert main(["export", "--out", "x.xml"]) == 2  # no meters chosen
