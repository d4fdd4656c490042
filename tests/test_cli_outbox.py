"""`openhes subscriptions list` shows the configured ([[subscriptions]] in the TOML file) and
the table's subscriptions with their source; `outbox list --json`; `outbox deliver` takes the
outbox settings unless its options say otherwise."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from adapters.cli import build_parser, main
from adapters.cli_outbox import delivery_argv
from adapters.cli_support import CliError
from headend.outbox import Outbox
from mdm.database import open_store

CONFIG = """
[[subscriptions]]
name = "mdm"
address = "https://mdm.example/in"
nouns = ["MeterReadings"]

[[subscriptions]]
name = "oms"
address = "https://oms.example/in"
"""


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    for name in [n for n in os.environ if n.startswith("OPENHES_")]:
        monkeypatch.delenv(name)
    return f"sqlite:///{tmp_path / 'cli.sqlite3'}"


def test_subscriptions_list_shows_the_configured_and_the_table(db, tmp_path, capsys):
    config = tmp_path / "openhes.toml"
    config.write_text(CONFIG)
    assert main(["subscriptions", "add", "mdm", "http://old.example/in", "--database", db]) == 0
    assert main(["subscriptions", "add", "audit", "http://audit.example/", "--verb", "created",
                 "--database", db]) == 0  # fmt: skip
    assert main(["subscriptions", "disable", "audit", "--database", db]) == 0
    capsys.readouterr()
    assert main(["subscriptions", "list", "--config", str(config), "--database", db]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "mdm  enabled  * MeterReadings  https://mdm.example/in  [config]",
        "oms  enabled  * *  https://oms.example/in  [config]",
        "audit  disabled  created *  http://audit.example/  [table]",
        "mdm  overridden  * *  http://old.example/in  [table]",
    ]
    assert main(["subscriptions", "list", "--config", str(config), "--json", "--database", db]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["source"], r["in_force"]) for r in rows] == [
        ("mdm", "config", True),
        ("oms", "config", True),
        ("audit", "table", False),
        ("mdm", "table", False),
    ]
    assert rows[0]["nouns"] == ["MeterReadings"] and rows[2]["verbs"] == ["created"]


def test_subscriptions_list_reads_the_configuration_from_the_environment(
    db, tmp_path, monkeypatch, capsys
):
    config = tmp_path / "openhes.toml"
    config.write_text(CONFIG + f'\n[database]\nurl = "{db}"\n')
    monkeypatch.setenv("OPENHES_CONFIG", str(config))
    assert main(["subscriptions", "list", "--json"]) == 0  # the database from the file too
    assert [r["name"] for r in json.loads(capsys.readouterr().out)] == ["mdm", "oms"]
    monkeypatch.delenv("OPENHES_CONFIG")
    assert main(["subscriptions", "list", "--database", db]) == 0
    assert capsys.readouterr().out == "no subscriptions\n"
    assert main(["subscriptions", "list", "--json", "--database", db]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_a_bad_configuration_is_one_line(db, tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[[subscriptions]]\nname = 'x'\naddress = 'ftp://x'\n")
    assert main(["subscriptions", "list", "--config", str(bad), "--database", db]) == 2
    err = capsys.readouterr().err
    assert err.startswith("openhes subscriptions list: ") and "http:// or https://" in err
    assert len(err.splitlines()) == 1


def test_outbox_list_json(db, capsys):
    store = open_store(db)
    try:
        Outbox(store).enqueue(
            address="http://mdm.example/in", body=b"<x/>", message_id="m-1", kind="event"
        )
    finally:
        store.close()
    assert main(["outbox", "list", "--json", "--database", db]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["counts"] == {"pending": 1, "delivered": 0, "dead": 0}
    (item,) = data["items"]
    assert (item["message_id"], item["state"], item["kind"], item["bytes"]) == (
        "m-1",
        "pending",
        "event",
        4,
    )
    assert main(["outbox", "list", "--state", "dead", "--json", "--database", db]) == 0
    assert json.loads(capsys.readouterr().out)["items"] == []


def deliver_args(*argv: str):
    return build_parser().parse_args(["outbox", "deliver", *argv])


def test_deliver_takes_the_outbox_settings(db, tmp_path, monkeypatch):
    argv = delivery_argv(deliver_args("--database", db))
    assert argv[argv.index("--max-age-hours") + 1] == "24.0"
    assert argv[argv.index("--concurrency") + 1] == "4"
    monkeypatch.setenv("OPENHES_OUTBOX_MAX_AGE", "7200")
    monkeypatch.setenv("OPENHES_OUTBOX_CONCURRENCY", "9")
    argv = delivery_argv(deliver_args("--database", db))
    assert argv[argv.index("--max-age-hours") + 1] == "2.0"
    assert argv[argv.index("--concurrency") + 1] == "9"
    argv = delivery_argv(deliver_args("--max-age-hours", "0.5", "--concurrency", "2", "--database",
                                      db))  # fmt: skip
    assert argv[argv.index("--max-age-hours") + 1] == "0.5"
    assert argv[argv.index("--concurrency") + 1] == "2"
    config = tmp_path / "o.toml"
    config.write_text(f'[outbox]\nmax_age = 1800.0\n[database]\nurl = "{db}"\n')
    monkeypatch.delenv("OPENHES_OUTBOX_MAX_AGE")
    argv = delivery_argv(deliver_args("--config", str(config)))
    assert argv[argv.index("--max-age-hours") + 1] == "0.5"
    assert argv[argv.index("--database") + 1] == db


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        (["--max-age-hours", "0"], {}, "more than 0 hours"),
        ([], {"OPENHES_OUTBOX_MAX_AGE": "0"}, "more than 0 hours"),
        ([], {"OPENHES_OUTBOX_MAX_AGE": "soon"}, "OPENHES_OUTBOX_MAX_AGE: 'soon'"),
        (["--max-age-hours", "1e300"], {}, "too large"),
    ],
)
def test_deliver_refuses_what_cannot_run(db, monkeypatch, capsys, argv, environ, message):
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(CliError, match=message) as caught:
        delivery_argv(deliver_args(*argv, "--database", db))
    assert caught.value.status == 2
    assert main(["outbox", "deliver", *argv, "--database", db]) == 2
    err = capsys.readouterr().err
    assert err.startswith("openhes outbox deliver: ") and len(err.splitlines()) == 1
