"""The core's last fetched qwords, by linear address (`FetchLines`).

A fetch whose qword is here needs no memory access: a loop's branch back to code fetched a few
instructions ago takes its bytes from here. The lines hold fetches that succeeded under the
current translation context and memory contents: the core flushes them whenever either may have
changed (a store the memory answers with `code`, i.e. into a page code was fetched from; any
answer of the system port that retires; an event; `load`), which keeps a fetch from here
exactly what a fetch from memory would return.

Ports (`lookup_*` are arrays of `ports` independent lookups):
    lookup_addr   in   qword address (linear address bits 63:3)
    lookup_hit    out  a valid line holds `lookup_addr`
    lookup_data   out  its qword (meaningful with `lookup_hit`)
    fill_en       in   write `fill_data` as the line of `fill_addr`: the line that already holds
                       it, else the next line in round-robin order
    fill_addr     in
    fill_data     in
    flush         in   invalidate every line (a fill in the same cycle is dropped)

Timing: the lookup is combinational from registers (compare `lines` tags, select); a fill or a
flush takes effect at the next clock edge.
"""

import functools
import operator

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["FetchLines", "QWORD_ADDR_WIDTH"]

#: Width of a qword's linear address (bits 63:3).
QWORD_ADDR_WIDTH = 61


class FetchLines(wiring.Component):
    """See the module docstring. Parameters: `lines`, `ports` (lookups; at least 1 each)."""

    def __init__(self, *, lines=4, ports=1):
        assert lines >= 1 and ports >= 1
        self.lines = lines
        self.ports = ports
        super().__init__({
            "lookup_addr": In(data.ArrayLayout(QWORD_ADDR_WIDTH, ports)),
            "lookup_hit": Out(ports),
            "lookup_data": Out(data.ArrayLayout(64, ports)),
            "fill_en": In(1),
            "fill_addr": In(QWORD_ADDR_WIDTH),
            "fill_data": In(64),
            "flush": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        n = self.lines
        valid = Signal(n)
        tags = [Signal(QWORD_ADDR_WIDTH, name=f"tag{i}") for i in range(n)]
        words = [Signal(64, name=f"word{i}") for i in range(n)]
        nxt = Signal(range(n))          # round-robin victim

        # A qword is in at most one line (a fill of a qword already held rewrites that line),
        # so the hits of a lookup are one-hot: an AND-OR of the lines' words, not a priority
        # chain.
        for p in range(self.ports):
            hits = Signal(n, name=f"hits{p}")
            m.d.comb += [hits[i].eq(valid[i] & (tags[i] == self.lookup_addr[p]))
                         for i in range(n)]
            m.d.comb += [self.lookup_hit[p].eq(hits.any()),
                         self.lookup_data[p].eq(
                             functools.reduce(operator.or_, (Mux(hits[i], words[i], 0)
                                                             for i in range(n))))]

        present = Signal(n)
        for i in range(n):
            m.d.comb += present[i].eq(valid[i] & (tags[i] == self.fill_addr))
        with m.If(self.flush):
            m.d.sync += valid.eq(0)
        with m.Elif(self.fill_en):
            with m.If(present.any()):
                for i in range(n):
                    with m.If(present[i]):
                        m.d.sync += words[i].eq(self.fill_data)
            with m.Else():
                with m.Switch(nxt):
                    for i in range(n):
                        with m.Case(i):
                            m.d.sync += [tags[i].eq(self.fill_addr),
                                         words[i].eq(self.fill_data), valid[i].eq(1)]
                m.d.sync += nxt.eq(Mux(nxt == n - 1, 0, nxt + 1))
        return m
