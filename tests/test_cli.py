"""The `openhes` command line: exit codes and one-line errors, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from adapters.cli import main

VALID = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<EventMessage xmlns="http://iec.ch/TC57/2011/schema/message">\n'
    b"  <Header><Verb>created</Verb><Noun>MeterReadings</Noun></Header>\n"
    b"</EventMessage>\n"
)
INVALID = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<EventMessage xmlns="http://iec.ch/TC57/2011/schema/message">\n'
    b"  <Header><Verb>created</Verb><Noun>MeterReadings</Noun>\n"
    b"    <Timestamp>tomorrow</Timestamp></Header>\n"
    b"</EventMessage>\n"
)
HOSTILE = b'<!DOCTYPE m [<!ENTITY x SYSTEM "file:///etc/passwd">]><m>&x;</m>'


def test_demo_refuses_an_out_folder_that_is_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The demo itself runs end to end in tests/test_e2e_demo.py.
    taken = tmp_path / "a-file"
    taken.write_text("")
    assert main(["demo", "--meters", "2", "--out", str(taken)]) == 2
    assert "--out" in capsys.readouterr().err


def test_demo_refuses_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--meters", "0"]) == 2
    assert main(["demo", "--meters", "many"]) == 2
    assert "invalid int value" in capsys.readouterr().err


def test_validate_reports_line_and_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = tmp_path / "good.xml", tmp_path / "bad.xml"
    good.write_bytes(VALID)
    bad.write_bytes(INVALID)
    assert main(["validate", str(good)]) == 0
    assert f"{good}: valid" in capsys.readouterr().out
    assert main(["validate", str(good), str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"{bad}:4: /EventMessage/Header/Timestamp:" in out
    assert f"{bad}: invalid (1 error)" in out


def test_validate_with_a_given_xsd(
    tmp_path: Path, fixtures_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.xml"
    good.write_bytes(VALID)
    xsd = fixtures_dir / "connexo/outbound/meterreadings/xsd/Message.xsd"
    assert main(["validate", "--xsd", str(xsd), str(good)]) == 0
    assert main(["validate", "--xsd", str(tmp_path / "missing.xsd"), str(good)]) == 2
    assert "no such file" in capsys.readouterr().err


def test_validate_refuses_hostile_and_missing_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    evil = tmp_path / "evil.xml"
    evil.write_bytes(HOSTILE)
    assert main(["validate", str(evil), str(tmp_path / "nope.xml")]) == 1
    captured = capsys.readouterr()
    assert "refused [1.3]" in captured.out
    assert "root:" not in captured.out
    assert "nope.xml: no such file" in captured.out
    assert captured.err == "openhes validate: 2 of 2 file(s) not valid\n"


def test_describe(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "describe",
                "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0",
                "3.31.0.23",
                "2.8.0",
                "1-0:1.8.1*255",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "15-minute delta forward active energy, kWh" in out
    assert "disconnect" in out
    assert "estimated" in out
    assert "tariff 1" in out
    assert main(["describe", "0.0.2.4.1", "99.99.99.99999"]) == 1
    captured = capsys.readouterr()
    assert "[2." in captured.out
    assert captured.err == "openhes describe: 1 of 2 code(s) not understood\n"


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "validate" in capsys.readouterr().out


def test_console_entry_point_has_no_traceback(tmp_path: Path) -> None:
    evil = tmp_path / "evil.xml"
    evil.write_bytes(b"\xff\xfe garbage")
    result = subprocess.run(
        [sys.executable, "-m", "adapters.cli", "validate", str(evil)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert "refused [1." in result.stdout


def test_simulate_serves_and_writes_the_address_book(tmp_path: Path) -> None:
    book = tmp_path / "meters.csv"
    assert (
        main(
            [
                "simulate",
                "--meters",
                "3",
                "--base-port",
                "0",
                "--shared-port",
                "--duration",
                "0.5",
                "--address-book",
                str(book),
            ]
        )
        == 0
    )
    lines = book.read_text().splitlines()
    assert lines[0].startswith("mRID,serial,")
    assert len(lines) == 4


def test_simulate_refuses_a_bad_fault_spec(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            [
                "simulate",
                "--meters",
                "1",
                "--faults",
                "bogus=1",
                "--address-book",
                str(tmp_path / "b.csv"),
            ]
        )
        == 2
    )
    assert "unknown fault" in capsys.readouterr().err


def test_meters_import_registers_a_simulated_fleet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    book, database = tmp_path / "meters.csv", tmp_path / "store.sqlite3"
    assert (
        main(
            [
                "simulate",
                "--meters",
                "3",
                "--base-port",
                "0",
                "--shared-port",
                "--duration",
                "0.2",
                "--address-book",
                str(book),
            ]
        )
        == 0
    )
    monkeypatch.delenv("OPENHES_MASTER_KEY", raising=False)
    assert main(["meters", "import", str(book), "--database", str(database)]) == 2
    assert "no master key" in capsys.readouterr().err
    monkeypatch.setenv("OPENHES_MASTER_KEY", "11" * 32)
    assert main(["meters", "import", str(book), "--database", str(database)]) == 0
    assert "3 created" in capsys.readouterr().out
    assert main(["meters", "import", str(book), "--database", str(database)]) == 0
    assert "3 unchanged" in capsys.readouterr().out
    book.write_text(book.read_text().replace(",dlms,", ",modbus,", 1))
    assert main(["meters", "import", str(book), "--database", str(database)]) == 1
