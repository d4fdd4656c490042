"""A worker: takes tasks from the task bus and runs them on the job engine, any number of them
in any number of processes on any number of machines (issue #5, point 5).

For each :class:`headend.taskbus.TaskMessage` delivered:

1. the task is loaded from the database (:func:`headend.jobstore.load_task`); a task that is
   already finished (a redelivery: its worker committed the outcome and died before
   acknowledging) is acknowledged and not run again;
2. it runs on a :class:`headend.engine.Engine` (its throttles, retries with backoff, failover
   to the backup path, deadlines), wrapped as an engine task that carries the attempts
   already made, with :class:`headend.jobs.CommandOperation` (which reads the switch state
   before acting: a control delivered twice acts once);
3. each attempt is recorded (``begin_attempt``/``end_attempt``; a retry with ``mark_retry``);
4. the outcome is committed with the task's final state (:func:`headend.results.complete_task`
   or :func:`headend.results.fail_task`), the events they return are published, and only
   then is the message acknowledged.

A worker killed at any point has acknowledged nothing it has not committed: the broker hands
its tasks to another worker, which finds each either finished (acknowledged, skipped) or not
(run; a control checks the switch first). A worker told to stop takes no more tasks, lets
the running ones finish (for ``grace`` seconds) and leaves the rest unacknowledged.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import random
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from cim.errors import ErrorCode
from drivers.base import ConnectionParams, Driver, MeterSession, PingResult, frame_observer
from drivers.errors import DriverError
from headend import commlog, jobstore, results
from headend.commands import error_code_for
from headend.engine import Engine, EngineConfig
from headend.jobs import TERMINAL, CommandOperation, Job, JobError, JobKind, Task, TaskState
from headend.jobstore import AttemptEnd, TaskSpec
from headend.keys import Keyring
from headend.registry import MeterKeys, MeterRecord, Registry, SecurityProfile, _decrypt, _load
from headend.taskbus import Delivery, TaskBus
from headend.throttle import Throttles
from mdm.database import Store, reading
from mdm.schema import device_group_members, device_groups

log = logging.getLogger(__name__)
T = TypeVar("T")

FINISHED_STATES = frozenset(state.value for state in TERMINAL)
RETRY_LATER_S = 1.0  # a task that could not be loaded or committed goes back after this
TRANSIENT_SQLSTATES = frozenset({"40P01", "40001"})  # deadlock detected, serialization failure
DB_TRIES = 5


def _transient(exc: BaseException) -> bool:
    code = getattr(getattr(exc, "orig", None), "sqlstate", None) or getattr(
        getattr(exc, "orig", None), "pgcode", None
    )
    return isinstance(exc, OperationalError) and code in TRANSIENT_SQLSTATES


def _db(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``call`` with its transaction tried again when the database aborted it as a deadlock
    or serialization failure (it was rolled back whole, so running it again is safe)."""
    for attempt in range(DB_TRIES):
        try:
            return call(*args, **kwargs)
        except OperationalError as exc:
            if attempt == DB_TRIES - 1 or not _transient(exc):
                raise
            log.warning("%s: %s; trying again", call.__name__, exc.orig)
            time.sleep(random.uniform(0.005, 0.02) * 2**attempt)
    raise AssertionError("unreachable")


class _Frames:
    """The frame observer of one attempt (``drivers.base.frame_observer``): counts the bytes
    sent and received, always, and hands each frame to the debug log's recorder when debug
    logging is on for the meter or the job."""

    __slots__ = ("received", "recorder", "sent")

    def __init__(self, recorder: commlog.FrameRecorder | None = None) -> None:
        self.sent = 0
        self.received = 0
        self.recorder = recorder

    def __call__(self, direction: str, frame: bytes) -> None:
        if direction == "tx":
            self.sent += len(frame)
        else:
            self.received += len(frame)
        if self.recorder is not None:
            self.recorder.record(direction, frame)


