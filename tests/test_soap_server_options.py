"""How the SOAP server runs: one SO_REUSEPORT socket per worker process, the C HTTP parser
and event loop when installed; and the lane that lets deferred work yield to requests."""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import time

import pytest

from adapters.soap.server import (
    HTTP_IMPLEMENTATION,
    LOOP_IMPLEMENTATION,
    gunicorn_options,
    reuse_port,
    uvicorn_config,
)
from adapters.soap.settings import SoapSettings
from headend.handlers import DeferredLane, run_blocking
from mdm.database import open_store


def test_several_workers_listen_each_on_their_own_socket():
    assert gunicorn_options(SoapSettings(port=8080, workers=2))["reuse_port"] is True
    assert reuse_port(SoapSettings(port=8080, workers=1)) is False
    # Port 0 would give each worker a port of its own.
    assert reuse_port(SoapSettings(port=0, workers=2)) is False


def test_uvicorn_uses_httptools_and_uvloop_when_installed():
    config = uvicorn_config(object(), SoapSettings())
    has_httptools = importlib.util.find_spec("httptools") is not None
    assert ("httptools" if has_httptools else "h11") == HTTP_IMPLEMENTATION
    assert config.http == HTTP_IMPLEMENTATION and config.loop == LOOP_IMPLEMENTATION


def test_deferred_steps_run_after_what_is_waiting_and_one_at_a_time(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'lane.sqlite3'}")
    order: list[str] = []

    def step(name: str) -> str:
        order.append(name)
        return name

    async def request(name: str) -> None:
        order.append(name)

    async def main() -> list[str]:
        lane = DeferredLane()
        deferred = [
            asyncio.create_task(run_blocking(store, step, f"deferred{i}", lane=lane))
            for i in range(2)
        ]
        # Requests that become ready with (here: just after) the deferred steps go first.
        requests = [asyncio.create_task(request(f"request{i}")) for i in (1, 2)]
        await asyncio.gather(*requests)
        return list(await asyncio.gather(*deferred))

    try:
        assert asyncio.run(main()) == ["deferred0", "deferred1"]
    finally:
        store.close()
    assert order.index("request1") < order.index("deferred0")
    assert order.index("request2") < order.index("deferred0") < order.index("deferred1")


def test_a_deferred_step_waits_for_a_quiet_moment_between_requests(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'lane.sqlite3'}")
    lane = DeferredLane(quiet=0.05, share=0.001)
    times: dict[str, float] = {}

    async def main() -> None:
        # A step of 10 ms first: with a share of 0.1 %, the next is owed no turn for 10 s.
        await run_blocking(store, time.sleep, 0.01, lane=lane)
        lane.request_arrived()
        step = asyncio.create_task(
            run_blocking(store, lambda: times.setdefault("step", time.monotonic()), lane=lane)
        )
        for _ in range(10):  # a request every 20 ms: never quiet for 50 ms
            await asyncio.sleep(0.02)
            assert not step.done()
            lane.request_arrived()
        times["last request"] = time.monotonic()
        await step

    try:
        asyncio.run(main())
    finally:
        store.close()
    assert times["step"] - times["last request"] >= 0.045


def test_deferred_steps_keep_their_share_of_the_loop_under_steady_requests(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'lane.sqlite3'}")
    lane = DeferredLane(quiet=0.05, share=0.25)  # a 30 ms step: the next waits <= 90 ms
    ran: list[float] = []

    def step() -> None:
        ran.append(time.monotonic())
        time.sleep(0.03)

    async def main() -> None:
        steps = [asyncio.create_task(run_blocking(store, step, lane=lane)) for _ in range(4)]
        while not all(s.done() for s in steps):  # requests never stop
            lane.request_arrived()
            await asyncio.sleep(0.005)

    try:
        asyncio.run(main())
    finally:
        store.close()
    gaps = [b - a for a, b in itertools.pairwise(ran)]
    assert len(ran) == 4
    assert all(0.03 + 0.085 <= gap < 1.0 for gap in gaps), gaps


def test_a_deferred_lane_share_is_checked():
    with pytest.raises(ValueError, match="share"):
        DeferredLane(share=0)
