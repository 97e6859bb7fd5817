"""What the core's prefetcher fetches, and when (`PrefetchPolicy`): combinational.

The port's rules are `rtl.core.prefetch.Prefetcher`'s; this block is the core's decision
(docs/core.md, "Prefetcher"). A prefetch is asked for (`start`, the qword at `addr`):

* while the FSM waits for its load's or store's answer (the prefetch's answer comes after it),
  or for the system port's on an instruction a prefetch may overlap (`waiting`): the qword
  after the window buffer (`fetch_next`), unless the lines have it (`fetch_next_hit`) or it
  starts a page;
* in FETCH_WAIT (a FETCH follows a jump to code not in the lines, whose next instructions
  likely need the next qword soon): the qword after the one being fetched (`qword` + 8),
  unless that is in the next page;
* else when the state issues no access of the FSM's this cycle (DEC_WAIT, the RETIRE of an
  instruction that fell through, `advanced`, or DECODE of an instruction with `no_access`, so
  that an instruction's own load or store does not wait behind the prefetch):
  the qword at `qword` (the one after the buffer), unless it starts a page, the lines have it
  (`qword_hit`) or they are flushed this cycle.

Only within the page of the code being fetched: a prefetch never translates a page the program
may never run (no accessed flag set, no fault to hold).

Ports:
    state           in   the core's FSM state (`CoreState`)
    advanced        in   in RETIRE: the instruction fell through and its successor's window is
                         set up
    no_access       in   in DECODE: the instruction has no memory operand, no stack access and
                         is not for the system port
    waiting         in   a load or store of the FSM's is on its way, or the system port works on
                         an instruction a prefetch may overlap
    fetch_next      in   the qword address after the window buffer (while `waiting`)
    fetch_next_hit  in   the fetched lines have it
    qword           in   the FSM's access address: in FETCH_WAIT the qword being fetched, in
                         the quiet states the one after the buffer
    qword_hit       in   the fetched lines have the qword at `qword`
    flush           in   the fetched lines are dropped this cycle
    start           out  ask for a prefetch (`Prefetcher.start`)
    addr            out  the qword's linear address

Timing: combinational (no register).
"""

from amaranth.hdl import C, Cat, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .core_layouts import CoreState
from .fetch_lines import QWORD_ADDR_WIDTH

__all__ = ["PrefetchPolicy"]

#: Qwords per 4-KiB page, minus one: the qword-in-page bits of a qword address are all ones at a
#: page's last qword.
_PAGE_LAST_QWORD = 0x1FF


class PrefetchPolicy(wiring.Component):
    """See the module docstring."""

    state: In(CoreState)
    advanced: In(1)
    no_access: In(1)
    waiting: In(1)
    fetch_next: In(QWORD_ADDR_WIDTH)
    fetch_next_hit: In(1)
    qword: In(64)
    qword_hit: In(1)
    flush: In(1)

    start: Out(1)
    addr: Out(64)

    def elaborate(self, platform):
        m = Module()
        state = self.state
        quiet = (
            (state == CoreState.DEC_WAIT)
            | ((state == CoreState.RETIRE) & self.advanced)
            | ((state == CoreState.DECODE) & self.no_access))
        with m.If(self.waiting):
            m.d.comb += [self.start.eq((self.fetch_next[:9] != 0) & ~self.fetch_next_hit),
                         self.addr.eq(Cat(C(0, 3), self.fetch_next))]
        with m.Elif(state == CoreState.FETCH_WAIT):
            m.d.comb += [self.start.eq(self.qword[3:12] != _PAGE_LAST_QWORD),
                         self.addr.eq(Cat(C(0, 3), self.qword[3:] + 1))]
        with m.Else():
            m.d.comb += [self.start.eq(quiet & (self.qword[3:12] != 0) & ~self.qword_hit
                                       & ~self.flush),
                         self.addr.eq(self.qword)]
        return m
