"""What every ``openhes`` subcommand shares: exit statuses, errors as one line, opening the
store, tables, ``--json`` output and a text progress bar.

Exit statuses, the same for every subcommand:

* ``0`` (:data:`EXIT_OK`): done.
* ``1`` (:data:`EXIT_REFUSED`): refused or failed: invalid input data (a malformed file, an
  unknown meter, job or user), a file that cannot be read or written, a job that finished
  with errors, a demo step that failed.
* ``2`` (:data:`EXIT_CANNOT_RUN`): could not run: bad usage (unknown option or option value),
  configuration, the database cannot be opened or fails, the broker cannot be used.
* ``130`` (:data:`EXIT_INTERRUPTED`): interrupted (Ctrl-C).

Every error is one line on stderr, ``openhes <command>: <what went wrong>``; never a
traceback. This module imports nothing heavy: the CLI starts fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, NoReturn, TextIO

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_CANNOT_RUN = 2
EXIT_USAGE = EXIT_CANNOT_RUN  # bad usage is one way of not being able to run
EXIT_INTERRUPTED = 130

ENV_DATABASE = "OPENHES_DATABASE_URL"
DATABASE_HELP = f"database URL (default: ${ENV_DATABASE} or ./openhes.sqlite3)"


class CliError(Exception):
    """A failure the command reports as one line with an exit status."""

    def __init__(self, message: str, status: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.status = status


# --- errors -----------------------------------------------------------------------------------


def one_line(exc: BaseException) -> str:
    """The first line of an exception's text (SQLAlchemy and others add more lines)."""
    text = str(exc).strip().splitlines()
    return text[0].strip() if text else type(exc).__name__


def fail(prog: str, message: str, status: int = EXIT_REFUSED, *, err: TextIO | None = None) -> int:
    """Print ``prog: message`` as one line on stderr; return ``status``."""
    text = " ".join(message.split()) or "failed"
    print(f"{prog}: {text}", file=err or sys.stderr)
    return status


def command_name(args: argparse.Namespace) -> str:
    """``openhes jobs run``: the program and the subcommands chosen in ``args``."""
    words = ["openhes"]
    command = getattr(args, "command", None)
    if command:
        words.append(command)
        sub = getattr(args, f"{command}_command", None)
        if sub:
            words.append(sub)
    return " ".join(words)


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr (status 2), naming the
    help to read; sub-parsers made by ``add_subparsers`` are of this class too."""

    def error(self, message: str) -> NoReturn:
        fail(self.prog, f"{message} (see `{self.prog} --help`)", EXIT_USAGE)
        raise SystemExit(EXIT_USAGE)


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not >= 1")
    return value


# --- the store --------------------------------------------------------------------------------


def open_database(url: str | None) -> Any:
    """:func:`mdm.database.open_store` of ``url`` (default ``$OPENHES_DATABASE_URL``, then
    ./openhes.sqlite3); a store that cannot be opened or migrated is a :class:`CliError`
    ``cannot open the database: ...`` with :data:`EXIT_CANNOT_RUN`."""
    import os

    from sqlalchemy.exc import SQLAlchemyError

    from mdm.database import open_store

    try:
        return open_store(url or os.environ.get(ENV_DATABASE) or None)
    except (SQLAlchemyError, ValueError, OSError) as exc:
        raise CliError(f"cannot open the database: {one_line(exc)}", EXIT_CANNOT_RUN) from None


@contextmanager
def database(url: str | None) -> Iterator[Any]:
    """The opened store for a ``with`` block, closed afterwards (see :func:`open_database`)."""
    store = open_database(url)
    try:
        yield store
    finally:
        store.close()


def reach_broker(bus: Any, seconds: float = 10.0) -> None:
    """An unreachable broker (see :func:`adapters.serve.broker_problem`) as a
    :class:`CliError` with :data:`EXIT_CANNOT_RUN`."""
    from adapters.serve import broker_problem

    problem = broker_problem(bus, seconds)
    if problem is not None:
        raise CliError(problem, EXIT_CANNOT_RUN)


def guarded(
    prog: str,
    body: Callable[[], int],
    *,
    refused: tuple[type[BaseException], ...] = (),
    cannot_run: tuple[type[BaseException], ...] = (),
) -> int:
    """Run ``body``; its failures become one line and an exit status: :class:`CliError` its
    own, :class:`cim.errors.CimError`, ``refused`` and
    files that cannot be read or written 1, ``cannot_run`` and database errors 2."""
    from sqlalchemy.exc import SQLAlchemyError

    from cim.errors import CimError

    try:
        return body()
    except CliError as exc:
        return fail(prog, str(exc), exc.status)
    except CimError as exc:
        return fail(prog, f"[{exc.code}] {exc.reason}", EXIT_REFUSED)
    except refused as exc:
        return fail(prog, one_line(exc), EXIT_REFUSED)
    except cannot_run as exc:
        return fail(prog, one_line(exc), EXIT_CANNOT_RUN)
    except SQLAlchemyError as exc:
        return fail(prog, f"database error: {one_line(exc)}", EXIT_CANNOT_RUN)
    except OSError as exc:
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        return fail(prog, f"{where}{exc.strerror or one_line(exc)}", EXIT_REFUSED)


# --- output -----------------------------------------------------------------------------------


def cell(value: Any) -> str:
    """A value as table text: ``-`` for none, one decimal for floats, UTC times."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns two spaces apart under upper-case headers (no trailing spaces)."""
    cells = [[cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = [headers, *cells]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def print_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], *, empty: str | None = None
) -> None:
    """Print :func:`table`, or ``empty`` (e.g. ``no jobs``) when there are no rows and it is
    given."""
    print(empty if not rows and empty is not None else table(headers, rows))


