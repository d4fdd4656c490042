"""The demo's flow distributed, on PostgreSQL and RabbitMQ: ``openhes serve`` as a process of
its own with no in-process worker (``worker.in_process = 0``), two ``openhes worker``
processes, a simulated DLMS fleet in another, the meters registered with ``openhes meters
import``; a zeep client reads every meter through the router (an on-demand bulk read the
workers share), gets one meter's readings, disconnects and connects one meter; the MDM's
loopback receiver gets the CreatedMeterReadings pushes. Every process is stopped afterwards,
whatever happened."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
import zeep
from sqlalchemy import create_engine, func, select, text
from zeep.transports import Transport

from adapters.auth.passwords import ScryptParams
from adapters.auth.users import add_user
from adapters.demo_fleet import FleetProcess
from adapters.receiver import Receiver
from drivers.sim.fleet import write_address_book
from headend.schema import task_attempts
from headend.taskbus import TaskBus
from mdm.database import open_store, reading, resolve_url

pytestmark = pytest.mark.services

ROOT = Path(__file__).resolve().parent.parent
METERS = 12
MASTER_KEY = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
USER, PASSWORD = "e2e-mdm", "e2e-secret-pw"


@pytest.fixture
def database(postgres_url: str) -> Iterator[str]:
    """A database of its own (every process opens it by URL), dropped afterwards."""
    name = f"openhes_e2e_{uuid.uuid4().hex[:10]}"
    admin = create_engine(resolve_url(postgres_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    url = resolve_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


@pytest.fixture
def namespace(amqp_url: str) -> Iterator[str]:
    name = f"openhes-e2e-{uuid.uuid4().hex[:10]}"
    try:
        yield name
    finally:
        bus = TaskBus.from_url(amqp_url, namespace=name)
        bus.delete()
        bus.close()


class Processes:
    """Child processes, each stopped with SIGTERM (then SIGKILL) at the end."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.children: list[tuple[str, subprocess.Popen[str]]] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
        log = (self.logs / f"{name}.log").open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "adapters.cli", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE if name == "serve" else log,
            stderr=log,
            text=True,
        )
        self.children.append((name, proc))
        return proc

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text()

    def stop_all(self) -> dict[str, int | None]:
        for _, proc in self.children:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        for name, proc in self.children:
            try:
                codes[name] = proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
                codes[name] = None
        return codes


