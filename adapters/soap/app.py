"""The SOAP edge: a thin ASGI (Starlette) application in front of the router.

For each POST it checks the transport (content type, size cap before parsing, the hardened
parse, the SOAP envelope), dispatches on SOAPAction, then the Body's root element, then the
Header's Verb and Noun, authenticates the caller, and hands the request bytes (and the
document it parsed) to ``Router.handle``. Transport-level problems are SOAP Faults (with the
OpenHES error code in the detail); message-level ones are the router's ResponseMessages with
Result FAILED.

    {base}/{Service}           POST: SOAP 1.1 (text/xml) or 1.2 (application/soap+xml)
    {base}/{Service}?wsdl      the WSDL, its address rewritten to the URL it was fetched at
    {base}/{Service}.wsdl      the same
    {base}/{Name}.xsd          the XSDs the WSDLs import (relative URLs)
    {base}/                    a plain-text list of the services
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from adapters.auth.authenticator import REPLAYED, Authenticator, AuthError
from adapters.soap import collector
from adapters.soap.envelope import (
    WSSE,
    EnvelopeError,
    Fault,
    FaultKind,
    SoapRequest,
    SoapVersion,
    envelope_bytes,
    fault_bytes,
    read_envelope,
    rewrap,
)
from adapters.soap.services import (
    DispatchError,
    Service,
    catalogue,
    is_generic_root,
    resolve,
)
from adapters.soap.settings import SoapSettings
from adapters.soap.wsdl import wsdl_document, xsd_document, xsd_names
from cim.errors import CimError, ErrorCode
from cim.xmlsafe import XmlLimits, parse_bytes
from headend.access import SYSTEM, Principal

if TYPE_CHECKING:
    from headend.router import Router

log = logging.getLogger(__name__)

CHANNEL = "soap"
DRAIN_BYTES = 1 << 20


class _TooLarge(Exception):
    pass


class _BadLength(Exception):
    pass


async def read_capped(request: Request, cap: int) -> bytes:
    """The request body, refused (``_TooLarge``) as soon as it is known to exceed ``cap``.
    A body announced (Content-Length) or found (streamed count) to exceed ``cap`` by at most
    ``DRAIN_BYTES`` is read on and dropped, so that a client still sending can read the 413
    instead of a connection reset; one announced larger still is refused before any of it is
    read, and one streamed larger is cut off after ``DRAIN_BYTES`` more."""
    length = request.headers.get("content-length")
    if length is not None:
        if not length.strip().isdigit():
            raise _BadLength(length)
        if int(length) > cap + DRAIN_BYTES:
            raise _TooLarge
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > cap + DRAIN_BYTES:
            raise _TooLarge
        if total > cap:
            chunks.clear()  # too large: drop what comes, stop after DRAIN_BYTES more
            continue
        chunks.append(chunk)
    if total > cap:
        raise _TooLarge
    return b"".join(chunks)


def _media_type(header: str) -> tuple[str, dict[str, str]]:
    parts = header.split(";")
    params: dict[str, str] = {}
    for part in parts[1:]:
        key, _, value = part.partition("=")
        params[key.strip().lower()] = value.strip().strip('"')
    return parts[0].strip().lower(), params


def _xml_text(text: str, limit: int = 300) -> str:
    """Text safe to put in XML (no control characters), shortened."""
    cleaned = "".join(c if c >= " " or c in "\t\n\r" else "?" for c in text)
    return cleaned if len(cleaned) <= limit else cleaned[:limit] + "..."


class SoapEdge:
    """The request handling behind :func:`create_app` (one per application)."""

    def __init__(
        self, router: Router, authenticator: Authenticator | None, settings: SoapSettings
    ) -> None:
        self.router = router
        self.authenticator = authenticator
        self.settings = settings
        self.services = catalogue(tuple(settings.services))
        self.limits = XmlLimits(max_bytes=settings.max_request_bytes, max_depth=settings.max_depth)
        # The router takes the parsed Envelope instead of parsing the bytes again, when this
        # parse is no looser than its own would be.
        limits = getattr(router, "limits", None)
        self._share = limits is not None and self.limits.max_depth <= limits.max_depth
        self._xsds = xsd_names()

    # ------------------------------------------------------------ HTTP entry points

    async def index(self, request: Request) -> Response:
        base = self._base_url(request)
        lines = [f"{name}: {base}/{name}?wsdl" for name in self.services]
        return PlainTextResponse("OpenHES SOAP services\n" + "\n".join(lines) + "\n")

    async def resource(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name.endswith(".xsd"):
            if request.method == "POST" or name not in self._xsds:
                return PlainTextResponse("not found\n", status_code=404)
            return Response(xsd_document(name), media_type="text/xml; charset=utf-8")
        wsdl_suffix = name.endswith(".wsdl")
        service = self.services.get(name.removesuffix(".wsdl"))
        if service is None:
            return PlainTextResponse("no such service\n", status_code=404)
        if request.method == "POST" and not wsdl_suffix:
            return await self.soap(request, service)
        if request.method == "POST":
            return Response(status_code=405, headers={"Allow": "GET"})
        if wsdl_suffix or _asks_wsdl(request):
            address = f"{self._base_url(request)}/{service.name}"
            return Response(wsdl_document(service, address), media_type="text/xml; charset=utf-8")
        return PlainTextResponse(
            "POST SOAP requests here; the WSDL is at ?wsdl\n",
            status_code=405,
            headers={"Allow": "POST"},
        )

    def _base_url(self, request: Request) -> str:
        if self.settings.public_url:
            return self.settings.public_url.rstrip("/")
        url = request.base_url  # scheme://host[:port]/root_path/
        return str(url).rstrip("/") + self.settings.base_path

    # ------------------------------------------------------------ SOAP

    async def soap(self, request: Request, service: Service) -> Response:
        # 1. Content type: SOAP 1.1 text/xml, SOAP 1.2 application/soap+xml.
        media, params = _media_type(request.headers.get("content-type", ""))
        if media == "text/xml":
            version = SoapVersion.SOAP11
            action = request.headers.get("soapaction")
        elif media == "application/soap+xml":
            version = SoapVersion.SOAP12
            action = params.get("action") or request.headers.get("soapaction")
        else:
            return self._fault(
                service,
                SoapVersion.SOAP11,
                Fault(
                    FaultKind.CLIENT,
                    ErrorCode.UNKNOWN_MESSAGE_ROOT,
                    f"content type {_xml_text(media or '(none)')!r} is not SOAP: send text/xml "
                    "(SOAP 1.1) or application/soap+xml (SOAP 1.2)",
                    status=415,
                ),
            )
        # 2. The size cap, before parsing.
        try:
            data = await read_capped(request, self.settings.max_request_bytes)
        except _TooLarge:
            return self._fault(
                service,
                version,
                Fault(
                    FaultKind.CLIENT,
                    ErrorCode.TOO_LARGE,
                    f"the request exceeds the limit of {self.settings.max_request_bytes:,} bytes",
                    status=413,
                    headers=(("Connection", "close"),),
                ),
            )
        except _BadLength:
            return self._fault(
                service,
                version,
                Fault(FaultKind.CLIENT, ErrorCode.NOT_WELL_FORMED, "invalid Content-Length", 400),
            )
        # 3. One hardened parse; the SOAP envelope.
        try:
            document = parse_bytes(data, self.limits)
            soap = read_envelope(document, version)
        except CimError as error:
            return self._client_fault(service, version, error.error, error.reason)
        except EnvelopeError as error:
            if error.version_mismatch:
                return self._fault(
                    service,
                    version,
                    Fault(FaultKind.VERSION_MISMATCH, error.code, error.reason, status=500),
                )
            return self._client_fault(service, version, error.code, error.reason)
        # 4. Who is calling.
        principal = await self._authenticate(request, service, soap)
        if isinstance(principal, Response):
            return principal
        # 5. Which operation.
        try:
            operation = resolve(service, action, soap.body_root)
        except DispatchError as error:
            return self._client_fault(
                service, version, ErrorCode.UNSUPPORTED_VERB, _xml_text(error.reason)
            )
        # 6. The router: a ResponseMessage for everything it can read.
        try:
            reply = await self.router.handle(
                data, principal=principal, channel=CHANNEL, root=document if self._share else None
            )
            body = reply.body
            if operation is not None and not is_generic_root(soap.body_root):
                body = rewrap(body, operation.output)
        except Exception:  # the router must not raise; if it does, no traceback leaves here
            log.exception("SOAP %s: the router failed", service.name)
            return self._fault(
                service,
                version,
                Fault(FaultKind.SERVER, ErrorCode.INTERNAL, ErrorCode.INTERNAL.meaning),
            )
        return Response(envelope_bytes(version, body), media_type=version.content_type)

    async def _authenticate(
        self, request: Request, service: Service, soap: SoapRequest
    ) -> Principal | Response:
        if self.authenticator is None:
            return SYSTEM
        client = request.client
        try:
            return await run_in_threadpool(
                self.authenticator.authenticate,
                authorization=request.headers.get("authorization"),
                soap_header=soap.header,
                peer=client.host if client else None,
            )
        except AuthError as error:
            return self._auth_fault(request, service, soap, error)

    def _auth_fault(
        self, request: Request, service: Service, soap: SoapRequest, error: AuthError
    ) -> Response:
        reason = _xml_text(error.reason or "authentication failed")
        code = (
            ErrorCode.REPLAY_DETECTED if error.reason == REPLAYED else ErrorCode.NOT_AUTHENTICATED
        )
        if error.must_understand:
            # A mustUnderstand Security header with what OpenHES does not process.
            fault = Fault(
                FaultKind.MUST_UNDERSTAND,
                code,
                reason,
                status=500,
            )
            return self._fault(service, soap.version, fault)
        if soap.has_ws_security and not request.headers.get("authorization"):
            # WS-Security: a wsse fault (OASIS WSS 1.0 section 12), not an HTTP challenge.
            fault = Fault(
                FaultKind.CLIENT,
                code,
                reason,
                status=500 if soap.version is SoapVersion.SOAP11 else 400,
                subcode=(WSSE, "FailedAuthentication"),
            )
            return self._fault(service, soap.version, fault)
        headers: tuple[tuple[str, str], ...] = ()
        status = error.status if error.status in (401, 403) else 401
        if status == 401:
            challenge = error.challenge or f'Basic realm="{self.settings.realm}", charset="UTF-8"'
            headers = (("WWW-Authenticate", challenge),)
        return self._fault(
            service, soap.version, Fault(FaultKind.CLIENT, code, reason, status, headers=headers)
        )

    def _client_fault(
        self, service: Service, version: SoapVersion, code: ErrorCode, reason: str
    ) -> Response:
        status = 500 if version is SoapVersion.SOAP11 else 400
        return self._fault(service, version, Fault(FaultKind.CLIENT, code, reason, status))

    @staticmethod
    def _fault(service: Service, version: SoapVersion, fault: Fault) -> Response:
        return Response(
            fault_bytes(fault, version, service.fault),
            status_code=fault.status,
            media_type=version.content_type,
            headers=dict(fault.headers),
        )


def _asks_wsdl(request: Request) -> bool:
    return any(key.lower() in ("wsdl", "singlewsdl") for key in request.query_params)


def create_app(
    router: Router,
    authenticator: Authenticator | None,
    settings: SoapSettings,
    *,
    lifespan: Callable[[Starlette], AbstractAsyncContextManager[Any]] | None = None,
) -> Starlette:
    """The SOAP application. ``authenticator`` None: no authentication (every caller is the
    local system principal; for tests, demos and trusted networks only). ``lifespan``: what
    to start and stop with the server (the head-end, the outbox delivery)."""
    edge = SoapEdge(router, authenticator, settings)
    base = settings.base_path
    routes = [
        Route(base + "/", edge.index, methods=["GET", "HEAD"]),
        Route(base + "/{name}", edge.resource, methods=["GET", "HEAD", "POST"]),
    ]
    app = Starlette(routes=routes, lifespan=_with_quiet_collector(router, lifespan))
    app.state.soap_edge = edge
    return app


def _with_quiet_collector(
    router: Router, lifespan: Callable[[Starlette], AbstractAsyncContextManager[Any]] | None
) -> Callable[[Starlette], AbstractAsyncContextManager[Any]]:
    """``lifespan``, plus full garbage collections when requests pause, in a process whose
    automatic full collections are off (a server's: see adapters.soap.collector)."""

    @asynccontextmanager
    async def combined(app: Starlette) -> AsyncIterator[Any]:
        task = None
        if collector.tuned():
            task = asyncio.create_task(collector.QuietCollector(router.quiet_for).run())
        try:
            if lifespan is None:
                yield None
            else:
                async with lifespan(app) as state:
                    yield state
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    return combined
