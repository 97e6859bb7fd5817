"""The core's accesses on their way through the system: translation, then RAM (`DataPath`).

Ports:
    core_req / core_resp   the core's memory port (`rtl.core.core_layouts`): linear qword
                           accesses in, the data or the fault out, one response per request.
    xlate_req / xlate_resp the translation unit's request port (tag 0, CPL 0).
    ram_req / ram_resp     `SystemMemory`'s data port (host-physical address).
    fetch_flush            the core has dropped every byte it fetched (its window buffer and
                           fetched lines): the code pages below start empty. The core raises it
                           after every answer of its system port and every event, which is
                           where translations change (MOV CR, INVLPG, WRMSR EFER, INVEPT,
                           INVVPID, VM entries and exits), so the last translations below are
                           dropped too.
    fault                  the translation fault of the last access that faulted, for the VM
                           exit the system unit may build from it: the outcome, the linear and
                           guest-physical addresses of the access's first byte (the request is
                           qword aligned, its mask says where the bytes start) and the EPT
                           violation's qualification bits. A prefetch's fault (`prefetch` in the
                           request) is answered but not recorded: the core drops it, and the
                           fault a VM exit reports is that of an access the core made.

The last translation of each kind of access (read, write, fetch) is kept, linear page to
physical page: a request to the same page goes to RAM without the translation unit, in the cycle
it comes. These are TLB entries like the translation unit's (taken from its OK answers, so
accessed and dirty flags are already set and the permissions were checked for that kind of
access), dropped at `fetch_flush`.

Self-modifying code: the physical pages the core fetched from since its last `fetch_flush` are
kept (`code_pages` of them; one more and every write counts as a code write until the flush). A
write to one of them is answered with `code` = 1, and the core then fetches again. The pages
are physical, so a write through another linear address (or by the hypervisor into guest code)
is seen too. Writes of the other masters (the walker's A/D bits, the VMX unit's VMCS regions)
are not tracked: the core drops its fetched bytes after every system instruction anyway.

Timing: one access at a time, except that a read whose page's translation is here may follow a
read still in RAM (two in flight; RAM answers in order), with nothing registered on the way. The core's request is offered
to the translation unit in the cycle it is valid; a successful translation is offered to RAM in
the cycle the translation unit answers; RAM's answer to a read is the core's answer in the cycle
it comes, and a write is answered in the cycle RAM accepts it (RAM keeps the order of its
accesses, so every later read sees it). With the translation unit's TLB hit (2 cycles) and
`SystemMemory`'s pipeline (2 cycles), a read costs 4 cycles from request to response and a write
2; with the page's translation here, a read costs 2 cycles and a write 1. A translation fault is
answered in the cycle the translation unit reports it.
"""

from amaranth.hdl import C, Cat, Module, Mux, Signal
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from ..arch.paging import Access, Outcome
from ..core.core_layouts import MEM_REQ_LAYOUT, MEM_RESP_LAYOUT
from ..translation.layouts import request_layout, response_layout
from .memory import DATA_REQ_LAYOUT, DATA_RESP_LAYOUT

__all__ = ["DataPath", "DataStep", "TRANSLATION_FAULT_LAYOUT"]


def TRANSLATION_FAULT_LAYOUT(maxphyaddr):  # noqa: N802
    return data.StructLayout({"outcome": Outcome, "gla": 64, "gpa": 64, "qualification": 64})


class DataStep(enum.Enum, shape=2):
    """Where the access in progress is (a waveform names it)."""
    IDLE = 0        # the core's next request goes to the translation unit, or straight to RAM
    XLATE = 1       # waiting for the translation; an OK one goes on to RAM
    WROTE = 3       # a write RAM took without a translation: answer it