def environment(database: str, amqp_url: str, namespace: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENHES_")}
    env.update(
        OPENHES_DATABASE_URL=database,
        OPENHES_BROKER_URL=amqp_url,
        OPENHES_BROKER_NAMESPACE=namespace,
        OPENHES_MASTER_KEY=MASTER_KEY,
    )
    return env


def wait_for_line(proc: subprocess.Popen[str], marker: str, timeout: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if marker in line:
            return line
    raise AssertionError(f"no {marker!r} from the process: {''.join(seen)!r}")


def client(url: str, service: str) -> zeep.Client:
    session = requests.Session()
    session.auth = (USER, PASSWORD)
    return zeep.Client(
        f"{url}/openhes/{service}?wsdl", transport=Transport(session=session, timeout=60)
    )


def header(verb: str, noun: str) -> dict[str, object]:
    return {"Verb": verb, "Noun": noun, "MessageID": str(uuid.uuid4())}


def test_serve_with_two_workers_on_postgresql_and_rabbitmq(
    database: str, amqp_url: str, namespace: str, tmp_path: Path
) -> None:
    processes = Processes(tmp_path)
    fleet = FleetProcess(METERS)
    receiver = Receiver().start()
    try:
        env = environment(database, amqp_url, namespace)
        book = tmp_path / "meters.csv"
        write_address_book(book, fleet.address_book())
        imported = subprocess.run(
            [sys.executable, "-m", "adapters.cli", "meters", "import", str(book)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert imported.returncode == 0, imported.stderr
        store = open_store(database)
        try:
            add_user(store, USER, PASSWORD, ["operator"], params=ScryptParams(n=2**4, r=1, p=1))
        finally:
            store.close()
        config = tmp_path / "openhes.toml"
        config.write_text(
            "[soap]\nport = 0\n[worker]\nin_process = 0\n\n"
            "[[subscriptions]]\n"
            f'name = "mdm"\naddress = "{receiver.url("/mdm")}"\n'
            'nouns = ["MeterReadings"]\nverbs = ["created"]\n'
        )
        serve = processes.start("serve", ["serve", "--config", str(config)], env)
        for number in (1, 2):
            processes.start(
                f"worker{number}",
                ["worker", "--concurrency", "4", "--grace", "5", "--name", f"e2e-worker-{number}"],
                env,
            )
        line = wait_for_line(serve, "openhes serve: SOAP on ", 60)
        url = line.split("SOAP on ", 1)[1].split("/openhes/", 1)[0]
        assert "0 worker(s)" in line and "authentication on" in line

        # The bulk read through the router: no reading stored yet and the window reaching
        # the present, so the router reads every meter on demand (the workers share it).
        mrids = [row["mRID"] for row in fleet.address_book()]
        now = datetime.now(UTC)
        get = client(url, "GetMeterReadings")
        response = get.service.GetMeterReadings(
            Header=header("get", "MeterReadings"),
            Request={
                "GetMeterReadings": {
                    "EndDevice": [{"mRID": mrid} for mrid in mrids],
                    "TimeSchedule": [
                        {"scheduleInterval": {"start": now - timedelta(hours=2), "end": now}}
                    ],
                }
            },
        )
        assert response.Reply.Result == "OK", response.Reply.Error
        read = {mr.Meter.mRID for mr in response.Payload.MeterReadings.MeterReading}
        assert read == set(mrids)

        # GetMeterReadings of one meter, answered from the store now.
        one = get.service.GetMeterReadings(
            Header=header("get", "MeterReadings"),
            Request={
                "GetMeterReadings": {
                    "EndDevice": [{"mRID": mrids[0]}],
                    "TimeSchedule": [
                        {"scheduleInterval": {"start": now - timedelta(hours=2), "end": now}}
                    ],
                }
            },
        )
        assert one.Reply.Result == "OK"
        blocks = one.Payload.MeterReadings.MeterReading[0].IntervalBlocks
        assert blocks and len(blocks[0].IntervalReadings) >= 7  # two hours of quarter-hours

        # Disconnect, then connect, one meter: the states read back from it.
        controls = client(url, "ExecuteEndDeviceControls")
        states = []
        for code in ("3.31.0.23", "3.31.0.18"):
            reply = controls.service.CreateEndDeviceControls(
                Header=header("create", "EndDeviceControls"),
                Payload={
                    "EndDeviceControls": {
                        "EndDeviceControl": [
                            {
                                "EndDeviceControlType": {"ref": code},
                                "EndDevices": [{"mRID": mrids[1]}],
                            }
                        ]
                    }
                },
            )
            assert reply.Reply.Result == "OK", reply.Reply.Error
            states += [e.reason for e in reply.Reply.Error if e.reason and "verified" in e.reason]
        assert states == ["disconnected, verified", "connected, verified"]

        # The MDM got a CreatedMeterReadings push for every meter read.
        def pushed() -> set[str]:
            return {
                mrid
                for m in receiver.messages
                if (m.noun or "").lower() == "meterreadings"
                for mrid in mrids
                if mrid.encode() in m.body
            }

        assert receiver.wait(lambda: pushed() == set(mrids), timeout=30), pushed()

        # The work was done by the two worker processes, not by `openhes serve`.
        store = open_store(database, migrate=False)
        try:
            with reading(store) as conn:
                workers = set(conn.execute(select(task_attempts.c.worker).distinct()).scalars())
                attempts = conn.execute(select(func.count()).select_from(task_attempts)).scalar()
        finally:
            store.close()
        assert workers <= {"e2e-worker-1", "e2e-worker-2"} and workers
        assert attempts >= METERS + 2
    finally:
        codes = processes.stop_all()
        receiver.stop()
        fleet.stop()
    assert codes["serve"] == 0, processes.log("serve")
    assert codes["worker1"] == 0 and codes["worker2"] == 0
    assert "stopped" in processes.log("worker1")
