"""The WS-Security header (UsernameToken profile 1.0): shape, digests computed independently
here, freshness, mustUnderstand, and hostile XML refused by cim.xmlsafe before anything."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from adapters.auth.wssecurity import (
    BASE64_BINARY,
    DIGEST,
    PASSWORD_DIGEST,
    PASSWORD_TEXT,
    TEXT,
    WSSE,
    WSU,
    SecurityHeader,
    TokenError,
    TokenPolicy,
    check_fresh,
    header_of,
    must_understand,
    parse_datetime,
    parse_security,
    parse_username_token,
    password_digest,
    soap_header,
)
from cim.errors import CimError, ErrorCode
from cim.namespaces import SOAP11_ENVELOPE, SOAP12_ENVELOPE
from cim.xmlsafe import parse_bytes

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
NONCE = b"0123456789abcdef"


def created_text(at: datetime = NOW) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def token_xml(
    username: str = "alice",
    password: str | None = "s3cret",
    *,
    kind: str | None = None,
    nonce: str | None = None,
    created: str | None = None,
    extra: str = "",
) -> str:
    parts = [f"<wsse:Username>{username}</wsse:Username>"] if username is not None else []
    if password is not None:
        type_attr = f' Type="{kind}"' if kind else ""
        parts.append(f"<wsse:Password{type_attr}>{password}</wsse:Password>")
    if nonce is not None:
        parts.append(f'<wsse:Nonce EncodingType="{BASE64_BINARY}">{nonce}</wsse:Nonce>')
    if created is not None:
        parts.append(f"<wsu:Created>{created}</wsu:Created>")
    return f"<wsse:UsernameToken>{''.join(parts)}{extra}</wsse:UsernameToken>"


def envelope(security_body: str, *, soap: str = SOAP11_ENVELOPE, attrs: str = "") -> bytes:
    return (
        f'<s:Envelope xmlns:s="{soap}" xmlns:wsse="{WSSE}" xmlns:wsu="{WSU}">'
        f"<s:Header><wsse:Security{attrs}>{security_body}</wsse:Security></s:Header>"
        f"<s:Body><x/></s:Body></s:Envelope>"
    ).encode()


def parse(security_body: str, **kwargs) -> SecurityHeader | None:
    return parse_security(soap_header(envelope(security_body, **kwargs)))


def independent_digest(nonce: bytes, created: str, password: str) -> str:
    return base64.b64encode(
        hashlib.sha1(nonce + created.encode() + password.encode()).digest()
    ).decode()


def digest_token(password: str = "s3cret", *, created: str | None = None, nonce=NONCE) -> str:
    created = created or created_text()
    return token_xml(
        password=independent_digest(nonce, created, password),
        kind=PASSWORD_DIGEST,
        nonce=base64.b64encode(nonce).decode(),
        created=created,
    )


def test_password_text_token() -> None:
    security = parse(token_xml(kind=PASSWORD_TEXT, created=created_text()))
    assert security is not None and security.token is not None
    token = security.token
    assert (token.username, token.password, token.password_type) == ("alice", "s3cret", TEXT)
    assert token.created == NOW and token.created_text == created_text()
    assert "s3cret" not in repr(token)


def test_password_type_defaults_to_text() -> None:
    token = parse_username_token(soap_header(envelope(token_xml())))
    assert token is not None and token.password_type == TEXT and token.nonce is None


def test_password_digest_matches_the_digest_computed_independently() -> None:
    token = parse_username_token(soap_header(envelope(digest_token("s3cret"))))
    assert token is not None and token.password_type == DIGEST
    assert token.nonce == NONCE
    assert token.digest_matches("s3cret")
    assert not token.digest_matches("s3creT")
    assert password_digest(NONCE, created_text(), "s3cret") == independent_digest(
        NONCE, created_text(), "s3cret"
    )


def test_the_digest_covers_created_exactly_as_sent() -> None:
    created = "2026-03-01T13:00:00+01:00"  # the same instant as NOW, written differently
    token = parse_username_token(soap_header(envelope(digest_token(created=created))))
    assert token is not None and token.created == NOW
    assert token.digest_matches("s3cret")


def test_soap12_and_an_envelope_or_header_element() -> None:
    data = envelope(token_xml(), soap=SOAP12_ENVELOPE)
    root = parse_bytes(data)
    assert parse_username_token(root) is not None  # the Envelope
    assert parse_username_token(header_of(root)) is not None  # the Header
    assert parse_security(None) is None


def test_no_header_or_no_security_is_no_token() -> None:
    bare = f'<s:Envelope xmlns:s="{SOAP11_ENVELOPE}"><s:Body/></s:Envelope>'.encode()
    assert soap_header(bare) is None
    other = (
        f'<s:Envelope xmlns:s="{SOAP11_ENVELOPE}"><s:Header><a xmlns="urn:x"/></s:Header>'
        f"<s:Body/></s:Envelope>"
    ).encode()
    assert parse_security(soap_header(other)) is None


def test_a_security_header_for_another_actor_is_not_ours() -> None:
    data = envelope(token_xml(), attrs=' s:actor="urn:some-intermediary"')
    assert parse_security(soap_header(data)) is None
    data = envelope(token_xml(), attrs=' s:actor="http://schemas.xmlsoap.org/soap/actor/next"')
    assert parse_username_token(soap_header(data)) is not None


@pytest.mark.parametrize(
    "body, message",
    [
        (token_xml(username=None), "no Username"),
        (token_xml(username="  "), "Username is empty"),
        (token_xml(username="<b>alice</b>"), "text only"),
        (token_xml(username="a" * 300), "longer than"),
        (token_xml(password=None), "no Password"),
        (token_xml(password=""), "Password is empty"),
        (token_xml(kind="urn:plaintext"), "unsupported Password Type"),
        (token_xml(nonce="!!not base64!!"), "not valid Base64"),
        (token_xml(nonce=""), "Nonce is empty"),
        (token_xml(nonce=base64.b64encode(b"x" * 300).decode()), "longer than 256"),
        (token_xml(created="yesterday"), "xsd:dateTime"),
        (token_xml(created="2026-03-01T12:00:00"), "time zone"),
        (token_xml(created="2026-02-30T12:00:00Z"), "not a valid date"),
        (token_xml(kind=PASSWORD_DIGEST, created=created_text()), "Nonce and Created"),
        (
            token_xml(kind=PASSWORD_DIGEST, nonce=base64.b64encode(NONCE).decode()),
            "Nonce and Created",
        ),
        (
            token_xml(
                password="c2hvcnQ=",
                kind=PASSWORD_DIGEST,
                nonce=base64.b64encode(NONCE).decode(),
                created=created_text(),
            ),
            "not a Base64 SHA-1",
        ),
        (
            token_xml(
                password="%%%",
                kind=PASSWORD_DIGEST,
                nonce=base64.b64encode(NONCE).decode(),
                created=created_text(),
            ),
            "not valid Base64",
        ),
        (token_xml() + token_xml(), "more than one UsernameToken"),
        (token_xml(extra="<wsse:Username>bob</wsse:Username>"), "more than one Username"),
    ],
)
def test_malformed_tokens_are_refused(body: str, message: str) -> None:
    with pytest.raises(TokenError, match=message) as caught:
        parse(body)
    assert "s3cret" not in caught.value.reason
    assert not caught.value.must_understand


def test_a_nonce_encoding_other_than_base64_is_refused() -> None:
    body = token_xml().replace(
        "</wsse:UsernameToken>",
        '<wsse:Nonce EncodingType="urn:hex">00ff</wsse:Nonce></wsse:UsernameToken>',
    )
    with pytest.raises(TokenError, match="EncodingType"):
        parse(body)


def test_two_security_headers_for_us_are_refused() -> None:
    data = (
        f'<s:Envelope xmlns:s="{SOAP11_ENVELOPE}" xmlns:wsse="{WSSE}"><s:Header>'
        f"<wsse:Security>{token_xml()}</wsse:Security>"
        f"<wsse:Security>{token_xml('bob')}</wsse:Security>"
        f"</s:Header><s:Body/></s:Envelope>"
    ).encode()
    with pytest.raises(TokenError, match="more than one wsse:Security"):
        parse_security(soap_header(data))


def test_not_a_soap_header() -> None:
    with pytest.raises(TokenError, match="not a SOAP"):
        parse_security(parse_bytes(b"<Header/>"))


SIGNATURE = '<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"/>'


def test_must_understand_with_what_we_do_not_process_is_refused() -> None:
    for soap, value in ((SOAP11_ENVELOPE, "1"), (SOAP12_ENVELOPE, "true")):
        data = envelope(token_xml() + SIGNATURE, soap=soap, attrs=f' s:mustUnderstand="{value}"')
        with pytest.raises(TokenError, match="mustUnderstand") as caught:
            parse_security(soap_header(data))
        assert caught.value.must_understand


def test_must_understand_is_honoured_for_what_we_process() -> None:
    data = envelope(token_xml(), attrs=' s:mustUnderstand="1"')
    header = soap_header(data)
    assert must_understand(header[0])
    assert parse_username_token(header) is not None
    # Without mustUnderstand an unknown element may be ignored.
    assert parse_username_token(soap_header(envelope(token_xml() + SIGNATURE))) is not None
    data = envelope(token_xml() + SIGNATURE, attrs=' s:mustUnderstand="0"')
    assert parse_username_token(soap_header(data)) is not None


POLICY = TokenPolicy(freshness_seconds=300, clock_skew_seconds=30)


def security_at(created: datetime, **timestamp) -> SecurityHeader:
    body = token_xml(created=created_text(created))
    if timestamp:
        items = "".join(f"<wsu:{k}>{created_text(v)}</wsu:{k}>" for k, v in timestamp.items())
        body = f"<wsu:Timestamp>{items}</wsu:Timestamp>" + body
    security = parse(body)
    assert security is not None
    return security


def test_fresh_tokens_pass() -> None:
    for offset in (0, -299, -329, 29):
        check_fresh(security_at(NOW + timedelta(seconds=offset)), POLICY, NOW)


def test_stale_created_is_refused() -> None:
    with pytest.raises(TokenError, match="freshness window"):
        check_fresh(security_at(NOW - timedelta(seconds=331)), POLICY, NOW)


def test_future_created_is_refused() -> None:
    with pytest.raises(TokenError, match="in the future"):
        check_fresh(security_at(NOW + timedelta(seconds=31)), POLICY, NOW)


def test_timestamp_expiry_and_creation() -> None:
    check_fresh(security_at(NOW, Created=NOW, Expires=NOW + timedelta(minutes=5)), POLICY, NOW)
    with pytest.raises(TokenError, match="expired"):
        check_fresh(security_at(NOW, Expires=NOW - timedelta(seconds=31)), POLICY, NOW)
    with pytest.raises(TokenError, match="Timestamp was created in the future"):
        check_fresh(security_at(NOW, Created=NOW + timedelta(seconds=31)), POLICY, NOW)
    with pytest.raises(TokenError, match="more than one wsu:Timestamp"):
        parse("<wsu:Timestamp/><wsu:Timestamp/>" + token_xml())


def test_token_policy_is_checked() -> None:
    with pytest.raises(ValueError):
        TokenPolicy(freshness_seconds=0)
    with pytest.raises(ValueError):
        TokenPolicy(freshness_seconds=60, clock_skew_seconds=61)


def test_replay_window_of_a_nonce() -> None:
    token = security_at(NOW).token
    assert token is not None
    assert token.replay_until(POLICY, NOW) == NOW + timedelta(seconds=330)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2026-03-01T12:00:00Z", NOW),
        ("2026-03-01T12:00:00.1234567Z", NOW + timedelta(microseconds=123456)),
        ("2026-03-01T14:00:00+02:00", NOW),
        (" 2026-03-01T12:00:00Z\n", NOW),
    ],
)
def test_datetimes(text: str, expected: datetime) -> None:
    assert parse_datetime(text, "Created") == expected


HOSTILE = [
    # XXE through the SOAP header: the entity would put a file into the Username
    b'<?xml version="1.0"?><!DOCTYPE s [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Header>'
    b'<wsse:Security xmlns:wsse="' + WSSE.encode() + b'"><wsse:UsernameToken>'
    b"<wsse:Username>&x;</wsse:Username><wsse:Password>p</wsse:Password>"
    b"</wsse:UsernameToken></wsse:Security></s:Header><s:Body/></s:Envelope>",
    # billion laughs
    b'<!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
    b"<l>&b;</l>",
]


@pytest.mark.parametrize("data", HOSTILE)
def test_hostile_xml_is_refused_before_any_header_is_read(data: bytes) -> None:
    with pytest.raises(CimError) as caught:
        soap_header(data)
    assert caught.value.error is ErrorCode.FORBIDDEN_XML


def test_deep_nesting_is_refused() -> None:
    data = b"<a>" * 200 + b"</a>" * 200
    with pytest.raises(CimError) as caught:
        soap_header(data)
    assert caught.value.error is ErrorCode.TOO_DEEP


def test_comments_do_not_split_a_username() -> None:
    # The hardened parser drops comments, so "al<!-- -->ice" is read as one text.
    body = token_xml(username="al<!-- x -->ice")
    token = parse_username_token(soap_header(envelope(body)))
    assert token is not None and token.username == "alice"
