"""``openhes worker``: one worker process taking tasks from the broker and running them on
meters with the DLMS driver. Start as many as the meters need, on as many machines; they
share every job. SIGTERM or SIGINT stops it cleanly: no new tasks, the running ones finish
(``--grace`` seconds), the rest go back to the queue for the other workers.

It reads the settings `openhes serve` reads (``--config``, ``$OPENHES_CONFIG``, ``OPENHES_*``):
the database and broker, ``worker.concurrency`` and the job engine's ``engine.*``,
``retry.*`` and ``paths.*`` (the path limits hold per worker process: N workers may open N
times ``paths.max_sessions`` sessions on one path)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from adapters.cli_support import (
    DATABASE_HELP,
    EXIT_CANNOT_RUN,
    EXIT_OK,
    CliError,
    fail,
    open_database,
    positive_int,
    reach_broker,
)

if TYPE_CHECKING:
    from adapters.config import Setting
    from headend.engine import EngineConfig
    from headend.throttle import Limits

PROG = "openhes worker"
ENV_BROKER = "OPENHES_BROKER_URL"
ENV_CONCURRENCY = "OPENHES_WORKER_CONCURRENCY"
ENV_NAMESPACE = "OPENHES_BROKER_NAMESPACE"


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{value} is not >= 0")
    return value


def _worker_settings() -> list[Setting]:
    from adapters.config import SETTINGS

    wanted = ("database.", "broker.", "worker.concurrency", "engine.", "retry.", "paths.")
    return [s for s in SETTINGS if s.key.startswith(wanted)]


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    worker = commands.add_parser(
        "worker",
        help="run tasks from the broker on the meters (scale out: one per process)",
        description=__doc__,
        epilog="settings read (path limits apply per worker process): "
        + ", ".join(f"{s.key} (${s.env})" for s in _worker_settings()),
    )
    worker.add_argument(
        "--config",
        default=None,
        help="TOML configuration file, as `openhes serve` reads (default: $OPENHES_CONFIG)",
    )
    worker.add_argument(
        "--database",
        default=None,
        help=DATABASE_HELP,
    )
    worker.add_argument(
        "--broker",
        default=None,
        help=f"broker URL, amqp://user:password@host:port/vhost (default: ${ENV_BROKER})",
    )
    worker.add_argument(
        "--concurrency",
        type=positive_int,
        default=None,
        help=f"sessions open at once (default: ${ENV_CONCURRENCY} or 200)",
    )
    worker.add_argument(
        "--prefetch",
        type=positive_int,
        default=None,
        help="tasks held unacknowledged (default: twice the concurrency)",
    )
    worker.add_argument(
        "--namespace",
        default=None,
        help=f"prefix of the broker's queue and exchanges (default: ${ENV_NAMESPACE} or openhes)",
    )
    worker.add_argument(
        "--grace",
        type=_seconds,
        default=30.0,
        help="seconds running tasks get to finish when stopping (default 30)",
    )
    worker.add_argument(
        "--counters",
        type=Path,
        default=None,
        help="SQLite file for the invocation counters of ciphered meters (default: in memory)",
    )
    worker.add_argument("--name", default=None, help="worker name in the records (host:pid)")
    worker.set_defaults(handler=cmd_worker)


def cmd_worker(args: argparse.Namespace) -> int:
    from adapters.config import ConfigError, engine_options, load_settings

    try:
        settings = load_settings(args.config)
        config, limits = engine_options(settings)
    except ConfigError as exc:
        return fail(PROG, str(exc), EXIT_CANNOT_RUN)
    configured = settings.sources["broker.url"] != "default"
    broker = args.broker or (settings["broker.url"] if configured else None)
    if not broker:
        return fail(
            PROG,
            f"no broker: give --broker or set {ENV_BROKER} "
            "(memory:// is in-process only and cannot serve a separate worker)",
            EXIT_CANNOT_RUN,
        )
    if broker.split("://", 1)[0].lower() == "memory":
        return fail(PROG, "memory:// cannot be shared with other processes", EXIT_CANNOT_RUN)
    concurrency = args.concurrency or settings["worker.concurrency"]
    if concurrency < 1:
        return fail(PROG, f"{ENV_CONCURRENCY}: {concurrency} is not >= 1", EXIT_CANNOT_RUN)
    namespace = args.namespace or settings["broker.namespace"]
    database = args.database
    if database is None and settings.sources["database.url"] != "default":
        database = settings["database.url"]
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)  # not the migrations' chatter
    return asyncio.run(
        run_worker(
            database=database,
            broker=broker,
            namespace=namespace,
            concurrency=concurrency,
            prefetch=args.prefetch,
            grace=args.grace,
            counters=args.counters,
            name=args.name,
            config=config,
            limits=limits,
        )
    )


async def run_worker(
    *,
    database: str | None,
    broker: str,
    namespace: str,
    concurrency: int,
    prefetch: int | None,
    grace: float,
    counters: Path | None,
    name: str | None,
    config: EngineConfig | None = None,
    limits: Limits | None = None,
) -> int:
    """One worker until SIGINT/SIGTERM. ``config`` and ``limits``: the engine settings and
    the limits of each path (:func:`adapters.config.engine_options`; default: the engine's
    defaults)."""
    from drivers.dlms import DlmsDriver, SqliteCounterStore
    from headend.taskbus import TaskBus
    from headend.throttle import Throttles
    from headend.worker import Worker

    try:
        store = open_database(database)
    except CliError as exc:
        return fail(PROG, str(exc), exc.status)
    try:
        bus = TaskBus.from_url(broker, namespace=namespace)
    except ValueError as exc:
        store.close()
        return fail(PROG, str(exc), EXIT_CANNOT_RUN)
    try:
        reach_broker(bus)
    except CliError as exc:
        bus.close()
        store.close()
        return fail(PROG, str(exc), exc.status)
    driver = DlmsDriver(SqliteCounterStore(counters) if counters else None)
    worker = Worker(
        store,
        bus,
        driver,
        concurrency=concurrency,
        prefetch=prefetch,
        grace=grace,
        worker_name=name,
        config=config,
        throttles=Throttles(limits),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    print(
        f"openhes worker {worker.name}: {bus}, concurrency {concurrency}, "
        f"path limits {worker.throttles.default.max_sessions} sessions and "
        f"{worker.throttles.default.connections_per_s:g} connections/s per path",
        flush=True,
    )
    try:
        await worker.run(stop)
    finally:
        bus.close()
        store.close()
    print(
        f"openhes worker {worker.name}: stopped ({worker.completed} completed, "
        f"{worker.failed} failed, {worker.skipped} redeliveries skipped)",
        flush=True,
    )
    return EXIT_OK


__all__ = ["register", "run_worker"]
