"""`rtl.soc.vmx_operands.VmxOperands` in Amaranth's simulator against
`tb/model/vmx_operands.py`: `VTX_VMX_OPERANDS_VECTORS` (default 2000) random requests of every
VMX instruction class, register and memory forms, RIP-relative or not, loaded or not, precheck
done or not; every field offered to the VMX unit, `precheck` and `mem_bytes` compared. Directed:
a VMPTRLD with a negative displacement. Verilator lint."""

from __future__ import annotations

import os
import random

from rtl.core.layouts import VMX_OP_OF_CLASS, InsnClass
from rtl.soc.vmx_operands import VmxOperands
from tb.comb import as_int, run_combinational, set_ports
from tb.model.vmx_operands import vmx_operands

SEED = int(os.environ.get("VTX_SEED", "1"))
VECTORS = int(os.environ.get("VTX_VMX_OPERANDS_VECTORS", "2000"))
INPUTS = ("cls", "mem", "mem_val", "rip_rel", "ea", "disp", "loaded", "reg_val", "rm_val",
          "rax", "rcx", "cr0", "cr4", "efer", "rflags", "precheck_final")
INSTR_FIELDS = ("op", "precheck", "register_operand", "mem", "reg", "value", "qualification")
CPU_FIELDS = ("cpl", "cr0", "cr4", "efer", "cs_l", "rflags", "feature_control",
              "mov_ss_blocking")



def run_operands(vectors):
    dut = VmxOperands()

    def read(ctx):
        got = {f: as_int(ctx.get(getattr(dut.instr, f))) for f in INSTR_FIELDS}
        got.update({f"cpu.{f}": as_int(ctx.get(getattr(dut.instr.cpu, f))) for f in CPU_FIELDS})
        got["precheck_out"] = ctx.get(dut.precheck)
        got["mem_bytes"] = ctx.get(dut.mem_bytes)
        return got

    return run_combinational(dut, vectors, lambda ctx, v: set_ports(ctx, dut, v, INPUTS), read)


def random_vector(rng):
    v = {"cls": rng.choice(list(VMX_OP_OF_CLASS)), "mem": rng.randrange(2),
         "mem_val": rng.getrandbits(128), "rip_rel": rng.randrange(2),
         "disp": rng.choice([0, 8, 0xFFFF_FFF8, rng.getrandbits(32)]),
         "loaded": rng.randrange(2), "precheck_final": rng.randrange(2)}
    v.update({k: rng.getrandbits(64) for k in ("ea", "reg_val", "rm_val", "rax", "rcx", "cr0",
                                               "cr4", "efer", "rflags")})
    return v


def _check(v, got):
    want = vmx_operands(v)
    diffs = [f"{k}: {got[k]:#x}, model {as_int(w):#x}" for k, w in want.items()
             if got[k] != as_int(w)]
    if got["precheck_out"] != got["precheck"]:
        diffs.append("`precheck` differs from `instr.precheck`")
    assert not diffs, f"{v['cls'].name} {v}:\n  " + "\n  ".join(diffs)


def test_vmx_operands_random_vs_model():
    rng = random.Random(SEED * 41)
    vectors = [random_vector(rng) for _ in range(VECTORS)]
    for v, got in zip(vectors, run_operands(vectors), strict=True):
        _check(v, got)


def test_vmx_operands_directed():
    # VMPTRLD [rbx - 8], not loaded yet: a precheck; the qualification is the displacement.
    v = {k: 0 for k in INPUTS}
    v.update(cls=InsnClass.VMPTRLD, mem=1, disp=0xFFFF_FFF8, ea=0x5000)
    got, = run_operands([v])
    assert got["precheck"] and got["mem_bytes"] == 8 and not got["register_operand"]
    assert got["qualification"] == 2**64 - 8


def test_lint_vmx_operands():
    from sim import flow, lint

    verilog = flow.generate_verilog(VmxOperands, "vmx_operands", {})
    ok, output = lint.lint_verilog(verilog, top_module="vmx_operands")
    assert ok, output
