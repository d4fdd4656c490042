"""The persisted job store: jobs, their tasks and every attempt, in the database (tables of
:mod:`headend.schema`), so any worker process can run any task and a job survives restarts.

- :func:`create_job` writes a job and all its tasks in one transaction (100,000 tasks are one
  executemany per chunk) and returns the task ids to publish.
- :func:`load_task` gives a worker everything it needs to run a task (:class:`TaskSpec`): the
  command for that device, the job's parameters, the attempts so far, its state (a finished
  task is not run again) and the :class:`headend.jobs.Endpoint` built from the registry, keys
  decrypted with the keyring.
- :func:`begin_attempt` / :func:`end_attempt` record one session; :func:`mark_retry` a failure
  that will be tried again. Finishing a task (with its data) is :mod:`headend.results`.
- A job is ``queued`` until its first attempt starts, ``running`` until every task is
  terminal, then ``completed`` (every task succeeded) or ``completed_with_errors``
  (:func:`roll_up`; ``cancelled`` when every task was cancelled).
- :func:`rerun_errors` makes a new job (kind ``rerun``, ``parent_id`` set) of a job's error
  group: its failed and expired tasks.

Task states and job states are the strings of :mod:`headend.schema`. ``error_code`` is a
:class:`cim.errors.ErrorCode` code (``"7.2"``); an attempt's ``outcome`` is ``"ok"`` or the
driver's cause (``"timeout"``).
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Connection,
    and_,
    bindparam,
    exists,
    func,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from cim.errors import ErrorCode
from drivers.errors import DriverError
from headend import commands
from headend.command_json import command_from_json, command_to_json, from_json, to_json
from headend.jobs import Endpoint
from headend.keys import Keyring, MasterKeyError
from headend.registry import CommPath, Registry
from headend.schema import (
    CORRELATION_ID_LENGTH,
    FINISHED_JOB_STATES,
    OPEN_TASK_STATES,
    TASK_STATES,
    TERMINAL_TASK_STATES,
    jobs,
    task_attempts,
    tasks,
)
from mdm.database import Store, reading, transaction
from mdm.errors import MdmError
from mdm.schema import devices

_CHUNK = 10_000


class JobNotFound(LookupError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job {job_id!r}")
        self.job_id = job_id


class TaskNotFound(LookupError):
    def __init__(self, task_id: int) -> None:
        super().__init__(f"no task {task_id}")
        self.task_id = task_id


class TaskFinished(RuntimeError):
    """The task is already in a terminal state: it is not run (or finished) again."""

    def __init__(self, task_id: int, state: str) -> None:
        super().__init__(f"task {task_id} is already {state}")
        self.task_id = task_id
        self.state = state


def error_code_text(code: ErrorCode | str | None) -> str | None:
    """The stored form of an error code: the ErrorCode's code string."""
    if code is None or isinstance(code, str):
        return code
    return code.code


# --- creating -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewJob:
    job_id: str
    priority: int
    tasks: list[tuple[int, str]]  # (task id, idempotency key), in device order
    existing: bool = False


def task_key(job_id: str, mrid: str) -> str:
    """A task's idempotency key: unique per job and device."""
    return f"{job_id}/{mrid}"


# Statements built once: building one per call costs more than running it on SQLite.
_JOB_BY_KEY = select(jobs.c.id).where(jobs.c.idempotency_key == bindparam("key"))
_INSERT_JOB = insert(jobs)
_INSERT_TASKS = insert(tasks)
_TASK_KEYS = (
    select(tasks.c.id, tasks.c.idempotency_key)
    .where(tasks.c.job_id == bindparam("job"))
    .order_by(tasks.c.id)
)


def find_job_by_key(db: Store | Connection, idempotency_key: str) -> str | None:
    with reading(db) as conn:
        return conn.execute(_JOB_BY_KEY, {"key": idempotency_key}).scalar_one_or_none()


