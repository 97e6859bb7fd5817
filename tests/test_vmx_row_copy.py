"""`rtl.vmx.row_copy.RowCopy` in Amaranth's simulator against its contract.

The bench plays the cache memory's wide copy (rows of random values per slot), the working copy
(taking the whole row the row port read in the previous cycle when ``take``), the unit's
read-back of writes into the slot being copied (a write of that slot in cycle t makes the row port
busy in t+1 and lands the written row in the working copy in t+2, as `ReadBack` does) and other
busy cycles of the row port at random. Random starts (some while a copy runs), random writes (few
rows, so that writes often meet the row the copy wants). The contract (the module's docstring):
a read only when the port is free and no write meets its row; ``take`` of that row in the next
cycle; after the last start, rows 0 .. `FIELD_ROW_COUNT` - 1 taken in order, once each;
``busy`` from the cycle after the start until the last take; and once the copy and the read-backs
are done, the working copy equals the slot's rows. `VTX_ROW_COPY_CYCLES` (default 4000) random
cycles.
"""

from __future__ import annotations

import os
import random

from amaranth.sim import Simulator

from rtl.vmx.row_copy import RowCopy
from rtl.vmx.vmcs_cache import FIELD_ROW_COUNT

SEED = int(os.environ.get("VTX_SEED", "1"))
CYCLES = int(os.environ.get("VTX_ROW_COPY_CYCLES", "4000"))
SLOTS = 4


def _run(events):
    """Run the per-cycle `events` (start slot or None, write (slot, row) or None, port busy)
    and then idle cycles until the copy is done; returns counts of what was seen."""
    rng = random.Random(SEED + 1)
    dut = RowCopy(slots=SLOTS)
    memory = {(s, r): rng.getrandbits(64) for s in range(SLOTS) for r in range(FIELD_ROW_COUNT)}
    seen = {"copies": 0, "stalled_by_write": 0, "restarts": 0}

    async def bench(ctx):
        wc = {}
        source = None           # the slot of the last start
        expected_row = None     # the next row the copy must take (None: no copy)
        read = None             # (slot, row, value) the row port read for the copy last cycle
        read_backs = []         # [cycles left, row]: the bench's read-back of a write of `source`
        busy_before = False
        tail = [(None, None, False)] * (FIELD_ROW_COUNT * 4 + 8)
        for cycle, (start, write, port_busy) in enumerate([*events, *tail]):
            port_busy = port_busy or any(left == 1 for left, _ in read_backs)
            ctx.set(dut.start, start is not None)
            ctx.set(dut.slot, start or 0)
            ctx.set(dut.port_free, not port_busy)
            ctx.set(dut.wr_en, write is not None)
            if write is not None:
                ctx.set(dut.wr_slot, write[0])
                ctx.set(dut.wr_row, write[1])
            take, take_row = ctx.get(dut.take), ctx.get(dut.take_row)
            row_read = ctx.get(dut.row_read)
            row_slot, row_index = ctx.get(dut.row_slot), ctx.get(dut.row_index)
            busy = ctx.get(dut.busy)
            where = f"cycle {cycle}"
            # The take: the row read in the previous cycle, in order.
            assert take == (read is not None), f"{where}: take without a read or no take"
            if take:
                assert take_row == read[1], f"{where}: takes row {take_row}, read {read[1]}"
                wc[take_row] = read[2]
                if read[0] == source and start is None:
                    assert take_row == expected_row, f"{where}: row {take_row} out of order"
                    expected_row += 1
            # The bench's read-backs land.
            for rb in read_backs:
                if rb[0] == 0:
                    wc[rb[1]] = memory[(source, rb[1])]
            read_backs = [[left - 1, row] for left, row in read_backs if left > 0]
            # `busy`: rows left to read before this cycle's start, or a take.
            copying = expected_row is not None and expected_row < FIELD_ROW_COUNT
            assert busy == (copying or take), f"{where}: busy {busy}"
            if start is not None:
                seen["restarts"] += busy
                source, expected_row = start, 0
            # The read: only on a free port, never meeting a write of its row.
            meets = write is not None and write == (row_slot, row_index)
            if row_read:
                assert not port_busy, f"{where}: read on a busy port"
                assert not meets, f"{where}: read meets a write of its row"
                assert row_slot == source, f"{where}: reads slot {row_slot}, copying {source}"
                assert row_index == expected_row, f"{where}: reads row {row_index}"
                read = (row_slot, row_index, memory[(row_slot, row_index)])
            else:
                read = None
                if meets and (start is not None or busy):
                    seen["stalled_by_write"] += 1
            if write is not None:
                memory[write] = rng.getrandbits(64)
                if write[0] == source:
                    read_backs.append([1, write[1]])
            if busy_before and not busy and start is None:
                seen["copies"] += 1
            if expected_row == FIELD_ROW_COUNT and not busy and not read_backs:
                assert all(wc.get(r) == memory[(source, r)] for r in range(FIELD_ROW_COUNT)), \
                    f"{where}: copy done, working copy differs from slot {source}"
            busy_before = busy
            await ctx.tick()
        assert expected_row == FIELD_ROW_COUNT, "the last copy did not finish"

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return seen


def test_random_copies():
    rng = random.Random(SEED)
    events = []
    last = 0                # the slot being copied: most writes go there
    for _ in range(CYCLES):
        start = rng.randrange(SLOTS) if rng.random() < 0.04 else None
        last = last if start is None else start
        slot = last if rng.random() < 0.7 else rng.randrange(SLOTS)
        write = (slot, rng.choice((0, 1, FIELD_ROW_COUNT - 1))) if rng.random() < 0.3 else None
        events.append((start, write, rng.random() < 0.15))
    seen = _run(events)
    assert seen["copies"] > CYCLES // 60
    assert seen["stalled_by_write"] > CYCLES // 200
    assert seen["restarts"] > 10


def test_free_port_copies_in_row_count_cycles():
    """Nothing else on the port: row 0 read in the start cycle, `FIELD_ROW_COUNT` takes in a
    row, ``busy`` from the cycle after the start to the last take (the module's Timing)."""
    dut = RowCopy(slots=SLOTS)
    trace = []

    async def bench(ctx):
        ctx.set(dut.port_free, 1)
        ctx.set(dut.start, 1)
        ctx.set(dut.slot, 2)
        for _ in range(FIELD_ROW_COUNT + 3):
            trace.append((ctx.get(dut.row_read), ctx.get(dut.take), ctx.get(dut.take_row),
                          ctx.get(dut.busy)))
            await ctx.tick()
            ctx.set(dut.start, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    takes = [t[2] for t in trace if t[1]]
    assert takes == list(range(FIELD_ROW_COUNT)), takes
    assert trace[0][0] == 1 and trace[0][1] == 0
    assert [t[3] for t in trace] == [0] + [1] * FIELD_ROW_COUNT + [0, 0], trace
