"""Fixtures for the meter data store tests, one suite for every database.

Test modules load them with ``pytest_plugins = ["mdm_conftest"]`` (sample data and helpers
are in ``mdm_samples``). ``store`` is an empty, migrated store: SQLite in memory, and
PostgreSQL (marked ``services``; a fresh schema per test, dropped afterwards, so parallel runs
do not collide).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from mdm.database import Store, open_store, resolve_url
from mdm.devices import Device, create_devices


def postgres_store(url: str) -> Iterator[Store]:
    schema = f"mdm_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(resolve_url(url))
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    store = open_store(url, schema=schema)
    try:
        yield store
    finally:
        store.close()
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def open_test_store(kind: str, request: pytest.FixtureRequest) -> Iterator[Store]:
    """One empty migrated store: SQLite in memory for ``kind`` "sqlite", otherwise a fresh
    PostgreSQL schema (at ``postgres_url``)."""
    if kind == "sqlite":
        db = open_store("sqlite://")
        try:
            yield db
        finally:
            db.close()
    else:
        yield from postgres_store(request.getfixturevalue("postgres_url"))


# Params for a test module's own module-scoped store fixture, filled once per database.
DATABASES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.services)]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    yield from open_test_store(request.param, request)


@pytest.fixture
def meters(store: Store) -> Store:
    """The store with devices M1 (UTC), M2 (UTC) and AMS (Europe/Amsterdam)."""
    create_devices(
        store,
        [Device("M1"), Device("M2"), Device("AMS", time_zone="Europe/Amsterdam")],
        who="test",
    )
    return store
