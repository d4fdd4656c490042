"""Interval consumption from the cumulative captures of a load profile: the pure rule
(headend.profile_deltas), wall-clock profiles across DST days (headend.results.raw_values),
the read window (headend.jobs.first_capture), resets and the stored capture before a window
(headend.results.complete_task)."""

from __future__ import annotations

import asyncio
import itertools
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from headend_samples import register
from sqlalchemy import select

from cim.codelists.obis import obis_to_reading_type
from drivers.base import ConnectionParams, ProfileRow, RegisterValue
from drivers.fake import FakeDriver
from headend import commands, jobstore
from headend.jobs import CommandOperation, first_capture
from headend.jobstore import TaskSpec
from headend.profile_deltas import Capture, Reset, difference, interval_deltas
from headend.results import QUALITY_RESET, complete_task, delta_source_id, raw_values
from mdm.devices import device_ids
from mdm.readings import read
from mdm.schema import raw_values as raw_values_table

pytest_plugins = ["mdm_conftest"]

ENERGY = "1.0.1.8.0.255"
STEP = timedelta(minutes=15)
DAY0 = datetime(2026, 1, 10, tzinfo=UTC)
DELTA = obis_to_reading_type(ENERGY, interval_minutes=15).code
TOTAL = obis_to_reading_type(ENERGY, interval_minutes=15, cumulative=True).code


def day_captures(start: datetime, count: int, seed: int = 1) -> list[Capture]:
    rng = random.Random(seed)
    total = 7_681_722  # Wh
    out = []
    for i in range(count):
        out.append(Capture(start + i * STEP, total, 0, "Wh", 0))
        total += rng.randrange(0, 900)
    return out


# --- the rule ---------------------------------------------------------------------------------


def test_a_day_of_97_captures_gives_96_end_stamped_deltas_summing_exactly() -> None:
    captures = day_captures(DAY0, 97)
    deltas, resets = interval_deltas(captures, STEP)
    assert resets == [] and len(deltas) == 96
    assert [d.end for d in deltas] == [DAY0 + i * STEP for i in range(1, 97)]
    assert deltas[0].value == captures[1].value - captures[0].value
    assert sum(d.value for d in deltas) == captures[-1].value - captures[0].value
    assert all(d.unit == "Wh" and d.raw >= 0 for d in deltas)
    # the order the captures come in does not matter
    assert interval_deltas(reversed(captures), STEP) == (deltas, [])


def test_a_missing_capture_leaves_the_intervals_it_closes_absent() -> None:
    captures = day_captures(DAY0, 97)
    lost = DAY0 + timedelta(hours=10, minutes=15)
    kept = [c for c in captures if c.at != lost]
    deltas, resets = interval_deltas(kept, STEP)
    ends = {d.end for d in deltas}
    assert resets == [] and len(deltas) == 94
    assert lost not in ends and lost + STEP not in ends  # never one value over two intervals
    assert lost - STEP in ends and lost + 2 * STEP in ends


