"""Jobs and tasks: on-demand quick jobs (one meter, now), group jobs, scheduled jobs and a bulk
"read the whole population" job, each with a priority and runtime parameters; task and job
states with progress counts; the error group of a job and its re-run.

A task is one command on one device. The engine only needs what :class:`Task` carries; the
command itself is anything with an ``execute(session, parameters)`` coroutine (see
:class:`Operation`), so the command model can change without touching the engine.
"""

from __future__ import annotations

import enum
import itertools
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from drivers.base import ConnectionParams, MeterSession
from headend import commands


class Priority(enum.IntEnum):
    """Lower is more urgent."""

    CONTROL = 0  # disconnect/connect asked by an operator
    ON_DEMAND = 10  # one meter, now
    GROUP = 30
    SCHEDULED = 50
    BULK = 90


class TaskState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    RETRY_WAIT = "retry_wait"  # failed, waiting for its backoff before the next attempt
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # last attempt failed, or a failure that is not retried
    EXPIRED = "expired"  # not started before its deadline
    CANCELLED = "cancelled"


TERMINAL = frozenset(
    {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.EXPIRED, TaskState.CANCELLED}
)


class JobKind(enum.StrEnum):
    ON_DEMAND = "on_demand"
    GROUP = "group"
    SCHEDULED = "scheduled"
    BULK = "bulk"
    RERUN = "rerun"  # the error group of another job


