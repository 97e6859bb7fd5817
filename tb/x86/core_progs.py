"""Random x86-64 programs of the core's integer subset, for the differential test against Unicorn.

`random_programs(rng, count)` returns `count` `tb.x86.core_tb.Program`s assembled in one GNU
`as` run (`random_program(rng, n)` one of them): `n` random instructions (AT&T text) followed by
`<prefix>hlt_here: hlt`, a few small functions reached by CALL (rel32 and
through a register) that end in RET, and a RIP-relative data table; random initial registers,
flags, data and stack memory.

Registers with a role, never written by the random instructions (so every memory operand stays
inside the mapped regions): RSP (stack, kept within +-64 qwords of its start), RBP (DATA base +
0x1000, operands at +-0x400), R15 (DATA base + 0x200), R14 (an index 0..31). Every other GPR is
random and freely written. Forms: ALU group (reg/reg incl. AH..BH, imm, load and store forms,
8/16/32/64 bits), INC/DEC/NEG/NOT, SHL/SHR/SAR by 1, imm8 and CL, MOV (all forms, movabs),
MOVZX/MOVSX/MOVSXD, LEA (any registers), SETcc, CMOVcc, PUSH/POP (reg, imm, memory),
PUSHFQ/POPFQ, NOP, forward Jcc/JMP over a few instructions, CALL/RET.
"""

from __future__ import annotations

import random

from rtl.arch.vmx import RFLAGS_ARITH, RFLAGS_DF, RFLAGS_FIXED1

from .core_tb import DATA_BASE, DATA_SIZE, STACK_BASE, STACK_SIZE, Program, assemble_programs
from .insn_gen import CC_NAMES, R8, R8_LEGACY, R16, R32, R64

WRITABLE = [0, 1, 2, 3, 6, 7, 8, 9, 10, 11, 12, 13]     # rax..rbx, rsi, rdi, r8..r13
LEGACY8 = [0, 1, 2, 3]                                    # al..bl, and ah..bh as 4..7
RBP_VALUE = DATA_BASE + 0x1000
R15_VALUE = DATA_BASE + 0x200
RSP_VALUE = STACK_BASE + STACK_SIZE // 2
SIZES = ["b", "w", "l", "q"]
REGS = {"b": R8, "w": R16, "l": R32, "q": R64}
BYTES = {"b": 1, "w": 2, "l": 4, "q": 8}
IMM_BITS = {"b": 8, "w": 16, "l": 32, "q": 32}
ALU = ["add", "or", "adc", "sbb", "and", "sub", "xor", "cmp", "test"]
TABLE_QWORDS = 16


def _imm(rng, s):
    bits = IMM_BITS[s]
    v = rng.choice([0, 1, -1, rng.randrange(-128, 128), rng.randrange(-(1 << (bits - 1)),
                                                                      1 << (bits - 1))])
    return max(min(v, (1 << (bits - 1)) - 1), -(1 << (bits - 1)))


def _wreg(rng, s):
    return "%" + REGS[s][rng.choice(WRITABLE)]


def _anyreg(rng, s):
    return "%" + REGS[s][rng.randrange(16)]


def _mem(rng, s):
    """A memory operand inside DATA (or the stack, or the RIP-relative table)."""
    size = BYTES[s]
    kind = rng.randrange(4)
    if kind == 0:
        return f"{rng.randrange(-0x400, 0x400 - size)}(%rbp)"
    if kind == 1:
        return f"{rng.randrange(-0x100, 0x300)}(%r15,%r14,{rng.choice([1, 2, 4, 8])})"
    if kind == 2:
        return f"tab+{rng.randrange(0, TABLE_QWORDS * 8 - size)}(%rip)"
    return f"{rng.randrange(0, 0x40)}(%rsp)"


