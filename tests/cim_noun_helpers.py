"""Helpers shared by the CIM noun tests (test_nouns_*.py): where the public fixtures and our
schemas are, XSD validation, round trips and refusals through a noun's build/read
functions, and the Hypothesis strategies the nouns have in common.

Imported as ``from cim_noun_helpers import ...``: pytest puts tests/ on sys.path."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import strategies as st
from lxml import etree

from cim.errors import CimError
from cim.model import DateTimeInterval, Name, ObjectRef
from cim.xmlsafe import parse_bytes
from cim.xmltools import ReadReport

# The shared public CIM fixtures: beside the checkout, or at their usual place.
FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "cim-fixtures"
if not FIXTURES.is_dir():
    FIXTURES = Path("/work/shared/cim-fixtures")
SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"

Model = TypeVar("Model")
Build = Callable[[Model], etree._Element]
Read = Callable[[etree._Element, ReadReport], Model]


def ours(noun: str) -> Path:
    """Our own XSD for ``noun``."""
    return SCHEMAS / f"{noun}.xsd"


@functools.cache
def _schema(path: Path) -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(path)))


def assert_valid(element: etree._Element, *xsd_paths: Path) -> None:
    """``element`` is valid against every schema named; a schema that is missing fails."""
    for path in xsd_paths:
        assert path.is_file(), f"schema missing: {path}"
        schema = _schema(path)
        assert schema.validate(element), f"{path.name}: {schema.error_log}"


def round_trip(
    model: Model, build: Build[Model], read: Read[Model], *, xml_declaration: bool = False
) -> tuple[Model, ReadReport]:
    """``model`` built, serialised, parsed and read back, with the read's report."""
    data = etree.tostring(build(model), xml_declaration=xml_declaration, encoding="UTF-8")
    report = ReadReport()
    return read(parse_bytes(data), report), report


def read_text(xml: str, read: Read[Model]) -> tuple[Model, ReadReport]:
    report = ReadReport()
    return read(parse_bytes(xml.encode()), report), report


def refused(xml: str, read: Read[Model]) -> CimError:
    """The error ``read`` refuses ``xml`` with (the test fails if it is read)."""
    with pytest.raises(CimError) as info:
        read_text(xml, read)
    return info.value


def document(root: str, body: str, ns: str) -> str:
    """``body`` inside a ``root`` element in default namespace ``ns``."""
    return f'<{root} xmlns="{ns}">{body}</{root}>'


def payloads(root: etree._Element, noun: str) -> list[etree._Element]:
    """The ``noun`` payload elements anywhere in a message, in any year's namespace."""
    return root.xpath(
        "//*[local-name()=$noun and contains(namespace-uri(), $suffix)]",
        noun=noun,
        suffix=f"/{noun}#",
    )


def samples_declaring(*nouns: str) -> set[str]:
    """The fixture XML files (relative paths) that declare one of the nouns' namespaces."""
    markers = [f"/{noun}#".encode() for noun in nouns]
    found = set()
    for path in FIXTURES.rglob("*.xml"):
        data = path.read_bytes()
        if any(marker in data for marker in markers):
            found.add(path.relative_to(FIXTURES).as_posix())
    return found


# --- hypothesis --------------------------------------------------------------------------


def texts(max_size: int = 10) -> st.SearchStrategy[str]:
    """Non-empty text without surrounding white space, control characters or CR."""
    return st.text(
        alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Cn"), blacklist_characters="\r"),
        min_size=1,
        max_size=max_size,
    ).filter(lambda s: s == s.strip())


def moments(zone: tzinfo) -> st.SearchStrategy[datetime]:
    """Datetimes from 1970 to 2100: naive, UTC, in ``zone`` or at -05:30."""
    return st.builds(
        lambda d, tz: d.replace(tzinfo=tz),
        st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1)),
        st.sampled_from([None, UTC, zone, timezone(timedelta(hours=-5, minutes=-30))]),
    )


def intervals(moment: st.SearchStrategy[datetime]) -> st.SearchStrategy[DateTimeInterval]:
    return st.builds(DateTimeInterval, st.none() | moment, st.none() | moment)


@st.composite
def names(draw, text: st.SearchStrategy[str], typed: bool = True) -> Name:
    """A Name; when ``typed``, sometimes with a NameType and a NameTypeAuthority."""
    opt_text = st.none() | text
    name = draw(text)
    if not typed or draw(st.booleans()):
        return Name(name)
    if draw(st.booleans()):
        return Name(name, draw(text), draw(opt_text))
    return Name(name, draw(text), draw(opt_text), draw(text), draw(opt_text))


def name_tuples(text: st.SearchStrategy[str]) -> st.SearchStrategy[tuple[Name, ...]]:
    return st.lists(names(text), max_size=2).map(tuple)


def refs(text: st.SearchStrategy[str]) -> st.SearchStrategy[ObjectRef]:
    """An ObjectRef with an optional mRID and up to two Names."""
    return st.builds(ObjectRef, st.none() | text, name_tuples(text))
