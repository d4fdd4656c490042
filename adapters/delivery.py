"""The delivery loop: sends the rows of the durable outbox (:mod:`headend.outbox`) as SOAP 1.1
requests, at least once, with retries.

Each pass claims the due rows (a lease, safe with several delivery processes), POSTs each
one's message inside a SOAP 1.1 Envelope to its address with its SOAPAction, and records
the outcome:

- **delivered**: an HTTP 2xx answer that is not a SOAP Fault and not a ResponseMessage with
  Result FAILED (an empty 2xx body, as some receivers send with 202, counts as accepted);
- **refused** (everything else: connection refused, timeout, TLS failure, HTTP 4xx/5xx, a
  SOAP Fault, Result FAILED): tried again after an exponential backoff with jitter,
  ``initial * multiplier**(attempts-1)`` seconds capped at ``max_backoff``, each delay
  multiplied by a random factor in ``[1 - jitter, 1 + jitter]`` so that many messages
  refused together do not come back together; the last try is at the row's maximum age,
  and a row refused at or past it is **dead** (kept, listed by ``Outbox.items("dead")``,
  made pending again by ``Outbox.retry``).

Every attempt sends the same body, hence the same MessageID: a receiver that got a message
but whose answer was lost (or whose sender was killed before recording the delivery) gets
it again and drops the duplicate. A row claimed by a process that died is claimed again once
its lease has run out, so the lease must exceed the HTTP timeout (checked).

**HTTP client: zeep's transport.** zeep is the project's SOAP client (the issue asks for
outbound messages through it). The outbox already holds each message as a finished
61968-100 document, so zeep's WSDL and typing layer is not used: building the call from a
WSDL would convert the ``xs:any`` payload through zeep's object model (it moves lxml
elements, see the SOAP research) and add nothing. What is used is zeep's ``Transport``:
its ``requests`` session is where TLS settings (CA bundle, client certificate for mutual
TLS), proxies and authentication are configured, and the same ``Transport`` can be shared
with zeep clients built from WSDLs. The POST itself goes through that session with
``stream=True`` so the answer read back is capped (``max_response_bytes``). ``requests`` is
blocking, so each POST runs in a worker thread (``asyncio.to_thread``), at most
``concurrency`` at a time; httpx would have been async-native, but is only a test dependency
of the project.

Database calls (claim, mark) are short single-row transactions and run on the event loop's
thread, which also keeps SQLite's in-memory store (one shared connection) safe.

Run one as its own process with ``python -m adapters.delivery --database URL``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import re
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import requests
from lxml import etree
from zeep.transports import Transport

from cim import namespaces as ns
from cim.envelope import Result
from cim.errors import CimError
from cim.messages import parse_message_element
from cim.xmlsafe import XmlLimits, parse_bytes
from headend.outbox import Outbox, OutboxItem, address_problem, default_worker_name, utcnow

log = logging.getLogger("openhes.delivery")

SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
_DECLARATION = re.compile(rb"^\s*<\?xml[^>]*\?>\s*")
_ENCODING = re.compile(rb"""encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
_ENVELOPE = re.compile(rb"^<(?:[\w.-]+:)?Envelope[\s>/]")


@dataclass(frozen=True)
class DeliveryPolicy:
    """How the loop retries. Times in seconds."""

    initial_backoff: float = 2.0
    multiplier: float = 2.0
    max_backoff: float = 600.0
    jitter: float = 0.25
    max_age: timedelta = timedelta(hours=24)
    timeout: float = 30.0  # HTTP connect and read timeout, each
    lease: float = 120.0  # a claimed row is left alone this long (must exceed timeout)
    concurrency: int = 4  # POSTs in flight at once
    poll_interval: float = 1.0  # longest sleep when nothing is due (wake() cuts it short)
    max_response_bytes: int = 1024 * 1024

    def __post_init__(self) -> None:
        if self.lease <= self.timeout * 2:
            raise ValueError("the lease must be more than twice the HTTP timeout")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        if self.initial_backoff <= 0 or self.multiplier < 1 or self.concurrency < 1:
            raise ValueError("initial_backoff > 0, multiplier >= 1, concurrency >= 1")

    def backoff(self, attempts: int, rng: random.Random) -> float:
        """Seconds to wait after the ``attempts``-th refused try (1 for the first)."""
        exponent = max(0, attempts - 1)
        base = min(self.max_backoff, self.initial_backoff * self.multiplier ** min(exponent, 64))
        return base * rng.uniform(1 - self.jitter, 1 + self.jitter)


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    error: str | None = None
    status: int | None = None
    permanent: bool = False  # no retry can help (the address itself is unusable)


