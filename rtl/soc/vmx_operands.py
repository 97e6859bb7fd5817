"""What the system unit offers the VMX unit for a VMX instruction (`VmxOperands`): the
operation, the operands from the request and the core's registers, the CPU state the checks
read, and whether the memory operand is still to be loaded (a precheck first).

Operands (the `rtl.vmx.ports.INSTR_LAYOUT` fields):

* `reg`: the register operand that names something: VMREAD's and VMWRITE's field encoding
  (ModRM.reg), INVEPT's and INVVPID's type (ModRM.reg); VMFUNC's function (EAX);
* `value`: VMWRITE's source (the r/m register, or the loaded memory operand); VMFUNC's EPTP
  index (ECX);
* `mem`: the loaded memory operand (VMXON, VMCLEAR and VMPTRLD's pointer, VMWRITE's 8 bytes,
  INVEPT's and INVVPID's 16-byte descriptor); `register_operand`: the r/m operand is a register;
* `qualification`: the exit qualification should the instruction exit: the memory operand's
  displacement, or for a RIP-relative operand the displacement plus the next RIP, i.e. the
  effective address (SDM Vol. 3C 28.2.1); 0 for a register operand;
* `cpu`: CPL 0, CR0, CR4, IA32_EFER, CS.L = 1 (64-bit mode), RFLAGS, IA32_FEATURE_CONTROL's
  reset value, no MOV-SS blocking.

`precheck`: the instruction has a memory source operand not loaded yet (and the precheck's
answer has not been taken yet: `precheck_final`): the VMX unit decides first whether the
instruction gets that far; `mem_bytes` is that operand's size (8, or 16 for a descriptor).

Ports:
    cls, mem, mem_val, rip_rel, ea, disp, loaded   in   the request's fields
    reg_val, rm_val     in   the core's registers named by ModRM.reg and ModRM.rm
    rax, rcx            in   the core's RAX, RCX
    cr0, cr4, efer, rflags  in   the core's state
    precheck_final      in   the precheck is done: offer the instruction to be carried out
    instr               out  `INSTR_LAYOUT`
    precheck            out  (as `instr.precheck`)
    mem_bytes           out  the memory source operand's bytes (0: none)

Timing: combinational (the system unit registers `instr` before offering it).
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..arch.system import FEATURE_CONTROL_RESET
from ..core.layouts import VMX_OP_OF_CLASS, InsnClass
from ..vmx.ports import INSTR_LAYOUT

__all__ = ["VmxOperands", "MEM_SOURCE_BYTES"]

#: The VMX instructions with a memory source operand, and its bytes.
MEM_SOURCE_BYTES = {InsnClass.VMXON: 8, InsnClass.VMCLEAR: 8, InsnClass.VMPTRLD: 8,
                    InsnClass.INVEPT: 16, InsnClass.INVVPID: 16, InsnClass.VMWRITE: 8}


class VmxOperands(wiring.Component):
    """See the module docstring."""

    cls: In(InsnClass)
    mem: In(1)
    mem_val: In(128)
    rip_rel: In(1)
    ea: In(64)
    disp: In(32)
    loaded: In(1)
    reg_val: In(64)
    rm_val: In(64)
    rax: In(64)
    rcx: In(64)
    cr0: In(64)
    cr4: In(64)
    efer: In(64)
    rflags: In(64)
    precheck_final: In(1)

    instr: Out(INSTR_LAYOUT)
    precheck: Out(1)
    mem_bytes: Out(5)

    def elaborate(self, platform):
        m = Module()
        cls = self.cls
        ins = self.instr
        with m.Switch(cls):
            for c, o in VMX_OP_OF_CLASS.items():
                with m.Case(c):
                    m.d.comb += ins.op.eq(o)
        mem_source = Signal()
        with m.Switch(cls):
            for c, n in MEM_SOURCE_BYTES.items():
                with m.Case(c):
                    m.d.comb += [mem_source.eq(self.mem), self.mem_bytes.eq(n)]
        m.d.comb += self.precheck.eq(mem_source & ~self.loaded & ~self.precheck_final)
        vmfunc = cls == InsnClass.VMFUNC
        m.d.comb += [
            ins.precheck.eq(self.precheck),
            ins.register_operand.eq(~self.mem),
            ins.mem.eq(self.mem_val),
            ins.reg.eq(Mux(vmfunc, self.rax, self.reg_val)),
            ins.value.eq(Mux(vmfunc, self.rcx, Mux(self.mem, self.mem_val[:64], self.rm_val))),
            ins.qualification.eq(Mux(self.mem, Mux(self.rip_rel, self.ea,
                                                   self.disp.as_signed()), 0)),
            ins.cpu.cpl.eq(0), ins.cpu.cr0.eq(self.cr0), ins.cpu.cr4.eq(self.cr4),
            ins.cpu.efer.eq(self.efer), ins.cpu.cs_l.eq(1), ins.cpu.rflags.eq(self.rflags),
            ins.cpu.feature_control.eq(FEATURE_CONTROL_RESET),
            ins.cpu.mov_ss_blocking.eq(0),
        ]
        return m
