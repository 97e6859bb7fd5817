"""The core's ALU (`rtl.core.alu.Alu`) in Amaranth's simulator.

* directed: the classic flag edge cases with hand-written expected results;
* differential: every operation at every operand size against Unicorn, the same instruction on
  RAX/RBX/CL, with edge operands (0, 1, -1, signed min/max, 0x0F/0x10 for AF) and random ones,
  counts 0, 1, size-1, size, 31, 32, 63, 64 and random bytes (so the masking is exercised);
  the result (merged into RAX as the register file will) and all six arithmetic flags;
* conditions: `condition_true` for the 16 condition codes against Unicorn's SETcc on random and
  exhaustive arithmetic-flag patterns;
* Verilator lint of the generated Verilog.

`VTX_SEED` seeds the randomness; `VTX_ALU_VECTORS` is the number of random operand sets per
(operation, size) on top of the edge cases (default 150: about 17k vectors in all).
"""

from __future__ import annotations

import itertools
import os
import random

import pytest
from amaranth.sim import Simulator

from rtl.arch.vmx import (
    RFLAGS_AF,
    RFLAGS_ARITH,
    RFLAGS_CF,
    RFLAGS_FIXED1,
    RFLAGS_OF,
    RFLAGS_PF,
    RFLAGS_SF,
    RFLAGS_ZF,
)
from rtl.core.alu import Alu
from rtl.core.layouts import OPSIZE_BITS, AluOp, OpSize
from tb.x86.unicorn_ref import UnicornX86, alu_insn_bytes

SEED = int(os.environ.get("VTX_SEED", "1"))
VECTORS = int(os.environ.get("VTX_ALU_VECTORS", "150"))

SHIFTS = (AluOp.SHL, AluOp.SHR, AluOp.SAR)
ALL_OPS = [op for op in AluOp]
FLAG_NAMES = {RFLAGS_CF: "CF", RFLAGS_PF: "PF", RFLAGS_AF: "AF", RFLAGS_ZF: "ZF",
              RFLAGS_SF: "SF", RFLAGS_OF: "OF"}


def run_alu(vectors):
    """Drive `vectors` (dicts of op/size/a/b/count/rflags/cc) through one Alu elaboration;
    returns a list of (result, writes_result, rflags_out, cond)."""
    dut = Alu()
    out = []

    async def bench(ctx):
        for v in vectors:
            ctx.set(dut.op, v["op"])
            ctx.set(dut.size, v["size"])
            ctx.set(dut.a, v["a"])
            ctx.set(dut.b, v["b"])
            ctx.set(dut.count, v.get("count", 0) & 0x3F)   # the core passes CL[5:0]
            ctx.set(dut.rflags_in, v["rflags"])
            ctx.set(dut.cc, v.get("cc", 0))
            out.append((ctx.get(dut.result), ctx.get(dut.writes_result),
                        ctx.get(dut.rflags_out), ctx.get(dut.cond)))

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()
    return out


def flags_str(f):
    return " ".join(name for bit, name in FLAG_NAMES.items() if f & bit) or "-"


# ---------------------------------------------------------------------------------------------
# Directed

F = RFLAGS_FIXED1
S8, S16, S32, S64 = OpSize.S8, OpSize.S16, OpSize.S32, OpSize.S64

