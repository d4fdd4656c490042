"""OBIS codes and the OBIS <-> ReadingType mapping."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cim.codelists.obis import (
    ObisChannel,
    ObisCode,
    describe_obis,
    is_cumulative_register,
    mapping_table_markdown,
    obis_to_reading_type,
    reading_type_to_obis,
    supported_obis,
)
from cim.codelists.readingtype import ReadingType
from cim.errors import CimError, ErrorCode

DOC = Path(__file__).resolve().parents[1] / "docs" / "obis-readingtype.md"

# --- OBIS syntax ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["1-0:1.8.0", "1-0:1.8.0*255", "1-0:1.8.0.255", "1.0.1.8.0.255", "1.0.1.8.0"]
)
def test_parse_forms(text: str) -> None:
    assert ObisCode.parse(text) == ObisCode(1, 0, 1, 8, 0, 255)


def test_format_forms() -> None:
    code = ObisCode(1, 0, 32, 7, 0)
    assert (code.iec, code.short, code.dotted, str(code)) == (
        "1-0:32.7.0*255",
        "1-0:32.7.0",
        "1.0.32.7.0.255",
        "1-0:32.7.0",
    )
    assert ObisCode(1, 0, 1, 8, 0, 101).short == "1-0:1.8.0*101"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1-0:1.8",
        "1-0:1.8.0*",
        "1-0:256.8.0",
        "1.0.1.8",
        "a-b:c.d.e",
        "1-0:1.8.0*2550",
        " 1-0:1.8.0",
        "1.0.1.8.0.255.1",
        "1-0:1.8.٠",
    ],
)
def test_parse_refuses_malformed(text: str) -> None:
    with pytest.raises(CimError) as info:
        ObisCode.parse(text)
    assert info.value.error is ErrorCode.BAD_READING_TYPE


@settings(max_examples=150, deadline=None)
@given(st.tuples(*(st.integers(0, 255) for _ in range(6))))
def test_obis_text_round_trip(groups: tuple[int, ...]) -> None:
    code = ObisCode(*groups)
    assert ObisCode.parse(code.iec) == code
    assert ObisCode.parse(code.dotted) == code
    assert ObisCode.parse(code.short) == code


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from("0123456789.-:*& x"), max_size=25))
def test_arbitrary_text_parses_or_raises_cim_error(text: str) -> None:
    try:
        ObisCode.parse(text)
    except CimError as error:
        assert error.error is ErrorCode.BAD_READING_TYPE


# --- mapping -------------------------------------------------------------------------------

PAIRS = {
    ("1-0:1.8.0", None): "0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0",
    ("1-0:1.8.1", None): "0.0.0.1.1.1.12.0.0.0.0.1.0.0.0.3.72.0",
    ("1-0:1.8.8", None): "0.0.0.1.1.1.12.0.0.0.0.8.0.0.0.3.72.0",
    ("1-0:2.8.0", None): "0.0.0.1.19.1.12.0.0.0.0.0.0.0.0.3.72.0",
    ("1-0:2.8.2", None): "0.0.0.1.19.1.12.0.0.0.0.2.0.0.0.3.72.0",
    ("1-0:3.8.0", None): "0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.73.0",
    ("1-0:4.8.0", None): "0.0.0.1.19.1.12.0.0.0.0.0.0.0.0.3.73.0",
    ("1-0:5.8.0", None): "0.0.0.1.15.1.12.0.0.0.0.0.0.0.0.3.73.0",
    ("1-0:8.8.0", None): "0.0.0.1.18.1.12.0.0.0.0.0.0.0.0.3.73.0",
    ("1-0:1.4.0", None): "0.2.0.6.1.1.8.0.0.0.0.0.0.0.0.3.38.0",
    ("1-0:4.4.0", None): "0.2.0.6.19.1.8.0.0.0.0.0.0.0.0.3.63.0",
    ("1-0:1.6.0", None): "8.8.0.6.1.1.8.0.0.0.0.0.0.0.0.3.38.0",
    ("1-0:2.6.1", None): "8.8.0.6.19.1.8.0.0.0.0.1.0.0.0.3.38.0",
    ("1-0:1.7.0", None): "0.0.0.6.1.1.37.0.0.0.0.0.0.0.0.3.38.0",
    ("1-0:2.7.0", None): "0.0.0.6.19.1.37.0.0.0.0.0.0.0.0.3.38.0",
    ("1-0:3.7.0", None): "0.0.0.6.1.1.37.0.0.0.0.0.0.0.0.3.63.0",
    ("1-0:4.7.0", None): "0.0.0.6.19.1.37.0.0.0.0.0.0.0.0.3.63.0",
    ("1-0:9.7.0", None): "0.0.0.6.1.1.37.0.0.0.0.0.0.0.0.3.61.0",
    ("1-0:16.7.0", None): "0.0.0.6.4.1.37.0.0.0.0.0.0.0.0.3.38.0",
    ("1-0:32.7.0", None): "0.0.0.6.0.1.54.0.0.0.0.0.0.0.129.0.29.0",
    ("1-0:52.7.0", None): "0.0.0.6.0.1.54.0.0.0.0.0.0.0.65.0.29.0",
    ("1-0:72.7.0", None): "0.0.0.6.0.1.54.0.0.0.0.0.0.0.33.0.29.0",
    ("1-0:31.7.0", None): "0.0.0.6.0.1.4.0.0.0.0.0.0.0.128.0.5.0",
    ("1-0:51.7.0", None): "0.0.0.6.0.1.4.0.0.0.0.0.0.0.64.0.5.0",
    ("1-0:71.7.0", None): "0.0.0.6.0.1.4.0.0.0.0.0.0.0.32.0.5.0",
    ("1-0:91.7.0", None): "0.0.0.6.0.1.4.0.0.0.0.0.0.0.16.0.5.0",
    ("1-0:14.7.0", None): "0.0.0.6.0.1.15.0.0.0.0.0.0.0.0.0.33.0",
    ("1-0:13.7.0", None): "0.0.0.6.0.1.38.0.0.0.0.0.0.0.0.0.65.0",
    ("1-0:33.7.0", None): "0.0.0.6.0.1.38.0.0.0.0.0.0.0.128.0.65.0",
    ("1-0:53.7.0", None): "0.0.0.6.0.1.38.0.0.0.0.0.0.0.64.0.65.0",
    ("1-0:73.7.0", None): "0.0.0.6.0.1.38.0.0.0.0.0.0.0.32.0.65.0",
    ("1-0:1.8.0", 15): "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0",
    ("1-0:2.8.0", 15): "0.0.2.4.19.1.12.0.0.0.0.0.0.0.0.3.72.0",
    ("1-0:3.8.0", 15): "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.73.0",
    ("1-0:4.8.0", 15): "0.0.2.4.19.1.12.0.0.0.0.0.0.0.0.3.73.0",
    ("1-0:1.8.0", 60): "0.0.7.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0",
    ("1-0:4.8.0", 60): "0.0.7.4.19.1.12.0.0.0.0.0.0.0.0.3.73.0",
}


@pytest.mark.parametrize(("key", "code"), PAIRS.items())
def test_required_pairs_both_ways(key: tuple[str, int | None], code: str) -> None:
    obis, minutes = key
    rt = obis_to_reading_type(obis, interval_minutes=minutes)
    assert rt.code == code
    assert reading_type_to_obis(code) == ObisChannel(ObisCode.parse(obis), minutes)


def test_agrees_with_published_vendor_pairs_except_voltage_kind() -> None:
    # Connexo's ReadingTypeFactoryTest pairs (research notes 4.4), ours where they agree.
    assert obis_to_reading_type("1.0.1.8.0.255").code == "0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
    assert obis_to_reading_type("1.0.3.8.0.255").code == "0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.73.0"
    assert obis_to_reading_type("1.0.31.7.0.255").code == "0.0.0.6.0.1.4.0.0.0.0.0.0.0.128.0.5.0"
    assert obis_to_reading_type("1.0.4.4.0.255").code == "0.2.0.6.19.1.8.0.0.0.0.0.0.0.0.3.63.0"
    # Connexo uses measurementKind 158 for voltage; we use 54 (rms voltage).
    connexo = ReadingType.parse("0.0.0.6.0.1.158.0.0.0.0.0.0.0.129.0.29.0")
    assert obis_to_reading_type("1.0.32.7.0.255") == connexo.replace(measurement_kind=54)


def test_wh_option() -> None:
    assert obis_to_reading_type("1-0:1.8.0", kilo=False).unit_symbol == "Wh"
    assert obis_to_reading_type("1-0:1.7.0", kilo=False).unit_symbol == "W"
    assert obis_to_reading_type("1-0:32.7.0", kilo=False).unit_symbol == "V"
    wh = "0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.0.72.0"
    assert reading_type_to_obis(wh).obis == ObisCode.parse("1-0:1.8.0")


def test_every_supported_entry_round_trips() -> None:
    count = 0
    for obis in supported_obis(max_tariff=8):
        for minutes in (None, 1, 5, 15, 30, 60, 1440):
            for kilo in (True, False):
                rt = obis_to_reading_type(obis, interval_minutes=minutes, kilo=kilo)
                assert reading_type_to_obis(rt) == ObisChannel(obis, minutes), (obis, minutes)
                assert reading_type_to_obis(rt.code) == ObisChannel(obis, minutes)
                count += 1
        assert describe_obis(obis)
    assert count > 1000
    assert len(list(supported_obis())) > len(list(supported_obis(max_tariff=8)))


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(list(supported_obis())), st.sampled_from([None, 2, 10, 15, 60, 120]))
def test_any_supported_entry_round_trips(obis: ObisCode, minutes: int | None) -> None:
    rt = obis_to_reading_type(obis, interval_minutes=minutes)
    assert reading_type_to_obis(rt) == ObisChannel(obis, minutes)


@pytest.mark.parametrize(
    ("obis", "minutes", "delta", "total"),
    [
        (
            "1-0:1.8.0",
            15,
            "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0",
            "0.0.2.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0",
        ),
        (
            "1-0:2.8.0",
            60,
            "0.0.7.4.19.1.12.0.0.0.0.0.0.0.0.3.72.0",
            "0.0.7.1.19.1.12.0.0.0.0.0.0.0.0.3.72.0",
        ),
    ],
)
def test_a_profile_channel_of_an_energy_register_has_a_delta_and_a_total(
    obis: str, minutes: int, delta: str, total: str
) -> None:
    assert obis_to_reading_type(obis, interval_minutes=minutes).code == delta
    assert obis_to_reading_type(obis, interval_minutes=minutes, cumulative=True).code == total
    code = ObisCode.parse(obis)
    assert reading_type_to_obis(delta) == ObisChannel(code, minutes)
    assert reading_type_to_obis(total) == ObisChannel(code, minutes, cumulative=True)
    # a register read directly is cumulative already; the flag changes nothing there
    assert obis_to_reading_type(obis, cumulative=True) == obis_to_reading_type(obis)
    assert is_cumulative_register(obis)


def test_every_energy_register_round_trips_as_captured_totals() -> None:
    count = 0
    for obis in supported_obis(max_tariff=2):
        if not is_cumulative_register(obis):
            with pytest.raises(CimError, match="not cumulative"):
                obis_to_reading_type(obis, interval_minutes=15, cumulative=True)
            continue
        for minutes in (5, 15, 60):
            for kilo in (True, False):
                rt = obis_to_reading_type(
                    obis, interval_minutes=minutes, kilo=kilo, cumulative=True
                )
                assert rt.accumulation == 1 and rt.interval_seconds == minutes * 60
                assert reading_type_to_obis(rt) == ObisChannel(obis, minutes, cumulative=True)
                count += 1
    assert count > 100


@pytest.mark.parametrize(
    "code", ["1-0:1.7.0", "1-0:1.6.0", "1-0:1.4.0", "1-0:1.29.0", "0.0.96.10.1.255:3", "x"]
)
def test_only_energy_registers_are_cumulative(code: str) -> None:
    assert not is_cumulative_register(code)


def test_supported_set_covers_the_brief() -> None:
    supported = {obis.short for obis in supported_obis(max_tariff=8)}
    wanted = [f"1-0:{c}.8.{t}" for c in (1, 2) for t in range(9)]
    wanted += [f"1-0:{c}.8.0" for c in range(3, 9)]
    wanted += ["1-0:1.4.0", "1-0:1.6.0", "1-0:2.4.0", "1-0:2.6.0"]
    wanted += [
        f"1-0:{c}.7.0" for c in (1, 2, 3, 4, 9, 16, 32, 52, 72, 31, 51, 71, 91, 14, 13, 33, 53, 73)
    ]
    assert set(wanted) <= supported


@pytest.mark.parametrize(
    ("obis", "minutes", "reason"),
    [
        ("7-0:3.0.0", None, "medium A=7 is not mapped"),
        ("1-1:1.8.0", None, "channel B=1 is not mapped"),
        ("1-0:1.8.0*101", None, "historical value F=101 is not mapped"),
        ("1-0:99.1.0", None, "quantity C=99 is not mapped"),
        ("1-0:1.5.0", None, "processing D=5 is not mapped"),
        ("1-0:32.8.0", None, "register (time integral 1) (D=8) is not mapped for voltage L1"),
        ("1-0:1.7.1", None, "E=1 is not mapped for instantaneous value (only 0)"),
        ("1-0:1.8.64", None, "E=64 is not mapped"),
        ("1-0:12.7.0", None, "quantity C=12 is not mapped"),
        ("1-0:1.8.0", 7, "interval_minutes: 7 is not a ReadingType measuring period"),
        ("1-0:1.8.0", 0, "interval_minutes: 0"),
        ("1-0:1.8.0", -15, "interval_minutes: -15"),
    ],
)
def test_unsupported_obis_is_refused(obis: str, minutes: int | None, reason: str) -> None:
    with pytest.raises(CimError) as info:
        obis_to_reading_type(obis, interval_minutes=minutes)
    assert info.value.error is ErrorCode.BAD_READING_TYPE
    assert reason in info.value.reason


@pytest.mark.parametrize(
    "code",
    [
        "0.0.0.6.0.1.158.0.0.0.0.0.0.0.129.0.29.0",  # Connexo's voltage kind
        "0.0.2.1.1.1.8.0.0.0.0.0.0.0.0.3.38.0",  # 15-minute bulk demand: not a register
        "0.0.53.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0",  # fixed block, not an interval
        "0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.6.72.0",  # MWh
        "0.0.0.6.0.1.54.0.0.0.0.0.0.0.129.3.29.0",  # kV
        "0.0.0.1.1.7.12.0.0.0.0.0.0.0.0.3.72.0",  # natural gas
    ],
)
def test_reading_types_without_obis_are_refused(code: str) -> None:
    with pytest.raises(CimError) as info:
        reading_type_to_obis(code)
    assert info.value.error is ErrorCode.BAD_READING_TYPE
    assert "has no OBIS equivalent" in info.value.reason or "measuring period" in info.value.reason


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
)
def test_any_obis_maps_or_raises_cim_error(a: int, b: int, c: int, d: int, e: int, f: int) -> None:
    obis = ObisCode(a, b, c, d, e, f)
    try:
        rt = obis_to_reading_type(obis)
    except CimError as error:
        assert error.error is ErrorCode.BAD_READING_TYPE
    else:
        assert reading_type_to_obis(rt) == ObisChannel(obis)


def test_doc_table_is_generated() -> None:
    text = DOC.read_text(encoding="utf-8")
    match = re.search(
        r"<!-- BEGIN GENERATED: cim\.codelists\.obis\.mapping_table_markdown\(\) -->\n"
        r"(.*)\n<!-- END GENERATED -->",
        text,
        re.S,
    )
    assert match is not None, "generated section markers missing in docs/obis-readingtype.md"
    assert match.group(1) == mapping_table_markdown(), (
        "docs/obis-readingtype.md is stale; regenerate the table with "
        "cim.codelists.obis.mapping_table_markdown()"
    )
