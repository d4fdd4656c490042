"""MeterReadings documents of any size, in bounded memory.

Reading: :func:`iter_meter_readings` yields one :class:`~cim.meter_readings.MeterReading` at a
time; :func:`iter_interval_readings` yields ``(meter_key, reading_type, IntervalReading)``
rows for bulk ingest. Both accept a bare MeterReadings document, one inside an IEC 61968-100
message (Request/Response/EventMessage in the 2013 or the pre-standard ``www.`` namespace,
or a per-noun wrapper such as CreatedMeterReadings), inside a SOAP envelope or not, and a
Compressed (base64 gzip/zlib) payload. Parsing is :func:`cim.xmlsafe.pullparse_safe`
(hardened: no DOCTYPE, no entities, size and depth limits); parsed XML is dropped chunk by
chunk, so the XML tree never holds more than about one 64 KiB chunk, however long a
MeterReading or IntervalBlock is. The model objects are produced by the same element
readers as :func:`cim.meter_readings.read_meter_readings`, so both readers give equal models.

What is held in memory: :func:`iter_meter_readings` holds the model of the MeterReading it is
building. :func:`iter_interval_readings` hands each reading on as soon as its meter and
ReadingType are known. In XSD order the ReadingType of a block follows its readings and the
Meter follows the blocks, so for XSD-ordered documents the readings of one MeterReading are
held as model objects (about 200 bytes a reading; never the XML) until its Meter is read;
documents that put Meter and ReadingType first are streamed reading by reading.

Writing: :class:`MeterReadingsWriter` writes a document as text straight into a buffered
binary file, optionally inside an EventMessage/ResponseMessage/RequestMessage envelope. Its
output has the same elements, order and text as
``etree.tostring(build_meter_readings(model))`` for the same model.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
import zlib
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from functools import lru_cache
from itertools import repeat
from typing import IO, Any, BinaryIO

from lxml import etree

from cim import namespaces as ns
from cim.datetimes import format_datetime
from cim.errors import CimError, ErrorCode
from cim.meter_readings import (
    INTERVAL_BLOCK_TAGS,
    INTERVAL_READING_TAGS,
    METER_READING_TAGS,
    METER_READINGS_TAGS,
    NAMESPACE,
    READING_TYPE_FIELDS,
    EndDeviceEventTypeInfo,
    IntervalBlock,
    IntervalReading,
    MeterReading,
    MeterReadings,
    RationalNumber,
    Reader,
    Reading,
    ReadingQuality,
    ReadingQualityTypeInfo,
    ReadingTypeInfo,
    checked_quality_type,
    checked_reading_type,
    checked_reason,
    read_definition,
    read_interval_block_child,
    read_interval_reading,
    read_meter_reading_child,
    value_text,
)
from cim.model import DateTimeInterval, EndDeviceEvent, Name, ObjectRef, Status
from cim.namespaces import local_name, split_tag
from cim.xmlsafe import XmlLimits, pullparse_safe
from cim.xmltools import ReadReport, element_path

__all__ = [
    "MeterReadingsWriter",
    "iter_interval_readings",
    "iter_meter_readings",
]

Source = str | os.PathLike[str] | BinaryIO

# Start events only, wildcard patterns: the cheapest filter lxml has.
_STREAM_TAGS = ("{*}MeterReadings", "{*}MeterReading", "{*}IntervalBlocks", "{*}Payload")
_ENVELOPE_ROOTS = frozenset(
    {"RequestMessage", "ResponseMessage", "EventMessage", "FaultMessage", "Message"}
)
_WRAPPER_NAMESPACES = ns.accepted_wrapper_namespaces("MeterReadings")
_SOAP_NAMESPACES = frozenset({ns.SOAP11_ENVELOPE, ns.SOAP12_ENVELOPE})
_DEFAULT_STREAM_LIMITS = XmlLimits(max_bytes=1 << 40)
_MAX_COMPRESSED_CHARS = 10_000_000  # libxml2's cap on one text node without huge_tree
DEFAULT_CHUNK_SIZE = 1 << 16
# The 2011 tags, compared first: cheaper than looking a freshly built tag string up.
_READING_TAG = "{" + NAMESPACE + "}IntervalReadings"
_TIMESTAMP_TAG = "{" + NAMESPACE + "}timeStamp"
_VALUE_TAG = "{" + NAMESPACE + "}value"


# ---------------------------------------------------------------- reading


class _StreamReader(Reader):
    """A Reader whose element paths count the siblings already parsed and dropped."""

    __slots__ = ("dropped",)

    def __init__(self, report: ReadReport | None) -> None:
        super().__init__(report)
        # container element -> {tag: number of children with that tag already dropped}
        self.dropped: dict[etree._Element, dict[str, int]] = {}

    def position(self, parent: etree._Element, node: etree._Element) -> int:
        before = self.dropped.get(parent, {}).get(node.tag, 0)
        same = [c for c in parent if c.tag == node.tag]
        if before == 0 and len(same) == 1:
            return 0
        return before + same.index(node) + 1

    def fix_path(self, exc: CimError, child: etree._Element) -> None:
        """Errors raised by cim.elements carry tree paths; re-base them on the stream's."""
        tree_path = element_path(child)
        if exc.xpath and (exc.xpath == tree_path or exc.xpath.startswith(tree_path + "/")):
            exc.xpath = self.where(child) + exc.xpath[len(tree_path) :]


