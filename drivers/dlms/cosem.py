"""COSEM facts the driver needs: OBIS logical names, interface-class ids, attribute and method
numbers, the unit enumeration (as CIM unit symbols) and the data-access result codes."""

from __future__ import annotations

import enum
import functools

from drivers.errors import ConfigurationError


def parse_obis(text: str) -> bytes:
    """``"1.0.1.8.0.255"`` (also ``1-0:1.8.0.255``, ``1-0:1.8.0``) -> 6 bytes."""
    if not isinstance(text, str):
        raise ConfigurationError(f"OBIS code {text!r} is not text")
    cleaned = text.strip().replace("-", ".").replace(":", ".").replace("*", ".")
    parts = cleaned.split(".")
    if len(parts) == 5:
        parts.append("255")
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        numbers = []
    if len(numbers) != 6 or not all(0 <= n <= 255 for n in numbers):
        raise ConfigurationError(f"{text!r} is not an OBIS code")
    return bytes(numbers)


@functools.lru_cache(maxsize=4096)
def obis_bytes(text: str) -> bytes:
    """parse_obis, remembered: the same few codes are encoded in every request."""
    return parse_obis(text)


def obis_text(ln: bytes) -> str:
    """6 bytes -> ``"1.0.1.8.0.255"``."""
    return ".".join(str(b) for b in ln)


def normalise_obis(text: str) -> str:
    return obis_text(parse_obis(text))


class ClassId(enum.IntEnum):
    DATA = 1
    REGISTER = 3
    EXTENDED_REGISTER = 4
    DEMAND_REGISTER = 5
    PROFILE_GENERIC = 7
    CLOCK = 8
    ASSOCIATION_LN = 15
    IMAGE_TRANSFER = 18
    DISCONNECT_CONTROL = 70


CLOCK_OBIS = "0.0.1.0.0.255"
LOAD_PROFILE_OBIS = "1.0.99.1.0.255"
EVENT_LOG_OBIS = "0.0.99.98.0.255"
DISCONNECT_CONTROL_OBIS = "0.0.96.3.10.255"
IMAGE_TRANSFER_OBIS = "0.0.44.0.0.255"
FIRMWARE_VERSION_OBIS = "1.0.0.2.0.255"
LOGICAL_DEVICE_NAME_OBIS = "0.0.42.0.0.255"

# Clock (IC 8) attributes
CLOCK_TIME = 2
CLOCK_TIME_ZONE = 3
CLOCK_STATUS = 4
# Register (IC 3/4)
REGISTER_VALUE = 2
REGISTER_SCALER_UNIT = 3
EXTENDED_REGISTER_STATUS = 4
EXTENDED_REGISTER_CAPTURE_TIME = 5
# Profile generic (IC 7)
PROFILE_BUFFER = 2
PROFILE_CAPTURE_OBJECTS = 3
PROFILE_CAPTURE_PERIOD = 4
# Disconnect control (IC 70)
DC_OUTPUT_STATE = 2
DC_CONTROL_STATE = 3
DC_CONTROL_MODE = 4
DC_REMOTE_DISCONNECT = 1
DC_REMOTE_RECONNECT = 2
# Image transfer (IC 18)
IT_BLOCK_SIZE = 2
IT_TRANSFERRED_BLOCKS = 3
IT_FIRST_NOT_TRANSFERRED = 4
IT_ENABLED = 5
IT_STATUS = 6
IT_ACTIVATE_INFO = 7
IT_INITIATE = 1
IT_BLOCK_TRANSFER = 2
IT_VERIFY = 3
IT_ACTIVATE = 4

# Data-access results (Blue Book, Data-Access-Result)
RESULT_TEMPORARY_FAILURE = 2
RESULT_READ_WRITE_DENIED = 3
RESULT_OBJECT_UNDEFINED = 4
RESULT_OBJECT_CLASS_INCONSISTENT = 9
RESULT_OBJECT_UNAVAILABLE = 11
RESULT_SCOPE_OF_ACCESS_VIOLATED = 13
NOT_FOUND_RESULTS = frozenset(
    {RESULT_OBJECT_UNDEFINED, RESULT_OBJECT_CLASS_INCONSISTENT, RESULT_OBJECT_UNAVAILABLE}
)
DENIED_RESULTS = frozenset({RESULT_READ_WRITE_DENIED, RESULT_SCOPE_OF_ACCESS_VIOLATED})
# Action results that are the same codes for methods; 2 also means "not finished yet".

# DLMS unit enumeration -> CIM unit symbol (as cim.codelists.readingtype spells it, SI prefix
# included where DLMS has one, e.g. kg). Units CIM lacks keep a plain DLMS symbol.
_UNITS: dict[int, str] = {
    1: "a",
    2: "mo",
    3: "wk",
    4: "d",
    5: "h",
    6: "min",
    7: "s",
    8: "°",
    9: "°C",
    10: "money",
    11: "m",
    12: "m/s",
    13: "m³",
    14: "m³ (compensated)",
    15: "m³/h",
    16: "m³/h (compensated)",
    17: "m³/d",
    18: "m³/d (compensated)",
    19: "l",
    20: "kg",
    21: "N",
    22: "N·m",
    23: "Pa",
    24: "bar",
    25: "J",
    26: "J/h",
    27: "W",
    28: "VA",
    29: "var",
    30: "Wh",
    31: "VAh",
    32: "varh",
    33: "A",
    34: "C",
    35: "V",
    36: "V/m",
    37: "F",
    38: "Ω",
    39: "Ω·m",
    40: "Wb",
    41: "T",
    42: "A/m",
    43: "H",
    44: "Hz",
    45: "1/Wh",
    46: "1/varh",
    47: "1/VAh",
    48: "V²h",
    49: "A²h",
    50: "kg/s",
    51: "S",
    52: "K",
    53: "1/V²h",
    54: "1/A²h",
    55: "1/m³",
    56: "%",
    57: "Ah",
    60: "Wh/m³",
    61: "J/m³",
    62: "mol %",
    63: "g/m³",
    64: "Pa·s",
    65: "J/kg",
    70: "dBm",
    71: "dBµV",
    72: "dB",
    254: "",
    255: "",
}


def unit_symbol(code: int) -> str:
    """The CIM symbol for a DLMS unit code; ``""`` for none/count; ``"unit<N>"`` if unknown."""
    symbol = _UNITS.get(code)
    return f"unit{code}" if symbol is None else symbol
