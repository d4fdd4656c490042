"""The `openhes` command line. Every failure is one clear line on stderr and a non-zero
exit status (documented in :mod:`adapters.cli_support`: 0 ok, 1 refused, 2 cannot run,
130 interrupted); no traceback reaches the operator."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from adapters.cli_support import (
    DATABASE_HELP,
    EXIT_CANNOT_RUN,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    CliError,
    OneLineParser,
    command_name,
    fail,
    one_line,
    open_database,
)
from cim.errors import CimError


def cmd_validate(args: argparse.Namespace) -> int:
    from cim.validation import validate_file
    from cim.xmlsafe import XmlLimits

    if args.xsd is not None and not Path(args.xsd).is_file():
        return fail("openhes validate", f"--xsd {args.xsd}: no such file", EXIT_USAGE)
    limits = XmlLimits(max_bytes=args.max_bytes)
    bad = 0  # each file's verdict is a line on stdout; a summary of the bad ones on stderr
    for name in args.files:
        path = Path(name)
        if not path.is_file():
            print(f"{name}: no such file")
            bad += 1
            continue
        try:
            issues = validate_file(path, args.xsd, limits)
        except CimError as error:
            line = f":{error.line}" if error.line else ""
            print(f"{name}{line}: refused [{error.code}] {error.reason}")
            bad += 1
            continue
        if not issues:
            print(f"{name}: valid")
            continue
        bad += 1
        for issue in issues:
            line = f":{issue.line}" if issue.line else ""
            print(f"{name}{line}: {issue.path}: {issue.message}")
        print(f"{name}: invalid ({len(issues)} error{'s' if len(issues) != 1 else ''})")
    if bad:
        return fail("openhes validate", f"{bad} of {len(args.files)} file(s) not valid")
    return EXIT_OK


def describe_code(code: str, interval_minutes: int | None = None) -> tuple[str, str]:
    """(kind, words) for a code, told apart by its shape: 18 dotted fields is a
    ReadingType, 4 an EndDevice event/control type, 3 a reading quality, 6 (or A-B:C.D.E*F)
    an OBIS code."""
    from cim.codelists.enddevicetype import EndDeviceTypeCode
    from cim.codelists.obis import describe_obis
    from cim.codelists.quality import ReadingQualityCode
    from cim.codelists.readingtype import ReadingType
    from cim.errors import ErrorCode

    text = code.strip()
    if ":" in text or "-" in text.split(".")[0] or text.count(".") == 5:
        return "OBIS", describe_obis(text, interval_minutes)
    parts = text.count(".") + 1
    if parts == 18:
        return "ReadingType", ReadingType.parse(text).describe()
    if parts == 4:
        return "EndDeviceEventType/ControlType", EndDeviceTypeCode.parse(
            text, strict=False
        ).describe()
    if parts == 3:
        return "ReadingQualityType", ReadingQualityCode.parse(text).describe()
    raise CimError(
        ErrorCode.BAD_VALUE,
        f"{text!r} has {parts} parts; expected 18 (ReadingType), 4 (EndDevice type), "
        "3 (quality) or 6 (OBIS)",
    )


def cmd_describe(args: argparse.Namespace) -> int:
    bad = 0
    for code in args.codes:
        try:
            kind, text = describe_code(code, interval_minutes=args.interval)
        except CimError as error:
            print(f"{code}: [{error.code}] {error.reason}")
            bad += 1
            continue
        print(f"{code}: {kind}: {text}")
    if bad:
        return fail("openhes describe", f"{bad} of {len(args.codes)} code(s) not understood")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from adapters.demo import run_demo

    return run_demo(
        meters=args.meters,
        days=args.days,
        out=args.out,
        keep_running=args.keep_running,
        as_json=args.json,
    )


def cmd_simulate(args: argparse.Namespace) -> int:
    from drivers.sim.fleet import run_simulate

    return run_simulate(
        args.meters,
        args.base_port,
        args.transport,
        address_book=args.address_book,
        host=args.host,
        shared_port=args.shared_port,
        seed=args.seed,
        authentication=args.authentication,
        security=args.security,
        key_secret=args.key_secret,
        time_zone=args.time_zone,
        faults=args.faults,
        faulty_fraction=args.faulty_fraction,
        duration=args.duration,
    )


def cmd_meters_import(args: argparse.Namespace) -> int:
    """The import's own report, except that of a refused file only the first line goes to
    stderr and the problems, one a line, to stdout (as ``validate`` lists its findings)."""
    import io

    from headend.device_import import run_meters_import

    if Path(args.file).is_file():  # else run_meters_import says so
        open_database(args.database).close()  # a database it cannot open: one line, status 2
    err = io.StringIO()
    status = run_meters_import(args.file, args.database, dry_run=args.dry_run, err=err)
    first, *problems = err.getvalue().splitlines() or [""]
    for line in problems:
        print(line)
    if first:
        print(first.rstrip(":"), file=sys.stderr)
    return status


# Subcommands defined in modules of their own: each has ``register(commands)``, which adds its
# parsers to the subparsers action. Keep one module name per line.
_COMMAND_MODULES: tuple[str, ...] = (
    "adapters.cli_worker",
    "adapters.cli_users",
    "adapters.cli_outbox",
    "adapters.cli_jobs",
    "adapters.cli_serve",
    "adapters.cli_export",
    "adapters.cli_debug",
)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="openhes",
        description="OpenHES: open-source head-end system and IEC 61968-9 integration hub.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = commands.add_parser("demo", help="run the demonstration end to end")
    demo.add_argument("--meters", type=int, default=1000, help="meters in the demo (default 1000)")
    demo.add_argument(
        "--days", type=int, default=1, help="days of 15-minute data read (default 1: yesterday)"
    )
    demo.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for the database and files written (default: a temporary one)",
    )
    demo.add_argument(
        "--keep-running",
        action="store_true",
        help="leave the SOAP endpoint up afterwards and print requests to try",
    )
    demo.add_argument("--json", action="store_true", help="print the outcome as JSON")
    demo.set_defaults(handler=cmd_demo)

    simulate = commands.add_parser("simulate", help="serve a simulated DLMS/COSEM meter fleet")
    simulate.add_argument("--meters", type=int, default=100, help="meters to serve (default 100)")
    simulate.add_argument(
        "--base-port", type=int, default=4059, help="first TCP port (default 4059)"
    )
    simulate.add_argument(
        "--shared-port", action="store_true", help="one port, meters told apart by address"
    )
    simulate.add_argument("--transport", choices=["wrapper", "hdlc"], default="wrapper")
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--authentication", choices=["none", "low", "high_gmac"], default="none")
    simulate.add_argument("--security", choices=["none", "suite0"], default="none")
    simulate.add_argument(
        "--key-secret", default=None, help="hex secret the meter keys derive from"
    )
    simulate.add_argument("--time-zone", default="Europe/Amsterdam")
    simulate.add_argument(
        "--faults", default="", help="fault spec, e.g. latency=lognormal:0.1:0.5,loss=0.01"
    )
    simulate.add_argument("--faulty-fraction", type=float, default=1.0)
    simulate.add_argument("--seed", type=int, default=1)
    simulate.add_argument(
        "--duration", type=float, default=None, help="stop after this many seconds"
    )
    simulate.add_argument(
        "--address-book",
        type=Path,
        default=Path("simulated-meters.csv"),
        help="where to write the device-import file (.csv or .json)",
    )
    simulate.set_defaults(handler=cmd_simulate)

    meters = commands.add_parser("meters", help="the device registry")
    meter_commands = meters.add_subparsers(dest="meters_command", metavar="COMMAND", required=True)
    meters_import = meter_commands.add_parser(
        "import", help="register meters from a CSV or JSON device-import file (idempotent)"
    )
    meters_import.add_argument("file", type=Path)
    meters_import.add_argument(
        "--database",
        default=None,
        help=DATABASE_HELP,
    )
    meters_import.add_argument(
        "--dry-run", action="store_true", help="check and apply, then roll back"
    )
    meters_import.set_defaults(handler=cmd_meters_import)

    validate = commands.add_parser("validate", help="check CIM documents against the schemas")
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.add_argument(
        "--xsd", default=None, help="validate against this XSD instead of OpenHES's"
    )
    validate.add_argument(
        "--max-bytes",
        type=int,
        default=1 << 30,
        help="refuse files larger than this (default 1 GiB)",
    )
    validate.set_defaults(handler=cmd_validate)

    describe = commands.add_parser(
        "describe",
        help="explain a ReadingType, EndDeviceEventType/ControlType, quality or OBIS code",
    )
    describe.add_argument("codes", nargs="+", metavar="CODE")
    describe.add_argument(
        "--interval",
        type=int,
        default=None,
        help="load-profile interval in minutes, for OBIS codes",
    )
    describe.set_defaults(handler=cmd_describe)

    import importlib

    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed its one-line usage error
        return int(exc.code or 0)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    prog = command_name(args)
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        return fail(prog, "interrupted", EXIT_INTERRUPTED)
    except CliError as error:
        return fail(prog, str(error), error.status)
    except CimError as error:
        return fail(prog, f"[{error.code}] {error.reason}", EXIT_REFUSED)
    except (OSError, ValueError) as error:  # files, and configuration from the environment
        return fail(prog, one_line(error), EXIT_REFUSED)
    except Exception as error:  # a database error no command caught: still one line
        from sqlalchemy.exc import SQLAlchemyError

        if not isinstance(error, SQLAlchemyError):
            raise
        return fail(prog, f"database error: {one_line(error)}", EXIT_CANNOT_RUN)


if __name__ == "__main__":
    sys.exit(main())
