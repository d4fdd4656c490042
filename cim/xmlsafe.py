"""The one hardened XML parser configuration used everywhere in OpenHES.

Refused: any DOCTYPE (and with it every DTD, entity declaration, XXE and entity-expansion
attack), documents larger or deeper than the configured limits. Never resolved: entities,
external resources, the network. Every refusal is a :class:`~cim.errors.CimError` with a
documented code; no lxml exception escapes this module.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import IO, BinaryIO

from lxml import etree

from cim.errors import CimError, ErrorCode


@dataclass(frozen=True)
class XmlLimits:
    """Caps applied before and while parsing. Defaults suit SOAP/bus messages; bulk file
    imports raise ``max_bytes``. Environment overrides: OPENHES_XML_MAX_BYTES,
    OPENHES_XML_MAX_DEPTH."""

    max_bytes: int = 32 * 1024 * 1024
    max_depth: int = 64

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> XmlLimits:
        default = cls()
        return cls(
            max_bytes=_positive_int(environ, "OPENHES_XML_MAX_BYTES", default.max_bytes),
            max_depth=_positive_int(environ, "OPENHES_XML_MAX_DEPTH", default.max_depth),
        )


def _positive_int(environ: Mapping[str, str], name: str, default: int) -> int:
    text = environ.get(name)
    if text is None or not text.strip():
        return default
    if not text.strip().isdigit() or int(text) < 1:
        # A misconfigured limit must not silently fall back to another value.
        raise ValueError(f"{name} must be a positive whole number, not {text!r}")
    return int(text)


DEFAULT_LIMITS = XmlLimits.from_env()

_PARSER_OPTIONS = dict(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    dtd_validation=False,
    huge_tree=False,
    remove_comments=True,
    remove_pis=True,
)


def _new_parser() -> etree.XMLParser:
    return etree.XMLParser(**_PARSER_OPTIONS)


class _NoResolver(etree.Resolver):
    """Refuses every external resource, including schema imports not supplied by us."""

    def resolve(self, system_url, public_id, context):
        raise CimError(ErrorCode.FORBIDDEN_XML, f"external resource refused: {system_url}")


def safe_parser() -> etree.XMLParser:
    """A fresh parser with the hardened options (parsers are not thread-safe)."""
    parser = _new_parser()
    parser.resolvers.add(_NoResolver())
    return parser


def _classify_syntax_error(exc: etree.XMLSyntaxError) -> CimError:
    message = str(exc.msg or exc)
    lowered = message.lower()
    line = exc.lineno if exc.lineno else None
    if "encoding" in lowered or "utf-8" in lowered or "char 0x" in lowered or "bytes:" in lowered:
        return CimError(ErrorCode.BAD_ENCODING, f"invalid character encoding: {message}", line=line)
    if "entity" in lowered or "doctype" in lowered or "dtd" in lowered:
        return CimError(
            ErrorCode.FORBIDDEN_XML, f"entities and DTDs are refused: {message}", line=line
        )
    if "depth" in lowered or "excessive" in lowered:
        return CimError(ErrorCode.TOO_DEEP, f"nesting too deep: {message}", line=line)
    if "huge" in lowered or "too long" in lowered or "amplification" in lowered:
        return CimError(
            ErrorCode.TOO_LARGE, f"document exceeds parser limits: {message}", line=line
        )
    return CimError(ErrorCode.NOT_WELL_FORMED, f"not well-formed XML: {message}", line=line)


def _refuse_doctype(docinfo: etree.DocInfo) -> None:
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise CimError(ErrorCode.FORBIDDEN_XML, "a DOCTYPE is not allowed in a CIM message")


def _depth_exceeds(root: etree._Element, max_depth: int) -> bool:
    # One XPath step per level, evaluated inside libxml2: true when any element sits
    # deeper than max_depth. Much cheaper than walking the tree from Python.
    return bool(root.xpath("boolean(/" + "/*" * (max_depth + 1) + ")"))


def parse_bytes(data: bytes, limits: XmlLimits = DEFAULT_LIMITS) -> etree._Element:
    """Parse a whole message held in memory; return its root element."""
    if isinstance(data, str):
        raise CimError(
            ErrorCode.BAD_ENCODING, "XML must be given as bytes so its declared encoding holds"
        )
    if len(data) > limits.max_bytes:
        raise CimError(
            ErrorCode.TOO_LARGE,
            f"message is {len(data):,} bytes; the limit is {limits.max_bytes:,}",
        )
    if not data.strip():
        raise CimError(ErrorCode.NOT_WELL_FORMED, "the message is empty")
    try:
        root = etree.fromstring(data, safe_parser())
    except etree.XMLSyntaxError as exc:
        raise _classify_syntax_error(exc) from None
    except (ValueError, etree.LxmlError) as exc:
        raise CimError(ErrorCode.NOT_WELL_FORMED, f"not well-formed XML: {exc}") from None
    _refuse_doctype(root.getroottree().docinfo)
    if _depth_exceeds(root, limits.max_depth):
        raise CimError(
            ErrorCode.TOO_DEEP, f"elements are nested deeper than {limits.max_depth} levels"
        )
    return root


def parse_file(path: str | os.PathLike[str], limits: XmlLimits = DEFAULT_LIMITS) -> etree._Element:
    size = os.path.getsize(path)
    if size > limits.max_bytes:
        raise CimError(
            ErrorCode.TOO_LARGE, f"file is {size:,} bytes; the limit is {limits.max_bytes:,}"
        )
    with open(path, "rb") as handle:
        return parse_bytes(handle.read(), limits)


class _CountingReader:
    """Wraps a binary stream and refuses to deliver more than ``limit`` bytes."""

    def __init__(self, stream: BinaryIO | IO[bytes], limit: int) -> None:
        self._stream = stream
        self._limit = limit
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._stream.read(size if size and size > 0 else 1 << 16)
        self.count += len(chunk)
        if self.count > self._limit:
            raise CimError(
                ErrorCode.TOO_LARGE, f"stream exceeds the limit of {self._limit:,} bytes"
            )
        return chunk


def iterparse_safe(
    source: str | os.PathLike[str] | BinaryIO,
    *,
    events: tuple[str, ...] = ("end",),
    tag: str | tuple[str, ...] | None = None,
    limits: XmlLimits | None = None,
) -> Iterator[tuple[str, etree._Element]]:
    """Streaming parse with the hardened options, for documents of any size.

    ``limits.max_bytes`` applies to the stream (pass ``XmlLimits(max_bytes=...)`` for bulk
    imports); depth is limited by libxml2's own cap, and a DOCTYPE is refused before the
    first element is handed out.
    """
    limits = limits or XmlLimits(max_bytes=1 << 40)
    if isinstance(source, (str, os.PathLike)):
        handle: BinaryIO = open(source, "rb")  # noqa: SIM115 - closed in finally
        owned = True
    else:
        handle, owned = source, False
    reader = _CountingReader(handle, limits.max_bytes)
    wanted = tuple(events)
    if "start" not in wanted:
        wanted = ("start", *wanted)
    context = etree.iterparse(
        reader,
        events=wanted,
        tag=None,
        **{k: v for k, v in _PARSER_OPTIONS.items() if k not in ("remove_pis",)},
    )
    checked = False
    depth = 0
    tags = {tag} if isinstance(tag, str) else set(tag) if tag else None
    try:
        for event, element in context:
            if event == "start":
                if not checked:
                    _refuse_doctype(element.getroottree().docinfo)
                    checked = True
                depth += 1
                if depth > limits.max_depth:
                    raise CimError(
                        ErrorCode.TOO_DEEP,
                        f"elements are nested deeper than {limits.max_depth} levels",
                        line=element.sourceline,
                    )
                if "start" not in events:
                    continue
            elif event == "end":
                depth -= 1
            if tags is None or element.tag in tags:
                yield event, element
    except etree.XMLSyntaxError as exc:
        raise _classify_syntax_error(exc) from None
    except (ValueError, etree.LxmlError) as exc:
        raise CimError(ErrorCode.NOT_WELL_FORMED, f"not well-formed XML: {exc}") from None
    finally:
        if owned:
            handle.close()


# How much input may precede the root element's start tag (XML declaration, comments, PIs).
_MAX_PROLOG_BYTES = 1 << 20


def _tag_matcher(patterns: tuple[str, ...]):
    """A Python-side check equivalent to lxml's tag filter ('{ns}name', '{*}name', 'name')."""
    exact = set()
    any_ns = set()
    for pattern in patterns:
        if pattern.startswith("{*}"):
            any_ns.add(pattern[3:])
        else:
            exact.add(pattern)

    def matches(tag: object) -> bool:
        return isinstance(tag, str) and (tag in exact or tag.rpartition("}")[2] in any_ns)

    return matches


