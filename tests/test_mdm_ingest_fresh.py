"""The PostgreSQL fresh-data path of ingest (binary COPY straight into readings and
raw_values): every ingest test again with the path taken for batches of any size, plus its
own cases (numeric encoding, a failure half way, a concurrent writer, COPY errors)."""

from __future__ import annotations

import random
from datetime import timedelta
from decimal import Decimal

import pytest
import test_mdm_ingest
from mdm_samples import OBIS_ENERGY, T0, count, interval_rows
from psycopg.adapt import PyFormat, Transformer
from sqlalchemy import text

from cim.errors import ErrorCode
from mdm import bulk
from mdm.errors import MdmError
from mdm.ingest import ingest
from mdm.normalise import RawValue
from mdm.series import QUALITY_FAILED_VALIDATION, Series

pytest_plugins = ["mdm_conftest"]

# Every test of test_mdm_ingest, here with the fresh path enabled for small batches, except
# the two that inject failures into the staged path's statements (their fresh-path
# counterparts are below).
_STAGED_ONLY = {
    "test_a_batch_failing_half_way_in_the_database_leaves_nothing",
    "test_a_database_error_is_reported_as_a_storage_error",
}
for _name in dir(test_mdm_ingest):
    if _name.startswith("test_") and _name not in _STAGED_ONLY:
        globals()[_name] = getattr(test_mdm_ingest, _name)
values_of = test_mdm_ingest.values_of


