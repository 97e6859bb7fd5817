"""`rtl.core.destination.Destination` in Amaranth's simulator: every instruction class with
random register numbers, operand sizes, memory or register forms, REX and `writes`, against the
destination written out in Python from each class's definition (SDM: the operand the instruction
writes; AH..BH for registers 4-7 at 8 bits without REX; SETcc writes a byte; CALL and RET move
RSP by 8 in 64-bit mode). Directed: hand-written cases. Verilator lint."""

from __future__ import annotations

import os
import random

import pytest

from rtl.core.destination import Destination
from rtl.core.layouts import InsnClass, OpSize
from tb.comb import run_combinational, set_ports

SEED = int(os.environ.get("VTX_SEED", "1"))
VECTORS = int(os.environ.get("VTX_DESTINATION_VECTORS", "3000"))

C = InsnClass
#: The operand each class writes (the classes not listed write no register or memory operand
#: themselves: branches, pushes, PUSHF/POPF, NOP, system classes).
WRITES = {
    C.ALU_RM_R: "rm", C.ALU_RM_IMM: "rm", C.UNARY_RM: "rm", C.SHIFT_RM_IMM: "rm",
    C.SHIFT_RM_CL: "rm", C.MOV_RM_R: "rm", C.MOV_RM_IMM: "rm", C.SETCC: "rm", C.POP_RM: "rm",
    C.ALU_R_RM: "reg", C.MOV_R_RM: "reg", C.MOVZX: "reg", C.MOVSX: "reg", C.LEA: "reg",
    C.CMOVCC: "reg",
    C.ALU_ACC_IMM: "acc",
    C.MOV_OPREG_IMM: "opreg", C.POP_OPREG: "opreg",
}
#: Stack use: +1 loads the top and pops, -1 pushes.
STACK = {C.POP_OPREG: +1, C.POP_RM: +1, C.POPF: +1, C.RET: +1,
         C.PUSH_OPREG: -1, C.PUSH_RM: -1, C.PUSH_IMM: -1, C.PUSHF: -1, C.CALL_REL: -1,
         C.CALL_RM: -1}
BYTES = {OpSize.S8: 1, OpSize.S16: 2, OpSize.S32: 4, OpSize.S64: 8}
FIELDS = ("cls", "mem", "rm", "reg", "opreg", "opsize", "rex")


def reference(v):
    """{port: value} for the ports that matter in vector `v` (`reg`, `hi8` only when a register
    is written)."""
    where = WRITES.get(v["cls"])
    if where == "rm" and v["mem"]:
        where = "mem"
    size = OpSize.S8 if v["cls"] == C.SETCC else v["opsize"]
    want = {"reg_we": where in ("rm", "reg", "acc", "opreg") and bool(v["writes"]),
            "mem_we": where == "mem" and bool(v["writes"]), "size": size,
            "stack_load": STACK.get(v["cls"]) == +1, "stack_store": STACK.get(v["cls"]) == -1,
            "stack_bytes": 8 if v["cls"] in (C.CALL_REL, C.CALL_RM, C.RET)
            else BYTES[v["opsize"]]}
    if where in ("rm", "reg", "acc", "opreg"):
        n = 0 if where == "acc" else v[where]
        want["reg"] = n
        want["hi8"] = size == OpSize.S8 and not v["rex"] and n in (4, 5, 6, 7)
    return want


def random_vector(rng):
    return {"cls": rng.choice(list(InsnClass)), "mem": rng.getrandbits(1),
            "rm": rng.randrange(16), "reg": rng.randrange(16), "opreg": rng.randrange(16),
            "opsize": rng.choice(list(OpSize)), "rex": rng.getrandbits(1),
            "writes": rng.random() < 0.8}


def run_unit(vectors):
    """Every output of each vector (a dict) through one elaboration."""
    dut = Destination()
    outs = ("reg_we", "reg", "size", "hi8", "mem_we", "stack_load", "stack_store",
            "stack_bytes")

    def drive(ctx, v):
        set_ports(ctx, dut.insn, v, FIELDS)
        ctx.set(dut.writes, v["writes"])

    def read(ctx):
        got = {k: ctx.get(getattr(dut, k)) for k in outs}
        return {k: (x if k == "size" else int(x) if k in ("reg", "stack_bytes") else bool(x))
                for k, x in got.items()}

    return run_combinational(dut, vectors, drive, read)


