"""XSD validation of IEC 61968-100 messages and IEC 61968-9 payloads.

The schemas are the OpenHES ones shipped in the ``schemas`` package (or, for the CLI, any
XSD on disk). They are loaded without network access and without reading any file
outside the folder of the root XSD: a package-local :class:`lxml.etree.Resolver` serves
``xs:import``/``xs:include`` from that folder and refuses everything else. Each root XSD
is compiled once into a libxml2 validator (one per thread, since libxml2 validation
contexts are not shared between threads) and cached.

Which XSD validates a document follows from the namespace of its root element:

* a SOAP 1.1/1.2 Envelope: the first child of its Body is validated;
* ``http://iec.ch/TC57/2011/schema/message`` (RequestMessage, EventMessage, ...):
  Message.xsd, and then every Payload/Request child in a namespace we hold a profile for
  is validated against that profile too (Message.xsd itself skips payload content);
* ``http://iec.ch/TC57/2011/<Noun>Message``: the per-noun wrapper XSD (which imports
  the payload profile, so the payload is checked with it);
* ``http://iec.ch/TC57/2011/<Noun>#``: the payload profile itself.

Each issue carries the line and an XPath-like path of the offending element. At most
``MAX_ISSUES`` issues are described per document. A document of more than 20,000 elements
is first checked by libxml2's streaming validator; if that finds a hundred errors or more,
their messages are reported without locations, because libxml2's tree validator would
spend time quadratic in the document size building a path for each error.
"""

from __future__ import annotations

import itertools
import os
import re
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from lxml import etree

from cim.errors import CimError, ErrorCode
from cim.xmlsafe import DEFAULT_LIMITS, XmlLimits, parse_bytes, parse_file

MESSAGE_NS = "http://iec.ch/TC57/2011/schema/message"
_SOAP_ENVELOPES = frozenset(
    {"http://schemas.xmlsoap.org/soap/envelope/", "http://www.w3.org/2003/05/soap-envelope"}
)
_XSD_NS = "http://www.w3.org/2001/XMLSchema"
# Issues described one by one per validation; the rest are counted (a document with
# 100,000 bad readings should not produce 100,000 path computations).
MAX_ISSUES = 100
# Documents with more elements than this are first checked by libxml2's streaming
# validator, which records at most about a hundred errors. When it reports that many, the
# tree validator is not run: its error log builds an XPath for every error by scanning
# siblings, which takes minutes for 100,000 bad readings in one IntervalBlock.
_STREAM_CHECK_ELEMENTS = 20_000
_STREAM_MANY_ERRORS = 100
# Schema documents are small; anything larger is not one of ours.
_MAX_SCHEMA_BYTES = 4 * 1024 * 1024

# The same hardening as cim.xmlsafe: no entities, no DTD, no network, no huge trees.
_SCHEMA_PARSER_OPTIONS = dict(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    dtd_validation=False,
    huge_tree=False,
    remove_comments=True,
    remove_pis=True,
)


@dataclass(frozen=True)
class ValidationIssue:
    """One schema violation.

    ``path`` locates the offending element from the document root by local names, with a
    1-based position where an element has siblings of the same name, e.g.
    ``/MeterReadings/MeterReading[2]/IntervalBlocks[1]/IntervalReadings[3]/timeStamp``.
    """

    line: int | None
    path: str
    message: str
    schema: str = ""

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.path}: {self.message}"


# --------------------------------------------------------------------------- loading


def _package_schema_dir() -> Path:
    root = files("schemas")
    if not isinstance(root, Path):
        raise CimError(ErrorCode.INTERNAL, "the schemas package is not installed on a file system")
    return root


def _url_to_path(url: str) -> Path | None:
    """A local file path for ``url``, or None if it names anything else (http:, ...)."""
    if url.startswith("file:"):
        parsed = urllib.parse.urlparse(url)
        if parsed.netloc not in ("", "localhost"):
            return None
        return Path(urllib.parse.unquote(parsed.path))
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:", url):  # another scheme (a drive letter is one char)
        return None
    return Path(url)


