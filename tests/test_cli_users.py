"""`openhes users`: add, list, passwd, roles, disable, enable, unlock; one-line errors and
exit codes."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from adapters import cli_users
from adapters.auth.authenticator import Authenticator, AuthError, LockoutPolicy
from adapters.auth.passwords import ENV_PARAMS, ScryptParams
from adapters.auth.users import get_user
from adapters.cli import main
from headend.keys import ENV_MASTER_KEY
from mdm.audit import entries
from mdm.database import open_store

FAST = "n=16,r=1,p=1"


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(ENV_PARAMS, FAST)
    monkeypatch.delenv(ENV_MASTER_KEY, raising=False)
    return str(tmp_path / "users.sqlite3")


def run(db: str, monkeypatch: pytest.MonkeyPatch, *argv: str, stdin: str = "") -> int:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    return main(["users", *argv, "--database", db])


def login(db: str, name: str, password: str):
    store = open_store(db)
    try:
        auth = Authenticator(store, LockoutPolicy(max_failures=2), params=ScryptParams(16, 1, 1))
        header = "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()
        return auth.authenticate(authorization=header, soap_header=None, peer="test")
    finally:
        store.close()


def test_add_list_and_log_in(db, monkeypatch, capsys) -> None:
    assert (
        run(
            db,
            monkeypatch,
            "add",
            "ops",
            "--role",
            "operator",
            "--password-stdin",
            "--who",
            "lead",
            stdin="pa ss\n",
        )
        == 0
    )
    assert "added user ops (operator)" in capsys.readouterr().out
    assert login(db, "ops", "pa ss").name == "ops"  # only the newline is taken off
    assert run(db, monkeypatch, "list") == 0
    out = capsys.readouterr().out
    assert "NAME" in out and "ops" in out and "operator" in out and "enabled" in out
    assert run(db, monkeypatch, "list", "--json") == 0
    (user,) = json.loads(capsys.readouterr().out)
    assert user["name"] == "ops" and user["roles"] == ["operator"] and not user["locked"]
    store = open_store(db)
    assert entries(store, object_type="user")[0].who == "lead"
    store.close()


def test_no_users(db, monkeypatch, capsys) -> None:
    assert run(db, monkeypatch, "list") == 0
    assert capsys.readouterr().out.strip() == "no users"


def test_refusals_are_one_line_and_exit_1(db, monkeypatch, capsys) -> None:
    assert (
        run(db, monkeypatch, "add", "ops", "--role", "reader", "--password-stdin", stdin="x\n") == 0
    )
    capsys.readouterr()
    cases = [
        (("add", "ops", "--role", "reader", "--password-stdin"), "already exists"),
        (("add", "a:b", "--role", "reader", "--password-stdin"), "must not contain ':'"),
        (("add", "new", "--role", "reader", "--password-stdin"), "the password is empty"),
        (("passwd", "ghost", "--password-stdin"), "no user 'ghost'"),
        (("disable", "ghost"), "no user 'ghost'"),
        (("enable", "ghost"), "no user 'ghost'"),
        (("roles", "ghost", "--role", "admin"), "no user 'ghost'"),
    ]
    for argv, message in cases:
        assert run(db, monkeypatch, *argv, stdin="") == 1, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (argv, err)


def test_usage_errors_exit_2(db, monkeypatch, capsys) -> None:
    assert run(db, monkeypatch, "add", "x", "--role", "superuser") == 2
    assert run(db, monkeypatch, "add", "x") == 2  # --role is required
    assert run(db, monkeypatch, "frobnicate") == 2
    capsys.readouterr()


def test_no_terminal_no_master_key_no_database(db, monkeypatch, capsys, tmp_path) -> None:
    assert run(db, monkeypatch, "add", "x", "--role", "reader") == 2
    assert "use --password-stdin" in capsys.readouterr().err
    assert (
        run(
            db,
            monkeypatch,
            "add",
            "x",
            "--role",
            "reader",
            "--digest",
            "--password-stdin",
            stdin="pw\n",
        )
        == 2
    )
    assert ENV_MASTER_KEY in capsys.readouterr().err
    store = open_store(db)
    assert get_user(store, "x") is None  # nothing half done
    store.close()
    bad = main(["users", "list", "--database", "postgresql://nobody@127.0.0.1:1/none"])
    assert bad == 2
    err = capsys.readouterr().err
    assert err.startswith("openhes users list: ") and err.count("\n") == 1


def test_digest_users_with_a_master_key(db, monkeypatch, capsys) -> None:
    monkeypatch.setenv(ENV_MASTER_KEY, "11" * 32)
    assert (
        run(
            db,
            monkeypatch,
            "add",
            "d",
            "--role",
            "reader",
            "--digest",
            "--password-stdin",
            stdin="pw\n",
        )
        == 0
    )
    assert "PasswordDigest allowed" in capsys.readouterr().out
    store = open_store(db)
    assert get_user(store, "d").digest
    assert (
        run(db, monkeypatch, "passwd", "d", "--no-digest", "--password-stdin", stdin="pw2\n") == 0
    )
    assert not get_user(store, "d").digest
    store.close()
    assert login(db, "d", "pw2").name == "d"


def test_interactive_password(db, monkeypatch, capsys) -> None:
    answers = iter(["one", "two", "same", "same"])
    monkeypatch.setattr(cli_users.getpass, "getpass", lambda prompt: next(answers))

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Tty())
    assert main(["users", "add", "i", "--role", "admin", "--database", db]) == 1
    assert "the passwords differ" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", Tty())
    assert main(["users", "add", "i", "--role", "admin", "--database", db]) == 0
    assert login(db, "i", "same").name == "i"


def test_passwd_roles_disable_enable_unlock(db, monkeypatch, capsys) -> None:
    assert (
        run(db, monkeypatch, "add", "u", "--role", "reader", "--password-stdin", stdin="old\n") == 0
    )
    assert run(db, monkeypatch, "passwd", "u", "--password-stdin", stdin="new\n") == 0
    assert login(db, "u", "new").name == "u"
    assert run(db, monkeypatch, "roles", "u", "--role", "operator", "--role", "reader") == 0
    assert "roles of u: operator,reader" in capsys.readouterr().out
    assert run(db, monkeypatch, "roles", "u", "--role", "reader", "--role", "operator") == 0
    assert "(unchanged)" in capsys.readouterr().out
    assert run(db, monkeypatch, "disable", "u") == 0
    assert run(db, monkeypatch, "disable", "u") == 0
    assert capsys.readouterr().out.splitlines() == ["disabled u", "u was disabled"]
    with pytest.raises(AuthError, match="disabled"):
        login(db, "u", "new")
    assert run(db, monkeypatch, "list") == 0
    assert "disabled" in capsys.readouterr().out
    assert run(db, monkeypatch, "enable", "u") == 0
    for _ in range(2):
        with pytest.raises(AuthError):
            login(db, "u", "wrong")
    with pytest.raises(AuthError, match="locked"):
        login(db, "u", "new")
    assert run(db, monkeypatch, "list") == 0
    assert "locked until" in capsys.readouterr().out
    assert run(db, monkeypatch, "unlock", "u") == 0
    assert run(db, monkeypatch, "unlock", "u") == 0
    assert capsys.readouterr().out.splitlines() == ["unlocked u", "u had no failed logins"]
    assert login(db, "u", "new").name == "u"


def test_the_real_command_reads_a_piped_password(tmp_path: Path) -> None:
    env = {**os.environ, ENV_PARAMS: FAST}
    db = str(tmp_path / "piped.sqlite3")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "adapters.cli",
            "users",
            "add",
            "p",
            "--role",
            "reader",
            "--password-stdin",
            "--database",
            db,
        ],
        input="piped pw\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 0, done.stderr
    assert login(db, "p", "piped pw").name == "p"
