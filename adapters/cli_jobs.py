"""``openhes jobs``, ``openhes schedules`` and ``openhes stats``: run and watch jobs, keep
recurring schedules, read the communication statistics and KPIs.

Tables for people, ``--json`` for scripts, a progress bar on stderr while a job runs; every
error is one line on stderr and a non-zero exit status (1: refused or failed, 2: usage,
database or broker; see :mod:`adapters.cli_support`). The database is ``--database`` or
``$OPENHES_DATABASE_URL``; the broker ``--broker`` or ``$OPENHES_BROKER_URL`` (default
``memory://``: then ``jobs run`` and ``jobs rerun-errors`` run a worker with the DLMS driver
in this process; with a real broker the ``openhes worker`` processes do the work).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import getpass
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from adapters.cli_support import (
    ENV_DATABASE,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    CliError,
    ProgressBar,
    cell,
    command_name,
    guarded,
    open_database,
    percent,
    positive_int,
    print_json,
    reach_broker,
    table,
)

ENV_BROKER = "OPENHES_BROKER_URL"
ENV_NAMESPACE = "OPENHES_BROKER_NAMESPACE"
CONTROLS = ("connect", "disconnect", "arm", "clock_sync")
READS = ("registers", "profile", "events", "full")


def _guard(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Every failure as one line on stderr, never a traceback (statuses of
    :mod:`adapters.cli_support`)."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        from headend.jobstore import JobNotFound
        from headend.service import JobRefused

        def body() -> int:
            try:
                return handler(args)
            except JobRefused as exc:
                more = [f"{p.mrid}: {p.reason}" for p in exc.problems[1:6]]
                if len(exc.problems) > 6:
                    more.append(f"{len(exc.problems) - 6} more")
                also = f" (also {'; '.join(more)})" if more else ""
                raise CliError(f"[{exc.code.code}] {exc.reason}{also}") from None
            except TimeoutError:  # an OSError: before guarded() sees it
                if _memory(args):
                    raise CliError(
                        "timed out waiting for the job; with the memory:// broker its "
                        "unfinished tasks stop with this command and stay open until "
                        "`openhes serve` on this database starts and runs them (see "
                        "`openhes jobs show`)"
                    ) from None
                raise CliError(
                    "timed out waiting for the job (the workers go on with it; see "
                    "`openhes jobs show`)"
                ) from None

        return guarded(command_name(args), body, refused=(JobNotFound,))

    return run


def _who() -> str:
    try:
        return (getpass.getuser() or "cli")[:64]
    except (KeyError, OSError):
        return "cli"


def _open_store(args: argparse.Namespace) -> Any:
    return open_database(args.database)


# --- output -----------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


# --- argument types ---------------------------------------------------------------------------


def _when(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 date-time") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone offset (add Z or +01:00)")
    return value


def _dates(text: str) -> list[date]:
    try:
        return [date.fromisoformat(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of YYYY-MM-DD dates") from None


def _zone(text: str) -> str:
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not an IANA time zone") from None
    return text


def _mrids(values: Sequence[str] | None) -> tuple[str, ...]:
    out: list[str] = []
    for value in values or ():
        out += [m.strip() for m in value.split(",") if m.strip()]
    return tuple(dict.fromkeys(out))


# --- parsers ----------------------------------------------------------------------------------


def _database(parser: argparse.ArgumentParser, *, json_flag: bool = True) -> None:
    parser.add_argument("--database", default=None, help=f"database URL (default: ${ENV_DATABASE})")
    if json_flag:
        parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def _targets(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--meters", action="append", metavar="MRID[,MRID...]", help="meters by mRID")
    group.add_argument("--group", help="a device group (sub-groups included)")
    group.add_argument("--all", dest="everyone", action="store_true", help="every registered meter")


def _action(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument(
        "--read",
        choices=READS,
        help="what to read (full: the load profile and the registers in one session)",
    )
    group.add_argument("--control", choices=CONTROLS, help="the control to carry out")
    parser.add_argument(
        "--obis",
        action="append",
        metavar="OBIS[,OBIS...]",
        help="registers to read (--read registers or full; default: the energy registers)",
    )


def _broker(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--broker", default=None, help=f"broker URL (default: ${ENV_BROKER} or memory://)"
    )
    parser.add_argument(
        "--namespace",
        default=None,
        help=f"prefix of the broker's queues, as the workers use (default: ${ENV_NAMESPACE} "
        "or openhes)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="seconds to wait for the job (default 600; with memory:// its unfinished tasks "
        "then wait for `openhes serve` on the same database)",
    )
    parser.add_argument(
        "--no-wait",
        action="store_true",
        help="print the job id and return at once (needs an amqp:// broker: with memory:// "
        "nothing would run the tasks)",
    )
    parser.add_argument(
        "--concurrency",
        type=positive_int,
        default=50,
        help="sessions of the in-process worker (memory:// only; default 50)",
    )


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    jobs = commands.add_parser("jobs", help="run and watch jobs on meters")
    sub = jobs.add_subparsers(dest="jobs_command", metavar="COMMAND", required=True)

    listing = sub.add_parser("list", help="the most recent jobs with their progress")
    _database(listing)
    listing.add_argument("--state", action="append", help="only jobs in this state")
    listing.add_argument("--kind", action="append", help="only jobs of this kind")
    listing.add_argument("--limit", type=positive_int, default=20)
    listing.set_defaults(handler=cmd_jobs_list)

    show = sub.add_parser("show", help="one job: progress, durations, errors, tasks")
    _database(show)
    show.add_argument("job", help="the job id (or a unique prefix of it)")
    show.add_argument("--tasks", action="store_true", help="list the tasks")
    show.add_argument("--attempts", action="store_true", help="list each task's attempts")
    show.add_argument("--state", action="append", help="only tasks in this state")
    show.add_argument("--limit", type=positive_int, default=100, help="tasks shown (default 100)")
    show.set_defaults(handler=cmd_jobs_show)

    run = sub.add_parser("run", help="create a job and wait for it, showing its progress")
    _database(run)
    _targets(run)
    _action(run)
    run.add_argument(
        "--window",
        choices=("none", "yesterday"),
        default="none",
        help="data window of a profile, events or full read (default: the last day)",
    )
    run.add_argument("--zone", type=_zone, default="UTC", help="time zone of --window")
    run.add_argument("--priority", type=int, default=None, help="lower runs first")
    run.add_argument("--name", default=None)
    run.add_argument(
        "--partial", action="store_true", help="run for the good meters when some are refused"
    )
    _broker(run)
    run.set_defaults(handler=cmd_jobs_run)

    rerun = sub.add_parser("rerun-errors", help="a new job of a job's failed and expired tasks")
    _database(rerun)
    rerun.add_argument("job", help="the job id (or a unique prefix of it)")
    _broker(rerun)
    rerun.set_defaults(handler=cmd_jobs_rerun)

    schedules = commands.add_parser("schedules", help="recurring scheduled jobs")
    ssub = schedules.add_subparsers(dest="schedules_command", metavar="COMMAND", required=True)
    add = ssub.add_parser("add", help="create a schedule (checked now, not when it fires)")
    _database(add)
    add.add_argument("name")
    add.add_argument(
        "--rule", required=True, help="cron ('30 2 * * *') or 'every N minutes|hours|days'"
    )
    add.add_argument("--zone", type=_zone, default="UTC", help="IANA time zone (default UTC)")
    add.add_argument("--start", type=_when, default=None, help="ISO date-time (default now)")
    add.add_argument("--end", type=_when, default=None, help="ISO date-time, exclusive")
    add.add_argument(
        "--except", dest="exceptions", type=_dates, default=[], help="dates it does not fire"
    )
    _targets(add)
    _action(add)
    add.add_argument(
        "--window",
        choices=("none", "yesterday", "since_last_success"),
        default="none",
        help="data window of each firing (profile, events and full reads)",
    )
    add.add_argument("--priority", type=int, default=None, help="lower runs first")
    add.add_argument("--disabled", action="store_true", help="create it switched off")
    add.add_argument(
        "--min-interval",
        type=positive_int,
        default=5,
        help="minutes; refuse schedules firing more often (default 5)",
    )
    add.set_defaults(handler=cmd_schedules_add)
    slist = ssub.add_parser("list", help="the schedules and their next firing")
    _database(slist)
    slist.set_defaults(handler=cmd_schedules_list)
    for name, handler, text in (
        ("enable", cmd_schedules_enable, "switch a schedule on (from its next firing)"),
        ("disable", cmd_schedules_disable, "switch a schedule off"),
        ("remove", cmd_schedules_remove, "delete a schedule"),
    ):
        one = ssub.add_parser(name, help=text)
        _database(one)
        one.add_argument("name")
        one.set_defaults(handler=handler)

    stats = commands.add_parser(
        "stats", help="communication statistics and KPIs (read and communication success)"
    )
    _database(stats)
    stats.add_argument(
        "--by", choices=("meter", "path", "type"), default=None, help="group the statistics"
    )
    stats.add_argument("--days", type=positive_int, default=7, help="days back (default 7)")
    stats.add_argument(
        "--silent-days",
        type=positive_int,
        default=None,
        help="list meters without a successful session in this many days",
    )
    stats.add_argument("--zone", type=_zone, default="UTC", help="time zone of the days")
    stats.add_argument("--limit", type=positive_int, default=20, help="groups shown (default 20)")
    stats.set_defaults(handler=cmd_stats)


# --- jobs -------------------------------------------------------------------------------------


def _resolve_job(store: Any, text: str) -> str:
    from sqlalchemy import select

    from headend.schema import jobs

    with store.connect() as conn:
        if conn.execute(select(jobs.c.id).where(jobs.c.id == text)).first() is not None:
            return text
        like = text.replace("\\", "").replace("%", "").replace("_", "")
        found = (
            conn.execute(select(jobs.c.id).where(jobs.c.id.like(f"{like}%")).limit(2))
            .scalars()
            .all()
        )
    if len(found) == 1 and like:
        return found[0]
    if len(found) > 1:
        raise CliError(f"job id {text!r} is ambiguous: give more of it")
    raise CliError(f"no job {text!r}")


@_guard
def cmd_jobs_list(args: argparse.Namespace) -> int:
    from headend import monitor

    store = _open_store(args)
    try:
        found = monitor.list_jobs(
            store, limit=args.limit, states=args.state or (), kinds=args.kind or ()
        )
    finally:
        store.close()
    if args.json:
        print_json([job.as_dict() for job in found])
        return EXIT_OK
    if not found:
        print("no jobs")
        return EXIT_OK
    rows = [
        (
            job.id[:12],
            job.kind,
            job.state,
            job.total,
            _pct(job.progress),
            _pct(job.success),
            job.created_at,
            job.name,
        )
        for job in found
    ]
    print(table(("JOB", "KIND", "STATE", "TASKS", "DONE", "OK", "CREATED", "NAME"), rows))
    return EXIT_OK


@_guard
def cmd_jobs_show(args: argparse.Namespace) -> int:
    from headend import monitor

    store = _open_store(args)
    try:
        job_id = _resolve_job(store, args.job)
        summary = monitor.job_summary(store, job_id)
        durations = monitor.job_durations(store, job_id)
        causes = monitor.error_causes(store, job_id)
        tasks = []
        if args.tasks or args.attempts or args.state:
            tasks = monitor.job_tasks(
                store,
                job_id,
                states=args.state or (),
                limit=args.limit,
                with_attempts=args.attempts,
            )
    finally:
        store.close()
    if args.json:
        data = summary.as_dict()
        data["durations"] = durations.as_dict()
        data["error_causes"] = causes
        data["tasks"] = [t.as_dict() for t in tasks]
        print_json(data)
        return EXIT_OK
    s = summary
    print(f"job       {s.id}")
    print(f"name      {s.name}")
    print(f"kind      {s.kind}   priority {s.priority}   by {s.created_by}")
    print(f"state     {s.state}")
    print(f"progress  {s.done}/{s.total} ({_pct(s.progress)}), success {_pct(s.success)}")
    print("tasks     " + ", ".join(f"{k} {v}" for k, v in sorted(s.counts.items())))
    print(
        f"created   {cell(s.created_at)}   started {cell(s.started_at)}   "
        f"finished {cell(s.finished_at)}"
    )
    for label, p in (
        ("queue wait", durations.queue_wait),
        ("run time", durations.run_time),
        ("attempt", durations.attempt_time),
    ):
        print(
            f"{label:<11}p50 {_seconds(p.p50)}  p95 {_seconds(p.p95)}  "
            f"max {_seconds(p.max)}  (n={p.count})"
        )
    print(
        f"traffic   {durations.attempts} attempts, {durations.bytes_sent} B sent, "
        f"{durations.bytes_received} B received"
    )
    if causes:
        print("errors    " + ", ".join(f"{code} x{n}" for code, n in sorted(causes.items())))
    if tasks:
        print()
        rows = [
            (
                t.mrid,
                t.state,
                t.attempts,
                t.path,
                _seconds(t.queue_wait),
                _seconds(t.run_time),
                t.error_code,
                t.error_text,
            )
            for t in tasks
        ]
        print(table(("METER", "STATE", "TRIES", "PATH", "WAIT", "RUN", "CODE", "ERROR"), rows))
        if args.attempts:
            for t in tasks:
                for a in t.attempt_list:
                    print(
                        f"  {t.mrid} #{a.number} {a.path} {cell(a.started_at)} "
                        f"{_seconds(a.seconds)} {a.outcome or 'running'}"
                        + (f" ({a.detail})" if a.detail else "")
                    )
    return EXIT_OK


def _window(args: argparse.Namespace, now: datetime) -> tuple[datetime, datetime] | None:
    from headend.scheduler import Window, data_window

    if args.window == "none":
        return None
    return data_window(Window(args.window), now, ZoneInfo(args.zone))


def _action_of(args: argparse.Namespace) -> Any:
    from headend.job_actions import Action

    obis = _mrids(args.obis)
    if obis and args.read not in ("registers", "full"):
        raise CliError("--obis goes with --read registers or --read full", EXIT_USAGE)
    if args.control is not None:
        return Action(control=args.control)
    return Action(read=args.read, obis=obis)


@_guard
def cmd_jobs_run(args: argparse.Namespace) -> int:
    from headend.job_actions import TEMPLATE_DEVICE
    from headend.service import JobRequest

    action = _action_of(args)
    if args.window != "none" and not action.uses_window:
        raise CliError("--window goes with --read profile, events or full", EXIT_USAGE)
    now = datetime.now(UTC)
    window = _window(args, now)
    request = JobRequest(
        command=action.command(TEMPLATE_DEVICE, window, now=now),
        devices=_mrids(args.meters),
        group=args.group,
        everyone=args.everyone,
        name=args.name,
        priority=args.priority,
        created_by=_who(),
        partial=args.partial,
        parameters={"window": args.window},
    )
    return asyncio.run(_submit_and_watch(args, lambda headend: headend.submit(request)))


@_guard
def cmd_jobs_rerun(args: argparse.Namespace) -> int:
    def rerun(headend: Any) -> Any:
        return headend.rerun_errors(_resolve_job(headend.store, args.job), created_by=_who())

    return asyncio.run(_submit_and_watch(args, rerun))


def _broker_url(args: argparse.Namespace) -> str:
    return str(args.broker or os.environ.get(ENV_BROKER) or "memory://")


def _memory(args: argparse.Namespace) -> bool:
    return _broker_url(args).split("://", 1)[0].lower() == "memory"


async def _submit_and_watch(args: argparse.Namespace, make: Callable[[Any], Any]) -> int:
    from drivers.dlms import DlmsDriver
    from headend import monitor
    from headend.service import HeadEnd
    from headend.taskbus import TaskBus

    if args.no_wait and _memory(args):
        raise CliError(
            "--no-wait needs a broker that `openhes worker` or `openhes serve` share "
            "(--broker amqp://...): with memory:// the tasks run inside this command only",
            EXIT_USAGE,
        )
    store = _open_store(args)
    try:
        bus = TaskBus.from_url(
            _broker_url(args),
            namespace=args.namespace or os.environ.get(ENV_NAMESPACE) or "openhes",
        )
    except ValueError as exc:
        store.close()
        raise CliError(str(exc), EXIT_USAGE) from None
    try:
        reach_broker(bus)
    except CliError:
        bus.close()
        store.close()
        raise
    headend = HeadEnd(store, bus)
    stop = asyncio.Event()
    worker_task: asyncio.Task[None] | None = None
    bar: ProgressBar | None = None
    try:
        created = make(headend)
        for problem in created.refused:
            print(f"refused {problem.mrid}: {problem.reason}", file=sys.stderr)
        if args.no_wait:
            if args.json:
                print_json({"job": created.job_id, "existing": created.existing})
            else:
                print(created.job_id)
            return EXIT_OK
        if bus.memory:
            from headend.worker import Worker

            worker = Worker(store, bus, DlmsDriver(), concurrency=args.concurrency)
            worker_task = asyncio.create_task(worker.run(stop))
        await headend.start()
        if not args.json:
            print(f"job {created.job_id}" + (" (existing)" if created.existing else ""), flush=True)
        bar = None if args.json else ProgressBar(sys.stderr, "tasks done")
        loop = asyncio.get_running_loop()
        began = time.perf_counter()
        deadline = loop.time() + args.timeout
        while True:
            summary = monitor.job_summary(store, created.job_id)
            if bar is not None:
                counts = ", ".join(f"{k} {v}" for k, v in sorted(summary.counts.items()))
                bar.show(summary.done, summary.total, time.perf_counter() - began, counts)
            if summary.state in ("completed", "completed_with_errors", "cancelled"):
                failed = monitor.job_tasks(
                    store, created.job_id, states=("failed", "expired", "cancelled")
                )
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError
            with contextlib.suppress(TimeoutError):
                await headend.wait(created.job_id, timeout=min(0.5, remaining))
    finally:
        if bar is not None:
            bar.close()
        stop.set()
        if worker_task is not None:
            await asyncio.wait_for(worker_task, 60)
        await headend.stop()
        bus.close()
        store.close()
    return _finished(args, summary, failed)


def _finished(args: argparse.Namespace, summary: Any, failed: list[Any]) -> int:
    if args.json:
        data = summary.as_dict()
        data["failed"] = [t.as_dict() for t in failed]
        print_json(data)
    else:
        print(
            f"{summary.state}: {summary.counts.get('succeeded', 0)} of {summary.total} "
            f"succeeded ({_pct(summary.success)})"
        )
        for task in failed[:20]:
            print(f"  {task.mrid}: {task.state} [{task.error_code}] {task.error_text}")
    return EXIT_OK if summary.state == "completed" else EXIT_REFUSED


# --- schedules --------------------------------------------------------------------------------


@_guard
def cmd_schedules_add(args: argparse.Namespace) -> int:
    from headend.schedules import ScheduleDefinition, create_schedule

    definition = ScheduleDefinition(
        name=args.name,
        rule=args.rule,
        action=_action_of(args),
        zone=args.zone,
        start=args.start,
        end=args.end,
        exceptions=tuple(args.exceptions),
        devices=_mrids(args.meters),
        group=args.group,
        everyone=args.everyone,
        priority=args.priority,
        window=args.window,
        enabled=not args.disabled,
    )
    store = _open_store(args)
    try:
        rec = create_schedule(
            store, definition, who=_who(), min_interval=timedelta(minutes=args.min_interval)
        )
    finally:
        store.close()
    if args.json:
        print_json(rec.as_dict())
    else:
        nxt = _local(rec.next_due_at, rec.zone)
        print(f"schedule {rec.name} created; next firing {nxt}")
    return EXIT_OK


def _local(value: datetime | None, zone: str) -> str:
    if value is None:
        return "-"
    return value.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M %Z")


@_guard
def cmd_schedules_list(args: argparse.Namespace) -> int:
    from headend.schedules import list_schedules

    store = _open_store(args)
    try:
        found = list_schedules(store)
    finally:
        store.close()
    if args.json:
        print_json([rec.as_dict() for rec in found])
        return EXIT_OK
    if not found:
        print("no schedules")
        return EXIT_OK
    rows = [
        (
            rec.name,
            "on" if rec.enabled else "off",
            rec.rule,
            rec.zone,
            rec.action.describe(),
            rec.target,
            _local(rec.next_due_at, rec.zone),
            _local(rec.last_fired_at, rec.zone),
            rec.last_error,
        )
        for rec in found
    ]
    headers = ("NAME", "ON", "RULE", "ZONE", "ACTION", "TARGET", "NEXT", "LAST", "LAST ERROR")
    print(table(headers, rows))
    return EXIT_OK


def _switch(args: argparse.Namespace, enabled: bool) -> int:
    from headend.schedules import set_enabled

    store = _open_store(args)
    try:
        rec = set_enabled(store, args.name, enabled, who=_who())
    finally:
        store.close()
    if args.json:
        print_json(rec.as_dict())
    elif enabled:
        print(f"schedule {rec.name} enabled; next firing {_local(rec.next_due_at, rec.zone)}")
    else:
        print(f"schedule {rec.name} disabled")
    return EXIT_OK


@_guard
def cmd_schedules_enable(args: argparse.Namespace) -> int:
    return _switch(args, True)


@_guard
def cmd_schedules_disable(args: argparse.Namespace) -> int:
    return _switch(args, False)


@_guard
def cmd_schedules_remove(args: argparse.Namespace) -> int:
    from headend.schedules import delete_schedule

    store = _open_store(args)
    try:
        delete_schedule(store, args.name, who=_who())
    finally:
        store.close()
    if args.json:
        print_json({"removed": args.name})
    else:
        print(f"schedule {args.name} removed")
    return EXIT_OK


# --- stats ------------------------------------------------------------------------------------


@_guard
def cmd_stats(args: argparse.Namespace) -> int:
    from headend import statistics

    now = datetime.now(UTC)
    since = now - timedelta(days=args.days)
    today = now.astimezone(ZoneInfo(args.zone)).date()
    store = _open_store(args)
    try:
        summary = statistics.comm_statistics(store, since=since)[0]
        groups = (
            statistics.comm_statistics(store, by=args.by, since=since, limit=args.limit)
            if args.by
            else []
        )
        days = statistics.daily_kpis(
            store, today - timedelta(days=args.days - 1), today, zone=args.zone
        )
        silent = (
            statistics.silent_meters(store, args.silent_days, now=now) if args.silent_days else None
        )
    finally:
        store.close()
    if args.json:
        data: dict[str, Any] = {
            "since": since.isoformat(),
            "summary": summary.as_dict(),
            "days": [d.as_dict() for d in days],
        }
        if args.by:
            data["by"] = args.by
            data["groups"] = [g.as_dict() for g in groups]
        if silent is not None:
            data["silent_days"] = args.silent_days
            data["silent"] = [s.as_dict() for s in silent]
        print_json(data)
        return EXIT_OK
    s = summary
    print(
        f"last {args.days} days: {s.attempts} attempts, {s.successes} ok, {s.failures} failed "
        f"({percent(s.success_rate)} communication success)"
    )
    if s.by_cause:
        print("failures  " + ", ".join(f"{cause} {n}" for cause, n in s.by_cause.items()))
    print(
        f"traffic   {s.bytes_sent} B sent, {s.bytes_received} B received, "
        f"{s.seconds:.1f} s in sessions (mean {_seconds(s.mean_seconds)})"
    )
    print()
    rows = [
        (
            d.day.isoformat(),
            d.attempts,
            percent(d.comm_success_rate),
            d.meters,
            d.meters_read,
            percent(d.read_success_rate),
        )
        for d in days
    ]
    print(table(("DAY", "ATTEMPTS", "COMM OK", "METERS", "READ", "READ OK"), rows))
    if args.by:
        print()
        rows = [
            (
                g.key,
                g.attempts,
                g.successes,
                g.failures,
                percent(g.success_rate),
                ", ".join(f"{c} {n}" for c, n in g.by_cause.items()) or "-",
                g.bytes_sent + g.bytes_received,
                _seconds(g.mean_seconds),
            )
            for g in groups
        ]
        headers = (args.by.upper(), "ATTEMPTS", "OK", "FAILED", "RATE", "CAUSES", "BYTES", "MEAN")
        print(table(headers, rows))
    if silent is not None:
        print()
        print(f"{len(silent)} meter(s) without a successful session in {args.silent_days} days")
        for meter in silent[: args.limit]:
            last = cell(meter.last_success) if meter.last_success else "never"
            print(f"  {meter.mrid}  last {last}")
    return EXIT_OK


__all__ = ["register"]