class _FolderResolver(etree.Resolver):
    """Serves schema imports from one folder (and its sub-folders) and refuses everything
    else: other folders, symlinks leading out, URLs of any other scheme.

    Refusals are recorded so the caller can report them; libxml2 itself only says that
    the resource could not be parsed.
    """

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = Path(os.path.realpath(folder))
        self.refusals: list[CimError] = []

    def allowed(self, url: str) -> Path | None:
        path = _url_to_path(url)
        if path is None:
            return None
        real = Path(os.path.realpath(path))
        if self.folder not in real.parents:
            return None
        if not real.is_file():
            return None
        return real

    def resolve(self, system_url, public_id, context):
        try:
            path = self.allowed(system_url or "")
            if path is None:
                raise CimError(
                    ErrorCode.FORBIDDEN_XML,
                    "schema import refused (not a file in the schema folder; the network"
                    f" is never used): {system_url or public_id}",
                )
            data = _read_schema_bytes(path)
        except CimError as refusal:
            self.refusals.append(refusal)
            raise
        return self.resolve_string(data, context, base_url=str(path))


def _read_schema_bytes(path: Path) -> bytes:
    size = path.stat().st_size
    if size > _MAX_SCHEMA_BYTES:
        raise CimError(ErrorCode.TOO_LARGE, f"schema file {path.name} is {size:,} bytes")
    data = path.read_bytes()
    # Refuse DOCTYPEs (and with them entity tricks) in schema documents too.
    probe = etree.XMLParser(**_SCHEMA_PARSER_OPTIONS)
    try:
        doc = etree.fromstring(data, probe, base_url=str(path)).getroottree()
    except etree.XMLSyntaxError as exc:
        raise CimError(
            ErrorCode.NOT_WELL_FORMED, f"schema {path.name} is not well-formed: {exc}"
        ) from None
    info = doc.docinfo
    if info.doctype or info.internalDTD is not None or info.externalDTD is not None:
        raise CimError(ErrorCode.FORBIDDEN_XML, f"schema {path.name} has a DOCTYPE; refused")
    return data


def _compile(xsd: Path, folder: Path) -> etree.XMLSchema:
    resolver = _FolderResolver(folder)
    parser = etree.XMLParser(**_SCHEMA_PARSER_OPTIONS)
    parser.resolvers.add(resolver)
    data = _read_schema_bytes(xsd)
    doc = etree.fromstring(data, parser, base_url=str(xsd)).getroottree()
    try:
        schema = etree.XMLSchema(doc)
    except etree.XMLSchemaParseError as exc:
        if resolver.refusals:
            raise resolver.refusals[0] from None
        raise CimError(ErrorCode.INTERNAL, f"schema {xsd.name} does not compile: {exc}") from None
    if resolver.refusals:
        # libxml2 may carry on without an import it could not load; we do not.
        raise resolver.refusals[0]
    return schema


def _target_namespace(xsd: Path) -> str | None:
    try:
        root = etree.fromstring(_read_schema_bytes(xsd), etree.XMLParser(**_SCHEMA_PARSER_OPTIONS))
    except CimError:
        return None
    if root.tag != f"{{{_XSD_NS}}}schema":
        return None
    return root.get("targetNamespace")


