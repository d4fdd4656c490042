"""Sample data and small helpers for the meter data store tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from mdm.database import Store
from mdm.normalise import RawValue

OBIS_ENERGY = "1-0:1.8.0"
RT_15MIN_KWH = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"  # 15-minute delta +A, kWh
RT_REGISTER_KWH = "0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def interval_rows(
    device: str = "M1",
    count: int = 4,
    start: datetime = T0,
    *,
    values: list[int] | None = None,
    task: str = "t1",
    unit: str = "Wh",
) -> list[RawValue]:
    """``count`` 15-minute energy values (Wh, into the kWh ReadingType) ending after ``start``."""
    values = values if values is not None else [1000 + k for k in range(count)]
    return [
        RawValue(
            device,
            OBIS_ENERGY,
            start + timedelta(minutes=15 * (k + 1)),
            value,
            unit,
            interval_minutes=15,
            source_task=task,
        )
        for k, value in enumerate(values)
    ]


def count(store: Store, table: str) -> int:
    with store.connect() as conn:
        return conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
