"""The core's execution engine (`rtl.core.core.Core`) running real x86-64 machine code.

All programs run in ONE simulation of one elaboration (`tb.x86.core_tb.run_core`: the core's
`load` input restarts it per program), with a Python memory model answering the memory port
after random delays, and a watchdog.

* directed programs assembled with GNU `as`: arithmetic and flags, zero-extension of 32-bit
  results and merging of 8/16-bit ones, AH..BH, memory forms (unaligned and split accesses,
  SIB, RIP-relative loads and stores), stack, CALL/RET (rel and register), loops with Jcc,
  SETcc/CMOVcc, shifts, PUSHFQ/POPFQ, self-modifying code (a store into the next instruction,
  and into a loop body followed by the jump back); each with hand-written expected registers,
  flags and memory, AND compared with Unicorn;
* stops: #UD, #GP (15-byte limit, non-canonical address and branch target), #SS, #PF from the
  memory port (load, store, split access, fetch, and a fetch that must NOT fault because the
  instruction ends before the unmapped page), and every "needs unit X" class; the state must be
  that of the faulting instruction's start;
* the differential test of issue 5: `VTX_CORE_PROGRAMS` (default 200) random programs
  (`tb.x86.core_progs`) on the core and on Unicorn: 16 GPRs, RIP, the six arithmetic flags (all
  of RFLAGS in fact) and every mapped memory region compared;
* the pipeline stress test: `VTX_CORE_PIPELINE_PROGRAMS` (default 60) random programs of
  hazards (`tb.x86.pipeline_progs`: dependent chains, loads right after stores to the same and
  overlapping bytes, self-modifying code followed by a jump, faults in the shadow of taken
  branches, a precise fault at the end of some) compared with Unicorn the same way, the stop
  included;
* Verilator lint of `Core`.

`VTX_SEED` seeds the programs and the memory model's delays.
"""

from __future__ import annotations

import os
import random

import pytest

from rtl.arch.paging import PFEC_I, PFEC_W
from rtl.arch.vmx import RFLAGS_ARITH
from rtl.core.core import Core
from rtl.core.core_layouts import NeedsUnit
from tb.x86.core_progs import random_programs
from tb.x86.core_tb import (
    CODE_BASE,
    CODE_SIZE,
    DATA_BASE,
    DATA_SIZE,
    STACK_BASE,
    Program,
    assemble_program,
    run_core,
    run_unicorn,
)
from tb.x86.pipeline_progs import pipeline_programs

SEED = int(os.environ.get("VTX_SEED", "1"))
N_PROGRAMS = int(os.environ.get("VTX_CORE_PROGRAMS", "200"))
N_PIPELINE = int(os.environ.get("VTX_CORE_PIPELINE_PROGRAMS", "60"))
SP = STACK_BASE + 0x800
F = 0x2             # RFLAGS bit 1
CF, PF, AF, ZF, SF, OF, DF = 0x1, 0x4, 0x10, 0x40, 0x80, 0x800, 0x400

# ---------------------------------------------------------------------------------------------
# Directed programs: (name, source, initial registers, expected registers / rflags / memory).
# Expected values are written by hand; a callable gets the Result (for code addresses).