#: (name, op, size, a, b, count, rflags in, expected result, expected arithmetic flags).
DIRECTED = [
    ("add8 0x7F+1 overflows", AluOp.ADD, S8, 0x7F, 1, 0, F,
     0x80, RFLAGS_SF | RFLAGS_OF | RFLAGS_AF),
    ("add8 0xFF+1 carries", AluOp.ADD, S8, 0xFF, 1, 0, F,
     0x00, RFLAGS_CF | RFLAGS_ZF | RFLAGS_PF | RFLAGS_AF),
    ("add64 max+1", AluOp.ADD, S64, 0x7FFF_FFFF_FFFF_FFFF, 1, 0, F,
     0x8000_0000_0000_0000, RFLAGS_SF | RFLAGS_OF | RFLAGS_AF | RFLAGS_PF),
    ("add32 ignores the upper halves", AluOp.ADD, S32, 0xFFFF_FFFF_0000_0001, 0xAAAA_0000_0000_0002,
     0, F, 3, RFLAGS_PF),
    ("adc8 adds CF", AluOp.ADC, S8, 0x10, 0x20, 0, F | RFLAGS_CF, 0x31, 0),
    ("sub8 1-2 borrows", AluOp.SUB, S8, 1, 2, 0, F,
     0xFF, RFLAGS_CF | RFLAGS_SF | RFLAGS_PF | RFLAGS_AF),
    ("sub8 0x80-1 overflows", AluOp.SUB, S8, 0x80, 1, 0, F, 0x7F, RFLAGS_OF | RFLAGS_AF),
    ("sbb32 0-0-CF", AluOp.SBB, S32, 0, 0, 0, F | RFLAGS_CF,
     0xFFFF_FFFF, RFLAGS_CF | RFLAGS_SF | RFLAGS_PF | RFLAGS_AF),
    ("cmp64 equal", AluOp.CMP, S64, 5, 5, 0, F, 0, RFLAGS_ZF | RFLAGS_PF),
    ("inc8 0xFF keeps CF=0", AluOp.INC, S8, 0xFF, 0, 0, F,
     0x00, RFLAGS_ZF | RFLAGS_PF | RFLAGS_AF),
    ("inc8 0xFF keeps CF=1", AluOp.INC, S8, 0xFF, 0, 0, F | RFLAGS_CF,
     0x00, RFLAGS_CF | RFLAGS_ZF | RFLAGS_PF | RFLAGS_AF),
    ("inc16 0x7FFF overflows", AluOp.INC, S16, 0x7FFF, 0, 0, F,
     0x8000, RFLAGS_SF | RFLAGS_OF | RFLAGS_AF | RFLAGS_PF),
    ("dec32 0 keeps CF", AluOp.DEC, S32, 0, 0, 0, F | RFLAGS_CF,
     0xFFFF_FFFF, RFLAGS_CF | RFLAGS_SF | RFLAGS_PF | RFLAGS_AF),
    ("neg 0: CF=0", AluOp.NEG, S32, 0, 0, 0, F | RFLAGS_CF, 0, RFLAGS_ZF | RFLAGS_PF),
    ("neg 1: CF=1", AluOp.NEG, S8, 1, 0, 0, F,
     0xFF, RFLAGS_CF | RFLAGS_SF | RFLAGS_PF | RFLAGS_AF),
    ("neg min overflows", AluOp.NEG, S16, 0x8000, 0, 0, F,
     0x8000, RFLAGS_CF | RFLAGS_SF | RFLAGS_OF | RFLAGS_PF),
    ("not changes no flag", AluOp.NOT, S64, 0, 0, 0, F | RFLAGS_ZF | RFLAGS_OF,
     0xFFFF_FFFF_FFFF_FFFF, RFLAGS_ZF | RFLAGS_OF),
    ("and clears CF/OF", AluOp.AND, S8, 0xF0, 0x0F, 0, F | RFLAGS_CF | RFLAGS_OF,
     0, RFLAGS_ZF | RFLAGS_PF),
    ("test writes nothing", AluOp.TEST, S64, 1 << 63, 1 << 63, 0, F,
     1 << 63, RFLAGS_SF | RFLAGS_PF),
    ("xor self", AluOp.XOR, S32, 0x1234, 0x1234, 0, F | RFLAGS_CF, 0, RFLAGS_ZF | RFLAGS_PF),
    ("shl by 0 keeps flags", AluOp.SHL, S32, 0x8000_0001, 0, 0, F | RFLAGS_CF | RFLAGS_AF,
     0x8000_0001, RFLAGS_CF | RFLAGS_AF),
    ("shl32 by 32 is by 0", AluOp.SHL, S32, 0x8000_0001, 0, 32, F | RFLAGS_OF,
     0x8000_0001, RFLAGS_OF),
    ("shl8 by 1 carries out", AluOp.SHL, S8, 0x81, 0, 1, F, 0x02, RFLAGS_CF | RFLAGS_OF),
    ("shl8 0x40 by 1 overflows", AluOp.SHL, S8, 0x40, 0, 1, F, 0x80, RFLAGS_SF | RFLAGS_OF),
    ("shl64 by 63", AluOp.SHL, S64, 3, 0, 63, F, 1 << 63, RFLAGS_CF | RFLAGS_SF | RFLAGS_PF),
    ("shr8 by 1: OF = old MSB", AluOp.SHR, S8, 0x81, 0, 1, F, 0x40, RFLAGS_CF | RFLAGS_OF),
    ("shr16 by 17 empties", AluOp.SHR, S16, 0xFFFF, 0, 17, F, 0, RFLAGS_ZF | RFLAGS_PF),
    ("sar8 of negative by 1", AluOp.SAR, S8, 0x81, 0, 1, F,
     0xC0, RFLAGS_CF | RFLAGS_SF | RFLAGS_PF),
    ("sar32 of negative by 31", AluOp.SAR, S32, 0x8000_0000, 0, 31, F,
     0xFFFF_FFFF, RFLAGS_SF | RFLAGS_PF),
    ("sar8 of negative by 20 fills", AluOp.SAR, S8, 0x80, 0, 20, F,
     0xFF, RFLAGS_CF | RFLAGS_SF | RFLAGS_PF),
    ("sar64 count 0x41 masks to 1", AluOp.SAR, S64, 2, 0, 0x41, F, 1, 0),
    ("mov passes b", AluOp.MOV, S16, 0xAAAA, 0x1234_5678, 0, F | RFLAGS_CF, 0x5678, RFLAGS_CF),
]


