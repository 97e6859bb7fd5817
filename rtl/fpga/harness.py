"""One block alone on the FPGA, to measure it: `ShiftHarness` and `HarnessBoard`.

A block's ports cannot all reach pins (the translation unit has about 1,900 port bits, the core
about 3,700), and ports tied to constants let Yosys fold away the logic behind them. The harness
feeds every input bit from a shift register (one bit in per cycle on `sin`) and captures every
output bit into another (all at once on `load`, then shifted out on `sout`): nothing is
constant, nothing is unused, and every path of the block runs from a register to a register,
so nextpnr's Fmax and critical path are the block's own.

`vtx synth --top unit` builds the translation unit this way, `--top core` the core
(`sim.synth`, docs/fpga.md).

Ports (`ShiftHarness`):
    sin     the next input bit (shifted into the input chain every cycle)
    load    capture every output bit (else the capture chain shifts towards `sout`)
    sout    the capture chain's first bit

Timing: the block's inputs are registers; its outputs are registered in the capture chain.
"""

from collections.abc import Callable

from amaranth import Cat, Elaboratable, Module, Signal
from amaranth.lib import io, wiring
from amaranth.lib.wiring import In, Out

from .board import pll_sync_domain

__all__ = ["HarnessBoard", "ShiftHarness"]


class ShiftHarness(wiring.Component):
    """See the module docstring. `make_block` builds the block (a `wiring.Component`);
    `name` is its submodule name (its cells' instance paths start with it)."""

    sin: In(1)
    load: In(1)
    sout: Out(1)

    def __init__(self, make_block: Callable[[], wiring.Component], *, name: str):
        self._make_block = make_block
        self._name = name
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        block = self._make_block()
        m.submodules[self._name] = block
        ins, outs = [], []
        for _path, member, value in block.signature.flatten(block):
            (ins if member.flow == In else outs).append(value)
        in_bits = Cat(*ins)
        out_bits = Cat(*outs)
        chain = Signal(len(in_bits))
        m.d.sync += chain.eq(Cat(self.sin, chain[:-1]))
        m.d.comb += in_bits.eq(chain)
        capture = Signal(len(out_bits))
        with m.If(self.load):
            m.d.sync += capture.eq(out_bits)
        with m.Else():
            m.d.sync += capture.eq(capture[1:])
        m.d.comb += self.sout.eq(capture[0])
        return m


class HarnessBoard(Elaboratable):
    """A `ShiftHarness` on a board: PLL clock at `target_mhz`; `sin` and `load` from two
    buttons, `sout` on LED 0."""

    def __init__(self, target_mhz, harness: ShiftHarness):
        self.target_mhz = target_mhz
        self.harness = harness

    def elaborate(self, platform):
        m = Module()
        pll_sync_domain(m, platform, self.target_mhz)
        m.submodules.harness = harness = self.harness
        m.submodules.sin = sin = io.Buffer("i", platform.request("button_fire", 0, dir="-"))
        m.submodules.load = load = io.Buffer("i", platform.request("button_fire", 1, dir="-"))
        m.submodules.led0 = led = io.Buffer("o", platform.request("led", 0, dir="-"))
        m.d.comb += [harness.sin.eq(sin.i), harness.load.eq(load.i), led.o.eq(harness.sout)]
        return m
