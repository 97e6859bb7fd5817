"""`rtl.soc.system_rules` in Amaranth's simulator (a harness with the rules' operands as inputs)
against `tb/model/system_rules.py` (the SDM's rules written bit by bit): random values near the
valid ones (each defined bit flipped, reserved bits, fixed bits) and fully random ones, in and
out of VMX root operation; directed values with hand-written outcomes. (The functions' Verilog
is linted inside `SystemUnit`, tests/test_flow.py.)"""

from __future__ import annotations

import os
import random

from amaranth.hdl import Elaboratable, Module, Signal

from rtl.arch.paging import EFER_LMA, EFER_LME, EFER_NXE
from rtl.arch.vmx import CR0_CD, CR0_NW, VMX_CR0_FIXED0, VMX_CR4_FIXED0, VMX_CR4_FIXED1
from rtl.soc import system_rules as rules
from tb.comb import run_combinational, set_ports
from tb.model import system_rules as model

SEED = int(os.environ.get("VTX_SEED", "1"))
VECTORS = int(os.environ.get("VTX_SYSTEM_RULES_VECTORS", "2000"))
MAXPHYADDR = 40
OUTPUTS = ("cr0", "cr3", "cr4", "efer", "efer_value")


class _Harness(Elaboratable):
    def __init__(self):
        self.v, self.efer = Signal(64), Signal(64)
        self.vmx_root = Signal()
        self.cr0, self.cr3, self.cr4, self.efer_fault = Signal(), Signal(), Signal(), Signal()
        self.efer_value = Signal(64)

    def elaborate(self, platform):
        m = Module()
        m.d.comb += [self.cr0.eq(rules.mov_to_cr0_faults(self.v, self.vmx_root)),
                     self.cr3.eq(rules.mov_to_cr3_faults(self.v, MAXPHYADDR)),
                     self.cr4.eq(rules.mov_to_cr4_faults(self.v, self.vmx_root)),
                     self.efer_fault.eq(rules.wrmsr_efer_faults(self.v, self.efer)),
                     self.efer_value.eq(rules.wrmsr_efer_value(self.v, self.efer))]
        return m


def run_rules(vectors):
    dut = _Harness()

    def read(ctx):
        return (ctx.get(dut.cr0), ctx.get(dut.cr3), ctx.get(dut.cr4), ctx.get(dut.efer_fault),
                ctx.get(dut.efer_value))

    return run_combinational(dut, vectors,
                             lambda ctx, v: set_ports(ctx, dut, v, ("v", "efer", "vmx_root")),
                             read)


def expected(v):
    return (model.mov_to_cr0_faults(v["v"], v["vmx_root"]),
            model.mov_to_cr3_faults(v["v"], MAXPHYADDR),
            model.mov_to_cr4_faults(v["v"], v["vmx_root"]),
            model.wrmsr_efer_faults(v["v"], v["efer"]),
            model.wrmsr_efer_value(v["v"], v["efer"]))


def _value(rng):
    """Valid-looking values with a few bits flipped, or anything."""
    base = rng.choice([VMX_CR0_FIXED0 | CR0_CD | CR0_NW, VMX_CR0_FIXED0, VMX_CR4_FIXED1,
                       VMX_CR4_FIXED0 | 1 << 5, EFER_LME | EFER_LMA | EFER_NXE,
                       0x1234_5000, (1 << MAXPHYADDR) - 0x1000])
    if rng.random() < 0.2:
        return rng.getrandbits(64)
    for _ in range(rng.randrange(3)):
        base ^= 1 << rng.choice([rng.randrange(64), rng.randrange(32), 29, 30, 31, 0, 5, 8,
                                 10, 11, 13, MAXPHYADDR])
    return base


def test_rules_random_vs_model():
    rng = random.Random(SEED * 59)
    vectors = [{"v": _value(rng), "vmx_root": rng.randrange(2),
                "efer": rng.choice([EFER_LME | EFER_LMA, EFER_LME | EFER_LMA | EFER_NXE,
                                    rng.getrandbits(64)])} for _ in range(VECTORS)]
    seen = set()
    for v, got in zip(vectors, run_rules(vectors), strict=True):
        want = expected(v)
        assert tuple(int(x) for x in got) == tuple(int(x) for x in want), (hex(v["v"]), v)
        seen.add(want[:4])
    # Both outcomes of each rule occurred.
    for i in range(4):
        assert {s[i] for s in seen} == {False, True}, i


def test_rules_directed():
    ok_cr0 = 0x8005_0033                  # PG WP NE ET MP PE, as the demo's host
    cases = [
        (dict(v=ok_cr0, vmx_root=1, efer=EFER_LME | EFER_LMA), (0, 0, 1)),
        (dict(v=ok_cr0 | CR0_NW, vmx_root=0, efer=0), (1, 0, 1)),             # NW without CD
        (dict(v=ok_cr0 | CR0_NW | CR0_CD, vmx_root=0, efer=0), (0, 0, 1)),
        (dict(v=ok_cr0 & ~(1 << 5), vmx_root=1, efer=0), (1, 0, 1)),          # NE=0 in VMX
        (dict(v=ok_cr0 & ~(1 << 5), vmx_root=0, efer=0), (0, 0, 1)),
        (dict(v=ok_cr0 & ~(1 << 31), vmx_root=0, efer=0), (1, 0, 1)),         # PG=0
        (dict(v=1 << 40, vmx_root=0, efer=0), (1, 1, 1)),                     # above MAXPHYADDR
        (dict(v=0x2020, vmx_root=1, efer=0), (1, 0, 0)),                      # CR4 PAE VMXE
        (dict(v=0x0020, vmx_root=1, efer=0), (1, 0, 1)),                      # VMXE=0 in VMX
        (dict(v=0x0020, vmx_root=0, efer=0), (1, 0, 0)),
    ]
    got = run_rules([c for c, _ in cases])
    for (c, want), g in zip(cases, got, strict=True):
        assert tuple(int(x) for x in g[:3]) == want, (hex(c["v"]), c["vmx_root"])
    efer = EFER_LME | EFER_LMA
    g = run_rules([dict(v=EFER_LME | EFER_NXE | 1, vmx_root=0, efer=efer),
                   dict(v=EFER_NXE, vmx_root=0, efer=efer),
                   dict(v=EFER_LME | 1 << 2, vmx_root=0, efer=efer)])
    assert [(int(x[3]), x[4]) for x in g] == [(0, efer | EFER_NXE | 1), (1, EFER_NXE | efer),
                                              (1, efer)]
