"""Gap audit: missing intervals become re-read (backfill) requests for the head-end.

A request covers measured time: ``start`` is the start of its first missing interval and
``end`` the end of its last one, so the interval ends it asks for are those in
(start, end] (a DLMS profile read by range, or a GetMeterReadings TimeSchedule, from start
to end). Adjacent missing intervals merge into one request; with ``bridge`` a request
also spans up to that many present intervals between two missing runs (one longer read is
cheaper than two round trips); ``max_intervals`` splits requests the head-end could not
serve in one read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from mdm.series import Series, SeriesKey
from mdm.vee.rules import missing_timestamps


@dataclass(frozen=True, slots=True, order=True)
class ReReadRequest:
    device: str
    reading_type: str
    start: datetime
    end: datetime
    missing: int  # missing intervals in the window (a bridged window holds present ones too)


def requests_from_missing(
    key: SeriesKey,
    interval: timedelta,
    missing: Iterable[datetime],
    *,
    bridge: int = 0,
    max_intervals: int | None = None,
) -> list[ReReadRequest]:
    """Merge missing interval ends (any order) of one series into requests."""
    if bridge < 0:
        raise ValueError(f"bridge must not be negative, not {bridge}")
    if max_intervals is not None and max_intervals < 1:
        raise ValueError(f"max_intervals must be positive, not {max_intervals}")
    reach = interval * (bridge + 1)
    requests: list[ReReadRequest] = []
    run: tuple[datetime, datetime, int] | None = None  # first, last, missing count
    for end in sorted(set(missing)):
        if run is not None:
            first, last, count = run
            fits = max_intervals is None or (end - first) // interval < max_intervals
            if end - last <= reach and fits:
                run = (first, end, count + 1)
                continue
            requests.append(_request(key, interval, *run))
        run = (end, end, 1)
    if run is not None:
        requests.append(_request(key, interval, *run))
    return requests


def _request(
    key: SeriesKey, interval: timedelta, first: datetime, last: datetime, count: int
) -> ReReadRequest:
    return ReReadRequest(key.device, key.reading_type, first - interval, last, count)


def audit(
    series: Iterable[Series],
    start: datetime,
    end: datetime,
    *,
    bridge: int = 0,
    max_intervals: int | None = None,
) -> list[ReReadRequest]:
    """Re-read requests for every interval series' gaps in the window (start, end], sorted
    by device, ReadingType and start. Register series (no interval) are skipped."""
    requests: list[ReReadRequest] = []
    for one in series:
        if one.interval is None:
            continue
        timestamps = [p.timestamp for p in one.points if p.value is not None]
        missing = missing_timestamps(timestamps, one.interval, start, end)
        requests += requests_from_missing(
            one.key, one.interval, missing, bridge=bridge, max_intervals=max_intervals
        )
    requests.sort()
    return requests
