"""Benchmark of the SOAP edge: two server processes (gunicorn with uvicorn workers) on
loopback, load from a separate process with 16 concurrent connections.

    python bench/soap.py            # 3 rounds of 10 s per scenario
    python bench/soap.py --quick    # 2 rounds of 4 s per scenario, well under a minute
    python bench/soap.py --database postgresql://user@host/db   # PostgreSQL, not SQLite

Database: by default a SQLite file in a temporary directory. With ``--database`` and a
PostgreSQL URL, a fresh schema in that database (created, filled, and dropped at the end, even
on failure); both server processes open that schema. SQLite has one write lock for the file,
so with two server processes each control acknowledgement (its message-log insert) can wait
behind the other process's writes; more than one process is documented to use PostgreSQL
(README, "Scaling out").

Scenarios, run in rounds (ceiling, get, control ack in each round) against the same server:
  ceiling   a bare endpoint in the same application that returns a fixed body: what the
            HTTP stack alone allows here
  get       GetMeterReadings (SOAP 1.1, the per-noun service) for one meter-day (96
            15-minute readings) answered from the store filled first; the reply is
            checked once before the run (Result OK, 96 readings)
  control   CreateEndDeviceControls with AsyncReplyFlag and a ReplyAddress, each request with
            its own MessageID: the router records the request and acknowledges at once (the
            control job and its reply run in the background). No worker runs the jobs, so
            each request's background work gives up waiting for its job after
            ASYNC_TIMEOUT s and puts its reply ("not finished; it goes on running") in the
            outbox. That background work may lag behind the acknowledgements: after the
            scenario the benchmark waits until every accepted request is answered before
            the next scenario, and reports that wait (control_backlog_drain_s, which
            includes ASYNC_TIMEOUT) and the rate at which requests were carried through to
            their reply (control_done_rps)

Load: wrk (``apt-get install wrk``) with one thread and 16 connections when installed; else
a client of this script in 4 processes of 4 connections each. Server CPU: utime+stime of the
gunicorn master and workers from /proc, over the get scenario, per request. Human-readable
lines first, then one JSON object with the figures (medians over the rounds) on the last line.
Targets: get >= 1,500 requests/s with p99 < 50 ms; control acknowledgement p99 < 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

GET_TARGET_RPS = 1500
GET_TARGET_P99_MS = 50.0
CONTROL_TARGET_P99_MS = 20.0
DAY = datetime(2024, 1, 1, tzinfo=UTC)
GET_ACTION = "http://iec.ch/TC57/2011/GetMeterReadings/GetMeterReadings"
CONTROL_ACTION = "http://iec.ch/TC57/2011/EndDeviceControls/CreateEndDeviceControls"
REPLY_ADDRESS = "http://127.0.0.1:9/openhes-bench/replies"
CEILING_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<soap:Envelope xmlns:soap='
    b'"http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><ok/></soap:Body></soap:Envelope>'
)
ID_MARK = "BENCH-MESSAGE-ID"
# How long an asynchronous control's background work waits for its job (no worker runs it).
ASYNC_TIMEOUT = 2.0


# ---------------------------------------------------------------- the server process


def build_app(db_url: str, schema: str | None = None):
    """One server process's application: store, head-end (memory bus, no worker), outbox,
    router, the SOAP edge, and the ceiling endpoint."""
    from contextlib import asynccontextmanager

    from starlette.responses import Response
    from starlette.routing import Route

    from adapters.soap.app import create_app
    from adapters.soap.settings import SoapSettings
    from headend.outbox import Outbox
    from headend.router import Router
    from headend.service import HeadEnd
    from headend.taskbus import TaskBus
    from mdm.database import open_store

    store = open_store(db_url, schema=schema, migrate=False)
    bus = TaskBus.from_url("memory://")
    # No worker here: control jobs wait on the bus as they would for worker processes. The
    # background waits for them poll rarely, so pending jobs do not load the store.
    headend = HeadEnd(store, bus, keyring=keyring(), poll_interval=30.0)
    router = Router(store, headend, outbox=Outbox(store), async_timeout=ASYNC_TIMEOUT)

    @asynccontextmanager
    async def lifespan(_app):
        await headend.start()
        try:
            yield
        finally:
            await headend.stop()
            bus.close()

    app = create_app(router, None, SoapSettings(), lifespan=lifespan)

    async def ceiling(_request):
        return Response(CEILING_BODY, media_type="text/xml; charset=utf-8")

    app.router.routes.insert(0, Route("/ceiling", ceiling, methods=["POST"]))
    return app


def run_server(args: argparse.Namespace) -> None:
    from adapters.soap.server import serve
    from adapters.soap.settings import SoapSettings

    settings = SoapSettings(host="127.0.0.1", port=args.port, workers=args.workers)
    serve(settings, lambda: build_app(args.db, args.schema))


# ---------------------------------------------------------------- preparing the store


def keyring():
    from headend.keys import Keyring, MasterKey

    return Keyring(MasterKey(bytes(range(32))))  # a benchmark's throw-away store


def fill_store(db_url: str, meters: int, schema: str | None = None) -> None:
    from headend.registry import CommPath, MeterRecord, Registry, SecurityProfile
    from mdm.database import open_store
    from mdm.devices import Device
    from mdm.ingest import ingest
    from mdm.normalise import RawValue

    store = open_store(db_url, schema=schema)
    try:
        registry = Registry(store, keyring())
        registry.upsert(
            [
                MeterRecord(
                    device=Device(f"B{i:05d}", serial=f"S{i:05d}", protocol="dlms"),
                    primary=CommPath("wrapper", host="127.0.0.1", port=9, wport=1),
                    security=SecurityProfile(client_address=16, authentication="none"),
                )
                for i in range(meters)
            ],
            who="bench",
        )
        ingest(
            store,
            [
                RawValue(
                    "B00000",
                    "1-0:1.8.0",
                    DAY + timedelta(minutes=15 * (i + 1)),
                    100_000 + 7 * i,
                    "Wh",
                    interval_minutes=15,
                )
                for i in range(96)
            ],
        )
    finally:
        store.close()


def get_request() -> bytes:
    from cim.envelope import Header, Message, MessageKind, Request
    from cim.get_meter_readings import GetMeterReadings
    from cim.messages import emit_message
    from cim.model import DateTimeInterval, ObjectRef

    message = Message(
        kind=MessageKind.REQUEST,
        header=Header(verb="get", noun="MeterReadings", message_id=str(uuid.uuid4())),
        request=Request(
            get_profile=GetMeterReadings(
                end_devices=[ObjectRef("B00000")],
                time_schedules=[DateTimeInterval(DAY, DAY + timedelta(days=1))],
            )
        ),
        wrapper="GetMeterReadings",
    )
    return soap(emit_message(message))


def control_request(meters: int) -> bytes:
    """A template: ID_MARK is replaced by a fresh MessageID for every request."""
    from cim.end_device_controls import EndDeviceControl, EndDeviceControls
    from cim.envelope import Header, Message, MessageKind, Payload
    from cim.messages import emit_message
    from cim.model import ObjectRef

    message = Message(
        kind=MessageKind.REQUEST,
        header=Header(
            verb="create",
            noun="EndDeviceControls",
            message_id=ID_MARK,
            async_reply_flag=True,
            reply_address=REPLY_ADDRESS,
        ),
        payload=Payload(
            document=EndDeviceControls(
                controls=[
                    EndDeviceControl(control_type="3.31.0.23", end_devices=[ObjectRef("B00001")])
                ]
            )
        ),
        wrapper="CreateEndDeviceControls",
    )
    return soap(emit_message(message))


def soap(body: bytes) -> bytes:
    body = body[body.index(b"?>") + 2 :].lstrip() if body.startswith(b"<?xml") else body
    return (
        b'<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv='
        b'"http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>'
        + body
        + b"</soapenv:Body></soapenv:Envelope>"
    )


# ---------------------------------------------------------------- driving the load


def post(url: str, body: bytes, action: str) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": action}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _lua_string(text: str) -> str:
    level = "=" * 4
    assert f"]{level}]" not in text
    return f"[{level}[{text}]{level}]"


def wrk_script(body: bytes, action: str, unique: bool) -> str:
    text = body.decode("utf-8")
    lines = [
        'wrk.method = "POST"',
        'wrk.headers["Content-Type"] = "text/xml; charset=utf-8"',
        f'wrk.headers["SOAPAction"] = "{action}"',
    ]
    if not unique:
        lines.append(f"wrk.body = {_lua_string(text)}")
    else:
        head, tail = text.split(ID_MARK)
        prefix = uuid.uuid4().hex[:12]
        lines += [
            f"local head = {_lua_string(head)}",
            f"local tail = {_lua_string(tail)}",
            "local n = 0",
            "request = function()",
            "  n = n + 1",
            f'  return wrk.format(nil, nil, nil, head .. "{prefix}-" .. n .. tail)',
            "end",
        ]
    return "\n".join(lines) + "\n"


def _ms(text: str) -> float:
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0), ("m", 60_000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text) * 1000.0


def run_wrk(
    url: str,
    body: bytes,
    action: str,
    *,
    unique: bool,
    seconds: float,
    connections: int,
    workdir: str,
) -> dict:
    script = Path(workdir) / f"load-{uuid.uuid4().hex[:8]}.lua"
    script.write_text(wrk_script(body, action, unique))
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"wrk failed:\n{done.stdout}\n{done.stderr}")
    out = {"requests": 0, "rps": 0.0, "p50_ms": None, "p99_ms": None, "errors": 0}
    for line in done.stdout.splitlines():
        parts = line.split()
        if line.strip().startswith("50%"):
            out["p50_ms"] = _ms(parts[1])
        elif line.strip().startswith("99%"):
            out["p99_ms"] = _ms(parts[1])
        elif "requests in" in line:
            out["requests"] = int(parts[0])
        elif line.startswith("Requests/sec:"):
            out["rps"] = float(parts[1])
        elif "Non-2xx" in line or "Socket errors" in line:
            out["errors"] += sum(int(p.strip(",")) for p in parts if p.strip(",").isdigit())
    return out


async def _client_loop(
    host: str,
    port: int,
    path: str,
    body: bytes,
    action: str,
    unique: bool,
    until: float,
    latencies: list[float],
    errors: list[int],
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    prefix = uuid.uuid4().hex[:12]
    n = 0
    try:
        while time.perf_counter() < until:
            n += 1
            payload = body.replace(ID_MARK.encode(), f"{prefix}-{n}".encode()) if unique else body
            head = (
                f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f'Content-Type: text/xml; charset=utf-8\r\nSOAPAction: "{action}"\r\n'
                f"Content-Length: {len(payload)}\r\n\r\n"
            ).encode()
            started = time.perf_counter()
            writer.write(head + payload)
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if b" 200 " not in status_line:
                errors.append(1)
    finally:
        writer.close()


def _client_process(args: argparse.Namespace) -> None:
    body = Path(args.body).read_bytes()
    latencies: list[float] = []
    errors: list[int] = []
    until = time.perf_counter() + args.seconds

    async def main() -> None:
        await asyncio.gather(
            *(
                _client_loop(
                    args.host,
                    args.port,
                    args.path,
                    body,
                    args.action,
                    args.unique,
                    until,
                    latencies,
                    errors,
                )
                for _ in range(args.connections)
            )
        )

    asyncio.run(main())
    print(json.dumps({"latencies": latencies, "errors": len(errors)}))


def run_python_load(
    url: str,
    body: bytes,
    action: str,
    *,
    unique: bool,
    seconds: float,
    connections: int,
    workdir: str,
) -> dict:
    from urllib.parse import urlparse

    parsed = urlparse(url)
    body_file = Path(workdir) / f"body-{uuid.uuid4().hex[:8]}.xml"
    body_file.write_bytes(body)
    processes = 4
    per_process = max(1, connections // processes)
    command = [
        sys.executable,
        __file__,
        "--client",
        "--host",
        parsed.hostname,
        "--port",
        str(parsed.port),
        "--path",
        parsed.path,
        "--body",
        str(body_file),
        "--action",
        action,
        "--seconds",
        str(seconds),
        "--connections",
        str(per_process),
    ] + (["--unique"] if unique else [])
    started = time.perf_counter()
    children = [
        subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(processes)
    ]
    latencies: list[float] = []
    errors = 0
    for child in children:
        out, _ = child.communicate()
        result = json.loads(out.strip().splitlines()[-1])
        latencies += result["latencies"]
        errors += result["errors"]
    elapsed = time.perf_counter() - started
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000  # noqa: E731
    return {
        "requests": len(latencies),
        "rps": len(latencies) / max(elapsed, seconds),
        "p50_ms": pick(0.50),
        "p99_ms": pick(0.99),
        "errors": errors,
    }


# ---------------------------------------------------------------- server CPU


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _workers(master: int) -> list[int]:
    """The live child processes (gunicorn workers) of ``master``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            if int(fields[1]) == master:
                found.append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    return sorted(found)


