"""`rtl.vmx.state_loads.HostStateLoad` in Amaranth's simulator against the model's `_host_state`.

Random VMCSs (host-state fields and VM-exit controls random, the address-space-size and
load-EFER/PAT controls each half the time) and random processor CR0/EFER at the exit
(`VTX_STATE_LOADS_CASES`, default 300): every member of the loaded host state must equal what
`tb.model.vmx.VmxModel._host_state` computes from the same VMCS (SDM 27.5). `GuestStateLoad`
is compared with the model's `_load_guest` at every VM entry of the VMX unit's random
differential test (tests/test_vmx_rtl.py, `VmxTestbench.compare_entry`).
"""

from __future__ import annotations

import os
import random

from amaranth.sim import Simulator

from rtl.arch.vmx import (
    CR0_HOST_LOADED,
    EFER_LMA,
    EFER_LME,
    EXIT_CTL_HOST_ADDRESS_SPACE_SIZE,
    EXIT_CTL_LOAD_EFER,
    EXIT_CTL_LOAD_PAT,
    FIELDS,
    MAXPHYADDR,
    FieldType,
)
from rtl.vmx.layouts import WORKING_FIELDS, member_name
from rtl.vmx.ports import HOST_SEGMENTS
from rtl.vmx.state_loads import HostStateLoad
from tb.model.vmx import Vmcs, VmxModel

SEED = int(os.environ.get("VTX_SEED", "1"))
CASES = int(os.environ.get("VTX_STATE_LOADS_CASES", "300"))
_U32 = (1 << 32) - 1
_U64 = (1 << 64) - 1


def _case(rng):
    vmcs = Vmcs()
    for f in FIELDS:
        if f.type is FieldType.HOST:
            vmcs[f.name] = rng.getrandbits(64)
    ctls = rng.getrandbits(32)
    for flag in (EXIT_CTL_HOST_ADDRESS_SPACE_SIZE, EXIT_CTL_LOAD_EFER, EXIT_CTL_LOAD_PAT):
        ctls = ctls | flag if rng.random() < 0.5 else ctls & ~flag
    vmcs["VM_EXIT_CONTROLS"] = ctls
    return vmcs, rng.getrandbits(64), rng.getrandbits(64)


def _expected(model, vmcs, cr0, efer):
    h = model._host_state(vmcs, cr0, efer)
    want = {"cr0": h.cr0, "cr3": h.cr3, "cr4": h.cr4, "efer": h.efer,
            "pat_valid": int(h.pat is not None), "rsp": h.rsp, "rip": h.rip,
            "rflags": h.rflags, "cs_l": int(h.cs_l), "fs_base": h.fs_base, "gs_base": h.gs_base,
            "tr_base": h.tr_base, "gdtr_base": h.gdtr_base, "idtr_base": h.idtr_base,
            "sysenter_cs": h.sysenter_cs, "sysenter_esp": h.sysenter_esp,
            "sysenter_eip": h.sysenter_eip}
    if h.pat is not None:
        want["pat"] = h.pat
    for seg in HOST_SEGMENTS:
        want[f"{seg}_selector"] = h.selectors[seg.upper()]
    return want


def test_host_state_matches_the_model():
    rng = random.Random(SEED)
    model = VmxModel(maxphyaddr=MAXPHYADDR)
    cases = [_case(rng) for _ in range(CASES)]
    dut = HostStateLoad(maxphyaddr=MAXPHYADDR)
    bad = []

    async def bench(ctx):
        for vmcs, cr0, efer in cases:
            for f in WORKING_FIELDS:
                ctx.set(dut.vmcs[member_name(f)], vmcs[f.name])
            ctx.set(dut.kept_cr0, cr0 & ~CR0_HOST_LOADED & _U32)
            ctx.set(dut.kept_efer, efer & ~(EFER_LMA | EFER_LME) & _U64)
            got = ctx.get(dut.host)
            for k, v in _expected(model, vmcs, cr0, efer).items():
                if int(got[k]) != v:
                    bad.append(f"{k} = {int(got[k]):#x}, model {v:#x}")

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()
    assert not bad, bad[:5]