def pullparse_safe(
    source: str | os.PathLike[str] | BinaryIO,
    *,
    tag: str | tuple[str, ...] | list[str],
    events: tuple[str, ...] = ("start",),
    limits: XmlLimits | None = None,
    chunk_size: int = 1 << 16,
) -> Iterator[tuple[str, etree._Element]]:
    """Streaming parse for bulk documents, with the hardened options and the tag filter
    applied inside libxml2 (elements not matching ``tag`` cost no Python work).

    Yields ``(event, element)`` for the ``events`` ("start" and/or "end") of elements matching
    ``tag`` (lxml patterns: ``"{ns}name"``, ``"{*}name"``; wildcard patterns and start events
    are the cheapest), ``("chunk", root)`` after the events of each ``chunk_size`` bytes
    of input, and ``("done", root)`` once the document is complete. At a "chunk" event the caller may remove fully parsed
    elements -- every element that is not the last child of its parent; the open elements
    are exactly the chain of last children from the root -- to keep memory flat, and may
    process them in bulk: one Python event per chunk instead of one or two per element.

    Refused before any event is yielded: a DOCTYPE (and everything in it), a prolog longer than
    1 MiB. ``limits.max_bytes`` applies to the stream. Depth: the path of open elements is
    checked against ``limits.max_depth`` at every chunk; elements opened and closed within one
    chunk are bounded by libxml2's own cap of 256 levels (refused as TOO_DEEP).
    """
    limits = limits or XmlLimits(max_bytes=1 << 40)
    patterns = (tag,) if isinstance(tag, str) else tuple(tag)
    wanted = _tag_matcher(patterns)
    if isinstance(source, (str, os.PathLike)):
        handle: BinaryIO = open(source, "rb")  # noqa: SIM115 - closed in finally
        owned = True
    else:
        handle, owned = source, False
    options = dict(_PARSER_OPTIONS)
    total = 0

    def read() -> bytes:
        nonlocal total
        chunk = handle.read(chunk_size)
        if isinstance(chunk, str):
            raise CimError(
                ErrorCode.BAD_ENCODING, "XML must be read as bytes so its declared encoding holds"
            )
        total += len(chunk)
        if total > limits.max_bytes:
            raise CimError(
                ErrorCode.TOO_LARGE, f"stream exceeds the limit of {limits.max_bytes:,} bytes"
            )
        return chunk

    try:
        # 1. Find the root element with a throw-away parser, so that the DOCTYPE is refused
        #    before anything is handed out and the main parser can report the root.
        sniffer = etree.XMLPullParser(events=("start",), **options)
        prolog: list[bytes] = []
        root_tag = None
        while root_tag is None:
            chunk = read()
            if not chunk:
                sniffer.close()  # raises: no root element
                raise CimError(ErrorCode.NOT_WELL_FORMED, "the document has no root element")
            prolog.append(chunk)
            sniffer.feed(chunk)
            for _event, element in sniffer.read_events():
                _refuse_doctype(element.getroottree().docinfo)
                root_tag = element.tag
                break
            if root_tag is None and total > _MAX_PROLOG_BYTES:
                raise CimError(
                    ErrorCode.NOT_WELL_FORMED,
                    f"no root element in the first {_MAX_PROLOG_BYTES:,} bytes",
                )
        del sniffer
        # 2. The main parser: the caller's tags plus the root's local name (for the root).
        wanted_events = tuple(events)
        parser = etree.XMLPullParser(
            events=tuple(dict.fromkeys(("start", *wanted_events))),
            tag=[*patterns, "{*}" + root_tag.rpartition("}")[2]],
            **options,
        )
        root: etree._Element | None = None
        pending = prolog
        while True:
            for chunk in pending:
                parser.feed(chunk)
                for event, element in parser.read_events():
                    if root is None:
                        root = element
                        _refuse_doctype(root.getroottree().docinfo)
                    if event in wanted_events and wanted(element.tag):
                        yield event, element
                if root is not None:
                    depth, node = 1, root
                    while len(node):
                        node = node[-1]
                        depth += 1
                    if depth > limits.max_depth:
                        raise CimError(
                            ErrorCode.TOO_DEEP,
                            f"elements are nested deeper than {limits.max_depth} levels",
                            line=node.sourceline,
                        )
                    yield "chunk", root
            chunk = read()
            if not chunk:
                break
            pending = [chunk]
        parser.close()
        for event, element in parser.read_events():
            if event in wanted_events and wanted(element.tag):
                yield event, element
        if root is not None:
            yield "done", root
    except etree.XMLSyntaxError as exc:
        raise _classify_syntax_error(exc) from None
    except (ValueError, etree.LxmlError) as exc:
        raise CimError(ErrorCode.NOT_WELL_FORMED, f"not well-formed XML: {exc}") from None
    finally:
        if owned:
            handle.close()
