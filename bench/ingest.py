"""Ingest benchmark: 15-minute readings through normalise + validate + store.

    python bench/ingest.py            # 1,000,000 readings (10,417 devices x 96), 3 runs
    python bench/ingest.py --quick    # 200,000 readings, 2 runs, under a minute

Each run ingests one new day for every device, in batches (one transaction each), on SQLite
(a file in a temporary directory) and on PostgreSQL (a dedicated schema, dropped at the end;
URL from OPENHES_BENCH_POSTGRES_URL or OPENHES_TEST_POSTGRES_URL). The figures are medians of
the runs. ``postgres_copy_ceiling_per_s`` is the same readings COPYed (binary) into a table
without keys or indexes, no processing, in the same run. ``meter_day_query_p50_ms`` reads
one device's day through ``mdm.readings.read_one`` on PostgreSQL, after the store has been
filled up to 10 million readings (full run; ``--quick``: what the runs stored).
``export_xml_per_s`` is ``mdm.export.export_cim`` writing one stored day of every device as a
CIM MeterReadings document to a sink that discards it (PostgreSQL store; null without
mdm.export).
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import create_engine, text

from mdm.database import Store, open_store, resolve_url
from mdm.devices import Device, create_devices
from mdm.ingest import ingest
from mdm.normalise import RawValue
from mdm.readings import read_one
from mdm.series import QUALITY_FAILED_VALIDATION, Series

INTERVALS = 96
OBIS = "1-0:1.8.0"
READING_TYPE = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"  # 15-min delta +A, kWh
DAY0 = datetime(2024, 3, 1, tzinfo=UTC)
LIMIT_MAX_KWH = Decimal(25)


def validator() -> tuple[Callable[[Series], Series], str]:
    """mdm.vee's limit check when the VEE engine is there, else a stand-in of its kind."""
    try:
        from mdm.vee import VeeEngine

        engine = VeeEngine(
            {"rules": [{"reading_type": "*", "limits": {"min": "0", "max": str(LIMIT_MAX_KWH)}}]}
        )
        return engine.as_ingest_hook(), "mdm.vee limits (0..25 kWh per 15 min)"
    except ImportError:

        def limits(series: Series) -> Series:
            points = series.points
            flagged = [
                p.with_qualities(QUALITY_FAILED_VALIDATION)
                if p.value is not None and not Decimal(0) <= p.value <= LIMIT_MAX_KWH
                else p
                for p in points
            ]
            return Series(series.key, flagged, series.interval)

        return limits, "stand-in limit check (0..25 kWh per 15 min; mdm.vee not importable)"


def raw_day(devices: Sequence[str], day: int, seed: int) -> list[RawValue]:
    rng = random.Random(seed)
    start = DAY0 + timedelta(days=day)
    stamps = [start + timedelta(minutes=15 * (k + 1)) for k in range(INTERVALS)]
    return [
        RawValue(
            mrid, OBIS, ts, rng.randrange(0, 3000), "Wh", interval_minutes=15, source_task="bench"
        )
        for mrid in devices
        for ts in stamps
    ]


def run_ingest(
    store: Store, rows: list[RawValue], batch: int, hook: Callable[[Series], Series]
) -> float:
    started = time.perf_counter()
    for first in range(0, len(rows), batch):
        ingest(store, rows[first : first + batch], validator=hook)
    return time.perf_counter() - started


def copy_ceiling(url: str, schema: str, rows: list[RawValue]) -> float:
    """Readings/s of a binary COPY of the same normalised rows into a bare table."""
    import psycopg

    stamps = {}
    prepared = []
    ids = {}
    for raw in rows:
        device_id = ids.setdefault(raw.device, len(ids) + 1)
        ts = stamps.setdefault(raw.time, raw.time)
        prepared.append((device_id, 1, ts, Decimal(raw.value).scaleb(-3), None, 0))
    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, options=f"-c search_path={schema}") as conn:
        conn.execute(
            "CREATE TABLE bare (device_id int4, reading_type_id int4, "
            "ts timestamptz, value numeric(28,9), qualities text, status int8)"
        )
        conn.commit()
        started = time.perf_counter()
        with conn.cursor() as cur, cur.copy("COPY bare FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int4", "int4", "timestamptz", "numeric", "text", "int8"])
            for row in prepared:
                copy.write_row(row)
        conn.commit()
        elapsed = time.perf_counter() - started
        conn.execute("DROP TABLE bare")
        conn.commit()
    return len(rows) / elapsed


