"""ReadingType codec: examples, round trips, refusals, and cross-checks with the fixtures."""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cim.codelists import load_rows
from cim.codelists.readingtype import (
    FIELDS,
    TABLE_FILES,
    ReadingType,
    RefKind,
    classify_reading_type_ref,
    field_names,
)
from cim.errors import CimError, ErrorCode

FIXTURES = Path(os.environ.get("OPENHES_CIM_FIXTURES", "/work/shared/cim-fixtures"))
CODELISTS = FIXTURES / "_derived" / "codelists"
TELEMARK_RT = FIXTURES / "cim4noutility/Telemark-120/Asset/CIMXML/Telemark-120-ReadingType_RD.xml"

ATTRS = [attr for attr, _ in FIELDS]


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"fixture {path} not available")
    return path


# --- examples from the research notes (cim-standards.md 4.1) --------------------------------

EXAMPLES = {
    "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0": "15-minute delta forward active energy, kWh",
    "0.0.2.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0": "15-minute bulk forward active energy, kWh",
    "0.0.7.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0": "60-minute delta forward active energy, kWh",
    "11.0.0.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0": "daily delta forward active energy, kWh",
    "8.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0": "billing period bulk forward active energy, kWh",
    "0.0.0.1.19.1.12.0.0.0.0.0.0.0.0.3.72.0": "bulk reverse active energy, kWh",
    "0.0.0.9.1.1.12.0.0.0.0.1.0.0.0.0.72.0": "summation forward active energy, tariff 1, Wh",
    "0.0.0.6.0.1.54.0.0.0.0.0.0.0.128.0.29.0": "indicating rms voltage, phase A, V",
    "0.0.0.6.0.1.4.0.0.0.0.0.0.0.128.0.5.0": "indicating current, phase A, A",
    "13.8.0.6.1.1.8.0.0.0.0.1.0.0.0.0.38.0": (
        "monthly maximum indicating forward active demand, tariff 1, W"
    ),
    "0.0.2.9.1.2.12.0.0.0.0.0.0.0.0.3.72.0": (
        "15-minute summation forward primary-metered active energy, kWh"
    ),
}


@pytest.mark.parametrize(("code", "words"), EXAMPLES.items())
def test_documented_examples_decode(code: str, words: str) -> None:
    rt = ReadingType.parse(code)
    assert rt.describe() == words
    assert rt.code == code


def test_example_fields_in_detail() -> None:
    rt = ReadingType.parse("0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0")
    assert (rt.measuring_period, rt.accumulation, rt.flow_direction) == (2, 4, 1)
    assert (rt.commodity, rt.measurement_kind, rt.multiplier, rt.unit) == (1, 12, 3, 72)
    assert rt.unit_symbol == "kWh"
    assert rt.interval_seconds == 900
    demand = ReadingType.parse("13.8.0.6.1.1.8.0.0.0.0.1.0.0.0.0.38.0")
    assert (demand.macro_period, demand.aggregate, demand.tou) == (13, 8, 1)
    assert demand.interval_seconds is None


@pytest.mark.parametrize(
    ("fields", "symbol"),
    [
        ({"unit": 72, "multiplier": 3}, "kWh"),
        ({"unit": 29}, "V"),
        ({"unit": 5}, "A"),
        ({"unit": 38}, "W"),
        ({"unit": 63}, "var"),
        ({"unit": 73, "multiplier": 3}, "kvarh"),
        ({"unit": 33}, "Hz"),
        ({"unit": 38, "multiplier": 6}, "MW"),
        ({"unit": 5, "multiplier": -3}, "mA"),
        ({"unit": 151, "multiplier": -2}, "%"),
        ({}, ""),
    ],
)
def test_unit_symbol(fields: dict[str, int], symbol: str) -> None:
    assert ReadingType.build(**fields).unit_symbol == symbol


@pytest.mark.parametrize(
    ("measuring_period", "seconds"),
    [(0, None), (2, 900), (7, 3600), (3, 60), (4, 86400), (53, 900), (59, None), (15, None)],
)
def test_interval_seconds(measuring_period: int, seconds: int | None) -> None:
    assert ReadingType.build(measuring_period=measuring_period).interval_seconds == seconds


