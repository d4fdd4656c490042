"""Suite-0 ciphering on pyca: byte-identical to gurux's own AES where we replace it, accepted
by an independent implementation (the simulator's), and strict on what it refuses."""

from __future__ import annotations

import pytest
from gurux_dlms.AesGcmParameter import AesGcmParameter
from gurux_dlms.CountType import CountType
from gurux_dlms.enums import Command, Security
from gurux_dlms.GXByteBuffer import GXByteBuffer
from gurux_dlms.GXDLMSChippering import GXDLMSChippering
from gurux_dlms.GXSecure import GXSecure
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.dlms import crypto, gurux_hooks
from drivers.sim import security as sim_security

gurux_hooks.install()
ORIGINAL_ENCRYPT = gurux_hooks.ORIGINALS[(GXDLMSChippering, "encryptAesGcm")]

EK = bytes(range(16))
AK = bytes(range(16, 32))
TITLE = b"OPH\x00\x00\x00\x00\x01"


def _param(tag: int, security: int, counter: int, kind: int = CountType.PACKET) -> AesGcmParameter:
    p = AesGcmParameter(tag, TITLE, EK, AK)
    p.security = security
    p.invocationCounter = counter
    p.type_ = kind
    return p


@settings(max_examples=25, deadline=None)
@given(
    st.binary(max_size=80),
    st.integers(0, 2**32 - 1),
    st.sampled_from(
        [Security.AUTHENTICATION, Security.ENCRYPTION, Security.AUTHENTICATION_ENCRYPTION]
    ),
    st.sampled_from([Command.GLO_GET_REQUEST, Command.GENERAL_GLO_CIPHERING]),
)
def test_encrypt_is_byte_identical_to_gurux(
    plain: bytes, counter: int, security: int, tag: int
) -> None:
    ours = _param(tag, security, counter)
    theirs = _param(tag, security, counter)
    assert bytes(gurux_hooks.encrypt_aes_gcm(GXDLMSChippering, ours, plain)) == bytes(
        ORIGINAL_ENCRYPT(theirs, bytearray(plain))
    )
    assert ours.countTag == theirs.countTag


def test_gmac_tag_only_matches_gurux() -> None:
    ours = _param(0, Security.AUTHENTICATION, 7, CountType.TAG)
    theirs = _param(0, Security.AUTHENTICATION, 7, CountType.TAG)
    challenge = b"0123456789abcdef"
    assert bytes(gurux_hooks.encrypt_aes_gcm(GXDLMSChippering, ours, challenge)) == bytes(
        ORIGINAL_ENCRYPT(theirs, bytearray(challenge))
    )
    assert crypto.gmac(0x10, EK, AK, TITLE, 7, challenge) == bytes(ours.countTag)


def test_independent_implementation_reads_ours_and_we_read_it() -> None:
    plain = bytes.fromhex("c001c100030100010800ff0200")
    apdu = gurux_hooks.encrypt_aes_gcm(
        GXDLMSChippering, _param(Command.GLO_GET_REQUEST, 0x30, 41), plain
    )
    parsed = sim_security.parse_protected(bytes(apdu))
    assert sim_security.unprotect(parsed.payload, TITLE, EK, AK) == (0x30, 41, plain)
    # and the other way: the simulator protects, we decrypt
    content = sim_security.protect(0x30, TITLE, 42, EK, AK, plain)
    wrapped = sim_security.wrap(Command.GLO_GET_RESPONSE, content)
    p = AesGcmParameter(0, TITLE, EK, AK)
    assert (
        bytes(gurux_hooks.decrypt_aes_gcm(GXDLMSChippering, None, p, GXByteBuffer(wrapped)))
        == plain
    )
    assert p.invocationCounter == 42


class _Settings:
    pass


def test_decrypt_refuses_bad_tag_replay_and_other_suites() -> None:
    plain = b"\xc4\x01\xc1\x00\x11\x05"
    settings_ = _Settings()
    good = sim_security.wrap(
        Command.GLO_GET_RESPONSE, sim_security.protect(0x30, TITLE, 5, EK, AK, plain)
    )
    p = AesGcmParameter(0, TITLE, EK, AK)
    assert (
        bytes(gurux_hooks.decrypt_aes_gcm(GXDLMSChippering, settings_, p, GXByteBuffer(good)))
        == plain
    )
    with pytest.raises(gurux_hooks.CounterReplay):  # the same counter again
        gurux_hooks.decrypt_aes_gcm(GXDLMSChippering, settings_, p, GXByteBuffer(good))
    tampered = bytearray(good)
    tampered[-1] ^= 1
    with pytest.raises(crypto.CryptoError):
        gurux_hooks.decrypt_aes_gcm(
            GXDLMSChippering, None, AesGcmParameter(0, TITLE, EK, AK), GXByteBuffer(tampered)
        )
    suite1 = bytearray(good)
    suite1[2] = 0x31
    with pytest.raises(crypto.CryptoError):
        gurux_hooks.decrypt_aes_gcm(
            GXDLMSChippering, None, AesGcmParameter(0, TITLE, EK, AK), GXByteBuffer(suite1)
        )
    with pytest.raises(crypto.CryptoError):
        gurux_hooks.decrypt_aes_gcm(
            GXDLMSChippering, None, AesGcmParameter(0, TITLE, EK, AK), GXByteBuffer(good[:-20])
        )
    with pytest.raises(crypto.CryptoError):  # not a ciphered APDU at all
        gurux_hooks.decrypt_aes_gcm(
            GXDLMSChippering, None, AesGcmParameter(0, TITLE, EK, AK), GXByteBuffer(b"\xc4\x01\x00")
        )


def test_challenges_come_from_the_os_csprng() -> None:
    first, second = GXSecure.generateChallenge(), GXSecure.generateChallenge()
    assert len(first) == 16 and first != second


def test_encryption_only_is_gcm_counter_mode() -> None:
    body, tag = crypto.protect(0x20, EK, AK, TITLE, 9, b"hello")
    assert tag == b""
    assert crypto.unprotect(0x20, EK, AK, TITLE, 9, body) == b"hello"
    full, _ = crypto.protect(0x30, EK, AK, TITLE, 9, b"hello")
    assert full == body  # same keystream as authenticated encryption