@dataclass(eq=False, slots=True)
class _Run:
    """One delivered task on this worker."""

    delivery: Delivery
    spec: TaskSpec
    task: Task
    attempt: int | None = None  # the attempt number open in the database
    error: BaseException | None = None  # what the current attempt raised, for the record
    gone: str | None = None  # the task was found finished (this state) when an attempt began
    frames: _Frames | None = None  # the current attempt's byte counts and debug recorder


class _TaskGone(DriverError):
    """Raised instead of associating when the task was finished elsewhere (cancelled while it
    waited here): nothing is sent to the meter."""

    code = "task_finished"
    retryable = False


_CURRENT: contextvars.ContextVar[_Run | None] = contextvars.ContextVar("run", default=None)


def _note(exc: BaseException) -> None:
    run = _CURRENT.get()
    if run is not None:
        run.error = exc


class _NotingDriver(Driver):
    """The worker's driver, noting what an association raised for the attempt record."""

    def __init__(self, inner: Driver) -> None:
        self.inner = inner
        self.protocol = inner.protocol

    async def associate(self, params: ConnectionParams) -> MeterSession:
        run = _CURRENT.get()
        if run is not None and run.gone is not None:
            raise _TaskGone(f"the task is already {run.gone}")
        try:
            return await self.inner.associate(params)
        except Exception as exc:
            _note(exc)
            raise

    async def ping(self, params: ConnectionParams) -> PingResult:
        return await self.inner.ping(params)


@dataclass(frozen=True, slots=True)
class _NotingOperation:
    inner: CommandOperation

    @property
    def name(self) -> str:
        return self.inner.name

    async def execute(self, session: MeterSession, parameters: Mapping[str, Any]) -> object:
        try:
            return await self.inner.execute(session, parameters)
        except Exception as exc:
            _note(exc)
            raise


class _WorkerEngine(Engine):
    """The engine, telling the worker when an attempt begins and ends."""

    worker: Worker

    async def _attempt(self, task: Task) -> None:
        run = self.worker._runs.get(task.id)
        if run is None:  # not ours (cannot happen): run it plainly
            await super()._attempt(task)
            return
        self.worker._begin(run)
        # Set here, in the attempt's own asyncio task: the connection the driver opens in it
        # takes this observer (and the task's context is its own, so nothing leaks).
        run.frames = _Frames(self.worker._recorder(run))
        token = _CURRENT.set(run)
        observing = frame_observer.set(run.frames)
        try:
            await super()._attempt(task)
        except asyncio.CancelledError:
            self.worker._end_attempt(run, "interrupted", "the worker stopped mid-attempt")
            raise
        finally:
            frame_observer.reset(observing)
            _CURRENT.reset(token)
        if task.state is TaskState.RETRY_WAIT:
            self.worker._retry(run)


