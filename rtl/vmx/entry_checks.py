"""The VM-entry checks of SDM 26.2-26.3, as one pipelined block of combinational checks.

`VmEntryChecks` decides, from the current VMCS (the VMX unit's working copy, `WORKING_LAYOUT`)
and the processor state (`CPU_STATE_LAYOUT`), what `tb.model.vmx.VmxModel` decides with
`check_controls`, `check_host_state` and `check_guest_state`, in the model's priority order:

1. CONTROLS (VMfailValid 7): control fields against the TRUE capability MSRs (secondary controls
   against IA32_VMX_PROCBASED_CTLS2, and as 0 unless activated); CR3-target count; I/O- and
   MSR-bitmap addresses; virtual NMIs / NMI exiting / NMI-window exiting; EPTP; VPID 0; unrestricted
   guest without EPT; VM-function controls and the EPTP-list address; save preemption timer
   without the timer; MSR-list counts (must be 0: lists are not supported); VM-entry event
   injection (type, vector, deliver-error-code consistency, reserved bits, error code, instruction
   length).
2. HOST (VMfailValid 8): host CR0/CR4 fixed bits, CR3 width, SYSENTER ESP/EIP, PAT and EFER when
   loaded, selectors (RPL/TI, null CS/TR, null SS with a 32-bit host), base canonicality, the
   address-space-size rules against the current EFER.LMA (`cpu.efer`), CR4.PCIDE/PAE and RIP.
3. GUEST, qualification 0 (`ENTRY_FAIL_DEFAULT`): control/debug registers and MSRs; segment
   selectors, bases, limits and access rights (virtual-8086, unrestricted guest and unusable
   segments included), TR, LDTR, GDTR, IDTR; RIP and RFLAGS; activity state, interruptibility,
   injection against the guest state, pending debug exceptions.
4. GUEST, qualification 4 (`ENTRY_FAIL_VMCS_LINK_POINTER`): the VMCS link pointer.

The first failing group wins; within a group which rule fails does not change the answer, so each
group is the OR of its rules (each rule written with the conditions under which the model
evaluates it). The PDPTE check of a PAE guest (qualification 2) reads memory and is the VMX unit's
job; it uses the exported `pdpte_ok`.

Timing: ``start`` is a one-cycle pulse; the inputs (``vmcs``, ``cpu``, ``link_revision``,
``current_vmcs``) are
sampled in that cycle (the unit keeps them stable from ``start`` to ``done`` anyway). Stage 1
evaluates every rule in parallel and registers one bit per rule (signals ``s1_<group>_<rule>``, for
waveforms); stage 2 ORs each group, applies the priority and registers ``result``. ``done`` pulses
exactly `VmEntryChecks.LATENCY` (= 2) cycles after ``start``; ``result`` is valid from then until
the next ``done``. The pipeline accepts a ``start`` in every cycle.

VMCS link pointer: memory stays outside this block. Combinationally from ``vmcs``,
``link_read_needed`` says whether the check needs the revision dword of the linked region (the
pointer is not all ones and is a valid address: 4 KiB aligned, below MAXPHYADDR) and
``link_addr`` is where it is (the pointer itself). The unit reads that dword before ``start`` and
presents it on ``link_revision`` in the start cycle; when ``link_read_needed`` is 0 the input is
ignored. The dword must hold the VMCS revision identifier (constructor parameter `revision_id`,
default `VMCS_REVISION_ID`, as the model's) with bit 31 (shadow-VMCS indicator) clear. Outside
SMM (always, here) the pointer must not be the current-VMCS pointer (``current_vmcs``, sampled
with ``start``).

The helpers below (`vmx_address_ok`, `eptp_ok`, `pdpte_ok`, `pat_ok`, `controls_ok`,
`limit_granularity_ok`, `greater_than`, `any_bit`, `bits_above`; `canonical` comes from
`rtl.translation.checks`) are pure functions
of Amaranth values, mirroring the model's and `rtl.arch`'s Python helpers, for other RTL to reuse
(tests/test_vmx_entry_checks.py checks them against the Python ones).
"""

