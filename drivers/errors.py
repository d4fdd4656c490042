"""The errors every driver raises. Nothing else leaves a driver: library exceptions (gurux's,
and the TypeError/ValueError/IndexError it leaks on bad input) are mapped to one of these.

Each class has a stable ``code`` that the head-end can log, count and map northbound.
"""

from __future__ import annotations


class DriverError(Exception):
    """Base class. ``retryable`` says whether the same operation may succeed if run again
    (a new session, a later time) without anyone changing configuration."""

    code = "driver_error"
    retryable = False

    def __init__(self, message: str, *, detail: object = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class DriverTimeout(DriverError):
    """The meter did not answer within the configured time (frame or operation)."""

    code = "timeout"
    retryable = True


class ConnectionLost(DriverError):
    """The transport failed: refused, reset, closed by the meter."""

    code = "connection_lost"
    retryable = True


class MalformedFrame(DriverError):
    """Bytes that are not a valid frame or APDU, or do not fit what was asked."""

    code = "malformed_frame"
    retryable = True


class AssociationRefused(DriverError):
    """The meter refused the association (AARE rejected) for a reason other than
    authentication."""

    code = "association_refused"


class AuthenticationFailed(DriverError):
    """Password, HLS challenge or keys were not accepted, or the meter's own proof failed."""

    code = "authentication_failed"


class CounterOutOfSync(DriverError):
    """The meter rejected the invocation counter, or answered with a counter that does not
    increase. The driver re-synchronises once by itself; this is raised when that failed."""

    code = "counter_out_of_sync"
    retryable = True


class ObjectNotFound(DriverError):
    """The meter does not have the object or attribute (undefined, unavailable, wrong class)."""

    code = "object_not_found"


class AccessDenied(DriverError):
    """The association's access rights do not allow the read, write or method."""

    code = "access_denied"


class DeviceError(DriverError):
    """The meter answered with another error result (hardware fault, temporary failure,
    type unmatched...). ``result`` is the protocol's result code."""

    code = "device_error"

    def __init__(self, message: str, *, result: int | None = None, detail: object = None):
        super().__init__(message, detail=detail)
        self.result = result
        self.retryable = result == 2  # DLMS temporary-failure


class FirmwareTransferFailed(DriverError):
    """An image transfer could not be completed, verified or activated."""

    code = "firmware_transfer_failed"


class ConfigurationError(DriverError, ValueError):
    """The connection parameters or the arguments of an operation are invalid."""

    code = "configuration_error"


__all__ = [
    "AccessDenied",
    "AssociationRefused",
    "AuthenticationFailed",
    "ConfigurationError",
    "ConnectionLost",
    "CounterOutOfSync",
    "DeviceError",
    "DriverError",
    "DriverTimeout",
    "FirmwareTransferFailed",
    "MalformedFrame",
    "ObjectNotFound",
]
