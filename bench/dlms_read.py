"""Benchmark of the DLMS driver against the simulator, on loopback.

    python bench/dlms_read.py            # 5,000 concurrent sessions, longer windows
    python bench/dlms_read.py --quick    # 1,000 sessions, short windows, under a minute

A *full read* is one session: association, 4 registers (scaler_unit and value: 1.0.1.8.0,
1.0.2.8.0, 1.0.32.7.0, 1.0.31.7.0), the load profile's capture objects (and the scalers of
its columns), 96 load-profile rows by date range, release. WRAPPER over TCP.

The simulator always runs in its own process; client measurements run in client processes
of their own (CPU is that process's ``time.process_time``, RSS its ``ru_maxrss``). Each
figure is the median of 3 runs. Human-readable lines first, one JSON object on the last line.

Figures:
  client_cpu_ms_per_read                 sequential full reads, unciphered (no auth)
  client_cpu_ms_per_read_ciphered        the same, suite 0 + HLS-GMAC, ciphering on pyca
  gurux_crypto_cpu_ms_per_read_ciphered  the same ciphered read with gurux's own AES-GCM put
                                         back (the baseline the driver replaces)
  reads_per_s_5000_sessions              one client process keeping 5,000 (quick: 1,000)
  errors_5000_sessions                   sessions open, each doing full reads back to back,
  rss_mb_5000_sessions                   against meters that answer after 100 ms
  sim_reads_per_s                        full reads per second of one simulator process,
                                         from bench/sim_throughput.py when present (its
                                         replaying client costs next to nothing), else
                                         per second of simulator CPU driven by this driver
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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

KEY_SECRET = "6f70656e6865732d62656e63682d7365637265742d3031323334353637383961"
REGISTERS = ["1.0.1.8.0.255", "1.0.2.8.0.255", "1.0.32.7.0.255", "1.0.31.7.0.255"]
CLIENT_TITLE = b"BENCHCLI"
TARGETS = {
    "client_cpu_ms_per_read": ("<=", 10.0),
    "client_cpu_ms_per_read_ciphered": ("<=", 12.0),
    "reads_per_s_5000_sessions": (">=", 90.0),
    "errors_5000_sessions": ("<=", 0),
    "rss_mb_5000_sessions": ("<", 600.0),
    "sim_reads_per_s": (">=", 150.0),
}


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _fleet_config(meters: int, security: str, latency: float) -> Any:
    from drivers.sim.faults import FaultSpec, FleetFaults, Latency
    from drivers.sim.fleet import FleetConfig

    faults = FleetFaults()
    if latency:
        faults = FleetFaults(default=FaultSpec(latency=Latency("fixed", latency)))
    return FleetConfig(
        meters=meters,
        base_port=0,
        shared_port=True,
        security=security,
        authentication="high_gmac" if security == "suite0" else "none",
        key_secret=bytes.fromhex(KEY_SECRET),
        faults=faults,
        idle_timeout=600.0,
    )


# -- the simulator process ---------------------------------------------------------------


def serve_sim(args: argparse.Namespace) -> None:
    from drivers.sim.fleet import Fleet

    _raise_fd_limit()

    async def serve() -> None:
        fleet = Fleet(_fleet_config(args.meters, args.security, args.latency))
        servers = await fleet.serve()
        print(f"PORT {fleet.ports[0]}", flush=True)
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        loop.add_reader(sys.stdin.fileno(), lambda: stop.done() or stop.set_result(None))
        await stop
        await fleet.close(servers)

    asyncio.run(serve())


class SimProcess:
    def __init__(self, meters: int, security: str = "none", latency: float = 0.0) -> None:
        cmd = [sys.executable, __file__, "--role", "sim", "--meters", str(meters),
               "--security", security, "--latency", str(latency)]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.proc.kill()
            raise RuntimeError(f"simulator did not start: {line!r}")
        self.port = int(line.split()[1])

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# -- client processes ----------------------------------------------------------------------


def _params(row: dict[str, str], port: int, frame_timeout: float) -> Any:
    from drivers.base import ConnectionParams, Timeouts

    keyed = row["security_suite"] == "0"
    return ConnectionParams(
        meter_id=row["mRID"],
        host="127.0.0.1",
        port=port,
        client_address=int(row["client_address"]),
        server_address=int(row["wport"]),
        authentication="hls-gmac" if keyed else "none",
        security_suite=0 if keyed else None,
        block_cipher_key=bytes.fromhex(row["encryption_key"]) if keyed else None,
        authentication_key=bytes.fromhex(row["authentication_key"]) if keyed else None,
        system_title=CLIENT_TITLE if keyed else None,
        timeouts=Timeouts(connect=30.0, frame=frame_timeout, operation=120.0, release=5.0),
    )


async def full_read(driver: Any, params: Any) -> int:
    async with await driver.associate(params) as meter:
        values = await meter.read_registers(REGISTERS)
        now = datetime.now(UTC)
        end = now.replace(minute=now.minute // 15 * 15, second=0, microsecond=0)
        rows = await meter.read_load_profile(end - timedelta(minutes=15 * 95), end)
    if len(values) != 4 or len(rows) != 96:
        raise RuntimeError(f"read {len(values)} registers and {len(rows)} rows")
    return len(rows)


def _book(meters: int, security: str) -> list[dict[str, str]]:
    from drivers.sim.fleet import Fleet

    return Fleet(_fleet_config(meters, security, 0.0)).address_book()


def client_cpu(args: argparse.Namespace) -> dict[str, Any]:
    """Sequential full reads to a few meters: client CPU per read for each of ``--runs``
    batches (one process, so the warm-up is paid once)."""
    from drivers.dlms import DlmsDriver, gurux_hooks

    gurux_hooks.install()
    if args.gurux_crypto:
        from gurux_dlms.GXDLMSChippering import GXDLMSChippering

        for name in ("encryptAesGcm", "decryptAesGcm"):
            original = gurux_hooks.ORIGINALS[(GXDLMSChippering, name)]
            setattr(GXDLMSChippering, name, classmethod(original.__func__))
    driver = DlmsDriver()
    params = [_params(row, args.port, 10.0) for row in _book(4, args.security)]

    async def measure() -> list[float]:
        for p in params:  # warm up: the simulator builds its meters on first contact
            await full_read(driver, p)
        batches = []
        for _ in range(args.runs):
            cpu = time.process_time()
            for i in range(args.reads):
                await full_read(driver, params[i % len(params)])
            batches.append((time.process_time() - cpu) / args.reads * 1000)
        return batches

    return {"cpu_ms_per_read": asyncio.run(measure())}


def client_sessions(args: argparse.Namespace) -> dict[str, Any]:
    """``--sessions`` concurrent sessions doing full reads back to back; reads counted in a
    window once every session has started."""
    from drivers.dlms import DlmsDriver
    from drivers.errors import DriverError

    _raise_fd_limit()
    driver = DlmsDriver()
    params = [_params(row, args.port, 30.0) for row in _book(args.sessions, "none")]

    async def measure() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        state = {"counting": False, "reads": 0, "errors": 0, "first_error": ""}

        async def session(p: Any, delay: float) -> None:
            await asyncio.sleep(delay)
            while True:
                try:
                    await full_read(driver, p)
                    if state["counting"]:
                        state["reads"] += 1
                except (DriverError, RuntimeError) as exc:
                    state["errors"] += 1
                    state["first_error"] = state["first_error"] or repr(exc)

        tasks = [
            asyncio.create_task(session(p, i * args.ramp / len(params)))
            for i, p in enumerate(params)
        ]
        await asyncio.sleep(args.ramp * 1.5)  # every session started and reading
        state["counting"] = True
        cpu, started = time.process_time(), loop.time()
        await asyncio.sleep(args.window)
        state["counting"] = False
        elapsed, cpu = loop.time() - started, time.process_time() - cpu
        reads = state["reads"]
        return {
            "reads_per_s": reads / elapsed,
            "reads": reads,
            "errors": state["errors"],
            "cpu_ms_per_read": cpu / max(reads, 1) * 1000,
            "first_error": state["first_error"],
            "sessions_running": sum(not t.done() for t in tasks),
        }

    result = asyncio.new_event_loop().run_until_complete(measure())
    result["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # The sessions are left mid-read: a benchmark process need not release 5,000
    # associations politely before it ends.
    print(json.dumps(result), flush=True)
    os._exit(0)


def client_load(args: argparse.Namespace) -> dict[str, Any]:
    """Enough concurrent sessions to keep the simulator busy, for ``--runs`` windows; prints
    GO when a window starts and its counts when it ends."""
    from drivers.dlms import DlmsDriver

    driver = DlmsDriver()
    params = [_params(row, args.port, 30.0) for row in _book(args.sessions, "none")]

    async def drive() -> None:
        for p in params:
            await full_read(driver, p)

        async def session(p: Any, deadline: float, counts: list[int]) -> None:
            while time.perf_counter() < deadline:
                await full_read(driver, p)
                counts[0] += 1

        for _ in range(args.runs):
            counts = [0]
            print("GO", flush=True)
            started = time.perf_counter()
            deadline = started + args.window
            await asyncio.gather(*(session(p, deadline, counts) for p in params))
            elapsed = time.perf_counter() - started
            print(json.dumps({"reads": counts[0], "seconds": elapsed}), flush=True)

    asyncio.run(drive())
    return {}


CLIENT_PHASES = {"cpu": client_cpu, "sessions": client_sessions, "load": client_load}


def run_client(phase: str, port: int, **options: object) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--role", "client", "--phase", phase, "--port", str(port)]
    for key, value in options.items():
        if value is True:
            cmd.append(f"--{key.replace('_', '-')}")
        elif value not in (None, False):
            cmd += [f"--{key.replace('_', '-')}", str(value)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"client {phase} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_sim(sim: SimProcess, sessions: int, window: float, runs: int) -> list[dict[str, float]]:
    """Full reads per second of simulator CPU: a client process drives it, the simulator's
    CPU is read from /proc around each counted window."""
    cmd = [sys.executable, __file__, "--role", "client", "--phase", "load", "--port",
           str(sim.port), "--sessions", str(sessions), "--window", str(window),
           "--runs", str(runs)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    out = []
    for _ in range(runs):
        line = proc.stdout.readline()
        if line.strip() != "GO":
            proc.kill()
            raise RuntimeError(f"load client did not start: {line!r}")
        cpu = sim.cpu_seconds()
        result = json.loads(proc.stdout.readline())
        cpu = sim.cpu_seconds() - cpu
        out.append(
            {
                "sim_reads_per_s": result["reads"] / cpu if cpu else 0.0,
                "sim_cpu_ms_per_read": cpu / max(result["reads"], 1) * 1000,
                "sim_wall_reads_per_s": result["reads"] / result["seconds"],
            }
        )
    proc.wait(30)
    return out


def _simulator_benchmark() -> Any:
    """The simulator's own throughput benchmark module, if the repository has it."""
    try:
        import sim_throughput  # bench/ is on sys.path when this file runs as a script
    except ImportError:
        return None
    return sim_throughput if hasattr(sim_throughput, "measure") else None


