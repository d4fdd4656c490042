"""The router's message log: a MessageID is claimed once (in this process or another), the
reply is stored once, unanswered requests are listed for resume, waiting for another copy's
answer, and the caller round-trips."""

from __future__ import annotations

import asyncio
import threading

import pytest

from headend.access import SYSTEM, Principal, Role
from headend.message_log import ACCEPTED, ANSWERED, MessageLog
from mdm.database import Store, open_store

pytest_plugins = ["mdm_conftest"]

OTTO = Principal("otto", frozenset({Role.OPERATOR, Role.READER}), "wss")


def claim(log: MessageLog, message_id: str | None, **extra: object):
    values: dict = {
        "message_id": message_id,
        "verb": "create",
        "noun": "EndDeviceControls",
        "principal": OTTO,
        "channel": "soap",
        "request": b"<RequestMessage/>",
    }
    values.update(extra)
    return log.claim(**values)


def test_a_message_id_is_claimed_once_and_answered_once(store: Store) -> None:
    log = MessageLog(store)
    first = claim(log, "m-1", correlation_id="c-1")
    assert first.new and first.entry.state == ACCEPTED and first.entry.message_id == "m-1"
    assert first.entry.principal == OTTO and first.entry.correlation_id == "c-1"
    again = claim(log, "m-1", principal=SYSTEM)
    assert not again.new and again.entry.id == first.entry.id
    assert again.entry.principal == OTTO  # the first caller, not the second
    assert log.answer(first.entry.id, reply=b"<r/>", result="OK", reply_message_id="r-1")
    assert not log.answer(first.entry.id, reply=b"<other/>", result="FAILED", reply_message_id="x")
    entry = log.find("m-1")
    assert entry is not None and entry.state == ANSWERED and entry.answered
    assert (entry.reply, entry.result, entry.reply_message_id) == (b"<r/>", "OK", "r-1")
    assert entry.answered_at is not None and entry.received_at <= entry.answered_at


def test_requests_without_message_id_are_never_deduplicated(store: Store) -> None:
    log = MessageLog(store)
    a = claim(log, None, async_reply=True, ack=b"<ack/>", reply_address="http://h/x")
    b = claim(log, None, async_reply=True, ack=b"<ack/>", reply_address="http://h/x")
    assert a.new and b.new and a.entry.id != b.entry.id
    assert (
        a.entry.async_reply and a.entry.ack == b"<ack/>" and a.entry.reply_address == "http://h/x"
    )
    assert [e.id for e in log.unanswered()] == [a.entry.id, b.entry.id]
    log.answer(a.entry.id, reply=b"<r/>", result="OK", reply_message_id=None)
    assert [e.id for e in log.unanswered()] == [b.entry.id]


def test_a_too_long_message_id_is_refused(store: Store) -> None:
    with pytest.raises(ValueError):
        claim(MessageLog(store), "x" * 201)


def test_concurrent_claims_of_one_message_id_make_one_owner(store: Store, tmp_path) -> None:
    # Threads with their own connections stand in for processes; in-memory SQLite has one
    # shared connection, so that case uses a database file.
    if store.dialect == "sqlite":
        store = open_store(str(tmp_path / "race.sqlite3"))
    log = MessageLog(store)
    results: list[bool] = []
    barrier = threading.Barrier(4)

    def worker() -> None:
        barrier.wait()
        results.append(claim(log, "race").new)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False, False, False, True]


def test_wait_answered_returns_the_answer_or_none_on_timeout(store: Store) -> None:
    log = MessageLog(store)
    entry = claim(log, "w-1").entry

    async def body() -> None:
        assert await log.wait_answered(entry.id, 0.05, poll=0.01) is None

        async def answer_later() -> None:
            await asyncio.sleep(0.05)
            log.answer(entry.id, reply=b"<r/>", result="PARTIAL", reply_message_id="r")

        task = asyncio.create_task(answer_later())
        got = await log.wait_answered(entry.id, 5, poll=0.01)
        await task
        assert got is not None and got.result == "PARTIAL"

    asyncio.run(body())