def create_job(
    store: Store,
    *,
    kind: str,
    name: str,
    command: commands.Command,
    devices: Sequence[tuple[int, str]],
    priority: int,
    parameters: Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
    parent_id: str | None = None,
    schedule_id: int | None = None,
    created_by: str = "system",
    deadline: datetime | None = None,
    job_id: str | None = None,
    correlation_id: str | None = None,
) -> NewJob:
    """Write the job and one queued task per (device id, mRID), all or nothing. With an
    ``idempotency_key`` already used, nothing is written and the existing job is returned
    (``existing=True``, no tasks to publish). ``correlation_id``: the CorrelationID of the
    request the job is for (at most CORRELATION_ID_LENGTH characters, else ValueError),
    carried by the events of its tasks."""
    if not devices:
        raise ValueError("a job needs at least one device")
    if correlation_id is not None and not 0 < len(correlation_id) <= CORRELATION_ID_LENGTH:
        raise ValueError(f"a correlation id is 1..{CORRELATION_ID_LENGTH} characters")
    job_id = job_id or uuid.uuid4().hex
    now = datetime.now(UTC)
    command_text = command_to_json(command)
    parameters_text = to_json(dict(parameters or {}))
    try:  # a used idempotency key fails the insert (unique): the existing job is returned
        with transaction(store) as conn:
            conn.execute(
                _INSERT_JOB,
                {
                    "id": job_id,
                    "kind": kind,
                    "name": name[:200],
                    "priority": int(priority),
                    "state": "queued",
                    "command": command_text,
                    "parameters": parameters_text,
                    "idempotency_key": idempotency_key,
                    "parent_id": parent_id,
                    "schedule_id": schedule_id,
                    "created_by": created_by[:64],
                    "created_at": now,
                    "total": len(devices),
                    "correlation_id": correlation_id,
                },
            )
            for start in range(0, len(devices), _CHUNK):
                conn.execute(
                    _INSERT_TASKS,
                    [
                        {
                            "job_id": job_id,
                            "device_id": device_id,
                            "mrid": mrid,
                            "state": "queued",
                            "attempts": 0,
                            "path": None,
                            "on_backup": False,
                            "idempotency_key": task_key(job_id, mrid),
                            "deadline": deadline,
                            "created_at": now,
                        }
                        for device_id, mrid in devices[start : start + _CHUNK]
                    ],
                )
            rows = conn.execute(_TASK_KEYS, {"job": job_id}).all()
    except IntegrityError:
        if idempotency_key is not None:
            existing = find_job_by_key(store, idempotency_key)
            if existing is not None:  # an earlier or concurrent submission with the key
                return NewJob(existing, priority, [], existing=True)
        raise
    return NewJob(job_id, int(priority), [(row.id, row.idempotency_key) for row in rows])


