"""zeep clients built from the WSDLs the SOAP edge serves call every operation over real HTTP
on loopback, against the real router, head-end, worker and store (meters are the project's
in-process device stand-in, drivers.fake.FakeDriver)."""

from __future__ import annotations

import pytest
import zeep
from lxml import etree
from soap_helpers import DAY, DISCONNECT, get_readings_message, new_id, running_stack
from zeep.exceptions import Fault
from zeep.wsse.username import UsernameToken

from adapters.soap.services import catalogue

UNSUPPORTED = "3.3"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("zeep")) as running:
        yield running


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("zeep-auth"), authenticate=True) as running:
        yield running


def client(url: str, service: str, **options) -> zeep.Client:
    return zeep.Client(f"{url}/openhes/{service}?wsdl", **options)


def codes(response) -> list[str]:
    return [error.code for error in response.Reply.Error]


def controls_payload(mrid: str = "M1") -> dict:
    return {
        "EndDeviceControls": {
            "EndDeviceControl": [
                {"EndDeviceControlType": {"ref": DISCONNECT}, "EndDevices": [{"mRID": mrid}]}
            ]
        }
    }


def test_the_client_is_built_from_the_served_wsdl_with_the_rewritten_address(stack):
    for name, service in catalogue().items():
        c = client(stack.url, name)
        port = next(iter(next(iter(c.wsdl.services.values())).ports.values()))
        assert port.binding_options["address"] == f"{stack.url}/openhes/{name}"
        operations = set(port.binding._operations)
        assert operations == {operation.name for operation in service.operations}


def test_get_meter_readings_one_meter_day(stack):
    c = client(stack.url, "GetMeterReadings")
    response = c.service.GetMeterReadings(
        Header={"Verb": "get", "Noun": "MeterReadings", "MessageID": new_id()},
        Request={
            "GetMeterReadings": {
                "EndDevice": [{"mRID": "M1"}],
                "TimeSchedule": [{"scheduleInterval": {"start": DAY, "end": DAY.replace(day=2)}}],
            }
        },
    )
    assert response.Reply.Result == "OK"
    assert response.Header.Verb == "reply"
    document = response.Payload.MeterReadings
    readings = document.MeterReading[0].IntervalBlocks[0].IntervalReadings
    assert len(readings) == 96
    assert document.MeterReading[0].Meter.mRID == "M1"


def test_get_meter_readings_for_an_unknown_meter_is_a_failed_reply(stack):
    c = client(stack.url, "GetMeterReadings")
    response = c.service.GetMeterReadings(
        Header={"Verb": "get", "Noun": "MeterReadings", "MessageID": new_id()},
        Request={"GetMeterReadings": {"EndDevice": [{"mRID": "NOPE"}]}},
    )
    assert response.Reply.Result == "FAILED"
    assert "4.1" in codes(response)


def test_every_end_device_controls_operation(stack):
    c = client(stack.url, "ExecuteEndDeviceControls")
    correlation = new_id()
    created = c.service.CreateEndDeviceControls(
        Header={
            "Verb": "create",
            "Noun": "EndDeviceControls",
            "MessageID": new_id(),
            "CorrelationID": correlation,
        },
        Payload=controls_payload(),
    )
    assert created.Reply.Result == "OK"
    assert created.Header.CorrelationID == correlation
    assert any(error.reason == "disconnected, verified" for error in created.Reply.Error)
    for verb in ("Change", "Cancel", "Close", "Delete"):
        operation = getattr(c.service, f"{verb}EndDeviceControls")
        response = operation(
            Header={"Verb": verb.lower(), "Noun": "EndDeviceControls", "MessageID": new_id()},
            Payload=controls_payload(),
        )
        assert response.Reply.Result == "FAILED", verb
        assert codes(response) == [UNSUPPORTED], verb


def test_asynchronous_control_is_acknowledged_at_once(stack):
    c = client(stack.url, "ExecuteEndDeviceControls")
    response = c.service.CreateEndDeviceControls(
        Header={
            "Verb": "create",
            "Noun": "EndDeviceControls",
            "MessageID": new_id(),
            "AsyncReplyFlag": True,
            "ReplyAddress": "http://127.0.0.1:9/replies",
        },
        Payload=controls_payload("M2"),
    )
    assert response.Reply.Result == "OK"
    assert response.Payload is None  # the acknowledgement; the outcome goes to ReplyAddress


