"""The WS-Security header: OASIS WSS 1.0 (and 1.1) UsernameToken profile.

Read from a SOAP Header already parsed by the hardened parser (:mod:`cim.xmlsafe`; use
:func:`soap_header` to get it from the request bytes): the ``wsse:Security`` header meant for
this receiver, its ``wsse:UsernameToken`` (Username, Password of type PasswordText or
PasswordDigest, Nonce, wsu:Created) and an optional ``wsu:Timestamp``.

Checked here, without the database: the token's shape, the Base64 of Nonce and digest, the
freshness of Created (within the freshness window, at most the clock skew in the future) and
of the Timestamp, and ``mustUnderstand``: a Security header marked so that carries elements
OpenHES does not process (a signature, encrypted keys, binary tokens) is refused, because
accepting it would claim checks that were never made. The password and the replay of the
nonce are checked by :mod:`adapters.auth.authenticator`.

Every refusal is a :class:`TokenError` with a reason safe to log (never a password).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from lxml import etree

from cim.namespaces import SOAP11_ENVELOPE, SOAP12_ENVELOPE
from cim.xmlsafe import DEFAULT_LIMITS, XmlLimits, parse_bytes

WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
_PROFILE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
PASSWORD_TEXT = _PROFILE + "#PasswordText"
PASSWORD_DIGEST = _PROFILE + "#PasswordDigest"
BASE64_BINARY = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary"
)
_SOAP_NAMESPACES = (SOAP11_ENVELOPE, SOAP12_ENVELOPE)
# Header targets that mean "this receiver" (absent actor/role does too).
_OUR_TARGETS = frozenset(
    {
        "http://schemas.xmlsoap.org/soap/actor/next",
        "http://www.w3.org/2003/05/soap-envelope/role/next",
        "http://www.w3.org/2003/05/soap-envelope/role/ultimateReceiver",
    }
)
# What OpenHES processes inside a Security header.
_UNDERSTOOD = frozenset({f"{{{WSSE}}}UsernameToken", f"{{{WSU}}}Timestamp"})

MAX_USERNAME_CHARS = 256
MAX_PASSWORD_CHARS = 1024
MAX_NONCE_BYTES = 256
DIGEST_BYTES = 20  # SHA-1

TEXT = "text"
DIGEST = "digest"

_DATETIME = re.compile(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,12}))?(Z|[+-]\d{2}:\d{2})")


class TokenError(Exception):
    """A Security header refused. ``must_understand``: refused because it was marked
    mustUnderstand and carries what OpenHES does not process (a SOAP MustUnderstand fault)."""

    def __init__(self, reason: str, *, must_understand: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.must_understand = must_understand


@dataclass(frozen=True)
class TokenPolicy:
    """How fresh a UsernameToken must be: Created no older than ``freshness_seconds`` (plus
    the skew), and no more than ``clock_skew_seconds`` in the future."""

    freshness_seconds: float = 300.0
    clock_skew_seconds: float = 30.0

    def __post_init__(self) -> None:
        if not self.freshness_seconds > 0:
            raise ValueError("the freshness window must be positive")
        if not 0 <= self.clock_skew_seconds <= self.freshness_seconds:
            raise ValueError("the clock skew must be between 0 and the freshness window")

    @property
    def freshness(self) -> timedelta:
        return timedelta(seconds=self.freshness_seconds)

    @property
    def skew(self) -> timedelta:
        return timedelta(seconds=self.clock_skew_seconds)


@dataclass(frozen=True)
class UsernameToken:
    username: str
    password: str = field(repr=False)
    password_type: str  # TEXT or DIGEST
    nonce: bytes | None = field(default=None, repr=False)
    created_text: str | None = None  # exactly as sent: the digest covers this text
    created: datetime | None = None

    def digest_matches(self, password: str) -> bool:
        """For a PasswordDigest token: does it match ``password``? (constant time)"""
        if self.password_type != DIGEST or self.nonce is None or self.created_text is None:
            return False
        expected = digest_bytes(self.nonce, self.created_text, password)
        return hmac.compare_digest(expected, _base64(self.password, "the PasswordDigest"))

    def replay_until(self, policy: TokenPolicy, now: datetime) -> datetime:
        """How long its nonce must be remembered: until the token could no longer be fresh."""
        base = self.created if self.created is not None else now
        return base + policy.freshness + policy.skew


@dataclass(frozen=True)
class SecurityHeader:
    token: UsernameToken | None
    timestamp_created: datetime | None = None
    timestamp_expires: datetime | None = None


def digest_bytes(nonce: bytes, created: str, password: str) -> bytes:
    """SHA-1(nonce + created + password), the PasswordDigest before Base64."""
    return hashlib.sha1(nonce + created.encode("utf-8") + password.encode("utf-8")).digest()


def password_digest(nonce: bytes, created: str, password: str) -> str:
    """Base64(SHA-1(nonce + created + password)), as the UsernameToken profile defines it."""
    return base64.b64encode(digest_bytes(nonce, created, password)).decode("ascii")


def soap_header(envelope: bytes, limits: XmlLimits = DEFAULT_LIMITS) -> etree._Element | None:
    """The SOAP Header of a request, parsed with the hardened parser (a hostile document raises
    :class:`cim.errors.CimError`); None when the envelope has no Header."""
    root = parse_bytes(envelope, limits)
    return header_of(root)


def header_of(element: etree._Element) -> etree._Element | None:
    """The Header element, given the Envelope or the Header itself."""
    if element.tag in {f"{{{ns}}}Header" for ns in _SOAP_NAMESPACES}:
        return element
    if element.tag in {f"{{{ns}}}Envelope" for ns in _SOAP_NAMESPACES}:
        for child in element:
            if child.tag == f"{{{etree.QName(element).namespace}}}Header":
                return child
    return None


def must_understand(element: etree._Element) -> bool:
    """Whether a SOAP header block is marked mustUnderstand (SOAP 1.1 or 1.2)."""
    for ns in _SOAP_NAMESPACES:
        value = element.get(f"{{{ns}}}mustUnderstand")
        if value is not None:
            return value.strip() in ("1", "true")
    return False


def _for_us(element: etree._Element) -> bool:
    target = element.get(f"{{{SOAP11_ENVELOPE}}}actor")
    if target is None:
        target = element.get(f"{{{SOAP12_ENVELOPE}}}role")
    return target is None or not target.strip() or target.strip() in _OUR_TARGETS


def parse_security(header: etree._Element | None) -> SecurityHeader | None:
    """The Security header meant for this receiver, read and checked for shape; None when the
    request carries none."""
    if header is None:
        return None
    header = header_of(header)
    if header is None:
        raise TokenError("the SOAP header is not a SOAP 1.1 or 1.2 Header element")
    blocks = [b for b in header if b.tag == f"{{{WSSE}}}Security" and _for_us(b)]
    if not blocks:
        return None
    if len(blocks) > 1:
        raise TokenError("more than one wsse:Security header for this receiver")
    security = blocks[0]
    marked = must_understand(security)
    token: UsernameToken | None = None
    created = expires = None
    timestamps = 0
    for child in security:
        if not isinstance(child.tag, str):
            continue
        if child.tag == f"{{{WSSE}}}UsernameToken":
            if token is not None:
                raise TokenError("more than one UsernameToken")
            token = _username_token(child)
        elif child.tag == f"{{{WSU}}}Timestamp":
            timestamps += 1
            if timestamps > 1:
                raise TokenError("more than one wsu:Timestamp")
            created, expires = _timestamp(child)
        elif marked:
            raise TokenError(
                f"the Security header is marked mustUnderstand and carries "
                f"{_shown(child.tag)}, which OpenHES does not process",
                must_understand=True,
            )
    return SecurityHeader(token, created, expires)


def parse_username_token(header: etree._Element | None) -> UsernameToken | None:
    """Just the UsernameToken of :func:`parse_security` (None when there is none)."""
    security = parse_security(header)
    return security.token if security is not None else None


def check_fresh(security: SecurityHeader, policy: TokenPolicy, now: datetime) -> None:
    """Refuse a token created too long ago or in the future, or an expired Timestamp."""
    token = security.token
    if token is not None and token.created is not None:
        if token.created < now - policy.freshness - policy.skew:
            raise TokenError(
                f"the UsernameToken was created at {_iso(token.created)}, older than "
                f"the {policy.freshness_seconds:g} s freshness window"
            )
        if token.created > now + policy.skew:
            raise TokenError(
                f"the UsernameToken was created at {_iso(token.created)}, in the future"
            )
    if security.timestamp_expires is not None and security.timestamp_expires < now - policy.skew:
        raise TokenError("the wsu:Timestamp has expired")
    if security.timestamp_created is not None and security.timestamp_created > now + policy.skew:
        raise TokenError("the wsu:Timestamp was created in the future")


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


# --- reading the elements -----------------------------------------------------------------


def _shown(tag: object) -> str:
    text = str(tag)
    return text if len(text) <= 120 else text[:117] + "..."


def _text(element: etree._Element, what: str, limit: int) -> str:
    if len(element):
        raise TokenError(f"{what} must hold text only, not elements")
    text = element.text or ""
    if len(text) > limit:
        raise TokenError(f"{what} is longer than {limit} characters")
    return text


def _one(parent: etree._Element, tags: tuple[str, ...], what: str) -> etree._Element | None:
    found = [child for child in parent if child.tag in tags]
    if len(found) > 1:
        raise TokenError(f"more than one {what} in the UsernameToken")
    return found[0] if found else None


def _base64(text: str, what: str) -> bytes:
    squeezed = "".join(text.split())
    if not squeezed:
        raise TokenError(f"{what} is empty")
    try:
        return base64.b64decode(squeezed, validate=True)
    except (binascii.Error, ValueError):
        raise TokenError(f"{what} is not valid Base64") from None


def parse_datetime(text: str, what: str) -> datetime:
    """An xsd:dateTime with its time zone (UTC 'Z' or an offset), as an aware datetime."""
    match = _DATETIME.fullmatch(text.strip())
    if match is None:
        raise TokenError(f"{what} is not an xsd:dateTime with a time zone: {text[:40]!r}")
    base, fraction, zone = match.groups()
    fraction = ((fraction or "") + "000000")[:6]
    try:
        value = datetime.fromisoformat(f"{base}.{fraction}{'+00:00' if zone == 'Z' else zone}")
    except ValueError:
        raise TokenError(f"{what} is not a valid date and time: {text[:40]!r}") from None
    return value.astimezone(UTC)


def _username_token(element: etree._Element) -> UsernameToken:
    username_element = _one(element, (f"{{{WSSE}}}Username",), "Username")
    if username_element is None:
        raise TokenError("the UsernameToken has no Username")
    username = _text(username_element, "Username", MAX_USERNAME_CHARS).strip()
    if not username:
        raise TokenError("the Username is empty")
    password_element = _one(element, (f"{{{WSSE}}}Password",), "Password")
    if password_element is None:
        raise TokenError("the UsernameToken has no Password")
    password = _text(password_element, "Password", MAX_PASSWORD_CHARS)
    kind = (password_element.get("Type") or PASSWORD_TEXT).strip()
    if kind == PASSWORD_TEXT:
        password_type = TEXT
    elif kind == PASSWORD_DIGEST:
        password_type = DIGEST
    else:
        raise TokenError(f"unsupported Password Type {kind[:120]!r}")

    nonce = None
    nonce_element = _one(element, (f"{{{WSSE}}}Nonce",), "Nonce")
    if nonce_element is not None:
        encoding = (nonce_element.get("EncodingType") or BASE64_BINARY).strip()
        if encoding != BASE64_BINARY:
            raise TokenError(f"unsupported Nonce EncodingType {encoding[:120]!r}")
        nonce = _base64(_text(nonce_element, "Nonce", 4 * MAX_NONCE_BYTES), "the Nonce")
        if len(nonce) > MAX_NONCE_BYTES:
            raise TokenError(f"the Nonce is longer than {MAX_NONCE_BYTES} bytes")

    created_text = created = None
    # wsu:Created per the profile; a few clients put it in the wsse namespace.
    created_element = _one(element, (f"{{{WSU}}}Created", f"{{{WSSE}}}Created"), "Created")
    if created_element is not None:
        created_text = _text(created_element, "Created", 64)
        created = parse_datetime(created_text, "Created")

    if password_type == DIGEST:
        if nonce is None or created is None:
            raise TokenError("a PasswordDigest needs both Nonce and Created")
        if len(_base64(password, "the PasswordDigest")) != DIGEST_BYTES:
            raise TokenError("the PasswordDigest is not a Base64 SHA-1 digest")
    elif not password:
        raise TokenError("the Password is empty")
    return UsernameToken(username, password, password_type, nonce, created_text, created)


def _timestamp(element: etree._Element) -> tuple[datetime | None, datetime | None]:
    created = expires = None
    for child in element:
        if child.tag == f"{{{WSU}}}Created":
            created = parse_datetime(_text(child, "Timestamp Created", 64), "Timestamp Created")
        elif child.tag == f"{{{WSU}}}Expires":
            expires = parse_datetime(_text(child, "Timestamp Expires", 64), "Timestamp Expires")
    return created, expires


__all__ = [
    "BASE64_BINARY",
    "DIGEST",
    "PASSWORD_DIGEST",
    "PASSWORD_TEXT",
    "TEXT",
    "WSSE",
    "WSU",
    "SecurityHeader",
    "TokenError",
    "TokenPolicy",
    "UsernameToken",
    "check_fresh",
    "digest_bytes",
    "header_of",
    "must_understand",
    "parse_datetime",
    "parse_security",
    "parse_username_token",
    "password_digest",
    "soap_header",
]
