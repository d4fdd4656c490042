"""Benchmark of the MeterReadings codec: streaming reader and writer against plain lxml.

    python bench/cim_codec.py            # 1,000,000 interval readings (1,000 meters x 1,000)
    python bench/cim_codec.py --quick    # 200,000 interval readings, well under a minute

Every measurement runs in its own fresh subprocess (so peak RSS, read from
``ru_maxrss``, is that phase's alone), three times; the median is reported. Human-readable
lines first, then one JSON object with the figures on the last line.

Phases:
  emit            MeterReadingsWriter.write_interval_block, readings as (timestamp, Decimal[,
                  quality codes]) tuples generated on the fly, into a file
  baseline_emit   the same document with plain lxml ``etree.xmlfile`` (one ``xf.element``
                  context per node, timestamps formatted through the same kind of cache)
  parse           iter_meter_readings: MeterReading model objects with Decimal values,
                  datetimes and ReadingQualities, every ReadingType ref checked
  parse_flat      iter_interval_readings: (meter_key, reading_type, IntervalReading) rows
  baseline_parse  plain lxml iterparse(tag=IntervalReadings): timestamp and value strings
                  from each reading's children, then clear() and drop previous siblings
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

READING_TYPE = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"  # 15-min delta forward kWh
NAMESPACE = "http://iec.ch/TC57/2011/MeterReadings#"
QUALITY_EVERY = 50  # one reading in 50 carries ReadingQualityType 2.8.0 (estimated)
PARSE_TARGET = 150_000
EMIT_TARGET = 200_000
RSS_TARGET_MB = 200


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _source(meters: int, per_meter: int):
    """(meter mRID, readings) for each meter; readings generated lazily as tuples."""
    start = datetime(2024, 1, 1, tzinfo=UTC)
    stamps = [start + timedelta(minutes=15 * i) for i in range(per_meter)]
    # 10,007 distinct 3-decimal values, a prime count so meters do not repeat in step.
    pool = [Decimal(f"{(i * 7919) % 100_000 / 1000:.3f}") for i in range(10_007)]
    estimated = ("2.8.0",)

    def readings(meter: int):
        offset = meter * 131
        for i, stamp in enumerate(stamps):
            value = pool[(offset + i) % 10_007]
            if i % QUALITY_EVERY == 0:
                yield stamp, value, estimated
            else:
                yield stamp, value

    for meter in range(meters):
        yield f"MTR-{meter:07d}", readings(meter)


def phase_emit(path: str, meters: int, per_meter: int) -> int:
    from cim.meter_readings_stream import MeterReadingsWriter
    from cim.model import ObjectRef

    count = 0
    with open(path, "wb") as out, MeterReadingsWriter(out) as writer:
        for mrid, readings in _source(meters, per_meter):
            writer.write_interval_block(ObjectRef(mrid), READING_TYPE, readings)
            count += per_meter
    return count


def phase_baseline_emit(path: str, meters: int, per_meter: int) -> int:
    from lxml import etree

    from cim.datetimes import format_datetime

    q = "{" + NAMESPACE + "}"
    stamps: dict[datetime, str] = {}
    count = 0
    with etree.xmlfile(path, encoding="UTF-8", buffered=True) as xf:
        xf.write_declaration()
        with xf.element(q + "MeterReadings", nsmap={None: NAMESPACE}):
            for mrid, readings in _source(meters, per_meter):
                with xf.element(q + "MeterReading"):
                    with xf.element(q + "IntervalBlocks"):
                        for item in readings:
                            stamp = stamps.get(item[0])
                            if stamp is None:
                                stamp = stamps[item[0]] = format_datetime(item[0])
                            with xf.element(q + "IntervalReadings"):
                                with xf.element(q + "timeStamp"):
                                    xf.write(stamp)
                                with xf.element(q + "value"):
                                    xf.write(str(item[1]))
                                if len(item) > 2:
                                    for code in item[2]:
                                        with xf.element(q + "ReadingQualities"):
                                            xf.write(
                                                etree.Element(q + "ReadingQualityType", ref=code)
                                            )
                            count += 1
                        xf.write(etree.Element(q + "ReadingType", ref=READING_TYPE))
                    with xf.element(q + "Meter"), xf.element(q + "mRID"):
                        xf.write(mrid)
    return count


def phase_parse(path: str) -> int:
    from cim.meter_readings_stream import iter_meter_readings

    count = 0
    for meter_reading in iter_meter_readings(path):
        for block in meter_reading.interval_blocks:
            count += len(block.readings)
    return count


def phase_parse_flat(path: str) -> int:
    from cim.meter_readings_stream import iter_interval_readings

    count = 0
    for _row in iter_interval_readings(path):
        count += 1
    return count


def phase_baseline_parse(path: str) -> int:
    from lxml import etree

    q = "{" + NAMESPACE + "}"
    ts_tag, value_tag = q + "timeStamp", q + "value"
    count = 0
    for _event, element in etree.iterparse(path, events=("end",), tag=q + "IntervalReadings"):
        stamp = value = None
        for child in element:
            tag = child.tag
            if tag == ts_tag:
                stamp = child.text
            elif tag == value_tag:
                value = child.text
        if stamp is not None and value is not None:
            count += 1
        element.clear()
        parent = element.getparent()
        while element.getprevious() is not None:
            del parent[0]
    return count


PHASES = {
    "emit": phase_emit,
    "baseline_emit": phase_baseline_emit,
    "parse": phase_parse,
    "parse_flat": phase_parse_flat,
    "baseline_parse": phase_baseline_parse,
}


def run_phase(args: argparse.Namespace) -> None:
    """Child process: run one phase, print its figures as JSON."""
    function = PHASES[args.phase]
    started, cpu_started = time.perf_counter(), time.process_time()
    if args.phase.endswith("emit"):
        count = function(args.file, args.meters, args.per_meter)
    else:
        count = function(args.file)
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    print(
        json.dumps(
            {
                "readings": count,
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
                "peak_rss_mb": _peak_rss_mb(),
            }
        )
    )


def run_once(phase: str, path: str, meters: int, per_meter: int) -> dict:
    command = [
        sys.executable, __file__, "--phase", phase, "--file", path,
        "--meters", str(meters), "--per-meter", str(per_meter),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"phase {phase} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarise(results: list[dict]) -> dict:
    rates = [r["readings"] / r["seconds"] for r in results]
    cpu_rates = [r["readings"] / r["cpu_seconds"] for r in results]
    return {
        "per_s": statistics.median(rates),
        "cpu_per_s": statistics.median(cpu_rates),
        "runs_per_s": [round(rate) for rate in rates],
        "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in results),
        "readings": results[0]["readings"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200,000 readings, under 60 s")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    parser.add_argument("--meters", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--per-meter", type=int, default=1000, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        run_phase(args)
        return

    meters = 200 if args.quick else 1000
    per_meter = 1000
    total = meters * per_meter
    print(f"MeterReadings codec benchmark: {meters:,} meters x {per_meter:,} 15-minute readings"
          f" = {total:,} interval readings, 1 in {QUALITY_EVERY} with a ReadingQuality;"
          f" median of {args.runs} runs, each in a fresh process")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="openhes-bench-") as tmp:
        ours = os.path.join(tmp, "meter_readings.xml")
        theirs = os.path.join(tmp, "baseline.xml")
        phases = (
            ("emit", ours),
            ("baseline_emit", theirs),
            ("parse", ours),
            ("parse_flat", ours),
            ("baseline_parse", ours),
        )
        # Rounds rather than blocks of runs: on a shared, noisy machine each phase then sees
        # the same mix of quiet and busy moments as its baseline.
        results: dict[str, list[dict]] = {phase: [] for phase, _ in phases}
        for _round in range(args.runs):
            for phase, path in phases:
                results[phase].append(run_once(phase, path, meters, per_meter))
        figures = {}
        for phase, _path in phases:
            result = summarise(results[phase])
            if result["readings"] != total:
                raise SystemExit(f"{phase}: {result['readings']:,} readings, expected {total:,}")
            figures[phase] = result
            print(f"  {phase:15s} {result['per_s']:>11,.0f} readings/s   (CPU time:"
                  f" {result['cpu_per_s']:>9,.0f}/s)   peak RSS {result['peak_rss_mb']:6.1f} MB"
                  f"   runs {result['runs_per_s']}")  # fmt: skip
        file_mb = os.path.getsize(ours) / 1e6
        baseline_mb = os.path.getsize(theirs) / 1e6

    parse, emit = figures["parse"], figures["emit"]
    out = {
        "readings": total,
        "file_mb": round(file_mb, 1),
        "parse_per_s": round(parse["per_s"]),
        "emit_per_s": round(emit["per_s"]),
        "parse_flat_per_s": round(figures["parse_flat"]["per_s"]),
        "parse_cpu_per_s": round(parse["cpu_per_s"]),
        "emit_cpu_per_s": round(emit["cpu_per_s"]),
        "parse_peak_rss_mb": round(parse["peak_rss_mb"], 1),
        "emit_peak_rss_mb": round(emit["peak_rss_mb"], 1),
        "parse_flat_peak_rss_mb": round(figures["parse_flat"]["peak_rss_mb"], 1),
        "baseline_parse_per_s": round(figures["baseline_parse"]["per_s"]),
        "baseline_emit_per_s": round(figures["baseline_emit"]["per_s"]),
        "baseline_parse_peak_rss_mb": round(figures["baseline_parse"]["peak_rss_mb"], 1),
        "baseline_emit_peak_rss_mb": round(figures["baseline_emit"]["peak_rss_mb"], 1),
        "parse_vs_baseline": round(parse["per_s"] / figures["baseline_parse"]["per_s"], 2),
        "emit_vs_baseline": round(emit["per_s"] / figures["baseline_emit"]["per_s"], 2),
        "parse_vs_target": round(parse["per_s"] / PARSE_TARGET, 2),
        "emit_vs_target": round(emit["per_s"] / EMIT_TARGET, 2),
    }
    print(f"file: {file_mb:.1f} MB (baseline writer: {baseline_mb:.1f} MB)")
    ok_parse = out["parse_vs_target"] >= 1 and out["parse_peak_rss_mb"] < RSS_TARGET_MB
    ok_emit = out["emit_vs_target"] >= 1 and out["emit_peak_rss_mb"] < RSS_TARGET_MB
    print(f"parse: {out['parse_per_s']:,}/s = {out['parse_vs_target']}x target"
          f" {PARSE_TARGET:,}/s, {out['parse_vs_baseline']}x plain lxml iterparse"
          f" -> {'OK' if ok_parse else 'BELOW TARGET'}")  # fmt: skip
    print(f"emit:  {out['emit_per_s']:,}/s = {out['emit_vs_target']}x target"
          f" {EMIT_TARGET:,}/s, {out['emit_vs_baseline']}x lxml xmlfile"
          f" -> {'OK' if ok_emit else 'BELOW TARGET'}")  # fmt: skip
    print(json.dumps(out))


if __name__ == "__main__":
    main()
