"""The IEC 61968-100 message envelope as a typed model, with a tolerant reader and a
strict writer.

Read: the 2013 namespace ``http://iec.ch/TC57/2011/schema/message``, the pre-standard
``http://www.iec.ch/...`` one, the generic RequestMessage/ResponseMessage/EventMessage/
FaultMessage roots and the per-noun SOAP wrappers (CreateMeterReadings, GetMeterReadings,
MeterReadingsResponseMessage, ...). Written: the 2013 namespace only, elements in XSD order.

The payload document itself is decoded by a noun codec (see cim.messages); this module
only carries it.
"""

from __future__ import annotations

import base64
import binascii
import enum
import gzip
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lxml import etree

from cim import namespaces as ns
from cim.datetimes import parse_datetime
from cim.errors import CimError, ErrorCode, Level
from cim.namespaces import local_name
from cim.xmlsafe import XmlLimits, parse_bytes
from cim.xmltools import (
    Builder,
    ReadReport,
    bool_of,
    children,
    element_path,
    int_of,
    text_of,
)


class Verb(enum.StrEnum):
    CANCEL = "cancel"
    CANCELED = "canceled"
    CHANGE = "change"
    CHANGED = "changed"
    CREATE = "create"
    CREATED = "created"
    CLOSE = "close"
    CLOSED = "closed"
    DELETE = "delete"
    DELETED = "deleted"
    GET = "get"
    REPLY = "reply"
    EXECUTE = "execute"
    EXECUTED = "executed"


class MessageKind(enum.StrEnum):
    REQUEST = "RequestMessage"
    RESPONSE = "ResponseMessage"
    EVENT = "EventMessage"
    FAULT = "FaultMessage"
    MESSAGE = "Message"


class Result(enum.StrEnum):
    OK = "OK"
    PARTIAL = "PARTIAL"
    FAILED = "FAILED"


class IdKind(enum.StrEnum):
    NAME = "name"
    UUID = "uuid"
    TRANSACTION = "transaction"
    OTHER = "other"


@dataclass(frozen=True)
class ReplayDetection:
    nonce: str
    created: datetime


@dataclass(frozen=True)
class User:
    user_id: str
    organization: str | None = None


@dataclass(frozen=True)
class Property:
    name: str
    value: str | None = None


@dataclass
class Header:
    verb: str
    noun: str
    revision: str | None = None
    replay_detection: ReplayDetection | None = None
    context: str | None = None
    timestamp: datetime | None = None
    source: str | None = None
    async_reply_flag: bool | None = None
    reply_address: str | None = None
    ack_required: bool | None = None
    user: User | None = None
    message_id: str | None = None
    correlation_id: str | None = None
    comment: str | None = None
    properties: list[Property] = field(default_factory=list)


@dataclass(frozen=True)
class Identifier:
    """The ID element of Request, Reply, Error and Payload."""

    value: str
    id_type: str | None = None
    id_authority: str | None = None
    kind: str | None = None
    object_type: str | None = None


@dataclass(frozen=True)
class Option:
    name: str
    value: str | None = None


@dataclass
class Request:
    start_time: datetime | None = None
    end_time: datetime | None = None
    options: list[Option] = field(default_factory=list)
    ids: list[Identifier] = field(default_factory=list)
    # The Get<Noun> profile (e.g. a GetMeterReadings model), decoded by the noun codec.
    get_profile: Any = None


@dataclass(frozen=True)
class ErrorLocation:
    node: str | None = None
    pipeline: str | None = None
    stage: str | None = None