def _check_document_root(root: etree._Element) -> None:
    tag = root.tag
    if tag in METER_READINGS_TAGS:
        return
    namespace, local = split_tag(tag)
    if namespace in _SOAP_NAMESPACES and local == "Envelope":
        return
    if namespace in ns.MESSAGE_NAMESPACES and local in _ENVELOPE_ROOTS:
        return
    if namespace in _WRAPPER_NAMESPACES:
        return
    raise CimError(
        ErrorCode.UNKNOWN_MESSAGE_ROOT,
        f"root element {local!r} in namespace {namespace or '(none)'!r} is neither a "
        "MeterReadings document nor an IEC 61968-100 message carrying one",
        line=root.sourceline,
    )


class _Inflater(io.RawIOBase):
    """A read-only stream of the inflated bytes of a gzip or zlib buffer."""

    def __init__(self, data: bytes, limit: int) -> None:
        self._data = memoryview(data)
        self._position = 0
        self._inflater = zlib.decompressobj(47)  # gzip or zlib header, detected
        self._limit = limit
        self._total = 0
        self._pending = b""

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        size = size if size and size > 0 else 1 << 16
        while len(self._pending) < size:
            if self._inflater.eof or self._position >= len(self._data):
                if not self._inflater.eof and not self._pending:
                    raise CimError(ErrorCode.BAD_COMPRESSED_PAYLOAD, "Compressed data is truncated")
                break
            piece = self._data[self._position : self._position + (1 << 16)]
            self._position += len(piece)
            try:
                self._pending += self._inflater.decompress(piece)
            except zlib.error as exc:
                raise CimError(
                    ErrorCode.BAD_COMPRESSED_PAYLOAD, f"Compressed is not gzip data: {exc}"
                ) from None
        out, self._pending = self._pending[:size], self._pending[size:]
        self._total += len(out)
        if self._total > self._limit:
            raise CimError(
                ErrorCode.TOO_LARGE, f"the Compressed payload inflates beyond {self._limit:,} bytes"
            )
        return out