def test_describe_mentions_every_set_qualifier() -> None:
    rt = ReadingType.build(
        macro_period=11,
        aggregate=8,
        measuring_period=2,
        accumulation=4,
        flow_direction=19,
        commodity=1,
        measurement_kind=12,
        interharmonic_numerator=3,
        interharmonic_denominator=1,
        tou=2,
        cpp=1,
        consumption_tier=3,
        phases=224,
        multiplier=3,
        unit=72,
        currency=978,
    )
    assert rt.describe() == (
        "daily maximum 15-minute delta reverse active energy, harmonic 3, tariff 2, "
        "critical peak 1, tier 3, phases ABC, kWh, currency 978"
    )
    assert ReadingType().describe() == "unspecified"


def test_build_and_replace() -> None:
    rt = ReadingType.build(measurement_kind=12, unit=72)
    assert rt.code == "0.0.0.0.0.0.12.0.0.0.0.0.0.0.0.0.72.0"
    assert rt.replace(multiplier=3).unit_symbol == "kWh"
    with pytest.raises(CimError) as info:
        ReadingType.build(measurment_kind=12)
    assert info.value.error is ErrorCode.BAD_READING_TYPE
    with pytest.raises(CimError):
        rt.replace(unit=999999)


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("", "ReadingType code is empty"),
        ("0.0.0", "has 3 dotted fields; 18 are required"),
        ("0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0.0", "has 19 dotted fields"),
        (
            "0.0.2.4.1.1.999.0.0.0.0.0.0.0.0.3.72.0",
            "field 7 (measurementKind): 999 is not a known code",
        ),
        ("0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.-1", "field 18 (currency): -1 is negative"),
        ("0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.1000", "field 18 (currency): 1000 is not an ISO"),
        ("0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.4.72.0", "field 16 (multiplier): 4 is not a known code"),
        ("0.0.2.4.1.1.12.0.0.0.0.-1.0.0.0.3.72.0", "field 12 (tou): -1 is negative"),
        ("0.0.2.4.1.1.12.0.0.0.0.x.0.0.0.3.72.0", "field 12 (tou): 'x' is not an integer"),
        ("0.0.2.4.1.1.12.0.0.0.0..0.0.0.3.72.0", "field 12 (tou): '' is empty"),
        ("0.0.02.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0", "leading zero"),
        ("0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.-0.72.0", "field 16 (multiplier): '-0'"),
        (" 0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0", "field 1 (macroPeriod): ' 0' is not an integer"),
        ("0.0.2.4.1.1.12.0.0.0.0.1234567890.0.0.0.3.72.0", "too long"),
        ("0.0.2.4.1.1.12.0.0.0.0.٣.0.0.0.3.72.0", "is not an integer"),
    ],
)
def test_invalid_codes_are_refused_precisely(code: str, reason: str) -> None:
    with pytest.raises(CimError) as info:
        ReadingType.parse(code)
    assert info.value.error is ErrorCode.BAD_READING_TYPE
    assert reason in info.value.reason


@pytest.mark.parametrize("value", [None, 7, b"0.0", ["0"]])
def test_non_string_is_refused(value: object) -> None:
    with pytest.raises(CimError) as info:
        ReadingType.parse(value)  # type: ignore[arg-type]
    assert info.value.error is ErrorCode.BAD_READING_TYPE


@pytest.mark.parametrize("value", [True, 1.0, "1", None])
def test_non_int_field_is_refused(value: object) -> None:
    with pytest.raises(CimError) as info:
        ReadingType.build(tou=value)  # type: ignore[arg-type]
    assert "field 12 (tou)" in info.value.reason


# --- property tests --------------------------------------------------------------------------


def _field_strategy(attr: str) -> st.SearchStrategy[int]:
    if attr in TABLE_FILES:
        return st.sampled_from(sorted(field_names(attr)))
    if attr == "currency":
        return st.integers(0, 999)
    return st.integers(0, 10**6)


VALID_FIELDS = st.fixed_dictionaries({attr: _field_strategy(attr) for attr in ATTRS})


@settings(max_examples=150, deadline=None)
@given(VALID_FIELDS)
def test_parse_build_round_trip(fields: dict[str, int]) -> None:
    code = ".".join(str(fields[attr]) for attr in ATTRS)
    rt = ReadingType.parse(code)
    assert rt.code == code
    assert rt.as_dict() == fields
    assert ReadingType.build(**fields) == rt
    assert ReadingType.parse(ReadingType.build(**fields).code).as_dict() == fields
    assert rt.describe()


