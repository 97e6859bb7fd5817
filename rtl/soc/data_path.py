"""The core's accesses on their way through the system: translation, then RAM (`DataPath`).

Ports:
    core_req / core_resp   the core's memory port (`rtl.core.core_layouts`): linear qword
                           accesses in, the data or the fault out, one response per request.
    xlate_req / xlate_resp the translation unit's request port (tag 0, CPL 0).
    ram_req / ram_resp     `SystemMemory`'s data port (host-physical address).
    fault                  the translation fault of the last access that faulted, for the VM
                           exit the system unit may build from it: the outcome, the linear and
                           guest-physical addresses of the access's first byte (the request is
                           qword aligned, its mask says where the bytes start) and the EPT
                           violation's qualification bits.

Timing: one access at a time, with nothing registered on the way. The core's request is offered
to the translation unit in the cycle it is valid; a successful translation is offered to RAM in
the cycle the translation unit answers, and RAM's answer is the core's answer in the cycle it
comes. With the translation unit's TLB hit (2 cycles) and `SystemMemory`'s pipeline (2 cycles),
a read costs 4 cycles from request to response. A translation fault is answered in the cycle
the translation unit reports it.
"""

from amaranth.hdl import Cat, Module, Signal
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
    IDLE = 0        # the core's next request goes to the translation unit
    XLATE = 1       # waiting for the translation; an OK one goes on to RAM
    MEM = 2         # waiting for RAM's answer


class DataPath(wiring.Component):
    """See the module docstring."""

    def __init__(self, *, maxphyaddr):
        self.maxphyaddr = maxphyaddr
        super().__init__({
            "core_req": In(stream.Signature(MEM_REQ_LAYOUT)),
            "core_resp": Out(stream.Signature(MEM_RESP_LAYOUT)),
            "xlate_req": Out(stream.Signature(request_layout(1))),
            "xlate_resp": In(stream.Signature(response_layout(1, maxphyaddr))),
            "ram_req": Out(stream.Signature(DATA_REQ_LAYOUT(maxphyaddr))),
            "ram_resp": In(stream.Signature(DATA_RESP_LAYOUT)),
            "fault": Out(TRANSLATION_FAULT_LAYOUT(maxphyaddr)),
            "step": Out(DataStep),
        })

    def elaborate(self, platform):
        m = Module()
        step = Signal(DataStep)
        write = Signal()
        mask = Signal(8)
        wdata = Signal(64)
        m.d.comb += self.step.eq(step)

        creq, cresp = self.core_req, self.core_resp
        t = self.xlate_resp.payload
        first_byte = Signal(3)
        for k in reversed(range(8)):
            with m.If(mask[k]):
                m.d.comb += first_byte.eq(k)

        m.d.comb += [self.xlate_req.payload.gla.eq(creq.payload.addr),
                     self.xlate_req.payload.access.eq(creq.payload.kind),
                     self.ram_req.payload.addr.eq(Cat(0, 0, 0, t.hpa[3:])),
                     self.ram_req.payload.write.eq(write), self.ram_req.payload.mask.eq(mask),
                     self.ram_req.payload.data.eq(wdata)]

        with m.Switch(step):
            with m.Case(DataStep.IDLE):
                m.d.comb += [self.xlate_req.valid.eq(creq.valid),
                             creq.ready.eq(self.xlate_req.ready)]
                with m.If(creq.valid & self.xlate_req.ready):
                    m.d.sync += [write.eq(creq.payload.kind == Access.WRITE),
                                 mask.eq(creq.payload.mask), wdata.eq(creq.payload.data),
                                 step.eq(DataStep.XLATE)]
            with m.Case(DataStep.XLATE):
                ok = t.outcome == Outcome.OK
                with m.If(ok):
                    m.d.comb += [self.ram_req.valid.eq(self.xlate_resp.valid),
                                 self.xlate_resp.ready.eq(self.ram_req.ready)]
                    with m.If(self.xlate_resp.valid & self.ram_req.ready):
                        m.d.sync += step.eq(DataStep.MEM)
                with m.Else():
                    m.d.comb += [cresp.valid.eq(self.xlate_resp.valid),
                                 cresp.payload.outcome.eq(t.outcome),
                                 cresp.payload.error_code.eq(t.error_code),
                                 self.xlate_resp.ready.eq(cresp.ready)]
                    with m.If(self.xlate_resp.valid & cresp.ready):
                        m.d.sync += [self.fault.outcome.eq(t.outcome),
                                     self.fault.gla.eq(Cat(first_byte, t.gla[3:])),
                                     self.fault.gpa.eq(Cat(first_byte, t.gpa[3:])),
                                     self.fault.qualification.eq(t.qualification),
                                     step.eq(DataStep.IDLE)]
            with m.Case(DataStep.MEM):
                m.d.comb += [cresp.valid.eq(self.ram_resp.valid),
                             cresp.payload.data.eq(self.ram_resp.payload.data),
                             cresp.payload.outcome.eq(Outcome.OK),
                             self.ram_resp.ready.eq(cresp.ready)]
                with m.If(self.ram_resp.valid & cresp.ready):
                    m.d.sync += step.eq(DataStep.IDLE)
        return m
