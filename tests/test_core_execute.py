"""`rtl.core.execute.ExecuteUnit` in Amaranth's simulator against `tb/model/execute.py`.

Random instructions of every class the unit executes (`VTX_EXECUTE_VECTORS`, default 3000):
random operation, operand and source sizes, condition code, immediate and operand values (edge
values among them), random RFLAGS. The destination's value (when the class writes one), the six
arithmetic flags and the other RFLAGS bits, and the branch decision (taken, target) must equal
the model's, whose arithmetic and conditions come from Unicorn. Directed: a vector per class with
hand-written results. Verilator lint.
"""

from __future__ import annotations

import os
import random

import pytest

from rtl.arch.vmx import (
    RFLAGS_ARITH,
    RFLAGS_CF,
    RFLAGS_DF,
    RFLAGS_FIXED1,
    RFLAGS_RF,
    RFLAGS_ZF,
)
from rtl.core.execute import ExecuteUnit
from rtl.core.layouts import AluOp, InsnClass, OpSize
from tb.comb import run_combinational, set_ports
from tb.model.execute import ALU_CLASSES, execute
from tb.x86.unicorn_ref import UnicornX86

SEED = int(os.environ.get("VTX_SEED", "1"))
VECTORS = int(os.environ.get("VTX_EXECUTE_VECTORS", "3000"))

GROUP = [AluOp.ADD, AluOp.OR, AluOp.ADC, AluOp.SBB, AluOp.AND, AluOp.SUB, AluOp.XOR, AluOp.CMP]
OPS = {InsnClass.ALU_RM_R: GROUP + [AluOp.TEST], InsnClass.ALU_R_RM: GROUP,
       InsnClass.ALU_RM_IMM: GROUP + [AluOp.TEST], InsnClass.ALU_ACC_IMM: GROUP + [AluOp.TEST],
       InsnClass.UNARY_RM: [AluOp.INC, AluOp.DEC, AluOp.NEG, AluOp.NOT],
       InsnClass.SHIFT_RM_IMM: [AluOp.SHL, AluOp.SHR, AluOp.SAR],
       InsnClass.SHIFT_RM_CL: [AluOp.SHL, AluOp.SHR, AluOp.SAR]}
MOVES = [InsnClass.MOV_RM_R, InsnClass.MOV_R_RM, InsnClass.MOV_RM_IMM, InsnClass.MOV_OPREG_IMM,
         InsnClass.PUSH_IMM, InsnClass.MOVZX, InsnClass.MOVSX, InsnClass.LEA, InsnClass.CMOVCC,
         InsnClass.SETCC, InsnClass.PUSH_OPREG, InsnClass.PUSH_RM, InsnClass.PUSHF,
         InsnClass.POP_OPREG, InsnClass.POP_RM, InsnClass.CALL_REL, InsnClass.CALL_RM]
BRANCHES = [InsnClass.JCC, InsnClass.JMP_REL, InsnClass.JMP_RM, InsnClass.RET, InsnClass.NOP]
SIZES = [OpSize.S8, OpSize.S16, OpSize.S32, OpSize.S64]
EDGES = [0, 1, 2**64 - 1, 0x7F, 0x80, 0x7FFF, 0x8000, 0x7FFF_FFFF, 0x8000_0000,
         0x7FFF_FFFF_FFFF_FFFF, 0x8000_0000_0000_0000, 0x0F, 0x10]
OPERANDS = ("rm", "reg", "opreg", "acc", "ld", "ea", "next_rip")


def _value(rng):
    return rng.choice(EDGES) if rng.random() < 0.3 else rng.getrandbits(64)


def random_vector(rng):
    cls = rng.choice(list(OPS) * 3 + MOVES + BRANCHES)
    size = rng.choice(SIZES)
    if cls == InsnClass.LEA:
        size = rng.choice(SIZES[1:])
    src = size
    if cls in (InsnClass.MOVZX, InsnClass.MOVSX):
        size = rng.choice(SIZES[1:])
        src = rng.choice([s for s in SIZES if s.value < size.value])
    v = {"cls": cls, "alu_op": rng.choice(OPS.get(cls, [AluOp.MOV])), "opsize": size,
         "src_size": src, "cc": rng.randrange(16), "imm": _value(rng),
         "cl": rng.choice([0, 1, 7, 8, 15, 16, 31, 32, 63, rng.randrange(64)]),
         # Not TF: Unicorn would trap after the instruction.
         "rflags": RFLAGS_FIXED1 | (rng.getrandbits(22) & (RFLAGS_ARITH | RFLAGS_DF
                                                            | RFLAGS_RF))}
    v.update({k: _value(rng) for k in OPERANDS})
    return v


def run_unit(vectors):
    """(result, writes, rflags_out, taken, target) of each vector through one elaboration."""
    dut = ExecuteUnit()
    ports = {"rm": dut.rm_val, "reg": dut.reg_val, "opreg": dut.opreg_val, "acc": dut.acc_val,
             "cl": dut.cl, "ld": dut.ld_val, "ea": dut.ea, "next_rip": dut.next_rip,
             "rflags": dut.rflags}

    def drive(ctx, v):
        set_ports(ctx, dut.insn, v, ("cls", "alu_op", "opsize", "src_size", "cc", "imm"))
        for k, port in ports.items():
            ctx.set(port, v[k])

    return run_combinational(
        dut, vectors, drive,
        lambda ctx: (ctx.get(dut.result), ctx.get(dut.writes), ctx.get(dut.rflags_out),
                     ctx.get(dut.taken), ctx.get(dut.target)))


