"""System benchmark: ``vtx bench system`` writes ``build/bench/system.json``.

Three programs run on the whole system (`rtl.soc.Soc`) through ``vtx run --json`` (Verilator),
each measuring itself with RDTSC (the TSC is the system's cycle counter) and leaving its figures
in registers:

    root_ipc              instructions per cycle of a register loop in root operation
                          (LOOP_ITERATIONS iterations of 4 instructions, RDTSC around it)
    non_root_ipc          the same loop in a guest (EPT on, VPID on), measured by the guest
    round_trip_cycles     one VM exit + VMRESUME from software: a guest runs ROUND_TRIPS CPUIDs,
                          each exiting to a handler that skips it and resumes; RDTSC around
                          the batch, divided by ROUND_TRIPS (includes the CPUID's own fetch and
                          the handler's 8 instructions)
    sim_instructions_per_second   `vtx run` speed (Verilator, model already built): the extra
                                  instructions of a long root loop (SPEED_ITERATIONS) over the
                                  short one, divided by the extra wall time, so the fixed cost
                                  of a run (process and simulator start, loading) cancels out
    sim_cycles_per_second         the same in clock cycles
    run_overhead_seconds          that fixed cost: the wall time of the short run
    demo_run_seconds              the wall time of `vtx run` of the hypervisor demo
                                  (examples/hypervisor/hypervisor.S), model cached, no waves:
                                  what a user waits for
    demo_cycles                   the demo's cycle count (start to the exit port)

The wall times are each the best of TIMING_RUNS runs: the machines are shared, and a neighbour's
load only ever adds time.

The VMCS the guests run with is `tb.model.vmx.example_vmcs_fields` (the one every entry check
accepts) through `tb.x86.vmx_asm.hypervisor`: the programs are generated, so no constant is
copied into assembly by hand.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from sim import flow

LOOP_ITERATIONS = 2000
SPEED_ITERATIONS = 50_000       # the speed run: ~200 k instructions
ROUND_TRIPS = 50
TIMING_RUNS = 3
DEMO = flow.REPO_ROOT / "examples" / "hypervisor" / "hypervisor.S"
KEYS = ("root_ipc", "non_root_ipc", "round_trip_cycles", "sim_instructions_per_second",
        "sim_cycles_per_second", "run_overhead_seconds", "demo_run_seconds", "demo_cycles")

def _loop(iterations: int = LOOP_ITERATIONS) -> list[str]:
    return ["  rdtsc", "  shl rdx, 32", "  or rax, rdx", "  mov r12, rax",
            f"  mov ecx, {iterations}",
            "1: add rbx, rcx", "  xor rsi, rbx", "  dec ecx", "  jnz 1b",
            "  rdtsc", "  shl rdx, 32", "  or rax, rdx", "  sub rax, r12", "  mov r13, rax"]


_LOOP = _loop()


def root_loop(iterations: int = LOOP_ITERATIONS) -> str:
    return "\n".join([".intel_syntax noprefix", ".globl _start", "_start:", *_loop(iterations),
                      "  xor eax, eax", "  out 0xf4, eax", ""])


def _vmx_setup(guest: list[str], handler: list[str]) -> str:
    from tb.x86.vmx_asm import hypervisor
    return hypervisor(guest, handler)


def non_root_loop() -> str:
    # The guest measures its own loop and VMCALLs; the handler ends the run (GPRs survive).
    return _vmx_setup(guest=[*_LOOP, "  vmcall"],
                      handler=["  vmxoff", "  xor eax, eax", "  out 0xf4, eax"])


def round_trip() -> str:
    guest = ["  rdtsc", "  shl rdx, 32", "  or rax, rdx", "  mov r12, rax",
             f"  mov r11, {ROUND_TRIPS}",
             "2: xor eax, eax", "  cpuid", "  dec r11", "  jnz 2b",
             "  rdtsc", "  shl rdx, 32", "  or rax, rdx", "  sub rax, r12", "  mov r13, rax",
             "  vmcall"]
    handler = ["  mov rdx, 0x4402", "  vmread rax, rdx", "  cmp eax, 18", "  je 3f",
               "  mov rdx, 0x681e", "  vmread rax, rdx", "  mov rdx, 0x440c",
               "  vmread rcx, rdx", "  add rax, rcx", "  mov rdx, 0x681e", "  vmwrite rdx, rax",
               "  vmresume",
               "3: vmxoff", "  xor eax, eax", "  out 0xf4, eax"]
    return _vmx_setup(guest=guest, handler=handler)


def _vtx_run(source: str | None, path: Path) -> tuple[dict, float]:
    """`vtx run --json` of `source` written to `path` (of `path` as it is when `source` is
    None): the result and the wall time."""
    if source is not None:
        path.write_text(source)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "sim.cli", "run", "--json", str(path)],
                          capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - t0
    if proc.returncode:
        raise RuntimeError(f"vtx run {path} failed ({proc.returncode}):\n{proc.stderr}")
    result = json.loads(proc.stdout)
    if result["exit"] != {"kind": "exit_port", "code": 0}:
        raise RuntimeError(f"{path}: the program ended with {result['exit']}\n{proc.stderr}")
    return result, elapsed


def _best_of(runs: int, source: str | None, path: Path) -> tuple[dict, float]:
    """`_vtx_run` `runs` times: the last result (every run is the same simulation) and the
    shortest wall time."""
    walls = []
    for _ in range(runs):
        result, wall = _vtx_run(source, path)
        walls.append(wall)
    return result, min(walls)


def run(out: Path | None = None) -> dict:
    t0 = time.monotonic()
    root = flow.resolve_build_root() / "bench"
    out = Path(out) if out else root / "system.json"
    root.mkdir(parents=True, exist_ok=True)
    # Build (or find) the model first so the timed run measures simulation only.
    _vtx_run(root_loop(), root / "system_root_loop.S")
    r, wall = _best_of(TIMING_RUNS, root_loop(), root / "system_root_loop.S")
    loop_insns = 4 * LOOP_ITERATIONS + 5     # between the two RDTSCs, the second included
    figures = {"root_ipc": round(loop_insns / r["regs"]["r13"], 4)}
    big, big_wall = _best_of(TIMING_RUNS, root_loop(SPEED_ITERATIONS),
                             root / "system_speed_loop.S")
    extra = max(big_wall - wall, 1e-3)
    figures["sim_instructions_per_second"] = round((big["instructions"] - r["instructions"])
                                                   / extra)
    figures["sim_cycles_per_second"] = round((big["cycles"] - r["cycles"]) / extra)
    figures["run_overhead_seconds"] = round(wall, 2)
    demo, demo_wall = _best_of(TIMING_RUNS, None, DEMO)
    figures["demo_run_seconds"] = round(demo_wall, 2)
    figures["demo_cycles"] = demo["cycles"]
    g, _ = _vtx_run(non_root_loop(), root / "system_non_root_loop.S")
    figures["non_root_ipc"] = round(loop_insns / g["regs"]["r13"], 4)
    t, _ = _vtx_run(round_trip(), root / "system_round_trip.S")
    if t["vm_exits"].get("CPUID") != ROUND_TRIPS:
        raise RuntimeError(f"round trip: expected {ROUND_TRIPS} CPUID exits, got {t['vm_exits']}")
    figures["round_trip_cycles"] = round(t["regs"]["r13"] / ROUND_TRIPS, 1)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"system bench ({time.monotonic() - t0:.0f} s): "
          + ", ".join(f"{k}={figures[k]}" for k in KEYS) + f" -> {out}")
    return figures


if __name__ == "__main__":
    run()
