"""Estimation: values for failed and missing intervals, as new points beside the meter's.

An estimate never replaces what the meter sent: the engine returns the meter's points
(with their quality codes) and the estimates separately; the store keeps the estimate as a
newer version of the reading. Estimates carry 2.8.0 (estimated); IEC 61968-9 Annex D has no
sub-category per method, so the method travels with the result, not in the code. "null"
gives a version with no value, marked 2.8.0 and 2.5.259 (known missing): the failed value
is withdrawn from use (e.g. billing), and the slot reads as known missing.

Targets in a row with no plausible value between them form a run; each method looks at the
plausible values (anchors) around a run. Computed values are rounded (half even) to the
finest decimal exponent of the anchors used, i.e. to the meter's resolution.
"""

from __future__ import annotations

import enum
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from mdm.series import QUALITY_ESTIMATED, QUALITY_KNOWN_MISSING, Point

ESTIMATED = frozenset({QUALITY_ESTIMATED})
NULLED = frozenset({QUALITY_ESTIMATED, QUALITY_KNOWN_MISSING})
_MICROSECOND = timedelta(microseconds=1)

Anchor = tuple[datetime, Decimal]


class Method(enum.StrEnum):
    NONE = "none"
    NULL = "null"
    LAST_PLAUSIBLE = "last_plausible"
    MEAN_OF_NEIGHBOURS = "mean_of_neighbours"
    LINEAR = "linear"


@dataclass(frozen=True, slots=True)
class Estimation:
    """How to estimate: the method, the longest run it may fill (None: any), and for the
    mean the number of plausible values taken on each side."""

    method: Method = Method.NONE
    max_run: int | None = None
    neighbours: int = 1

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "method", Method(self.method))
        except ValueError:
            known = ", ".join(m.value for m in Method)
            raise ValueError(f"estimation.method {self.method!r} is not one of {known}") from None
        if self.max_run is not None and not _positive_int(self.max_run):
            raise ValueError(f"estimation.max_run must be a positive integer, not {self.max_run!r}")
        if not _positive_int(self.neighbours):
            raise ValueError(
                f"estimation.neighbours must be a positive integer, not {self.neighbours!r}"
            )


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def estimate(
    anchors: Sequence[Anchor], targets: Sequence[datetime], estimation: Estimation
) -> list[Point]:
    """Estimated points for ``targets`` from the plausible ``anchors`` (both sorted).

    Targets whose run is longer than ``max_run``, or that lack the anchors their method
    needs (e.g. interpolation at the end of the data), get no estimate.
    """
    method = estimation.method
    if method is Method.NONE or not targets:
        return []
    times = [t for t, _ in anchors]
    estimates: list[Point] = []
    for position, run in _runs(times, targets):
        if estimation.max_run is not None and len(run) > estimation.max_run:
            continue
        before = anchors[max(position - estimation.neighbours, 0) : position]
        after = anchors[position : position + estimation.neighbours]
        estimates.extend(_fill(method, run, before, after))
    return estimates


def _runs(times: list[datetime], targets: Sequence[datetime]) -> list[tuple[int, list[datetime]]]:
    """Targets grouped by the anchor position they fall before (one run per gap)."""
    runs: list[tuple[int, list[datetime]]] = []
    for target in targets:
        position = bisect_left(times, target)
        if runs and runs[-1][0] == position:
            runs[-1][1].append(target)
        else:
            runs.append((position, [target]))
    return runs


def _fill(
    method: Method, run: list[datetime], before: Sequence[Anchor], after: Sequence[Anchor]
) -> list[Point]:
    if method is Method.NULL:
        return [Point(t, None, NULLED) for t in run]
    if method is Method.LAST_PLAUSIBLE:
        if not before:
            return []
        value = before[-1][1]
        return [Point(t, value, ESTIMATED) for t in run]
    if not before or not after:
        return []
    if method is Method.MEAN_OF_NEIGHBOURS:
        used = [v for _, v in (*before, *after)]
        mean = _rounded(sum(used, Decimal(0)) / len(used), used)
        return [Point(t, mean, ESTIMATED) for t in run]
    (t0, v0), (t1, v1) = before[-1], after[0]
    span = (t1 - t0) // _MICROSECOND
    rise = v1 - v0
    return [
        Point(t, _rounded(v0 + rise * ((t - t0) // _MICROSECOND) / span, (v0, v1)), ESTIMATED)
        for t in run
    ]


def _rounded(value: Decimal, used: Sequence[Decimal]) -> Decimal:
    exponent = min(v.as_tuple().exponent for v in used)
    return value.quantize(Decimal(1).scaleb(exponent))  # type: ignore[arg-type]
