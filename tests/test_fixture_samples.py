"""Every sample XML among the public IEC 61968-9 fixtures either reads as a message, or is
refused with a precise, documented reason. Most refusals are soapUI skeletons whose
placeholders ('?') stand where a date, boolean, code or base64 is required; the rest are
broken on purpose, or are not IEC 61968-100 messages at all. A new fixture file fails this
test until it is classified here."""

from __future__ import annotations

from pathlib import Path

import pytest

from cim.errors import CimError
from cim.messages import parse_message

REFUSED: dict[str, tuple[str, str]] = {
    # CIM RDF reference data, not a message
    "cim4noutility/Telemark-120/Asset/CIMXML/Telemark-120-ReadingQualityType_RD.xml": (
        "1.8",
        "root element 'RDF'",
    ),
    "cim4noutility/Telemark-120/Asset/CIMXML/Telemark-120-ReadingType_RD.xml": (
        "1.8",
        "root element 'RDF'",
    ),
    # soapUI placeholder '?' as the EndDevice*Type ref
    "openwms-epri/soapui-extracted/Disconnect-soapui-project/CreateEndDeviceControls.xml": (
        "2.4",
        "EndDevice event/control type '?'",
    ),
    "openwms-epri/soapui-extracted/Disconnect-soapui-project/Request_1_2.xml": (
        "2.4",
        "EndDevice event/control type '?'",
    ),
    "openwms-epri/soapui-extracted/MeterConnect-AMI-1/CreatedEndDeviceControls.xml": (
        "2.4",
        "EndDevice event/control type '?'",
    ),
    "openwms-epri/soapui-extracted/MeterConnect-AMI-2/Success.xml": (
        "2.4",
        "EndDevice event/control type '?'",
    ),
    "openwms-epri/soapui-extracted/MeterConnect_MDMS-4/Request_1.xml": (
        "2.4",
        "EndDevice event/control type '?'",
    ),
    "openwms-epri/soapui-extracted/MeterConnect_MDMS-4/Test_Request.xml": (
        "2.4",
        "EndDevice event/control type '?'",
    ),
    "openwms-epri/soapui-extracted/MeterOutage-MDMS-1/Success.xml": (
        "2.4",
        "EndDevice event/control type '?'",
    ),
    "openwms-epri/soapui-extracted/MeterOutage-OMS-1/CreatedEndDeviceEvents.xml": (
        "2.4",
        "EndDevice event/control type '?'",
    ),
    "openwms-epri/soapui-extracted/MeterOutage-OMS-1/resp_Response_1.xml": (
        "2.4",
        "EndDevice event/control type '?'",
    ),
    "openwms-epri/soapui-extracted/MeterTamper-AMI-1/Success.xml": (
        "2.4",
        "EndDevice event/control type '?'",
    ),
    # 'false' typed into Header/Timestamp
    "openwms-epri/soapui-extracted/Disconnect-soapui-project/MD_CIS-MDM_Create-MeterServiceRequest-fail.xml": (
        "1.9",
        "'false' is not an xs:dateTime",
    ),
    "openwms-epri/soapui-extracted/MeterConnect_CIS-1/Request_2.xml": (
        "1.9",
        "'false' is not an xs:dateTime",
    ),
    "openwms-epri/soapui-messages/MD_CIS-MDM_Create-MeterServiceRequest-fail-1.xml": (
        "1.9",
        "'false' is not an xs:dateTime",
    ),
    # soapUI placeholder ('?' or 'false') in Payload/Compressed
    "openwms-epri/soapui-extracted/Disconnect-soapui-project/MD_CIS-MDM_Request-MeterServiceRequest-success.xml": (
        "1.10",
        "Compressed is not valid base64",
    ),
    "openwms-epri/soapui-extracted/Disconnect-soapui-project/MD_CIS-MDM_Request_Updated-MeterServiceRequest-success.xml": (
        "1.10",
        "Compressed is not valid base64",
    ),
    "openwms-epri/soapui-extracted/Disconnect-soapui-project/Request_1.xml": (
        "1.10",
        "Compressed is not valid base64",
    ),
    "openwms-epri/soapui-extracted/MeterConnect-MDMS-8/Success.xml": (
        "1.10",
        "Compressed is not valid base64",
    ),
    "openwms-epri/soapui-extracted/MeterConnect_CIS-2/CreateMeterServiceRequests.xml": (
        "1.10",
        "Compressed is not valid base64",
    ),
    "openwms-epri/soapui-extracted/MeterConnect_CIS-2/Request_1.xml": (
        "1.10",
        "Compressed is not valid base64",
    ),
    "openwms-epri/soapui-extracted/MeterConnect_CIS-2/resp_Response_1.xml": (
        "1.10",
        "Compressed is not valid base64",
    ),
    "openwms-epri/soapui-extracted/MeterConnect_CIS-3/Request_1.xml": (
        "1.10",
        "Compressed is not valid base64",
    ),
    "openwms-epri/soapui-extracted/MeterConnect_MDMS-1/Success.xml": (
        "1.10",
        "Compressed is not valid base64",
    ),
    "openwms-epri/soapui-extracted/MeterSchedule-AMI-3/Fail.xml": (
        "1.10",
        "Compressed is not valid base64",
    ),
    "openwms-epri/soapui-extracted/MeterSchedule-AMI-3/Success.xml": (
        "1.10",
        "Compressed is not valid base64",
    ),
    "openwms-epri/soapui-extracted/epri-v2/CreatedMeterServiceRequests.xml": (
        "1.10",
        "Compressed is not valid base64",
    ),
    "openwms-epri/soapui-messages/MD_CIS-MDM_Request_Reply-MeterServiceRequest-success.xml": (
        "1.10",
        "Compressed is not valid base64",
    ),
    "openwms-epri/soapui-messages/MD_CIS-MDM_Request_Updated-MeterServiceRequest-success.xml": (
        "1.10",
        "Compressed is not valid base64",
    ),
    # deliberately broken sample (a negative test of its harness)
    "openwms-epri/soapui-extracted/Disconnect-soapui-project/Request_Disconnect.xml": (
        "1.1",
        "not well-formed XML",
    ),
    "openwms-epri/soapui-extracted/MeterConnect-AMI-5/Fail.xml": ("1.1", "not well-formed XML"),
    "openwms-epri/soapui-extracted/MeterOutage-MDMS-1/Fail.xml": ("1.1", "not well-formed XML"),
    "openwms-epri/soapui-extracted/epri/Request_1.xml": ("1.1", "not well-formed XML"),
    # soapUI placeholder '?' as a Header date-time
    "openwms-epri/soapui-extracted/Disconnect-soapui-project/bogus.xml": (
        "1.9",
        "'?' is not an xs:dateTime",
    ),
    "openwms-epri/soapui-extracted/MeterConnect-AMI-2/Fail.xml": (
        "1.9",
        "'?' is not an xs:dateTime",
    ),
    "openwms-epri/soapui-extracted/MeterConnect-MDMS-8/Fail.xml": (
        "1.9",
        "'?' is not an xs:dateTime",
    ),
    "openwms-epri/soapui-extracted/MeterConnect_CIS-1/CreatedMeterServiceRequests_Fail.xml": (
        "1.9",
        "'?' is not an xs:dateTime",
    ),
    "openwms-epri/soapui-extracted/MeterConnect_MDMS-3/Fail.xml": (
        "1.9",
        "'?' is not an xs:dateTime",
    ),
    "openwms-epri/soapui-extracted/MeterOnDemand-AMI-2/Fail.xml": (
        "1.9",
        "'?' is not an xs:dateTime",
    ),
    "openwms-epri/soapui-extracted/MeterOnDemand-CIS-3/Fail.xml": (
        "1.9",
        "'?' is not an xs:dateTime",
    ),
    "openwms-epri/soapui-extracted/MeterTamper-AMI-1/Fail.xml": (
        "1.9",
        "'?' is not an xs:dateTime",
    ),
    "r0ckflite-cim4/soapui-extracted/Request_1.xml": ("1.9", "'?' is not an xs:dateTime"),
    # sixthc test-harness message, not 61968-100
    "openwms-epri/soapui-extracted/Epri-Request-soapui-project/Request_1.xml": (
        "1.8",
        "root element 'MeterServiceRequestsPayloadMessage'",
    ),
    # EPRI draft verb 'request' (not in IEC 61968-100)
    "openwms-epri/soapui-extracted/MeterConnect_CIS-3/CreateMeterServiceRequests.xml": (
        "3.2",
        "'request' is not an IEC",
    ),
    "openwms-epri/soapui-extracted/MeterConnect_CIS-3/resp_Response_1.xml": (
        "3.2",
        "'request' is not an IEC",
    ),
    # soapUI placeholder '?' as a Header boolean
    "openwms-epri/soapui-extracted/MeterConnect_MDMS-2/Fail.xml": (
        "1.9",
        "'?' is not an xs:boolean",
    ),
    "openwms-epri/soapui-extracted/MeterConnect_MDMS-5/Fail.xml": (
        "1.9",
        "'?' is not an xs:boolean",
    ),
    "openwms-epri/soapui-extracted/MeterTamper-MDMS-2/Fail.xml": (
        "1.9",
        "'?' is not an xs:boolean",
    ),
    # two-part control type '1.2'
    "openwms-epri/soapui-extracted/MeterConnect_MDMS-3/Success.xml": (
        "2.4",
        "EndDevice event/control type '1.2'",
    ),
    # dummy ReadingType '1234' (not an 18-field code)
    "openwms-epri/soapui-extracted/MeterSchedule-AMI-1/CreatedMeterReadSchedule.xml": (
        "2.3",
        "ReadingType code '1234'",
    ),
    "openwms-epri/soapui-extracted/MeterSchedule-MDMS-1/Fail.xml": (
        "2.3",
        "ReadingType code '1234'",
    ),
    "openwms-epri/soapui-extracted/MeterSchedule-MDMS-1/Success.xml": (
        "2.3",
        "ReadingType code '1234'",
    ),
    # soapUI placeholder '?' as a ReadingType
    "openwms-epri/soapui-extracted/MeterSchedule-AMI-2/Fail.xml": ("2.3", "ReadingType code '?'"),
    "openwms-epri/soapui-extracted/MeterSchedule-AMI-2/Success.xml": (
        "2.3",
        "ReadingType code '?'",
    ),
    "openwms-epri/soapui-extracted/MeterSchedule-MDMS-2/CreatedMeterReadSchedule.xml": (
        "2.3",
        "ReadingType code '?'",
    ),
    "openwms-epri/soapui-extracted/MeterSchedule-MDMS-2/resp_Response_1.xml": (
        "2.3",
        "ReadingType code '?'",
    ),
    # bare 2010 draft payload, no 61968-100 envelope
    "openwms-epri/soapui-extracted/epri/FailMeterRequest.xml": (
        "1.8",
        "root element 'MeterServiceRequests'",
    ),
    "openwms-epri/soapui-extracted/epri/MeterRequest.xml": (
        "1.8",
        "root element 'MeterServiceRequests'",
    ),
    # sixthc test-harness message, not 61968-100
    "openwms-epri/soapui-extracted/epri/requestTamperMessage.xml": (
        "1.8",
        "root element 'EndDeviceMessage'",
    ),
    # verb 'NA' (not in IEC 61968-100)
    "openwms-epri/soapui-extracted/epri/resp_Response_1.xml": ("3.2", "'NA' is not an IEC"),
}
READ: frozenset[str] = frozenset(
    {
        "connexo/samples/coko/meterconfig/CreateMeterConfigRequest.xml",
        "connexo/samples/coko/meterreadings/GetUsagePointReadingsRequest.xml",
        "connexo/samples/coko/usagepointconfig/ChangeUsagePointConfigRequest.xml",
        "connexo/samples/coko/usagepointconfig/CreateUsagePointConfigRequest.xml",
        "connexo/samples/coko/usagepointconfig/GetUsagePointConfigRequest.xml",
        "connexo/samples/comu/enddeviceevents/ClosedEndDeviceEvents.xml",
        "connexo/samples/comu/getenddeviceevents/GetEndDeviceEventsRequest.xml",
        "connexo/samples/comu/masterdatalinkageconfig/CloseMasterDataLinkageConfigRequest.xml",
        "connexo/samples/comu/masterdatalinkageconfig/CreateMasterDataLinkageConfigRequest.xml",
        "connexo/samples/comu/meterconfig/ChangeMeterConfigRequestSync.xml",
        "connexo/samples/comu/meterconfig/CreateMeterConfigRequestAsync.xml",
        "connexo/samples/comu/meterconfig/CreateMeterConfigRequestSync.xml",
        "connexo/samples/comu/meterconfig/CreateMeterConfigWithSecurityRequest.xml",
        "openwms-epri/soapui-extracted/Disconnect-soapui-project/resp_Response_1.xml",
        "openwms-epri/soapui-extracted/Disconnect-soapui-project/resp_Response_1_2.xml",
        "openwms-epri/soapui-extracted/Meter-OnDemand-AMI-1/GetMeterReadings.xml",
        "openwms-epri/soapui-extracted/Meter-OnDemand-AMI-1/resp_Response_1.xml",
        "openwms-epri/soapui-extracted/Meter-OnDemand-MDMS-5/resp_Response_1.xml",
        "openwms-epri/soapui-extracted/MeterConnect-AMI-1/resp_Response_1.xml",
        "openwms-epri/soapui-extracted/MeterConnect-AMI-3/CreatedMeterReadings.xml",
        "openwms-epri/soapui-extracted/MeterConnect-AMI-3/resp_Response_1.xml",
        "openwms-epri/soapui-extracted/MeterConnect-AMI-4/Success.xml",
        "openwms-epri/soapui-extracted/MeterConnect-AMI-5/Success.xml",
        "openwms-epri/soapui-extracted/MeterConnect-MDMS-7/CreateMeterReadings.xml",
        "openwms-epri/soapui-extracted/MeterConnect-MDMS-7/resp_Response_1.xml",
        "openwms-epri/soapui-extracted/MeterConnect_MDMS-4/resp_Response_1.xml",
        "openwms-epri/soapui-extracted/MeterConnect_MDMS-5/Request_1.xml",
        "openwms-epri/soapui-extracted/MeterConnect_MDMS-5/Success.xml",
        "openwms-epri/soapui-extracted/MeterConnect_MDMS-6/CreateMeterReadings.xml",
        "openwms-epri/soapui-extracted/MeterConnect_MDMS-6/resp_Response_1.xml",
        "openwms-epri/soapui-extracted/MeterOnDemand-AMI-2/Success.xml",
        "openwms-epri/soapui-extracted/MeterOnDemand-AMI-3/resp_Response_1.xml",
        "openwms-epri/soapui-extracted/MeterOnDemand-AMI-4/success.xml",
        "openwms-epri/soapui-extracted/MeterOnDemand-CIS-1/Success.xml",
        "openwms-epri/soapui-extracted/MeterOnDemand-CIS-3/Success.xml",
        "openwms-epri/soapui-extracted/MeterOnDemand-CIS-5/Fail.xml",
        "openwms-epri/soapui-extracted/MeterOnDemand-CIS-5/Success.xml",
        "openwms-epri/soapui-extracted/MeterOnDemand-MDMS-1/resp_Response_1.xml",
        "openwms-epri/soapui-extracted/MeterOnDemand-MDMS-2/fail.xml",
        "openwms-epri/soapui-extracted/MeterOnDemand-MDMS-3/Fail.xml",
        "openwms-epri/soapui-extracted/MeterOnDemand-MDMS-3/Success.xml",
        "openwms-epri/soapui-extracted/MeterOnDemand-MDMS-6/Fail.xml",
        "openwms-epri/soapui-extracted/MeterSchedule-AMI-1/resp_Response_1.xml",
        "openwms-epri/soapui-extracted/MeterSchedule-MDMS-3/resp_Response_1.xml",
        "openwms-epri/soapui-extracted/ben-test-soapui-project/Test_Request.xml",
        "openwms-epri/soapui-messages/MD_CIS-MDM_Request_Reply-MeterServiceRequest-response.xml",
        "openwms-epri/soapui-messages/MD_CIS-MDM_Request_Updated-MeterServiceRequest-response.xml",
    }
)


def _samples(fixtures_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(fixtures_dir)) for p in fixtures_dir.rglob("*.xml"))


def test_every_sample_is_classified(fixtures_dir: Path) -> None:
    assert set(_samples(fixtures_dir)) == set(REFUSED) | READ


@pytest.mark.parametrize("name", sorted(READ))
def test_sample_reads(fixtures_dir: Path, name: str) -> None:
    parsed = parse_message((fixtures_dir / name).read_bytes(), require_served_noun=False)
    assert parsed.message.header is not None or parsed.message.reply is not None


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_sample_is_refused_precisely(fixtures_dir: Path, name: str) -> None:
    code, reason = REFUSED[name]
    with pytest.raises(CimError) as info:
        parse_message((fixtures_dir / name).read_bytes(), require_served_noun=False)
    assert info.value.code == code
    assert reason in info.value.reason
    if info.value.error.category != 1 or code in ("1.9", "1.10"):
        assert info.value.line is not None  # the operator can find the spot
