"""VMX unit benchmark: ``vtx bench vmx`` writes ``build/bench/vmx.json``.

Runs the cocotb test ``round_trip`` of tb/test_vmx_unit.py on the cached Verilator model of
`VmxUnit()` (memory latency 2 cycles, no back-pressure, results taken at once) and records the
cycles from the accepting edge of an instruction (or VM exit) to the edge of its answer:

    vmread_cycles, vmwrite_cycles      VMREAD / VMWRITE of the current VMCS
    vmptrld_hit_cycles                 VMPTRLD of a VMCS held in the cache (working-copy swap)
    vmptrld_miss_cycles                VMPTRLD that loads the region (after a flush of the
                                       working copy to its slot)
    vmclear_cycles                     VMCLEAR of the cached current VMCS (write-back)
    vm_exit_cycles                     VM exit (guest state saved, host state answered)
    vm_entry_cycles                    VMRESUME with the example VMCS (checks, guest state out)
    round_trip_cycles                  VM exit accepted -> VMRESUME answered, the testbench
                                       issuing VMRESUME as soon as the exit is answered
    vmresume_after_control_write_cycles  VMRESUME after a VMWRITE of the primary
                                       processor-based controls (same value): the entry that
                                       silicon checks in full again
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from rtl.vmx.unit import VmxUnit
from sim import flow

FACTORY = VmxUnit
TOPLEVEL = "vmx_unit"
KEYS = ("vmread_cycles", "vmwrite_cycles", "vmptrld_hit_cycles", "vmptrld_miss_cycles",
        "vmclear_cycles", "vm_exit_cycles", "vm_entry_cycles", "round_trip_cycles",
        "vmresume_after_control_write_cycles")


def run(out: Path | None = None) -> dict:
    t0 = time.monotonic()
    out = Path(out) if out else flow.resolve_build_root() / "bench" / "vmx.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    verilog = flow.generate_verilog(FACTORY, TOPLEVEL, {})
    build = flow.build_verilator(verilog, TOPLEVEL)
    flow.run_cocotb("tb.test_vmx_unit", TOPLEVEL, build, testcase="round_trip",
                    extra_env={"VTX_BENCH_OUT": str(out)}, name="bench-vmx")
    figures = json.loads(out.read_text())
    missing = [k for k in KEYS if k not in figures]
    if missing:
        raise RuntimeError(f"vmx bench: missing {missing} in {out}")
    print(f"vmx bench ({time.monotonic() - t0:.0f} s): "
          + ", ".join(f"{k}={figures[k]}" for k in KEYS) + f" -> {out}")
    return figures


if __name__ == "__main__":
    run(Path(sys.argv[1]) if len(sys.argv) > 1 else None)
