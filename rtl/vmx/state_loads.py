"""The state a VM exit loads and the state a VM entry loads, from the current VMCS.

Two blocks of combinational logic the VMX unit registers when the exit or entry happens:

* `HostStateLoad` (the model's `_host_state`, SDM 27.5): the host state of the VMCS with what
  the exit keeps of the processor's CR0 and EFER, the host address-space size applied (CR4.PAE
  set or CR4.PCIDE cleared, EFER.LMA/LME, CS.L) and EFER/PAT loaded under the exit controls.
* `GuestStateLoad` (the model's `_load_guest` and `EntryEffects`, SDM 26.3.2 and 26.6): the
  guest state of the VMCS as an entry loads it (DR7 with its fixed bits, EFER from the field or
  from "IA-32e mode guest" and CR0.PG, the PDPTEs from the VMCS with EPT or else from memory),
  with the translation settings, the preemption timer and the event to inject.

Ports
-----
`HostStateLoad`: ``vmcs`` (in, `WORKING_LAYOUT`), ``kept_cr0`` (in, 32), ``kept_efer`` (in, 64):
what the exit keeps of the processor's CR0 and EFER (the caller clears the bits the exit loads:
`CR0_HOST_LOADED`, EFER.LMA and LME), ``host`` (out, `HOST_LOAD_LAYOUT`).

`GuestStateLoad`: ``vmcs`` (in), ``efer`` (in, 64: the processor's EFER at the entry with LMA
clear, which the entry sets from "IA-32e mode guest"),
``pdptes`` (in, 4 x 64: read from memory at the guest's CR3), ``ept_enabled``,
``vpid_enabled``, ``unrestricted_guest`` (in: the secondary controls in effect), ``entry``
(out, `ENTRY_LAYOUT`), ``pae`` (out: the guest uses PAE paging outside IA-32e mode, so the
PDPTEs matter).

Timing
------
Combinational.
"""

from amaranth.hdl import Module, Mux
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from rtl.arch.vmx import (
    CR0_HOST_LOADED,
    CR0_PG,
    CR4_PAE,
    CR4_PCIDE,
    DR7_INIT,
    EFER_LMA,
    EFER_LME,
    ENTRY_CTL_IA32E_MODE_GUEST,
    ENTRY_CTL_LOAD_DEBUG_CONTROLS,
    ENTRY_CTL_LOAD_EFER,
    ENTRY_CTL_LOAD_PAT,
    EXIT_CTL_HOST_ADDRESS_SPACE_SIZE,
    EXIT_CTL_LOAD_EFER,
    EXIT_CTL_LOAD_PAT,
    FIELDS,
    INTR_INFO_DELIVER_ERROR_CODE,
    INTR_INFO_TYPE_SHIFT,
    INTR_INFO_VALID,
    MAXPHYADDR,
    PIN_PREEMPTION_TIMER,
    RFLAGS_FIXED1,
    VMX_CR4_FIXED0,
    FieldType,
    InterruptionType,
)
from rtl.arch.vmx import bit_position as bit
from rtl.vmx.layouts import WORKING_LAYOUT, member_name
from rtl.vmx.ports import ENTRY_LAYOUT, HOST_LOAD_LAYOUT, HOST_SEGMENTS

__all__ = ["HostStateLoad", "GuestStateLoad"]

_U64 = (1 << 64) - 1


class HostStateLoad(wiring.Component):
    vmcs: In(WORKING_LAYOUT)
    kept_cr0: In(32)
    kept_efer: In(64)
    host: Out(HOST_LOAD_LAYOUT)

    def __init__(self, *, maxphyaddr: int = MAXPHYADDR):
        self.maxphyaddr = maxphyaddr
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        v, h = self.vmcs, self.host
        exit_ctls = v.vm_exit_controls
        host64 = exit_ctls[bit(EXIT_CTL_HOST_ADDRESS_SPACE_SIZE)]
        kept_cr0, kept_efer = self.kept_cr0, self.kept_efer
        cr4 = v.host_cr4 | VMX_CR4_FIXED0
        m.d.comb += [
            h.cr0.eq((v.host_cr0[0:32] & CR0_HOST_LOADED) | kept_cr0),
            h.cr3.eq(v.host_cr3[0:self.maxphyaddr]),
            h.cr4.eq(Mux(host64, cr4 | CR4_PAE, cr4 & ~CR4_PCIDE & _U64)),
            h.efer.eq(Mux(exit_ctls[bit(EXIT_CTL_LOAD_EFER)], v.host_ia32_efer,
                          kept_efer | Mux(host64, EFER_LMA | EFER_LME, 0))),
            h.pat.eq(v.host_ia32_pat),
            h.pat_valid.eq(exit_ctls[bit(EXIT_CTL_LOAD_PAT)]),
            h.rsp.eq(v.host_rsp), h.rip.eq(v.host_rip),
            h.rflags.eq(RFLAGS_FIXED1), h.cs_l.eq(host64),
            h.fs_base.eq(v.host_fs_base), h.gs_base.eq(v.host_gs_base),
            h.tr_base.eq(v.host_tr_base), h.gdtr_base.eq(v.host_gdtr_base),
            h.idtr_base.eq(v.host_idtr_base),
            h.sysenter_cs.eq(v.host_ia32_sysenter_cs),
            h.sysenter_esp.eq(v.host_ia32_sysenter_esp),
            h.sysenter_eip.eq(v.host_ia32_sysenter_eip),
        ]
        for seg in HOST_SEGMENTS:
            m.d.comb += h[f"{seg}_selector"].eq(v[f"host_{seg}_selector"])
        return m


