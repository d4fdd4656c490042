"""``openhes serve`` (adapters/serve.py, adapters/cli_serve.py): the services built from the
settings, started and stopped cleanly; every reason not to start is one line and a non-zero
exit status."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests
from lxml import etree

from adapters.cli import main
from adapters.config import load_settings
from adapters.serve import (
    ServeError,
    build_services,
    check_settings,
    hidden_url,
    running,
    serve,
)

ROOT = Path(__file__).resolve().parent.parent


def settings_for(tmp_path: Path, **values: object):
    defaults: dict[str, object] = {
        "database__url": f"sqlite:///{tmp_path / 'serve.sqlite3'}",
        "broker__namespace": f"serve-test-{uuid.uuid4().hex[:8]}",
        "soap__port": 0,
    }
    return load_settings(environ={}).replace(**{**defaults, **values})


def test_help_lists_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    from adapters.config import SETTINGS

    assert main(["serve", "--help"]) == 0
    out = capsys.readouterr().out
    for setting in SETTINGS:
        assert setting.key in out and setting.env in out


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"soap__processes": 2}, "soap.processes > 1 needs a broker"),
        ({"worker__in_process": 0}, "worker.in_process = 0 needs a broker"),
        ({"tls__certificate": "/nonexistent/cert.pem"}, "tls.certificate: no such file"),
        ({"tls__client_ca": __file__}, "mutual TLS"),
    ],
)
def test_settings_that_cannot_run_are_refused(tmp_path: Path, values: dict, message: str) -> None:
    with pytest.raises(ServeError, match=message.replace(".", r"\.").replace("(", r"\(")):
        check_settings(settings_for(tmp_path, **values))


def test_an_unusable_database_is_one_line(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, database__url="sqlite:////nonexistent/folder/x.sqlite3")
    with pytest.raises(ServeError, match="cannot open the database") as caught:
        build_services(settings)
    assert "\n" not in str(caught.value)


def test_passwords_are_hidden_in_urls() -> None:
    assert hidden_url("amqp://guest:secret@host:5672//") == "amqp://guest:***@host:5672//"
    assert hidden_url("sqlite:///x.db") == "sqlite:///x.db"


def test_cli_errors_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [n for n in os.environ if n.startswith("OPENHES_")]:
        monkeypatch.delenv(name)
    assert main(["serve", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read the configuration file" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("[soap]\nport = 'eighty'\n")
    assert main(["serve", "--config", str(bad)]) == 2
    assert "soap.port" in capsys.readouterr().err
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        monkeypatch.setenv("OPENHES_DATABASE_URL", f"sqlite:///{tmp_path / 'x.sqlite3'}")
        monkeypatch.setenv("OPENHES_SOAP_PORT", str(taken.getsockname()[1]))
        assert main(["serve"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("openhes serve: cannot listen on 127.0.0.1:")
        monkeypatch.setenv("OPENHES_SOAP_PORT", "0")
        monkeypatch.setenv("OPENHES_BROKER_URL", "amqp://guest:pw@127.0.0.1:1//")
        assert main(["serve"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("openhes serve: cannot reach the broker amqp://guest:***@")
    finally:
        taken.close()


def test_serve_answers_soap_and_the_file_drop_and_stops_cleanly(tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    settings = settings_for(
        tmp_path, filedrop__folder=str(drop), filedrop__poll_interval=0.05, auth__required=False
    )
    request = (
        b'<RequestMessage xmlns="http://iec.ch/TC57/2011/schema/message"><Header>'
        b"<Verb>get</Verb><Noun>MeterReadings</Noun><MessageID>file-1</MessageID></Header>"
        b'<Request><GetMeterReadings xmlns="http://iec.ch/TC57/2011/GetMeterReadings#">'
        b"<EndDevice><mRID>NO-SUCH-METER</mRID></EndDevice></GetMeterReadings></Request>"
        b"</RequestMessage>"
    )
    seen: dict[str, object] = {}

    async def scenario() -> int:
        stop = asyncio.Event()
        ready = asyncio.Event()

        def on_ready(services) -> None:
            seen["services"] = services
            ready.set()

        task = asyncio.create_task(serve(settings, stop=stop, ready=on_ready))
        await asyncio.wait_for(ready.wait(), 30)
        services = seen["services"]
        index = await asyncio.to_thread(requests.get, f"{services.url}/openhes/", timeout=10)
        seen["index"] = index.status_code, index.text
        inbox = drop / "inbox"
        (inbox / ".get.tmp").write_bytes(request)
        os.utime(inbox / ".get.tmp", (time.time() - 5, time.time() - 5))
        os.rename(inbox / ".get.tmp", inbox / "get.xml")
        reply = drop / "outbox" / "get.reply.xml"
        for _ in range(500):
            if reply.exists():
                break
            await asyncio.sleep(0.01)
        seen["reply"] = reply.read_bytes() if reply.exists() else b""
        seen["workers"] = len(services.workers)
        stop.set()
        return await asyncio.wait_for(task, 30)

    assert asyncio.run(scenario()) == 0
    status, text = seen["index"]
    assert status == 200 and "GetMeterReadings" in text
    document = etree.fromstring(seen["reply"])
    assert document.findtext(".//{*}Result") == "FAILED"
    assert document.findtext(".//{*}Error/{*}code") == "4.1"  # unknown device
    assert (drop / "archive" / "get.xml").exists()
    assert seen["workers"] == 1


def test_openhes_serve_process_stops_on_sigterm(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENHES_")}
    env.update(
        OPENHES_DATABASE_URL=f"sqlite:///{tmp_path / 'p.sqlite3'}",
        OPENHES_SOAP_PORT="0",
        OPENHES_AUTH_REQUIRED="true",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "adapters.cli", "serve"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("openhes serve: SOAP on http://127.0.0.1:"), line
        url = line.split("SOAP on ", 1)[1].split("/openhes/", 1)[0]
        answer = requests.post(
            f"{url}/openhes/GetMeterReadings",
            data=b"<x/>",
            headers={"Content-Type": "text/xml"},
            timeout=10,
        )
        assert answer.status_code in (400, 401, 500)  # a Fault or a challenge, not a crash
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert "openhes serve: stopped" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_a_restart_on_memory_runs_the_tasks_a_previous_run_left_open(tmp_path: Path) -> None:
    """With memory:// the bus dies with the process: a job whose task was queued (published
    to a bus that is gone) is finished by the next `openhes serve` on the same database."""
    from worker_helpers import REGISTER, register_fake, submit

    from drivers.fake import FakeDriver
    from headend import commands, jobstore
    from mdm.database import open_store

    settings = settings_for(
        tmp_path,
        soap__enabled=False,
        auth__required=False,
        paths__max_sessions=3,
        engine__task_timeout=7.0,
        retry__max_attempts=4,
    )
    store = open_store(settings["database.url"])
    try:
        mrids = register_fake(store, 2)
        job_id, _ = submit(store, None, commands.ReadRegisters(device="*", obis=(REGISTER,)), mrids)
        assert len(jobstore.open_tasks(store, job_id)) == 2
    finally:
        store.close()
    seen: dict[str, object] = {}

    async def scenario() -> int:
        stop = asyncio.Event()
        ready = asyncio.Event()

        def on_ready(services) -> None:
            seen["services"] = services
            ready.set()

        task = asyncio.create_task(serve(settings, stop=stop, ready=on_ready, driver=FakeDriver()))
        await asyncio.wait_for(ready.wait(), 30)
        services = seen["services"]
        view = await services.headend.wait(job_id, timeout=30)
        seen["state"] = view.state
        seen["republished"] = services.republished
        worker = services.workers[0]
        seen["engine"] = (
            worker.throttles.default.max_sessions,
            worker.config.task_timeout,
            worker.config.retry.max_attempts,
        )
        stop.set()
        return await asyncio.wait_for(task, 30)

    assert asyncio.run(scenario()) == 0
    assert seen["state"] == "completed"
    assert seen["republished"] == 2
    assert seen["engine"] == (3, 7.0, 4)  # the engine settings reach serve's workers


def test_nothing_is_republished_when_nothing_is_open(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, soap__enabled=False, auth__required=False)

    async def scenario() -> int:
        async with running(settings) as services:
            return services.republished

    assert asyncio.run(scenario()) == 0


def test_bad_engine_settings_stop_serve_with_one_line(tmp_path: Path) -> None:
    with pytest.raises(ServeError, match=r"paths\.connections_per_s: 0 is not more than 0"):
        check_settings(settings_for(tmp_path, paths__connections_per_s=0))
