"""The file-drop edge: a watched folder where each ``*.xml`` file is one RequestMessage,
and scheduled exports of MeterReadings as files.

Folders under the configured one (created when missing)::

    inbox/     requests are dropped here
    outbox/    ResponseMessages (``<name>.reply.xml``) and exports
    archive/   requests that were answered
    error/     requests that were refused, each with ``<name>.reason`` beside it

**Requests.** The inbox is polled (no inotify dependency). A file is taken once it is
*stable*: its size and modification time unchanged for ``settle`` seconds, or last modified
at least ``settle`` seconds ago -- which is at once for a file written elsewhere and renamed
in (the safe convention: write ``.name.tmp``, then rename to ``name.xml``). Names starting
with a dot and names not ending in ``.xml`` are left alone. Each request goes to
``Router.handle(data, principal=<the file-drop principal>, channel="file")``; its
ResponseMessage is written to ``outbox/`` atomically (a temporary dot-name in the same
folder, fsync, rename, fsync of the folder), then the request moves to ``archive/``.
Refused -- not XML, hostile XML, larger than the limit, not an IEC 61968-100 request, not a
regular file (a symbolic link, a folder), unreadable, or a router crash -- it moves to
``error/`` with a one-line ``.reason`` file (``<code> <NAME>: <reason>``). A name taken in
``archive/`` or ``error/`` gets a UTC time suffix rather than overwriting.

**Restart.** A request answered but not yet archived when the process died is still in
the inbox and is processed again on restart; the router, idempotent on MessageID, returns the
first reply (the reply file is replaced by the same content). Temporary files left in
``outbox/`` by a crash are removed at start.

**Exports.** :func:`export_readings` writes stored readings as CIM XML (a created
MeterReadings EventMessage) and/or CSV (:mod:`mdm.export`), one file per export or one per
``per_devices`` devices, each by the same atomic write so a reader never sees half a file;
:class:`ScheduledExports` runs them on :mod:`headend.scheduler` schedules with their data
windows.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import stat
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from adapters.intake import refusal_text, screen
from cim.datetimes import utcnow
from cim.errors import CimError, ErrorCode
from cim.xmlsafe import DEFAULT_LIMITS, XmlLimits
from headend.scheduler import ScheduledJob, Scheduler, Window, data_window

if TYPE_CHECKING:
    from headend.access import Principal
    from headend.router import Router
    from mdm.database import Store

log = logging.getLogger(__name__)

SUFFIX = ".xml"
REPLY_SUFFIX = ".reply.xml"
REASON_SUFFIX = ".reason"


# -- atomic files


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "wb", **options: Any) -> Iterator[IO[Any]]:
    """Write ``path`` so that it appears complete or not at all: into a hidden temporary
    file in the same folder, flushed and fsynced, then renamed over ``path``. On an
    exception the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    handle = open(temporary, mode, **options)  # noqa: SIM115 - closed below
    try:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        os.replace(temporary, path)
    except BaseException:
        handle.close()
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    fsync_dir(path.parent)


def atomic_write(path: Path, data: bytes) -> None:
    with atomic_file(path) as handle:
        handle.write(data)


def remove_stale_temporaries(folder: Path) -> int:
    """Remove temporary files an interrupted :func:`atomic_file` left in ``folder``."""
    removed = 0
    for entry in folder.glob(".*.tmp"):
        with contextlib.suppress(OSError):
            entry.unlink()
            removed += 1
    return removed


def free_name(folder: Path, name: str) -> Path:
    """``folder/name``, or with a UTC time (and counter) before the suffix if taken."""
    target = folder / name
    if not target.exists() and not target.is_symlink():
        return target
    stem, dot, suffix = name.rpartition(".")
    if not dot:
        stem, suffix = name, ""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    for counter in range(1, 10_000):
        extra = f"{stamp}" if counter == 1 else f"{stamp}-{counter}"
        target = folder / f"{stem}.{extra}{dot}{suffix}"
        if not target.exists() and not target.is_symlink():
            return target
    raise FileExistsError(f"no free name for {name} in {folder}")


# -- the watched folder


@dataclass(frozen=True)
class FileDropSettings:
    folder: Path
    poll_interval: float = 1.0  # seconds between looks at the inbox
    settle: float = 1.0  # seconds a file must stay unchanged before it is taken
    concurrency: int = 8  # requests handled at once
    limits: XmlLimits = DEFAULT_LIMITS
    principal_name: str = "file"
    principal_roles: tuple[str, ...] = ("reader", "operator")

    @property
    def inbox(self) -> Path:
        return Path(self.folder) / "inbox"

    @property
    def outbox(self) -> Path:
        return Path(self.folder) / "outbox"

    @property
    def archive(self) -> Path:
        return Path(self.folder) / "archive"

    @property
    def error(self) -> Path:
        return Path(self.folder) / "error"