class _FolderIndex:
    """targetNamespace -> XSD file for one folder (first file in name order wins), and the
    schema sets already built from them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.by_namespace: dict[str, Path] = {}
        self.sets: dict[str, SchemaSet] = {}
        for path in sorted(folder.glob("*.xsd")):
            ns = _target_namespace(path)
            if ns is not None and ns not in self.by_namespace:
                self.by_namespace[ns] = path

    def schema_set(self, namespace: str) -> SchemaSet | None:
        built = self.sets.get(namespace)
        if built is None:
            path = self.by_namespace.get(namespace)
            if path is None:
                return None
            built = self.sets[namespace] = SchemaSet.for_xsd(path)
        return built


_lock = threading.Lock()
_indexes: dict[Path, _FolderIndex] = {}
_sets: dict[Path, SchemaSet] = {}
_package_index: list[_FolderIndex] = []


def _index_for(folder: Path) -> _FolderIndex:
    folder = Path(os.path.realpath(folder))
    with _lock:
        index = _indexes.get(folder)
        if index is None:
            index = _indexes[folder] = _FolderIndex(folder)
        return index


def _package() -> _FolderIndex:
    if not _package_index:
        _package_index.append(_index_for(_package_schema_dir()))
    return _package_index[0]


# --------------------------------------------------------------------------- documents


def _is_soap_envelope(element: etree._Element) -> bool:
    return (
        etree.QName(element).namespace in _SOAP_ENVELOPES
        and etree.QName(element).localname == "Envelope"
    )


def document_element(root: etree._Element) -> etree._Element:
    """The element to validate: ``root`` itself, or the first child of a SOAP Body."""
    if not _is_soap_envelope(root):
        return root
    ns = etree.QName(root).namespace
    body = root.find(f"{{{ns}}}Body")
    if body is None:
        raise CimError(ErrorCode.UNKNOWN_MESSAGE_ROOT, "the SOAP Envelope has no Body")
    for child in body:
        if isinstance(child.tag, str):
            return child
    raise CimError(ErrorCode.UNKNOWN_MESSAGE_ROOT, "the SOAP Body is empty")


def _elements(parent: etree._Element) -> Iterator[etree._Element]:
    return parent.iterchildren(etree.Element)


def element_path(element: etree._Element) -> str:
    """``/Root/Child[2]/Leaf``: local names from the document root, with a 1-based
    position wherever an element has siblings of the same name (tag)."""
    steps: list[str] = []
    node: etree._Element | None = element
    while node is not None:
        name = etree.QName(node).localname
        if node.getparent() is None:
            steps.append(name)
        else:
            # Sibling scans run in libxml2 (C), so long reading lists stay cheap.
            before = sum(1 for _ in node.itersiblings(node.tag, preceding=True))
            after = next(node.itersiblings(node.tag), None) is not None
            steps.append(f"{name}[{before + 1}]" if before or after else name)
        node = node.getparent()
    return "/" + "/".join(reversed(steps))


_STEP = re.compile(r"^(?:(?P<prefix>[^:\[\]]+):)?(?P<name>[^\[\]]+)(?:\[(?P<pos>\d+)\])?$")


def _child_at(node: etree._Element, step: str) -> etree._Element | None:
    match = _STEP.match(step)
    if match is None:
        return None
    pos = int(match.group("pos") or 1)
    prefix, name = match.group("prefix"), match.group("name")
    if name == "*" and prefix is None:
        candidates = node.iterchildren(etree.Element)
    else:
        candidates = (
            child for child in node.iterchildren(f"{{*}}{name}") if child.prefix == prefix
        )
    return next(itertools.islice(candidates, pos - 1, None), None)


def _locate(validated: etree._Element, libxml_path: str | None, line: int | None):
    """Find the element a libxml2 error points at. libxml2 reports an XPath relative to
    the validated element, with ``*[n]`` (n-th element child) for default-namespace
    elements and ``prefix:name[n]`` otherwise; failing that, the first element on the
    reported line."""
    if libxml_path and libxml_path.startswith("/"):
        node: etree._Element | None = validated
        for step in libxml_path.strip("/").split("/")[1:]:
            node = _child_at(node, step)
            if node is None:
                break
        if node is not None:
            return node
    if line:
        for node in validated.iter(etree.Element):
            if node.sourceline == line:
                return node
    return validated


# --------------------------------------------------------------------------- SchemaSet


class SchemaSet:
    """One root XSD with everything it imports, compiled for validation.

    Obtain instances with :meth:`for_namespace`, :meth:`for_root` or :meth:`for_xsd`;
    they are cached for the life of the process.
    """

    def __init__(self, xsd: Path, *, folder: Path | None = None) -> None:
        self.xsd = Path(os.path.realpath(xsd))
        self.folder = Path(os.path.realpath(folder or self.xsd.parent))
        self.target_namespace = _target_namespace(self.xsd)
        self._local = threading.local()
        self._index: _FolderIndex | None = None
        self._validator()  # compile now so errors surface at construction

    def __repr__(self) -> str:
        return f"SchemaSet({self.xsd.name!r})"

    @property
    def name(self) -> str:
        return self.xsd.name

    def _validator(self) -> etree.XMLSchema:
        schema = getattr(self._local, "schema", None)
        if schema is None:
            schema = self._local.schema = _compile(self.xsd, self.folder)
        return schema

    # -- lookup

    @classmethod
    def for_xsd(cls, xsd: str | os.PathLike[str]) -> SchemaSet:
        """The schema set rooted at any XSD on disk; its imports may only come from the
        XSD's own folder (and sub-folders)."""
        path = Path(os.path.realpath(xsd))
        if not path.is_file():
            raise CimError(ErrorCode.INTERNAL, f"no schema file {xsd}")
        with _lock:
            cached = _sets.get(path)
        if cached is not None:
            return cached
        built = cls(path)
        with _lock:
            return _sets.setdefault(path, built)

    @classmethod
    def for_namespace(cls, namespace: str) -> SchemaSet:
        """The OpenHES schema whose target namespace is ``namespace``."""
        built = _package().schema_set(namespace)
        if built is None:
            hint = ""
            if "//www.iec.ch/" in namespace:
                hint = " (a pre-standard 'www.' namespace; OpenHES schemas use the 2013 ones)"
            raise CimError(
                ErrorCode.UNKNOWN_MESSAGE_ROOT,
                f"no OpenHES schema for namespace {namespace!r}{hint}",
            )
        return built

    @classmethod
    def for_root(cls, element: etree._Element) -> SchemaSet:
        """The OpenHES schema for a document, chosen by the namespace of its root element
        (for a SOAP Envelope: of the first child of its Body)."""
        target = document_element(element)
        namespace = etree.QName(target).namespace
        if not namespace:
            raise CimError(
                ErrorCode.UNKNOWN_MESSAGE_ROOT,
                f"root element {etree.QName(target).localname!r} has no namespace",
                line=target.sourceline,
            )
        return cls.for_namespace(namespace)

    # -- validation

    def validate(
        self, root: etree._Element, *, nested: bool = True, max_issues: int = MAX_ISSUES
    ) -> list[ValidationIssue]:
        """Validate ``root`` (or the first child of its SOAP Body) against this schema.

        With ``nested`` (default), a generic IEC 61968-100 envelope also has each of its
        Payload and Request children validated against the profile schema found in this
        schema's folder for that child's namespace. At most ``max_issues`` issues are
        described one by one; a last issue then counts the rest.
        """
        target = document_element(root)
        issues = self._check(target, max(1, max_issues))
        if nested and etree.QName(target).namespace == MESSAGE_NS:
            issues.extend(self._validate_envelope_contents(target, max_issues))
        return issues

    def _check(self, target: etree._Element, max_issues: int) -> list[ValidationIssue]:
        validator = self._validator()
        large = next(
            itertools.islice(target.iter(etree.Element), _STREAM_CHECK_ELEMENTS, None), None
        )
        if large is not None:
            # For a large document, libxml2's streaming validator first says (in linear
            # time) whether there are errors and roughly how many.
            messages = self._stream_errors(target)
            if not messages:
                return []
            if len(messages) >= _STREAM_MANY_ERRORS:
                return self._unlocated(target, messages, max_issues)
        if validator.validate(target):
            return []
        entries = [e for e in validator.error_log if e.level >= etree.ErrorLevels.ERROR]
        issues = []
        for entry in entries[:max_issues]:
            line = entry.line or None
            node = _locate(target, entry.path, line)
            issues.append(
                ValidationIssue(
                    line=line or node.sourceline,
                    path=element_path(node),
                    message=entry.message,
                    schema=self.name,
                )
            )
        if len(entries) > max_issues:
            issues.append(
                ValidationIssue(
                    line=None,
                    path=element_path(target),
                    message=f"{len(entries) - max_issues} more schema errors not listed",
                    schema=self.name,
                )
            )
        return issues

    def _stream_errors(self, target: etree._Element) -> list[str]:
        """Error messages of a streaming validation of ``target`` (empty if valid)."""
        parser = etree.XMLParser(schema=self._validator(), **_SCHEMA_PARSER_OPTIONS)
        # lxml folds the (per-thread) global error log into the parse error's log for
        # large inputs; start from an empty one so only this document's errors count.
        etree.clear_error_log()
        try:
            etree.fromstring(etree.tostring(target), parser)
        except etree.XMLSyntaxError as exc:
            errors = [e.message for e in exc.error_log if e.level >= etree.ErrorLevels.ERROR]
            return errors or [str(exc)]
        return []

    def _unlocated(
        self, target: etree._Element, messages: list[str], max_issues: int
    ) -> list[ValidationIssue]:
        """Issues of a large document with many errors. Locating each error would cost
        time quadratic in the document size (libxml2 builds an XPath for every error by
        scanning siblings), so the messages are reported against the document root."""
        where = element_path(target)
        issues = [
            ValidationIssue(line=None, path=where, message=message, schema=self.name)
            for message in messages[:max_issues]
        ]
        issues.append(
            ValidationIssue(
                line=None,
                path=where,
                message=f"at least {len(messages)} schema errors in a document of more than"
                f" {_STREAM_CHECK_ELEMENTS:,} elements; the first are listed without their"
                " location. Fix them and validate again to locate the rest.",
                schema=self.name,
            )
        )
        return issues

    def _validate_envelope_contents(
        self, envelope: etree._Element, max_issues: int
    ) -> list[ValidationIssue]:
        if self._index is None:
            self._index = _index_for(self.folder)
        index = self._index
        issues: list[ValidationIssue] = []
        for part in ("Payload", "Request"):
            holder = envelope.find(f"{{{MESSAGE_NS}}}{part}")
            if holder is None:
                continue
            for child in _elements(holder):
                namespace = etree.QName(child).namespace
                if namespace is None or namespace == MESSAGE_NS:
                    continue
                profile = index.schema_set(namespace)
                if profile is None:
                    continue  # Payload admits any namespace; we check only what we know
                issues.extend(profile.validate(child, nested=False, max_issues=max_issues))
        return issues

    def assert_valid(self, root: etree._Element) -> None:
        """Raise ``CimError(SCHEMA_INVALID)`` describing the first issue, if any."""
        _raise_first(self.validate(root))


