"""DLMS/COSEM driver on gurux-dlms (sans-IO) under asyncio; see docs/driver-dlms.md."""

from drivers.dlms.counters import (
    InvocationCounterStore,
    MemoryCounterStore,
    SqliteCounterStore,
)
from drivers.dlms.driver import DlmsDriver, DlmsMeterSession
from drivers.dlms.session import DlmsSession

__all__ = [
    "DlmsDriver",
    "DlmsMeterSession",
    "DlmsSession",
    "InvocationCounterStore",
    "MemoryCounterStore",
    "SqliteCounterStore",
]