@dataclass(frozen=True)
class Outcome:
    """What became of one dropped file."""

    name: str
    moved_to: Path
    reply: Path | None = None  # the ResponseMessage, when answered
    result: str | None = None  # OK | PARTIAL | FAILED (the router's), when answered
    reason: str | None = None  # why it was refused


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Seen:
    size: int
    mtime_ns: int
    since: float


@dataclass
class FileDrop:
    """Watches ``settings.inbox``; call :meth:`scan` for one pass or :meth:`run`."""

    router: Router
    settings: FileDropSettings
    principal: Principal | None = None
    processed: int = 0
    refused: int = 0
    _seen: dict[str, _Seen] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.principal is None:
            from headend.access import Principal

            self.principal = Principal(
                self.settings.principal_name, frozenset(self.settings.principal_roles), "file"
            )
        for folder in (
            self.settings.inbox,
            self.settings.outbox,
            self.settings.archive,
            self.settings.error,
        ):
            folder.mkdir(parents=True, exist_ok=True)
        removed = remove_stale_temporaries(self.settings.outbox)
        if removed:
            log.info("file drop: removed %d unfinished temporary files from outbox/", removed)

    async def run(self, stop: asyncio.Event) -> None:
        """Poll the inbox every ``poll_interval`` seconds until ``stop`` is set."""
        while not stop.is_set():
            try:
                await self.scan()
            except OSError:
                log.exception("file drop: scanning %s failed", self.settings.inbox)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.poll_interval)

    def stable_files(self, now: float | None = None) -> list[Path]:
        """The inbox files ready to be taken (and remember the others for the next look)."""
        now = time.monotonic() if now is None else now
        wall = time.time()
        ready: list[Path] = []
        present: set[str] = set()
        try:
            entries = sorted(os.scandir(self.settings.inbox), key=lambda e: e.name)
        except FileNotFoundError:
            self.settings.inbox.mkdir(parents=True, exist_ok=True)
            return []
        for entry in entries:
            name = entry.name
            if name.startswith(".") or not name.lower().endswith(SUFFIX):
                continue
            present.add(name)
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # gone meanwhile
            if not stat.S_ISREG(info.st_mode):
                ready.append(Path(entry.path))  # refused at once: not a regular file
                continue
            seen = self._seen.get(name)
            changed = seen is None or (seen.size, seen.mtime_ns) != (
                info.st_size,
                info.st_mtime_ns,
            )
            if changed:
                self._seen[name] = seen = _Seen(info.st_size, info.st_mtime_ns, now)
            assert seen is not None
            settled = not changed and now - seen.since >= self.settings.settle
            written_long_ago = wall - info.st_mtime >= self.settings.settle
            if not (settled or written_long_ago):
                continue
            ready.append(Path(entry.path))
        for name in list(self._seen):
            if name not in present:
                del self._seen[name]
        return ready

    async def scan(self) -> list[Outcome]:
        """One look at the inbox: process every stable file; return what became of each."""
        ready = self.stable_files()
        if not ready:
            return []
        gate = asyncio.Semaphore(max(1, self.settings.concurrency))

        async def one(path: Path) -> Outcome:
            async with gate:
                return await self.process(path)

        return list(await asyncio.gather(*(one(path) for path in ready)))

    async def process(self, path: Path) -> Outcome:
        """Answer one request file (or refuse it) and move it out of the inbox."""
        self._seen.pop(path.name, None)
        try:
            data = self._read(path)
            try:
                screen(data, self.settings.limits)
            except CimError as error:
                raise _Refused(refusal_text(error)) from None
            assert self.principal is not None
            try:
                reply = await self.router.handle(data, principal=self.principal, channel="file")
            except Exception as exc:
                log.exception("file drop: the router failed on %s", path.name)
                raise _Refused(
                    refusal_text(
                        CimError(ErrorCode.INTERNAL, f"router crash: {type(exc).__name__}")
                    )
                ) from None
        except _Refused as refusal:
            return self._refuse(path, refusal.reason)
        stem = path.name[: -len(SUFFIX)]
        reply_path = self.settings.outbox / f"{stem}{REPLY_SUFFIX}"
        atomic_write(reply_path, reply.body)
        target = free_name(self.settings.archive, path.name)
        os.replace(path, target)
        fsync_dir(self.settings.archive)
        fsync_dir(self.settings.inbox)
        self.processed += 1
        log.info("file drop: %s answered %s -> %s", path.name, reply.result, reply_path.name)
        return Outcome(path.name, target, reply=reply_path, result=reply.result)

    def _read(self, path: Path) -> bytes:
        limit = self.settings.limits.max_bytes
        try:
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                raise _Refused("unreadable: a symbolic link is not taken from the inbox")
            if not stat.S_ISREG(info.st_mode):
                raise _Refused("unreadable: not a regular file")
            if info.st_size > limit:
                raise _Refused(
                    refusal_text(
                        CimError(
                            ErrorCode.TOO_LARGE,
                            f"file is {info.st_size:,} bytes; the limit is {limit:,}",
                        )
                    )
                )
            flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
            with open(os.open(path, flags), "rb") as handle:
                data = handle.read(limit + 1)
        except OSError as exc:
            raise _Refused(f"unreadable: {exc.strerror or exc}") from None
        if len(data) > limit:
            raise _Refused(
                refusal_text(
                    CimError(ErrorCode.TOO_LARGE, f"file grew beyond the limit of {limit:,} bytes")
                )
            )
        return data

    def _refuse(self, path: Path, reason: str) -> Outcome:
        target = free_name(self.settings.error, path.name)
        # The reason first: a crash between the two leaves the request in the inbox, to be
        # refused again under the same name, never a refused file without its reason.
        atomic_write(target.with_name(target.name + REASON_SUFFIX), (reason + "\n").encode())
        try:
            os.replace(path, target)
        except OSError as exc:
            log.error("file drop: cannot move %s to error/: %s", path.name, exc)
            raise
        fsync_dir(self.settings.error)
        fsync_dir(self.settings.inbox)
        self.refused += 1
        log.warning("file drop: %s refused: %s", path.name, reason)
        return Outcome(path.name, target, reason=reason)


