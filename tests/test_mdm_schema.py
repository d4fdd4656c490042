"""The schema: the migrations create exactly ``mdm.schema.metadata`` (on every database), the
column types keep values exact, and the DDL compiles for Oracle."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, MetaData, Table, create_engine, insert, inspect, select, text
from sqlalchemy.dialects import oracle
from sqlalchemy.schema import CreateIndex, CreateTable

import headend.all_tables  # noqa: F401  (every table is part of the metadata)
from mdm import bulk
from mdm.database import open_store
from mdm.migrate import (
    VERSION_TABLE,
    current_revision,
    downgrade,
    include_object,
    sql_script,
    upgrade,
)
from mdm.schema import metadata
from mdm.sqltypes import ExactDecimal, UtcDateTime

pytest_plugins = ["mdm_conftest"]


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    from mdm.migrate import alembic_config

    return ScriptDirectory.from_config(alembic_config()).get_current_head()

HOT_TABLES = ("raw_values", "readings", "reading_history")


def test_the_migrated_database_is_exactly_the_metadata(store):
    with store.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                # SQLite has no identity columns to reflect; elsewhere defaults are compared too
                "compare_server_default": store.dialect != "sqlite",
                "version_table": VERSION_TABLE,
                "include_object": include_object,
            },
        )
        assert compare_metadata(context, metadata) == []
        assert current_revision(conn) == head_revision()
        tables = set(inspect(conn).get_table_names())
    assert tables == set(metadata.tables) | {VERSION_TABLE}


def test_sqlite_hot_tables_are_without_rowid():
    store = open_store("sqlite://")
    with store.connect() as conn:
        for table in HOT_TABLES:
            sql = conn.execute(
                text("SELECT sql FROM sqlite_master WHERE name = :t"), {"t": table}
            ).scalar_one()
            assert sql.rstrip().endswith("WITHOUT ROWID"), table
    store.close()


def test_downgrade_and_upgrade_again(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'm.sqlite3'}")
    upgrade(engine)
    downgrade(engine, "base")
    assert set(inspect(engine).get_table_names()) == {VERSION_TABLE}
    upgrade(engine)
    assert set(metadata.tables) <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_sqlite_pragmas_on_a_file(tmp_path):
    store = open_store(str(tmp_path / "store.sqlite3"))
    with store.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    store.close()


def test_exact_decimal_keeps_28_digits_on_every_database(store):
    probe = Table("probe_exact", MetaData(), Column("v", ExactDecimal), Column("t", UtcDateTime))
    values = [Decimal("1234567890123456789.123456789"), Decimal("-0.000000001"), Decimal(0)]
    with store.begin() as conn:
        probe.create(conn)
        conn.execute(
            insert(probe), [{"v": v, "t": datetime(2024, 1, 1, tzinfo=UTC)} for v in values]
        )
        back = conn.execute(select(probe.c.v, probe.c.t)).all()
        probe.drop(conn)
    assert sorted(v for v, _ in back) == sorted(values)
    assert {t for _, t in back} == {datetime(2024, 1, 1, tzinfo=UTC)}
    assert all(t.tzinfo is UTC for _, t in back)


def test_column_types_refuse_what_they_cannot_keep():
    dialect = oracle.dialect()
    with pytest.raises(ValueError, match="NUMERIC"):
        ExactDecimal().process_bind_param(Decimal("0.0000000001"), dialect)
    with pytest.raises(TypeError):
        ExactDecimal().process_bind_param(1.5, dialect)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="naive"):
        UtcDateTime().process_bind_param(datetime(2024, 1, 1), dialect)
    plus2 = datetime(2024, 1, 1, 2, tzinfo=timezone(timedelta(hours=2)))
    assert UtcDateTime().process_bind_param(plus2, dialect) == datetime(2024, 1, 1)


# --- Oracle (compiled, never run) ----------------------------------------------------------


def squash(sql: str) -> str:
    return re.sub(r"\s+", " ", sql).strip()


def table_items(sql: str, name: str) -> tuple[str, set[str]]:
    """(prefix and suffix, column and constraint clauses) of ``CREATE ... TABLE name``, with
    the clauses later migrations add (``ALTER TABLE name ADD ...``)."""
    sql = squash(sql)
    added = set(re.findall(rf"ALTER TABLE {name} ADD (.*?) /", sql))
    match = re.search(rf"CREATE ((?:GLOBAL TEMPORARY )?)TABLE {name} \(", sql)
    assert match, name
    depth, start, items = 1, match.end(), []
    for position in range(match.end(), len(sql)):
        char = sql[position]
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if (char == "," and depth == 1) or depth == 0:
            items.append(sql[start:position].strip())
            start = position + 1
        if depth == 0:
            suffix = sql[position + 1 : position + 24].split("/")[0].strip()
            return match.group(1) + suffix, set(items) | added
    raise AssertionError(f"unbalanced DDL for {name}")


def test_oracle_migration_script_creates_every_table_and_index():
    script = sql_script("oracle")
    for table in metadata.sorted_tables:
        expected = str(CreateTable(table).compile(dialect=oracle.dialect()))
        assert table_items(script, table.name) == table_items(expected, table.name)
        for index in table.indexes:
            ddl = str(CreateIndex(index).compile(dialect=oracle.dialect()))
            assert squash(ddl) in squash(script)
    assert "TIMESTAMP WITH TIME ZONE" not in script  # Oracle refuses it in a key
    assert "NUMERIC(28, 9)" in script


def test_oracle_staging_table_matches_the_migration():
    script = sql_script("oracle")
    expected = str(CreateTable(bulk.oracle_stage).compile(dialect=oracle.dialect()))
    found = table_items(script, bulk.STAGE_NAME)
    assert found == table_items(expected, bulk.STAGE_NAME)
    assert found[0].startswith("GLOBAL TEMPORARY ON COMMIT DELETE ROWS")
    for index in bulk.oracle_stage.indexes:
        ddl = str(CreateIndex(index).compile(dialect=oracle.dialect()))
        assert squash(ddl) in squash(script)


def test_oracle_identifiers_fit():
    limit = oracle.dialect().max_identifier_length
    names = [t.name for t in metadata.tables.values()]
    names += [c.name for t in metadata.tables.values() for c in t.constraints if c.name]
    names += [i.name for t in metadata.tables.values() for i in t.indexes]
    assert all(len(str(n)) <= limit for n in names)
