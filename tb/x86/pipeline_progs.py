"""Random programs that stress a pipelined core's hazards, for the differential tests against
Unicorn (the core alone: tests/test_core_exec.py; the system: tests/test_system_random.py).

`pipeline_programs(rng, count)` returns `tb.x86.core_tb.Program`s built like
`tb.x86.core_progs.random_programs` (the same register roles, regions, functions and data table),
with the random instruction mix interleaved with the sequences where an overlapped core goes
wrong:

* dependent chains: each instruction reads what the one before wrote (full registers, 8-bit
  halves AH..BH, flags for ADC/SBB/SETcc/CMOVcc, a loaded value used at once as data and as an
  address index);
* a load right after a store to the same or overlapping bytes (every size pair, offsets -7..+7
  from the store, across qword boundaries; read-modify-write stores; PUSH then a load of
  (%rsp); a store then POP);
* self-modifying code: a store into an instruction ahead (its immediate, or its opcode byte so
  it writes another register), followed by a jump to it (the SDM's rule for modifying code,
  Vol. 3A 8.1.3), or with the modified instruction next in line. The sequence is wrapped in
  PUSHFQ/POPFQ: Unicorn 2.1.4 loses the lazily computed arithmetic flags when a store modifies
  the code block it is running (QEMU retranslates the block from the store; the carry of a SUB
  before the store read back 0), so RFLAGS is saved before the store and restored after;
* faults in the shadow of a taken branch: UD2, HLT, a non-canonical load or store, a store into
  the code, right after a JMP, a Jcc that is taken, a JMP through a register, and after every
  RET;
* a fault at the end of one program in three: a few stores, then UD2 (#UD) or a non-canonical
  load or store (#GP(0)); the state at the fault (registers, RIP, memory: the stores before it
  done, nothing after it) must equal Unicorn's;
* for the whole system only (`system=True`): CPUID and RDTSC next to those sequences, which the
  system runs while a prefetch of the core's may be in flight.
"""

from __future__ import annotations

import random

from rtl.arch.vmx import VECTOR_GP, VECTOR_UD

from .core_progs import BYTES, LEGACY8, REGS, WRITABLE, _Gen, _imm, _mem, random_programs
from .core_tb import Program
from .insn_gen import R8_LEGACY

#: Conditions that are true after `cmp %r, %r` (ZF=1, CF=SF=OF=0, PF=1).
TAKEN_AFTER_EQUAL_CMP = ["e", "ae", "be", "ge", "le", "ns", "no", "p"]
#: RBP-relative window the store/load pairs use (inside DATA, see core_progs._mem).
RBP_WINDOW = 0x400


def _reg(k, s):
    return "%" + REGS[s][k]


