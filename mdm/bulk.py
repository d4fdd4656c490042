"""The bulk write path: stage a batch, then version it into the store with set-based SQL.

A batch is first loaded into the staging table ``mdm_stage_readings`` (one row per value:
the normalised reading and, for meter values, the raw value it came from), then:

1. raw values not stored yet are appended to ``raw_values``;
2. values for intervals without a reading are inserted into ``readings`` (version 1);
3. only if some staged intervals already had a reading: the current rows the staged values
   change are copied to ``reading_history``, then updated to the new version.

Per dialect:

- PostgreSQL: ``COPY`` (psycopg 3, binary) into a TEMPORARY staging table; steps 1 and 2 as
  ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` (no join, safe with concurrent writers),
  step 3 as ``UPDATE ... FROM``. Its joins with the big tables run as index nested loops
  whatever the statistics say (see ``_PLANNER``), so a batch costs the same on a store of
  any size.
- SQLite: ``executemany`` into a TEMPORARY staging table (13 bound values and one append per
  row; inserting into the two keyed tables straight from Python measured slower), steps 1
  and 2 as ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``, step 3 as ``UPDATE ... FROM``.
- Oracle: array-bound ``executemany`` (``setinputsizes``) into a global temporary staging
  table created by the migration; the portable statements (``INSERT ... SELECT DISTINCT ...
  WHERE NOT EXISTS``, correlated ``UPDATE``). Compiled and checked here, never run live.

Versioning rules (``_changed``), for a staged value and the current row of its interval:

- meter value: a new version when it differs (value, qualities or status) from the latest
  value the meter sent for the interval. If an estimate or an edit is current, the meter's
  latest value is in the history; re-sending that same value changes nothing.
- estimate: replaces a meter value or an older different estimate, never an edit.
- edit: a new version whenever it differs from the current row or the current row is not
  an edit.
"""

from __future__ import annotations

import queue
import struct
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    Connection,
    Executable,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    literal,
    not_,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.schema import CreateTable
from sqlalchemy.sql import ColumnCollection
from sqlalchemy.sql.elements import BindParameter

from mdm.schema import (
    QUALITIES_LENGTH,
    SOURCE_EDITED,
    SOURCE_ESTIMATED,
    SOURCE_ID_LENGTH,
    SOURCE_METER,
    TASK_LENGTH,
    UNIT_LENGTH,
    raw_values,
    reading_history,
    readings,
)
from mdm.sqltypes import ExactDecimal, UtcDateTime, decimal_text, key_text

STAGE_NAME = "mdm_stage_readings"
#: Execution option set on statements that only one dialect runs (the Oracle compilation
#: test skips them).
DIALECT_SPECIFIC = "openhes_dialect_specific"
#: Oracle stores '' as NULL; empty unit and task are written as one space there.
ORACLE_EMPTY = " "

_STAGE_COLUMNS = (
    ("device_id", Integer, False),
    ("reading_type_id", Integer, True),  # NULL: a raw value whose reading is staged already
    ("ts", UtcDateTime, False),
    ("value", ExactDecimal, True),
    ("qualities", String(QUALITIES_LENGTH), True),
    ("status", BigInteger, False),
    ("source_id", key_text(SOURCE_ID_LENGTH), True),  # NULL: no raw value (estimates, edits)
    ("raw_value", BigInteger, True),
    ("scaler", SmallInteger, True),
    ("unit", key_text(UNIT_LENGTH), True),
    ("source_task", key_text(TASK_LENGTH), True),
    ("meter_time", String(40), True),
    ("meter_dst", SmallInteger, True),
)
STAGE_FIELDS = tuple(name for name, _, _ in _STAGE_COLUMNS)


def stage_table(metadata: MetaData, **kwargs: Any) -> Table:
    return Table(
        STAGE_NAME,
        metadata,
        *(Column(name, type_, nullable=nullable) for name, type_, nullable in _STAGE_COLUMNS),
        **kwargs,
    )


