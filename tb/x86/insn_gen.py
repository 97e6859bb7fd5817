"""Random instructions of the core's supported subset, as GNU `as` text plus what they mean.

`random_program(rng, n)` returns `Expect`s: the AT&T text to assemble and the instruction's
meaning as the test asked for it: family, operand size, source size, ALU operation, condition,
and the operands in Intel order, normalised (`semantic` turns a decoded instruction into the
same form). Comparing meanings rather than encodings lets the assembler pick among equivalent
encodings (83 vs 81 vs the accumulator form, disp8 vs disp32, D1 for a shift by one, rel8 vs
rel32) while still checking every field the core uses.

Operand forms (tuples):
  ("reg", n, high)  register n; `high` is True for AH/CH/DH/BH (8-bit, no REX)
  ("mem", base, index, scale, disp, rip)   base/index None when absent, scale 0 without index
  ("imm", value)    immediate, masked to the operand size (shift counts: 8 bits)
  ("rel", offset)   branch target relative to the start of the instruction
  ("cr", n), ("port", n), ("dx",)
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from rtl.core.layouts import OPSIZE_BITS, AluOp, InsnClass, OpSize

R64 = ["rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi"] + [f"r{i}" for i in range(8, 16)]
R32 = ["eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi"] + [f"r{i}d" for i in range(8, 16)]
R16 = ["ax", "cx", "dx", "bx", "sp", "bp", "si", "di"] + [f"r{i}w" for i in range(8, 16)]
R8 = ["al", "cl", "dl", "bl", "spl", "bpl", "sil", "dil"] + [f"r{i}b" for i in range(8, 16)]
R8_LEGACY = ["al", "cl", "dl", "bl", "ah", "ch", "dh", "bh"]     # no REX allowed
REGS = {OpSize.S64: R64, OpSize.S32: R32, OpSize.S16: R16, OpSize.S8: R8}
SUFFIX = {OpSize.S8: "b", OpSize.S16: "w", OpSize.S32: "l", OpSize.S64: "q"}
CC_NAMES = ["o", "no", "b", "ae", "e", "ne", "be", "a", "s", "ns", "p", "np", "l", "ge", "le",
            "g"]
ALU_NAMES = {AluOp.ADD: "add", AluOp.OR: "or", AluOp.ADC: "adc", AluOp.SBB: "sbb",
             AluOp.AND: "and", AluOp.SUB: "sub", AluOp.XOR: "xor", AluOp.CMP: "cmp"}
UNARY_NAMES = {AluOp.INC: "inc", AluOp.DEC: "dec", AluOp.NEG: "neg", AluOp.NOT: "not"}
SHIFT_NAMES = {AluOp.SHL: "shl", AluOp.SHR: "shr", AluOp.SAR: "sar"}
ACC = ("reg", 0, False)


def mask(size):
    return (1 << OPSIZE_BITS[size]) - 1


@dataclass
class Expect:
    text: str
    family: str
    ops: tuple = ()
    opsize: OpSize | None = None
    src_size: OpSize | None = None
    alu_op: AluOp | None = None
    cc: int | None = None


# ---------------------------------------------------------------------------------------------
# Decoded instruction -> meaning

FAMILY = {
    InsnClass.ALU_RM_R: "alu", InsnClass.ALU_R_RM: "alu", InsnClass.ALU_RM_IMM: "alu",
    InsnClass.ALU_ACC_IMM: "alu", InsnClass.UNARY_RM: "unary",
    InsnClass.SHIFT_RM_IMM: "shift", InsnClass.SHIFT_RM_CL: "shift",
    InsnClass.MOV_RM_R: "mov", InsnClass.MOV_R_RM: "mov", InsnClass.MOV_RM_IMM: "mov",
    InsnClass.MOV_OPREG_IMM: "mov",
    InsnClass.PUSH_OPREG: "push", InsnClass.PUSH_RM: "push", InsnClass.PUSH_IMM: "push",
    InsnClass.POP_OPREG: "pop", InsnClass.POP_RM: "pop",
    InsnClass.JMP_REL: "jmp", InsnClass.JMP_RM: "jmp", InsnClass.CALL_REL: "call",
    InsnClass.CALL_RM: "call", InsnClass.IN_IMM: "in", InsnClass.IN_DX: "in",
    InsnClass.OUT_IMM: "out", InsnClass.OUT_DX: "out",
}


def family_of(cls: InsnClass) -> str:
    return FAMILY.get(cls, cls.name.lower())


def semantic(d: dict) -> Expect:
    """The meaning of decoded fields `d` (a `DECODED_LAYOUT` as a dict), in `Expect` form."""
    cls, opsize, src_size = d["cls"], d["opsize"], d["src_size"]

    def reg(n, size):
        return ("reg", n, size == OpSize.S8 and 4 <= n <= 7 and not d["rex"])

    def rm(size):
        if d["mod"] == 3:
            return reg(d["rm"], size)
        return ("mem", d["base"] if d["base_valid"] else None,
                d["index"] if d["index_valid"] else None,
                d["scale"] if d["index_valid"] else 0, d["disp"], bool(d["rip_rel"]))

    def imm(bits=None):
        return ("imm", d["imm"] & ((1 << bits) - 1 if bits else mask(opsize)))

    rel = ("rel", (((d["imm"] + d["length"]) & mask(OpSize.S64)) ^ (1 << 63)) - (1 << 63))
    R, M = reg(d["reg"], opsize), rm(opsize)
    C = InsnClass
    ops = {
        C.ALU_RM_R: (M, R), C.ALU_R_RM: (R, M), C.ALU_RM_IMM: (M, imm()),
        C.ALU_ACC_IMM: (ACC, imm()), C.UNARY_RM: (M,), C.SHIFT_RM_IMM: (M, imm(8)),
        C.SHIFT_RM_CL: (M, ("reg", 1, False)),
        C.MOV_RM_R: (M, R), C.MOV_R_RM: (R, M), C.MOV_RM_IMM: (M, imm()),
        C.MOV_OPREG_IMM: (reg(d["opreg"], opsize), imm()),
        C.MOVZX: (R, rm(src_size)), C.MOVSX: (R, rm(src_size)), C.LEA: (R, M),
        C.CMOVCC: (R, M), C.SETCC: (M,),
        C.PUSH_OPREG: (reg(d["opreg"], opsize),), C.POP_OPREG: (reg(d["opreg"], opsize),),
        C.PUSH_RM: (M,), C.POP_RM: (M,), C.PUSH_IMM: (imm(),),
        C.JCC: (rel,), C.JMP_REL: (rel,), C.CALL_REL: (rel,), C.JMP_RM: (M,), C.CALL_RM: (M,),
        C.NOP: (M,) if d["has_modrm"] else (),
        C.MOV_FROM_CR: (reg(d["rm"], opsize), ("cr", d["reg"])),
        C.MOV_TO_CR: (("cr", d["reg"]), reg(d["rm"], opsize)),
        C.INVLPG: (M,),
        C.IN_IMM: (ACC, ("port", d["imm"])), C.IN_DX: (ACC, ("dx",)),
        C.OUT_IMM: (("port", d["imm"]), ACC), C.OUT_DX: (("dx",), ACC),
        C.VMREAD: (M, R), C.VMWRITE: (R, M),
        C.VMPTRLD: (M,), C.VMPTRST: (M,), C.VMCLEAR: (M,), C.VMXON: (M,),
        C.INVEPT: (R, M), C.INVVPID: (R, M),
    }.get(cls, ())
    has_alu = cls in (C.ALU_RM_R, C.ALU_R_RM, C.ALU_RM_IMM, C.ALU_ACC_IMM, C.UNARY_RM,
                      C.SHIFT_RM_IMM, C.SHIFT_RM_CL)
    has_cc = cls in (C.JCC, C.SETCC, C.CMOVCC)
    return Expect("", family_of(cls), ops, opsize, src_size,
                  d["alu_op"] if has_alu else None, d["cc"] if has_cc else None)


# ---------------------------------------------------------------------------------------------
# Random instructions


class Gen:
    def __init__(self, rng: random.Random):
        self.rng = rng

    # Operands ----------------------------------------------------------------------------
    def size(self, byte=True):
        return self.rng.choice(list(OpSize) if byte else [OpSize.S16, OpSize.S32, OpSize.S64])

    def reg(self, size, legacy8=False, exclude=()):
        """(AT&T text, operand) of a random register of `size`."""
        if size == OpSize.S8 and legacy8:
            n = self.rng.choice([i for i in range(8) if i not in exclude])
            return "%" + R8_LEGACY[n], ("reg", n, n >= 4)
        n = self.rng.choice([i for i in range(16) if i not in exclude])
        return "%" + REGS[size][n], ("reg", n, False)

    def disp(self):
        r = self.rng.random()
        if r < 0.2:
            return 0
        if r < 0.6:
            return self.rng.randint(-128, 127)
        return self.rng.randint(-(1 << 31), (1 << 31) - 1)

    def mem(self, low_regs=False):
        """(AT&T text, operand) of a random memory operand (low_regs: no r8-r15, no REX)."""
        rng = self.rng
        regs = range(8) if low_regs else range(16)
        disp = self.disp()
        kind = rng.random()
        if kind < 0.12:
            return f"{disp}(%rip)", ("mem", None, None, 0, disp, True)
        base = rng.choice(regs) if kind < 0.85 else None
        index = rng.choice([i for i in regs if i != 4]) if rng.random() < 0.5 else None
        scale = rng.randrange(4)
        if base is None and index is None:
            return f"{disp}", ("mem", None, None, 0, disp, False)
        text = f"{disp}(" + (f"%{R64[base]}" if base is not None else "")
        if index is not None:
            text += f",%{R64[index]},{1 << scale}"
        text += ")"
        return text, ("mem", base, index, scale if index is not None else 0, disp, False)

    def rm(self, size, legacy8=False):
        if self.rng.random() < 0.5:
            return self.reg(size, legacy8)
        return self.mem(low_regs=legacy8)

    def imm(self, size, fits8=None):
        rng = self.rng
        if fits8 or (fits8 is None and rng.random() < 0.4):
            v = rng.randint(-128, 127)
        elif size == OpSize.S8:
            v = rng.randint(-128, 255)
        elif size == OpSize.S16:
            v = rng.randint(-32768, 65535)
        else:
            v = rng.randint(-(1 << 31), (1 << 31) - 1)
        return v

    # Instructions --------------------------------------------------------------------------
    def alu(self):
        rng = self.rng
        op = rng.choice(list(ALU_NAMES) + [AluOp.TEST])
        name = "test" if op == AluOp.TEST else ALU_NAMES[op]
        size = self.size()
        sfx = SUFFIX[size]
        legacy8 = size == OpSize.S8 and rng.random() < 0.3
        form = rng.choice(["rr", "mr", "rm", "imm"])
        if op == AluOp.TEST and form == "rm":
            form = "mr"
        if form == "rr":
            (st, so), (dt, do) = self.reg(size, legacy8), self.reg(size, legacy8)
            pseudo = "" if op == AluOp.TEST else rng.choice(["", "{load} ", "{store} "])
            return Expect(f"{pseudo}{name}{sfx} {st}, {dt}", "alu", (do, so), size, alu_op=op)
        if form == "mr":
            (st, so), (mt, mo) = self.reg(size, legacy8), self.mem(legacy8)
            return Expect(f"{name}{sfx} {st}, {mt}", "alu", (mo, so), size, alu_op=op)
        if form == "rm":
            (mt, mo), (dt, do) = self.mem(legacy8), self.reg(size, legacy8)
            return Expect(f"{name}{sfx} {mt}, {dt}", "alu", (do, mo), size, alu_op=op)
        v = self.imm(size)
        dt, do = self.rm(size, legacy8)
        return Expect(f"{name}{sfx} ${v}, {dt}", "alu", (do, ("imm", v & mask(size))), size,
                      alu_op=op)

    def unary(self):
        op = self.rng.choice(list(UNARY_NAMES))
        size = self.size()
        dt, do = self.rm(size, self.rng.random() < 0.3)
        return Expect(f"{UNARY_NAMES[op]}{SUFFIX[size]} {dt}", "unary", (do,), size, alu_op=op)

    def shift(self):
        rng = self.rng
        op = rng.choice(list(SHIFT_NAMES))
        size = self.size()
        dt, do = self.rm(size, rng.random() < 0.3)
        text = f"{SHIFT_NAMES[op]}{SUFFIX[size]}"
        if rng.random() < 0.3:
            return Expect(f"{text} %cl, {dt}", "shift", (do, ("reg", 1, False)), size, alu_op=op)
        count = rng.choice([0, 1, 1, rng.randrange(64), rng.randrange(256)])
        return Expect(f"{text} ${count}, {dt}", "shift", (do, ("imm", count)), size, alu_op=op)

    def mov(self):
        rng = self.rng
        size = self.size()
        sfx = SUFFIX[size]
        legacy8 = size == OpSize.S8 and rng.random() < 0.3
        form = rng.choice(["rr", "mr", "rm", "ir", "im", "abs"])
        if form == "rr":
            (st, so), (dt, do) = self.reg(size, legacy8), self.reg(size, legacy8)
            pseudo = rng.choice(["", "{load} ", "{store} "])
            return Expect(f"{pseudo}mov{sfx} {st}, {dt}", "mov", (do, so), size)
        if form == "mr":
            (st, so), (mt, mo) = self.reg(size, legacy8), self.mem(legacy8)
            return Expect(f"mov{sfx} {st}, {mt}", "mov", (mo, so), size)
        if form == "rm":
            (mt, mo), (dt, do) = self.mem(legacy8), self.reg(size, legacy8)
            return Expect(f"mov{sfx} {mt}, {dt}", "mov", (do, mo), size)
        if form == "abs":
            v = rng.getrandbits(64)
            dt, do = self.reg(OpSize.S64)
            return Expect(f"movabsq ${v:#x}, {dt}", "mov", (do, ("imm", v)), OpSize.S64)
        v = self.imm(size)
        dt, do = self.reg(size, legacy8) if form == "ir" else self.mem(legacy8)
        return Expect(f"mov{sfx} ${v}, {dt}", "mov", (do, ("imm", v & mask(size))), size)

    def movx(self):
        rng = self.rng
        kind = rng.choice(["zb", "zw", "sb", "sw", "sl"])
        src = {"b": OpSize.S8, "w": OpSize.S16, "l": OpSize.S32}[kind[1]]
        dst = rng.choice([s for s in OpSize if OPSIZE_BITS[s] > OPSIZE_BITS[src]
                          and not (kind[1] == "w" and s == OpSize.S16)])
        if kind == "sl":
            dst = OpSize.S64
        # AH..BH as the source forbid any REX: a destination among the first eight, not 64-bit.
        legacy8 = src == OpSize.S8 and dst != OpSize.S64 and rng.random() < 0.3
        st, so = self.rm(src, legacy8)
        dt, do = self.reg(dst, exclude=range(8, 16) if legacy8 else ())
        mnem = f"mov{kind[0]}{kind[1]}{SUFFIX[dst]}" if kind != "sl" else "movslq"
        fam = "movzx" if kind[0] == "z" else "movsx"
        return Expect(f"{mnem} {st}, {dt}", fam, (do, so), dst, src_size=src)

    def lea(self):
        size = self.size(byte=False)
        (mt, mo), (dt, do) = self.mem(), self.reg(size)
        return Expect(f"lea{SUFFIX[size]} {mt}, {dt}", "lea", (do, mo), size)

    def stack(self):
        rng = self.rng
        form = rng.choice(["push_r", "pop_r", "push_m", "pop_m", "push_i", "push_r16"])
        if form in ("push_r", "pop_r"):
            rt, ro = self.reg(OpSize.S64)
            return Expect(f"{form[:-2]} {rt}", form[:-2], (ro,), OpSize.S64)
        if form == "push_r16":
            rt, ro = self.reg(OpSize.S16)
            return Expect(f"push {rt}", "push", (ro,), OpSize.S16)
        if form in ("push_m", "pop_m"):
            mt, mo = self.mem()
            return Expect(f"{form[:-2]}q {mt}", form[:-2], (mo,), OpSize.S64)
        v = self.imm(OpSize.S32)
        return Expect(f"pushq ${v}", "push", (("imm", v & mask(OpSize.S64)),), OpSize.S64)

    def branch(self):
        rng = self.rng
        form = rng.choice(["jcc", "jmp", "call", "jmp_rm", "call_rm"])
        target = rng.choice([rng.randint(-100, 100), rng.randint(-(1 << 30), 1 << 30)])
        pseudo = rng.choice(["", "{disp32} "])
        if form == "jcc":
            cc = rng.randrange(16)
            return Expect(f"{pseudo}j{CC_NAMES[cc]} .{target:+d}", "jcc", (("rel", target),),
                          OpSize.S64, cc=cc)
        if form in ("jmp", "call"):
            if form == "call":
                pseudo = ""
            return Expect(f"{pseudo}{form} .{target:+d}", form, (("rel", target),), OpSize.S64)
        rt, ro = self.rm(OpSize.S64)
        return Expect(f"{form[:-3]}q *{rt}" if ro[0] == "mem" else f"{form[:-3]} *{rt}",
                      form[:-3], (ro,), OpSize.S64)

    def cond(self):
        rng = self.rng
        cc = rng.randrange(16)
        if rng.random() < 0.5:
            legacy8 = rng.random() < 0.3
            dt, do = self.rm(OpSize.S8, legacy8)
            return Expect(f"set{CC_NAMES[cc]}{'b' if do[0] == 'mem' else ''} {dt}", "setcc",
                          (do,), OpSize.S8, cc=cc)
        size = self.size(byte=False)
        (st, so), (dt, do) = self.rm(size), self.reg(size)
        return Expect(f"cmov{CC_NAMES[cc]}{SUFFIX[size]} {st}, {dt}", "cmovcc", (do, so), size,
                      cc=cc)

    def system(self):
        rng = self.rng
        form = rng.choice(["plain", "cr", "invlpg", "io", "nopm"])
        if form == "plain":
            text, fam, size = rng.choice([
                ("ret", "ret", OpSize.S64), ("pushfq", "pushf", OpSize.S64),
                ("popfq", "popf", OpSize.S64), ("nop", "nop", OpSize.S32),
                ("pause", "nop", OpSize.S32), ("hlt", "hlt", OpSize.S32),
                ("cpuid", "cpuid", OpSize.S32), ("rdtsc", "rdtsc", OpSize.S32),
                ("rdmsr", "rdmsr", OpSize.S32), ("wrmsr", "wrmsr", OpSize.S32)])
            return Expect(text, fam, (), size)
        if form == "cr":
            cr = rng.choice([0, 3, 4])
            rt, ro = self.reg(OpSize.S64)
            if rng.random() < 0.5:
                return Expect(f"mov %cr{cr}, {rt}", "mov_from_cr", (ro, ("cr", cr)), OpSize.S64)
            return Expect(f"mov {rt}, %cr{cr}", "mov_to_cr", (("cr", cr), ro), OpSize.S64)
        if form == "invlpg":
            mt, mo = self.mem()
            return Expect(f"invlpg {mt}", "invlpg", (mo,))
        if form == "nopm":
            size = rng.choice([OpSize.S16, OpSize.S32])
            mt, mo = self.rm(size)
            return Expect(f"nop{SUFFIX[size]} {mt}", "nop", (mo,), size)
        size = rng.choice([OpSize.S8, OpSize.S16, OpSize.S32])
        acc = "%" + REGS[size][0]
        port = rng.randrange(256)
        if rng.random() < 0.5:
            if rng.random() < 0.5:
                return Expect(f"in{SUFFIX[size]} ${port}, {acc}", "in", (ACC, ("port", port)),
                              size)
            return Expect(f"in{SUFFIX[size]} %dx, {acc}", "in", (ACC, ("dx",)), size)
        if rng.random() < 0.5:
            return Expect(f"out{SUFFIX[size]} {acc}, ${port}", "out", (("port", port), ACC),
                          size)
        return Expect(f"out{SUFFIX[size]} {acc}, %dx", "out", (("dx",), ACC), size)

    def vmx(self):
        rng = self.rng
        name = rng.choice(["vmcall", "vmlaunch", "vmresume", "vmxoff", "vmfunc", "vmptrld",
                           "vmptrst", "vmclear", "vmxon", "vmread", "vmwrite", "invept",
                           "invvpid"])
        s64 = OpSize.S64
        if name in ("vmcall", "vmlaunch", "vmresume", "vmxoff", "vmfunc"):
            return Expect(name, name, (), s64)
        if name in ("vmptrld", "vmptrst", "vmclear", "vmxon"):
            mt, mo = self.mem()
            return Expect(f"{name} {mt}", name, (mo,), s64)
        if name in ("invept", "invvpid"):
            (mt, mo), (rt, ro) = self.mem(), self.reg(s64)
            return Expect(f"{name} {mt}, {rt}", name, (ro, mo), s64)
        (ft, fo), (xt, xo) = self.reg(s64), self.rm(s64)
        if name == "vmread":        # vmread %field, dest
            return Expect(f"vmread {ft}, {xt}", name, (xo, fo), s64)
        return Expect(f"vmwrite {xt}, {ft}", name, (fo, xo), s64)

    KINDS = ("alu", "alu", "alu", "unary", "shift", "mov", "mov", "movx", "lea", "stack",
             "branch", "cond", "system", "vmx")

    def one(self) -> Expect:
        return getattr(self, self.rng.choice(self.KINDS))()


def random_program(rng: random.Random, n: int) -> list[Expect]:
    gen = Gen(rng)
    return [gen.one() for _ in range(n)]
