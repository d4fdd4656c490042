"""Garbage collection in a serving process: adapters.soap.collector."""

from __future__ import annotations

import gc

import pytest

from adapters.soap import collector
from adapters.soap.collector import QuietCollector


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _collector(clock: Clock, quiet_for: list[float]) -> tuple[QuietCollector, list[float]]:
    ran: list[float] = []
    made = QuietCollector(
        lambda: quiet_for[0],
        quiet=0.1,
        every=30.0,
        at_most=300.0,
        clock=clock,
        collect=lambda: ran.append(clock()),
    )
    return made, ran


def test_a_full_collection_waits_for_its_interval_and_a_pause_in_requests():
    clock, quiet_for = Clock(), [10.0]
    made, ran = _collector(clock, quiet_for)
    clock.now += 29.0
    assert not made.collect_if_due()  # quiet, but not 30 s since the last one
    clock.now += 1.0
    quiet_for[0] = 0.01
    assert not made.collect_if_due()  # 30 s, but a request has just arrived
    quiet_for[0] = 0.2
    assert made.collect_if_due() and ran == [1030.0]
    clock.now += 10.0
    assert not made.collect_if_due()  # the interval counts from the last collection


def test_a_busy_server_still_collects_at_least_every_few_minutes():
    clock, quiet_for = Clock(), [0.0]  # requests never pause
    made, ran = _collector(clock, quiet_for)
    for _ in range(299):
        clock.now += 1.0
        assert not made.collect_if_due()
    clock.now += 1.0
    assert made.collect_if_due() and ran == [1300.0] and made.collections == 1


@pytest.fixture
def restore_thresholds():
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def test_tune_leaves_only_young_collections_automatic(restore_thresholds):
    assert not collector.tuned()
    collector.tune()
    assert collector.tuned()
    assert gc.get_threshold() == (collector.YOUNG, collector.NO_AUTOMATIC, collector.NO_AUTOMATIC)


def test_a_tuned_process_makes_no_middle_collection_on_its_own(restore_thresholds):
    collector.tune()
    gc.collect()
    middle: list[int] = []

    def watch(phase: str, info: dict) -> None:
        if phase == "start" and info["generation"] > 0:
            middle.append(info["generation"])

    gc.callbacks.append(watch)
    try:
        kept = []
        for _ in range(60):  # 60 young collections' worth of surviving objects
            kept.append([[] for _ in range(collector.YOUNG)])
    finally:
        gc.callbacks.remove(watch)
    assert middle == []


def test_an_untuned_process_is_not_taken_for_a_tuned_one(restore_thresholds):
    gc.set_threshold(700, 10, collector.NO_AUTOMATIC)  # full collections off, middle ones on
    assert not collector.tuned()


def test_a_tuned_process_serves_with_the_quiet_collector_running(restore_thresholds, monkeypatch):
    import asyncio

    from adapters.soap.app import create_app
    from adapters.soap.settings import SoapSettings
    from headend.router import Router
    from mdm.database import open_store

    started: list[QuietCollector] = []
    real_run = QuietCollector.run

    async def noting_run(self: QuietCollector, poll: float = 0.05) -> None:
        started.append(self)
        await real_run(self, poll)

    monkeypatch.setattr(QuietCollector, "run", noting_run)
    store = open_store("sqlite://")
    router = Router(store, None)
    assert router.quiet_for() == float("inf")

    async def lifespan_of(app) -> None:
        async with app.router.lifespan_context(app):
            await asyncio.sleep(0.01)

    try:
        asyncio.run(lifespan_of(create_app(router, None, SoapSettings())))
        assert started == []  # default thresholds: CPython's own full collections
        collector.tune()
        asyncio.run(lifespan_of(create_app(router, None, SoapSettings())))
        assert len(started) == 1 and started[0].quiet_for == router.quiet_for
    finally:
        store.close()
