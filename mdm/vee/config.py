"""Which rules apply to which series: a declarative VEE configuration.

A configuration is a list of entries. Each entry selects series by ReadingType (an exact
18-field code, the same with ``*`` for any field, or ``*`` for all) and optionally by device
group, and sets some rules. For a series every matching entry applies, from the least to the
most specific (a group beats no group, then more concrete ReadingType fields beat fewer,
then later entries beat earlier ones); a rule set by a more specific entry replaces the
same rule from a less specific one, and ``null``/``false`` switches it off::

    {"rules": [
      {"reading_type": "*", "gaps": true, "status": {},
       "estimation": {"method": "linear", "max_run": 4}},
      {"reading_type": "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0",
       "limits": {"min": "0", "max": "25"}, "spike": {"factor": "10", "floor": "0.5"}},
      {"reading_type": "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0", "group": "industrial",
       "limits": {"max": "2500"}, "spike": null}
    ]}

Numbers may be JSON numbers or strings; :meth:`VeeConfig.from_json` reads JSON numbers as
exact decimals. Unknown keys are refused, so a typo does not silently disable a rule.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from decimal import Decimal
from typing import Any

from mdm.vee.estimation import Estimation
from mdm.vee.rules import (
    DEFAULT_FAIL_BITS,
    Gaps,
    Limits,
    MainCheck,
    RegisterCheck,
    Spike,
    Status,
    StatusBit,
    ZeroRun,
)

_FIELD_COUNT = 18
ANY = "*"


@dataclass(frozen=True, slots=True)
class RuleSet:
    """The rules in force for one (ReadingType, group); None means the rule is off."""

    limits: Limits | None = None
    spike: Spike | None = None
    zero_run: ZeroRun | None = None
    gaps: Gaps | None = None
    status: Status | None = None
    register_check: RegisterCheck | None = None
    main_check: MainCheck | None = None
    estimation: Estimation = field(default_factory=Estimation)

    @property
    def point_rules(self) -> tuple[Limits | Spike | ZeroRun | Status, ...]:
        """The rules that flag points of a single series."""
        return tuple(
            rule
            for rule in (self.limits, self.spike, self.zero_run, self.status)
            if rule is not None
        )


RULE_NAMES = tuple(f.name for f in fields(RuleSet))


@dataclass(frozen=True, slots=True)
class Selector:
    """Series a config entry applies to: ReadingType pattern and device group (None: any)."""

    reading_type: str = ANY
    group: str | None = None
    _fields: tuple[str | None, ...] | None = field(default=None, init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_fields", _parse_pattern(self.reading_type))

    def matches(self, reading_type: str, group: str | None) -> bool:
        if self.group is not None and self.group != group:
            return False
        if self._fields is None:
            return True
        parts = reading_type.split(".")
        if len(parts) != _FIELD_COUNT:
            return False
        return all(
            want is None or want == got for want, got in zip(self._fields, parts, strict=True)
        )

    @property
    def specificity(self) -> tuple[int, int]:
        concrete = 0 if self._fields is None else sum(f is not None for f in self._fields)
        return (self.group is not None, concrete)


def _parse_pattern(pattern: str) -> tuple[str | None, ...] | None:
    if not isinstance(pattern, str):
        raise ValueError(f"reading_type must be a string, not {pattern!r}")
    if pattern == ANY:
        return None
    parts = pattern.split(".")
    if len(parts) != _FIELD_COUNT:
        raise ValueError(
            f"reading_type {pattern!r}: expected {_FIELD_COUNT} dot-separated fields or '*'"
        )
    result: list[str | None] = []
    for index, part in enumerate(parts):
        if part == ANY:
            result.append(None)
            continue
        try:
            result.append(str(int(part)))
        except ValueError:
            raise ValueError(
                f"reading_type {pattern!r}: field {index + 1} {part!r} is not a number or '*'"
            ) from None
    return tuple(result)


@dataclass(frozen=True, slots=True)
class Entry:
    """One config entry: a selector and the rules it sets (only the names it mentions)."""

    selector: Selector
    rules: Mapping[str, Any]

    def __post_init__(self) -> None:
        unknown = set(self.rules) - set(RULE_NAMES)
        if unknown:
            raise ValueError(f"unknown rule(s) {sorted(unknown)}; known: {list(RULE_NAMES)}")


class VeeConfig:
    """Entries in declaration order; :meth:`select` merges the matching ones (cached)."""

    def __init__(self, entries: Iterable[Entry] = ()) -> None:
        self.entries = tuple(entries)
        self._cache: dict[tuple[str, str | None], RuleSet] = {}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VeeConfig:
        _only(data, {"rules"}, "config")
        items = data.get("rules", [])
        if not isinstance(items, list):
            raise ValueError("config: 'rules' must be a list")
        entries = []
        for number, item in enumerate(items, 1):
            try:
                entries.append(_entry(item))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"config rules[{number}]: {exc}") from None
        return cls(entries)

    @classmethod
    def from_json(cls, text: str | bytes) -> VeeConfig:
        return cls.from_dict(json.loads(text, parse_float=Decimal))

    def select(self, reading_type: str, group: str | None = None) -> RuleSet:
        key = (reading_type, group)
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = self._merge(reading_type, group)
        return found

    def _merge(self, reading_type: str, group: str | None) -> RuleSet:
        matching = [
            (entry.selector.specificity, order, entry)
            for order, entry in enumerate(self.entries)
            if entry.selector.matches(reading_type, group)
        ]
        merged: dict[str, Any] = {}
        for _, _, entry in sorted(matching, key=lambda item: item[:2]):
            merged.update(entry.rules)
        if merged.get("estimation") is None:
            merged["estimation"] = Estimation()
        return RuleSet(**merged)


def _only(data: object, allowed: set[str], what: str) -> None:
    if not isinstance(data, Mapping):
        raise ValueError(f"{what} must be an object, not {data!r}")
    unknown = set(data) - allowed
    if unknown:
        raise ValueError(f"{what}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")


def _entry(item: Mapping[str, Any]) -> Entry:
    _only(item, {"reading_type", "group", *RULE_NAMES}, "entry")
    group = item.get("group")
    if group is not None and not isinstance(group, str):
        raise ValueError(f"group must be a string, not {group!r}")
    selector = Selector(item.get("reading_type", ANY), group)
    rules = {
        name: _PARSERS[name](item[name]) if item[name] not in (None, False) else None
        for name in RULE_NAMES
        if name in item
    }
    return Entry(selector, rules)


def _params(value: Any, name: str, allowed: set[str]) -> dict[str, Any]:
    if value is True:
        return {}
    _only(value, allowed, name)
    return dict(value)


def _status(value: Any) -> Status:
    params = _params(value, "status", {"fail"})
    if "fail" not in params:
        return Status(DEFAULT_FAIL_BITS)
    bits = StatusBit(0)
    for name in params["fail"]:
        try:
            bits |= StatusBit[str(name).upper()]
        except KeyError:
            known = [b.name.lower() for b in StatusBit]  # type: ignore[union-attr]
            raise ValueError(f"status.fail: {name!r} is not one of {known}") from None
    return Status(bits)


def _estimation(value: Any) -> Estimation:
    if isinstance(value, str):
        return Estimation(value)  # type: ignore[arg-type]
    return Estimation(**_params(value, "estimation", {"method", "max_run", "neighbours"}))


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "limits": lambda v: Limits(**_params(v, "limits", {"min", "max"})),
    "spike": lambda v: Spike(**_params(v, "spike", {"factor", "window", "floor"})),
    "zero_run": lambda v: ZeroRun(**_params(v, "zero_run", {"count"})),
    "gaps": lambda v: Gaps(**_params(v, "gaps", set())),
    "status": _status,
    "register_check": lambda v: RegisterCheck(
        **_params(v, "register_check", {"tolerance", "relative"})
    ),
    "main_check": lambda v: MainCheck(**_params(v, "main_check", {"tolerance", "relative"})),
    "estimation": _estimation,
}
