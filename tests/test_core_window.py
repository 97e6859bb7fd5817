"""`rtl.core.window.WindowSelect` in Amaranth's simulator: random buffers, offsets, lengths and
valid-qword counts against the window written out as bytes in Python (the 15 bytes from the
offset; with `ahead`, from the offset plus the length, zeros past the buffer; the real bytes)."""

from __future__ import annotations

import os
import random

from amaranth.sim import Simulator

from rtl.core.window import WindowSelect

SEED = int(os.environ.get("VTX_SEED", "1"))


def _bytes_from(data: bytes, start: int) -> int:
    chunk = (data + bytes(32))[start:start + 15]
    return int.from_bytes(chunk, "little")


def test_window_select_random():
    rng = random.Random(SEED * 29)
    dut = WindowSelect()

    async def bench(ctx):
        for _ in range(3000):
            data = rng.randbytes(24)
            woff, length, nq = rng.randrange(8), rng.randrange(16), rng.randrange(4)
            ahead = rng.random() < 0.5
            ctx.set(dut.buf, int.from_bytes(data, "little"))
            ctx.set(dut.woff, woff)
            ctx.set(dut.length, length)
            ctx.set(dut.nq, nq)
            ctx.set(dut.ahead, ahead)
            await ctx.delay(1e-9)
            assert ctx.get(dut.window) == _bytes_from(data, woff)
            assert ctx.get(dut.next_sum) == woff + length
            assert ctx.get(dut.fetched) == max(8 * nq - woff, 0)
            want = _bytes_from(data, woff + length) if ahead else _bytes_from(data, woff)
            assert ctx.get(dut.dec_window) == want, (woff, length, ahead)

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()
