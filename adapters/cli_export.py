"""``openhes export``: stored MeterReadings of some meters (mRIDs, a group, or every meter) over
a window, as CIM XML (a created MeterReadings EventMessage), CSV or JSON lines, to a file or
into a folder. Every file appears whole or not at all (written under a temporary name, then
renamed: :func:`adapters.filedrop.atomic_file`). The readings are :mod:`mdm.export`'s: the
current values, exact decimals, UTC timestamps.

    openhes export --all --out exports/                 # yesterday (UTC), CIM XML and CSV
    openhes export --meters M1 M2 --from 2024-01-01T00:00Z --to 2024-01-02T00:00Z \\
                   --format json --out m1-m2.jsonl
"""

from __future__ import annotations

import argparse
import io
import os
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from adapters.cli_support import (
    DATABASE_HELP,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    database,
    guarded,
    positive_int,
    print_json,
)

FORMATS = ("xml", "csv", "json")
SUFFIXES = {".xml": "xml", ".csv": "csv", ".json": "json", ".jsonl": "json"}


class ExportError(CliError):
    """An export refused (status 1) or asked wrongly (status 2), as one line."""


def _instant(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 date-time") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no UTC offset (add Z or +01:00)")
    return value.astimezone(UTC)


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser(
        "export",
        help="export stored MeterReadings as CIM XML, CSV or JSON (atomic files)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--meters", nargs="+", metavar="MRID", help="these meters")
    target.add_argument("--group", metavar="NAME", help="a device group (sub-groups included)")
    target.add_argument("--all", action="store_true", help="every registered device")
    parser.add_argument("--from", dest="start", type=_instant, help="window start (exclusive)")
    parser.add_argument("--to", dest="end", type=_instant, help="window end (inclusive)")
    parser.add_argument(
        "--day", type=_day, default=None, help="one local day of --zone (default: yesterday)"
    )
    parser.add_argument("--zone", default="UTC", help="time zone of --day (default UTC)")
    parser.add_argument(
        "--reading-type",
        dest="reading_types",
        action="append",
        metavar="CODE",
        help="ReadingType (repeatable; default: every one stored for the meters in the window)",
    )
    parser.add_argument(
        "--format",
        dest="formats",
        action="append",
        choices=FORMATS,
        help="xml, csv or json (repeatable into a folder; default: from the file name, or "
        "xml and csv into a folder)",
    )
    parser.add_argument(
        "--out",
        required=True,
        help="a file (its suffix gives the format) or a folder (existing, or ending in /)",
    )
    parser.add_argument("--name", default=None, help="file name in a folder, without suffix")
    parser.add_argument(
        "--per-devices",
        type=positive_int,
        default=None,
        help="into a folder: one file per this many devices",
    )
    parser.add_argument(
        "--database",
        default=None,
        help=DATABASE_HELP,
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(handler=cmd_export)


def window_of(args: argparse.Namespace, now: datetime | None = None) -> tuple[datetime, datetime]:
    """(start, end] from --from/--to or --day (default: yesterday in --zone)."""
    if (args.start is None) != (args.end is None):
        raise ExportError("give both --from and --to", EXIT_USAGE)
    if args.start is not None:
        if args.day is not None:
            raise ExportError("give --from/--to or --day, not both", EXIT_USAGE)
        if not args.start < args.end:
            raise ExportError("--from must be before --to", EXIT_USAGE)
        return args.start, args.end
    try:
        zone = ZoneInfo(args.zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ExportError(f"--zone {args.zone!r} is not an IANA time zone", EXIT_USAGE) from None
    day = args.day or ((now or datetime.now(UTC)).astimezone(zone).date() - timedelta(days=1))
    start = datetime.combine(day, time(0), zone).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(0), zone).astimezone(UTC)
    return start, end


def devices_of(store: Any, args: argparse.Namespace) -> list[str]:
    from sqlalchemy import select

    from mdm.database import reading
    from mdm.devices import group_members
    from mdm.errors import MdmError
    from mdm.schema import devices

    if args.meters:
        return list(dict.fromkeys(args.meters))
    if args.group is not None:
        try:
            members = group_members(store, args.group, recursive=True)
        except MdmError:
            raise ExportError(f"no device group {args.group!r}") from None
        if not members:
            raise ExportError(f"device group {args.group!r} has no devices")
        return members
    with reading(store) as conn:
        found = list(
            conn.execute(
                select(devices.c.mrid).where(devices.c.status != "removed").order_by(devices.c.id)
            ).scalars()
        )
    if not found:
        raise ExportError("no devices are registered")
    return found


def stored_reading_types(
    store: Any, mrids: Sequence[str], start: datetime, end: datetime
) -> list[str]:
    """The ReadingTypes stored for ``mrids`` in (start, end]."""
    from sqlalchemy import select

    from mdm.database import reading
    from mdm.devices import device_ids
    from mdm.schema import reading_types, readings

    codes: dict[str, None] = {}
    with reading(store) as conn:
        ids = [id_ for id_, _ in device_ids(conn, list(mrids)).values()]
        for first in range(0, len(ids), 500):
            chunk = ids[first : first + 500]
            query = (
                select(reading_types.c.code)
                .where(
                    reading_types.c.id.in_(
                        select(readings.c.reading_type_id)
                        .distinct()
                        .where(
                            readings.c.device_id.in_(chunk),
                            readings.c.ts > start,
                            readings.c.ts <= end,
                        )
                    )
                )
                .order_by(reading_types.c.id)
            )
            codes.update(dict.fromkeys(conn.execute(query).scalars()))
    return list(codes)


def write_file(
    store: Any,
    path: Path,
    fmt: str,
    mrids: Sequence[str],
    codes: Sequence[str],
    start: datetime,
    end: datetime,
    *,
    source: str = "OpenHES",
) -> int:
    """One export file written atomically; returns the number of readings in it."""
    from adapters.filedrop import atomic_file
    from cim.datetimes import utcnow
    from mdm.export import export_cim, export_csv, export_json

    if fmt == "xml":
        with atomic_file(path) as handle:
            return export_cim(
                store,
                handle,
                mrids,
                codes,
                start,
                end,
                envelope={
                    "verb": "created",
                    "noun": "MeterReadings",
                    "timestamp": utcnow(),
                    "source": source,
                    "message_id": str(uuid.uuid4()),
                },
            )
    with atomic_file(path, "wb") as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        writer = export_csv if fmt == "csv" else export_json
        count = writer(store, text, mrids, codes, start, end)
        text.flush()
        text.detach()
    return count


def export(
    store: Any,
    out: str | Path,
    mrids: Sequence[str],
    start: datetime,
    end: datetime,
    *,
    formats: Sequence[str] | None = None,
    reading_types: Sequence[str] | None = None,
    name: str | None = None,
    per_devices: int | None = None,
) -> list[tuple[Path, int]]:
    """Write the export; [(file, readings)]. ``out`` is a file unless it is an existing
    folder or its text ends with a slash."""
    codes = list(reading_types) if reading_types else stored_reading_types(store, mrids, start, end)
    into_folder = str(out).endswith(("/", os.sep)) or Path(out).is_dir()
    out = Path(out)
    if not into_folder:
        if per_devices:
            raise ExportError("--per-devices needs a folder as --out", EXIT_USAGE)
        fmt = SUFFIXES.get(out.suffix.lower())
        if formats:
            if len(formats) > 1:
                raise ExportError("several formats need a folder as --out", EXIT_USAGE)
            fmt = formats[0]
        if fmt is None:
            raise ExportError(
                f"{out}: cannot tell the format from the name; give --format", EXIT_USAGE
            )
        if not out.parent.is_dir():
            raise ExportError(f"{out.parent}: no such folder")
        return [(out, write_file(store, out, fmt, mrids, codes, start, end))]
    chosen = list(dict.fromkeys(formats or ("xml", "csv")))
    base = name or f"MeterReadings-{start:%Y%m%dT%H%MZ}-{end:%Y%m%dT%H%MZ}"
    if "/" in base or "\\" in base or base.startswith(".") or not base:
        raise ExportError(f"--name {base!r} must be a plain file name", EXIT_USAGE)
    out.mkdir(parents=True, exist_ok=True)
    parts = [list(mrids)]
    if per_devices and per_devices < len(mrids):
        parts = [list(mrids[i : i + per_devices]) for i in range(0, len(mrids), per_devices)]
    written = []
    for number, part in enumerate(parts, start=1):
        stem = base if len(parts) == 1 else f"{base}-{number:04d}"
        for fmt in chosen:
            path = out / f"{stem}.{'jsonl' if fmt == 'json' else fmt}"
            written.append((path, write_file(store, path, fmt, part, codes, start, end)))
    return written


def cmd_export(args: argparse.Namespace) -> int:
    return guarded("openhes export", lambda: _export(args))


def _export(args: argparse.Namespace) -> int:
    start, end = window_of(args)
    with database(args.database) as store:
        mrids = devices_of(store, args)
        written = export(
            store,
            args.out,
            mrids,
            start,
            end,
            formats=args.formats,
            reading_types=args.reading_types,
            name=args.name,
            per_devices=args.per_devices,
        )
    if args.json:
        print_json(
            {
                "start": start.isoformat(),
                "end": end.isoformat(),
                "meters": len(mrids),
                "files": [{"path": str(p), "readings": n} for p, n in written],
            },
            compact=True,
        )
    else:
        for path, count in written:
            print(f"{path}: {count:,} readings")
        print(f"exported {len(mrids):,} meters, {start.isoformat()} .. {end.isoformat()}")
    return EXIT_OK


__all__ = ["ExportError", "cmd_export", "export", "register", "stored_reading_types", "window_of"]