DIRECTED = [
    ("arith", """
        movq $-1, %rax
        addl $1, %eax           # 32-bit result 0, zero-extended; CF ZF PF AF
        movq $5, %rbx
        subq $7, %rbx           # -2: CF SF AF
        movq $0x10, %rcx
        adcq $0, %rcx           # 0x10 + 0 + CF = 0x11: PF only
        hlt_here: hlt
     """, {}, {"rax": 0, "rbx": 0xFFFFFFFFFFFFFFFE, "rcx": 0x11, "rflags": F | PF}),
    ("zext32_merge", """
        movabsq $0x1122334455667788, %rax
        movl %eax, %ebx
        movq %rax, %rcx
        notl %ecx
        movq %rax, %rdx
        movw $0x1234, %dx
        movq %rax, %rsi
        movb $0xff, %sil
        movq %rax, %rdi
        shll $0, %edi           # count 0: no flags, but the 32-bit write still zero-extends
        xorl %r8d, %r8d
        hlt_here: hlt
     """, {"r8": 0xFFFF_FFFF_FFFF_FFFF},
     {"rax": 0x1122334455667788, "rbx": 0x55667788, "rcx": 0xAA998877,
      "rdx": 0x1122334455661234, "rsi": 0x11223344556677FF, "rdi": 0x55667788, "r8": 0,
      "rflags": F | ZF | PF}),
    ("high8", """
        movq $0x1234, %rax
        movb %ah, %bl
        movb $0x56, %ah
        addb %al, %ah           # 0x56 + 0x34 = 0x8a: OF SF (6 + 4 carries nothing into bit 4)
        movzbl %ah, %ecx
        movsbl %ah, %edx
        hlt_here: hlt
     """, {"rbx": 0xAAAA_0000, "rcx": -1 & (2**64 - 1), "rdx": 7},
     {"rax": 0x8A34, "rbx": 0xAAAA_0012, "rcx": 0x8A, "rdx": 0xFFFFFF8A,
      "rflags": F | OF | SF}),
    ("memory", """
        movq $0x0102030405060708, %rax
        movq %rax, 3(%rbp)      # unaligned, split over two qwords
        movl 4(%rbp), %ebx
        addq %rax, 3(%rbp)      # read-modify-write, split
        movq 3(%rbp), %rcx
        incb 3(%rbp)
        movzwl 3(%rbp), %edx
        leaq 8(%rbp,%rdx,2), %rsi
        movq tab(%rip), %rdi
        movq %rax, tab+8(%rip)  # RIP-relative store
        movl $1, %r9d
        movw %ax, -8(%rbp,%r9,8)
        hlt_here: hlt
        .balign 8
        tab: .quad 0xfeedface12345678, 0
     """, {"rbp": DATA_BASE + 0x100},
     {"rax": 0x0102030405060708, "rbx": 0x04050607, "rcx": 0x020406080A0C0E10, "rdx": 0x0E11,
      "rsi": DATA_BASE + 0x100 + 8 + 0x1C22, "rdi": 0xFEEDFACE12345678, "rflags": F | PF,
      "mem": [(DATA_BASE + 0x103, (0x020406080A0C0E11).to_bytes(8, "little")),
              (DATA_BASE + 0x100, b"\x08\x07")]}),
    ("stack_calls", """
        movq $1, %rax
        pushq $-2
        popq %rbx
        call f
        leaq g(%rip), %rcx
        call *%rcx
        pushq %rax
        pushq %rcx
        popq %rdx
        popq %rsi
        pushq %rsp
        popq %rdi               # the value of RSP before the push
        pushw $0x1234
        popw %r8w
        movq %rsp, %r9
        pushq $7
        popq %rsp               # POP RSP: RSP = the popped value
        hlt_here: hlt
        f: addq $10, %rax
        ret
        g: shlq $2, %rax
        ret
     """, {"rsp": SP, "r8": 0xABCD_0000},
     {"rax": 44, "rbx": 0xFFFFFFFFFFFFFFFE, "rdx": lambda r: r.regs["rcx"], "rsi": 44,
      "rdi": SP, "r8": 0xABCD_1234, "r9": SP, "rsp": 7, "rflags": F,
      "mem": [(SP - 8, (7).to_bytes(8, "little"))]}),
    ("loop", """
        xorl %eax, %eax
        movl $10, %ecx
        1: addq %rcx, %rax
        decl %ecx
        jnz 1b
        movl $3, %edx
        2: subl $1, %edx
        jg 2b                   # backward Jcc on signed flags
        jmp 3f
        movl $99, %edx          # skipped
        3: hlt_here: hlt
     """, {}, {"rax": 55, "rcx": 0, "rdx": 0, "rflags": F | ZF | PF,
               "retired": 2 + 10 * 3 + 1 + 3 * 2 + 1 + 1}),
    ("setcc_cmov", """
        movq $5, %rax
        cmpq $7, %rax           # CF SF AF
        setb %bl
        setg %bh
        movq $100, %rcx
        movq $200, %rdx
        cmovlq %rdx, %rcx
        movabsq $0xffffffffffffffff, %rsi
        cmovgl %edx, %esi       # false, but the 32-bit destination is still zero-extended
        sete %r8b
        setne 5(%rbp)
        cmovbq 8(%rbp), %rdi
        hlt_here: hlt
     """, {"rbx": 0x1100, "r8": 0xFF00, "rbp": DATA_BASE},
     {"rbx": 0x0001, "rcx": 200, "rsi": 0xFFFFFFFF, "r8": 0xFF00,
      "rflags": F | CF | SF | AF, "mem": [(DATA_BASE + 5, b"\x01")]}),
    ("shifts", """
        movl $0x80000001, %eax
        shll $1, %eax           # CF, OF = MSB xor CF
        movq $-16, %rbx
        sarq $2, %rbx
        movb $3, %cl
        movq $0xf0, %rdx
        shrq %cl, %rdx
        hlt_here: hlt
     """, {}, {"rax": 2, "rbx": 0xFFFFFFFFFFFFFFFC, "rdx": 0x1E, "rflags": F | PF}),
    ("popf", """
        pushq $0x8d7
        popfq
        pushfq
        popq %rax
        pushq $0
        popfq
        pushfq
        popq %rbx
        pushq $0xc1
        popfq
        hlt_here: hlt
     """, {"rsp": SP}, {"rax": 0x8D7, "rbx": 0x2, "rflags": F | CF | ZF | SF}),
    ("neg_not_lea", """
        movq $5, %rax
        negq %rax
        movl $0x0f0f0f0f, %ebx
        notw %bx
        leal -1(%rax,%rax,4), %ecx
        leaw 0x1234(%rip), %dx
        hlt_here: hlt
     """, {"rbx": 0x1_0000_0000, "rdx": 0xAAAA_0000},
     {"rax": 0xFFFFFFFFFFFFFFFB, "rbx": 0x0F0FF0F0, "rcx": 0xFFFFFFE6,
      "rdx": lambda r: 0xAAAA_0000 | ((CODE_BASE + 0x1D + 0x1234) & 0xFFFF),
      "rflags": F | CF | SF | AF}),
    # Self-modifying code: a store into the next instruction (already in the window buffer)...
    ("smc_next", """
        leaq patched(%rip), %rdi
        movl $0x22222222, 1(%rdi)
        patched: movl $0x11111111, %eax
        hlt_here: hlt
     """, {}, {"rax": 0x22222222, "rdi": lambda r: CODE_BASE + 14}),
    # ... and into a loop body fetched before, followed by the jump back (SDM Vol. 3A 8.1.3).
    ("smc_loop", """
        xorl %ecx, %ecx
        leaq body(%rip), %rdi
        body: movl $0x11111111, %eax
        addl %eax, %ecx
        cmpl $0x11111111, %eax
        jne done
        movl $0x22222222, 1(%rdi)
        jmp body
        done: hlt_here: hlt
     """, {}, {"rax": 0x22222222, "rcx": 0x33333333, "rdi": lambda r: CODE_BASE + 9}),
]