@dataclass
class ReplyError:
    code: str
    level: str | None = None
    reason: str | None = None
    details: str | None = None
    xpath: str | None = None
    stack_trace: str | None = None
    location: ErrorLocation | None = None
    id: Identifier | None = None
    related_id: Identifier | None = None
    operation_id: int | None = None

    @classmethod
    def from_cim_error(cls, error: CimError) -> ReplyError:
        # Error/xpath is an xs:QName in the 2013 schema, so a path (and the line) travel
        # in details: "line 12; at /MeterReadings/MeterReading[2]/...".
        where = []
        if error.line is not None:
            where.append(f"line {error.line}")
        xpath = error.xpath
        if xpath is not None and not _is_qname(xpath):
            where.append(f"at {xpath}")
            xpath = None
        if error.details:
            where.append(error.details)
        return cls(
            code=error.code,
            level=str(error.error.level),
            reason=error.reason,
            details="; ".join(where) or None,
            xpath=xpath,
            id=Identifier(error.object_id) if error.object_id else None,
        )


@dataclass
class Reply:
    result: Result
    errors: list[ReplyError] = field(default_factory=list)
    ids: list[Identifier] = field(default_factory=list)
    operation_id: int | None = None

    @classmethod
    def ok(cls) -> Reply:
        return cls(Result.OK, [ReplyError(ErrorCode.OK.code, str(Level.INFORM))])

    @classmethod
    def failed(cls, *errors: CimError) -> Reply:
        return cls(Result.FAILED, [ReplyError.from_cim_error(e) for e in errors])


@dataclass
class Operation:
    operation_id: int
    noun: str | None = None
    verb: str | None = None
    element_operation: bool | None = None
    document: Any = None


@dataclass
class OperationSet:
    enforce_msg_sequence: bool | None = None
    enforce_transactional_integrity: bool | None = None
    operations: list[Operation] = field(default_factory=list)


@dataclass
class Payload:
    """One of: a noun document, an OperationSet, or (on the wire) a Compressed document.

    ``compressed`` says how the document travels: read, it tells that it arrived as
    base64 of gzip; written, it asks for that form. ``document`` is always the decoded
    noun model (or, for a noun without a codec, its lxml element).
    """

    document: Any = None
    operation_set: OperationSet | None = None
    compressed: bool = False
    format: str | None = None
    ids: list[Identifier] = field(default_factory=list)


@dataclass
class Message:
    kind: MessageKind
    header: Header | None
    request: Request | None = None
    reply: Reply | None = None
    payload: Payload | None = None
    # The per-noun wrapper element the message came in (e.g. "CreatedMeterReadings"), or
    # None for the generic 61968-100 form.
    wrapper: str | None = None

    @property
    def verb(self) -> str | None:
        return self.header.verb if self.header else None

    @property
    def noun(self) -> str | None:
        return self.header.noun if self.header else None


# A noun codec hook: (payload element, noun, report) -> model.
DocumentReader = Callable[[etree._Element, str, ReadReport], Any]
DocumentWriter = Callable[[Any], etree._Element]

_WRAPPER = re.compile(
    # Past-tense verbs first: "CreatedX" must not read as "Create" + "dX".
    r"^(?:(Created|Changed|Canceled|Closed|Deleted|Executed|Create|Change|Cancel|Close|Delete"
    r"|Execute|Get|Reply)([A-Z]\w*)|(\w+?)(RequestMessage|ResponseMessage|EventMessage|FaultMessage))$"
)
_WRAPPER_KIND = {
    "Create": MessageKind.REQUEST,
    "Change": MessageKind.REQUEST,
    "Cancel": MessageKind.REQUEST,
    "Close": MessageKind.REQUEST,
    "Delete": MessageKind.REQUEST,
    "Execute": MessageKind.REQUEST,
    "Get": MessageKind.REQUEST,
    "Created": MessageKind.EVENT,
    "Changed": MessageKind.EVENT,
    "Canceled": MessageKind.EVENT,
    "Closed": MessageKind.EVENT,
    "Deleted": MessageKind.EVENT,
    "Executed": MessageKind.EVENT,
    "Reply": MessageKind.RESPONSE,
}


