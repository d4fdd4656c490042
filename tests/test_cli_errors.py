"""Every `openhes` subcommand given bad input (an unknown option value, a database in a
folder that does not exist, an unreachable broker, a malformed file) answers with exactly one
line on stderr, ``openhes <command>...: <what>``, no traceback, and the exit status
documented in adapters/cli_support.py: 1 refused, 2 cannot run."""

from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.cli import build_parser, main
from adapters.cli_support import EXIT_CANNOT_RUN, EXIT_REFUSED
from drivers.sim.fleet import Fleet, FleetConfig

MASTER_HEX = "00" * 32
MISSING = "{tmp}/no/such/folder/x.sqlite3"
DEAD_BROKER = "amqp://guest:secret@127.0.0.1:1//"  # nothing listens on port 1
REFUSED, CANNOT_RUN = EXIT_REFUSED, EXIT_CANNOT_RUN

CASES: list[tuple[list[str], int, str]] = [
    (["frobnicate"], CANNOT_RUN, "invalid choice"),
    # demo, simulate
    (["demo", "--meters", "0"], CANNOT_RUN, "at least 1"),
    (["demo", "--meters", "many"], CANNOT_RUN, "invalid int value"),
    (["demo", "--meters", "1", "--out", "{tmp}/a-file.txt"], CANNOT_RUN, "--out"),
    (["simulate", "--faults", "bogus", "--address-book", "{tmp}/b.csv"], CANNOT_RUN, "fault"),
    (["simulate", "--transport", "pigeon"], CANNOT_RUN, "invalid choice"),
    # meters import
    (["meters", "import", "{tmp}/none.csv", "--database", "{db}"], CANNOT_RUN, "no such file"),
    (["meters", "import", "{tmp}/bad.json", "--database", "{db}"], REFUSED, "nothing imported"),
    (["meters", "import", "{tmp}/book.csv", "--database", MISSING], CANNOT_RUN, "cannot open"),
    (["meters", "frobnicate"], CANNOT_RUN, "invalid choice"),
    # validate, describe
    (["validate", "{tmp}/bad.json"], REFUSED, "1 of 1 file(s) not valid"),
    (["validate", "--xsd", "{tmp}/none.xsd", "{tmp}/bad.json"], CANNOT_RUN, "no such file"),
    (["validate", "--max-bytes", "lots", "{tmp}/bad.json"], CANNOT_RUN, "invalid int value"),
    (["describe", "1.2"], REFUSED, "not understood"),
    (["describe", "--interval", "x", "1.8.0"], CANNOT_RUN, "invalid int value"),
    # worker
    (["worker"], CANNOT_RUN, "no broker"),
    (["worker", "--concurrency", "0"], CANNOT_RUN, "is not >= 1"),
    (["worker", "--config", "{tmp}/bad.toml"], CANNOT_RUN, "soap.port"),
    (["worker", "--config", "{tmp}/bad-engine.toml"], CANNOT_RUN, "paths.max_sessions: 0"),
    (["worker", "--broker", DEAD_BROKER, "--database", MISSING], CANNOT_RUN, "cannot open"),
    (["worker", "--broker", DEAD_BROKER, "--database", "{db}"], CANNOT_RUN, "cannot reach"),
    # users
    (["users", "list", "--database", MISSING], CANNOT_RUN, "cannot open the database"),
    (["users", "add", "x", "--role", "god"], CANNOT_RUN, "invalid choice"),
    (["users", "disable", "ghost", "--database", "{db}"], REFUSED, "no user 'ghost'"),
    (["users", "passwd", "ghost", "--database", "{db}"], REFUSED, "no user 'ghost'"),
    (["users", "roles", "ghost", "--role", "reader", "--database", MISSING], CANNOT_RUN, "open"),
    (["users", "enable", "ghost", "--database", "{db}"], REFUSED, "no user"),
    (["users", "unlock", "ghost", "--database", MISSING], CANNOT_RUN, "cannot open"),
    # outbox, subscriptions
    (["outbox", "list", "--database", MISSING], CANNOT_RUN, "cannot open the database"),
    (["outbox", "list", "--state", "lost"], CANNOT_RUN, "invalid choice"),
    (["outbox", "retry", "--database", "{db}"], REFUSED, "give row ids or --all"),
    (["outbox", "retry", "x", "--database", "{db}"], CANNOT_RUN, "invalid int value"),
    (["outbox", "deliver", "--database", MISSING], CANNOT_RUN, "cannot open the database"),
    (["outbox", "deliver", "--lease", "1", "--database", "{db}"], CANNOT_RUN, "lease"),
    (["subscriptions", "list", "--database", MISSING], CANNOT_RUN, "cannot open"),
    (["subscriptions", "add", "x", "ftp://x/", "--database", "{db}"], REFUSED, "http"),
    (["subscriptions", "remove", "ghost", "--database", "{db}"], REFUSED, "no subscription"),
    (["subscriptions", "enable", "ghost", "--database", "{db}"], REFUSED, "no subscription"),
    (["subscriptions", "disable", "ghost", "--database", MISSING], CANNOT_RUN, "cannot open"),
    # jobs, schedules, stats
    (["jobs", "list", "--database", MISSING], CANNOT_RUN, "cannot open the database"),
    (["jobs", "list", "--limit", "none"], CANNOT_RUN, "not a whole number"),
    (["jobs", "show", "ghost", "--database", "{db}"], REFUSED, "no job 'ghost'"),
    (["jobs", "run", "--all", "--read", "registers", "--database", MISSING], CANNOT_RUN, "open"),
    (["jobs", "run", "--all", "--control", "explode"], CANNOT_RUN, "invalid choice"),
    (
        ["jobs", "run", "--all", "--read", "registers", "--broker", DEAD_BROKER, "--database",
         "{db}"],
        CANNOT_RUN,
        "cannot reach the broker amqp://guest:***@127.0.0.1:1//",
    ),
    (
        ["jobs", "run", "--all", "--read", "full", "--no-wait", "--database", "{db}"],
        CANNOT_RUN,
        "--no-wait needs a broker",
    ),
    (["jobs", "rerun-errors", "ghost", "--database", "{db}"], REFUSED, "no job 'ghost'"),
    (["jobs", "rerun-errors", "ghost", "--database", MISSING], CANNOT_RUN, "cannot open"),
    (["schedules", "list", "--database", MISSING], CANNOT_RUN, "cannot open the database"),
    (
        ["schedules", "add", "x", "--rule", "sometimes", "--all", "--read", "registers",
         "--database", "{db}"],
        REFUSED,
        "cron 'sometimes'",
    ),
    (["schedules", "add", "x", "--rule", "* * * * *", "--all"], CANNOT_RUN, "--read"),
    (["schedules", "enable", "ghost", "--database", "{db}"], REFUSED, "no schedule named"),
    (["schedules", "disable", "ghost", "--database", "{db}"], REFUSED, "no schedule named"),
    (["schedules", "remove", "ghost", "--database", MISSING], CANNOT_RUN, "cannot open"),
    (["stats", "--database", MISSING], CANNOT_RUN, "cannot open the database"),
    (["stats", "--days", "0"], CANNOT_RUN, "is not >= 1"),
    # export
    (["export", "--all", "--out", "{tmp}/x.xml", "--database", MISSING], CANNOT_RUN, "open"),
    (["export", "--meters", "NOPE", "--out", "{tmp}/x.xml", "--database", "{db}"], REFUSED,
     "no device 'NOPE'"),
    (["export", "--all", "--from", "yesterday", "--out", "x.xml"], CANNOT_RUN, "ISO 8601"),
    # debug
    (["debug", "on", "--meter", "GHOST", "--database", "{db}"], REFUSED, "no device 'GHOST'"),
    (["debug", "on", "--job", "ghost", "--database", MISSING], CANNOT_RUN, "cannot open"),
    (["debug", "off", "--meter", "GHOST", "--database", "{db}"], REFUSED, "was not on"),
    (["debug", "list", "--database", MISSING], CANNOT_RUN, "cannot open the database"),
    (["debug", "frames", "--limit", "5"], CANNOT_RUN, "required: --meter"),
    (["debug", "frames", "--meter", "M", "--job", "ghost", "--database", "{db}"], REFUSED,
     "no job 'ghost'"),
    # serve
    (["serve", "--config", "{tmp}/none.toml"], CANNOT_RUN, "cannot read the configuration"),
    (["serve", "--config", "{tmp}/bad.toml"], CANNOT_RUN, "soap.port"),
    (["serve", "--config", "{tmp}/missing-db.toml"], CANNOT_RUN, "cannot open the database"),
]  # fmt: skip


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A database with one meter registered, made once and copied for each case."""
    folder = tmp_path_factory.mktemp("template")
    book = folder / "book.csv"
    Fleet(FleetConfig(meters=1)).write_address_book(book)
    database = folder / "hes.sqlite3"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPENHES_MASTER_KEY", MASTER_HEX)
        assert main(["meters", "import", str(book), "--database", str(database)]) == 0
    yield folder


@pytest.fixture
def place(tmp_path: Path, template: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name in [n for n in os.environ if n.startswith("OPENHES_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("OPENHES_MASTER_KEY", MASTER_HEX)
    monkeypatch.chdir(tmp_path)  # the default database ./openhes.sqlite3 lands here
    shutil.copy(template / "hes.sqlite3", tmp_path / "hes.sqlite3")
    shutil.copy(template / "book.csv", tmp_path / "book.csv")
    (tmp_path / "a-file.txt").write_text("not a folder\n")
    (tmp_path / "bad.json").write_text("{this is not JSON nor XML\n")
    (tmp_path / "bad.toml").write_text("[soap]\nport = 'eighty'\n")
    (tmp_path / "bad-engine.toml").write_text("[paths]\nmax_sessions = 0\n")
    (tmp_path / "missing-db.toml").write_text(
        f'[database]\nurl = "{MISSING.format(tmp=tmp_path)}"\n[soap]\nport = 0\n'
    )
    return {"tmp": str(tmp_path), "db": str(tmp_path / "hes.sqlite3")}


@pytest.mark.parametrize(("argv", "status", "message"), CASES)
def test_bad_input_is_one_line(
    place: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    status: int,
    message: str,
) -> None:
    argv = [a.format(**place) for a in argv]
    assert main(argv) == status, capsys.readouterr().err
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    known = argv[0] != "frobnicate"
    assert lines[0].startswith(f"openhes {argv[0]}" if known else "openhes: "), err
    assert message in lines[0], err
    assert "Traceback" not in err and "secret" not in err


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> set[tuple]:
    found: set[tuple] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.add((*prefix, name))
                found |= _commands(sub, (*prefix, name))
    return found


def test_every_subcommand_has_a_bad_input_case() -> None:
    commands = _commands(build_parser())
    leaves = {c for c in commands if not any(o[: len(c)] == c and o != c for o in commands)}
    tried = {tuple(argv[:2]) for argv, _, _ in CASES} | {(argv[0],) for argv, _, _ in CASES}
    assert sorted(leaves - tried) == []