def print_json(data: Any, *, compact: bool = False, out: TextIO | None = None) -> None:
    """The ``--json`` output: keys sorted, dates and decimals as text; indented unless
    ``compact`` (one line)."""
    text = json.dumps(data, indent=None if compact else 2, sort_keys=not compact, default=str)
    print(text, file=out or sys.stdout, flush=True)


def percent(fraction: float | None) -> str:
    """0.987 -> ``98.7%``; ``-`` for none."""
    return "-" if fraction is None else f"{100 * fraction:.1f}%"


class ProgressBar:
    """A plain text progress bar on ``stream``: redrawn in place on a terminal, a line per
    quarter done otherwise (logs stay short)."""

    WIDTH = 30

    def __init__(self, stream: TextIO, label: str) -> None:
        self.stream = stream
        self.label = label
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self._shown = -1
        self._open = False

    def show(self, done: int, total: int, seconds: float, note: str = "") -> None:
        if total <= 0:
            return
        fraction = min(done / total, 1.0)
        if not self.tty:
            quarter = int(fraction * 4)
            if quarter == self._shown:
                return
            self._shown = quarter
        filled = int(fraction * self.WIDTH)
        rate = done / seconds if seconds > 0 else 0.0
        text = (
            f"  [{'#' * filled}{'.' * (self.WIDTH - filled)}] {done:,}/{total:,} "
            f"{fraction:5.1%}  {rate:,.0f}/s  {self.label}{f' ({note})' if note else ''}"
        )
        if self.tty:
            self.stream.write("\r" + text + "\x1b[K")
            self._open = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False


__all__ = [
    "DATABASE_HELP",
    "ENV_DATABASE",
    "EXIT_CANNOT_RUN",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_USAGE",
    "CliError",
    "OneLineParser",
    "ProgressBar",
    "cell",
    "command_name",
    "database",
    "fail",
    "guarded",
    "one_line",
    "open_database",
    "percent",
    "positive_int",
    "print_json",
    "print_table",
    "reach_broker",
    "table",
]