def classify_root(root: etree._Element) -> tuple[MessageKind, str | None]:
    """Which kind of message a root element is; CimError UNKNOWN_MESSAGE_ROOT if none."""
    namespace, local = ns.split_tag(root.tag)
    if namespace in ns.MESSAGE_NAMESPACES:
        try:
            return MessageKind(local), None
        except ValueError:
            pass
    elif namespace.startswith(("http://iec.ch/TC57/", "http://www.iec.ch/TC57/")) and (
        namespace.endswith("Message")
    ):
        match = _WRAPPER.match(local)
        if match:
            if match.group(1):
                return _WRAPPER_KIND[match.group(1)], local
            # <Noun>ResponseMessage/FaultMessage are standard; <Noun>RequestMessage and
            # <Noun>EventMessage come from the EPRI interoperability drafts.
            return MessageKind(match.group(4)), local
    raise CimError(
        ErrorCode.UNKNOWN_MESSAGE_ROOT,
        f"root element {local!r} in namespace {namespace or '(none)'!r} is not an IEC 61968-100 message",
        line=root.sourceline,
    )


def read_message(
    root: etree._Element,
    read_document: DocumentReader,
    report: ReadReport | None = None,
) -> Message:
    """Read an envelope root (generic or per-noun wrapper) into a Message."""
    report = report if report is not None else ReadReport()
    kind, wrapper = classify_root(root)
    header_element = request_element = reply_element = payload_element = None
    for tag, child in children(root):
        if tag == "Header" and header_element is None:
            header_element = child
        elif tag == "Request" and request_element is None:
            request_element = child
        elif tag == "Reply" and reply_element is None:
            reply_element = child
        elif tag == "Payload" and payload_element is None:
            payload_element = child
        else:
            report.ignored(child)
    header = None
    if header_element is not None:
        header = read_header(header_element, report)
    elif kind is not MessageKind.FAULT:
        raise CimError(
            ErrorCode.MISSING_VERB,
            "the message has no Header, so no Verb or Noun",
            xpath=element_path(root),
            line=root.sourceline,
        )
    noun = header.noun if header else ""
    message = Message(kind=kind, header=header, wrapper=wrapper)
    if request_element is not None:
        message.request = read_request(request_element, noun, read_document, report)
    if reply_element is not None:
        message.reply = read_reply(reply_element, report)
    elif kind is MessageKind.FAULT:
        raise CimError(
            ErrorCode.MISSING_ELEMENT,
            "a FaultMessage must carry a Reply",
            xpath=element_path(root),
            line=root.sourceline,
        )
    elif kind is MessageKind.RESPONSE:
        # Seen in the field (EPRI test harness); read, but say so.
        report.warn(f"{element_path(root)} has no Reply; read as a response without a Result")
    if payload_element is not None:
        message.payload = read_payload(payload_element, noun, read_document, report)
    return message


_HEADER_TEXT = {
    "Revision": "revision",
    "Context": "context",
    "Source": "source",
    "ReplyAddress": "reply_address",
    "MessageID": "message_id",
    "CorrelationID": "correlation_id",
    "Comment": "comment",
}


def read_header(element: etree._Element, report: ReadReport) -> Header:
    values: dict[str, Any] = {}
    properties: list[Property] = []
    verb = noun = None
    for tag, child in children(element):
        if tag == "Verb":
            verb = text_of(child)
        elif tag == "Noun":
            noun = text_of(child)
        elif tag in _HEADER_TEXT:
            values[_HEADER_TEXT[tag]] = child.text or ""
        elif tag == "Timestamp":
            values["timestamp"] = _header_datetime(child)
        elif tag == "AsyncReplyFlag":
            values["async_reply_flag"] = _header_bool(child)
        elif tag == "AckRequired":
            values["ack_required"] = _header_bool(child)
        elif tag == "ReplayDetection":
            nonce, created = _read_pair(child, "Nonce", "Created", report, both=True)
            values["replay_detection"] = ReplayDetection(
                nonce, _header_datetime_text(child, created)
            )
        elif tag == "User":
            user_id, organization = _read_pair(child, "UserID", "Organization", report)
            values["user"] = User(user_id, organization)
        elif tag == "Property":
            name, value = _read_pair(child, "Name", "Value", report)
            properties.append(Property(name, value))
        else:
            report.ignored(child)
    if not verb:
        raise CimError(
            ErrorCode.MISSING_VERB,
            "the Header has no Verb",
            xpath=element_path(element),
            line=element.sourceline,
        )
    if not noun:
        raise CimError(
            ErrorCode.MISSING_NOUN,
            "the Header has no Noun",
            xpath=element_path(element),
            line=element.sourceline,
        )
    # Verbs are case-sensitive in the schema; "Get" and "CREATE" are common in the field.
    normalised = verb.lower()
    if normalised not in Verb.__members__.values():
        raise CimError(
            ErrorCode.UNKNOWN_VERB,
            f"{verb!r} is not an IEC 61968-100 verb",
            xpath=element_path(element) + "/Verb",
            line=element.sourceline,
        )
    if normalised != verb:
        report.warn(f"Verb {verb!r} read as {normalised!r}")
    return Header(verb=normalised, noun=noun, properties=properties, **values)