@settings(max_examples=150, deadline=None)
@given(VALID_FIELDS, st.integers(0, 17), st.sampled_from(["neg", "unknown", "junk", "empty"]))
def test_broken_field_always_raises_cim_error(fields: dict[str, int], index: int, how: str) -> None:
    attr = ATTRS[index]
    parts = [str(fields[a]) for a in ATTRS]
    if how == "neg":
        if attr == "multiplier":
            parts[index] = "-5"  # not a power of ten in the table
        else:
            parts[index] = "-1"
    elif how == "unknown":
        if attr not in TABLE_FILES and attr != "currency":
            return  # plain integers: any non-negative value is valid
        parts[index] = "123456"
    elif how == "junk":
        parts[index] = "1a"
    else:
        parts[index] = ""
    with pytest.raises(CimError) as info:
        ReadingType.parse(".".join(parts))
    assert info.value.error is ErrorCode.BAD_READING_TYPE
    assert f"field {index + 1} ({FIELDS[index][1]})" in info.value.reason


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("0123456789.-x ١"), max_size=60))
def test_arbitrary_text_parses_or_raises_cim_error(text: str) -> None:
    try:
        rt = ReadingType.parse(text)
    except CimError as error:
        assert error.error is ErrorCode.BAD_READING_TYPE
    else:
        assert rt.code == text


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 300), min_size=0, max_size=30).filter(lambda xs: len(xs) != 18))
def test_wrong_field_count_raises(numbers: list[int]) -> None:
    with pytest.raises(CimError) as info:
        ReadingType.parse(".".join(map(str, numbers)))
    assert info.value.error is ErrorCode.BAD_READING_TYPE


# --- tolerant classification ----------------------------------------------------------------


def test_classify_full_code() -> None:
    ref = classify_reading_type_ref("0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0")
    assert ref.kind is RefKind.READING_TYPE
    assert ref.reading_type is not None and ref.reading_type.unit_symbol == "kWh"
    assert ref.warning is None


@pytest.mark.parametrize("code", ["3.0.129.160", " 3.0.129.160\n", "0.0.0.0", "03.0.129.160"])
def test_classify_four_part_vendor_code(code: str) -> None:
    ref = classify_reading_type_ref(code)
    assert ref.kind is RefKind.VENDOR_CODE
    assert ref.ref == code.strip()
    assert ref.reading_type is None
    assert ref.warning and "vendor code" in ref.warning


@pytest.mark.parametrize(
    "code",
    [
        "",
        "3.0.129",
        "3.0.129.x",
        "3.0.-1.160",
        "1.2.3.4.5",
        "0.0.2.4.1.1.999.0.0.0.0.0.0.0.0.3.72.0",
        None,
    ],
)
def test_classify_refuses_other_shapes(code: object) -> None:
    with pytest.raises(CimError) as info:
        classify_reading_type_ref(code)  # type: ignore[arg-type]
    assert info.value.error is ErrorCode.BAD_READING_TYPE


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from("0123456789.- x"), max_size=50))
def test_classify_never_raises_anything_but_cim_error(text: str) -> None:
    try:
        ref = classify_reading_type_ref(text)
    except CimError as error:
        assert error.error is ErrorCode.BAD_READING_TYPE
    else:
        assert (ref.reading_type is None) == (ref.kind is RefKind.VENDOR_CODE)


# --- data files -----------------------------------------------------------------------------


def test_tables_load_once_from_package_data() -> None:
    assert load_rows("rt_unit.csv") is load_rows("rt_unit.csv")
    assert field_names("unit")[72] == "watt hours"
    assert field_names("measurement_kind")[12] == "energy"
    assert field_names("measurement_kind")[54] == "rms voltage"


_STOP = {"of", "to", "up", "per", "and", "the", "with", "a", "by"}
_FIXTURE_TABLE = {
    "macro_period": "MacroPeriod",
    "aggregate": "Aggregate",
    "measuring_period": "TimeAttribute",
    "accumulation": "Accumulation",
    "flow_direction": "FlowDirection",
    "commodity": "Commodity",
    "measurement_kind": "MeasurementKind",
    "phases": "Phase",
    "multiplier": "MetricMultiplier",
    "unit": "ReadingTypeUnit",
}
# Reviewed differences between our wording and the fixture label (same meaning).
_SAME_MEANING = {
    ("TimeAttribute", 76): "fixture label repeats code 75's; its constant is ROLLING10_1",
    ("Commodity", 5): "insulating = insulative",
    ("Commodity", 6): "insulating = insulative",
    ("Commodity", 23): "British spelling of licence",
    ("Commodity", 25): "refuse = trash",
    ("Commodity", 33): "CO2 = carbon dioxide",
    ("MeasurementKind", 109): "manufacturer-assigned = manufacturing assigned",
    ("MeasurementKind", 110): "manufacturer-assigned physical serial number, shortened",
    ("MeasurementKind", 111): "manufacturer-assigned = manufacturing assigned",
    ("MeasurementKind", 112): "manufacturer-assigned = manufacturing assigned",
    ("MeasurementKind", 117): "signal-to-noise ratio = signal noise ratio",
    ("Phase", 17): "N-G = PHASENTOGND, neutral to ground",
    ("Phase", 6369): "HL = high-leg",
    ("ReadingTypeUnit", 145): "mole = mol",
    ("ReadingTypeUnit", 146): "mole = mol",
    ("ReadingTypeUnit", 147): "mole per kilogram = mol per kg",
    ("ReadingTypeUnit", 150): "fixture typo 'Herz'",
    ("ReadingTypeUnit", 216): "fixture typo 'Angstrem'",
    ("ReadingTypeUnit", 221): "fixture typo 'Rentgen'",
    ("ReadingTypeUnit", 243): "fixture typo 'fluid once'",
    ("ReadingTypeUnit", 207): "fixture typo 'Namtural time'",
}