#: The staging table as the DML statements see it (the same on every dialect).
stage = stage_table(MetaData())
_temporary_stage = {
    "postgresql": stage_table(
        MetaData(), prefixes=["TEMPORARY"], postgresql_on_commit="DELETE ROWS"
    ),
    "sqlite": stage_table(MetaData(), prefixes=["TEMPORARY"]),
}
#: What the Oracle migration creates (compared with it in the tests).
oracle_stage = stage_table(
    MetaData(), prefixes=["GLOBAL TEMPORARY"], oracle_on_commit="DELETE ROWS"
)
Index(
    "ix_mdm_stage_readings_key",
    oracle_stage.c.device_id,
    oracle_stage.c.reading_type_id,
    oracle_stage.c.ts,
)


@dataclass(frozen=True, slots=True)
class Counts:
    raw_stored: int = 0
    new: int = 0
    versioned: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.raw_stored + other.raw_stored,
            self.new + other.new,
            self.versioned + other.versioned,
        )


@dataclass(frozen=True, slots=True)
class Stamp:
    """Who writes, when and why: recorded_at of new versions, superseded_* of old ones."""

    at: datetime
    who: str
    reason: str
    note: str | None = None


# --- the versioning predicate -------------------------------------------------------------


def _same(a: Sequence[ColumnElement[Any]], b: Sequence[ColumnElement[Any]]) -> ColumnElement[bool]:
    value_a, qualities_a, status_a = a
    value_b, qualities_b, status_b = b
    return and_(
        value_a.is_not_distinct_from(value_b),
        qualities_a.is_not_distinct_from(qualities_b),
        status_a == status_b,
    )


def _changed(
    cur: ColumnCollection[str, Any], new: Sequence[ColumnElement[Any]], source: str
) -> ColumnElement[bool]:
    """True where the staged ``new`` (value, qualities, status) makes a new version of
    ``cur`` (the readings row of its interval)."""
    current = (cur.value, cur.qualities, cur.status)
    if source == SOURCE_METER:
        h = reading_history.alias("h")
        h2 = reading_history.alias("h2")
        same_key = and_(
            h.c.device_id == cur.device_id,
            h.c.reading_type_id == cur.reading_type_id,
            h.c.ts == cur.ts,
        )
        latest_meter_version = (
            select(func.max(h2.c.version))
            .where(
                h2.c.device_id == cur.device_id,
                h2.c.reading_type_id == cur.reading_type_id,
                h2.c.ts == cur.ts,
                h2.c.source == SOURCE_METER,
            )
            .correlate_except(h2)
            .scalar_subquery()
        )
        meter_sent_it = (
            exists()
            .where(
                same_key,
                h.c.source == SOURCE_METER,
                h.c.version == latest_meter_version,
                _same((h.c.value, h.c.qualities, h.c.status), new),
            )
            .correlate_except(h)
        )
        return or_(
            and_(cur.source == SOURCE_METER, not_(_same(current, new))),
            and_(cur.source != SOURCE_METER, not_(meter_sent_it)),
        )
    if source == SOURCE_ESTIMATED:
        return and_(
            cur.source != SOURCE_EDITED,
            or_(cur.source != SOURCE_ESTIMATED, not_(_same(current, new))),
        )
    if source == SOURCE_EDITED:
        return or_(cur.source != SOURCE_EDITED, not_(_same(current, new)))
    raise ValueError(f"unknown reading source {source!r}")


def _stage_key(r: Table | Any) -> ColumnElement[bool]:
    return and_(
        r.c.device_id == stage.c.device_id,
        r.c.reading_type_id == stage.c.reading_type_id,
        r.c.ts == stage.c.ts,
    )


_NEW = (stage.c.value, stage.c.qualities, stage.c.status)
_HAS_READING = stage.c.reading_type_id.is_not(None)
_HAS_RAW = stage.c.source_id.is_not(None)
_RAW_COLUMNS = (
    "device_id",
    "source_id",
    "ts",
    "value",
    "scaler",
    "unit",
    "status",
    "source_task",
    "meter_time",
    "meter_dst",
    "received_at",
)
_RAW_KEY = ("device_id", "ts", "source_id", "value", "scaler", "unit", "status", "source_task")
_HISTORY_COLUMNS = (
    "device_id",
    "reading_type_id",
    "ts",
    "version",
    "value",
    "qualities",
    "status",
    "source",
    "recorded_at",
    "superseded_at",
    "superseded_by",
    "reason",
    "note",
)
_READING_COLUMNS = (
    "device_id",
    "reading_type_id",
    "ts",
    "value",
    "qualities",
    "status",
    "version",
    "source",
    "recorded_at",
)


