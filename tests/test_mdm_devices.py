"""The device registry on every database: CRUD with audit entries, names unique in their
context (enforced by the database itself), groups and usage points."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from cim.errors import ErrorCode
from mdm.audit import CREATED, entries
from mdm.devices import (
    Device,
    UsagePoint,
    add_name,
    add_to_group,
    create_device,
    create_devices,
    create_group,
    create_usage_point,
    find_device,
    get_device,
    get_usage_point,
    group_members,
    names,
    remove_from_group,
    remove_name,
    update_device,
    update_usage_point,
)
from mdm.errors import MdmError
from mdm.schema import device_groups, device_names, devices, usage_points

pytest_plugins = ["mdm_conftest"]


def test_create_and_read_a_device_with_its_usage_point(store):
    create_usage_point(store, UsagePoint("UP1", name="Main St 1"), who="alice")
    create_device(
        store,
        Device(
            "M1",
            serial="123",
            manufacturer="ACME",
            model="X1",
            protocol="dlms",
            usage_point="UP1",
            latitude=52.1,
            longitude=4.3,
            time_zone="Europe/Amsterdam",
        ),
        who="alice",
    )
    device = get_device(store, "M1")
    assert (device.usage_point, device.time_zone, device.latitude) == (
        "UP1",
        "Europe/Amsterdam",
        52.1,
    )
    (created,) = entries(store, object_type="device", object_id="M1")
    assert (created.who, created.attribute, created.old_value) == ("alice", CREATED, None)
    assert json.loads(created.new_value)["serial"] == "123"


def test_update_writes_one_audit_entry_per_changed_attribute(store):
    create_usage_point(store, UsagePoint("UP1"), who="a")
    create_device(store, Device("M1", firmware_version="1.0"), who="alice")
    diff = update_device(
        store,
        "M1",
        who="bob",
        note="upgrade campaign",
        firmware_version="1.1",
        status="inactive",
        usage_point="UP1",
        serial=None,
    )
    assert diff == {
        "firmware_version": ("1.0", "1.1"),
        "status": ("active", "inactive"),
        "usage_point": (None, "UP1"),
    }
    log = [
        e for e in entries(store, object_type="device", object_id="M1") if e.attribute != CREATED
    ]
    assert {(e.who, e.attribute, e.old_value, e.new_value, e.note) for e in log} == {
        ("bob", "firmware_version", "1.0", "1.1", "upgrade campaign"),
        ("bob", "status", "active", "inactive", "upgrade campaign"),
        ("bob", "usage_point", None, "UP1", "upgrade campaign"),
    }
    assert update_device(store, "M1", who="bob", firmware_version="1.1") == {}
    assert get_device(store, "M1").usage_point == "UP1"


def test_update_refuses_bad_values_and_unknown_devices(store):
    create_device(store, Device("M1"), who="a")
    with pytest.raises(MdmError) as caught:
        update_device(store, "M1", who="a", time_zone="Mars/Olympus")
    assert "IANA" in caught.value.reason
    with pytest.raises(MdmError):
        update_device(store, "M1", who="a", colour="red")
    with pytest.raises(MdmError) as caught:
        update_device(store, "NOPE", who="a", status="inactive")
    assert caught.value.error is ErrorCode.UNKNOWN_DEVICE
    with pytest.raises(ValueError):
        update_device(store, "M1", who="", status="inactive")


def test_usage_point_updates_are_audited(store):
    create_usage_point(store, UsagePoint("UP1", kind="gas"), who="a")
    update_usage_point(store, "UP1", who="b", name="Depot")
    assert get_usage_point(store, "UP1").name == "Depot"
    assert [e.attribute for e in entries(store, object_type="usage_point")] == [CREATED, "name"]


def test_alternative_names_are_unique_per_name_type(store):
    create_devices(store, [Device("M1"), Device("M2")], who="a")
    add_name(store, "M1", "serial", "S-1", who="a")
    add_name(store, "M2", "customer", "S-1", who="a")  # another name type: allowed
    with pytest.raises(MdmError) as caught:
        add_name(store, "M2", "serial", "S-1", who="a")
    assert "refused by the database" in caught.value.reason
    assert names(store, "M1") == [("serial", "S-1")]
    assert find_device(store, "S-1", "serial") == "M1"
    assert find_device(store, "S-1", "customer") == "M2"
    with pytest.raises(MdmError):
        find_device(store, "S-1")  # two devices carry it
    remove_name(store, "M1", "serial", "S-1", who="a")
    assert names(store, "M1") == []
    attributes = [e.attribute for e in entries(store, object_type="device", object_id="M1")]
    assert attributes == [CREATED, "name[serial]", "name[serial]"]


@pytest.mark.parametrize(
    ("table", "rows"),
    [
        (devices, [{"mrid": "X"}, {"mrid": "X"}]),
        (devices, [{"mrid": "X", "name": "n"}, {"mrid": "Y", "name": "n"}]),
        (usage_points, [{"mrid": "U"}, {"mrid": "U"}]),
        (device_groups, [{"name": "g"}, {"name": "g"}]),
    ],
)
def test_the_database_itself_enforces_unique_names(store, table, rows):
    now = datetime.now(UTC)
    defaults = {
        devices: {
            "kind": "electricity",
            "status": "active",
            "time_zone": "UTC",
            "created_at": now,
            "updated_at": now,
        },
        usage_points: {"kind": "electricity", "created_at": now, "updated_at": now},
        device_groups: {"created_at": now},
    }[table]
    with pytest.raises(IntegrityError), store.begin() as conn:
        conn.execute(insert(table), [{**defaults, **row} for row in rows])
    with store.connect() as conn:
        assert conn.execute(table.select()).all() == []


def test_the_database_enforces_unique_alternative_names(store):
    create_devices(store, [Device("M1"), Device("M2")], who="a")
    ids = [get_device_id(store, m) for m in ("M1", "M2")]
    with pytest.raises(IntegrityError), store.begin() as conn:
        conn.execute(
            insert(device_names),
            [
                {"device_id": ids[0], "name_type": "serial", "name": "S"},
                {"device_id": ids[1], "name_type": "serial", "name": "S"},
            ],
        )


def get_device_id(store, mrid):
    with store.connect() as conn:
        return conn.execute(devices.select().where(devices.c.mrid == mrid)).first().id


def test_a_failed_bulk_registration_registers_nothing(store):
    with pytest.raises(MdmError):
        create_devices(store, [Device("A"), Device("B"), Device("A")], who="a")
    with pytest.raises(MdmError):
        get_device(store, "B")
    assert entries(store) == []


def test_groups_membership_and_hierarchy_with_audit(store):
    create_devices(store, [Device(f"M{i}") for i in range(4)], who="a")
    create_group(store, "north", who="a")
    create_group(store, "north-1", who="a", parent="north", description="feeder 1")
    assert add_to_group(store, "north", ["M0", "M1"], who="a") == 2
    assert add_to_group(store, "north-1", ["M2", "M1"], who="a") == 2
    assert add_to_group(store, "north", ["M1"], who="a") == 0
    assert group_members(store, "north") == ["M0", "M1"]
    assert group_members(store, "north", recursive=True) == ["M0", "M1", "M2"]
    assert remove_from_group(store, "north", ["M0", "M3"], who="b") == 1
    assert group_members(store, "north") == ["M1"]
    log = [
        (e.who, e.old_value, e.new_value)
        for e in entries(store, object_id="north")
        if e.attribute == "member"
    ]
    assert log == [("a", None, "M0"), ("a", None, "M1"), ("b", "M0", None)]
    with pytest.raises(MdmError):
        create_group(store, "north", who="a")
    with pytest.raises(MdmError):
        add_to_group(store, "north", ["NOPE"], who="a")