def _check(v, got):
    want = reference(v)
    assert {k: got[k] for k in want} == want, f"{v}: got {got}, expected {want}"


def test_destination_random_vs_reference():
    rng = random.Random(SEED * 41)
    vectors = [random_vector(rng) for _ in range(VECTORS)]
    hi8 = 0
    for v, got in zip(vectors, run_unit(vectors), strict=True):
        _check(v, got)
        hi8 += got["hi8"] and got["reg_we"]
    assert hi8 > 0, "AH..BH destinations drawn"
    assert {v["cls"] for v in vectors} == set(InsnClass)


def _vec(cls, **kw):
    v = {"cls": cls, "mem": 0, "rm": 0, "reg": 0, "opreg": 0, "opsize": OpSize.S64, "rex": 0,
         "writes": 1}
    v.update(kw)
    return v


#: (vector, {port: expected}): written by hand.
DIRECTED = [
    # add ah, bl (00 DC): r/m = 4 at 8 bits without REX is AH
    (_vec(C.ALU_RM_R, rm=4, reg=3, opsize=OpSize.S8),
     {"reg_we": True, "reg": 4, "hi8": True, "size": OpSize.S8, "mem_we": False}),
    # add spl, bl (40 00 DC): with REX it is SPL
    (_vec(C.ALU_RM_R, rm=4, reg=3, opsize=OpSize.S8, rex=1),
     {"reg_we": True, "reg": 4, "hi8": False}),
    # cmp [rax], ecx: writes nothing
    (_vec(C.ALU_RM_R, mem=1, opsize=OpSize.S32, reg=1, writes=0),
     {"reg_we": False, "mem_we": False}),
    # add [rax], ecx: memory
    (_vec(C.ALU_RM_R, mem=1, opsize=OpSize.S32, reg=1), {"reg_we": False, "mem_we": True}),
    # mov r9, [rax]: ModRM.reg
    (_vec(C.MOV_R_RM, mem=1, reg=9, rm=0), {"reg_we": True, "reg": 9, "mem_we": False}),
    # sete bh (0F 94 C7): one byte, BH
    (_vec(C.SETCC, rm=7, opsize=OpSize.S32), {"reg_we": True, "reg": 7, "size": OpSize.S8,
                                               "hi8": True}),
    # add eax, 5: RAX
    (_vec(C.ALU_ACC_IMM, opsize=OpSize.S32, rm=6, reg=5, opreg=3), {"reg_we": True, "reg": 0}),
    # pop r13: the opcode's register, a stack load of 8 bytes
    (_vec(C.POP_OPREG, opreg=13), {"reg_we": True, "reg": 13, "stack_load": True,
                                   "stack_store": False, "stack_bytes": 8}),
    # pop word [rbx]: memory, a stack load of 2 bytes
    (_vec(C.POP_RM, mem=1, opsize=OpSize.S16), {"mem_we": True, "reg_we": False,
                                                "stack_load": True, "stack_bytes": 2}),
    # push 16-bit immediate
    (_vec(C.PUSH_IMM, opsize=OpSize.S16), {"reg_we": False, "mem_we": False,
                                           "stack_store": True, "stack_bytes": 2}),
    # call rel32, ret: 8 bytes whatever the operand size says
    (_vec(C.CALL_REL, opsize=OpSize.S32), {"stack_store": True, "stack_bytes": 8}),
    (_vec(C.RET, opsize=OpSize.S16), {"stack_load": True, "stack_bytes": 8}),
    # jmp rax: nothing
    (_vec(C.JMP_RM, rm=0), {"reg_we": False, "mem_we": False, "stack_load": False,
                            "stack_store": False}),
]


@pytest.mark.parametrize("k", range(len(DIRECTED)))
def test_destination_directed(k):
    v, want = DIRECTED[k]
    got = run_unit([v])[0]
    assert {p: got[p] for p in want} == want, f"{v}: {got}"


def test_lint_destination():
    from sim import flow, lint

    verilog = flow.generate_verilog(Destination, "destination", {})
    ok, output = lint.lint_verilog(verilog, top_module="destination")
    assert ok, output
