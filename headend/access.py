"""Who may do what: roles, the authenticated caller (:class:`Principal`) and the one
authorisation rule the router applies to every request (:func:`allowed`).

Roles are cumulative: an operator may do everything a reader may, an admin everything an
operator may.

=========  ==================================================================================
reader     ``get`` of data: MeterReadings, EndDeviceEvents, EndDeviceControls
operator   the reader's rights; controls (connect, disconnect, arm, clock sync...: any
           request verb on EndDeviceControls), pushing data in (``create`` MeterReadings or
           EndDeviceEvents, or the EventMessage ``created`` MeterReadings or EndDeviceEvents
           another system sends), and ``get`` of schedules and configuration
admin      the operator's rights; configuration: MeterReadSchedule create/change/cancel/
           delete/close/execute and every other noun that is not data or controls
=========  ==================================================================================

Anything not listed is refused: the other past-tense verbs (``changed``, ``reply``...) are
messages the hub sends, not requests it takes, and are allowed to nobody.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Role(enum.StrEnum):
    READER = "reader"
    OPERATOR = "operator"
    ADMIN = "admin"


AUTHENTICATION_KINDS = frozenset({"basic", "wss", "esb", "file", "local"})


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: user (or system) name, roles, and how it was authenticated
    (``basic``, ``wss``, ``esb``, ``file`` or ``local``)."""

    name: str
    roles: frozenset[Role]
    authenticated_by: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "roles", frozenset(Role(r) for r in self.roles))

    @property
    def level(self) -> int:
        """The highest role's rank: 0 none, 1 reader, 2 operator, 3 admin."""
        return max((_RANK[r] for r in self.roles), default=0)


SYSTEM = Principal("system", frozenset(Role), "local")

_RANK = {Role.READER: 1, Role.OPERATOR: 2, Role.ADMIN: 3}

#: Nouns holding data or results: reading them needs the reader role.
DATA_NOUNS = frozenset({"MeterReadings", "EndDeviceEvents", "EndDeviceControls"})
#: Nouns a caller pushes data into (operator).
PUSH_NOUNS = frozenset({"MeterReadings", "EndDeviceEvents"})
CONTROL_NOUNS = frozenset({"EndDeviceControls"})
REQUEST_VERBS = frozenset({"create", "change", "cancel", "close", "delete", "execute"})
#: EventMessage verbs taken as data pushed in (IEC 61968-100: the sender of a Send service).
PUSH_VERBS = frozenset({"create", "created"})


def required_role(verb: str, noun: str) -> Role | None:
    """The least role that may send ``verb`` ``noun``; None when nobody may."""
    verb = verb.lower()
    if verb == "get":
        return Role.READER if noun in DATA_NOUNS else Role.OPERATOR
    if noun in PUSH_NOUNS and verb in PUSH_VERBS:
        return Role.OPERATOR
    if verb not in REQUEST_VERBS:
        return None
    if noun in CONTROL_NOUNS:
        return Role.OPERATOR
    return Role.ADMIN


def allowed(principal: Principal, verb: str, noun: str) -> bool:
    """Whether ``principal`` may send a request ``verb`` ``noun`` (see the module table)."""
    role = required_role(verb, noun)
    return role is not None and principal.level >= _RANK[role]


__all__ = ["SYSTEM", "Principal", "Role", "allowed", "required_role"]