@pytest.fixture(scope="module")
def directed_results():
    """All directed cases through one simulation (elaborating one per case is slow)."""
    got = run_alu([dict(op=op, size=size, a=a, b=b, count=count, rflags=rflags)
                   for _, op, size, a, b, count, rflags, _, _ in DIRECTED])
    return dict(zip([c[0] for c in DIRECTED], got))


@pytest.mark.parametrize("case", DIRECTED, ids=[c[0] for c in DIRECTED])
def test_directed(case, directed_results):
    name, op, size, a, b, count, rflags, want_res, want_flags = case
    res, writes, rflags_out, _ = directed_results[name]
    assert res == want_res, f"{name}: result {res:#x} != {want_res:#x}"
    assert rflags_out & RFLAGS_ARITH == want_flags, \
        f"{name}: flags [{flags_str(rflags_out)}] != [{flags_str(want_flags)}]"
    assert rflags_out & ~RFLAGS_ARITH == rflags & ~RFLAGS_ARITH, "non-arithmetic bits changed"
    assert writes == (op not in (AluOp.CMP, AluOp.TEST))


# ---------------------------------------------------------------------------------------------
# Differential against Unicorn


def edge_values(n):
    mask = (1 << n) - 1
    top = 1 << (n - 1)
    return sorted({0, 1, 2, mask, top, top - 1, top + 1, 0x0F, 0x10, 0x80, 0xFF & mask,
                   mask ^ 0x0F, 0x5555_5555_5555_5555 & mask})


def edge_counts(n):
    return sorted({0, 1, 2, n - 1, n, n + 1, 31, 32, 33, 63, 64, 255})