def test_get_end_device_events(stack):
    c = client(stack.url, "GetEndDeviceEvents")
    response = c.service.GetEndDeviceEvents(
        Header={"Verb": "get", "Noun": "EndDeviceEvents", "MessageID": new_id()},
        Request={"GetEndDeviceEvents": {"Meter": [{"mRID": "M1"}]}},
    )
    assert response.Reply.Result == "OK"


def test_every_meter_read_schedule_operation(stack):
    c = client(stack.url, "ExecuteMeterReadSchedule")
    schedule = {
        "MeterReadSchedule": {
            "EndDevice": [{"mRID": "M1"}],
            "ReadingType": [{"mRID": "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"}],
            "TimeSchedule": [
                {"recurrencePattern": "0 1 * * *", "scheduleInterval": {"start": DAY}}
            ],
        }
    }
    results = {}
    for verb in ("Create", "Change", "Cancel", "Close", "Delete"):
        operation = getattr(c.service, f"{verb}MeterReadSchedule")
        response = operation(
            Header={"Verb": verb.lower(), "Noun": "MeterReadSchedule", "MessageID": new_id()},
            Payload=schedule,
        )
        results[verb] = (response.Reply.Result, codes(response))
    # Every operation is answered with a ResponseMessage; the router serves all but close.
    assert results["Create"][0] in ("OK", "FAILED")
    assert results["Close"] == ("FAILED", [UNSUPPORTED])


def test_meter_readings_pushed_in_are_answered_by_the_router(stack):
    c = client(stack.url, "SendMeterReadings")
    for verb in ("Created", "Changed", "Canceled", "Closed", "Deleted"):
        operation = getattr(c.service, f"{verb}MeterReadings")
        response = operation(
            Header={"Verb": verb.lower(), "Noun": "MeterReadings", "MessageID": new_id()},
            Payload={"MeterReadings": {"MeterReading": []}},
        )
        assert response.Reply.Result == "FAILED", verb
        # created readings are ingested (an empty payload is 2.6); the other verbs are not taken
        assert codes(response) == (["2.6"] if verb == "Created" else [UNSUPPORTED]), verb


def test_generic_endpoint_takes_a_bare_request_message(stack):
    c = client(stack.url, "Generic")
    document = etree.fromstring(get_readings_message(wrapper=None))
    get_profile = next(document.iter("{http://iec.ch/TC57/2011/GetMeterReadings#}GetMeterReadings"))
    response = c.service.Request(
        Header={"Verb": "get", "Noun": "MeterReadings", "MessageID": new_id()},
        Request={"_value_1": [get_profile]},
    )
    assert response.Reply.Result == "OK"
    assert len(list(response.Payload._value_1[0].iter("{*}IntervalReadings"))) == 96
    event = c.service.Event(Header={"Verb": "created", "Noun": "MeterReadings"})
    assert event.Reply.Result == "FAILED"


def test_ws_security_username_token_through_zeep(secured):
    header = {"Verb": "get", "Noun": "MeterReadings"}
    request = {"GetMeterReadings": {"EndDevice": [{"mRID": "M1"}]}}
    good = client(secured.url, "GetMeterReadings", wsse=UsernameToken("reader", "reader-pw"))
    answer = good.service.GetMeterReadings(Header=header, Request=request)
    assert answer.Reply.Result == "OK", answer.Reply
    digest = client(
        secured.url, "GetMeterReadings", wsse=UsernameToken("reader", "wrong", use_digest=True)
    )
    with pytest.raises(Fault) as refused:
        digest.service.GetMeterReadings(Header=header, Request=request)
    assert refused.value.code.endswith("FailedAuthentication")
    assert refused.value.detail is not None
    assert next(refused.value.detail.iter("{*}code")).text == "5.1"
    anonymous = client(secured.url, "GetMeterReadings")
    with pytest.raises(Fault) as unauthenticated:
        anonymous.service.GetMeterReadings(Header=header, Request=request)
    assert unauthenticated.value.code.endswith("Client")


def test_the_operator_role_is_checked_by_the_router(secured):
    reader = client(
        secured.url, "ExecuteEndDeviceControls", wsse=UsernameToken("reader", "reader-pw")
    )
    response = reader.service.CreateEndDeviceControls(
        Header={"Verb": "create", "Noun": "EndDeviceControls", "MessageID": new_id()},
        Payload=controls_payload(),
    )
    assert response.Reply.Result == "FAILED"
    assert codes(response) == ["5.2"]