def _check(v, got, want):
    result, writes, rflags, taken, target = got
    w_result, w_rflags, w_taken, w_target = want
    name = f"{v['cls'].name} {v['alu_op'].name} {v['opsize'].name}"
    if w_result is not None:
        assert writes and result == w_result, \
            f"{name}: result {result:#x} (writes {writes}), expected {w_result:#x}; {v}"
    if v["cls"] in ALU_CLASSES and v["alu_op"] in (AluOp.CMP, AluOp.TEST):
        assert not writes, f"{name}: writes its result"
    assert rflags & RFLAGS_ARITH == w_rflags & RFLAGS_ARITH, \
        f"{name}: flags {rflags:#x}, expected {w_rflags:#x}; {v}"
    assert rflags & ~RFLAGS_ARITH == v["rflags"] & ~RFLAGS_ARITH, f"{name}: other RFLAGS bits"
    assert (bool(taken), target) == (w_taken, w_target), \
        f"{name}: branch {taken} {target:#x}, expected {w_taken} {w_target:#x}; {v}"


def test_execute_random_vs_model():
    rng = random.Random(SEED * 29)
    vectors = [random_vector(rng) for _ in range(VECTORS)]
    uc = UnicornX86()
    classes = set()
    for v, got in zip(vectors, run_unit(vectors), strict=True):
        _check(v, got, execute(v, uc))
        classes.add(v["cls"])
    assert classes == set(OPS) | set(MOVES) | set(BRANCHES), "every class drawn"


def _vec(cls, **kw):
    v = {"cls": cls, "alu_op": AluOp.MOV, "opsize": OpSize.S64, "src_size": OpSize.S64,
         "cc": 0, "imm": 0, "cl": 0, "rflags": RFLAGS_FIXED1}
    v.update({k: 0 for k in OPERANDS})
    v.update(kw)
    return v


#: (vector, expected result or None, expected taken, expected target): written by hand. A Jcc's
#: target is its destination also when it is not taken (the core then takes `next_rip`).
DIRECTED = [
    (_vec(InsnClass.ALU_R_RM, alu_op=AluOp.SUB, opsize=OpSize.S32, reg=5, rm=7), 0xFFFF_FFFE,
     False, 0),
    (_vec(InsnClass.ALU_ACC_IMM, alu_op=AluOp.ADD, opsize=OpSize.S8, acc=0xF0, imm=0x11), 0x01,
     False, 0),
    (_vec(InsnClass.SHIFT_RM_CL, alu_op=AluOp.SHL, opsize=OpSize.S16, rm=0x8001, cl=4), 0x0010,
     False, 0),
    (_vec(InsnClass.MOVSX, opsize=OpSize.S64, src_size=OpSize.S8, rm=0x80), 2**64 - 0x80,
     False, 0),
    (_vec(InsnClass.MOVZX, opsize=OpSize.S32, src_size=OpSize.S16, rm=0x1_8000), 0x8000,
     False, 0),
    (_vec(InsnClass.LEA, opsize=OpSize.S32, ea=0x1_2345_6789), 0x2345_6789, False, 0),
    (_vec(InsnClass.CMOVCC, cc=4, rflags=RFLAGS_FIXED1 | RFLAGS_ZF, rm=1, reg=2), 1, False, 0),
    (_vec(InsnClass.CMOVCC, cc=4, opsize=OpSize.S32, rm=1, reg=0xFFFF_FFFF_0000_0002), 2,
     False, 0),
    (_vec(InsnClass.SETCC, cc=2, rflags=RFLAGS_FIXED1 | RFLAGS_CF), 1, False, 0),
    (_vec(InsnClass.PUSHF, rflags=RFLAGS_FIXED1 | RFLAGS_RF | RFLAGS_CF), 0x3, False, 0),
    (_vec(InsnClass.CALL_REL, next_rip=0x1000, imm=2**64 - 0x10), 0x1000, True, 0xFF0),
    (_vec(InsnClass.JCC, cc=5, next_rip=0x2000, imm=0x20), None, True, 0x2020),
    (_vec(InsnClass.JCC, cc=4, next_rip=0x2000, imm=0x20), None, False, 0x2020),
    (_vec(InsnClass.RET, ld=0x4000, next_rip=0x2000), None, True, 0x4000),
    (_vec(InsnClass.JMP_RM, rm=0x5000, next_rip=0x2000), None, True, 0x5000),
]


@pytest.mark.parametrize("k", range(len(DIRECTED)))
def test_execute_directed(k):
    v, result, taken, target = DIRECTED[k]
    got = run_unit([v])[0]
    if result is not None:
        assert got[0] == result and got[1], f"{v['cls'].name}: {got[0]:#x}, expected {result:#x}"
    assert (bool(got[3]), got[4]) == (taken, target), f"{v['cls'].name}: branch {got[3:]}"


def test_lint_execute_unit():
    from sim import flow, lint

    verilog = flow.generate_verilog(ExecuteUnit, "execute_unit", {})
    ok, output = lint.lint_verilog(verilog, top_module="execute_unit")
    assert ok, output