# -- exports


def _parts(devices: Sequence[str], per_devices: int | None) -> list[Sequence[str]]:
    if not per_devices or per_devices >= len(devices):
        return [devices]
    return [devices[i : i + per_devices] for i in range(0, len(devices), per_devices)]


def export_readings(
    store: Store,
    folder: Path,
    name: str,
    devices: Sequence[str],
    reading_types: Sequence[str],
    start: datetime,
    end: datetime,
    *,
    formats: Sequence[str] = ("xml", "csv"),
    per_devices: int | None = None,
    as_of: datetime | None = None,
    source: str = "OpenHES",
) -> list[Path]:
    """Export the readings of ``devices`` x ``reading_types`` in (start, end] to
    ``folder/<name>.xml`` and/or ``.csv`` (with ``per_devices``: ``<name>-0001.xml``...,
    one file per that many devices). Every file appears whole or not at all. The CIM file
    is an EventMessage (created MeterReadings); the CSV is :func:`mdm.export.export_csv`'s.
    MdmError (unknown device, bad window) before any file is written."""
    from mdm.export import export_cim, export_csv

    unknown = [f for f in formats if f not in ("xml", "csv")]
    if unknown:
        raise ValueError(f"unknown export format {unknown[0]!r}; xml or csv")
    if "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"export name {name!r} must be a plain file name")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    parts = _parts(list(devices), per_devices)
    written: list[Path] = []
    for number, part in enumerate(parts, start=1):
        base = name if len(parts) == 1 else f"{name}-{number:04d}"
        if "xml" in formats:
            path = folder / f"{base}.xml"
            with atomic_file(path) as handle:
                export_cim(
                    store,
                    handle,
                    part,
                    reading_types,
                    start,
                    end,
                    as_of=as_of,
                    envelope={
                        "verb": "created",
                        "noun": "MeterReadings",
                        "timestamp": utcnow(),
                        "source": source,
                        "message_id": str(uuid.uuid4()),
                    },
                )
            written.append(path)
        if "csv" in formats:
            path = folder / f"{base}.csv"
            with atomic_file(path, "wb") as raw:
                text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
                export_csv(store, text, part, reading_types, start, end, as_of=as_of)
                text.flush()
                text.detach()
            written.append(path)
    return written


@dataclass(frozen=True)
class ExportJob:
    """What a scheduled export writes (the ScheduledJob's template)."""

    devices: tuple[str, ...]
    reading_types: tuple[str, ...]
    formats: tuple[str, ...] = ("xml", "csv")
    per_devices: int | None = None


class ScheduledExports:
    """Exports on schedules: each firing of a :class:`ScheduledJob` whose template is an
    :class:`ExportJob` writes ``<job name>-<firing time, UTC>`` files for its data window."""

    def __init__(self, store: Store, folder: Path) -> None:
        self.store = store
        self.folder = Path(folder)
        self.scheduler = Scheduler()

    def add(self, job: ScheduledJob) -> None:
        if not isinstance(job.template, ExportJob):
            raise TypeError("a scheduled export's template is an ExportJob")
        if job.window is Window.NONE:
            raise ValueError("a scheduled export needs a data window")
        self.scheduler.add(job)

    def run_due(self, now: datetime | None = None) -> list[Path]:
        """Run every export due at ``now``; return the files written."""
        written: list[Path] = []
        for job, fired_at in self.scheduler.due(now or datetime.now(UTC)):
            spec = job.template
            assert isinstance(spec, ExportJob)
            window = data_window(job.window, fired_at, job.schedule.zone)
            assert window is not None
            stamp = fired_at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
            written += export_readings(
                self.store,
                self.folder,
                f"{job.name}-{stamp}",
                spec.devices,
                spec.reading_types,
                *window,
                formats=spec.formats,
                per_devices=spec.per_devices,
            )
        return written

    async def run(self, stop: asyncio.Event, interval: float = 30.0) -> None:
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.run_due)
            except Exception:
                log.exception("scheduled export failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
