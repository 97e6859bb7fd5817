"""The values the system unit's simple instructions produce (`SystemValues`): CPUID's leaves,
the time-stamp counter as the guest sees it, RDMSR's value, MOV from CR's register, the I/O port
and operand of IN/OUT, WRMSR's value.

Combinational, from the request's fields and the core's registers; `SystemUnit` decides what to
do with them (answer, VM exit, fault).

* CPUID: the leaf in EAX picks a row of `rtl.arch.system.CPUID_LEAVES`; any leaf not in the
  table gets the highest basic leaf's row (the SDM's answer to a leaf above the maximum basic
  or extended leaf).
* RDTSC / RDMSR of IA32_TIME_STAMP_COUNTER: the counter, plus the TSC offset in VMX non-root
  operation when the "use TSC offsetting" control is 1 (SDM Vol. 3C 26.3).
* RDMSR: the TSC, IA32_FEATURE_CONTROL (its reset value), IA32_EFER (the core's) here; any other
  number is the VMX unit's MSR port (`msr_valid`, `msr_value`: the VMX capability MSRs).
* MOV from CR: CR0, CR3 or CR4 by ModRM.reg (the decoder accepts only those three).
* IN/OUT: the port (imm8 or DX), the operand's bytes (1, 2, 4) and size (a 64-bit size is
  32: IN/OUT have no 64-bit form), OUT's value (AL, AX or EAX).

Ports:
    cls, opsize, reg, imm8  in   the request's class, operand size, ModRM.reg, immediate's
                                 low byte (IN/OUT imm8)
    eax, ecx, edx           in   the core's registers' low halves
    cr0, cr3, cr4, efer     in   the core's control registers and EFER
    tsc                     in   the time-stamp counter
    non_root                in   VMX non-root operation
    tsc_offsetting, tsc_offset  in   the current VMCS's "use TSC offsetting" control and TSC
                                     offset
    msr_valid, msr_value    in   the VMX unit's MSR port's answer for `msr_addr`
    cpuid_eax .. cpuid_edx  out
    tsc_value               out  the counter as the executing software reads it
    msr_addr                out  ECX
    msr_known, msr_value_out    out  RDMSR's MSR exists here / its value
    wrmsr_value             out  EDX:EAX
    cr_value                out  MOV from CR's register
    port, io_bytes, io_size, out_value  out  IN/OUT's port, bytes, operand size, OUT's value

Timing: combinational.
"""

from amaranth.hdl import Cat, Module, Mux
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..arch.system import CPUID_LEAVES, CPUID_MAX_LEAF, FEATURE_CONTROL_RESET, MSR_EFER, MSR_TSC
from ..arch.vmx import IA32_FEATURE_CONTROL
from ..core.layouts import InsnClass, OpSize, is_one_of

__all__ = ["SystemValues"]


class SystemValues(wiring.Component):
    """See the module docstring."""

    cls: In(InsnClass)
    opsize: In(OpSize)
    reg: In(4)
    imm8: In(8)
    eax: In(32)
    ecx: In(32)
    edx: In(32)
    cr0: In(64)
    cr3: In(64)
    cr4: In(64)
    efer: In(64)
    tsc: In(64)
    non_root: In(1)
    tsc_offsetting: In(1)
    tsc_offset: In(64)
    msr_valid: In(1)
    msr_value: In(64)

    cpuid_eax: Out(32)
    cpuid_ebx: Out(32)
    cpuid_ecx: Out(32)
    cpuid_edx: Out(32)
    tsc_value: Out(64)
    msr_addr: Out(32)
    msr_known: Out(1)
    msr_value_out: Out(64)
    wrmsr_value: Out(64)
    cr_value: Out(64)
    port: Out(16)
    io_bytes: Out(3)
    io_size: Out(OpSize)
    out_value: Out(32)

    def elaborate(self, platform):
        m = Module()
        cpuid = [self.cpuid_eax, self.cpuid_ebx, self.cpuid_ecx, self.cpuid_edx]
        with m.Switch(self.eax):
            for leaf, regs in CPUID_LEAVES.items():
                with m.Case(leaf):
                    m.d.comb += [s.eq(v) for s, v in zip(cpuid, regs, strict=True)]
            with m.Default():
                m.d.comb += [s.eq(v) for s, v in zip(cpuid, CPUID_LEAVES[CPUID_MAX_LEAF],
                                                     strict=True)]

        offsetting = self.non_root & self.tsc_offsetting
        m.d.comb += self.tsc_value.eq(self.tsc + Mux(offsetting, self.tsc_offset, 0))

        ecx = self.ecx
        m.d.comb += self.msr_addr.eq(ecx)
        with m.Switch(ecx):
            with m.Case(MSR_TSC):
                m.d.comb += [self.msr_known.eq(1), self.msr_value_out.eq(self.tsc_value)]
            with m.Case(IA32_FEATURE_CONTROL):
                m.d.comb += [self.msr_known.eq(1),
                             self.msr_value_out.eq(FEATURE_CONTROL_RESET)]
            with m.Case(MSR_EFER):
                m.d.comb += [self.msr_known.eq(1), self.msr_value_out.eq(self.efer)]
            with m.Default():
                m.d.comb += [self.msr_known.eq(self.msr_valid),
                             self.msr_value_out.eq(self.msr_value)]
        m.d.comb += self.wrmsr_value.eq(Cat(self.eax, self.edx))

        with m.Switch(self.reg):
            with m.Case(0):
                m.d.comb += self.cr_value.eq(self.cr0)
            with m.Case(3):
                m.d.comb += self.cr_value.eq(self.cr3)
            with m.Default():
                m.d.comb += self.cr_value.eq(self.cr4)

        size = self.opsize
        m.d.comb += [
            self.port.eq(Mux(is_one_of(self.cls, InsnClass.IN_IMM, InsnClass.OUT_IMM),
                             self.imm8, self.edx[:16])),
            self.io_bytes.eq(Mux(size == OpSize.S8, 1, Mux(size == OpSize.S16, 2, 4))),
            self.io_size.eq(Mux(size == OpSize.S64, OpSize.S32, size)),
            self.out_value.eq(Mux(size == OpSize.S8, self.eax[:8],
                                  Mux(size == OpSize.S16, self.eax[:16], self.eax))),
        ]
        return m
