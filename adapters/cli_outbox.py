"""``openhes outbox`` and ``openhes subscriptions``: see and re-try what OpenHES sends, run a
delivery process, manage push endpoints.

::

    openhes outbox list [--state dead] [--limit 50] [--json]
    openhes outbox retry ID... | --all       # dead rows become pending, due now
    openhes outbox deliver [--lease S ...]   # a delivery process (until Ctrl-C / SIGTERM)
    openhes subscriptions list [--config FILE] [--json]   # the TOML's and the table's
    openhes subscriptions add NAME ADDRESS [--noun MeterReadings]... [--verb created]...
    openhes subscriptions remove|enable|disable NAME

Subscriptions come from the configuration (``[[subscriptions]]`` in the TOML file that
``--config`` or ``$OPENHES_CONFIG`` names, as `openhes serve` reads it) and from the
``subscriptions`` table (``add``, ``remove``, ``enable``, ``disable``); a configured one wins
over a table row of the same name. ``outbox deliver`` retries a message for ``outbox.max_age``
of the same settings unless ``--max-age-hours`` says otherwise.

Exit status: 0 done, 1 refused (no such row or subscription, a bad address), 2 could not
run (database, configuration). Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

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
    positive_int,
    print_json,
)
from headend.outbox import STATES

CONFIG_HELP = "TOML configuration file, as `openhes serve` reads (default: $OPENHES_CONFIG)"


def _settings(args: argparse.Namespace) -> Any:
    """The settings `openhes serve` reads (``--config``, ``$OPENHES_CONFIG``, ``OPENHES_*``);
    one that does not parse is a CliError with EXIT_CANNOT_RUN."""
    from adapters.config import ConfigError, load_settings

    try:
        return load_settings(getattr(args, "config", None))
    except ConfigError as exc:
        raise CliError(str(exc), EXIT_CANNOT_RUN) from None


def _database_url(args: argparse.Namespace, settings: Any) -> str | None:
    """``--database``, else the configured database (when configured), else the default."""
    if args.database or settings is None or settings.sources["database.url"] == "default":
        return args.database
    return str(settings["database.url"])


def _run(prog: str, args: argparse.Namespace, action: Callable[..., int]) -> int:
    def body() -> int:
        settings = _settings(args) if hasattr(args, "config") else None
        if settings is not None:
            args.settings = settings
        with database(_database_url(args, settings)) as store:
            return action(store, args)

    return guarded(prog, body)


# ---------------------------------------------------------------------- outbox


def _item_dict(item: Any) -> dict[str, Any]:
    return {
        "id": item.id,
        "state": item.state,
        "kind": item.kind,
        "attempts": item.attempts,
        "message_id": item.message_id,
        "correlation_id": item.correlation_id,
        "address": item.address,
        "subscription": item.subscription,
        "soap_action": item.soap_action,
        "last_error": item.last_error,
        "created_at": item.created_at.isoformat(),
        "next_attempt_at": item.next_attempt_at.isoformat(),
        "last_attempt_at": item.last_attempt_at.isoformat() if item.last_attempt_at else None,
        "delivered_at": item.delivered_at.isoformat() if item.delivered_at else None,
        "bytes": len(item.body),
    }


def _list(store, args: argparse.Namespace) -> int:
    from headend.outbox import Outbox

    outbox = Outbox(store)
    counts = outbox.counts()
    items = outbox.items(args.state, limit=args.limit)
    if args.json:
        print_json({"counts": counts, "items": [_item_dict(item) for item in items]})
        return EXIT_OK
    print(", ".join(f"{state} {counts[state]}" for state in STATES))
    for item in items:
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


def delivery_argv(args: argparse.Namespace) -> list[str]:
    """The arguments of the delivery process (:func:`adapters.delivery.main`) for ``outbox
    deliver``: its options, else the settings (``outbox.max_age``, ``outbox.concurrency``,
    ``database.url``). CliError for settings, a policy or a database that cannot be used."""
    from datetime import timedelta

    from adapters.delivery import DeliveryPolicy

    settings = _settings(args)
    max_age_hours = args.max_age_hours
    if max_age_hours is None:
        max_age_hours = settings["outbox.max_age"] / 3600
    concurrency = args.concurrency or settings["outbox.concurrency"]
    try:
        DeliveryPolicy(
            timeout=args.timeout,
            lease=args.lease,
            max_age=timedelta(hours=max_age_hours),
            concurrency=concurrency,
        )
    except (ValueError, OverflowError) as exc:
        raise CliError(str(exc), EXIT_CANNOT_RUN) from None
    if not max_age_hours > 0:
        raise CliError(
            f"the maximum age must be more than 0 hours, not {max_age_hours:g}", EXIT_CANNOT_RUN
        )
    database_url = _database_url(args, settings)
    open_database(database_url).close()
    argv = ["--lease", str(args.lease), "--timeout", str(args.timeout)]
    argv += ["--max-age-hours", str(max_age_hours), "--concurrency", str(concurrency)]
    if database_url:
        argv += ["--database", database_url]
    return argv


def _deliver(args: argparse.Namespace) -> int:
    from adapters.delivery import main

    try:
        argv = delivery_argv(args)
    except CliError as exc:
        return fail("openhes outbox deliver", str(exc), exc.status)
    return main(argv)


# ---------------------------------------------------------------------- subscriptions


def _subscriptions_list(store, args: argparse.Namespace) -> int:
    from headend.subscriptions import list_subscriptions

    configured = list(args.settings.subscriptions)
    names = {sub.name for sub in configured}
    rows: list[dict[str, Any]] = [
        {
            "name": sub.name,
            "source": "config",
            "enabled": True,
            "in_force": True,
            "address": sub.address,
            "nouns": list(sub.nouns),
            "verbs": list(sub.verbs),
        }
        for sub in configured
    ]
    for sub in list_subscriptions(store):
        rows.append(
            {
                "name": sub.name,
                "source": "table",
                "enabled": sub.enabled,
                "in_force": sub.enabled and sub.name not in names,
                "address": sub.address,
                "nouns": list(sub.nouns),
                "verbs": list(sub.verbs),
            }
        )
    if args.json:
        print_json(rows)
        return EXIT_OK
    if not rows:
        print("no subscriptions")
    for row in rows:
        nouns = ",".join(row["nouns"]) or "*"
        verbs = ",".join(row["verbs"]) or "*"
        if row["source"] == "table" and row["name"] in names:
            state = "overridden"  # a configured subscription of the same name wins
        else:
            state = "enabled" if row["enabled"] else "disabled"
        print(f"{row['name']}  {state}  {verbs} {nouns}  {row['address']}  [{row['source']}]")
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
    listing.add_argument("--limit", type=positive_int, default=100)
    listing.add_argument("--json", action="store_true", help="print JSON for scripts")
    listing.set_defaults(handler=lambda a: _run("openhes outbox list", a, _list))
    retry = actions.add_parser("retry", parents=[db_option], help="make dead rows pending again")
    retry.add_argument("ids", nargs="*", type=int, metavar="ID")
    retry.add_argument("--all", action="store_true", help="every dead row")
    retry.set_defaults(handler=lambda a: _run("openhes outbox retry", a, _retry))
    deliver = actions.add_parser(
        "deliver", parents=[db_option], help="run a delivery process until interrupted"
    )
    deliver.add_argument("--config", default=None, help=CONFIG_HELP)
    deliver.add_argument("--lease", type=float, default=120.0)
    deliver.add_argument("--timeout", type=float, default=30.0)
    deliver.add_argument(
        "--max-age-hours",
        type=float,
        default=None,
        help="hours a message is retried before it is marked dead (default: the setting "
        "outbox.max_age, $OPENHES_OUTBOX_MAX_AGE, 24 h unless configured)",
    )
    deliver.add_argument(
        "--concurrency",
        type=positive_int,
        default=None,
        help="messages delivered at once (default: the setting outbox.concurrency, 4)",
    )
    deliver.set_defaults(handler=_deliver)

    subs = commands.add_parser("subscriptions", help="endpoints pushed EventMessages")
    sub_actions = subs.add_subparsers(dest="subscriptions_command", metavar="ACTION", required=True)
    sub_list = sub_actions.add_parser(
        "list", parents=[db_option], help="every subscription: the configured and the table's"
    )
    sub_list.add_argument("--config", default=None, help=CONFIG_HELP)
    sub_list.add_argument("--json", action="store_true", help="print JSON for scripts")
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
