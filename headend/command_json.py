"""Commands and job parameters as JSON, exactly: what is written is what is read back.

A command is a JSON object ``{"type": "<class name>", <field>: <value>...}``. Values that JSON
cannot hold exactly are tagged objects:

- ``Decimal`` -> ``{"$dec": "1.230"}`` (the string form keeps digits and exponent);
- ``datetime`` -> ``{"$dt": "2026-03-29T01:30:00+01:00"}`` (microseconds and offset kept), with
  ``"tz": "Europe/Amsterdam"`` when its tzinfo is an IANA zone, so the zone itself comes back
  (and the repeated autumn hour its right occurrence), not just the offset;
- ``bytes`` -> ``{"$bytes": "<hex>"}``; ``tuple`` -> ``{"$tuple": [...]}``;
- a ``dict`` -> ``{"$dict": [[key, value], ...]}`` (keys of any of these types);
- a :class:`headend.commands.Setting` -> ``{"$setting": [obis, attribute, value]}``.

Lists, strings, integers, floats, booleans and None are themselves. Enums are written as their
value (``Priority`` as an int, ``ControlAction`` as a string) and rebuilt by the command's
constructor. Anything else is refused with :class:`CodecError` (never silently stringified).
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from headend import commands

COMMAND_TYPES: dict[str, type[commands.Command]] = {
    cls.__name__: cls
    for cls in (
        commands.ReadRegisters,
        commands.ReadIntervalData,
        commands.FullRead,
        commands.ReadEvents,
        commands.Control,
        commands.Ping,
        commands.FirmwareUpdate,
        commands.Configure,
    )
}


class CodecError(ValueError):
    """A value that has no exact JSON form, or a document that is not a command."""


def encode(value: Any) -> Any:
    """The JSON-able form of ``value`` (see the module docstring)."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, enum.Enum):
        return encode(value.value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise CodecError(f"{value} has no JSON form")
        return value
    if isinstance(value, Decimal):
        return {"$dec": str(value)}
    if isinstance(value, datetime):
        return _encode_datetime(value)
    if isinstance(value, bytes):
        return {"$bytes": value.hex()}
    if isinstance(value, tuple):
        return {"$tuple": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, Mapping):
        return {"$dict": [[encode(k), encode(v)] for k, v in value.items()]}
    if isinstance(value, commands.Setting):
        return {"$setting": [value.obis, value.attribute, encode(value.value)]}
    raise CodecError(f"{type(value).__name__} values have no exact JSON form")


def _encode_datetime(value: datetime) -> dict[str, Any]:
    tz = value.tzinfo
    if isinstance(tz, ZoneInfo) and tz.key:
        return {"$dt": value.isoformat(), "tz": tz.key}
    return {"$dt": value.isoformat()}


def decode(value: Any) -> Any:
    """The inverse of :func:`encode`."""
    if isinstance(value, list):
        return [decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "$dec" in value:
        return Decimal(value["$dec"])
    if "$dt" in value:
        moment = datetime.fromisoformat(value["$dt"])
        # the offset fixes the instant; astimezone gives the zone's wall time and fold
        return moment.astimezone(ZoneInfo(value["tz"])) if "tz" in value else moment
    if "$bytes" in value:
        return bytes.fromhex(value["$bytes"])
    if "$tuple" in value:
        return tuple(decode(v) for v in value["$tuple"])
    if "$dict" in value:
        return {_hashable(decode(k)): decode(v) for k, v in value["$dict"]}
    if "$setting" in value:
        obis, attribute, setting = value["$setting"]
        return commands.Setting(obis, attribute, decode(setting))
    raise CodecError(f"an object with keys {sorted(value)} is not a tagged value")


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    return value


def command_to_dict(command: commands.Command) -> dict[str, Any]:
    name = type(command).__name__
    if COMMAND_TYPES.get(name) is not type(command):
        raise CodecError(f"{name} is not a head-end command")
    out: dict[str, Any] = {"type": name}
    for f in dataclasses.fields(command):
        out[f.name] = encode(getattr(command, f.name))
    return out


def command_from_dict(data: Mapping[str, Any]) -> commands.Command:
    if not isinstance(data, Mapping):
        raise CodecError("a command is a JSON object")
    name = data.get("type")
    cls = COMMAND_TYPES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise CodecError(f"{name!r} is not a head-end command type")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known - {"type"}
    if unknown:
        raise CodecError(f"{name} has no field(s) {sorted(unknown)}")
    values = {k: decode(v) for k, v in data.items() if k != "type"}
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise CodecError(f"{name}: {exc}") from None


def type_prefix(cls: type[commands.Command]) -> str:
    """How :func:`command_to_json` of a ``cls`` command begins (``{"type":"FullRead",``): a
    query on stored commands matches their type with it (``LIKE prefix || '%'``)."""
    if COMMAND_TYPES.get(cls.__name__) is not cls:
        raise CodecError(f"{cls.__name__} is not a head-end command")
    return json.dumps({"type": cls.__name__}, separators=(",", ":"))[:-1] + ","


def command_to_json(command: commands.Command) -> str:
    return json.dumps(command_to_dict(command), separators=(",", ":"), allow_nan=False)


def command_from_json(text: str) -> commands.Command:
    try:
        data = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise CodecError(f"a command is JSON: {exc}") from None
    return command_from_dict(data)


def to_json(value: Any) -> str:
    """Any encodable value (job parameters, results) as JSON."""
    return json.dumps(encode(value), separators=(",", ":"), allow_nan=False)


def from_json(text: str) -> Any:
    try:
        return decode(json.loads(text))
    except (TypeError, ValueError) as exc:
        raise CodecError(f"not a JSON document: {exc}") from None


__all__ = [
    "COMMAND_TYPES",
    "CodecError",
    "command_from_dict",
    "command_from_json",
    "command_to_dict",
    "command_to_json",
    "decode",
    "encode",
    "from_json",
    "to_json",
]