def _met(value: float, op: str, target: float) -> bool:
    if op == "<=":
        return value <= target
    if op == ">=":
        return value >= target
    return value < target


def run_bench(quick: bool, runs: int) -> dict[str, Any]:
    sessions = 1000 if quick else 5000
    reads = 60 if quick else 200
    print(f"DLMS full read: associate, 4 registers, 96 profile rows by range, release "
          f"(WRAPPER, loopback); median of {runs} runs", flush=True)  # fmt: skip
    out: dict[str, Any] = {"quick": quick, "sessions": sessions}

    def show(label: str, value: float, detail: str) -> None:
        print(f"  {label:<48} {value:9.2f}   {detail}", flush=True)

    def cpu_median(label: str, sim: SimProcess, **options: object) -> float:
        values = run_client("cpu", sim.port, runs=runs, **options)["cpu_ms_per_read"]
        value = statistics.median(values)
        show(label, value, "(" + ", ".join(f"{v:.2f}" for v in values) + ")")
        return value

    plain = SimProcess(16)
    try:
        out["client_cpu_ms_per_read"] = cpu_median(
            "client CPU ms per read, unciphered", plain, reads=reads
        )
        own_sim = None if _simulator_benchmark() else measure_sim(plain, 16, 2.0, runs)
    finally:
        plain.stop()
    sim_bench = _simulator_benchmark()
    if sim_bench is not None:
        # The simulator's own figure: its full reads per second with a replaying client
        # that costs next to nothing (bench/sim_throughput.py).
        sim = sim_bench.measure(
            seconds=2.0 if quick else 10.0, runs=runs, warmup=0.5 if quick else 2.0
        )
        out["sim_reads_per_s"] = sim["sim_reads_per_s"]
        out["sim_cpu_ms_per_read"] = sim["sim_cpu_ms_per_read"]
        detail = "(bench/sim_throughput.py: replayed reads, 64 connections)"
    else:
        assert own_sim is not None
        out["sim_reads_per_s"] = statistics.median(r["sim_reads_per_s"] for r in own_sim)
        out["sim_cpu_ms_per_read"] = statistics.median(r["sim_cpu_ms_per_read"] for r in own_sim)
        detail = "(full reads per second of simulator CPU, driven by this driver)"
    show(
        "simulator: full reads per s, one process",
        out["sim_reads_per_s"],
        f"{out['sim_cpu_ms_per_read']:.2f} ms CPU per read {detail}",
    )

    ciphered = SimProcess(4, "suite0")
    try:
        out["client_cpu_ms_per_read_ciphered"] = cpu_median(
            "client CPU ms per read, ciphered (pyca)", ciphered, reads=reads, security="suite0"
        )
        out["gurux_crypto_cpu_ms_per_read_ciphered"] = cpu_median(
            "  same read with gurux's own AES-GCM",
            ciphered,
            reads=max(reads // 6, 8),
            security="suite0",
            gurux_crypto=True,
        )
    finally:
        ciphered.stop()

    slow = SimProcess(sessions, latency=0.1)
    try:
        results = [
            run_client(
                "sessions",
                slow.port,
                sessions=sessions,
                window=5.0 if quick else 30.0,
                ramp=1.5 if quick else 10.0,
            )
            for _ in range(runs)
        ]
    finally:
        slow.stop()
    out["reads_per_s_5000_sessions"] = statistics.median(r["reads_per_s"] for r in results)
    out["errors_5000_sessions"] = sum(r["errors"] for r in results)
    out["rss_mb_5000_sessions"] = statistics.median(r["rss_mb"] for r in results)
    out["client_cpu_ms_per_read_under_load"] = statistics.median(
        r["cpu_ms_per_read"] for r in results
    )
    show(
        f"{sessions} sessions, 100 ms latency: reads per s",
        out["reads_per_s_5000_sessions"],
        "(" + ", ".join(f"{r['reads_per_s']:.1f}" for r in results) + ")",
    )
    first = next((r["first_error"] for r in results if r["first_error"]), "")
    show("  errors, all runs", out["errors_5000_sessions"], first)
    show("  peak RSS MB of the client process", out["rss_mb_5000_sessions"], "")
    show("  client CPU ms per read under that load", out["client_cpu_ms_per_read_under_load"], "")
    out["targets_missed"] = [
        name for name, (op, target) in TARGETS.items() if not _met(out[name], op, target)
    ]
    missed = out["targets_missed"]
    print("targets: " + ("all met" if not missed else "missed " + ", ".join(missed)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 sessions, under 60 s")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--role", choices=["sim", "client"], help=argparse.SUPPRESS)
    parser.add_argument("--phase", choices=sorted(CLIENT_PHASES), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--meters", type=int, default=4, help=argparse.SUPPRESS)
    parser.add_argument("--security", default="none", help=argparse.SUPPRESS)
    parser.add_argument("--latency", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--reads", type=int, default=100, help=argparse.SUPPRESS)
    parser.add_argument("--sessions", type=int, default=20, help=argparse.SUPPRESS)
    parser.add_argument("--window", type=float, default=10.0, help=argparse.SUPPRESS)
    parser.add_argument("--ramp", type=float, default=5.0, help=argparse.SUPPRESS)
    parser.add_argument("--gurux-crypto", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "sim":
        serve_sim(args)
    elif args.role == "client":
        print(json.dumps(CLIENT_PHASES[args.phase](args)))
    else:
        print(json.dumps(run_bench(args.quick, args.runs)))


if __name__ == "__main__":
    main()
