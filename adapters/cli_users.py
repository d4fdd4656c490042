"""``openhes users``: add, list, disable, enable, unlock users, change passwords and roles.

Passwords are read from the terminal (asked twice) or, with ``--password-stdin``, from the
first line of standard input; never from the command line, where other users of the machine
could see them. Exit status: 0 done, 1 refused (no such user, user exists, bad password or
role), 2 could not run (database, master key, no terminal). Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

from adapters.cli_support import (
    DATABASE_HELP,
    EXIT_OK,
    command_name,
    database,
    guarded,
    print_json,
    print_table,
)
from headend.access import Role

ROLES = [r.value for r in Role]


class _CannotRun(Exception):
    pass


def _who(args: argparse.Namespace) -> str:
    if args.who:
        return args.who[:64]
    try:
        return ("cli:" + getpass.getuser())[:64]
    except (OSError, KeyError, ImportError):
        return "cli"


def read_password(
    from_stdin: bool, stdin: TextIO | None = None, ask: Callable[[str], str] | None = None
) -> str:
    """The new password: the first line of stdin, or asked twice on the terminal."""
    stdin = stdin or sys.stdin
    if from_stdin:
        line = stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    if ask is None:
        if not stdin.isatty():
            raise _CannotRun("no terminal to ask for the password; use --password-stdin")
        ask = getpass.getpass
    first = ask("Password: ")
    if ask("Password again: ") != first:
        raise ValueError("the passwords differ")
    return first.rstrip("\r")


def _run(args: argparse.Namespace, action: Callable[..., int]) -> int:
    """``action(store, args)``: refusals (no such user, bad password or role) exit 1; the
    database, the master key or no terminal exit 2; each as one line."""
    from headend.keys import MasterKeyError

    def body() -> int:
        with database(args.database) as store:
            return action(store, args)

    return guarded(
        command_name(args),
        body,
        refused=(ValueError,),  # UserError and PasswordError among them
        cannot_run=(MasterKeyError, _CannotRun),
    )


def _add(store, args: argparse.Namespace) -> int:
    from adapters.auth.users import UserError, add_user, check_name, check_roles, get_user

    check_name(args.name)
    check_roles(args.role)
    if get_user(store, args.name) is not None:
        raise UserError(f"user {args.name!r} already exists")
    password = read_password(args.password_stdin)
    add_user(store, args.name, password, args.role, who=_who(args), digest=args.digest)
    roles = ",".join(sorted(args.role))
    print(f"added user {args.name} ({roles}{', PasswordDigest allowed' if args.digest else ''})")
    return EXIT_OK


def _passwd(store, args: argparse.Namespace) -> int:
    from adapters.auth.users import UserError, get_user, set_password

    if get_user(store, args.name) is None:
        raise UserError(f"no user {args.name!r}")
    password = read_password(args.password_stdin)
    set_password(store, args.name, password, who=_who(args), digest=args.digest)
    print(f"changed the password of {args.name}")
    return EXIT_OK


def _list(store, args: argparse.Namespace) -> int:
    from adapters.auth.users import list_users

    now = datetime.now(UTC)
    found = list_users(store)
    if args.json:
        print_json([_as_dict(user, now) for user in found])
        return EXIT_OK
    rows = []
    for user in found:
        if user.locked(now):
            assert user.locked_until is not None
            lockout = f"locked until {user.locked_until.isoformat(timespec='seconds')}"
        elif user.failures:
            lockout = f"{user.failures} recent failures"
        else:
            lockout = "-"
        rows.append(
            (
                user.name,
                ",".join(sorted(r.value for r in user.roles)),
                "enabled" if user.enabled else "disabled",
                "yes" if user.digest else "no",
                lockout,
            )
        )
    print_table(("NAME", "ROLES", "STATE", "DIGEST", "LOCKOUT"), rows, empty="no users")
    return EXIT_OK


def _as_dict(user: Any, now: datetime) -> dict[str, Any]:
    return {
        "name": user.name,
        "roles": sorted(r.value for r in user.roles),
        "enabled": user.enabled,
        "digest": user.digest,
        "failures": user.failures,
        "locked": user.locked(now),
        "locked_until": user.locked_until.isoformat() if user.locked_until else None,
        "created_at": user.created_at.isoformat(),
        "updated_at": user.updated_at.isoformat(),
    }


def _simple(function_name: str, done: str, unchanged: str) -> Callable[..., int]:
    def run(store, args: argparse.Namespace) -> int:
        from adapters.auth import users

        if function_name != "unlock" and users.get_user(store, args.name) is None:
            raise users.UserError(f"no user {args.name!r}")
        changed = getattr(users, function_name)(store, args.name, who=_who(args))
        print((done if changed else unchanged).format(name=args.name))
        return EXIT_OK

    return run


def _roles(store, args: argparse.Namespace) -> int:
    from adapters.auth.users import set_roles

    changed = set_roles(store, args.name, args.role, who=_who(args))
    roles = ",".join(sorted(set(args.role)))
    print(f"roles of {args.name}: {roles}" + ("" if changed else " (unchanged)"))
    return EXIT_OK


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("users", help="users of the SOAP edge, their roles and lockouts")
    sub = parser.add_subparsers(dest="users_command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str, action: Callable[..., int]) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument(
            "--database",
            default=None,
            help=DATABASE_HELP,
        )
        p.add_argument("--who", default=None, help="name recorded in the audit log")
        p.set_defaults(handler=lambda args: _run(args, action))
        return p

    def password_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--password-stdin",
            action="store_true",
            help="read the password from the first line of standard input",
        )

    add = command("add", "add a user", _add)
    add.add_argument("name", metavar="NAME")
    add.add_argument(
        "--role", action="append", choices=ROLES, required=True, help="reader, operator or admin"
    )
    password_options(add)
    add.add_argument(
        "--digest",
        action="store_true",
        help="also allow WS-Security PasswordDigest (keeps the password encrypted under "
        "OPENHES_MASTER_KEY; see docs/security.md)",
    )

    listing = command("list", "list users, roles, state and lockouts", _list)
    listing.add_argument("--json", action="store_true", help="print JSON for scripts")

    passwd = command("passwd", "set a new password", _passwd)
    passwd.add_argument("name", metavar="NAME")
    password_options(passwd)
    digest = passwd.add_mutually_exclusive_group()
    digest.add_argument("--digest", dest="digest", action="store_true", default=None)
    digest.add_argument("--no-digest", dest="digest", action="store_false")

    roles = command("roles", "replace the roles of a user", _roles)
    roles.add_argument("name", metavar="NAME")
    roles.add_argument("--role", action="append", choices=ROLES, required=True)

    for name, help_text, done, unchanged in (
        ("disable", "refuse every login of a user", "disabled {name}", "{name} was disabled"),
        ("enable", "allow a disabled user again", "enabled {name}", "{name} was enabled"),
        (
            "unlock",
            "lift a lockout and forget failed logins",
            "unlocked {name}",
            "{name} had no failed logins",
        ),
    ):
        p = command(name, help_text, _simple(name, done, unchanged))
        p.add_argument("name", metavar="NAME")


__all__ = ["read_password", "register"]