# --- running ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """What a worker needs to run one task. ``endpoint`` is None when the registry cannot
    build it any more (``problem`` says why: meter removed, keys not decryptable...)."""

    task_id: int
    job_id: str
    mrid: str
    command: commands.Command
    parameters: dict[str, Any]
    state: str
    attempts: int
    idempotency_key: str
    deadline: datetime | None
    endpoint: Endpoint | None
    priority: int = 0
    device_id: int = 0
    time_zone: str = "UTC"
    device_type: str | None = None
    path: str | None = None
    on_backup: bool = False
    problem: str | None = None
    problem_code: str | None = None
    job_state: str | None = None  # the job's state when the task was loaded
    correlation_id: str | None = None  # the job's (its request's CorrelationID)

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL_TASK_STATES


def path_name(path: CommPath) -> str:
    """The name the throttles count a communication path by: the address a session goes to
    (meters behind one gateway share it)."""
    if path.serial_port:
        return f"serial:{path.serial_port}"
    return f"{path.transport}://{path.host}:{path.port}"


def device_type_of(manufacturer: str | None, model: str | None) -> str | None:
    text = " ".join(p for p in (manufacturer, model) if p)
    return text[:129] or None


def endpoint_for(registry: Registry, mrid: str) -> Endpoint:
    """The Endpoint of a registered meter (raises MdmError or MasterKeyError)."""
    record = registry.get(mrid)
    primary = registry.connection_params(record, "primary")
    backup = registry.connection_params(record, "backup") if record.backup is not None else None
    return Endpoint(
        device_id=mrid,
        primary=primary,
        primary_path=path_name(record.primary),
        backup=backup,
        backup_path=path_name(record.backup) if record.backup is not None else None,
    )


def _states(values: Sequence[str]) -> list[Any]:
    """Constant states inline (a literal IN list needs no per-execution expansion)."""
    return [literal_column(repr(v)) for v in values]


_OPEN = _states(OPEN_TASK_STATES)
_TERMINAL = _states(TERMINAL_TASK_STATES)

# The statements a worker runs for every task, built once: SQLAlchemy then only looks up the
# compiled form (building and keying a statement costs several times its execution).
_LOAD_COLUMNS = (
    tasks,
    jobs.c.command,
    jobs.c.parameters,
    jobs.c.priority,
    jobs.c.state.label("job_state"),
    jobs.c.correlation_id,
    devices.c.time_zone,
    devices.c.manufacturer,
    devices.c.model,
)
_LOAD_FROM = tasks.join(jobs, jobs.c.id == tasks.c.job_id).join(
    devices, devices.c.id == tasks.c.device_id
)
_LOAD_ONE = select(*_LOAD_COLUMNS).select_from(_LOAD_FROM).where(tasks.c.id == bindparam("tid"))
_LOAD_MANY = (
    select(*_LOAD_COLUMNS)
    .select_from(_LOAD_FROM)
    .where(tasks.c.id.in_(bindparam("tids", expanding=True)))
)
_BEGIN_LOCK = (
    select(tasks.c.state, tasks.c.attempts, tasks.c.job_id, tasks.c.device_id)
    .where(tasks.c.id == bindparam("tid"))
    .with_for_update()
)
_BEGIN_TASK = (
    update(tasks)
    .where(tasks.c.id == bindparam("tid"))
    .values(
        state="running",
        attempts=bindparam("number"),
        path=bindparam("path"),
        started_at=func.coalesce(tasks.c.started_at, bindparam("now")),
    )
)
_DEVICE_TYPE = select(devices.c.manufacturer, devices.c.model).where(
    devices.c.id == bindparam("device_id")
)
_INSERT_ATTEMPT = insert(task_attempts)
_JOB_RUNNING = (
    update(jobs)
    .where(jobs.c.id == bindparam("job"), jobs.c.state == literal_column("'queued'"))
    .values(state="running", started_at=bindparam("now"))
)
_END_ATTEMPT = (
    update(task_attempts)
    .where(task_attempts.c.task_id == bindparam("tid"), task_attempts.c.number == bindparam("n"))
    .values(
        finished_at=bindparam("finished_at"),
        outcome=bindparam("outcome"),
        detail=bindparam("detail"),
        bytes_sent=bindparam("sent"),
        bytes_received=bindparam("received"),
    )
)
_FINISH_TASK = (
    update(tasks)
    .where(tasks.c.id == bindparam("tid"), tasks.c.state.in_(_OPEN))
    .values(
        state=bindparam("state"),
        error_code=bindparam("code"),
        error_text=bindparam("text"),
        finished_at=bindparam("finished_at"),
        result=bindparam("result"),
    )
)
# FOR NO KEY UPDATE on PostgreSQL: finishers of one job's tasks queue on the job row, but
# without conflicting with the key-share locks foreign keys to it take.
_LOCK_JOB = (
    select(jobs.c.state, jobs.c.correlation_id)
    .where(jobs.c.id == bindparam("job"))
    .with_for_update(key_share=True)
)
_STILL_OPEN = select(
    exists().where(and_(tasks.c.job_id == bindparam("job"), tasks.c.state.in_(_OPEN)))
)
_COUNTS = (
    select(tasks.c.state, func.count())
    .where(tasks.c.job_id == bindparam("job"))
    .group_by(tasks.c.state)
)


def _spec(row: Any, registry: Registry) -> TaskSpec:
    template = command_from_json(row.command)
    command = dataclasses.replace(template, device=row.mrid, idempotency_key=row.idempotency_key)
    endpoint: Endpoint | None = None
    problem: str | None = None
    problem_code: str | None = None
    if row.state not in TERMINAL_TASK_STATES:
        try:
            endpoint = endpoint_for(registry, row.mrid)
        except MdmError as exc:
            problem, problem_code = exc.reason, exc.error.code
        except MasterKeyError as exc:
            problem, problem_code = str(exc), ErrorCode.INTERNAL.code
        except DriverError as exc:  # ConnectionParams refused what is stored
            problem, problem_code = exc.message, ErrorCode.BAD_VALUE.code
    return TaskSpec(
        task_id=row.id,
        job_id=row.job_id,
        mrid=row.mrid,
        command=command,
        parameters=from_json(row.parameters),
        state=row.state,
        attempts=row.attempts,
        idempotency_key=row.idempotency_key,
        deadline=row.deadline,
        endpoint=endpoint,
        priority=row.priority,
        device_id=row.device_id,
        time_zone=row.time_zone,
        device_type=device_type_of(row.manufacturer, row.model),
        path=row.path,
        on_backup=bool(row.on_backup),
        problem=problem,
        problem_code=problem_code,
        job_state=row.job_state,
        correlation_id=row.correlation_id,
    )


def load_task(
    store: Store,
    task_id: int,
    *,
    keyring: Keyring | None = None,
    registry: Registry | None = None,
) -> TaskSpec | None:
    """The task with its command, parameters, state and endpoint; None if there is no such
    task. The keyring defaults to the environment's master key (only read when the meter's
    security profile has secrets)."""
    with reading(store) as conn:
        row = conn.execute(_LOAD_ONE, {"tid": task_id}).one_or_none()
    if row is None:
        return None
    return _spec(row, registry or Registry(store, keyring))


def load_tasks(
    store: Store,
    task_ids: Sequence[int],
    *,
    keyring: Keyring | None = None,
    registry: Registry | None = None,
) -> dict[int, TaskSpec]:
    """:func:`load_task` for many tasks in one query: task id -> spec (unknown ids are not
    in it). A registry with a ``prefetch(mrids)`` method (the worker's caching registry) is
    asked for all the meters at once first."""
    rows: list[Any] = []
    wanted = list(dict.fromkeys(task_ids))
    with reading(store) as conn:
        for start in range(0, len(wanted), 500):
            rows.extend(conn.execute(_LOAD_MANY, {"tids": wanted[start : start + 500]}))
    registry = registry or Registry(store, keyring)
    prefetch = getattr(registry, "prefetch", None)
    if prefetch is not None:
        prefetch([row.mrid for row in rows if row.state not in TERMINAL_TASK_STATES])
    return {row.id: _spec(row, registry) for row in rows}


_LOOK_UP = object()


def begin_attempt(
    store: Store,
    task_id: int,
    *,
    path: str,
    worker: str,
    device_type: str | object | None = _LOOK_UP,
    job_queued: bool = True,
) -> int:
    """Record the start of an attempt (the task becomes ``running``, the job too if it was
    queued); returns the attempt's number (1 for the first). Raises TaskFinished for a task
    in a terminal state and TaskNotFound for an unknown one. A caller that knows them passes
    the meter's ``device_type`` (TaskSpec.device_type) and ``job_queued=False`` when the job
    is known to be running already (each saves a statement)."""
    now = datetime.now(UTC)
    with transaction(store) as conn:
        row = conn.execute(_BEGIN_LOCK, {"tid": task_id}).one_or_none()
        if row is None:
            raise TaskNotFound(task_id)
        if row.state in TERMINAL_TASK_STATES:
            raise TaskFinished(task_id, row.state)
        number = row.attempts + 1
        conn.execute(_BEGIN_TASK, {"tid": task_id, "number": number, "path": path, "now": now})
        if device_type is _LOOK_UP:
            maker = conn.execute(_DEVICE_TYPE, {"device_id": row.device_id}).one()
            device_type = device_type_of(maker.manufacturer, maker.model)
        conn.execute(
            _INSERT_ATTEMPT,
            {
                "task_id": task_id,
                "number": number,
                "path": path[:255],
                "started_at": now,
                "finished_at": None,
                "outcome": None,
                "detail": None,
                "worker": worker[:128],
                "bytes_sent": 0,
                "bytes_received": 0,
                "device_type": device_type,
            },
        )
        if job_queued:
            conn.execute(_JOB_RUNNING, {"job": row.job_id, "now": now})
    return number


@dataclass(frozen=True, slots=True)
class AttemptEnd:
    """How an attempt ended, recorded with the task's outcome in one transaction."""

    number: int
    outcome: str  # "ok" or the cause of the failure
    detail: str | None = None
    bytes_sent: int = 0
    bytes_received: int = 0


def record_attempt_end(conn: Connection, task_id: int, end: AttemptEnd) -> bool:
    """:func:`end_attempt` inside the caller's transaction; False: no such attempt."""
    done = conn.execute(
        _END_ATTEMPT,
        {
            "tid": task_id,
            "n": end.number,
            "finished_at": datetime.now(UTC),
            "outcome": end.outcome[:64],
            "detail": end.detail,
            "sent": int(end.bytes_sent),
            "received": int(end.bytes_received),
        },
    )
    return done.rowcount > 0


def end_attempt(
    store: Store,
    task_id: int,
    number: int,
    *,
    outcome: str,
    detail: str | None,
    bytes_sent: int = 0,
    bytes_received: int = 0,
) -> None:
    """Record how an attempt ended: ``outcome`` "ok" or the cause of its failure."""
    end = AttemptEnd(number, outcome, detail, bytes_sent, bytes_received)
    with transaction(store) as conn:
        if not record_attempt_end(conn, task_id, end):
            raise TaskNotFound(task_id)


def mark_retry(
    store: Store,
    task_id: int,
    *,
    error_code: ErrorCode | str | None,
    error_text: str | None,
    path: str | None,
    on_backup: bool,
    attempt: AttemptEnd | None = None,
) -> bool:
    """The last attempt failed and the task will be tried again (``retry_wait``); False if
    the task was already finished (nothing changed). ``attempt``: how the attempt ended,
    recorded in the same transaction."""
    with transaction(store) as conn:
        if attempt is not None:
            record_attempt_end(conn, task_id, attempt)
        done = conn.execute(
            update(tasks)
            .where(tasks.c.id == task_id, tasks.c.state.not_in(TERMINAL_TASK_STATES))
            .values(
                state="retry_wait",
                error_code=error_code_text(error_code),
                error_text=error_text,
                path=path,
                on_backup=on_backup,
            )
        )
    return done.rowcount > 0


def finish_task(
    conn: Connection,
    task_id: int,
    *,
    state: str,
    error_code: ErrorCode | str | None = None,
    error_text: str | None = None,
    result: Mapping[str, Any] | None = None,
) -> bool:
    """Move the task to a terminal ``state`` inside the caller's transaction; False (and
    nothing written) when it already was in one. On PostgreSQL the row lock taken here makes
    a concurrent finisher of the same task wait, then find it finished. Update a task row
    once per transaction (pass its ``result`` here): a second update of a row the
    transaction already changed makes PostgreSQL check its foreign key again, taking a
    key-share lock on the job row that finishers of the job then deadlock upon."""
    if state not in TERMINAL_TASK_STATES:
        raise ValueError(f"{state!r} is not a terminal task state")
    done = conn.execute(
        _FINISH_TASK,
        {
            "tid": task_id,
            "state": state,
            "code": error_code_text(error_code),
            "text": error_text,
            "finished_at": datetime.now(UTC),
            "result": json.dumps(result, sort_keys=True) if result is not None else None,
        },
    )
    return done.rowcount > 0


def set_result(conn: Connection, task_id: int, result: Mapping[str, Any]) -> None:
    """Replace a finished task's result (prefer passing it to :func:`finish_task`)."""
    conn.execute(
        update(tasks).where(tasks.c.id == task_id).values(result=json.dumps(result, sort_keys=True))
    )


@dataclass(frozen=True, slots=True)
class Finished:
    job_id: str
    state: str
    counts: dict[str, int]
    correlation_id: str | None = None


def roll_up(conn: Connection, job_id: str) -> Finished | None:
    """After a task was finished in ``conn``'s transaction: when no task of the job is open
    any more, the job gets its final state (returned); else None. The job row is locked first,
    so of two concurrent finishers of a job's last tasks exactly one sees them all done."""
    job = conn.execute(_LOCK_JOB, {"job": job_id}).one_or_none()
    if job is None or job.state in FINISHED_JOB_STATES:
        return None
    if conn.execute(_STILL_OPEN, {"job": job_id}).scalar():
        return None
    counts = _counts(conn, job_id)
    if counts["succeeded"] == counts["total"]:
        state = "completed"
    elif counts["cancelled"] == counts["total"]:
        state = "cancelled"
    else:
        state = "completed_with_errors"
    now = datetime.now(UTC)
    conn.execute(
        update(jobs)
        .where(jobs.c.id == job_id)
        .values(state=state, finished_at=now, started_at=func.coalesce(jobs.c.started_at, now))
    )
    return Finished(job_id, state, counts, job.correlation_id)


def cancel_job(store: Store, job_id: str) -> Finished | None:
    """Cancel the tasks not started (queued or waiting for a retry); running ones finish.
    Returns the job's final state if that finished it."""
    with transaction(store) as conn:
        if conn.execute(select(jobs.c.id).where(jobs.c.id == job_id)).first() is None:
            raise JobNotFound(job_id)
        conn.execute(
            update(tasks)
            .where(tasks.c.job_id == job_id, tasks.c.state.in_(("queued", "retry_wait")))
            .values(state="cancelled", finished_at=datetime.now(UTC))
        )
        return roll_up(conn, job_id)


# --- reading ------------------------------------------------------------------------------


def _counts(conn: Connection, job_id: str) -> dict[str, int]:
    out = dict.fromkeys(TASK_STATES, 0)
    for state, n in conn.execute(_COUNTS, {"job": job_id}):
        out[state] = n
    out["total"] = sum(out[s] for s in TASK_STATES)
    out["done"] = sum(out[s] for s in TERMINAL_TASK_STATES)
    return out


def counts(db: Store | Connection, job_id: str) -> dict[str, int]:
    """Tasks per state (every state, 0 included), plus ``total`` and ``done``."""
    with reading(db) as conn:
        return _counts(conn, job_id)


@dataclass(frozen=True, slots=True)
class JobRecord:
    id: str
    kind: str
    name: str
    priority: int
    state: str
    command: commands.Command
    parameters: dict[str, Any]
    idempotency_key: str | None
    parent_id: str | None
    schedule_id: int | None
    created_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    total: int
    correlation_id: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_JOB_STATES


def _job_record(row: Any) -> JobRecord:
    return JobRecord(
        id=row.id,
        kind=row.kind,
        name=row.name,
        priority=row.priority,
        state=row.state,
        command=command_from_json(row.command),
        parameters=from_json(row.parameters),
        idempotency_key=row.idempotency_key,
        parent_id=row.parent_id,
        schedule_id=row.schedule_id,
        created_by=row.created_by,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        total=row.total,
        correlation_id=row.correlation_id,
    )


_JOB = select(jobs).where(jobs.c.id == bindparam("job"))
_JOB_STATE = select(jobs.c.state).where(jobs.c.id == bindparam("job"))
_TASKS_OF_JOB = select(tasks).where(tasks.c.job_id == bindparam("job")).order_by(tasks.c.id)


def get_job(db: Store | Connection, job_id: str) -> JobRecord:
    with reading(db) as conn:
        row = conn.execute(_JOB, {"job": job_id}).one_or_none()
    if row is None:
        raise JobNotFound(job_id)
    return _job_record(row)


def job_state(db: Store | Connection, job_id: str) -> str:
    with reading(db) as conn:
        state = conn.execute(_JOB_STATE, {"job": job_id}).scalar()
    if state is None:
        raise JobNotFound(job_id)
    return state


def list_jobs(
    db: Store | Connection,
    *,
    state: str | None = None,
    kind: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[JobRecord]:
    """Jobs, newest first."""
    query = select(jobs).order_by(jobs.c.created_at.desc(), jobs.c.id)
    if state is not None:
        query = query.where(jobs.c.state == state)
    if kind is not None:
        query = query.where(jobs.c.kind == kind)
    with reading(db) as conn:
        rows = conn.execute(query.limit(limit).offset(offset)).all()
    return [_job_record(row) for row in rows]


@dataclass(frozen=True, slots=True)
class TaskRecord:
    id: int
    mrid: str
    state: str
    attempts: int
    error_code: str | None
    error_text: str | None
    result: dict[str, Any] | None
    path: str | None
    on_backup: bool
    started_at: datetime | None
    finished_at: datetime | None


def task_records(
    db: Store | Connection, job_id: str, *, states: Sequence[str] | None = None
) -> Iterator[TaskRecord]:
    """The job's tasks in creation order (optionally only those in ``states``)."""
    query = _TASKS_OF_JOB
    if states is not None:
        query = query.where(tasks.c.state.in_(list(states)))
    with reading(db) as conn:
        for row in conn.execute(query, {"job": job_id}):
            yield TaskRecord(
                id=row.id,
                mrid=row.mrid,
                state=row.state,
                attempts=row.attempts,
                error_code=row.error_code,
                error_text=row.error_text,
                result=json.loads(row.result) if row.result else None,
                path=row.path,
                on_backup=bool(row.on_backup),
                started_at=row.started_at,
                finished_at=row.finished_at,
            )


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    number: int
    path: str
    started_at: datetime
    finished_at: datetime | None
    outcome: str | None
    detail: str | None
    worker: str | None
    bytes_sent: int
    bytes_received: int
    device_type: str | None


def attempts_of(db: Store | Connection, task_id: int) -> list[AttemptRecord]:
    query = (
        select(task_attempts)
        .where(task_attempts.c.task_id == task_id)
        .order_by(task_attempts.c.number)
    )
    with reading(db) as conn:
        return [
            AttemptRecord(
                number=r.number,
                path=r.path,
                started_at=r.started_at,
                finished_at=r.finished_at,
                outcome=r.outcome,
                detail=r.detail,
                worker=r.worker,
                bytes_sent=r.bytes_sent,
                bytes_received=r.bytes_received,
                device_type=r.device_type,
            )
            for r in conn.execute(query)
        ]


ERROR_GROUP = ("failed", "expired")


def error_group(db: Store | Connection, job_id: str) -> list[tuple[int, str]]:
    """(device id, mRID) of the job's failed and expired tasks, in task order."""
    query = (
        select(tasks.c.device_id, tasks.c.mrid)
        .where(tasks.c.job_id == job_id, tasks.c.state.in_(ERROR_GROUP))
        .order_by(tasks.c.id)
    )
    with reading(db) as conn:
        if conn.execute(select(jobs.c.id).where(jobs.c.id == job_id)).first() is None:
            raise JobNotFound(job_id)
        return [(row.device_id, row.mrid) for row in conn.execute(query)]


def open_tasks(
    db: Store | Connection, job_id: str | None = None
) -> list[tuple[int, str, int, str]]:
    """(task id, job id, job priority, idempotency key) of tasks not finished (queued,
    running, waiting for a retry), oldest first: what to publish again after a restart."""
    query = (
        select(tasks.c.id, tasks.c.job_id, jobs.c.priority, tasks.c.idempotency_key)
        .join(jobs, jobs.c.id == tasks.c.job_id)
        .where(tasks.c.state.in_(OPEN_TASK_STATES))
        .order_by(tasks.c.id)
    )
    if job_id is not None:
        query = query.where(tasks.c.job_id == job_id)
    with reading(db) as conn:
        return [(r.id, r.job_id, r.priority, r.idempotency_key) for r in conn.execute(query)]


def rerun_errors(
    store: Store,
    job_id: str,
    *,
    created_by: str = "system",
    idempotency_key: str | None = None,
    priority: int | None = None,
) -> NewJob:
    """A new job (kind ``rerun``, ``parent_id`` = ``job_id``) of the job's error group, same
    command and parameters. Raises JobNotFound, or ValueError when the group is empty."""
    parent = get_job(store, job_id)
    group = error_group(store, job_id)
    if not group:
        raise ValueError(f"job {job_id} has no failed or expired tasks to re-run")
    return create_job(
        store,
        kind="rerun",
        name=f"{parent.name} (errors)",
        command=parent.command,
        devices=group,
        priority=parent.priority if priority is None else priority,
        parameters=parent.parameters,
        idempotency_key=idempotency_key,
        parent_id=job_id,
        schedule_id=parent.schedule_id,
        created_by=created_by,
        correlation_id=parent.correlation_id,
    )


__all__ = [
    "ERROR_GROUP",
    "AttemptEnd",
    "AttemptRecord",
    "Finished",
    "JobNotFound",
    "JobRecord",
    "NewJob",
    "TaskFinished",
    "TaskNotFound",
    "TaskRecord",
    "TaskSpec",
    "attempts_of",
    "begin_attempt",
    "cancel_job",
    "counts",
    "create_job",
    "device_type_of",
    "end_attempt",
    "endpoint_for",
    "error_code_text",
    "error_group",
    "find_job_by_key",
    "finish_task",
    "get_job",
    "job_state",
    "list_jobs",
    "load_task",
    "load_tasks",
    "mark_retry",
    "open_tasks",
    "path_name",
    "record_attempt_end",
    "rerun_errors",
    "roll_up",
    "set_result",
    "task_key",
    "task_records",
]