class _Gen:
    """The instruction mix above; subclasses (tb.x86.pipeline_progs) change `straight`, what
    follows a RET and how the program ends."""

    def __init__(self, rng, prefix):
        self.rng = rng
        self.prefix = prefix
        self.depth = 0          # qwords pushed
        self.labels = 0
        self.fault_vector = None    # set by `ending` when the program ends in a fault

    def ret(self):
        """A function's last lines."""
        return ["ret"]

    def item(self):
        """One item of a program's main body (functions take `straight` only)."""
        return self.straight()

    def ending(self):
        """Lines between the random body and the final HLT (a subclass may end in a fault at
        the label `<prefix>fault_here`)."""
        return []

    def alu(self):
        rng = self.rng
        op = rng.choice(ALU)
        s = rng.choice(SIZES)
        form = rng.randrange(6)
        if form == 0 and s == "b":      # legacy 8-bit registers, AH..BH included
            a, b = (R8_LEGACY[rng.randrange(8)] for _ in range(2))
            return f"{op}b %{a}, %{b}"
        if form <= 1:
            return f"{op}{s} {_anyreg(rng, s)}, {_wreg(rng, s)}"
        if form == 2:
            return f"{op}{s} ${_imm(rng, s)}, {_wreg(rng, s)}"
        if form == 3 and op != "test":
            return f"{op}{s} {_mem(rng, s)}, {_wreg(rng, s)}"
        if form == 4:
            return f"{op}{s} {_anyreg(rng, s)}, {_mem(rng, s)}"
        return f"{op}{s} ${_imm(rng, s)}, {_mem(rng, s)}"

    def unary(self):
        rng = self.rng
        s = rng.choice(SIZES)
        dst = _wreg(rng, s) if rng.randrange(2) else _mem(rng, s)
        return f"{rng.choice(['inc', 'dec', 'neg', 'not'])}{s} {dst}"

    def shift(self):
        rng = self.rng
        s = rng.choice(SIZES)
        dst = _wreg(rng, s) if rng.randrange(3) else _mem(rng, s)
        op = rng.choice(["shl", "shr", "sar"])
        cnt = rng.choice(["", "$1, ", f"${rng.randrange(256)}, ", f"${rng.randrange(65)}, ",
                          "%cl, "])
        return f"{op}{s} {cnt}{dst}"

    def mov(self):
        rng = self.rng
        s = rng.choice(SIZES)
        form = rng.randrange(6)
        if form == 0:
            return f"mov{s} {_anyreg(rng, s)}, {_wreg(rng, s)}"
        if form == 1:
            return f"mov{s} {_mem(rng, s)}, {_wreg(rng, s)}"
        if form == 2:
            return f"mov{s} {_anyreg(rng, s)}, {_mem(rng, s)}"
        if form == 3:
            return f"mov{s} ${_imm(rng, s)}, {_mem(rng, s)}"
        if form == 4:
            return f"movabsq ${rng.getrandbits(64)}, {_wreg(rng, 'q')}"
        return f"mov{s} ${_imm(rng, s)}, {_wreg(rng, s)}"

    def ext(self):
        rng = self.rng
        src, dst = rng.choice([("b", "w"), ("b", "l"), ("b", "q"), ("w", "l"), ("w", "q"),
                               ("l", "q")])
        op = "movs" if src == "l" or rng.randrange(2) else "movz"
        operand = _anyreg(rng, src) if rng.randrange(2) else _mem(rng, src)
        if src == "b" and dst != "q" and operand.startswith("%") and rng.randrange(3) == 0:
            operand = "%" + R8_LEGACY[rng.randrange(8)]
            return f"{op}{src}{dst} {operand}, %{REGS[dst][rng.choice(LEGACY8)]}"
        mnem = "movslq" if src == "l" else f"{op}{src}{dst}"
        return f"{mnem} {operand}, {_wreg(rng, dst)}"

    def lea(self):
        rng = self.rng
        s = rng.choice(["w", "l", "q"])
        if rng.randrange(4) == 0:
            return f"lea{s} tab+{rng.randrange(64)}(%rip), {_wreg(rng, s)}"
        disp = rng.choice([0, rng.randrange(-128, 128), rng.randrange(-(1 << 31), 1 << 31)])
        base = _anyreg(rng, "q")
        idx = rng.choice([r for r in R64 if r != "rsp"])
        return f"lea{s} {disp}({base},%{idx},{rng.choice([1, 2, 4, 8])}), {_wreg(rng, s)}"

    def setcc_cmov(self):
        rng = self.rng
        cc = rng.choice(CC_NAMES)
        if rng.randrange(2):
            if rng.randrange(3) == 0:
                return f"set{cc} %{R8_LEGACY[rng.randrange(8)]}"
            return f"set{cc} {_wreg(rng, 'b') if rng.randrange(2) else _mem(rng, 'b')}"
        s = rng.choice(["w", "l", "q"])
        src = _anyreg(rng, s) if rng.randrange(2) else _mem(rng, s)
        return f"cmov{cc}{s} {src}, {_wreg(rng, s)}"

    def stack(self):
        rng = self.rng
        k = rng.randrange(7)
        if k == 0 and self.depth < 60:
            self.depth += 1
            return f"pushq {_anyreg(rng, 'q')}"
        if k == 1 and self.depth < 60:
            self.depth += 1
            return f"pushq ${_imm(rng, 'l')}"
        if k == 2 and self.depth < 60:
            self.depth += 1
            return f"pushq {_mem(rng, 'q')}"
        if k == 3 and self.depth > -60:
            self.depth -= 1
            return f"popq {_wreg(rng, 'q')}"
        if k == 4 and self.depth > -60:
            self.depth -= 1
            return f"popq {_mem(rng, 'q')}"
        if k == 5:
            # POPF of a value without TF (a single-step trap is not modelled).
            v = rng.getrandbits(12) & (RFLAGS_ARITH | RFLAGS_DF)
            return f"pushfq\npushq ${v}\npopfq\npopfq"
        return "pushfq\npopq %rax" if self.depth > -60 else "nop"

    def straight(self):
        rng = self.rng
        pick = rng.choices([self.alu, self.unary, self.shift, self.mov, self.ext, self.lea,
                            self.setcc_cmov, self.stack, lambda: "nop"],
                           weights=[6, 2, 3, 4, 2, 2, 3, 2, 1])[0]
        return pick()

    def body(self, n, branches=True):
        lines = []
        pending = []            # (label, instructions left before it)
        for _ in range(n):
            for p in pending:
                p[1] -= 1
            for p in [p for p in pending if p[1] <= 0]:
                lines.append(f"{p[0]}:")
                pending.remove(p)
            if branches and self.rng.randrange(8) == 0:
                self.labels += 1
                label = f".L{self.prefix}fw{self.labels}"
                cc = self.rng.choice(CC_NAMES + ["mp"])
                lines.append(f"j{cc} {label}")
                pending.append([label, self.rng.randrange(1, 5)])
            else:
                lines.append(self.item() if branches else self.straight())
        lines += [f"{p[0]}:" for p in pending]
        return lines


