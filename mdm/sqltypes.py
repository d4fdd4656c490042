"""Column types that behave the same on SQLite, PostgreSQL and Oracle.

``UtcDateTime``: timezone-aware UTC in Python, always. PostgreSQL stores ``timestamptz``;
SQLite and Oracle store the naive UTC time (Oracle refuses ``TIMESTAMP WITH TIME ZONE`` in a
primary or unique key, and SQLite has no time zones).

``key_text``: a VARCHAR compared byte by byte, for text columns of a hot primary key.

``ExactDecimal``: an exact decimal, ``NUMERIC(28, 9)`` on PostgreSQL and Oracle. SQLite would
turn a ``NUMERIC`` text into a 64-bit float (15 significant digits), so there it is stored as
canonical fixed-point text with exactly nine decimals, which compares equal exactly when the
numbers are equal. SQLite's own arithmetic on that column (SUM, AVG) is approximate: sum in
Python or on PostgreSQL when exactness matters.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import DateTime, Numeric, String
from sqlalchemy.dialects import oracle, postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

PRECISION = 28
SCALE = 9
#: Values must satisfy ``abs(value) < MAX_ABS`` and have at most SCALE decimals.
MAX_ABS = Decimal(10) ** (PRECISION - SCALE)
_QUANTUM = Decimal(1).scaleb(-SCALE)


def decimal_text(value: Decimal) -> str:
    """The canonical SQLite text of an exact decimal: ``-12.500000000``."""
    return f"{value:.{SCALE}f}"


def fits(value: Decimal) -> bool:
    """True when the value is stored exactly by :class:`ExactDecimal`."""
    return value.is_finite() and abs(value) < MAX_ABS and value == value.quantize(_QUANTUM)


def key_text(length: int) -> TypeEngine[str]:
    """VARCHAR for a key column compared byte by byte: COLLATE "C" on PostgreSQL, where the
    database's default collation would cost a strcoll() call per comparison in the index
    (Oracle compares binary by default; SQLite's default collation is BINARY)."""
    return String(length).with_variant(postgresql.VARCHAR(length, collation="C"), "postgresql")


class UtcDateTime(TypeDecorator[datetime]):
    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "oracle":
            return dialect.type_descriptor(oracle.TIMESTAMP(timezone=False))
        if dialect.name == "postgresql":
            return dialect.type_descriptor(DateTime(timezone=True))
        return dialect.type_descriptor(DateTime(timezone=False))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} where UTC is required")
        value = value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class ExactDecimal(TypeDecorator[Decimal]):
    impl = Numeric(PRECISION, SCALE, asdecimal=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(PRECISION + 12))
        return dialect.type_descriptor(Numeric(PRECISION, SCALE, asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError(f"ExactDecimal takes a Decimal, not {type(value).__name__}")
        if not fits(value):
            raise ValueError(f"{value} does not fit NUMERIC({PRECISION}, {SCALE})")
        return decimal_text(value) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if isinstance(value, Decimal):
            # PostgreSQL returns NUMERIC(28, 9) with its scale; Oracle's NUMBER drops it.
            return value if dialect.name == "postgresql" else value.quantize(_QUANTUM)
        if isinstance(value, str):
            return Decimal(value)
        raise TypeError(f"ExactDecimal column returned a {type(value).__name__}, not exact")
