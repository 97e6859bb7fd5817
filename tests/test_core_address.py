"""`rtl.core.address.AddressGen` in Amaranth's simulator: random memory operands (every
combination of base, index, scale, displacement, RIP-relative; register values with edge bits,
sums that wrap past 2^64) against the address written out in Python (SDM Vol. 1 3.7.5); POP r/m
with an RSP base at every operand size; the stack-segment rule and the segment the system sees.
Directed: hand-written addresses. Verilator lint."""

from __future__ import annotations

import os
import random

import pytest

from rtl.core.address import AddressGen
from rtl.core.layouts import (
    SEG_CS,
    SEG_DS,
    SEG_ES,
    SEG_FS,
    SEG_GS,
    SEG_NONE,
    SEG_SS,
    InsnClass,
    OpSize,
)
from tb.comb import run_combinational, set_ports

SEED = int(os.environ.get("VTX_SEED", "1"))
VECTORS = int(os.environ.get("VTX_ADDRESS_VECTORS", "2000"))

MASK64 = (1 << 64) - 1
RSP, RBP = 4, 5
FIELDS = ("base_valid", "base", "index_valid", "index", "scale", "disp", "rip_rel", "seg", "cls",
          "opsize")
VALUES = ("base_val", "index_val", "next_rip")


def reference(v):
    """(ea, pop_ea, ss_ref, seg) of vector `v`, from the SDM's definitions."""
    ea = v["disp"]
    if v["base_valid"]:
        ea += v["base_val"]
    if v["index_valid"]:
        ea += v["index_val"] * (1, 2, 4, 8)[v["scale"]]
    if v["rip_rel"]:
        ea += v["next_rip"]
    ea &= MASK64
    pop_ea = ea
    if v["cls"] == InsnClass.POP_RM and v["base_valid"] and v["base"] == RSP:
        # The address is computed with RSP after the pop's increment (SDM POP).
        pop_ea = (ea + {OpSize.S16: 2, OpSize.S32: 4, OpSize.S64: 8, OpSize.S8: 1}[v["opsize"]]) \
            & MASK64
    ss_ref = bool(v["base_valid"]) and v["base"] in (RSP, RBP)
    if v["seg"] in (SEG_FS, SEG_GS):
        seg = v["seg"]
    else:
        seg = SEG_SS if ss_ref else SEG_DS
    return ea, pop_ea, ss_ref, seg


def _value(rng):
    return rng.choice([0, 1, MASK64, 1 << 63, (1 << 63) - 1, 0xFFFF_FFFF, rng.getrandbits(64),
                       rng.getrandbits(64), rng.getrandbits(48)])


def random_vector(rng):
    return {
        "base_valid": rng.getrandbits(1), "base": rng.randrange(16),
        "index_valid": rng.getrandbits(1), "index": rng.randrange(16),
        "scale": rng.randrange(4),
        "disp": rng.choice([0, -1, 2**31 - 1, -2**31, rng.randrange(-128, 128),
                            rng.randrange(-2**31, 2**31)]),
        "rip_rel": rng.random() < 0.2,
        "seg": rng.choice([SEG_ES, SEG_CS, SEG_SS, SEG_DS, SEG_FS, SEG_GS, SEG_NONE, SEG_NONE]),
        "cls": rng.choice([InsnClass.POP_RM, InsnClass.POP_RM, InsnClass.MOV_R_RM,
                           InsnClass.LEA, InsnClass.PUSH_RM, InsnClass.ALU_RM_IMM]),
        "opsize": rng.choice(list(OpSize)),
        **{k: _value(rng) for k in VALUES},
    }


def run_unit(vectors):
    """(ea, pop_ea, ss_ref, seg) of each vector through one elaboration."""
    dut = AddressGen()

    def drive(ctx, v):
        set_ports(ctx, dut.insn, v, FIELDS)
        set_ports(ctx, dut, v, VALUES)

    return run_combinational(
        dut, vectors, drive,
        lambda ctx: (ctx.get(dut.ea), ctx.get(dut.pop_ea), bool(ctx.get(dut.ss_ref)),
                     ctx.get(dut.seg)))


def test_address_random_vs_reference():
    rng = random.Random(SEED * 37)
    vectors = [random_vector(rng) for _ in range(VECTORS)]
    pops = 0
    for v, got in zip(vectors, run_unit(vectors), strict=True):
        want = reference(v)
        assert got == want, f"{v}: got {got}, expected {want}"
        pops += want[1] != want[0]
    assert pops > 0, "POP r/m with an RSP base drawn"


def _vec(**kw):
    v = {"base_valid": 0, "base": 0, "index_valid": 0, "index": 0, "scale": 0, "disp": 0,
         "rip_rel": 0, "seg": SEG_NONE, "cls": InsnClass.MOV_R_RM, "opsize": OpSize.S64,
         "base_val": 0, "index_val": 0, "next_rip": 0}
    v.update(kw)
    return v


#: (vector, ea, pop_ea, ss_ref, seg): written by hand.
DIRECTED = [
    # [rbx + rsi*8 - 8]
    (_vec(base_valid=1, base=3, index_valid=1, index=6, scale=3, disp=-8, base_val=0x1000,
          index_val=3), 0x1010, 0x1010, False, SEG_DS),
    # [rip + 0x100], the instruction ending at 0x40_0007
    (_vec(rip_rel=1, disp=0x100, next_rip=0x40_0007), 0x40_0107, 0x40_0107, False, SEG_DS),
    # [rbp - 4]: the stack segment
    (_vec(base_valid=1, base=RBP, disp=-4, base_val=0x8000), 0x7FFC, 0x7FFC, True, SEG_SS),
    # fs:[rsp]: the override wins over SS
    (_vec(base_valid=1, base=RSP, seg=SEG_FS, base_val=0x2000), 0x2000, 0x2000, True, SEG_FS),
    # es:[rax]: ignored in 64-bit mode
    (_vec(base_valid=1, base=0, seg=SEG_ES, base_val=0x2000), 0x2000, 0x2000, False, SEG_DS),
    # pop qword [rsp + 8]: RSP after the pop
    (_vec(cls=InsnClass.POP_RM, base_valid=1, base=RSP, disp=8, base_val=0x7FF0), 0x7FF8,
     0x8000, True, SEG_SS),
    # pop word [rsp]
    (_vec(cls=InsnClass.POP_RM, opsize=OpSize.S16, base_valid=1, base=RSP, base_val=0x7FF0),
     0x7FF0, 0x7FF2, True, SEG_SS),
    # pop qword [r12]: register 12 is not RSP (REX.B), no adjustment
    (_vec(cls=InsnClass.POP_RM, base_valid=1, base=12, base_val=0x7FF0), 0x7FF0, 0x7FF0, False,
     SEG_DS),
    # [rcx*4] (no base): index only; wraps past 2^64
    (_vec(index_valid=1, index=1, scale=2, disp=0x10, index_val=1 << 62), 0x10, 0x10, False,
     SEG_DS),
]


@pytest.mark.parametrize("k", range(len(DIRECTED)))
def test_address_directed(k):
    v, *want = DIRECTED[k]
    assert run_unit([v])[0] == tuple(want)


def test_lint_address_gen():
    from sim import flow, lint

    verilog = flow.generate_verilog(AddressGen, "address_gen", {})
    ok, output = lint.lint_verilog(verilog, top_module="address_gen")
    assert ok, output