def _read_pair(
    element: etree._Element, first: str, second: str, report: ReadReport, *, both: bool = False
) -> tuple[str, str | None]:
    """The texts of a two-field Header structure (User, Property, ReplayDetection, Option):
    ``first`` is required, ``second`` too when ``both``."""
    values: dict[str, str] = {}
    for tag, child in children(element):
        if tag in (first, second) and tag not in values:
            values[tag] = child.text or ""
        else:
            report.ignored(child)
    if first not in values or (both and second not in values):
        needed = f"both {first} and {second}" if both else f"a {first}"
        raise CimError(
            ErrorCode.BAD_HEADER_VALUE,
            f"{local_name(element.tag)} needs {needed}",
            xpath=element_path(element),
            line=element.sourceline,
        )
    return values[first], values.get(second)


def _header_datetime_text(element: etree._Element, text: str | None) -> datetime:
    try:
        return parse_datetime(text, where=element_path(element))
    except CimError as exc:
        raise CimError(
            ErrorCode.BAD_HEADER_VALUE, exc.reason, xpath=exc.xpath, line=element.sourceline
        ) from None


def _header_datetime(element: etree._Element) -> datetime:
    return _header_datetime_text(element, element.text)


def _header_bool(element: etree._Element) -> bool:
    try:
        return bool_of(element)
    except CimError as exc:
        raise CimError(
            ErrorCode.BAD_HEADER_VALUE, exc.reason, xpath=exc.xpath, line=exc.line
        ) from None


def _read_identifier(element: etree._Element) -> Identifier:
    return Identifier(
        value=text_of(element),
        id_type=element.get("idType"),
        id_authority=element.get("idAuthority"),
        kind=element.get("kind"),
        object_type=element.get("objectType"),
    )


def read_request(
    element: etree._Element, noun: str, read_document: DocumentReader, report: ReadReport
) -> Request:
    request = Request()
    for tag, child in children(element):
        if tag == "StartTime":
            request.start_time = _header_datetime(child)
        elif tag == "EndTime":
            request.end_time = _header_datetime(child)
        elif tag == "Option":
            name, value = _read_pair(child, "name", "value", report)
            request.options.append(Option(name, value))
        elif tag == "ID":
            request.ids.append(_read_identifier(child))
        elif tag.startswith("Get") and request.get_profile is None:
            request.get_profile = read_document(child, tag, report)
        else:
            report.ignored(child)
    return request


def read_reply(element: etree._Element, report: ReadReport) -> Reply:
    result = None
    errors: list[ReplyError] = []
    ids: list[Identifier] = []
    operation_id = None
    for tag, child in children(element):
        if tag == "Result":
            text = text_of(child)
            try:
                result = Result(text.upper())
            except ValueError:
                raise CimError(
                    ErrorCode.BAD_HEADER_VALUE,
                    f"Result {text!r} is not OK, PARTIAL or FAILED",
                    xpath=element_path(child),
                    line=child.sourceline,
                ) from None
        elif tag == "Error":
            errors.append(_read_error(child, report))
        elif tag == "ID":
            ids.append(_read_identifier(child))
        elif tag == "operationId":
            operation_id = int_of(child)
        else:
            report.ignored(child)
    if result is None:
        raise CimError(
            ErrorCode.MISSING_ELEMENT,
            "the Reply has no Result",
            xpath=element_path(element),
            line=element.sourceline,
        )
    return Reply(result, errors, ids, operation_id)