def _words(text: str) -> set[str]:
    text = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", text)
    words = {w.removesuffix("s") for w in re.split(r"[^a-z0-9µ%.+]+", text.lower()) if w}
    return {w.strip(".-") for w in words if w.strip(".-") and w not in _STOP}


def same_meaning(ours: str, theirs: str) -> bool:
    theirs = theirs.replace("\\u00B5", "µ").replace("\\u00b5", "µ")
    a, b = (re.sub(r"[^a-z0-9µ%+]", "", s.lower()) for s in (ours, theirs))
    if a == b or (len(a) > 2 and (a in b or b in a)):
        return True
    if re.findall(r"\d+", ours) != re.findall(r"\d+", theirs):
        return False
    wa, wb = _words(ours), _words(theirs)
    return bool(wa) and (wa <= wb or wb <= wa)


def _fixture_labels(table: str) -> dict[int, list[str]]:
    labels: dict[int, list[str]] = {}
    with need(CODELISTS / f"{table}.csv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if not row["connexo_enum_constant"].startswith("ELSTER_DEFINED"):
                labels.setdefault(int(row["code"]), []).append(row["label"])
    return labels


@pytest.mark.parametrize("attr", sorted(_FIXTURE_TABLE))
def test_our_tables_agree_with_fixture_numbers(attr: str) -> None:
    table = _FIXTURE_TABLE[attr]
    fixture = _fixture_labels(table)
    ours = {int(row["code"]): row for row in load_rows(TABLE_FILES[attr])}
    assert set(ours) == set(fixture)
    for code, row in ours.items():
        if code == 0 or (table, code) in _SAME_MEANING:
            continue
        names = [row[key] for key in ("name", "short", "prefix") if key in row]
        if table == "Phase":  # fixture labels are PHASE<short>
            names.append("phase" + row["short"])
        assert any(same_meaning(n, label) for n in names for label in fixture[code]), (
            table,
            code,
            names,
            fixture[code],
        )


def test_meaning_check_catches_swaps() -> None:
    assert not same_meaning("maximum", "Minimum")
    assert not same_meaning("Q1", "Q2")
    assert not same_meaning("15-minute", "10-minutes")
    assert same_meaning("15-minute", "15-minutes")


# --- the CIM4NoUtility catalogue --------------------------------------------------------------

_RD_ENTRY = re.compile(
    r"<cim:IdentifiedObject\.description>([^<]*)</cim:IdentifiedObject\.description>\s*"
    r"<skos:exactMatch[^>]*/>\s*<cim:IdentifiedObject\.name>([^<]*)<"
)
_RD_UNIT_SPELLING = {"cosθ": "cos φ"}


def _telemark_codes() -> list[tuple[str, str]]:
    return _RD_ENTRY.findall(need(TELEMARK_RT).read_text(encoding="utf-8"))


def test_every_telemark_reading_type_parses() -> None:
    entries = _telemark_codes()
    assert len(entries) == 185
    for _, code in entries:
        assert ReadingType.parse(code).code == code


def test_telemark_units_match_our_symbols() -> None:
    for description, code in _telemark_codes():
        unit = re.search(r"\(([^)]*)\)\s*$", description)
        assert unit is not None, description
        theirs = unit.group(1)
        ours = ReadingType.parse(code).unit_symbol
        if theirs == "hPa":  # pressure, multiplier 2 on pascal
            assert ours == "hPa"
            continue
        assert ours.lower() == _RD_UNIT_SPELLING.get(theirs.lower(), theirs).lower(), (
            code,
            theirs,
            ours,
        )
