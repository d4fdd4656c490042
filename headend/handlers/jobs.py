"""Head-end work for a handler: submit one job (a command template for a list of devices),
wait for it within the request's time, and sort its tasks into successes and per-device
errors.

The job's idempotency key derives from the request's MessageID (and the handler's ``key``),
so the same request run again (a duplicate that slipped past the message log, a resume
after a restart) finds the job it created before instead of creating another; the head-end
derives each task's key from it and the device. The job's name carries the request's
correlation (``<Noun> <CorrelationID or MessageID>``), so a job seen in the job list or in
a head-end event can be traced to the request that made it; the job also keeps that
correlation (:func:`job_correlation`) and its events carry it into the EventMessages pushed
for them (Header CorrelationID).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cim.envelope import ReplyError
from cim.errors import ErrorCode
from headend import commands
from headend.handlers import Context, device_error

#: Task states that end a task without success.
FAILED_STATES = frozenset({"failed", "expired", "cancelled"})
NAME_LENGTH = 100


@dataclass
class JobResult:
    job_id: str | None = None
    tasks: dict[str, Any] = field(default_factory=dict)  # mrid -> TaskView, finished or not
    errors: dict[str, ReplyError] = field(default_factory=dict)  # mrid -> its error
    finished: bool = False


def job_name(ctx: Context, what: str) -> str:
    header = ctx.header
    correlation = header.correlation_id or header.message_id
    return (f"{what} {correlation}" if correlation else what)[:NAME_LENGTH]


def job_correlation(ctx: Context) -> str | None:
    """The job's correlation id: the request's CorrelationID, else its MessageID (as the
    asynchronous reply is correlated); None without either or when longer than a job keeps
    (a warning says so). The EventMessages pushed for the job's results carry it."""
    from headend.schema import CORRELATION_ID_LENGTH

    header = ctx.header
    correlation = header.correlation_id or header.message_id or None
    if correlation is not None and len(correlation) > CORRELATION_ID_LENGTH:
        warning = (
            f"the CorrelationID is longer than {CORRELATION_ID_LENGTH} characters: the "
            "EventMessages pushed for this request's results do not carry it"
        )
        if warning not in ctx.warnings:
            ctx.warnings.append(warning)
        return None
    return correlation


async def run_job(
    ctx: Context,
    command: commands.Command,
    mrids: Sequence[str],
    *,
    name: str,
    key: str,
) -> JobResult:
    """Submit ``command`` for ``mrids`` and wait (at most the request's time left)."""
    from headend.service import JobRefused, JobRequest

    result = JobResult()
    assert ctx.headend is not None
    request = JobRequest(
        command=command,
        devices=tuple(mrids),
        name=job_name(ctx, name),
        idempotency_key=ctx.idempotency_key(key),
        created_by=ctx.principal.name,
        partial=True,
        correlation_id=job_correlation(ctx),
    )
    try:
        created = await ctx.run_blocking(ctx.headend.submit, request)  # writes, off the loop
    except JobRefused as refused:
        for problem in refused.problems:
            result.errors[problem.mrid] = device_error(problem.mrid, problem.code, problem.reason)
        for mrid in mrids:
            if mrid not in result.errors:
                result.errors[mrid] = device_error(mrid, refused.code, refused.reason)
        result.finished = True
        return result
    result.job_id = created.job_id
    for problem in created.refused:
        result.errors[problem.mrid] = device_error(problem.mrid, problem.code, problem.reason)
    try:
        view = await ctx.headend.wait(created.job_id, timeout=max(ctx.time_left(), 0.001))
        result.finished = True
    except TimeoutError:
        view = ctx.headend.view(created.job_id)
    for task in view.tasks:
        result.tasks[task.mrid] = task
        if task.state in FAILED_STATES:
            code = task.error_code or ErrorCode.DEVICE_ERROR.code
            reason = task.error_text or f"the task ended {task.state}"
            result.errors[task.mrid] = device_error(task.mrid, code, reason)
        elif task.state != "succeeded":
            result.errors[task.mrid] = device_error(
                task.mrid,
                ErrorCode.DEVICE_TIMEOUT,
                f"not finished within {ctx.timeout:g} s (task {task.state}, job "
                f"{created.job_id}); it goes on running",
            )
    return result


__all__ = ["FAILED_STATES", "JobResult", "job_correlation", "job_name", "run_job"]
