"""EndDeviceEventType / EndDeviceControlType codec and the well-known head-end codes."""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cim.codelists import enddevicetype as edt
from cim.codelists import load_rows
from cim.codelists.enddevicetype import PARTS, EndDeviceTypeCode, part_names
from cim.errors import CimError, ErrorCode

FIXTURES = Path(os.environ.get("OPENHES_CIM_FIXTURES", "/work/shared/cim-fixtures"))
CODELISTS = FIXTURES / "_derived" / "codelists"

ATTRS = [attr for attr, _, _ in PARTS]

# Constant, code, and the names its parts must have (checked against the Annex E tables).
WELL_KNOWN = [
    ("REMOTE_DISCONNECT", "3.31.0.23", ("electric meter", "RCD switch", "n/a", "disconnect")),
    ("REMOTE_CONNECT", "3.31.0.18", ("electric meter", "RCD switch", "n/a", "connect")),
    ("ARM_FOR_CLOSURE", "0.31.0.5", ("n/a", "RCD switch", "n/a", "arm for closure")),
    ("ARM_FOR_OPEN", "0.31.0.6", ("n/a", "RCD switch", "n/a", "arm for open")),
    ("SWITCH_DISABLE", "0.31.0.22", ("n/a", "RCD switch", "n/a", "disable")),
    ("SWITCH_ENABLE", "0.31.0.26", ("n/a", "RCD switch", "n/a", "enable")),
    ("DEMAND_RESET", "0.8.0.214", ("n/a", "demand", "n/a", "reset")),
    ("LOAD_CONTROL_START", "0.15.0.54", ("n/a", "load control", "n/a", "start")),
    ("LOAD_CONTROL_STOP", "0.15.0.55", ("n/a", "load control", "n/a", "stop")),
    ("POWER_FAILED", "3.26.0.85", ("electric meter", "power", "n/a", "failed")),
    ("POWER_RESTORED", "3.26.0.216", ("electric meter", "power", "n/a", "restored")),
    ("POWER_LOSS_DETECTED", "3.26.0.47", ("electric meter", "power", "n/a", "loss detected")),
    ("SWITCH_DISCONNECTED", "3.31.0.68", ("electric meter", "RCD switch", "n/a", "disconnected")),
    ("SWITCH_CONNECTED", "3.31.0.42", ("electric meter", "RCD switch", "n/a", "connected")),
    ("CLOCK_SET", "3.36.116.24", ("electric meter", "clock", "time sync", "changed")),
    ("LOW_BATTERY", "3.2.22.150", ("electric meter", "battery", "charge", "min limit reached")),
    ("COVER_OPENED", "3.12.29.39", ("electric meter", "security", "cover", "opened")),
    ("TAMPER_DETECTED", "3.12.0.257", ("electric meter", "security", "n/a", "tamper detected")),
]


@pytest.mark.parametrize(("constant", "code", "names"), WELL_KNOWN)
def test_well_known_codes(constant: str, code: str, names: tuple[str, ...]) -> None:
    value = getattr(edt, constant)
    assert value == EndDeviceTypeCode.parse(code)
    assert value.code == code
    assert value.names == names


def test_describe() -> None:
    assert edt.SWITCH_DISCONNECTED.describe() == "electric meter / RCD switch / disconnected"
    assert edt.DEMAND_RESET.describe() == "demand / reset"
    assert EndDeviceTypeCode(0, 0, 0, 0).describe() == "unspecified"


def test_non_strict_accepts_unknown_numbers() -> None:
    code = EndDeviceTypeCode.parse("3.31.0.999", strict=False)
    assert code.code == "3.31.0.999"
    assert not code.is_known
    assert code.names[3] == "unknown 999"
    assert code == EndDeviceTypeCode(3, 31, 0, 999, strict=False)
    assert EndDeviceTypeCode.parse("3.31.0.23", strict=False) == edt.REMOTE_DISCONNECT


def test_vendor_only_rows_are_left_out() -> None:
    with pytest.raises(CimError, match=r"part 2 \(EndDeviceDomain\): 51 is not a known code"):
        EndDeviceTypeCode.parse("0.51.0.0")


