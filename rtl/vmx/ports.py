"""Port layouts of the VMX unit (`rtl.vmx.unit.VmxUnit`) that the core and the testbench share.

* `INSTR_LAYOUT`: one decoded VMX instruction with its operands and the processor state its
  checks look at (`tb.model.vmx.Operands` + `CpuState`). With ``precheck`` = 1 the unit only
  answers what `VmxModel.precheck` answers (the outcome decided before the memory operand is
  accessed, or ``proceed`` = 1 when the core must access it), without any state change.
* `RESULT_LAYOUT`: the answer (`tb.model.vmx.Result`): kind, error number of a VMfailValid, exit
  reason/qualification of a VM exit, VMREAD/VMPTRST value, new arithmetic flags
  (``flags_valid`` = 0 when RFLAGS is unchanged), the new EPTP of a VMFUNC.
* `MEM_REQ_LAYOUT` / `MEM_RESP_LAYOUT`: the unit's memory port, 64-bit qwords; writes get no
  response; responses come in request order.
* `EXIT_LAYOUT`: a VM exit the core reports (`VmxModel.vm_exit` arguments + the guest state it
  can change, `EXIT_GUEST_LAYOUT`).
* `HOST_LOAD_LAYOUT`: what a VM exit or a VM-entry failure loads (`tb.model.vmx.HostState`).
* `ENTRY_LAYOUT`: what a successful VM entry establishes (`tb.model.vmx.EntryEffects`).
"""

from __future__ import annotations

from amaranth.hdl import unsigned
from amaranth.lib import data

from rtl.arch.vmx import (EXIT_SAVED_GUEST_FIELDS, FIELD_BY_NAME, MAXPHYADDR, VmInstructionError,
                          VmxOp, VmxResult)
from rtl.vmx.layouts import CPU_STATE_LAYOUT, GUEST_STATE_LAYOUT, member_name

__all__ = ["INSTR_LAYOUT", "RESULT_LAYOUT", "MEM_REQ_LAYOUT", "MEM_RESP_LAYOUT", "EXIT_LAYOUT",
           "EXIT_GUEST_LAYOUT", "HOST_LOAD_LAYOUT", "ENTRY_LAYOUT", "HOST_SEGMENTS"]

INSTR_LAYOUT = data.StructLayout({
    "op": VmxOp,
    "precheck": 1,
    "register_operand": 1,
    "mem": 128,             # m64 pointer (VMXON/VMCLEAR/VMPTRLD) or INVEPT/INVVPID descriptor
    "reg": 64,              # VMREAD/VMWRITE encoding, INVEPT/INVVPID type, VMFUNC EAX
    "value": 64,            # VMWRITE source, VMFUNC ECX
    "qualification": 64,    # exit qualification should the instruction exit
    "cpu": CPU_STATE_LAYOUT,
})

RESULT_LAYOUT = data.StructLayout({
    "kind": VmxResult,
    "proceed": 1,           # precheck only: no outcome yet, access the memory operand
    "error": VmInstructionError,
    "exit_reason": 32,
    "qualification": 64,
    "value": 64,
    "flags": 12,            # RFLAGS bits 11:0 of the arithmetic flags (rtl.arch.vmx.result_flags)
    "flags_valid": 1,
    "eptp": 64,
})

MEM_REQ_LAYOUT = data.StructLayout({"addr": MAXPHYADDR, "write": 1, "data": 64})
MEM_RESP_LAYOUT = data.StructLayout({"data": 64})

#: The guest state a VM exit saves (`rtl.arch.vmx.EXIT_SAVED_GUEST_FIELDS`): RIP, RSP, RFLAGS,
#: CR0/CR3/CR4, DR7, DEBUGCTL, PAT, EFER, the PDPTEs and vmx_preemption_timer_value (the
#: remaining timer count, saved with "save VMX-preemption timer value"). The other guest-state
#: fields keep their values: nothing in this core changes them between entry and exit.
EXIT_GUEST_LAYOUT = data.StructLayout(
    {member_name(name): unsigned(FIELD_BY_NAME[name].bits) for name in EXIT_SAVED_GUEST_FIELDS})

EXIT_LAYOUT = data.StructLayout({
    "reason": 16,
    "qualification": 64,
    "gla": 64,
    "gpa": 64,
    "instr_len": 32,
    "instr_info": 32,
    "intr_info": 32,
    "intr_error": 32,
    "idt_vectoring_info": 32,
    "idt_vectoring_error": 32,
    # The guest state at the exit, the fields the core can change (EXIT_GUEST_LAYOUT).
    "guest": EXIT_GUEST_LAYOUT,
})

HOST_SEGMENTS = ("es", "cs", "ss", "ds", "fs", "gs", "tr")

HOST_LOAD_LAYOUT = data.StructLayout({
    "cr0": 64, "cr3": 64, "cr4": 64, "efer": 64,
    "pat": 64, "pat_valid": 1,
    "rsp": 64, "rip": 64, "rflags": 64, "cs_l": 1,
    **{f"{s}_selector": 16 for s in HOST_SEGMENTS},
    "fs_base": 64, "gs_base": 64, "tr_base": 64, "gdtr_base": 64, "idtr_base": 64,
    "sysenter_cs": 32, "sysenter_esp": 64, "sysenter_eip": 64,
})

ENTRY_LAYOUT = data.StructLayout({
    # Guest state as loaded; dr7/debugctl valid with `load_debug`, pat with `load_pat`, the
    # PDPTRs with `pdptes_valid`; ia32_efer is the computed EFER.
    "guest": GUEST_STATE_LAYOUT,
    "load_debug": 1,
    "load_pat": 1,
    "pdptes_valid": 1,
    "ept_enabled": 1,
    "eptp": 64,
    "vpid_enabled": 1,
    "vpid": 16,
    "unrestricted_guest": 1,
    "timer_valid": 1,
    "timer": 32,
    "event_valid": 1,
    "event_info": 32,
    "event_error": 32,
    "event_len": 32,
    "pending_mtf": 1,
})
