"""Reference model of the core's execute datapath (`rtl.core.execute.ExecuteUnit`).

`execute(v, uc)` gives, for one instruction `v` (a dict: `cls`, `alu_op`, `opsize`,
`src_size`, `cc`, `imm` and the operand values `rm`, `reg`, `opreg`, `acc`, `cl`, `ld`, `ea`,
`next_rip`, `rflags`), what the SDM says the instruction computes: the destination's value
(zero-extended from the operand size, `None` when the instruction writes none), the arithmetic
flags after it, and the branch (taken, target). Arithmetic comes from Unicorn (`uc`, a
`tb.x86.unicorn_ref.UnicornX86`): the same operation on RAX/RBX/CL; conditions from Unicorn's
SETcc. Everything else is written out here.
"""

from __future__ import annotations

from rtl.arch.vmx import RFLAGS_RF, RFLAGS_VM
from rtl.core.layouts import OPSIZE_BITS, AluOp, InsnClass
from tb.x86.unicorn_ref import alu_insn_bytes

MASK64 = (1 << 64) - 1

#: Classes whose destination gets the ALU's `alu_op` result: the operand pair (a, b, count).
ALU_CLASSES = {
    InsnClass.ALU_RM_R: lambda v: (v["rm"], v["reg"], 0),
    InsnClass.ALU_R_RM: lambda v: (v["reg"], v["rm"], 0),
    InsnClass.ALU_RM_IMM: lambda v: (v["rm"], v["imm"], 0),
    InsnClass.ALU_ACC_IMM: lambda v: (v["acc"], v["imm"], 0),
    InsnClass.UNARY_RM: lambda v: (v["rm"], 0, 0),
    InsnClass.SHIFT_RM_IMM: lambda v: (v["rm"], 0, v["imm"] & 0x3F),
    InsnClass.SHIFT_RM_CL: lambda v: (v["rm"], 0, v["cl"]),
}


def _mask(size):
    return (1 << OPSIZE_BITS[size]) - 1


def _extend(value, size, signed):
    bits = OPSIZE_BITS[size]
    value &= (1 << bits) - 1
    if signed and value >> (bits - 1):
        value -= 1 << bits
    return value & MASK64


def _moved(v, cond):
    """The value a move-like class writes (before the operand-size mask), or None."""
    c = v["cls"]
    return {
        InsnClass.MOV_RM_R: v["reg"], InsnClass.MOV_R_RM: v["rm"],
        InsnClass.MOV_RM_IMM: v["imm"], InsnClass.MOV_OPREG_IMM: v["imm"],
        InsnClass.PUSH_IMM: v["imm"],
        InsnClass.MOVZX: _extend(v["rm"], v["src_size"], False),
        InsnClass.MOVSX: _extend(v["rm"], v["src_size"], True),
        InsnClass.LEA: v["ea"], InsnClass.CMOVCC: v["rm"] if cond else v["reg"],
        InsnClass.PUSH_OPREG: v["opreg"], InsnClass.PUSH_RM: v["rm"],
        InsnClass.PUSHF: v["rflags"] & ~(RFLAGS_RF | RFLAGS_VM),
        InsnClass.POP_OPREG: v["ld"], InsnClass.POP_RM: v["ld"],
        InsnClass.CALL_REL: v["next_rip"], InsnClass.CALL_RM: v["next_rip"],
    }.get(c)


def execute(v, uc):
    """(result or None, RFLAGS after, taken, target) of instruction `v`; see the docstring."""
    c, size = v["cls"], v["opsize"]
    cond = uc.setcc(v["cc"], v["rflags"])
    result, rflags = None, v["rflags"]
    if c in ALU_CLASSES:
        a, b, count = ALU_CLASSES[c](v)
        regs, rflags = uc.run(alu_insn_bytes(v["alu_op"], size),
                              {"rax": a, "rbx": b, "rcx": count}, v["rflags"])
        if v["alu_op"] not in (AluOp.CMP, AluOp.TEST):
            result = regs["rax"] & _mask(size)
    elif c == InsnClass.SETCC:
        result = cond
    else:
        moved = _moved(v, cond)
        if moved is not None:
            result = moved & _mask(size)
    target = (v["next_rip"] + v["imm"]) & MASK64
    taken, to = {
        InsnClass.JCC: (bool(cond), target), InsnClass.JMP_REL: (True, target),
        InsnClass.CALL_REL: (True, target), InsnClass.JMP_RM: (True, v["rm"]),
        InsnClass.CALL_RM: (True, v["rm"]), InsnClass.RET: (True, v["ld"]),
    }.get(c, (False, v["next_rip"]))
    return result, rflags, taken, to


__all__ = ["ALU_CLASSES", "execute"]
