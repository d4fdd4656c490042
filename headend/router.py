"""The router: one code path from a request's bytes to its ResponseMessage, for every channel
(SOAP, ESB, file drop).

``Router.handle(data, principal=..., channel=...)`` parses the message (hardened parser,
SOAP unwrapped; or takes the document its caller parsed already, ``root=``), finds the
handler for its (Verb, Noun), checks the caller's rights, runs the handler and returns the
ResponseMessage. It never raises: every problem is a ResponseMessage with Result FAILED and
a documented code (docs/error-codes.md), correlated to the request.

Routes (``ROUTES``; Noun ``GetMeterReadings``/``GetEndDeviceEvents`` with Verb get are read
as ``MeterReadings``/``EndDeviceEvents``; ``execute`` is taken as ``create`` for controls):

=============================  ============================================================
get MeterReadings              readings from the store; an on-demand read first when the
                               store lacks data for a device and the window reaches the
                               present, or when the Request Option ``OnDemand`` is true
create/created MeterReadings   readings pushed in (a request, or the EventMessage another
                               system sends), ingested into the store
create/execute EndDeviceControls  connect, disconnect, arm, clock sync...: a control job,
                               then the verified state per device; audited
get EndDeviceEvents            events from the store
create/created EndDeviceEvents  meter events pushed in, stored (per-device errors)
create/change/cancel/delete MeterReadSchedule  persisted schedules (headend.schedules)
=============================  ============================================================

Refusals: a Noun no route serves is UNKNOWN_NOUN (3.1), a Verb that is not IEC 61968-100 is
UNKNOWN_VERB (3.2), a known Noun with a Verb it has no route for is UNSUPPORTED_VERB (3.3),
a caller whose role does not allow the request is NOT_AUTHORISED (5.2, see
:mod:`headend.access`; refused control requests are audited too). Objects (devices) that
fail get one Error each, naming them in ``Error/ID``; with some served and some failed the
Result is PARTIAL.

**Idempotency.** A request with a MessageID is recorded in the message log
(:mod:`headend.message_log`) before it runs, and its reply after. The same MessageID again
returns the first reply without running anything (a repeated disconnect operates the switch
once); a copy arriving while the first still runs waits for the first's reply (at most
``sync_timeout``; then FAILED DUPLICATE_MESSAGE 4.4, and asking again later gives the
reply). A MessageID reused by another caller, or for another Verb/Noun, is refused with
DUPLICATE_MESSAGE and the first reply is not shown. Synchronous ``get`` requests are the
exception: they change nothing, so they are not logged (no database write on the read hot
path) and are answered afresh each time; ``dedup_gets=True`` logs them too.

A request **without a MessageID** is served but cannot be recognised when sent again: each
copy runs. Its work gets no idempotency key (a repeated disconnect of a meter already
disconnected finds it so and does not operate it again, but the job is run again).

**Asynchronous replies.** With ``AsyncReplyFlag`` true, a ``ReplyAddress`` and an outbox,
the request is recorded (state ``accepted``, with the request bytes and the caller) and
``handle`` returns at once an acknowledgement (Result OK, ``RouterReply.deferred`` True). The
work then runs in the background with ``async_timeout``; its ResponseMessage (fresh MessageID,
the request's CorrelationID, else its MessageID, as CorrelationID) is put in the outbox in the
same transaction that marks the request answered. :meth:`Router.resume` finishes requests
accepted but not answered, e.g. after a restart. The ReplyAddress must be an http(s) URL
(else BAD_HEADER_VALUE at once). Without an outbox, such a request is answered synchronously
with a warning.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lxml import etree

from cim.envelope import (
    Header,
    Message,
    MessageKind,
    Payload,
    Reply,
    ReplyError,
    Result,
)
from cim.errors import CimError, ErrorCode
from cim.messages import (
    SERVED_NOUNS,
    emit_message,
    failure_response,
    parse_message,
    parse_message_element,
    reply_header,
    salvage_header,
    unwrap_soap,
)
from cim.xmlsafe import DEFAULT_LIMITS, XmlLimits
from headend.access import CONTROL_NOUNS, Principal, allowed
from headend.handlers import Context, DeferredLane, Handler, Outcome, run_blocking
from headend.handlers import end_device_controls as controls_handlers
from headend.handlers import end_device_events as events_handlers
from headend.handlers import meter_read_schedule as schedule_handlers
from headend.handlers import meter_readings as readings_handlers
from headend.message_log import ID_LENGTH, LoggedMessage, MessageLog
from mdm.audit import record
from mdm.database import Store, transaction
from mdm.schema import WHO_LENGTH

if TYPE_CHECKING:
    from headend.outbox import Outbox
    from headend.service import HeadEnd

log = logging.getLogger(__name__)

ROUTES: Mapping[tuple[str, str], Handler] = {
    ("get", "MeterReadings"): readings_handlers.get_meter_readings,
    ("create", "MeterReadings"): readings_handlers.create_meter_readings,
    ("created", "MeterReadings"): readings_handlers.create_meter_readings,
    ("create", "EndDeviceControls"): controls_handlers.create_end_device_controls,
    ("execute", "EndDeviceControls"): controls_handlers.create_end_device_controls,
    ("get", "EndDeviceEvents"): events_handlers.get_end_device_events,
    ("create", "EndDeviceEvents"): events_handlers.create_end_device_events,
    ("created", "EndDeviceEvents"): events_handlers.create_end_device_events,
    ("create", "MeterReadSchedule"): schedule_handlers.create_meter_read_schedule,
    ("change", "MeterReadSchedule"): schedule_handlers.change_meter_read_schedule,
    ("cancel", "MeterReadSchedule"): schedule_handlers.cancel_meter_read_schedule,
    ("delete", "MeterReadSchedule"): schedule_handlers.cancel_meter_read_schedule,
}
KNOWN_NOUNS = frozenset(noun for _, noun in ROUTES) | SERVED_NOUNS
#: Get-profile names some systems put in the Noun of a get request.
GET_NOUNS = {"GetMeterReadings": "MeterReadings", "GetEndDeviceEvents": "EndDeviceEvents"}
MAX_WARNINGS = 20


@dataclass(frozen=True)
class RouterReply:
    body: bytes  # the ResponseMessage document (no SOAP envelope)
    result: str  # OK | PARTIAL | FAILED
    deferred: bool = False  # True: an acknowledgement; the reply goes to ReplyAddress later


@dataclass
class _Done:
    body: bytes
    result: str
    message: Message


class Router:
    def __init__(
        self,
        store: Store,
        headend: HeadEnd | None,
        *,
        outbox: Outbox | None = None,
        source: str = "OpenHES",
        sync_timeout: float = 30.0,
        async_timeout: float = 600.0,
        dedup_gets: bool = False,
        limits: XmlLimits = DEFAULT_LIMITS,
    ) -> None:
        self.store = store
        self.headend = headend
        self.outbox = outbox
        self.source = source
        self.sync_timeout = sync_timeout
        self.async_timeout = async_timeout
        self.dedup_gets = dedup_gets
        self.limits = limits
        self.log = MessageLog(store)
        self._inflight: dict[str, asyncio.Future[_Done]] = {}
        self._running_rows: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # Deferred work's blocking steps take turns here, when requests let them.
        self._lane = DeferredLane()

    # -- entry points ------------------------------------------------------------------------

    async def handle(
        self,
        data: bytes,
        *,
        principal: Principal,
        channel: str,
        root: etree._Element | None = None,
    ) -> RouterReply:
        """The reply to one request (see the module docstring). Never raises.

        ``root``: ``data`` already parsed, the root element :func:`cim.xmlsafe.parse_bytes`
        returned for it (with limits no looser than the router's), so that it is not parsed
        a second time; e.g. the SOAP edge passes the Envelope it parsed. ``data`` is still
        what is logged and replayed."""
        self._lane.request_arrived()
        try:
            return await self._handle(data, principal, channel, root)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("router: unexpected failure handling a %s request", channel)
            error = CimError(ErrorCode.INTERNAL, "internal error; the operator's log has details")
            return self._failed([error], _safe_salvage(data, self.limits))

    def quiet_for(self) -> float:
        """Seconds since the last request arrived (infinite before the first)."""
        return self._lane.quiet_for()

    async def resume(self) -> int:
        """Finish every request accepted but not answered (after a restart); returns how
        many were run. Requests this router is running now are left to it."""
        entries = [e for e in self.log.unanswered() if e.id not in self._running_rows]
        for entry in entries:
            self._running_rows.add(entry.id)
        results = await asyncio.gather(
            *(self._resume_one(entry) for entry in entries), return_exceptions=True
        )
        for entry, result in zip(entries, results, strict=True):
            if isinstance(result, BaseException):
                log.error("router: resuming request %s failed: %r", entry.id, result)
        return len(entries)

    async def drain(self, timeout: float | None = None) -> None:
        """Wait for the background work of asynchronous requests started so far."""
        while self._tasks:
            await asyncio.wait_for(asyncio.gather(*list(self._tasks)), timeout)

    # -- the request path --------------------------------------------------------------------

    async def _handle(
        self, data: bytes, principal: Principal, channel: str, root: etree._Element | None
    ) -> RouterReply:
        try:
            if root is None or len(data) > self.limits.max_bytes:
                parsed = parse_message(data, limits=self.limits, require_served_noun=False)
            else:
                parsed = parse_message_element(unwrap_soap(root), require_served_noun=False)
        except CimError as error:
            return self._failed([error], _safe_salvage(data, self.limits))
        message = parsed.message
        header = message.header
        if header is None:
            return self._failed(
                [CimError(ErrorCode.UNKNOWN_MESSAGE_ROOT, "a FaultMessage is not a request")],
                None,
            )
        verb = header.verb
        noun = GET_NOUNS.get(header.noun, header.noun) if verb == "get" else header.noun
        handler = ROUTES.get((verb, noun))
        if handler is None:
            if noun not in KNOWN_NOUNS:
                error = CimError(
                    ErrorCode.UNKNOWN_NOUN,
                    f"Noun {header.noun!r} is not served; served: "
                    f"{', '.join(sorted({n for _, n in ROUTES}))}",
                )
            else:
                verbs = sorted(v for v, n in ROUTES if n == noun)
                error = CimError(
                    ErrorCode.UNSUPPORTED_VERB,
                    f"Verb {verb!r} is not supported for {noun}"
                    + (f"; supported: {', '.join(verbs)}" if verbs else ""),
                )
            return self._failed([error], header)
        if not allowed(principal, verb, noun):
            if noun in CONTROL_NOUNS:
                self._audit_refusal(principal, channel, header, noun)
            roles = ", ".join(sorted(r.value for r in principal.roles)) or "none"
            error = CimError(
                ErrorCode.NOT_AUTHORISED,
                f"{principal.name!r} (roles: {roles}) may not {verb} {noun}",
            )
            return self._failed([error], header)
        message_id = header.message_id or None
        if message_id is not None and len(message_id) > ID_LENGTH:
            error = CimError(
                ErrorCode.BAD_HEADER_VALUE, f"the MessageID is longer than {ID_LENGTH} characters"
            )
            return self._failed([error], header)
        warnings = list(parsed.warnings)
        wants_async = bool(header.async_reply_flag and header.reply_address)
        if wants_async and self.outbox is None:
            warnings.append(
                "asynchronous replies are not configured here; this is the reply itself"
            )
            wants_async = False
        if wants_async:
            return await self._accept_async(data, message, warnings, principal, channel, verb, noun)
        if message_id is None or (verb == "get" and not self.dedup_gets):
            done = await self._run(message, warnings, principal, channel, self.sync_timeout)
            return RouterReply(done.body, done.result)
        claim = self.log.claim(
            message_id=message_id,
            verb=verb,
            noun=noun,
            principal=principal,
            channel=channel,
            request=data,
            correlation_id=header.correlation_id,
        )
        if not claim.new:
            return await self._duplicate(claim.entry, header, principal, verb, noun, False)
        done = await self._run_logged(claim.entry, message, warnings, self.sync_timeout)
        return RouterReply(done.body, done.result)

    async def _accept_async(
        self,
        data: bytes,
        message: Message,
        warnings: list[str],
        principal: Principal,
        channel: str,
        verb: str,
        noun: str,
    ) -> RouterReply:
        from headend.outbox import address_problem

        header = message.header
        assert header is not None and header.reply_address is not None
        problem = address_problem(header.reply_address)
        correlation = header.correlation_id or header.message_id
        if problem is None and correlation is not None and len(correlation) > 100:
            problem = "the CorrelationID of an asynchronous request is at most 100 characters"
        if problem is not None:
            return self._failed(
                [CimError(ErrorCode.BAD_HEADER_VALUE, f"ReplyAddress: {problem}")], header
            )
        ack = Message(
            kind=MessageKind.RESPONSE,
            header=reply_header(header, source=self.source),
            reply=Reply.ok(),
        )
        ack_body = emit_message(ack)
        claim = self.log.claim(
            message_id=header.message_id or None,
            verb=verb,
            noun=noun,
            principal=principal,
            channel=channel,
            request=data,
            async_reply=True,
            ack=ack_body,
            correlation_id=header.correlation_id,
            reply_address=header.reply_address,
        )
        if not claim.new:
            return await self._duplicate(claim.entry, header, principal, verb, noun, True)
        self._running_rows.add(claim.entry.id)
        task = asyncio.create_task(self._background(claim.entry, message, warnings))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return RouterReply(ack_body, Result.OK.value, deferred=True)

    async def _background(
        self, entry: LoggedMessage, message: Message, warnings: list[str]
    ) -> None:
        try:
            await self._run_logged(entry, message, warnings, self.async_timeout)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("router: asynchronous request %s failed", entry.id)

    async def _resume_one(self, entry: LoggedMessage) -> None:
        try:
            parsed = parse_message(entry.request, limits=self.limits, require_served_noun=False)
        except CimError as error:  # it parsed when accepted; a changed limit could refuse it
            failure = self._failure_message([error], _safe_salvage(entry.request, self.limits))
            self._record(entry, _Done(emit_message(failure), Result.FAILED.value, failure))
            return
        timeout = self.async_timeout if entry.async_reply else self.sync_timeout
        await self._run_logged(entry, parsed.message, list(parsed.warnings), timeout)

    async def _run_logged(
        self, entry: LoggedMessage, message: Message, warnings: list[str], timeout: float
    ) -> _Done:
        """Run a logged request, store its reply (and put it in the outbox when it is
        asynchronous), and hand it to copies waiting in this process."""
        key = entry.message_id
        future: asyncio.Future[_Done] | None = None
        if key is not None:
            future = asyncio.get_running_loop().create_future()
            self._inflight[key] = future
        self._running_rows.add(entry.id)
        try:
            done = await self._run(
                message,
                warnings,
                entry.principal,
                entry.channel,
                timeout,
                deferred=entry.async_reply,
            )
            if entry.async_reply:  # deferred: its turn in the lane (off the loop on servers)
                await run_blocking(self.store, self._record, entry, done, lane=self._lane)
            else:
                self._record(entry, done)
            if future is not None:
                future.set_result(done)
            return done
        except BaseException as exc:
            if future is not None and not future.done():
                future.set_exception(exc)
                future.exception()  # retrieved: no "never retrieved" warning
            raise
        finally:
            self._running_rows.discard(entry.id)
            if key is not None and self._inflight.get(key) is future:
                del self._inflight[key]

    def _record(self, entry: LoggedMessage, done: _Done) -> None:
        assert done.message.header is not None
        reply_id = done.message.header.message_id
        with transaction(self.store) as conn:
            answered = self.log.answer(
                entry.id,
                reply=done.body,
                result=done.result,
                reply_message_id=reply_id,
                conn=conn,
            )
            if not (answered and entry.async_reply and self.outbox is not None):
                return
            assert entry.reply_address is not None and reply_id is not None
            try:
                self.outbox.enqueue(
                    address=entry.reply_address,
                    body=done.body,
                    message_id=reply_id,
                    kind="reply",
                    correlation_id=done.message.header.correlation_id,
                    soap_action=_reply_soap_action(entry.verb, entry.noun),
                    conn=conn,
                )
            except CimError as error:  # checked when accepted; kept answered, not retried
                log.error("router: reply to request %s not queued: %s", entry.id, error)

    async def _duplicate(
        self,
        entry: LoggedMessage,
        header: Header,
        principal: Principal,
        verb: str,
        noun: str,
        wants_async: bool,
    ) -> RouterReply:
        if entry.principal.name != principal.name:
            return self._failed(
                [
                    CimError(
                        ErrorCode.DUPLICATE_MESSAGE, "this MessageID was used by another caller"
                    )
                ],
                header,
            )
        if (entry.verb, entry.noun) != (verb, noun):
            return self._failed(
                [
                    CimError(
                        ErrorCode.DUPLICATE_MESSAGE,
                        f"this MessageID was used for {entry.verb} {entry.noun}",
                    )
                ],
                header,
            )
        if wants_async and entry.ack is not None:
            return RouterReply(entry.ack, Result.OK.value, deferred=True)
        if entry.answered:
            assert entry.reply is not None and entry.result is not None
            return RouterReply(entry.reply, entry.result)
        future = self._inflight.get(entry.message_id or "")
        if future is not None:
            try:
                done = await asyncio.wait_for(asyncio.shield(future), self.sync_timeout)
                return RouterReply(done.body, done.result)
            except TimeoutError:
                pass
        else:
            later = await self.log.wait_answered(entry.id, self.sync_timeout)
            if later is not None and later.answered:
                assert later.reply is not None and later.result is not None
                return RouterReply(later.reply, later.result)
        return self._failed(
            [
                CimError(
                    ErrorCode.DUPLICATE_MESSAGE,
                    "the first request with this MessageID is still running; send it again "
                    "later for its reply",
                )
            ],
            header,
        )

    # -- running a handler -------------------------------------------------------------------

    async def _run(
        self,
        message: Message,
        warnings: list[str],
        principal: Principal,
        channel: str,
        timeout: float,
        *,
        deferred: bool = False,
    ) -> _Done:
        header = message.header
        assert header is not None
        verb = header.verb
        noun = GET_NOUNS.get(header.noun, header.noun) if verb == "get" else header.noun
        handler = ROUTES[(verb, noun)]
        ctx = Context(
            store=self.store,
            headend=self.headend,
            principal=principal,
            channel=channel,
            message=message,
            timeout=timeout,
            source=self.source,
            warnings=list(warnings),
            lane=self._lane if deferred else None,
        )
        try:
            outcome = await handler(ctx)
            response = self._response(header, outcome, ctx.warnings)
        except CimError as error:
            response = self._failure_message([error], header)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("router: %s %s failed", verb, noun)
            response = self._failure_message(
                [CimError(ErrorCode.INTERNAL, "internal error; the operator's log has details")],
                header,
            )
        assert response.reply is not None
        return _Done(emit_message(response), response.reply.result.value, response)

    def _response(self, header: Header, outcome: Outcome, warnings: list[str]) -> Message:
        shown = [
            ReplyError(ErrorCode.OK_WITH_WARNINGS.code, "WARNING", reason=w)
            for w in warnings[:MAX_WARNINGS]
        ]
        if len(warnings) > MAX_WARNINGS:
            shown.append(
                ReplyError(
                    ErrorCode.OK_WITH_WARNINGS.code,
                    "WARNING",
                    reason=f"... and {len(warnings) - MAX_WARNINGS} more warnings",
                )
            )
        if not outcome.errors:
            reply = Reply.ok()
            reply.errors.extend(shown)
            reply.errors.extend(outcome.notes)
        elif outcome.succeeded > 0:
            summary = ReplyError(
                ErrorCode.PARTIAL.code,
                str(ErrorCode.PARTIAL.level),
                reason=f"{len(outcome.errors)} object(s) failed, {outcome.succeeded} served",
            )
            reply = Reply(Result.PARTIAL, [summary, *outcome.errors, *outcome.notes, *shown])
        else:
            reply = Reply(Result.FAILED, [*outcome.errors, *shown])
        payload = None
        if outcome.document is not None and reply.result is not Result.FAILED:
            payload = Payload(document=outcome.document)
        return Message(
            kind=MessageKind.RESPONSE,
            header=reply_header(header, source=self.source),
            reply=reply,
            payload=payload,
        )

    def _failure_message(self, errors: list[CimError], header: Header | None) -> Message:
        message = failure_response(errors, header)
        assert message.header is not None
        message.header.source = self.source
        return message

    def _failed(self, errors: list[CimError], header: Header | None) -> RouterReply:
        return RouterReply(emit_message(self._failure_message(errors, header)), Result.FAILED.value)

    def _audit_refusal(self, principal: Principal, channel: str, header: Header, noun: str) -> None:
        try:
            with transaction(self.store) as conn:
                record(
                    conn,
                    who=(principal.name or "?")[:WHO_LENGTH],
                    object_type=noun,
                    object_id=(header.message_id or "(no MessageID)")[:200],
                    changes=[("request", None, f"{header.verb} refused: not authorised")],
                    note=f"channel {channel}; authenticated by {principal.authenticated_by}",
                )
        except Exception:
            log.exception("router: could not audit a refused %s request", noun)


_PAST = {
    "create": "created",
    "change": "changed",
    "cancel": "canceled",
    "close": "closed",
    "delete": "deleted",
    "execute": "executed",
}


def _reply_soap_action(verb: str, noun: str) -> str | None:
    """The Reply<Noun> WSDL operation of an asynchronous reply (``Created<Noun>`` for a
    create...); None for a get, which has no such operation."""
    from headend.outbox import soap_action_for

    past = _PAST.get(verb)
    return soap_action_for(past, noun) if past else None


def _safe_salvage(data: Any, limits: XmlLimits) -> Header | None:
    try:
        return salvage_header(data, limits)
    except Exception:
        return None


__all__ = ["GET_NOUNS", "KNOWN_NOUNS", "ROUTES", "Router", "RouterReply"]
