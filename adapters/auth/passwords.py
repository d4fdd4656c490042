"""Password hashing: scrypt (``hashlib.scrypt``) with a random per-user salt, the parameters
stored with the hash, compared in constant time.

A stored hash reads ``$scrypt$ln=15,r=8,p=1$<salt>$<hash>`` (the layout passlib uses:
``ln`` is log2 of the CPU/memory cost N; salt and hash in base64 without padding), so hashes
made with other parameters keep verifying after the defaults change.

The default, N = 2**15, r = 8, p = 1, costs about 0.1 s of CPU and 32 MiB of memory per
verification on a 2-core machine. ``OPENHES_SCRYPT_PARAMS`` (``"n=131072,r=8,p=1"``) sets
other parameters for new hashes: stronger in production (OWASP's 2**17), weaker only in
tests. Verification refuses stored parameters beyond :data:`MAX_MEMORY`, so a tampered row
cannot make the server allocate without bound.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from headend.keys import Keyring

ENV_PARAMS = "OPENHES_SCRYPT_PARAMS"
SCHEME = "scrypt"
SALT_BYTES = 16
HASH_BYTES = 32
#: Longest password accepted (bytes of UTF-8); longer ones are refused before hashing.
MAX_PASSWORD_BYTES = 1024
#: The most memory one verification may take (stored parameters beyond it are refused).
MAX_MEMORY = 1 << 30

_HASH = re.compile(
    r"\$scrypt\$ln=(?P<ln>\d{1,2}),r=(?P<r>\d{1,3}),p=(?P<p>\d{1,3})"
    r"\$(?P<salt>[A-Za-z0-9+/]{8,88})\$(?P<hash>[A-Za-z0-9+/]{16,88})"
)


class PasswordError(ValueError):
    """A password that cannot be set (empty, too long, not text) or a malformed stored hash."""


@dataclass(frozen=True, slots=True)
class ScryptParams:
    """scrypt's cost: N (a power of two above 1), block size r, parallelism p."""

    n: int = 1 << 15
    r: int = 8
    p: int = 1

    def __post_init__(self) -> None:
        if not (isinstance(self.n, int) and self.n > 1 and self.n & (self.n - 1) == 0):
            raise PasswordError(f"scrypt n must be a power of two above 1, not {self.n!r}")
        if not (isinstance(self.r, int) and 1 <= self.r <= 255):
            raise PasswordError(f"scrypt r must be 1..255, not {self.r!r}")
        if not (isinstance(self.p, int) and 1 <= self.p <= 255):
            raise PasswordError(f"scrypt p must be 1..255, not {self.p!r}")
        if self.memory > MAX_MEMORY:
            raise PasswordError(
                f"scrypt n={self.n}, r={self.r}, p={self.p} needs more than {MAX_MEMORY >> 20} MiB"
            )

    @property
    def memory(self) -> int:
        """Bytes scrypt allocates: 128·r·N for the table plus 128·r·p for the blocks."""
        return 128 * self.r * (self.n + self.p + 2)

    @property
    def log_n(self) -> int:
        return self.n.bit_length() - 1

    @classmethod
    def parse(cls, text: str) -> ScryptParams:
        """``"n=32768,r=8,p=1"`` (any order; missing ones take the default)."""
        values: dict[str, int] = {}
        for part in text.split(","):
            key, sep, value = part.strip().partition("=")
            key = key.strip().lower()
            if not sep or key not in ("n", "r", "p") or key in values:
                raise PasswordError(f"scrypt parameters must look like n=32768,r=8,p=1: {text!r}")
            if not value.strip().isdigit():
                raise PasswordError(f"scrypt {key} must be a whole number: {text!r}")
            values[key] = int(value)
        return cls(**values)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ScryptParams:
        env = os.environ if environ is None else environ
        text = env.get(ENV_PARAMS, "").strip()
        if not text:
            return cls()
        try:
            return cls.parse(text)
        except PasswordError as exc:
            raise PasswordError(f"{ENV_PARAMS}: {exc}") from None


