"""Small helpers shared by the noun codecs: tolerant reading, strict writing."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation

from lxml import etree

from cim.datetimes import format_datetime, parse_datetime
from cim.errors import CimError, ErrorCode
from cim.namespaces import local_name


def element_path(element: etree._Element) -> str:
    """'/MeterReadings/MeterReading[2]/Readings[1]/value': local names with positions
    among same-named siblings, for error messages a person can follow."""
    steps = []
    node: etree._Element | None = element
    while node is not None and isinstance(node.tag, str):
        parent = node.getparent()
        name = local_name(node.tag)
        if parent is None:
            steps.append(name)
        else:
            same = [c for c in parent if c.tag == node.tag]
            steps.append(f"{name}[{same.index(node) + 1}]" if len(same) > 1 else name)
        node = parent
    return "/" + "/".join(reversed(steps))


@dataclass
class ReadReport:
    """What a tolerant read noticed without refusing the message."""

    warnings: list[str] = field(default_factory=list)

    def ignored(self, element: etree._Element) -> None:
        self.warnings.append(
            f"ignored unknown element {local_name(element.tag)!r} at {element_path(element)}"
            f" (line {element.sourceline})"
        )

    def warn(self, message: str) -> None:
        self.warnings.append(message)


def children(element: etree._Element) -> Iterator[tuple[str, etree._Element]]:
    """(local name, child) for each element child; comments and PIs skipped."""
    for child in element:
        tag = child.tag
        if isinstance(tag, str):
            yield tag.rpartition("}")[2], child


def text_of(element: etree._Element) -> str:
    return (element.text or "").strip()


def datetime_of(element: etree._Element) -> datetime:
    try:
        return parse_datetime(element.text, where=element_path(element))
    except CimError as exc:
        exc.line = element.sourceline
        raise


# xs:decimal, plus the exponent form of xs:double (both appear in meter values); Python's
# Decimal() and int() would also take "1_000", "NaN" and non-ASCII digits.
_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_INTEGER = re.compile(r"[+-]?\d+", re.ASCII)


def decimal_of(element: etree._Element) -> Decimal:
    text = text_of(element)
    value = None
    if _DECIMAL.fullmatch(text):
        try:
            value = Decimal(text)
        except InvalidOperation:
            value = None
    if value is None or not value.is_finite():
        raise CimError(
            ErrorCode.BAD_VALUE,
            f"{text!r} is not a number",
            xpath=element_path(element),
            line=element.sourceline,
        )
    return value


def int_of(element: etree._Element) -> int:
    text = text_of(element)
    if _INTEGER.fullmatch(text):
        return int(text)
    raise CimError(
        ErrorCode.BAD_VALUE,
        f"{text!r} is not an integer",
        xpath=element_path(element),
        line=element.sourceline,
    )


_TRUE = {"true", "1"}
_FALSE = {"false", "0"}


def bool_of(element: etree._Element) -> bool:
    text = text_of(element)
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise CimError(
        ErrorCode.BAD_VALUE,
        f"{text!r} is not an xs:boolean",
        xpath=element_path(element),
        line=element.sourceline,
    )


def missing(parent: etree._Element, name: str) -> CimError:
    return CimError(
        ErrorCode.MISSING_ELEMENT,
        f"{name} is required in {local_name(parent.tag)}",
        xpath=element_path(parent),
        line=parent.sourceline,
    )


class Builder:
    """Writes elements of one namespace in the order the caller gives (the XSD order)."""

    __slots__ = ("ns",)

    def __init__(self, namespace: str) -> None:
        self.ns = "{" + namespace + "}"

    def root(self, name: str, nsmap: dict[str | None, str] | None = None) -> etree._Element:
        return etree.Element(self.ns + name, nsmap=nsmap)

    def child(self, parent: etree._Element, name: str) -> etree._Element:
        return etree.SubElement(parent, self.ns + name)

    def text(self, parent: etree._Element, name: str, value: object) -> None:
        """Write a simple element unless ``value`` is None."""
        if value is None:
            return
        element = etree.SubElement(parent, self.ns + name)
        if isinstance(value, bool):
            element.text = "true" if value else "false"
        elif hasattr(value, "isoformat") and hasattr(value, "hour"):
            element.text = format_datetime(value)  # type: ignore[arg-type]
        else:
            element.text = str(value)

    def ref(self, parent: etree._Element, name: str, ref: str | None) -> None:
        if ref is None:
            return
        etree.SubElement(parent, self.ns + name).set("ref", ref)
