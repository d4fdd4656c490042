"""The code lists of IEC 61968-9 and their codecs.

Modules:

- ``cim.codelists.readingtype``: the 18-field ReadingType code (Annex C).
- ``cim.codelists.enddevicetype``: EndDeviceEventType / EndDeviceControlType codes (Annex E).
- ``cim.codelists.quality``: ReadingQualityType codes (Annex D).
- ``cim.codelists.obis``: OBIS codes (IEC 62056-61) and their mapping to ReadingTypes.

The numbers live in ``data/*.csv`` (package data, loaded once and cached). This module holds
the shared table loader and the strict integer-field splitter the codecs use.
"""

from __future__ import annotations

import csv
import functools
import io
import re
from collections.abc import Mapping
from importlib import resources
from types import MappingProxyType

from cim.errors import CimError, ErrorCode

# A field is a plain ASCII integer without leading zeros; 9 digits keep every value far from
# int-conversion limits and well beyond any real code.
_INT_FIELD = re.compile(r"0|-?[1-9][0-9]{0,8}", re.ASCII)
MAX_FIELD_DIGITS = 9


@functools.cache
def load_rows(filename: str) -> tuple[Mapping[str, str], ...]:
    """Rows of ``data/<filename>`` as read-only dicts. Lines starting with ``#`` are notes."""
    text = resources.files(__package__).joinpath("data", filename).read_text(encoding="utf-8")
    body = "".join(line for line in text.splitlines(keepends=True) if not line.startswith("#"))
    return tuple(MappingProxyType(dict(row)) for row in csv.DictReader(io.StringIO(body)))


@functools.cache
def load_names(filename: str, column: str = "name") -> Mapping[int, str]:
    """``code -> column`` for a table whose key column is ``code``."""
    return MappingProxyType({int(row["code"]): row[column] for row in load_rows(filename)})


def split_int_fields(
    code: object,
    *,
    count: int,
    names: tuple[str, ...],
    error: ErrorCode,
    what: str,
    signed: frozenset[int] = frozenset(),
    label: str = "field",
) -> tuple[int, ...]:
    """Split a dotted code into ``count`` integers, or raise ``CimError(error)``.

    ``names`` label the fields in messages, as "<label> <1-based index> (<name>)". Only fields
    whose 0-based index is in ``signed`` may be negative. Leading zeros, "-0", "+", whitespace
    and non-ASCII digits are refused so that a parsed code always prints back unchanged.
    """
    if not isinstance(code, str):
        raise CimError(error, f"{what} must be a string, not {type(code).__name__}")
    if code == "":
        raise CimError(error, f"{what} is empty")
    parts = code.split(".")
    if len(parts) != count:
        raise CimError(
            error,
            f"{what} {_quote(code)} has {len(parts)} dotted fields; {count} are required",
        )
    values = []
    for index, (text, name) in enumerate(zip(parts, names, strict=True)):
        where = f"{label} {index + 1} ({name})"
        if not _INT_FIELD.fullmatch(text):
            raise CimError(error, f"{where}: {_quote(text)} is {_int_problem(text)}")
        value = int(text)
        if value < 0 and index not in signed:
            raise CimError(error, f"{where}: {value} is negative")
        values.append(value)
    return tuple(values)


def _int_problem(text: str) -> str:
    digits = text.removeprefix("-")
    if text == "":
        return "empty"
    if text == "-0":
        return "not a canonical integer (write 0)"
    if digits.isascii() and digits.isdigit():
        if len(digits) > 1 and digits.startswith("0"):
            return "not a canonical integer (leading zero)"
        return f"too long (more than {MAX_FIELD_DIGITS} digits)"
    return "not an integer"


def _quote(text: str, limit: int = 60) -> str:
    """repr() of a possibly huge or hostile value, cut to a loggable length."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


def check_int(value: object, label: str, error: ErrorCode, *, signed: bool = False) -> int:
    """Refuse anything but an int (bool included) for a code field built from Python values."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise CimError(error, f"{label}: {value!r} is not an integer")
    if value < 0 and not signed:
        raise CimError(error, f"{label}: {value} is negative")
    if abs(value) >= 10**MAX_FIELD_DIGITS:
        raise CimError(
            error, f"{label}: {value} is too large (more than {MAX_FIELD_DIGITS} digits)"
        )
    return value
