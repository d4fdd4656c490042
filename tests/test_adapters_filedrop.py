"""The file drop end to end through the real router and a real store: files in, replies out,
archive/ and error/ with .reason, stability of files being written, restart safety, atomic
writes, and the scheduled exports."""

from __future__ import annotations

import asyncio
import csv
import os
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from esb_helpers import (
    A_RESPONSE,
    HOSTILE,
    WRONG_NAMESPACE,
    get_readings_request,
    readings_store,
    unknown_noun_request,
)
from mdm_samples import RT_15MIN_KWH, T0, count, interval_rows

from adapters.filedrop import (
    ExportJob,
    FileDrop,
    FileDropSettings,
    ScheduledExports,
    atomic_file,
    export_readings,
)
from cim.envelope import MessageKind, Result
from cim.messages import parse_message
from cim.xmlsafe import XmlLimits
from headend.router import Router
from headend.scheduler import Every, Schedule, ScheduledJob, Unit, Window
from mdm.database import Store, open_store
from mdm.devices import Device, create_devices
from mdm.errors import MdmError
from mdm.ingest import ingest

PUSH = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b'<RequestMessage xmlns="http://iec.ch/TC57/2011/schema/message"><Header>'
    b"<Verb>create</Verb><Noun>MeterReadings</Noun><MessageID>file-push-1</MessageID></Header>"
    b'<Payload><MeterReadings xmlns="http://iec.ch/TC57/2011/MeterReadings#"><MeterReading>'
    b"<Meter><mRID>M1</mRID></Meter><Readings><timeStamp>2024-02-01T00:00:00Z</timeStamp>"
    b'<value>12.5</value><ReadingType ref="0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0"/>'
    b"</Readings></MeterReading></MeterReadings></Payload></RequestMessage>"
)


@pytest.fixture(scope="module")
def db() -> Iterator[Store]:
    """One store for the module (migrating one costs ~0.3 s); tests only add to it."""
    store = open_store("sqlite://")
    try:
        yield readings_store(store)
    finally:
        store.close()


def settings(tmp_path: Path, **overrides: object) -> FileDropSettings:
    values: dict[str, object] = {"folder": tmp_path / "drop", "poll_interval": 0.02, "settle": 0.1}
    values.update(overrides)
    return FileDropSettings(**values)  # type: ignore[arg-type]


def drop(folder: Path, name: str, data: bytes, *, age: float = 60.0) -> Path:
    """Write by the safe convention (hidden temporary name, then rename), last modified
    ``age`` seconds ago."""
    temporary = folder / f".{name}.part"
    temporary.write_bytes(data)
    then = time.time() - age
    os.utime(temporary, (then, then))
    target = folder / name
    os.replace(temporary, target)
    return target


def reply_of(path: Path):
    return parse_message(path.read_bytes(), require_served_noun=False).message


def run(coroutine):
    return asyncio.run(coroutine)


def test_request_answered_reply_in_outbox_request_archived(db: Store, tmp_path: Path) -> None:
    config = settings(tmp_path)
    watcher = FileDrop(Router(db, None), config)
    drop(config.inbox, "read-m1.xml", get_readings_request("f-1"))
    (outcome,) = run(watcher.scan())
    assert outcome.result == "OK" and outcome.reason is None
    assert outcome.reply == config.outbox / "read-m1.reply.xml"
    reply = reply_of(outcome.reply)
    assert reply.kind is MessageKind.RESPONSE and reply.reply.result is Result.OK
    assert reply.header.correlation_id == "f-1"
    assert (
        sum(
            len(b.readings)
            for mr in reply.payload.document.meter_readings
            for b in mr.interval_blocks
        )
        == 4
    )
    assert (config.archive / "read-m1.xml").read_bytes() == get_readings_request("f-1")
    assert list(config.inbox.iterdir()) == []
    assert [p.name for p in config.outbox.iterdir()] == ["read-m1.reply.xml"]  # no temporaries
    assert watcher.processed == 1


def test_router_refusal_is_an_answer_not_an_error(db: Store, tmp_path: Path) -> None:
    config = settings(tmp_path)
    watcher = FileDrop(Router(db, None), config)
    drop(config.inbox, "pumpkins.xml", unknown_noun_request())
    (outcome,) = run(watcher.scan())
    assert outcome.result == "FAILED"
    assert reply_of(outcome.reply).reply.errors[0].code == "3.1"
    assert (config.archive / "pumpkins.xml").exists()
    assert list(config.error.iterdir()) == []