DEFAULT_PARAMS = ScryptParams()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def password_bytes(password: str) -> bytes:
    """The UTF-8 of a password, refusing what must never be hashed or stored."""
    if not isinstance(password, str):
        raise PasswordError("a password is text")
    if not password:
        raise PasswordError("the password is empty")
    try:
        raw = password.encode("utf-8")
    except UnicodeEncodeError:
        raise PasswordError("the password is not valid Unicode text") from None
    if len(raw) > MAX_PASSWORD_BYTES:
        raise PasswordError(f"the password is longer than {MAX_PASSWORD_BYTES} bytes")
    return raw


def _scrypt(raw: bytes, salt: bytes, params: ScryptParams, length: int) -> bytes:
    return hashlib.scrypt(
        raw,
        salt=salt,
        n=params.n,
        r=params.r,
        p=params.p,
        maxmem=params.memory + (1 << 20),
        dklen=length,
    )


def hash_password(password: str, params: ScryptParams | None = None) -> str:
    """A new salted hash of ``password`` (a fresh random salt every time)."""
    params = params or ScryptParams.from_env()
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password_bytes(password), salt, params, HASH_BYTES)
    return f"${SCHEME}$ln={params.log_n},r={params.r},p={params.p}${_b64(salt)}${_b64(digest)}"


@dataclass(frozen=True, slots=True)
class StoredHash:
    params: ScryptParams
    salt: bytes
    digest: bytes


def parse_hash(stored: str) -> StoredHash:
    match = _HASH.fullmatch(stored or "")
    if match is None:
        raise PasswordError("the stored password hash is not a $scrypt$ hash")
    log_n = int(match["ln"])
    if not 1 <= log_n <= 30:
        raise PasswordError("the stored password hash has an impossible cost")
    try:
        params = ScryptParams(1 << log_n, int(match["r"]), int(match["p"]))
        return StoredHash(params, _unb64(match["salt"]), _unb64(match["hash"]))
    except (binascii.Error, ValueError) as exc:
        raise PasswordError(f"the stored password hash is malformed: {exc}") from None


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches ``stored``; False for any other password, including one
    that could never have been set. A malformed ``stored`` raises :class:`PasswordError`."""
    parsed = parse_hash(stored)
    try:
        raw = password_bytes(password)
    except PasswordError:
        # Spend the same time as a real comparison, then fail.
        _scrypt(b"\0", parsed.salt, parsed.params, len(parsed.digest))
        return False
    candidate = _scrypt(raw, parsed.salt, parsed.params, len(parsed.digest))
    return hmac.compare_digest(candidate, parsed.digest)


def needs_rehash(stored: str, params: ScryptParams) -> bool:
    """True when ``stored`` was made with other parameters than ``params``."""
    try:
        return parse_hash(stored).params != params
    except PasswordError:
        return True


def dummy_hash(params: ScryptParams) -> str:
    """A hash of a random password, to verify against when the user does not exist, so the
    answer takes as long as for a real user."""
    return hash_password(secrets.token_urlsafe(24), params)


__all__ = [
    "DEFAULT_PARAMS",
    "ENV_PARAMS",
    "MAX_PASSWORD_BYTES",
    "PasswordError",
    "ScryptParams",
    "dummy_hash",
    "hash_password",
    "needs_rehash",
    "parse_hash",
    "password_bytes",
    "verify_password",
]


# --- PasswordDigest secrets ---------------------------------------------------------------
#
# A PasswordDigest (WS-Security) is SHA-1 over the nonce, the time and the password, so the
# server must hold the password itself. For the users allowed to use it, the password is also
# kept encrypted under the master key (headend.keys); the associated data binds the token to
# the user, so a token copied to another user's row does not decrypt.


def _digest_context(name: str) -> str:
    return f"user:{name}/password"


def seal_digest_secret(keyring: Keyring, name: str, password: str) -> str:
    return keyring.encrypt(password_bytes(password), _digest_context(name))


def open_digest_secret(keyring: Keyring, name: str, token: str) -> str:
    """The password of a digest user (raises headend.keys.MasterKeyError when the master key
    is not the one it was stored under, or the value was tampered with)."""
    return keyring.decrypt(token, _digest_context(name)).decode("utf-8")


__all__ += ["open_digest_secret", "seal_digest_secret"]