from amaranth import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from rtl.arch import (
    AR_DB,
    AR_G,
    AR_L,
    AR_P,
    AR_RESERVED_11_8,
    AR_RESERVED_31_17,
    AR_S,
    AR_UNUSABLE,
    CONTROL_CHECK_MSRS,
    CR0_PE,
    CR0_PG,
    CR3_TARGET_COUNT_MAX,
    CR4_PAE,
    CR4_PCIDE,
    DEBUGCTL_BTF,
    DEBUGCTL_SUPPORTED,
    EFER_LMA,
    EFER_LME,
    EFER_RESERVED,
    ENTRY_CTL_IA32E_MODE_GUEST,
    ENTRY_CTL_LOAD_DEBUG_CONTROLS,
    ENTRY_CTL_LOAD_EFER,
    ENTRY_CTL_LOAD_PAT,
    ENTRY_FAIL_DEFAULT,
    ENTRY_FAIL_VMCS_LINK_POINTER,
    ENTRY_INTR_INFO_RESERVED,
    EPTP_MEMTYPE_MASK,
    EPTP_MEMTYPE_UC,
    EPTP_MEMTYPE_WB,
    EPTP_WALK_4LEVEL,
    EPTP_WALK_MASK,
    EXCEPTIONS_WITH_ERROR_CODE,
    EXIT_CTL_HOST_ADDRESS_SPACE_SIZE,
    EXIT_CTL_LOAD_EFER,
    EXIT_CTL_LOAD_PAT,
    EXIT_CTL_SAVE_PREEMPTION_TIMER,
    INTERRUPTIBILITY_MOV_SS,
    INTERRUPTIBILITY_NMI,
    INTERRUPTIBILITY_SMI,
    INTERRUPTIBILITY_STI,
    INTR_INFO_DELIVER_ERROR_CODE,
    INTR_INFO_TYPE_SHIFT,
    INTR_INFO_VALID,
    MAXPHYADDR,
    MISC_ZERO_LENGTH_INJECTION,
    PAT_VALID_TYPES,
    PENDING_DBG_BS,
    PENDING_DBG_RESERVED,
    PIN_NMI_EXITING,
    PIN_PREEMPTION_TIMER,
    PIN_VIRTUAL_NMIS,
    PROC2_ENABLE_EPT,
    PROC2_ENABLE_VM_FUNCTIONS,
    PROC2_ENABLE_VPID,
    PROC2_UNRESTRICTED_GUEST,
    PROC_ACTIVATE_SECONDARY,
    PROC_NMI_WINDOW_EXITING,
    PROC_USE_IO_BITMAPS,
    PROC_USE_MSR_BITMAPS,
    RFLAGS_FIXED1,
    RFLAGS_IF,
    RFLAGS_RESERVED,
    RFLAGS_TF,
    RFLAGS_VM,
    SUPPORTED_ACTIVITY_STATES,
    VMCS_REVISION_ID,
    VMCS_REVISION_MASK,
    VMCS_SHADOW_INDICATOR,
    VMFUNC_EPTP_SWITCHING,
    VMFUNC_SUPPORTED,
    VMX_CR0_FIXED0,
    VMX_CR0_FIXED1,
    VMX_CR4_FIXED0,
    VMX_CR4_FIXED1,
    VMX_MISC,
    VMX_MSRS,
    ActivityState,
    InterruptionType,
    allowed_settings,
    mask,
)
from rtl.translation.checks import canonical

from .layouts import (
    CPU_STATE_LAYOUT,
    ENTRY_CHECK_RESULT_LAYOUT,
    WORKING_LAYOUT,
    EntryCheckKind,
)

__all__ = [
    "VmEntryChecks", "EntryCheckKind",
    "canonical", "vmx_address_ok", "eptp_ok", "pdpte_ok", "pat_ok", "controls_ok",
    "limit_granularity_ok", "any_bit", "bits_above", "greater_than", "revision_ok",
]

_U64 = mask(63, 0)
#: Guest segment registers checked as code/data segments (SDM 26.3.1.2).
_CODE_DATA = ("CS", "SS", "DS", "ES", "FS", "GS")


# =================================================================================================
# Pure helpers (Amaranth values in, a 1-bit value out)
# =================================================================================================


def any_bit(value, bits: int) -> Value:
    """1 when `value` has any of the bits of the constant `bits` set (``value & bits != 0``)."""
    value = Value.cast(value)
    bits &= mask(len(value) - 1, 0) if len(value) else 0
    if not bits:
        return Const(0, 1)
    return (value & bits).any()


def bits_above(value, n: int) -> Value:
    """1 when `value` has a bit at or above position `n` set (``value >> n != 0``)."""
    value = Value.cast(value)
    if len(value) <= n:
        return Const(0, 1)
    return value[n:].any()


def vmx_address_ok(addr, maxphyaddr: int = MAXPHYADDR) -> Value:
    """A VMXON/VMCS/bitmap/EPTP-list pointer: 4 KiB aligned, no bit at or above MAXPHYADDR
    (`rtl.arch.vmx_address_ok`)."""
    addr = Value.cast(addr)
    return ~any_bit(addr, 0xFFF) & ~bits_above(addr, maxphyaddr)


def eptp_ok(eptp, maxphyaddr: int = MAXPHYADDR) -> Value:
    """The EPTP passes the VM-entry checks (`rtl.arch.eptp_problem` is None): memory type UC or
    WB, 4-level walks, bits 11:7 clear, nothing at or above MAXPHYADDR."""
    eptp = Value.cast(eptp)
    memtype = eptp & EPTP_MEMTYPE_MASK
    return (memtype.matches(EPTP_MEMTYPE_UC, EPTP_MEMTYPE_WB)
            & ((eptp & EPTP_WALK_MASK) == EPTP_WALK_4LEVEL)
            & ~any_bit(eptp, mask(11, 7))
            & ~bits_above(eptp, maxphyaddr))