REFUSED = [
    ("not-xml.xml", b"hello, not XML", "1.1 NOT_WELL_FORMED"),
    ("xxe.xml", HOSTILE, "1.3 FORBIDDEN_XML"),
    ("foreign.xml", WRONG_NAMESPACE, "1.8 UNKNOWN_MESSAGE_ROOT"),
    ("a-reply.xml", A_RESPONSE, "1.8 UNKNOWN_MESSAGE_ROOT"),
    ("empty.xml", b"", "1.1 NOT_WELL_FORMED"),
    ("too-large.xml", get_readings_request("big") + b" " * 5000, "1.4 TOO_LARGE"),
]


def test_refused_files_go_to_error_with_their_reason(db: Store, tmp_path: Path) -> None:
    config = settings(tmp_path, limits=XmlLimits(max_bytes=4000))
    watcher = FileDrop(Router(db, None), config)
    for name, data, _ in REFUSED:
        drop(config.inbox, name, data)
    (config.inbox / "folder.xml").mkdir()
    (config.inbox / "link.xml").symlink_to(tmp_path / "elsewhere.xml")
    (tmp_path / "elsewhere.xml").write_bytes(get_readings_request("via-link"))
    outcomes = {o.name: o for o in run(watcher.scan())}
    assert len(outcomes) == len(REFUSED) + 2
    for name, data, reason in REFUSED:
        assert outcomes[name].reason is not None and outcomes[name].reason.startswith(reason)
        assert (config.error / name).read_bytes() == data
        assert (config.error / f"{name}.reason").read_text().startswith(reason)
    assert "not a regular file" in outcomes["folder.xml"].reason
    assert "symbolic link" in outcomes["link.xml"].reason
    assert (config.error / "folder.xml").is_dir() and (config.error / "link.xml.reason").exists()
    assert list(config.inbox.iterdir()) == []
    assert list(config.outbox.iterdir()) == []
    assert watcher.refused == len(REFUSED) + 2


def test_files_being_written_are_left_until_stable(db: Store, tmp_path: Path) -> None:
    config = settings(tmp_path, settle=0.3)
    watcher = FileDrop(Router(db, None), config)
    growing = config.inbox / "growing.xml"
    growing.write_bytes(get_readings_request("grow")[:50])  # written now, still growing
    for ignored in (".hidden.xml", "partial.xml.tmp", "notes.txt"):
        (config.inbox / ignored).write_bytes(b"ignored")
    assert run(watcher.scan()) == []
    time.sleep(0.2)
    growing.write_bytes(get_readings_request("grow"))  # changed: the wait starts again
    assert run(watcher.scan()) == []
    time.sleep(0.35)
    (outcome,) = run(watcher.scan())
    assert outcome.name == "growing.xml" and outcome.result == "OK"
    left = sorted(p.name for p in config.inbox.iterdir())
    assert left == [".hidden.xml", "notes.txt", "partial.xml.tmp"]


def test_same_name_again_is_archived_beside_the_first(db: Store, tmp_path: Path) -> None:
    config = settings(tmp_path)
    watcher = FileDrop(Router(db, None), config)
    drop(config.inbox, "daily.xml", get_readings_request("day-1"))
    run(watcher.scan())
    drop(config.inbox, "daily.xml", get_readings_request("day-2"))
    (second,) = run(watcher.scan())
    archived = sorted(p.name for p in config.archive.iterdir())
    assert len(archived) == 2 and "daily.xml" in archived
    assert second.moved_to.name != "daily.xml" and second.moved_to.name.endswith(".xml")
    assert reply_of(config.outbox / "daily.reply.xml").header.correlation_id == "day-2"


def test_restart_processes_a_half_done_file_again_and_runs_it_once(
    db: Store, tmp_path: Path
) -> None:
    config = settings(tmp_path)
    first = FileDrop(Router(db, None), config)
    drop(config.inbox, "push.xml", PUSH)
    (outcome,) = run(first.scan())
    assert outcome.result == "OK"
    reply = outcome.reply.read_bytes()
    stored = count(db, "readings")
    # The crash: the reply was written, the request never left the inbox; an atomic write
    # was cut short too.
    os.replace(config.archive / "push.xml", config.inbox / "push.xml")
    (config.outbox / ".push.reply.xml.0123456789ab.tmp").write_bytes(b"<half")
    restarted = FileDrop(Router(db, None), config)
    assert not (config.outbox / ".push.reply.xml.0123456789ab.tmp").exists()
    (again,) = run(restarted.scan())
    assert again.result == "OK"
    assert (config.outbox / "push.reply.xml").read_bytes() == reply  # the first reply
    assert (config.archive / "push.xml").exists() and list(config.inbox.iterdir()) == []
    assert count(db, "readings") == stored  # run once: nothing ingested twice


