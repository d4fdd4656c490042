"""SOAP 1.1 and 1.2 envelopes: the request's parts, the answer's bytes, Faults.

Answers are assembled as bytes around the router's ResponseMessage, so a reply that needs
no renaming is never parsed again. Per-noun services answer in their WSDL's output element
(for example GetMeterReadingsMessage:MeterReadingsResponseMessage); the router's generic
ResponseMessage is re-wrapped into it, as bytes when it has the plain form the router
writes (no parse, no serialisation of the payload), else through lxml.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from xml.sax.saxutils import escape

from lxml import etree

from cim import namespaces as ns
from cim.errors import ErrorCode
from cim.xmlsafe import parse_bytes

WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"


class SoapVersion(enum.Enum):
    SOAP11 = ns.SOAP11_ENVELOPE
    SOAP12 = ns.SOAP12_ENVELOPE

    @property
    def content_type(self) -> str:
        if self is SoapVersion.SOAP11:
            return "text/xml; charset=utf-8"
        return "application/soap+xml; charset=utf-8"


@dataclass(frozen=True)
class SoapRequest:
    version: SoapVersion
    header: etree._Element | None  # the SOAP Header element
    body_root: etree._Element  # the first element in the Body

    @property
    def has_ws_security(self) -> bool:
        return self.header is not None and self.header.find(f"{{{WSSE}}}Security") is not None


class EnvelopeError(Exception):
    """The document is not a usable SOAP envelope (a Client/Sender fault)."""

    def __init__(self, code: ErrorCode, reason: str, *, version_mismatch: bool = False) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.version_mismatch = version_mismatch


def read_envelope(root: etree._Element, expected: SoapVersion) -> SoapRequest:
    namespace, local = ns.split_tag(root.tag)
    if local != "Envelope" or namespace not in (ns.SOAP11_ENVELOPE, ns.SOAP12_ENVELOPE):
        raise EnvelopeError(
            ErrorCode.UNKNOWN_MESSAGE_ROOT,
            f"the document is not a SOAP Envelope (root element {local!r})",
        )
    if namespace != expected.value:
        raise EnvelopeError(
            ErrorCode.UNKNOWN_MESSAGE_ROOT,
            f"a SOAP {'1.1' if namespace == ns.SOAP11_ENVELOPE else '1.2'} envelope was sent "
            f"with the content type of SOAP {'1.1' if expected is SoapVersion.SOAP11 else '1.2'}",
            version_mismatch=True,
        )
    header = body = None
    for child in root:
        if not isinstance(child.tag, str):
            continue
        child_ns, child_local = ns.split_tag(child.tag)
        if child_ns != namespace:
            continue
        if child_local == "Header" and header is None and body is None:
            header = child
        elif child_local == "Body" and body is None:
            body = child
    if body is None:
        raise EnvelopeError(ErrorCode.MISSING_ELEMENT, "the SOAP Envelope has no Body")
    for content in body:
        if isinstance(content.tag, str):
            if ns.split_tag(content.tag) == (namespace, "Fault"):
                raise EnvelopeError(
                    ErrorCode.UNKNOWN_MESSAGE_ROOT, "the SOAP Body holds a Fault, not a request"
                )
            return SoapRequest(expected, header, content)
    raise EnvelopeError(ErrorCode.MISSING_ELEMENT, "the SOAP Body is empty")


# ---------------------------------------------------------------- answers


def _strip_declaration(document: bytes) -> bytes:
    if document.startswith(b"<?xml"):
        end = document.find(b"?>")
        if end != -1:
            return document[end + 2 :].lstrip()
    return document


_PREFIX = {
    version: (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<soap:Envelope xmlns:soap="'
        + version.value.encode()
        + b'"><soap:Body>'
    )
    for version in SoapVersion
}
_SUFFIX = b"</soap:Body></soap:Envelope>"


def envelope_bytes(version: SoapVersion, body: bytes) -> bytes:
    """A SOAP envelope around one serialised XML document (its declaration dropped)."""
    return _PREFIX[version] + _strip_declaration(body) + _SUFFIX


# Children of a generic message whose own namespace moves into a per-noun wrapper's.
_WRAPPER_CHILDREN = frozenset({"Header", "Request", "Reply", "Payload"})
_PAYLOAD_CHILDREN = frozenset({"OperationSet", "Compressed", "Format"})


def rewrap(document: bytes, output: str) -> bytes:
    """The router's ResponseMessage re-written as the operation's output element ``output``
    (Clark notation): the wrapper's own children (Header, Reply, Payload and Payload's
    OperationSet/Compressed/Format) move into the wrapper namespace, as the per-noun XSDs
    declare them; Header and Reply contents stay in the message namespace."""
    fast = _rewrap_bytes(document, output)
    return fast if fast is not None else _rewrap_tree(document, output)


# The plain form of a message the router writes (lxml, the message namespace as the default
# namespace declared on the root only): <Root xmlns="msg"><Header>..</Header><Reply>..</Reply>
# <Payload><Doc xmlns="..">..</Doc><Format>..</Format></Payload></Root>.
_DECLARATION = re.compile(rb"<\?xml[^>]*\?>\s*")
_ROOT_START = re.compile(rb'<([A-Za-z_][\w.\-]*) xmlns="' + re.escape(ns.MESSAGE.encode()) + rb'">')
_NAME = rb"[A-Za-z_][\w.\-]*"
_TAG_OPEN = re.compile(rb"<(/?)(?=[A-Za-z_])")
_PREFIXED_TAG = re.compile(rb"</?" + _NAME + rb":")
_EMPTY = re.compile(rb"<(Header|Reply|Payload)/>")
# A payload document that declares its own default namespace on its root element.
_OWN_DOCUMENT = re.compile(rb"<(" + _NAME + rb")(?:\s[^>]*)?\sxmlns=\"")


def _message_content(part: bytes) -> bytes | None:
    """Header or Reply content (message-namespace elements only, unprefixed, no namespace
    declarations) with every element in the ``msg:`` prefix; None if not of that form."""
    if b"xmlns" in part or _PREFIXED_TAG.search(part) is not None:
        return None
    return _TAG_OPEN.sub(rb"<\1msg:", part)


def _rewrap_bytes(document: bytes, output: str) -> bytes | None:
    """:func:`rewrap` as byte surgery on the plain form the router writes; None for any
    other form (then the tree is re-written)."""
    wrapper_ns, local = ns.split_tag(output)
    if not wrapper_ns or not local:
        return None
    position = 0
    declaration = _DECLARATION.match(document)
    if declaration is not None:
        position = declaration.end()
    root = _ROOT_START.match(document, position)
    if root is None:
        return None
    end_tag = b"</" + root.group(1) + b">"
    if not document.endswith(end_tag):
        return None
    body = document[root.end() : len(document) - len(end_tag)]
    out = [
        f'<{local} xmlns="{wrapper_ns}" xmlns:msg="{ns.MESSAGE}">'.encode(),
    ]
    at = 0
    while at < len(body):
        empty = _EMPTY.match(body, at)
        if empty is not None:
            out.append(empty.group(0))
            at = empty.end()
            continue
        for name in (b"Header", b"Reply"):
            start = b"<" + name + b">"
            if body.startswith(start, at):
                close = body.find(b"</" + name + b">", at)
                if close == -1:
                    return None
                content = _message_content(body[at + len(start) : close])
                if content is None:
                    return None
                out += [start, content, b"</" + name + b">"]
                at = close + len(name) + 3
                break
        else:
            if not body.startswith(b"<Payload>", at) or not body.endswith(b"</Payload>"):
                return None  # Request, or something unexpected
            payload = _payload_content(body[at + 9 : len(body) - 10])
            if payload is None:
                return None
            out += [b"<Payload>", payload, b"</Payload>"]
            at = len(body)
    out.append(f"</{local}>".encode())
    return b"".join(out)


def _payload_content(content: bytes) -> bytes | None:
    """Payload content of the plain form: one document declaring its own default namespace,
    or Compressed text, then Format text; the rest (OperationSet, Payload/ID) is None."""
    tail = b""
    if content.endswith(b"</Format>"):
        start = content.rfind(b"<Format>")
        if start == -1 or b"<" in content[start + 8 : -9]:
            return None
        tail = content[start:]
        content = content[:start]
    if content.startswith(b"<Compressed>"):
        if not content.endswith(b"</Compressed>") or b"<" in content[12:-13]:
            return None
        return content + tail
    if not content:
        return tail
    document = _OWN_DOCUMENT.match(content)
    if document is None or document.group(1) == b"ID":
        return None
    # It must be the only element (a Payload/ID after it stays in the message namespace).
    if content.endswith(b"/>"):
        if content.count(b"<") != 1:
            return None
    elif not content.endswith(b"</" + document.group(1) + b">"):
        return None
    return content + tail


def _rewrap_tree(document: bytes, output: str) -> bytes:
    source = parse_bytes(document)
    if source.tag == output:
        return etree.tostring(source, encoding="UTF-8")
    wrapper_ns, _ = ns.split_tag(output)
    target = etree.Element(output, nsmap={None: wrapper_ns, "msg": ns.MESSAGE})
    for child in list(source):
        if not isinstance(child.tag, str):
            continue
        local = ns.local_name(child.tag)
        if local in _WRAPPER_CHILDREN:
            child.tag = f"{{{wrapper_ns}}}{local}"
            if local == "Payload":
                for grandchild in child:
                    if isinstance(grandchild.tag, str) and (
                        ns.split_tag(grandchild.tag)[0] in ns.MESSAGE_NAMESPACES
                        and ns.local_name(grandchild.tag) in _PAYLOAD_CHILDREN
                    ):
                        grandchild.tag = f"{{{wrapper_ns}}}{ns.local_name(grandchild.tag)}"
        target.append(child)
    etree.cleanup_namespaces(target, top_nsmap={None: wrapper_ns, "msg": ns.MESSAGE})
    return etree.tostring(target, encoding="UTF-8")


# ---------------------------------------------------------------- faults


class FaultKind(enum.Enum):
    CLIENT = ("soap:Client", "soap:Sender")
    SERVER = ("soap:Server", "soap:Receiver")
    VERSION_MISMATCH = ("soap:VersionMismatch", "soap:VersionMismatch")
    MUST_UNDERSTAND = ("soap:MustUnderstand", "soap:MustUnderstand")


@dataclass(frozen=True)
class Fault:
    """A SOAP Fault for a transport-level problem. ``detail_element``: the service's
    FaultMessage element (Clark notation), written with Reply/Result FAILED and one Error
    carrying the OpenHES error code."""

    kind: FaultKind
    code: ErrorCode
    reason: str
    status: int = 500
    subcode: tuple[str, str] | None = None  # (namespace, local), e.g. wsse:FailedAuthentication
    headers: tuple[tuple[str, str], ...] = ()


def fault_bytes(fault: Fault, version: SoapVersion, detail_element: str) -> bytes:
    reason = escape(fault.reason)
    detail_ns, detail_local = ns.split_tag(detail_element)
    reply_tag = "msg:Reply" if detail_ns == ns.MESSAGE else "d:Reply"
    detail = (
        f'<d:{detail_local} xmlns:d="{detail_ns}" xmlns:msg="{ns.MESSAGE}">'
        f"<{reply_tag}><msg:Result>FAILED</msg:Result><msg:Error>"
        f"<msg:code>{fault.code.code}</msg:code><msg:level>{fault.code.level}</msg:level>"
        f"<msg:reason>{reason}</msg:reason></msg:Error></{reply_tag}></d:{detail_local}>"
    )
    extra_ns = ""
    if fault.subcode is not None:
        extra_ns = f' xmlns:sub="{fault.subcode[0]}"'
    if version is SoapVersion.SOAP11:
        code = f"sub:{fault.subcode[1]}" if fault.subcode else fault.kind.value[0]
        text = (
            f"<soap:Fault{extra_ns}><faultcode>{code}</faultcode>"
            f"<faultstring>{reason}</faultstring><detail>{detail}</detail></soap:Fault>"
        )
    else:
        sub = ""
        if fault.subcode is not None:
            sub = f"<soap:Subcode><soap:Value>sub:{fault.subcode[1]}</soap:Value></soap:Subcode>"
        text = (
            f"<soap:Fault{extra_ns}><soap:Code><soap:Value>{fault.kind.value[1]}</soap:Value>"
            f'{sub}</soap:Code><soap:Reason><soap:Text xml:lang="en">{reason}</soap:Text>'
            f"</soap:Reason><soap:Detail>{detail}</soap:Detail></soap:Fault>"
        )
    return _PREFIX[version] + text.encode("utf-8") + _SUFFIX