# Programs that stop: (name, source, initial registers, expected stop, expected registers).
FAULTS = [
    ("ud", "movl $1, %eax\nud2\nhlt_here: hlt", {},
     ("fault", 6, 0, CODE_BASE + 5), {"rax": 1}),
    ("too_long", "movl $1, %eax\n.byte " + ",".join(["0x66"] * 14) + ",0x05,1,0,0,0\n"
     "hlt_here: hlt", {}, ("fault", 13, 0, CODE_BASE + 5), {"rax": 1}),
    ("pf_load", "movq (%rbx), %rax\nhlt_here: hlt", {"rbx": 0x500004, "rax": 3},
     ("fault", 14, 0, CODE_BASE, 0x500004), {"rax": 3}),
    ("pf_store", "incq %rax\nmovq %rax, (%rbx)\nhlt_here: hlt", {"rbx": 0x500000, "rax": 3},
     ("fault", 14, PFEC_W, CODE_BASE + 3, 0x500000), {"rax": 4}),
    ("pf_split_load", "movq (%rbx), %rax\nhlt_here: hlt", {"rbx": DATA_BASE + DATA_SIZE - 4},
     ("fault", 14, 0, CODE_BASE, DATA_BASE + DATA_SIZE), {}),
    ("pf_push", "pushq %rax\nhlt_here: hlt", {"rsp": STACK_BASE},
     ("fault", 14, PFEC_W, CODE_BASE, STACK_BASE - 8), {"rsp": STACK_BASE}),
    ("pf_fetch", "jmp *%rax\nhlt_here: hlt", {"rax": 0x600000},
     ("fault", 14, PFEC_I, 0x600000, 0x600000), {}),
    # An instruction that ends right before an unmapped page must not fault...
    ("fetch_edge_ok", f"jmp *%rax\n.org {CODE_SIZE - 1}\nhlt_here: hlt",
     {"rax": CODE_BASE + CODE_SIZE - 1}, "hlt", {}),
    # ... one that crosses into it must (on the fetch of the bytes it needs).
    ("fetch_edge_pf", f"jmp *%rax\n.org {CODE_SIZE - 1}\n.byte 0x0f\nhlt_here:",
     {"rax": CODE_BASE + CODE_SIZE - 1},
     ("fault", 14, PFEC_I, CODE_BASE + CODE_SIZE - 1, CODE_BASE + CODE_SIZE), {}),
    ("gp_noncanonical", "movq (%rbx), %rax\nhlt_here: hlt", {"rbx": 1 << 47},
     ("fault", 13, 0, CODE_BASE, 0), {}),
    ("ss_noncanonical", "movq 8(%rsp), %rax\nhlt_here: hlt", {"rsp": 1 << 60},
     ("fault", 12, 0, CODE_BASE, 0), {}),
    ("gp_branch_target", "movabsq $0x0000800000000000, %rax\njmp *%rax\nhlt_here: hlt", {},
     ("fault", 13, 0, CODE_BASE + 10, 0), {}),
] + [
    (f"unit_{name}", f"nop\n{text}\nhlt_here: hlt", {}, ("unit", unit, CODE_BASE + 1), {})
    for name, text, unit in [
        ("cpuid", "cpuid", NeedsUnit.CPUID), ("rdtsc", "rdtsc", NeedsUnit.TSC),
        ("rdmsr", "rdmsr", NeedsUnit.MSR), ("wrmsr", "wrmsr", NeedsUnit.MSR),
        ("mov_from_cr", "movq %cr3, %rax", NeedsUnit.CR),
        ("mov_to_cr", "movq %rax, %cr4", NeedsUnit.CR),
        ("invlpg", "invlpg (%rax)", NeedsUnit.TLB),
        ("in", "inb $0x60, %al", NeedsUnit.IO), ("out", "outb %al, %dx", NeedsUnit.IO),
        ("vmcall", "vmcall", NeedsUnit.VMX), ("vmxon", "vmxon (%rax)", NeedsUnit.VMX),
        ("vmread", "vmread %rax, %rbx", NeedsUnit.VMX), ("invept", "invept (%rax), %rbx",
                                                       NeedsUnit.VMX),
    ]
]


