"""Crafted rows of the job tables (``jobs``, ``tasks``, ``task_attempts``), written with
SQLAlchemy Core, for the monitor, statistics and CLI tests: exact figures to check against."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, insert, select

from headend.schema import jobs, task_attempts, tasks
from mdm.schema import devices

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
READ = '{"type":"ReadRegisters","device":"*","obis":{"$tuple":["1.0.1.8.0.255"]}}'
CONTROL = '{"type":"Control","device":"*","action":"disconnect"}'
_ids = itertools.count(1)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def add_job(
    conn: Connection,
    job_id: str,
    *,
    command: str = READ,
    kind: str = "group",
    state: str = "running",
    total: int = 0,
    created: datetime = T0,
    started: datetime | None = None,
    finished: datetime | None = None,
    schedule_id: int | None = None,
    name: str | None = None,
) -> str:
    conn.execute(
        insert(jobs).values(
            id=job_id,
            kind=kind,
            name=name or f"job {job_id}",
            priority=30,
            state=state,
            command=command,
            parameters="{}",
            schedule_id=schedule_id,
            created_by="test",
            created_at=created,
            started_at=started,
            finished_at=finished,
            total=total,
        )
    )
    return job_id


def add_task(
    conn: Connection,
    job_id: str,
    mrid: str,
    state: str,
    *,
    created: datetime = T0,
    started: datetime | None = None,
    finished: datetime | None = None,
    attempts: list[dict[str, Any]] = (),  # type: ignore[assignment]
    error_code: str | None = None,
    result: dict[str, Any] | None = None,
) -> int:
    device_id = conn.execute(select(devices.c.id).where(devices.c.mrid == mrid)).scalar_one()
    task_id = conn.execute(
        insert(tasks).values(
            job_id=job_id,
            device_id=device_id,
            mrid=mrid,
            state=state,
            attempts=len(attempts),
            path=attempts[-1]["path"] if attempts else None,
            on_backup=False,
            error_code=error_code,
            error_text=None if error_code is None else f"error {error_code}",
            idempotency_key=f"{job_id}/{mrid}/{next(_ids)}",
            created_at=created,
            started_at=started,
            finished_at=finished,
            result=None if result is None else json.dumps(result),
        )
    ).inserted_primary_key[0]
    for number, attempt in enumerate(attempts, start=1):
        conn.execute(
            insert(task_attempts).values(
                task_id=task_id,
                number=number,
                path=attempt["path"],
                started_at=attempt["start"],
                finished_at=attempt.get("end"),
                outcome=attempt.get("outcome"),
                detail=attempt.get("detail"),
                worker="test:1",
                bytes_sent=attempt.get("sent", 0),
                bytes_received=attempt.get("received", 0),
                device_type=None,
            )
        )
    return task_id


def attempt(
    path: str,
    start: datetime,
    seconds: float | None,
    outcome: str | None,
    sent: int = 0,
    received: int = 0,
) -> dict[str, Any]:
    return {
        "path": path,
        "start": start,
        "end": None if seconds is None else start + timedelta(seconds=seconds),
        "outcome": outcome,
        "sent": sent,
        "received": received,
    }
