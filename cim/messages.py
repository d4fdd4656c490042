"""Whole CIM messages: bytes in, typed Message out, and back.

This is the entry point the adapters use. It joins the hardened parser (cim.xmlsafe), the
61968-100 envelope (cim.envelope) and the noun codecs, unwraps SOAP, and turns any refusal
into a ResponseMessage with Result FAILED and a documented error code.
"""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lxml import etree

from cim import namespaces as ns
from cim.datetimes import utcnow
from cim.envelope import (
    Header,
    Message,
    MessageKind,
    Payload,
    Reply,
    ReplyError,
    Result,
    Verb,
    build_message,
    read_header,
    read_message,
)
from cim.errors import CimError, ErrorCode
from cim.xmlsafe import DEFAULT_LIMITS, XmlLimits, parse_bytes
from cim.xmltools import ReadReport, children


@dataclass(frozen=True)
class NounCodec:
    """How one payload document (by its root element name) is read and written."""

    root: str
    module: str
    reader: str
    builder: str
    model: str

    def read(self, element: etree._Element, report: ReadReport) -> Any:
        return getattr(importlib.import_module(self.module), self.reader)(element, report)

    def build(self, model: Any) -> etree._Element:
        return getattr(importlib.import_module(self.module), self.builder)(model)


CODECS: dict[str, NounCodec] = {
    codec.root: codec
    for codec in (
        NounCodec(
            "MeterReadings",
            "cim.meter_readings",
            "read_meter_readings",
            "build_meter_readings",
            "MeterReadings",
        ),
        NounCodec(
            "GetMeterReadings",
            "cim.get_meter_readings",
            "read_get_meter_readings",
            "build_get_meter_readings",
            "GetMeterReadings",
        ),
        NounCodec(
            "EndDeviceControls",
            "cim.end_device_controls",
            "read_end_device_controls",
            "build_end_device_controls",
            "EndDeviceControls",
        ),
        NounCodec(
            "EndDeviceEvents",
            "cim.end_device_events",
            "read_end_device_events",
            "build_end_device_events",
            "EndDeviceEvents",
        ),
        NounCodec(
            "GetEndDeviceEvents",
            "cim.end_device_events",
            "read_get_end_device_events",
            "build_get_end_device_events",
            "GetEndDeviceEvents",
        ),
        NounCodec(
            "MeterReadSchedule",
            "cim.meter_read_schedule",
            "read_meter_read_schedule",
            "build_meter_read_schedule",
            "MeterReadSchedule",
        ),
    )
}

# The Nouns a Header may name. GetMeterReadings requests carry Noun "MeterReadings".
SERVED_NOUNS = frozenset(
    {"MeterReadings", "EndDeviceControls", "EndDeviceEvents", "MeterReadSchedule"}
)


def read_document(element: etree._Element, root_name: str, report: ReadReport) -> Any:
    codec = CODECS.get(root_name)
    if codec is None:
        report.warn(f"payload document {root_name!r} has no codec; kept as XML")
        return etree.fromstring(etree.tostring(element))
    return codec.read(element, report)


def write_document(model: Any) -> etree._Element:
    if isinstance(model, etree._Element):
        return model
    model_class = type(model)
    for codec in CODECS.values():
        if model_class.__module__ == codec.module and model_class.__name__ == codec.model:
            return codec.build(model)
    raise TypeError(f"no CIM codec writes {type(model).__name__}")


@dataclass
class Parsed:
    message: Message
    warnings: list[str] = field(default_factory=list)


def unwrap_soap(root: etree._Element) -> etree._Element:
    """The first element in a SOAP 1.1/1.2 Body, or ``root`` itself if not SOAP."""
    namespace, local = ns.split_tag(root.tag)
    if namespace not in (ns.SOAP11_ENVELOPE, ns.SOAP12_ENVELOPE):
        return root
    if local != "Envelope":
        raise CimError(ErrorCode.UNKNOWN_MESSAGE_ROOT, f"SOAP element {local!r} is not an Envelope")
    for tag, child in children(root):
        if tag == "Body":
            for _, content in children(child):
                if ns.split_tag(content.tag) == (namespace, "Fault"):
                    raise CimError(
                        ErrorCode.UNKNOWN_MESSAGE_ROOT,
                        "the SOAP Body holds a Fault, not a CIM message",
                        line=content.sourceline,
                    )
                return content
            raise CimError(
                ErrorCode.MISSING_ELEMENT, "the SOAP Body is empty", line=child.sourceline
            )
    raise CimError(ErrorCode.MISSING_ELEMENT, "the SOAP Envelope has no Body", line=root.sourceline)


