"""The CorrelationID of a request travels with the work it causes: the router's job keeps it
(jobs.correlation_id), the HeadEndEvents of the job's tasks carry it (and their JSON form),
and the EventMessages pushed for them through the outbox have it as Header CorrelationID.
A job made without one pushes EventMessages without one."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import timedelta

import pytest
from mdm_samples import RT_REGISTER_KWH, T0, interval_rows
from test_headend_router import (  # the router test's hub: store, head-end, worker, router
    DISCONNECT,
    OPERATOR,
    READER,
    controls,
    get_readings,
    hub,
    request,
    run,
)
from worker_helpers import register_fake

from cim.errors import ErrorCode
from cim.messages import parse_message
from headend import jobstore
from headend.command_json import CodecError
from headend.commands import Control, ControlAction
from headend.events import ControlDone, EventsStored, JobFinished, ReadingsStored
from headend.events import from_json as event_from_json
from headend.events import to_json as event_to_json
from headend.outbox import OutboxItem
from headend.results import fail_task
from headend.schema import CORRELATION_ID_LENGTH
from headend.service import JobRefused, JobRequest
from headend.subscriptions import Notifier, Subscription
from mdm.database import Store
from mdm.events import EndDeviceEvent
from mdm.ingest import ingest

pytest_plugins = ["mdm_conftest"]


@pytest.fixture
def meters(store: Store) -> Store:
    """Meters m0, m1, m2 reachable by the fake driver; m0 and m1 with a day of readings."""
    register_fake(store, 3)
    ingest(store, interval_rows("m0", 96) + interval_rows("m1", 96))
    return store


SUBSCRIBERS = [
    Subscription("oms", "http://127.0.0.1:9/oms", nouns=("EndDeviceEvents",)),
    Subscription("mdm", "http://127.0.0.1:9/mdm", nouns=("MeterReadings",)),
]


async def pushed(h, noun: str, count: int = 1) -> list[OutboxItem]:
    """The outbox rows pushing created ``noun`` (waits briefly for the listener)."""
    for _ in range(200):
        rows = [
            item
            for item in h.outbox.items()
            if item.kind != "reply" and parse_message(item.body).message.header.noun == noun
        ]
        if len(rows) >= count:
            return rows
        await asyncio.sleep(0.01)
    raise AssertionError(f"no {noun} pushed: {h.outbox.items()}")


def header_of(item: OutboxItem):
    message = parse_message(item.body).message
    assert message.kind.value == "EventMessage" and message.header is not None
    return message.header


def test_a_control_with_a_correlation_id_pushes_created_end_device_events_with_it(
    meters: Store,
) -> None:
    async def body() -> None:
        async with hub(meters) as h:
            h.headend.add_listener(Notifier(meters, h.outbox, configured=SUBSCRIBERS))
            got = await h.send(
                request(
                    "create",
                    "EndDeviceControls",
                    payload=controls(DISCONNECT, "m0"),
                    message_id="ctl-corr-1",
                    correlation_id="order-4711",
                ),
                OPERATOR,
            )
            assert got.result == "OK"
            assert got.message.header.correlation_id == "order-4711"  # type: ignore[union-attr]
            (item,) = await pushed(h, "EndDeviceEvents")
            header = header_of(item)
            assert (header.verb, header.noun) == ("created", "EndDeviceEvents")
            assert header.correlation_id == "order-4711" == item.correlation_id
            assert item.subscription == "oms"
            (job,) = jobstore.list_jobs(meters)
            assert job.correlation_id == "order-4711"

    run(body)


def test_without_a_correlation_id_the_message_id_correlates(meters: Store) -> None:
    async def body() -> None:
        async with hub(meters) as h:
            h.headend.add_listener(Notifier(meters, h.outbox, configured=SUBSCRIBERS))
            got = await h.send(
                request(
                    "create",
                    "EndDeviceControls",
                    payload=controls(DISCONNECT, "m1"),
                    message_id="ctl-no-corr",
                    correlation_id=None,
                ),
                OPERATOR,
            )
            assert got.result == "OK"
            (item,) = await pushed(h, "EndDeviceEvents")
            assert header_of(item).correlation_id == "ctl-no-corr"

    run(body)


def test_an_on_demand_read_pushes_created_meter_readings_with_the_correlation_id(
    meters: Store,
) -> None:
    async def body() -> None:
        async with hub(meters) as h:
            h.headend.add_listener(Notifier(meters, h.outbox, configured=SUBSCRIBERS))
            got = await h.send(
                request(
                    "get",
                    "MeterReadings",
                    get=get_readings("m2", codes=[RT_REGISTER_KWH]),
                    options=[("OnDemand", "true")],
                    message_id="od-corr-1",
                    correlation_id="read-0042",
                ),
                READER,
            )
            assert got.result == "OK", got.codes
            (item,) = await pushed(h, "MeterReadings")
            header = header_of(item)
            assert (header.verb, header.noun) == ("created", "MeterReadings")
            assert header.correlation_id == "read-0042" == item.correlation_id
            # the MessageID stays derived from the event (deterministic), not the request's
            assert header.message_id not in ("od-corr-1", "read-0042")

    run(body)


def test_a_job_without_a_correlation_id_pushes_without_one(meters: Store) -> None:
    async def body() -> None:
        async with hub(meters) as h:
            h.headend.add_listener(Notifier(meters, h.outbox, configured=SUBSCRIBERS))
            created = h.headend.submit(
                JobRequest(Control(device="*", action=ControlAction.DISCONNECT), devices=["m2"])
            )
            view = await h.headend.wait(created.job_id, timeout=10)
            assert view.state == "completed"
            (item,) = await pushed(h, "EndDeviceEvents")
            assert header_of(item).correlation_id is None and item.correlation_id is None
            assert b"CorrelationID" not in item.body
            assert jobstore.get_job(meters, created.job_id).correlation_id is None

    run(body)


def test_an_overlong_correlation_id_is_not_kept_and_a_warning_says_so(meters: Store) -> None:
    long_id = "c" * (CORRELATION_ID_LENGTH + 1)

    async def body() -> None:
        async with hub(meters) as h:
            got = await h.send(
                request(
                    "create",
                    "EndDeviceControls",
                    payload=controls(DISCONNECT, "m0"),
                    message_id="ctl-long",
                    correlation_id=long_id,
                ),
                OPERATOR,
            )
            assert got.result == "OK" and "0.1" in got.codes
            (job,) = jobstore.list_jobs(meters)
            assert job.correlation_id is None

    run(body)


def test_job_store_keeps_the_correlation_id_for_tasks_and_reruns(meters: Store) -> None:
    async def body() -> None:
        async with hub(meters, worker=False) as h:
            with pytest.raises(JobRefused) as refused:
                h.headend.submit(
                    JobRequest(
                        Control(device="*", action=ControlAction.CONNECT),
                        devices=["m0"],
                        correlation_id="x" * (CORRELATION_ID_LENGTH + 1),
                    )
                )
            assert refused.value.code is ErrorCode.BAD_VALUE
            created = h.headend.submit(
                JobRequest(
                    Control(device="*", action=ControlAction.CONNECT),
                    devices=["m0"],
                    correlation_id="c-9",
                )
            )
            job = jobstore.get_job(meters, created.job_id)
            assert job.correlation_id == "c-9"
            ((task_id, *_),) = jobstore.open_tasks(meters, created.job_id)
            spec = jobstore.load_task(meters, task_id)
            assert spec is not None and spec.correlation_id == "c-9"
            events = fail_task(
                meters, spec, state="failed", error_code="6.1", error_text="unreachable"
            )
            assert [type(e).__name__ for e in events] == ["ControlDone", "JobFinished"]
            assert {e.correlation_id for e in events} == {"c-9"}
            again = jobstore.rerun_errors(meters, created.job_id)
            assert jobstore.get_job(meters, again.job_id).correlation_id == "c-9"

    run(body)


EVENTS = [
    ReadingsStored("j1", "m0", T0, T0 + timedelta(hours=1), 4, ("a", "b"), "corr-1"),
    EventsStored(
        "j1", "m0", (EndDeviceEvent("m0", "3.26.0.47", T0, {"dlms_code": 1}, "7"),), "corr-2"
    ),
    ControlDone("j1", "m0", "disconnect", "disconnected", True, None, "corr-3"),
    JobFinished("j1", "completed", {"total": 1, "succeeded": 1}, "corr-4"),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_events_json_round_trip_with_and_without_a_correlation_id(event) -> None:
    assert event_from_json(event_to_json(event)) == event
    plain = dataclasses.replace(event, correlation_id=None)
    assert event_from_json(event_to_json(plain)) == plain
    # the JSON of a process that knows no correlation id reads as None
    body = json.loads(event_to_json(event))
    del body["correlation_id"]
    assert event_from_json(json.dumps(body)).correlation_id is None
    body["correlation_id"] = 42
    with pytest.raises(CodecError):
        event_from_json(json.dumps(body))
