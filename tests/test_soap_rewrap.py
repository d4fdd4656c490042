"""The per-noun reply wrapper written as bytes (adapters.soap.envelope._rewrap_bytes) is the
same, byte for byte, as the lxml re-write of the router's ResponseMessage; forms it does not
handle fall back to the re-write."""

from __future__ import annotations

import asyncio

import pytest
from lxml import etree
from soap_helpers import build_router, fill_store, get_readings_message

from adapters.soap.envelope import _rewrap_bytes, _rewrap_tree, rewrap
from cim import namespaces as ns
from cim.end_device_controls import EndDeviceControl, EndDeviceControls
from cim.envelope import (
    Header,
    Identifier,
    Message,
    MessageKind,
    Operation,
    OperationSet,
    Payload,
    Reply,
    ReplyError,
    Result,
)
from cim.messages import emit_message
from cim.model import ObjectRef
from headend.access import SYSTEM

READINGS_OUT = "{http://iec.ch/TC57/2011/GetMeterReadingsMessage}MeterReadingsResponseMessage"
CONTROLS_OUT = "{http://iec.ch/TC57/2011/EndDeviceControlsMessage}EndDeviceControlsResponseMessage"


def _controls() -> EndDeviceControls:
    return EndDeviceControls(
        controls=[EndDeviceControl(control_type="3.31.0.23", end_devices=[ObjectRef("M1")])]
    )


def _response(reply: Reply, payload: Payload | None = None) -> bytes:
    header = Header(
        verb="reply",
        noun="EndDeviceControls",
        source="OpenHES",
        message_id="r-1",
        correlation_id="c<&>\"'1",
    )
    return emit_message(
        Message(kind=MessageKind.RESPONSE, header=header, reply=reply, payload=payload)
    )


ERRORS = Reply(
    Result.PARTIAL,
    [
        ReplyError("0.1", "WARNING", reason="a < b & c > d", details="x=\"1\" y='2'"),
        ReplyError(
            "2.4",
            "FATAL",
            reason="no end device 'M9'",
            id=Identifier("M9", object_type="EndDevice", kind="name"),
            xpath="/a/b[1]",
        ),
    ],
)

FAST = {
    "ack": _response(Reply.ok()),
    "errors": _response(ERRORS),
    "document": _response(Reply.ok(), Payload(document=_controls())),
    "document and format": _response(Reply.ok(), Payload(document=_controls(), format="XML")),
    "compressed": _response(Reply.ok(), Payload(document=_controls(), compressed=True)),
    "failed": _response(Reply(Result.FAILED, [ReplyError("6.1", "FATAL", reason="boom")])),
}

SLOW = {
    "payload ids": _response(
        Reply.ok(), Payload(document=_controls(), ids=[Identifier("x", kind="uuid")])
    ),
    "operation set": _response(
        Reply.ok(),
        Payload(
            operation_set=OperationSet(
                operations=[
                    Operation(1, noun="EndDeviceControls", verb="create", document=_controls())
                ]
            )
        ),
    ),
    "prefixed root": (
        f'<m:ResponseMessage xmlns:m="{ns.MESSAGE}"><m:Header><m:Verb>reply</m:Verb>'
        "<m:Noun>X</m:Noun></m:Header></m:ResponseMessage>"
    ).encode(),
    "already the output": (
        f'<EndDeviceControlsResponseMessage xmlns="{ns.message_wrapper_namespace("EndDeviceControls")}"'
        f' xmlns:msg="{ns.MESSAGE}"><Header><msg:Verb>reply</msg:Verb></Header>'
        "</EndDeviceControlsResponseMessage>"
    ).encode(),
}


@pytest.mark.parametrize("name", sorted(FAST))
def test_plain_replies_are_rewrapped_as_bytes_exactly_as_the_tree_would_be(name):
    document = FAST[name]
    fast = _rewrap_bytes(document, CONTROLS_OUT)
    assert fast is not None
    assert fast == _rewrap_tree(document, CONTROLS_OUT)
    root = etree.fromstring(fast)
    assert root.tag == CONTROLS_OUT
    assert root.nsmap == {
        None: ns.message_wrapper_namespace("EndDeviceControls"),
        "msg": ns.MESSAGE,
    }


@pytest.mark.parametrize("name", sorted(SLOW))
def test_other_forms_fall_back_to_the_tree(name):
    document = SLOW[name]
    assert _rewrap_bytes(document, CONTROLS_OUT) is None
    assert rewrap(document, CONTROLS_OUT) == _rewrap_tree(document, CONTROLS_OUT)


def test_a_real_get_reply_is_rewrapped_as_bytes(tmp_path):
    from mdm.database import open_store

    store = open_store(f"sqlite:///{tmp_path / 'rewrap.sqlite3'}")
    try:
        fill_store(store)
        router, _lifespan, close = build_router(store)
        try:
            replies = [
                asyncio.run(
                    router.handle(get_readings_message(mrid), principal=SYSTEM, channel="t")
                )
                for mrid in ("M1", "M9")
            ]
        finally:
            close()
    finally:
        store.close()
    assert [reply.result for reply in replies] == ["OK", "FAILED"]
    for reply in replies:
        fast = _rewrap_bytes(reply.body, READINGS_OUT)
        assert fast is not None and fast == _rewrap_tree(reply.body, READINGS_OUT)
    assert (
        len(
            list(
                etree.fromstring(rewrap(replies[0].body, READINGS_OUT)).iter("{*}IntervalReadings")
            )
        )
        == 96
    )


def test_a_truncated_or_foreign_document_is_not_rewrapped_as_bytes():
    document = FAST["document"]
    assert _rewrap_bytes(document[:-5], CONTROLS_OUT) is None
    assert _rewrap_bytes(document, "no-namespace") is None
    assert _rewrap_bytes(b"<ResponseMessage/>", CONTROLS_OUT) is None
    body = document.replace(b"<Reply>", b"<Request><Reply>", 1)
    assert _rewrap_bytes(body, CONTROLS_OUT) is None
