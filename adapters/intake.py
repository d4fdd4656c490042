"""First look at a message arriving by the bus or in a file, before the router sees it.

The router answers every message it can read with a ResponseMessage (FAILED where it must).
What it cannot read at all -- not XML, hostile XML (DOCTYPE, entities, too deep), too large,
a root that is not an IEC 61968-100 message, a ResponseMessage or FaultMessage sent where a
request belongs -- is *poison* for a transport: the ESB moves it to its dead-letter queue and
the file drop to ``error/``, each with the reason. :func:`screen` tells the two apart and
reads the few Header fields a transport needs (MessageID, ReplyAddress) without building the
whole message.
"""

from __future__ import annotations

from dataclasses import dataclass

from cim import namespaces as ns
from cim.envelope import MessageKind, classify_root
from cim.errors import CimError, ErrorCode
from cim.messages import unwrap_soap
from cim.xmlsafe import DEFAULT_LIMITS, XmlLimits, parse_bytes

# Message kinds a transport hands to the router. A ResponseMessage or FaultMessage on a
# request channel is refused (and never answered: answering replies makes reply loops).
ROUTED_KINDS = frozenset({MessageKind.REQUEST, MessageKind.EVENT, MessageKind.MESSAGE})
# Our own replies may be as large as a bulk GetMeterReadings answer.
_TRUSTED = XmlLimits(max_bytes=1 << 34, max_depth=256)


@dataclass(frozen=True)
class Intake:
    """What a transport needs to know about an accepted message."""

    kind: MessageKind
    verb: str | None
    noun: str | None
    message_id: str | None
    correlation_id: str | None
    reply_address: str | None


def screen(data: bytes, limits: XmlLimits = DEFAULT_LIMITS) -> Intake:
    """Accept ``data`` for the router or raise the CimError that makes it poison."""
    root = unwrap_soap(parse_bytes(data, limits))
    kind, _wrapper = classify_root(root)
    if kind not in ROUTED_KINDS:
        raise CimError(
            ErrorCode.UNKNOWN_MESSAGE_ROOT,
            f"a {kind.value} is not a request; it is not processed or answered",
            line=root.sourceline,
        )
    fields: dict[str, str] = {}
    for child in root:
        if ns.local_name(child.tag) == "Header":
            for item in child:
                name = ns.local_name(item.tag)
                if name and name not in fields and len(item) == 0:
                    fields[name] = (item.text or "").strip()
            break
    return Intake(
        kind=kind,
        verb=fields.get("Verb") or None,
        noun=fields.get("Noun") or None,
        message_id=fields.get("MessageID") or None,
        correlation_id=fields.get("CorrelationID") or None,
        reply_address=fields.get("ReplyAddress") or None,
    )


def is_reply_kind(data: bytes, limits: XmlLimits = DEFAULT_LIMITS) -> bool:
    """True when ``data`` is (as far as can be told) a ResponseMessage or FaultMessage:
    such a message must never be answered, even with a refusal."""
    try:
        root = unwrap_soap(parse_bytes(data, limits))
        kind, _ = classify_root(root)
    except CimError:
        return False
    return kind in (MessageKind.RESPONSE, MessageKind.FAULT)


def reply_message_id(body: bytes) -> str | None:
    """The Header/MessageID of a message OpenHES wrote (None if it has none)."""
    try:
        root = parse_bytes(body, _TRUSTED)
    except CimError:
        return None
    for child in root:
        if ns.local_name(child.tag) == "Header":
            for item in child:
                if ns.local_name(item.tag) == "MessageID":
                    return (item.text or "").strip() or None
    return None


def refusal_text(error: CimError) -> str:
    """One line: ``<code> <NAME>: <reason>`` (for DLQ headers and ``.reason`` files)."""
    where = f" (line {error.line})" if error.line is not None else ""
    return f"{error.code} {error.error.name}: {error.reason}{where}"
