"""``openhes debug``: the per-communication debug log (:mod:`headend.commlog`) from the
command line: switch frame recording on or off for a meter or a job, list the switches, read
the recorded frames.

::

    openhes debug on  --meter MRID | --job ID [--minutes 60] [--max-frames 500]
    openhes debug off --meter MRID | --job ID
    openhes debug list [--expired] [--json]
    openhes debug frames --meter MRID [--job ID] [--limit 200] [--json]

Workers read the switches every few seconds, so recording starts with the next attempt on the
meter (or of the job) after that. A switch lasts ``--minutes`` (at most 7 days) and each
attempt records at most ``--max-frames`` frames; the log keeps at most 5,000 frames per meter
and 200,000 in all, the oldest pruned first. Exit status 0 done, 1 refused (unknown meter or
job, a switch that was not on, a duration out of range), 2 could not run (usage, database).
"""

from __future__ import annotations

import argparse
from datetime import timedelta
from typing import Any

from adapters.cli_support import (
    DATABASE_HELP,
    EXIT_OK,
    EXIT_REFUSED,
    CliError,
    command_name,
    database,
    guarded,
    positive_int,
    print_json,
    print_table,
)

DEFAULT_MINUTES = 60
DEFAULT_LIMIT = 200


def _who() -> str:
    import getpass

    try:
        return (getpass.getuser() or "cli")[:64]
    except (KeyError, OSError):
        return "cli"


def _job_id(store: Any, text: str) -> str:
    """The job's full id from the id or a unique prefix (CliError when there is none)."""
    from adapters.cli_jobs import _resolve_job

    return _resolve_job(store, text)


def _target(store: Any, args: argparse.Namespace) -> dict[str, str]:
    if args.meter is not None:
        return {"meter": args.meter}
    return {"job": _job_id(store, args.job)}


def _what(target: dict[str, str]) -> str:
    ((scope, name),) = target.items()
    return f"{scope} {name}"


def _run(args: argparse.Namespace, action: Any) -> int:
    def body() -> int:
        with database(args.database) as store:
            return int(action(store, args))

    return guarded(command_name(args), body)


# --- subcommands ------------------------------------------------------------------------------


def _on(store: Any, args: argparse.Namespace) -> int:
    from headend import commlog

    target = _target(store, args)
    switch = commlog.enable(
        store,
        duration=timedelta(minutes=args.minutes),
        max_frames=args.max_frames,
        who=_who(),
        **target,
    )
    if args.json:
        print_json(switch.as_dict())
    else:
        until = switch.until.strftime("%Y-%m-%d %H:%M:%SZ")
        print(
            f"debug log on for {_what(target)} until {until} "
            f"(at most {switch.max_frames} frames per attempt)"
        )
    return EXIT_OK


def _off(store: Any, args: argparse.Namespace) -> int:
    from headend import commlog

    target = _target(store, args)
    if not commlog.disable(store, who=_who(), **target):
        raise CliError(f"the debug log was not on for {_what(target)}", EXIT_REFUSED)
    if args.json:
        print_json({"off": _what(target)})
    else:
        print(f"debug log off for {_what(target)} (its recorded frames stay)")
    return EXIT_OK


def _list(store: Any, args: argparse.Namespace) -> int:
    from headend import commlog

    found = commlog.switches(store, expired=args.expired)
    if args.json:
        print_json([s.as_dict() for s in found])
        return EXIT_OK
    rows = [(s.scope, s.target, s.until, s.max_frames, s.created_by, s.created_at) for s in found]
    print_table(
        ("SCOPE", "TARGET", "UNTIL", "FRAMES", "BY", "SINCE"),
        rows,
        empty="the debug log is off for every meter and job",
    )
    return EXIT_OK


def _frames(store: Any, args: argparse.Namespace) -> int:
    from headend import commlog

    job = _job_id(store, args.job) if args.job is not None else None
    rows = commlog.frames(store, mrid=args.meter, job_id=job, limit=args.limit)
    if args.json:
        print_json([row.as_dict() for row in rows])
        return EXIT_OK
    if not rows:
        where = f"meter {args.meter}" + (f" in job {job}" if job else "")
        print(f"no frames recorded for {where}")
        return EXIT_OK
    print(commlog.format_frames(rows))
    return EXIT_OK


# --- parsers ----------------------------------------------------------------------------------


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database", default=None, help=DATABASE_HELP)
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def _scope(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--meter", metavar="MRID", help="a meter, by mRID")
    group.add_argument("--job", metavar="ID", help="a job, by id or a unique prefix of it")


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    debug = commands.add_parser(
        "debug",
        help="the communication debug log: frames exchanged with a meter, in hex",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = debug.add_subparsers(dest="debug_command", metavar="COMMAND", required=True)

    on = sub.add_parser("on", help="record the frames of a meter or a job for a while")
    _scope(on)
    on.add_argument(
        "--minutes",
        type=positive_int,
        default=DEFAULT_MINUTES,
        help=f"how long (default {DEFAULT_MINUTES}; at most 7 days = 10080)",
    )
    on.add_argument(
        "--max-frames",
        type=positive_int,
        default=500,
        help="frames recorded per attempt (default 500, at most 10000)",
    )
    _common(on)
    on.set_defaults(handler=lambda a: _run(a, _on))

    off = sub.add_parser("off", help="stop recording for a meter or a job")
    _scope(off)
    _common(off)
    off.set_defaults(handler=lambda a: _run(a, _off))

    listing = sub.add_parser("list", help="the switches that are on")
    listing.add_argument("--expired", action="store_true", help="also those that ran out")
    _common(listing)
    listing.set_defaults(handler=lambda a: _run(a, _list))

    frames = sub.add_parser("frames", help="a meter's recorded frames, oldest first")
    frames.add_argument("--meter", metavar="MRID", required=True, help="the meter, by mRID")
    frames.add_argument("--job", metavar="ID", default=None, help="only this job's frames")
    frames.add_argument(
        "--limit",
        type=positive_int,
        default=DEFAULT_LIMIT,
        help=f"the newest N frames (default {DEFAULT_LIMIT})",
    )
    _common(frames)
    frames.set_defaults(handler=lambda a: _run(a, _frames))


__all__ = ["register"]
