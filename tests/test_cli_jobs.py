"""`openhes jobs`, `openhes schedules` and `openhes stats` end to end: meters of the DLMS
simulator (served from a thread) imported with `openhes meters import`, jobs run with the
in-process worker, their monitor and statistics output as tables and JSON, schedules kept,
and every error as one line with a non-zero exit status."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.cli import main
from drivers.sim.fleet import Fleet, FleetConfig

MASTER_HEX = "00" * 32


class ServedFleet:
    """A simulated fleet served by its own event loop in a background thread."""

    def __init__(self, meters: int) -> None:
        self.fleet = Fleet(FleetConfig(meters=meters, base_port=0, shared_port=True))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.servers = asyncio.run_coroutine_threadsafe(self.fleet.serve(), self.loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.fleet.close(self.servers), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def fleet() -> Iterator[ServedFleet]:
    served = ServedFleet(3)
    yield served
    served.close()


@pytest.fixture
def db(tmp_path: Path, fleet: ServedFleet, monkeypatch: pytest.MonkeyPatch) -> str:
    """A SQLite file with the fleet's three meters registered; its URL."""
    monkeypatch.setenv("OPENHES_MASTER_KEY", MASTER_HEX)
    monkeypatch.delenv("OPENHES_BROKER_URL", raising=False)
    monkeypatch.delenv("OPENHES_DATABASE_URL", raising=False)
    book = tmp_path / "meters.csv"
    fleet.fleet.write_address_book(book)
    url = str(tmp_path / "hes.sqlite3")
    assert main(["meters", "import", str(book), "--database", url]) == 0
    return url


def mrids(fleet: ServedFleet) -> list[str]:
    return [row["mRID"] for row in fleet.fleet.address_book()]


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_run_show_list_and_stats(db, fleet, capsys):
    status, out, err = cli(capsys, "jobs", "run", "--all", "--read", "registers", "--database", db)
    assert status == 0, err
    assert out.splitlines()[0].startswith("job ")
    assert "3/3 100.0%" in err and "tasks done (succeeded 3)" in err  # the progress bar
    assert "completed: 3 of 3 succeeded (100.0%)" in out
    job_id = out.splitlines()[0].split()[1]

    status, out, _ = cli(capsys, "jobs", "list", "--database", db)
    assert status == 0
    header, row = out.splitlines()
    assert header.split() == ["JOB", "KIND", "STATE", "TASKS", "DONE", "OK", "CREATED", "NAME"]
    assert row.startswith(job_id[:12]) and "bulk" in row and "100.0%" in row

    status, out, _ = cli(
        capsys, "jobs", "show", job_id[:8], "--tasks", "--attempts", "--database", db
    )
    assert status == 0
    assert f"job       {job_id}" in out and "progress  3/3 (100.0%), success 100.0%" in out
    assert "queue wait p50 " in out and "run time   p50 " in out
    assert "traffic   3 attempts" in out
    for mrid in mrids(fleet):
        assert f"  {mrid} #1 " in out and " ok" in out

    status, out, _ = cli(capsys, "jobs", "show", job_id, "--json", "--database", db)
    data = json.loads(out)
    assert data["state"] == "completed" and data["durations"]["attempts"] == 3
    assert data["tasks"] == []  # bytes: the worker does not count them yet (0)

    status, out, _ = cli(capsys, "stats", "--by", "meter", "--silent-days", "1", "--database", db)
    assert status == 0
    assert "3 attempts, 3 ok, 0 failed (100.0% communication success)" in out
    assert "0 meter(s) without a successful session in 1 days" in out
    for mrid in mrids(fleet):
        assert mrid in out

    for by in ("path", "type"):
        status, out, _ = cli(capsys, "stats", "--by", by, "--json", "--database", db)
        data = json.loads(out)
        assert status == 0 and data["by"] == by
        assert sum(g["attempts"] for g in data["groups"]) == 3
    status, out, _ = cli(capsys, "stats", "--json", "--days", "2", "--database", db)
    data = json.loads(out)
    assert data["summary"]["successes"] == 3 and len(data["days"]) == 2
    assert data["days"][-1]["read_success_rate"] == 1.0


