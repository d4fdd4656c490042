"""``openhes serve``: the SOAP endpoints, the in-process workers, the outbox delivery and
subscriptions, the schedule runner, and the ESB and file drop when configured, in one
process (see :mod:`adapters.serve`). SIGINT or SIGTERM stops it cleanly."""

from __future__ import annotations

import argparse
from pathlib import Path

from adapters.cli_support import EXIT_CANNOT_RUN, fail
from adapters.config import ENV_CONFIG, settings_help


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    serve = commands.add_parser(
        "serve",
        help="serve the SOAP endpoints, workers, pushes, schedules, ESB and file drop",
        description=__doc__,
        epilog=settings_help()
        + "\n\nsubscriptions (push endpoints) are [[subscriptions]] tables of the TOML file; "
        "see docs/configuration.md",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument(
        "--config",
        type=Path,
        default=None,
        help=f"TOML configuration file (default: ${ENV_CONFIG}, else built-in defaults)",
    )
    serve.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from adapters.config import ConfigError, load_settings
    from adapters.serve import run_serve

    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        return fail("openhes serve", str(exc), EXIT_CANNOT_RUN)
    return run_serve(settings)


__all__ = ["cmd_serve", "register"]