class CachingRegistry(Registry):
    """The registry with each meter's record kept for ``ttl`` seconds: a worker builds the
    endpoint of every task it runs, often several tasks of one meter in a row, and the
    record rarely changes. A change reaches the workers within ``ttl`` seconds (0: no
    caching). :meth:`prefetch` loads the records of many meters in a few queries (the
    worker asks it for each batch of deliveries); their key tokens are kept with them and
    decrypted when a session needs them."""

    LIMIT = 100_000

    def __init__(self, store: Store, keyring: Keyring | None = None, *, ttl: float = 30.0) -> None:
        super().__init__(store, keyring)
        self.ttl = ttl
        self._records: dict[str, tuple[float, MeterRecord]] = {}
        self._tokens: dict[str, tuple[float, dict[str, str | None]]] = {}

    def _keep(self, mrid: str, now: float, record: MeterRecord) -> None:
        if self.ttl > 0:
            if len(self._records) >= self.LIMIT:
                self._records.clear()
                self._tokens.clear()
            self._records[mrid] = (now, record)

    def get(self, mrid: str) -> MeterRecord:
        now = time.monotonic()
        hit = self._records.get(mrid)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        record = super().get(mrid)
        self._keep(mrid, now, record)
        return record

    def keys(self, mrid: str) -> MeterKeys:
        hit = self._tokens.get(mrid)
        if hit is not None and time.monotonic() - hit[0] < self.ttl:
            return _decrypt(self.keyring, mrid, hit[1])
        return super().keys(mrid)

    def prefetch(self, mrids: Sequence[str]) -> int:
        """Load the records of those of ``mrids`` not cached (unknown meters are left for
        :meth:`get` to refuse); returns how many were loaded."""
        if self.ttl <= 0:
            return 0
        now = time.monotonic()
        records = self._records
        missing = [
            m
            for m in dict.fromkeys(mrids)
            if (hit := records.get(m)) is None or now - hit[0] >= self.ttl
        ]
        if not missing:
            return 0
        with reading(self.store) as conn:
            stored = _load(conn, missing)
            ids = [s.id for s in stored.values()]
            groups: dict[int, list[str]] = {}
            for start in range(0, len(ids), 500):
                query = (
                    select(device_group_members.c.device_id, device_groups.c.name)
                    .join(device_groups, device_groups.c.id == device_group_members.c.group_id)
                    .where(device_group_members.c.device_id.in_(ids[start : start + 500]))
                    .order_by(device_groups.c.name)
                )
                for device_id, name in conn.execute(query):
                    groups.setdefault(device_id, []).append(name)
        loaded = 0
        for mrid, meter in stored.items():
            if "primary" not in meter.paths:
                continue
            record = MeterRecord(
                device=meter.device,
                primary=meter.paths["primary"],
                backup=meter.paths.get("backup"),
                security=meter.security or SecurityProfile(),
                groups=tuple(groups.get(meter.id, ())),
            )
            self._keep(mrid, now, record)
            self._tokens[mrid] = (now, meter.tokens)
            loaded += 1
        return loaded


class _DebugSwitches:
    """Which meters and jobs have debug logging on: the ``comm_debug`` switches, read again
    every ``refresh`` seconds (one query), so asking for every attempt costs nothing."""

    def __init__(self, store: Store, refresh: float) -> None:
        self.store = store
        self.refresh = refresh
        self._read_at = -float("inf")
        self._meters: dict[str, int] = {}
        self._jobs: dict[str, int] = {}

    def limit(self, mrid: str, job_id: str) -> int | None:
        """The frames per attempt to record, None when logging is off."""
        now = time.monotonic()
        if now - self._read_at >= self.refresh:
            self._read_at = now
            try:
                on = commlog.switches(self.store)
            except Exception:
                log.exception("cannot read the debug switches; frames are not recorded")
                on = []
            self._meters = {s.target: s.max_frames for s in on if s.scope == "meter"}
            self._jobs = {s.target: s.max_frames for s in on if s.scope == "job"}
        if not self._meters and not self._jobs:
            return None
        limits = [v for v in (self._meters.get(mrid), self._jobs.get(job_id)) if v is not None]
        return max(limits) if limits else None


def default_worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _text(run: _Run, cause: str) -> str:
    error = run.error
    if isinstance(error, DriverError):
        return f"{cause}: {error.message}"
    if error is not None:
        return f"{cause}: {type(error).__name__}: {error}"
    return cause


