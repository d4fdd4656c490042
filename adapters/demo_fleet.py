"""The demo's simulated DLMS fleet (:mod:`drivers.sim.fleet`) in a process of its own, so the
meters and the head-end use both cores: every meter on one shared loopback port (WRAPPER,
meters told apart by wPort), no authentication.

Run as ``python -m adapters.demo_fleet --meters N``: it prints ``PORT <n>`` once listening,
then takes commands on stdin, one per line, answering ``OK`` or ``ERROR <reason>``:

    outage INDEX START END     a supply outage of meter INDEX from START to END (Unix
                               seconds): silent meanwhile, power-down/up events in its log

End of input stops it. :class:`FleetProcess` is the parent's side.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import subprocess
import sys
import tempfile
import threading
from typing import IO

from drivers.sim.fleet import Fleet, FleetConfig

KEY_SECRET = b"openhes-demo-fleet-key-secret-01"
SEED = 7


def fleet_config(meters: int) -> FleetConfig:
    """The demo fleet's configuration (the parent builds the address book from the same)."""
    return FleetConfig(
        meters=meters, base_port=0, shared_port=True, seed=SEED, key_secret=KEY_SECRET
    )


def address_book(meters: int, port: int) -> list[dict[str, str]]:
    """The fleet's device-import rows, with the port it listens on."""
    rows = Fleet(fleet_config(meters)).address_book()
    for row in rows:
        row["port"] = str(port)
    return rows


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _command(fleet: Fleet, line: str) -> str:
    parts = line.split()
    if not parts:
        return "ERROR empty command"
    if parts[0] == "outage" and len(parts) == 4:
        try:
            index, start, end = int(parts[1]), float(parts[2]), float(parts[3])
        except ValueError:
            return "ERROR outage INDEX START END: numbers expected"
        if not 0 <= index < fleet.config.meters or not start < end:
            return "ERROR no such meter, or the outage ends before it starts"
        fleet.meter(index).power_outage(start, end)
        return "OK"
    return f"ERROR unknown command {parts[0]!r}"


async def _serve(meters: int, commands: IO[str], answers: IO[str]) -> None:
    fleet = Fleet(fleet_config(meters))
    servers = await fleet.serve()
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    print(f"PORT {fleet.ports[0]}", file=answers, flush=True)

    def read() -> None:
        for line in commands:
            future = asyncio.run_coroutine_threadsafe(_answer(fleet, line), loop)
            print(future.result(), file=answers, flush=True)
        loop.call_soon_threadsafe(done.set)

    threading.Thread(target=read, name="demo-fleet-commands", daemon=True).start()
    try:
        await done.wait()
    finally:
        await fleet.close(servers)


async def _answer(fleet: Fleet, line: str) -> str:
    return _command(fleet, line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adapters.demo_fleet")
    parser.add_argument("--meters", type=int, required=True)
    args = parser.parse_args(argv)
    raise_fd_limit()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.meters, sys.stdin, sys.stdout))
    return 0


class FleetProcess:
    """The fleet in a child process (see the module docstring)."""

    def __init__(self, meters: int, timeout: float = 30.0) -> None:
        self.meters = meters
        self._errors = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed by stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "adapters.demo_fleet", "--meters", str(meters)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._errors,
            text=True,
        )
        assert self.proc.stdout is not None
        line = _readline(self.proc.stdout, timeout)
        if not line.startswith("PORT "):
            error = ""
            with contextlib.suppress(Exception):
                self.proc.kill()
                self.proc.wait(5)
                self._errors.seek(0)
                error = self._errors.read()
            last = (error or line or "no output").strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"the simulated fleet did not start: {last[0]}")
        self.port = int(line.split()[1])

    def address_book(self) -> list[dict[str, str]]:
        return address_book(self.meters, self.port)

    def outage(self, index: int, start: float, end: float) -> None:
        """A power outage of meter ``index`` (Unix seconds); RuntimeError if refused."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"outage {index} {start} {end}\n")
        self.proc.stdin.flush()
        answer = _readline(self.proc.stdout, 10.0).strip()
        if answer != "OK":
            raise RuntimeError(f"the simulator refused the outage: {answer or 'no answer'}")

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(OSError, ValueError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._errors.close()

    def __enter__(self) -> FleetProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _readline(stream: IO[str], timeout: float) -> str:
    """A line from ``stream`` within ``timeout`` seconds ("" on timeout or end)."""
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return result[0] if result else ""


if __name__ == "__main__":
    sys.exit(main())