class JobState(enum.StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"  # every task succeeded
    COMPLETED_WITH_ERRORS = "completed_with_errors"


class Operation(Protocol):
    """A command the engine runs on an open session."""

    name: str

    async def execute(self, session: MeterSession, parameters: Mapping[str, Any]) -> object: ...


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A device and how to reach it: the primary path, and a backup path when it has one.
    ``*_path`` names the communication path (or network segment) the throttles count."""

    device_id: str
    primary: ConnectionParams
    primary_path: str
    backup: ConnectionParams | None = None
    backup_path: str | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    number: int
    path: str
    outcome: str  # "ok" or the error code
    delay_after: float | None = None  # the backoff before the next attempt


_task_ids = itertools.count(1)


@dataclass(eq=False, slots=True)
class Task:
    job: Job
    endpoint: Endpoint
    operation: Operation
    priority: int
    deadline: float | None = None  # epoch seconds; not started by then -> EXPIRED
    idempotency_key: str = ""
    attempt: int = 0  # attempts made so far; the queue orders first attempts first
    state: TaskState = TaskState.QUEUED
    primary_failures: int = 0
    on_backup: bool = False
    not_before: float = 0.0
    submitted_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    result: object = None
    error: str | None = None
    history: list[Attempt] = field(default_factory=list)
    id: int = field(default_factory=lambda: next(_task_ids))

    @property
    def device_id(self) -> str:
        return self.endpoint.device_id

    @property
    def path(self) -> str:
        backup = self.endpoint.backup_path
        return backup if self.on_backup and backup is not None else self.endpoint.primary_path

    @property
    def params(self) -> ConnectionParams:
        backup = self.endpoint.backup
        return backup if self.on_backup and backup is not None else self.endpoint.primary


@dataclass(eq=False)
class Job:
    kind: JobKind
    name: str
    priority: int
    parameters: dict[str, Any] = field(default_factory=dict)
    tasks: list[Task] = field(default_factory=list)
    error_group: list[Task] = field(default_factory=list)
    counts: Counter[TaskState] = field(default_factory=Counter)
    created_at: float = field(default_factory=time.time)
    parent: Job | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def set_state(self, task: Task, state: TaskState) -> None:
        """Move a task to ``state``, keeping the counts; a failed task joins the error group."""
        self.counts[task.state] -= 1
        self.counts[state] += 1
        task.state = state
        if state is TaskState.FAILED or state is TaskState.EXPIRED:
            self.error_group.append(task)

    @property
    def done(self) -> int:
        return sum(self.counts[s] for s in TERMINAL)

    @property
    def finished(self) -> bool:
        return self.done == len(self.tasks)

    @property
    def state(self) -> JobState:
        if not self.finished:
            return JobState.RUNNING
        if self.counts[TaskState.SUCCEEDED] == len(self.tasks):
            return JobState.COMPLETED
        return JobState.COMPLETED_WITH_ERRORS

    def progress(self) -> dict[str, int]:
        """Counts per task state, plus ``total`` and ``done``."""
        out = {state.value: self.counts[state] for state in TaskState}
        out["total"] = len(self.tasks)
        out["done"] = self.done
        return out

    def rerun_errors(self, *, priority: int | None = None) -> Job:
        """A new job of the error group's devices (same operations, fresh attempts)."""
        job = Job(
            JobKind.RERUN,
            f"{self.name} (errors)",
            self.priority if priority is None else priority,
            dict(self.parameters),
            parent=self,
        )
        for task in self.error_group:
            job.add(task.endpoint, task.operation, idempotency_key=f"{task.idempotency_key}/r")
        return job

    def add(
        self,
        endpoint: Endpoint,
        operation: Operation,
        *,
        deadline: float | None = None,
        idempotency_key: str | None = None,
    ) -> Task:
        key = idempotency_key or f"{self.id}:{endpoint.device_id}:{operation.name}"
        task = Task(self, endpoint, operation, self.priority, deadline, key)
        self.tasks.append(task)
        self.counts[TaskState.QUEUED] += 1
        return task


class JobError(ValueError):
    """A job that cannot be created; the message says why."""


def _deadline(value: datetime | float | None) -> float | None:
    if value is None or isinstance(value, float | int):
        return value
    if value.tzinfo is None:
        raise JobError("a deadline must be an aware datetime")
    return value.timestamp()


def _build(
    kind: JobKind,
    name: str,
    endpoints: Iterable[Endpoint],
    operation: Operation,
    priority: int,
    parameters: Mapping[str, Any] | None,
    deadline: datetime | float | None,
) -> Job:
    job = Job(kind, name, int(priority), dict(parameters or {}))
    limit = _deadline(deadline)
    seen: set[str] = set()
    for endpoint in endpoints:
        if endpoint.device_id in seen:
            continue  # a device listed twice is read once
        seen.add(endpoint.device_id)
        job.add(endpoint, operation, deadline=limit)
    if not job.tasks:
        raise JobError(f"job {name!r} has no devices")
    return job


def quick_job(
    endpoint: Endpoint,
    operation: Operation,
    *,
    priority: int = Priority.ON_DEMAND,
    parameters: Mapping[str, Any] | None = None,
    deadline: datetime | float | None = None,
) -> Job:
    """One meter, now."""
    return _build(
        JobKind.ON_DEMAND,
        f"{operation.name} {endpoint.device_id}",
        [endpoint],
        operation,
        priority,
        parameters,
        deadline,
    )


def group_job(
    name: str,
    endpoints: Iterable[Endpoint],
    operation: Operation,
    *,
    priority: int = Priority.GROUP,
    parameters: Mapping[str, Any] | None = None,
    deadline: datetime | float | None = None,
) -> Job:
    return _build(JobKind.GROUP, name, endpoints, operation, priority, parameters, deadline)


def bulk_job(
    endpoints: Iterable[Endpoint],
    operation: Operation,
    *,
    name: str = "population read",
    priority: int = Priority.BULK,
    parameters: Mapping[str, Any] | None = None,
    deadline: datetime | float | None = None,
) -> Job:
    """The whole population (whatever ``endpoints`` yields) from one request."""
    return _build(JobKind.BULK, name, endpoints, operation, priority, parameters, deadline)


def scheduled_job(
    name: str,
    endpoints: Iterable[Endpoint],
    operation: Operation,
    *,
    fired_at: datetime,
    window: tuple[datetime, datetime] | None,
    priority: int = Priority.SCHEDULED,
    parameters: Mapping[str, Any] | None = None,
    deadline: datetime | float | None = None,
) -> Job:
    """The job one firing of a schedule runs; ``window`` (from
    :func:`headend.scheduler.data_window`) lands in the parameters as ``start``/``end``."""
    merged = dict(parameters or {})
    merged["fired_at"] = fired_at
    if window is not None:
        merged["start"], merged["end"] = window
    return _build(JobKind.SCHEDULED, name, endpoints, operation, priority, merged, deadline)


# ---------------------------------------------------------------------------------------------
# Operations


@dataclass(frozen=True, slots=True)
class ReadRegisters:
    identifiers: tuple[str, ...]
    name: str = "read_registers"

    async def execute(self, session: MeterSession, parameters: Mapping[str, Any]) -> object:
        return await session.read_registers(list(self.identifiers))


@dataclass(frozen=True, slots=True)
class ReadLoadProfile:
    """The profile over the job's ``start``/``end`` parameters."""

    profile: str | None = None
    name: str = "read_load_profile"

    async def execute(self, session: MeterSession, parameters: Mapping[str, Any]) -> object:
        start = first_capture(parameters["start"], parameters)
        return await session.read_load_profile(start, parameters["end"], self.profile)


DEFAULT_CAPTURE_MINUTES = 15


def first_capture(start: datetime, parameters: Mapping[str, Any] | None = None) -> datetime:
    """Where to start a load-profile read for the window ``(start, end]``: the capture at or
    before ``start`` on the capture grid.

    Interval consumption is the difference of consecutive captures of a cumulative register
    (:mod:`headend.profile_deltas`), so the first interval of the window, which ends at the
    first capture after ``start``, needs the capture at or before ``start`` too. A driver's
    range includes its start (:meth:`drivers.base.MeterSession.read_load_profile`), so a
    window starting on the grid is read as it is (a day's read gives 97 captures, 96
    deltas); one starting between captures is extended back to the capture before it. The
    grid is the job parameter ``interval_minutes`` (else 15) on the UTC day for an aware
    ``start``, on the meter's clock for a naive one. The job's window is left as it is."""
    if not isinstance(start, datetime):
        return start  # the driver refuses it with its reason
    minutes = (parameters or {}).get("interval_minutes")
    if not isinstance(minutes, int) or isinstance(minutes, bool) or not 0 < minutes <= 1440:
        minutes = DEFAULT_CAPTURE_MINUTES
    if 1440 % minutes:
        return start
    if start.tzinfo is not None and start.utcoffset() is not None:
        start = start.astimezone(UTC)
    midnight = start.replace(hour=0, minute=0, second=0, microsecond=0)
    offset = (start - midnight) % timedelta(minutes=minutes)
    return start - offset


# ---------------------------------------------------------------------------------------------
# headend.commands as engine operations


_COMMAND_PRIORITY = {
    0: Priority.CONTROL,
    1: Priority.ON_DEMAND,
    2: Priority.SCHEDULED,
    3: Priority.BULK,
}


@dataclass(frozen=True, slots=True)
class CommandOperation:
    """Runs one :mod:`headend.commands` command on a session and returns its result type.
    A switch control reads the switch state first and sends nothing when the meter is
    already where it was asked to be (so a control delivered twice acts once)."""

    command: commands.Command

    def __post_init__(self) -> None:
        supported = (
            commands.ReadRegisters,
            commands.ReadIntervalData,
            commands.FullRead,
            commands.ReadEvents,
            commands.Control,
        )
        if not isinstance(self.command, supported):
            raise JobError(f"the engine does not run {self.command.kind} commands yet")

    @property
    def name(self) -> str:
        return self.command.kind

    @property
    def priority(self) -> Priority:
        return _COMMAND_PRIORITY[int(self.command.priority)]

    async def execute(self, session: MeterSession, parameters: Mapping[str, Any]) -> object:
        command = self.command
        if isinstance(command, commands.ReadRegisters):
            registers = await session.read_registers(list(command.obis))
            return commands.Readings(command, registers=tuple(registers))
        if isinstance(command, commands.ReadIntervalData):
            start = first_capture(command.start, parameters)
            rows = await session.read_load_profile(start, command.end, command.profile)
            return commands.Readings(command, profile=tuple(rows))
        if isinstance(command, commands.FullRead):
            start = first_capture(command.start, parameters)
            rows = await session.read_load_profile(start, command.end, command.profile)
            registers = await session.read_registers(list(command.obis))
            return commands.Readings(command, registers=tuple(registers), profile=tuple(rows))
        if isinstance(command, commands.ReadEvents):
            events = await session.read_events(command.log, command.start, command.end)
            return commands.Events(command, tuple(events))
        assert isinstance(command, commands.Control)
        action = command.action
        if action is commands.ControlAction.CLOCK_SYNC:
            clock = await session.set_clock(datetime.now(UTC))
            return commands.ControlOutcome(command, clock=clock)
        if action not in commands.SWITCH_ACTIONS:
            raise JobError(f"the engine does not run {action} controls yet")
        before = await session.read_switch_state()
        if before.control_state in commands.expected_states(action):
            return commands.ControlOutcome(command, switch=before, already=True)
        act = {
            commands.ControlAction.DISCONNECT: session.disconnect,
            commands.ControlAction.CONNECT: session.connect,
            commands.ControlAction.ARM: session.arm,
        }[action]
        return commands.ControlOutcome(command, switch=await act())


def command_job(
    kind: JobKind,
    name: str,
    work: Iterable[tuple[Endpoint, commands.Command]],
    *,
    parameters: Mapping[str, Any] | None = None,
    deadline: datetime | float | None = None,
) -> Job:
    """A job of :mod:`headend.commands` commands, one per device; the job takes the most
    urgent command's priority and each task keeps its command's idempotency key."""
    pairs = [(endpoint, CommandOperation(command)) for endpoint, command in work]
    if not pairs:
        raise JobError(f"job {name!r} has no devices")
    priority = min(op.priority for _, op in pairs)
    job = Job(kind, name, int(priority), dict(parameters or {}))
    limit = _deadline(deadline)
    for endpoint, op in pairs:
        if endpoint.device_id != op.command.device:
            raise JobError(
                f"{op.command.kind} for {op.command.device} sent to {endpoint.device_id}"
            )
        job.add(endpoint, op, deadline=limit, idempotency_key=op.command.idempotency_key)
    return job


__all__ = [
    "TERMINAL",
    "Attempt",
    "CommandOperation",
    "Endpoint",
    "Job",
    "JobError",
    "JobKind",
    "JobState",
    "Operation",
    "Priority",
    "ReadLoadProfile",
    "ReadRegisters",
    "Task",
    "TaskState",
    "bulk_job",
    "command_job",
    "first_capture",
    "group_job",
    "quick_job",
    "scheduled_job",
]
