"""Opening the store: SQLite (the embedded default), PostgreSQL (psycopg 3) or Oracle (oracledb).

``open_store()`` takes a URL, else ``$OPENHES_DATABASE_URL``, else the SQLite file
``openhes.sqlite3`` in the current directory. A bare file path means a SQLite file;
``sqlite://`` is one in-memory database shared by every connection (tests).
``postgresql://`` and ``oracle://`` URLs get their drivers (``+psycopg``, ``+oracledb``).

Every public function of mdm that writes takes ``db: Store | Connection``: with a Store it runs
in its own transaction; with a Connection it joins the caller's transaction inside a
SAVEPOINT, so a refused batch leaves the caller's other work alone.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import SingletonThreadPool, StaticPool

ENV_URL = "OPENHES_DATABASE_URL"
DEFAULT_SQLITE_FILE = "openhes.sqlite3"
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "oracle": "oracle+oracledb",
}
_WRITE = "openhes_write"
_BUSY_TIMEOUT_MS = "openhes_busy_timeout_ms"
_FIRST_DELAY = 0.0001  # seconds between tries for SQLite's write lock, doubling up to:
_LONGEST_DELAY = 0.001


def resolve_url(url: str | URL | None = None) -> URL:
    """The SQLAlchemy URL to use, with the project's driver for each database."""
    if url is None:
        url = os.environ.get(ENV_URL) or DEFAULT_SQLITE_FILE
    if isinstance(url, str):
        if "://" not in url:
            return URL.create("sqlite", database=url)
        url = make_url(url)
    driver = _DRIVERS.get(url.drivername)
    return url.set(drivername=driver) if driver else url


class Store:
    """An engine plus the little state worth keeping per process (reading type ids)."""

    def __init__(self, engine: Engine, *, schema: str | None = None) -> None:
        from mdm.readings import IdCache

        self.engine = engine
        self.schema = schema
        self.reading_type_ids: dict[str, int] = {}  # committed ids, for ingest
        self.ids = IdCache()  # for queries

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A write transaction: committed when the block ends, rolled back on an exception."""
        with self.engine.connect() as conn:
            conn = conn.execution_options(**{_WRITE: True})
            with conn.begin():
                yield conn

    def connect(self) -> Connection:
        return self.engine.connect()

    def close(self) -> None:
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"Store({self.engine.url.render_as_string(hide_password=True)!r})"


def create_store_engine(
    url: str | URL | None = None, *, schema: str | None = None, **kwargs: Any
) -> Engine:
    """An Engine configured for the store; ``schema`` (PostgreSQL) sets the search_path."""
    resolved = resolve_url(url)
    backend = resolved.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(resolved, **kwargs)
    if backend == "postgresql":
        options = ["-c timezone=UTC"]
        if schema is not None:
            options.append(f"-c search_path={check_schema_name(schema)}")
        connect_args = dict(kwargs.pop("connect_args", {}))
        connect_args["options"] = " ".join(options)
        return create_engine(resolved, connect_args=connect_args, **kwargs)
    if schema is not None:
        raise ValueError("a schema name is supported only for PostgreSQL")
    return create_engine(resolved, **kwargs)


def open_store(
    url: str | URL | None = None,
    *,
    schema: str | None = None,
    migrate: bool = True,
    **engine_kwargs: Any,
) -> Store:
    """Open (and, unless ``migrate=False``, create or upgrade) the store at ``url``."""
    store = Store(create_store_engine(url, schema=schema, **engine_kwargs), schema=schema)
    if migrate:
        from mdm.migrate import upgrade

        upgrade(store.engine)
    return store


def check_schema_name(name: str) -> str:
    if not _SCHEMA_NAME.fullmatch(name):
        raise ValueError(f"schema name {name!r}: lower-case letters, digits and _ only")
    return name


def threads_allowed(store: Store) -> bool:
    """Whether database work for ``store`` may run in worker threads: not when every thread
    shares one connection (SQLite in memory: a StaticPool or a SingletonThreadPool), whose
    transactions would interleave with the event loop's own database work."""
    return not isinstance(store.engine.pool, (StaticPool, SingletonThreadPool))


@contextmanager
def transaction(db: Store | Connection) -> Iterator[Connection]:
    """The connection to write with; all of the block's writes land or none do."""
    if isinstance(db, Store):
        with db.begin() as conn:
            yield conn
    elif db.in_transaction():
        with db.begin_nested():
            yield db
    else:
        with db.begin():
            yield db


@contextmanager
def reading(db: Store | Connection) -> Iterator[Connection]:
    """A connection to read with (the caller's, or a new one closed afterwards)."""
    if isinstance(db, Store):
        with db.connect() as conn:
            yield conn
    else:
        yield db


def _sqlite_engine(url: URL, **kwargs: Any) -> Engine:
    in_memory = url.database in (None, "", ":memory:")
    if in_memory:
        kwargs.setdefault("poolclass", StaticPool)
        connect_args = dict(kwargs.pop("connect_args", {}))
        connect_args.setdefault("check_same_thread", False)
        kwargs["connect_args"] = connect_args
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, record: Any) -> None:
        # pysqlite's own transaction handling defers BEGIN and skips it for DDL; SQLAlchemy
        # emits BEGIN itself (below), so every statement is inside the transaction.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if not in_memory:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA temp_store=MEMORY")
        cursor.execute("PRAGMA cache_size=-65536")
        record.info[_BUSY_TIMEOUT_MS] = cursor.execute("PRAGMA busy_timeout").fetchone()[0]
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A writer takes the write lock at once, so two writers queue (busy timeout) instead
        # of one failing when it upgrades a read lock.
        if not conn.get_execution_options().get(_WRITE, False):
            conn.exec_driver_sql("BEGIN")
        elif in_memory:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            _begin_immediate(conn)

    return engine


def _begin_immediate(conn: Connection) -> None:
    """``BEGIN IMMEDIATE``, waiting for another connection's write lock by polling every
    fraction of a millisecond. SQLite's own busy handler sleeps 1, 2, 5, 10, ... up to 100 ms
    between tries, so under steady writing from two processes a writer kept missing the lock
    and waited up to ~100 ms for a transaction of one millisecond (measured: control
    acknowledgements' p99 88 ms with two server processes). Past the connection's busy
    timeout, the last try raises SQLAlchemy's OperationalError ("database is locked")."""
    proxied = conn.connection
    dbapi_connection = proxied.dbapi_connection
    busy_timeout_ms = int(proxied.info[_BUSY_TIMEOUT_MS])
    deadline = time.monotonic() + busy_timeout_ms / 1000
    delay = _FIRST_DELAY
    dbapi_connection.execute("PRAGMA busy_timeout=0")
    try:
        while time.monotonic() < deadline:
            try:
                dbapi_connection.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as error:
                if error.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                    break  # not a lock: the statement below raises it, wrapped
            time.sleep(delay)
            delay = min(delay * 2, _LONGEST_DELAY)
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    finally:
        dbapi_connection.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