class GuestStateLoad(wiring.Component):
    vmcs: In(WORKING_LAYOUT)
    efer: In(64)
    pdptes: In(data.ArrayLayout(64, 4))
    ept_enabled: In(1)
    vpid_enabled: In(1)
    unrestricted_guest: In(1)
    entry: Out(ENTRY_LAYOUT)
    pae: Out(1)

    def elaborate(self, platform):
        m = Module()
        v, e = self.vmcs, self.entry
        ept_on = self.ept_enabled
        entry_ctls = v.vm_entry_controls
        guest64 = entry_ctls[bit(ENTRY_CTL_IA32E_MODE_GUEST)]
        g_cr0_pg = v.guest_cr0[bit(CR0_PG)]
        # EFER: from the field, or LMA from "IA-32e mode guest" and LME with it when CR0.PG.
        efer0 = self.efer | Mux(guest64, EFER_LMA, 0)
        efer1 = Mux(g_cr0_pg, (efer0 & (~EFER_LME & _U64)) | Mux(guest64, EFER_LME, 0), efer0)
        m.d.comb += self.pae.eq(g_cr0_pg & v.guest_cr4[bit(CR4_PAE)] & ~guest64)
        intr = v.vm_entry_intr_info_field
        itype = intr[INTR_INFO_TYPE_SHIFT:INTR_INFO_TYPE_SHIFT + 3]
        intr_valid = intr[bit(INTR_INFO_VALID)]
        other_event = itype == InterruptionType.OTHER_EVENT.value
        for f in FIELDS:
            if f.type is FieldType.GUEST:
                n = member_name(f)
                m.d.comb += e.guest[n].eq(v[n])
        m.d.comb += [
            e.guest.guest_dr7.eq((v.guest_dr7 & (~(1 << 12 | 3 << 14) & _U64)) | DR7_INIT),
            e.guest.guest_ia32_efer.eq(Mux(entry_ctls[bit(ENTRY_CTL_LOAD_EFER)],
                                           v.guest_ia32_efer, efer1)),
            e.load_debug.eq(entry_ctls[bit(ENTRY_CTL_LOAD_DEBUG_CONTROLS)]),
            e.load_pat.eq(entry_ctls[bit(ENTRY_CTL_LOAD_PAT)]),
            e.pdptes_valid.eq(self.pae),
            e.ept_enabled.eq(ept_on),
            e.eptp.eq(Mux(ept_on, v.ept_pointer, 0)),
            e.vpid_enabled.eq(self.vpid_enabled),
            e.vpid.eq(Mux(self.vpid_enabled, v.virtual_processor_id, 0)),
            e.unrestricted_guest.eq(self.unrestricted_guest),
            e.timer_valid.eq(v.pin_based_vm_exec_control[bit(PIN_PREEMPTION_TIMER)]),
            e.timer.eq(v.vmx_preemption_timer_value),
            e.event_valid.eq(intr_valid & ~other_event),
            e.event_info.eq(intr),
            e.event_error.eq(Mux(intr[bit(INTR_INFO_DELIVER_ERROR_CODE)],
                                 v.vm_entry_exception_error_code, 0)),
            e.event_len.eq(Mux(itype.matches(
                InterruptionType.SOFTWARE_INTERRUPT.value,
                InterruptionType.PRIVILEGED_SOFTWARE_EXCEPTION.value,
                InterruptionType.SOFTWARE_EXCEPTION.value), v.vm_entry_instruction_len, 0)),
            e.pending_mtf.eq(intr_valid & other_event),
        ]
        for i in range(4):
            m.d.comb += e.guest[f"guest_pdptr{i}"].eq(
                Mux(ept_on, v[f"guest_pdptr{i}"], self.pdptes[i]))
        return m
