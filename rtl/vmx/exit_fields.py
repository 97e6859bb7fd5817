"""What a VM exit or a VM-entry failure writes into the current VMCS, in one cycle.

A VM exit (SDM 27.2-27.3) writes the exit-information fields (reason, qualification, guest
linear and physical address, instruction length and information, the interruption and
IDT-vectoring information and error codes), clears the valid bit of the VM-entry interruption
information, sets "IA-32e mode guest" of the VM-entry controls to the guest's EFER.LMA (the
design stores LMA there: `VMX_MISC` bit 5) and saves the guest state the core can change
(`EXIT_SAVED_GUEST_FIELDS`): DR7 and IA32_DEBUGCTL only with "save debug controls", IA32_PAT
with "save IA32_PAT", IA32_EFER with "save IA32_EFER", the PDPTEs only with EPT, the
preemption-timer value with "save VMX-preemption-timer value"; every other guest field keeps the
value the entry loaded. A VM-entry failure (SDM 26.8) writes only the exit reason (0x80000021,
invalid guest state, with the entry-failure bit) and its qualification.

The values (`EXIT_WRITTEN_LAYOUT`, with an enable per field) go to the working copy's parallel
port (`PARALLEL_FIELDS`, the fields the working copy holds) and to the exit write-back, which
holds the exit-information fields (`EXIT_INFO_WRITTEN`) until it has copied them into the cache
memory (`rtl.vmx.exit_write_back`).

Ports
-----
``vm_exit`` (in): a VM exit is taken in this cycle, described by ``exit`` (in, `EXIT_LAYOUT`).
``entry_failure`` (in): a VM entry fails in this cycle with ``failure_qualification``.
``vmcs`` (in, `WORKING_LAYOUT`): the current VMCS (its VM-exit controls, VM-entry controls and
VM-entry interruption information are read); ``ept_enabled`` (in): whether EPT is on ("activate
secondary controls" and "enable EPT").
``data`` (out, `EXIT_WRITTEN_LAYOUT`), ``enables`` (out, a bit per member): the write.

Timing
------
Combinational.
"""

from amaranth.hdl import Cat, Module, Mux, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from rtl.arch.vmx import (
    EFER_LMA,
    ENTRY_CTL_IA32E_MODE_GUEST,
    EXIT_CTL_SAVE_DEBUG_CONTROLS,
    EXIT_CTL_SAVE_EFER,
    EXIT_CTL_SAVE_PAT,
    EXIT_CTL_SAVE_PREEMPTION_TIMER,
    EXIT_REASON_INVALID_GUEST_STATE,
    EXIT_SAVED_GUEST_FIELDS,
    FIELD_BY_NAME,
    INTR_INFO_VALID,
)
from rtl.arch.vmx import bit_position as bit
from rtl.vmx.layouts import NOT_IN_WORKING_COPY, WORKING_LAYOUT, member_name
from rtl.vmx.ports import EXIT_LAYOUT
from rtl.vmx.working_copy import PARALLEL_FIELDS

__all__ = ["ExitFieldWrites", "EXIT_INFO_WRITTEN", "EXIT_WRITTEN_FIELDS", "EXIT_WRITTEN_LAYOUT"]

#: The exit-information fields a VM exit writes (the working copy does not hold them), in the
#: order the exit write-back copies them into the cache memory: the reason and qualification
#: first.
EXIT_INFO_WRITTEN = (
    "VM_EXIT_REASON", "EXIT_QUALIFICATION", "GUEST_LINEAR_ADDRESS", "GUEST_PHYSICAL_ADDRESS",
    "VM_EXIT_INSTRUCTION_LEN", "VMX_INSTRUCTION_INFO", "VM_EXIT_INTR_INFO",
    "VM_EXIT_INTR_ERROR_CODE", "IDT_VECTORING_INFO_FIELD", "IDT_VECTORING_ERROR_CODE",
)
assert set(EXIT_INFO_WRITTEN) <= NOT_IN_WORKING_COPY

#: Every field a VM exit writes, in the order the exit write-back copies them.
EXIT_WRITTEN_FIELDS = EXIT_INFO_WRITTEN + PARALLEL_FIELDS

EXIT_WRITTEN_LAYOUT = data.StructLayout(
    {member_name(n): unsigned(FIELD_BY_NAME[n].bits) for n in EXIT_WRITTEN_FIELDS})

_U32 = (1 << 32) - 1
#: Saved guest fields and the VM-exit control that saves them.
_SAVED_UNDER = {
    "guest_dr7": EXIT_CTL_SAVE_DEBUG_CONTROLS,
    "guest_ia32_debugctl": EXIT_CTL_SAVE_DEBUG_CONTROLS,
    "guest_ia32_pat": EXIT_CTL_SAVE_PAT,
    "guest_ia32_efer": EXIT_CTL_SAVE_EFER,
    "vmx_preemption_timer_value": EXIT_CTL_SAVE_PREEMPTION_TIMER,
}


class ExitFieldWrites(wiring.Component):
    vm_exit: In(1)
    exit: In(EXIT_LAYOUT)
    entry_failure: In(1)
    failure_qualification: In(3)
    vmcs: In(WORKING_LAYOUT)
    ept_enabled: In(1)
    data: Out(EXIT_WRITTEN_LAYOUT)
    enables: Out(len(EXIT_WRITTEN_FIELDS))

    def elaborate(self, platform):
        m = Module()
        ex = self.exit
        names = [member_name(n) for n in EXIT_WRITTEN_FIELDS]
        information = {
            "vm_exit_reason": ex.reason,
            "exit_qualification": ex.qualification,
            "guest_linear_address": ex.gla,
            "guest_physical_address": ex.gpa,
            "vm_exit_instruction_len": ex.instr_len,
            "vmx_instruction_info": ex.instr_info,
            "vm_exit_intr_info": ex.intr_info,
            "vm_exit_intr_error_code": ex.intr_error,
            "idt_vectoring_info_field": ex.idt_vectoring_info,
            "idt_vectoring_error_code": ex.idt_vectoring_error,
            "vm_entry_intr_info_field": (self.vmcs.vm_entry_intr_info_field
                                         & (~INTR_INFO_VALID & _U32)),
            "vm_entry_controls": Mux(
                ex.guest.guest_ia32_efer[bit(EFER_LMA)],
                self.vmcs.vm_entry_controls | ENTRY_CTL_IA32E_MODE_GUEST,
                self.vmcs.vm_entry_controls & (~ENTRY_CTL_IA32E_MODE_GUEST & _U32)),
        }
        saved = [member_name(n) for n in EXIT_SAVED_GUEST_FIELDS]
        assert names == [*information, *saved]
        m.d.comb += [self.data[n].eq(v) for n, v in information.items()]
        m.d.comb += [self.data[n].eq(ex.guest[n]) for n in saved]

        exit_en = []
        for n in names:
            if n in _SAVED_UNDER:
                exit_en.append(self.vmcs.vm_exit_controls[bit(_SAVED_UNDER[n])])
            elif n.startswith("guest_pdptr"):
                exit_en.append(self.ept_enabled)
            else:
                exit_en.append(1)
        failure_en = [int(n in ("vm_exit_reason", "exit_qualification")) for n in names]
        with m.If(self.entry_failure):
            m.d.comb += [self.data.vm_exit_reason.eq(EXIT_REASON_INVALID_GUEST_STATE),
                         self.data.exit_qualification.eq(self.failure_qualification),
                         self.enables.eq(Cat(*failure_en))]
        with m.Elif(self.vm_exit):
            m.d.comb += self.enables.eq(Cat(*exit_en))
        return m
