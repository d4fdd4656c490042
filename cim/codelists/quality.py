"""ReadingQualityType codes of IEC 61968-9 Annex D: ``system.category.subCategory``.

The system says who set the quality (end device, MDC, MDM...), the category what kind of
quality it is, the sub-category the detail within that category. Vendors add their own codes
(for example ``5.4.260``); any three non-negative integers parse, and codes missing from
``data/rq_*.csv`` get a generic description.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from cim.codelists import check_int, load_names, load_rows, split_int_fields
from cim.errors import ErrorCode

_ERR = ErrorCode.BAD_QUALITY_CODE
_PART_NAMES = ("system", "category", "subCategory")
_ATTRS = ("system", "category", "sub_category")


def system_names() -> Mapping[int, str]:
    return load_names("rq_system.csv")


def system_short_names() -> Mapping[int, str]:
    """Identifiers: NotApplicable, EndDevice, MDC, MDM, Other, External."""
    return load_names("rq_system.csv", "short")


def category_names() -> Mapping[int, str]:
    return load_names("rq_category.csv")


@functools.cache
def sub_category_names() -> Mapping[tuple[int, int], str]:
    """``(category, subCategory) -> name``."""
    return MappingProxyType(
        {
            (int(row["category"]), int(row["code"])): row["name"]
            for row in load_rows("rq_subcategory.csv")
        }
    )


@dataclass(frozen=True)
class ReadingQualityCode:
    """One ReadingQualityType code; construction validates (CimError BAD_QUALITY_CODE)."""

    system: int
    category: int
    sub_category: int

    def __post_init__(self) -> None:
        for index, (attr, name) in enumerate(zip(_ATTRS, _PART_NAMES, strict=True)):
            check_int(getattr(self, attr), f"part {index + 1} ({name})", _ERR)

    @classmethod
    def parse(cls, code: str) -> ReadingQualityCode:
        values = split_int_fields(
            code,
            count=3,
            names=_PART_NAMES,
            error=_ERR,
            what="ReadingQualityType code",
            label="part",
        )
        return cls(*values)

    @classmethod
    def build(cls, system: int, category: int, sub_category: int) -> ReadingQualityCode:
        return cls(system, category, sub_category)

    @property
    def code(self) -> str:
        return f"{self.system}.{self.category}.{self.sub_category}"

    def __str__(self) -> str:
        return self.code

    @property
    def system_name(self) -> str | None:
        return system_names().get(self.system)

    @property
    def category_name(self) -> str | None:
        return category_names().get(self.category)

    @property
    def sub_category_name(self) -> str | None:
        return sub_category_names().get((self.category, self.sub_category))

    @property
    def is_known(self) -> bool:
        """Whether system and (category, subCategory) are both in our tables."""
        return self.system_name is not None and self.sub_category_name is not None

    def with_system(self, system: int) -> ReadingQualityCode:
        """The same quality as set by another system (e.g. MDC re-stating an end device flag)."""
        return ReadingQualityCode(system, self.category, self.sub_category)

    def describe(self) -> str:
        """E.g. "power quality: power fail (set by end device)"."""
        source = self.system_name or f"unknown system {self.system}"
        if self.sub_category_name is not None:
            what = f"{self.category_name}: {self.sub_category_name}"
        elif self.category_name is not None:
            what = f"{self.category_name}: unlisted or vendor sub-category {self.sub_category}"
        else:
            what = f"unlisted or vendor category {self.category}.{self.sub_category}"
        return f"{what} (set by {source})"


DATA_VALID = ReadingQualityCode(1, 0, 0)
POWER_FAIL = ReadingQualityCode(1, 2, 32)
CLOCK_CHANGED = ReadingQualityCode(1, 4, 9)
KNOWN_MISSING_READ = ReadingQualityCode(2, 5, 259)
FAILED_VALIDATION = ReadingQualityCode(2, 6, 0)
MANUALLY_EDITED = ReadingQualityCode(2, 7, 0)
ESTIMATED = ReadingQualityCode(2, 8, 0)
DERIVED = ReadingQualityCode(2, 11, 0)
