"""DLMS/COSEM security suite 0 (IEC 62056-5-3 §5.3.4, Green Book 'cryptographic
protection'): AES-GCM-128 with a 12-octet tag, the security control byte, invocation
counters, glo-/ded- ciphered APDUs and HLS-GMAC (authentication mechanism 5).

All cryptography is pyca ``cryptography``; challenges come from ``secrets``.
"""

from __future__ import annotations

import hmac
import secrets
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from drivers.sim.axdr import decode_length, encode_length

SC_SUITE_MASK = 0x0F
SC_AUTHENTICATED = 0x10
SC_ENCRYPTED = 0x20
SC_BROADCAST_KEY = 0x40
SC_COMPRESSED = 0x80
TAG_SIZE = 12
KEY_SIZE = 16
SYSTEM_TITLE_SIZE = 8
MAX_INVOCATION_COUNTER = 0xFFFFFFFF

# Plain APDU tag -> (glo-, ded-) ciphered tag.
GLO_DED_TAGS: dict[int, tuple[int, int | None]] = {
    0x01: (0x21, None),  # InitiateRequest
    0x08: (0x28, None),  # InitiateResponse
    0x0E: (0x2E, None),  # ConfirmedServiceError
    0xC0: (0xC8, 0xD0),  # get-request
    0xC1: (0xC9, 0xD1),  # set-request
    0xC2: (0xCA, 0xD2),  # event-notification-request
    0xC3: (0xCB, 0xD3),  # action-request
    0xC4: (0xCC, 0xD4),  # get-response
    0xC5: (0xCD, 0xD5),  # set-response
    0xC7: (0xCF, 0xD7),  # action-response
}
GLO_TAGS = {glo: plain for plain, (glo, _) in GLO_DED_TAGS.items()}
DED_TAGS = {ded: plain for plain, (_, ded) in GLO_DED_TAGS.items() if ded is not None}
GENERAL_GLO = 0xDB  # general-glo-ciphering: carries the sender's system title
GENERAL_DED = 0xDC


class SecurityError(ValueError):
    """A protected APDU that does not decrypt or authenticate, or is malformed."""


@dataclass(frozen=True, slots=True)
class Protected:
    """A ciphered APDU taken apart. ``plain_tag`` is the tag of the APDU inside (None for
    general-glo/ded-ciphering, which does not say); ``system_title`` is the sender's,
    present only in general ciphering."""

    plain_tag: int | None
    dedicated: bool
    security_control: int
    invocation_counter: int
    payload: bytes  # SC || IC || ciphertext (+ tag) or plaintext + tag
    system_title: bytes | None = None


def _iv(system_title: bytes, invocation_counter: int) -> bytes:
    if len(system_title) != SYSTEM_TITLE_SIZE:
        raise SecurityError("a system title is 8 octets")
    return system_title + struct.pack(">I", invocation_counter)


def _check_key(key: bytes) -> None:
    if len(key) != KEY_SIZE:
        raise SecurityError("security suite 0 keys are 16 octets")


def _encrypt(key: bytes, iv: bytes, aad: bytes, plaintext: bytes) -> tuple[bytes, bytes]:
    enc = Cipher(algorithms.AES(key), modes.GCM(iv)).encryptor()
    enc.authenticate_additional_data(aad)
    ct = enc.update(plaintext) + enc.finalize()
    return ct, enc.tag[:TAG_SIZE]


def _decrypt(key: bytes, iv: bytes, aad: bytes, ciphertext: bytes, tag: bytes) -> bytes:
    dec = Cipher(algorithms.AES(key), modes.GCM(iv, tag, min_tag_length=TAG_SIZE)).decryptor()
    dec.authenticate_additional_data(aad)
    try:
        return dec.update(ciphertext) + dec.finalize()
    except InvalidTag as exc:
        raise SecurityError("authentication tag mismatch") from exc


def protect(
    security_control: int,
    system_title: bytes,
    invocation_counter: int,
    ek: bytes,
    ak: bytes,
    plaintext: bytes,
) -> bytes:
    """SC || IC || (ciphertext and/or tag), the content of a ciphered APDU."""
    _check_key(ek)
    if security_control & SC_SUITE_MASK != 0:
        raise SecurityError("only security suite 0 is implemented")
    if not 0 <= invocation_counter <= MAX_INVOCATION_COUNTER:
        raise SecurityError("invocation counter out of range")
    iv = _iv(system_title, invocation_counter)
    head = struct.pack(">BI", security_control, invocation_counter)
    auth = security_control & SC_AUTHENTICATED
    if security_control & SC_ENCRYPTED:
        ct, tag = _encrypt(ek, iv, bytes((security_control,)) + ak if auth else b"", plaintext)
        return head + ct + (tag if auth else b"")
    if auth:
        _, tag = _encrypt(ek, iv, bytes((security_control,)) + ak + plaintext, b"")
        return head + plaintext + tag
    raise SecurityError("security control selects neither authentication nor encryption")


