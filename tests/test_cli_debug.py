"""`openhes debug`: the debug log switched on for a meter, the frames of a real session with
the DLMS simulator recorded and read back (hex and JSON), switches listed and switched off;
every refusal one line with its exit status."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli_jobs import MASTER_HEX, ServedFleet, cli, mrids

from adapters.cli import main


@pytest.fixture(scope="module")
def fleet() -> Iterator[ServedFleet]:
    served = ServedFleet(1)
    yield served
    served.close()


@pytest.fixture
def db(tmp_path: Path, fleet: ServedFleet, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("OPENHES_MASTER_KEY", MASTER_HEX)
    for name in ("OPENHES_BROKER_URL", "OPENHES_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    book = tmp_path / "meters.csv"
    fleet.fleet.write_address_book(book)
    url = str(tmp_path / "hes.sqlite3")
    assert main(["meters", "import", str(book), "--database", url]) == 0
    return url


def test_debug_a_meter_read_its_frames_and_switch_off(db, fleet, capsys):
    (meter,) = mrids(fleet)
    status, out, err = cli(capsys, "debug", "list", "--database", db)
    assert (status, out) == (0, "the debug log is off for every meter and job\n"), err
    status, out, err = cli(
        capsys, "debug", "on", "--meter", meter, "--minutes", "5", "--max-frames", "50",
        "--database", db,
    )  # fmt: skip
    assert status == 0, err
    assert out.startswith(f"debug log on for meter {meter} until ") and "at most 50" in out
    status, out, _ = cli(capsys, "debug", "list", "--json", "--database", db)
    (switch,) = json.loads(out)
    assert (switch["scope"], switch["target"], switch["max_frames"]) == ("meter", meter, 50)
    status, out, _ = cli(capsys, "debug", "list", "--database", db)
    assert out.splitlines()[0].split()[:3] == ["SCOPE", "TARGET", "UNTIL"] and meter in out

    status, out, err = cli(
        capsys, "jobs", "run", "--meters", meter, "--read", "registers", "--json", "--database", db
    )
    assert status == 0, err
    job_id = json.loads(out)["id"]

    status, out, _ = cli(capsys, "debug", "frames", "--meter", meter, "--database", db)
    lines = out.splitlines()
    assert status == 0 and len(lines) >= 2
    assert any(f" {meter} -> " in line for line in lines)
    assert any(f" {meter} <- " in line for line in lines)
    status, out, _ = cli(
        capsys, "debug", "frames", "--meter", meter, "--job", job_id[:10], "--limit", "2",
        "--json", "--database", db,
    )  # fmt: skip
    frames = json.loads(out)
    assert len(frames) == 2 and {f["job_id"] for f in frames} == {job_id}
    assert all(f["frame"] and f["direction"] in ("tx", "rx") for f in frames)

    status, out, _ = cli(capsys, "debug", "on", "--job", job_id[:8], "--json", "--database", db)
    assert status == 0 and json.loads(out)["target"] == job_id
    status, out, _ = cli(capsys, "debug", "off", "--job", job_id, "--database", db)
    assert status == 0 and out.startswith(f"debug log off for job {job_id}")
    status, out, _ = cli(capsys, "debug", "off", "--meter", meter, "--json", "--database", db)
    assert status == 0 and json.loads(out) == {"off": f"meter {meter}"}
    status, out, _ = cli(capsys, "debug", "list", "--json", "--database", db)
    assert json.loads(out) == []
    status, out, _ = cli(capsys, "debug", "frames", "--meter", meter, "--json", "--database", db)
    assert len(json.loads(out)) >= 2  # switching off keeps what was recorded
    status, out, _ = cli(capsys, "debug", "frames", "--meter", "OTHER", "--database", db)
    assert out == "no frames recorded for meter OTHER\n"


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        (["debug", "on", "--meter", "GHOST"], 1, "[4.1] no device 'GHOST'"),
        (["debug", "on", "--job", "feedfeed"], 1, "no job 'feedfeed'"),
        (["debug", "on", "--meter", "X", "--minutes", "20000"], 1, "at most 7 days"),
        (["debug", "on", "--meter", "X", "--minutes", "0"], 2, "is not >= 1"),
        (["debug", "on", "--meter", "X", "--max-frames", "10001"], 1, "max_frames must be"),
        (["debug", "on"], 2, "one of the arguments --meter --job is required"),
        (["debug", "on", "--meter", "X", "--job", "Y"], 2, "not allowed with argument"),
        (["debug", "off", "--meter", "GHOST"], 1, "the debug log was not on for meter GHOST"),
        (["debug", "off", "--job", "feedfeed"], 1, "no job 'feedfeed'"),
        (["debug", "frames"], 2, "the following arguments are required: --meter"),
        (["debug", "frames", "--meter", "X", "--job", "feedfeed"], 1, "no job 'feedfeed'"),
        (["debug", "frames", "--meter", "X", "--limit", "0"], 2, "is not >= 1"),
        (["debug", "bogus"], 2, "invalid choice"),
    ],
)
def test_debug_errors_are_one_line(db, capsys, argv, status, message):
    assert main([*argv, "--database", db]) == status
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("openhes debug") and "Traceback" not in err
