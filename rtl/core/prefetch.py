"""The core's memory port, shared by its FSM and a one-qword code prefetcher (`Prefetcher`).

The core asks for a prefetch (`start`, with the linear qword address `addr`) when it has nothing
else for the port to do and the qword after its window buffer is not in its fetched lines; the
answer goes into the lines (`fill_*`). What to prefetch and when is the core's decision
(docs/core.md, "Prefetcher"); this block keeps the port's rules:

* a prefetch is offered on `mem_req` from the cycle after `start` until it is taken, unchanged,
  and the FSM's request waits meanwhile (its `ready` is low), so the prefetch is ahead of it;
* a prefetch may start while requests of the FSM wait for their answers: the memory answers in
  order, so the answers of the FSM's requests taken before the prefetch go to the FSM, then the
  prefetch's answer comes; the FSM's request may be taken behind the prefetch unless
  `fetch_waits` (a FETCH, which most likely wants the same qword: it finds it in the lines
  afterwards);
* `flush` (the lines are dropped) discards the answer of a prefetch offered or in flight, and a
  prefetch whose answer is a fault is dropped (a FETCH of the same qword raises it if the code
  needs the bytes);
* `busy` while a prefetch is offered or in flight: the core waits for it before it offers a
  system request, and counts it in `idle`.

Ports:
    fsm_req / fsm_resp  the FSM's requests and answers (`rtl.core.core_layouts`)
    mem_req / mem_resp  the core's memory port (`prefetch` marks the prefetcher's requests)
    start, addr         prefetch the qword at `addr` (ignored while `busy` and while the FSM
                        offers a request)
    fetch_waits         the FSM's request is a FETCH
    flush               the fetched lines are dropped this cycle
    busy                a prefetch is offered or in flight
    fill_en, fill_addr, fill_data   write the prefetched qword into the lines (qword address)

Timing: `start` registers the prefetch (offered from the next cycle); the answer's fill is
combinational from `mem_resp`.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..arch.paging import Access, Outcome
from .core_layouts import FSM_REQ_LAYOUT, MEM_REQ_LAYOUT, MEM_RESP_LAYOUT
from .fetch_lines import QWORD_ADDR_WIDTH

__all__ = ["Prefetcher"]


class Prefetcher(wiring.Component):
    """See the module docstring."""

    fsm_req: In(stream.Signature(FSM_REQ_LAYOUT))
    fsm_resp: Out(stream.Signature(MEM_RESP_LAYOUT))
    mem_req: Out(stream.Signature(MEM_REQ_LAYOUT))
    mem_resp: In(stream.Signature(MEM_RESP_LAYOUT))
    start: In(1)
    addr: In(64)
    fetch_waits: In(1)
    flush: In(1)
    busy: Out(1)
    fill_en: Out(1)
    fill_addr: Out(QWORD_ADDR_WIDTH)
    fill_data: Out(64)

    def elaborate(self, platform):
        m = Module()
        offered = Signal()              # the prefetch is on `mem_req`
        pending = Signal()              # ... was taken: its answer comes after `ahead` others
        ahead = Signal(2)               # answers of the FSM's still due before the prefetch's
        discard = Signal()              # the lines were flushed since it started
        addr = Signal(64)
        m.d.comb += self.busy.eq(offered | pending)

        # Not while the FSM offers a request (what the port offers must not change until it is
        # taken). The FSM's requests waiting for answers are counted: their answers come first.
        fsm_waiting = Signal(2)
        fsm_sent = self.fsm_req.valid & self.fsm_req.ready
        fsm_answered = self.fsm_resp.valid & self.fsm_resp.ready
        with m.If(fsm_sent & ~fsm_answered):
            m.d.sync += fsm_waiting.eq(fsm_waiting + 1)
        with m.Elif(fsm_answered & ~fsm_sent):
            m.d.sync += fsm_waiting.eq(fsm_waiting - 1)
        with m.If(self.start & ~self.busy & ~self.fsm_req.valid):
            m.d.sync += [offered.eq(1), addr.eq(self.addr), discard.eq(0)]

        port, port_resp = self.mem_req, self.mem_resp
        req, resp = self.fsm_req, self.fsm_resp
        with m.If(offered):
            m.d.comb += [port.valid.eq(1), port.payload.addr.eq(addr),
                         port.payload.kind.eq(Access.FETCH), port.payload.mask.eq(0xFF)]
            with m.If(port.ready):
                m.d.sync += [offered.eq(0), pending.eq(1), ahead.eq(fsm_waiting - fsm_answered)]
        with m.Else():
            waits = pending & self.fetch_waits
            m.d.comb += [port.valid.eq(req.valid & ~waits),
                         *(getattr(port.payload, f).eq(getattr(req.payload, f))
                           for f in ("addr", "kind", "mask", "data")),
                         req.ready.eq(port.ready & ~waits)]
        m.d.comb += port.payload.prefetch.eq(offered)

        with m.If(pending & (ahead == 0)):
            m.d.comb += port_resp.ready.eq(1)
            with m.If(port_resp.valid):
                m.d.sync += pending.eq(0)
                m.d.comb += [self.fill_en.eq((port_resp.payload.outcome == Outcome.OK)
                                             & ~discard & ~self.flush),
                             self.fill_addr.eq(addr[3:]),
                             self.fill_data.eq(port_resp.payload.data)]
        with m.Else():
            m.d.comb += [resp.valid.eq(port_resp.valid), resp.payload.eq(port_resp.payload),
                         port_resp.ready.eq(resp.ready)]
            with m.If(pending & fsm_answered):
                m.d.sync += ahead.eq(ahead - 1)
        with m.If(self.flush):
            m.d.sync += discard.eq(1)
        return m
