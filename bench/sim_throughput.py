"""Throughput of one simulator process (``sim_reads_per_s``).

    python bench/sim_throughput.py            # 3 runs of 10 s, 64 connections, 1,000 meters
    python bench/sim_throughput.py --quick    # 3 runs of 3 s

A full read is one session: AARQ/AARE, 4 registers (scaler_unit then value: 1.0.1.8.0,
1.0.2.8.0, 1.0.32.7.0, 1.0.31.7.0), the load profile's capture objects, 96 load-profile
rows by range, RLRQ/RLRE; 12 round trips over TCP with the WRAPPER, no ciphering.

The request bytes are recorded once from the gurux-dlms client talking to the simulator
(so they are what a real client sends); a load process then replays them on many
concurrent connections, each session addressed to another meter (shared port, wPort per
meter), checking every response's header and result. The simulator runs alone in its own
process; its throughput and CPU per read are measured over a fixed window. The figures
are medians of 3 runs; the last line is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TARGET_READS_PER_S = 150


def record_requests() -> list[bytes]:
    """The 12 requests of a full read, as gurux-dlms builds them (wPort 1)."""
    from gurux_dlms import GXByteBuffer, GXDLMSClient, GXReplyData
    from gurux_dlms.enums import Authentication, InterfaceType
    from gurux_dlms.objects import GXDLMSProfileGeneric, GXDLMSRegister

    from drivers.sim.fleet import Fleet, FleetConfig
    from drivers.sim.server import ServerConnection

    fleet = Fleet(FleetConfig(meters=1, base_port=0, shared_port=True, key_secret=b"bench" * 7))
    conn = ServerConnection("wrapper", fleet.resolver(0))
    client = GXDLMSClient(True, 1, 1, Authentication.NONE, None, InterfaceType.WRAPPER)
    requests: list[bytes] = []

    def exchange(frames):
        reply = GXReplyData()
        for frame in [frames] if isinstance(frames, bytes | bytearray) else frames:
            requests.append(bytes(frame))
            answer = b"".join(o.data for o in conn.receive_data(bytes(frame)))
            if not client.getData(GXByteBuffer(answer), reply, GXReplyData()):
                raise RuntimeError(f"incomplete answer: {conn.next_events()}")
        return reply

    client.parseAareResponse(exchange(client.aarqRequest()).data)
    for ln in ("1.0.1.8.0.255", "1.0.2.8.0.255", "1.0.32.7.0.255", "1.0.31.7.0.255"):
        register = GXDLMSRegister(ln)
        for attribute in (3, 2):
            client.updateValue(
                register, attribute, exchange(client.read(register, attribute)).value
            )
    profile = GXDLMSProfileGeneric("1.0.99.1.0.255")
    client.updateValue(profile, 3, exchange(client.read(profile, 3)).value)
    # 96 rows: (end - 24 h, end - 1 s] of 15-minute captures, a day before now.
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(
        hours=1, seconds=1
    )
    reply = exchange(
        client.readRowsByRange(profile, end - timedelta(hours=24) + timedelta(seconds=1), end)
    )
    client.updateValue(profile, 2, reply.value)
    if len(profile.buffer) != 96:
        raise RuntimeError(f"recorded a range of {len(profile.buffer)} rows, not 96")
    exchange(client.releaseRequest())
    if len(requests) != 12:
        raise RuntimeError(f"a full read is 12 requests, recorded {len(requests)}")
    return requests


# -- the simulator process -----------------------------------------------------------------
def serve(meters: int) -> None:
    """Serve a fleet on an ephemeral port; print it; on each stdin line print CPU seconds."""
    from drivers.sim.fleet import Fleet, FleetConfig

    async def main() -> None:
        fleet = Fleet(
            FleetConfig(meters=meters, base_port=0, shared_port=True, key_secret=b"bench" * 7)
        )
        servers = await fleet.serve()
        print(fleet.ports[0], flush=True)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while await reader.readline():
            usage = resource.getrusage(resource.RUSAGE_SELF)
            print(
                json.dumps({"cpu": usage.ru_utime + usage.ru_stime, "built": fleet.built}),
                flush=True,
            )
        await fleet.close(servers)

    asyncio.run(main())


# -- the load process ----------------------------------------------------------------------
def load(port: int, seconds: float, connections: int, meters: int, requests: list[bytes]) -> None:
    """Replay full reads; print the count of complete reads and of errors in the window."""

    expected = [0x61] + [0xC4] * 10 + [0x63]
    counts = {"reads": 0, "errors": 0}

    async def session_loop(worker: int, stop_at: float) -> None:
        meter = worker
        while time.monotonic() < stop_at:
            wport = (meter % meters + 1).to_bytes(2, "big")
            meter += connections
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                counts["errors"] += 1
                await asyncio.sleep(0.01)
                continue
            ok = True
            try:
                for request, tag in zip(requests, expected, strict=True):
                    writer.write(request[:4] + wport + request[6:])
                    header = await asyncio.wait_for(reader.readexactly(8), 5)
                    body = await asyncio.wait_for(
                        reader.readexactly(int.from_bytes(header[6:8], "big")), 5
                    )
                    if body[0] != tag or (tag == 0xC4 and body[3] != 0):
                        ok = False
                        break
            except (OSError, asyncio.IncompleteReadError, TimeoutError):
                ok = False
            finally:
                writer.close()
            if ok:
                counts["reads"] += 1
            else:
                counts["errors"] += 1

    async def main() -> None:
        stop_at = time.monotonic() + seconds
        await asyncio.gather(*(session_loop(i, stop_at) for i in range(connections)))

    asyncio.run(main())
    print(json.dumps(counts), flush=True)


# -- one measured run ----------------------------------------------------------------------
def run_once(
    requests_file: Path, seconds: float, connections: int, meters: int, warmup: float
) -> dict:
    me = [sys.executable, __file__]
    sim = subprocess.Popen(
        [*me, "--serve", str(meters)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        port = int(sim.stdout.readline())
        # Warm-up: build the meters and let the loops settle, outside the window.
        subprocess.run(
            [
                *me,
                "--load",
                str(port),
                str(warmup),
                str(connections),
                str(meters),
                str(requests_file),
            ],
            check=True,
            capture_output=True,
        )
        sim.stdin.write("\n")
        sim.stdin.flush()
        cpu0 = json.loads(sim.stdout.readline())["cpu"]
        t0 = time.monotonic()
        out = subprocess.run(
            [
                *me,
                "--load",
                str(port),
                str(seconds),
                str(connections),
                str(meters),
                str(requests_file),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        elapsed = time.monotonic() - t0
        sim.stdin.write("\n")
        sim.stdin.flush()
        cpu1 = json.loads(sim.stdout.readline())["cpu"]
        counts = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        sim.stdin.close()
        sim.wait(10)
    reads = counts["reads"]
    return {
        "reads_per_s": reads / seconds,
        "sim_cpu_ms_per_read": (cpu1 - cpu0) * 1000 / reads if reads else float("inf"),
        "errors": counts["errors"],
        "elapsed_s": elapsed,
    }


def measure(
    seconds: float = 10.0,
    connections: int = 64,
    meters: int = 1000,
    runs: int = 3,
    warmup: float = 2.0,
) -> dict:
    """``sim_reads_per_s`` and ``sim_cpu_ms_per_read`` (medians of ``runs``), for other
    benchmarks to import; ``runs`` holds each run's figures."""
    requests = record_requests()
    requests_file = Path(os.environ.get("TMPDIR", "/tmp")) / f"sim_bench_requests_{os.getpid()}.txt"
    requests_file.write_text("\n".join(r.hex() for r in requests))
    try:
        results = [
            run_once(requests_file, seconds, connections, meters, warmup) for _ in range(runs)
        ]
    finally:
        requests_file.unlink(missing_ok=True)
    return {
        "sim_reads_per_s": round(statistics.median(r["reads_per_s"] for r in results), 1),
        "sim_cpu_ms_per_read": round(
            statistics.median(r["sim_cpu_ms_per_read"] for r in results), 2
        ),
        "sim_errors": sum(r["errors"] for r in results),
        "target_sim_reads_per_s": TARGET_READS_PER_S,
        "cpus": os.cpu_count(),
        "runs": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--meters", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--serve", type=int, metavar="METERS", help=argparse.SUPPRESS)
    parser.add_argument("--load", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    if args.load:
        port, seconds, connections, meters, path = args.load
        requests = [bytes.fromhex(line) for line in Path(path).read_text().split()]
        load(int(port), float(seconds), int(connections), int(meters), requests)
        return

    seconds = args.seconds or (3.0 if args.quick else 10.0)
    result = measure(
        seconds, args.connections, args.meters, args.runs, warmup=1.0 if args.quick else 2.0
    )
    for i, r in enumerate(result["runs"], 1):
        print(
            f"run {i}: {r['reads_per_s']:.0f} full reads/s, simulator CPU {r['sim_cpu_ms_per_read']:.2f} ms/read, "
            f"{r['errors']} errors ({args.connections} connections, {args.meters} meters, {seconds:.0f} s)"
        )
    runs = result.pop("runs")
    print(f"sim_reads_per_s (median of {len(runs)}): {result['sim_reads_per_s']}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