def vectors_for(rng, op, size, count):
    """Edge-case and `count` random vectors of one (op, size); upper bits of a/b random."""
    n = OPSIZE_BITS[size]
    mask = (1 << n) - 1

    def full(v):            # put random bits above the operand size: they must not matter
        return (rng.getrandbits(64) & ~mask) | v

    def flags():
        return rng.choice([0, RFLAGS_ARITH, rng.getrandbits(12) & RFLAGS_ARITH]) | RFLAGS_FIXED1

    out = []
    if op in SHIFTS:
        for a, cnt in itertools.product(edge_values(n), edge_counts(n)):
            out.append(dict(a=full(a), b=0, count=cnt, rflags=flags()))
        for _ in range(count):
            cnt = rng.choice([rng.randrange(n + 2), rng.getrandbits(8)])
            out.append(dict(a=rng.getrandbits(64), b=0, count=cnt, rflags=flags()))
    else:
        edges = edge_values(n)
        for a, b in itertools.product(edges, edges):
            out.append(dict(a=full(a), b=full(b), rflags=flags()))
        for _ in range(count):
            out.append(dict(a=rng.getrandbits(64), b=rng.getrandbits(64), rflags=flags()))
    for v in out:
        v.update(op=op, size=size)
    return out


def unicorn_expect(uc, v):
    """(RAX, RFLAGS) Unicorn leaves after the instruction of vector `v`."""
    regs, rflags = uc.run(alu_insn_bytes(v["op"], v["size"]),
                          {"rax": v["a"], "rbx": v["b"], "rcx": v.get("count", 0)}, v["rflags"])
    return regs["rax"], rflags


def register_after(v, result, writes):
    """RAX as the register file will leave it: 8/16-bit results merge, 32-bit zero-extend."""
    if not writes:
        return v["a"]
    n = OPSIZE_BITS[v["size"]]
    if n >= 32:
        return result
    mask = (1 << n) - 1
    return (v["a"] & ~mask) | result


@pytest.mark.parametrize("size", list(OpSize), ids=lambda s: s.name)
def test_differential_unicorn(size):
    rng = random.Random(f"{SEED}-{size.name}")
    uc = UnicornX86()
    vectors = [v for op in ALL_OPS for v in vectors_for(rng, op, size, VECTORS)]
    expected = [unicorn_expect(uc, v) for v in vectors]
    got = run_alu(vectors)
    failures = []
    for v, (want_rax, want_flags), (res, writes, rflags_out, _) in zip(vectors, expected, got):
        rax = register_after(v, res, writes)
        if rax != want_rax or (rflags_out ^ want_flags) & RFLAGS_ARITH:
            failures.append(
                f"{v['op'].name} {size.name} a={v['a']:#x} b={v['b']:#x} "
                f"count={v.get('count', 0)} flags_in=[{flags_str(v['rflags'])}]: "
                f"rax {rax:#x} vs unicorn {want_rax:#x}, flags [{flags_str(rflags_out)}] vs "
                f"[{flags_str(want_flags)}]")
    assert not failures, f"{len(failures)}/{len(vectors)} mismatches (seed {SEED}):\n" + \
        "\n".join(failures[:20])
    assert len(vectors) >= len(ALL_OPS) * VECTORS


def test_conditions_unicorn():
    """`cond` for all 16 codes on all 64 patterns of CF/PF/ZF/SF/OF(+AF random) vs SETcc."""
    rng = random.Random(f"{SEED}-cc")
    uc = UnicornX86()
    bits = [RFLAGS_CF, RFLAGS_PF, RFLAGS_ZF, RFLAGS_SF, RFLAGS_OF]
    patterns = [sum(b for i, b in enumerate(bits) if p >> i & 1) for p in range(32)]
    vectors = []
    for cc in range(16):
        for p in patterns:
            rflags = p | RFLAGS_FIXED1 | (RFLAGS_AF if rng.getrandbits(1) else 0)
            vectors.append(dict(op=AluOp.MOV, size=OpSize.S64, a=0, b=0, rflags=rflags, cc=cc))
    got = run_alu(vectors)
    for v, (_, _, _, cond) in zip(vectors, got):
        want = uc.setcc(v["cc"], v["rflags"])
        assert cond == want, f"cc={v['cc']:#x} flags [{flags_str(v['rflags'])}]: {cond} != {want}"


def test_lint_alu(tmp_path):
    from sim import flow, lint

    verilog = flow.generate_verilog(Alu, "core_alu", {})
    ok, output = lint.lint_verilog(verilog, top_module="core_alu")
    assert ok, output