def pdpte_ok(pdpte, maxphyaddr: int = MAXPHYADDR) -> Value:
    """A PAE PDPTE that VM entry accepts: not present, or no reserved bit (2:1, 8:5,
    63:MAXPHYADDR) set (the model's `_pdpte_problem` negated)."""
    pdpte = Value.cast(pdpte)
    reserved = any_bit(pdpte, mask(2, 1) | mask(8, 5)) | bits_above(pdpte, maxphyaddr)
    return ~(pdpte[0] & reserved)


def pat_ok(pat) -> Value:
    """Every byte of an IA32_PAT value is a valid memory type (`rtl.arch.pat_valid`)."""
    pat = Value.cast(pat)
    return Cat(*(pat.word_select(i, 8).matches(*PAT_VALID_TYPES) for i in range(8))).all()


def controls_ok(value, msr_value: int) -> Value:
    """A control field satisfies a capability MSR's allowed-0 and allowed-1 settings
    (`rtl.arch.controls_problem` is 0)."""
    value = Value.cast(value)
    must1, may1 = allowed_settings(msr_value)
    return (((value & must1) == must1) & ~any_bit(value, ~may1 & mask(31, 0))
            & ~bits_above(value, 32))


def greater_than(value, k: int) -> Value:
    """``value > k`` for a constant `k`, as AND/OR terms rather than a subtractor (whose carry
    chain would be the longest path of the block): value > k exactly when, at some bit i where
    k has a 0, value has a 1 and agrees with k on every bit above i."""
    value = Value.cast(value)
    if k < 0:
        return Const(1, 1)
    if k >> len(value):
        return Const(0, 1)
    terms = []
    for i in range(len(value)):
        if not k >> i & 1:
            above = k >> (i + 1)
            upper = value[i + 1:] == above if i + 1 < len(value) else Const(1, 1)
            terms.append(value[i] & upper)
    return Cat(*terms).any() if terms else Const(0, 1)


def limit_granularity_ok(limit, ar) -> Value:
    """Segment limit consistent with the access rights' G bit (the model's `_g_problem` is None):
    G=1 needs limit bits 11:0 all 1, G=0 needs limit bits 31:20 all 0."""
    limit, ar = Value.cast(limit), Value.cast(ar)
    g = any_bit(ar, AR_G)
    return ~((g & (limit[:12] != 0xFFF)) | (~g & bits_above(limit, 20)))


# =================================================================================================
# The rules, group by group (each returns {rule name: failing bit})
# =================================================================================================


def _itype(info) -> Value:
    return info[INTR_INFO_TYPE_SHIFT:INTR_INFO_TYPE_SHIFT + 3]


