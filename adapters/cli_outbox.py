"""``openhes outbox`` and ``openhes subscriptions``: see and re-try what OpenHES sends, run a
delivery process, manage push endpoints.

::

    openhes outbox list [--state dead] [--limit 50]
    openhes outbox retry ID... | --all       # dead rows become pending, due now
    openhes outbox deliver [--lease S ...]   # a delivery process (until Ctrl-C / SIGTERM)
    openhes subscriptions list
    openhes subscriptions add NAME ADDRESS [--noun MeterReadings]... [--verb created]...
    openhes subscriptions remove|enable|disable NAME

Exit status: 0 done, 1 refused (no such row or subscription, a bad address), 2 could not
run (database). Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from adapters.cli_support import (
    DATABASE_HELP,
    EXIT_CANNOT_RUN,
    EXIT_OK,
    EXIT_REFUSED,
    CliError,
    database,
    fail,
    guarded,
    open_database,
)
from headend.outbox import STATES


def _run(prog: str, args: argparse.Namespace, action: Callable[..., int]) -> int:
    def body() -> int:
        with database(args.database) as store:
            return action(store, args)

    return guarded(prog, body)


# ---------------------------------------------------------------------- outbox


def _list(store, args: argparse.Namespace) -> int:
    from headend.outbox import Outbox

    outbox = Outbox(store)
    counts = outbox.counts()
    print(", ".join(f"{state} {counts[state]}" for state in STATES))
    for item in outbox.items(args.state, limit=args.limit):
        when = item.delivered_at or item.next_attempt_at
        error = f"  {item.last_error}" if item.last_error and item.state != "delivered" else ""
        print(
            f"{item.id:>6}  {item.state:<9}  {item.kind:<5}  {item.attempts:>3}  "
            f"{when.isoformat(timespec='seconds')}  {item.message_id}  {item.address}{error}"
        )
    return EXIT_OK


def _retry(store, args: argparse.Namespace) -> int:
    from headend.outbox import Outbox

    if not args.all and not args.ids:
        return fail("openhes outbox retry", "give row ids or --all", EXIT_REFUSED)
    count = Outbox(store).retry(None if args.all else args.ids)
    print(f"{count} dead row{'s' if count != 1 else ''} made pending again")
    return EXIT_OK if count or args.all else EXIT_REFUSED


def _deliver(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from adapters.delivery import DeliveryPolicy, main

    prog = "openhes outbox deliver"
    try:
        DeliveryPolicy(
            timeout=args.timeout,
            lease=args.lease,
            max_age=timedelta(hours=args.max_age_hours),
            concurrency=args.concurrency,
        )
    except ValueError as exc:
        return fail(prog, str(exc), EXIT_CANNOT_RUN)
    try:
        open_database(args.database).close()
    except CliError as exc:
        return fail(prog, str(exc), exc.status)
    argv = ["--lease", str(args.lease), "--timeout", str(args.timeout)]
    argv += ["--max-age-hours", str(args.max_age_hours), "--concurrency", str(args.concurrency)]
    if args.database:
        argv += ["--database", args.database]
    return main(argv)


# ---------------------------------------------------------------------- subscriptions


def _subscriptions_list(store, args: argparse.Namespace) -> int:
    from headend.subscriptions import list_subscriptions

    found = list_subscriptions(store)
    if not found:
        print("no subscriptions")
    for sub in found:
        nouns = ",".join(sub.nouns) or "*"
        verbs = ",".join(sub.verbs) or "*"
        state = "enabled" if sub.enabled else "disabled"
        print(f"{sub.name}  {state}  {verbs} {nouns}  {sub.address}")
    return EXIT_OK


def _subscriptions_add(store, args: argparse.Namespace) -> int:
    from headend.subscriptions import add_subscription

    add_subscription(store, args.name, args.address, nouns=args.noun, verbs=args.verb)
    print(f"subscription {args.name} -> {args.address}")
    return EXIT_OK


def _subscriptions_change(store, args: argparse.Namespace) -> int:
    from headend.subscriptions import remove_subscription, set_enabled

    command = args.subscriptions_command
    if command == "remove":
        done = remove_subscription(store, args.name)
    else:
        done = set_enabled(store, args.name, command == "enable")
    if not done:
        return fail(f"openhes subscriptions {command}", f"no subscription {args.name!r}")
    print(f"subscription {args.name}: {command}d")
    return EXIT_OK


def register(commands: argparse._SubParsersAction) -> None:
    db_option = argparse.ArgumentParser(add_help=False)
    db_option.add_argument("--database", help=DATABASE_HELP)

    outbox = commands.add_parser("outbox", help="see, retry and deliver outbound messages")
    actions = outbox.add_subparsers(dest="outbox_command", metavar="ACTION", required=True)
    listing = actions.add_parser("list", parents=[db_option], help="rows by id, with counts")
    listing.add_argument("--state", choices=STATES)
    listing.add_argument("--limit", type=int, default=100)
    listing.set_defaults(handler=lambda a: _run("openhes outbox list", a, _list))
    retry = actions.add_parser("retry", parents=[db_option], help="make dead rows pending again")
    retry.add_argument("ids", nargs="*", type=int, metavar="ID")
    retry.add_argument("--all", action="store_true", help="every dead row")
    retry.set_defaults(handler=lambda a: _run("openhes outbox retry", a, _retry))
    deliver = actions.add_parser(
        "deliver", parents=[db_option], help="run a delivery process until interrupted"
    )
    deliver.add_argument("--lease", type=float, default=120.0)
    deliver.add_argument("--timeout", type=float, default=30.0)
    deliver.add_argument("--max-age-hours", type=float, default=24.0)
    deliver.add_argument("--concurrency", type=int, default=4)
    deliver.set_defaults(handler=_deliver)

    subs = commands.add_parser("subscriptions", help="endpoints pushed EventMessages")
    sub_actions = subs.add_subparsers(dest="subscriptions_command", metavar="ACTION", required=True)
    sub_list = sub_actions.add_parser("list", parents=[db_option], help="every subscription")
    sub_list.set_defaults(
        handler=lambda a: _run("openhes subscriptions list", a, _subscriptions_list)
    )
    add = sub_actions.add_parser("add", parents=[db_option], help="add or replace one")
    add.add_argument("name")
    add.add_argument("address", help="http(s) URL that receives the SOAP EventMessages")
    add.add_argument("--noun", action="append", default=[], help="e.g. MeterReadings (repeat)")
    add.add_argument("--verb", action="append", default=[], help="e.g. created (repeat)")
    add.set_defaults(handler=lambda a: _run("openhes subscriptions add", a, _subscriptions_add))
    for name in ("remove", "enable", "disable"):
        change = sub_actions.add_parser(name, parents=[db_option], help=f"{name} one")
        change.add_argument("name")
        change.set_defaults(
            handler=lambda a: _run(
                f"openhes subscriptions {a.subscriptions_command}", a, _subscriptions_change
            )
        )
