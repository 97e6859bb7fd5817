"""`rtl.vmx.working_copy.WorkingCopy` in Amaranth's simulator against its contract.

The contract (the module's docstring): an indexed write (field, a write enable per 32-bit half,
a 64-bit value cut to the field's width) shows on ``vmcs`` two cycles after it is presented,
``pending`` is high in the cycle between; a parallel write (the VM exit's fields, each with its
own enable) shows one cycle after; when both reach a field at the same edge, the parallel value
wins. Random cycles (`VTX_WC_CYCLES`, default 1500) of both kinds of writes, together and on the
same fields, compared every cycle with a dictionary of field values that applies the contract;
a directed test of the same-edge rule.
"""

from __future__ import annotations

import os
import random

from amaranth.sim import Simulator

from rtl.arch.vmx import FIELD_BY_NAME, FIELDS
from rtl.vmx.layouts import member_name
from rtl.vmx.working_copy import PARALLEL_FIELDS, WorkingCopy

SEED = int(os.environ.get("VTX_SEED", "1"))
CYCLES = int(os.environ.get("VTX_WC_CYCLES", "1500"))
PAR = [member_name(n) for n in PARALLEL_FIELDS]


def _indexed(fields, slot, halves, value):
    """`fields` after an indexed write of `value` (two halves) into the field at `slot`."""
    f = FIELDS[slot]
    name = member_name(f)
    old = fields[name]
    for h in range(2):
        lo, hi = 32 * h, min(32 * (h + 1), f.bits)
        if halves >> h & 1 and lo < hi:
            mask = ((1 << (hi - lo)) - 1) << lo
            old = (old & ~mask) | (value & mask)
    fields[name] = old


def _random_cycle(rng):
    """(indexed write or None, {parallel field: value})."""
    idx = None
    if rng.random() < 0.6:
        f = rng.choice(FIELDS) if rng.random() < 0.7 else FIELD_BY_NAME[rng.choice(PARALLEL_FIELDS)]
        idx = (f.slot, rng.choice((0b01, 0b10, 0b11, 0b11)), rng.getrandbits(64))
    par = {}
    if rng.random() < 0.3:
        par = {n: rng.getrandbits(64) for n in PAR if rng.random() < 0.5}
    return idx, par


def _run(cycles):
    """The RTL's fields and `pending` after each cycle, and the expected ones."""
    dut = WorkingCopy()
    seen, want = [], []
    fields = {member_name(f): 0 for f in FIELDS}
    in_flight = None           # the indexed write presented in the previous cycle

    async def bench(ctx):
        nonlocal in_flight
        for idx, par in cycles:
            ctx.set(dut.wr_en, idx[1] if idx else 0)
            if idx:
                ctx.set(dut.wr_field, idx[0])
                ctx.set(dut.wr_data, idx[2])
            ctx.set(dut.par_en, sum(1 << PAR.index(n) for n in par))
            for n, v in par.items():
                ctx.set(dut.par_data[n], v & ((1 << FIELD_BY_NAME[n.upper()].bits) - 1))
            await ctx.tick()
            # At this edge: the indexed write of the previous cycle, then the parallel one.
            if in_flight:
                _indexed(fields, *in_flight)
            for n, v in par.items():
                fields[n] = v & ((1 << FIELD_BY_NAME[n.upper()].bits) - 1)
            in_flight = idx
            want.append((dict(fields), bool(idx)))
            got = ctx.get(dut.vmcs)
            seen.append(({member_name(f): int(got[member_name(f)]) for f in FIELDS},
                         bool(ctx.get(dut.pending))))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return seen, want


def _compare(seen, want):
    for i, ((got, gp), (exp, ep)) in enumerate(zip(seen, want, strict=True)):
        assert gp == ep, f"cycle {i}: pending {gp}, expected {ep}"
        bad = [n for n in exp if got[n] != exp[n]]
        assert not bad, (f"cycle {i}: " + ", ".join(
            f"{n} = {got[n]:#x}, expected {exp[n]:#x}" for n in bad[:4]))


def test_random_writes():
    rng = random.Random(SEED)
    _compare(*_run([_random_cycle(rng) for _ in range(CYCLES)]))


def test_parallel_write_wins_at_the_same_edge():
    """An indexed write of GUEST_RIP, then in the next cycle the exit's: both reach the
    register at one edge and the exit's value stays. Presented in the same cycle as the
    exit's, the indexed write lands one edge later and stays."""
    rip = FIELD_BY_NAME["GUEST_RIP"].slot
    cycles = [((rip, 0b11, 0x1111), {}), (None, {"guest_rip": 0x2222}), (None, {}),
              (None, {"guest_rip": 0x3333}), (None, {}),
              ((rip, 0b11, 0x4444), {"guest_rip": 0x5555}), (None, {}), (None, {})]
    seen, want = _run(cycles)
    _compare(seen, want)
    assert [s[0]["guest_rip"] for s in seen] == [0, 0x2222, 0x2222, 0x3333, 0x3333, 0x5555,
                                                  0x4444, 0x4444]
