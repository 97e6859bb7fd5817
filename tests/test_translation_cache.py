"""`rtl.translation.cache.SetAssocCache` in Amaranth's simulator.

- Random differential against `tb.model.cache.SetAssocCacheModel`, one operation at a time: every
  lookup's hit/miss and payload, the way each fill replaces (through later hits), invalidations.
- Concurrent stress: random inputs every cycle (lookups, fills, invalidations back to back), with
  a shadow of what the cache may know: a hit is only ever on a key whose last committed fill was
  not invalidated since, and returns that fill's payload one cycle later.
- Directed: capacity (every way of every set), pseudo-LRU order, the scan's length and that
  lookups miss and fills are dropped while it runs, a zero-mask invalidation in one cycle.
"""

from __future__ import annotations

import random

import pytest
from amaranth import Module, Signal
from amaranth.sim import Simulator

from rtl.translation.cache import SetAssocCache, cache_geometry
from tb.model.cache import SetAssocCacheModel

GEOMETRIES = [(1, 1), (1, 4), (2, 2), (4, 4), (8, 4), (4, 2), (2, 8)]


def run(fn, *, sets, ways, key_width=8, data_width=12):
    dut = SetAssocCache(key_width=key_width, data_width=data_width, sets=sets, ways=ways)
    top = Module()                       # gives an empty cache (entries=0) a clock domain
    top.submodules.dut = dut
    top.d.sync += Signal(name="tick").eq(1)
    sim = Simulator(top)
    sim.add_clock(1e-6)

    async def bench(ctx):
        await fn(ctx, dut)
    sim.add_testbench(bench)
    sim.run()


class Driver:
    """One operation at a time, spaced so that each one's effects are complete before the
    next (a fill is visible two cycles after it is presented)."""

    def __init__(self, ctx, dut):
        self.ctx, self.dut = ctx, dut

    async def lookup(self, key):
        ctx, dut = self.ctx, self.dut
        ctx.set(dut.lookup_key, key)
        ctx.set(dut.lookup_en, 1)
        hit = ctx.get(dut.lookup_hit)
        await ctx.tick()
        ctx.set(dut.lookup_en, 0)
        data = ctx.get(dut.lookup_data)
        await ctx.tick()                 # the hit's pseudo-LRU update
        return data if hit else None

    async def fill(self, key, data):
        ctx, dut = self.ctx, self.dut
        ctx.set(dut.fill_key, key)
        ctx.set(dut.fill_data, data)
        ctx.set(dut.fill_en, 1)
        await ctx.tick()
        ctx.set(dut.fill_en, 0)
        await ctx.tick()

    async def invalidate(self, mask, match):
        """Returns the number of cycles `busy` was high."""
        ctx, dut = self.ctx, self.dut
        assert not ctx.get(dut.busy)
        ctx.set(dut.inval_mask, mask)
        ctx.set(dut.inval_match, match)
        ctx.set(dut.inval_en, 1)
        await ctx.tick()
        ctx.set(dut.inval_en, 0)
        cycles = 0
        while ctx.get(dut.busy):
            cycles += 1
            assert cycles <= 1024, "scan never ends"
            await ctx.tick()
        return cycles


@pytest.mark.parametrize("sets,ways", GEOMETRIES)
def test_random_differential(sets, ways):
    rng = random.Random(sets * 100 + ways)
    kw = 8
    # A key pool about twice the capacity, so that sets overflow and evictions happen.
    pool = rng.sample(range(1 << kw), min(1 << kw, 2 * sets * ways + 3))

    async def bench(ctx, dut):
        d = Driver(ctx, dut)
        model = SetAssocCacheModel(sets, ways)
        for step in range(400):
            op = rng.random()
            if op < 0.45:
                key = rng.choice(pool)
                got = await d.lookup(key)
                want = model.lookup(key)
                assert got == want, (step, hex(key), got, want)
            elif op < 0.9:
                key, data = rng.choice(pool), rng.randrange(1 << 12)
                await d.fill(key, data)
                model.fill(key, data)
            else:
                mask = rng.choice([0, (1 << kw) - 1, rng.randrange(1 << kw)])
                match = rng.randrange(1 << kw)
                cycles = await d.invalidate(mask, match)
                assert cycles == (0 if mask == 0 else sets)
                model.invalidate(mask, match)
        # Everything the model holds, the cache holds (same ways, same payloads).
        for key, data in model.contents().items():
            assert await d.lookup(key) == data
    run(bench, sets=sets, ways=ways, key_width=kw)


