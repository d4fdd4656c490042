"""Deterministic energy curves for simulated meters: integer Wh, a residential daily shape
(night trough, morning and evening peaks, weekends, seasons), optional rooftop PV export,
and per-meter variation, all a pure function of the meter's seed.

The cumulative index at any 15-minute boundary is O(1) given the index at midnight:
each day's total T(D) is spread over its 96 slots by cumulative weights, so slot values
telescope (their sum is exactly T(D)); a zero-sum noise moves energy between the two
slots of each half hour. Midnight indexes come the same way from 16-day blocks.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

SLOT_SECONDS = 900
SLOTS_PER_DAY = 96
DAY_SECONDS = 86_400
_BLOCK = 16  # days
_MASK = (1 << 64) - 1

# Hourly weights, local time; interpolated to quarter hours below.
_RESIDENTIAL = (
    35,
    30,
    28,
    27,
    27,
    30,
    45,
    70,
    75,
    60,
    50,
    48,
    50,
    48,
    45,
    48,
    55,
    75,
    95,
    100,
    90,
    75,
    60,
    45,
)
_SOLAR = (0, 0, 0, 0, 0, 0, 2, 10, 25, 45, 65, 80, 88, 85, 75, 58, 38, 18, 5, 0, 0, 0, 0, 0)


def _quarters(hourly: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(
        hourly[q // 4] * (4 - q % 4) + hourly[(q // 4 + 1) % 24] * (q % 4)
        for q in range(SLOTS_PER_DAY)
    )


RESIDENTIAL_SHAPE = _quarters(_RESIDENTIAL)
SOLAR_SHAPE = _quarters(_SOLAR)


def mix(*values: int) -> int:
    """A 64-bit hash of integers (splitmix64 finaliser over a running state)."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (v & _MASK)) * 0xBF58476D1CE4E5B9 & _MASK
        h ^= h >> 31
        h = (h + 0x9E3779B97F4A7C15) * 0x94D049BB133111EB & _MASK
        h ^= h >> 29
    return h


def _triangle(day: int, peak_day: int) -> int:
    """-182..182: +182 on ``peak_day`` of the year, -182 half a year later."""
    x = (day - peak_day) % 365
    return 182 - 2 * min(x, 365 - x)


class Curve:
    """One cumulative energy channel.

    Days come in 16-day blocks. A block's total is a cheap function of the season (and,
    for PV, one weather draw), so the index at any block start is a short prefix sum;
    the block total is then spread over its days by weekday and noise weights with the
    same telescoping as slots within a day. First use of a meter costs one prefix pass
    over its blocks, not over every day since commissioning.
    """

    def __init__(
        self,
        seed: int,
        shape: tuple[int, ...],
        daily: int,
        weekly: tuple[int, ...],
        season_amplitude: int,
        season_peak_day: int,
        day_noise: int,
        pair_noise: int,
        weather: bool,
        rotation: Callable[[int], int],
        first_day: int,
        initial: int,
    ) -> None:
        self._seed = seed
        self._shape = shape
        self._daily = daily
        self._weekly = weekly
        self._amp = season_amplitude
        self._peak = season_peak_day
        self._day_noise = day_noise
        self._pair_noise = pair_noise
        self._weather = weather
        self._rotation = rotation
        self.first_day = first_day
        self._initial = initial
        self._cum_by_rotation: dict[int, tuple[int, ...]] = {}
        self._block_starts: list[int] = [initial]  # index at the start of block k
        self._block_totals: list[int] = []
        self._block_weights: dict[int, tuple[int, ...]] = {}  # cumulative day weights
        self._midnights: dict[int, int] = {}

    def _block_total(self, k: int) -> int:
        totals = self._block_totals
        while len(totals) <= k:
            totals.append(self._compute_block_total(len(totals)))
        return totals[k]

    def _compute_block_total(self, k: int) -> int:
        centre = self.first_day + k * _BLOCK + _BLOCK // 2
        season = 1000 + self._amp * _triangle(centre, self._peak) // 182
        total = self._daily * _BLOCK * season // 1000
        if self._weather:
            total = total * (450 + mix(self._seed, 0xB10C, k) % 401) // 1000
        return total

    def _weights(self, k: int) -> tuple[int, ...]:
        w = self._block_weights.get(k)
        if w is None:
            acc = [0]
            first = self.first_day + k * _BLOCK
            spread = 2 * self._day_noise + 1
            for d in range(first, first + _BLOCK):
                h = mix(self._seed, d)
                weight = self._weekly[(d + 3) % 7] * (1000 + h % spread - self._day_noise)
                if self._weather:
                    weight = weight * (200 + (h >> 20) % 801) // 1000
                acc.append(acc[-1] + weight)
            w = tuple(acc)
            if len(self._block_weights) > 8:
                self._block_weights.clear()
            self._block_weights[k] = w
        return w

    def _block_start(self, k: int) -> int:
        starts = self._block_starts
        while len(starts) <= k:
            starts.append(starts[-1] + self._block_total(len(starts) - 1))
        return starts[k]

    def midnight(self, day: int) -> int:
        """Cumulative value at 00:00 UTC of ``day``."""
        value = self._midnights.get(day)
        if value is not None:
            return value
        if day <= self.first_day or self._daily == 0:
            return self._initial
        k, j = divmod(day - self.first_day, _BLOCK)
        value = self._block_start(k)
        if j:
            w = self._weights(k)
            value += self._block_total(k) * w[j] // w[_BLOCK]
        if len(self._midnights) > 16:
            self._midnights.clear()
        self._midnights[day] = value
        return value

    def day_total(self, day: int) -> int:
        return self.midnight(day + 1) - self.midnight(day)

    def _cumulative_weights(self, rotation: int) -> tuple[int, ...]:
        cum = self._cum_by_rotation.get(rotation)
        if cum is None:
            acc = [0]
            shape = self._shape
            for j in range(SLOTS_PER_DAY):
                acc.append(acc[-1] + shape[(j + rotation) % SLOTS_PER_DAY])
            cum = self._cum_by_rotation[rotation] = tuple(acc)
        return cum

    def at_boundary(self, boundary: int) -> int:
        """Cumulative value at ``boundary * 900`` seconds since the epoch."""
        return self.boundaries(boundary, boundary)[0]

    def boundaries(self, first: int, last: int) -> list[int]:
        """Cumulative values at boundaries ``first..last`` (the day-level work is done
        once per day, not once per boundary)."""
        out: list[int] = []
        b = first
        while b <= last:
            day, j = divmod(b, SLOTS_PER_DAY)
            j_last = min(SLOTS_PER_DAY - 1, j + last - b)
            b += j_last - j + 1
            if day < self.first_day:
                out.extend([self._initial] * (j_last - j + 1))
                continue
            base = self.midnight(day)
            total = self.midnight(day + 1) - base
            if total == 0:
                out.extend([base] * (j_last - j + 1))
                continue
            cum = self._cumulative_weights(self._rotation(day))
            scale = cum[SLOTS_PER_DAY]
            spread = 2 * self._pair_noise + 1
            for k in range(j, j_last + 1):
                value = base + total * cum[k] // scale
                if k & 1:
                    lo = total * cum[k - 1] // scale
                    mid = value - base
                    first_half, second_half = mid - lo, total * cum[k + 1] // scale - mid
                    shift = (
                        (mix(self._seed, day, k) % spread - self._pair_noise)
                        * (first_half + second_half)
                        // 100
                    )
                    value += max(-first_half, min(second_half, shift))
                out.append(value)
        return out

    def at(self, seconds: float) -> int:
        """Cumulative value at any instant, linear within a slot (integer)."""
        boundary, into = divmod(int(seconds), SLOT_SECONDS)
        lo = self.at_boundary(boundary)
        if into == 0:
            return lo
        return lo + (self.at_boundary(boundary + 1) - lo) * into // SLOT_SECONDS