def control_rules(v, maxphyaddr: int) -> dict[str, Value]:
    """SDM 26.2.1 (the model's `check_controls`, event injection included)."""
    r: dict[str, Value] = {}
    activated = any_bit(v.cpu_based_vm_exec_control, PROC_ACTIVATE_SECONDARY)
    pin, proc = v.pin_based_vm_exec_control, v.cpu_based_vm_exec_control
    # Secondary controls count as 0 unless "activate secondary controls" is 1.
    proc2 = Mux(activated, v.secondary_vm_exec_control, 0)
    values = {
        "PIN_BASED_VM_EXEC_CONTROL": pin,
        "CPU_BASED_VM_EXEC_CONTROL": proc,
        "SECONDARY_VM_EXEC_CONTROL": proc2,
        "VM_EXIT_CONTROLS": v.vm_exit_controls,
        "VM_ENTRY_CONTROLS": v.vm_entry_controls,
    }
    for name, msr in CONTROL_CHECK_MSRS.items():
        r[f"msr_{name.lower()}"] = ~controls_ok(values[name], VMX_MSRS[msr])
    r["cr3_target_count"] = greater_than(v.cr3_target_count, CR3_TARGET_COUNT_MAX)
    r["io_bitmaps"] = any_bit(proc, PROC_USE_IO_BITMAPS) & ~(
        vmx_address_ok(v.io_bitmap_a, maxphyaddr) & vmx_address_ok(v.io_bitmap_b, maxphyaddr))
    r["msr_bitmap"] = any_bit(proc, PROC_USE_MSR_BITMAPS) & ~vmx_address_ok(v.msr_bitmap,
                                                                            maxphyaddr)
    r["virtual_nmis"] = any_bit(pin, PIN_VIRTUAL_NMIS) & ~any_bit(pin, PIN_NMI_EXITING)
    r["nmi_window"] = any_bit(proc, PROC_NMI_WINDOW_EXITING) & ~any_bit(pin, PIN_VIRTUAL_NMIS)
    ept = any_bit(proc2, PROC2_ENABLE_EPT)
    r["eptp"] = ept & ~eptp_ok(v.ept_pointer, maxphyaddr)
    r["vpid0"] = any_bit(proc2, PROC2_ENABLE_VPID) & (v.virtual_processor_id == 0)
    r["ug_without_ept"] = any_bit(proc2, PROC2_UNRESTRICTED_GUEST) & ~ept
    vmfunc_on = any_bit(proc2, PROC2_ENABLE_VM_FUNCTIONS)
    vmfunc = v.vm_function_control
    r["vmfunc_reserved"] = vmfunc_on & any_bit(vmfunc, ~VMFUNC_SUPPORTED & _U64)
    switching = vmfunc_on & any_bit(vmfunc, VMFUNC_EPTP_SWITCHING)
    r["eptp_switching"] = switching & (
        ~ept | ~vmx_address_ok(v.eptp_list_address, maxphyaddr))
    r["save_timer"] = (any_bit(v.vm_exit_controls, EXIT_CTL_SAVE_PREEMPTION_TIMER)
                       & ~any_bit(pin, PIN_PREEMPTION_TIMER))
    r["msr_lists"] = (v.vm_exit_msr_store_count.any() | v.vm_exit_msr_load_count.any()
                      | v.vm_entry_msr_load_count.any())

    # VM-entry event injection (SDM 26.2.1.3), only with the valid bit.
    info = v.vm_entry_intr_info_field
    valid = any_bit(info, INTR_INFO_VALID)
    vector, itype = info[:8], _itype(info)
    t = InterruptionType
    deliver = any_bit(info, INTR_INFO_DELIVER_ERROR_CODE)
    pe = any_bit(v.guest_cr0, CR0_PE)
    ug = any_bit(proc2, PROC2_UNRESTRICTED_GUEST)
    needs_code = ((~ug | pe) & (itype == t.HARDWARE_EXCEPTION.value)
                  & vector.matches(*sorted(EXCEPTIONS_WITH_ERROR_CODE)))
    low = 0 if VMX_MISC & MISC_ZERO_LENGTH_INJECTION else 1
    length = v.vm_entry_instruction_len
    software = itype.matches(t.SOFTWARE_INTERRUPT.value, t.PRIVILEGED_SOFTWARE_EXCEPTION.value,
                             t.SOFTWARE_EXCEPTION.value)
    r["inject_type_reserved"] = valid & (itype == t.RESERVED.value)
    r["inject_nmi_vector"] = valid & (itype == t.NMI.value) & (vector != 2)
    r["inject_exception_vector"] = (valid & (itype == t.HARDWARE_EXCEPTION.value)
                                    & greater_than(vector, 31))
    r["inject_other_vector"] = valid & (itype == t.OTHER_EVENT.value) & (vector != 0)
    r["inject_error_code_bit"] = valid & (deliver != needs_code)
    r["inject_reserved"] = valid & any_bit(info, ENTRY_INTR_INFO_RESERVED)
    r["inject_error_code"] = valid & deliver & bits_above(v.vm_entry_exception_error_code, 16)
    r["inject_length"] = valid & software & (~greater_than(length, low - 1)
                                             | greater_than(length, 15))
    return r


def host_rules(v, cpu, maxphyaddr: int) -> dict[str, Value]:
    """SDM 26.2.2-26.2.4 (the model's `check_host_state`)."""
    r: dict[str, Value] = {}
    cr0, cr3, cr4 = v.host_cr0, v.host_cr3, v.host_cr4
    host64 = any_bit(v.vm_exit_controls, EXIT_CTL_HOST_ADDRESS_SPACE_SIZE)
    guest64 = any_bit(v.vm_entry_controls, ENTRY_CTL_IA32E_MODE_GUEST)
    r["cr0_fixed"] = ((cr0 & VMX_CR0_FIXED0) != VMX_CR0_FIXED0) | any_bit(cr0, ~VMX_CR0_FIXED1
                                                                          & _U64)
    r["cr4_fixed"] = ((cr4 & VMX_CR4_FIXED0) != VMX_CR4_FIXED0) | any_bit(cr4, ~VMX_CR4_FIXED1
                                                                          & _U64)
    r["cr3_width"] = bits_above(cr3, maxphyaddr)
    r["sysenter"] = ~(canonical(v.host_ia32_sysenter_esp) & canonical(v.host_ia32_sysenter_eip))
    r["pat"] = any_bit(v.vm_exit_controls, EXIT_CTL_LOAD_PAT) & ~pat_ok(v.host_ia32_pat)
    efer = v.host_ia32_efer
    r["efer"] = any_bit(v.vm_exit_controls, EXIT_CTL_LOAD_EFER) & (
        any_bit(efer, EFER_RESERVED) | (any_bit(efer, EFER_LMA) != host64)
        | (any_bit(efer, EFER_LME) != host64))
    sels = [getattr(v, f"host_{s.lower()}_selector") for s in ("ES", "CS", "SS", "DS", "FS", "GS",
                                                                "TR")]
    r["selector_rpl_ti"] = Cat(*(any_bit(sel, 7) for sel in sels)).any()
    r["cs_null"] = v.host_cs_selector == 0
    r["tr_null"] = v.host_tr_selector == 0
    r["ss_null_32bit"] = ~host64 & (v.host_ss_selector == 0)
    r["bases"] = ~Cat(*(canonical(b) for b in (v.host_fs_base, v.host_gs_base, v.host_gdtr_base,
                                                v.host_idtr_base, v.host_tr_base))).all()
    lma = any_bit(cpu.efer, EFER_LMA)
    # Outside IA-32e mode both sizes must be 0; in it the host address-space size must be 1.
    r["address_space"] = Mux(lma, ~host64, guest64 | host64)
    rip = v.host_rip
    r["host32"] = ~host64 & (guest64 | any_bit(cr4, CR4_PCIDE) | bits_above(rip, 32))
    r["host64"] = host64 & (~any_bit(cr4, CR4_PAE) | ~canonical(rip))
    return r