@pytest.fixture(autouse=True)
def fresh_path_for_every_batch(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Fresh path for any batch size; counts the batches that took it."""
    taken: list[int] = []
    original = bulk.copy_fresh_postgresql

    def counting(*args, **kwargs):
        taken.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(bulk, "FRESH_MIN_ROWS", 1)
    monkeypatch.setattr(bulk, "copy_fresh_postgresql", counting)
    return taken


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.services)])
def store(request: pytest.FixtureRequest):
    from mdm_conftest import postgres_store

    yield from postgres_store(request.getfixturevalue("postgres_url"))


def test_numeric_encoding_matches_psycopg():
    dumper = Transformer().get_dumper(Decimal("1.5"), PyFormat.BINARY)
    rng = random.Random(5)
    cases = [(0, 0), (0, -9), (1, -9), (-1, 3), (10**18, 0), (-(2**63), -9), (2**63 - 1, 6)]
    for _ in range(5000):
        raw = rng.choice(
            [
                rng.randrange(-(10**6), 10**6),
                rng.randrange(-(2**63), 2**63),
                10 ** rng.randrange(15),
            ]
        )
        cases.append((raw, rng.randrange(-12, 7)))
    for raw, exponent in cases:
        encoded = bulk.pg_numeric(raw, exponent)
        expected = bytes(dumper.dump(Decimal(raw).scaleb(exponent)))
        assert encoded == len(expected).to_bytes(4, "big") + expected, (raw, exponent)


def test_the_fresh_path_is_taken_for_new_data_only(meters, fresh_path_for_every_batch):
    ingest(meters, interval_rows(count=96))
    assert len(fresh_path_for_every_batch) == 1
    # overlapping the stored intervals: staged
    result = ingest(meters, interval_rows(count=8, start=T0 + timedelta(hours=23)))
    assert len(fresh_path_for_every_batch) == 1
    assert (result.readings_new, result.readings_versioned) == (4, 4)
    # the next day: fresh again; another device: fresh
    ingest(meters, interval_rows(count=96, start=T0 + timedelta(days=2)))
    ingest(meters, interval_rows("M2", count=4))
    assert len(fresh_path_for_every_batch) == 3
    assert count(meters, "readings") == 96 + 4 + 96 + 4


def test_fresh_rows_are_stored_exactly_as_the_staged_path_stores_them(meters, monkeypatch):
    rows = [
        RawValue("M1", OBIS_ENERGY, T0 + timedelta(minutes=15), 1234, "Wh", interval_minutes=15),
        RawValue(
            "M1", OBIS_ENERGY, T0 + timedelta(minutes=30), -7, "kWh", scaler=-2, status=5,
            interval_minutes=15, source_task="task-x",
        ),
        RawValue(
            "AMS", OBIS_ENERGY, (T0 + timedelta(minutes=15)).replace(tzinfo=None), 3, "Wh",
            scaler=4, dst=False, interval_minutes=15,
        ),
    ]  # fmt: skip

    def hook(series: Series) -> Series:
        points = [p.with_qualities(QUALITY_FAILED_VALIDATION) for p in series.points]
        return Series(series.key, points, series.interval)

    def dump(store):
        with store.connect() as conn:
            return [
                conn.execute(
                    text(
                        "SELECT device_id, reading_type_id, ts, value::text, qualities, status, "
                        "version, source FROM readings ORDER BY 1, 2, 3"
                    )
                ).all(),
                conn.execute(
                    text(
                        "SELECT device_id, source_id, ts, value, scaler, unit, status, "
                        "source_task, meter_time, meter_dst FROM raw_values ORDER BY 1, 2, 3"
                    )
                ).all(),
            ]

    ingest(meters, rows, validator=hook)
    fresh = dump(meters)
    with meters.begin() as conn:
        conn.execute(text("DELETE FROM readings"))
        conn.execute(text("DELETE FROM raw_values"))
    monkeypatch.setattr(bulk, "FRESH_MIN_ROWS", 10**9)
    ingest(meters, rows, validator=hook)
    assert dump(meters) == fresh
    assert fresh[0][0][3] == "1.234000000" and fresh[0][0][4] == QUALITY_FAILED_VALIDATION
    assert fresh[1][2][8] == "2024-01-01T00:15:00" and fresh[1][2][9] == 0


def test_a_concurrent_writer_sends_the_batch_down_the_staged_path(meters, monkeypatch):
    ingest(meters, interval_rows(values=[1000, 2000, 3000, 4000]))
    # the probe misses what is stored (as it would a row committed just after it)
    monkeypatch.setattr(bulk, "fresh_postgresql", lambda *args: True)
    result = ingest(meters, interval_rows(values=[1000, 2500, 3000, 4000], task="t2"))
    assert (result.raw_stored, result.readings_new, result.readings_versioned) == (4, 0, 1)
    assert count(meters, "readings") == 4
    assert count(meters, "raw_values") == 8
    assert count(meters, "reading_history") == 1


def test_a_failure_half_way_through_the_copies_leaves_nothing(meters, monkeypatch):
    ingest(meters, interval_rows("M2"))  # an accepted batch, which must survive
    original = bulk.copy_fresh_postgresql

    def fail_after_raw_values(conn, parts, failed_row=None):
        def failing():
            yield from parts[1][1]
            raise RuntimeError("injected failure after the raw values were written")

        return original(conn, [parts[0], (parts[1][0], failing())], failed_row)

    monkeypatch.setattr(bulk, "copy_fresh_postgresql", fail_after_raw_values)
    with pytest.raises(RuntimeError, match="injected"):
        ingest(meters, interval_rows("M1"))
    assert count(meters, "raw_values") == 4
    assert count(meters, "readings") == 4
    assert values_of(meters, "M1") == []
    monkeypatch.setattr(bulk, "copy_fresh_postgresql", original)
    assert ingest(meters, interval_rows("M1")).readings_new == 4  # and it can be retried


def test_a_validator_error_during_the_copy_leaves_nothing(meters):
    def breaks_the_second_series(series: Series) -> Series:
        if series.key.device == "M2":
            return Series(series.key, series.points[1:], series.interval)
        return series

    rows = interval_rows("M1") + interval_rows("M2")
    with pytest.raises(MdmError) as caught:
        ingest(meters, rows, validator=breaks_the_second_series)
    assert caught.value.error is ErrorCode.INTERNAL
    assert count(meters, "raw_values") == 0
    assert count(meters, "readings") == 0


def test_a_copy_error_names_the_row(meters, monkeypatch):
    original = bulk.copy_fresh_postgresql

    def corrupt_third_reading(conn, parts, failed_row=None):
        def corrupt():
            data = b"".join(parts[1][1])
            # the third row's device id (its first field) becomes NULL: a NOT NULL violation
            offset = len(bulk.PG_COPY_SIGNATURE)
            row_length = (len(data) - offset - len(bulk.PG_COPY_TRAILER)) // 4
            start = offset + 2 * row_length + 2
            yield data[:start] + bulk.PG_NULL + data[start + 8 :]

        return original(conn, [parts[0], (parts[1][0], corrupt())], failed_row)

    monkeypatch.setattr(bulk, "copy_fresh_postgresql", corrupt_third_reading)
    with pytest.raises(MdmError) as caught:
        ingest(meters, interval_rows("M1"))
    assert caught.value.error is ErrorCode.STORAGE
    assert caught.value.row == 2
    assert count(meters, "raw_values") == 0