#: Instructions retired before the stop (1 when not listed: the `movl`/`nop`/`jmp` in front).
RETIRED_BEFORE_STOP = {"pf_load": 0, "pf_split_load": 0, "pf_push": 0, "gp_noncanonical": 0,
                       "ss_noncanonical": 0, "pf_store": 1, "gp_branch_target": 1}


def _program(name, src, regs):
    image, hlt = assemble_program(src)
    full = {"rsp": SP}
    full.update({k: v & (2**64 - 1) for k, v in regs.items()})
    return Program(image, hlt, full, name=name, source=src)


@pytest.fixture(scope="module")
def runs():
    """Every program of this file through one simulation; {name: (Program, Result)}."""
    rng = random.Random(SEED)
    progs = [_program(n, s, r) for n, s, r, _ in DIRECTED]
    progs += [_program(n, s, r) for n, s, r, _, _ in FAULTS]
    progs += random_programs(rng, N_PROGRAMS, 6, 34, name="random")
    progs += pipeline_programs(rng, N_PIPELINE, name="pipeline")
    results = run_core(progs, seed=SEED)
    return {p.name: (p, r) for p, r in zip(progs, results)}


def _check_expected(name, r, expected, core=True):
    for key, want in expected.items():
        if key == "retired":            # the core's retired-instruction count (HLT included)
            assert not core or r.retired == want, f"{name}: retired {r.retired} != {want}"
            continue
        if key == "mem":
            for addr, data in want:
                base = max(b for b in r.memory if b <= addr)
                got = r.memory[base][addr - base:addr - base + len(data)]
                assert got == data, f"{name}: memory {addr:#x}: {got.hex()} != {data.hex()}"
            continue
        want = want(r) if callable(want) else want
        got = r.rflags if key == "rflags" else r.regs[key]
        assert got == want, f"{name}: {key} = {got:#x}, expected {want:#x}"