def _at(value: datetime | BindParameter[Any]) -> Any:
    """A timestamp in a statement: bound at execution (prebuilt statements) or a literal."""
    return value if isinstance(value, BindParameter) else literal(value, UtcDateTime)


def _raw_select(received_at: datetime | BindParameter[Any]) -> Any:
    return select(
        stage.c.device_id,
        stage.c.source_id,
        stage.c.ts,
        stage.c.raw_value,
        stage.c.scaler,
        stage.c.unit,
        stage.c.status,
        stage.c.source_task,
        stage.c.meter_time,
        stage.c.meter_dst,
        _at(received_at),
    ).where(_HAS_RAW)


# --- the statements -----------------------------------------------------------------------


def _specific(statement: Any, dialect: str) -> Any:
    return statement.execution_options(**{DIALECT_SPECIFIC: dialect})


def _raw_not_stored() -> ColumnElement[bool]:
    r = raw_values.alias("r")
    return not_(
        exists().where(
            r.c.device_id == stage.c.device_id,
            r.c.source_id == stage.c.source_id,
            r.c.ts == stage.c.ts,
            r.c.value == stage.c.raw_value,
            r.c.scaler == stage.c.scaler,
            r.c.unit == stage.c.unit,
            r.c.status == stage.c.status,
            r.c.source_task == stage.c.source_task,
        )
    )


def insert_raw_portable(received_at: datetime) -> Executable:
    """Raw values not stored yet (SELECT DISTINCT: a batch may repeat a raw row)."""
    query = _raw_select(received_at).where(_raw_not_stored()).distinct()
    return insert(raw_values).from_select(_RAW_COLUMNS, query)


def insert_raw_postgresql(received_at: datetime | BindParameter[Any]) -> Executable:
    statement = (
        postgresql.insert(raw_values)
        .from_select(_RAW_COLUMNS, _raw_select(received_at))
        .on_conflict_do_nothing(index_elements=list(_RAW_KEY))
    )
    return _specific(statement, "postgresql")


def _new_readings(source: str, stamp: Stamp, at: BindParameter[Any] | None = None) -> Any:
    return select(
        stage.c.device_id,
        stage.c.reading_type_id,
        stage.c.ts,
        stage.c.value,
        stage.c.qualities,
        stage.c.status,
        literal(1),
        literal(source),
        _at(at if at is not None else stamp.at),
    ).where(_HAS_READING)


def _no_reading_yet() -> ColumnElement[bool]:
    r = readings.alias("cur")
    return not_(exists().where(_stage_key(r)))


def insert_new_portable(source: str, stamp: Stamp) -> Executable:
    """Values for intervals the store has no reading for yet."""
    query = _new_readings(source, stamp).where(_no_reading_yet())
    return insert(readings).from_select(_READING_COLUMNS, query)


def insert_new_postgresql(
    source: str, stamp: Stamp, at: BindParameter[Any] | None = None
) -> Executable:
    statement = (
        postgresql.insert(readings)
        .from_select(_READING_COLUMNS, _new_readings(source, stamp, at))
        .on_conflict_do_nothing(index_elements=["device_id", "reading_type_id", "ts"])
    )
    return _specific(statement, "postgresql")


def insert_raw_sqlite(received_at: datetime | BindParameter[Any]) -> Executable:
    statement = (
        sqlite.insert(raw_values)
        .from_select(_RAW_COLUMNS, _raw_select(received_at))
        .on_conflict_do_nothing(index_elements=list(_RAW_KEY))
    )
    return _specific(statement, "sqlite")


def insert_new_sqlite(
    source: str, stamp: Stamp, at: BindParameter[Any] | None = None
) -> Executable:
    statement = (
        sqlite.insert(readings)
        .from_select(_READING_COLUMNS, _new_readings(source, stamp, at))
        .on_conflict_do_nothing(index_elements=["device_id", "reading_type_id", "ts"])
    )
    return _specific(statement, "sqlite")