_ERROR_TEXT = {
    "code": "code",
    "level": "level",
    "reason": "reason",
    "details": "details",
    "xpath": "xpath",
    "stackTrace": "stack_trace",
}


def _read_error(element: etree._Element, report: ReadReport) -> ReplyError:
    values: dict[str, Any] = {}
    for tag, child in children(element):
        if tag in _ERROR_TEXT:
            values[_ERROR_TEXT[tag]] = child.text or ""
        elif tag == "Location":
            parts = {t: s.text for t, s in children(child) if t in ("node", "pipeline", "stage")}
            values["location"] = ErrorLocation(**parts)
        elif tag == "ID":
            values["id"] = _read_identifier(child)
        elif tag == "relatedID":
            values["related_id"] = _read_identifier(child)
        elif tag == "operationId":
            values["operation_id"] = int_of(child)
        else:
            # Error/object is deprecated in 61968-100; it is skipped with a warning.
            report.ignored(child)
    if "code" not in values:
        raise CimError(
            ErrorCode.MISSING_ELEMENT,
            "an Error has no code",
            xpath=element_path(element),
            line=element.sourceline,
        )
    return ReplyError(**values)


def read_payload(
    element: etree._Element, noun: str, read_document: DocumentReader, report: ReadReport
) -> Payload:
    payload = Payload()
    for tag, child in children(element):
        if tag == "Compressed":
            payload.compressed = True
            document_root = decompress_payload(child)
            payload.document = read_document(
                document_root, ns.local_name(document_root.tag), report
            )
        elif tag == "Format":
            payload.format = child.text or ""
        elif tag == "ID":
            payload.ids.append(_read_identifier(child))
        elif tag == "OperationSet":
            payload.operation_set = _read_operation_set(child, read_document, report)
        elif payload.document is None:
            payload.document = read_document(child, tag, report)
        else:
            report.ignored(child)
    return payload


def _read_operation_set(
    element: etree._Element, read_document: DocumentReader, report: ReadReport
) -> OperationSet:
    result = OperationSet()
    for tag, child in children(element):
        if tag == "enforceMsgSequence":
            result.enforce_msg_sequence = bool_of(child)
        elif tag == "enforceTransactionalIntegrity":
            result.enforce_transactional_integrity = bool_of(child)
        elif tag == "Operation":
            operation = Operation(operation_id=-1)
            for sub_tag, sub in children(child):
                if sub_tag == "operationId":
                    operation.operation_id = int_of(sub)
                elif sub_tag == "noun":
                    operation.noun = text_of(sub)
                elif sub_tag == "verb":
                    operation.verb = text_of(sub)
                elif sub_tag == "elementOperation":
                    operation.element_operation = bool_of(sub)
                elif operation.document is None:
                    operation.document = read_document(sub, sub_tag, report)
                else:
                    report.ignored(sub)
            if operation.operation_id < 0:
                raise CimError(
                    ErrorCode.MISSING_ELEMENT,
                    "an Operation has no operationId",
                    xpath=element_path(child),
                    line=child.sourceline,
                )
            result.operations.append(operation)
        else:
            report.ignored(child)
    return result


# A compressed payload is small on the wire and may be huge inflated: cap the inflation.
MAX_INFLATED_BYTES = 256 * 1024 * 1024