def test_a_failing_job_and_its_rerun(db, fleet, capsys):
    first = mrids(fleet)[0]
    status, out, err = cli(
        capsys,
        "jobs",
        "run",
        "--meters",
        first,
        "--read",
        "registers",
        "--obis",
        "9.9.9.9.9.255",
        "--json",
        "--database",
        db,
    )
    assert status == 1, err
    data = json.loads(out)
    assert data["state"] == "completed_with_errors" and data["counts"] == {"failed": 1}
    assert data["failed"][0]["mrid"] == first
    job_id = data["id"]
    status, out, _ = cli(capsys, "jobs", "rerun-errors", job_id, "--database", db)
    assert status == 1
    assert "completed_with_errors: 0 of 1 succeeded" in out and f"  {first}: failed" in out
    status, out, _ = cli(capsys, "jobs", "list", "--kind", "rerun", "--json", "--database", db)
    (rerun,) = json.loads(out)
    assert rerun["parent_id"] == job_id
    status, out, _ = cli(capsys, "stats", "--by", "meter", "--json", "--database", db)
    (group,) = json.loads(out)["groups"]
    assert group["failures"] == 2 and group["by_cause"] == {"object_not_found": 2}


def test_a_full_read_is_one_session_and_counts_as_a_read(db, fleet, capsys):
    first = mrids(fleet)[0]
    status, out, err = cli(
        capsys,
        "jobs",
        "run",
        "--meters",
        first,
        "--read",
        "full",
        "--obis",
        "1.0.1.8.0.255",
        "--json",
        "--database",
        db,
    )
    assert status == 0, err
    data = json.loads(out)
    assert data["state"] == "completed" and data["name"] == f"FullRead {first}"
    status, out, _ = cli(capsys, "jobs", "show", data["id"], "--json", "--database", db)
    assert json.loads(out)["durations"]["attempts"] == 1  # profile and registers, one session
    status, out, _ = cli(capsys, "stats", "--json", "--days", "1", "--database", db)
    day = json.loads(out)["days"][-1]
    assert (day["meters"], day["meters_read"], day["read_success_rate"]) == (1, 1, 1.0)
    status, out, err = cli(
        capsys,
        "schedules",
        "add",
        "daily-full",
        "--rule",
        "0 3 * * *",
        "--all",
        "--read",
        "full",
        "--window",
        "yesterday",
        "--json",
        "--database",
        db,
    )
    assert status == 0, err
    assert json.loads(out)["action"] == {
        "read": "full",
        "obis": ["1.0.1.8.0.255", "1.0.2.8.0.255"],
        "profile": None,
    }


def test_no_wait_is_refused_on_memory(db, fleet, capsys):
    """With memory:// the tasks live in the CLI process: --no-wait would leave them to nobody."""
    status, out, err = cli(
        capsys,
        "jobs",
        "run",
        "--meters",
        mrids(fleet)[1],
        "--control",
        "disconnect",
        "--no-wait",
        "--database",
        db,
    )
    assert status == 2 and out == ""
    assert len(err.splitlines()) == 1 and "--no-wait needs a broker" in err, err
    status, out, _ = cli(capsys, "jobs", "list", "--database", db)
    assert out.strip() == "no jobs"  # nothing was created


def test_a_timeout_on_memory_says_what_becomes_of_the_job(db, fleet, capsys):
    status, _, err = cli(
        capsys, "jobs", "run", "--all", "--read", "registers", "--timeout", "0", "--database", db
    )
    assert status == 1
    (line,) = err.strip().splitlines()[-1:]
    assert line.startswith("openhes jobs run: timed out waiting for the job; with the memory://")
    assert "until `openhes serve` on this database starts" in line and "goes on" not in line