def insert_history(source: str, stamp: Stamp) -> Executable:
    """The current rows that the staged values supersede, into the history."""
    r = readings
    query = (
        select(
            r.c.device_id,
            r.c.reading_type_id,
            r.c.ts,
            r.c.version,
            r.c.value,
            r.c.qualities,
            r.c.status,
            r.c.source,
            r.c.recorded_at,
            literal(stamp.at, UtcDateTime),
            literal(stamp.who),
            literal(stamp.reason),
            literal(stamp.note, String()),
        )
        .select_from(stage.join(r, _stage_key(r)))
        .where(_HAS_READING, _changed(r.c, _NEW, source))
    )
    return insert(reading_history).from_select(_HISTORY_COLUMNS, query)


def update_changed_portable(source: str, stamp: Stamp) -> Executable:
    """New versions of existing intervals, as a correlated UPDATE (Oracle: the staging table
    has an index on the key there)."""
    r = readings
    inner = readings.alias("cur")
    changed_keys = (
        select(stage.c.device_id, stage.c.reading_type_id, stage.c.ts)
        .select_from(stage.join(inner, _stage_key(inner)))
        .where(_HAS_READING, _changed(inner.c, _NEW, source))
    )

    def staged(column: Column[Any]) -> Any:
        return select(column).where(_stage_key(r), _HAS_READING).scalar_subquery()

    return (
        update(r)
        .where(tuple_(r.c.device_id, r.c.reading_type_id, r.c.ts).in_(changed_keys))
        .values(
            value=staged(stage.c.value),
            qualities=staged(stage.c.qualities),
            status=staged(stage.c.status),
            version=r.c.version + 1,
            source=source,
            recorded_at=stamp.at,
        )
    )


def update_changed_from(source: str, stamp: Stamp, dialect: str) -> Executable:
    """New versions of existing intervals, as UPDATE ... FROM (PostgreSQL, SQLite)."""
    r = readings
    statement = (
        update(r)
        .where(_stage_key(r), _HAS_READING, _changed(r.c, _NEW, source))
        .values(
            value=stage.c.value,
            qualities=stage.c.qualities,
            status=stage.c.status,
            version=r.c.version + 1,
            source=source,
            recorded_at=stamp.at,
        )
    )
    return _specific(statement, dialect)


def clear_stage() -> Executable:
    return delete(stage)


# The two statements every batch runs, built once per dialect (and source) with the time
# bound at execution: building and keying them cost more than running them on a small batch.
_STAMP_AT = "mdm_stamp_at"
_PREBUILT: dict[tuple[str, str, str], Executable] = {}
_CLEAR_STAGE = clear_stage()


def _prebuilt(kind: str, dialect: str, source: str = "") -> Executable:
    key = (kind, dialect, source)
    statement = _PREBUILT.get(key)
    if statement is None:
        at = bindparam(_STAMP_AT, type_=UtcDateTime)
        no_stamp = Stamp(datetime.min.replace(tzinfo=UTC), "", "")
        builders = {
            ("raw", "sqlite"): lambda: insert_raw_sqlite(at),
            ("raw", "postgresql"): lambda: insert_raw_postgresql(at),
            ("new", "sqlite"): lambda: insert_new_sqlite(source, no_stamp, at),
            ("new", "postgresql"): lambda: insert_new_postgresql(source, no_stamp, at),
        }
        statement = _PREBUILT[key] = builders[(kind, dialect)]()
    return statement


def portable_statements(source: str, stamp: Stamp) -> list[Executable]:
    """Every statement the portable (Oracle) path runs for one staged pass."""
    return [
        clear_stage(),
        insert_raw_portable(stamp.at),
        insert_new_portable(source, stamp),
        insert_history(source, stamp),
        update_changed_portable(source, stamp),
    ]


def oracle_stage_insert_sql() -> str:
    """The array-bound INSERT of the Oracle path, compiled by SQLAlchemy's Oracle dialect."""
    from sqlalchemy.dialects import oracle

    statement = insert(stage).values({name: None for name in STAGE_FIELDS})
    return str(statement.compile(dialect=oracle.dialect(), column_keys=list(STAGE_FIELDS)))


# --- writing a batch ----------------------------------------------------------------------