def server_cpu(master: int) -> float:
    """utime+stime of the gunicorn master and its live workers."""
    total = _cpu_seconds(master)
    for pid in _workers(master):
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += _cpu_seconds(pid)
    return total


def connections_per_worker(master: int, port: int) -> list[int]:
    """Established TCP connections to ``port`` held by each worker (Linux /proc): the kernel
    spreads keep-alive clients over the workers' SO_REUSEPORT sockets by a hash, so the
    split varies from round to round, and the busier worker sets the latency tail."""
    established: set[str] = set()  # socket inodes
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as handle:
            for line in list(handle)[1:]:
                fields = line.split()
                if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    established.add(fields[9])
    counts = []
    for pid in _workers(master):
        held = 0
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:[") and target[8:-1] in established:
                        held += 1
        counts.append(held)
    return counts


@contextmanager
def spread_sampled(master: int, port: int, after: float) -> Iterator[dict]:
    """Counts the connections per worker ``after`` seconds into the block, in a thread:
    ``out["spread"]`` (absent when it ended sooner)."""
    import threading

    out: dict = {}
    stop = threading.Event()

    def sample() -> None:
        if not stop.wait(after):
            with contextlib.suppress(OSError):
                out["spread"] = connections_per_worker(master, port)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        stop.set()
        thread.join()


# ---------------------------------------------------------------- main


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(url: str, server: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with status {server.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the server did not become ready")


def check_replies(base: str, get_body: bytes, control_body: bytes) -> None:
    from lxml import etree

    status, reply = post(f"{base}/openhes/GetMeterReadings", get_body, GET_ACTION)
    root = etree.fromstring(reply)
    results = [e.text for e in root.iter("{*}Result")]
    readings = len(list(root.iter("{*}IntervalReadings")))
    if status != 200 or results != ["OK"] or readings != 96:
        raise SystemExit(
            f"GetMeterReadings: HTTP {status}, Result {results}, {readings} "
            f"readings (expected OK, 96):\n{reply[:2000]!r}"
        )
    body = control_body.replace(ID_MARK.encode(), str(uuid.uuid4()).encode())
    status, reply = post(f"{base}/openhes/ExecuteEndDeviceControls", body, CONTROL_ACTION)
    results = [e.text for e in etree.fromstring(reply).iter("{*}Result")]
    if status != 200 or results != ["OK"]:
        raise SystemExit(f"CreateEndDeviceControls: HTTP {status}, Result {results}:\n{reply!r}")


UNANSWERED_SQL = "SELECT count(*) FROM router_messages WHERE async_reply AND state = 'accepted'"


def unanswered(db_url: str, engine=None) -> int:
    """Asynchronous requests accepted and not answered yet (read from the store): SQLite
    read-only through sqlite3; PostgreSQL through ``engine`` (search_path on the schema)."""
    if engine is not None:
        from sqlalchemy import text

        with engine.connect() as conn:
            return int(conn.execute(text(UNANSWERED_SQL)).scalar_one())
    import sqlite3

    path = db_url.removeprefix("sqlite:///")
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10) as db:
        row = db.execute(UNANSWERED_SQL).fetchone()
    return int(row[0])


def wait_backlog(db_url: str, schema: str | None = None, timeout: float = 300.0) -> float:
    """Seconds until every accepted asynchronous request is answered (its reply in the
    outbox)."""
    engine = None
    if schema is not None:
        from mdm.database import create_store_engine

        engine = create_store_engine(db_url, schema=schema, pool_size=1, max_overflow=0)
    started = time.perf_counter()
    try:
        while time.perf_counter() - started < timeout:
            if unanswered(db_url, engine) == 0:
                break
            time.sleep(0.05)
        else:
            raise SystemExit(f"the control backlog did not drain in {timeout:g} s")
    finally:
        if engine is not None:
            engine.dispose()
    return time.perf_counter() - started


def database_kind(url: str | None) -> str:
    """The kind of store: "sqlite" (no URL, or a SQLite one) or "postgresql"; others refused."""
    if url is None:
        return "sqlite"
    from mdm.database import resolve_url

    backend = resolve_url(url).get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise SystemExit(f"--database: {backend} is not supported here (sqlite, postgresql)")
    return backend


@contextmanager
def bench_database(url: str | None, tmp: str) -> Iterator[tuple[str, str | None]]:
    """(URL, schema) of an empty store for the run: a SQLite file in ``tmp`` by default (or
    the SQLite URL given), or a fresh schema in the PostgreSQL database at ``url``, dropped
    afterwards whatever happens."""
    if database_kind(url) == "sqlite":
        yield url or f"sqlite:///{tmp}/bench.sqlite3", None
        return
    from sqlalchemy import create_engine, text

    from mdm.database import resolve_url

    schema = f"bench_soap_{uuid.uuid4().hex[:12]}"
    admin = create_engine(resolve_url(url))
    try:
        with admin.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
        try:
            yield url, schema
        finally:
            with admin.begin() as conn:
                conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    finally:
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 4 s per scenario")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--python-load", action="store_true", help="do not use wrk")
    parser.add_argument(
        "--database",
        metavar="URL",
        help="store to use: a postgresql:// URL (a fresh schema, dropped afterwards); "
        "default a SQLite file in a temporary directory",
    )
    # internal: the server process and the fallback load client
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--schema", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--host", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--body", help=argparse.SUPPRESS)
    parser.add_argument("--action", help=argparse.SUPPRESS)
    parser.add_argument("--unique", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        run_server(args)
        return
    if args.client:
        _client_process(args)
        return

    rounds = args.rounds or (2 if args.quick else 3)
    seconds = args.seconds or (4.0 if args.quick else 10.0)
    use_wrk = shutil.which("wrk") is not None and not args.python_load
    database = database_kind(args.database)
    load = run_wrk if use_wrk else run_python_load
    print(
        f"SOAP edge benchmark: {args.workers} server processes (gunicorn + uvicorn workers), "
        f"{args.connections} connections from {'wrk' if use_wrk else 'a Python client'}, "
        f"{rounds} rounds of {seconds:g} s per scenario; {database} store; medians"
    )
    with (
        tempfile.TemporaryDirectory(prefix="openhes-bench-soap-") as tmp,
        bench_database(args.database, tmp) as (db_url, schema),
    ):
        fill_store(db_url, meters=2, schema=schema)
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--serve",
                "--db",
                db_url,
                *(["--schema", schema] if schema is not None else []),
                "--port",
                str(port),
                "--workers",
                str(args.workers),
            ],
            start_new_session=True,
        )
        try:
            _wait_ready(f"{base}/openhes/GetMeterReadings?wsdl", server)
            get_body = get_request()
            control_body = control_request(2)
            check_replies(base, get_body, control_body)
            # Warm-up: every worker imports and caches what it needs.
            load(
                f"{base}/openhes/GetMeterReadings",
                get_body,
                GET_ACTION,
                unique=False,
                seconds=1,
                connections=args.connections,
                workdir=tmp,
            )
            results: dict[str, list[dict]] = {"ceiling": [], "get": [], "control": []}
            for _ in range(rounds):
                results["ceiling"].append(
                    load(
                        f"{base}/ceiling",
                        get_body,
                        GET_ACTION,
                        unique=False,
                        seconds=seconds,
                        connections=args.connections,
                        workdir=tmp,
                    )
                )
                cpu_before = server_cpu(server.pid)
                get = load(
                    f"{base}/openhes/GetMeterReadings",
                    get_body,
                    GET_ACTION,
                    unique=False,
                    seconds=seconds,
                    connections=args.connections,
                    workdir=tmp,
                )
                get["cpu_ms_per_request"] = (
                    (server_cpu(server.pid) - cpu_before) * 1000 / max(get["requests"], 1)
                )
                results["get"].append(get)
                with spread_sampled(server.pid, port, min(1.0, seconds / 2)) as sampled:
                    control = load(
                        f"{base}/openhes/ExecuteEndDeviceControls",
                        control_body,
                        CONTROL_ACTION,
                        unique=True,
                        seconds=seconds,
                        connections=args.connections,
                        workdir=tmp,
                    )
                if "spread" in sampled:
                    control["spread"] = sampled["spread"]
                control["drain_s"] = wait_backlog(db_url, schema)
                control["done_rps"] = control["requests"] / (seconds + control["drain_s"])
                results["control"].append(control)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()

    def median(scenario: str, key: str) -> float:
        return statistics.median(r[key] for r in results[scenario])

    for scenario, items in results.items():
        for i, r in enumerate(items):
            print(
                f"  round {i + 1} {scenario:8s} {r['rps']:>8,.0f} req/s  p50 {r['p50_ms']:6.2f} ms"
                f"  p99 {r['p99_ms']:6.2f} ms  requests {r['requests']:,}  errors {r['errors']}"
                + (
                    f"  server CPU {r['cpu_ms_per_request']:.3f} ms/request"
                    if "cpu_ms_per_request" in r
                    else ""
                )
                + (
                    f"  all answered {r['drain_s']:.2f} s later ({r['done_rps']:,.0f} done/s)"
                    if "drain_s" in r
                    else ""
                )
                + (
                    f"  connections per worker {'/'.join(map(str, r['spread']))}"
                    if "spread" in r
                    else ""
                )
            )
    get_rps = median("get", "rps")
    get_p99 = median("get", "p99_ms")
    control_p99 = median("control", "p99_ms")
    out = {
        "get_rps": round(get_rps),
        "get_p50_ms": round(median("get", "p50_ms"), 2),
        "get_p99_ms": round(get_p99, 2),
        "control_ack_rps": round(median("control", "rps")),
        "control_ack_p50_ms": round(median("control", "p50_ms"), 2),
        "control_ack_p99_ms": round(control_p99, 2),
        "control_backlog_drain_s": round(median("control", "drain_s"), 2),
        "control_done_rps": round(median("control", "done_rps")),
        "server_cpu_ms_per_get": round(median("get", "cpu_ms_per_request"), 3),
        "ceiling_rps": round(median("ceiling", "rps")),
        "ceiling_p99_ms": round(median("ceiling", "p99_ms"), 2),
        "get_vs_ceiling": round(get_rps / median("ceiling", "rps"), 2),
        "get_rps_vs_target": round(get_rps / GET_TARGET_RPS, 2),
        "get_p99_vs_target": round(get_p99 / GET_TARGET_P99_MS, 2),
        "control_ack_p99_vs_target": round(control_p99 / CONTROL_TARGET_P99_MS, 2),
        "errors": sum(r["errors"] for items in results.values() for r in items),
        "workers": args.workers,
        "connections": args.connections,
        "database": database,
        "load": "wrk" if use_wrk else "python",
        "rounds": rounds,
        "seconds": seconds,
    }
    print(
        f"{database}: get {get_rps:,.0f} req/s (target {GET_TARGET_RPS:,}), p99 {get_p99:.1f} ms (target "
        f"< {GET_TARGET_P99_MS:g}); control ack p99 {control_p99:.1f} ms (target < "
        f"{CONTROL_TARGET_P99_MS:g}); ceiling {out['ceiling_rps']:,} req/s"
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
