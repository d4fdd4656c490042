"""The transaction monitor: jobs, their tasks and each task's attempts, read from the job
tables (``jobs``, ``tasks``, ``task_attempts`` of :mod:`headend.schema`).

Everything is counted in the database: a job's progress is one grouped count over the
``(job_id, state)`` index, its durations are ranked there (percentiles by nearest rank: the
value at position ceil(p * n) of the sorted durations), so a job of a million tasks costs
a few index scans, not a million rows in Python.

- progress: tasks finished (succeeded, failed, expired, cancelled) out of the total, in %;
- success: tasks succeeded out of those finished, in %;
- queue wait: from a task's creation to the start of its first attempt;
- run time: from a task's first attempt to its end (retries and backoff included);
- attempt time: one session, from its start to its end.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, func, select

from cim.errors import CimError, ErrorCode
from headend.schema import TERMINAL_TASK_STATES, jobs, task_attempts, tasks
from headend.sql_seconds import seconds_between
from mdm.database import Store, reading


@dataclass(frozen=True)
class Percentiles:
    count: int
    p50: float | None
    p95: float | None
    mean: float | None
    max: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "p50": self.p50,
            "p95": self.p95,
            "mean": self.mean,
            "max": self.max,
        }


@dataclass(frozen=True)
class JobSummary:
    id: str
    kind: str
    name: str
    state: str
    priority: int
    created_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    total: int
    counts: dict[str, int]
    schedule_id: int | None = None
    parent_id: str | None = None

    @property
    def done(self) -> int:
        return sum(self.counts.get(s, 0) for s in TERMINAL_TASK_STATES)

    @property
    def progress(self) -> float:
        """Finished tasks out of all, in % (100 for a job without tasks)."""
        return 100.0 * self.done / self.total if self.total else 100.0

    @property
    def success(self) -> float | None:
        """Succeeded tasks out of the finished ones, in %; None before any finished."""
        return 100.0 * self.counts.get("succeeded", 0) / self.done if self.done else None

    @property
    def duration(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at
        return (end - self.started_at).total_seconds() if end is not None else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "name": self.name,
            "state": self.state,
            "priority": self.priority,
            "created_by": self.created_by,
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "total": self.total,
            "done": self.done,
            "counts": dict(self.counts),
            "progress": round(self.progress, 2),
            "success": None if self.success is None else round(self.success, 2),
            "duration": self.duration,
            "schedule_id": self.schedule_id,
            "parent_id": self.parent_id,
        }


@dataclass(frozen=True)
class JobDurations:
    queue_wait: Percentiles
    run_time: Percentiles
    attempt_time: Percentiles
    attempts: int
    bytes_sent: int
    bytes_received: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "queue_wait": self.queue_wait.as_dict(),
            "run_time": self.run_time.as_dict(),
            "attempt_time": self.attempt_time.as_dict(),
            "attempts": self.attempts,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
        }


@dataclass(frozen=True)
class AttemptView:
    number: int
    path: str
    started_at: datetime
    finished_at: datetime | None
    outcome: str | None
    detail: str | None
    worker: str | None
    bytes_sent: int
    bytes_received: int

    @property
    def seconds(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    def as_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "path": self.path,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "seconds": self.seconds,
            "outcome": self.outcome,
            "detail": self.detail,
            "worker": self.worker,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
        }


@dataclass(frozen=True)
class TaskDetail:
    id: int
    mrid: str
    state: str
    attempts: int
    path: str | None
    on_backup: bool
    error_code: str | None
    error_text: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    result: Any
    attempt_list: list[AttemptView] = field(default_factory=list)

    @property
    def queue_wait(self) -> float | None:
        if self.started_at is None:
            return None
        return (self.started_at - self.created_at).total_seconds()

    @property
    def run_time(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "mrid": self.mrid,
            "state": self.state,
            "attempts": self.attempts,
            "path": self.path,
            "on_backup": self.on_backup,
            "error_code": self.error_code,
            "error_text": self.error_text,
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "queue_wait": self.queue_wait,
            "run_time": self.run_time,
            "result": self.result,
            "attempt_list": [a.as_dict() for a in self.attempt_list],
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _unknown_job(job_id: str) -> CimError:
    return CimError(ErrorCode.BAD_VALUE, f"no job {job_id!r}", object_id=job_id)


_JOB_COLUMNS = (
    jobs.c.id,
    jobs.c.kind,
    jobs.c.name,
    jobs.c.state,
    jobs.c.priority,
    jobs.c.created_by,
    jobs.c.created_at,
    jobs.c.started_at,
    jobs.c.finished_at,
    jobs.c.total,
    jobs.c.schedule_id,
    jobs.c.parent_id,
)


def _counts(conn: Connection, job_ids: Sequence[str]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {id_: {} for id_ in job_ids}
    for first in range(0, len(job_ids), 500):
        chunk = list(job_ids[first : first + 500])
        query = (
            select(tasks.c.job_id, tasks.c.state, func.count())
            .where(tasks.c.job_id.in_(chunk))
            .group_by(tasks.c.job_id, tasks.c.state)
        )
        for job_id, state, n in conn.execute(query):
            out[job_id][state] = int(n)
    return out


def _summaries(conn: Connection, query: Select) -> list[JobSummary]:
    rows = conn.execute(query).all()
    counts = _counts(conn, [row.id for row in rows])
    return [
        JobSummary(
            id=row.id,
            kind=row.kind,
            name=row.name,
            state=row.state,
            priority=row.priority,
            created_by=row.created_by,
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
            total=row.total,
            counts=counts[row.id],
            schedule_id=row.schedule_id,
            parent_id=row.parent_id,
        )
        for row in rows
    ]


def list_jobs(
    db: Store | Connection,
    *,
    limit: int = 50,
    states: Sequence[str] = (),
    kinds: Sequence[str] = (),
    since: datetime | None = None,
    schedule_id: int | None = None,
) -> list[JobSummary]:
    """The most recent jobs first, with their task counts."""
    query = select(*_JOB_COLUMNS).order_by(jobs.c.created_at.desc(), jobs.c.id).limit(limit)
    if states:
        query = query.where(jobs.c.state.in_(list(states)))
    if kinds:
        query = query.where(jobs.c.kind.in_(list(kinds)))
    if since is not None:
        query = query.where(jobs.c.created_at >= since)
    if schedule_id is not None:
        query = query.where(jobs.c.schedule_id == schedule_id)
    with reading(db) as conn:
        return _summaries(conn, query)


def job_summary(db: Store | Connection, job_id: str) -> JobSummary:
    with reading(db) as conn:
        found = _summaries(conn, select(*_JOB_COLUMNS).where(jobs.c.id == job_id))
    if not found:
        raise _unknown_job(job_id)
    return found[0]


def percentiles(
    conn: Connection,
    value: ColumnElement[float],
    where: Sequence[ColumnElement[bool]],
    source: Any,
) -> Percentiles:
    """Nearest-rank p50 and p95, mean and max of ``value`` over the rows of ``source``
    matching ``where`` (rows where it is NULL left out), all in the database."""
    filters = [*where, value.is_not(None)]
    n, mean, top = conn.execute(
        select(func.count(), func.avg(value), func.max(value)).select_from(source).where(*filters)
    ).one()
    n = int(n or 0)
    if not n:
        return Percentiles(0, None, None, None, None)

    def rank(p: float) -> float:
        offset = max(0, math.ceil(p * n) - 1)
        query = (
            select(value)
            .select_from(source)
            .where(*filters)
            .order_by(value)
            .offset(offset)
            .limit(1)
        )
        return float(conn.execute(query).scalar_one())

    return Percentiles(n, rank(0.5), rank(0.95), float(mean), float(top))


def job_durations(db: Store | Connection, job_id: str) -> JobDurations:
    t, a = tasks, task_attempts
    in_job = [t.c.job_id == job_id]
    with reading(db) as conn:
        if conn.execute(select(jobs.c.id).where(jobs.c.id == job_id)).first() is None:
            raise _unknown_job(job_id)
        queue_wait = percentiles(conn, seconds_between(t.c.started_at, t.c.created_at), in_job, t)
        run_time = percentiles(conn, seconds_between(t.c.finished_at, t.c.started_at), in_job, t)
        joined = a.join(t, a.c.task_id == t.c.id)
        attempt_time = percentiles(
            conn, seconds_between(a.c.finished_at, a.c.started_at), in_job, joined
        )
        n, sent, received = conn.execute(
            select(func.count(), func.sum(a.c.bytes_sent), func.sum(a.c.bytes_received))
            .select_from(joined)
            .where(*in_job)
        ).one()
    return JobDurations(
        queue_wait, run_time, attempt_time, int(n or 0), int(sent or 0), int(received or 0)
    )


def _attempt(row: Any) -> AttemptView:
    return AttemptView(
        number=row.number,
        path=row.path,
        started_at=row.started_at,
        finished_at=row.finished_at,
        outcome=row.outcome,
        detail=row.detail,
        worker=row.worker,
        bytes_sent=int(row.bytes_sent or 0),
        bytes_received=int(row.bytes_received or 0),
    )


def _result(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def job_tasks(
    db: Store | Connection,
    job_id: str,
    *,
    states: Sequence[str] = (),
    limit: int = 100,
    offset: int = 0,
    with_attempts: bool = False,
) -> list[TaskDetail]:
    """The job's tasks in id order (a page of them), optionally with their attempts."""
    query = select(tasks).where(tasks.c.job_id == job_id).order_by(tasks.c.id)
    if states:
        query = query.where(tasks.c.state.in_(list(states)))
    query = query.offset(offset).limit(limit)
    with reading(db) as conn:
        rows = conn.execute(query).all()
        attempts: dict[int, list[AttemptView]] = {row.id: [] for row in rows}
        if with_attempts and rows:
            a = task_attempts
            for row in conn.execute(
                select(a).where(a.c.task_id.in_(list(attempts))).order_by(a.c.task_id, a.c.number)
            ):
                attempts[row.task_id].append(_attempt(row))
    return [
        TaskDetail(
            id=row.id,
            mrid=row.mrid,
            state=row.state,
            attempts=row.attempts,
            path=row.path,
            on_backup=bool(row.on_backup),
            error_code=row.error_code,
            error_text=row.error_text,
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
            result=_result(row.result),
            attempt_list=attempts[row.id],
        )
        for row in rows
    ]


def task_attempts_of(db: Store | Connection, task_id: int) -> list[AttemptView]:
    a = task_attempts
    with reading(db) as conn:
        rows = conn.execute(select(a).where(a.c.task_id == task_id).order_by(a.c.number)).all()
    return [_attempt(row) for row in rows]


def error_causes(db: Store | Connection, job_id: str) -> dict[str, int]:
    """The job's unsuccessful finished tasks per error code."""
    query = (
        select(tasks.c.error_code, func.count())
        .where(
            tasks.c.job_id == job_id,
            tasks.c.state.in_(["failed", "expired", "cancelled"]),
        )
        .group_by(tasks.c.error_code)
    )
    with reading(db) as conn:
        return {code or "?": int(n) for code, n in conn.execute(query)}


__all__ = [
    "AttemptView",
    "JobDurations",
    "JobSummary",
    "Percentiles",
    "TaskDetail",
    "error_causes",
    "job_durations",
    "job_summary",
    "job_tasks",
    "list_jobs",
    "percentiles",
    "task_attempts_of",
]
