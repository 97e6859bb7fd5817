"""`rtl.vmx.exit_write_back.ExitWriteBack` in Amaranth's simulator against its contract.

Random cycles (`VTX_XWB_CYCLES`, default 3000) of restarts, holds, a taken write port and
changing working-copy values, against a walk kept here: ``busy`` exactly while a walk is on;
a write request exactly when busy and not held, for the walk's next field (in the order of
`PARALLEL_FIELDS`) with the field's value of that cycle; the walk advances only when the port is
not taken, and a start begins it again from the first field; ``query_pending`` says whether the
queried field is the one offered or a later one.
"""

from __future__ import annotations

import os
import random

from amaranth.sim import Simulator

from rtl.arch.vmx import FIELD_BY_NAME
from rtl.vmx.exit_write_back import ExitWriteBack
from rtl.vmx.layouts import member_name
from rtl.vmx.working_copy import PARALLEL_FIELDS

SEED = int(os.environ.get("VTX_SEED", "1"))
CYCLES = int(os.environ.get("VTX_XWB_CYCLES", "3000"))
SLOTS = [FIELD_BY_NAME[n].slot for n in PARALLEL_FIELDS]


def test_walks_against_the_contract():
    rng = random.Random(SEED)
    dut = ExitWriteBack()
    errors = []

    async def bench(ctx):
        values = {n: 0 for n in PARALLEL_FIELDS}
        walk = None             # the next field index the current walk must offer
        for cycle in range(CYCLES):
            start = rng.random() < 0.03
            hold = rng.random() < 0.2
            taken = rng.random() < 0.2
            for n in PARALLEL_FIELDS:
                if rng.random() < 0.1:
                    values[n] = rng.getrandbits(FIELD_BY_NAME[n].bits)
                ctx.set(dut.fields[member_name(n)], values[n])
            query = rng.randrange(len(PARALLEL_FIELDS))
            ctx.set(dut.query_field, SLOTS[query])
            ctx.set(dut.start, start)
            ctx.set(dut.hold, hold)
            ctx.set(dut.taken, taken)
            busy = ctx.get(dut.busy)
            if busy != (walk is not None):
                errors.append(f"cycle {cycle}: busy {busy}, expected {walk is not None}")
            if walk is not None and ctx.get(dut.query_pending) != (query >= walk):
                errors.append(f"cycle {cycle}: query_pending of field {query} in step {walk}")
            valid = ctx.get(dut.wr_valid)
            if valid != (walk is not None and not hold):
                errors.append(f"cycle {cycle}: wr_valid {valid}")
            if valid and walk is not None:
                name = PARALLEL_FIELDS[walk]
                if ctx.get(dut.wr_field) != SLOTS[walk] or ctx.get(dut.wr_data) != values[name]:
                    errors.append(f"cycle {cycle}: offered slot {ctx.get(dut.wr_field)}, "
                                  f"expected {name}'s")
                if not taken:
                    walk = walk + 1 if walk < len(PARALLEL_FIELDS) - 1 else None
            if start:
                walk = 0
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert not errors, errors[:5]