def parse_message(
    data: bytes,
    *,
    limits: XmlLimits = DEFAULT_LIMITS,
    require_served_noun: bool = True,
) -> Parsed:
    """Parse a CIM message (bare, in a per-noun wrapper, or in a SOAP envelope)."""
    root = unwrap_soap(parse_bytes(data, limits))
    return parse_message_element(root, require_served_noun=require_served_noun)


def parse_message_element(root: etree._Element, *, require_served_noun: bool = True) -> Parsed:
    report = ReadReport()
    message = read_message(root, read_document, report)
    if (
        require_served_noun
        and message.header is not None
        and message.header.noun not in SERVED_NOUNS
    ):
        raise CimError(
            ErrorCode.UNKNOWN_NOUN,
            f"Noun {message.header.noun!r} is not served; served: {', '.join(sorted(SERVED_NOUNS))}",
        )
    return Parsed(message, report.warnings)


def parse_document(data: bytes, *, limits: XmlLimits = DEFAULT_LIMITS) -> tuple[Any, list[str]]:
    """Parse a bare payload document (e.g. a MeterReadings file without an envelope)."""
    root = parse_bytes(data, limits)
    report = ReadReport()
    local = ns.local_name(root.tag)
    if local not in CODECS:
        raise CimError(
            ErrorCode.UNKNOWN_MESSAGE_ROOT,
            f"{local!r} is not a CIM payload document OpenHES reads",
            line=root.sourceline,
        )
    return CODECS[local].read(root, report), report.warnings


def emit_message(message: Message, *, pretty: bool = False) -> bytes:
    return etree.tostring(
        build_message(message, write_document),
        encoding="UTF-8",
        xml_declaration=True,
        pretty_print=pretty,
    )


def emit_document(model: Any, *, pretty: bool = False) -> bytes:
    return etree.tostring(
        write_document(model), encoding="UTF-8", xml_declaration=True, pretty_print=pretty
    )


def new_message_id() -> str:
    return str(uuid.uuid4())


def salvage_header(data: bytes, limits: XmlLimits = DEFAULT_LIMITS) -> Header | None:
    """Best effort: the Header of a message that was refused, so the failure reply can
    carry its Noun and CorrelationID. None when even that cannot be read safely."""
    try:
        root = unwrap_soap(parse_bytes(data, limits))
    except CimError:
        return None
    for tag, child in children(root):
        if tag == "Header":
            try:
                return read_header(child, ReadReport())
            except CimError:
                return _partial_header(child)
    return None


def _partial_header(element: etree._Element) -> Header | None:
    values = {tag: (child.text or "").strip() for tag, child in children(element)}
    return Header(
        verb=values.get("Verb") or "",
        noun=values.get("Noun") or "",
        message_id=values.get("MessageID"),
        correlation_id=values.get("CorrelationID"),
    )


def reply_header(request: Header | None, *, source: str = "OpenHES") -> Header:
    """The Header of a reply: Verb reply, the request's Noun, correlated to the request."""
    noun = request.noun if request and request.noun else "Unknown"
    correlation = None
    if request is not None:
        correlation = request.correlation_id or request.message_id
    return Header(
        verb=Verb.REPLY.value,
        noun=noun,
        timestamp=utcnow(),
        source=source,
        message_id=new_message_id(),
        correlation_id=correlation,
    )


def failure_response(errors: list[CimError], request: Header | None) -> Message:
    """A ResponseMessage with Result FAILED and one Error per refusal."""
    return Message(
        kind=MessageKind.RESPONSE,
        header=reply_header(request),
        reply=Reply(Result.FAILED, [ReplyError.from_cim_error(e) for e in errors]),
    )


def ok_response(
    request: Header | None, document: Any = None, warnings: list[str] | None = None
) -> Message:
    reply = Reply.ok()
    if warnings:
        reply.errors = [
            ReplyError(ErrorCode.OK_WITH_WARNINGS.code, "WARNING", reason=warning)
            for warning in warnings
        ]
    return Message(
        kind=MessageKind.RESPONSE,
        header=reply_header(request),
        reply=reply,
        payload=Payload(document=document) if document is not None else None,
    )


def respond(
    data: bytes, handle: Callable[[Parsed], Message], *, limits: XmlLimits = DEFAULT_LIMITS
) -> bytes:
    """Parse ``data``, hand it to ``handle`` and emit its answer; any CimError on the way
    becomes a FAILED ResponseMessage. Never raises for bad input."""
    try:
        parsed = parse_message(data, limits=limits)
    except CimError as error:
        return emit_message(failure_response([error], salvage_header(data, limits)))
    try:
        return emit_message(handle(parsed))
    except CimError as error:
        return emit_message(failure_response([error], parsed.message.header))