def fill_postgres(store: Store, target: int) -> int:
    """Add whole synthetic days (set-based SQL) until the store holds ``target`` readings."""
    with store.begin() as conn:
        count = conn.execute(text("SELECT count(*) FROM readings")).scalar_one()
        devices = conn.execute(text("SELECT count(*) FROM devices")).scalar_one()
        rt = conn.execute(text("SELECT id FROM reading_types")).scalars().first()
        last = conn.execute(text("SELECT max(ts) FROM readings")).scalar_one()
    per_day = devices * INTERVALS
    day = 0
    while count < target:
        start = last + timedelta(days=day)
        with store.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO readings (device_id, reading_type_id, ts, value, qualities, "
                    "status, version, source, recorded_at) "
                    "SELECT d.id, :rt, :start + make_interval(mins => 15 * k), "
                    "(random() * 3)::numeric(28, 3), NULL, 0, 1, 'meter', now() "
                    "FROM devices d CROSS JOIN generate_series(1, 96) AS k"
                ),
                {"rt": rt, "start": start},
            )
        count += per_day
        day += 1
    with store.begin() as conn:
        conn.execute(text("ANALYZE readings"))
    return count


def query_p50(store: Store, devices: Sequence[str], days: int, samples: int) -> float:
    rng = random.Random(7)
    times = []
    for _ in range(samples):
        mrid = rng.choice(devices)
        start = DAY0 + timedelta(days=rng.randrange(days))
        began = time.perf_counter()
        series = read_one(store, mrid, READING_TYPE, start, start + timedelta(days=1))
        times.append(time.perf_counter() - began)
        assert len(series) == INTERVALS, (mrid, start, len(series))
    return statistics.median(times) * 1000


class _Discard(io.RawIOBase):
    """A binary sink that keeps nothing (the export's own speed, not the disk's)."""

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        return len(data)


def export_per_s(store: Store, devices: Sequence[str]) -> float | None:
    """CIM MeterReadings XML export of one stored day, readings/s (None without mdm.export)."""
    try:
        from mdm.export import export_cim
    except ImportError:
        return None
    started = time.perf_counter()
    written = export_cim(store, _Discard(), devices, [READING_TYPE], DAY0, DAY0 + timedelta(days=1))
    return round(written / (time.perf_counter() - started))


def postgres_url() -> str:
    return (
        os.environ.get("OPENHES_BENCH_POSTGRES_URL")
        or os.environ.get("OPENHES_TEST_POSTGRES_URL")
        or "postgresql://postgres@127.0.0.1:5432/test"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200,000 readings, < 60 s")
    parser.add_argument("--runs", type=int, help="default: 3, or 2 with --quick")
    parser.add_argument("--batch", type=int, default=96 * 1024)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args(argv)

    total = 200_000 if args.quick else 1_000_000
    args.runs = args.runs or (2 if args.quick else 3)
    n_devices = -(-total // INTERVALS)
    devices = [f"BENCH{i:06d}" for i in range(n_devices)]
    hook, hook_name = validator()
    figures: dict[str, object] = {
        "readings_per_run": n_devices * INTERVALS,
        "devices": n_devices,
        "runs": args.runs,
        "batch_rows": args.batch,
        "validator": hook_name,
    }
    days = [raw_day(devices, day, seed=day) for day in range(args.runs)]

    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(str(Path(tmp) / "bench.sqlite3"))
        create_devices(store, [Device(m) for m in devices], who="bench")
        rates = []
        for rows in days:
            rates.append(len(rows) / run_ingest(store, rows, args.batch, hook))
            print(f"sqlite: {rates[-1]:,.0f} readings/s", file=sys.stderr)
        figures["sqlite_per_s"] = round(statistics.median(rates))
        figures["sqlite_meter_day_query_p50_ms"] = round(
            query_p50(store, devices, args.runs, 200), 3
        )
        store.close()

    figures.update(
        postgres_url=None,
        postgres_per_s=None,
        postgres_copy_ceiling_per_s=None,
        postgres_ratio=None,
        meter_day_query_p50_ms=None,
        store_readings=None,
    )
    if not args.no_postgres:
        url = resolve_url(postgres_url()).render_as_string(hide_password=False)
        schema = f"bench_ingest_{os.getpid()}"
        admin = create_engine(url)
        with admin.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
        try:
            store = open_store(url, schema=schema)
            create_devices(store, [Device(m) for m in devices], who="bench")
            rates, ceilings = [], []
            for rows in days:
                rates.append(len(rows) / run_ingest(store, rows, args.batch, hook))
                ceilings.append(copy_ceiling(url, schema, rows))
                print(
                    f"postgres: {rates[-1]:,.0f} readings/s, COPY ceiling {ceilings[-1]:,.0f}/s",
                    file=sys.stderr,
                )
            figures["postgres_url"] = resolve_url(postgres_url()).render_as_string()
            figures["postgres_per_s"] = round(statistics.median(rates))
            figures["postgres_copy_ceiling_per_s"] = round(statistics.median(ceilings))
            figures["postgres_ratio"] = round(
                statistics.median(r / c for r, c in zip(rates, ceilings, strict=True)), 3
            )
            stored = n_devices * INTERVALS * args.runs
            if not args.quick:
                stored = fill_postgres(store, 10_000_000)
            figures["store_readings"] = stored
            figures["meter_day_query_p50_ms"] = round(query_p50(store, devices, args.runs, 300), 3)
            figures["export_xml_per_s"] = export_per_s(store, devices)
            store.close()
        finally:
            with admin.begin() as conn:
                conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
            admin.dispose()
    figures.setdefault("export_xml_per_s", None)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
