"""A loopback SOAP receiver: the other end of OpenHES's pushes, for the demo and the tests.

It stands where an MDM, OMS or CIS would: it accepts SOAP 1.1 (or bare) EventMessages and
ResponseMessages POSTed to any path, answers each with a ResponseMessage (Result OK,
correlated to the message), drops duplicate MessageIDs (at-least-once delivery sends a
message again after a crash; the receiver keeps it once and acknowledges every copy), and
keeps what it got, in arrival order, with a condition to wait on.

For tests of retries it can refuse its first N deliveries, each as an HTTP 500 with a SOAP
Fault, a bare HTTP 500, or a ResponseMessage with Result FAILED; and it can hold its answer
to a given MessageID (so a test can kill the sender after the receiver got the body but
before the sender heard back).

``Receiver`` runs a Starlette app under uvicorn in a thread, on a port the OS chooses::

    with Receiver() as receiver:          # started, listening on 127.0.0.1:<port>
        url = receiver.url("/mdm")
        ...
        receiver.wait_for(1, timeout=5)
        receiver.messages[0].noun         # "MeterReadings"
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import uvicorn
from lxml import etree
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cim.envelope import Header, Message, MessageKind, Reply, ReplyError, Result, Verb
from cim.errors import CimError, ErrorCode
from cim.messages import emit_message, new_message_id, parse_message
from cim.xmlsafe import XmlLimits

RefuseMode = Literal["fault", "http500", "failed"]
SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
_CONTENT_TYPE = "text/xml; charset=utf-8"
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Received:
    """One message kept by the receiver (the first copy of its MessageID)."""

    message_id: str | None
    correlation_id: str | None
    kind: str  # EventMessage, ResponseMessage, ...
    verb: str | None
    noun: str | None
    soap_action: str | None
    path: str
    body: bytes  # what was POSTed, as is
    message: Message = field(repr=False)
    received_at: datetime


class Receiver:
    """See the module docstring. Thread-safe: the app runs in the server's thread, the
    caller reads ``messages`` and the counters from its own."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        refuse: int = 0,
        refuse_mode: RefuseMode = "fault",
        max_bytes: int = DEFAULT_MAX_BYTES,
        source: str = "OpenHES-receiver",
    ) -> None:
        self.host = host
        self.port = port
        self.refuse_remaining = refuse
        self.refuse_mode: RefuseMode = refuse_mode
        self.max_bytes = max_bytes
        self.source = source
        self.messages: list[Received] = []
        self.deliveries = 0  # every POST that carried a readable message, duplicates included
        self.duplicates = 0
        self.refused = 0
        self.rejected = 0  # not a readable message: answered with a SOAP Client Fault
        self.arrivals: list[str | None] = []  # MessageID of every readable POST, in order
        self._seen: set[str] = set()
        self._lock = threading.Condition()
        self._holds: dict[str, float] = {}
        self.on_receive: Callable[[Received], None] | None = None
        self._stopping = False
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self.app = Starlette(routes=[Route("/{path:path}", self._endpoint, methods=["POST"])])

    # ------------------------------------------------------------------ running

    def start(self, timeout: float = 10.0) -> Receiver:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self._socket = sock
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_keep_alive=5,
            timeout_graceful_shutdown=2,
        )
        server = uvicorn.Server(config)
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._server = server
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="openhes-receiver", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the receiver did not start")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        self._stopping = True
        if self._server is not None:
            self._server.should_exit = True
        with self._lock:
            self._holds.clear()
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, path: str = "/") -> str:
        return f"http://{self.host}:{self.port}/{path.lstrip('/')}"

    # ------------------------------------------------------------------ test controls

    def refuse_next(self, count: int, mode: RefuseMode = "fault") -> None:
        with self._lock:
            self.refuse_remaining = count
            self.refuse_mode = mode

    def hold(self, message_id: str, seconds: float) -> None:
        """Keep (and record) the message with this MessageID at once, but answer only
        after ``seconds`` (the first copy only)."""
        with self._lock:
            self._holds[message_id] = seconds

    def wait_for(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until ``count`` distinct messages were kept; False on timeout."""
        return self.wait(lambda: len(self.messages) >= count, timeout)

    def wait(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        with self._lock:
            return self._lock.wait_for(predicate, timeout)

    def by_message_id(self, message_id: str) -> Received | None:
        with self._lock:
            return next((m for m in self.messages if m.message_id == message_id), None)

    # ------------------------------------------------------------------ the endpoint

    async def _endpoint(self, request: Request) -> Response:
        body = await request.body()
        if len(body) > self.max_bytes:
            self.rejected += 1
            return _fault("Client", f"the message exceeds {self.max_bytes} bytes", 413)
        try:
            parsed = parse_message(
                body, limits=XmlLimits(max_bytes=self.max_bytes), require_served_noun=False
            )
        except CimError as error:
            with self._lock:
                self.rejected += 1
            return _fault("Client", f"[{error.code}] {error.reason}")
        message = parsed.message
        header = message.header or Header(verb="", noun="")
        soap_action = request.headers.get("soapaction")
        if soap_action is not None:
            soap_action = soap_action.strip().strip('"')
        received = Received(
            message_id=header.message_id,
            correlation_id=header.correlation_id,
            kind=message.kind.value,
            verb=header.verb or None,
            noun=header.noun or None,
            soap_action=soap_action,
            path=request.url.path,
            body=body,
            message=message,
            received_at=datetime.now(UTC),
        )
        with self._lock:
            self.arrivals.append(header.message_id)
            if self.refuse_remaining > 0:
                self.refuse_remaining -= 1
                self.refused += 1
                self._lock.notify_all()
                return self._refusal(header)
            self.deliveries += 1
            duplicate = header.message_id is not None and header.message_id in self._seen
            hold = 0.0
            if duplicate:
                self.duplicates += 1
            else:
                if header.message_id is not None:
                    self._seen.add(header.message_id)
                    hold = self._holds.pop(header.message_id, 0.0)
                self.messages.append(received)
            self._lock.notify_all()
        if not duplicate and self.on_receive is not None:
            self.on_receive(received)
        end = time.monotonic() + hold
        while time.monotonic() < end and not self._stopping:
            await asyncio.sleep(0.01)
        return _soap_response(_acknowledgement(header, Result.OK, self.source))

    def _refusal(self, header: Header) -> Response:
        if self.refuse_mode == "http500":
            return Response(b"refused for the test", status_code=500, media_type="text/plain")
        if self.refuse_mode == "failed":
            return _soap_response(_acknowledgement(header, Result.FAILED, self.source))
        return _fault("Server", "the receiver refused the delivery (test)")


def _acknowledgement(request: Header, result: Result, source: str) -> bytes:
    reply = Reply.ok() if result is Result.OK else Reply(Result.FAILED)
    if result is Result.FAILED:
        reply.errors = [ReplyError(ErrorCode.INTERNAL.code, "FATAL", reason="refused (test)")]
    message = Message(
        kind=MessageKind.RESPONSE,
        header=Header(
            verb=Verb.REPLY.value,
            noun=request.noun or "Unknown",
            timestamp=datetime.now(UTC),
            source=source,
            message_id=new_message_id(),
            correlation_id=request.message_id,
        ),
        reply=reply,
    )
    return emit_message(message)


def _soap_envelope(content: etree._Element) -> bytes:
    envelope = etree.Element(f"{{{SOAP11}}}Envelope", nsmap={"soapenv": SOAP11})
    etree.SubElement(envelope, f"{{{SOAP11}}}Body").append(content)
    return etree.tostring(envelope, encoding="UTF-8", xml_declaration=True)


def _soap_response(document: bytes) -> Response:
    content = etree.fromstring(document)
    return Response(_soap_envelope(content), status_code=200, media_type=_CONTENT_TYPE)


def _fault(code: str, reason: str, status: int = 500) -> Response:
    fault = etree.Element(f"{{{SOAP11}}}Fault")
    etree.SubElement(fault, "faultcode").text = f"soapenv:{code}"
    etree.SubElement(fault, "faultstring").text = reason
    return Response(_soap_envelope(fault), status_code=status, media_type=_CONTENT_TYPE)


__all__ = ["Received", "Receiver", "RefuseMode"]
