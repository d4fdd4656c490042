"""The head-end service: what every northbound channel (router, CLI, scheduler) calls to get
work done on meters.

:meth:`HeadEnd.submit` checks a :class:`JobRequest` when it is made, not hours later: unknown
meters, a meter retired or without a communication path, a security profile whose keys are
missing or cannot be decrypted with the configured master key, an empty selection, a
deadline in the past, a command no worker runs. Nothing is created when it refuses
(:class:`JobRefused` with a :class:`cim.errors.ErrorCode` and one :class:`DeviceProblem` per
meter); with ``partial=True`` the job runs for the good meters and the refused ones come back
in :attr:`JobCreated.refused`. The job and its tasks are persisted (:mod:`headend.jobstore`)
and their ids published on the task bus; workers (this process or others) do the rest.

The same ``idempotency_key`` again returns the job it made first (``existing=True``) and
creates nothing. :meth:`wait` returns once the job is finished (it polls the database every
``poll_interval`` and wakes at once on the JobFinished event); :meth:`view` reads the job from
the database. Listeners (:meth:`add_listener`) get every :mod:`headend.events` event from the
bus while the service is started (:meth:`start`, :meth:`stop`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from cim.errors import ErrorCode
from headend import commands, jobstore
from headend.events import HeadEndEvent, JobFinished
from headend.jobs import CommandOperation, JobError, JobKind, Priority
from headend.keys import Keyring, MasterKeyError
from headend.registry import SecurityProfile, _load
from headend.schema import (
    CORRELATION_ID_LENGTH,
    FINISHED_JOB_STATES,
    IDEMPOTENCY_KEY_LENGTH,
    meter_paths,
)
from headend.taskbus import TaskBus, TaskMessage
from mdm.database import Store, reading
from mdm.devices import group_members
from mdm.errors import MdmError
from mdm.schema import devices as devices_table

log = logging.getLogger(__name__)

PUBLISH_CHUNK = 1000
_KIND_PRIORITY = {
    JobKind.ON_DEMAND: Priority.ON_DEMAND,
    JobKind.GROUP: Priority.GROUP,
    JobKind.SCHEDULED: Priority.SCHEDULED,
    JobKind.BULK: Priority.BULK,
    JobKind.RERUN: Priority.GROUP,
}


@dataclass(frozen=True)
class JobRequest:
    command: commands.Command  # what to do on each meter (its device is replaced per meter)
    devices: Sequence[str] = ()  # mRIDs; or
    group: str | None = None  # a device group name (sub-groups included); or
    everyone: bool = False  # the whole registered population
    kind: JobKind | None = None  # default: on_demand for 1 device, group, bulk
    name: str | None = None
    priority: int | None = None  # default: controls first, then by kind (headend.jobs.Priority)
    deadline: datetime | None = None  # a task not started by then expires
    idempotency_key: str | None = None  # same key again -> the same job, not a new one
    created_by: str = "system"
    schedule_id: int | None = None
    partial: bool = False  # True: refused devices are reported, the job runs for the rest
    parameters: Mapping[str, Any] | None = None  # runtime parameters (data window...)
    #: The CorrelationID of the CIM request the job is for (1..100 characters): stored with
    #: the job, carried by its tasks' events and so into the EventMessages pushed for them.
    correlation_id: str | None = None


@dataclass(frozen=True)
class DeviceProblem:
    mrid: str
    code: ErrorCode
    reason: str


class JobRefused(Exception):
    """Nothing was created: ``code`` and ``reason`` say why, ``problems`` per meter."""

    def __init__(
        self, code: ErrorCode, reason: str, problems: Sequence[DeviceProblem] = ()
    ) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.problems = list(problems)

    def __str__(self) -> str:
        return f"[{self.code.code}] {self.reason}"


@dataclass(frozen=True)
class JobCreated:
    job_id: str
    refused: list[DeviceProblem]
    existing: bool


@dataclass(frozen=True)
class TaskView:
    mrid: str
    state: str
    attempts: int
    error_code: str | None
    error_text: str | None
    result: dict | None


@dataclass(frozen=True)
class JobView:
    id: str
    kind: str
    name: str
    state: str
    counts: dict[str, int]
    tasks: list[TaskView]
    created_at: datetime
    finished_at: datetime | None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_JOB_STATES


Listener = Callable[[HeadEndEvent], None]


class HeadEnd:
    def __init__(
        self,
        store: Store,
        bus: TaskBus,
        *,
        keyring: Keyring | None = None,
        poll_interval: float = 0.05,
    ) -> None:
        self.store = store
        self.bus = bus
        self._keyring = keyring
        self.poll_interval = poll_interval
        self._listeners: list[Listener] = []
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._consumer: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"HeadEnd({self.store!r}, {self.bus!r})"

    # -- submitting ------------------------------------------------------------------------

    def submit(self, request: JobRequest) -> JobCreated:
        """Check, persist and publish a job (see the module docstring)."""
        command = _check_request(request)
        if request.idempotency_key is not None:
            existing = jobstore.find_job_by_key(self.store, request.idempotency_key)
            if existing is not None:
                return JobCreated(existing, [], True)
        mrids = self._select(request)
        kind = request.kind or (
            JobKind.BULK
            if request.everyone
            else JobKind.GROUP
            if request.group is not None or len(mrids) > 1
            else JobKind.ON_DEMAND
        )
        kind = JobKind(kind)
        priority = request.priority
        if priority is None:
            priority = (
                Priority.CONTROL if isinstance(command, commands.Control) else _KIND_PRIORITY[kind]
            )
        return self._create(
            command,
            mrids,
            kind=kind,
            name=request.name,  # None: named after the meters it runs for (see _create)
            priority=int(priority),
            request=request,
            parent_id=None,
            parameters=request.parameters,
        )

    def rerun_errors(
        self,
        job_id: str,
        *,
        created_by: str = "system",
        idempotency_key: str | None = None,
        partial: bool = True,
    ) -> JobCreated:
        """A new job (kind rerun) of the failed and expired tasks of ``job_id``, checked like
        a submitted one; the refused meters come back in ``refused`` (``partial``)."""
        try:
            parent = jobstore.get_job(self.store, job_id)
        except jobstore.JobNotFound:
            raise JobRefused(ErrorCode.BAD_VALUE, f"no job {job_id!r}") from None
        if idempotency_key is not None:
            existing = jobstore.find_job_by_key(self.store, idempotency_key)
            if existing is not None:
                return JobCreated(existing, [], True)
        group = jobstore.error_group(self.store, job_id)
        if not group:
            raise JobRefused(
                ErrorCode.MISSING_ELEMENT, f"job {job_id} has no failed or expired tasks"
            )
        request = JobRequest(
            command=parent.command,
            devices=[mrid for _, mrid in group],
            idempotency_key=idempotency_key,
            created_by=created_by,
            schedule_id=parent.schedule_id,
            partial=partial,
            correlation_id=parent.correlation_id,
        )
        return self._create(
            parent.command,
            request.devices,
            kind=JobKind.RERUN,
            name=f"{parent.name} (errors)",
            priority=parent.priority,
            request=request,
            parent_id=job_id,
            parameters=parent.parameters,
        )

    def cancel(self, job_id: str) -> JobView:
        """Cancel the job's tasks not started yet; running ones finish."""
        finished = jobstore.cancel_job(self.store, job_id)
        if finished is not None:
            self._publish_event(
                JobFinished(
                    finished.job_id, finished.state, finished.counts, finished.correlation_id
                )
            )
        return self.view(job_id)

    def republish(self, job_id: str | None = None) -> int:
        """Publish again the tasks not finished (after a restart of the bus or broker); a
        task delivered twice is run once (the worker checks its state). Returns the count."""
        rows = jobstore.open_tasks(self.store, job_id)
        messages = [TaskMessage(*row) for row in rows]
        for start in range(0, len(messages), PUBLISH_CHUNK):
            self.bus.publish_tasks(messages[start : start + PUBLISH_CHUNK])
        return len(messages)

    def _create(
        self,
        command: commands.Command,
        mrids: Sequence[str],
        *,
        kind: JobKind,
        name: str | None,
        priority: int,
        request: JobRequest,
        parent_id: str | None,
        parameters: Mapping[str, Any] | None,
    ) -> JobCreated:
        good, problems = self._check_devices(mrids)
        if problems and (not request.partial or not good):
            raise JobRefused(problems[0].code, _summary(problems, len(mrids)), problems)
        if name is None:  # the meters it runs for: with ``partial``, not the refused ones
            name = _default_name(command, kind, request, [mrid for _, mrid in good])
        try:
            created = jobstore.create_job(
                self.store,
                kind=kind.value,
                name=name,
                command=command,
                devices=good,
                priority=priority,
                parameters=parameters,
                idempotency_key=request.idempotency_key,
                parent_id=parent_id,
                schedule_id=request.schedule_id,
                created_by=request.created_by,
                deadline=request.deadline,
                correlation_id=request.correlation_id,
            )
        except ValueError as exc:  # a parameter with no JSON form
            raise JobRefused(ErrorCode.BAD_VALUE, str(exc)) from None
        if created.existing:
            return JobCreated(created.job_id, [], True)
        messages = [
            TaskMessage(task_id, created.job_id, created.priority, key)
            for task_id, key in created.tasks
        ]
        try:
            for start in range(0, len(messages), PUBLISH_CHUNK):
                self.bus.publish_tasks(messages[start : start + PUBLISH_CHUNK])
        except Exception as exc:
            log.error("job %s: publishing its tasks failed (%s); cancelled", created.job_id, exc)
            jobstore.cancel_job(self.store, created.job_id)
            raise JobRefused(
                ErrorCode.INTERNAL, f"the task bus did not take the job ({exc}); cancelled"
            ) from None
        return JobCreated(created.job_id, problems, False)

    # -- checks ----------------------------------------------------------------------------

    def _select(self, request: JobRequest) -> list[str]:
        chosen = sum((bool(request.devices), request.group is not None, bool(request.everyone)))
        if chosen == 0:
            raise JobRefused(
                ErrorCode.MISSING_ELEMENT, "no devices: give mRIDs, a group or everyone"
            )
        if chosen > 1:
            raise JobRefused(
                ErrorCode.BAD_VALUE, "give mRIDs, a group or everyone: only one of them"
            )
        if request.devices:
            if isinstance(request.devices, str | bytes):
                raise JobRefused(ErrorCode.BAD_VALUE, "devices is a list of mRIDs, not a string")
            mrids = list(dict.fromkeys(request.devices))
            for mrid in mrids:
                if not isinstance(mrid, str) or not mrid:
                    raise JobRefused(ErrorCode.BAD_VALUE, f"{mrid!r} is not an mRID")
            return mrids
        if request.group is not None:
            try:
                mrids = group_members(self.store, request.group, recursive=True)
            except MdmError:
                raise JobRefused(
                    ErrorCode.UNKNOWN_DEVICE, f"no device group {request.group!r}"
                ) from None
            if not mrids:
                raise JobRefused(
                    ErrorCode.MISSING_ELEMENT, f"device group {request.group!r} has no devices"
                )
            return mrids
        query = (
            select(devices_table.c.mrid)
            .join(meter_paths, meter_paths.c.device_id == devices_table.c.id)
            .where(meter_paths.c.role == "primary", devices_table.c.status != "removed")
            .order_by(devices_table.c.id)
        )
        with reading(self.store) as conn:
            mrids = list(conn.execute(query).scalars())
        if not mrids:
            raise JobRefused(ErrorCode.MISSING_ELEMENT, "no meters are registered")
        return mrids

    def _keyring_or_error(self) -> Keyring | str:
        if self._keyring is None:
            try:
                self._keyring = Keyring.from_env()
            except MasterKeyError as exc:
                return str(exc)
        return self._keyring

    def _check_devices(
        self, mrids: Sequence[str]
    ) -> tuple[list[tuple[int, str]], list[DeviceProblem]]:
        """(device id, mRID) of the meters a worker can reach, and the problems of the rest."""
        with reading(self.store) as conn:
            stored = _load(conn, mrids)
        good: list[tuple[int, str]] = []
        problems: list[DeviceProblem] = []
        keyed: dict[str, list[tuple[int, str, str, str]]] = {}  # key id -> (id, mrid, name, tok)
        for mrid in mrids:
            s = stored.get(mrid)
            if s is None:
                problems.append(
                    DeviceProblem(
                        mrid, ErrorCode.UNKNOWN_DEVICE, f"no meter {mrid!r} is registered"
                    )
                )
                continue
            if s.device.status == "removed":
                problems.append(
                    DeviceProblem(mrid, ErrorCode.UNKNOWN_DEVICE, f"meter {mrid!r} is removed")
                )
                continue
            primary = s.paths.get("primary")
            if primary is None:
                problems.append(
                    DeviceProblem(
                        mrid,
                        ErrorCode.DEVICE_UNREACHABLE,
                        f"meter {mrid!r} has no communication path (register it with "
                        "`openhes meters import`)",
                    )
                )
                continue
            if primary.serial_port:
                problems.append(
                    DeviceProblem(
                        mrid,
                        ErrorCode.BAD_VALUE,
                        f"meter {mrid!r} has a serial path; the drivers do not support serial "
                        "paths yet",
                    )
                )
                continue
            security = s.security or SecurityProfile()
            needed = []
            if security.keyed:
                needed += ["encryption_key", "authentication_key"]
            if security.authentication == "lls":
                needed.append("password")
            missing = [name for name in needed if not s.tokens.get(name)]
            if missing:
                problems.append(
                    DeviceProblem(
                        mrid,
                        ErrorCode.BAD_VALUE,
                        f"meter {mrid!r}: keys missing for its security profile "
                        f"({security.authentication}, {security.security_policy}): "
                        + ", ".join(missing),
                    )
                )
                continue
            if needed:
                name = needed[0]
                token = s.tokens[name]
                assert token is not None
                key_id = token.split(".")[1] if token.count(".") == 2 else "?"
                keyed.setdefault(key_id, []).append((s.id, mrid, name, token))
            else:
                good.append((s.id, mrid))
        if keyed:
            good += self._check_keys(keyed, problems)
            order = {mrid: i for i, mrid in enumerate(mrids)}
            good.sort(key=lambda item: order[item[1]])
            problems.sort(key=lambda p: order.get(p.mrid, 0))
        return good, problems

    def _check_keys(
        self,
        keyed: dict[str, list[tuple[int, str, str, str]]],
        problems: list[DeviceProblem],
    ) -> list[tuple[int, str]]:
        """Meters whose secrets the master key decrypts: one trial decryption per master key
        the secrets are stored under."""
        ring = self._keyring_or_error()
        good = []
        for items in keyed.values():
            reason: str | None = ring if isinstance(ring, str) else None
            if isinstance(ring, Keyring):
                _, mrid, name, token = items[0]
                try:
                    ring.decrypt(token, f"{mrid}/{name}")
                except MasterKeyError as exc:
                    reason = str(exc)
            for device_id, mrid, _, _ in items:
                if reason is None:
                    good.append((device_id, mrid))
                else:
                    problems.append(
                        DeviceProblem(
                            mrid, ErrorCode.INTERNAL, f"meter {mrid!r}: keys unusable: {reason}"
                        )
                    )
        return good

    # -- reading ---------------------------------------------------------------------------

    def view(self, job_id: str) -> JobView:
        """The job as stored now; raises jobstore.JobNotFound."""
        job = jobstore.get_job(self.store, job_id)
        return JobView(
            id=job.id,
            kind=job.kind,
            name=job.name,
            state=job.state,
            counts=jobstore.counts(self.store, job_id),
            tasks=[
                TaskView(t.mrid, t.state, t.attempts, t.error_code, t.error_text, t.result)
                for t in jobstore.task_records(self.store, job_id)
            ],
            created_at=job.created_at,
            finished_at=job.finished_at,
        )

    async def wait(self, job_id: str, timeout: float | None = None) -> JobView:
        """The job once finished; TimeoutError after ``timeout`` seconds, JobNotFound for an
        unknown job."""
        event = asyncio.Event()
        self._waiters.setdefault(job_id, set()).add(event)
        try:
            async with asyncio.timeout(timeout):
                while jobstore.job_state(self.store, job_id) not in FINISHED_JOB_STATES:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(event.wait(), self.poll_interval)
                    event.clear()
        finally:
            waiters = self._waiters.get(job_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[job_id]
        return self.view(job_id)

    # -- events ----------------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    async def start(self) -> None:
        """Consume the bus's events (for listeners and :meth:`wait`)."""
        if self._consumer is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._consumer = await asyncio.to_thread(self.bus.event_consumer, self._from_bus)

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await asyncio.to_thread(consumer.stop)

    async def __aenter__(self) -> HeadEnd:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _from_bus(self, event: HeadEndEvent) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._dispatch(event)
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._dispatch, event)

    def _dispatch(self, event: HeadEndEvent) -> None:
        if isinstance(event, JobFinished):
            for waiter in self._waiters.get(event.job_id, ()):
                waiter.set()
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("a head-end listener failed on %s", type(event).__name__)

    def _publish_event(self, event: HeadEndEvent) -> None:
        try:
            self.bus.publish_event(event)
        except Exception as exc:
            log.warning("could not publish %s: %s", type(event).__name__, exc)