class _Stream:
    """One pass over a document; ``flat`` selects the rows of iter_interval_readings."""

    def __init__(
        self,
        r: _StreamReader,
        limits: XmlLimits,
        flat: bool,
        definitions: MeterReadings,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        self.r = r
        self.chunk_size = chunk_size
        self.limits = limits
        self.flat = flat
        self.definitions = definitions
        self.documents = 0
        self.mrs_el: etree._Element | None = None
        self.mr_el: etree._Element | None = None
        self.mr: MeterReading | None = None
        self.block_el: etree._Element | None = None
        self.block: IntervalBlock | None = None
        self.payload_el: etree._Element | None = None
        self.payload_documents = 0

    # -- the event loop

    def run(self, source: Source, *, nested: bool = False) -> Iterator[Any]:
        """Only start events are asked for (the cheapest kind): an element is complete once
        a later element has started outside it, or once it is off the chain of last
        children from the root (the open elements) at a chunk boundary."""
        checked = False
        for event, element in pullparse_safe(
            source, tag=_STREAM_TAGS, limits=self.limits, chunk_size=self.chunk_size
        ):
            if not checked:
                root = element if event != "start" else element.getroottree().getroot()
                if nested:
                    if root.tag not in METER_READINGS_TAGS:
                        raise CimError(
                            ErrorCode.BAD_COMPRESSED_PAYLOAD,
                            f"the Compressed payload holds {local_name(root.tag)!r}, "
                            "not a MeterReadings document",
                        )
                else:
                    _check_document_root(root)
                checked = True
            if event == "start":
                ancestors = set(element.iterancestors())
                yield from self._settle(ancestors, drain=False)
                self._open(element, nested)
            elif event == "chunk":
                yield from self._settle(_open_chain(element), drain=True)
            else:  # "done": everything is complete
                yield from self._settle(set(), drain=False)
        self.r.finish()

    def _open(self, element: etree._Element, nested: bool) -> None:
        tag = element.tag
        if tag in METER_READINGS_TAGS:
            if self.mrs_el is None:
                self.mrs_el = element
                self.documents += 1
                self.r.dropped[element] = {}
        elif tag in METER_READING_TAGS:
            if self.mrs_el is not None and element.getparent() is self.mrs_el:
                self.mr_el = element
                self.mr = MeterReading()
                self.r.dropped[element] = {}
        elif tag in INTERVAL_BLOCK_TAGS:
            if self.mr_el is not None and element.getparent() is self.mr_el:
                self.block_el = element
                self.block = IntervalBlock("")
                self.r.dropped[element] = {}
        elif local_name(tag) == "Payload" and not nested and self.payload_el is None:
            self.payload_el = element
            self.payload_documents = self.documents

    def _settle(self, open_elements: set[etree._Element], *, drain: bool) -> Iterator[Any]:
        """Finish the tracked elements that are complete (not in ``open_elements``), inner
        ones first; with ``drain``, also read and drop the complete children of open ones."""
        if self.block_el is not None:
            if self.block_el not in open_elements:
                yield from self._end_block()
            elif drain:
                yield from self._drain_block(keep_last=True)
        if self.mr_el is not None:
            if self.mr_el not in open_elements:
                yield from self._end_meter_reading()
            elif drain:
                self._drain_meter_reading(keep_last=True)
        if self.mrs_el is not None:
            if self.mrs_el not in open_elements:
                self._drain_definitions(keep_last=False)
                del self.r.dropped[self.mrs_el]
                self.mrs_el = None
            elif drain:
                self._drain_definitions(keep_last=True)
        if self.payload_el is not None and self.payload_el not in open_elements:
            payload, self.payload_el = self.payload_el, None
            if self.documents == self.payload_documents:
                yield from self._compressed(payload)

    # -- IntervalBlocks: the hot path

    def _drain_block(self, keep_last: bool) -> Iterator[Any]:
        element = self.block_el
        block = self.block
        assert element is not None and block is not None
        children = element.getchildren()
        if keep_last and children:
            children.pop()  # may still be being parsed
        count = len(children)
        if not count:
            return
        r = self.r
        reading_tags = INTERVAL_READING_TAGS
        read = read_interval_reading
        append = block.readings.append
        datetimes, decimals = r.datetimes, r.decimals
        others: dict[str, int] = {}  # dropped children other than IntervalReadings
        reading_tag = None
        child = stamp = value = None
        try:
            for child in children:
                tag = child.tag
                if tag == _READING_TAG:
                    # The common shape, <timeStamp/><value/> in the 2011 namespace, read
                    # inline: exactly what read_interval_reading does for it, minus the call.
                    pair = child.getchildren()
                    if len(pair) == 2:
                        stamp, value = pair
                        if stamp.tag == _TIMESTAMP_TAG and value.tag == _VALUE_TAG:
                            text = stamp.text
                            timestamp = datetimes.get(text)
                            if timestamp is None:
                                timestamp = r.parse_datetime(stamp, text)
                            text = value.text
                            number = decimals.get(text)  # type: ignore[arg-type]
                            if number is None:
                                number = r.parse_decimal(value, text)
                            append(IntervalReading(timestamp, number))
                            reading_tag = tag
                            continue
                    append(read(child, r))
                    reading_tag = tag
                elif tag in reading_tags:
                    append(read(child, r))
                    reading_tag = tag
                else:
                    read_interval_block_child(child, block, r)
                    others[tag] = others.get(tag, 0) + 1
        except CimError as exc:
            r.fix_path(exc, child)
            raise
        # No live proxies: the parsed nodes are freed at once.
        children = child = stamp = value = pair = None
        del element[:count]
        totals = r.dropped[element]
        if reading_tag is not None:
            totals[reading_tag] = totals.get(reading_tag, 0) + count - sum(others.values())
        for tag, number in others.items():
            totals[tag] = totals.get(tag, 0) + number
        if self.flat and block.readings and block.reading_type:
            self._drain_meter_reading(keep_last=True)
            meter = self.mr.meter if self.mr is not None else None
            if meter is not None:
                yield from self._rows(meter.key, block)

    def _end_block(self) -> Iterator[Any]:
        yield from self._drain_block(keep_last=False)
        element, block, mr = self.block_el, self.block, self.mr
        assert element is not None and block is not None and mr is not None
        if not block.reading_type:
            raise self.r.missing(element, "ReadingType")
        self.block_el = self.block = None
        del self.r.dropped[element]
        parent = element.getparent()
        if parent is not None:
            parent.remove(element)
            totals = self.r.dropped[parent]
            totals[element.tag] = totals.get(element.tag, 0) + 1
        if not self.flat or block.readings:
            mr.interval_blocks.append(block)

    def _rows(self, meter_key: str | None, block: IntervalBlock) -> Iterator[Any]:
        readings = block.readings
        block.readings = []
        return zip(repeat(meter_key), repeat(block.reading_type), readings)

    # -- MeterReading and the root-level definitions

    def _drain_children(self, element: etree._Element, keep_last: bool, handle) -> None:
        count = len(element) - keep_last
        if count <= 0:
            return
        r = self.r
        dropped: dict[str, int] = {}
        done = 0
        child = None
        for child in element:
            if done == count or child is self.block_el:  # the block is read on its own
                break
            done += 1
            try:
                handle(child)
            except CimError as exc:
                r.fix_path(exc, child)
                raise
            dropped[child.tag] = dropped.get(child.tag, 0) + 1
        child = None
        if not done:
            return
        del element[:done]
        totals = r.dropped[element]
        for tag, number in dropped.items():
            totals[tag] = totals.get(tag, 0) + number

    def _drain_meter_reading(self, keep_last: bool) -> None:
        element, mr = self.mr_el, self.mr
        assert element is not None and mr is not None
        r = self.r
        self._drain_children(
            element, keep_last, lambda child: read_meter_reading_child(child, mr, r)
        )
        if self.flat:  # the flat view is about interval readings: do not hoard the rest
            mr.readings.clear()
            mr.events.clear()

    def _drain_definitions(self, keep_last: bool) -> None:
        element = self.mrs_el
        assert element is not None
        r, model = self.r, self.definitions

        def handle(child: etree._Element) -> None:
            if child.tag in METER_READING_TAGS and child.getparent() is element:
                return  # a MeterReading is read through its own events
            if not read_definition(child, model, r):
                r.ignored(child)

        self._drain_children(element, keep_last, handle)

    def _end_meter_reading(self) -> Iterator[Any]:
        self._drain_meter_reading(keep_last=False)
        element, mr = self.mr_el, self.mr
        assert element is not None and mr is not None
        self.mr_el = self.mr = None
        del self.r.dropped[element]
        parent = element.getparent()
        if parent is not None:
            parent.remove(element)
            totals = self.r.dropped[parent]
            totals[element.tag] = totals.get(element.tag, 0) + 1
        if self.flat:
            key = mr.meter_key
            for block in mr.interval_blocks:
                yield from self._rows(key, block)
        else:
            yield mr

    # -- Compressed payloads

    def _compressed(self, payload: etree._Element) -> Iterator[Any]:
        compressed = None
        for child in payload:
            if local_name(child.tag) == "Compressed":
                compressed = child
        if compressed is None:
            return
        text = "".join((compressed.text or "").split())
        if len(text) > _MAX_COMPRESSED_CHARS:
            raise CimError(ErrorCode.TOO_LARGE, "the Compressed payload is too large")
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if not raw:
            raise CimError(
                ErrorCode.BAD_COMPRESSED_PAYLOAD,
                "Compressed is not base64 of gzip-compressed XML",
                xpath=self.r.where(compressed),
                line=compressed.sourceline,
            )
        inner = _Stream(self.r, self.limits, self.flat, self.definitions, self.chunk_size)
        yield from inner.run(_Inflater(raw, self.limits.max_bytes), nested=True)
        self.documents += inner.documents


def _open_chain(root: etree._Element) -> set[etree._Element]:
    """The elements still open at a chunk boundary: the chain of last children."""
    chain = {root}
    node = root
    while len(node):
        node = node[-1]
        chain.add(node)
    return chain


def iter_meter_readings(
    source: Source,
    *,
    limits: XmlLimits | None = None,
    report: ReadReport | None = None,
    definitions: MeterReadings | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Iterator[MeterReading]:
    """Yield the MeterReadings of a document one at a time, in bounded memory.

    ``source``: a path or a binary file. ``limits``: size and depth caps (default: no size
    cap, depth 64). Warnings (ignored vendor elements, 4-part vendor ReadingType codes) go
    to ``report``. The root-level ReadingType/ReadingQualityType/EndDeviceEventType
    descriptions are appended to ``definitions`` if given. Invalid content raises CimError
    (with the element's path and line) when it is reached. ``chunk_size``: bytes parsed
    between two rounds of reading and dropping (memory versus per-chunk overhead).
    """
    stream = _Stream(
        _StreamReader(report),
        limits or _DEFAULT_STREAM_LIMITS,
        False,
        definitions if definitions is not None else MeterReadings(),
        chunk_size,
    )
    return stream.run(source)


def iter_interval_readings(
    source: Source,
    *,
    limits: XmlLimits | None = None,
    report: ReadReport | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Iterator[tuple[str | None, str, IntervalReading]]:
    """Yield ``(meter_key, reading_type, reading)`` for every IntervalReading, in document
    order. ``meter_key`` is the Meter's mRID, else its first name, else None. Register
    Readings and EndDeviceEvents are skipped (use :func:`iter_meter_readings` for them).
    """
    stream = _Stream(
        _StreamReader(report), limits or _DEFAULT_STREAM_LIMITS, True, MeterReadings(), chunk_size
    )
    return stream.run(source)


# ---------------------------------------------------------------- writing

_INVALID_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_TEXT_SPECIAL = re.compile("[&<>\r]")
_ATTR_SPECIAL = re.compile('[&<>"\r\n\t]')


def _esc(text: str) -> str:
    """Element text, escaped as lxml serialises it."""
    if _INVALID_CHARS.search(text):
        raise ValueError(
            "All strings must be XML compatible: Unicode or ASCII, no NULL bytes or control "
            f"characters ({text!r})"
        )
    if _TEXT_SPECIAL.search(text) is None:
        return text
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")
    )


@lru_cache(maxsize=4096)
def _attr(text: str) -> str:
    """An attribute value, escaped as lxml serialises it (cached: refs repeat)."""
    if _INVALID_CHARS.search(text):
        raise ValueError(f"All strings must be XML compatible ({text!r})")
    if _ATTR_SPECIAL.search(text) is None:
        return text
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("\r", "&#13;")
        .replace("\n", "&#10;")
        .replace("\t", "&#9;")
    )


class _DateTimes:
    """format_datetime with a cache for UTC values (the common case; repeated in bulk)."""

    __slots__ = ("cache",)

    def __init__(self) -> None:
        self.cache: dict[datetime, str] = {}

    def __call__(self, value: datetime) -> str:
        if value.tzinfo is UTC:
            text = self.cache.get(value)
            if text is None:
                if len(self.cache) >= 100_000:
                    self.cache.clear()
                text = self.cache[value] = format_datetime(value)
            return text
        return format_datetime(value)


_VERBS = frozenset(
    {
        "cancel", "canceled", "change", "changed", "create", "created", "close", "closed",
        "delete", "deleted", "get", "reply", "execute", "executed",
    }
)  # fmt: skip
_HEADER_FIELDS = (
    "verb", "noun", "revision", "replay_detection", "context", "timestamp", "source",
    "async_reply_flag", "reply_address", "ack_required", "user", "message_id",
    "correlation_id", "comment", "properties",
)  # fmt: skip
_DEFAULT_VERBS = {"EventMessage": "created", "ResponseMessage": "reply", "RequestMessage": "create"}


class MeterReadingsWriter:
    """Write a MeterReadings document incrementally, in bounded memory.

    ::

        with MeterReadingsWriter(out) as w:                       # a bare document
            w.write(meter_reading)
            w.write_interval_block(meter, "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0",
                                   ((ts, Decimal("1.250")), (ts2, Decimal("0.5"), ["2.8.0"])))

        with MeterReadingsWriter(out, envelope={"message_id": "...", "source": "HES"}) as w:
            ...                                                   # inside an EventMessage

    ``out``: a binary file (or a path). ``envelope``: None for a bare document, else the
    Header as a mapping or an object with the attributes of cim.envelope.Header (verb, noun,
    revision, replay_detection, context, timestamp, source, async_reply_flag, reply_address,
    ack_required, user, message_id, correlation_id, comment, properties); header fields may
    also be given as keyword arguments. ``message_kind``: EventMessage (default),
    ResponseMessage (written with ``<Reply><Result>reply_result</Result></Reply>``) or
    RequestMessage. Verb defaults to created/reply/create, Noun to MeterReadings.

    EndDeviceEventType descriptions must be written before the first MeterReading;
    ReadingQualityType and ReadingType descriptions may be added at any time and are written
    at the end (XSD order). The document is finished by ``close()`` (or leaving the ``with``
    block without an exception).
    """

    def __init__(
        self,
        out: BinaryIO | IO[bytes] | str | os.PathLike[str],
        envelope: Mapping[str, Any] | Any | None = None,
        *,
        message_kind: str = "EventMessage",
        reply_result: str = "OK",
        flush_every: int = 4096,
        **header: Any,
    ) -> None:
        if isinstance(out, (str, os.PathLike)):
            self._out: Any = open(out, "wb")  # noqa: SIM115 - closed in close()
            self._owned = True
        else:
            self._out, self._owned = out, False
        self._parts: list[str] = []
        self._flush_every = flush_every
        self._dt = _DateTimes()
        self._meter_readings = 0
        self._quality_types: list[ReadingQualityTypeInfo] = []
        self._reading_types: list[ReadingTypeInfo] = []
        self._closed = False
        self._message_kind = message_kind
        self._envelope = self._header_values(envelope, header)
        self._reply_result = reply_result
        self._start()

    # -- context manager

    def __enter__(self) -> MeterReadingsWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        elif self._owned:
            self._out.close()

    # -- the document frame

    def _header_values(self, envelope: Any, extra: Mapping[str, Any]) -> dict[str, Any] | None:
        if envelope is None and not extra:
            return None
        if self._message_kind not in _DEFAULT_VERBS:
            raise ValueError(f"message_kind must be one of {sorted(_DEFAULT_VERBS)}")
        if envelope is None:
            values: dict[str, Any] = {}
        elif isinstance(envelope, Mapping):
            values = dict(envelope)
        else:
            values = {name: getattr(envelope, name, None) for name in _HEADER_FIELDS}
        values.update(extra)
        unknown = set(values) - set(_HEADER_FIELDS)
        if unknown:
            raise TypeError(f"unknown Header field(s): {', '.join(sorted(unknown))}")
        values["verb"] = values.get("verb") or _DEFAULT_VERBS[self._message_kind]
        values["noun"] = values.get("noun") or "MeterReadings"
        if str(values["verb"]) not in _VERBS:
            raise CimError(
                ErrorCode.BAD_HEADER_VALUE, f"{values['verb']!r} is not an IEC 61968-100 verb"
            )
        return values

    def _start(self) -> None:
        parts = self._parts
        parts.append('<?xml version="1.0" encoding="UTF-8"?>\n')
        header = self._envelope
        if header is not None:
            parts.append(f'<{self._message_kind} xmlns="{ns.MESSAGE}"><Header>')
            self._header(header)
            self._end("Header")
            if self._message_kind == "ResponseMessage":
                parts.append(f"<Reply><Result>{_esc(str(self._reply_result))}</Result></Reply>")
            parts.append("<Payload>")
        self._root_open = f'<MeterReadings xmlns="{NAMESPACE}">'
        parts.append(self._root_open)

    def _header(self, h: Mapping[str, Any]) -> None:
        text = self._text
        text("Verb", str(h["verb"]))
        text("Noun", h["noun"])
        text("Revision", h.get("revision"))
        replay = h.get("replay_detection")
        if replay is not None:
            self._parts.append("<ReplayDetection>")
            text("Nonce", replay.nonce)
            text("Created", replay.created)
            self._end("ReplayDetection")
        text("Context", h.get("context"))
        text("Timestamp", h.get("timestamp"))
        text("Source", h.get("source"))
        text("AsyncReplyFlag", h.get("async_reply_flag"))
        text("ReplyAddress", h.get("reply_address"))
        text("AckRequired", h.get("ack_required"))
        user = h.get("user")
        if user is not None:
            self._parts.append("<User>")
            text("UserID", user.user_id)
            text("Organization", getattr(user, "organization", None))
            self._end("User")
        text("MessageID", h.get("message_id"))
        text("CorrelationID", h.get("correlation_id"))
        text("Comment", h.get("comment"))
        for prop in h.get("properties") or ():
            self._parts.append("<Property>")
            text("Name", prop.name)
            text("Value", prop.value)
            self._end("Property")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for quality_type in self._quality_types:
            self._described(
                "ReadingQualityType",
                quality_type,
                (
                    ("category", "category"),
                    ("sub_category", "subCategory"),
                    ("system_id", "systemId"),
                ),
            )
        for reading_type in self._reading_types:
            self._reading_type_info(reading_type)
        if self._parts and self._parts[-1] == self._root_open:
            self._parts[-1] = self._root_open[:-1] + "/>"
        else:
            self._parts.append("</MeterReadings>")
        if self._envelope is not None:
            self._parts.append(f"</Payload></{self._message_kind}>")
        self._flush()
        if self._owned:
            self._out.close()
        elif hasattr(self._out, "flush"):
            self._out.flush()

    def _flush(self) -> None:
        if self._parts:
            self._out.write("".join(self._parts).encode("utf-8"))
            self._parts.clear()

    # -- simple pieces

    def _end(self, tag: str) -> None:
        """Close an element; an element without content is written ``<tag/>``, as lxml does."""
        parts = self._parts
        if parts and parts[-1] == f"<{tag}>":
            parts[-1] = f"<{tag}/>"
        else:
            parts.append(f"</{tag}>")

    def _text(self, tag: str, value: Any) -> None:
        """A simple element unless ``value`` is None; as cim.xmltools.Builder.text writes it."""
        if value is None:
            return
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, datetime):
            text = self._dt(value)
        else:
            text = _esc(str(value))
        self._parts.append(f"<{tag}>{text}</{tag}>")

    def _ref(self, tag: str, ref: str) -> None:
        self._parts.append(f'<{tag} ref="{_attr(ref)}"/>')

    def _name(self, tag: str, name: Name) -> None:
        parts = self._parts
        parts.append(f"<{tag}>")
        self._text("name", name.name)
        if name.name_type is not None:
            parts.append("<NameType>")
            self._text("description", name.name_type_description)
            self._text("name", name.name_type)
            if name.authority is not None:
                parts.append("<NameTypeAuthority>")
                self._text("description", name.authority_description)
                self._text("name", name.authority)
                self._end("NameTypeAuthority")
            self._end("NameType")
        self._end(tag)

    def _object_ref(self, tag: str, ref: ObjectRef) -> None:
        self._parts.append(f"<{tag}>")
        self._text("mRID", ref.mrid)
        for name in ref.names:
            self._name("Names", name)
        self._end(tag)

    def _interval(self, tag: str, interval: DateTimeInterval) -> None:
        self._parts.append(f"<{tag}>")
        self._text("end", interval.end)
        self._text("start", interval.start)
        self._end(tag)

    def _status(self, tag: str, status: Status) -> None:
        self._parts.append(f"<{tag}>")
        self._text("dateTime", status.date_time)
        self._text("reason", status.reason)
        self._text("remark", status.remark)
        self._text("value", status.value)
        self._end(tag)

    def _quality(self, quality: ReadingQuality) -> None:
        self._parts.append("<ReadingQualities>")
        self._text("comment", quality.comment)
        self._text("source", quality.source)
        self._text("timeStamp", quality.timestamp)
        self._ref("ReadingQualityType", checked_quality_type(quality.quality_type))
        self._end("ReadingQualities")

    def _event(self, event: EndDeviceEvent) -> None:
        text = self._text
        self._parts.append("<EndDeviceEvents>")
        text("mRID", event.mrid)
        text("createdDateTime", event.created)
        text("issuerID", event.issuer_id)
        text("issuerTrackingID", event.issuer_tracking_id)
        text("reason", event.reason)
        text("severity", event.severity)
        text("userID", event.user_id)
        if event.asset is not None:
            self._object_ref("Assets", event.asset)
        for detail in event.details:
            self._parts.append("<EndDeviceEventDetails>")
            text("name", detail.name)
            text("value", detail.value)
            self._end("EndDeviceEventDetails")
        self._ref("EndDeviceEventType", event.event_type)
        for name in event.names:
            self._name("Names", name)
        if event.status is not None:
            self._status("status", event.status)
        if event.usage_point is not None:
            self._object_ref("UsagePoint", event.usage_point)
        self._end("EndDeviceEvents")

    # -- readings

    def _interval_reading(self, reading: IntervalReading) -> None:
        parts = self._parts
        timestamp, value = reading.timestamp, reading.value
        if (
            timestamp is not None
            and value is not None
            and not reading.qualities
            and reading.reported is None
            and reading.source is None
            and reading.time_period is None
        ):
            parts.append(
                f"<IntervalReadings><timeStamp>{self._dt(timestamp)}</timeStamp>"
                f"<value>{value_text(value)}</value></IntervalReadings>"
            )
            return
        parts.append("<IntervalReadings>")
        self._text("reportedDateTime", reading.reported)
        self._text("source", reading.source)
        if timestamp is not None:
            parts.append(f"<timeStamp>{self._dt(timestamp)}</timeStamp>")
        if value is not None:
            parts.append(f"<value>{value_text(value)}</value>")
        for quality in reading.qualities:
            self._quality(quality)
        if reading.time_period is not None:
            self._interval("timePeriod", reading.time_period)
        self._end("IntervalReadings")

    def _reading(self, reading: Reading) -> None:
        parts = self._parts
        parts.append("<Readings>")
        self._text("reason", checked_reason(reading.reason))
        self._text("reportedDateTime", reading.reported)
        self._text("source", reading.source)
        self._text("timeStamp", reading.timestamp)
        if reading.value is not None:
            parts.append(f"<value>{value_text(reading.value)}</value>")
        for quality in reading.qualities:
            self._quality(quality)
        self._ref("ReadingType", checked_reading_type(reading.reading_type))
        if reading.time_period is not None:
            self._interval("timePeriod", reading.time_period)
        self._end("Readings")

    def _block_end(self, block: IntervalBlock) -> None:
        pending = block.pending_calculation
        if pending is not None:
            self._parts.append("<PendingCalculation>")
            self._text("multiplyBeforeAdd", pending.multiply_before_add)
            self._text("offset", pending.offset)
            self._text("scalarDenominator", pending.scalar_denominator)
            if pending.scalar_float is not None:
                self._text("scalarFloat", value_text(pending.scalar_float))
            self._text("scalarNumerator", pending.scalar_numerator)
            self._ref("ReadingType", checked_reading_type(pending.reading_type))
            self._end("PendingCalculation")
        self._ref("ReadingType", checked_reading_type(block.reading_type))
        self._end("IntervalBlocks")

    def _meter_reading_tail(self, mr: MeterReading) -> None:
        if mr.meter is not None:
            self._object_ref("Meter", mr.meter)
        for reading in mr.readings:
            self._reading(reading)
        if mr.usage_point is not None:
            self._object_ref("UsagePoint", mr.usage_point)
        if mr.values_interval is not None:
            self._interval("valuesInterval", mr.values_interval)
        self._end("MeterReading")

    def _maybe_flush(self) -> None:
        if len(self._parts) >= self._flush_every:
            self._flush()

    # -- public API

    def write(self, meter_reading: MeterReading) -> None:
        """Write one MeterReading (all its blocks, readings and events)."""
        self._check_open()
        self._meter_readings += 1
        parts = self._parts
        parts.append("<MeterReading>")
        self._text("isCoincidentTrigger", meter_reading.is_coincident_trigger)
        for event in meter_reading.events:
            self._event(event)
            self._maybe_flush()
        flush_every = self._flush_every
        for block in meter_reading.interval_blocks:
            checked_reading_type(block.reading_type)
            parts.append("<IntervalBlocks>")
            write_one = self._interval_reading
            for reading in block.readings:
                write_one(reading)
                if len(parts) >= flush_every:
                    self._flush()
            self._block_end(block)
        self._meter_reading_tail(meter_reading)
        self._maybe_flush()

    def write_interval_block(
        self,
        meter: ObjectRef | None,
        reading_type: str,
        readings: Iterable[IntervalReading | tuple],
        *,
        usage_point: ObjectRef | None = None,
        values_interval: DateTimeInterval | None = None,
    ) -> None:
        """Write a MeterReading holding one IntervalBlock, taking the readings as they come
        (any iterable, e.g. a generator or a database cursor; never collected in memory).

        Each reading is an IntervalReading or a tuple ``(timestamp, value)`` or
        ``(timestamp, value, qualities)`` with qualities an iterable of ReadingQualityType
        codes (``"2.8.0"``) or ReadingQuality objects; value is a Decimal, an int or None.
        The result equals ``write(MeterReading(meter=..., interval_blocks=[IntervalBlock(
        reading_type, readings)], usage_point=..., values_interval=...))``.
        """
        self._check_open()
        checked_reading_type(reading_type)
        self._meter_readings += 1
        parts = self._parts
        parts.append("<MeterReading><IntervalBlocks>")
        append = parts.append
        fmt_dt = self._dt
        flush_every = self._flush_every
        write_model = self._interval_reading
        for item in readings:
            if type(item) is tuple and len(item) == 2:
                timestamp, value = item
                if timestamp is not None and value is not None:
                    append(
                        f"<IntervalReadings><timeStamp>{fmt_dt(timestamp)}</timeStamp>"
                        f"<value>{value_text(value)}</value></IntervalReadings>"
                    )
                else:
                    write_model(IntervalReading(timestamp, value))
            elif isinstance(item, IntervalReading):
                write_model(item)
            else:
                timestamp, value, qualities = item
                write_model(IntervalReading(timestamp, value, _qualities(qualities)))
            if len(parts) >= flush_every:
                self._flush()
        self._block_end(IntervalBlock(reading_type))
        self._meter_reading_tail(
            MeterReading(meter=meter, usage_point=usage_point, values_interval=values_interval)
        )
        self._maybe_flush()

    def write_end_device_event_type(self, info: EndDeviceEventTypeInfo) -> None:
        """A root-level EndDeviceEventType description (before the first MeterReading)."""
        self._check_open()
        if self._meter_readings:
            raise ValueError("EndDeviceEventType descriptions must precede the MeterReadings")
        self._described(
            "EndDeviceEventType",
            info,
            (
                ("domain", "domain"),
                ("event_or_action", "eventOrAction"),
                ("sub_domain", "subDomain"),
                ("type", "type"),
            ),
        )

    def add_reading_type(self, info: ReadingTypeInfo) -> None:
        """A root-level ReadingType description, written at the end of the document."""
        self._check_open()
        self._reading_types.append(info)

    def add_reading_quality_type(self, info: ReadingQualityTypeInfo) -> None:
        """A root-level ReadingQualityType description, written at the end of the document."""
        self._check_open()
        self._quality_types.append(info)

    def write_model(self, model: MeterReadings) -> None:
        """A whole MeterReadings model (as build_meter_readings would write it)."""
        for info in model.end_device_event_types:
            self.write_end_device_event_type(info)
        for meter_reading in model.meter_readings:
            self.write(meter_reading)
        for quality_type in model.reading_quality_types:
            self.add_reading_quality_type(quality_type)
        for reading_type in model.reading_types:
            self.add_reading_type(reading_type)

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("the MeterReadingsWriter is closed")

    def _described(self, tag: str, info: Any, fields: tuple[tuple[str, str], ...]) -> None:
        self._parts.append(f"<{tag}>")
        self._text("mRID", info.mrid)
        for attr, xml_name in fields:
            self._text(xml_name, getattr(info, attr))
        for name in info.names:
            self._name("Names", name)
        self._end(tag)

    def _reading_type_info(self, info: ReadingTypeInfo) -> None:
        self._parts.append("<ReadingType>")
        self._text("mRID", info.mrid)
        for attr, xml_name in READING_TYPE_FIELDS:
            self._text(xml_name, getattr(info, attr))
        for tag in ("argument", "interharmonic"):
            number: RationalNumber | None = getattr(info, tag)
            if number is not None:
                self._parts.append(f"<{tag}>")
                self._text("denominator", number.denominator)
                self._text("numerator", number.numerator)
                self._end(tag)
        for name in info.names:
            self._name("Names", name)
        self._end("ReadingType")


def _qualities(items: Iterable[str | ReadingQuality] | None) -> tuple[ReadingQuality, ...]:
    if not items:
        return ()
    return tuple(
        item if isinstance(item, ReadingQuality) else ReadingQuality(item) for item in items
    )
