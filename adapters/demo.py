"""``openhes demo``: the whole system on this machine, in one command.

On the embedded default (SQLite in the ``--out`` folder or a temporary one, the in-process
``memory://`` task bus), each step printed with its timing:

1. a simulated fleet of DLMS meters (:mod:`adapters.demo_fleet`: a process of its own, one
   shared loopback port) and OpenHES itself (:mod:`adapters.serve`: head-end, in-process
   worker, outbox delivery, subscriptions), with a loopback receiver
   (:mod:`adapters.receiver`) standing in for the MDM and the OMS, subscribed through the
   configuration;
2. the fleet registered from its address book (the device-import format);
3. a bulk read of yesterday's 15-minute interval data of every meter, with a progress bar;
4. the SOAP endpoint served, authentication on, a demo user created;
5. the MDM side with zeep built from the served WSDL: GetMeterReadings for one meter,
   printed as a table;
6. CreateEndDeviceControls: disconnect, then connect, one meter, with the verified states;
7. the pushes: CreatedMeterReadings on the MDM's receiver, and an outage (a power failure
   of one meter in the simulator, read from its event log) as CreatedEndDeviceEvents on the
   OMS's receiver;
8. the KPIs: read rate, communication rate, failures by cause, interval completeness;
9. exports of the data read, CIM XML and CSV.

A step that fails prints one line and the demo exits with status 1. ``--keep-running``
leaves the endpoint up and prints requests to try; ``--json`` prints the outcome as JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from adapters.cli_support import (
    EXIT_CANNOT_RUN,
    EXIT_INTERRUPTED,
    ProgressBar,
    fail,
    one_line,
    print_json,
)
from adapters.cli_support import percent as _pct

DEMO_USER = "demo-mdm"
INTERVAL_PREFIX = "0.0.2."  # ReadingType codes of 15-minute interval data
ENERGY_IMPORT = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"  # 15-minute +A energy, kWh
DISCONNECT, CONNECT = "3.31.0.23", "3.31.0.18"
OUTAGE_EVENT = "3.26.0.47"  # power down: power, loss detected
BULK_TIMEOUT = 600.0
PUSH_TIMEOUT = 30.0
DELIVERY_CONCURRENCY = 16  # the loopback receiver takes many pushes at once


class StepFailed(Exception):
    """A demo step that did not do what it should; the message is one line."""


@dataclass
class Step:
    number: int
    name: str
    ok: bool = False
    seconds: float = 0.0
    summary: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)  # printed below the step line

    def as_dict(self) -> dict[str, Any]:
        return {
            "step": self.number,
            "name": self.name,
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "summary": self.summary,
            **self.details,
        }


@dataclass
class Demo:
    meters: int
    days: int
    folder: Path
    out: TextIO
    err: TextIO
    as_json: bool = False
    steps: list[Step] = field(default_factory=list)
    # What the steps build and later ones use.
    fleet: Any = None
    receiver: Any = None
    services: Any = None
    mrids: list[str] = field(default_factory=list)
    password: str = ""
    window: tuple[datetime, datetime] | None = None
    codes: list[str] = field(default_factory=list)
    keyring: Any = None

    def say(self, text: str = "") -> None:
        print(text, file=self.err if self.as_json else self.out, flush=True)

    async def step(self, name: str, body: Callable[[Demo, Step], Awaitable[None]]) -> None:
        step = Step(len(self.steps) + 1, name)
        self.steps.append(step)
        began = time.perf_counter()
        try:
            await body(self, step)
        except StepFailed as exc:
            step.summary = str(exc)
        except Exception as exc:  # a part of OpenHES failed: one line, never a traceback
            step.summary = (
                f"{type(exc).__name__}: {one_line(exc) if str(exc).strip() else 'failed'}"
            )
        else:
            step.ok = True
        step.seconds = time.perf_counter() - began
        mark = "ok  " if step.ok else "FAIL"
        self.say(f"[{mark}] {step.number}. {name} ({step.seconds:.1f} s): {step.summary}")
        for line in step.lines:
            self.say(f"         {line}")
        if not step.ok:
            raise StepFailed(f"step {step.number} ({name}) failed: {step.summary}")


# -- the steps ---------------------------------------------------------------------------------


async def start_fleet_and_openhes(demo: Demo, step: Step) -> None:
    from adapters.config import Settings, Subscription, load_settings
    from adapters.demo_fleet import FleetProcess, raise_fd_limit
    from adapters.receiver import Receiver
    from adapters.serve import build_services

    raise_fd_limit()
    demo.fleet = await asyncio.to_thread(FleetProcess, demo.meters)
    demo.receiver = Receiver().start()
    base = load_settings(environ={}).replace(
        database__url=f"sqlite:///{demo.folder / 'openhes.sqlite3'}",
        broker__url="memory://",
        broker__namespace=f"openhes-demo-{uuid.uuid4().hex[:8]}",
        soap__host="127.0.0.1",
        soap__port=0,
        auth__required=True,
        worker__in_process=1,
        outbox__concurrency=DELIVERY_CONCURRENCY,
    )
    subscriptions = (
        Subscription("mdm", demo.receiver.url("/mdm"), ("MeterReadings",), ("created",)),
        Subscription("oms", demo.receiver.url("/oms"), ("EndDeviceEvents",), ("created",)),
    )
    settings = Settings(base.values, subscriptions, base.sources)
    demo.keyring = demo_keyring(demo.folder / "master-key.hex")
    services = build_services(settings, keyring=demo.keyring)
    demo.services = services
    await services.start()
    step.summary = (
        f"{demo.meters:,} simulated DLMS meters on 127.0.0.1:{demo.fleet.port} (one shared "
        f"port, a process of their own); OpenHES on SQLite + memory://, "
        f"{len(services.workers)} worker x {settings['worker.concurrency']} sessions"
    )
    step.lines.append(
        f"MDM and OMS stand-in listening on {demo.receiver.url('/')} "
        "(subscribed: created MeterReadings, created EndDeviceEvents)"
    )
    step.details.update(port=demo.fleet.port, database=settings["database.url"])


async def register(demo: Demo, step: Step) -> None:
    from headend.device_import import check_rows
    from headend.registry import Registry

    rows = demo.fleet.address_book()
    (demo.folder / "simulated-meters.csv").unlink(missing_ok=True)
    from drivers.sim.fleet import write_address_book

    write_address_book(demo.folder / "simulated-meters.csv", rows)
    records = check_rows(rows)
    summary = Registry(demo.services.store, demo.keyring).upsert(records, who="openhes demo")
    demo.mrids = [r.mrid for r in records]
    step.summary = (
        f"{len(records):,} meters registered ({summary.created:,} new, "
        f"{summary.updated + summary.unchanged:,} known) from the address book "
        f"{demo.folder / 'simulated-meters.csv'}"
    )
    step.details.update(registered=len(records), created=summary.created)


async def bulk_read(demo: Demo, step: Step) -> None:
    from headend import commands, jobstore
    from headend.job_actions import TEMPLATE_DEVICE
    from headend.service import JobRequest

    services = demo.services
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start, end = today - timedelta(days=demo.days), today
    demo.window = (start, end)
    command = commands.ReadIntervalData(device=TEMPLATE_DEVICE, start=start, end=end)
    created = services.headend.submit(
        JobRequest(
            command=command,
            everyone=True,
            name=f"demo: interval data {start:%Y-%m-%d} .. {end:%Y-%m-%d}",
            created_by="openhes demo",
        )
    )
    bar = ProgressBar(demo.err, f"reading {demo.days * 96} quarter-hours of each meter")
    began = time.perf_counter()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BULK_TIMEOUT
    while True:
        counts = jobstore.counts(services.store, created.job_id)
        bar.show(counts.get("done", 0), counts.get("total", 0), time.perf_counter() - began)
        if jobstore.job_state(services.store, created.job_id) in (
            "completed",
            "completed_with_errors",
            "cancelled",
        ):
            break
        if loop.time() > deadline:
            bar.close()
            raise StepFailed(f"the bulk read did not finish in {BULK_TIMEOUT:.0f} s")
        with contextlib.suppress(TimeoutError):
            await services.headend.wait(created.job_id, timeout=0.25)
    seconds = time.perf_counter() - began
    bar.close()
    counts = jobstore.counts(services.store, created.job_id)
    readings = _stored_readings(services.store, start, end)
    succeeded, total = counts.get("succeeded", 0), counts.get("total", 0)
    step.summary = (
        f"{succeeded:,} of {total:,} meters read, {readings:,} readings stored "
        f"({succeeded / seconds:,.0f} meters/s, {readings / seconds:,.0f} readings/s)"
    )
    step.details.update(
        job=created.job_id,
        succeeded=succeeded,
        total=total,
        readings=readings,
        read_seconds=round(seconds, 3),
    )
    if succeeded == 0:
        raise StepFailed(f"no meter was read: {_first_failure(services, created.job_id)}")
    if succeeded < total:
        step.lines.append(f"{total - succeeded} meters failed: see step 8's causes")


async def serve_soap(demo: Demo, step: Step) -> None:
    from adapters.auth.users import add_user, get_user, set_password
    from adapters.serve import bind

    store = demo.services.store
    demo.password = secrets.token_urlsafe(12)
    if get_user(store, DEMO_USER) is None:
        add_user(store, DEMO_USER, demo.password, ["reader", "operator"], who="openhes demo")
    else:
        set_password(store, DEMO_USER, demo.password, who="openhes demo")
    url = await demo.services.start_http(bind("127.0.0.1", 0))
    step.summary = (
        f"{url}/openhes/ (WSDLs at {url}/openhes/GetMeterReadings?wsdl ...), "
        f"authentication on: user {DEMO_USER!r} (reader, operator)"
    )
    step.details.update(url=url, user=DEMO_USER)


async def get_meter_readings(demo: Demo, step: Step) -> None:
    mrid = demo.mrids[0]
    assert demo.window is not None
    start, end = demo.window
    response = await asyncio.to_thread(
        _call,
        demo,
        "GetMeterReadings",
        "GetMeterReadings",
        Header=_header("get", "MeterReadings"),
        Request={
            "GetMeterReadings": {
                "EndDevice": [{"mRID": mrid}],
                "TimeSchedule": [{"scheduleInterval": {"start": start, "end": end}}],
            }
        },
    )
    result = response.Reply.Result
    if result != "OK":
        raise StepFailed(f"Result {result}: {_errors(response)}")
    blocks = []
    for meter_reading in response.Payload.MeterReadings.MeterReading or []:
        for block in meter_reading.IntervalBlocks or []:
            blocks.append((block.ReadingType.ref, block.IntervalReadings or []))
    if not blocks:
        raise StepFailed(f"no interval data came back for {mrid}")
    demo.codes = [code for code, _ in blocks if code.startswith(INTERVAL_PREFIX)]
    code, readings = next(((c, r) for c, r in blocks if c == ENERGY_IMPORT), blocks[0])
    values = [(r.timeStamp, Decimal(str(r.value))) for r in readings]
    step.summary = (
        f"meter {mrid}: {len(blocks)} interval channels, {len(values)} readings of {code}"
    )
    step.lines.extend(readings_table(code, values))
    step.details.update(
        meter=mrid,
        channels=len(blocks),
        readings=len(values),
        reading_type=code,
        total=str(sum((v for _, v in values), Decimal(0))),
    )


async def controls(demo: Demo, step: Step) -> None:
    mrid = demo.mrids[min(1, len(demo.mrids) - 1)]
    states = []
    for name, code in (("disconnect", DISCONNECT), ("connect", CONNECT)):
        response = await asyncio.to_thread(
            _call,
            demo,
            "ExecuteEndDeviceControls",
            "CreateEndDeviceControls",
            Header=_header("create", "EndDeviceControls"),
            Payload={
                "EndDeviceControls": {
                    "EndDeviceControl": [
                        {
                            "EndDeviceControlType": {"ref": code},
                            "reason": "openhes demo",
                            "EndDevices": [{"mRID": mrid}],
                        }
                    ]
                }
            },
        )
        if response.Reply.Result != "OK":
            raise StepFailed(f"{name}: Result {response.Reply.Result}: {_errors(response)}")
        reasons = [e.reason for e in response.Reply.Error or [] if e.reason]
        verified = next((r for r in reasons if "verified" in r), None)
        if verified is None:
            raise StepFailed(f"{name}: the reply does not confirm a verified state: {reasons}")
        states.append((name, code, verified))
        step.lines.append(f"{name:<10} ({code})  ->  {verified}")
    step.summary = f"meter {mrid}: " + ", then ".join(s for _, _, s in states)
    step.details.update(meter=mrid, states=[s for _, _, s in states])


async def pushes(demo: Demo, step: Step) -> None:
    from headend import commands
    from headend.service import JobRequest

    receiver, services = demo.receiver, demo.services

    def readings_push() -> bool:
        return any(_is(m, "MeterReadings", "created", "/mdm") for m in receiver.messages)

    if not await asyncio.to_thread(receiver.wait, readings_push, PUSH_TIMEOUT):
        raise StepFailed(f"no CreatedMeterReadings reached the MDM in {PUSH_TIMEOUT:.0f} s")
    # The outage: meter 3 loses its supply for three minutes, ending a minute ago.
    index = min(2, len(demo.mrids) - 1)
    mrid = demo.mrids[index]
    now = time.time()
    await asyncio.to_thread(demo.fleet.outage, index, now - 240, now - 60)
    created = services.headend.submit(
        JobRequest(
            command=commands.ReadEvents(
                device=mrid,
                start=datetime.fromtimestamp(now - 900, UTC),
                end=datetime.fromtimestamp(now + 60, UTC),
            ),
            devices=[mrid],
            name="demo: event log after an outage",
            created_by="openhes demo",
        )
    )
    view = await services.headend.wait(created.job_id, timeout=PUSH_TIMEOUT)
    if view.state != "completed":
        raise StepFailed(f"reading the event log of {mrid}: job {view.state}")

    def outage_push() -> bool:
        return any(
            _is(m, "EndDeviceEvents", "created", "/oms") and OUTAGE_EVENT.encode() in m.body
            for m in receiver.messages
        )

    if not await asyncio.to_thread(receiver.wait, outage_push, PUSH_TIMEOUT):
        raise StepFailed(f"no outage EndDeviceEvents reached the OMS in {PUSH_TIMEOUT:.0f} s")
    mdm = [m for m in receiver.messages if _is(m, "MeterReadings", "created", "/mdm")]
    oms = [m for m in receiver.messages if _is(m, "EndDeviceEvents", "created", "/oms")]
    outage = next(m for m in oms if OUTAGE_EVENT.encode() in m.body)
    step.summary = (
        f"MDM got {len(mdm):,} CreatedMeterReadings so far; OMS got the outage of meter "
        f"{mrid} ({OUTAGE_EVENT} power down, then power up) as CreatedEndDeviceEvents"
    )
    step.lines.append(
        f"outage message {outage.message_id}, received {outage.received_at:%H:%M:%S.%f}"[:-3]
    )
    step.details.update(meter_readings_pushes=len(mdm), event_pushes=len(oms), outage_meter=mrid)


async def kpis(demo: Demo, step: Step) -> None:
    from headend.statistics import comm_statistics, daily_kpis
    from mdm.kpi import read_success

    store = demo.services.store
    assert demo.window is not None
    start, end = demo.window
    today = datetime.now(UTC).date()
    day = daily_kpis(store, today, today)[0]
    comm = comm_statistics(store)
    summary = comm[0] if isinstance(comm, list) else comm
    code = ENERGY_IMPORT if ENERGY_IMPORT in demo.codes else (demo.codes or [ENERGY_IMPORT])[0]
    complete = read_success(
        store, code, start.date(), (end - timedelta(days=1)).date(), per_device=False
    )
    present = sum(d.present for d in complete.overall)
    expected = sum(d.expected for d in complete.overall)
    causes = dict(sorted(summary.by_cause.items(), key=lambda kv: -kv[1]))
    step.lines.extend(
        [
            f"read rate           {_pct(day.read_success_rate)}  "
            f"({day.meters_read:,} of {day.meters:,} meters read today)",
            f"communication rate  {_pct(summary.success_rate)}  "
            f"({summary.successes:,} of {summary.attempts:,} sessions, "
            f"{summary.bytes_received / 1e6:,.1f} MB received)",
            f"completeness        {_pct(present / expected if expected else None)}  "
            f"({present:,} of {expected:,} expected intervals of {code})",
            "failures by cause   "
            + (", ".join(f"{k} {v}" for k, v in causes.items()) if causes else "none"),
        ]
    )
    step.summary = (
        f"read rate {_pct(day.read_success_rate)}, communication rate "
        f"{_pct(summary.success_rate)}, {summary.failures} failed sessions"
    )
    step.details.update(
        read_rate=day.read_success_rate,
        comm_rate=summary.success_rate,
        sessions=summary.attempts,
        failures_by_cause=causes,
        completeness=present / expected if expected else None,
    )


async def exports(demo: Demo, step: Step) -> None:
    from adapters.filedrop import export_readings

    assert demo.window is not None
    start, end = demo.window
    codes = [ENERGY_IMPORT] if ENERGY_IMPORT in demo.codes else demo.codes[:1]
    if not codes:
        raise StepFailed("no interval ReadingType to export")
    folder = demo.folder / "exports"
    name = f"MeterReadings-{start:%Y%m%d}"
    written = await asyncio.to_thread(
        export_readings, demo.services.store, folder, name, demo.mrids, codes, start, end
    )
    for path in written:
        step.lines.append(f"{path}  ({path.stat().st_size / 1e6:,.1f} MB)")
    step.summary = f"{len(demo.mrids):,} meters x {codes[0]} as CIM XML and CSV in {folder}"
    step.details.update(files=[str(p) for p in written])


# -- helpers -----------------------------------------------------------------------------------


def demo_keyring(path: Path) -> Any:
    """The demo's master key (meter keys are encrypted at rest under it): kept in the demo
    folder so a second run, or ``openhes jobs`` with ``OPENHES_MASTER_KEY``, can use the
    database again. A real deployment sets ``OPENHES_MASTER_KEY`` instead."""
    from headend.keys import Keyring, MasterKey, parse_master_key

    if path.is_file():
        key = MasterKey(parse_master_key(path.read_text(), source=str(path)))
    else:
        key = MasterKey.generate()
        path.write_text(key.key.hex() + "\n")
        path.chmod(0o600)
    return Keyring(key)


def readings_table(code: str, values: list[tuple[datetime, Decimal]]) -> list[str]:
    """The readings of one day per hour: a row per hour, its four quarter-hours."""
    from cim.codelists.readingtype import ReadingType

    try:
        described = ReadingType.parse(code).describe()
    except Exception:
        described = code
    lines = [
        f"{described}",
        f"{'hour (UTC)':<11}"
        + "".join(f"{q:>12}" for q in (":00-:15", ":15-:30", ":30-:45"))
        + f"{':45-:00':>12}{'hour':>13}",
    ]
    by_hour: dict[datetime, list[Decimal | None]] = {}
    for stamp, value in values:
        begin = stamp - timedelta(minutes=15)
        hour = begin.replace(minute=0, second=0, microsecond=0)
        by_hour.setdefault(hour, [None] * 4)[begin.minute // 15] = value
    for hour, quarters in sorted(by_hour.items()):
        cells = "".join(f"{'-' if v is None else f'{v:.3f}':>12}" for v in quarters)
        total = sum((v for v in quarters if v is not None), Decimal(0))
        lines.append(f"{hour:%m-%d %H:00}{cells}{total:>13.3f}")
    total = sum((v for _, v in values), Decimal(0))
    lines.append(f"{'day':<11}{'':>48}{total:>13.3f}")
    return lines


def _header(verb: str, noun: str) -> dict[str, Any]:
    return {
        "Verb": verb,
        "Noun": noun,
        "Timestamp": datetime.now(UTC),
        "Source": "openhes-demo-mdm",
        "MessageID": str(uuid.uuid4()),
    }


_CLIENTS: dict[tuple[str, str], Any] = {}


def _call(demo: Demo, service: str, operation: str, **parts: Any) -> Any:
    """A zeep call (blocking: run it in a thread), the client built from the served WSDL."""
    import requests
    import zeep
    from zeep.transports import Transport

    url = demo.services.url
    client = _CLIENTS.get((url, service))
    if client is None:
        session = requests.Session()
        session.auth = (DEMO_USER, demo.password)
        client = zeep.Client(
            f"{url}/openhes/{service}?wsdl", transport=Transport(session=session, timeout=60)
        )
        _CLIENTS[(url, service)] = client
    return getattr(client.service, operation)(**parts)


def _errors(response: Any) -> str:
    errors = response.Reply.Error or []
    return "; ".join(f"[{e.code}] {e.reason}" for e in errors) or "no error given"


def _is(message: Any, noun: str, verb: str, path: str) -> bool:
    return (
        (message.noun or "").lower() == noun.lower()
        and (message.verb or "").lower() == verb
        and message.path.rstrip("/") == path
    )


def _stored_readings(store: Any, start: datetime, end: datetime) -> int:
    from sqlalchemy import func, select

    from mdm.database import reading
    from mdm.schema import readings

    with reading(store) as conn:
        query = select(func.count()).where(readings.c.ts > start, readings.c.ts <= end)
        return int(conn.execute(query).scalar() or 0)


def _first_failure(services: Any, job_id: str) -> str:
    for task in services.headend.view(job_id).tasks:
        if task.error_text:
            return f"{task.mrid}: [{task.error_code}] {task.error_text}"
    return "no task succeeded"


def _sample_request(mrid: str, start: datetime, end: datetime) -> bytes:
    from cim.envelope import Header, Message, MessageKind, Request
    from cim.get_meter_readings import GetMeterReadings
    from cim.messages import emit_message
    from cim.model import DateTimeInterval, ObjectRef

    message = Message(
        MessageKind.REQUEST,
        Header("get", "MeterReadings", message_id=str(uuid.uuid4()), source="curl"),
        request=Request(
            get_profile=GetMeterReadings(
                end_devices=[ObjectRef(mrid)], time_schedules=[DateTimeInterval(start, end)]
            )
        ),
        wrapper="GetMeterReadings",
    )
    body = emit_message(message, pretty=True).decode()
    if body.startswith("<?xml"):
        body = body[body.index("?>") + 2 :].lstrip()
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">\n'
        f"<soap:Body>\n{body}</soap:Body>\n</soap:Envelope>\n"
    ).encode()


def _try_these(demo: Demo) -> list[str]:
    assert demo.window is not None and demo.services.url
    url = demo.services.url
    sample = demo.folder / "GetMeterReadings-request.xml"
    sample.write_bytes(_sample_request(demo.mrids[0], *demo.window))
    auth = f"{DEMO_USER}:{demo.password}"
    return [
        "The endpoint stays up; try:",
        f"  curl {url}/openhes/                      # the services",
        f"  curl {url}/openhes/GetMeterReadings?wsdl # a WSDL, for zeep or SoapUI",
        f"  curl -u {auth} -H 'Content-Type: text/xml; charset=utf-8' \\",
        f"       --data-binary @{sample} {url}/openhes/GetMeterReadings",
        f"  OPENHES_DATABASE_URL=sqlite:///{demo.folder / 'openhes.sqlite3'} openhes jobs list",
        f"  OPENHES_DATABASE_URL=sqlite:///{demo.folder / 'openhes.sqlite3'} openhes stats",
        "Ctrl-C stops the demo.",
    ]


# -- the demo ----------------------------------------------------------------------------------

STEPS: tuple[tuple[str, Callable[[Demo, Step], Awaitable[None]]], ...] = (
    ("start a simulated DLMS fleet and OpenHES", start_fleet_and_openhes),
    ("register the fleet", register),
    ("bulk read of yesterday's interval data", bulk_read),
    ("serve the SOAP endpoint", serve_soap),
    ("MDM: GetMeterReadings for one meter (zeep)", get_meter_readings),
    ("CIS: disconnect, then connect one meter (zeep)", controls),
    ("pushes: CreatedMeterReadings to the MDM, an outage to the OMS", pushes),
    ("KPIs", kpis),
    ("exports", exports),
)


async def _run(demo: Demo, keep_running: bool) -> int:
    began = time.perf_counter()
    status = 0
    try:
        for name, body in STEPS:
            await demo.step(name, body)
    except StepFailed:
        status = 1
    total = time.perf_counter() - began
    try:
        if status == 0:
            demo.say(f"\nevery step succeeded in {total:.1f} s; files in {demo.folder}")
        else:
            demo.say(f"\nopenhes demo: {demo.steps[-1].summary}")
        if demo.as_json:
            print_json(
                {
                    "ok": status == 0,
                    "seconds": round(total, 3),
                    "meters": demo.meters,
                    "folder": str(demo.folder),
                    "steps": [s.as_dict() for s in demo.steps],
                },
                compact=True,
                out=demo.out,
            )
        if status == 0 and keep_running:
            for line in _try_these(demo):
                demo.say(line)
            await _wait_for_signal()
    finally:
        await _shutdown(demo)
    return status


async def _wait_for_signal() -> None:
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)
    await stop.wait()


async def _shutdown(demo: Demo) -> None:
    if demo.services is not None:
        with contextlib.suppress(Exception):
            await demo.services.stop(grace=10.0)
    if demo.receiver is not None:
        with contextlib.suppress(Exception):
            demo.receiver.stop()
    if demo.fleet is not None:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(demo.fleet.stop)
    _CLIENTS.clear()


def run_demo(
    meters: int = 1000,
    days: int = 1,
    out: Path | None = None,
    *,
    keep_running: bool = False,
    as_json: bool = False,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """``openhes demo``: 0 when every step succeeded, 1 when one failed, 2 for bad options."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    if meters < 1 or days < 1:
        return fail(
            "openhes demo", "--meters and --days must be at least 1", EXIT_CANNOT_RUN, err=stderr
        )
    if meters > 65534:
        message = "--meters: at most 65,534 meters share one port"
        return fail("openhes demo", message, EXIT_CANNOT_RUN, err=stderr)
    folder = Path(out) if out else Path(tempfile.mkdtemp(prefix="openhes-demo-"))
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return fail("openhes demo", f"--out {folder}: {exc.strerror}", EXIT_CANNOT_RUN, err=stderr)
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    demo = Demo(meters, days, folder.resolve(), stdout, stderr, as_json=as_json)
    demo.say(
        f"OpenHES demo: {meters:,} simulated meters, {days * 96} quarter-hours each; "
        f"files in {demo.folder}"
    )
    try:
        return asyncio.run(_run(demo, keep_running))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


__all__ = ["STEPS", "Demo", "ProgressBar", "Step", "readings_table", "run_demo"]