def _compare_unicorn(prog, r):
    u = run_unicorn(prog)
    if prog.fault is None:
        assert r.stop == "hlt", f"{prog.name}: core stopped with {r.stop}\n{prog.source}"
    else:   # ("fault", vector, error code, RIP, address) against ("fault", vector, RIP)
        assert r.stop != "hlt" and (r.stop[0], r.stop[1], r.stop[3]) == u.stop, \
            f"{prog.name}: core stopped with {r.stop}, Unicorn with {u.stop}\n{prog.source}"
    diffs = [f"{k}: core {r.regs[k]:#x} unicorn {u.regs[k]:#x}" for k in r.regs
             if r.regs[k] != u.regs[k]]
    if r.rip != u.rip:
        diffs.append(f"rip: core {r.rip:#x} unicorn {u.rip:#x}")
    if (r.rflags ^ u.rflags) & RFLAGS_ARITH:
        diffs.append(f"rflags: core {r.rflags:#x} unicorn {u.rflags:#x}")
    for base, data in u.memory.items():
        if r.memory[base] != data:
            first = next(i for i in range(len(data)) if data[i] != r.memory[base][i])
            diffs.append(f"memory differs first at {base + first:#x}")
    assert not diffs, f"{prog.name}:\n  " + "\n  ".join(diffs) + f"\n--- source ---\n" \
        f"{prog.source}"
    return u


@pytest.mark.parametrize("name", [d[0] for d in DIRECTED])
def test_directed(runs, name):
    prog, r = runs[name]
    expected = next(d[3] for d in DIRECTED if d[0] == name)
    assert r.stop == "hlt", f"{name}: {r.stop}"
    assert r.rip == CODE_BASE + prog.hlt_offset + 1
    _check_expected(name, r, expected)
    u = _compare_unicorn(prog, r)
    _check_expected(name + " (unicorn)", u, expected, core=False)  # the hand-written values


@pytest.mark.parametrize("name", [f[0] for f in FAULTS])
def test_stops(runs, name):
    prog, r = runs[name]
    _, _, regs, stop, expected = next(f for f in FAULTS if f[0] == name)
    if stop == "hlt":
        assert r.stop == "hlt", f"{name}: {r.stop}"
        return
    got = r.stop[:len(stop)]
    assert got == stop, f"{name}: stopped with {r.stop}, expected {stop}"
    # Nothing of the stopped instruction is visible: RIP is its own, registers unchanged.
    assert r.rip == (stop[2] if stop[0] == "unit" else stop[3])
    assert r.retired == RETIRED_BEFORE_STOP.get(name, 1), f"{name}: retired {r.retired}"
    initial = dict(prog.regs)
    initial.update(expected)
    for k, v in initial.items():
        assert r.regs[k] == v, f"{name}: {k} = {r.regs[k]:#x}, expected {v:#x}"


def _compare_all(runs, prefix, count):
    """Every program named `prefix`... compared with Unicorn; returns their (Program, Result)."""
    pairs = [runs[n] for n in runs if n.startswith(prefix)]
    assert len(pairs) == count
    for prog, r in pairs:
        _compare_unicorn(prog, r)
    return pairs


def test_random_programs_vs_unicorn(runs):
    retired = sum(r.retired for _, r in _compare_all(runs, "random", N_PROGRAMS))
    # The programs really ran (forward branches may skip a few instructions).
    assert retired >= 5 * N_PROGRAMS
    print(f"{N_PROGRAMS} random programs, {retired} instructions retired, equal to Unicorn")


def test_pipeline_stress_vs_unicorn(runs):
    faults = sum(prog.fault is not None
                 for prog, _ in _compare_all(runs, "pipeline", N_PIPELINE))
    # Both endings occur (the generator ends about one program in three with a fault).
    assert N_PIPELINE < 10 or 0 < faults < N_PIPELINE
    print(f"{N_PIPELINE} pipeline stress programs ({faults} ending in a fault), equal to Unicorn")


def test_lint_core():
    from sim import flow, lint

    verilog = flow.generate_verilog(Core, "core", {})
    ok, output = lint.lint_verilog(verilog, top_module="core")
    assert ok, output
