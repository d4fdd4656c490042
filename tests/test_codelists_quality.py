"""ReadingQualityType codec, and our table against the CIM4NoUtility reference data."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cim.codelists import quality
from cim.codelists.quality import (
    ReadingQualityCode,
    category_names,
    sub_category_names,
    system_names,
    system_short_names,
)
from cim.errors import CimError, ErrorCode

FIXTURES = Path(os.environ.get("OPENHES_CIM_FIXTURES", "/work/shared/cim-fixtures"))
TELEMARK_RQ = (
    FIXTURES / "cim4noutility/Telemark-120/Asset/CIMXML/Telemark-120-ReadingQualityType_RD.xml"
)

# The codes of cim-standards.md 4.2, with the words our description must contain.
DOCUMENTED = [
    ("1.0.0", quality.DATA_VALID, "valid: data valid (set by end device)"),
    ("1.2.32", quality.POWER_FAIL, "power quality: power fail (set by end device)"),
    ("1.4.9", quality.CLOCK_CHANGED, "data collection: clock changed (set by end device)"),
    (
        "2.5.259",
        quality.KNOWN_MISSING_READ,
        "failed reasonability check: known missing read (set by meter data collection system)",
    ),
    (
        "2.6.0",
        quality.FAILED_VALIDATION,
        "failed validation: generic (set by meter data collection system)",
    ),
    (
        "2.7.0",
        quality.MANUALLY_EDITED,
        "edited: manually edited (set by meter data collection system)",
    ),
    ("2.8.0", quality.ESTIMATED, "estimated: generic (set by meter data collection system)"),
    ("2.11.0", quality.DERIVED, "derived: deterministic (set by meter data collection system)"),
]


@pytest.mark.parametrize(("code", "constant", "words"), DOCUMENTED)
def test_documented_codes(code: str, constant: ReadingQualityCode, words: str) -> None:
    parsed = ReadingQualityCode.parse(code)
    assert parsed == constant
    assert parsed.code == code
    assert parsed.is_known
    assert parsed.describe() == words


def test_system_names() -> None:
    assert dict(system_short_names()) == {
        0: "NotApplicable",
        1: "EndDevice",
        2: "MDC",
        3: "MDM",
        4: "Other",
        5: "External",
    }
    assert system_names()[3] == "meter data management system"


def test_validation_subcategories() -> None:
    assert ReadingQualityCode.parse("2.6.4").sub_category_name == "usage below minimum"
    assert ReadingQualityCode.parse("3.6.1").sub_category_name == "zero usage"
    assert {sub for cat, sub in sub_category_names() if cat == 6} == {0, 1, 2, 3, 4, 5, 6, 9, 1001, 1002}


def test_vendor_code_parses_with_generic_description() -> None:
    code = ReadingQualityCode.parse("5.4.260")
    assert not code.is_known
    assert code.system_name == "external system"
    assert code.describe() == (
        "data collection: unlisted or vendor sub-category 260 (set by external system)"
    )
    assert ReadingQualityCode.parse("9.99.1").describe() == (
        "unlisted or vendor category 99.1 (set by unknown system 9)"
    )


def test_with_system_and_build() -> None:
    assert quality.POWER_FAIL.with_system(2).code == "2.2.32"
    assert ReadingQualityCode.build(3, 8, 0).code == "3.8.0"


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("", "is empty"),
        ("1.0", "has 2 dotted fields; 3 are required"),
        ("1.0.0.0", "has 4 dotted fields"),
        ("1.a.0", "part 2 (category): 'a' is not an integer"),
        ("1.0.-3", "part 3 (subCategory): -3 is negative"),
        ("01.0.0", "leading zero"),
        ("1..0", "part 2 (category): '' is empty"),
        ("1.0.0 ", "is not an integer"),
    ],
)
def test_malformed_codes_are_refused(code: str, reason: str) -> None:
    with pytest.raises(CimError) as info:
        ReadingQualityCode.parse(code)
    assert info.value.error is ErrorCode.BAD_QUALITY_CODE
    assert reason in info.value.reason


def test_constructor_refuses_non_ints() -> None:
    with pytest.raises(CimError) as info:
        ReadingQualityCode(1, 0, None)  # type: ignore[arg-type]
    assert info.value.error is ErrorCode.BAD_QUALITY_CODE


PART = st.integers(0, 10**6)


@settings(max_examples=200, deadline=None)
@given(PART, PART, PART)
def test_round_trip(system: int, category: int, sub_category: int) -> None:
    code = f"{system}.{category}.{sub_category}"
    parsed = ReadingQualityCode.parse(code)
    assert parsed.code == code
    assert ReadingQualityCode.build(system, category, sub_category) == parsed
    assert parsed.describe()


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("0123456789.-x "), max_size=20))
def test_arbitrary_text_parses_or_raises_cim_error(text: str) -> None:
    try:
        parsed = ReadingQualityCode.parse(text)
    except CimError as error:
        assert error.error is ErrorCode.BAD_QUALITY_CODE
    else:
        assert parsed.code == text


# --- our table against the CIM4NoUtility reference data (CC BY-SA; only numbers compared) ---

_RD_ENTRY = re.compile(
    r"<cim:IdentifiedObject\.name>([^<]*)</cim:IdentifiedObject\.name>.*?"
    r"category>([^<]*)<.*?subCategory>([^<]*)<",
    re.S,
)
# The RD labels these "Validated", which is the name of 0.1; Annex D's 7.1 is "added" and 8.1
# is not in our table. Not taken from the RD.
_RD_DOUBTFUL = {"3.7.1", "3.8.1"}
_SYSTEM_WORDS = {
    1: "enddevice",
    2: "meteringsystemdatacollectionnetwork",
    3: "meterdatamanagementsystem",
}


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def test_reference_data_codes_agree_with_our_table() -> None:
    if not TELEMARK_RQ.exists():
        pytest.skip(f"fixture {TELEMARK_RQ} not available")
    text = TELEMARK_RQ.read_text(encoding="utf-8")
    entries = _RD_ENTRY.findall(text)
    assert len(entries) == text.count("<cim:ReadingQualityType ")
    systems = dict(re.findall(r"name>(\d+)\.\d+\.\d+<.*?systemId>([^<]*)<", text, re.S))
    checked = 0
    for code, category, sub_category in entries:
        if code in _RD_DOUBTFUL:
            assert ReadingQualityCode.parse(code).describe()
            continue
        parsed = ReadingQualityCode.parse(code)
        assert parsed.is_known, code
        ours = _norm(parsed.sub_category_name or "")
        theirs = _norm(sub_category.replace("–", "-"))
        assert ours in theirs, (code, parsed.sub_category_name, sub_category)
        words = set((parsed.category_name or "").split()) - {"or", "check"}
        assert words and all(word in _norm(category) for word in words), (code, category)
        checked += 1
    for system, label in systems.items():
        assert _SYSTEM_WORDS[int(system)] == _norm(label)
    assert checked == len(entries) - len(_RD_DOUBTFUL)


def test_category_table() -> None:
    assert category_names()[5] == "failed reasonability check"
    assert category_names()[8] == "estimated"
    assert set(category_names()) == set(range(13))