class _PipelineGen(_Gen):
    def __init__(self, rng, prefix):
        super().__init__(rng, prefix)
        self.idioms = 0

    def label(self, what):
        self.idioms += 1
        return f".L{self.prefix}{what}{self.idioms}"

    # -- dependent chains ------------------------------------------------------------------
    def chain(self):
        rng = self.rng
        prev = rng.choice(WRITABLE)
        lines = [f"movq ${_imm(rng, 'q')}, {_reg(prev, 'q')}"] if rng.randrange(2) else []
        for _ in range(rng.randrange(3, 7)):
            dst = rng.choice(WRITABLE)
            s = rng.choice(["b", "w", "l", "q"])
            k = rng.randrange(8)
            if k == 0:
                lines.append(f"{rng.choice(['add', 'sub', 'xor', 'and', 'or'])}{s} "
                             f"{_reg(prev, s)}, {_reg(dst, s)}")
            elif k == 1:
                lines.append(f"leaq {rng.randrange(-64, 64)}({_reg(prev, 'q')},"
                             f"{_reg(dst, 'q')},{rng.choice([1, 2, 4, 8])}), {_reg(dst, 'q')}")
            elif k == 2 and prev in LEGACY8 and dst in LEGACY8:
                # The high byte of the register just written, into another's high byte.
                lines.append(f"movb %{R8_LEGACY[prev + 4]}, %{R8_LEGACY[dst + 4]}")
                lines.append(f"addb %{R8_LEGACY[dst + 4]}, %{R8_LEGACY[prev]}")
            elif k == 3:
                # Flags of the instruction before, read at once.
                lines.append(f"addq {_reg(prev, 'q')}, {_reg(dst, 'q')}")
                lines.append(f"{rng.choice(['adc', 'sbb'])}{s} ${_imm(rng, s)}, {_reg(dst, s)}")
            elif k == 4:
                cc = rng.choice(["b", "e", "s", "o", "p", "l", "a"])
                lines.append(f"cmpq {_reg(prev, 'q')}, {_reg(dst, 'q')}")
                lines.append(f"set{cc} {_reg(dst, 'b')}" if rng.randrange(2) else
                             f"cmov{cc}q {_reg(prev, 'q')}, {_reg(dst, 'q')}")
            elif k == 5:
                # Loaded value used at once as an index (bounded by MOVZBL: inside DATA).
                lines.append(f"movzbl {_mem(rng, 'b')}, {_reg(dst, 'l')}")
                lines.append(f"movq -0x100(%r15,{_reg(dst, 'q')},8), {_reg(prev, 'q')}")
                dst = prev
            elif k == 6:
                lines.append(f"shl{s} %cl, {_reg(dst, s)}" if prev == 1 else
                             f"mov{s} {_reg(prev, s)}, {_reg(dst, s)}")
            else:
                lines.append(f"pushq {_reg(prev, 'q')}")
                lines.append(f"popq {_reg(dst, 'q')}")
            prev = dst
        return lines

    # -- stores, then loads of the same bytes ----------------------------------------------
    def store_load(self):
        rng = self.rng
        s1, s2 = rng.choice("bwlq"), rng.choice("bwlq")
        # Near a qword boundary half of the time, so the pair splits across qwords.
        base = rng.randrange(-RBP_WINDOW // 8, RBP_WINDOW // 8 - 2) * 8
        off = base + (rng.choice([5, 6, 7]) if rng.randrange(2) else rng.randrange(8))
        off2 = off + rng.randrange(-7, 8)
        src = rng.choice(WRITABLE)
        k = rng.randrange(5)
        if k == 0:
            store = f"mov{s1} {_reg(src, s1)}, {off}(%rbp)"
        elif k == 1:
            store = f"mov{s1} ${_imm(rng, s1)}, {off}(%rbp)"
        elif k == 2:
            store = f"{rng.choice(['add', 'xor', 'sub'])}{s1} {_reg(src, s1)}, {off}(%rbp)"
        elif k == 3:
            store = f"{rng.choice(['inc', 'neg', 'not'])}{s1} {off}(%rbp)"
        else:
            store = f"shl{s1} ${rng.randrange(1, 8)}, {off}(%rbp)"
        lines = [store]
        if rng.randrange(3) == 0:           # a second store behind the first
            s3 = rng.choice("bwlq")
            lines.append(f"mov{s3} {_reg(rng.choice(WRITABLE), s3)}, "
                         f"{off + rng.randrange(-4, 5)}(%rbp)")
        lines += [self.straight() for _ in range(rng.choice([0, 0, 0, 1, 2]))]
        dst = rng.choice(WRITABLE)
        k = rng.randrange(4)
        if k == 0:
            lines.append(f"mov{s2} {off2}(%rbp), {_reg(dst, s2)}")
        elif k == 1:
            lines.append(f"{rng.choice(['add', 'sub', 'cmp', 'and'])}{s2} {off2}(%rbp), "
                         f"{_reg(dst, s2)}")
        elif k == 2 and s2 != "q":
            ext = {"b": "movzbq", "w": "movswq", "l": "movslq"}[s2]
            lines.append(f"{ext} {off2}(%rbp), {_reg(dst, 'q')}")
        else:
            lines.append(f"pushq {off2 & ~7}(%rbp)")
            lines.append(f"popq {_reg(dst, 'q')}")
        return lines

    def stack_pairs(self):
        rng = self.rng
        r, d = rng.choice(WRITABLE), rng.choice(WRITABLE)
        s = rng.choice("bwlq")
        if rng.randrange(2):
            return [f"pushq {_reg(r, 'q')}", f"mov{s} {rng.randrange(8 - BYTES[s] + 1)}(%rsp), "
                    f"{_reg(d, s)}", "popq " + _reg(d, "q")]
        return [f"pushq ${_imm(rng, 'l')}", f"mov{s} {_reg(r, s)}, "
                f"{rng.randrange(8 - BYTES[s] + 1)}(%rsp)", "popq " + _reg(d, "q")]

    # -- self-modifying code ---------------------------------------------------------------
    def smc(self):
        rng = self.rng
        target = self.label("smc")
        dst = rng.choice([r for r in WRITABLE if r < 8])      # B8+r with REX.W only
        lines = ["pushfq"]
        if rng.randrange(4) == 0:
            # The opcode byte: the instruction writes another register.
            new = rng.choice([r for r in WRITABLE if r < 8])
            lines.append(f"movb ${0xB8 + new}, {target}+1(%rip)")
        else:
            s = rng.choice("bwlq")
            pos = 2 + rng.randrange(8 - BYTES[s] + 1)
            value = _reg(rng.choice(WRITABLE), s) if rng.randrange(2) else f"${_imm(rng, s)}"
            lines.append(f"mov{s} {value}, {target}+{pos}(%rip)")
        k = rng.randrange(3)
        if k == 0:
            lines.append(f"jmp {target}")
        elif k == 1:
            lines += [self.off_stack(), f"jmp {target}"]
        lines += [f"{target}:", f"movabsq ${rng.getrandbits(64)}, {_reg(dst, 'q')}", "popfq"]
        return lines

    def off_stack(self):
        """An instruction of the mix that leaves the stack alone (the saved RFLAGS is there)."""
        while True:
            line = self.rng.choice([self.alu, self.mov, self.lea, self.ext])()
            if "%rsp" not in line:
                return line

    # -- faults in the shadow of a taken branch -------------------------------------------
    def shadow(self):
        rng = self.rng
        after = self.label("sh")
        scratch = rng.choice(WRITABLE)
        lines = []
        k = rng.randrange(4)
        if k in (0, 1):                                     # something that would fault
            lines.append(f"movabsq ${(0x8000 << 48) | rng.getrandbits(47)}, "
                         f"{_reg(scratch, 'q')}")
        if rng.randrange(3) == 0:
            lines.append(f"jmp {after}")
        elif rng.randrange(2):
            r = rng.choice(range(16))
            lines.append(f"cmpq {_reg(r, 'q')}, {_reg(r, 'q')}")
            lines.append(f"j{rng.choice(TAKEN_AFTER_EQUAL_CMP)} {after}")
        else:
            lines.append(f"leaq {after}(%rip), %r11")
            lines.append("jmp *%r11")
        if k == 0:
            lines.append(f"movq ({_reg(scratch, 'q')}), %rax")
        elif k == 1:
            lines.append(f"movl %eax, 8({_reg(scratch, 'q')})")
        elif k == 2:
            lines.append(rng.choice(["ud2", "hlt"]))
        else:
            lines.append(f"movb $0x0b, {after}(%rip)")      # a store into the code
        lines += [rng.choice(["ud2", "hlt", "nop"]), f"{after}:"]
        return lines

    def item(self):
        pick = self.rng.choices([self.straight, self.chain, self.store_load, self.stack_pairs,
                                 self.smc, self.shadow], weights=[6, 3, 4, 1, 2, 2])[0]
        out = pick()
        return "\n".join(out) if isinstance(out, list) else out

    def ret(self):
        return ["ret", "ud2"]               # the RET's shadow

    def ending(self):
        rng = self.rng
        if rng.randrange(3):
            return []
        lines = sum((self.store_load()[:1] for _ in range(rng.randrange(1, 4))), [])
        if rng.randrange(2):
            self.fault_vector = VECTOR_UD
            return lines + [f"{self.prefix}fault_here: ud2"]
        scratch = rng.choice(WRITABLE)
        self.fault_vector = VECTOR_GP
        access = (f"movq ({_reg(scratch, 'q')}), %rax" if rng.randrange(2) else
                  f"movw %ax, ({_reg(scratch, 'q')})")
        return lines + [f"movabsq ${(0xFFFF << 48) ^ (1 << 63) | rng.getrandbits(47)}, "
                        f"{_reg(scratch, 'q')}", f"{self.prefix}fault_here: {access}"]


class _SystemPipelineGen(_PipelineGen):
    """The sequences above, and among them CPUID and RDTSC, which the system answers while the
    core may prefetch (for the whole system: the core alone has no system behind its port)."""

    def system_insn(self):
        """CPUID (a random leaf) or RDTSC between saves and restores of the registers it writes
        (Unicorn's values are not the system's), next to a store/load pair, self-modifying code
        or a fault's shadow."""
        rng = self.rng
        if rng.randrange(2):
            saved = ["%rax", "%rbx", "%rcx", "%rdx"]
            leaf = rng.choice([0, 1, 0x8000_0000, 0x8000_0008, rng.getrandbits(32)])
            body = [f"movl ${leaf}, %eax", "cpuid"]
        else:
            saved = ["%rax", "%rdx"]
            body = ["rdtsc"]
        lines = [f"push {r}" for r in saved] + body + [f"pop {r}" for r in reversed(saved)]
        more = rng.choice([[], self.store_load(), self.smc(), self.shadow()])
        return more + lines if rng.randrange(2) else lines + more

    def item(self):
        if self.rng.randrange(6) == 0:
            return "\n".join(self.system_insn())
        return super().item()


def pipeline_programs(rng: random.Random, count: int, min_len: int = 8, max_len: int = 30,
                      name: str = "pipeline", system: bool = False) -> list[Program]:
    """`count` hazard programs of `min_len`..`max_len` items (an item is an instruction of the
    random mix or one of the sequences above), assembled in one batch; with `system`, CPUID
    and RDTSC among them (`_SystemPipelineGen`)."""
    return random_programs(rng, count, min_len, max_len, name,
                           gen=_SystemPipelineGen if system else _PipelineGen)
