"""The core's decoder (`rtl.core.decode.Decoder`) in Amaranth's simulator.

* random: instructions of the whole supported subset (random registers including r8-r15 and
  AH..BH, memory operands with and without base/index, every scale, disp8/disp32, RIP-relative,
  absolute; random immediates and branch targets) assembled by GNU `as`; each decoded from the
  15-byte window the core would fetch (the instruction and the bytes after it) and checked for
  length (as `as` encoded it), class, operand size, source size, ALU operation, condition and
  every operand (registers, base/index/scale/disp/RIP, immediate, branch target), compared by
  meaning (`tb.x86.insn_gen.semantic`) so that `as` may pick any equivalent encoding;
* directed: each VMX instruction's encoding and operands, mandatory prefixes, prefix order and
  REX placement, REX.W forms, the 15-byte limit, #UD encodings (unsupported opcodes, register
  forms of memory-only instructions, LOCK misuse, CR2/CR8, 67 with memory);
* Verilator lint of the generated Verilog.

`VTX_SEED` seeds the randomness; `VTX_DECODE_VECTORS` is the number of random instructions
(default 1500, one assembly, one simulation).
"""

from __future__ import annotations

import os
import random

import pytest

from rtl.core.decode import Decoder
from rtl.core.layouts import SEG_CS, SEG_FS, SEG_NONE, AluOp, InsnClass, OpMap, OpSize
from tb.x86.asm import assemble, tool
from tb.x86.decoder_tb import decode_windows
from tb.x86.insn_gen import random_program, semantic

SEED = int(os.environ.get("VTX_SEED", "1"))
VECTORS = int(os.environ.get("VTX_DECODE_VECTORS", "1500"))

C = InsnClass


def mismatches(expect, code, d):
    """What differs between the instruction the test asked for and the decoded `d`."""
    s = semantic(d)
    errs = []
    if d["ud"] or d["too_long"]:
        errs.append(f"ud={d['ud']} too_long={d['too_long']}")
    if d["length"] != len(code):
        errs.append(f"length {d['length']} != {len(code)}")
    if s.family != expect.family:
        errs.append(f"family {s.family} != {expect.family}")
    if s.ops != expect.ops:
        errs.append(f"operands {s.ops} != {expect.ops}")
    for name in ("opsize", "src_size", "alu_op", "cc"):
        want = getattr(expect, name)
        if want is not None and getattr(s, name) != want:
            errs.append(f"{name} {getattr(s, name)} != {want}")
    return errs


def test_random_assembled():
    tool("as")
    rng = random.Random(f"{SEED}-decode")
    program = random_program(rng, VECTORS)
    code, image, offsets = assemble([e.text for e in program])
    decoded = decode_windows([image[o:o + 15] for o in offsets])
    failures = []
    for e, c, d in zip(program, code, decoded):
        errs = mismatches(e, c, d)
        if errs:
            failures.append(f"{e.text:40} {c.hex():32} {'; '.join(errs)}")
    assert not failures, f"{len(failures)}/{len(program)} mismatches (seed {SEED}):\n" + \
        "\n".join(failures[:30])
    # Every class of the subset was exercised (the generator covers all of them).
    seen = {d["cls"] for d in decoded}
    if VECTORS >= 1000:
        assert seen == set(InsnClass) - {C.INVALID}, f"not exercised: {set(InsnClass) - seen}"


# ---------------------------------------------------------------------------------------------
# Directed


def h(text):
    return bytes.fromhex(text.replace(" ", ""))


