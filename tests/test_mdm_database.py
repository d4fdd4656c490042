"""Opening stores and joining transactions."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from mdm_samples import count, interval_rows
from sqlalchemy.exc import OperationalError

from mdm.database import DEFAULT_SQLITE_FILE, ENV_URL, check_schema_name, open_store, resolve_url
from mdm.devices import Device, create_device, get_device
from mdm.errors import MdmError
from mdm.ingest import ingest

pytest_plugins = ["mdm_conftest"]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u@h:5432/db", "postgresql+psycopg://u@h:5432/db"),
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("oracle://u:p@h:1521/?service_name=X", "oracle+oracledb://u:***@h:1521/?service_name=X"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite://", "sqlite://"),
        ("/var/lib/openhes/store.db", "sqlite:////var/lib/openhes/store.db"),
        ("data.db", "sqlite:///data.db"),
    ],
)
def test_urls_get_the_project_drivers(given, expected):
    assert resolve_url(given).render_as_string() == expected


def test_url_from_the_environment_or_the_default_file(monkeypatch):
    monkeypatch.setenv(ENV_URL, "postgresql://u@h/db")
    assert resolve_url(None).drivername == "postgresql+psycopg"
    monkeypatch.delenv(ENV_URL)
    assert resolve_url(None).database == DEFAULT_SQLITE_FILE


def test_schema_names_are_checked():
    assert check_schema_name("mdm_test_1") == "mdm_test_1"
    for bad in ("x; DROP TABLE y", "UPPER", ""):
        with pytest.raises(ValueError):
            check_schema_name(bad)


def test_a_file_store_survives_reopening(tmp_path):
    path = str(tmp_path / "store.sqlite3")
    store = open_store(path)
    create_device(store, Device("M1"), who="t")
    store.close()
    again = open_store(f"sqlite:///{path}")
    assert get_device(again, "M1").mrid == "M1"
    again.close()


def test_a_refused_batch_inside_the_callers_transaction_leaves_the_rest(meters):
    with meters.begin() as conn:
        create_device(conn, Device("M9"), who="t")
        with pytest.raises(MdmError):
            ingest(conn, interval_rows("M9") + interval_rows("GHOST"))
        ingest(conn, interval_rows("M9"))
    assert get_device(meters, "M9").mrid == "M9"
    assert count(meters, "readings") == 4


def test_the_callers_rollback_takes_the_batch_with_it(meters):
    with pytest.raises(RuntimeError), meters.begin() as conn:
        ingest(conn, interval_rows("M1"))
        raise RuntimeError("caller changes its mind")
    assert count(meters, "readings") == 0


def _hold_write_lock(store, seconds: float, holding: threading.Event) -> None:
    with store.begin() as conn:
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        holding.set()
        time.sleep(seconds)


@contextmanager
def _write_lock_held(store, seconds: float) -> Iterator[None]:
    """The block runs while another connection (a thread) holds the write lock for
    ``seconds`` from when the block starts (the holder is joined afterwards)."""
    holding = threading.Event()
    holder = threading.Thread(target=_hold_write_lock, args=(store, seconds, holding))
    holder.start()
    try:
        holding.wait(5)
        yield
    finally:
        holder.join()


def _file_store_with_table(tmp_path, busy_timeout: float):
    store = open_store(
        str(tmp_path / "locks.sqlite3"), migrate=False, connect_args={"timeout": busy_timeout}
    )
    with store.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    return store


def test_a_sqlite_writer_waits_for_another_connections_write_lock(tmp_path):
    store = _file_store_with_table(tmp_path, busy_timeout=5.0)
    with _write_lock_held(store, 0.2):
        started = time.monotonic()
        with store.begin() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (2)")
        waited = time.monotonic() - started
    assert 0.1 < waited < 4.0  # it waited for the holder, not for its own busy timeout
    with store.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 2
        # The connection's busy timeout is back to its configured value after the wait.
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
    store.close()


def test_a_sqlite_writer_gives_up_after_the_busy_timeout(tmp_path):
    store = _file_store_with_table(tmp_path, busy_timeout=0.2)
    with _write_lock_held(store, 1.5):
        started = time.monotonic()
        with pytest.raises(OperationalError, match="locked"), store.begin():
            pass
        assert time.monotonic() - started < 1.4
    store.close()
