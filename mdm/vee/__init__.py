"""VEE: validation, estimation (and, by the store, editing) of meter readings.

Pure processing on :mod:`mdm.series` values; see docs/vee.md for the rules, their
parameters and quality codes.
"""

from mdm.vee.config import RuleSet, Selector, VeeConfig
from mdm.vee.engine import VeeEngine, VeeResult
from mdm.vee.estimation import Estimation, Method
from mdm.vee.gaps import ReReadRequest, audit, requests_from_missing
from mdm.vee.rules import (
    Gaps,
    Limits,
    MainCheck,
    RegisterCheck,
    Spike,
    Status,
    StatusBit,
    ZeroRun,
)

__all__ = [
    "Estimation",
    "Gaps",
    "Limits",
    "MainCheck",
    "Method",
    "ReReadRequest",
    "RegisterCheck",
    "RuleSet",
    "Selector",
    "Spike",
    "Status",
    "StatusBit",
    "VeeConfig",
    "VeeEngine",
    "VeeResult",
    "ZeroRun",
    "audit",
    "requests_from_missing",
]
