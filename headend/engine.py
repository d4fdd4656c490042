"""The asyncio executor: takes tasks from the queue, respects each path's throttle and each
task's deadline, runs the task's operation on a driver session with a per-task timeout,
applies retry, backoff and failover, records the outcome and fills the job's error group.

One dispatcher coroutine decides what starts; every started task is its own asyncio task, so
thousands of sessions are open at once (bounded by ``max_sessions`` and the throttles).

What happens to a task popped from the queue:

1. past its deadline: EXPIRED (its own status; the device joins the error group);
2. its path is at its session limit or out of connection tokens, or other tasks already wait
   for the path: it waits in the path's own queue (same order as the main queue), started
   as soon as the path allows (a session ends, or the token bucket refills);
3. else it starts: RUNNING, one more attempt.

A failed attempt with a retryable driver error and attempts left goes to RETRY_WAIT for its
backoff (:mod:`headend.retry`), then back into the queue (behind first attempts of the same
priority). After ``failover_after`` failures on the primary path the backup path is used.
Anything else is FAILED.

Urgent work (priority ``urgent_priority`` or more urgent: controls and on-demand reads) has
``urgent_reserve`` of the ``max_sessions`` slots to itself, so a bulk job holding every other
slot cannot make an operator's read wait for a session to end; an urgent task submitted while
nothing as urgent is queued and its path allows it starts at once, without a queue round
trip. Expiry is checked when a task would start, so a task that waits
behind a full path expires when its turn comes.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from drivers.base import Driver
from drivers.errors import DriverError, DriverTimeout
from headend.jobs import TERMINAL, Attempt, Job, Priority, Task, TaskState
from headend.queue import TaskQueue
from headend.retry import Backoff, RetryPolicy
from headend.throttle import Clock, Throttles

log = logging.getLogger(__name__)

TaskCallback = Callable[[Task], None]


@dataclass(frozen=True, slots=True)
class EngineConfig:
    max_sessions: int = 2000  # concurrent sessions over all paths
    task_timeout: float = 120.0  # seconds for one attempt: associate, operation, release
    queue_share: int = 10  # see headend.queue: 1 pop in `share` for the less urgent classes
    urgent_reserve: int = 100  # slots only urgent tasks may take (at most max_sessions // 10)
    urgent_priority: int = Priority.ON_DEMAND  # tasks this urgent or more are urgent
    retry: RetryPolicy = field(default_factory=RetryPolicy)


class Engine:
    def __init__(
        self,
        driver: Driver,
        *,
        config: EngineConfig | None = None,
        throttles: Throttles | None = None,
        clock: Clock = time.time,
        on_task_done: TaskCallback | None = None,
    ) -> None:
        self.driver = driver
        self.config = config or EngineConfig()
        self.clock = clock
        self.throttles = throttles or Throttles(clock=clock)
        self.backoff = Backoff(self.config.retry)
        self.on_task_done = on_task_done
        self._queue: TaskQueue[Task] = TaskQueue(self.config.queue_share)
        self._parked: dict[str, list[tuple[int, int, int, Task]]] = {}
        self._dirty: set[str] = set()
        self._delayed: list[tuple[float, int, Task]] = []
        self._rate_wakes: list[tuple[float, str]] = []
        self._running: set[asyncio.Task[None]] = set()
        self._seqs: dict[int, int] = {}
        self._waiters: dict[str, asyncio.Event] = {}
        self._wake = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._stopping = False
        self._active = 0  # attempts started and not yet through their finally

    # -- public ------------------------------------------------------------------------------

    def submit(self, job: Job) -> Job:
        if self._stopping:
            raise RuntimeError("the engine is stopping")
        now = self.clock()
        direct = self._dispatcher is not None and job.priority <= self.config.urgent_priority
        for task in job.tasks:
            if task.state is TaskState.QUEUED:
                task.submitted_at = now
                if direct and self._start_now(task, now):
                    continue
                self._seqs[task.id] = self._queue.push(task)
        self._waiters.setdefault(job.id, asyncio.Event())
        if job.finished:
            self._waiters[job.id].set()
        self._wake.set()
        return job

    async def wait(self, job: Job, timeout: float | None = None) -> Job:
        event = self._waiters.setdefault(job.id, asyncio.Event())
        if job.finished:
            event.set()
        async with asyncio.timeout(timeout):
            await event.wait()
        return job

    async def run(self, job: Job, timeout: float | None = None) -> Job:
        """Submit and wait."""
        return await self.wait(self.submit(job), timeout)

    def start(self) -> None:
        if self._dispatcher is None:
            self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch())

    async def stop(self, grace: float = 30.0) -> int:
        """Stop starting tasks and let running ones finish (cancelled after ``grace`` s).
        Returns how many tasks were left queued or waiting for a retry (still in their state,
        to be submitted again)."""
        self._stopping = True
        self._wake.set()
        if self._dispatcher is not None:
            await self._dispatcher
            self._dispatcher = None
        if self._running:
            _, pending = await asyncio.wait(set(self._running), timeout=grace)
            for running in pending:
                running.cancel()
            if pending:
                await asyncio.wait(pending)
        if self._timer is not None:
            self._timer.cancel()
        return len(self._queue) + len(self._delayed) + sum(map(len, self._parked.values()))

    async def __aenter__(self) -> Engine:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def active_sessions(self) -> int:
        return self._active

    # -- dispatcher --------------------------------------------------------------------------

    def _limit(self, priority: int) -> int:
        config = self.config
        if priority <= config.urgent_priority:
            return config.max_sessions
        reserve = min(config.urgent_reserve, config.max_sessions // 10)
        return config.max_sessions - reserve

    def _start_now(self, task: Task, now: float) -> bool:
        """Start an urgent task at submission when nothing as urgent waits, the engine has a
        slot and the path allows it: its queue wait is then nil."""
        waiting = self._queue.peek_priority()
        if waiting is not None and waiting <= task.priority:
            return False
        if self._active >= self._limit(task.priority) or task.path in self._parked:
            return False
        if task.deadline is not None and now > task.deadline:
            return False
        if not self.throttles.get(task.path).try_start():
            return False
        self._seqs[task.id] = -1 - task.id  # sorts before queued tasks if it is retried
        self._launch(task, now)
        return True

    async def _dispatch(self) -> None:
        while not self._stopping:
            self._wake.clear()
            now = self.clock()
            self._release_delayed(now)
            self._start_parked(now)
            queue = self._queue
            while queue and self._active < self._limit(queue.peek_priority() or 0):
                task, seq = queue.pop()
                if self._active >= self._limit(task.priority):  # the reserved share's pick
                    queue.push(task, seq)
                    break
                self._consider(task, seq, now)
            self._arm_timer(now)
            await self._wake.wait()

    def _release_delayed(self, now: float) -> None:
        delayed = self._delayed
        while delayed and delayed[0][0] <= now:
            _, seq, task = heapq.heappop(delayed)
            task.job.set_state(task, TaskState.QUEUED)
            self._queue.push(task, seq)
        wakes = self._rate_wakes
        while wakes and wakes[0][0] <= now:
            self._dirty.add(heapq.heappop(wakes)[1])

    def _start_parked(self, now: float) -> None:
        for path in list(self._dirty):
            heap = self._parked.get(path)
            throttle = self.throttles.get(path)
            while heap and self._active < self._limit(heap[0][0]):
                task = heap[0][3]
                if task.deadline is not None and now > task.deadline:
                    heapq.heappop(heap)
                    self._finish(task, TaskState.EXPIRED, "expired")
                    continue
                if not throttle.try_start():
                    self._schedule_rate_wake(path, now)
                    break
                heapq.heappop(heap)
                self._launch(task, now)
            if not heap:
                self._parked.pop(path, None)
                self._dirty.discard(path)
            elif self._active < self._limit(heap[0][0]):
                self._dirty.discard(path)  # blocked by the path: a release or timer re-marks it

    def _consider(self, task: Task, seq: int, now: float) -> None:
        if task.deadline is not None and now > task.deadline:
            self._finish(task, TaskState.EXPIRED, "expired")
            return
        path = task.path
        heap = self._parked.get(path)
        if heap is None:
            if self.throttles.get(path).try_start():
                self._launch(task, now)
                return
            heap = self._parked[path] = []
            self._schedule_rate_wake(path, now)
        heapq.heappush(heap, (task.priority, task.attempt, seq, task))

    def _schedule_rate_wake(self, path: str, now: float) -> None:
        wait = self.throttles.get(path).wait_time()
        if wait != float("inf"):
            heapq.heappush(self._rate_wakes, (now + max(wait, 1e-4), path))

    def _arm_timer(self, now: float) -> None:
        due = [q[0][0] for q in (self._delayed, self._rate_wakes) if q]
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if due:
            self._timer = asyncio.get_running_loop().call_later(
                max(0.0, min(due) - now), self._wake.set
            )

    # -- running one attempt -----------------------------------------------------------------

    def _launch(self, task: Task, now: float) -> None:
        task.job.set_state(task, TaskState.RUNNING)
        task.attempt += 1
        if task.started_at is None:
            task.started_at = now
        self._active += 1
        runner = asyncio.get_running_loop().create_task(self._attempt(task))
        self._running.add(runner)
        runner.add_done_callback(self._running.discard)

    async def _attempt(self, task: Task) -> None:
        path = task.path
        error: BaseException | None = None
        try:
            async with asyncio.timeout(self.config.task_timeout):
                async with await self.driver.associate(task.params) as session:
                    task.result = await task.operation.execute(session, task.job.parameters)
        except TimeoutError:
            error = DriverTimeout(f"task timed out after {self.config.task_timeout} s")
        except asyncio.CancelledError:
            self._finish(task, TaskState.CANCELLED, "cancelled")
            raise
        except Exception as exc:  # a driver raises DriverError; anything else is a bug
            error = exc
            if not isinstance(exc, DriverError):
                log.exception("task %s on %s failed unexpectedly", task.id, task.device_id)
        finally:
            self._active -= 1
            self.throttles.get(path).release()
            self._dirty.add(path)
            self._wake.set()
        if error is None:
            task.history.append(Attempt(task.attempt, path, "ok"))
            self._finish(task, TaskState.SUCCEEDED, None)
        else:
            self._failed(task, path, error)

    def _failed(self, task: Task, path: str, error: BaseException) -> None:
        code = getattr(error, "code", "internal_error")
        if not self.backoff.should_retry(error, task.attempt):
            task.history.append(Attempt(task.attempt, path, code))
            self._finish(task, TaskState.FAILED, code)
            return
        if not task.on_backup:
            task.primary_failures += 1
            has_backup = task.endpoint.backup is not None
            if self.backoff.use_backup(task.primary_failures, has_backup):
                task.on_backup = True
        delay = self.backoff.delay(task.attempt)
        task.history.append(Attempt(task.attempt, path, code, delay))
        task.error = code
        task.not_before = self.clock() + delay
        task.job.set_state(task, TaskState.RETRY_WAIT)
        heapq.heappush(self._delayed, (task.not_before, self._seqs[task.id], task))
        self._wake.set()

    def _finish(self, task: Task, state: TaskState, error: str | None) -> None:
        if task.state in TERMINAL:
            return
        task.error = error
        task.finished_at = self.clock()
        job = task.job
        job.set_state(task, state)
        self._seqs.pop(task.id, None)
        if self.on_task_done is not None:
            self.on_task_done(task)
        if job.finished:
            event = self._waiters.get(job.id)
            if event is not None:
                event.set()


__all__ = ["Engine", "EngineConfig"]