class LoadShape:
    """Import (+A) and export (-A) curves of one meter, and the parameters drawn for it."""

    def __init__(self, seed: int, zone: str, commissioned: datetime) -> None:
        self.seed = seed
        h = [mix(seed, 0x5EED, i) for i in range(12)]
        self.daily_import = 5_000 + h[0] % 15_001  # Wh per day
        weekday = 950 + h[1] % 101
        weekend = 1_050 + h[2] % 201
        self.weekly = (weekday,) * 5 + (weekend, weekend)
        self.shift = h[3] % 9 - 4  # quarters earlier/later than the reference household
        self.has_pv = h[4] % 10 < 3
        self.pv_daily_peak = (8_000 + h[5] % 17_001) if self.has_pv else 0
        self.reactive_import_permille = 150 + h[6] % 251
        self.reactive_export_permille = 20 + h[7] % 61
        self.initial_import = h[8] % 2_000_000
        self.initial_export = h[9] % 500_000 if self.has_pv else 0
        self._zone = ZoneInfo(zone)
        self._rotations: dict[int, int] = {}
        first_day = int(commissioned.astimezone(UTC).timestamp()) // DAY_SECONDS
        self.commissioned_day = first_day
        self.imports = Curve(
            mix(seed, 1), RESIDENTIAL_SHAPE, self.daily_import, self.weekly, 100 + h[10] % 201, 15, 120, 30, False,
            lambda d: self._rotation(d) - self.shift, first_day, self.initial_import,
        )  # fmt: skip
        self.exports = Curve(
            mix(seed, 2), SOLAR_SHAPE, self.pv_daily_peak, (1000,) * 7, 600, 197, 50, 10, True,
            self._rotation, first_day, self.initial_export,
        )  # fmt: skip

    def _rotation(self, day: int) -> int:
        """Quarters from UTC to local wall-clock time on ``day`` (the curve's slot j is
        local quarter j + rotation)."""
        r = self._rotations.get(day)
        if r is None:
            noon = datetime.fromtimestamp(day * DAY_SECONDS + 43_200, self._zone)
            r = int(noon.utcoffset().total_seconds()) // SLOT_SECONDS
            if len(self._rotations) > 512:
                self._rotations.clear()
            self._rotations[day] = r
        return r
