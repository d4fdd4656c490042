"""Every service the SOAP edge serves has an operation that works: a zeep client built from
the served WSDL calls one operation of each with valid input, over real HTTP on loopback,
and gets a ResponseMessage that is not FAILED. Data other systems push in (the Send*
services' Created operations) is stored."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
import zeep
from lxml import etree
from soap_helpers import DAY, DISCONNECT, get_readings_message, new_id, running_stack

from adapters.soap.services import DEFAULT_SERVICES, catalogue
from mdm.events import read_events
from mdm.readings import read_one

REGISTER_KWH = "0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
INTERVAL_KWH = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
POWER_DOWN = "3.26.0.47"
PUSHED_AT = DAY + timedelta(days=3)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("served")) as running:
        yield running


def client(url: str, service: str) -> zeep.Client:
    return zeep.Client(f"{url}/openhes/{service}?wsdl")


def by_device(response) -> dict[str, tuple[str, str]]:
    """Error/ID -> (code, reason) of a reply's per-object entries."""
    return {e.ID._value_1: (e.code, e.reason) for e in response.Reply.Error if e.ID is not None}


def header(verb: str, noun: str) -> dict:
    return {"Verb": verb, "Noun": noun, "MessageID": new_id(), "CorrelationID": new_id()}


def get_meter_readings(c: zeep.Client):
    return c.service.GetMeterReadings(
        Header=header("get", "MeterReadings"),
        Request={
            "GetMeterReadings": {
                "EndDevice": [{"mRID": "M1"}],
                "TimeSchedule": [{"scheduleInterval": {"start": DAY, "end": DAY.replace(day=2)}}],
            }
        },
    )


def create_end_device_controls(c: zeep.Client):
    return c.service.CreateEndDeviceControls(
        Header=header("create", "EndDeviceControls"),
        Payload={
            "EndDeviceControls": {
                "EndDeviceControl": [
                    {"EndDeviceControlType": {"ref": DISCONNECT}, "EndDevices": [{"mRID": "M1"}]}
                ]
            }
        },
    )


def get_end_device_events(c: zeep.Client):
    return c.service.GetEndDeviceEvents(
        Header=header("get", "EndDeviceEvents"),
        Request={"GetEndDeviceEvents": {"Meter": [{"mRID": "M1"}]}},
    )


def create_meter_read_schedule(c: zeep.Client):
    return c.service.CreateMeterReadSchedule(
        Header=header("create", "MeterReadSchedule"),
        Payload={
            "MeterReadSchedule": {
                "EndDevice": [{"mRID": "M1"}],
                "ReadingType": [{"mRID": INTERVAL_KWH}],
                "TimeSchedule": [
                    {
                        "recurrencePattern": "0 1 * * *",
                        "scheduleInterval": {"start": datetime.now(UTC)},
                    }
                ],
            }
        },
    )


def created_meter_readings(c: zeep.Client):
    return c.service.CreatedMeterReadings(
        Header=header("created", "MeterReadings"),
        Payload={
            "MeterReadings": {
                "MeterReading": [
                    {
                        "Meter": {"mRID": "M2"},
                        "Readings": [
                            {
                                "timeStamp": PUSHED_AT,
                                "value": "4321.5",
                                "ReadingType": {"ref": REGISTER_KWH},
                            }
                        ],
                    }
                ]
            }
        },
    )


def created_end_device_events(c: zeep.Client, at: datetime = PUSHED_AT):
    return c.service.CreatedEndDeviceEvents(
        Header=header("created", "EndDeviceEvents"),
        Payload={
            "EndDeviceEvents": {
                "EndDeviceEvent": [
                    {
                        "createdDateTime": at,
                        "Assets": {"mRID": "M1"},
                        "EndDeviceEventDetails": [{"name": "phase", "value": "A"}],
                        "EndDeviceEventType": {"ref": POWER_DOWN},
                    }
                ]
            }
        },
    )