@pytest.mark.parametrize(
    ("code", "strict", "reason"),
    [
        ("", True, "is empty"),
        ("3.31.0", True, "has 3 dotted fields; 4 are required"),
        ("3.31.0.23.1", False, "has 5 dotted fields"),
        ("3.31.0.x", False, "part 4 (EndDeviceEventOrAction): 'x' is not an integer"),
        ("3.-31.0.23", False, "part 2 (EndDeviceDomain): -31 is negative"),
        ("99.31.0.23", True, "part 1 (EndDeviceType): 99 is not a known code"),
        ("3.31.0.9999", True, "part 4 (EndDeviceEventOrAction): 9999 is not a known code"),
        ("3.31.00.23", False, "leading zero"),
        ("3.31.0.23 ", False, "is not an integer"),
    ],
)
def test_invalid_codes_are_refused(code: str, strict: bool, reason: str) -> None:
    with pytest.raises(CimError) as info:
        EndDeviceTypeCode.parse(code, strict=strict)
    assert info.value.error is ErrorCode.BAD_END_DEVICE_TYPE
    assert reason in info.value.reason


def test_constructor_refuses_non_ints() -> None:
    with pytest.raises(CimError) as info:
        EndDeviceTypeCode(3, "31", 0, 23)  # type: ignore[arg-type]
    assert info.value.error is ErrorCode.BAD_END_DEVICE_TYPE


def test_part_names_lookup() -> None:
    assert part_names("domain")[36] == "clock"
    with pytest.raises(CimError):
        part_names("colour")


KNOWN = st.tuples(*(st.sampled_from(sorted(part_names(attr))) for attr in ATTRS))


@settings(max_examples=150, deadline=None)
@given(KNOWN)
def test_round_trip_known(parts: tuple[int, int, int, int]) -> None:
    code = ".".join(map(str, parts))
    parsed = EndDeviceTypeCode.parse(code)
    assert parsed.code == code
    assert EndDeviceTypeCode(*parts) == parsed
    assert EndDeviceTypeCode.parse(EndDeviceTypeCode(*parts).code) == parsed
    assert parsed.is_known
    assert parsed.describe()


@settings(max_examples=150, deadline=None)
@given(st.tuples(*(st.integers(0, 10**6) for _ in range(4))))
def test_round_trip_non_strict(parts: tuple[int, int, int, int]) -> None:
    code = ".".join(map(str, parts))
    parsed = EndDeviceTypeCode.parse(code, strict=False)
    assert parsed.code == code
    assert len(parsed.names) == 4


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("0123456789.-a "), max_size=25), st.booleans())
def test_arbitrary_text_parses_or_raises_cim_error(text: str, strict: bool) -> None:
    try:
        parsed = EndDeviceTypeCode.parse(text, strict=strict)
    except CimError as error:
        assert error.error is ErrorCode.BAD_END_DEVICE_TYPE
    else:
        assert parsed.code == text


# --- our data files against the fixture tables -------------------------------------------

_FIXTURE_TABLE = {
    "type": "EndDeviceType",
    "domain": "EndDeviceDomain",
    "sub_domain": "EndDeviceSubDomain",
    "event_or_action": "EndDeviceEventOrAction",
}
# Reviewed differences between our wording and the fixture label (same meaning).
_SAME_MEANING = {
    ("EndDeviceType", 19): "programmable thermostat = ProgCtlThermostat(PCT)",
    ("EndDeviceType", 26): "communication device = ComDevice",
    ("EndDeviceSubDomain", 11): "maintenance mode = MaintMode",
    ("EndDeviceSubDomain", 51): "gas chromatograph analyzer = GCAnalyzer",
    ("EndDeviceSubDomain", 56): "daylight saving time = DaylightSavingsTime",
    ("EndDeviceSubDomain", 122): "fixture typo 'Tranceiver'",
}


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9%]", "", text.lower())


@pytest.mark.parametrize("attr", ATTRS)
def test_our_tables_agree_with_fixture_numbers(attr: str) -> None:
    table = _FIXTURE_TABLE[attr]
    path = CODELISTS / f"{table}.csv"
    if not path.exists():
        pytest.skip(f"fixture {path} not available")
    fixture: dict[int, list[str]] = {}
    with path.open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if not row["connexo_enum_constant"].startswith("ELSTER_DEFINED"):
                fixture.setdefault(int(row["code"]), []).append(row["label"])
    filename = next(name for part, _, name in PARTS if part == attr)
    ours = {int(row["code"]): row["name"] for row in load_rows(filename)}
    assert set(ours) == set(fixture)
    for code, name in ours.items():
        if code == 0 or (table, code) in _SAME_MEANING:
            continue
        labels = [_norm(label) for label in fixture[code]]
        # Our names are the standard's words, spaced and lower-cased (a few typos fixed).
        assert any(_norm(name) in label for label in labels), (table, code, name, fixture[code])