#: (name, bytes, expected fields). Bytes are followed by filler in the window.
DIRECTED = [
    # The 13 VMX instructions.
    ("vmcall", "0f01c1", dict(cls=C.VMCALL, length=3, mem=0)),
    ("vmlaunch", "0f01c2", dict(cls=C.VMLAUNCH, length=3)),
    ("vmresume", "0f01c3", dict(cls=C.VMRESUME, length=3)),
    ("vmxoff", "0f01c4", dict(cls=C.VMXOFF, length=3)),
    ("vmfunc", "0f01d4", dict(cls=C.VMFUNC, length=3)),
    ("vmptrld (%rax)", "0fc730", dict(cls=C.VMPTRLD, length=3, mem=1, base_valid=1, base=0)),
    ("vmptrst 8(%r9)", "410fc77908", dict(cls=C.VMPTRST, length=5, mem=1, base=9, disp=8)),
    ("vmclear (%rcx)", "660fc731", dict(cls=C.VMCLEAR, length=4, base=1, pfx_66=1)),
    ("vmxon 0x10(%rip)", "f30fc73510000000",
     dict(cls=C.VMXON, length=8, rip_rel=1, base_valid=0, disp=0x10)),
    ("vmread %rax, %rbx", "0f78c3", dict(cls=C.VMREAD, length=3, mod=3, reg=0, rm=3,
                                          opsize=OpSize.S64)),
    ("vmwrite (%r8,%r9,8), %r10", "470f7914c8",
     dict(cls=C.VMWRITE, length=5, reg=10, base=8, index=9, scale=3, opsize=OpSize.S64)),
    ("invept (%rdx), %rcx", "660f38800a", dict(cls=C.INVEPT, length=5, reg=1, base=2,
                                                map=OpMap.MAP_0F38)),
    ("invvpid -4(%rsp), %r11", "66440f385c24fc",
     dict(ud=1)),    # 0F 38 5C is not INVVPID: a wrong third byte is #UD
    ("invvpid -4(%rsp), %r11 (real)", "66440f38815c24fc",
     dict(cls=C.INVVPID, length=8, reg=11, base=4, index_valid=0, disp=-4)),
    # VMX encodings that are not (mandatory prefixes, register forms).
    ("rdrand: 0F C7 /6 mod=3", "0fc7f0", dict(ud=1)),
    ("rdseed: 0F C7 /7 mod=3", "0fc7f8", dict(ud=1)),
    ("F2 0F C7 /6", "f20fc730", dict(ud=1)),
    ("66 F3 0F C7 /6", "66f30fc730", dict(ud=1)),
    ("66 0F C7 /7", "660fc738", dict(ud=1)),
    ("F3 0F C7 /7", "f30fc738", dict(ud=1)),
    ("0F C7 /1 (cmpxchg8b)", "0fc708", dict(ud=1)),
    ("INVEPT without 66", "0f38800a", dict(ud=1)),
    ("INVEPT register form", "660f3880ca", dict(ud=1)),
    ("66 0F 78 (EXTRQ)", "660f78c3", dict(ud=1)),
    ("F2 0F 79", "f20f79c3", dict(ud=1)),
    ("0F 01 C5 (not VMX)", "0f01c5", dict(ud=1)),
    ("0F 01 F8 (SWAPGS)", "0f01f8", dict(ud=1)),
    ("0F 01 D0 (XGETBV)", "0f01d0", dict(ud=1)),
    ("invlpg (%rax)", "0f0138", dict(cls=C.INVLPG, length=3, mem=1, base=0)),
    # Prefix order, REX placement, segment overrides.
    ("66 48: REX.W wins", "664801d8", dict(cls=C.ALU_RM_R, opsize=OpSize.S64, length=4)),
    ("48 66: REX before a legacy prefix is ignored", "486601d8",
     dict(cls=C.ALU_RM_R, opsize=OpSize.S16, rex=0, length=4)),
    ("4C 41: only the last REX counts", "4c4101d8",
     dict(cls=C.ALU_RM_R, opsize=OpSize.S32, rex_r=0, rex_b=1, rm=8, reg=3, length=4)),
    ("2E 66 seg CS", "2e6601d8", dict(seg=SEG_CS, pfx_66=1, opsize=OpSize.S16)),
    ("64 48 8B 00: FS override", "64488b00", dict(cls=C.MOV_R_RM, seg=SEG_FS, length=4)),
    ("64 2E: the last segment prefix wins", "642e8b00", dict(seg=SEG_CS)),
    ("no segment prefix", "8b00", dict(seg=SEG_NONE)),
    ("F3 90 pause", "f390", dict(cls=C.NOP, length=2, pfx_f3=1)),
    ("41 90 is xchg r8: #UD", "4190", dict(ud=1)),
    ("LOCK add to memory", "f0480118", dict(cls=C.ALU_RM_R, pfx_lock=1, length=4)),
    ("LOCK neg memory", "f0f718", dict(cls=C.UNARY_RM, alu_op=AluOp.NEG, pfx_lock=1)),
    ("LOCK add register", "f04801d8", dict(ud=1)),
    ("LOCK cmp memory", "f03918", dict(ud=1)),
    ("LOCK mov", "f08918", dict(ud=1)),
    ("LOCK nop", "f090", dict(ud=1)),
    ("67 with memory", "678b00", dict(ud=1)),
    ("67 without memory", "6701d8", dict(cls=C.ALU_RM_R, length=3)),
    # REX.W and immediates.
    ("movabs imm64", "48b88877665544332211",
     dict(cls=C.MOV_OPREG_IMM, length=10, opreg=0, imm=0x1122334455667788)),
    ("mov r8d, imm32", "41b8ffffffff", dict(cls=C.MOV_OPREG_IMM, length=6, opreg=8,
                                            opsize=OpSize.S32)),
    ("mov ax, imm16", "66b83412", dict(cls=C.MOV_OPREG_IMM, length=4, imm=0x1234,
                                       opsize=OpSize.S16)),
    ("mov r64, simm32", "48c7c0feffffff", dict(cls=C.MOV_RM_IMM, length=7, imm=(1 << 64) - 2)),
    ("add r64, simm8", "4883c080", dict(cls=C.ALU_RM_IMM, imm=(1 << 64) - 128)),
    ("add r16, imm16", "6681c03412", dict(cls=C.ALU_RM_IMM, length=5, imm=0x1234)),
    ("in al, 0xE9 (port zero-extended)", "e4e9", dict(cls=C.IN_IMM, imm=0xE9, length=2,
                                                      opsize=OpSize.S8)),
    ("out 0xF4, eax; REX.W ignored", "48e7f4", dict(cls=C.OUT_IMM, imm=0xF4,
                                                   opsize=OpSize.S32)),
    ("shl by one: imm 1", "d1e0", dict(cls=C.SHIFT_RM_IMM, alu_op=AluOp.SHL, imm=1, length=2)),
    ("sar cl", "48d3f8", dict(cls=C.SHIFT_RM_CL, alu_op=AluOp.SAR, opsize=OpSize.S64)),
    ("jz rel32 (66 ignored)", "660f8400010000", dict(cls=C.JCC, cc=4, imm=0x100, length=7)),
    ("jmp rel8 back", "ebfe", dict(cls=C.JMP_REL, imm=(1 << 64) - 2, length=2)),
    ("push imm8", "6aff", dict(cls=C.PUSH_IMM, imm=(1 << 64) - 1, opsize=OpSize.S64)),
    ("push r12 (REX.B)", "4154", dict(cls=C.PUSH_OPREG, opreg=12, opsize=OpSize.S64)),
    ("push ax", "6650", dict(cls=C.PUSH_OPREG, opsize=OpSize.S16)),
    # ModRM/SIB corner cases.
    ("RIP-relative", "8b0510000000", dict(rip_rel=1, base_valid=0, index_valid=0, disp=0x10,
                                          length=6)),
    ("absolute (SIB, no base, no index)", "8b042578563412",
     dict(rip_rel=0, base_valid=0, index_valid=0, disp=0x12345678, length=7)),
    ("REX.X: index 100 is r12", "428b0425f0ffffff",
     dict(base_valid=0, index_valid=1, index=12, scale=0, disp=-16)),
    ("r13 base needs a disp8", "418b4500", dict(base_valid=1, base=13, disp=0, length=4)),
    ("rsp base (SIB)", "8b0424", dict(base=4, index_valid=0, length=3)),
    ("mod=00 SIB base 101 + r13 index: disp32", "428b04adf0000000",
     dict(base_valid=0, index=13, scale=2, disp=0xF0, length=8)),
    ("MOV CR ignores mod", "0f2000", dict(cls=C.MOV_FROM_CR, mod=3, rm=0, reg=0, mem=0,
                                          length=3)),
    ("mov %cr4, %r9", "410f20e1", dict(cls=C.MOV_FROM_CR, rm=9, reg=4, length=4)),
    ("mov %rax, %cr3", "0f22d8", dict(cls=C.MOV_TO_CR, reg=3, rm=0)),
    ("mov %cr2: not implemented", "0f20d0", dict(ud=1)),
    ("mov %cr8 (REX.R): not implemented", "440f20c0", dict(ud=1)),
    ("movsxd", "4c63c0", dict(cls=C.MOVSX, src_size=OpSize.S32, opsize=OpSize.S64, reg=8)),
    ("movzbl %ah", "0fb6c4", dict(cls=C.MOVZX, src_size=OpSize.S8, rex=0, rm=4)),
    ("nopw 0(%rax,%rax,1)", "660f1f440000", dict(cls=C.NOP, length=6)),
    ("0F 1F /1 (not NOP /0)", "0f1f08", dict(ud=1)),
    # Unsupported opcodes.
    ("ud2", "0f0b", dict(ud=1)),
    ("syscall", "0f05", dict(ud=1)),
    ("push es (invalid in 64-bit)", "06", dict(ud=1)),
    ("0x62 (EVEX)", "62", dict(ud=1)),
    ("0xD4 (AAM)", "d40a", dict(ud=1)),
    ("0F 3A", "0f3a0f", dict(ud=1)),
    ("xchg", "87c3", dict(ud=1)),
    ("imul", "0fafc3", dict(ud=1)),
    ("mul: F7 /4", "f7e3", dict(ud=1)),
    ("rol: C1 /0", "c1c003", dict(ud=1)),
    ("sal /6 alias", "d1f0", dict(ud=1)),
    ("far call: FF /3", "ff18", dict(ud=1)),
    ("pop r/m /1", "8f08", dict(ud=1)),
    ("mov r/m imm /1", "c7c800000000", dict(ud=1)),
    ("lea register form", "8dc0", dict(ud=1)),
    ("invlpg register form", "0f01f9", dict(ud=1)),
    ("ret imm16 (not supported)", "c20800", dict(ud=1)),
    ("0x82 (invalid in 64-bit)", "82c001", dict(ud=1)),
    # The 15-byte limit (#GP, reported as too_long).
    ("14 prefixes + nop = 15 bytes", "66" * 14 + "90", dict(cls=C.NOP, length=15, too_long=0)),
    ("15 prefixes: no opcode", "2e" * 15, dict(too_long=1, ud=0, cls=C.INVALID)),
    ("3 prefixes + 12-byte mov = 15", "2e" * 3 + "48c7042578563412efbeadde",
     dict(cls=C.MOV_RM_IMM, length=15, too_long=0)),
    ("4 prefixes + 12-byte mov = 16", "2e" * 4 + "48c7042578563412efbeadde",
     dict(too_long=1, ud=0, cls=C.INVALID)),
    ("13 prefixes + 0F + opcode beyond", "2e" * 13 + "0f01", dict(too_long=1)),
    ("14 prefixes + 0F: opcode beyond the window", "2e" * 14 + "0f", dict(too_long=1)),
]