def generic_request(c: zeep.Client):
    document = etree.fromstring(get_readings_message(wrapper=None))
    get_profile = next(document.iter("{http://iec.ch/TC57/2011/GetMeterReadings#}GetMeterReadings"))
    return c.service.Request(
        Header=header("get", "MeterReadings"), Request={"_value_1": [get_profile]}
    )


#: One working operation per served service.
WORKING: dict[str, Callable[[zeep.Client], object]] = {
    "GetMeterReadings": get_meter_readings,
    "ExecuteEndDeviceControls": create_end_device_controls,
    "GetEndDeviceEvents": get_end_device_events,
    "ExecuteMeterReadSchedule": create_meter_read_schedule,
    "SendMeterReadings": created_meter_readings,
    "SendEndDeviceEvents": created_end_device_events,
    "Generic": generic_request,
}


def test_every_served_service_has_a_working_operation_in_the_table():
    assert set(WORKING) == set(catalogue())
    assert "ReceiveEndDeviceEvents" not in DEFAULT_SERVICES


@pytest.mark.parametrize("service", sorted(WORKING))
def test_a_working_operation_of_each_served_service(stack, service):
    response = WORKING[service](client(stack.url, service))
    assert response.Reply.Result in ("OK", "PARTIAL"), response.Reply
    assert response.Reply.Result == "OK", response.Reply
    assert response.Header.Verb == "reply"


def test_readings_and_events_pushed_in_are_stored(stack):
    readings = client(stack.url, "SendMeterReadings")
    response = created_meter_readings(readings)
    assert response.Reply.Result == "OK"
    register = read_one(stack.store, "M2", REGISTER_KWH, PUSHED_AT - timedelta(hours=1), PUSHED_AT)
    assert [p.value for p in register.points] == [Decimal("4321.5")]
    events = client(stack.url, "SendEndDeviceEvents")
    at = PUSHED_AT + timedelta(hours=1)
    first = created_end_device_events(events, at)
    assert first.Reply.Result == "OK"
    assert by_device(first) == {"M1": ("0.0", "1 event(s) received, 1 new")}
    again = created_end_device_events(events, at)  # the same event again: stored once
    assert again.Reply.Result == "OK"
    assert by_device(again) == {"M1": ("0.0", "1 event(s) received, 0 new")}
    (stored,) = read_events(stack.store, ["M1"], at - timedelta(minutes=1), at)
    assert stored.event_type == POWER_DOWN and stored.details == {"phase": "A"}


def test_events_of_an_unknown_meter_get_their_own_error(stack):
    c = client(stack.url, "SendEndDeviceEvents")
    response = c.service.CreatedEndDeviceEvents(
        Header=header("created", "EndDeviceEvents"),
        Payload={
            "EndDeviceEvents": {
                "EndDeviceEvent": [
                    {
                        "createdDateTime": PUSHED_AT + timedelta(minutes=5),
                        "Assets": {"mRID": mrid},
                        "EndDeviceEventType": {"ref": POWER_DOWN},
                    }
                    for mrid in ("M2", "GHOST")
                ]
            }
        },
    )
    assert response.Reply.Result == "PARTIAL"
    found = by_device(response)
    assert found["GHOST"][0] == "4.1" and found["M2"] == ("0.0", "1 event(s) received, 1 new")


def test_the_other_operations_of_the_send_services_are_refused_with_3_3(stack):
    c = client(stack.url, "SendEndDeviceEvents")
    response = c.service.ChangedEndDeviceEvents(
        Header=header("changed", "EndDeviceEvents"),
        Payload={"EndDeviceEvents": {"EndDeviceEvent": []}},
    )
    assert response.Reply.Result == "FAILED"
    assert [e.code for e in response.Reply.Error] == ["3.3"]


def test_receive_end_device_events_is_not_served(stack):
    answer = httpx.get(f"{stack.url}/openhes/ReceiveEndDeviceEvents?wsdl")
    assert answer.status_code == 404