def test_run_watches_until_stopped(db: Store, tmp_path: Path) -> None:
    config = settings(tmp_path, settle=0.05)
    watcher = FileDrop(Router(db, None), config)

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(watcher.run(stop))
        await asyncio.sleep(0.05)
        drop(config.inbox, "live.xml", get_readings_request("live"), age=0)
        deadline = time.monotonic() + 5
        while not (config.archive / "live.xml").exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(task, 2)

    run(scenario())
    assert (config.outbox / "live.reply.xml").exists()


def test_atomic_file_is_never_seen_half_written(tmp_path: Path) -> None:
    target = tmp_path / "out.xml"
    with atomic_file(target) as handle:
        handle.write(b"<first")
        assert not target.exists()
        handle.write(b"/>")
    assert target.read_bytes() == b"<first/>"
    with pytest.raises(RuntimeError), atomic_file(target) as handle:
        handle.write(b"<second")
        raise RuntimeError("the writer died")
    assert target.read_bytes() == b"<first/>"  # untouched
    assert [p.name for p in tmp_path.iterdir()] == ["out.xml"]  # no temporary left


@pytest.fixture(scope="module")
def two_meters(db: Store) -> Store:
    create_devices(db, [Device("M2")], who="test")
    ingest(db, interval_rows("M2", 4))
    return db


def test_export_one_file_per_job_as_cim_and_csv(two_meters: Store, tmp_path: Path) -> None:
    out = tmp_path / "exports"
    files = export_readings(
        two_meters, out, "job-42", ["M1", "M2"], [RT_15MIN_KWH], T0, T0 + timedelta(hours=1)
    )
    assert [f.name for f in files] == ["job-42.xml", "job-42.csv"]
    message = parse_message(files[0].read_bytes()).message
    assert message.kind is MessageKind.EVENT and message.header.verb == "created"
    meters = sorted(mr.meter.mrid for mr in message.payload.document.meter_readings)
    assert meters == ["M1", "M2"]
    with files[1].open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["device", "reading_type", "timestamp", "value", "qualities", "status"]
    assert len(rows) == 9
    assert sorted(p.name for p in out.iterdir()) == ["job-42.csv", "job-42.xml"]


def test_export_per_n_devices_and_refusals(two_meters: Store, tmp_path: Path) -> None:
    out = tmp_path / "exports"
    files = export_readings(
        two_meters,
        out,
        "part",
        ["M1", "M2"],
        [RT_15MIN_KWH],
        T0,
        T0 + timedelta(hours=1),
        formats=("xml",),
        per_devices=1,
    )
    assert [f.name for f in files] == ["part-0001.xml", "part-0002.xml"]
    firsts = [
        parse_message(f.read_bytes()).message.payload.document.meter_readings[0] for f in files
    ]
    assert [mr.meter.mrid for mr in firsts] == ["M1", "M2"]
    with pytest.raises(MdmError):
        export_readings(two_meters, out, "bad", ["nope"], [RT_15MIN_KWH], T0, T0)
    with pytest.raises(ValueError):
        export_readings(two_meters, out, "../escape", ["M1"], [RT_15MIN_KWH], T0, T0)
    with pytest.raises(ValueError):
        export_readings(two_meters, out, "x", ["M1"], [RT_15MIN_KWH], T0, T0, formats=("pdf",))
    assert sorted(p.name for p in out.iterdir()) == ["part-0001.xml", "part-0002.xml"]


def test_scheduled_exports_write_each_firing_with_its_window(
    two_meters: Store, tmp_path: Path
) -> None:
    exports = ScheduledExports(two_meters, tmp_path / "exports")
    schedule = Schedule.create(Every(1, Unit.DAYS), zone="UTC", start=T0 + timedelta(days=1))
    exports.add(
        ScheduledJob(
            "daily", schedule, ExportJob(("M1", "M2"), (RT_15MIN_KWH,)), window=Window.YESTERDAY
        )
    )
    assert exports.run_due(T0 + timedelta(hours=12)) == []  # not yet due
    files = exports.run_due(T0 + timedelta(days=1, minutes=5))
    assert [f.name for f in files] == ["daily-20240102T000000Z.xml", "daily-20240102T000000Z.csv"]
    with files[1].open(newline="") as handle:
        assert len(list(csv.reader(handle))) == 9  # yesterday's 8 readings and the header
    with pytest.raises(TypeError):
        exports.add(ScheduledJob("wrong", schedule, object(), window=Window.YESTERDAY))
