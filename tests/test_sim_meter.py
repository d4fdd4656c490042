"""The meter model: energy curves, profile, disconnector, image transfer, clock rules."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from test_sim_server import NOW, FakeTime

from drivers.sim.axdr import CosemDateTime
from drivers.sim.loadshape import DAY_SECONDS, SLOT_SECONDS, LoadShape
from drivers.sim.meter import Disconnector, EventCode, ImageTransferState, Meter, MeterSpec
from drivers.sim.meterclock import LAST_DAY, DstRule, MeterClock, rules_for_zone
from drivers.sim.xdlms import DataAccessResult

COMMISSIONED = datetime(2025, 1, 1, tzinfo=UTC)


def meter(seed: int = 11, **kw) -> Meter:
    return Meter(
        MeterSpec(0, "000100000000", seed, commissioned=COMMISSIONED, profile_days=3, **kw),
        FakeTime(),
    )


def test_deterministic_per_seed_and_different_across_seeds():
    a, b, c = meter(1), meter(1), meter(2)
    boundaries = list(range(int(NOW) // SLOT_SECONDS - 200, int(NOW) // SLOT_SECONDS))
    assert a.profile_rows(boundaries) == b.profile_rows(boundaries)
    assert a.profile_rows(boundaries) != c.profile_rows(boundaries)
    assert a.energy(NOW) == b.energy(NOW)


def test_daily_energy_and_shape_are_plausible():
    shapes = [LoadShape(seed, "Europe/Amsterdam", COMMISSIONED) for seed in range(40)]
    day = int(NOW) // DAY_SECONDS
    totals = [s.imports.day_total(d) for s in shapes for d in range(day - 28, day)]
    assert min(totals) > 2_000 and max(totals) < 40_000  # Wh per day
    assert 6_000 < statistics.mean(totals) < 20_000
    evening = night = 0
    for s in shapes:
        for d in range(day - 28, day):
            b = d * 96
            # 19:00-19:15 and 03:00-03:15 local (UTC+1 in March)
            evening += s.imports.at_boundary(b + 73) - s.imports.at_boundary(b + 72)
            night += s.imports.at_boundary(b + 9) - s.imports.at_boundary(b + 8)
    assert evening > 2 * night
    assert 0.15 < sum(s.has_pv for s in shapes) / len(shapes) < 0.5


def test_slot_values_add_up_to_the_day_and_never_go_negative():
    s = LoadShape(3, "Australia/Sydney", COMMISSIONED)
    day = int(NOW) // DAY_SECONDS
    for curve in (s.imports, s.exports):
        values = [
            curve.at_boundary(b + 1) - curve.at_boundary(b) for b in range(day * 96, day * 96 + 96)
        ]
        assert min(values) >= 0 and sum(values) == curve.day_total(day)
    assert (
        s.imports.at_boundary(int(COMMISSIONED.timestamp()) // SLOT_SECONDS - 5) == s.initial_import
    )


def test_pv_exports_only_in_daylight():
    s = next(
        LoadShape(seed, "Europe/Amsterdam", COMMISSIONED)
        for seed in range(100)
        if LoadShape(seed, "Europe/Amsterdam", COMMISSIONED).has_pv
    )
    day = int(datetime(2026, 6, 21, tzinfo=UTC).timestamp()) // DAY_SECONDS
    at = s.exports.at_boundary
    night = at(day * 96 + 4) - at(day * 96)  # 02:00-03:00 local
    noon = at(day * 96 + 48) - at(day * 96 + 44)  # 13:00-14:00 local
    assert night == 0 and noon > 0


def test_registers_match_the_last_profile_row():
    m = meter()
    t = (int(NOW) // SLOT_SECONDS) * SLOT_SECONDS
    m.clock.source.t = t
    row = m.profile_rows([t // SLOT_SECONDS])[0]
    assert int.from_bytes(row[2][1:], "big") == m.energy(t)[0]
    register = m.find(3, bytes((1, 0, 1, 8, 0, 255)))
    t1 = m.find(3, bytes((1, 0, 1, 8, 1, 255)))
    t2 = m.find(3, bytes((1, 0, 1, 8, 2, 255)))
    assert t1.raw(m) + t2.raw(m) == register.raw(m) == m.energy(t)[0]


def test_disconnection_stops_energy_and_is_logged():
    m = meter()
    before = m.energy(NOW)[0]
    assert m.remote_disconnect() and not m.disconnector.output_state
    assert m.remote_disconnect()  # already disconnected: fine, not logged twice
    m.clock.source.t += 7200
    assert m.energy(m.clock.now())[0] == before
    assert m.voltage(1) > 0 and m.current(1) == 0
    assert m.remote_reconnect() and m.disconnector.state == Disconnector.CONNECTED
    m.clock.source.t += 7200
    assert m.energy(m.clock.now())[0] > before
    assert [c for _, c in m.events(2)] == [
        EventCode.REMOTE_DISCONNECTION,
        EventCode.REMOTE_CONNECTION,
    ]


@pytest.mark.parametrize(
    ("mode", "after_reconnect"),
    [
        (1, Disconnector.READY),
        (2, Disconnector.CONNECTED),
        (3, Disconnector.READY),
        (4, Disconnector.CONNECTED),
    ],
)
def test_disconnector_modes(mode, after_reconnect):
    m = meter(control_mode=mode)
    assert m.remote_disconnect()
    assert m.remote_reconnect() and m.disconnector.state == after_reconnect
    if after_reconnect == Disconnector.READY:
        assert not m.remote_reconnect()  # these modes need the customer's button
        assert m.manual_reconnect() and m.disconnector.state == Disconnector.CONNECTED
        assert [c for _, c in m.events(2)][-1] == EventCode.MANUAL_CONNECTION
    assert not m.manual_reconnect()


def test_mode_zero_cannot_be_switched():
    m = meter(control_mode=0)
    assert not m.remote_disconnect() and not m.remote_reconnect() and m.disconnector.output_state


def test_image_transfer_state_machine():
    m = meter(image_block_size=4)
    it = m.image
    assert it.verify(m) == DataAccessResult.OTHER_REASON  # nothing initiated
    it.enabled = False
    assert it.initiate(b"FW", 10, m) == DataAccessResult.TEMPORARY_FAILURE
    it.enabled = True
    assert it.initiate(b"", 10, m) == DataAccessResult.OTHER_REASON
    assert it.initiate(b"FW", ImageTransferState.MAX_IMAGE + 1, m) == DataAccessResult.OTHER_REASON
    assert it.initiate(b"FW", 10, m) == DataAccessResult.SUCCESS and it.block_count == 3
    assert it.block(0, b"abcd", m) == DataAccessResult.SUCCESS
    assert it.block(2, b"ij", m) == DataAccessResult.SUCCESS
    assert it.block(3, b"xx", m) == DataAccessResult.OTHER_REASON  # beyond the image
    assert it.block(1, b"efg", m) == DataAccessResult.OTHER_REASON  # wrong size
    assert it.blocks_status().to_bools() == [True, False, True] and it.first_not_transferred() == 1
    assert (
        it.verify(m) == DataAccessResult.OTHER_REASON
        and it.status == ImageTransferState.VERIFY_FAILED
    )
    assert it.initiate(b"FW", 10, m) == DataAccessResult.SUCCESS  # resume: blocks kept
    assert it.first_not_transferred() == 1
    assert it.block(1, b"efgh", m) == DataAccessResult.SUCCESS
    assert it.activate(m) == DataAccessResult.SUCCESS  # verifies on the way
    assert m.firmware == b"FW" and m.image_activated == b"abcdefghij"
    assert it.to_activate_info()[0][:2] == (10, b"FW")
    assert it.block(0, b"abcd", m) == DataAccessResult.OTHER_REASON  # already activated
    assert it.verify(m) == DataAccessResult.SUCCESS
    assert it.initiate(b"FW2", 8, m) == DataAccessResult.SUCCESS and it.first_not_transferred() == 0
    assert (
        it.activate(m) == DataAccessResult.OTHER_REASON
        and it.status == ImageTransferState.ACTIVATE_FAILED
    )
    codes = [c for _, c in m.events(0)]
    assert EventCode.FIRMWARE_READY in codes and EventCode.FIRMWARE_ACTIVATED in codes


@pytest.mark.parametrize(
    "zone", ["Europe/Amsterdam", "Australia/Sydney", "America/New_York", "Asia/Tokyo", "UTC"]
)
def test_dst_rules_follow_the_zone(zone):
    clock = MeterClock.for_zone(zone, FakeTime())
    tz = ZoneInfo(zone)
    t = datetime(datetime.now(UTC).year, 1, 1, tzinfo=UTC)
    for _ in range(0, 366 * 24, 5):
        offset = int(t.astimezone(tz).utcoffset().total_seconds() // 60)
        assert clock.utc_offset(t.timestamp())[0] == offset, t
        t += timedelta(hours=5)


def test_amsterdam_rules_in_cosem_form():
    std, dev, begin, end = rules_for_zone("Europe/Amsterdam")
    assert (std, dev) == (60, 60)
    assert begin == DstRule(3, LAST_DAY, 7, 2) and end == DstRule(10, LAST_DAY, 7, 3)
    assert begin.to_cosem().to_bytes().hex() == "ffff03fe07020000008000ff"
    assert DstRule.from_cosem(begin.to_cosem()) == begin
    assert DstRule(3, 8, 7, 2).local_date(2026) == datetime(
        2026, 3, 8, 2
    )  # 2nd Sunday on/after the 8th
    for bad in (
        CosemDateTime(0xFFFF, 13, 1, 7, 2, 0, 0),
        CosemDateTime(0xFFFF, 3, 1, 9, 2, 0, 0),
        CosemDateTime(0xFFFF, 3, 1, 7, 0xFF, 0, 0),
    ):
        with pytest.raises(ValueError):
            DstRule.from_cosem(bad)


def test_clock_local_time_and_set():
    clock = MeterClock.for_zone(
        "Europe/Amsterdam", FakeTime(datetime(2026, 7, 1, 10, tzinfo=UTC).timestamp())
    )
    dt = clock.cosem(clock.now())
    assert (dt.hour, dt.deviation, dt.status & 0x80) == (12, -120, 0x80)
    assert clock.local(clock.now()).utcoffset() == timedelta(hours=2)
    naive = CosemDateTime(2026, 7, 1, 3, 12, 0, 0, 0)
    assert clock.to_utc(naive) == datetime(2026, 7, 1, 10, tzinfo=UTC).timestamp()
    old = clock.set_time(0)
    assert old == datetime(2026, 7, 1, 10, tzinfo=UTC).timestamp() and abs(clock.now()) < 1e-6