def unprotect(content: bytes, system_title: bytes, ek: bytes, ak: bytes) -> tuple[int, int, bytes]:
    """(security control, invocation counter, plaintext) of SC || IC || payload."""
    _check_key(ek)
    if len(content) < 5:
        raise SecurityError("ciphered content shorter than SC and IC")
    sc, ic = struct.unpack_from(">BI", content)
    if sc & SC_SUITE_MASK != 0:
        raise SecurityError(f"security suite {sc & SC_SUITE_MASK} not supported")
    if sc & SC_COMPRESSED:
        raise SecurityError("compression not supported")
    iv = _iv(system_title, ic)
    body = content[5:]
    auth = sc & SC_AUTHENTICATED
    if auth and len(body) < TAG_SIZE:
        raise SecurityError("ciphered content shorter than its tag")
    if sc & SC_ENCRYPTED:
        if auth:
            aad = bytes((sc,)) + ak
            return sc, ic, _decrypt(ek, iv, aad, body[:-TAG_SIZE], body[-TAG_SIZE:])
        # Encryption only: GCM without a tag is CTR from counter block 2.
        dec = Cipher(algorithms.AES(ek), modes.CTR(iv + b"\x00\x00\x00\x02")).decryptor()
        return sc, ic, dec.update(body) + dec.finalize()
    if auth:
        plaintext = body[:-TAG_SIZE]
        _decrypt(ek, iv, bytes((sc,)) + ak + plaintext, b"", body[-TAG_SIZE:])
        return sc, ic, plaintext
    raise SecurityError("security control selects neither authentication nor encryption")


def wrap(ciphered_tag: int, content: bytes) -> bytes:
    return bytes((ciphered_tag,)) + encode_length(len(content)) + content


def wrap_general(dedicated: bool, system_title: bytes, content: bytes) -> bytes:
    """general-glo-ciphering (or -ded-) around SC || IC || payload."""
    return (
        bytes((GENERAL_DED if dedicated else GENERAL_GLO, len(system_title)))
        + system_title
        + encode_length(len(content))
        + content
    )


def parse_protected(apdu: bytes) -> Protected:
    """Split a glo-/ded-/general- ciphered APDU; SecurityError if it is not one or is
    truncated."""
    if not apdu:
        raise SecurityError("empty APDU")
    tag = apdu[0]
    if tag in (GENERAL_GLO, GENERAL_DED):
        if len(apdu) < 2 or len(apdu) < 2 + apdu[1]:
            raise SecurityError("truncated general ciphering system title")
        title = bytes(apdu[2 : 2 + apdu[1]])
        inner = parse_protected(b"\xcc" + apdu[2 + apdu[1] :])  # same length rules
        return Protected(
            None,
            tag == GENERAL_DED,
            inner.security_control,
            inner.invocation_counter,
            inner.payload,
            title,
        )
    if tag in GLO_TAGS:
        plain, dedicated = GLO_TAGS[tag], False
    elif tag in DED_TAGS:
        plain, dedicated = DED_TAGS[tag], True
    else:
        raise SecurityError(f"0x{tag:02x} is not a glo- or ded- ciphered APDU")
    try:
        n, pos = decode_length(apdu, 1)
    except ValueError as exc:
        raise SecurityError(str(exc)) from exc
    if pos + n != len(apdu) or n < 5:
        raise SecurityError("ciphered APDU length mismatch")
    sc, ic = struct.unpack_from(">BI", apdu, pos)
    return Protected(plain, dedicated, sc, ic, bytes(apdu[pos:]))


def new_challenge(size: int = 16) -> bytes:
    """A server or client challenge for HLS (8 to 64 octets)."""
    if not 8 <= size <= 64:
        raise ValueError("HLS challenges are 8 to 64 octets")
    return secrets.token_bytes(size)


def gmac_response(
    system_title: bytes, invocation_counter: int, ek: bytes, ak: bytes, challenge: bytes
) -> bytes:
    """f(challenge) of HLS-GMAC: SC(0x10) || IC || GMAC(SC || AK || challenge)."""
    _check_key(ek)
    sc = SC_AUTHENTICATED
    _, tag = _encrypt(ek, _iv(system_title, invocation_counter), bytes((sc,)) + ak + challenge, b"")
    return struct.pack(">BI", sc, invocation_counter) + tag


def verify_gmac_response(
    response: bytes, system_title: bytes, ek: bytes, ak: bytes, challenge: bytes
) -> int | None:
    """The invocation counter of a valid f(challenge), or None."""
    if len(response) != 5 + TAG_SIZE or response[0] != SC_AUTHENTICATED:
        return None
    ic = struct.unpack_from(">I", response, 1)[0]
    expected = gmac_response(system_title, ic, ek, ak, challenge)
    return ic if hmac.compare_digest(expected, response) else None