def _seg(v, s: str):
    """(selector, base, limit, access rights) of guest segment register `s`."""
    s = s.lower()
    return (getattr(v, f"guest_{s}_selector"), getattr(v, f"guest_{s}_base"),
            getattr(v, f"guest_{s}_limit"), getattr(v, f"guest_{s}_ar_bytes"))


def _usable(ar) -> Value:
    return ~any_bit(ar, AR_UNUSABLE)


def _ar_reserved(ar) -> Value:
    return any_bit(ar, AR_RESERVED_11_8 | AR_RESERVED_31_17)


def guest_register_rules(v, maxphyaddr: int) -> dict[str, Value]:
    """SDM 26.3.1.1 (the model's `_guest_regs_problem`)."""
    r: dict[str, Value] = {}
    cr0, cr3, cr4 = v.guest_cr0, v.guest_cr3, v.guest_cr4
    activated = any_bit(v.cpu_based_vm_exec_control, PROC_ACTIVATE_SECONDARY)
    ug = activated & any_bit(v.secondary_vm_exec_control, PROC2_UNRESTRICTED_GUEST)
    entry = v.vm_entry_controls
    guest64 = any_bit(entry, ENTRY_CTL_IA32E_MODE_GUEST)
    load_debug = any_bit(entry, ENTRY_CTL_LOAD_DEBUG_CONTROLS)
    relaxed = VMX_CR0_FIXED0 & ~(CR0_PE | CR0_PG)
    # Unrestricted guest lets PE and PG be 0; the other fixed-1 bits are checked either way.
    r["cr0_fixed"] = (((cr0 & relaxed) != relaxed)
                      | (~ug & ((cr0 & VMX_CR0_FIXED0) != VMX_CR0_FIXED0))
                      | any_bit(cr0, ~VMX_CR0_FIXED1 & _U64))
    pg, pe = any_bit(cr0, CR0_PG), any_bit(cr0, CR0_PE)
    r["cr0_pg_without_pe"] = pg & ~pe
    r["cr4_fixed"] = ((cr4 & VMX_CR4_FIXED0) != VMX_CR4_FIXED0) | any_bit(cr4, ~VMX_CR4_FIXED1
                                                                          & _U64)
    r["debugctl"] = load_debug & any_bit(v.guest_ia32_debugctl, ~DEBUGCTL_SUPPORTED & _U64)
    r["ia32e_paging"] = guest64 & ~(pg & any_bit(cr4, CR4_PAE))
    r["pcide"] = ~guest64 & any_bit(cr4, CR4_PCIDE)
    r["cr3_width"] = bits_above(cr3, maxphyaddr)
    r["dr7"] = load_debug & bits_above(v.guest_dr7, 32)
    r["sysenter"] = ~(canonical(v.guest_sysenter_esp) & canonical(v.guest_sysenter_eip))
    r["pat"] = any_bit(entry, ENTRY_CTL_LOAD_PAT) & ~pat_ok(v.guest_ia32_pat)
    efer = v.guest_ia32_efer
    r["efer"] = any_bit(entry, ENTRY_CTL_LOAD_EFER) & (
        any_bit(efer, EFER_RESERVED) | (any_bit(efer, EFER_LMA) != guest64)
        | (pg & (any_bit(efer, EFER_LME) != guest64)))
    return r


