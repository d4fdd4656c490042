"""DLMS security suite 0 (AES-GCM-128, 12-byte tags) on pyca ``cryptography``.

Blue Book / Green Book: the nonce is system title (8) || invocation counter (4); the security
control byte SC carries authentication (0x10), encryption (0x20) and the suite; the additional
authenticated data is SC || AK (|| the plain text when only authenticated).
"""

from __future__ import annotations

import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

TAG_SIZE = 12
SC_AUTHENTICATION = 0x10
SC_ENCRYPTION = 0x20
SC_AUTHENTICATED_ENCRYPTION = 0x30
_SECURITY_BITS = 0x30


class CryptoError(ValueError):
    """Authentication tag mismatch, or a security header this suite does not support."""


def nonce(system_title: bytes, invocation_counter: int) -> bytes:
    if len(system_title) != 8:
        raise CryptoError("system title must be 8 bytes")
    if not 0 <= invocation_counter <= 0xFFFFFFFF:
        raise CryptoError("invocation counter out of range")
    return bytes(system_title) + invocation_counter.to_bytes(4, "big")


def _ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    # GCM without its tag is CTR starting at inc32(J0) = IV || 00000002.
    encryptor = Cipher(algorithms.AES(bytes(key)), modes.CTR(iv + b"\x00\x00\x00\x02")).encryptor()
    return encryptor.update(bytes(data)) + encryptor.finalize()


def protect(
    sc: int,
    block_cipher_key: bytes,
    authentication_key: bytes,
    system_title: bytes,
    invocation_counter: int,
    plain: bytes,
) -> tuple[bytes, bytes]:
    """-> (ciphertext or plain text, 12-byte tag or b"") for the security bits of ``sc``."""
    iv = nonce(system_title, invocation_counter)
    security = sc & _SECURITY_BITS
    if security == SC_AUTHENTICATED_ENCRYPTION:
        out = AESGCM(bytes(block_cipher_key)).encrypt(
            iv, bytes(plain), bytes([sc]) + bytes(authentication_key)
        )
        return out[:-16], out[-16:-4]
    if security == SC_AUTHENTICATION:
        aad = bytes([sc]) + bytes(authentication_key) + bytes(plain)
        tag = AESGCM(bytes(block_cipher_key)).encrypt(iv, b"", aad)
        return bytes(plain), tag[:TAG_SIZE]
    if security == SC_ENCRYPTION:
        return _ctr(block_cipher_key, iv, plain), b""
    raise CryptoError(f"security control {sc:#04x} has no security")


def unprotect(
    sc: int,
    block_cipher_key: bytes,
    authentication_key: bytes,
    system_title: bytes,
    invocation_counter: int,
    payload: bytes,
) -> bytes:
    """The plain text of ``payload`` (ciphertext || tag, or plain || tag). Raises CryptoError
    when the tag does not verify."""
    iv = nonce(system_title, invocation_counter)
    security = sc & _SECURITY_BITS
    if security == SC_ENCRYPTION:
        return _ctr(block_cipher_key, iv, payload)
    if len(payload) < TAG_SIZE:
        raise CryptoError("ciphered payload shorter than its tag")
    body, tag = bytes(payload[:-TAG_SIZE]), bytes(payload[-TAG_SIZE:])
    decryptor = Cipher(
        algorithms.AES(bytes(block_cipher_key)), modes.GCM(iv, tag, min_tag_length=TAG_SIZE)
    ).decryptor()
    decryptor.authenticate_additional_data(bytes([sc]) + bytes(authentication_key))
    try:
        if security == SC_AUTHENTICATED_ENCRYPTION:
            plain = decryptor.update(body)
            decryptor.finalize()
            return plain
        if security == SC_AUTHENTICATION:
            decryptor.authenticate_additional_data(body)
            decryptor.finalize()
            return body
    except InvalidTag as exc:
        raise CryptoError("authentication tag does not verify") from exc
    raise CryptoError(f"security control {sc:#04x} has no security")


def gmac(
    sc: int,
    block_cipher_key: bytes,
    authentication_key: bytes,
    system_title: bytes,
    ic: int,
    data: bytes,
) -> bytes:
    """The 12-byte GMAC of ``data`` (HLS mechanism 5: f(challenge))."""
    return protect(
        (sc & ~_SECURITY_BITS) | SC_AUTHENTICATION,
        block_cipher_key,
        authentication_key,
        system_title,
        ic,
        data,
    )[1]


def challenge(size: int = 16) -> bytes:
    """An HLS challenge from the operating system's CSPRNG (gurux uses ``random``)."""
    return secrets.token_bytes(size)
