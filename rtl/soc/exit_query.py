"""The exit-decision query of a system request in VMX non-root operation.

The system unit asks the exit-decision block (`rtl.vmx.exit_decisions`) whether a request
causes a VM exit, with a query (`QUERY_LAYOUT`) that names the SDM's rule and its operands:

* a fault the translation unit reported as an EPT violation or misconfiguration (the core's
  exception names the VMX unit): EPT, with the fault's outcome, qualification, GPA and GLA;
* any other fault: EXCEPTION, a hardware exception with the core's vector and error code and, for
  a #PF, the faulting linear address as the qualification;
* CPUID, HLT, RDTSC: INSTRUCTION with that exit reason; INVLPG: INSTRUCTION with the effective
  address as the qualification;
* RDMSR, WRMSR: MSR with ECX and the direction;
* MOV from / to CR: CR_ACCESS with the control register (``reg``), the general-purpose register
  (``rm``), the value written (MOV to CR) and the register's current value (MOV from CR);
* IN, OUT (immediate or DX port): IO with the port, the size in bytes, the direction and whether
  the port was an immediate (no string or REP forms: the core has none).

Ports
-----
``request`` (in, `SYS_REQ_LAYOUT`), ``exception`` (in, `EXCEPTION_LAYOUT`): the request and the
core's exception. ``fault_outcome``, ``fault_qualification``, ``fault_gpa``, ``fault_gla`` (in):
the last translation fault of a core access. ``msr`` (in): ECX. ``rm_value`` (in): the register
``rm`` names. ``cr_value`` (in): the control register ``reg`` names. ``port``, ``io_bytes`` (in):
an IN/OUT's port and size in bytes. ``query`` (out, `QUERY_LAYOUT`).

Timing
------
Combinational.
"""

from amaranth.hdl import Module, Mux
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..arch.paging import Outcome
from ..arch.vmx import ExitReason, InterruptionType
from ..core.core_layouts import EXCEPTION_LAYOUT, SYS_REQ_LAYOUT, VECTOR_PF, NeedsUnit, SysKind
from ..core.layouts import InsnClass, is_one_of
from ..vmx.exit_decisions import QUERY_LAYOUT, CrAccessType, ExitQueryKind

__all__ = ["ExitQuery"]


class ExitQuery(wiring.Component):
    request: In(SYS_REQ_LAYOUT)
    exception: In(EXCEPTION_LAYOUT)
    fault_outcome: In(Outcome)
    fault_qualification: In(64)
    fault_gpa: In(64)
    fault_gla: In(64)
    msr: In(32)
    rm_value: In(64)
    cr_value: In(64)
    port: In(16)
    io_bytes: In(3)
    query: Out(QUERY_LAYOUT)

    def elaborate(self, platform):
        m = Module()
        r, exc, qc = self.request, self.exception, self.query
        cls = r.cls
        with m.Switch(r.kind):
            with m.Case(SysKind.FAULT):
                with m.If(exc.unit == NeedsUnit.VMX):
                    m.d.comb += [qc.kind.eq(ExitQueryKind.EPT),
                                 qc.op.ept.outcome.eq(self.fault_outcome),
                                 qc.op.ept.qualification.eq(self.fault_qualification),
                                 qc.op.ept.gpa.eq(self.fault_gpa),
                                 qc.op.ept.gla.eq(self.fault_gla)]
                with m.Else():
                    m.d.comb += [qc.kind.eq(ExitQueryKind.EXCEPTION),
                                 qc.op.exception.vector.eq(exc.vector),
                                 qc.op.exception.type.eq(InterruptionType.HARDWARE_EXCEPTION),
                                 qc.op.exception.has_error_code.eq(exc.has_error_code),
                                 qc.op.exception.error_code.eq(exc.error_code),
                                 qc.op.exception.qualification.eq(
                                     Mux(exc.vector == VECTOR_PF, exc.addr, 0))]
            with m.Default():
                qi = qc.op.instruction
                with m.Switch(cls):
                    with m.Case(InsnClass.CPUID):
                        m.d.comb += [qc.kind.eq(ExitQueryKind.INSTRUCTION),
                                     qi.reason.eq(ExitReason.CPUID)]
                    with m.Case(InsnClass.HLT):
                        m.d.comb += [qc.kind.eq(ExitQueryKind.INSTRUCTION),
                                     qi.reason.eq(ExitReason.HLT)]
                    with m.Case(InsnClass.RDTSC):
                        m.d.comb += [qc.kind.eq(ExitQueryKind.INSTRUCTION),
                                     qi.reason.eq(ExitReason.RDTSC)]
                    with m.Case(InsnClass.INVLPG):
                        m.d.comb += [qc.kind.eq(ExitQueryKind.INSTRUCTION),
                                     qi.reason.eq(ExitReason.INVLPG),
                                     qi.qualification.eq(r.ea)]
                    with m.Case(InsnClass.RDMSR, InsnClass.WRMSR):
                        m.d.comb += [qc.kind.eq(ExitQueryKind.MSR), qc.op.msr.msr.eq(self.msr),
                                     qc.op.msr.write.eq(cls == InsnClass.WRMSR)]
                    with m.Case(InsnClass.MOV_FROM_CR, InsnClass.MOV_TO_CR):
                        to = cls == InsnClass.MOV_TO_CR
                        m.d.comb += [qc.kind.eq(ExitQueryKind.CR_ACCESS),
                                     qc.op.cr.access.eq(Mux(to, CrAccessType.MOV_TO_CR,
                                                            CrAccessType.MOV_FROM_CR)),
                                     qc.op.cr.cr.eq(r.reg), qc.op.cr.gpr.eq(r.rm),
                                     qc.op.cr.lmsw_memory.eq(0),
                                     qc.op.cr.value.eq(self.rm_value),
                                     qc.op.cr.actual.eq(self.cr_value)]
                    with m.Default():       # IN / OUT
                        m.d.comb += [qc.kind.eq(ExitQueryKind.IO), qc.op.io.port.eq(self.port),
                                     qc.op.io.size.eq(self.io_bytes),
                                     qc.op.io.is_in.eq(is_one_of(cls, InsnClass.IN_IMM,
                                                                InsnClass.IN_DX)),
                                     qc.op.io.string.eq(0), qc.op.io.rep.eq(0),
                                     qc.op.io.immediate.eq(is_one_of(cls, InsnClass.IN_IMM,
                                                                     InsnClass.OUT_IMM))]
        return m
