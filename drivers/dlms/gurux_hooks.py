"""The three places where the driver replaces gurux-dlms code (pinned: gurux-dlms 1.0.203).

1. AES-GCM. ``GXDLMSChippering.encryptAesGcm``/``decryptAesGcm`` are the only entry points to
   gurux's pure-Python AES for suite 0 (APDU ciphering, the ciphered AARQ/AARE, the HLS-GMAC
   proofs); they are replaced by :mod:`drivers.dlms.crypto` (pyca ``cryptography``), producing
   the same bytes. The decrypt side also enforces that the meter's invocation counter grows
   within a session, and it does not ``print``.
2. HLS challenges. ``GXSecure.generateChallenge`` (``random.randint``) draws from ``secrets``.
3. Values. ``GXDLMS.getValueFromData`` is where gurux parses a response's Data. For clients
   whose settings carry :data:`RAW_VALUES`, our A-XDR decoder (:mod:`drivers.dlms.axdr`) does
   it: integers stay integers, date-times keep deviation and status, and it is much faster.

The replacements are installed process-wide, once, by :func:`install`. Hooks 1 and 2 apply to
every gurux client in the process (no gurux crypto is ever used); hook 3 only to marked ones.
gurux's own ``print`` calls (27 of them, some on every ciphered frame) are silenced.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

from gurux_dlms.AesGcmParameter import AesGcmParameter
from gurux_dlms.CountType import CountType
from gurux_dlms.enums import Command, Security
from gurux_dlms.enums.RequestTypes import RequestTypes
from gurux_dlms.GXByteBuffer import GXByteBuffer
from gurux_dlms.GXDLMS import GXDLMS
from gurux_dlms.GXDLMSChippering import GXDLMSChippering
from gurux_dlms.GXSecure import GXSecure
from gurux_dlms.internal._GXCommon import _GXCommon
from gurux_dlms.objects.enums.SecuritySuite import SecuritySuite

from drivers.dlms import axdr, crypto

RAW_VALUES = "_openhes_raw_values"
SERVER_COUNTER = "_openhes_server_ic"

# Everything replaced, by (owner, attribute): kept so a benchmark can measure the baseline.
ORIGINALS: dict[tuple[type, str], Any] = {}

_lock = threading.Lock()
_installed = False


class CounterReplay(crypto.CryptoError):
    """The meter's invocation counter did not increase."""

    def __init__(self, received: int, last: int) -> None:
        super().__init__(f"meter invocation counter {received} after {last}")
        self.received = received
        self.last = last


_SYSTEM_TITLE_COMMANDS = frozenset(
    {Command.GENERAL_GLO_CIPHERING, Command.GENERAL_DED_CIPHERING, Command.DATA_NOTIFICATION}
)
_CIPHERED_APDUS = frozenset(
    {
        Command.GLO_INITIATE_REQUEST,
        Command.GLO_INITIATE_RESPONSE,
        Command.GLO_GET_REQUEST,
        Command.GLO_GET_RESPONSE,
        Command.GLO_SET_REQUEST,
        Command.GLO_SET_RESPONSE,
        Command.GLO_METHOD_REQUEST,
        Command.GLO_METHOD_RESPONSE,
        Command.GLO_EVENT_NOTIFICATION,
        Command.GLO_CONFIRMED_SERVICE_ERROR,
        Command.DED_GET_REQUEST,
        Command.DED_GET_RESPONSE,
        Command.DED_SET_REQUEST,
        Command.DED_SET_RESPONSE,
        Command.DED_METHOD_REQUEST,
        Command.DED_METHOD_RESPONSE,
        Command.DED_EVENT_NOTIFICATION,
        Command.DED_CONFIRMED_SERVICE_ERROR,
    }
)


def _security_control(p: AesGcmParameter) -> int:
    if p.securitySuite != SecuritySuite.SUITE_0:
        raise crypto.CryptoError(f"security suite {int(p.securitySuite)} is not supported")
    if p.compression or p.broadcast:
        raise crypto.CryptoError("compressed or broadcast ciphering is not supported")
    return int(p.security) | int(p.securitySuite)


