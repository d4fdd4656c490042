"""Fault injection (drivers/sim/faults.py), one test per mode, sans-IO."""

from __future__ import annotations

import random
import statistics

import pytest
from test_sim_server import EK, NOW, Probe, accepted

from drivers.sim import security, wrapper
from drivers.sim.acse import AssociationResult, Mechanism, ReleaseRequest, ServiceUserDiagnostic
from drivers.sim.faults import (
    FaultInjector,
    FaultSpec,
    FaultSpecError,
    FleetFaults,
    Latency,
    Verdict,
)
from drivers.sim.loadshape import SLOT_SECONDS
from drivers.sim.meter import EventCode
from drivers.sim.server import RequestDropped
from drivers.sim.xdlms import ExceptionResponse, ServiceError, decode_response


def test_parse_fault_specs():
    spec = FaultSpec.parse(
        "latency=lognormal:0.1:0.5, loss=0.01,garbage=0.001,drift=20,outages=2,outage_minutes=10:30"
    )
    assert spec.latency == Latency("lognormal", 0.1, 0.5)
    assert (spec.loss, spec.garbage, spec.clock_drift_ppm, spec.outages_per_month) == (
        0.01,
        0.001,
        20.0,
        2.0,
    )
    assert spec.outage_minutes == (10, 30) and spec.active
    assert FaultSpec.parse("") == FaultSpec() and not FaultSpec().active
    assert FaultSpec.parse("latency=0.2").latency == Latency("fixed", 0.2)
    for bad in (
        "loss=2",
        "nonsense=1",
        "loss",
        "latency=gamma:1",
        "latency=uniform:2:1",
        "loss=x",
        "outage_minutes=0:5",
        "latency=fixed:-1",
    ):
        with pytest.raises(FaultSpecError):
            FaultSpec.parse(bad)


def test_latency_distributions():
    rng = random.Random(1)
    assert Latency("fixed", 0.25).sample(rng) == 0.25
    uniform = [Latency("uniform", 0.1, 0.3).sample(rng) for _ in range(500)]
    assert min(uniform) >= 0.1 and max(uniform) <= 0.3
    expo = [Latency("exponential", 0.1).sample(rng) for _ in range(2000)]
    assert 0.08 < statistics.mean(expo) < 0.12
    logn = [Latency("lognormal", 0.1, 0.5).sample(rng) for _ in range(2000)]
    assert 0.09 < statistics.median(logn) < 0.11 and min(logn) > 0
    assert (
        Latency("exponential", 0).sample(rng) == 0 and Latency("lognormal", 0, 1).sample(rng) == 0
    )


def test_fleet_faults_pick_a_stable_fraction():
    faulty = FaultSpec(loss=0.5)
    ff = FleetFaults(faulty=faulty, fraction=0.2, per_meter={3: FaultSpec(garbage=1.0)})
    picks = [ff.for_meter(i, seed=i * 7919) for i in range(2000)]
    share = sum(p is faulty for p in picks) / len(picks)
    assert 0.17 < share < 0.23
    assert picks == [ff.for_meter(i, seed=i * 7919) for i in range(2000)]
    assert ff.for_meter(3, 1).garbage == 1.0


def test_latency_delays_every_response():
    p = Probe(FaultSpec(latency=Latency("fixed", 0.2)))
    out = p.conn.receive_data(wrapper.encode(1, 1, b"\x62\x00"))
    assert out[0].delay == 0.2


def test_loss_drops_requests():
    p = Probe(FaultSpec(loss=1.0))
    assert p.conn.receive_data(wrapper.encode(1, 1, b"\x62\x00")) == []
    assert p.events() == [RequestDropped(0, "drop")]


def test_stall_silences_the_meter_for_a_while():
    p = Probe(FaultSpec(stall=1.0, stall_seconds=30))
    assert p.conn.receive_data(wrapper.encode(1, 1, b"\x62\x00")) == []
    assert p.events() == [RequestDropped(0, "silent")]
    p.meter.faults.spec = FaultSpec(stall_seconds=30)  # no new stalls from here on
    p.time.t += 29
    assert p.conn.receive_data(wrapper.encode(1, 1, b"\x62\x00")) == []
    p.time.t += 2
    assert p.conn.receive_data(wrapper.encode(1, 1, b"\x62\x00")) != []


def test_stall_draws_are_reproducible():
    a = FaultInjector(FaultSpec(stall=0.3, loss=0.2, stall_seconds=0), seed=5)
    b = FaultInjector(FaultSpec(stall=0.3, loss=0.2, stall_seconds=0), seed=5)
    assert [a.request(t) for t in range(50)] == [b.request(t) for t in range(50)]
    assert {a.request(t) for t in range(200)} == set(Verdict)