def test_a_reset_is_reported_and_not_stored_as_consumption() -> None:
    captures = day_captures(DAY0, 8)
    replaced = DAY0 + 5 * STEP
    captures = [
        c if c.at < replaced else Capture(c.at, 10 + (c.at - replaced) // STEP, 0, "Wh", 0)
        for c in captures
    ]
    deltas, resets = interval_deltas(captures, STEP)
    assert resets == [Reset(replaced, captures[4].value, Decimal(10))]
    assert [d.end for d in deltas] == [DAY0 + i * STEP for i in (1, 2, 3, 4, 6, 7)]
    assert [d.raw for d in deltas[-2:]] == [1, 1]


def test_status_scalers_units_and_the_previous_capture() -> None:
    a = Capture(DAY0, 12345, 0, "Wh", 0)  # 12.345 kWh in Wh
    b = Capture(DAY0 + STEP, 12350, 0, "Wh", 0x80)
    (delta,), _ = interval_deltas([a, b], STEP)
    assert (delta.raw, delta.scaler, delta.status) == (5, 0, 0x80)  # the closing capture's bits
    assert difference(Capture(DAY0, 12, 1, "Wh"), Capture(DAY0, 1195, -1, "Wh")) == (-5, -1)
    (mixed,), _ = interval_deltas([a, Capture(DAY0 + STEP, 1234550, -2, "Wh")], STEP)
    assert mixed.value == Decimal("0.50")
    assert interval_deltas([a, Capture(DAY0 + STEP, 13, 0, "kWh")], STEP) == ([], [])
    assert interval_deltas([a, Capture(DAY0 + STEP, 12345, 0, "Wh")], STEP)[0][0].raw == 0
    assert interval_deltas([a, Capture(DAY0, 12345, 0, "Wh")], STEP) == ([], [])
    # a stored capture one interval before the first gives the first interval's delta
    stored = Capture(DAY0 - STEP, 12000, 0, "Wh")
    first, _ = interval_deltas([a, b], STEP, previous=stored)
    assert [(d.end, d.raw) for d in first] == [(DAY0, 345), (DAY0 + STEP, 5)]
    older = Capture(DAY0 - 2 * STEP, 12000, 0, "Wh")
    assert len(interval_deltas([a, b], STEP, previous=older)[0]) == 1
    assert len(interval_deltas([], STEP, previous=stored)[0]) == 0
    with pytest.raises(ValueError, match="positive"):
        interval_deltas([a, b], timedelta(0))


# --- wall-clock profiles across DST -----------------------------------------------------------


def _spec(zone: str, mrid: str = "AMS", task_id: int = 1) -> TaskSpec:
    command = commands.ReadIntervalData(device=mrid, start=DAY0, end=DAY0 + timedelta(days=1))
    return TaskSpec(
        task_id, "job", mrid, command, {}, "running", 0, "k", None, None, time_zone=zone
    )


def wall_day(day: datetime, zone: str, *, flags: bool = True, seed: int = 3) -> list[ProfileRow]:
    """The captures of one local day (local midnight to local midnight, both included) as the
    meter's naive wall-clock times, with its DST flag unless ``flags`` is False."""
    tz = ZoneInfo(zone)
    start = day.replace(tzinfo=tz).astimezone(UTC)
    end = (day + timedelta(days=1)).replace(tzinfo=tz).astimezone(UTC)
    rng = random.Random(seed)
    total, rows, t = 1_000_000, [], start
    while t <= end:
        local = t.astimezone(tz)
        value = RegisterValue.exact(ENERGY, total, 0, "Wh")
        dst = bool(local.dst()) if flags else None
        rows.append(ProfileRow(local.replace(tzinfo=None), 0, {ENERGY: value}, dst))
        total += rng.randrange(1, 500)
        t += STEP
    return rows


@pytest.mark.parametrize(
    ("day", "flags", "intervals"),
    [
        (datetime(2026, 1, 14), True, 96),
        (datetime(2026, 3, 29), True, 92),  # spring forward: a 23-hour day
        (datetime(2026, 10, 25), True, 100),  # fall back: a 25-hour day
        (datetime(2026, 10, 25), False, 100),  # no DST flag: the repeated hour by order
    ],
)
def test_dst_days_in_the_meters_zone(day: datetime, flags: bool, intervals: int) -> None:
    rows = wall_day(day, "Europe/Amsterdam", flags=flags)
    spec = _spec("Europe/Amsterdam")
    values, unmapped, resets = raw_values(
        spec, commands.Readings(spec.command, profile=tuple(rows)), read_at=DAY0
    )
    assert unmapped == {} and resets == []
    totals = [v for v in values if v.reading_type == TOTAL]
    deltas = [v for v in values if v.reading_type == DELTA]
    assert len(totals) == intervals + 1 and len(deltas) == intervals
    assert {v.source_id for v in deltas} == {delta_source_id(ENERGY)}
    stamps = [v.time for v in deltas]
    assert all(b - a == STEP for a, b in itertools.pairwise(stamps))
    assert all(t.tzinfo is UTC for t in stamps)
    tz = ZoneInfo("Europe/Amsterdam")
    assert stamps[-1] == (day + timedelta(days=1)).replace(tzinfo=tz).astimezone(UTC)
    assert sum(v.value for v in deltas) == totals[-1].value - totals[0].value


# --- the read window --------------------------------------------------------------------------


def test_the_read_starts_at_the_capture_at_or_before_the_window_start() -> None:
    assert first_capture(DAY0) == DAY0  # on the grid: the driver's range includes it
    odd = DAY0 + timedelta(hours=10, minutes=7, seconds=3)
    assert first_capture(odd) == DAY0 + timedelta(hours=10)
    assert first_capture(odd, {"interval_minutes": 60}) == DAY0 + timedelta(hours=10)
    assert first_capture(odd, {"interval_minutes": 5}) == DAY0 + timedelta(hours=10, minutes=5)
    assert first_capture(odd, {"interval_minutes": 7}) == odd  # not a divisor of a day
    assert first_capture(odd, {"interval_minutes": True}) == DAY0 + timedelta(hours=10)
    assert first_capture(odd.replace(tzinfo=None)) == datetime(2026, 1, 10, 10, 0)
    india = odd.astimezone(ZoneInfo("Asia/Kolkata"))  # +05:30: the UTC grid still
    assert first_capture(india) == DAY0 + timedelta(hours=10)
    assert first_capture("2026-01-10") == "2026-01-10"  # type: ignore[arg-type]


# --- through complete_task ----------------------------------------------------------------------


@pytest.fixture
def fleet(store):
    register(store)
    return store


def _task(store, mrid: str, start: datetime, end: datetime):
    command = commands.ReadIntervalData(device=mrid, start=start, end=end)
    with store.connect() as conn:
        ids = device_ids(conn, [mrid])
    job = jobstore.create_job(
        store,
        kind="on_demand",
        name="t",
        command=command,
        devices=[(ids[mrid][0], mrid)],
        priority=30,
    )
    ((task_id, _),) = job.tasks
    return jobstore.load_task(store, task_id)


def _rows(start: datetime, values: list[int]) -> tuple[ProfileRow, ...]:
    return tuple(
        ProfileRow(start + i * STEP, 0, {ENERGY: RegisterValue.exact(ENERGY, v, 0, "Wh")})
        for i, v in enumerate(values)
    )


def test_a_reset_flags_the_total_and_is_left_out_of_the_deltas(fleet) -> None:
    spec = _task(fleet, "M1", DAY0, DAY0 + 4 * STEP)
    values = [5000, 5100, 5250, 20, 80]  # the register restarts between 00:30 and 00:45
    complete_task(fleet, spec, commands.Readings(spec.command, profile=_rows(DAY0, values)))
    (task,) = jobstore.task_records(fleet, spec.job_id)
    assert task.state == "succeeded"
    assert task.result["resets"] == [
        {
            "source": ENERGY,
            "end": "2026-01-10T00:45:00Z",
            "before": "5250",
            "after": "20",
        }
    ]
    (deltas,) = read(fleet, ["M1"], [DELTA], DAY0 - STEP, DAY0 + 4 * STEP)
    assert [(p.timestamp - DAY0) // STEP for p in deltas.points] == [1, 2, 4]
    assert [p.value for p in deltas.points] == [Decimal("0.1"), Decimal("0.15"), Decimal("0.06")]
    (totals,) = read(fleet, ["M1"], [TOTAL], DAY0 - STEP, DAY0 + 4 * STEP)
    flagged = [p.timestamp for p in totals.points if QUALITY_RESET in p.qualities]
    assert flagged == [DAY0 + 3 * STEP] and len(totals.points) == 5


def test_the_stored_capture_before_the_window_gives_its_first_delta(fleet) -> None:
    first = _task(fleet, "M1", DAY0, DAY0 + 2 * STEP)
    complete_task(fleet, first, commands.Readings(first.command, profile=_rows(DAY0, [10, 20, 35])))
    # the next read's first capture is 00:45: the stored 00:30 total closes its interval
    later = DAY0 + 3 * STEP
    second = _task(fleet, "M1", later, later + STEP)
    complete_task(fleet, second, commands.Readings(second.command, profile=_rows(later, [41, 50])))
    (deltas,) = read(fleet, ["M1"], [DELTA], DAY0, DAY0 + 4 * STEP)
    assert [p.value for p in deltas.points] == [
        Decimal(v) for v in ("0.01", "0.015", "0.006", "0.009")
    ]
    # a stored value in another unit than the meter sends now still gives an exact delta
    third_start = DAY0 + 5 * STEP
    third = _task(fleet, "M1", third_start - STEP, third_start)
    kwh = RegisterValue.exact(ENERGY, 53, -3, "kWh")  # 0.053 kWh = 53 Wh
    rows = (ProfileRow(third_start, 0, {ENERGY: kwh}),)
    complete_task(fleet, third, commands.Readings(third.command, profile=rows))
    (deltas,) = read(fleet, ["M1"], [DELTA], third_start - STEP, third_start)
    assert [p.value for p in deltas.points] == [Decimal("0.003")]
    with fleet.connect() as conn:
        sources = {s for (s,) in conn.execute(select(raw_values_table.c.source_id))}
    assert sources == {ENERGY, delta_source_id(ENERGY)}


def test_an_off_grid_window_is_read_from_the_capture_before_it() -> None:
    """The driver is asked from the capture at or before the window's start; the command (the
    job's window) is not changed."""
    start = DAY0 + timedelta(hours=10, minutes=7)
    command = commands.FullRead(
        device="m0", start=start, end=start + timedelta(hours=1), obis=("1.0.1.8.0.255",)
    )

    async def body() -> commands.Readings:
        async with await FakeDriver().associate(ConnectionParams(meter_id="m0", host="h")) as s:
            result = await CommandOperation(command).execute(s, {})
        assert isinstance(result, commands.Readings)
        return result

    result = asyncio.run(body())
    stamps = [row.timestamp for row in result.profile]
    assert stamps[0] == DAY0 + timedelta(hours=10) and stamps[-1] == DAY0 + timedelta(hours=11)
    assert result.command.start == start and len(result.registers) == 1
