"""Unit test of `rtl.vmx.vmcs_cache.VmcsCache` in Amaranth's simulator: lookup, victim choice
(free slot first, then least recently used), LRU order under touches, metadata commands, the
data memory's one-cycle read and its wide copy's rows (lanes written by the field writes). (The
VMX unit's cocotb tests exercise it in context.)"""

from __future__ import annotations

import os
import random

from amaranth.sim import Simulator

from rtl.arch.vmx import FIELDS
from rtl.vmx.vmcs_cache import FIELD_LANES, FIELD_ROW_COUNT, VmcsCache, field_lane, field_row

SEED = int(os.environ.get("VTX_SEED", "1"))
_U32 = (1 << 32) - 1
_U64 = (1 << 64) - 1


def run(bench_fn, slots=4):
    dut = VmcsCache(slots=slots)
    sim = Simulator(dut)
    sim.add_clock(1e-6)

    async def bench(ctx):
        await bench_fn(ctx, dut)
    sim.add_testbench(bench)
    sim.run()


async def pulse(ctx, **signals):
    """Drive the given inputs for one cycle, then clear them."""
    for sig, value in signals.values():
        ctx.set(sig, value)
    await ctx.tick()
    for sig, _ in signals.values():
        ctx.set(sig, 0)


def test_lookup_victim_lru():
    async def bench(ctx, dut):
        k = dut.slots
        # Empty: every lookup misses and the victim is slot 0.
        ctx.set(dut.lookup_tag, 5)
        assert not ctx.get(dut.hit) and ctx.get(dut.victim) == 0
        # Fill slots in victim order; each fill is also a touch (as the unit does).
        for i in range(k):
            v = ctx.get(dut.victim)
            assert v == i, (v, i)
            await pulse(ctx, a=(dut.fill, 1), b=(dut.fill_slot, v), c=(dut.fill_tag, 100 + i),
                        d=(dut.touch, 1), e=(dut.touch_slot, v))
        for i in range(k):
            ctx.set(dut.lookup_tag, 100 + i)
            assert ctx.get(dut.hit) and ctx.get(dut.hit_slot) == i
        # LRU: the least recently touched slot is the victim, model by a list.
        order = list(range(k))          # most recent last
        rng = random.Random(1)
        for _ in range(50):
            assert ctx.get(dut.victim) == order[0]
            s = rng.randrange(k)
            await pulse(ctx, a=(dut.touch, 1), b=(dut.touch_slot, s))
            order.remove(s)
            order.append(s)
        # Freeing a slot makes it the victim.
        await pulse(ctx, a=(dut.free, 1), b=(dut.free_slot, 2))
        assert ctx.get(dut.victim) == 2
        ctx.set(dut.lookup_tag, 102)
        assert not ctx.get(dut.hit)
    run(bench)


def test_metadata_and_data():
    async def bench(ctx, dut):
        await pulse(ctx, a=(dut.fill, 1), b=(dut.fill_slot, 1), c=(dut.fill_tag, 7),
                    d=(dut.fill_launched, 1))
        ctx.set(dut.a_slot, 1)
        ctx.set(dut.b_slot, 1)
        assert ctx.get(dut.a_launched) and not ctx.get(dut.a_lbv)
        assert ctx.get(dut.b_valid) and not ctx.get(dut.b_dirty) and ctx.get(dut.b_tag) == 7
        await pulse(ctx, a=(dut.mark_dirty, 1), b=(dut.dirty_slot, 1))
        assert ctx.get(dut.b_dirty)
        await pulse(ctx, a=(dut.vmxoff, 1))
        assert ctx.get(dut.a_lbv)
        await pulse(ctx, a=(dut.set_launched, 1), b=(dut.launch_slot, 1), c=(dut.launch_value, 0))
        assert not ctx.get(dut.a_launched) and ctx.get(dut.a_lbv)
        await pulse(ctx, a=(dut.free, 1), b=(dut.free_slot, 1))
        assert not ctx.get(dut.b_valid) and not ctx.get(dut.a_lbv)
        # Data: a write, then the read port shows the row one cycle after its address.
        for slot, field, value in ((0, 0, 0x1111), (3, 129, 0x2222_3333_4444_5555), (1, 7, 9)):
            await pulse(ctx, a=(dut.wr_en, 0b11), b=(dut.wr_slot, slot), c=(dut.wr_field, field),
                        d=(dut.wr_data, value))
        for slot, field, value in ((0, 0, 0x1111), (3, 129, 0x2222_3333_4444_5555), (1, 7, 9)):
            ctx.set(dut.rd_slot, slot)
            ctx.set(dut.rd_field, field)
            await ctx.tick()
            assert ctx.get(dut.rd_data) == value
        # One half at a time: bit 1 writes bits 63:32 only, bit 0 bits 31:0 only.
        await pulse(ctx, a=(dut.wr_en, 0b10), b=(dut.wr_slot, 3), c=(dut.wr_field, 129),
                    d=(dut.wr_data, 0xAAAA_AAAA_BBBB_BBBB))
        await pulse(ctx, a=(dut.wr_en, 0b01), b=(dut.wr_slot, 1), c=(dut.wr_field, 7),
                    d=(dut.wr_data, 0xCCCC_CCCC_0000_0042))
        for slot, field, value in ((3, 129, 0xAAAA_AAAA_4444_5555), (1, 7, 0x42)):
            ctx.set(dut.rd_slot, slot)
            ctx.set(dut.rd_field, field)
            await ctx.tick()
            assert ctx.get(dut.rd_data) == value
        # With rd_en low the read data holds while the address moves.
        ctx.set(dut.rd_en, 0)
        ctx.set(dut.rd_slot, 0)
        ctx.set(dut.rd_field, 0)
        await ctx.tick()
        assert ctx.get(dut.rd_data) == 0x42
        ctx.set(dut.rd_en, 1)
        await ctx.tick()
        assert ctx.get(dut.rd_data) == 0x1111
    run(bench)


def test_rows_follow_the_field_writes():
    """Random field writes (either half, both), then every row of the wide copy and a sample of
    fields through the narrow port, against a dictionary of field values."""
    rng = random.Random(SEED)
    slots = 4
    values = {}

    async def bench(ctx, dut):
        for _ in range(300):
            slot, field = rng.randrange(slots), rng.randrange(len(FIELDS))
            halves, value = rng.choice((0b01, 0b10, 0b11)), rng.getrandbits(64)
            old = values.get((slot, field), 0)
            for h in range(2):
                if halves >> h & 1:
                    mask = _U32 << 32 * h
                    old = (old & ~mask) | (value & mask)
            values[(slot, field)] = old
            await pulse(ctx, a=(dut.wr_en, halves), b=(dut.wr_slot, slot),
                        c=(dut.wr_field, field), d=(dut.wr_data, value))
        for slot in range(slots):
            for row in range(FIELD_ROW_COUNT):
                ctx.set(dut.row_slot, slot)
                ctx.set(dut.row_index, row)
                await ctx.tick()
                got = ctx.get(dut.row_data)
                for lane in range(FIELD_LANES):
                    field = row * FIELD_LANES + lane
                    if field >= len(FIELDS) or (slot, field) not in values:
                        continue
                    assert (field_row(field), field_lane(field)) == (row, lane)
                    assert got >> 64 * lane & _U64 == values[(slot, field)], (slot, field)
        for (slot, field), value in rng.sample(sorted(values.items()), 40):
            ctx.set(dut.rd_slot, slot)
            ctx.set(dut.rd_field, field)
            await ctx.tick()
            assert ctx.get(dut.rd_data) == value, (slot, field)
    run(bench, slots=slots)
