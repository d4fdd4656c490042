"""Normalisation without a database: units, ReadingTypes, exact scaling, meter time and DST."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mdm.normalise import (
    Ambiguous,
    Refused,
    channel,
    parse_unit,
    resolve_repeated_hour,
    to_utc,
)
from mdm.sqltypes import fits

AMS = "Europe/Amsterdam"
SYDNEY = "Australia/Sydney"


@pytest.mark.parametrize(
    ("symbol", "expected"),
    [
        ("Wh", (72, 0)),
        ("kWh", (72, 3)),
        ("MWh", (72, 6)),
        ("varh", (73, 0)),
        ("kvarh", (73, 3)),
        ("V", (29, 0)),
        ("mA", (5, -3)),
        ("m", (2, 0)),
        ("m³", (42, 0)),
        ("uWh", (72, -6)),
        ("", (0, 0)),
    ],
)
def test_unit_symbols(symbol, expected):
    assert parse_unit(symbol) == expected


def test_unknown_unit():
    with pytest.raises(Refused, match="not a known unit"):
        parse_unit("kWhh")


def test_obis_profile_channel_is_a_kwh_interval_reading_type():
    ch = channel("1-0:1.8.0", 15, None, "Wh", 0)
    assert ch.code == "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
    assert (ch.interval, ch.exponent, ch.step) == (timedelta(minutes=15), -3, 900)
    assert ch.scale(1234) == Decimal("1.234")


def test_native_id_needs_an_explicit_reading_type():
    with pytest.raises(Refused, match="not a mapped OBIS code"):
        channel("register-7", None, None, "Wh", 0)
    ch = channel("register-7", None, "0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0", "Wh", 0)
    assert ch.exponent == -3


def test_explicit_reading_type_must_agree_with_obis_and_interval():
    with pytest.raises(Refused, match="does not match OBIS"):
        channel("1-0:2.8.0", None, "0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0", "Wh", 0)
    with pytest.raises(Refused, match="capture period"):
        channel("x", 60, "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0", "Wh", 0)
    # the same quantity with another multiplier is fine: Wh stored as Wh
    assert channel("1-0:1.8.0", 15, "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.0.72.0", "kWh", 0).exponent == 3


def test_units_of_another_quantity_are_refused():
    with pytest.raises(Refused, match="cannot be converted"):
        channel("1-0:1.8.0", 15, None, "varh", 0)
    with pytest.raises(Refused, match="cannot be converted"):
        channel("1-0:32.7.0", None, None, "A", 0)  # voltage


@given(
    raw=st.integers(-(2**63), 2**63 - 1),
    scaler=st.integers(-12, 6),
    prefix=st.sampled_from(["Wh", "kWh", "MWh"]),
)
def test_scaling_is_exact_or_refused(raw, scaler, prefix):
    ch = channel("1-0:1.8.0", 15, None, prefix, scaler)
    exact = Decimal(raw) * Decimal(10) ** ch.exponent
    problem = ch.fit_problem(raw)
    if problem is None:
        value = ch.scale(raw)
        assert value == exact and fits(value)
    else:
        assert not fits(exact)


# --- time ---------------------------------------------------------------------------------


def test_aware_times_are_instants():
    t = datetime(2024, 6, 1, 12, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    assert to_utc(t, None, AMS) == datetime(2024, 6, 1, 6, 30, tzinfo=UTC)
    assert to_utc(t, False, AMS) == datetime(2024, 6, 1, 6, 30, tzinfo=UTC)  # flag ignored


def test_wall_times_in_the_device_zone():
    assert to_utc(datetime(2024, 1, 15, 12), None, AMS) == datetime(2024, 1, 15, 11, tzinfo=UTC)
    assert to_utc(datetime(2024, 7, 15, 12), True, AMS) == datetime(2024, 7, 15, 10, tzinfo=UTC)


def test_spring_gap_is_refused():
    with pytest.raises(Refused, match="does not exist"):
        to_utc(datetime(2024, 3, 31, 2, 30), None, AMS)
    with pytest.raises(Refused, match="does not exist"):
        to_utc(datetime(2024, 3, 31, 2, 30), True, AMS)


@pytest.mark.parametrize(
    ("zone", "wall", "summer", "winter"),
    [
        (
            AMS,
            datetime(2024, 10, 27, 2, 30),
            datetime(2024, 10, 27, 0, 30, tzinfo=UTC),
            datetime(2024, 10, 27, 1, 30, tzinfo=UTC),
        ),
        # southern hemisphere: the repeated hour is in April
        (
            SYDNEY,
            datetime(2024, 4, 7, 2, 30),
            datetime(2024, 4, 6, 15, 30, tzinfo=UTC),
            datetime(2024, 4, 6, 16, 30, tzinfo=UTC),
        ),
    ],
)
def test_repeated_hour_is_resolved_by_the_dst_flag(zone, wall, summer, winter):
    assert to_utc(wall, True, zone) == summer
    assert to_utc(wall, False, zone) == winter
    with pytest.raises(Ambiguous) as caught:
        to_utc(wall, None, zone)
    assert (caught.value.earlier, caught.value.later) == (summer, winter)


def test_a_dst_flag_that_contradicts_the_zone_is_refused():
    with pytest.raises(Refused, match="contradicts"):
        to_utc(datetime(2024, 1, 15, 12), True, AMS)


def fail(row: int, reason: str) -> Exception:
    return ValueError(row, reason)


def ambiguous(hour: int, minute: int) -> Ambiguous:
    wall = datetime(2024, 10, 27, hour, minute)
    try:
        to_utc(wall, None, AMS)
    except Ambiguous as exc:
        return exc
    raise AssertionError("not ambiguous")


def test_series_order_resolves_both_occurrences():
    rows = [
        (0, datetime(2024, 10, 26, 23, 45, tzinfo=UTC)),
        (1, ambiguous(2, 0)),
        (2, ambiguous(2, 15)),
        (3, ambiguous(2, 0)),
        (4, ambiguous(2, 15)),
        (5, datetime(2024, 10, 27, 1, 30, tzinfo=UTC)),
    ]
    assert resolve_repeated_hour(rows, fail) == {
        1: datetime(2024, 10, 27, 0, 0, tzinfo=UTC),
        2: datetime(2024, 10, 27, 0, 15, tzinfo=UTC),
        3: datetime(2024, 10, 27, 1, 0, tzinfo=UTC),
        4: datetime(2024, 10, 27, 1, 15, tzinfo=UTC),
    }


def test_series_order_refuses_one_occurrence_or_disorder():
    with pytest.raises(ValueError, match="occurs once") as caught:
        resolve_repeated_hour([(7, ambiguous(2, 0))], fail)
    assert caught.value.args[0] == 7
    sorted_by_wall = [
        (0, ambiguous(2, 0)),
        (1, ambiguous(2, 0)),
        (2, ambiguous(2, 15)),
        (3, ambiguous(2, 15)),
    ]
    with pytest.raises(ValueError, match="chronological") as caught:
        resolve_repeated_hour(sorted_by_wall, fail)
    assert caught.value.args[0] == 2
    with pytest.raises(ValueError, match="3 times"):
        resolve_repeated_hour([(0, ambiguous(2, 0))] * 3, fail)
