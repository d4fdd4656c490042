"""The reading_types table: each 18-field code once, with its decoded fields and a small id."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sqlalchemy import Connection, Executable, insert, select
from sqlalchemy.dialects import postgresql, sqlite

from cim.codelists.readingtype import ReadingType
from mdm.bulk import DIALECT_SPECIFIC
from mdm.schema import reading_types

_CHUNK = 500  # Oracle allows at most 1000 items in an IN list


def reading_type_row(rt: ReadingType) -> dict[str, object]:
    return {"code": rt.code, **rt.as_dict(), "interval_seconds": rt.interval_seconds}


def ensure_reading_types(
    conn: Connection, types: Iterable[ReadingType], known: Mapping[str, int] | None = None
) -> dict[str, int]:
    """``code -> id`` for every type, registering the missing ones (in the caller's
    transaction). ``known`` is a cache of ids already committed."""
    wanted = {rt.code: rt for rt in types}
    ids = {code: known[code] for code in wanted if known and code in known}
    missing = [code for code in wanted if code not in ids]
    ids.update(_lookup(conn, missing))
    new = [reading_type_row(wanted[code]) for code in missing if code not in ids]
    if new:
        conn.execute(_insert_missing(conn.dialect.name), new)
        ids.update(_lookup(conn, [row["code"] for row in new]))  # type: ignore[misc]
    return ids


def _insert_missing(dialect: str) -> Executable:
    # Two writers may register the same type at once: PostgreSQL and SQLite skip the
    # duplicate; on Oracle the loser's transaction fails on the unique key (retry it).
    if dialect == "postgresql":
        statement = postgresql.insert(reading_types).on_conflict_do_nothing(index_elements=["code"])
        return statement.execution_options(**{DIALECT_SPECIFIC: dialect})
    if dialect == "sqlite":
        statement = sqlite.insert(reading_types).on_conflict_do_nothing(index_elements=["code"])
        return statement.execution_options(**{DIALECT_SPECIFIC: dialect})
    return insert(reading_types)


def _lookup(conn: Connection, codes: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for start in range(0, len(codes), _CHUNK):
        chunk = codes[start : start + _CHUNK]
        query = select(reading_types.c.code, reading_types.c.id).where(
            reading_types.c.code.in_(chunk)
        )
        out.update({code: id_ for code, id_ in conn.execute(query)})
    return out


def lookup_reading_types(conn: Connection, codes: Iterable[str]) -> dict[str, int]:
    """``code -> id`` of the stored ones among ``codes``."""
    return _lookup(conn, list(dict.fromkeys(codes)))


def reading_type_codes(conn: Connection, ids: Iterable[int]) -> dict[int, str]:
    """``id -> code``."""
    wanted = sorted(set(ids))
    out: dict[int, str] = {}
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        query = select(reading_types.c.id, reading_types.c.code).where(
            reading_types.c.id.in_(chunk)
        )
        out.update({id_: code for id_, code in conn.execute(query)})
    return out