def test_garbage_replaces_responses_with_noise():
    p = Probe(FaultSpec(garbage=1.0))
    (out,) = p.conn.receive_data(wrapper.encode(1, 1, b"\x62\x00"))
    assert out.data[0] == 0xFF and 16 <= len(out.data) <= 48 and 0x7E not in out.data
    (pdu,) = wrapper.WrapperReader().feed(out.data)  # a client sees a broken header
    assert isinstance(pdu, wrapper.WrapperError)


def test_clock_drift_and_offset():
    p = Probe(FaultSpec(clock_drift_ppm=100, clock_offset_s=-30))
    assert p.meter.clock.now() == pytest.approx(NOW - 30)
    p.time.t += 1_000_000
    assert p.meter.clock.now() == pytest.approx(NOW + 1_000_000 - 30 + 100, abs=0.01)


def test_historic_outages_leave_gaps_and_events():
    p = Probe(FaultSpec(outages_per_month=60, outage_minutes=(40, 90)))
    m = p.meter
    outages = [i for i in m.interruptions if i.outage and i.end > NOW - 2 * 86400]
    assert outages and m.power_failures >= len(outages)
    profile = m.find(7, bytes((1, 0, 99, 1, 0, 255)))
    rows = profile.source.rows_by_time(m, NOW - 2 * 86400, NOW)
    stamps = {r[0] for r in rows}
    for outage in outages:
        inside = [
            b for b in range(int(outage.start) // SLOT_SECONDS + 1, int(outage.end) // SLOT_SECONDS)
        ]
        assert all(
            m.clock.cosem_bytes(b * SLOT_SECONDS) not in {s[2:] for s in stamps} for b in inside
        )
        assert m.energy(outage.start) == m.energy(outage.end)  # no energy while off
    assert any(r[1][1] & 0x80 for r in rows)  # the power-down bit after a gap
    codes = [c for _, c in m.events(0)]
    assert codes.count(EventCode.POWER_DOWN) >= len(outages) and EventCode.POWER_UP in codes


def test_live_outage_silences_and_logs():
    p = Probe()
    p.meter.power_outage(NOW, NOW + 600)
    assert p.conn.receive_data(wrapper.encode(1, 1, b"\x62\x00")) == []
    assert p.events() == [RequestDropped(0, "silent")]
    assert p.meter.voltage(1) == 0
    p.time.t += 900
    assert p.conn.receive_data(wrapper.encode(1, 1, b"\x62\x00")) != []
    assert [c for _, c in p.meter.events(0)][-2:] == [EventCode.POWER_DOWN, EventCode.POWER_UP]


def test_authentication_failures():
    p = Probe(FaultSpec(auth_failure=1.0))
    aare = p.aarq(client=32, mechanism=Mechanism.LOW, auth=b"secret12")
    assert aare.result == AssociationResult.REJECTED_PERMANENT
    assert aare.diagnostic == ServiceUserDiagnostic.AUTHENTICATION_FAILURE
    assert accepted(p.aarq(client=16))  # no authentication, nothing to fail


def test_counter_reset_after_a_session():
    p = Probe(FaultSpec(counter_reset=1.0))
    assert accepted(p.aarq(client=3, ciphered=True))
    assert p.meter.rx_invocation_counter > 100
    p.send(ReleaseRequest().to_bytes(), 3)
    assert (p.meter.rx_invocation_counter, p.meter.tx_invocation_counter) == (0, 1)


def test_counter_jump_puts_the_client_out_of_sync():
    p = Probe(FaultSpec(counter_jump=1.0))
    assert accepted(p.aarq(client=3, ciphered=True))
    p.send(ReleaseRequest().to_bytes(), 3)
    expected = p.meter.rx_invocation_counter
    assert expected > 1_000_000
    from test_sim_server import CLIENT_TITLE, CONFORMANCE

    from drivers.sim.acse import Aarq, ApplicationContext
    from drivers.sim.server import COUNTER_JUMP
    from drivers.sim.xdlms import InitiateRequest

    initiate = InitiateRequest(CONFORMANCE, 0xFFFF).to_bytes()
    user = security.wrap(
        0x21, security.protect(0x30, CLIENT_TITLE, p.next_ic(), EK, bytes(range(16, 32)), initiate)
    )
    raw = p.send(
        Aarq(ApplicationContext.LN_CIPHERED, CLIENT_TITLE, None, None, False, user).to_bytes(), 3
    )
    response = decode_response(raw)
    assert (
        isinstance(response, ExceptionResponse)
        and response.service_error == ServiceError.INVOCATION_COUNTER_ERROR
    )
    assert response.invocation_counter == expected and COUNTER_JUMP == 1_000_000
