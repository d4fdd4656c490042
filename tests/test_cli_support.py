"""The shared pieces of the `openhes` subcommands (adapters/cli_support.py): one-line
errors, tables, JSON and the text progress bar."""

from __future__ import annotations

import argparse
import io
import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from adapters.cli_support import (
    EXIT_CANNOT_RUN,
    EXIT_REFUSED,
    CliError,
    OneLineParser,
    ProgressBar,
    command_name,
    fail,
    guarded,
    one_line,
    open_database,
    percent,
    print_json,
    table,
)


def test_one_line_and_fail(capsys: pytest.CaptureFixture[str]) -> None:
    assert one_line(ValueError("first\n  second")) == "first"
    assert one_line(ValueError()) == "ValueError"
    assert fail("openhes x", "a\nb   c") == EXIT_REFUSED
    assert capsys.readouterr().err == "openhes x: a b c\n"


def test_command_name() -> None:
    ns = argparse.Namespace(command="jobs", jobs_command="run")
    assert command_name(ns) == "openhes jobs run"
    assert command_name(argparse.Namespace(command="stats")) == "openhes stats"
    assert command_name(argparse.Namespace()) == "openhes"


def test_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    parser = OneLineParser(prog="openhes")
    sub = parser.add_subparsers(dest="command").add_parser("thing")
    sub.add_argument("--n", type=int)
    with pytest.raises(SystemExit) as stopped:
        parser.parse_args(["thing", "--n", "x"])
    assert stopped.value.code == EXIT_CANNOT_RUN
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("openhes thing: argument --n: invalid int value")
    assert line.endswith("(see `openhes thing --help`)")


def test_guarded_maps_failures(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    def missing() -> int:
        open_database(str(tmp_path / "no" / "x.sqlite3"))
        return 0

    assert guarded("p", missing) == EXIT_CANNOT_RUN
    assert capsys.readouterr().err.startswith("p: cannot open the database: ")

    def refused() -> int:
        raise CliError("nope")

    assert guarded("p", refused) == EXIT_REFUSED
    assert guarded("p", lambda: int("x"), refused=(ValueError,)) == EXIT_REFUSED
    assert guarded("p", lambda: len((tmp_path / "none").read_text())) == EXIT_REFUSED
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "p: nope" and err[1].startswith("p: invalid literal")
    assert err[2].endswith("none: No such file or directory")


def test_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    when = datetime(2024, 3, 1, 12, tzinfo=UTC)
    text = table(("A", "LONGER"), [("x", None), ("yyyy", 1.25), ("z", when)])
    assert text.splitlines() == [
        "A     LONGER",
        "x     -",
        "yyyy  1.2",
        "z     2024-03-01 12:00:00Z",
    ]
    print_json({"b": Decimal("1.5"), "a": when})
    assert json.loads(capsys.readouterr().out) == {"a": str(when), "b": "1.5"}
    print_json([1, 2], compact=True)
    assert capsys.readouterr().out == "[1, 2]\n"
    assert percent(None) == "-" and percent(0.987) == "98.7%"


def test_progress_bar_off_a_terminal_prints_quarters() -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream, "meters read")
    for done in range(0, 101, 5):
        bar.show(done, 100, 2.0, note="ok")
    bar.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 5  # 0, 25, 50, 75, 100 %
    assert lines[-1].startswith("  [" + "#" * 30 + "] 100/100 100.0%")
    assert lines[-1].endswith("meters read (ok)")
    bar.show(1, 0, 1.0)  # nothing to show for an empty job
    assert len(stream.getvalue().splitlines()) == 5