def _random_source(rng: random.Random, n: int, prefix: str, gen=_Gen) -> tuple[str, object]:
    g = gen(rng, prefix)
    main = g.body(n)
    funcs = []
    for f in range(2):
        depth = g.depth
        body = [x for x in g.body(rng.randrange(1, 5), branches=False)]
        g.depth = depth
        # Keep functions stack-neutral: drop pushes/pops from their bodies, and any access
        # relative to RSP (the return address is there).
        body = [x for x in body if "push" not in x and "pop" not in x and "%rsp)" not in x]
        funcs.append([f"{prefix}func{f}:"] + body + g.ret())
    # Calls inserted at random points of main (rel32 and through R11).
    for f in range(2):
        pos = rng.randrange(len(main) + 1)
        call = f"call {prefix}func{f}" if rng.randrange(2) else \
            f"leaq {prefix}func{f}(%rip), %r11\ncall *%r11"
        main.insert(pos, call)
    table = [rng.getrandbits(64) for _ in range(TABLE_QWORDS)]
    src = "\n".join(main + g.ending() + [f"{prefix}hlt_here: hlt"] + sum(funcs, [])
                     + [".balign 8", f"{prefix}tab: .quad " + ", ".join(str(v) for v in table)])
    return src.replace("tab+", f"{prefix}tab+"), g.fault_vector


def random_programs(rng: random.Random, count: int, min_len: int = 8, max_len: int = 40,
                    name: str = "random", gen=_Gen) -> list[Program]:
    """`count` random programs of `min_len`..`max_len` instructions, assembled in one batch
    (`gen`: the generator class, `_Gen` or a subclass)."""
    made = [_random_source(rng, rng.randrange(min_len, max_len), f"p{k}_", gen)
            for k in range(count)]
    sources = [src for src, _ in made]
    images = assemble_programs([(src, f"p{k}_hlt_here") for k, src in enumerate(sources)],
                               symbols=True)
    progs = []
    for k, (src, (image, hlt, syms)) in enumerate(zip(sources, images)):
        regs = {r: rng.choice([rng.getrandbits(64), rng.getrandbits(8), rng.getrandbits(32),
                               (1 << 63) | rng.getrandbits(8), 0])
                for r in R64}
        regs.update(rsp=RSP_VALUE, rbp=RBP_VALUE, r15=R15_VALUE, r14=rng.randrange(32))
        rflags = RFLAGS_FIXED1 | (rng.getrandbits(12) & RFLAGS_ARITH)
        vector = made[k][1]
        fault = None if vector is None else (vector, syms[f"p{k}_fault_here"])
        progs.append(Program(image, hlt, regs, rflags, data=rng.randbytes(DATA_SIZE),
                             stack=rng.randbytes(STACK_SIZE), name=f"{name}{k}", source=src,
                             fault=fault))
    return progs


def random_program(rng: random.Random, n: int = 24, name: str = "") -> Program:
    """One random program of `n` instructions (plus branches, calls and functions)."""
    prog = random_programs(rng, 1, n, n + 1, name)[0]
    prog.name = name
    return prog
