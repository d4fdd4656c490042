"""Fault injection for simulated meters, per meter or fleet-wide.

A :class:`FaultSpec` says what goes wrong and how often; a :class:`FaultInjector` (one
per meter, seeded from the meter) makes the draws. The draws are simulation noise, not
security: they use ``random.Random``. Spec text for the command line is
``name=value`` pairs separated by commas, e.g.
``latency=lognormal:0.1:0.5,loss=0.01,garbage=0.001,drift=20,outages=2``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, fields, replace
from enum import Enum


class FaultSpecError(ValueError):
    """A fault specification that cannot be parsed."""


@dataclass(frozen=True, slots=True)
class Latency:
    """Delay before each response, seconds. ``kind``: fixed (a), uniform (a..b),
    exponential (mean a), lognormal (median a, sigma b)."""

    kind: str = "fixed"
    a: float = 0.0
    b: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("fixed", "uniform", "exponential", "lognormal"):
            raise FaultSpecError(f"unknown latency distribution {self.kind!r}")
        if self.a < 0 or self.b < 0 or (self.kind == "uniform" and self.b < self.a):
            raise FaultSpecError("latency parameters must be non-negative (and a <= b)")

    def sample(self, rng: random.Random) -> float:
        if self.kind == "fixed":
            return self.a
        if self.kind == "uniform":
            return rng.uniform(self.a, self.b)
        if self.kind == "exponential":
            return rng.expovariate(1 / self.a) if self.a > 0 else 0.0
        return self.a * math.exp(rng.gauss(0.0, self.b)) if self.a > 0 else 0.0

    @classmethod
    def parse(cls, text: str) -> Latency:
        parts = text.split(":")
        try:
            if len(parts) == 1:
                return cls("fixed", float(parts[0]))
            values = [float(p) for p in parts[1:]]
        except ValueError as exc:
            raise FaultSpecError(f"bad latency {text!r}") from exc
        return cls(parts[0], *values)


@dataclass(frozen=True, slots=True)
class FaultSpec:
    latency: Latency | None = None
    loss: float = 0.0  # a request is dropped: no answer at all
    garbage: float = 0.0  # a response is replaced by noise
    stall: float = 0.0  # per request: the meter goes silent for stall_seconds
    stall_seconds: float = 30.0
    clock_drift_ppm: float = 0.0
    clock_offset_s: float = 0.0
    outages_per_month: float = 0.0  # historic outages: profile gaps and power events
    outage_minutes: tuple[int, int] = (5, 180)
    counter_reset: float = 0.0  # per association: the meter loses its invocation counters
    counter_jump: float = 0.0  # per association: the meter's expected counter jumps ahead
    auth_failure: float = 0.0  # an association is refused as failed authentication
    block_loss: float = 0.0  # an image block is acknowledged but not kept

    def __post_init__(self) -> None:
        for name in (
            "loss",
            "garbage",
            "stall",
            "counter_reset",
            "counter_jump",
            "auth_failure",
            "block_loss",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise FaultSpecError(f"{name} is a probability (0..1)")
        if self.outages_per_month < 0 or self.stall_seconds < 0:
            raise FaultSpecError("outages and stall_seconds must be non-negative")
        lo, hi = self.outage_minutes
        if not 1 <= lo <= hi:
            raise FaultSpecError("outage_minutes is (min, max) with 1 <= min <= max")

    @property
    def active(self) -> bool:
        return self != FaultSpec()

    @classmethod
    def parse(cls, text: str) -> FaultSpec:
        """``name=value`` pairs, comma-separated; see the module docstring."""
        spec = cls()
        names = {f.name for f in fields(cls)}
        for item in filter(None, (p.strip() for p in text.split(","))):
            name, sep, value = item.partition("=")
            name = _ALIASES.get(name.strip(), name.strip())
            if not sep or name not in names:
                raise FaultSpecError(f"unknown fault {item!r}")
            try:
                if name == "latency":
                    parsed: object = Latency.parse(value)
                elif name == "outage_minutes":
                    lo, _, hi = value.partition(":")
                    parsed = (int(lo), int(hi or lo))
                else:
                    parsed = float(value)
            except ValueError as exc:
                raise FaultSpecError(f"bad value in {item!r}") from exc
            spec = replace(spec, **{name: parsed})
        return spec


_ALIASES = {"drift": "clock_drift_ppm", "offset": "clock_offset_s", "outages": "outages_per_month"}


class Verdict(Enum):
    DELIVER = "deliver"
    DROP = "drop"  # this request is lost
    SILENT = "silent"  # the meter is not answering (stalled or without power)


@dataclass(slots=True)
class FaultInjector:
    spec: FaultSpec
    seed: int
    silent_until: float = 0.0
    _rng: random.Random | None = field(default=None, init=False, repr=False)

    @property
    def rng(self) -> random.Random:
        # Built on first use: a fleet of fault-free meters carries no generator state.
        if self._rng is None:
            self._rng = random.Random(self.seed)
        return self._rng

    def _hit(self, p: float) -> bool:
        return p > 0.0 and self.rng.random() < p

    def request(self, now: float) -> Verdict:
        """Draw for one incoming request at source time ``now``."""
        if now < self.silent_until:
            return Verdict.SILENT
        if self._hit(self.spec.stall):
            self.silent_until = now + self.spec.stall_seconds
            return Verdict.SILENT
        if self._hit(self.spec.loss):
            return Verdict.DROP
        return Verdict.DELIVER

    def delay(self) -> float:
        return self.spec.latency.sample(self.rng) if self.spec.latency else 0.0

    def garble(self) -> bytes | None:
        """Noise to send instead of a response, or None. The noise is never a valid
        WRAPPER header (first octet 0xFF) and holds no HDLC flag."""
        if not self._hit(self.spec.garbage):
            return None
        n = self.rng.randint(16, 48)
        return b"\xff" + bytes(self._noise_octet() for _ in range(n - 1))

    def _noise_octet(self) -> int:
        octet = self.rng.randrange(255)
        return octet + 1 if octet >= 0x7E else octet

    def refuse_authentication(self) -> bool:
        return self._hit(self.spec.auth_failure)

    def lose_block(self) -> bool:
        return self._hit(self.spec.block_loss)

    def reset_counters(self) -> bool:
        return self._hit(self.spec.counter_reset)

    def jump_counter(self) -> bool:
        return self._hit(self.spec.counter_jump)


@dataclass(frozen=True, slots=True)
class FleetFaults:
    """Faults across a fleet: ``default`` for every meter, ``faulty`` for a seeded
    ``fraction`` of them, and explicit ``per_meter`` overrides by index."""

    default: FaultSpec = field(default_factory=FaultSpec)
    faulty: FaultSpec = field(default_factory=FaultSpec)
    fraction: float = 0.0
    per_meter: dict[int, FaultSpec] = field(default_factory=dict)

    def for_meter(self, index: int, seed: int) -> FaultSpec:
        if index in self.per_meter:
            return self.per_meter[index]
        if self.fraction > 0 and random.Random(seed ^ 0xFA).random() < self.fraction:
            return self.faulty
        return self.default