class StageFormat:
    """How staged timestamps and values are passed to the driver (bypassing SQLAlchemy's
    per-value processing, which would cost more than the rest of ingest together)."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self.native = dialect == "postgresql"  # psycopg takes aware datetimes and Decimals
        self.decimal_as_text = dialect == "sqlite"
        self.empty_text = ORACLE_EMPTY if dialect == "oracle" else ""
        self._ts: dict[datetime, Any] = {}

    def ts(self, ts: datetime) -> Any:
        if self.native:
            return ts
        out = self._ts.get(ts)
        if out is None:
            naive = ts.replace(tzinfo=None)
            out = naive.isoformat(" ", "microseconds") if self.dialect == "sqlite" else naive
            self._ts[ts] = out
        return out

    def value(self, value: Decimal | None) -> Any:
        if value is None or not self.decimal_as_text:
            return value
        return decimal_text(value)


#: Run SQLite through the portable (Oracle) statements: the tests do, so that the Oracle
#: path's logic runs live somewhere.
PORTABLE_ON_SQLITE = False


def write(
    conn: Connection,
    rows: Sequence[tuple[Any, ...]],
    source: str,
    stamp: Stamp,
    *,
    failed_row: list[int] | None = None,
) -> Counts:
    """Stage ``rows`` (tuples in :data:`STAGE_FIELDS` order, formatted by StageFormat) and
    version them into the store. ``failed_row`` receives the staged row the database named
    when it refused one (COPY reports its line)."""
    if not rows:
        return Counts()
    readings_staged = sum(1 for row in rows if row[1] is not None)
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return _write_postgresql(conn, rows, readings_staged, source, stamp, failed_row)
    if dialect == "sqlite":
        if PORTABLE_ON_SQLITE:
            _stage_sqlite(conn, rows)
            return version_portable(conn, source, stamp, readings_staged)
        _stage_sqlite(conn, rows)
        at = {_STAMP_AT: stamp.at}
        raw = _count(conn, _prebuilt("raw", dialect), at)
        new = _count(conn, _prebuilt("new", dialect, source), at)
        versioned = 0
        if new < readings_staged:
            versioned = _supersede(conn, source, stamp, update_changed_from(source, stamp, dialect))
        return Counts(raw, new, versioned)
    if dialect == "oracle":
        conn.execute(clear_stage())
        _stage_oracle(conn, rows)
        return version_portable(conn, source, stamp, readings_staged)
    raise NotImplementedError(f"no bulk path for {dialect}")


def version_portable(conn: Connection, source: str, stamp: Stamp, readings_staged: int) -> Counts:
    """Steps 1-3 with the portable statements, on an already filled staging table."""
    raw = _count(conn, insert_raw_portable(stamp.at))
    new = _count(conn, insert_new_portable(source, stamp))
    versioned = 0
    if new < readings_staged:
        versioned = _supersede(conn, source, stamp, update_changed_portable(source, stamp))
    return Counts(raw, new, versioned)


def _supersede(conn: Connection, source: str, stamp: Stamp, update_statement: Executable) -> int:
    versioned = _count(conn, insert_history(source, stamp))
    updated = _count(conn, update_statement)
    if updated != versioned:
        raise RuntimeError(f"versioning mismatch: {versioned} superseded, {updated} updated")
    return versioned


def _count(
    conn: Connection, statement: Executable, parameters: dict[str, Any] | None = None
) -> int:
    return conn.execute(
        statement, parameters, execution_options={"preserve_rowcount": True}
    ).rowcount


def _stage_sqlite(conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    _ensure_temporary_stage(conn)
    conn.execute(_CLEAR_STAGE)
    _dbapi_cursor(conn).executemany(_SQLITE_STAGE_INSERT, rows)


def _write_postgresql(
    conn: Connection,
    rows: Sequence[tuple[Any, ...]],
    readings_staged: int,
    source: str,
    stamp: Stamp,
    failed_row: list[int] | None,
) -> Counts:
    _ensure_temporary_stage(conn)
    cursor = _dbapi_cursor(conn)
    cursor.execute(f"TRUNCATE {STAGE_NAME}")
    _copy(cursor, rows, failed_row)
    saved = cursor.execute(f"SELECT {', '.join(_PLAN_SETTINGS_READ)}").fetchone()
    # SET LOCAL ends with the transaction, or with the SAVEPOINT rolled back on an error.
    cursor.execute(_PLAN_SETTINGS_SET)
    at = {_STAMP_AT: stamp.at}
    raw = _count(conn, _prebuilt("raw", "postgresql"), at)
    new = _count(conn, _prebuilt("new", "postgresql", source), at)
    versioned = 0
    if new < readings_staged:
        versioned = _supersede(
            conn, source, stamp, update_changed_from(source, stamp, "postgresql")
        )
    cursor.execute(_PLAN_SETTINGS_RESTORE, saved)
    return Counts(raw, new, versioned)


# Index nested loops for every join with the big tables, whatever the statistics say (a
# store analysed while empty would otherwise get a sequential scan per staged row); no JIT
# (the disabled plan types' cost estimates would trigger its compilation on every batch).
_PLANNER = {
    "enable_hashjoin": "off",
    "enable_mergejoin": "off",
    "enable_seqscan": "off",
    "jit": "off",
}
_PLAN_SETTINGS_READ = [f"current_setting('{name}')" for name in _PLANNER]
_PLAN_SETTINGS_SET = "; ".join(f"SET LOCAL {name} = {value}" for name, value in _PLANNER.items())
_PLAN_SETTINGS_RESTORE = "SELECT " + ", ".join(
    f"set_config('{name}', %s, true)" for name in _PLANNER
)


_COPY_TYPES = (
    "int4",
    "int4",
    "timestamptz",
    "numeric",
    "text",
    "int8",
    "text",
    "int8",
    "int2",
    "text",
    "text",
    "text",
    "int2",
)


def _copy(cursor: Any, rows: Iterable[tuple[Any, ...]], failed_row: list[int] | None) -> None:
    import psycopg

    statement = f"COPY {STAGE_NAME} ({', '.join(STAGE_FIELDS)}) FROM STDIN (FORMAT BINARY)"
    try:
        with cursor.copy(statement) as copy:
            copy.set_types(_COPY_TYPES)
            write_row = copy.write_row
            for row in rows:
                write_row(row)
    except psycopg.Error as exc:
        line = _copy_line(exc)
        if line is not None and failed_row is not None:
            failed_row.append(line - 1)
        raise


def _copy_line(exc: Exception) -> int | None:
    context = getattr(getattr(exc, "diag", None), "context", None) or ""
    marker = ", line "
    if marker in context:
        digits = context.split(marker, 1)[1].split(",", 1)[0].split(":", 1)[0].strip()
        if digits.isdigit():
            return int(digits)
    return None


_CREATE_STAGE_SQL: dict[str, str] = {}


def _ensure_temporary_stage(conn: Connection) -> None:
    # One round trip per batch; the table lives as long as the connection (and vanishes
    # with a rolled-back transaction that created it, hence no caching of "created"). The
    # DDL is compiled once per dialect (SQLAlchemy does not cache DDL compilation).
    dialect = conn.dialect.name
    sql = _CREATE_STAGE_SQL.get(dialect)
    if sql is None:
        statement = CreateTable(_temporary_stage[dialect], if_not_exists=True)
        sql = _CREATE_STAGE_SQL[dialect] = str(statement.compile(dialect=conn.dialect))
    conn.exec_driver_sql(sql)


def _dbapi_cursor(conn: Connection) -> Any:
    return conn.connection.driver_connection.cursor()


_SQLITE_STAGE_INSERT = (
    f"INSERT INTO {STAGE_NAME} ({', '.join(STAGE_FIELDS)}) "
    f"VALUES ({', '.join('?' for _ in STAGE_FIELDS)})"
)


ORACLE_ARRAY_SIZE = 50_000


def oracle_input_sizes() -> list[Any]:
    import oracledb

    number = oracledb.DB_TYPE_NUMBER
    return [
        number,
        number,
        oracledb.DB_TYPE_TIMESTAMP,
        number,
        QUALITIES_LENGTH,
        number,
        SOURCE_ID_LENGTH,
        number,
        number,
        UNIT_LENGTH,
        TASK_LENGTH,
        40,
        number,
    ]


def _stage_oracle(conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    cursor = _dbapi_cursor(conn)
    cursor.setinputsizes(*oracle_input_sizes())
    sql = oracle_stage_insert_sql()
    for start in range(0, len(rows), ORACLE_ARRAY_SIZE):
        cursor.executemany(sql, list(rows[start : start + ORACLE_ARRAY_SIZE]))


# --- PostgreSQL: fresh data straight into the tables --------------------------------------
#
# A batch whose intervals the store has no reading for and whose raw values have no stored
# raw value in their devices' time ranges (the usual case: the next load-profile block) is
# COPYed straight into ``readings`` and ``raw_values`` (no staging table, no INSERT ...
# SELECT: every row is written once). One indexed range probe per device and ReadingType
# decides (``fresh_postgresql``). Should a concurrent writer have stored one of the keys
# since the probe, the unique violation aborts the transaction (``FreshConflict``) and
# ingest runs the batch again on the staged path, which skips or versions it. (A SAVEPOINT
# around the COPYs instead cost 10-15 % of their time, measured.)
# The rows are encoded here in PostgreSQL's binary COPY format (psycopg's per-row
# ``write_row`` costs more than the rest of the fast path together).

#: Smaller batches take the staged path: the probe and the SAVEPOINT cost round trips that
#: a few rows do not win back. (The tests set it to 1 to run every case on the fresh path.)
FRESH_MIN_ROWS = 1000

_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_NUMERIC_HEAD = struct.Struct(">ihhhh")
_INT8 = struct.Struct(">iq")  # length 8 + int8
_INT2 = struct.Struct(">ih")  # length 2 + int2
_INT4 = struct.Struct(">ii")  # length 4 + int4
PG_NULL = b"\xff\xff\xff\xff"
PG_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" * 2
PG_COPY_TRAILER = b"\xff\xff"

FRESH_READING_COLUMNS = (
    "device_id",
    "reading_type_id",
    "ts",
    "value",
    "qualities",
    "status",
    "version",
    "source",
    "recorded_at",
)
COPY_READINGS = f"COPY readings ({', '.join(FRESH_READING_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
COPY_RAW_VALUES = f"COPY raw_values ({', '.join(_RAW_COLUMNS)}) FROM STDIN (FORMAT BINARY)"

_FRESH_PROBE = """
SELECT
  EXISTS (
    SELECT 1 FROM unnest(%s::int4[], %s::int4[], %s::timestamptz[], %s::timestamptz[])
      AS g(device_id, reading_type_id, lo, hi)
    WHERE EXISTS (
      SELECT 1 FROM readings r
      WHERE r.device_id = g.device_id AND r.reading_type_id = g.reading_type_id
        AND r.ts BETWEEN g.lo AND g.hi)),
  EXISTS (
    SELECT 1 FROM unnest(%s::int4[], %s::timestamptz[], %s::timestamptz[]) AS g(device_id, lo, hi)
    WHERE EXISTS (
      SELECT 1 FROM raw_values r
      WHERE r.device_id = g.device_id AND r.ts BETWEEN g.lo AND g.hi))
