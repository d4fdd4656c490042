"""The meter fleet simulator: OpenHES's own DLMS/COSEM server (sans-IO core, asyncio
transports). See docs/simulator.md.

Layers, each named after the standard part it implements: ``wrapper`` (IEC 62056-47),
``hdlc`` (IEC 62056-46), ``axdr``/``ber`` (data encodings), ``acse`` and ``xdlms``
(IEC 62056-5-3), ``security`` (suite 0), ``cosem`` (IEC 62056-6-2 interface classes),
``meter``/``meterclock``/``loadshape`` (the meter model), ``faults``, ``server`` (the
association state machine) and ``fleet`` (transports, address book, ``run_simulate``).
"""

from drivers.sim.faults import FaultSpec, FleetFaults, Latency
from drivers.sim.fleet import Fleet, FleetConfig, read_address_book, run_simulate
from drivers.sim.meter import ClientPolicy, Meter, MeterSpec
from drivers.sim.server import Association, ServerConnection

__all__ = [
    "Association",
    "ClientPolicy",
    "FaultSpec",
    "Fleet",
    "FleetConfig",
    "FleetFaults",
    "Latency",
    "Meter",
    "MeterSpec",
    "ServerConnection",
    "read_address_book",
    "run_simulate",
]
