"""Roles and the authorisation rule of the router: reader gets data, operator also controls
and pushes data in, admin also configures; past-tense verbs are nobody's but the
created MeterReadings or EndDeviceEvents other systems send (data pushed in: operator)."""

from __future__ import annotations

import pytest

from headend.access import SYSTEM, Principal, Role, allowed, required_role

READER = Principal("rita", frozenset({Role.READER}), "basic")
OPERATOR = Principal("otto", frozenset({Role.OPERATOR}), "wss")
ADMIN = Principal("ada", frozenset({Role.ADMIN}), "basic")
NOBODY = Principal("nemo", frozenset(), "basic")

CASES = [
    # verb, noun, reader, operator, admin
    ("get", "MeterReadings", True, True, True),
    ("get", "EndDeviceEvents", True, True, True),
    ("get", "EndDeviceControls", True, True, True),
    ("get", "MeterReadSchedule", False, True, True),
    ("create", "EndDeviceControls", False, True, True),
    ("execute", "EndDeviceControls", False, True, True),
    ("cancel", "EndDeviceControls", False, True, True),
    ("create", "MeterReadings", False, True, True),
    ("create", "EndDeviceEvents", False, True, True),
    ("change", "MeterReadings", False, False, True),
    ("create", "MeterReadSchedule", False, False, True),
    ("change", "MeterReadSchedule", False, False, True),
    ("cancel", "MeterReadSchedule", False, False, True),
    ("delete", "MeterReadSchedule", False, False, True),
    ("create", "MeterConfig", False, False, True),
    ("get", "MeterConfig", False, True, True),
    ("created", "MeterReadings", False, True, True),
    ("created", "EndDeviceEvents", False, True, True),
    ("changed", "MeterReadings", False, False, False),
    ("created", "EndDeviceControls", False, False, False),
    ("reply", "EndDeviceControls", False, False, False),
    ("canceled", "MeterReadSchedule", False, False, False),
]


@pytest.mark.parametrize(("verb", "noun", "reader", "operator", "admin"), CASES)
def test_each_role_may_do_what_the_table_says(
    verb: str, noun: str, reader: bool, operator: bool, admin: bool
) -> None:
    assert allowed(READER, verb, noun) is reader
    assert allowed(OPERATOR, verb, noun) is operator
    assert allowed(ADMIN, verb, noun) is admin
    assert allowed(NOBODY, verb, noun) is False
    assert allowed(SYSTEM, verb, noun) is admin


def test_verbs_are_case_insensitive_and_roles_are_cumulative() -> None:
    assert allowed(READER, "GET", "MeterReadings")
    assert allowed(
        Principal("x", frozenset({Role.READER, Role.ADMIN}), "basic"), "create", "EndDeviceControls"
    )
    assert required_role("create", "EndDeviceControls") is Role.OPERATOR
    assert required_role("reply", "MeterReadings") is None


def test_principal_roles_are_checked_and_system_has_them_all() -> None:
    assert SYSTEM.roles == frozenset(Role) and SYSTEM.authenticated_by == "local"
    assert Principal("p", frozenset({"reader"}), "file").roles == {Role.READER}  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Principal("p", frozenset({"root"}), "basic")  # type: ignore[arg-type]
    assert NOBODY.level == 0 and ADMIN.level == 3
