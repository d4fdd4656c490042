"""Meter secrets encrypted at rest under a master key (AES-256-GCM, pyca ``cryptography``).

The master key comes from configuration or the environment (``OPENHES_MASTER_KEY``: 32 bytes
as 64 hex digits or base64). Each stored value is a token ``v1.<key id>.<base64>`` holding a
random 96-bit nonce and the ciphertext with its tag; the associated data binds the value to
its meter and field, so a value copied to another row or column does not decrypt. The key id
is a fingerprint of the master key: values stored under an older key are found by it and
re-encrypted with :meth:`Keyring.reencrypt` once that key is configured as a previous key
(``OPENHES_MASTER_KEY_PREVIOUS``, comma-separated).

Nothing here puts a key or a secret in a ``repr``, a log line or an error message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ENV_MASTER_KEY = "OPENHES_MASTER_KEY"
ENV_PREVIOUS_KEYS = "OPENHES_MASTER_KEY_PREVIOUS"
TOKEN_VERSION = "v1"
KEY_LENGTH = 32
NONCE_LENGTH = 12


class MasterKeyError(Exception):
    """The master key is missing or malformed, or a stored value cannot be decrypted with it."""


def parse_master_key(text: str, *, source: str = ENV_MASTER_KEY) -> bytes:
    """32 bytes from 64 hex digits or from base64 (standard or URL-safe)."""
    text = text.strip()
    if len(text) == 2 * KEY_LENGTH:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    try:
        raw = base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != KEY_LENGTH:
        raise MasterKeyError(
            f"{source} must be {KEY_LENGTH} bytes as {2 * KEY_LENGTH} hex digits or base64"
        )
    return raw


def key_id_of(key: bytes) -> str:
    """A short public fingerprint of a master key (not reversible)."""
    return "k" + hashlib.sha256(b"openhes-master-key-id:" + key).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class MasterKey:
    key: bytes = field(repr=False)
    key_id: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.key, bytes) or len(self.key) != KEY_LENGTH:
            raise MasterKeyError(f"a master key is {KEY_LENGTH} bytes")
        if not self.key_id:
            object.__setattr__(self, "key_id", key_id_of(self.key))

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(secrets.token_bytes(KEY_LENGTH))


class Keyring:
    """The current master key (encrypts) and previous ones (decrypt only, for rotation)."""

    def __init__(self, current: MasterKey, previous: tuple[MasterKey, ...] = ()) -> None:
        self.current = current
        self._keys = {k.key_id: AESGCM(k.key) for k in (*previous, current)}

    def __repr__(self) -> str:
        return f"Keyring(current={self.current.key_id!r}, known={sorted(self._keys)!r})"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Keyring:
        env = os.environ if environ is None else environ
        text = env.get(ENV_MASTER_KEY, "").strip()
        if not text:
            raise MasterKeyError(
                f"no master key: set {ENV_MASTER_KEY} to 32 random bytes in hex or base64 "
                "(e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`)"
            )
        current = MasterKey(parse_master_key(text))
        previous = tuple(
            MasterKey(parse_master_key(part, source=ENV_PREVIOUS_KEYS))
            for part in env.get(ENV_PREVIOUS_KEYS, "").split(",")
            if part.strip()
        )
        return cls(current, previous)

    @property
    def key_id(self) -> str:
        return self.current.key_id

    def encrypt(self, plaintext: bytes, context: str) -> str:
        """A token for ``plaintext``; ``context`` (meter and field) must match on decrypt."""
        nonce = secrets.token_bytes(NONCE_LENGTH)
        sealed = self._keys[self.key_id].encrypt(nonce, plaintext, context.encode())
        body = base64.b64encode(nonce + sealed).decode("ascii")
        return f"{TOKEN_VERSION}.{self.key_id}.{body}"

    def decrypt(self, token: str, context: str) -> bytes:
        _version, key_id, body = _split(token)
        aead = self._keys.get(key_id)
        if aead is None:
            raise MasterKeyError(
                f"a secret of {context.split('/')[0]!r} was stored under master key {key_id}, "
                f"which is not configured (current: {self.key_id}); "
                f"set it in {ENV_PREVIOUS_KEYS} to read and re-encrypt it"
            )
        try:
            raw = base64.b64decode(body, validate=True)
            return aead.decrypt(raw[:NONCE_LENGTH], raw[NONCE_LENGTH:], context.encode())
        except (InvalidTag, binascii.Error, ValueError):
            raise MasterKeyError(
                f"a secret of {context.split('/')[0]!r} does not decrypt under master key "
                f"{key_id}: wrong master key or a tampered value"
            ) from None

    def key_id_of_token(self, token: str) -> str:
        return _split(token)[1]

    def reencrypt(self, token: str, context: str) -> str:
        """The token under the current key (unchanged when it already is)."""
        if self.key_id_of_token(token) == self.key_id:
            return token
        return self.encrypt(self.decrypt(token, context), context)


def _split(token: str) -> tuple[str, str, str]:
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != TOKEN_VERSION:
        raise MasterKeyError("a stored secret is not a v1 token")
    return parts[0], parts[1], parts[2]


__all__ = [
    "ENV_MASTER_KEY",
    "ENV_PREVIOUS_KEYS",
    "Keyring",
    "MasterKey",
    "MasterKeyError",
    "key_id_of",
    "parse_master_key",
]
