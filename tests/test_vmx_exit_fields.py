"""`rtl.vmx.exit_fields.ExitFieldWrites` in Amaranth's simulator against the model's `vm_exit`.

Random cases (`VTX_EXIT_FIELDS_CASES`, default 300): a current VMCS with every field random, the
save controls of the VM-exit controls and "enable EPT" (with "activate secondary controls") each
on half the time, a random exit (reason, qualification, addresses, instruction and event
information) with a random value for every guest field the core reports. The block's write,
applied to the VMCS, must give exactly the VMCS `tb.model.vmx.VmxModel.vm_exit` leaves
(SDM 27.2-27.3). A VM-entry failure writes the exit reason 0x80000021 and the qualification and
nothing else (SDM 26.8).
"""

from __future__ import annotations

import os
import random

from amaranth.sim import Simulator

from rtl.arch.vmx import (
    EXIT_CTL_SAVE_DEBUG_CONTROLS,
    EXIT_CTL_SAVE_EFER,
    EXIT_CTL_SAVE_PAT,
    EXIT_CTL_SAVE_PREEMPTION_TIMER,
    EXIT_REASON_INVALID_GUEST_STATE,
    EXIT_SAVED_GUEST_FIELDS,
    FIELD_BY_NAME,
    FIELDS,
    PROC2_ENABLE_EPT,
    PROC_ACTIVATE_SECONDARY,
    ExitReason,
    VmxMode,
)
from rtl.vmx.exit_fields import EXIT_WRITTEN_FIELDS, ExitFieldWrites
from rtl.vmx.layouts import WORKING_FIELDS, member_name
from tb.model.vmx import EntryEffects, Vmcs, VmxModel

SEED = int(os.environ.get("VTX_SEED", "1"))
CASES = int(os.environ.get("VTX_EXIT_FIELDS_CASES", "300"))


def _with(value, flag, on):
    return value | flag if on else value & ~flag


def _case(rng):
    vmcs = Vmcs()
    for f in FIELDS:
        vmcs[f.name] = rng.getrandbits(f.bits)
    ctls = vmcs["VM_EXIT_CONTROLS"]
    for flag in (EXIT_CTL_SAVE_DEBUG_CONTROLS, EXIT_CTL_SAVE_PAT, EXIT_CTL_SAVE_EFER,
                 EXIT_CTL_SAVE_PREEMPTION_TIMER):
        ctls = _with(ctls, flag, rng.random() < 0.5)
    vmcs["VM_EXIT_CONTROLS"] = ctls
    vmcs["CPU_BASED_VM_EXEC_CONTROL"] = _with(vmcs["CPU_BASED_VM_EXEC_CONTROL"],
                                              PROC_ACTIVATE_SECONDARY, rng.random() < 0.7)
    vmcs["SECONDARY_VM_EXEC_CONTROL"] = _with(vmcs["SECONDARY_VM_EXEC_CONTROL"],
                                              PROC2_ENABLE_EPT, rng.random() < 0.7)
    event = {"reason": rng.choice(list(ExitReason)), "qualification": rng.getrandbits(64),
             "gla": rng.getrandbits(64), "gpa": rng.getrandbits(64),
             "instr_len": rng.getrandbits(32), "instr_info": rng.getrandbits(32),
             "intr_info": rng.getrandbits(32), "intr_error": rng.getrandbits(32),
             "idt_vectoring_info": rng.getrandbits(32),
             "idt_vectoring_error": rng.getrandbits(32)}
    guest = {n: rng.getrandbits(FIELD_BY_NAME[n].bits) for n in EXIT_SAVED_GUEST_FIELDS}
    return vmcs, event, guest


def _model_exit(vmcs, event, guest):
    """The VMCS after the model's `vm_exit` from non-root operation with this VMCS current."""
    model = VmxModel()
    after = Vmcs(dict(vmcs.fields))
    model._need_current = lambda: after         # the guest runs from this VMCS
    model.mode = VmxMode.NON_ROOT
    model.guest = EntryEffects(guest={"GUEST_IA32_EFER": vmcs["GUEST_IA32_EFER"]},
                               ept_enabled=False, eptp=0, vpid_enabled=True, vpid=1,
                               unrestricted_guest=False)
    model.preemption_timer = 0
    model.vm_exit(event["reason"], event["qualification"], event["gla"], event["gpa"],
                  event["instr_len"], event["instr_info"], guest,
                  intr_info=event["intr_info"], intr_error=event["intr_error"],
                  idt_vectoring_info=event["idt_vectoring_info"],
                  idt_vectoring_error=event["idt_vectoring_error"])
    return after.fields


def _apply(fields, data, enables):
    out = dict(fields)
    for i, n in enumerate(EXIT_WRITTEN_FIELDS):
        if enables >> i & 1:
            out[n] = int(data[member_name(n)]) & FIELD_BY_NAME[n].mask
    return out


def test_vm_exit_writes_what_the_model_writes():
    rng = random.Random(SEED)
    cases = [_case(rng) for _ in range(CASES)]
    dut = ExitFieldWrites()

    async def bench(ctx):
        for vmcs, event, guest in cases:
            ctx.set(dut.vm_exit, 1)
            for f in WORKING_FIELDS:
                ctx.set(dut.vmcs[member_name(f)], vmcs[f.name])
            ctx.set(dut.ept_enabled, int(bool(vmcs.proc2 & PROC2_ENABLE_EPT)))
            for k, v in event.items():
                ctx.set(dut.exit[k], v.value if k == "reason" else v)
            for n, v in guest.items():
                ctx.set(dut.exit.guest[member_name(n)], v)
            got = _apply(vmcs.fields, ctx.get(dut.data), ctx.get(dut.enables))
            want = _model_exit(vmcs, event, guest)
            bad = [n for n in want if got[n] != want[n]]
            assert not bad, [f"{n}: {got[n]:#x}, model {want[n]:#x}" for n in bad[:4]]

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()


def test_entry_failure_writes_reason_and_qualification():
    rng = random.Random(SEED)
    dut = ExitFieldWrites()

    async def bench(ctx):
        for qual in range(8):
            vmcs, event, guest = _case(rng)
            ctx.set(dut.vm_exit, 0)
            ctx.set(dut.entry_failure, 1)
            ctx.set(dut.failure_qualification, qual)
            for k, v in event.items():
                ctx.set(dut.exit[k], v.value if k == "reason" else v)
            got = _apply(vmcs.fields, ctx.get(dut.data), ctx.get(dut.enables))
            want = dict(vmcs.fields, VM_EXIT_REASON=EXIT_REASON_INVALID_GUEST_STATE,
                        EXIT_QUALIFICATION=qual)
            assert got == want
        ctx.set(dut.entry_failure, 0)
        assert ctx.get(dut.enables) == 0            # neither: nothing is written

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()