class DataPath(wiring.Component):
    """See the module docstring."""

    def __init__(self, *, maxphyaddr, code_pages=4):
        assert code_pages >= 1
        self.maxphyaddr = maxphyaddr
        self.code_pages = code_pages
        super().__init__({
            "core_req": In(stream.Signature(MEM_REQ_LAYOUT)),
            "core_resp": Out(stream.Signature(MEM_RESP_LAYOUT)),
            "xlate_req": Out(stream.Signature(request_layout(1))),
            "xlate_resp": In(stream.Signature(response_layout(1, maxphyaddr))),
            "ram_req": Out(stream.Signature(DATA_REQ_LAYOUT(maxphyaddr))),
            "ram_resp": In(stream.Signature(DATA_RESP_LAYOUT)),
            "fetch_flush": In(1),
            "fault": Out(TRANSLATION_FAULT_LAYOUT(maxphyaddr)),
            "step": Out(DataStep),
        })

    def elaborate(self, platform):
        m = Module()
        M = self.maxphyaddr
        step = Signal(DataStep)
        kind = Signal(Access)
        lpage = Signal(52)              # the linear page of the access in progress
        prefetch = Signal()             # ... is the prefetcher's (its fault is not recorded)
        mask = Signal(8)
        wdata = Signal(64)
        wrote_code = Signal()           # WROTE: the answer's `code`
        inflight = Signal(2)            # reads sent to RAM and not answered yet (at most 2)
        m.d.comb += self.step.eq(step)

        creq, cresp = self.core_req, self.core_resp
        t = self.xlate_resp.payload
        first_byte = Signal(3)
        for k in reversed(range(8)):
            with m.If(mask[k]):
                m.d.comb += first_byte.eq(k)
        m.d.comb += [self.xlate_req.payload.gla.eq(creq.payload.addr),
                     self.xlate_req.payload.access.eq(creq.payload.kind)]

        # --- the last translation of each kind of access ---------------------------------------
        kinds = (Access.READ, Access.WRITE, Access.FETCH)
        last_valid = Signal(len(kinds))
        last_lpage = [Signal(52, name=f"last_lpage_{k.name.lower()}") for k in kinds]
        last_ppage = [Signal(M - 12, name=f"last_ppage_{k.name.lower()}") for k in kinds]
        hit = Signal()                  # the core's request has its page's translation here
        hit_ppage = Signal(M - 12)
        for i, k in enumerate(kinds):
            with m.If((creq.payload.kind == k) & last_valid[i]
                      & (last_lpage[i] == creq.payload.addr[12:])):
                m.d.comb += [hit.eq(1), hit_ppage.eq(last_ppage[i])]
        learn = Signal()                # an OK translation of the access in progress
        ram_read = Signal()             # a read goes to RAM this cycle
        with m.If(self.fetch_flush):
            m.d.sync += last_valid.eq(0)
        with m.Elif(learn):
            for i, k in enumerate(kinds):
                with m.If(kind == k):
                    m.d.sync += [last_valid[i].eq(1), last_lpage[i].eq(lpage),
                                 last_ppage[i].eq(t.hpa[12:])]

        # --- the access to RAM: straight from the request on a hit, else after translation --------
        direct = step == DataStep.IDLE
        ppage = Signal(M - 12)
        m.d.comb += ppage.eq(Mux(direct, hit_ppage, t.hpa[12:]))
        rp = self.ram_req.payload
        m.d.comb += [
            rp.addr.eq(Cat(C(0, 3), Mux(direct, creq.payload.addr[3:12], t.hpa[3:12]), ppage)),
            rp.write.eq(Mux(direct, creq.payload.kind == Access.WRITE, kind == Access.WRITE)),
            rp.mask.eq(Mux(direct, creq.payload.mask, mask)),
            rp.data.eq(Mux(direct, creq.payload.data, wdata)),
        ]

        # --- the physical pages of fetched code -------------------------------------------------
        n = self.code_pages
        pages = [Signal(M - 12, name=f"code_page{i}") for i in range(n)]
        page_valid = Signal(n)
        overflow = Signal()
        present = Signal(n)
        m.d.comb += present.eq(Cat(page_valid[i] & (pages[i] == ppage) for i in range(n)))
        code_hit = Signal()
        m.d.comb += code_hit.eq(overflow | present.any())
        record_code = Signal()          # a fetch goes to RAM: note its page
        free = Signal(range(n))
        for i in reversed(range(n)):
            with m.If(~page_valid[i]):
                m.d.comb += free.eq(i)
        with m.If(self.fetch_flush):
            m.d.sync += [page_valid.eq(0), overflow.eq(0)]
        with m.Elif(record_code & ~present.any()):
            with m.If(page_valid.all()):
                m.d.sync += overflow.eq(1)
            with m.Else():
                with m.Switch(free):
                    for i in range(n):
                        with m.Case(i):
                            m.d.sync += [pages[i].eq(ppage), page_valid[i].eq(1)]

        with m.Switch(step):
            with m.Case(DataStep.IDLE):
                c_write = creq.payload.kind == Access.WRITE
                with m.If(hit & ((inflight == 0) | (~c_write & (inflight == 1)))):
                    # Behind a read still in RAM only another read (answers stay in order).
                    m.d.comb += [self.ram_req.valid.eq(creq.valid),
                                 creq.ready.eq(self.ram_req.ready)]
                    with m.If(creq.valid & self.ram_req.ready):
                        m.d.comb += [record_code.eq(creq.payload.kind == Access.FETCH),
                                     ram_read.eq(~c_write)]
                        with m.If(c_write):
                            m.d.sync += [wrote_code.eq(code_hit), step.eq(DataStep.WROTE)]
                with m.Elif(inflight != 0):
                    pass
                with m.Else():
                    m.d.comb += [self.xlate_req.valid.eq(creq.valid),
                                 creq.ready.eq(self.xlate_req.ready)]
                    with m.If(creq.valid & self.xlate_req.ready):
                        m.d.sync += [kind.eq(creq.payload.kind), lpage.eq(creq.payload.addr[12:]),
                                     prefetch.eq(creq.payload.prefetch),
                                     mask.eq(creq.payload.mask), wdata.eq(creq.payload.data),
                                     step.eq(DataStep.XLATE)]
            with m.Case(DataStep.XLATE):
                ok = t.outcome == Outcome.OK
                with m.If(ok & (kind == Access.WRITE)):
                    # Answered as RAM takes it.
                    m.d.comb += [self.ram_req.valid.eq(self.xlate_resp.valid & cresp.ready),
                                 cresp.valid.eq(self.xlate_resp.valid & self.ram_req.ready),
                                 cresp.payload.outcome.eq(Outcome.OK),
                                 cresp.payload.code.eq(code_hit),
                                 self.xlate_resp.ready.eq(self.ram_req.ready & cresp.ready)]
                    with m.If(self.xlate_resp.valid & self.ram_req.ready & cresp.ready):
                        m.d.comb += learn.eq(1)
                        m.d.sync += step.eq(DataStep.IDLE)
                with m.Elif(ok):
                    m.d.comb += [self.ram_req.valid.eq(self.xlate_resp.valid),
                                 self.xlate_resp.ready.eq(self.ram_req.ready)]
                    with m.If(self.xlate_resp.valid & self.ram_req.ready):
                        m.d.comb += [learn.eq(1), record_code.eq(kind == Access.FETCH),
                                     ram_read.eq(1)]
                        m.d.sync += step.eq(DataStep.IDLE)
                with m.Else():
                    m.d.comb += [cresp.valid.eq(self.xlate_resp.valid),
                                 cresp.payload.outcome.eq(t.outcome),
                                 cresp.payload.error_code.eq(t.error_code),
                                 self.xlate_resp.ready.eq(cresp.ready)]
                    with m.If(self.xlate_resp.valid & cresp.ready):
                        m.d.sync += step.eq(DataStep.IDLE)
                        with m.If(~prefetch):
                            m.d.sync += [self.fault.outcome.eq(t.outcome),
                                         self.fault.gla.eq(Cat(first_byte, t.gla[3:])),
                                         self.fault.gpa.eq(Cat(first_byte, t.gpa[3:])),
                                         self.fault.qualification.eq(t.qualification)]
            with m.Case(DataStep.WROTE):
                m.d.comb += [cresp.valid.eq(1), cresp.payload.outcome.eq(Outcome.OK),
                             cresp.payload.code.eq(wrote_code)]
                with m.If(cresp.ready):
                    m.d.sync += step.eq(DataStep.IDLE)

        # RAM's answers to the reads, in order, straight to the core (only reads are in flight
        # while a write or a translation is answered, so the answers never meet).
        ram_answer = Signal()
        with m.If(inflight != 0):
            m.d.comb += [cresp.valid.eq(self.ram_resp.valid),
                         cresp.payload.data.eq(self.ram_resp.payload.data),
                         cresp.payload.outcome.eq(Outcome.OK),
                         self.ram_resp.ready.eq(cresp.ready),
                         ram_answer.eq(self.ram_resp.valid & cresp.ready)]
        with m.If(ram_read & ~ram_answer):
            m.d.sync += inflight.eq(inflight + 1)
        with m.Elif(ram_answer & ~ram_read):
            m.d.sync += inflight.eq(inflight - 1)
        return m
