"""`rtl.soc.exit_info.vmx_instruction_information` in Amaranth's simulator (a harness with the
request's fields as inputs) against `tb/model/exit_info.py` (the SDM's bit positions): random
requests of every VMX instruction class, memory and register forms, with and without index and
base; directed VMREAD and VMPTRLD fields written out by hand. (The function's Verilog is linted
inside `SystemUnit`, tests/test_flow.py.)"""

from __future__ import annotations

import os
import random

from amaranth.hdl import Elaboratable, Module, Signal

from rtl.core.layouts import VMX_OP_OF_CLASS, InsnClass
from rtl.soc.exit_info import vmx_instruction_information
from tb.comb import run_combinational, set_ports
from tb.model.exit_info import instruction_information

SEED = int(os.environ.get("VTX_SEED", "1"))
VECTORS = int(os.environ.get("VTX_EXIT_INFO_VECTORS", "1000"))
INPUTS = ("cls", "mem", "scale", "index", "index_valid", "base", "base_valid", "seg", "rm",
          "reg")


class _Harness(Elaboratable):
    def __init__(self):
        self.cls = Signal(InsnClass)
        self.mem, self.index_valid, self.base_valid = Signal(), Signal(), Signal()
        self.scale, self.seg = Signal(2), Signal(3)
        self.index, self.base, self.rm, self.reg = (Signal(4) for _ in range(4))
        self.info = Signal(32)

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.info.eq(vmx_instruction_information(
            self.cls, self.mem, self.scale, self.index, self.index_valid, self.base,
            self.base_valid, self.seg, self.rm, self.reg))
        return m


def run_info(vectors):
    dut = _Harness()
    return run_combinational(dut, vectors, lambda ctx, v: set_ports(ctx, dut, v, INPUTS),
                             lambda ctx: ctx.get(dut.info))


def test_instruction_information_random_vs_model():
    rng = random.Random(SEED * 43)
    vectors = [{"cls": rng.choice(list(VMX_OP_OF_CLASS)), "mem": rng.randrange(2),
                "scale": rng.randrange(4), "index": rng.randrange(16),
                "index_valid": rng.randrange(2), "base": rng.randrange(16),
                "base_valid": rng.randrange(2), "seg": rng.randrange(6), "rm": rng.randrange(16),
                "reg": rng.randrange(16)} for _ in range(VECTORS)]
    for v, got in zip(vectors, run_info(vectors), strict=True):
        want = instruction_information(v)
        assert got == want, f"{v['cls'].name} {v}: {got:#010x}, model {want:#010x}"


def test_instruction_information_directed():
    base = {"scale": 0, "index": 0, "index_valid": 0, "base": 0, "base_valid": 0, "seg": 0,
            "rm": 0, "reg": 0}
    # vmread %rdx, %rax: register form, Reg1 = RAX (0), Reg2 = RDX (2).
    vmread = dict(base, cls=InsnClass.VMREAD, mem=0, rm=0, reg=2)
    # vmptrld 8(%rbx,%rsi,4) with DS: scaling 2, 64-bit, DS (3), index RSI (6), base RBX (3).
    vmptrld = dict(base, cls=InsnClass.VMPTRLD, mem=1, scale=2, index=6, index_valid=1,
                   base=3, base_valid=1, seg=3)
    vmcall = dict(base, cls=InsnClass.VMCALL, mem=0)
    assert run_info([vmread, vmptrld, vmcall]) == [0x2000_0400, 0x0199_8102, 0]
