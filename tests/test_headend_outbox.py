"""The durable outbox (headend.outbox): enqueue, claims under a lease, outcomes, dead rows."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from mdm_conftest import postgres_store

from cim.envelope import Header, Message, MessageKind, Reply
from cim.errors import CimError, ErrorCode
from cim.messages import emit_message
from headend.outbox import DEAD, DELIVERED, PENDING, Outbox, address_problem, soap_action_for
from mdm.database import open_store

pytest_plugins = ["mdm_conftest"]

ADDRESS = "http://127.0.0.1:9/reply"


def body(message_id: str = "m1", correlation_id: str | None = "c1") -> bytes:
    return emit_message(
        Message(
            kind=MessageKind.RESPONSE,
            header=Header(
                verb="reply",
                noun="MeterReadings",
                message_id=message_id,
                correlation_id=correlation_id,
            ),
            reply=Reply.ok(),
        )
    )


def put(outbox: Outbox, message_id: str = "m1", **changes) -> int:
    values = dict(
        address=ADDRESS,
        body=body(message_id),
        message_id=message_id,
        kind="reply",
        correlation_id="c1",
        soap_action="urn:reply",
    )
    values.update(changes)
    return outbox.enqueue(**values)


def test_enqueue_stores_the_row_and_is_idempotent_on_message_id(store):
    outbox = Outbox(store)
    first = put(outbox)
    assert put(outbox) == first  # the same MessageID again: the same row
    item = outbox.get(first)
    assert item is not None
    assert (item.state, item.attempts, item.kind, item.correlation_id) == (
        PENDING,
        0,
        "reply",
        "c1",
    )
    assert item.body == body("m1") and item.soap_action == "urn:reply"
    assert item.created_at.tzinfo is not None and item.next_attempt_at <= datetime.now(UTC)
    assert outbox.by_message_id("m1") == item
    assert outbox.counts() == {PENDING: 1, DELIVERED: 0, DEAD: 0}


def test_enqueue_joins_the_callers_transaction(store):
    outbox = Outbox(store)

    class Abandon(Exception):
        pass

    with pytest.raises(Abandon), store.begin() as conn:
        put(outbox, "lost", conn=conn)
        raise Abandon
    assert outbox.by_message_id("lost") is None
    with store.begin() as conn:
        row = put(outbox, "kept", conn=conn)
        assert put(outbox, "kept", conn=conn) == row  # seen inside the transaction too
    assert outbox.get(row).message_id == "kept"


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"address": "ftp://example.com/x"}, ErrorCode.BAD_HEADER_VALUE),
        ({"address": "not a url"}, ErrorCode.BAD_HEADER_VALUE),
        ({"address": ""}, ErrorCode.BAD_HEADER_VALUE),
        ({"address": "http://"}, ErrorCode.BAD_HEADER_VALUE),
        ({"address": "http://host:99999/"}, ErrorCode.BAD_HEADER_VALUE),
        ({"address": "http://h/" + "x" * 2000}, ErrorCode.BAD_HEADER_VALUE),
        ({"kind": "request"}, ErrorCode.BAD_HEADER_VALUE),
        ({"message_id": ""}, ErrorCode.BAD_HEADER_VALUE),
        ({"message_id": "x" * 101}, ErrorCode.BAD_HEADER_VALUE),
        ({"correlation_id": "x" * 101}, ErrorCode.BAD_HEADER_VALUE),
        ({"body": b""}, ErrorCode.MISSING_PAYLOAD),
    ],
)
def test_enqueue_refuses_what_cannot_be_delivered(changes, code):
    store = open_store("sqlite://")  # refused before the database is asked
    outbox = Outbox(store)
    with pytest.raises(CimError) as caught:
        put(outbox, **changes)
    assert caught.value.error is code
    assert outbox.counts()[PENDING] == 0
    store.close()


def test_address_problem():
    assert address_problem("https://mdm.example:8443/in?x=1") is None
    assert "http or https" in address_problem("file:///etc/passwd")
    assert "no host" in address_problem("http:///path")


def test_soap_action_for():
    assert (
        soap_action_for("created", "EndDeviceEvents")
        == "http://iec.ch/TC57/2011/EndDeviceEvents/CreatedEndDeviceEvents"
    )


def test_claim_takes_due_rows_under_a_lease(store):
    outbox = Outbox(store)
    a = put(outbox, "a")
    b = put(outbox, "b")
    later = put(outbox, "later", not_before=datetime.now(UTC) + timedelta(hours=1))
    now = datetime.now(UTC)
    claimed = outbox.claim("w1", limit=10, lease=60, now=now)
    assert [i.id for i in claimed] == [a, b]
    assert all(i.attempts == 1 and i.claimed_by == "w1" for i in claimed)
    assert outbox.claim("w2", limit=10, lease=60, now=now) == []  # leased
    # After the lease a second claimer takes them again (the first one died).
    again = outbox.claim("w2", limit=1, lease=60, now=now + timedelta(seconds=61))
    assert [(i.id, i.attempts) for i in again] == [(a, 2)]
    assert outbox.next_due() is not None
    assert later not in [i.id for i in claimed]


def test_outcomes_delivered_retry_dead_and_retry_again(store):
    outbox = Outbox(store)
    row = put(outbox)
    now = datetime.now(UTC)
    [item] = outbox.claim("w1", now=now)
    # Only the claimer may record a refusal.
    assert not outbox.mark_failed(row, "someone-else", error="x", retry_at=now)
    assert outbox.mark_failed(row, "w1", error="HTTP 500", retry_at=now + timedelta(seconds=5))
    item = outbox.get(row)
    assert (item.state, item.last_error, item.claimed_until) == (PENDING, "HTTP 500", None)
    assert outbox.claim("w1", now=now) == []  # not due yet
    [item] = outbox.claim("w1", now=now + timedelta(seconds=6))
    assert outbox.mark_failed(row, "w1", error="still refused " + "x" * 3000, retry_at=None)
    item = outbox.get(row)
    assert item.state == DEAD and len(item.last_error) == 2000
    assert [i.id for i in outbox.items(DEAD)] == [row]
    assert outbox.claim("w1", now=now + timedelta(days=9)) == []  # dead rows are left alone
    assert outbox.retry([]) == 0
    assert outbox.retry() == 1
    [item] = outbox.claim("w2")
    assert item.attempts == 3
    assert outbox.mark_delivered(row, "w2")
    assert not outbox.mark_delivered(row, "w2")  # already delivered
    item = outbox.get(row)
    assert item.state == DELIVERED and item.delivered_at is not None and item.last_error is None
    assert outbox.counts() == {PENDING: 0, DELIVERED: 1, DEAD: 0}


def test_release_gives_claims_back(store):
    outbox = Outbox(store)
    put(outbox, "a")
    [item] = outbox.claim("w1")
    assert outbox.release([item.id], "other") == 0
    assert outbox.release([item.id], "w1") == 1
    assert [i.id for i in outbox.claim("w2")] == [item.id]
    assert outbox.release([], "w2") == 0


def test_a_file_store_keeps_rows_across_a_reopen(tmp_path):
    path = tmp_path / "outbox.sqlite3"
    store = open_store(str(path))
    row = put(Outbox(store), "durable")
    store.close()
    store = open_store(str(path))
    try:
        assert Outbox(store).get(row).message_id == "durable"
    finally:
        store.close()


@pytest.mark.services
def test_concurrent_claimers_on_postgresql_never_share_a_row(postgres_url):
    for store in postgres_store(postgres_url):
        _claim_concurrently(store, postgres_url)


def _claim_concurrently(store, postgres_url: str) -> None:
    outbox = Outbox(store)
    for n in range(120):
        put(outbox, f"m{n}")
    others = [open_store(postgres_url, schema=store.schema, migrate=False) for _ in range(4)]
    taken: list[list[int]] = [[] for _ in others]
    barrier = threading.Barrier(len(others))

    def claimer(index: int) -> None:
        mine = Outbox(others[index])
        barrier.wait()
        while True:
            items = mine.claim(f"w{index}", limit=7, lease=60)
            if not items:
                return
            taken[index].extend(i.id for i in items)

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(len(others))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for other in others:
        other.close()
    every = [row for rows in taken for row in rows]
    assert len(every) == len(set(every)) == 120
    assert sum(1 for rows in taken if rows) >= 2  # they really ran side by side


def test_the_command_line(tmp_path, capsys):
    from adapters.cli import main

    database = ["--database", f"sqlite:///{tmp_path / 'cli.sqlite3'}"]
    assert (
        main(
            [
                "subscriptions",
                "add",
                "mdm",
                "http://mdm.example/in",
                "--noun",
                "MeterReadings",
                *database,
            ]
        )
        == 0
    )
    assert main(["subscriptions", "add", "bad", "ftp://x.example/", *database]) == 1
    assert main(["subscriptions", "disable", "mdm", *database]) == 0
    assert main(["subscriptions", "remove", "nobody", *database]) == 1
    assert main(["subscriptions", "list", *database]) == 0
    out = capsys.readouterr()
    assert "mdm  disabled  * MeterReadings  http://mdm.example/in" in out.out
    assert "not an http or https URL" in out.err and "no subscription 'nobody'" in out.err
    store = open_store(database[1])
    outbox = Outbox(store)
    row = put(outbox, "dead-one")
    assert len(outbox.claim("w")) == 1
    outbox.mark_failed(row, "w", error="HTTP 503: busy", retry_at=None)
    store.close()
    assert main(["outbox", "list", "--state", "dead", *database]) == 0
    assert "pending 0, delivered 0, dead 1" in capsys.readouterr().out
    assert main(["outbox", "retry", *database]) == 1
    assert main(["outbox", "retry", str(row), *database]) == 0
    assert main(["outbox", "retry", str(row), *database]) == 1  # not dead any more
    assert main(["outbox", "list", *database]) == 0
    assert "pending 1, delivered 0, dead 0" in capsys.readouterr().out
    assert main(["outbox", "deliver", "--lease", "1", "--timeout", "30", *database]) == 2
