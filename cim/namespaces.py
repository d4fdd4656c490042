"""XML namespaces of IEC 61968-100 (envelope) and IEC 61968-9 (payloads).

OpenHES writes the 2013 forms and reads the pre-standard and later variants that real
systems send.
"""

from __future__ import annotations

MESSAGE = "http://iec.ch/TC57/2011/schema/message"
# EPRI interoperability drafts and some vendors still send the envelope with "www.".
MESSAGE_PRESTANDARD = "http://www.iec.ch/TC57/2011/schema/message"
MESSAGE_NAMESPACES = frozenset({MESSAGE, MESSAGE_PRESTANDARD})

SOAP11_ENVELOPE = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_ENVELOPE = "http://www.w3.org/2003/05/soap-envelope"
XSI = "http://www.w3.org/2001/XMLSchema-instance"

_PAYLOAD_YEARS = ("2011", "2009", "2013", "2015", "2017")


def payload_namespace(noun: str) -> str:
    """The namespace OpenHES writes a noun's payload document in."""
    return f"http://iec.ch/TC57/2011/{noun}#"


def message_wrapper_namespace(noun: str) -> str:
    """The namespace of a noun's SOAP wrapper elements (CreateMeterReadings, ...)."""
    return f"http://iec.ch/TC57/2011/{noun}Message"


def accepted_payload_namespaces(noun: str) -> frozenset[str]:
    """Every namespace a noun's payload is read from: the 2011 form first, then the
    edition and vendor variants seen in the field (with and without "www.")."""
    names = set()
    for year in _PAYLOAD_YEARS:
        for host in ("iec.ch", "www.iec.ch"):
            names.add(f"http://{host}/TC57/{year}/{noun}#")
    return frozenset(names)


def accepted_wrapper_namespaces(noun: str) -> frozenset[str]:
    names = set()
    for year in _PAYLOAD_YEARS:
        for host in ("iec.ch", "www.iec.ch"):
            names.add(f"http://{host}/TC57/{year}/{noun}Message")
    return frozenset(names)


def split_tag(tag: str) -> tuple[str, str]:
    """'{ns}local' -> ('ns', 'local'); 'local' -> ('', 'local')."""
    if tag[:1] == "{":
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return "", tag


def local_name(tag: object) -> str:
    if not isinstance(tag, str):  # comments and processing instructions
        return ""
    return tag.rpartition("}")[2]