class Delivery:
    """Delivers one outbox's rows. ``run(stop)`` until ``stop`` is set; or ``deliver_due()``
    for one pass (tests, a command that drains the outbox)."""

    def __init__(
        self,
        outbox: Outbox,
        *,
        policy: DeliveryPolicy | None = None,
        transport: Transport | None = None,
        worker: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.outbox = outbox
        self.policy = policy or DeliveryPolicy()
        self.transport = transport or Transport(
            timeout=self.policy.timeout, operation_timeout=self.policy.timeout
        )
        self.worker = worker or default_worker_name()
        self.rng = rng or random.Random()
        self.delivered = 0
        self.refused = 0
        self.dead = 0
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ the loop

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        log.info("delivery %s started", self.worker)
        try:
            while not stop.is_set():
                try:
                    handled = await self.deliver_due()
                except Exception:  # the database is away: log, wait, try again
                    log.exception("delivery pass failed; retrying")
                    handled = 0
                if handled:
                    continue
                await self._idle(stop)
        finally:
            self._wake = None
            log.info("delivery %s stopped", self.worker)

    async def _idle(self, stop: asyncio.Event) -> None:
        assert self._wake is not None
        delay = self.policy.poll_interval
        try:
            due = self.outbox.next_due()
        except Exception:
            due = None
        if due is not None:
            delay = min(delay, max(0.0, (due - utcnow()).total_seconds()) + 0.001)
        self._wake.clear()
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
        try:
            await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    def wake(self) -> None:
        """Something was enqueued: look now instead of at the next poll. Any thread."""
        loop, event = self._loop, self._wake
        if loop is not None and event is not None and not loop.is_closed():
            loop.call_soon_threadsafe(event.set)

    async def deliver_due(self) -> int:
        """One pass: claim up to ``concurrency`` due rows, send them, record the outcomes;
        returns how many rows were handled."""
        items = self.outbox.claim(
            self.worker, limit=self.policy.concurrency, lease=self.policy.lease
        )
        if not items:
            return 0
        outcomes = await asyncio.gather(*(asyncio.to_thread(self.send, item) for item in items))
        for item, outcome in zip(items, outcomes, strict=True):
            self.record(item, outcome)
        return len(items)

    async def drain(self, timeout: float = 30.0) -> None:
        """Deliver until nothing is pending and due (or ``timeout``); for commands and tests."""
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            if not await self.deliver_due():
                return
        raise TimeoutError("the outbox did not drain in time")

    # ------------------------------------------------------------------ one message

    def send(self, item: OutboxItem) -> Outcome:
        """POST one row (blocking); never raises."""
        problem = address_problem(item.address)
        if problem is not None:
            return Outcome(False, problem, permanent=True)
        try:
            envelope = soap_envelope(item.body)
        except ValueError as exc:
            return Outcome(False, f"the stored body cannot be sent: {exc}", permanent=True)
        headers = {
            "Content-Type": "text/xml; charset=utf-8",
            "SOAPAction": f'"{item.soap_action or ""}"',
        }
        try:
            response = self.transport.session.post(
                item.address,
                data=envelope,
                headers=headers,
                timeout=(self.policy.timeout, self.policy.timeout),
                stream=True,
                allow_redirects=False,
            )
        except requests.exceptions.Timeout as exc:
            return Outcome(False, f"timed out after {self.policy.timeout:g} s: {_short(exc)}")
        except requests.exceptions.ConnectionError as exc:
            return Outcome(False, f"connection failed: {_short(exc)}")
        except requests.exceptions.RequestException as exc:
            return Outcome(False, f"HTTP request failed: {_short(exc)}")
        try:
            content = _read_capped(response, self.policy.max_response_bytes)
        except requests.exceptions.RequestException as exc:
            return Outcome(False, f"reading the answer failed: {_short(exc)}", response.status_code)
        finally:
            response.close()
        return judge(response.status_code, content, self.policy.max_response_bytes)

    def record(self, item: OutboxItem, outcome: Outcome) -> None:
        now = utcnow()
        if outcome.delivered:
            self.outbox.mark_delivered(item.id, self.worker, now=now)
            self.delivered += 1
            log.info(
                "delivered %s to %s (attempt %d)", item.message_id, item.address, item.attempts
            )
            return
        error = outcome.error or "refused"
        retry_at = None if outcome.permanent else self.retry_time(item, now)
        if self.outbox.mark_failed(item.id, self.worker, error=error, retry_at=retry_at):
            if retry_at is None:
                self.dead += 1
                log.warning(
                    "gave up on %s to %s after %d attempts: %s",
                    item.message_id,
                    item.address,
                    item.attempts,
                    error,
                )
            else:
                self.refused += 1
                log.info(
                    "%s to %s refused (attempt %d, next at %s): %s",
                    item.message_id,
                    item.address,
                    item.attempts,
                    retry_at.isoformat(),
                    error,
                )

    def retry_time(self, item: OutboxItem, now: datetime) -> datetime | None:
        """When to try again after a refusal, or None (dead) once the row is too old."""
        expires = item.created_at + self.policy.max_age
        if now >= expires:
            return None
        delay = timedelta(seconds=self.policy.backoff(item.attempts, self.rng))
        return min(now + delay, expires)


def soap_envelope(body: bytes) -> bytes:
    """``body`` (a UTF-8 XML document) inside a SOAP 1.1 Envelope's Body; a body that is
    already an Envelope is sent as it is. A document in another encoding is re-encoded."""
    data = bytes(body)
    declaration = _DECLARATION.match(data)
    if declaration is not None:
        encoding = _ENCODING.search(declaration.group(0))
        if encoding is not None and encoding.group(1).lower() not in (b"utf-8", b"utf8"):
            try:
                root = parse_bytes(data)
            except CimError as exc:
                raise ValueError(exc.reason) from None
            data = etree.tostring(root, encoding="UTF-8")
        else:
            data = data[declaration.end() :]
    data = data.strip()
    if not data.startswith(b"<"):
        raise ValueError("the body is not an XML document")
    if _ENVELOPE.match(data):
        return b'<?xml version="1.0" encoding="UTF-8"?>\n' + data
    return (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<soapenv:Envelope xmlns:soapenv="'
        + SOAP11.encode()
        + b'"><soapenv:Body>'
        + data
        + b"</soapenv:Body></soapenv:Envelope>"
    )


def judge(status: int, content: bytes, limit: int = 1024 * 1024) -> Outcome:
    """What an HTTP answer means for a delivery (see the module docstring)."""
    fault = _fault_text(content, limit)
    if not 200 <= status < 300:
        why = f"SOAP Fault {fault}" if fault else _snippet(content)
        return Outcome(False, f"HTTP {status}: {why}".rstrip(": "), status)
    if fault:
        return Outcome(False, f"HTTP {status} with a SOAP Fault {fault}", status)
    failed = _failed_reply(content, limit)
    if failed:
        return Outcome(
            False, f"HTTP {status}, the receiver answered Result FAILED: {failed}", status
        )
    return Outcome(True, status=status)


def _document(content: bytes, limit: int) -> etree._Element | None:
    """The first Body child of a SOAP answer (or the root of a bare one); None when the
    answer is empty or not XML."""
    if not content.strip():
        return None
    try:
        root = parse_bytes(content, XmlLimits(max_bytes=limit))
    except CimError:
        return None
    namespace, local = ns.split_tag(root.tag)
    if namespace in (ns.SOAP11_ENVELOPE, ns.SOAP12_ENVELOPE) and local == "Envelope":
        for child in root:
            if isinstance(child.tag, str) and ns.local_name(child.tag) == "Body":
                return next((c for c in child if isinstance(c.tag, str)), None)
        return None
    return root


def _fault_text(content: bytes, limit: int) -> str | None:
    element = _document(content, limit)
    if element is None or ns.local_name(element.tag) != "Fault":
        return None
    texts = {
        ns.local_name(c.tag): " ".join("".join(c.itertext()).split())
        for c in element.iter()
        if isinstance(c.tag, str)
    }
    code = texts.get("faultcode") or texts.get("Value") or "?"
    reason = texts.get("faultstring") or texts.get("Text") or ""
    return f"{code}: {reason}"[:500]


def _failed_reply(content: bytes, limit: int) -> str | None:
    element = _document(content, limit)
    if element is None:
        return None
    try:
        message = parse_message_element(element, require_served_noun=False).message
    except CimError:
        return None
    if message.reply is None or message.reply.result is not Result.FAILED:
        return None
    errors = "; ".join(f"{e.code} {e.reason or ''}".strip() for e in message.reply.errors)
    return errors[:500] or "no reason given"


def _read_capped(response: requests.Response, limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    for chunk in response.iter_content(chunk_size=65536):
        parts.append(chunk)
        size += len(chunk)
        if size > limit:
            break
    return b"".join(parts)[: limit + 1]


def _snippet(content: bytes) -> str:
    return " ".join(content[:200].decode("utf-8", "replace").split())


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 300 else text[:297] + "..."


# ---------------------------------------------------------------------- a process


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m adapters.delivery``: deliver until SIGTERM/SIGINT."""
    from mdm.database import open_store

    parser = argparse.ArgumentParser(
        prog="python -m adapters.delivery", description="Deliver the outbox of a store."
    )
    parser.add_argument("--database", help="store URL (default: $OPENHES_DATABASE_URL)")
    parser.add_argument("--timeout", type=float, default=DeliveryPolicy.timeout)
    parser.add_argument("--lease", type=float, default=DeliveryPolicy.lease)
    parser.add_argument("--poll", type=float, default=DeliveryPolicy.poll_interval)
    parser.add_argument("--initial-backoff", type=float, default=DeliveryPolicy.initial_backoff)
    parser.add_argument(
        "--max-age-hours", type=float, default=DeliveryPolicy.max_age.total_seconds() / 3600
    )
    parser.add_argument("--concurrency", type=int, default=DeliveryPolicy.concurrency)
    parser.add_argument("--schema", help="PostgreSQL schema (search_path)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        policy = DeliveryPolicy(
            timeout=args.timeout,
            lease=args.lease,
            poll_interval=args.poll,
            initial_backoff=args.initial_backoff,
            max_age=timedelta(hours=args.max_age_hours),
            concurrency=args.concurrency,
        )
    except ValueError as exc:
        print(f"delivery: {exc}", file=sys.stderr)
        return 2
    store = open_store(args.database, schema=args.schema)
    delivery = Delivery(Outbox(store), policy=policy)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await delivery.run(stop)

    try:
        asyncio.run(serve())
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
