"""``openhes demo`` end to end with a small fleet on the embedded default (SQLite in the
--out folder, memory:// bus): a simulated DLMS fleet in its own process, registration, the
bulk read, the SOAP endpoint with authentication, zeep as the MDM/CIS, the pushes to a
loopback receiver, the KPIs and the exports. Each step's outcome is checked from --json."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from lxml import etree

from adapters.cli import main

ROOT = Path(__file__).resolve().parent.parent
METERS = 20


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict, str, Path]:
    folder = tmp_path_factory.mktemp("demo")
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["demo", "--meters", str(METERS), "--out", str(folder), "--json"])
    return status, json.loads(out.getvalue().strip().splitlines()[-1]), err.getvalue(), folder


def steps(result: dict) -> dict[int, dict]:
    return {step["step"]: step for step in result["steps"]}


def test_every_step_succeeds(demo_run: tuple[int, dict, str, Path]) -> None:
    status, result, err, _ = demo_run
    assert status == 0, err
    assert result["ok"] is True
    assert [s["ok"] for s in result["steps"]] == [True] * 9
    assert "every step succeeded" in err  # with --json the narration goes to stderr
    assert "[FAIL]" not in err


def test_fleet_registration_and_bulk_read(demo_run: tuple[int, dict, str, Path]) -> None:
    _, result, err, folder = demo_run
    by = steps(result)
    assert by[1]["port"] > 0
    assert by[2]["registered"] == METERS
    assert by[3]["succeeded"] == by[3]["total"] == METERS
    assert by[3]["readings"] >= METERS * 96  # every channel of yesterday's load profile
    assert f"{METERS}/{METERS} 100.0%" in err  # the progress bar reached the end
    assert (folder / "simulated-meters.csv").is_file()
    assert (folder / "openhes.sqlite3").is_file()


def test_soap_get_meter_readings_and_controls(demo_run: tuple[int, dict, str, Path]) -> None:
    _, result, err, _ = demo_run
    by = steps(result)
    assert by[4]["url"].startswith("http://127.0.0.1:")
    assert by[4]["user"] == "demo-mdm"
    assert by[5]["readings"] == 96
    assert by[5]["reading_type"] == "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
    assert "hour (UTC)" in err  # the table of the meter's readings
    assert by[6]["states"] == ["disconnected, verified", "connected, verified"]


def test_pushes_kpis_and_exports(demo_run: tuple[int, dict, str, Path]) -> None:
    _, result, _, folder = demo_run
    by = steps(result)
    assert by[7]["meter_readings_pushes"] >= 1
    assert by[7]["event_pushes"] >= 1
    assert by[8]["read_rate"] == 1.0
    assert by[8]["comm_rate"] == 1.0
    assert by[8]["failures_by_cause"] == {}
    assert by[8]["completeness"] == 1.0
    files = [Path(p) for p in by[9]["files"]]
    assert sorted(p.suffix for p in files) == [".csv", ".xml"]
    for path in files:
        assert path.parent == folder / "exports"
        assert path.stat().st_size > 0
    csv_lines = next(p for p in files if p.suffix == ".csv").read_text().splitlines()
    assert len(csv_lines) == 1 + METERS * 96
    assert main(["validate", str(next(p for p in files if p.suffix == ".xml"))]) == 0


def test_a_step_that_fails_says_so_in_one_line_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "openhes.sqlite3").mkdir()  # the database cannot be opened
    assert main(["demo", "--meters", "2", "--out", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    failed = [line for line in out.splitlines() if line.startswith("[FAIL]")]
    assert len(failed) == 1
    assert "1. start a simulated DLMS fleet and OpenHES" in failed[0]
    assert "cannot open the database" in failed[0]
    assert "Traceback" not in out


def test_keep_running_leaves_the_endpoint_up_with_requests_to_try(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENHES_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "adapters.cli", "demo", "--meters", "3", "--out", str(tmp_path),
         "--keep-running"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C stops the demo" in line:
                break
        text = "".join(lines)
        assert "every step succeeded" in text, text
        curl = next(line for line in lines if "curl -u" in line)
        credentials = curl.split("curl -u", 1)[1].split()[0]
        user, password = credentials.split(":", 1)
        sample = next(line for line in lines if "--data-binary @" in line)
        path, url = sample.split("--data-binary @", 1)[1].split()
        answer = requests.post(
            url,
            data=Path(path).read_bytes(),
            auth=(user, password),
            headers={"Content-Type": "text/xml; charset=utf-8"},
            timeout=30,
        )
        assert answer.status_code == 200
        document = etree.fromstring(answer.content)
        assert document.findtext(".//{*}Reply/{*}Result") == "OK"
        assert len(document.findall(".//{*}IntervalReadings")) >= 96
        refused = requests.post(
            url, data=Path(path).read_bytes(), auth=(user, "wrong"),
            headers={"Content-Type": "text/xml; charset=utf-8"}, timeout=30,
        )  # fmt: skip
        assert refused.status_code == 401
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