@pytest.fixture(scope="module")
def directed_results():
    """All directed windows through one simulation; the filler after each is 0xCC."""
    windows = [(h(b) + b"\xcc" * 15)[:15] for _, b, _ in DIRECTED]
    return dict(zip([c[0] for c in DIRECTED], decode_windows(windows)))


@pytest.mark.parametrize("case", DIRECTED, ids=[c[0] for c in DIRECTED])
def test_directed(case, directed_results):
    name, code, want = case
    d = directed_results[name]
    if not want.get("ud") and not want.get("too_long"):
        want = {"ud": 0, "too_long": 0, **want}
    got = {k: d[k] for k in want}
    assert got == want, f"{name} ({code}): {got} != {want}"


def test_ud_is_invalid_class(directed_results):
    """Whenever ud or too_long is set, the class is INVALID (a waveform shows why)."""
    for name, d in directed_results.items():
        if d["ud"] or d["too_long"]:
            assert d["cls"] == C.INVALID, name
            assert not (d["ud"] and d["too_long"]), name


def test_trailing_bytes_do_not_matter():
    """The bytes after an instruction (the next instructions) never change its decode."""
    rng = random.Random(f"{SEED}-trailing")
    program = random_program(rng, 60)
    code, _, _ = assemble([e.text for e in program])
    windows = []
    for c in code:
        windows += [(c + bytes(rng.getrandbits(8) for _ in range(15)))[:15] for _ in range(3)]
    decoded = decode_windows(windows)
    for k, c in enumerate(code):
        a, b, d = decoded[3 * k:3 * k + 3]
        assert a == b == d, f"{c.hex()}: decode depends on the following bytes"


def test_lint_decoder():
    from sim import flow, lint

    verilog = flow.generate_verilog(Decoder, "core_decoder", {})
    ok, output = lint.lint_verilog(verilog, top_module="core_decoder")
    assert ok, output