def decompress_payload(
    element: etree._Element, max_bytes: int = MAX_INFLATED_BYTES
) -> etree._Element:
    """Decode a Compressed payload (base64 of gzip, or of zlib/deflate as some send)."""
    text = "".join((element.text or "").split())
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise CimError(
            ErrorCode.BAD_COMPRESSED_PAYLOAD,
            "Compressed is not valid base64",
            xpath=element_path(element),
            line=element.sourceline,
        ) from None
    wbits = 31 if raw[:2] == b"\x1f\x8b" else 15  # gzip, else zlib
    inflater = zlib.decompressobj(wbits)
    try:
        data = inflater.decompress(raw, max_bytes + 1)
    except zlib.error as exc:
        raise CimError(
            ErrorCode.BAD_COMPRESSED_PAYLOAD,
            f"Compressed is not gzip data: {exc}",
            xpath=element_path(element),
            line=element.sourceline,
        ) from None
    if len(data) > max_bytes:
        raise CimError(
            ErrorCode.TOO_LARGE,
            f"the Compressed payload inflates beyond {max_bytes:,} bytes",
            xpath=element_path(element),
            line=element.sourceline,
        )
    return parse_bytes(data, XmlLimits(max_bytes=max_bytes))


def compress_document(element: etree._Element) -> str:
    data = etree.tostring(element, encoding="UTF-8", xml_declaration=True)
    return base64.b64encode(gzip.compress(data, mtime=0)).decode("ascii")


# ---------------------------------------------------------------- writing

_MSG = Builder(ns.MESSAGE)


def _message_root(message: Message, noun: str) -> tuple[etree._Element, Builder]:
    """The root element and the builder for Header/Request/Reply/Payload children."""
    if message.wrapper is None:
        return _MSG.root(message.kind.value, nsmap={None: ns.MESSAGE}), _MSG
    wrapper_noun = noun
    if message.wrapper.startswith("Get") and message.kind is MessageKind.REQUEST:
        wrapper_noun = message.wrapper  # GetMeterReadings lives in GetMeterReadingsMessage
    wrapper_ns = ns.message_wrapper_namespace(wrapper_noun)
    outer = Builder(wrapper_ns)
    return outer.root(message.wrapper, nsmap={None: wrapper_ns, "msg": ns.MESSAGE}), outer


def build_message(message: Message, write_document: DocumentWriter) -> etree._Element:
    noun = message.header.noun if message.header else ""
    root, outer = _message_root(message, noun)
    if message.header is not None:
        write_header(outer.child(root, "Header"), message.header)
    if message.request is not None:
        # A Get wrapper declares its own RequestType (children in the wrapper namespace);
        # every other message uses the 61968-100 RequestType.
        is_get_wrapper = bool(message.wrapper and message.wrapper.startswith("Get"))
        request_builder = outer if is_get_wrapper else _MSG
        _write_request(
            outer.child(root, "Request"), message.request, write_document, request_builder
        )
    if message.reply is not None:
        _write_reply(outer.child(root, "Reply"), message.reply)
    if message.payload is not None:
        _write_payload(outer.child(root, "Payload"), message.payload, write_document, outer)
    return root


def write_header(element: etree._Element, header: Header) -> None:
    b = _MSG
    b.text(element, "Verb", header.verb)
    b.text(element, "Noun", header.noun)
    b.text(element, "Revision", header.revision)
    if header.replay_detection is not None:
        replay = b.child(element, "ReplayDetection")
        b.text(replay, "Nonce", header.replay_detection.nonce)
        b.text(replay, "Created", header.replay_detection.created)
    b.text(element, "Context", header.context)
    b.text(element, "Timestamp", header.timestamp)
    b.text(element, "Source", header.source)
    b.text(element, "AsyncReplyFlag", header.async_reply_flag)
    b.text(element, "ReplyAddress", header.reply_address)
    b.text(element, "AckRequired", header.ack_required)
    if header.user is not None:
        user = b.child(element, "User")
        b.text(user, "UserID", header.user.user_id)
        b.text(user, "Organization", header.user.organization)
    b.text(element, "MessageID", header.message_id)
    b.text(element, "CorrelationID", header.correlation_id)
    b.text(element, "Comment", header.comment)
    for prop in header.properties:
        prop_element = b.child(element, "Property")
        b.text(prop_element, "Name", prop.name)
        b.text(prop_element, "Value", prop.value)


