"""Where an executed instruction's result goes (`Destination`): combinational.

From the decoded class: a register (which one, at which size, AH..BH), the memory operand, or
neither; and how the instruction uses the stack (it loads its top, stores below it, by how many
bytes). The core registers these in EXEC (or commits them in DECODE); the value itself is the
execute datapath's (`rtl.core.execute`).

* r/m (a register, or memory when `mem`): ALU_RM_R, ALU_RM_IMM, UNARY_RM, SHIFT_RM_IMM,
  SHIFT_RM_CL, MOV_RM_R, MOV_RM_IMM, SETCC, POP_RM;
* ModRM.reg: ALU_R_RM, MOV_R_RM, MOVZX, MOVSX, LEA, CMOVCC;
* RAX: ALU_ACC_IMM;
* the opcode's register: MOV_OPREG_IMM, POP_OPREG;
* none: the other classes (branches, pushes, stores of the system's values elsewhere).

The stack: `STACK_LOAD` classes read the top of the stack and add `stack_bytes` to RSP,
`STACK_STORE` classes subtract them and store there; the operand size, except 8 bytes for the
return address of CALL and RET (64-bit mode).

Ports:
    insn        in   the decoded instruction (`DECODED_LAYOUT`): `cls`, `mem`, `rm`, `reg`,
                     `opreg`, `opsize`, `rex`
    writes      in   the operation writes its result (`ExecuteUnit.writes`: 0 for CMP, TEST)
    reg_we      out  the result goes to register `reg`
    reg         out  its number
    size        out  the write's size: the operand size, 8 bits for SETcc
    hi8         out  the register is AH..BH (bits 15:8 of `reg` & 3)
    mem_we      out  the result goes to the memory operand (`size` bytes at the EA)
    stack_load  out  the class loads from the top of the stack (POP, POPF, RET)
    stack_store out  the class stores onto the stack (PUSH, PUSHF, CALL)
    stack_bytes out  how far RSP moves (64 bits wide, added to RSP)

Timing: combinational (no register).
"""

from amaranth.hdl import C, Module, Mux
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .layouts import DECODED_LAYOUT, InsnClass, OpSize, bytes_of, is_one_of
from .regfile import high8

__all__ = ["Destination", "STACK_LOAD", "STACK_STORE"]

#: Classes reading the top of the stack.
STACK_LOAD = (InsnClass.POP_OPREG, InsnClass.POP_RM, InsnClass.POPF, InsnClass.RET)
#: Classes storing onto the stack.
STACK_STORE = (InsnClass.PUSH_OPREG, InsnClass.PUSH_RM, InsnClass.PUSH_IMM, InsnClass.PUSHF,
               InsnClass.CALL_REL, InsnClass.CALL_RM)
_DEST_RM = (InsnClass.ALU_RM_R, InsnClass.ALU_RM_IMM, InsnClass.UNARY_RM,
            InsnClass.SHIFT_RM_IMM, InsnClass.SHIFT_RM_CL, InsnClass.MOV_RM_R,
            InsnClass.MOV_RM_IMM, InsnClass.SETCC, InsnClass.POP_RM)
_DEST_REG = (InsnClass.ALU_R_RM, InsnClass.MOV_R_RM, InsnClass.MOVZX, InsnClass.MOVSX,
             InsnClass.LEA, InsnClass.CMOVCC)
_DEST_OPREG = (InsnClass.MOV_OPREG_IMM, InsnClass.POP_OPREG)


class Destination(wiring.Component):
    """See the module docstring."""

    insn: In(DECODED_LAYOUT)
    writes: In(1)

    reg_we: Out(1)
    reg: Out(4)
    size: Out(OpSize)
    hi8: Out(1)
    mem_we: Out(1)
    stack_load: Out(1)
    stack_store: Out(1)
    stack_bytes: Out(64)

    def elaborate(self, platform):
        m = Module()
        insn = self.insn
        cls = insn.cls
        dest_rm = is_one_of(cls, *_DEST_RM)
        dest_rm_reg = ~insn.mem & dest_rm
        dest_reg = is_one_of(cls, *_DEST_REG)
        dest_acc = cls == InsnClass.ALU_ACC_IMM
        dest_opreg = is_one_of(cls, *_DEST_OPREG)
        m.d.comb += [
            self.reg_we.eq((dest_rm_reg | dest_reg | dest_acc | dest_opreg) & self.writes),
            self.reg.eq(Mux(dest_rm_reg, insn.rm, Mux(dest_reg, insn.reg,
                                                      Mux(dest_opreg, insn.opreg, 0)))),
            self.size.eq(Mux(cls == InsnClass.SETCC, OpSize.S8, insn.opsize)),
            self.hi8.eq(high8(self.reg, self.size, insn.rex)),
            self.mem_we.eq(insn.mem & dest_rm & self.writes),
            self.stack_load.eq(is_one_of(cls, *STACK_LOAD)),
            self.stack_store.eq(is_one_of(cls, *STACK_STORE)),
            self.stack_bytes.eq(Mux(is_one_of(cls, InsnClass.RET, InsnClass.CALL_REL,
                                              InsnClass.CALL_RM), C(8, 64),
                                    bytes_of(insn.opsize))),
        ]
        return m