def guest_segment_rules(v) -> dict[str, Value]:
    """SDM 26.3.1.2-26.3.1.3 (the model's `_guest_segments_problem` and
    `_guest_data_code_ar_problem`)."""
    r: dict[str, Value] = {}
    v86 = any_bit(v.guest_rflags, RFLAGS_VM)
    activated = any_bit(v.cpu_based_vm_exec_control, PROC_ACTIVATE_SECONDARY)
    ug = activated & any_bit(v.secondary_vm_exec_control, PROC2_UNRESTRICTED_GUEST)
    guest64 = any_bit(v.vm_entry_controls, ENTRY_CTL_IA32E_MODE_GUEST)
    seg = {s: _seg(v, s) for s in ("ES", "CS", "SS", "DS", "FS", "GS", "LDTR", "TR")}
    usable = {s: _usable(seg[s][3]) for s in seg}

    # Selectors.
    r["tr_ti"] = seg["TR"][0][2]
    r["ldtr_ti"] = usable["LDTR"] & seg["LDTR"][0][2]
    r["ss_cs_rpl"] = ~v86 & ~ug & (seg["SS"][0][:2] != seg["CS"][0][:2])
    # Bases.
    # base == selector << 4: bits 3:0 zero, 19:4 the selector, 63:20 zero.
    r["v86_bases"] = v86 & ~Cat(*(
        ~any_bit(seg[s][1], 0xF) & (seg[s][1][4:20] == seg[s][0]) & ~bits_above(seg[s][1], 20)
        for s in _CODE_DATA)).all()
    r["bases_canonical"] = ~Cat(*(canonical(seg[s][1]) for s in ("TR", "FS", "GS"))).all()
    r["ldtr_base"] = usable["LDTR"] & ~canonical(seg["LDTR"][1])
    r["cs_base"] = bits_above(seg["CS"][1], 32)
    r["ss_ds_es_bases"] = Cat(*(usable[s] & bits_above(seg[s][1], 32)
                                for s in ("SS", "DS", "ES"))).any()
    # Limits and access rights: all fixed in virtual-8086 mode ...
    r["v86_limits_ar"] = v86 & ~Cat(*(((seg[s][2] == 0xFFFF) & (seg[s][3] == 0xF3))
                                      for s in _CODE_DATA)).all()
    # ... otherwise, code and data segments (SDM 26.3.1.2, "if the guest will not be
    # virtual-8086").
    nv = ~v86
    cs_ar = seg["CS"][3]
    ss_sel, ss_ar = seg["SS"][0], seg["SS"][3]
    cs_type, ss_dpl, cs_dpl = cs_ar[:4], ss_ar[5:7], cs_ar[5:7]
    r["cs_type"] = nv & ~Mux(ug, cs_type.matches(3, 9, 11, 13, 15),
                             cs_type.matches(9, 11, 13, 15))
    r["ss_type"] = nv & usable["SS"] & ~ss_ar[:4].matches(3, 7)
    for s in ("DS", "ES", "FS", "GS"):
        ar = seg[s][3]
        # Accessed, and readable if code.
        r[f"{s.lower()}_type"] = nv & usable[s] & (~ar[0] | (ar[3] & ~ar[1]))
    for s in _CODE_DATA:
        _, _, limit, ar = seg[s]
        checked = nv if s == "CS" else nv & usable[s]
        r[f"{s.lower()}_s_p_rsvd_g"] = checked & (
            ~any_bit(ar, AR_S) | ~any_bit(ar, AR_P) | _ar_reserved(ar)
            | ~limit_granularity_ok(limit, ar))
    r["cs_dpl_real"] = nv & (cs_type == 3) & (cs_dpl != 0)
    r["cs_dpl_nonconforming"] = nv & cs_type.matches(9, 11) & (cs_dpl != ss_dpl)
    r["cs_dpl_conforming"] = nv & cs_type.matches(13, 15) & (cs_dpl > ss_dpl)
    r["ss_dpl_rpl"] = nv & ~ug & (ss_dpl != ss_sel[:2])
    r["ss_dpl_real"] = nv & ((cs_type == 3) | ~any_bit(v.guest_cr0, CR0_PE)) & (ss_dpl != 0)
    r["data_dpl_rpl"] = nv & ~ug & Cat(*(
        usable[s] & (seg[s][3][:4] <= 11) & (seg[s][3][5:7] < seg[s][0][:2])
        for s in ("DS", "ES", "FS", "GS"))).any()
    r["cs_l_db"] = nv & guest64 & any_bit(cs_ar, AR_L) & any_bit(cs_ar, AR_DB)
    # TR.
    _, _, tr_limit, tr_ar = seg["TR"]
    tr_type = tr_ar[:4]
    r["tr_type"] = Mux(guest64, tr_type != 11, ~tr_type.matches(3, 11))
    r["tr_ar"] = any_bit(tr_ar, AR_S) | ~any_bit(tr_ar, AR_P) | _ar_reserved(tr_ar)
    r["tr_unusable"] = ~usable["TR"]
    r["tr_limit"] = ~limit_granularity_ok(tr_limit, tr_ar)
    # LDTR (only when usable).
    _, _, ldtr_limit, ldtr_ar = seg["LDTR"]
    r["ldtr_ar"] = usable["LDTR"] & (
        (ldtr_ar[:4] != 2) | any_bit(ldtr_ar, AR_S) | ~any_bit(ldtr_ar, AR_P)
        | _ar_reserved(ldtr_ar) | ~limit_granularity_ok(ldtr_limit, ldtr_ar))
    # GDTR, IDTR.
    r["gdtr_idtr"] = (~canonical(v.guest_gdtr_base) | ~canonical(v.guest_idtr_base)
                      | bits_above(v.guest_gdtr_limit, 16) | bits_above(v.guest_idtr_limit, 16))
    return r


