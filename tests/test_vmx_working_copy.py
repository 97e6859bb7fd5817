"""`rtl.vmx.working_copy.WorkingCopy` in Amaranth's simulator against its contract.

The contract (the module's docstring): a row write (row, a write enable per 32-bit half of each
lane, `FIELD_LANES` x 64 bits of data) puts each enabled half of each field of that row that
the working copy holds (`WORKING_FIELDS`), cut to the field's width, on ``vmcs`` one cycle after
it is presented; a parallel write (the VM exit's
fields, each with its own enable) too; when both reach a field at the same edge, the parallel
value wins. Random cycles (`VTX_WC_CYCLES`, default 1500) of both kinds of writes, together and
on the same fields, compared every cycle with a dictionary of field values that applies the
contract; a directed test of the same-edge rule.
"""

from __future__ import annotations

import os
import random

from amaranth.sim import Simulator

from rtl.arch.vmx import FIELD_BY_NAME
from rtl.vmx.layouts import WORKING_FIELDS, member_name
from rtl.vmx.vmcs_cache import FIELD_LANES, FIELD_ROW_COUNT, field_lane, field_row
from rtl.vmx.working_copy import PARALLEL_FIELDS, WorkingCopy

SEED = int(os.environ.get("VTX_SEED", "1"))
CYCLES = int(os.environ.get("VTX_WC_CYCLES", "1500"))
PAR = [member_name(n) for n in PARALLEL_FIELDS]
_U64 = (1 << 64) - 1


def _row_write(fields, row, enables, data):
    """`fields` after a row write: `enables` (2 bits a lane), `data` (64 bits a lane)."""
    for f in WORKING_FIELDS:
        if field_row(f.slot) != row:
            continue
        lane = field_lane(f.slot)
        name = member_name(f)
        value = data >> (64 * lane) & _U64
        old = fields[name]
        for h in range(2):
            lo, hi = 32 * h, min(32 * (h + 1), f.bits)
            if enables >> (2 * lane + h) & 1 and lo < hi:
                mask = ((1 << (hi - lo)) - 1) << lo
                old = (old & ~mask) | (value & mask)
        fields[name] = old


def _random_cycle(rng):
    """(row write or None, {parallel field: value})."""
    row = None
    if rng.random() < 0.6:
        if rng.random() < 0.3:
            enables = (1 << 2 * FIELD_LANES) - 1          # a VMPTRLD's copy
        else:                                            # a read-back: one field's halves
            enables = rng.choice((0b01, 0b10, 0b11, 0b11)) << 2 * rng.randrange(FIELD_LANES)
        row = (rng.randrange(FIELD_ROW_COUNT), enables, rng.getrandbits(64 * FIELD_LANES))
    par = {}
    if rng.random() < 0.3:
        par = {n: rng.getrandbits(64) for n in PAR if rng.random() < 0.5}
    return row, par


def _run(cycles):
    """The RTL's fields after each cycle, and the expected ones."""
    dut = WorkingCopy()
    seen, want = [], []
    fields = {member_name(f): 0 for f in WORKING_FIELDS}

    async def bench(ctx):
        for row, par in cycles:
            ctx.set(dut.row_en, row[1] if row else 0)
            if row:
                ctx.set(dut.row_index, row[0])
                ctx.set(dut.row_data, row[2])
            ctx.set(dut.par_en, sum(1 << PAR.index(n) for n in par))
            for n, v in par.items():
                ctx.set(dut.par_data[n], v & ((1 << FIELD_BY_NAME[n.upper()].bits) - 1))
            await ctx.tick()
            # At this edge: the row write, then the parallel one.
            if row:
                _row_write(fields, *row)
            for n, v in par.items():
                fields[n] = v & ((1 << FIELD_BY_NAME[n.upper()].bits) - 1)
            want.append(dict(fields))
            got = ctx.get(dut.vmcs)
            seen.append({member_name(f): int(got[member_name(f)]) for f in WORKING_FIELDS})

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return seen, want


def _compare(seen, want):
    for i, (got, exp) in enumerate(zip(seen, want, strict=True)):
        bad = [n for n in exp if got[n] != exp[n]]
        assert not bad, (f"cycle {i}: " + ", ".join(
            f"{n} = {got[n]:#x}, expected {exp[n]:#x}" for n in bad[:4]))


def test_random_writes():
    rng = random.Random(SEED)
    _compare(*_run([_random_cycle(rng) for _ in range(CYCLES)]))


def _rip_row(value):
    """A read-back of GUEST_RIP: its row, both halves of its lane, `value` in that lane."""
    slot = FIELD_BY_NAME["GUEST_RIP"].slot
    lane = field_lane(slot)
    return (field_row(slot), 0b11 << 2 * lane, value << 64 * lane)


def test_parallel_write_wins_at_the_same_edge():
    """A row write of GUEST_RIP and the exit's write of it in one cycle: the exit's value stays;
    each alone lands at the next edge."""
    cycles = [(_rip_row(0x1111), {}), (None, {"guest_rip": 0x2222}), (None, {}),
              (_rip_row(0x4444), {"guest_rip": 0x5555}), (None, {}),
              (_rip_row(0x6666), {}), (None, {})]
    seen, want = _run(cycles)
    _compare(seen, want)
    assert [s["guest_rip"] for s in seen] == [0x1111, 0x2222, 0x2222, 0x5555, 0x5555,
                                              0x6666, 0x6666]
