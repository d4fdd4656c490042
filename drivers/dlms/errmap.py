"""gurux exceptions and DLMS result codes -> :mod:`drivers.errors`.

gurux raises its own exception types for protocol-level refusals and plain Exception,
ValueError, TypeError, IndexError... for anything it cannot parse (Gurux.DLMS.Python #4, #25,
#36). Everything that is not already a DriverError becomes one here.
"""

from __future__ import annotations

from gurux_dlms.enums import ExceptionServiceError, SourceDiagnostic
from gurux_dlms.GXDLMSConfirmedServiceError import GXDLMSConfirmedServiceError
from gurux_dlms.GXDLMSException import GXDLMSException
from gurux_dlms.GXDLMSExceptionResponse import GXDLMSExceptionResponse

from drivers.dlms import axdr, cosem, crypto
from drivers.dlms.gurux_hooks import CounterReplay
from drivers.errors import (
    AccessDenied,
    AssociationRefused,
    AuthenticationFailed,
    ConnectionLost,
    CounterOutOfSync,
    DeviceError,
    DriverError,
    MalformedFrame,
    ObjectNotFound,
)

_AUTH_DIAGNOSTICS = frozenset(
    {
        SourceDiagnostic.NOT_RECOGNISED,
        SourceDiagnostic.MECHANISM_NAME_REGUIRED,
        SourceDiagnostic.AUTHENTICATION_FAILURE,
        SourceDiagnostic.AUTHENTICATION_REQUIRED,
    }
)

# HDLC link-level results gurux puts in reply.error (negative: not Data-Access-Result).
HDLC_UNACCEPTABLE_FRAME = -1
HDLC_REJECTED = -2
HDLC_RECEIVE_NOT_READY = -3
HDLC_DISCONNECT_MODE = -4


def result_error(result: int, what: str) -> DriverError:
    """A Data-Access-Result / Action-Result other than success."""
    if result in cosem.NOT_FOUND_RESULTS:
        return ObjectNotFound(
            f"{what}: the meter has no such object or attribute (result {result})"
        )
    if result in cosem.DENIED_RESULTS:
        return AccessDenied(f"{what}: access denied (result {result})")
    if result == HDLC_DISCONNECT_MODE:
        return ConnectionLost(f"{what}: the meter's HDLC link is disconnected (DM)")
    if result < 0:
        return MalformedFrame(f"{what}: the meter rejected the frame (HDLC result {result})")
    return DeviceError(f"{what}: the meter answered with result {result}", result=result)


def map_exception(exc: BaseException, what: str) -> DriverError:
    """The driver error for anything raised while talking to a meter."""
    if isinstance(exc, DriverError):
        return exc
    if isinstance(exc, CounterReplay):
        return CounterOutOfSync(f"{what}: {exc}", detail={"received": exc.received})
    if isinstance(exc, crypto.CryptoError):
        return AuthenticationFailed(f"{what}: ciphered APDU refused: {exc}")
    if isinstance(exc, GXDLMSExceptionResponse):
        service = exc.exceptionServiceError
        if service == ExceptionServiceError.INVOCATION_COUNTER_ERROR:
            return CounterOutOfSync(
                f"{what}: the meter rejected the invocation counter",
                detail={"expected": exc.serviceErrorValue},
            )
        if service == ExceptionServiceError.DECIPHERING_ERROR:
            return AuthenticationFailed(f"{what}: the meter could not decipher the request")
        return DeviceError(f"{what}: exception response: {exc}", detail=int(service or 0))
    if isinstance(exc, GXDLMSConfirmedServiceError):
        return AssociationRefused(f"{what}: confirmed service error: {exc}")
    if isinstance(exc, GXDLMSException):
        if hasattr(exc, "result"):
            if exc.diagnostic in _AUTH_DIAGNOSTICS:
                return AuthenticationFailed(f"{what}: {exc}".replace("\r\n", " "))
            return AssociationRefused(f"{what}: {exc}".replace("\r\n", " "))
        return result_error(int(exc.errorCode), what)
    if isinstance(exc, axdr.DecodeError):
        return MalformedFrame(f"{what}: undecodable data: {exc}")
    if isinstance(exc, OSError):
        return ConnectionLost(f"{what}: {exc}")
    text = str(exc)
    if "Server to Client do not match" in text:
        return AuthenticationFailed(f"{what}: the meter's HLS proof does not verify")
    # ValueError, TypeError, IndexError, struct.error... from gurux's parsers: bad input.
    return MalformedFrame(f"{what}: {type(exc).__name__}: {text}")