def guest_rip_rflags_rules(v) -> dict[str, Value]:
    """SDM 26.3.1.4 (the model's `_guest_rip_rflags_problem`)."""
    r: dict[str, Value] = {}
    rip, rflags = v.guest_rip, v.guest_rflags
    guest64 = any_bit(v.vm_entry_controls, ENTRY_CTL_IA32E_MODE_GUEST)
    cs_l = any_bit(v.guest_cs_ar_bytes, AR_L)
    r["rip"] = Mux(guest64 & cs_l, ~canonical(rip), bits_above(rip, 32))
    r["rflags_reserved"] = any_bit(rflags, RFLAGS_RESERVED) | ~any_bit(rflags, RFLAGS_FIXED1)
    r["rflags_vm"] = any_bit(rflags, RFLAGS_VM) & (guest64 | ~any_bit(v.guest_cr0, CR0_PE))
    info = v.vm_entry_intr_info_field
    r["inject_external_if"] = (any_bit(info, INTR_INFO_VALID)
                               & (_itype(info) == InterruptionType.EXTERNAL_INTERRUPT.value)
                               & ~any_bit(rflags, RFLAGS_IF))
    return r


def guest_nonregister_rules(v) -> dict[str, Value]:
    """SDM 26.3.1.5 (the model's `_guest_nonreg_problem`)."""
    r: dict[str, Value] = {}
    activity = v.guest_activity_state
    intr = v.guest_interruptibility_info
    info = v.vm_entry_intr_info_field
    injecting = any_bit(info, INTR_INFO_VALID)
    itype, vector = _itype(info), info[:8]
    t = InterruptionType
    hlt = activity == ActivityState.HLT.value
    sti, mov_ss = any_bit(intr, INTERRUPTIBILITY_STI), any_bit(intr, INTERRUPTIBILITY_MOV_SS)
    sti_or_mov_ss = sti | mov_ss
    rflags = v.guest_rflags
    r["activity"] = ~activity.matches(*sorted(s.value for s in SUPPORTED_ACTIVITY_STATES))
    r["hlt_ss_dpl"] = hlt & v.guest_ss_ar_bytes[5:7].any()
    r["blocking_not_active"] = sti_or_mov_ss & (activity != ActivityState.ACTIVE.value)
    allowed_in_hlt = (itype.matches(t.EXTERNAL_INTERRUPT.value, t.NMI.value)
                      | ((itype == t.HARDWARE_EXCEPTION.value) & vector.matches(1, 18))
                      | ((itype == t.OTHER_EVENT.value) & (vector == 0)))
    r["inject_hlt"] = injecting & hlt & ~allowed_in_hlt
    r["interruptibility_reserved"] = bits_above(intr, 4)
    r["sti_and_mov_ss"] = sti & mov_ss
    r["sti_if"] = sti & ~any_bit(rflags, RFLAGS_IF)
    r["inject_external_blocked"] = (injecting & (itype == t.EXTERNAL_INTERRUPT.value)
                                    & sti_or_mov_ss)
    r["inject_nmi_mov_ss"] = injecting & (itype == t.NMI.value) & mov_ss
    r["smi"] = any_bit(intr, INTERRUPTIBILITY_SMI)
    r["inject_nmi_virtual_blocked"] = (
        injecting & (itype == t.NMI.value)
        & any_bit(v.pin_based_vm_exec_control, PIN_VIRTUAL_NMIS)
        & any_bit(intr, INTERRUPTIBILITY_NMI))
    pending = v.guest_pending_dbg_exceptions
    r["pending_dbg_reserved"] = any_bit(pending, PENDING_DBG_RESERVED)
    tf = any_bit(rflags, RFLAGS_TF)
    btf = any_bit(v.guest_ia32_debugctl, DEBUGCTL_BTF)
    bs = any_bit(pending, PENDING_DBG_BS)
    # BS must be 1 exactly when a single step is pending (TF=1 and BTF=0).
    r["pending_dbg_bs"] = (sti_or_mov_ss | hlt) & ((tf & ~btf) != bs)
    return r


def link_pointer_needs_read(v, maxphyaddr: int) -> Value:
    """The link-pointer check needs the linked region's revision dword: the pointer is not all
    ones and is a valid address."""
    link = v.vmcs_link_pointer
    return (link != _U64) & vmx_address_ok(link, maxphyaddr)


def revision_ok(dword, revision_id: int = VMCS_REVISION_ID) -> Value:
    """A VMXON or VMCS region's first dword accepts it (SDM 24.2, 31.5, 26.3.1.5): bits 30:0 the
    revision identifier, bit 31 (shadow-VMCS indicator) clear."""
    rev = Value.cast(dword)
    return (((rev & VMCS_REVISION_MASK) == (revision_id & VMCS_REVISION_MASK))
            & ~any_bit(rev, VMCS_SHADOW_INDICATOR))


def link_pointer_rules(v, link_revision, current_vmcs, maxphyaddr: int,
                       revision_id: int = VMCS_REVISION_ID) -> dict[str, Value]:
    """The VMCS link pointer (SDM 26.3.1.5, last bullet; qualification 4): unless all ones, a
    valid address whose region carries the revision identifier with the shadow indicator clear
    (``link``), and, outside SMM, not the current-VMCS pointer (``link_current``)."""
    link = v.vmcs_link_pointer
    bad_revision = ~revision_ok(link_revision, revision_id)
    used = link != _U64
    return {"link": used & (~vmx_address_ok(link, maxphyaddr) | bad_revision),
            "link_current": used & (link == current_vmcs)}


# =================================================================================================
# The block
# =================================================================================================


