"""Security suite 0 (drivers/sim/security.py): the Green Book test vector, agreement with
dlms-cosem's independent implementation, tampering, and HLS-GMAC."""

from __future__ import annotations

import pytest
from dlms_cosem import security as reference

from drivers.sim import security
from drivers.sim.security import SecurityError

EK = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
AK = bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")
TITLE = bytes.fromhex("4D4D4D0000BC614E")
PLAIN = bytes.fromhex("C0010000080000010000FF0200")


def test_green_book_vector():
    content = security.protect(0x30, TITLE, 0x01234567, EK, AK, PLAIN)
    assert (
        content.hex().upper()
        == "3001234567" + "411312FF935A47566827C467BC" + "7D825C3BE4A77C3FCC056B6B"
    )
    assert security.unprotect(content, TITLE, EK, AK) == (0x30, 0x01234567, PLAIN)


@pytest.mark.parametrize("sc", [0x30, 0x10, 0x20])
def test_round_trip(sc):
    content = security.protect(sc, TITLE, 77, EK, AK, PLAIN)
    assert security.unprotect(content, TITLE, EK, AK) == (sc, 77, PLAIN)


def test_agreement_with_dlms_cosem_and_gurux():
    content = security.protect(0x30, TITLE, 77, EK, AK, PLAIN)
    control = reference.SecurityControlField.from_bytes(b"\x30")
    assert content[5:] == reference.encrypt(control, TITLE, 77, EK, PLAIN, AK)
    # Authentication only (SC 0x10): dlms-cosem does not implement it; gurux does.
    from gurux_dlms.AesGcmParameter import AesGcmParameter
    from gurux_dlms.enums import Security
    from gurux_dlms.GXDLMSChippering import GXDLMSChippering

    p = AesGcmParameter(0xC8, TITLE, EK, AK)
    p.security = Security.AUTHENTICATION
    p.invocationCounter = 77
    ours = security.wrap(0xC8, security.protect(0x10, TITLE, 77, EK, AK, PLAIN))
    assert ours == bytes(GXDLMSChippering.encryptAesGcm(p, PLAIN))


def test_tampering_and_wrong_keys_are_detected():
    content = bytearray(security.protect(0x30, TITLE, 5, EK, AK, PLAIN))
    content[7] ^= 1
    with pytest.raises(SecurityError, match="tag"):
        security.unprotect(bytes(content), TITLE, EK, AK)
    good = security.protect(0x30, TITLE, 5, EK, AK, PLAIN)
    with pytest.raises(SecurityError):
        security.unprotect(good, TITLE, bytes(16), AK)
    with pytest.raises(SecurityError):
        security.unprotect(good, b"other!!!", EK, AK)
    auth_only = bytearray(security.protect(0x10, TITLE, 5, EK, AK, PLAIN))
    auth_only[6] ^= 1
    with pytest.raises(SecurityError):
        security.unprotect(bytes(auth_only), TITLE, EK, AK)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x30\x00", "shorter than SC"),
        (b"\x31\x00\x00\x00\x01" + b"\x00" * 12, "suite 1"),
        (b"\xb0\x00\x00\x00\x01" + b"\x00" * 12, "compression"),
        (b"\x30\x00\x00\x00\x01\x00", "shorter than its tag"),
        (b"\x00\x00\x00\x00\x01\x00", "neither"),
    ],
)
def test_malformed_content(content, message):
    with pytest.raises(SecurityError, match=message):
        security.unprotect(content, TITLE, EK, AK)


def test_protect_refuses_bad_parameters():
    for kwargs in ({"ek": b"short"}, {"sc": 0x31}, {"sc": 0x00}, {"ic": 2**32}, {"title": b"1234"}):
        args = {"sc": 0x30, "title": TITLE, "ic": 1, "ek": EK, "ak": AK} | kwargs
        with pytest.raises(SecurityError):
            security.protect(args["sc"], args["title"], args["ic"], args["ek"], args["ak"], PLAIN)


def test_ciphered_apdu_framing():
    content = security.protect(0x30, TITLE, 9, EK, AK, PLAIN)
    glo = security.wrap(0xC8, content)
    p = security.parse_protected(glo)
    assert (p.plain_tag, p.dedicated, p.invocation_counter, p.system_title) == (
        0xC0,
        False,
        9,
        None,
    )
    ded = security.parse_protected(security.wrap(0xD4, content))
    assert (ded.plain_tag, ded.dedicated) == (0xC4, True)
    general = security.parse_protected(security.wrap_general(False, TITLE, content))
    assert (general.plain_tag, general.system_title, general.payload) == (None, TITLE, content)
    # dlms-cosem's general-glo-ciphering APDU parses the same
    from dlms_cosem.protocol.xdlms import GeneralGlobalCipher

    theirs = GeneralGlobalCipher.from_bytes(security.wrap_general(False, TITLE, content))
    assert theirs.system_title == TITLE and theirs.invocation_counter == 9
    for bad in (
        b"",
        b"\xc0\x01",
        b"\xc8\x10\x30",
        b"\xc8\x81",
        b"\xdb\x08ABC",
        b"\xc8\x05\x30\x00\x00\x00",
    ):
        with pytest.raises(SecurityError):
            security.parse_protected(bad)


def test_hls_gmac():
    challenge = security.new_challenge(16)
    assert len(challenge) == 16 and challenge != security.new_challenge(16)
    f = security.gmac_response(TITLE, 1234, EK, AK, challenge)
    assert f[0] == 0x10 and len(f) == 17
    assert security.verify_gmac_response(f, TITLE, EK, AK, challenge) == 1234
    assert security.verify_gmac_response(f, TITLE, EK, AK, b"x" * 16) is None
    assert security.verify_gmac_response(f[:-1], TITLE, EK, AK, challenge) is None
    assert security.verify_gmac_response(b"\x30" + f[1:], TITLE, EK, AK, challenge) is None
    control = reference.SecurityControlField(security_suite=0, authenticated=True, encrypted=False)
    assert f[5:] == reference.gmac(control, TITLE, 1234, EK, AK, challenge)
    for size in (7, 65):
        with pytest.raises(ValueError):
            security.new_challenge(size)
