"""The OpenHES error-code scheme, used in every CIM Reply, SOAP Fault and CLI message.

The normative IEC 61968-100 error-code table is not public, so OpenHES defines its own,
stable scheme: ``<category>.<detail>``. ``0.0`` (success) matches what published samples
use. Codes never change meaning once released; new ones are only added. The reference
table is docs/error-codes.md, generated from (and tested against) this module.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Level(enum.StrEnum):
    """Reply/Error/level values of IEC 61968-100."""

    INFORM = "INFORM"
    WARNING = "WARNING"
    FATAL = "FATAL"
    CATASTROPHIC = "CATASTROPHIC"


class Category(enum.IntEnum):
    SUCCESS = 0
    ENVELOPE = 1
    SCHEMA = 2
    UNKNOWN_NOUN_OR_VERB = 3
    UNKNOWN_OBJECT = 4
    AUTHORISATION = 5
    DEVICE_COMMUNICATION = 6
    TIMEOUT = 7
    INTERNAL = 8


class ErrorCode(enum.Enum):
    """Every code OpenHES reports. Value: (code, level, meaning)."""

    OK = ("0.0", Level.INFORM, "Success.")
    OK_WITH_WARNINGS = (
        "0.1",
        Level.WARNING,
        "Success; parts of the message were ignored (e.g. vendor extension elements).",
    )
    PARTIAL = (
        "0.2",
        Level.WARNING,
        "Partial success: some objects failed, each has its own error.",
    )

    NOT_WELL_FORMED = ("1.1", Level.FATAL, "The message is not well-formed XML.")
    BAD_ENCODING = ("1.2", Level.FATAL, "The message's bytes do not match its character encoding.")
    FORBIDDEN_XML = (
        "1.3",
        Level.FATAL,
        "The message has a DOCTYPE, DTD or entity declaration; these are refused.",
    )
    TOO_LARGE = ("1.4", Level.FATAL, "The message exceeds the configured size limit.")
    TOO_DEEP = ("1.5", Level.FATAL, "The message nests elements deeper than the configured limit.")
    MISSING_VERB = ("1.6", Level.FATAL, "The Header has no Verb.")
    MISSING_NOUN = ("1.7", Level.FATAL, "The Header has no Noun.")
    UNKNOWN_MESSAGE_ROOT = (
        "1.8",
        Level.FATAL,
        "The root element is not an IEC 61968-100 message in a known namespace.",
    )
    BAD_HEADER_VALUE = ("1.9", Level.FATAL, "A Header or Request field has an invalid value.")
    BAD_COMPRESSED_PAYLOAD = (
        "1.10",
        Level.FATAL,
        "The Compressed payload is not base64 of gzip-compressed XML.",
    )
    MISSING_PAYLOAD = ("1.11", Level.FATAL, "The verb requires a Payload and none was sent.")

    SCHEMA_INVALID = ("2.1", Level.FATAL, "The message does not validate against the schema.")
    BAD_DATETIME = ("2.2", Level.FATAL, "A date-time is not a valid xs:dateTime.")
    BAD_READING_TYPE = ("2.3", Level.FATAL, "A ReadingType code is not a valid 18-field code.")
    BAD_END_DEVICE_TYPE = (
        "2.4",
        Level.FATAL,
        "An EndDeviceEventType or EndDeviceControlType code is invalid.",
    )
    BAD_VALUE = ("2.5", Level.FATAL, "A value is not of its expected type (number, boolean).")
    MISSING_ELEMENT = ("2.6", Level.FATAL, "A required element is missing.")
    BAD_QUALITY_CODE = ("2.7", Level.FATAL, "A ReadingQualityType code is invalid.")

    UNKNOWN_NOUN = ("3.1", Level.FATAL, "The Noun is not one OpenHES serves.")
    UNKNOWN_VERB = ("3.2", Level.FATAL, "The Verb is not an IEC 61968-100 verb.")
    UNSUPPORTED_VERB = ("3.3", Level.FATAL, "The Verb is not supported for this Noun.")

    UNKNOWN_DEVICE = ("4.1", Level.FATAL, "No end device with this mRID or name is registered.")
    UNKNOWN_USAGE_POINT = ("4.2", Level.FATAL, "No usage point with this mRID or name is known.")
    UNKNOWN_READING_TYPE = ("4.3", Level.FATAL, "The ReadingType is not supported by the device.")
    DUPLICATE_MESSAGE = ("4.4", Level.WARNING, "The MessageID was already processed.")

    NOT_AUTHENTICATED = ("5.1", Level.FATAL, "The caller is not authenticated.")
    NOT_AUTHORISED = ("5.2", Level.FATAL, "The caller's role does not allow this operation.")
    REPLAY_DETECTED = (
        "5.3",
        Level.FATAL,
        "ReplayDetection nonce or timestamp was reused or stale.",
    )

    DEVICE_UNREACHABLE = ("6.1", Level.FATAL, "The device did not answer on any path.")
    DEVICE_ASSOCIATION_FAILED = ("6.2", Level.FATAL, "The device refused the association.")
    DEVICE_OBJECT_NOT_FOUND = ("6.3", Level.FATAL, "The device does not have the object asked for.")
    DEVICE_ACCESS_DENIED = ("6.4", Level.FATAL, "The device denied access to the object.")
    DEVICE_MALFORMED_FRAME = ("6.5", Level.FATAL, "The device sent a malformed frame.")
    DEVICE_COUNTER_OUT_OF_SYNC = (
        "6.6",
        Level.FATAL,
        "The security invocation counter is out of sync.",
    )
    DEVICE_ERROR = (
        "6.7",
        Level.FATAL,
        "The device answered but could not carry out the operation (e.g. firmware refused).",
    )

    DEADLINE_EXPIRED = ("7.1", Level.FATAL, "The task was not started before its deadline.")
    DEVICE_TIMEOUT = ("7.2", Level.FATAL, "The device did not answer in time.")

    INTERNAL = ("8.1", Level.CATASTROPHIC, "Internal error; the operator's log has the details.")
    STORAGE = ("8.2", Level.CATASTROPHIC, "The data store could not complete the operation.")

    @property
    def code(self) -> str:
        return self.value[0]

    @property
    def level(self) -> Level:
        return self.value[1]

    @property
    def meaning(self) -> str:
        return self.value[2]

    @property
    def category(self) -> Category:
        return Category(int(self.code.split(".")[0]))

    @classmethod
    def from_code(cls, code: str) -> ErrorCode:
        try:
            return _BY_CODE[code]
        except KeyError:
            raise ValueError(f"unknown OpenHES error code {code!r}") from None


_BY_CODE = {member.code: member for member in ErrorCode}


@dataclass
class CimError(Exception):
    """A refusal with a documented code. Adapters turn it into a Reply with Result FAILED
    (or a SOAP Fault / CLI line); it never reaches a caller as a traceback."""

    error: ErrorCode
    reason: str
    details: str | None = None
    xpath: str | None = None
    line: int | None = None
    object_id: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.reason)

    @property
    def code(self) -> str:
        return self.error.code

    def __str__(self) -> str:
        where = []
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.xpath:
            where.append(self.xpath)
        place = f" ({', '.join(where)})" if where else ""
        return f"[{self.error.code}] {self.reason}{place}"


def error_table_markdown() -> str:
    """The reference table for docs/error-codes.md."""
    lines = ["| code | name | level | meaning |", "|---|---|---|---|"]
    for member in ErrorCode:
        lines.append(f"| `{member.code}` | {member.name} | {member.level} | {member.meaning} |")
    return "\n".join(lines)