def test_schedules(db, fleet, capsys):
    status, out, err = cli(
        capsys,
        "schedules",
        "add",
        "nightly",
        "--rule",
        "30 2 * * *",
        "--zone",
        "Europe/Amsterdam",
        "--all",
        "--read",
        "profile",
        "--window",
        "yesterday",
        "--database",
        db,
    )
    assert status == 0, err
    assert out.startswith("schedule nightly created; next firing ") and out.strip().endswith(
        ("CET", "CEST")
    )
    status, out, _ = cli(
        capsys,
        "schedules",
        "add",
        "few",
        "--rule",
        "every 2 hours",
        "--meters",
        ",".join(mrids(fleet)[:2]),
        "--read",
        "registers",
        "--json",
        "--database",
        db,
    )
    assert status == 0 and json.loads(out)["devices"] == sorted(mrids(fleet)[:2])
    status, out, _ = cli(capsys, "schedules", "list", "--database", db)
    lines = out.splitlines()
    assert lines[0].split()[:6] == ["NAME", "ON", "RULE", "ZONE", "ACTION", "TARGET"]
    assert lines[1].startswith("few ") and "every 2 hours" in lines[1]
    assert lines[2].startswith("nightly ") and "read profile" in lines[2]
    assert cli(capsys, "schedules", "disable", "nightly", "--database", db)[1] == (
        "schedule nightly disabled\n"
    )
    status, out, _ = cli(capsys, "schedules", "list", "--json", "--database", db)
    assert [s["enabled"] for s in json.loads(out)] == [True, False]
    status, out, _ = cli(capsys, "schedules", "enable", "nightly", "--database", db)
    assert status == 0 and out.startswith("schedule nightly enabled; next firing")
    assert cli(capsys, "schedules", "remove", "few", "--database", db)[0] == 0
    status, out, _ = cli(capsys, "schedules", "list", "--json", "--database", db)
    assert [s["name"] for s in json.loads(out)] == ["nightly"]


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        (
            ["schedules", "add", "x", "--rule", "61 * * * *", "--all", "--read", "registers"],
            1,
            "[2.5] cron minute field: 61 is outside 0-59",
        ),
        (
            ["schedules", "add", "x", "--rule", "0 0 30 2 *", "--all", "--read", "registers"],
            1,
            "never fires",
        ),
        (
            ["schedules", "add", "x", "--rule", "*/1 * * * *", "--all", "--read", "registers"],
            1,
            "more often than the minimum interval",
        ),
        (
            [
                "schedules",
                "add",
                "x",
                "--rule",
                "0 2 * * *",
                "--meters",
                "GHOST",
                "--read",
                "registers",
            ],
            1,
            "[4.1] unknown meter(s): GHOST",
        ),
        (
            [
                "schedules",
                "add",
                "x",
                "--rule",
                "0 2 * * *",
                "--group",
                "nope",
                "--read",
                "registers",
            ],
            1,
            "no device group 'nope'",
        ),
        (
            [
                "schedules",
                "add",
                "x",
                "--rule",
                "0 2 * * *",
                "--all",
                "--read",
                "registers",
                "--start",
                "2026-01-01T00:00",
            ],
            2,
            "has no time zone offset",
        ),
        (
            [
                "schedules",
                "add",
                "x",
                "--rule",
                "0 2 * * *",
                "--all",
                "--read",
                "registers",
                "--zone",
                "Nowhere/Land",
            ],
            2,
            "not an IANA time zone",
        ),
        (["schedules", "add", "x", "--rule", "0 2 * * *", "--all"], 2, "--read"),
        (["schedules", "enable", "ghost"], 1, "no schedule named 'ghost'"),
        (["schedules", "remove", "ghost"], 1, "no schedule named 'ghost'"),
        (["jobs", "show", "feedfeed"], 1, "no job 'feedfeed'"),
        (["jobs", "rerun-errors", "feedfeed"], 1, "no job 'feedfeed'"),
        (
            ["jobs", "run", "--meters", "GHOST", "--read", "registers"],
            1,
            "[4.1] 1 of 1 meters refused: no meter 'GHOST' is registered",
        ),
        (["jobs", "run", "--group", "nope", "--read", "registers"], 1, "no device group"),
        (
            ["jobs", "run", "--all", "--read", "profile", "--obis", "1.0.1.8.0.255"],
            2,
            "--obis goes with --read registers or --read full",
        ),
        (
            ["jobs", "run", "--all", "--read", "registers", "--window", "yesterday"],
            2,
            "--window goes with",
        ),
        (
            ["jobs", "run", "--all", "--read", "registers", "--broker", "ftp://x"],
            2,
            "broker URL scheme 'ftp'",
        ),
        (["jobs", "run", "--all", "--control", "explode"], 2, "invalid choice"),
        (["jobs", "list", "--limit", "0"], 2, "is not >= 1"),
        (["stats", "--by", "colour"], 2, "invalid choice"),
    ],
)
def test_errors_are_one_line(db, capsys, argv, status, message):
    assert main([*argv, "--database", db]) == status
    _, err = capsys.readouterr()
    assert message in err
    assert (
        err.startswith((f"openhes {argv[0]} ", f"openhes {argv[0]}:"))
        and len(err.strip().splitlines()) == 1
    )
    assert "Traceback" not in err


def test_a_database_that_cannot_be_opened(tmp_path, capsys):
    status = main(["jobs", "list", "--database", str(tmp_path / "missing" / "x.sqlite3")])
    _, err = capsys.readouterr()
    assert status == 2 and err.startswith("openhes jobs list: cannot open the database")
    assert len(err.strip().splitlines()) == 1


def test_empty_database_outputs(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OPENHES_DATABASE_URL", raising=False)
    url = str(tmp_path / "empty.sqlite3")
    assert cli(capsys, "jobs", "list", "--database", url)[1] == "no jobs\n"
    assert cli(capsys, "schedules", "list", "--database", url)[1] == "no schedules\n"
    status, out, _ = cli(capsys, "stats", "--days", "1", "--database", url)
    assert status == 0 and "0 attempts, 0 ok, 0 failed (- communication success)" in out
    monkeypatch.setenv("OPENHES_DATABASE_URL", url)
    assert cli(capsys, "jobs", "list", "--json")[1] == "[]\n"
