"""The core's execute datapath (`ExecuteUnit`): the ALU's operation and operands chosen by the
instruction's class, the ALU (`rtl.core.alu.Alu`), and the branch decision.

The core reads the operands (registers at the operand size, the loaded value, the effective
address) and registers what it keeps of the outputs; the unit decides nothing about states,
accesses or faults (docs/core.md, "The execution engine").

What each class computes (`result` is zero-extended from the operand size, 8 bits for SETcc):

* ALU_RM_R `rm op reg`, ALU_R_RM `reg op rm`, ALU_RM_IMM `rm op imm`, ALU_ACC_IMM `acc op imm`,
  UNARY_RM `op rm`, SHIFT_RM_IMM `rm` by imm[5:0], SHIFT_RM_CL `rm` by CL[5:0]: the decoded
  `alu_op` with its flags;
* MOV_RM_R `reg`, MOV_R_RM `rm`, MOV_RM_IMM / MOV_OPREG_IMM / PUSH_IMM `imm`, MOVZX / MOVSX
  `rm` extended from the source size, LEA the effective address, CMOVcc `rm` when the condition
  holds, else `reg` (a false condition still writes the destination), SETcc the condition,
  PUSH r `opreg`, PUSH r/m `rm`, PUSHF RFLAGS without RF and VM, POP the loaded value, CALL the
  return address: moves, RFLAGS unchanged;
* branches: Jcc taken when its condition holds, JMP rel / CALL rel always, to RIP + length +
  imm; JMP r/m / CALL r/m to `rm`; RET to the loaded value.

Ports:
    insn        in   the decoded instruction (`DECODED_LAYOUT`)
    rm_val      in   the r/m operand: the loaded value when it is memory, else the register at
                     the operand size (the source size for MOVZX/MOVSX)
    reg_val     in   the ModRM.reg register at the operand size
    opreg_val   in   the opcode's register at the operand size (PUSH r)
    acc_val     in   RAX at the operand size (ALU_ACC_IMM)
    cl          in   CL[5:0] (SHIFT_RM_CL)
    ld_val      in   the loaded value (POP, RET)
    ea          in   the effective address (LEA)
    next_rip    in   RIP + the instruction's length
    rflags      in   RFLAGS before the instruction
    result      out  the destination's value
    writes      out  the operation writes its result (0: CMP, TEST)
    rflags_out  out  RFLAGS after the instruction
    taken       out  the instruction branches
    target      out  where to: the destination of a branch class (a Jcc's also when its
                     condition is false), `next_rip` for the other classes

Timing: combinational (no register).
"""

from amaranth.hdl import C, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..arch.vmx import RFLAGS_RF, RFLAGS_VM
from .alu import Alu
from .layouts import DECODED_LAYOUT, AluOp, InsnClass, OpSize

__all__ = ["ExecuteUnit", "extend"]


def extend(v, size, signed):
    """`v` zero- or sign-extended from `size` to 64 bits."""
    return Mux(size == OpSize.S8, Mux(signed, v[:8].as_signed(), v[:8]),
               Mux(size == OpSize.S16, Mux(signed, v[:16].as_signed(), v[:16]),
                   Mux(size == OpSize.S32, Mux(signed, v[:32].as_signed(), v[:32]), v)))