class Worker:
    """Runs tasks from ``bus`` with ``driver``. ``concurrency`` bounds the sessions open at
    once; ``prefetch`` (default twice that) the tasks held unacknowledged, queued here or
    waiting for a retry."""

    def __init__(
        self,
        store: Store,
        bus: TaskBus,
        driver: Driver,
        *,
        concurrency: int = 200,
        keyring: Keyring | None = None,
        worker_name: str | None = None,
        prefetch: int | None = None,
        config: EngineConfig | None = None,
        throttles: Throttles | None = None,
        grace: float = 30.0,
        registry_ttl: float = 30.0,
        debug_refresh: float = 5.0,
    ) -> None:
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, not {concurrency!r}")
        self.store = store
        self.bus = bus
        self.driver = driver
        self.concurrency = concurrency
        self.keyring = keyring
        self.registry = CachingRegistry(store, keyring, ttl=registry_ttl)
        self.debug = _DebugSwitches(store, debug_refresh)
        self.name = worker_name or default_worker_name()
        self.prefetch = prefetch or 2 * concurrency
        base = config or EngineConfig()
        self.config = EngineConfig(
            max_sessions=concurrency,
            task_timeout=base.task_timeout,
            queue_share=base.queue_share,
            urgent_reserve=min(base.urgent_reserve, concurrency // 10),
            urgent_priority=base.urgent_priority,
            retry=base.retry,
        )
        self.throttles = throttles
        self.grace = grace
        self.engine: _WorkerEngine | None = None
        self._runs: dict[int, _Run] = {}  # engine task id -> run
        self._by_task: dict[int, _Run] = {}  # database task id -> run
        self._stopping = False
        self._retry_handles: set[asyncio.TimerHandle] = set()
        self._pending: dict[int, Delivery] = {}  # delivered, to be loaded (in one query)
        self._running_jobs: set[str] = set()  # jobs known to be past "queued"
        # What this worker did, for its log and the tests.
        self.completed = 0
        self.failed = 0
        self.skipped = 0  # redeliveries of finished tasks
        self.errors = 0  # tasks that could not be loaded or committed (given back)

    # -- running -----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Consume and run tasks until ``stop`` is set."""
        loop = asyncio.get_running_loop()
        engine = _WorkerEngine(
            _NotingDriver(self.driver),
            config=self.config,
            throttles=self.throttles,
            on_task_done=self._done,
        )
        engine.worker = self
        self.engine = engine
        consumer = self.bus.task_consumer(self.prefetch)
        engine.start()
        consumer.start(self._deliver, loop)
        log.info("worker %s: consuming %s (concurrency %d)", self.name, self.bus, self.concurrency)
        try:
            await stop.wait()
        finally:
            self._stopping = True
            consumer.pause()
            for handle in self._retry_handles:
                handle.cancel()
            left = await engine.stop(self.grace)
            await asyncio.to_thread(consumer.stop)
            log.info(
                "worker %s stopped: %d completed, %d failed, %d skipped; %d left to others",
                self.name,
                self.completed,
                self.failed,
                self.skipped,
                left,
            )

    @property
    def active(self) -> int:
        """Tasks taken and not yet acknowledged."""
        return len(self._by_task)

    def _deliver(self, delivery: Delivery) -> None:
        """A delivery from the bus; the ones that arrive together are loaded together."""
        if self._stopping:
            return  # left unacknowledged: back to the queue when the consumer closes
        task_id = delivery.message.task_id
        if task_id in self._by_task or task_id in self._pending:
            delivery.ack()  # the same task twice here: the first delivery holds it
            return
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._load_pending)
        self._pending[task_id] = delivery

    def _load_pending(self) -> None:
        batch, self._pending = self._pending, {}
        if self._stopping or not batch:
            return  # left unacknowledged
        try:
            specs = _db(jobstore.load_tasks, self.store, list(batch), registry=self.registry)
        except Exception:
            log.exception("tasks %s...: cannot load them; giving them back", next(iter(batch)))
            for delivery in batch.values():
                self._give_back(delivery)
            return
        for task_id, delivery in batch.items():
            self._take(delivery, specs.get(task_id))

    def _take(self, delivery: Delivery, spec: TaskSpec | None) -> None:
        message = delivery.message
        if spec is None:
            log.warning("task %s: not in the database; dropped", message.task_id)
            delivery.ack()
            return
        if spec.state in FINISHED_STATES:
            self.skipped += 1
            delivery.ack()
            return
        if spec.endpoint is None:  # the meter cannot be reached as registered now
            code = spec.problem_code or ErrorCode.UNKNOWN_DEVICE.code
            self._fail(delivery, spec, TaskState.FAILED, code, spec.problem or "no endpoint")
            return
        try:
            task = self._engine_task(spec, message.priority)
        except (JobError, ValueError) as exc:
            self._fail(delivery, spec, TaskState.FAILED, ErrorCode.BAD_VALUE.code, str(exc))
            return
        if spec.job_state not in (None, "queued"):
            self._running_jobs.add(spec.job_id)
        run = _Run(delivery, spec, task)
        self._runs[task.id] = run
        self._by_task[message.task_id] = run
        assert self.engine is not None
        self.engine.submit(task.job)

    def _engine_task(self, spec: TaskSpec, priority: int) -> Task:
        operation = _NotingOperation(CommandOperation(spec.command))
        job = Job(JobKind.ON_DEMAND, f"task {spec.task_id}", int(priority), dict(spec.parameters))
        deadline = spec.deadline.timestamp() if isinstance(spec.deadline, datetime) else None
        task = job.add(
            spec.endpoint, operation, deadline=deadline, idempotency_key=spec.idempotency_key
        )
        task.attempt = int(spec.attempts)
        assert spec.endpoint is not None
        if spec.on_backup and spec.endpoint.backup is not None:
            task.on_backup = True
            task.primary_failures = self.config.retry.failover_after
        return task

    def _give_back(self, delivery: Delivery) -> None:
        self.errors += 1
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle | None = None

        def requeue() -> None:
            self._retry_handles.discard(handle)  # type: ignore[arg-type]
            delivery.requeue()

        handle = loop.call_later(RETRY_LATER_S, requeue)
        self._retry_handles.add(handle)

    # -- attempts ----------------------------------------------------------------------------

    def _begin(self, run: _Run) -> None:
        run.error = None
        spec = run.spec
        try:
            run.attempt = _db(
                jobstore.begin_attempt,
                self.store,
                spec.task_id,
                path=run.task.path,
                worker=self.name,
                device_type=spec.device_type,
                job_queued=spec.job_id not in self._running_jobs,
            )
            self._running_jobs.add(spec.job_id)
        except jobstore.TaskFinished as exc:  # cancelled, or finished elsewhere meanwhile
            run.gone = exc.state
            run.attempt = None
        except Exception:
            log.exception("task %s: cannot record the attempt", spec.task_id)
            run.attempt = None

    def _recorder(self, run: _Run) -> commlog.FrameRecorder | None:
        """The debug log's recorder for this attempt, when logging is on for the meter or
        the job (and the attempt is recorded)."""
        if run.attempt is None:
            return None
        spec = run.spec
        limit = self.debug.limit(spec.mrid, spec.job_id)
        if limit is None:
            return None
        return commlog.FrameRecorder(
            spec.mrid, spec.job_id, spec.task_id, run.attempt, max_frames=limit
        )

    def _attempt_end(self, run: _Run, outcome: str, detail: str | None) -> AttemptEnd | None:
        """How the open attempt ended (None: none is open); it is closed here."""
        number, run.attempt = run.attempt, None
        if number is None:
            return None
        frames = run.frames
        if frames is None:
            return AttemptEnd(number, outcome, detail)
        return AttemptEnd(number, outcome, detail, frames.sent, frames.received)

    def _save_frames(self, run: _Run) -> None:
        frames, run.frames = run.frames, None
        if frames is None or frames.recorder is None:
            return
        try:
            frames.recorder.save(self.store)
        except Exception:
            log.exception("task %s: cannot save the debug log", run.spec.task_id)

    def _end_attempt(self, run: _Run, outcome: str, detail: str | None) -> None:
        end = self._attempt_end(run, outcome, detail)
        if end is not None:
            try:
                _db(
                    jobstore.end_attempt,
                    self.store,
                    run.spec.task_id,
                    end.number,
                    outcome=end.outcome,
                    detail=end.detail,
                    bytes_sent=end.bytes_sent,
                    bytes_received=end.bytes_received,
                )
            except Exception:
                log.exception(
                    "task %s: cannot record the end of attempt %s", run.spec.task_id, end.number
                )
        self._save_frames(run)

    def _last_outcome(self, run: _Run) -> str:
        history = run.task.history
        return history[-1].outcome if history else (run.task.error or "internal_error")

    def _retry(self, run: _Run) -> None:
        cause = self._last_outcome(run)
        text = _text(run, cause)
        try:
            _db(
                jobstore.mark_retry,
                self.store,
                run.spec.task_id,
                error_code=error_code_for(cause).code,
                error_text=text,
                path=run.task.path,
                on_backup=run.task.on_backup,
                attempt=self._attempt_end(run, cause, text),
            )
        except Exception:
            log.exception("task %s: cannot record the retry", run.spec.task_id)
        self._save_frames(run)

    # -- outcomes ----------------------------------------------------------------------------

    def _done(self, task: Task) -> None:
        """The engine finished ``task`` (succeeded, failed, expired or cancelled)."""
        run = self._runs.pop(task.id, None)
        if run is None:
            return
        self._by_task.pop(run.spec.task_id, None)
        if run.gone is not None:
            self.skipped += 1
            run.delivery.ack()
            return
        if task.state is TaskState.SUCCEEDED:
            self._complete(run, self._attempt_end(run, "ok", None))
            self._save_frames(run)
            return
        if task.state is TaskState.CANCELLED:
            # Only a stopping engine cancels: the task stays as it is in the database and
            # unacknowledged, so another worker takes it.
            self._end_attempt(run, "interrupted", "the worker stopped mid-attempt")
            return
        end = None
        if task.state is TaskState.EXPIRED:
            code, text = ErrorCode.DEADLINE_EXPIRED.code, "not started before its deadline"
        else:
            cause = self._last_outcome(run)
            text = _text(run, cause)
            end = self._attempt_end(run, cause, text)
            code = error_code_for(cause).code
        self._fail(run.delivery, run.spec, task.state, code, text, end)
        self._save_frames(run)

    def _complete(self, run: _Run, end: AttemptEnd | None) -> None:
        """Store the result, finish the task and close its attempt, in one transaction."""
        try:
            events = _db(results.complete_task, self.store, run.spec, run.task.result, attempt=end)
        except Exception as exc:
            log.exception("task %s: cannot store its result", run.spec.task_id)
            self._fail(
                run.delivery,
                run.spec,
                TaskState.FAILED,
                ErrorCode.INTERNAL.code,
                f"the result could not be stored: {type(exc).__name__}: {exc}",
                end,
            )
            return
        self.completed += 1
        self._publish(events)
        run.delivery.ack()

    def _fail(
        self,
        delivery: Delivery,
        spec: TaskSpec,
        state: TaskState,
        code: str,
        text: str,
        end: AttemptEnd | None = None,
    ) -> None:
        try:
            events = _db(
                results.fail_task,
                self.store,
                spec,
                state=state.value,
                error_code=code,
                error_text=text,
                attempt=end,
            )
        except Exception:
            log.exception("task %s: cannot record its failure; giving it back", spec.task_id)
            self._give_back(delivery)
            return
        self.failed += 1
        self._publish(events)
        delivery.ack()

    def _publish(self, events: Sequence[object]) -> None:
        for event in events:
            try:
                self.bus.publish_event(event)
            except Exception:  # the outcome is committed; listeners read it from the store
                log.exception("cannot publish %s", type(event).__name__)


__all__ = ["Worker", "default_worker_name"]
