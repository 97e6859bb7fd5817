"""`rtl.mux.binary_mux` in Amaranth's simulator: for random item counts and widths and every
value of the select, the output is ``items[select]`` (the last item beyond the end); bad
arguments are rejected."""

from __future__ import annotations

import random

import pytest
from amaranth.hdl import Const, Module, Signal
from amaranth.sim import Simulator

from rtl.mux import binary_mux


@pytest.mark.parametrize("count", [1, 2, 3, 5, 8, 13, 27, 32])
def test_selects_items(count):
    rng = random.Random(count)
    sel_bits = max(1, (count - 1).bit_length())
    values = [rng.getrandbits(rng.choice((1, 8, 32, 64))) for _ in range(count)]
    m = Module()
    select = Signal(sel_bits)
    items = [Signal(64, name=f"item{i}") for i in range(count)]
    out = Signal(64)
    m.d.comb += out.eq(binary_mux(select, items))

    async def bench(ctx):
        for item, value in zip(items, values, strict=True):
            ctx.set(item, value)
        for s in range(1 << sel_bits):
            ctx.set(select, s)
            assert ctx.get(out) == values[min(s, count - 1)], (count, s)

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="at least one item"):
        binary_mux(Signal(2), [])
    with pytest.raises(ValueError, match="5 items do not fit a 2-bit select"):
        binary_mux(Signal(2), [Const(i, 8) for i in range(5)])