class ExecuteUnit(wiring.Component):
    """See the module docstring."""

    insn: In(DECODED_LAYOUT)
    rm_val: In(64)
    reg_val: In(64)
    opreg_val: In(64)
    acc_val: In(64)
    cl: In(6)
    ld_val: In(64)
    ea: In(64)
    next_rip: In(64)
    rflags: In(64)

    result: Out(64)
    writes: Out(1)
    rflags_out: Out(64)
    taken: Out(1)
    target: Out(64)

    def elaborate(self, platform):
        m = Module()
        m.submodules.alu = alu = Alu()
        insn = self.insn
        cls = insn.cls
        rm_val, reg_val = self.rm_val, self.reg_val

        a = Signal(64)
        b = Signal(64)
        op = Signal(AluOp)
        cnt = Signal(6)
        m.d.comb += [alu.a.eq(a), alu.b.eq(b), alu.op.eq(op), alu.count.eq(cnt),
                     alu.size.eq(Mux(cls == InsnClass.SETCC, OpSize.S8, insn.opsize)),
                     alu.rflags_in.eq(self.rflags), alu.cc.eq(insn.cc),
                     self.result.eq(alu.result), self.writes.eq(alu.writes_result),
                     self.rflags_out.eq(alu.rflags_out)]
        m.d.comb += op.eq(AluOp.MOV)
        with m.Switch(cls):
            with m.Case(InsnClass.ALU_RM_R):
                m.d.comb += [op.eq(insn.alu_op), a.eq(rm_val), b.eq(reg_val)]
            with m.Case(InsnClass.ALU_R_RM):
                m.d.comb += [op.eq(insn.alu_op), a.eq(reg_val), b.eq(rm_val)]
            with m.Case(InsnClass.ALU_RM_IMM):
                m.d.comb += [op.eq(insn.alu_op), a.eq(rm_val), b.eq(insn.imm)]
            with m.Case(InsnClass.ALU_ACC_IMM):
                m.d.comb += [op.eq(insn.alu_op), a.eq(self.acc_val), b.eq(insn.imm)]
            with m.Case(InsnClass.UNARY_RM):
                m.d.comb += [op.eq(insn.alu_op), a.eq(rm_val)]
            with m.Case(InsnClass.SHIFT_RM_IMM):
                m.d.comb += [op.eq(insn.alu_op), a.eq(rm_val), cnt.eq(insn.imm[:6])]
            with m.Case(InsnClass.SHIFT_RM_CL):
                m.d.comb += [op.eq(insn.alu_op), a.eq(rm_val), cnt.eq(self.cl)]
            with m.Case(InsnClass.MOV_RM_R):
                m.d.comb += b.eq(reg_val)
            with m.Case(InsnClass.MOV_R_RM):
                m.d.comb += b.eq(rm_val)
            with m.Case(InsnClass.MOV_RM_IMM, InsnClass.MOV_OPREG_IMM, InsnClass.PUSH_IMM):
                m.d.comb += b.eq(insn.imm)
            with m.Case(InsnClass.MOVZX):
                m.d.comb += b.eq(extend(rm_val, insn.src_size, 0))
            with m.Case(InsnClass.MOVSX):
                m.d.comb += b.eq(extend(rm_val, insn.src_size, 1))
            with m.Case(InsnClass.LEA):
                m.d.comb += b.eq(self.ea)
            with m.Case(InsnClass.CMOVCC):
                m.d.comb += b.eq(Mux(alu.cond, rm_val, reg_val))
            with m.Case(InsnClass.SETCC):
                m.d.comb += b.eq(alu.cond)
            with m.Case(InsnClass.PUSH_OPREG):
                m.d.comb += b.eq(self.opreg_val)
            with m.Case(InsnClass.PUSH_RM):
                m.d.comb += b.eq(rm_val)
            with m.Case(InsnClass.PUSHF):
                m.d.comb += b.eq(self.rflags & ~C(RFLAGS_RF | RFLAGS_VM, 64))
            with m.Case(InsnClass.POP_OPREG, InsnClass.POP_RM):
                m.d.comb += b.eq(self.ld_val)
            with m.Case(InsnClass.CALL_REL, InsnClass.CALL_RM):
                m.d.comb += b.eq(self.next_rip)

        next_rip = self.next_rip
        m.d.comb += [self.target.eq(next_rip), self.taken.eq(0)]
        with m.Switch(cls):
            with m.Case(InsnClass.JCC):
                m.d.comb += [self.taken.eq(alu.cond), self.target.eq(next_rip + insn.imm)]
            with m.Case(InsnClass.JMP_REL, InsnClass.CALL_REL):
                m.d.comb += [self.taken.eq(1), self.target.eq(next_rip + insn.imm)]
            with m.Case(InsnClass.JMP_RM, InsnClass.CALL_RM):
                m.d.comb += [self.taken.eq(1), self.target.eq(rm_val)]
            with m.Case(InsnClass.RET):
                m.d.comb += [self.taken.eq(1), self.target.eq(self.ld_val)]
        return m