def encrypt_aes_gcm(cls: type, p: AesGcmParameter, plain: Any) -> bytearray:
    """Replacement of ``GXDLMSChippering.encryptAesGcm``: the same output, pyca inside."""
    if isinstance(plain, GXByteBuffer):
        plain = plain.array()
    p.countTag = None
    sc = _security_control(p)
    body, tag = crypto.protect(
        sc,
        p.blockCipherKey,
        p.authenticationKey,
        p.systemTitle,
        p.invocationCounter,
        bytes(plain),
    )
    want_data = (p.type_ & CountType.DATA) != 0
    want_tag = (p.type_ & CountType.TAG) != 0 and p.security != Security.ENCRYPTION
    if want_tag:
        p.countTag = bytearray(tag)
    content = bytearray()
    packet = p.type_ == CountType.PACKET
    if packet:
        content.append(sc)
        content += p.invocationCounter.to_bytes(4, "big")
    if p.security == Security.ENCRYPTION or want_data:
        content += body
    if want_tag:
        content += tag
    if not packet:
        return content
    out = bytearray([int(p.tag)])
    if p.tag in _SYSTEM_TITLE_COMMANDS:
        if p.ignoreSystemTitle:
            out.append(0)
        else:
            out += axdr.encode_length(len(p.systemTitle)) + bytes(p.systemTitle)
    out += axdr.encode_length(len(content))
    out += content
    return out


def decrypt_aes_gcm(cls: type, settings: Any, p: AesGcmParameter, data: GXByteBuffer) -> bytearray:
    """Replacement of ``GXDLMSChippering.decryptAesGcm`` for suite 0 (glo/ded and
    general-glo/ded ciphering); general-ciphering (suites 1/2) is refused."""
    if data is None or data.size - data.position < 2:
        raise crypto.CryptoError("ciphered APDU too short")
    cmd = data.getUInt8()
    if cmd in (Command.GENERAL_GLO_CIPHERING, Command.GENERAL_DED_CIPHERING):
        size = _GXCommon.getObjectCount(data)
        if size:
            title = bytearray(size)
            data.get(title)
            p.systemTitle = title
    elif cmd not in _CIPHERED_APDUS:
        raise crypto.CryptoError(f"APDU tag {cmd} is not a suite-0 ciphered APDU")
    size = _GXCommon.getObjectCount(data)
    start = data.position
    if size < 5 or start + size > data.size:
        raise crypto.CryptoError("ciphered APDU length does not match its content")
    content = bytes(data._data[start : start + size])
    data.position = start + size
    sc = content[0]
    p.security = Security(sc & 0x30)
    p.securitySuite = SecuritySuite(sc & 0x0F) if sc & 0x0F in (0, 1, 2) else sc & 0x0F
    p.compression = bool(sc & 0x80)
    p.broadcast = bool(sc & 0x40)
    _security_control(p)
    if not p.blockCipherKey or not p.authenticationKey or not p.systemTitle:
        raise crypto.CryptoError("no keys or system title to decipher with")
    counter = int.from_bytes(content[1:5], "big")
    p.invocationCounter = counter
    plain = crypto.unprotect(
        sc, p.blockCipherKey, p.authenticationKey, p.systemTitle, counter, content[5:]
    )
    if settings is not None:
        last = getattr(settings, SERVER_COUNTER, None)
        if last is not None and counter <= last:
            raise CounterReplay(counter, last)
        setattr(settings, SERVER_COUNTER, counter)
    return bytearray(plain)


def generate_challenge(cls: type) -> bytes:
    return crypto.challenge(16)


def get_value_from_data(cls: type, settings: Any, reply: Any) -> None:
    """For marked clients: decode the Data at ``reply.readPosition`` with our decoder, keeping
    gurux's bookkeeping (read position, block index reset) as its parser does."""
    if settings is None or not getattr(settings, RAW_VALUES, False):
        ORIGINALS[(GXDLMS, "getValueFromData")](settings, reply)
        return
    data = reply.data
    start = reply.readPosition
    raw = bytes(data._data[start : data.size])
    value, used = axdr.decode(raw)
    if value is not None:
        reply.value = value
        reply.totalCount = 0
        reply.readPosition = start + used
    if reply.command != Command.DATA_NOTIFICATION and reply.moreData == RequestTypes.NONE:
        settings.resetBlockIndex()
        data.position = 0


def _quiet(*args: object, **kwargs: object) -> None:
    return None


def install() -> None:
    """Install the replacements (idempotent, thread-safe)."""
    global _installed
    with _lock:
        if _installed:
            return
        replacements: list[tuple[type, str, Callable[..., Any]]] = [
            (GXDLMSChippering, "encryptAesGcm", encrypt_aes_gcm),
            (GXDLMSChippering, "decryptAesGcm", decrypt_aes_gcm),
            (GXSecure, "generateChallenge", generate_challenge),
            (GXDLMS, "getValueFromData", get_value_from_data),
        ]
        for owner, name, function in replacements:
            ORIGINALS[(owner, name)] = getattr(owner, name)
            setattr(owner, name, classmethod(function))
        for module_name, module in list(sys.modules.items()):
            if module_name.startswith("gurux_dlms") and module is not None:
                module.print = _quiet  # type: ignore[attr-defined]
        _installed = True
