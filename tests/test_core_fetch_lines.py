"""`rtl.core.fetch_lines.FetchLines` in Amaranth's simulator: random lookups (on every port),
fills and flushes every cycle against `tb.model.fetch_lines.FetchLinesModel` (hit, data, which
line a fill replaces, a flush dropping the fill of its cycle), for 1, 2, 3 and 4 lines and 1 or 2
lookup ports."""

from __future__ import annotations

import os
import random

import pytest
from amaranth.sim import Simulator

from rtl.core.fetch_lines import FetchLines
from tb.model.fetch_lines import FetchLinesModel

SEED = int(os.environ.get("VTX_SEED", "1"))


@pytest.mark.parametrize("lines,ports", [(1, 1), (2, 2), (3, 1), (4, 2)])
def test_fetch_lines_random_differential(lines, ports):
    rng = random.Random(SEED * 31 + lines)
    dut = FetchLines(lines=lines, ports=ports)
    model = FetchLinesModel(lines)
    # Few addresses (so fills meet present lines), one of them with every bit set.
    addrs = [rng.getrandbits(61) for _ in range(lines + 2)] + [(1 << 61) - 1]
    seen = {"hits": 0, "misses": 0}

    async def bench(ctx):
        for cycle in range(2000):
            lookups = [rng.choice(addrs) for _ in range(ports)]
            for p, addr in enumerate(lookups):
                ctx.set(dut.lookup_addr[p], addr)
            fill = (rng.choice(addrs), rng.getrandbits(64)) if rng.random() < 0.4 else None
            flush = rng.random() < 0.03
            ctx.set(dut.fill_en, fill is not None)
            if fill is not None:
                ctx.set(dut.fill_addr, fill[0])
                ctx.set(dut.fill_data, fill[1])
            ctx.set(dut.flush, flush)
            for p, addr in enumerate(lookups):
                want = model.lookup(addr)
                assert ctx.get(dut.lookup_hit[p]) == (want is not None), f"cycle {cycle}"
                if want is not None:
                    assert ctx.get(dut.lookup_data[p]) == want, f"cycle {cycle}"
                seen["hits" if want is not None else "misses"] += 1
            model.step(fill=fill, flush=flush)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert seen["hits"] > 200 and seen["misses"] > 200, seen
