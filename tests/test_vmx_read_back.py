"""`rtl.vmx.read_back.ReadBack` in Amaranth's simulator against its contract.

The bench plays the cache memory's wide copy (a dictionary of rows written by random writes of
random halves, few rows so that a write often meets the read of its own row) and the working
copy (taking the lanes ``land_mask`` of the data the row port read in the previous cycle). The
contract (the module's docstring): a write is read back in the next cycle; nothing lands from a
read that met a write of its row (the block RAM's data would be undefined); ``pending`` is
``read | land``; and whenever nothing is pending the working copy equals the memory in every
half ever written. Random cycles (`VTX_RB_CYCLES`, default 3000), and a directed test of the
merge.
"""

from __future__ import annotations

import os
import random

from amaranth.sim import Simulator

from rtl.vmx.read_back import ReadBack
from rtl.vmx.vmcs_cache import FIELD_LANES

SEED = int(os.environ.get("VTX_SEED", "1"))
CYCLES = int(os.environ.get("VTX_RB_CYCLES", "3000"))
HALVES = 2 * FIELD_LANES
_U32 = (1 << 32) - 1


def _run(writes):
    """Run `writes` (per cycle: None or (row, enables, {half: value})) and then four idle
    cycles; returns the per-cycle outputs seen (read, read_row, land, land_row, land_mask,
    pending) after checking the contract."""
    dut = ReadBack()
    memory = {}            # (row, half) -> value: the wide copy
    wc = {}                # (row, half) -> value: the working copy
    trace = []

    async def bench(ctx):
        read_data = None   # the row port's data: the row read in the previous cycle
        prev_write_row = None
        for cycle, write in enumerate([*writes, None, None, None, None]):
            read, read_row = ctx.get(dut.read), ctx.get(dut.read_row)
            land, land_row, land_mask = (ctx.get(dut.land), ctx.get(dut.land_row),
                                         ctx.get(dut.land_mask))
            pending = ctx.get(dut.pending)
            trace.append((read, read_row, land, land_row, land_mask, pending))
            assert pending == (read | land), f"cycle {cycle}: pending"
            assert read == (prev_write_row is not None), f"cycle {cycle}: no read after a write"
            if land:
                assert read_data is not None and read_data[0] == land_row, \
                    f"cycle {cycle}: lands row {land_row}, not the row read"
                assert not read_data[2], f"cycle {cycle}: lands a read that met a write"
                for h in range(HALVES):
                    if land_mask >> h & 1 and (land_row, h) in read_data[1]:
                        wc[(land_row, h)] = read_data[1][(land_row, h)]
            if not pending:
                assert wc == memory, f"cycle {cycle}: nothing pending, working copy differs"
            # The row port's read in this cycle; the write meets it if it writes that row.
            read_data = (read_row, dict(memory), write is not None and write[0] == read_row) \
                if read else None
            if write is None:
                ctx.set(dut.write, 0)
                prev_write_row = None
            else:
                row, enables, values = write
                ctx.set(dut.write, 1)
                ctx.set(dut.write_row, row)
                ctx.set(dut.write_lanes, enables)
                memory.update({(row, h): v for h, v in values.items()})
                prev_write_row = row
            await ctx.tick()
        assert wc == memory

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return trace


def _write(rng, row):
    """A write of one field (one or both halves of a lane) or, sometimes, of several lanes."""
    if rng.random() < 0.2:
        enables = rng.getrandbits(HALVES) or 1
    else:
        enables = rng.choice((0b01, 0b10, 0b11, 0b11)) << 2 * rng.randrange(FIELD_LANES)
    return (row, enables, {h: rng.getrandbits(32) for h in range(HALVES) if enables >> h & 1})


def test_random_writes():
    rng = random.Random(SEED)
    writes = []
    for _ in range(CYCLES):
        if rng.random() < 0.5:
            writes.append(_write(rng, rng.choice((0, 0, 1, 8))))
        else:
            writes.append(None)
    trace = _run(writes)
    merges = sum(1 for a, b in zip(writes, writes[1:], strict=False) if a and b and a[0] == b[0])
    assert merges > CYCLES // 20            # the random writes do exercise the merge
    assert sum(t[2] for t in trace) > CYCLES // 5


def test_same_row_writes_merge_and_land_once():
    """Three writes of row 2 in a row: each one's read meets the next write, so only the read
    after the last lands, with all three lanes; a write of row 3 then lands on its own."""
    writes = [(2, 0b11, {0: 1, 1: 2}), (2, 0b1100, {2: 3, 3: 4}), (2, 0b110000, {4: 5, 5: 6}),
              (3, 0b01, {0: 7}), None]
    trace = _run(writes)
    lands = [(t[3], t[4]) for t in trace if t[2]]
    assert lands == [(2, 0b111111), (3, 0b01)], lands
