"""Run byte windows through `rtl.core.decode.Decoder` in Amaranth's simulator.

`decode_windows(windows)` decodes each 15-byte window (bytes past an instruction are whatever
follows it in the stream, as in the core) through one elaboration, one window per cycle through
the registered output, and returns one dict per window: every `DECODED_LAYOUT` field by name
(enum fields as enum members, `disp` signed).
"""

from __future__ import annotations

from amaranth.sim import Simulator

from rtl.core.decode import Decoder
from rtl.core.layouts import DECODED_LAYOUT, MAX_INSN_BYTES

FIELDS = list(DECODED_LAYOUT.members)
#: Watchdog: the decoder answers every window on the next cycle.
LATENCY = 1


def pad_window(data: bytes, fill: int = 0) -> bytes:
    data = bytes(data[:MAX_INSN_BYTES])
    return data + bytes([fill]) * (MAX_INSN_BYTES - len(data))


def decode_windows(windows) -> list[dict]:
    dut = Decoder()
    results = []
    windows = [pad_window(w) for w in windows]

    async def bench(ctx):
        for w in windows:
            # One assignment of the whole window: a testbench settles after every `set`.
            ctx.set(dut.window.as_value(), int.from_bytes(w, "little"))
            ctx.set(dut.window_valid, 1)
            await ctx.tick()
            # The registered output belongs to this window exactly LATENCY cycles later.
            assert ctx.get(dut.insn_valid) == 1, "decoder did not answer within 1 cycle"
            v = ctx.get(dut.insn)
            results.append({name: getattr(v, name) for name in FIELDS})
        ctx.set(dut.window_valid, 0)
        await ctx.tick()
        assert ctx.get(dut.insn_valid) == 0, "insn_valid without a window"

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return results
