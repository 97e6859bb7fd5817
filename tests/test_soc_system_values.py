"""`rtl.soc.system_values.SystemValues` in Amaranth's simulator against
`tb/model/system_values.py`: `VTX_SYSTEM_VALUES_VECTORS` (default 2000) random requests (every
CPUID leaf of the table and random ones, the MSRs handled here and random numbers, every CR,
IN/OUT by imm8 and DX at every size, TSC offsetting on and off in both modes); every output
compared. Directed: a leaf above the maximum, the offset TSC through RDMSR. Verilator lint."""

from __future__ import annotations

import os
import random

from rtl.arch.system import CPUID_LEAVES, CPUID_MAX_LEAF, MSR_EFER, MSR_TSC
from rtl.arch.vmx import IA32_FEATURE_CONTROL
from rtl.core.layouts import InsnClass, OpSize
from rtl.soc.system_values import SystemValues
from tb.comb import as_int, run_combinational, set_ports
from tb.model.system_values import system_values

SEED = int(os.environ.get("VTX_SEED", "1"))
VECTORS = int(os.environ.get("VTX_SYSTEM_VALUES_VECTORS", "2000"))
INPUTS = ("cls", "opsize", "reg", "imm8", "eax", "ecx", "edx", "cr0", "cr3", "cr4", "efer",
          "tsc", "non_root", "tsc_offsetting", "tsc_offset", "msr_valid", "msr_value")
OUTPUTS = ("cpuid_eax", "cpuid_ebx", "cpuid_ecx", "cpuid_edx", "tsc_value", "msr_addr",
           "msr_known", "msr_value_out", "wrmsr_value", "cr_value", "port", "io_bytes",
           "io_size", "out_value")
CLASSES = (InsnClass.CPUID, InsnClass.RDTSC, InsnClass.RDMSR, InsnClass.WRMSR,
           InsnClass.MOV_FROM_CR, InsnClass.IN_IMM, InsnClass.IN_DX, InsnClass.OUT_IMM,
           InsnClass.OUT_DX)


def run_values(vectors):
    dut = SystemValues()
    return run_combinational(
        dut, vectors, lambda ctx, v: set_ports(ctx, dut, v, INPUTS),
        lambda ctx: {name: ctx.get(getattr(dut, name)) for name in OUTPUTS})


def random_vector(rng):
    leaf = rng.choice([*CPUID_LEAVES, rng.getrandbits(32), 0x8000_0000 | rng.getrandbits(8)])
    msr = rng.choice([MSR_TSC, IA32_FEATURE_CONTROL, MSR_EFER, 0x480 + rng.randrange(18),
                      rng.getrandbits(32)])
    return {"cls": rng.choice(CLASSES), "opsize": rng.choice(list(OpSize)),
            "reg": rng.choice([0, 3, 4, rng.randrange(16)]), "imm8": rng.getrandbits(8),
            "eax": leaf, "ecx": msr, "edx": rng.getrandbits(32),
            **{k: rng.getrandbits(64) for k in ("cr0", "cr3", "cr4", "efer", "tsc",
                                                "tsc_offset", "msr_value")},
            "non_root": rng.randrange(2), "tsc_offsetting": rng.randrange(2),
            "msr_valid": rng.randrange(2)}



def test_system_values_random_vs_model():
    rng = random.Random(SEED * 37)
    vectors = [random_vector(rng) for _ in range(VECTORS)]
    for v, got in zip(vectors, run_values(vectors), strict=True):
        want = system_values(v)
        diffs = [f"{k}: {as_int(got[k]):#x}, model {as_int(want[k]):#x}" for k in OUTPUTS
                 if as_int(got[k]) != as_int(want[k])]
        assert not diffs, f"{v}:\n  " + "\n  ".join(diffs)


def test_system_values_directed():
    base = {k: 0 for k in INPUTS}
    base.update(cls=InsnClass.CPUID, opsize=OpSize.S32)
    above = dict(base, eax=CPUID_MAX_LEAF + 1)
    offset = dict(base, cls=InsnClass.RDMSR, ecx=MSR_TSC, tsc=1000, tsc_offset=2**64 - 10,
                  non_root=1, tsc_offsetting=1)
    root = dict(offset, non_root=0)
    got_above, got_offset, got_root = run_values([above, offset, root])
    assert [got_above[f"cpuid_e{r}x"] for r in "abcd"] == list(CPUID_LEAVES[CPUID_MAX_LEAF])
    assert got_offset["msr_known"] and got_offset["msr_value_out"] == 990
    assert got_root["msr_value_out"] == 1000


def test_lint_system_values():
    from sim import flow, lint

    verilog = flow.generate_verilog(SystemValues, "system_values", {})
    ok, output = lint.lint_verilog(verilog, top_module="system_values")
    assert ok, output