# --------------------------------------------------------------------------- module API


def _raise_first(issues: list[ValidationIssue]) -> None:
    if not issues:
        return
    first = issues[0]
    rest = issues[1:]
    details = "\n".join(str(issue) for issue in rest) if rest else None
    raise CimError(
        ErrorCode.SCHEMA_INVALID,
        first.message,
        details=details,
        xpath=first.path,
        line=first.line,
    )


def validate(root: etree._Element) -> list[ValidationIssue]:
    """Validate a parsed message or payload against the OpenHES schema chosen by its root
    namespace (see the module documentation). Raises ``CimError(UNKNOWN_MESSAGE_ROOT)``
    when OpenHES has no schema for that namespace."""
    return SchemaSet.for_root(root).validate(root)


def assert_valid(root: etree._Element) -> None:
    """Like :func:`validate`, but raise ``CimError(SCHEMA_INVALID, reason, xpath=...,
    line=...)`` for the first issue; the others are listed in ``details``."""
    _raise_first(validate(root))


def validate_bytes(
    data: bytes, xsd: str | os.PathLike[str] | None = None, limits: XmlLimits = DEFAULT_LIMITS
) -> list[ValidationIssue]:
    """Parse ``data`` with the hardened parser and validate it (see :func:`validate_file`)."""
    root = parse_bytes(data, limits)
    if xsd is None:
        return validate(root)
    return SchemaSet.for_xsd(xsd).validate(root)


def validate_file(
    path: str | os.PathLike[str],
    xsd: str | os.PathLike[str] | None = None,
    limits: XmlLimits = DEFAULT_LIMITS,
) -> list[ValidationIssue]:
    """Validate an XML file, for the CLI.

    Without ``xsd`` the OpenHES schema is chosen from the root namespace. With ``xsd``,
    that schema file is used (any XSD on disk, e.g. a vendor copy); its imports are read
    from its own folder only, never from the network. Malformed or hostile XML raises the
    ``CimError`` of :mod:`cim.xmlsafe`.
    """
    root = parse_file(path, limits)
    if xsd is None:
        return validate(root)
    return SchemaSet.for_xsd(xsd).validate(root)