class VmEntryChecks(wiring.Component):
    """The VM-entry checks: controls, host state, guest state, VMCS link pointer (see the module
    docstring for the rules, the timing and the link-pointer interface).

    Ports:
        vmcs: In(WORKING_LAYOUT) -- the current VMCS, sampled with `start`
        cpu: In(CPU_STATE_LAYOUT) -- processor state (only EFER.LMA is used), sampled with `start`
        link_revision: In(32) -- the dword at `link_addr`, sampled with `start` (ignored unless
            `link_read_needed`)
        current_vmcs: In(64) -- the current-VMCS pointer, sampled with `start`
        link_read_needed: Out(1), link_addr: Out(64) -- combinational from `vmcs`
        start: In(1) -- one-cycle pulse; a new one may come in any cycle
        done: Out(1) -- one-cycle pulse `LATENCY` cycles after `start`
        result: Out(ENTRY_CHECK_RESULT_LAYOUT) -- valid with `done`, held until the next `done`

    Parameters: `maxphyaddr` (default `rtl.arch.MAXPHYADDR`) and `revision_id` (the revision
    identifier the linked region must hold; default `VMCS_REVISION_ID`).
    """

    #: Cycles from `start` to `done`.
    LATENCY = 2

    vmcs: In(WORKING_LAYOUT)
    cpu: In(CPU_STATE_LAYOUT)
    link_revision: In(32)
    current_vmcs: In(64)
    link_read_needed: Out(1)
    link_addr: Out(64)
    start: In(1)
    done: Out(1)
    result: Out(ENTRY_CHECK_RESULT_LAYOUT)

    def __init__(self, *, maxphyaddr: int = MAXPHYADDR, revision_id: int = VMCS_REVISION_ID):
        if not 32 <= maxphyaddr <= 52:
            raise ValueError(f"maxphyaddr {maxphyaddr} outside 32..52")
        self.maxphyaddr = maxphyaddr
        #: The VMCS revision identifier the linked region must carry (`VmxModel.revision_id`).
        self.revision_id = revision_id
        super().__init__()
        #: Stage-1 register of every rule, by group and rule name (``s1_<group>_<rule>`` in
        #: waveforms); tests read them to see which rules a VMCS breaks.
        self.rule_regs: dict[str, dict[str, Signal]] = {
            group: {name: Signal(name=f"s1_{group}_{name}") for name in rules}
            for group, rules in self.rules().items()}

    def rules(self) -> dict[str, dict[str, Value]]:
        """Every rule's failing bit, by group: ``controls``, ``host``, ``guest`` (qualification
        0) and ``link`` (qualification 4)."""
        v, mp = self.vmcs, self.maxphyaddr
        return {
            "controls": control_rules(v, mp),
            "host": host_rules(v, self.cpu, mp),
            "guest": {
                **{f"reg_{k}": x for k, x in guest_register_rules(v, mp).items()},
                **{f"seg_{k}": x for k, x in guest_segment_rules(v).items()},
                **{f"rip_{k}": x for k, x in guest_rip_rflags_rules(v).items()},
                **{f"nonreg_{k}": x for k, x in guest_nonregister_rules(v).items()},
            },
            "link": link_pointer_rules(v, self.link_revision, self.current_vmcs, mp,
                                       self.revision_id),
        }

    def elaborate(self, platform):
        m = Module()

        m.d.comb += [
            self.link_read_needed.eq(link_pointer_needs_read(self.vmcs, self.maxphyaddr)),
            self.link_addr.eq(self.vmcs.vmcs_link_pointer),
        ]

        # Stage 1: every rule in parallel, one register per rule (free-running: the inputs are
        # sampled in the start cycle, and s1_valid marks the cycle after it).
        s1_valid = Signal()
        m.d.sync += s1_valid.eq(self.start)
        group_fail = {}
        for group, rules in self.rules().items():
            regs = self.rule_regs[group]
            m.d.sync += [regs[name].eq(fail) for name, fail in rules.items()]
            group_fail[group] = Cat(*regs.values()).any()

        # Stage 2: OR each group, first failing group wins (the model's order).
        kind = Signal(EntryCheckKind)
        qual = Signal(3)
        with m.If(group_fail["controls"]):
            m.d.comb += kind.eq(EntryCheckKind.CONTROLS)
        with m.Elif(group_fail["host"]):
            m.d.comb += kind.eq(EntryCheckKind.HOST)
        with m.Elif(group_fail["guest"]):
            m.d.comb += [kind.eq(EntryCheckKind.GUEST), qual.eq(ENTRY_FAIL_DEFAULT)]
        with m.Elif(group_fail["link"]):
            m.d.comb += [kind.eq(EntryCheckKind.GUEST), qual.eq(ENTRY_FAIL_VMCS_LINK_POINTER)]
        with m.Else():
            m.d.comb += kind.eq(EntryCheckKind.OK)

        m.d.sync += self.done.eq(s1_valid)
        with m.If(s1_valid):
            m.d.sync += [self.result.kind.eq(kind), self.result.qualification.eq(qual)]
        return m