"""


def pg_timestamp(ts: datetime) -> bytes:
    """A timestamptz field (with its length) of binary COPY."""
    return _INT8.pack(8, (ts - _PG_EPOCH) // _ONE_US)


def pg_int8(value: int) -> bytes:
    return _INT8.pack(8, value)


def pg_int4(value: int) -> bytes:
    return _INT4.pack(4, value)


def pg_int2(value: int) -> bytes:
    return _INT2.pack(2, value)


def pg_text(value: str) -> bytes:
    data = value.encode()
    return len(data).to_bytes(4, "big") + data


def pg_numeric(raw: int, exponent: int) -> bytes:
    """The numeric field (with its length) of binary COPY for ``raw x 10**exponent``, exact,
    from integers (the same bytes psycopg sends for ``Decimal(raw).scaleb(exponent)``)."""
    sign = 0
    if raw < 0:
        sign, raw = 0x4000, -raw
    if exponent >= 0:
        n, dscale, frac = raw * 10**exponent, 0, 0
    else:
        dscale = -exponent
        frac = (dscale + 3) // 4  # base-10000 digits after the point
        n = raw * 10 ** (frac * 4 - dscale)
    digits: list[int] = []
    while n:
        n, digit = divmod(n, 10000)
        digits.append(digit)
    if not digits:
        return _NUMERIC_HEAD.pack(8, 0, 0, 0, dscale)
    weight = len(digits) - 1 - frac
    first = 0
    while digits[first] == 0:  # trailing zero digits (the list is least significant first)
        first += 1
    digits = digits[first:]
    digits.reverse()
    count = len(digits)
    return _NUMERIC_HEAD.pack(8 + 2 * count, count, weight, sign, dscale) + struct.pack(
        f">{count}H", *digits
    )


class PgNumericCache:
    """``pg_numeric`` per (raw, exponent), remembered (meter values repeat a lot)."""

    LIMIT = 1 << 18

    def __init__(self) -> None:
        self._by_exponent: dict[int, dict[int, bytes]] = {}

    def table(self, exponent: int) -> dict[int, bytes]:
        table = self._by_exponent.get(exponent)
        if table is None or len(table) > self.LIMIT:
            table = self._by_exponent[exponent] = {}
        return table

    def get(self, raw: int, exponent: int) -> bytes:
        table = self.table(exponent)
        out = table.get(raw)
        if out is None:
            out = table[raw] = pg_numeric(raw, exponent)
        return out


def fresh_postgresql(
    conn: Connection,
    groups: Sequence[tuple[int, int, datetime, datetime]],
    devices: Sequence[tuple[int, datetime, datetime]],
) -> bool:
    """True when no reading exists for any (device, ReadingType) in its [first, last] time
    range, and no raw value for any device in its range: the batch can be COPYed straight in."""
    cursor = _dbapi_cursor(conn)
    saved = cursor.execute(f"SELECT {', '.join(_PLAN_SETTINGS_READ)}").fetchone()
    cursor.execute(_PLAN_SETTINGS_SET)
    g_dev, g_rt, g_lo, g_hi = (list(column) for column in zip(*groups, strict=True))
    d_dev, d_lo, d_hi = (list(column) for column in zip(*devices, strict=True))
    readings_exist, raw_exist = cursor.execute(
        _FRESH_PROBE, (g_dev, g_rt, g_lo, g_hi, d_dev, d_lo, d_hi)
    ).fetchone()
    cursor.execute(_PLAN_SETTINGS_RESTORE, saved)
    return not readings_exist and not raw_exist


_END = object()


class FreshConflict(Exception):
    """A key of a batch COPYed as fresh data was stored by someone else meanwhile."""


def copy_fresh_postgresql(
    conn: Connection,
    parts: Sequence[tuple[str, Iterable[bytes]]],
    failed_row: list[int] | None = None,
) -> None:
    """Run each ``(COPY statement, chunks of binary COPY data)`` of ``parts`` in turn (the
    data with ``PG_COPY_SIGNATURE`` and ``PG_COPY_TRAILER``). Raises ``FreshConflict`` when
    a key exists after all (a concurrent writer stored it since the probe): the transaction
    is then unusable; the caller rolls it back and runs the batch again, staged.

    Two cores at work: a loader thread holds the connection and feeds the database while
    this thread produces the chunks (encoding, and the validation done in the iterators),
    so the next part is encoded while the database still loads the previous one (psycopg
    and libpq release the GIL while they wait for the socket)."""
    import psycopg

    cursor = _dbapi_cursor(conn)
    chunks: queue.SimpleQueue[Any] = queue.SimpleQueue()
    refused: list[BaseException] = []

    def load() -> None:
        try:
            for statement, _ in parts:
                with cursor.copy(statement) as copy:
                    while (chunk := chunks.get()) is not _END:
                        if isinstance(chunk, BaseException):
                            raise chunk
                        copy.write(chunk)
        except BaseException as exc:
            refused.append(exc)

    loader = threading.Thread(target=load, name="mdm-copy", daemon=True)
    loader.start()
    try:
        for _, produce in parts:
            for chunk in produce:
                if refused:  # the database refused a row: no point encoding more
                    break
                chunks.put(chunk)
                # Let the loader take the GIL now: waiting for the interpreter's switch
                # interval (5 ms) for every piece it sends would starve the database.
                time.sleep(0)
            chunks.put(_END)
    except BaseException as exc:
        chunks.put(RuntimeError(f"batch abandoned: {exc}"))  # the COPY in progress fails
        loader.join()
        raise
    loader.join()
    if not refused:
        return
    error = refused[0]
    if isinstance(error, psycopg.errors.UniqueViolation):
        raise FreshConflict(str(error)) from error
    if isinstance(error, psycopg.Error):
        line = _copy_line(error)
        if line is not None and failed_row is not None:
            failed_row.append(line - 1)
    raise error
