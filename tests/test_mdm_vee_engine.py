"""VEE configuration (selection by ReadingType and group), the engine and its ingest hook."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest

from mdm.database import open_store
from mdm.devices import Device, create_devices
from mdm.history import versions
from mdm.ingest import ingest
from mdm.normalise import RawValue
from mdm.readings import read_one
from mdm.series import Point, Series, SeriesKey
from mdm.vee import Limits, Method, Spike, VeeConfig, VeeEngine
from mdm.vee.config import Entry, Selector

T0 = datetime(2026, 1, 1, tzinfo=UTC)
QH = timedelta(minutes=15)
KWH_15 = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
KWH_15_EXPORT = "0.0.2.4.19.1.12.0.0.0.0.0.0.0.0.3.72.0"
KWH_REGISTER = "0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
WH_REGISTER = "0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.0.72.0"
VOLTS = "0.0.2.0.0.1.54.0.0.0.0.0.0.0.0.0.29.0"

CONFIG = {
    "rules": [
        {"reading_type": "*", "gaps": True, "status": {}, "estimation": "linear"},
        {"reading_type": "*.*.2.4.*.*.*.*.*.*.*.*.*.*.*.*.72.*", "limits": {"min": 0, "max": 25}},
        {"reading_type": KWH_15, "spike": {"factor": "10", "floor": "0.5"}},
        {"reading_type": KWH_15, "group": "industrial", "limits": {"max": 2500}, "spike": None},
        {"reading_type": "*", "group": "lab", "estimation": {"method": "null"}},
    ]
}


def series(values, rt=KWH_15, device="m1", step=QH):
    pts = [Point(T0 + step * (k + 1), D(str(v))) for k, v in enumerate(values)]
    return Series(SeriesKey(device, rt), pts, step if rt != KWH_REGISTER else None)


def test_selection_merges_from_general_to_specific():
    config = VeeConfig.from_dict(CONFIG)
    plain = config.select(KWH_15)
    assert plain.limits == Limits(min=D(0), max=D(25))
    assert plain.spike == Spike(factor=D(10), floor=D("0.5"))
    assert plain.gaps is not None and plain.status is not None
    assert plain.estimation.method is Method.LINEAR

    industrial = config.select(KWH_15, "industrial")
    assert industrial.limits == Limits(max=D(2500))
    assert industrial.spike is None  # switched off for the group
    assert industrial.gaps is not None

    export = config.select(KWH_15_EXPORT)  # matches the pattern, not the exact code
    assert export.limits == Limits(min=D(0), max=D(25)) and export.spike is None

    volts = config.select(VOLTS, "lab")
    assert volts.limits is None and volts.estimation.method is Method.NULL


def test_group_beats_reading_type_specificity_and_later_beats_earlier():
    config = VeeConfig(
        [
            Entry(Selector(KWH_15), {"limits": Limits(max=D(1))}),
            Entry(Selector("*", "g"), {"limits": Limits(max=D(2))}),
            Entry(Selector("*", "g"), {"limits": Limits(max=D(3))}),
        ]
    )
    assert config.select(KWH_15, "g").limits == Limits(max=D(3))
    assert config.select(KWH_15, "other").limits == Limits(max=D(1))
    assert config.select(KWH_15) is config.select(KWH_15)  # cached


def test_from_json_reads_numbers_as_exact_decimals():
    text = '{"rules": [{"limits": {"max": 0.1}}]}'
    config = VeeConfig.from_json(text)
    assert config.select(KWH_15).limits.max == D("0.1")  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"rules": [{"limitz": {}}]}, "unknown key"),
        ({"rules": [{"limits": {"maximum": 1}}]}, "unknown key"),
        ({"rules": [{"reading_type": "1.2.3"}]}, "18 dot-separated"),
        ({"rules": [{"reading_type": "x" + ".0" * 17}]}, "not a number"),
        ({"rules": [{"spike": {}}]}, "factor"),
        ({"rules": [{"status": {"fail": ["clock_wrong"]}}]}, "not one of"),
        ({"rules": [{"estimation": "guess"}]}, "not one of"),
        ({"rules": [{"limits": {"max": "NaN"}}]}, "finite"),
        ({"rules": {}}, "must be a list"),
        ({"rulez": []}, "unknown key"),
    ],
)
def test_bad_config_is_refused_with_a_reason(data, message):
    with pytest.raises(ValueError, match=message):
        VeeConfig.from_dict(data)


def test_status_fail_list_by_name():
    config = VeeConfig.from_dict({"rules": [{"status": {"fail": ["power_down"]}}]})
    status = config.select(KWH_15).status
    assert status is not None and int(status.fail) == 0x80


def test_clean_series_is_returned_as_is():
    engine = VeeEngine(CONFIG)
    s = series([1, 2, 3, 2, 1])
    result = engine.validate(s)
    assert result.series is s and result.clean and result.estimates == []


def test_validate_uses_the_group_rules():
    engine = VeeEngine(CONFIG)
    s = series([1, 2, 300, 2])
    assert engine.validate(s).failed == (2,)
    assert engine.validate(s, group="industrial").failed == ()
    flagged = engine.validate(s).series.points[2]
    assert flagged.qualities == {"2.6.3"} and flagged.value == D(300)


def test_no_config_means_no_rules():
    s = series([1, -5, 10**6])
    assert VeeEngine().validate(s).clean


def test_ingest_hook_has_series_to_series_shape():
    engine = VeeEngine(CONFIG)
    groups = {"big": "industrial"}
    hook: Callable[[Series], Series] = engine.as_ingest_hook(groups.get)
    sent = series([1, 300, 2])
    out = hook(sent)
    assert isinstance(out, Series) and out.key == sent.key and out.interval == QH
    meter, estimates = out.points[:3], out.points[3:]
    assert [p.value for p in meter] == [D(1), D(300), D(2)]
    assert meter[1].qualities == {"2.6.3"}
    assert [(p.timestamp, p.value, p.qualities) for p in estimates] == [
        (sent.points[1].timestamp, D(2), {"2.8.0"})  # 1.5 at the meter's resolution of 1
    ]
    assert hook(series([1, 300, 2], device="big")).points[1].qualities == frozenset()
    clean = series([1, 2, 3])
    assert hook(clean) is clean


def test_ingest_hook_window_finds_gaps_at_the_ends():
    engine = VeeEngine({"rules": [{"gaps": True, "estimation": "last_plausible"}]})
    hook = engine.as_ingest_hook(window_of=lambda s: (T0, T0 + QH * 4))
    out = hook(series([1, 2]))
    assert [(p.timestamp, p.value) for p in out.points[2:]] == [
        (T0 + QH * 3, D(2)),
        (T0 + QH * 4, D(2)),
    ]


def test_ingest_stores_estimates_as_versions_over_the_meter_value():
    store = open_store("sqlite://")
    create_devices(store, [Device("m1")], who="test")
    sent = [250, 260, 99_999, 270]
    rows = [
        RawValue("m1", "1-0:1.8.0", T0 + QH * (k + 1), wh, "Wh", interval_minutes=15)
        for k, wh in enumerate(sent)
    ]
    engine = VeeEngine(CONFIG)
    result = ingest(store, rows, validator=engine.as_ingest_hook())
    assert result.estimates_stored == 1
    stored = read_one(store, "m1", KWH_15, T0, T0 + QH * 4)
    assert [p.value for p in stored] == [D("0.25"), D("0.26"), D("0.265"), D("0.27")]
    assert stored.points[2].qualities == {"2.8.0"}
    history = versions(store, "m1", KWH_15, T0 + QH * 3)
    assert [(v.value, v.qualities, v.source) for v in history] == [
        (D("99.999"), {"2.6.3"}, "meter"),
        (D("0.265"), {"2.8.0"}, "estimated"),
    ]
    store.close()


def test_register_check_through_the_engine():
    engine = VeeEngine({"rules": [{"reading_type": KWH_REGISTER, "register_check": {}}]})
    registers = Series(
        SeriesKey("m1", KWH_REGISTER),
        [Point(T0, D(100)), Point(T0 + timedelta(hours=1), D(102))],
    )
    intervals = series(["0.25"] * 4)
    checked_registers, checked_intervals = engine.validate_register(registers, intervals)
    assert checked_registers.points[1].qualities == {"2.6.1001"}
    assert all(p.qualities == {"2.6.1001"} for p in checked_intervals)

    wh = Series(SeriesKey("m1", WH_REGISTER), registers.points)
    engine_wh = VeeEngine({"rules": [{"register_check": {}}]})
    with pytest.raises(ValueError, match="multiplier differs"):
        engine_wh.validate_register(wh, intervals)


def test_main_check_through_the_engine():
    engine = VeeEngine({"rules": [{"main_check": {"tolerance": "0.1"}}]})
    main, check = series([1, 2, 3], device="main"), series([1, "2.5", 3], device="check")
    main_out, check_out = engine.validate_main_check(main, check)
    assert [p.qualities for p in main_out] == [frozenset(), {"2.6.1002"}, frozenset()]
    assert check_out.points[1].qualities == {"2.6.1002"}
    unchecked = VeeEngine().validate_main_check(main, check)
    assert unchecked == (main, check)
