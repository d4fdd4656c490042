"""Password hashes: scrypt with a per-user salt, parameters stored with the hash, constant-time
comparison; the PasswordDigest secrets under the master key."""

from __future__ import annotations

import base64
import hashlib

import pytest

from adapters.auth import passwords
from adapters.auth.passwords import (
    DEFAULT_PARAMS,
    ENV_PARAMS,
    MAX_PASSWORD_BYTES,
    PasswordError,
    ScryptParams,
    dummy_hash,
    hash_password,
    needs_rehash,
    open_digest_secret,
    parse_hash,
    seal_digest_secret,
    verify_password,
)
from headend.keys import Keyring, MasterKey, MasterKeyError

FAST = ScryptParams(n=16, r=1, p=1)


def unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def test_hash_and_verify() -> None:
    stored = hash_password("correct horse", FAST)
    assert stored.startswith("$scrypt$ln=4,r=1,p=1$")
    assert verify_password("correct horse", stored)
    assert not verify_password("correct hors", stored)
    assert not verify_password("Correct horse", stored)
    assert not verify_password("", stored)


def test_the_hash_is_scrypt_of_the_salt_as_stored() -> None:
    """Computed independently with hashlib from the stored salt and parameters."""
    stored = hash_password("pässword", ScryptParams(n=32, r=2, p=1))
    _, scheme, params, salt, digest = stored.split("$")
    assert (scheme, params) == ("scrypt", "ln=5,r=2,p=1")
    expected = hashlib.scrypt("pässword".encode(), salt=unb64(salt), n=32, r=2, p=1, dklen=32)
    assert unb64(digest) == expected
    assert len(unb64(salt)) == 16


def test_every_hash_has_its_own_salt() -> None:
    first, second = hash_password("same", FAST), hash_password("same", FAST)
    assert first != second
    assert parse_hash(first).salt != parse_hash(second).salt
    assert verify_password("same", first) and verify_password("same", second)


def test_hashes_made_with_other_parameters_keep_verifying() -> None:
    old = hash_password("pw", ScryptParams(n=8, r=1, p=1))
    assert verify_password("pw", old)
    assert needs_rehash(old, FAST)
    assert not needs_rehash(hash_password("pw", FAST), FAST)
    assert needs_rehash("garbage", FAST)


def test_the_default_is_a_real_work_factor() -> None:
    assert DEFAULT_PARAMS.n >= 1 << 15 and DEFAULT_PARAMS.r >= 8 and DEFAULT_PARAMS.p >= 1
    assert DEFAULT_PARAMS.memory >= 32 << 20
    assert ScryptParams.from_env({}) == DEFAULT_PARAMS


def test_parameters_from_the_environment() -> None:
    assert ScryptParams.from_env({ENV_PARAMS: "n=1024, r=4,p=2"}) == ScryptParams(1024, 4, 2)
    assert ScryptParams.from_env({ENV_PARAMS: "r=1"}) == ScryptParams(DEFAULT_PARAMS.n, 1, 1)
    for bad in ("n=1000", "n=2^14", "x=1", "n=16,n=32", "r=0", "n", "p=300"):
        with pytest.raises(PasswordError, match=ENV_PARAMS):
            ScryptParams.from_env({ENV_PARAMS: bad})


def test_parameters_beyond_the_memory_cap_are_refused() -> None:
    with pytest.raises(PasswordError, match="MiB"):
        ScryptParams(n=1 << 22, r=8, p=1)
    with pytest.raises(PasswordError, match="power of two"):
        ScryptParams(n=1)


@pytest.mark.parametrize(
    "password, message",
    [
        ("", "empty"),
        ("x" * (MAX_PASSWORD_BYTES + 1), "longer"),
        ("\udc80", "Unicode"),
        (None, "text"),
    ],
)
def test_passwords_that_cannot_be_set(password, message) -> None:
    with pytest.raises(PasswordError, match=message):
        hash_password(password, FAST)


def test_a_password_that_could_never_be_set_does_not_verify() -> None:
    stored = hash_password("pw", FAST)
    assert not verify_password("x" * (MAX_PASSWORD_BYTES + 1), stored)
    assert not verify_password("\udc80", stored)


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "plain",
        "$pbkdf2$ln=4,r=1,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "$scrypt$ln=4,r=1,p=1$!!!!!!!!$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "$scrypt$ln=4,r=1,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        # a tampered cost must not make the server allocate without bound
        "$scrypt$ln=30,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "$scrypt$ln=0,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ],
)
def test_malformed_stored_hashes_are_refused(stored: str) -> None:
    with pytest.raises(PasswordError):
        verify_password("pw", stored)


def test_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = passwords.hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(passwords.hmac, "compare_digest", spy)
    assert not verify_password("wrong", hash_password("right", FAST))
    assert len(calls) == 1


def test_the_dummy_hash_costs_the_same() -> None:
    dummy = dummy_hash(FAST)
    assert parse_hash(dummy).params == FAST
    assert not verify_password("anything", dummy)


def test_digest_secrets_are_bound_to_their_user() -> None:
    keyring = Keyring(MasterKey.generate())
    token = seal_digest_secret(keyring, "alice", "s3cret")
    assert "s3cret" not in token
    assert open_digest_secret(keyring, "alice", token) == "s3cret"
    with pytest.raises(MasterKeyError):
        open_digest_secret(keyring, "mallory", token)
    with pytest.raises(MasterKeyError):
        open_digest_secret(Keyring(MasterKey.generate()), "alice", token)