@pytest.mark.parametrize("sets,ways", [(1, 1), (2, 2), (4, 4), (8, 4)])
def test_concurrent_stress(sets, ways):
    rng = random.Random(7 * sets + ways)
    kw = 6
    keys = min(1 << kw, 3 * sets * ways)     # a pool that overflows the cache, hits often

    async def bench(ctx, dut):
        shadow = {}                       # key -> payload of its last fill, not invalidated
        pending = None                    # the fill presented last cycle (key, data)
        last_hit = None                   # (key, payload) a lookup hit last cycle should return
        hits = 0
        for cycle in range(3000):
            if last_hit is not None:
                assert ctx.get(dut.lookup_data) == last_hit[1], (cycle, last_hit)
            busy = ctx.get(dut.busy)
            key = rng.randrange(keys)
            en = rng.random() < 0.8
            ctx.set(dut.lookup_key, key)
            ctx.set(dut.lookup_en, en)
            hit = ctx.get(dut.lookup_hit)
            if hit:
                assert not busy
                assert key in shadow, (cycle, key)
                hits += 1
            last_hit = (key, shadow.get(key)) if en and hit else None
            fill = rng.random() < 0.5
            fkey, fdata = rng.randrange(keys), rng.randrange(1 << 12)
            ctx.set(dut.fill_en, fill)
            ctx.set(dut.fill_key, fkey)
            ctx.set(dut.fill_data, fdata)
            inval = not busy and rng.random() < 0.04
            mask = rng.choice([0, (1 << kw) - 1, rng.randrange(1 << kw)])
            match = rng.randrange(1 << kw)
            ctx.set(dut.inval_en, inval)
            ctx.set(dut.inval_mask, mask)
            ctx.set(dut.inval_match, match)
            # What the edge does, in the contract's words: the pending fill commits unless an
            # invalidation starts now or a scan runs; an invalidation removes what it covers.
            if pending is not None and not inval and not busy:
                shadow[pending[0]] = pending[1]
            if inval:
                for k in [k for k in shadow if (k & mask) == (match & mask)]:
                    del shadow[k]
            pending = (fkey, fdata) if fill else None
            await ctx.tick()
        assert hits > 100, hits           # the check above was exercised
    run(bench, sets=sets, ways=ways, key_width=kw)


def test_capacity_and_plru():
    sets, ways = 4, 4

    async def bench(ctx, dut):
        d = Driver(ctx, dut)
        keys = [s + sets * w for s in range(sets) for w in range(ways)]
        for k in keys:
            await d.fill(k, k + 1)
        for k in keys:                          # every way of every set holds its key
            assert await d.lookup(k) == k + 1
        # Set 0 holds keys 0, 4, 8, 12 (ways 0-3), last used in that order: tree pseudo-LRU
        # points at way 0 (both halves' last use: way 1 in the lower pair, then the upper pair).
        await d.fill(16, 99)                    # replaces key 0
        assert await d.lookup(0) is None
        assert await d.lookup(16) == 99
        for k in (4, 8, 12):
            assert await d.lookup(k) == k + 1
        # Filling an existing key overwrites its entry in place: nothing else is evicted.
        await d.fill(8, 7)
        assert await d.lookup(8) == 7
        for k in (4, 12, 16):
            assert await d.lookup(k) is not None
    run(bench, sets=sets, ways=ways)


@pytest.mark.parametrize("sets,ways", [(1, 2), (8, 4)])
def test_scan_holds_lookups_and_drops_fills(sets, ways):
    async def bench(ctx, dut):
        d = Driver(ctx, dut)
        await d.fill(1, 5)
        await d.fill(2, 6)
        assert await d.lookup(2) == 6
        # Invalidate key 1 only (mask: all bits): the scan takes `sets` cycles; during it key 2
        # misses too and a fill of key 3 is dropped.
        ctx.set(dut.inval_mask, 0xFF)
        ctx.set(dut.inval_match, 1)
        ctx.set(dut.inval_en, 1)
        await ctx.tick()
        ctx.set(dut.inval_en, 0)
        cycles = 0
        while ctx.get(dut.busy):
            ctx.set(dut.lookup_key, 2)
            ctx.set(dut.lookup_en, 1)
            assert not ctx.get(dut.lookup_hit)
            ctx.set(dut.fill_en, 1)
            ctx.set(dut.fill_key, 3)
            ctx.set(dut.fill_data, 9)
            await ctx.tick()
            ctx.set(dut.fill_en, 0)
            cycles += 1
        assert cycles == sets
        await ctx.tick()
        ctx.set(dut.lookup_en, 0)
        # Key 1 is gone, key 2 stays; the fill presented in the scan's last cycle commits after
        # the scan (it came after the invalidation), the earlier ones were dropped.
        assert await d.lookup(1) is None
        assert await d.lookup(2) == 6
        assert await d.lookup(3) == 9
        # A zero mask clears everything at once.
        assert await d.invalidate(0, 0) == 0
        assert await d.lookup(2) is None
    run(bench, sets=sets, ways=ways)


def test_geometry():
    assert cache_geometry(32) == (8, 4)
    assert cache_geometry(2) == (1, 2)
    assert cache_geometry(16, ways=2) == (8, 2)
    assert cache_geometry(0) == (0, 0)
    with pytest.raises(ValueError, match="12 entries"):
        cache_geometry(12)


def test_no_entries_never_hits():
    async def bench(ctx, dut):
        d = Driver(ctx, dut)
        await d.fill(1, 5)
        assert await d.lookup(1) is None
    run(bench, sets=0, ways=0)