# --- helpers ----------------------------------------------------------------------------------


def _check_request(request: JobRequest) -> commands.Command:
    command = request.command
    if not isinstance(command, commands.Command):
        raise JobRefused(ErrorCode.BAD_VALUE, "the request has no command")
    try:
        CommandOperation(command)
    except JobError as exc:
        raise JobRefused(ErrorCode.UNSUPPORTED_VERB, str(exc)) from None
    if isinstance(command, commands.Control) and command.action not in (
        *commands.SWITCH_ACTIONS,
        commands.ControlAction.CLOCK_SYNC,
    ):
        raise JobRefused(
            ErrorCode.UNSUPPORTED_VERB, f"the engine does not run {command.action} controls yet"
        )
    deadline = request.deadline
    if deadline is not None:
        if not isinstance(deadline, datetime) or deadline.utcoffset() is None:
            raise JobRefused(ErrorCode.BAD_DATETIME, "the deadline must be an aware date-time")
        if deadline <= datetime.now(UTC):
            raise JobRefused(
                ErrorCode.BAD_DATETIME, f"the deadline {deadline.isoformat()} is in the past"
            )
    correlation = request.correlation_id
    if correlation is not None and (
        not isinstance(correlation, str) or not 0 < len(correlation) <= CORRELATION_ID_LENGTH
    ):
        raise JobRefused(
            ErrorCode.BAD_VALUE,
            f"the correlation id must be 1..{CORRELATION_ID_LENGTH} characters",
        )
    key = request.idempotency_key
    if key is not None and (not isinstance(key, str) or not 0 < len(key) <= IDEMPOTENCY_KEY_LENGTH):
        raise JobRefused(
            ErrorCode.BAD_VALUE,
            f"the idempotency key must be 1..{IDEMPOTENCY_KEY_LENGTH} characters",
        )
    if request.kind is not None and request.kind not in JobKind._value2member_map_:
        raise JobRefused(ErrorCode.BAD_VALUE, f"{request.kind!r} is not a job kind")
    if request.priority is not None and (
        isinstance(request.priority, bool) or not isinstance(request.priority, int)
    ):
        raise JobRefused(ErrorCode.BAD_VALUE, f"priority {request.priority!r} is not an integer")
    return command


def _default_name(
    command: commands.Command, kind: JobKind, request: JobRequest, mrids: Sequence[str]
) -> str:
    what = command.kind
    if isinstance(command, commands.Control):
        what = f"{what} {command.action.value}"
    if kind is JobKind.BULK or request.everyone:
        return f"{what} (population)"
    if request.group is not None:
        return f"{what} group {request.group}"
    if len(mrids) == 1:
        return f"{what} {mrids[0]}"
    return f"{what} ({len(mrids)} meters)"


def _summary(problems: Sequence[DeviceProblem], asked: int) -> str:
    first = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{len(problems)} of {asked} meters refused: {first.reason}{more}"


__all__ = [
    "DeviceProblem",
    "HeadEnd",
    "JobCreated",
    "JobRefused",
    "JobRequest",
    "JobView",
    "TaskView",
]