def _write_identifier(b: Builder, parent: etree._Element, tag: str, ident: Identifier) -> None:
    element = b.child(parent, tag)
    element.text = ident.value
    for attribute, value in (
        ("idType", ident.id_type),
        ("idAuthority", ident.id_authority),
        ("kind", ident.kind),
        ("objectType", ident.object_type),
    ):
        if value is not None:
            element.set(attribute, value)


def _write_request(
    element: etree._Element, request: Request, write_document: DocumentWriter, b: Builder
) -> None:
    b.text(element, "StartTime", request.start_time)
    b.text(element, "EndTime", request.end_time)
    for option in request.options:
        option_element = b.child(element, "Option")
        _MSG.text(option_element, "name", option.name)
        _MSG.text(option_element, "value", option.value)
    for ident in request.ids:
        _write_identifier(b, element, "ID", ident)
    if request.get_profile is not None:
        element.append(write_document(request.get_profile))


def _write_reply(element: etree._Element, reply: Reply) -> None:
    b = _MSG
    b.text(element, "Result", reply.result.value)
    for error in reply.errors:
        error_element = b.child(element, "Error")
        b.text(error_element, "code", error.code)
        b.text(error_element, "level", error.level)
        b.text(error_element, "reason", error.reason)
        details = error.details
        if error.xpath is not None and not _is_qname(error.xpath):
            # Error/xpath is typed xs:QName in the 2013 schema, which cannot hold a path;
            # a path travels in details instead so the message stays schema-valid.
            details = f"{details}; at {error.xpath}" if details else f"at {error.xpath}"
        b.text(error_element, "details", details)
        if error.xpath is not None and _is_qname(error.xpath):
            b.text(error_element, "xpath", error.xpath)
        b.text(error_element, "stackTrace", error.stack_trace)
        if error.location is not None:
            location = b.child(error_element, "Location")
            b.text(location, "node", error.location.node)
            b.text(location, "pipeline", error.location.pipeline)
            b.text(location, "stage", error.location.stage)
        if error.id is not None:
            _write_identifier(b, error_element, "ID", error.id)
        if error.related_id is not None:
            _write_identifier(b, error_element, "relatedID", error.related_id)
        b.text(error_element, "operationId", error.operation_id)
    for ident in reply.ids:
        _write_identifier(b, element, "ID", ident)
    b.text(element, "operationId", reply.operation_id)


_QNAME = re.compile(r"^(?:[A-Za-z_][\w.\-]*:)?[A-Za-z_][\w.\-]*$")


def _is_qname(text: str) -> bool:
    return bool(_QNAME.match(text))


def _write_payload(
    element: etree._Element, payload: Payload, write_document: DocumentWriter, b: Builder
) -> None:
    """``b`` is the message builder for the generic form, the wrapper's for per-noun
    wrappers, whose PayloadType declares OperationSet, Compressed and Format itself."""
    if payload.operation_set is not None:
        _write_operation_set(
            b.child(element, "OperationSet"), payload.operation_set, write_document
        )
    elif payload.document is not None:
        document = write_document(payload.document)
        if payload.compressed:
            b.text(element, "Compressed", compress_document(document))
        else:
            element.append(document)
    if b is _MSG:
        # Payload/ID exists only in the generic PayloadType.
        for ident in payload.ids:
            _write_identifier(_MSG, element, "ID", ident)
    if payload.format is not None or payload.compressed:
        b.text(element, "Format", payload.format or "XML")


def _write_operation_set(
    element: etree._Element, operation_set: OperationSet, write_document: DocumentWriter
) -> None:
    b = _MSG
    b.text(element, "enforceMsgSequence", operation_set.enforce_msg_sequence)
    b.text(element, "enforceTransactionalIntegrity", operation_set.enforce_transactional_integrity)
    for operation in operation_set.operations:
        op = b.child(element, "Operation")
        b.text(op, "operationId", operation.operation_id)
        b.text(op, "noun", operation.noun)
        b.text(op, "verb", operation.verb)
        b.text(op, "elementOperation", operation.element_operation)
        if operation.document is not None:
            op.append(write_document(operation.document))
