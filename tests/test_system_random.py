"""Differential test of the whole system against Unicorn: random programs through paging and RAM.

The core's own differential test (tests/test_core_exec.py) runs the core alone over a Python
memory. Here the same kind of random programs (`tb.x86.core_progs`) run on `rtl.soc.Soc` under
Verilator (``vtx run``): every fetch, load and store goes through the translation unit (the
boot identity map, A/D updates of the 1 GiB entries), the arbiter and the RAM's byte-masked
writes. Each program is placed at its address (code at `CODE_BASE`, its random DATA and STACK
contents written by a generated prologue, its registers and RFLAGS set last) and ends at its HLT;
the GPRs, RIP, the arithmetic flags and the DATA and STACK regions must equal Unicorn's.

The pipeline stress programs (`tb.x86.pipeline_progs`: dependent chains, loads right after
stores to the same and overlapping bytes, self-modifying code followed by a jump, faults in the
shadow of taken branches, a precise fault at the end of some) run the same way; for a program
that ends in a fault, the fault reported by `vtx run` (vector and RIP) must be the one Unicorn
stops at, with the state before it.

`VTX_SYSTEM_PROGRAMS` (default 6) and `VTX_SYSTEM_PIPELINE_PROGRAMS` (default 8) set the numbers
of programs; `VTX_SYSTEM_SEED` the seed.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest

from rtl.arch.vmx import RFLAGS_ARITH
from tb.x86.core_progs import random_programs
from tb.x86.core_tb import CODE_BASE, DATA_BASE, DATA_SIZE, STACK_BASE, STACK_SIZE, run_unicorn
from tb.x86.pipeline_progs import pipeline_programs
from tb.x86.unicorn_ref import REG_NAMES

N_PROGRAMS = int(os.environ.get("VTX_SYSTEM_PROGRAMS", "6"))
N_PIPELINE = int(os.environ.get("VTX_SYSTEM_PIPELINE_PROGRAMS", "8"))
SEED = int(os.environ.get("VTX_SYSTEM_SEED", "5"))
PROLOGUE_OFFSET = 0x8000        # the prologue lives above the program's 8 KiB code region


def soc_source(prog) -> str:
    """The program's bytes at CODE_BASE and a prologue (the entry) that sets up its state."""
    lines = [".intel_syntax noprefix", ".text", ".globl _start"]
    lines += [f"  .byte {', '.join(str(b) for b in prog.image[i:i + 32])}"
              for i in range(0, len(prog.image), 32)]
    lines += [f".org {PROLOGUE_OFFSET:#x}", "_start:"]
    for base, blob, size in ((DATA_BASE, prog.data, DATA_SIZE), (STACK_BASE, prog.stack,
                                                                 STACK_SIZE)):
        blob = blob.ljust(size, b"\0")
        for off in range(0, size, 8):
            lines += [f"  mov rax, {int.from_bytes(blob[off:off + 8], 'little'):#x}",
                      f"  mov [{base + off:#x}], rax"]
    lines += [f"  mov rax, {prog.rflags:#x}", "  push rax", "  popfq"]
    for name in REG_NAMES:
        if name != "rsp":
            lines.append(f"  mov {name}, {prog.regs.get(name, 0):#x}")
    lines += [f"  mov rsp, {prog.regs['rsp']:#x}", "  jmp qword ptr [rip + entry]",
              "entry:", f"  .quad {CODE_BASE:#x}", ""]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def programs():
    return random_programs(random.Random(SEED), N_PROGRAMS, 8, 34, name="sys")


def run_on_the_system_and_compare(tmp_path, prog):
    """`prog` through `vtx run` and Unicorn: the stop, GPRs, RIP, flags, DATA, STACK and the
    program's code (self-modifying programs write it) must be equal."""
    path = tmp_path / f"{prog.name}.S"
    path.write_text(soc_source(prog))
    proc = subprocess.run(
        [sys.executable, "-m", "sim.cli", "run", "--json", "--max-cycles", "200000",
         "--dump", f"{DATA_BASE:#x}:{DATA_SIZE}", "--dump", f"{STACK_BASE:#x}:{STACK_SIZE}",
         "--dump", f"{CODE_BASE:#x}:{len(prog.image)}", str(path)],
        capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    u = run_unicorn(prog)
    if prog.fault is None:
        assert r["exit"] == {"kind": "hlt"}, f"{prog.name}: {r['exit']}\n{prog.source}"
    else:
        got = (r["exit"]["kind"], r["exit"].get("vector"), r["exit"].get("rip"))
        assert got == u.stop, f"{prog.name}: {r['exit']}, Unicorn {u.stop}\n{prog.source}"
    diffs = [f"{n}: system {r['regs'][n]:#x} unicorn {u.regs[n]:#x}"
             for n in REG_NAMES if r["regs"][n] != u.regs[n]]
    if r["regs"]["rip"] != u.rip:
        diffs.append(f"rip: system {r['regs']['rip']:#x} unicorn {u.rip:#x}")
    if (r["regs"]["rflags"] ^ u.rflags) & RFLAGS_ARITH:
        diffs.append(f"rflags: system {r['regs']['rflags']:#x} unicorn {u.rflags:#x}")
    for dump in r["memory"]:
        got = bytes.fromhex(dump["hex"])
        want = u.memory[dump["addr"]][:dump["length"]]
        if got != want:
            first = next(i for i in range(len(got)) if got[i] != want[i])
            diffs.append(f"memory differs first at {dump['addr'] + first:#x}")
    assert not diffs, f"{prog.name}:\n  " + "\n  ".join(diffs) + f"\n--- source ---\n" \
        f"{prog.source}"
    assert r["instructions"] > 5


@pytest.mark.parametrize("k", range(N_PROGRAMS))
def test_random_program_on_the_system_vs_unicorn(tmp_path, programs, k):
    run_on_the_system_and_compare(tmp_path, programs[k])


@pytest.fixture(scope="module")
def stress_programs():
    return pipeline_programs(random.Random(SEED), N_PIPELINE, name="syspipe", system=True)


@pytest.mark.parametrize("k", range(N_PIPELINE))
def test_pipeline_stress_program_on_the_system_vs_unicorn(tmp_path, stress_programs, k):
    run_on_the_system_and_compare(tmp_path, stress_programs[k])
