"""The instruction window over the core's fetch buffer (`WindowSelect`): combinational.

Ports:
    buf         in   the buffer: 3 qwords of code, the first at the window's qword
    nq          in   how many of them are valid (0-3)
    woff        in   the window's start in the first qword (RIP[2:0])
    length      in   the length of the instruction at the window's start
    ahead       in   give the decoder the next instruction's window (after `length`)
    window      out  the 15 bytes from the window's start (what the instruction retires with)
    dec_window  out  what the decoder gets: `window`, or with `ahead` the 15 bytes from
                     `woff` + `length` (bytes beyond the buffer are 0)
    next_sum    out  `woff` + `length`: bits 4:3 the qwords the next instruction's window is
                     ahead, bits 2:0 its start in its qword
    fetched     out  the window's bytes that are real: 8 * `nq` - `woff` (at least 0)

Timing: combinational. The sums are tables of constants (Verilator's -Wall wants both operands of
an addition at the expression's width).
"""

from amaranth.hdl import C, Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..mux import binary_mux
from .layouts import MAX_INSN_BYTES

__all__ = ["WindowSelect"]

WINDOW_BITS = 8 * MAX_INSN_BYTES


class WindowSelect(wiring.Component):
    """See the module docstring."""

    buf: In(3 * 64)
    nq: In(2)
    woff: In(3)
    length: In(4)
    ahead: In(1)
    window: Out(WINDOW_BITS)
    dec_window: Out(WINDOW_BITS)
    next_sum: Out(5)
    fetched: Out(5)

    def elaborate(self, platform):
        m = Module()
        buf = self.buf
        m.d.comb += self.window.eq(binary_mux(self.woff, [buf[8 * o:8 * o + WINDOW_BITS]
                                                          for o in range(8)]))
        with m.Switch(Cat(self.woff, self.length)):
            for o in range(8):
                for k in range(16):
                    with m.Case(o + 8 * k):
                        m.d.comb += self.next_sum.eq(o + k)
        next_buf = Signal(8 * (7 + MAX_INSN_BYTES))     # what a window can start in
        m.d.comb += next_buf.eq(binary_mux(
            self.next_sum[3:5],
            [*(Cat(buf[64 * k:], C(0, 64 * k))[:len(next_buf)] for k in range(3)), C(0)]))
        next_window = Signal(WINDOW_BITS)
        m.d.comb += next_window.eq(binary_mux(self.next_sum[:3],
                                              [next_buf[8 * o:8 * o + WINDOW_BITS]
                                               for o in range(8)]))
        m.d.comb += self.dec_window.eq(Mux(self.ahead, next_window, self.window))
        with m.Switch(Cat(self.woff, self.nq)):
            for k in range(4):
                for o in range(8):
                    with m.Case(o + 8 * k):
                        m.d.comb += self.fetched.eq(max(8 * k - o, 0))
        return m
