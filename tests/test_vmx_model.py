"""Directed and randomized tests of the VMX constants (rtl/arch/vmx.py) and the VMX reference
model (tb/model/vmx.py).

Each test names the row of the VMX reference (docs/vmx.md, "Sources"; section numbers
are its) or the kvm-unit-tests check ("K-c"/"K-t" MUST rows) it covers.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import rtl.arch as arch  # noqa: E402
from rtl.arch import (  # noqa: E402
    AR_DB,
    AR_G,
    AR_L,
    AR_P,
    AR_S,
    AR_UNUSABLE,
    CR0_NE,
    CR0_PE,
    CR0_PG,
    CR0_TS,
    CR4_PAE,
    CR4_PCIDE,
    CR4_VMXE,
    EFER_LMA,
    EFER_LME,
    ENTRY_CTL_IA32E_MODE_GUEST,
    ENTRY_CTL_LOAD_EFER,
    ENTRY_CTL_LOAD_PAT,
    EPT_CAP_INVEPT,
    EXIT_CTL_HOST_ADDRESS_SPACE_SIZE,
    EXIT_CTL_LOAD_EFER,
    EXIT_CTL_LOAD_PAT,
    EXIT_CTL_SAVE_EFER,
    EXIT_CTL_SAVE_PREEMPTION_TIMER,
    EXIT_REASON_INVALID_GUEST_STATE,
    FIELD_BY_NAME,
    FIELDS,
    INTR_INFO_DELIVER_ERROR_CODE,
    INTR_INFO_VALID,
    INVALID_VMCS_POINTER,
    PIN_DEFAULT1,
    PIN_NMI_EXITING,
    PIN_POSTED_INTERRUPTS,
    PIN_PREEMPTION_TIMER,
    PIN_VIRTUAL_NMIS,
    PROC2_ENABLE_EPT,
    PROC2_ENABLE_VM_FUNCTIONS,
    PROC2_ENABLE_VPID,
    PROC2_UNRESTRICTED_GUEST,
    PROC2_VMCS_SHADOWING,
    PROC_ACTIVATE_SECONDARY,
    PROC_CR3_LOAD_EXITING,
    PROC_CR3_STORE_EXITING,
    PROC_CR8_LOAD_EXITING,
    PROC_CR8_STORE_EXITING,
    PROC_HLT_EXITING,
    PROC_INVLPG_EXITING,
    PROC_MONITOR_TRAP_FLAG,
    PROC_MOV_DR_EXITING,
    PROC_NMI_WINDOW_EXITING,
    PROC_RDTSC_EXITING,
    PROC_UNCONDITIONAL_IO_EXITING,
    PROC_USE_IO_BITMAPS,
    PROC_USE_MSR_BITMAPS,
    PROC_USE_TPR_SHADOW,
    RFLAGS_AF,
    RFLAGS_CF,
    RFLAGS_FIXED1,
    RFLAGS_IF,
    RFLAGS_OF,
    RFLAGS_PF,
    RFLAGS_SF,
    RFLAGS_TF,
    RFLAGS_VM,
    RFLAGS_ZF,
    VMCS_ENUM_MAX_INDEX,
    VMCS_FIELDS_OFFSET,
    VMCS_LAUNCH_STATE_OFFSET,
    VMCS_REGION_SIZE,
    VMCS_REVISION_ID,
    VMFUNC_EPTP_SWITCHING,
    VMX_CR0_FIXED0,
    VMX_CR0_FIXED1,
    VMX_CR4_FIXED0,
    VMX_CR4_FIXED1,
    VMX_EPT_VPID_CAP,
    VMX_MISC,
    VMX_MSRS,
    VPID_CAP_INVVPID,
    Access,
    CrAccessQualLayout,
    CrAccessType,
    ExitReason,
    FieldType,
    FieldWidth,
    InterruptionType,
    Invalidation,
    IoQualLayout,
    Outcome,
    VmcsEncoding,
    VmInstructionError,
    VmxMode,
    VmxOp,
    VmxResult,
    allowed_settings,
    field_by_encoding,
    mask,
)
from tb.model.translation import Context, Memory, translate  # noqa: E402
from tb.model.vmx import (  # noqa: E402
    CpuState,
    InvalidationRequest,
    Operands,
    VmxModel,
    example_vmcs_fields,
    feature_control_write,
)

E = VmcsEncoding
U64 = mask(63, 0)
VMXON = 0x1000
VMCS_A = 0x2000
VMCS_B = 0x3000
VMCS_C = 0x4000
LINKED = 0x5000
EPTP_LIST = 0x8000
IO_A, IO_B, MSR_BITMAP = 0xA000, 0xB000, 0xC000
GOOD_EPTP = 0x10_0000 | 0x1E          # WB, 4-level, A/D off
EPT_ERR = VmInstructionError

ZF_ONLY = RFLAGS_ZF
CF_ONLY = RFLAGS_CF


# =================================================================================================
# Helpers
# =================================================================================================


def fresh(regions=(VMXON, VMCS_A, VMCS_B, VMCS_C, LINKED)) -> tuple[VmxModel, CpuState]:
    """A model outside VMX operation with revision ids written in `regions`."""
    m = VmxModel()
    for r in regions:
        m.write_region_header(r)
    return m, CpuState()


def root(current: int | None = None) -> tuple[VmxModel, CpuState]:
    """A model in VMX root operation; with `current`, that VMCS VMCLEARed and loaded."""
    m, cpu = fresh()
    assert m.vmxon(cpu, VMXON).kind is VmxResult.SUCCEED
    if current is not None:
        assert m.vmclear(cpu, current).kind is VmxResult.SUCCEED
        assert m.vmptrld(cpu, current).kind is VmxResult.SUCCEED
    return m, cpu


def configure(m: VmxModel, cpu: CpuState, **overrides) -> None:
    """VMWRITE the example VMCS (which passes every VM-entry check) plus overrides."""
    fields = example_vmcs_fields()
    fields.update(overrides)
    for name, value in fields.items():
        r = m.vmwrite(cpu, E[name], value)
        assert r.kind is VmxResult.SUCCEED, (name, r)


def ready(**overrides) -> tuple[VmxModel, CpuState]:
    """Root operation with VMCS_A current and configured for a successful VM entry."""
    m, cpu = root(VMCS_A)
    configure(m, cpu, **overrides)
    return m, cpu


def in_guest(**overrides) -> tuple[VmxModel, CpuState]:
    """A model in VMX non-root operation (VMLAUNCH of VMCS_A succeeded)."""
    m, cpu = ready(**overrides)
    r = m.vmlaunch(cpu)
    assert r.kind is VmxResult.VM_ENTRY, r
    return m, cpu


def ctl(name: str, set_bits: int = 0, clear_bits: int = 0) -> dict:
    """An override of one control field of the example VMCS."""
    return {name: (example_vmcs_fields()[name] | set_bits) & ~clear_bits}


def read(m: VmxModel, cpu: CpuState, name: str) -> int:
    r = m.vmread(cpu, E[name])
    assert r.kind is VmxResult.SUCCEED, r
    return r.value


def assert_fail_valid(r, err: VmInstructionError, m: VmxModel | None = None):
    assert r.kind is VmxResult.FAIL_VALID, r
    assert r.error is err, r
    assert r.flags == ZF_ONLY
    if m is not None:
        assert m.read_field("VM_INSTRUCTION_ERROR") == err.value


def assert_fail_invalid(r):
    assert r.kind is VmxResult.FAIL_INVALID, r
    assert r.flags == CF_ONLY and r.error is None


def assert_exit(r, reason: ExitReason, qualification: int | None = None):
    assert r.kind is VmxResult.VM_EXIT, r
    assert r.exit_reason == reason.value, r
    if qualification is not None:
        assert r.qualification == qualification


def assert_entry_failure(r, m: VmxModel, qual: int = 0):
    assert r.kind is VmxResult.VM_EXIT, r
    assert r.exit_reason == EXIT_REASON_INVALID_GUEST_STATE == 0x80000021
    assert r.qualification == qual, r
    assert r.host is not None and r.host.rip == example_vmcs_fields()["HOST_RIP"]
    assert r.flags is None and r.host.rflags == RFLAGS_FIXED1
    assert m.mode is VmxMode.ROOT
    assert m.read_field("VM_EXIT_REASON") == 0x80000021
    assert m.read_field("EXIT_QUALIFICATION") == qual
    assert not m.current.launched


def entry(**overrides):
    """VMLAUNCH of the example VMCS with overrides: (model, cpu, result)."""
    m, cpu = ready(**overrides)
    return m, cpu, m.vmlaunch(cpu)


# =================================================================================================
# rtl.arch: the package move and the VMX constants
# =================================================================================================


def test_arch_package_reexports_paging_and_vmx():
    from rtl.arch import Invalidation as inval_top
    from rtl.arch import paging, vmx
    assert inval_top is paging.Invalidation
    assert arch.eptp_problem is paging.eptp_problem and arch.mask is paging.mask
    assert arch.VmxOp is vmx.VmxOp and arch.FIELDS is vmx.FIELDS
    assert set(paging.__all__) | set(vmx.__all__) == set(arch.__all__)
    for name in arch.__all__:
        assert hasattr(arch, name), name
    import rtl.translation.unit  # noqa: F401  the translation unit still imports


def test_enums_have_shapes_and_reference_values():
    assert VmxOp.as_shape().width == 4 and len(VmxOp) == 13
    assert VmxResult.as_shape().width == 3
    assert ExitReason.as_shape().width == 16
    assert arch.VmInstructionError.as_shape().width == 5
    expected = {1: "VMCALL_IN_ROOT", 2: "VMCLEAR_INVALID_ADDRESS", 3: "VMCLEAR_VMXON_POINTER",
                4: "VMLAUNCH_NONCLEAR_VMCS", 5: "VMRESUME_NONLAUNCHED_VMCS",
                7: "ENTRY_INVALID_CONTROL_FIELD", 8: "ENTRY_INVALID_HOST_STATE",
                9: "VMPTRLD_INVALID_ADDRESS", 10: "VMPTRLD_VMXON_POINTER",
                11: "VMPTRLD_INCORRECT_REVISION", 12: "UNSUPPORTED_VMCS_COMPONENT",
                13: "VMWRITE_READ_ONLY_COMPONENT", 15: "VMXON_IN_ROOT",
                26: "ENTRY_EVENTS_BLOCKED_BY_MOV_SS", 28: "INVALID_INVEPT_INVVPID_OPERAND"}
    for number, name in expected.items():
        assert VmInstructionError(number).name == name
    named = {0: "EXCEPTION_NMI", 2: "TRIPLE_FAULT", 10: "CPUID", 12: "HLT", 14: "INVLPG",
             18: "VMCALL", 19: "VMCLEAR", 20: "VMLAUNCH", 21: "VMPTRLD", 22: "VMPTRST",
             23: "VMREAD", 24: "VMRESUME", 25: "VMWRITE", 26: "VMXOFF", 27: "VMXON",
             28: "CR_ACCESS", 30: "IO_INSTRUCTION", 31: "RDMSR", 32: "WRMSR",
             33: "INVALID_GUEST_STATE", 37: "MONITOR_TRAP_FLAG", 48: "EPT_VIOLATION",
             49: "EPT_MISCONFIG", 50: "INVEPT", 52: "PREEMPTION_TIMER", 53: "INVVPID",
             59: "VMFUNC"}
    for number, name in named.items():
        assert ExitReason(number).name == name
    assert arch.EXIT_REASON_ENTRY_FAILURE == 1 << 31


def test_field_table_is_sorted_and_self_consistent():
    encs = [f.encoding for f in FIELDS]
    assert encs == sorted(encs) and len(set(encs)) == len(encs)
    assert [f.slot for f in FIELDS] == list(range(len(FIELDS)))
    assert {m.name: int(m) for m in VmcsEncoding} == {f.name: f.encoding for f in FIELDS}
    for f in FIELDS:
        assert f.encoding & 1 == 0 and not f.encoding & arch.ENCODING_RESERVED
        assert arch.encode_field(f.width, f.type, f.index) == f.encoding
        assert f.bits == {FieldWidth.BITS16: 16, FieldWidth.BITS32: 32, FieldWidth.BITS64: 64,
                          FieldWidth.NATURAL: 64}[f.width]
        assert f.read_only == (f.type is FieldType.EXIT_INFO)
    # Reference section 3.2 spot checks.
    assert FIELD_BY_NAME["EPT_POINTER"].encoding == 0x201A
    assert FIELD_BY_NAME["VM_EXIT_REASON"].type is FieldType.EXIT_INFO
    assert FIELD_BY_NAME["GUEST_RIP"].encoding == 0x681E
    assert FIELD_BY_NAME["HOST_RIP"].type is FieldType.HOST


def test_issue_field_list_is_supported():
    """Every field the issue names is in the table."""
    required = [
        "PIN_BASED_VM_EXEC_CONTROL", "CPU_BASED_VM_EXEC_CONTROL", "SECONDARY_VM_EXEC_CONTROL",
        "EXCEPTION_BITMAP", "PAGE_FAULT_ERROR_CODE_MASK", "PAGE_FAULT_ERROR_CODE_MATCH",
        "CR0_GUEST_HOST_MASK", "CR4_GUEST_HOST_MASK", "CR0_READ_SHADOW", "CR4_READ_SHADOW",
        "CR3_TARGET_COUNT", "CR3_TARGET_VALUE0", "CR3_TARGET_VALUE1", "CR3_TARGET_VALUE2",
        "CR3_TARGET_VALUE3", "IO_BITMAP_A", "IO_BITMAP_B", "MSR_BITMAP", "EPT_POINTER",
        "VIRTUAL_PROCESSOR_ID", "VM_FUNCTION_CONTROL", "EPTP_LIST_ADDRESS",
        "VMX_PREEMPTION_TIMER_VALUE", "VM_EXIT_CONTROLS", "VM_ENTRY_CONTROLS", "TSC_OFFSET",
        "VM_INSTRUCTION_ERROR", "VM_EXIT_REASON", "VM_EXIT_INTR_INFO", "VM_EXIT_INTR_ERROR_CODE",
        "IDT_VECTORING_INFO_FIELD", "IDT_VECTORING_ERROR_CODE", "VM_EXIT_INSTRUCTION_LEN",
        "VMX_INSTRUCTION_INFO", "EXIT_QUALIFICATION", "IO_RCX", "IO_RSI", "IO_RDI", "IO_RIP",
        "GUEST_LINEAR_ADDRESS", "GUEST_PHYSICAL_ADDRESS",
    ]
    for name in required:
        assert name in FIELD_BY_NAME, name
    kinds = {(f.width, f.type) for f in FIELDS}
    for width in FieldWidth:                       # guest and host fields of every width
        for t in (FieldType.GUEST, FieldType.HOST):
            assert (width, t) in kinds, (width, t)
    # Exit-information fields of every width there is one (reference section 3.2).
    for width in (FieldWidth.BITS64, FieldWidth.BITS32, FieldWidth.NATURAL):
        assert (width, FieldType.EXIT_INFO) in kinds


def test_field_by_encoding_decoding_rules():
    """Reference section 3.1: reserved bits, high access, width rules."""
    assert field_by_encoding(0x201A).field.name == "EPT_POINTER"
    hi = field_by_encoding(0x201B)
    assert hi.field.name == "EPT_POINTER" and hi.high
    assert field_by_encoding(0x4403) is None          # high access of a 32-bit field
    assert field_by_encoding(0x0001) is None          # high access of a 16-bit field
    assert field_by_encoding(0x681F) is None          # high access of a natural-width field
    assert field_by_encoding(0x201A | 1 << 12) is None    # bit 12 reserved
    for bit in range(15, 64):
        assert field_by_encoding(0x201A | 1 << bit) is None, bit
    assert field_by_encoding(0x0002) is None          # posted-interrupt vector: unsupported
    assert field_by_encoding(0x2032) is None          # TSC multiplier: unsupported
    assert field_by_encoding(-1) is None


def test_vmcs_enum_is_the_highest_index():
    assert VMCS_ENUM_MAX_INDEX == max(f.index for f in FIELDS) == 0x17
    assert VMX_MSRS[arch.IA32_VMX_VMCS_ENUM] == VMCS_ENUM_MAX_INDEX << 1 == 0x2E


def test_vmcs_region_layout():
    """Reference section 7 + the design's format: header, launch state, one qword per field."""
    offsets = [f.offset for f in FIELDS]
    assert offsets[0] == VMCS_FIELDS_OFFSET == 16 and VMCS_LAUNCH_STATE_OFFSET == 8
    assert all(o % 8 == 0 for o in offsets) and len(set(offsets)) == len(offsets)
    assert max(offsets) + 8 <= VMCS_REGION_SIZE == 4096
    assert (VMX_MSRS[arch.IA32_VMX_BASIC] >> 32) & 0x1FFF == VMCS_REGION_SIZE
    assert arch.vmcs_field_offset("GUEST_RIP") == arch.vmcs_field_offset(0x681E) == \
        arch.vmcs_field_offset(FIELD_BY_NAME["GUEST_RIP"])


def test_layout_sizes_and_positions():
    assert arch.ExitReasonLayout.size == 32
    assert arch.ExitReasonLayout["entry_failure"].offset == 31
    assert CrAccessQualLayout.size == 64
    assert CrAccessQualLayout["access_type"].offset == 4
    assert CrAccessQualLayout["gpr"].offset == 8
    assert CrAccessQualLayout["lmsw_source"].offset == 16
    assert IoQualLayout.size == 64 and IoQualLayout["port"].offset == 16
    assert IoQualLayout["is_in"].offset == 3 and IoQualLayout["immediate"].offset == 6
    eq = arch.EptViolationQualLayout
    assert eq.size == 64 and eq["gla_valid"].offset == 7 and eq["translation"].offset == 8
    ii = arch.VmxInstrInfoLayout
    assert ii.size == 32 and ii["reg1"].offset == 3 and ii["address_size"].offset == 7
    assert ii["segment"].offset == 15 and ii["index_invalid"].offset == 22
    assert ii["base_invalid"].offset == 27 and ii["reg2"].offset == 28
    intr = arch.InterruptionInfoLayout
    assert intr.size == 32 and intr["type"].offset == 8 and intr["valid"].offset == 31
    assert arch.SegmentAccessRightsLayout["unusable"].offset == 16
    assert arch.VmcsEncodingLayout["width"].offset == 13
    assert arch.EptpLayout.size == 64 and arch.EptpLayout["pml4"].offset == 12
    assert arch.InvvpidDescriptorLayout["linear_address"].offset == 64


def test_capability_msrs_are_self_consistent():
    """Allowed-0 bits are allowed-1 bits; TRUE MSRs relax only default1 bits; the features each
    capability implies are present (reference section 3.5, SDM appendix A)."""
    ctls = [arch.IA32_VMX_PINBASED_CTLS, arch.IA32_VMX_PROCBASED_CTLS, arch.IA32_VMX_EXIT_CTLS,
            arch.IA32_VMX_ENTRY_CTLS, arch.IA32_VMX_PROCBASED_CTLS2]
    trues = {arch.IA32_VMX_PINBASED_CTLS: arch.IA32_VMX_TRUE_PINBASED_CTLS,
             arch.IA32_VMX_PROCBASED_CTLS: arch.IA32_VMX_TRUE_PROCBASED_CTLS,
             arch.IA32_VMX_EXIT_CTLS: arch.IA32_VMX_TRUE_EXIT_CTLS,
             arch.IA32_VMX_ENTRY_CTLS: arch.IA32_VMX_TRUE_ENTRY_CTLS}
    defaults = {arch.IA32_VMX_PINBASED_CTLS: PIN_DEFAULT1,
                arch.IA32_VMX_PROCBASED_CTLS: arch.PROC_DEFAULT1,
                arch.IA32_VMX_EXIT_CTLS: arch.EXIT_CTL_DEFAULT1,
                arch.IA32_VMX_ENTRY_CTLS: arch.ENTRY_CTL_DEFAULT1}
    for msr in ctls:
        must1, may1 = allowed_settings(VMX_MSRS[msr])
        assert must1 & ~may1 == 0, hex(msr)
        assert may1 >> 32 == 0
    for msr, true in trues.items():
        must1, may1 = allowed_settings(VMX_MSRS[msr])
        tmust1, tmay1 = allowed_settings(VMX_MSRS[true])
        assert tmay1 == may1 and tmust1 & ~must1 == 0
        assert must1 == defaults[msr] and tmust1 & ~defaults[msr] == 0
    basic = VMX_MSRS[arch.IA32_VMX_BASIC]
    assert basic & 0x7FFFFFFF == VMCS_REVISION_ID and not basic & (1 << 31)
    assert (basic >> 50) & 0xF == 6 and basic & arch.BASIC_TRUE_CTLS
    assert not basic & arch.BASIC_32BIT_ADDRESSES and not basic & arch.BASIC_DUAL_MONITOR
    assert VMX_CR0_FIXED0 & ~VMX_CR0_FIXED1 == 0 and VMX_CR4_FIXED0 & ~VMX_CR4_FIXED1 == 0
    assert VMX_CR0_FIXED0 == 0x80000021 and VMX_CR4_FIXED0 == 0x2000
    assert VMX_CR4_FIXED1 & CR4_PCIDE == 0          # no PCIDs in the translation unit
    proc2_may1 = VMX_MSRS[arch.IA32_VMX_PROCBASED_CTLS2] >> 32
    proc_may1 = VMX_MSRS[arch.IA32_VMX_PROCBASED_CTLS] >> 32
    assert proc_may1 & PROC_ACTIVATE_SECONDARY
    assert proc2_may1 & PROC2_ENABLE_EPT and VMX_EPT_VPID_CAP & arch.EPT_CAP_WALK_4
    assert VMX_EPT_VPID_CAP & EPT_CAP_INVEPT and VMX_EPT_VPID_CAP & arch.EPT_CAP_INVEPT_SINGLE
    assert proc2_may1 & PROC2_ENABLE_VPID and VMX_EPT_VPID_CAP & VPID_CAP_INVVPID
    assert arch.INVEPT_TYPES == {1, 2} and arch.INVVPID_TYPES == {0, 1, 2, 3}
    assert VMX_EPT_VPID_CAP == 0x00000F01_06334141
    # Unrestricted guest needs EPT and "IA32_VMX_MISC[5] = 1" (SDM A.6).
    assert proc2_may1 & PROC2_UNRESTRICTED_GUEST and VMX_MISC & arch.MISC_STORES_LMA
    assert proc2_may1 & PROC2_ENABLE_VM_FUNCTIONS
    assert VMX_MSRS[arch.IA32_VMX_VMFUNC] == VMFUNC_EPTP_SWITCHING
    assert not proc2_may1 & PROC2_VMCS_SHADOWING
    assert not VMX_MISC & arch.MISC_VMWRITE_ANY_FIELD          # exit-info fields read-only
    assert (VMX_MISC >> 16) & 0x1FF == arch.CR3_TARGET_COUNT_MAX == 4
    # Preemption timer: pin control, save control and the field all present.
    assert VMX_MSRS[arch.IA32_VMX_PINBASED_CTLS] >> 32 & PIN_PREEMPTION_TIMER
    assert VMX_MSRS[arch.IA32_VMX_EXIT_CTLS] >> 32 & EXIT_CTL_SAVE_PREEMPTION_TIMER
    # EPTP memory types advertised = the ones eptp_problem accepts.
    for memtype in range(8):
        ok = arch.eptp_problem(0x1000 | 3 << 3 | memtype) is None
        cap = {0: arch.EPT_CAP_UC, 6: arch.EPT_CAP_WB}.get(memtype, 0)
        assert ok == bool(VMX_EPT_VPID_CAP & cap), memtype
    # Every supported control has its VMCS fields.
    for name in ("EPT_POINTER", "VIRTUAL_PROCESSOR_ID", "VM_FUNCTION_CONTROL",
                 "EPTP_LIST_ADDRESS", "IO_BITMAP_A", "MSR_BITMAP", "TSC_OFFSET",
                 "HOST_IA32_PAT", "HOST_IA32_EFER", "GUEST_IA32_PAT", "GUEST_IA32_EFER",
                 "GUEST_PDPTR0", "VMX_PREEMPTION_TIMER_VALUE"):
        assert name in FIELD_BY_NAME


def test_rdmsr_of_capability_msrs():
    m = VmxModel()
    for msr in range(0x480, 0x492):
        assert m.rdmsr(msr) == VMX_MSRS[msr]
    assert m.rdmsr(0x492) is None and m.rdmsr(0x10) is None


# =================================================================================================
# VMXON (reference section 2.3)
# =================================================================================================


@pytest.mark.parametrize("change", [
    {"register_operand": True}, {"cr0": VMX_CR0_FIXED0 & ~CR0_PE}, {"cr4": CR4_PAE},
    {"rflags": RFLAGS_FIXED1 | RFLAGS_VM}, {"cs_l": False},
])
def test_vmxon_ud(change):
    m, cpu = fresh()
    ro = change.pop("register_operand", False)
    for k, v in change.items():
        setattr(cpu, k, v)
    cpu.cpl = 3   # #UD comes before #GP
    r = m.vmxon(cpu, VMXON, register_operand=ro)
    assert r.kind is VmxResult.UD and r.flags is None and m.mode is VmxMode.OUTSIDE


@pytest.mark.parametrize("change", [
    {"cpl": 3}, {"cpl": 1}, {"cr0": CR0_PE | CR0_NE}, {"cr0": CR0_PE | CR0_PG},
    {"cr4": CR4_VMXE | CR4_PAE | CR4_PCIDE}, {"feature_control": 0},
    {"feature_control": arch.FEATURE_CONTROL_VMX_OUTSIDE_SMX},
    {"feature_control": arch.FEATURE_CONTROL_LOCK},
    {"feature_control": arch.FEATURE_CONTROL_LOCK | arch.FEATURE_CONTROL_VMX_IN_SMX},
])
def test_vmxon_gp(change):
    m, cpu = fresh()
    for k, v in change.items():
        setattr(cpu, k, v)
    r = m.vmxon(cpu, VMXON + 1)     # a bad pointer too: #GP comes before the pointer checks
    assert r.kind is VmxResult.GP and m.mode is VmxMode.OUTSIDE


def test_vmxon_bad_cr_must():
    """K-c test_vmxon_bad_cr: PE=0 or VMXE=0 gives #UD; any other value forbidden by the FIXED
    MSRs gives #GP."""
    for bit in range(64):
        m, cpu = fresh()
        cpu.cr0 ^= 1 << bit
        if (cpu.cr0 & VMX_CR0_FIXED0) == VMX_CR0_FIXED0 and not cpu.cr0 & ~VMX_CR0_FIXED1 & U64:
            continue
        expect = VmxResult.UD if bit == 0 else VmxResult.GP
        assert m.vmxon(cpu, VMXON).kind is expect, bit
    for bit in range(64):
        m, cpu = fresh()
        cpu.cr4 ^= 1 << bit
        if (cpu.cr4 & VMX_CR4_FIXED0) == VMX_CR4_FIXED0 and not cpu.cr4 & ~VMX_CR4_FIXED1 & U64:
            continue
        expect = VmxResult.UD if 1 << bit == CR4_VMXE else VmxResult.GP
        assert m.vmxon(cpu, VMXON).kind is expect, bit


def test_vmx_feature_control_must():
    """K-c test_vmx_feature_control: 0, or VMX enabled without the lock, gives #GP; a WRMSR to the
    locked MSR gives #GP."""
    for fc in (0, arch.FEATURE_CONTROL_VMX_OUTSIDE_SMX):
        m, cpu = fresh()
        cpu.feature_control = fc
        assert m.vmxon(cpu, VMXON).kind is VmxResult.GP
    locked = arch.FEATURE_CONTROL_LOCK | arch.FEATURE_CONTROL_VMX_OUTSIDE_SMX
    assert feature_control_write(locked, 0) is None
    assert feature_control_write(0, locked) == locked


@pytest.mark.parametrize("addr", [VMXON + 8, VMXON | 0x800, 1 << 40, 1 << 63, (1 << 40) | VMXON])
def test_vmxon_bad_pointer_is_vmfail_invalid(addr):
    m, cpu = fresh()
    r = m.vmxon(cpu, addr)
    assert_fail_invalid(r)
    assert m.mode is VmxMode.OUTSIDE


@pytest.mark.parametrize("rev", [VMCS_REVISION_ID + 1, 0, VMCS_REVISION_ID | 1 << 31])
def test_vmxon_bad_revision_is_vmfail_invalid(rev):
    m, cpu = fresh()
    m.memory.write(VMXON, rev)
    assert_fail_invalid(m.vmxon(cpu, VMXON))


def test_vmxon_succeeds():
    m, cpu = fresh()
    r = m.vmxon(cpu, VMXON)
    assert r.kind is VmxResult.SUCCEED and r.flags == 0
    assert r.apply_flags(RFLAGS_FIXED1 | arch.RFLAGS_ARITH | RFLAGS_IF) == RFLAGS_FIXED1 | RFLAGS_IF
    assert m.mode is VmxMode.ROOT and m.vmxon_pointer == VMXON
    assert m.current_pointer == INVALID_VMCS_POINTER
    m.check_invariants()


def test_vmxon_in_root():
    """Steps 2''-3'': #GP at CPL>0, else VMfail(15), CF=1 with no current VMCS."""
    m, cpu = root()
    cpu.cpl = 3
    assert m.vmxon(cpu, VMXON).kind is VmxResult.GP
    cpu.cpl = 0
    assert_fail_invalid(m.vmxon(cpu, VMXON))
    m, cpu = root(VMCS_A)
    assert_fail_valid(m.vmxon(cpu, VMXON), EPT_ERR.VMXON_IN_ROOT, m)


def test_vmxon_in_non_root_exits():
    m, cpu = in_guest()
    cpu.cpl = 3
    assert_exit(m.vmxon(cpu, VMXON, qualification=0x18), ExitReason.VMXON, 0x18)


# =================================================================================================
# VMXOFF
# =================================================================================================


def test_vmxoff_rows():
    m, cpu = fresh()
    assert m.vmxoff(cpu).kind is VmxResult.UD                     # outside VMX operation
    m, cpu = root()
    cpu.cs_l = False
    assert m.vmxoff(cpu).kind is VmxResult.UD                     # compatibility mode
    cpu.cs_l = True
    cpu.cpl = 1
    assert m.vmxoff(cpu).kind is VmxResult.GP
    cpu.cpl = 0
    r = m.vmxoff(cpu)
    assert r.kind is VmxResult.SUCCEED and m.mode is VmxMode.OUTSIDE and m.vmxon_pointer is None
    m, cpu = in_guest()
    assert_exit(m.vmxoff(cpu), ExitReason.VMXOFF)


def test_vmresume_after_vmxoff_is_error_6():
    """Error 6: VMXOFF and VMXON between VMLAUNCH and VMRESUME."""
    m, cpu = in_guest()
    m.vm_exit(ExitReason.CPUID)
    assert m.vmxoff(cpu).kind is VmxResult.SUCCEED
    assert m.vmxon(cpu, VMXON).kind is VmxResult.SUCCEED
    assert m.vmptrld(cpu, VMCS_A).kind is VmxResult.SUCCEED
    assert_fail_valid(m.vmresume(cpu), EPT_ERR.VMRESUME_AFTER_VMXOFF, m)
    assert_fail_valid(m.vmlaunch(cpu), EPT_ERR.VMLAUNCH_NONCLEAR_VMCS, m)
    # VMCLEAR makes it usable again.
    assert m.vmclear(cpu, VMCS_A).kind is VmxResult.SUCCEED
    assert m.vmptrld(cpu, VMCS_A).kind is VmxResult.SUCCEED
    assert m.vmlaunch(cpu).kind is VmxResult.VM_ENTRY


# =================================================================================================
# Common #UD set (every instruction but VMXON, VMCALL, VMFUNC)
# =================================================================================================

_OPS_WITH_COMMON_UD = [VmxOp.VMXOFF, VmxOp.VMCLEAR, VmxOp.VMPTRLD, VmxOp.VMPTRST, VmxOp.VMREAD,
                       VmxOp.VMWRITE, VmxOp.VMLAUNCH, VmxOp.VMRESUME, VmxOp.INVEPT,
                       VmxOp.INVVPID]
_MEM_OPS = [VmxOp.VMCLEAR, VmxOp.VMPTRLD, VmxOp.VMPTRST, VmxOp.INVEPT, VmxOp.INVVPID]


@pytest.mark.parametrize("op,case", [
    (op, case) for op in _OPS_WITH_COMMON_UD
    for case in ("outside", "pe0", "v86", "compat", "register")
    if case != "register" or op in _MEM_OPS])
def test_common_ud_set(op, case):
    if case == "outside":
        m, cpu = fresh()
    else:
        m, cpu = root(VMCS_A)
    ops = Operands(mem=VMCS_A, reg=1)
    if case == "pe0":
        cpu.cr0 = CR0_NE
    elif case == "v86":
        cpu.rflags |= RFLAGS_VM
    elif case == "compat":
        cpu.cs_l = False
    elif case == "register":
        ops.register_operand = True
    cpu.cpl = 3   # #UD before #GP
    r = m.execute(op, cpu, ops)
    assert r.kind is VmxResult.UD, r


@pytest.mark.parametrize("op", _OPS_WITH_COMMON_UD)
def test_cpl_gp_before_everything_else(op):
    m, cpu = root()           # no current VMCS: #GP comes before VMfailInvalid
    cpu.cpl = 3
    assert m.execute(op, cpu, Operands(mem=VMCS_A + 1, reg=1 << 40)).kind is VmxResult.GP


_EXIT_OF = {VmxOp.VMXON: 27, VmxOp.VMXOFF: 26, VmxOp.VMCLEAR: 19, VmxOp.VMPTRLD: 21,
            VmxOp.VMPTRST: 22, VmxOp.VMREAD: 23, VmxOp.VMWRITE: 25, VmxOp.VMLAUNCH: 20,
            VmxOp.VMRESUME: 24, VmxOp.VMCALL: 18, VmxOp.INVEPT: 50, VmxOp.INVVPID: 53}


@pytest.mark.parametrize("op", list(_EXIT_OF))
def test_vmx_instructions_in_non_root_exit(op):
    """Exit reasons 18-27, 50, 53 (reference section 4), before the CPL check, with the
    qualification (displacement) the core passes."""
    m, cpu = in_guest()
    cpu.cpl = 3
    r = m.execute(op, cpu, Operands(mem=VMCS_B, reg=0x681E, qualification=0x40))
    assert r.kind is VmxResult.VM_EXIT and r.exit_reason == _EXIT_OF[op]
    assert ExitReason(_EXIT_OF[op]) is arch.INSTRUCTION_EXIT_REASON[op]
    if op is not VmxOp.VMCALL and op not in (VmxOp.VMXOFF, VmxOp.VMLAUNCH, VmxOp.VMRESUME):
        assert r.qualification == 0x40
    assert r.host is None and m.mode is VmxMode.NON_ROOT   # a decision; vm_exit performs it
    done = m.vm_exit_for(r.exit_decision, instr_len=3)
    assert done.host is not None and m.mode is VmxMode.ROOT
    assert read(m, CpuState(), "VM_EXIT_REASON") == _EXIT_OF[op]


# =================================================================================================
# VMCLEAR
# =================================================================================================


@pytest.mark.parametrize("addr", [VMCS_B + 4, VMCS_B | 0x800, 1 << 40, 1 << 52])
def test_vmclear_bad_address_is_error_2(addr):
    m, cpu = root(VMCS_A)
    assert_fail_valid(m.vmclear(cpu, addr), EPT_ERR.VMCLEAR_INVALID_ADDRESS, m)
    assert m.current_pointer == VMCS_A
    m, cpu = root()
    assert_fail_invalid(m.vmclear(cpu, addr))


def test_vmclear_vmxon_pointer_is_error_3():
    m, cpu = root(VMCS_A)
    assert_fail_valid(m.vmclear(cpu, VMXON), EPT_ERR.VMCLEAR_VMXON_POINTER, m)
    m, cpu = root()
    assert_fail_invalid(m.vmclear(cpu, VMXON))


def test_vmclear_success_clears_launch_state_and_current_pointer():
    m, cpu = in_guest()
    m.vm_exit(ExitReason.HLT)
    assert m.current.launched
    r = m.vmclear(cpu, VMCS_A)
    assert r.kind is VmxResult.SUCCEED and r.flags == 0
    assert m.current_pointer == INVALID_VMCS_POINTER and VMCS_A not in m.vmcs
    assert m.memory.read(VMCS_A + VMCS_LAUNCH_STATE_OFFSET) & 1 == 0
    assert m.vmptrld(cpu, VMCS_A).kind is VmxResult.SUCCEED
    assert not m.current.launched and m.vmlaunch(cpu).kind is VmxResult.VM_ENTRY


def test_vmclear_does_not_check_revision_and_keeps_other_current():
    m, cpu = root(VMCS_A)
    m.memory.write(0x7000, 0xDEAD)                # not a VMCS at all
    assert m.vmclear(cpu, 0x7000).kind is VmxResult.SUCCEED
    assert m.current_pointer == VMCS_A            # another VMCS stays current
    assert m.memory.read(0x7000) == 0xDEAD        # the revision dword is never written


def test_vmclear_flushing_must():
    """K-c test_vmclear_flushing: after VMCLEAR, a memcpy of the region, VMPTRLDed, reads the
    same values; for the current VMCS and for an active non-current one."""
    m, cpu = root(VMCS_A)
    values_a = {"GUEST_RIP": 0x1234_5678_9ABC, "TSC_OFFSET": 0x0123_4567_89AB_CDEF,
                "EXCEPTION_BITMAP": 0x4000_0001, "GUEST_CS_SELECTOR": 0xBEEF}
    for n, v in values_a.items():
        assert m.vmwrite(cpu, E[n], v).kind is VmxResult.SUCCEED
    m.vmclear(cpu, VMCS_B)
    m.vmptrld(cpu, VMCS_B)
    m.vmwrite(cpu, E.GUEST_RSP, 0x7777)
    m.vmptrld(cpu, VMCS_A)                         # B active, not current
    for src in (VMCS_A, VMCS_B):
        assert m.vmclear(cpu, src).kind is VmxResult.SUCCEED
    for src, copy, values in ((VMCS_A, 0x20000, values_a),
                              (VMCS_B, 0x21000, {"GUEST_RSP": 0x7777})):
        for off in range(0, VMCS_REGION_SIZE, 8):
            m.memory.write(copy + off, m.memory.read(src + off))
        assert m.vmptrld(cpu, copy).kind is VmxResult.SUCCEED
        for n, v in values.items():
            assert read(m, cpu, n) == v, n
        # The region holds each field in its documented slot.
        for n, v in values.items():
            assert m.memory.read(src + arch.vmcs_field_offset(n)) == v


# =================================================================================================
# VMPTRLD / VMPTRST
# =================================================================================================


@pytest.mark.parametrize("addr", [VMCS_B + 1, VMCS_B + 0x10, 1 << 40, (1 << 45) | VMCS_B])
def test_vmptrld_bad_address_is_error_9(addr):
    m, cpu = root(VMCS_A)
    assert_fail_valid(m.vmptrld(cpu, addr), EPT_ERR.VMPTRLD_INVALID_ADDRESS, m)
    assert m.current_pointer == VMCS_A
    m, cpu = root()
    assert_fail_invalid(m.vmptrld(cpu, addr))


def test_vmptrld_vmxon_pointer_is_error_10():
    m, cpu = root(VMCS_A)
    assert_fail_valid(m.vmptrld(cpu, VMXON), EPT_ERR.VMPTRLD_VMXON_POINTER, m)
    m, cpu = root()
    assert_fail_invalid(m.vmptrld(cpu, VMXON))


@pytest.mark.parametrize("rev", [VMCS_REVISION_ID ^ 1, VMCS_REVISION_ID | 1 << 31, 0])
def test_vmptrld_bad_revision_is_error_11(rev):
    m, cpu = root(VMCS_A)
    m.memory.write(VMCS_B, rev)
    assert_fail_valid(m.vmptrld(cpu, VMCS_B), EPT_ERR.VMPTRLD_INCORRECT_REVISION, m)
    assert m.current_pointer == VMCS_A
    m, cpu = root()
    m.memory.write(VMCS_B, rev)
    assert_fail_invalid(m.vmptrld(cpu, VMCS_B))


def test_vmptrld_check_order_9_10_11():
    """A misaligned pointer is 9 even with a bad revision; the VMXON pointer is 10 (its
    revision is valid, and would pass step 6)."""
    m, cpu = root(VMCS_A)
    m.memory.write(VMCS_B, 0)
    assert m.vmptrld(cpu, VMCS_B + 8).error is EPT_ERR.VMPTRLD_INVALID_ADDRESS
    assert m.vmptrld(cpu, VMXON).error is EPT_ERR.VMPTRLD_VMXON_POINTER
    assert m.vmptrld(cpu, VMCS_B).error is EPT_ERR.VMPTRLD_INCORRECT_REVISION


def test_vmptrld_of_current_keeps_writes_and_two_vmcs_keep_values():
    """K-c test_vmcs_lifecycle."""
    m, cpu = root(VMCS_A)
    m.vmwrite(cpu, E.GUEST_RIP, 0xAAAA)
    assert m.vmptrld(cpu, VMCS_A).kind is VmxResult.SUCCEED
    assert read(m, cpu, "GUEST_RIP") == 0xAAAA
    m.vmclear(cpu, VMCS_B)
    m.vmptrld(cpu, VMCS_B)
    m.vmwrite(cpu, E.GUEST_RIP, 0xBBBB)
    for _ in range(3):
        m.vmptrld(cpu, VMCS_A)
        assert read(m, cpu, "GUEST_RIP") == 0xAAAA
        m.vmptrld(cpu, VMCS_B)
        assert read(m, cpu, "GUEST_RIP") == 0xBBBB


def test_vmptrst():
    m, cpu = root()
    r = m.vmptrst(cpu)
    assert r.kind is VmxResult.SUCCEED and r.value == INVALID_VMCS_POINTER == U64
    m.vmclear(cpu, VMCS_A)
    m.vmptrld(cpu, VMCS_A)
    assert m.vmptrst(cpu).value == VMCS_A
    m.vmclear(cpu, VMCS_A)
    assert m.vmptrst(cpu).value == U64
    cpu.cpl = 3
    assert m.vmptrst(cpu).kind is VmxResult.GP
    assert m.vmptrst(CpuState(), register_operand=True).kind is VmxResult.UD


# =================================================================================================
# VMREAD / VMWRITE
# =================================================================================================


def test_vmread_vmwrite_without_current_vmcs_fail_invalid():
    m, cpu = root()
    assert_fail_invalid(m.vmread(cpu, E.GUEST_RIP))
    assert_fail_invalid(m.vmwrite(cpu, E.GUEST_RIP, 1))
    assert_fail_invalid(m.vmread(cpu, 0xFFFF_FFFF))      # pointer checked before encoding
    assert_fail_invalid(m.vmwrite(cpu, E.VM_EXIT_REASON, 1))


@pytest.mark.parametrize("enc", [0x0002, 0x4403, 0x681F, 0x0001, 0x201A | 1 << 12,
                                 0x201A | 1 << 15, 0x201A | 1 << 32, 0xFFFF_FFFF, U64, 0x6C18])
def test_unsupported_encoding_is_error_12(enc):
    m, cpu = root(VMCS_A)
    assert_fail_valid(m.vmread(cpu, enc), EPT_ERR.UNSUPPORTED_VMCS_COMPONENT, m)
    assert_fail_valid(m.vmwrite(cpu, enc, 0), EPT_ERR.UNSUPPORTED_VMCS_COMPONENT, m)


@pytest.mark.parametrize("f", [f for f in FIELDS if f.type is FieldType.EXIT_INFO],
                         ids=lambda f: f.name)
def test_vmwrite_read_only_field_is_error_13(f):
    m, cpu = root(VMCS_A)
    assert_fail_valid(m.vmwrite(cpu, f.encoding, 5), EPT_ERR.VMWRITE_READ_ONLY_COMPONENT, m)
    if f.has_high:
        assert_fail_valid(m.vmwrite(cpu, f.encoding + 1, 5),
                          EPT_ERR.VMWRITE_READ_ONLY_COMPONENT, m)
    assert read(m, cpu, f.name) == 0 or f.name == "VM_INSTRUCTION_ERROR"


def test_vmcs_high_must():
    """K-c test_vmcs_high."""
    m, cpu = root(VMCS_A)
    m.vmwrite(cpu, 0x2010, 0x0123456789ABCDEF)
    assert m.vmread(cpu, 0x2011).value == 0x01234567
    m.vmwrite(cpu, 0x2011, 0x76543210)
    assert m.vmread(cpu, 0x2010).value == 0x7654321089ABCDEF


def test_vmread_vmwrite_width_rules():
    """Shorter fields zero-extend; wider sources lose their high bits; 32-bit operands outside
    64-bit mode (the encoding register is then 32 bits wide)."""
    m, cpu = root(VMCS_A)
    m.vmwrite(cpu, E.GUEST_CS_SELECTOR, 0xFFFF_FFFF_1234_5678)
    assert read(m, cpu, "GUEST_CS_SELECTOR") == 0x5678
    m.vmwrite(cpu, E.EXCEPTION_BITMAP, U64)
    assert read(m, cpu, "EXCEPTION_BITMAP") == 0xFFFF_FFFF
    m.vmwrite(cpu, E.GUEST_RIP, U64)
    assert read(m, cpu, "GUEST_RIP") == U64
    cpu32 = CpuState(efer=0, cr4=CR4_VMXE | CR4_PAE, cs_l=False)
    assert not cpu32.long_mode and not cpu32.compatibility_mode
    assert m.vmread(cpu32, E.GUEST_RIP).value == 0xFFFF_FFFF
    assert m.vmread(cpu32, (1 << 32) | E.GUEST_RIP).value == 0xFFFF_FFFF
    m.vmwrite(cpu32, E.TSC_OFFSET, 0xFFFF_FFFF_AAAA_BBBB)
    assert read(m, cpu, "TSC_OFFSET") == 0xAAAA_BBBB   # high bits of the field cleared
    m.vmwrite(cpu32, E.TSC_OFFSET + 1, 0x1111_2222)
    assert read(m, cpu, "TSC_OFFSET") == 0x1111_2222_AAAA_BBBB


def test_successful_instruction_leaves_error_field_must():
    """K-t try_invvpid: error field set to 12 by vmread(~0); a successful INVVPID keeps it."""
    m, cpu = root(VMCS_A)
    assert m.vmread(cpu, U64).error is EPT_ERR.UNSUPPORTED_VMCS_COMPONENT
    assert m.invvpid(cpu, 1, 5).kind is VmxResult.SUCCEED
    assert read(m, cpu, "VM_INSTRUCTION_ERROR") == 12
    for r in (m.vmwrite(cpu, E.GUEST_RIP, 1), m.vmptrld(cpu, VMCS_A), m.invept(cpu, 2, 0),
              m.vmptrst(cpu), m.vmclear(cpu, VMCS_B)):
        assert r.kind is VmxResult.SUCCEED
        assert read(m, cpu, "VM_INSTRUCTION_ERROR") == 12


def test_vmread_vmwrite_pf_leaves_flags_via_precheck():
    """K-c test_vmread_vmwrite_pf: a memory fault leaves RFLAGS unchanged. precheck says when
    the operand is touched: VMWRITE reads its source after the pointer check, VMREAD writes its
    destination only when it succeeds; precheck changes no state."""
    m, cpu = root()
    r = m.precheck(VmxOp.VMWRITE, cpu, Operands(reg=E.GUEST_RIP))
    assert r is not None and r.kind is VmxResult.FAIL_INVALID   # no source read at all
    m, cpu = root(VMCS_A)
    m.write_field("VM_INSTRUCTION_ERROR", 0)
    assert m.precheck(VmxOp.VMWRITE, cpu, Operands(reg=E.GUEST_RIP)) is None
    assert m.precheck(VmxOp.VMREAD, cpu, Operands(reg=E.GUEST_RIP)) is None
    r = m.precheck(VmxOp.VMREAD, cpu, Operands(reg=0x4403))
    assert r.kind is VmxResult.FAIL_VALID and r.error is EPT_ERR.UNSUPPORTED_VMCS_COMPONENT
    assert m.read_field("VM_INSTRUCTION_ERROR") == 0           # precheck wrote nothing


# =================================================================================================
# VMLAUNCH / VMRESUME: instruction checks
# =================================================================================================


def test_vmlaunch_vmresume_without_current_vmcs():
    m, cpu = root()
    assert_fail_invalid(m.vmlaunch(cpu))
    assert_fail_invalid(m.vmresume(cpu))
    cpu.mov_ss_blocking = True
    assert_fail_invalid(m.vmlaunch(cpu))              # pointer check before MOV-SS (step 4)


def test_mov_ss_blocking_is_26_before_4_and_5():
    m, cpu = in_guest()
    m.vm_exit(ExitReason.CPUID)
    cpu.mov_ss_blocking = True
    assert_fail_valid(m.vmlaunch(cpu), EPT_ERR.ENTRY_EVENTS_BLOCKED_BY_MOV_SS, m)  # not 4
    m, cpu = ready()
    cpu.mov_ss_blocking = True
    assert_fail_valid(m.vmresume(cpu), EPT_ERR.ENTRY_EVENTS_BLOCKED_BY_MOV_SS, m)  # not 5
    # ... and before the control checks (7).
    m, cpu = ready(**ctl("PIN_BASED_VM_EXEC_CONTROL", clear_bits=PIN_DEFAULT1))
    cpu.mov_ss_blocking = True
    assert m.vmlaunch(cpu).error is EPT_ERR.ENTRY_EVENTS_BLOCKED_BY_MOV_SS


def test_vmlaunch_launched_is_4_and_vmresume_clear_is_5():
    m, cpu = ready()
    assert_fail_valid(m.vmresume(cpu), EPT_ERR.VMRESUME_NONLAUNCHED_VMCS, m)
    assert m.vmlaunch(cpu).kind is VmxResult.VM_ENTRY
    m.vm_exit(ExitReason.HLT)
    assert_fail_valid(m.vmlaunch(cpu), EPT_ERR.VMLAUNCH_NONCLEAR_VMCS, m)
    r = m.vmresume(cpu)
    assert r.kind is VmxResult.VM_ENTRY and r.flags is None


def test_launch_state_checked_before_controls():
    m, cpu = ready(**ctl("PIN_BASED_VM_EXEC_CONTROL", clear_bits=PIN_DEFAULT1))
    assert m.vmresume(cpu).error is EPT_ERR.VMRESUME_NONLAUNCHED_VMCS


# =================================================================================================
# VM entry: control checks (error 7)
# =================================================================================================

_BAD_CONTROLS = {
    "pin allowed-0": ctl("PIN_BASED_VM_EXEC_CONTROL", clear_bits=1 << 1),
    "pin allowed-1": ctl("PIN_BASED_VM_EXEC_CONTROL", set_bits=PIN_POSTED_INTERRUPTS),
    "proc allowed-0": ctl("CPU_BASED_VM_EXEC_CONTROL", clear_bits=1 << 26),
    "proc allowed-1": ctl("CPU_BASED_VM_EXEC_CONTROL", set_bits=PROC_USE_TPR_SHADOW),
    "proc2 allowed-1": ctl("SECONDARY_VM_EXEC_CONTROL", set_bits=PROC2_VMCS_SHADOWING),
    "exit allowed-0": ctl("VM_EXIT_CONTROLS", clear_bits=1 << 0),
    "exit allowed-1": ctl("VM_EXIT_CONTROLS", set_bits=arch.EXIT_CTL_LOAD_PERF_GLOBAL_CTRL),
    "entry allowed-0": ctl("VM_ENTRY_CONTROLS", clear_bits=1 << 12),
    "entry to SMM": ctl("VM_ENTRY_CONTROLS", set_bits=arch.ENTRY_CTL_ENTRY_TO_SMM),
    "CR3-target count 5": {"CR3_TARGET_COUNT": 5},
    "I/O bitmap A misaligned": {**ctl("CPU_BASED_VM_EXEC_CONTROL", set_bits=PROC_USE_IO_BITMAPS),
                                "IO_BITMAP_A": IO_A + 8, "IO_BITMAP_B": IO_B},
    "I/O bitmap B too wide": {**ctl("CPU_BASED_VM_EXEC_CONTROL", set_bits=PROC_USE_IO_BITMAPS),
                              "IO_BITMAP_A": IO_A, "IO_BITMAP_B": 1 << 40},
    "MSR bitmap misaligned": {**ctl("CPU_BASED_VM_EXEC_CONTROL", set_bits=PROC_USE_MSR_BITMAPS),
                              "MSR_BITMAP": MSR_BITMAP | 0x10},
    "virtual NMIs without NMI exiting": ctl("PIN_BASED_VM_EXEC_CONTROL", PIN_VIRTUAL_NMIS),
    "NMI window without virtual NMIs": ctl("CPU_BASED_VM_EXEC_CONTROL",
                                           PROC_NMI_WINDOW_EXITING),
    "VPID 0": {"VIRTUAL_PROCESSOR_ID": 0},
    "unrestricted guest without EPT": ctl("SECONDARY_VM_EXEC_CONTROL", PROC2_UNRESTRICTED_GUEST,
                                          PROC2_ENABLE_EPT),
    "VM-function reserved bit": {**ctl("SECONDARY_VM_EXEC_CONTROL", PROC2_ENABLE_VM_FUNCTIONS),
                                 "VM_FUNCTION_CONTROL": 1 << 1},
    "EPTP switching without EPT": {
        **ctl("SECONDARY_VM_EXEC_CONTROL", PROC2_ENABLE_VM_FUNCTIONS, PROC2_ENABLE_EPT),
        "VM_FUNCTION_CONTROL": 1, "EPTP_LIST_ADDRESS": EPTP_LIST},
    "EPTP list misaligned": {**ctl("SECONDARY_VM_EXEC_CONTROL", PROC2_ENABLE_VM_FUNCTIONS),
                             "VM_FUNCTION_CONTROL": 1, "EPTP_LIST_ADDRESS": EPTP_LIST + 8},
    "EPTP list too wide": {**ctl("SECONDARY_VM_EXEC_CONTROL", PROC2_ENABLE_VM_FUNCTIONS),
                           "VM_FUNCTION_CONTROL": 1, "EPTP_LIST_ADDRESS": 1 << 40},
    "save timer without timer": ctl("VM_EXIT_CONTROLS", EXIT_CTL_SAVE_PREEMPTION_TIMER),
    "exit MSR-store count": {"VM_EXIT_MSR_STORE_COUNT": 1},
    "exit MSR-load count": {"VM_EXIT_MSR_LOAD_COUNT": 1},
    "entry MSR-load count": {"VM_ENTRY_MSR_LOAD_COUNT": 1},
    "inject type 1": {"VM_ENTRY_INTR_INFO_FIELD": INTR_INFO_VALID | 1 << 8 | 32},
    "inject NMI vector 3": {"VM_ENTRY_INTR_INFO_FIELD": INTR_INFO_VALID | 2 << 8 | 3},
    "inject exception 32": {"VM_ENTRY_INTR_INFO_FIELD": INTR_INFO_VALID | 3 << 8 | 32},
    "inject other event vector 1": {"VM_ENTRY_INTR_INFO_FIELD": INTR_INFO_VALID | 7 << 8 | 1},
    "inject #GP without error code": {"VM_ENTRY_INTR_INFO_FIELD": INTR_INFO_VALID | 3 << 8 | 13},
    "inject #UD with error code": {"VM_ENTRY_INTR_INFO_FIELD": INTR_INFO_VALID | 3 << 8 | 6
                                   | INTR_INFO_DELIVER_ERROR_CODE},
    "inject reserved bit 12": {"VM_ENTRY_INTR_INFO_FIELD": INTR_INFO_VALID | 3 << 8 | 6
                               | 1 << 12},
    "inject error code bits 31:16": {
        "VM_ENTRY_INTR_INFO_FIELD": INTR_INFO_VALID | 3 << 8 | 13 | INTR_INFO_DELIVER_ERROR_CODE,
        "VM_ENTRY_EXCEPTION_ERROR_CODE": 0x10000},
    "inject INT n with length 0": {"VM_ENTRY_INTR_INFO_FIELD": INTR_INFO_VALID | 4 << 8 | 0x80,
                                   "VM_ENTRY_INSTRUCTION_LEN": 0},
    "inject INT3 with length 16": {"VM_ENTRY_INTR_INFO_FIELD": INTR_INFO_VALID | 6 << 8 | 3,
                                   "VM_ENTRY_INSTRUCTION_LEN": 16},
}


@pytest.mark.parametrize("name", list(_BAD_CONTROLS))
def test_bad_controls_are_error_7_must(name):
    """K-c enter_guest_with_bad_controls: the flags are exactly ZF=1 and the error is 7."""
    m, cpu, r = entry(**_BAD_CONTROLS[name])
    assert_fail_valid(r, EPT_ERR.ENTRY_INVALID_CONTROL_FIELD, m)
    assert r.apply_flags(RFLAGS_FIXED1 | RFLAGS_CF | RFLAGS_SF | RFLAGS_IF) == \
        RFLAGS_FIXED1 | RFLAGS_ZF | RFLAGS_IF
    assert m.mode is VmxMode.ROOT and not m.current.launched


@pytest.mark.parametrize("memtype", range(8))
def test_ept_eptp_memory_types_must(memtype):
    """K-t test_ept_eptp: only advertised memory types (UC, WB) are valid."""
    m, cpu, r = entry(EPT_POINTER=0x10_0000 | 3 << 3 | memtype)
    assert (r.kind is VmxResult.VM_ENTRY) == (memtype in (0, 6)), r


@pytest.mark.parametrize("walk", range(8))
def test_ept_eptp_walk_length_must(walk):
    m, cpu, r = entry(EPT_POINTER=0x10_0000 | walk << 3 | 6)
    assert (r.kind is VmxResult.VM_ENTRY) == (walk == 3), r
    if walk != 3:
        assert r.error is EPT_ERR.ENTRY_INVALID_CONTROL_FIELD


@pytest.mark.parametrize("bit", [6, 7, 8, 9, 10, 11, 40, 47, 51, 52, 63])
def test_ept_eptp_reserved_bits_must(bit):
    """Bit 6 (A/D) is valid (EPT_VPID_CAP[21]=1); bits 11:7 and 63:MAXPHYADDR are not."""
    m, cpu, r = entry(EPT_POINTER=GOOD_EPTP | 1 << bit)
    if bit == 6:
        assert r.kind is VmxResult.VM_ENTRY and r.entry.eptp == GOOD_EPTP | 1 << 6
    else:
        assert r.error is EPT_ERR.ENTRY_INVALID_CONTROL_FIELD


@pytest.mark.parametrize("i", range(16))
def test_vpid_values_must(i):
    """K-t test_vpid: every VPID 1 << i is valid."""
    m, cpu, r = entry(VIRTUAL_PROCESSOR_ID=1 << i)
    assert r.kind is VmxResult.VM_ENTRY and r.entry.vpid == 1 << i and r.invalidation is None


def test_controls_accepted_when_optional_features_off():
    """Secondary controls are ignored unless activated; VM-function controls unless enabled;
    TRUE MSRs let CR3-load/store exiting be 0 (the example VMCS relies on it)."""
    bad2 = PROC2_VMCS_SHADOWING | PROC2_UNRESTRICTED_GUEST
    m, cpu, r = entry(**ctl("CPU_BASED_VM_EXEC_CONTROL", clear_bits=PROC_ACTIVATE_SECONDARY),
                      SECONDARY_VM_EXEC_CONTROL=bad2, EPT_POINTER=0, VIRTUAL_PROCESSOR_ID=0)
    assert r.kind is VmxResult.VM_ENTRY and not r.entry.ept_enabled and not r.entry.vpid_enabled
    assert r.invalidation == InvalidationRequest(Invalidation.VPID, vpid=0)
    m, cpu, r = entry(VM_FUNCTION_CONTROL=0xFF)
    assert r.kind is VmxResult.VM_ENTRY
    assert not example_vmcs_fields()["CPU_BASED_VM_EXEC_CONTROL"] & (
        PROC_CR3_LOAD_EXITING | PROC_CR3_STORE_EXITING)


def test_controls_before_host_state():
    """Errors 7 and 8 may come in either order (SDM); this design reports 7 first."""
    m, cpu, r = entry(VIRTUAL_PROCESSOR_ID=0, HOST_CR0=0)
    assert r.error is EPT_ERR.ENTRY_INVALID_CONTROL_FIELD


# =================================================================================================
# VM entry: host-state checks (error 8)
# =================================================================================================

_HOST = example_vmcs_fields()
_BAD_HOST = {
    "CR0.PG=0": {"HOST_CR0": _HOST["HOST_CR0"] & ~CR0_PG},
    "CR0.NE=0": {"HOST_CR0": _HOST["HOST_CR0"] & ~CR0_NE},
    "CR0 bit 32": {"HOST_CR0": _HOST["HOST_CR0"] | 1 << 32},
    "CR4.VMXE=0": {"HOST_CR4": CR4_PAE},
    "CR4.PCIDE": {"HOST_CR4": _HOST["HOST_CR4"] | CR4_PCIDE},
    "CR3 too wide": {"HOST_CR3": 1 << 40},
    "RIP not canonical": {"HOST_RIP": 0x0000_8000_0000_0000},
    "FS base": {"HOST_FS_BASE": 0x0001_0000_0000_0000},
    "GS base": {"HOST_GS_BASE": 0x8000_0000_0000_0000},
    "TR base": {"HOST_TR_BASE": 0x0000_8000_0000_0000},
    "GDTR base": {"HOST_GDTR_BASE": 0xFFFF_0000_0000_0000},
    "IDTR base": {"HOST_IDTR_BASE": 0x00FF_8000_0000_0000},
    "SYSENTER_ESP": {"HOST_IA32_SYSENTER_ESP": 0x0000_8000_0000_0000},
    "SYSENTER_EIP": {"HOST_IA32_SYSENTER_EIP": 0x0000_8000_0000_0000},
    "CS RPL": {"HOST_CS_SELECTOR": 0x0B},
    "SS TI": {"HOST_SS_SELECTOR": 0x14},
    "DS RPL": {"HOST_DS_SELECTOR": 0x13},
    "ES RPL": {"HOST_ES_SELECTOR": 0x11},
    "FS TI": {"HOST_FS_SELECTOR": 0x04},
    "GS RPL": {"HOST_GS_SELECTOR": 0x03},
    "TR RPL": {"HOST_TR_SELECTOR": 0x19},
    "CS null": {"HOST_CS_SELECTOR": 0},
    "TR null": {"HOST_TR_SELECTOR": 0},
    "32-bit host in IA-32e mode": ctl("VM_EXIT_CONTROLS",
                                      clear_bits=EXIT_CTL_HOST_ADDRESS_SPACE_SIZE),
    "64-bit host without CR4.PAE": {"HOST_CR4": CR4_VMXE},
    "load PAT invalid": {**ctl("VM_EXIT_CONTROLS", EXIT_CTL_LOAD_PAT), "HOST_IA32_PAT": 2},
    "load EFER reserved": {**ctl("VM_EXIT_CONTROLS", EXIT_CTL_LOAD_EFER),
                           "HOST_IA32_EFER": EFER_LMA | EFER_LME | 1 << 2},
    "load EFER LMA=0": {**ctl("VM_EXIT_CONTROLS", EXIT_CTL_LOAD_EFER),
                        "HOST_IA32_EFER": EFER_LME},
}


@pytest.mark.parametrize("name", list(_BAD_HOST))
def test_bad_host_state_is_error_8(name):
    m, cpu, r = entry(**_BAD_HOST[name])
    assert_fail_valid(r, EPT_ERR.ENTRY_INVALID_HOST_STATE, m)


def test_host_address_space_rules_outside_ia32e_mode():
    """A root in 32-bit protected mode: host address-space size and IA-32e guest must be 0;
    then SS must not be null and RIP must fit in 32 bits."""
    cpu32 = CpuState(efer=0, cs_l=False)
    m, cpu = ready()
    assert m.vmlaunch(cpu32).error is EPT_ERR.ENTRY_INVALID_HOST_STATE
    m, cpu = ready(**ctl("VM_EXIT_CONTROLS", clear_bits=EXIT_CTL_HOST_ADDRESS_SPACE_SIZE),
                   **ctl("VM_ENTRY_CONTROLS", clear_bits=ENTRY_CTL_IA32E_MODE_GUEST),
                   HOST_RIP=0x1000, HOST_SS_SELECTOR=0)
    assert m.vmlaunch(cpu32).error is EPT_ERR.ENTRY_INVALID_HOST_STATE    # SS null
    m.vmwrite(cpu, E.HOST_SS_SELECTOR, 0x10)
    r = m.vmlaunch(cpu32)
    assert r.error is None, r       # passes the host checks (guest may fail: 64-bit CS.L etc.)
    m, cpu = ready(**ctl("VM_EXIT_CONTROLS", clear_bits=EXIT_CTL_HOST_ADDRESS_SPACE_SIZE),
                   **ctl("VM_ENTRY_CONTROLS", clear_bits=ENTRY_CTL_IA32E_MODE_GUEST),
                   HOST_RIP=1 << 32)
    assert m.vmlaunch(cpu32).error is EPT_ERR.ENTRY_INVALID_HOST_STATE


def test_valid_host_variants():
    m, cpu, r = entry(**ctl("VM_EXIT_CONTROLS", EXIT_CTL_LOAD_PAT | EXIT_CTL_LOAD_EFER),
                      HOST_IA32_PAT=0x0007040600070406, HOST_IA32_EFER=EFER_LMA | EFER_LME)
    assert r.kind is VmxResult.VM_ENTRY


# =================================================================================================
# VM entry: guest-state checks (VM-entry failure, exit reason 0x80000021)
# =================================================================================================

_G = example_vmcs_fields()
_BAD_GUEST = {
    "CR0.PG=0": {"GUEST_CR0": _G["GUEST_CR0"] & ~CR0_PG},
    "CR0.NE=0": {"GUEST_CR0": _G["GUEST_CR0"] & ~CR0_NE},
    "CR4.VMXE=0": {"GUEST_CR4": CR4_PAE},
    "CR4 unsupported bit": {"GUEST_CR4": _G["GUEST_CR4"] | 1 << 22},
    "IA-32e guest without PAE": {"GUEST_CR4": CR4_VMXE},
    "CR3 too wide": {"GUEST_CR3": 1 << 45},
    "RFLAGS bit 1 clear": {"GUEST_RFLAGS": 0},
    "RFLAGS bit 3": {"GUEST_RFLAGS": RFLAGS_FIXED1 | 1 << 3},
    "RFLAGS bit 15": {"GUEST_RFLAGS": RFLAGS_FIXED1 | 1 << 15},
    "RFLAGS bit 22": {"GUEST_RFLAGS": RFLAGS_FIXED1 | 1 << 22},
    "RFLAGS bit 63": {"GUEST_RFLAGS": RFLAGS_FIXED1 | 1 << 63},
    "RFLAGS.VM in IA-32e guest": {"GUEST_RFLAGS": RFLAGS_FIXED1 | RFLAGS_VM},
    "RIP not canonical (64-bit guest)": {"GUEST_RIP": 0x0000_8000_0000_0000},
    "RIP bit 32 with CS.L=0": {"GUEST_RIP": 1 << 32,
                               "GUEST_CS_AR_BYTES": (_G["GUEST_CS_AR_BYTES"] & ~AR_L) | AR_DB},
    "activity shutdown": {"GUEST_ACTIVITY_STATE": 2},
    "activity wait-for-SIPI": {"GUEST_ACTIVITY_STATE": 3},
    "activity 4": {"GUEST_ACTIVITY_STATE": 4},
    "HLT with SS.DPL=3": {"GUEST_ACTIVITY_STATE": 1, "GUEST_SS_AR_BYTES": 0xC0F3,
                          "GUEST_SS_SELECTOR": 0x13},
    "HLT with STI blocking": {"GUEST_ACTIVITY_STATE": 1, "GUEST_INTERRUPTIBILITY_INFO": 1,
                              "GUEST_RFLAGS": RFLAGS_FIXED1 | RFLAGS_IF},
    "STI and MOV-SS blocking": {"GUEST_INTERRUPTIBILITY_INFO": 3,
                                "GUEST_RFLAGS": RFLAGS_FIXED1 | RFLAGS_IF},
    "STI blocking with IF=0": {"GUEST_INTERRUPTIBILITY_INFO": 1},
    "SMI blocking": {"GUEST_INTERRUPTIBILITY_INFO": 4},
    "interruptibility reserved": {"GUEST_INTERRUPTIBILITY_INFO": 1 << 5},
    "pending debug reserved": {"GUEST_PENDING_DBG_EXCEPTIONS": 1 << 4},
    "inject ext intr with IF=0": {"VM_ENTRY_INTR_INFO_FIELD": INTR_INFO_VALID | 0x20},
    "TR type 3 in IA-32e guest": {"GUEST_TR_AR_BYTES": 0x83},
    "TR unusable": {"GUEST_TR_AR_BYTES": 0x8B | AR_UNUSABLE},
    "TR TI": {"GUEST_TR_SELECTOR": 0x1C},
    "LDTR usable with type 3": {"GUEST_LDTR_AR_BYTES": 0x83},
    "CS type 3 without UG": {"GUEST_CS_AR_BYTES": (_G["GUEST_CS_AR_BYTES"] & ~0xF) | 3},
    "CS not present": {"GUEST_CS_AR_BYTES": _G["GUEST_CS_AR_BYTES"] & ~AR_P},
    "CS L and D/B": {"GUEST_CS_AR_BYTES": _G["GUEST_CS_AR_BYTES"] | AR_DB},
    "SS RPL differs from CS RPL": {"GUEST_SS_SELECTOR": 0x13},
    "SS type 1": {"GUEST_SS_AR_BYTES": 0xC091},
    "DS not accessed": {"GUEST_DS_AR_BYTES": 0xC092},
    "DS S=0": {"GUEST_DS_AR_BYTES": 0xC093 & ~AR_S},
    "G=0 with a large limit": {"GUEST_ES_AR_BYTES": 0xC093 & ~AR_G},
    "FS base not canonical": {"GUEST_FS_BASE": 0x0000_8000_0000_0000},
    "CS base bit 32": {"GUEST_CS_BASE": 1 << 32},
    "GDTR limit bit 16": {"GUEST_GDTR_LIMIT": 0x10000},
    "IDTR base not canonical": {"GUEST_IDTR_BASE": 0x0000_8000_0000_0000},
    "SYSENTER_EIP not canonical": {"GUEST_SYSENTER_EIP": 0x0000_8000_0000_0000},
    "load EFER: LMA=0": {**ctl("VM_ENTRY_CONTROLS", ENTRY_CTL_LOAD_EFER),
                         "GUEST_IA32_EFER": EFER_LME},
    "load EFER: reserved bit": {**ctl("VM_ENTRY_CONTROLS", ENTRY_CTL_LOAD_EFER),
                                "GUEST_IA32_EFER": EFER_LMA | EFER_LME | 1 << 9},
    "load PAT invalid": {**ctl("VM_ENTRY_CONTROLS", ENTRY_CTL_LOAD_PAT), "GUEST_IA32_PAT": 3},
    "load debug: DR7 bit 32": {**ctl("VM_ENTRY_CONTROLS", arch.ENTRY_CTL_LOAD_DEBUG_CONTROLS),
                               "GUEST_DR7": 1 << 32},
    "load debug: DEBUGCTL reserved": {
        **ctl("VM_ENTRY_CONTROLS", arch.ENTRY_CTL_LOAD_DEBUG_CONTROLS),
        "GUEST_IA32_DEBUGCTL": 1 << 2},
}


@pytest.mark.parametrize("name", list(_BAD_GUEST))
def test_bad_guest_state_is_entry_failure(name):
    m, cpu, r = entry(**_BAD_GUEST[name])
    assert_entry_failure(r, m)
    assert m.read_field("VM_INSTRUCTION_ERROR") == 0       # not a VMfail


def test_vmcs_link_pointer_check():
    """Not FFFFFFFF_FFFFFFFFh: must be aligned, in range, and name a region with the revision
    identifier and bit 31 = 0 (no VMCS shadowing); failures give qualification 4."""
    m, cpu, r = entry(VMCS_LINK_POINTER=LINKED)
    assert r.kind is VmxResult.VM_ENTRY
    for bad in (LINKED + 8, 1 << 40, 0x9000):
        m, cpu, r = entry(VMCS_LINK_POINTER=bad)     # 0x9000 has no revision id
        assert_entry_failure(r, m, arch.ENTRY_FAIL_VMCS_LINK_POINTER)
    m, cpu = ready(VMCS_LINK_POINTER=LINKED)
    m.write_region_header(LINKED, shadow=True)
    assert_entry_failure(m.vmlaunch(cpu), m, 4)


def test_unrestricted_guest_relaxes_cr0():
    """With unrestricted guest (and EPT), a real-mode guest: CR0.PE=0 and PG=0 pass; without it,
    the same state fails; CR0.PG=1 with PE=0 fails either way."""
    ug = ctl("SECONDARY_VM_EXEC_CONTROL", PROC2_UNRESTRICTED_GUEST)
    real = {
        **ctl("VM_ENTRY_CONTROLS", clear_bits=ENTRY_CTL_IA32E_MODE_GUEST),
        "GUEST_CR0": CR0_NE, "GUEST_CR4": CR4_VMXE, "GUEST_IA32_EFER": 0, "GUEST_RIP": 0x7C00,
        "GUEST_CS_SELECTOR": 0, "GUEST_CS_AR_BYTES": 0x9B, "GUEST_CS_LIMIT": 0xFFFF,
        "GUEST_TR_AR_BYTES": 0x8B,
    }
    for s in ("SS", "DS", "ES", "FS", "GS"):
        real[f"GUEST_{s}_SELECTOR"] = 0
        real[f"GUEST_{s}_AR_BYTES"] = 0x93
        real[f"GUEST_{s}_LIMIT"] = 0xFFFF
    m, cpu, r = entry(**ug, **real)
    assert r.kind is VmxResult.VM_ENTRY, r
    assert r.entry.unrestricted_guest and r.entry.guest["GUEST_CR0"] == CR0_NE
    assert not r.entry.guest["GUEST_IA32_EFER"] & EFER_LMA
    m, cpu, r = entry(**real)
    assert_entry_failure(r, m)
    m, cpu, r = entry(**ug, **{**real, "GUEST_CR0": CR0_NE | CR0_PG})
    assert_entry_failure(r, m)


def test_pae_guest_pdptes():
    """A PAE-paging guest: PDPTEs come from the VMCS with EPT, from memory at CR3 without; a
    reserved bit in a present PDPTE fails with qualification 2."""
    pae = {**ctl("VM_ENTRY_CONTROLS", clear_bits=ENTRY_CTL_IA32E_MODE_GUEST),
           "GUEST_IA32_EFER": 0, "GUEST_RIP": 0x1000,
           "GUEST_CS_AR_BYTES": 0xC09B, "GUEST_TR_AR_BYTES": 0x8B}
    m, cpu, r = entry(**pae, GUEST_PDPTR0=0x5001, GUEST_PDPTR2=0x6001)
    assert r.kind is VmxResult.VM_ENTRY, r
    assert r.entry.guest["GUEST_PDPTR2"] == 0x6001
    m, cpu, r = entry(**pae, GUEST_PDPTR1=0x5001 | 1 << 5)
    assert_entry_failure(r, m, arch.ENTRY_FAIL_PDPTE)
    m, cpu = ready(**pae, **ctl("SECONDARY_VM_EXEC_CONTROL", clear_bits=PROC2_ENABLE_EPT),
                   GUEST_CR3=0x9000)
    m.memory.write(0x9008, 0x7001 | 1 << 1)        # PDPTE1 with reserved bit 1
    assert_entry_failure(m.vmlaunch(cpu), m, 2)
    m.memory.write(0x9008, 0x7001)
    r = m.vmlaunch(cpu)
    assert r.kind is VmxResult.VM_ENTRY and r.entry.guest["GUEST_PDPTR1"] == 0x7001


def test_entry_failure_loads_host_state_and_keeps_launch_state():
    m, cpu, r = entry(GUEST_RFLAGS=0)
    assert_entry_failure(r, m)
    assert r.host.cr3 == _G["HOST_CR3"] and r.host.rsp == _G["HOST_RSP"] and r.host.cs_l
    assert read(m, cpu, "VM_EXIT_REASON") == 0x80000021
    # Fix the guest and launch: VMLAUNCH is still allowed (launch state clear).
    m.vmwrite(cpu, E.GUEST_RFLAGS, RFLAGS_FIXED1)
    assert m.vmlaunch(cpu).kind is VmxResult.VM_ENTRY


def test_guest_checks_come_after_host_checks():
    m, cpu, r = entry(GUEST_RFLAGS=0, HOST_TR_SELECTOR=0)
    assert r.error is EPT_ERR.ENTRY_INVALID_HOST_STATE


# =================================================================================================
# VM entry success and VM exit
# =================================================================================================


def test_vm_entry_success_effects():
    m, cpu, r = entry(**ctl("PIN_BASED_VM_EXEC_CONTROL", PIN_PREEMPTION_TIMER),
                      VMX_PREEMPTION_TIMER_VALUE=100, VIRTUAL_PROCESSOR_ID=7,
                      VM_ENTRY_INTR_INFO_FIELD=INTR_INFO_VALID | 3 << 8 | 14
                      | INTR_INFO_DELIVER_ERROR_CODE, VM_ENTRY_EXCEPTION_ERROR_CODE=2)
    assert r.kind is VmxResult.VM_ENTRY and r.flags is None
    e = r.entry
    assert m.mode is VmxMode.NON_ROOT and m.current.launched
    assert e.ept_enabled and e.eptp == GOOD_EPTP and e.vpid == 7 and e.invalidation is None
    assert e.preemption_timer == 100
    assert e.event.vector == 14 and e.event.type is InterruptionType.HARDWARE_EXCEPTION
    assert e.event.error_code == 2
    assert e.guest["GUEST_RIP"] == _G["GUEST_RIP"]
    assert e.guest["GUEST_IA32_EFER"] & (EFER_LMA | EFER_LME) == EFER_LMA | EFER_LME
    assert "GUEST_IA32_PAT" not in e.guest and "GUEST_DR7" not in e.guest
    ctx = e.translation_context()
    assert isinstance(ctx, Context) and ctx.eptp == GOOD_EPTP and ctx.vpid == 7
    assert ctx.cr3 == _G["GUEST_CR3"] and ctx.ept_enable
    m.check_invariants()


def test_vm_exit_saves_guest_writes_info_loads_host():
    m, cpu = in_guest(**ctl("VM_EXIT_CONTROLS", EXIT_CTL_SAVE_EFER),
                      VM_ENTRY_INTR_INFO_FIELD=INTR_INFO_VALID | 0x20,
                      GUEST_RFLAGS=RFLAGS_FIXED1 | RFLAGS_IF)
    guest = {"GUEST_RIP": 0x40_1234, "GUEST_RSP": 0x9999, "GUEST_CR3": 0x31_0000,
             "GUEST_IA32_EFER": EFER_LME, "GUEST_IA32_PAT": 0x1234}
    r = m.vm_exit(ExitReason.EPT_VIOLATION, 0x182, gla=0x40_2000, gpa=0x80_2000, instr_len=0,
                  guest_state=guest)
    assert r.kind is VmxResult.VM_EXIT and r.exit_reason == 48 and r.qualification == 0x182
    assert m.mode is VmxMode.ROOT and r.host.rip == _G["HOST_RIP"] and r.host.rflags == 2
    assert r.host.dr7 == 0x400 and r.host.gdtr_limit == 0xFFFF and r.host.pat is None
    assert r.invalidation is None                     # VPID on: no flush
    assert read(m, cpu, "VM_EXIT_REASON") == 48
    assert read(m, cpu, "EXIT_QUALIFICATION") == 0x182
    assert read(m, cpu, "GUEST_LINEAR_ADDRESS") == 0x40_2000
    assert read(m, cpu, "GUEST_PHYSICAL_ADDRESS") == 0x80_2000
    assert read(m, cpu, "GUEST_RIP") == 0x40_1234 and read(m, cpu, "GUEST_CR3") == 0x31_0000
    assert read(m, cpu, "GUEST_IA32_EFER") == EFER_LME           # save EFER = 1
    assert read(m, cpu, "GUEST_IA32_PAT") == _G["GUEST_IA32_PAT"]  # save PAT = 0: unchanged
    assert not read(m, cpu, "VM_ENTRY_INTR_INFO_FIELD") & INTR_INFO_VALID
    # IA32_VMX_MISC[5]: EFER.LMA (0 here) lands in the IA-32e-mode-guest entry control.
    assert not read(m, cpu, "VM_ENTRY_CONTROLS") & ENTRY_CTL_IA32E_MODE_GUEST
    assert read(m, cpu, "VM_INSTRUCTION_ERROR") == 0


def test_vm_exit_preemption_timer_save_and_vpid_flush():
    m, cpu = in_guest(**ctl("PIN_BASED_VM_EXEC_CONTROL", PIN_PREEMPTION_TIMER),
                      **ctl("VM_EXIT_CONTROLS", EXIT_CTL_SAVE_PREEMPTION_TIMER),
                      VMX_PREEMPTION_TIMER_VALUE=100, VIRTUAL_PROCESSOR_ID=0,
                      **ctl("SECONDARY_VM_EXEC_CONTROL", clear_bits=PROC2_ENABLE_VPID))
    assert m.advance_tsc(0) is None
    assert m.advance_tsc(99) is None
    d = m.advance_tsc(1)
    assert d.reason is ExitReason.PREEMPTION_TIMER
    r = m.vm_exit_for(d)
    assert r.exit_reason == 52 and read(m, cpu, "VMX_PREEMPTION_TIMER_VALUE") == 0
    assert r.invalidation == InvalidationRequest(Invalidation.VPID, vpid=0)
    # A timer value of 0 at VM entry exits before the first instruction.
    assert m.vmresume(cpu).kind is VmxResult.VM_ENTRY
    assert m.advance_tsc(0).reason is ExitReason.PREEMPTION_TIMER


def test_vm_exit_outside_non_root_is_an_error():
    m, cpu = root(VMCS_A)
    with pytest.raises(ValueError):
        m.vm_exit(ExitReason.CPUID)


# =================================================================================================
# Exit decisions
# =================================================================================================


def test_exception_bitmap():
    m, cpu = in_guest(EXCEPTION_BITMAP=1 << 6 | 1 << 3)
    d = m.exception_exit(6)
    assert d.reason is ExitReason.EXCEPTION_NMI and d.intr_info == INTR_INFO_VALID | 3 << 8 | 6
    assert m.exception_exit(13, error_code=0x10) is None
    d = m.exception_exit(3, type_=InterruptionType.SOFTWARE_EXCEPTION)
    assert d.intr_info == INTR_INFO_VALID | 6 << 8 | 3
    assert m.exception_exit(6, type_=InterruptionType.SOFTWARE_INTERRUPT) is None
    m.vm_exit(ExitReason.HLT)
    m.vmwrite(cpu, E.EXCEPTION_BITMAP, 1 << 13)
    m.vmresume(cpu)
    d = m.exception_exit(13, error_code=0x10)
    assert d.intr_info == INTR_INFO_VALID | 3 << 8 | 13 | INTR_INFO_DELIVER_ERROR_CODE
    assert d.intr_error == 0x10
    r = m.vm_exit_for(d)
    assert read(m, cpu, "VM_EXIT_INTR_INFO") == d.intr_info
    assert read(m, cpu, "VM_EXIT_INTR_ERROR_CODE") == 0x10
    assert r.exit_reason == 0


@pytest.mark.parametrize("bit14,mask_,match,pfec,exits", [
    (1, 0, 0, 0x2, True),          # mask 0 / match 0: every #PF matches, bit 14 decides
    (0, 0, 0, 0x2, False),
    (1, 0x4, 0x4, 0x6, True),      # matches: bit 14 = 1 exits
    (1, 0x4, 0x4, 0x2, False),     # does not match: complement of bit 14
    (0, 0x4, 0x4, 0x6, False),
    (0, 0x4, 0x4, 0x2, True),
    (0, 0, 1, 0x0, True),          # match value that no PFEC gives: never matches
])
def test_page_fault_mask_match(bit14, mask_, match, pfec, exits):
    m, cpu = in_guest(EXCEPTION_BITMAP=bit14 << 14, PAGE_FAULT_ERROR_CODE_MASK=mask_,
                      PAGE_FAULT_ERROR_CODE_MATCH=match)
    d = m.exception_exit(14, error_code=pfec, qualification=0xDEAD000)
    assert (d is not None) == exits
    if exits:
        assert d.qualification == 0xDEAD000 and d.intr_error == pfec


def test_nmi_external_interrupt_windows():
    m, cpu = in_guest()
    assert m.exception_exit(2, type_=InterruptionType.NMI) is None
    assert m.external_interrupt_exit(0x30) is None
    assert m.interrupt_window_exit(RFLAGS_IF, 0) is None
    m, cpu = in_guest(**ctl("PIN_BASED_VM_EXEC_CONTROL", PIN_NMI_EXITING | PIN_VIRTUAL_NMIS
                            | arch.PIN_EXTERNAL_INTERRUPT_EXITING),
                      **ctl("CPU_BASED_VM_EXEC_CONTROL", PROC_NMI_WINDOW_EXITING
                            | arch.PROC_INTERRUPT_WINDOW_EXITING),
                      **ctl("VM_EXIT_CONTROLS", arch.EXIT_CTL_ACK_INTERRUPT_ON_EXIT))
    d = m.exception_exit(2, type_=InterruptionType.NMI)
    assert d.intr_info == INTR_INFO_VALID | 2 << 8 | 2
    d = m.external_interrupt_exit(0x30)
    assert d.reason is ExitReason.EXTERNAL_INTERRUPT and d.intr_info == INTR_INFO_VALID | 0x30
    assert m.interrupt_window_exit(RFLAGS_IF, 0).reason is ExitReason.INTERRUPT_WINDOW
    assert m.interrupt_window_exit(0, 0) is None
    assert m.interrupt_window_exit(RFLAGS_IF, arch.INTERRUPTIBILITY_STI) is None
    assert m.nmi_window_exit(0).reason is ExitReason.NMI_WINDOW
    assert m.nmi_window_exit(arch.INTERRUPTIBILITY_NMI) is None


def test_triple_fault_and_unconditional_exits():
    m, cpu = in_guest()
    assert m.triple_fault_exit().reason is ExitReason.TRIPLE_FAULT
    for reason in (ExitReason.CPUID, ExitReason.GETSEC, ExitReason.INVD, ExitReason.XSETBV):
        assert m.instruction_exit(reason).reason is reason
    for reason in (ExitReason.HLT, ExitReason.INVLPG, ExitReason.RDTSC, ExitReason.RDPMC,
                   ExitReason.MWAIT, ExitReason.MONITOR, ExitReason.PAUSE):
        assert m.instruction_exit(reason) is None
    with pytest.raises(ValueError):
        m.instruction_exit(ExitReason.CR_ACCESS)


def test_hlt_invlpg_rdtsc_by_control():
    m, cpu = in_guest(**ctl("CPU_BASED_VM_EXEC_CONTROL", PROC_HLT_EXITING | PROC_INVLPG_EXITING
                            | PROC_RDTSC_EXITING))
    assert m.instruction_exit(ExitReason.HLT).reason is ExitReason.HLT
    d = m.instruction_exit(ExitReason.INVLPG, qualification=0xFFFF_8000_1234_5000)
    assert d.reason is ExitReason.INVLPG and d.qualification == 0xFFFF_8000_1234_5000
    assert m.instruction_exit(ExitReason.RDTSC).reason is ExitReason.RDTSC


def _cr_qual(cr, access, gpr=0, lmsw=0, mem=0):
    return cr | access << 4 | mem << 6 | gpr << 8 | lmsw << 16


def test_cr0_cr4_writes_against_masks_and_shadows():
    m, cpu = in_guest(CR0_GUEST_HOST_MASK=CR0_PG | CR0_TS, CR0_READ_SHADOW=CR0_PG,
                      CR4_GUEST_HOST_MASK=CR4_VMXE, CR4_READ_SHADOW=0)
    to = CrAccessType.MOV_TO_CR
    assert m.cr_access_exit(to, 0, value=CR0_PG | CR0_PE | CR0_NE) is None   # masked bits agree
    d = m.cr_access_exit(to, 0, value=CR0_PE, gpr=3)                          # PG differs
    assert d.reason is ExitReason.CR_ACCESS and d.qualification == _cr_qual(0, 0, 3)
    assert m.cr_access_exit(to, 4, value=CR4_PAE) is None
    d = m.cr_access_exit(to, 4, value=CR4_PAE | CR4_VMXE, gpr=9)
    assert d.qualification == _cr_qual(4, 0, 9)
    q = arch.CrAccessQualLayout
    assert (d.qualification >> q["gpr"].offset) & 0xF == 9
    assert m.cr_access_exit(CrAccessType.MOV_FROM_CR, 0) is None
    assert m.cr_access_exit(CrAccessType.MOV_FROM_CR, 4) is None
    # What the guest sees and what a non-exiting write does.
    assert m.cr_read_value(4, CR4_PAE | CR4_VMXE) == CR4_PAE
    assert m.cr_write_value(0, VMX_CR0_FIXED0, CR0_PG | CR0_PE | CR0_NE | CR0_TS) == \
        VMX_CR0_FIXED0                              # TS is host-owned: unchanged


def test_clts_and_lmsw():
    m, cpu = in_guest(CR0_GUEST_HOST_MASK=CR0_TS, CR0_READ_SHADOW=CR0_TS)
    d = m.cr_access_exit(CrAccessType.CLTS, 0)
    assert d.qualification == _cr_qual(0, 2)
    m.vm_exit_for(d)
    m.vmwrite(cpu, E.CR0_READ_SHADOW, 0)
    m.vmresume(cpu)
    assert m.cr_access_exit(CrAccessType.CLTS, 0) is None
    m.vm_exit(ExitReason.HLT)
    m.vmwrite(cpu, E.CR0_GUEST_HOST_MASK, CR0_PE | CR0_TS)
    m.vmresume(cpu)
    # LMSW: setting PE while the shadow has PE=0 exits; clearing it cannot (LMSW can't clear PE).
    d = m.cr_access_exit(CrAccessType.LMSW, 0, value=0x1, lmsw_memory=True)
    assert d.qualification == _cr_qual(0, 3, lmsw=1, mem=1)
    assert m.cr_access_exit(CrAccessType.LMSW, 0, value=0x0) is None
    assert m.cr_access_exit(CrAccessType.LMSW, 0, value=CR0_TS).qualification == \
        _cr_qual(0, 3, lmsw=CR0_TS)                 # TS differs from the shadow
    assert m.cr_access_exit(CrAccessType.LMSW, 0, value=0x2) is None   # MP not masked


def test_cr3_targets_and_cr3_cr8_exiting():
    cr3x = ctl("CPU_BASED_VM_EXEC_CONTROL", PROC_CR3_LOAD_EXITING | PROC_CR3_STORE_EXITING
               | PROC_CR8_LOAD_EXITING | PROC_CR8_STORE_EXITING)
    m, cpu = in_guest(**cr3x, CR3_TARGET_COUNT=2, CR3_TARGET_VALUE0=0x1000,
                      CR3_TARGET_VALUE1=0x2000, CR3_TARGET_VALUE2=0x3000)
    to, frm = CrAccessType.MOV_TO_CR, CrAccessType.MOV_FROM_CR
    assert m.cr_access_exit(to, 3, value=0x1000) is None
    assert m.cr_access_exit(to, 3, value=0x2000) is None
    assert m.cr_access_exit(to, 3, value=0x3000, gpr=1).qualification == _cr_qual(3, 0, 1)
    assert m.cr_access_exit(frm, 3, gpr=2).qualification == _cr_qual(3, 1, 2)
    assert m.cr_access_exit(to, 8, gpr=4).qualification == _cr_qual(8, 0, 4)
    assert m.cr_access_exit(frm, 8, gpr=5).qualification == _cr_qual(8, 1, 5)
    m, cpu = in_guest(**cr3x, CR3_TARGET_COUNT=0, CR3_TARGET_VALUE0=0x1000)
    assert m.cr_access_exit(to, 3, value=0x1000) is not None   # count 0: every load exits
    m, cpu = in_guest()
    for access in (to, frm):
        for cr in (3, 8):
            assert m.cr_access_exit(access, cr, value=0x1000) is None


def test_mov_dr_exiting():
    m, cpu = in_guest()
    assert m.dr_access_exit(7, from_dr=False) is None
    m, cpu = in_guest(**ctl("CPU_BASED_VM_EXEC_CONTROL", PROC_MOV_DR_EXITING))
    d = m.dr_access_exit(6, from_dr=True, gpr=2)
    assert d.reason is ExitReason.DR_ACCESS and d.qualification == 6 | 1 << 4 | 2 << 8


def test_io_unconditional_and_bitmaps():
    m, cpu = in_guest()
    assert m.io_exit(0x80, 1, is_in=False) is None
    m, cpu = in_guest(**ctl("CPU_BASED_VM_EXEC_CONTROL", PROC_UNCONDITIONAL_IO_EXITING))
    d = m.io_exit(0x3F8, 1, is_in=True)
    assert d.reason is ExitReason.IO_INSTRUCTION and d.qualification == 0 | 1 << 3 | 0x3F8 << 16
    d = m.io_exit(0x60, 4, is_in=False, string=True, rep=True, immediate=True)
    assert d.qualification == 3 | 1 << 4 | 1 << 5 | 1 << 6 | 0x60 << 16
    bitmaps = {**ctl("CPU_BASED_VM_EXEC_CONTROL", PROC_USE_IO_BITMAPS
                     | PROC_UNCONDITIONAL_IO_EXITING), "IO_BITMAP_A": IO_A, "IO_BITMAP_B": IO_B}
    m, cpu = in_guest(**bitmaps)
    m.memory.write(IO_A + (0x3F8 >> 6) * 8, 1 << (0x3F8 & 63))
    m.memory.write(IO_B + ((0x8001 & 0x7FFF) >> 6) * 8, 1 << 1)
    m.memory.write(IO_A + (0x7FFF >> 6) * 8, 0)
    assert m.io_exit(0x3F8, 1, is_in=True) is not None
    assert m.io_exit(0x3F9, 1, is_in=True) is None       # bitmaps override unconditional
    assert m.io_exit(0x3F6, 2, is_in=True) is None
    assert m.io_exit(0x3F7, 2, is_in=True) is not None   # the second byte's bit is set
    assert m.io_exit(0x8001, 1, is_in=False) is not None  # bitmap B
    assert m.io_exit(0x7FFF, 4, is_in=False) is not None  # crosses into B at 0x8001
    assert m.io_exit(0x8002, 2, is_in=False) is None
    assert m.io_exit(0xFFFF, 2, is_in=False) is not None  # wraps past 0xFFFF


def test_msr_bitmaps():
    m, cpu = in_guest()
    assert m.msr_exit(0x10, write=False).reason is ExitReason.RDMSR      # no bitmaps: exit
    assert m.msr_exit(0x10, write=True).reason is ExitReason.WRMSR
    m, cpu = in_guest(**ctl("CPU_BASED_VM_EXEC_CONTROL", PROC_USE_MSR_BITMAPS),
                      MSR_BITMAP=MSR_BITMAP)
    assert m.msr_exit(0x10, write=False) is None
    m.memory.write(MSR_BITMAP + 0 + (0x10 >> 6) * 8, 1 << 0x10)           # read low
    m.memory.write(MSR_BITMAP + 1024 + (0x80 >> 6) * 8, 1 << 0)           # read high C0000080
    m.memory.write(MSR_BITMAP + 2048 + (0x1FFF >> 6) * 8, 1 << 63)        # write low 1FFF
    m.memory.write(MSR_BITMAP + 3072 + (0x102 >> 6) * 8, 1 << 2)          # write high C0000102
    assert m.msr_exit(0x10, write=False).reason is ExitReason.RDMSR
    assert m.msr_exit(0x10, write=True) is None
    assert m.msr_exit(0xC0000080, write=False) is not None
    assert m.msr_exit(0xC0000080, write=True) is None
    assert m.msr_exit(0x1FFF, write=True).reason is ExitReason.WRMSR
    assert m.msr_exit(0xC0000102, write=True) is not None
    assert m.msr_exit(0xC0000102, write=False) is None
    assert m.msr_exit(0x2000, write=False) is not None                    # outside both ranges
    assert m.msr_exit(0xC0002000, write=True) is not None


def test_mtf():
    m, cpu = in_guest()
    assert m.mtf_exit() is None
    m, cpu = in_guest(**ctl("CPU_BASED_VM_EXEC_CONTROL", PROC_MONITOR_TRAP_FLAG))
    assert m.mtf_exit().reason is ExitReason.MONITOR_TRAP_FLAG
    m, cpu, r = entry(VM_ENTRY_INTR_INFO_FIELD=INTR_INFO_VALID | 7 << 8)   # pending MTF
    assert r.entry.pending_mtf and r.entry.event is None


def test_ept_violation_and_misconfig_from_the_translation_model():
    """An EPT outcome of the translation reference model maps to exits 48/49."""
    m, cpu, r = entry()
    mem = Memory()
    ctx = r.entry.translation_context()
    t = translate(mem, ctx, 0x40_0000, Access.READ)       # empty EPT: violation on the PML4E
    assert t.outcome is Outcome.EPT_VIOLATION
    d = m.ept_exit(t.outcome, t.qualification, t.gpa, t.gla)
    assert d.reason is ExitReason.EPT_VIOLATION and d.gpa == ctx.cr3 and d.qualification == 0x81
    m.vm_exit_for(d)
    assert read(m, cpu, "GUEST_PHYSICAL_ADDRESS") == ctx.cr3
    mem.write(GOOD_EPTP & ~0xFFF, 0x2)                    # write-only PML4E: misconfiguration
    t = translate(mem, ctx, 0x40_0000, Access.READ)
    assert t.outcome is Outcome.EPT_MISCONFIG
    d = m.ept_exit(t.outcome, 0, t.gpa)
    assert d.reason is ExitReason.EPT_MISCONFIG and d.qualification == 0
    assert m.ept_exit(Outcome.OK) is None


# =================================================================================================
# VMCALL
# =================================================================================================


def test_vmcall_rows():
    m, cpu = fresh()
    assert m.vmcall(cpu).kind is VmxResult.UD                          # outside VMX
    for change in ({"cpl": 3}, {"rflags": RFLAGS_FIXED1 | RFLAGS_VM}, {"cs_l": False}):
        m, cpu = in_guest()
        for k, v in change.items():
            setattr(cpu, k, v)
        assert_exit(m.vmcall(cpu), ExitReason.VMCALL, 0)               # any CPL, any mode
    m, cpu = root()
    cpu.cs_l = False
    assert m.vmcall(cpu).kind is VmxResult.UD
    cpu.cs_l = True
    cpu.rflags |= RFLAGS_VM
    assert m.vmcall(cpu).kind is VmxResult.UD
    cpu.rflags = RFLAGS_FIXED1
    cpu.cpl = 2
    assert m.vmcall(cpu).kind is VmxResult.GP
    cpu.cpl = 0
    assert_fail_invalid(m.vmcall(cpu))                                 # no STM: VMfail(1)
    m, cpu = root(VMCS_A)
    assert_fail_valid(m.vmcall(cpu), EPT_ERR.VMCALL_IN_ROOT, m)


# =================================================================================================
# VMFUNC
# =================================================================================================


def _vmfunc_guest(entries: dict[int, int], **extra):
    m, cpu = ready(**ctl("SECONDARY_VM_EXEC_CONTROL", PROC2_ENABLE_VM_FUNCTIONS),
                   VM_FUNCTION_CONTROL=1, EPTP_LIST_ADDRESS=EPTP_LIST, **extra)
    for i, v in entries.items():
        m.memory.write(EPTP_LIST + 8 * i, v)
    assert m.vmlaunch(cpu).kind is VmxResult.VM_ENTRY
    return m, cpu


def test_vmfunc_ud_rows():
    m, cpu = fresh()
    assert m.vmfunc(cpu, 0, 0).kind is VmxResult.UD
    m, cpu = root(VMCS_A)
    assert m.vmfunc(cpu, 0, 0).kind is VmxResult.UD                     # root operation
    m, cpu = in_guest()
    assert m.vmfunc(cpu, 0, 0).kind is VmxResult.UD                     # VM functions off
    m, cpu = _vmfunc_guest({})
    assert m.vmfunc(cpu, 64, 0).kind is VmxResult.UD
    assert m.vmfunc(cpu, 0xFFFF_FFFF, 0).kind is VmxResult.UD


def test_vmfunc_exits_59():
    alt = 0x20_0000 | 0x5E                          # WB, 4-level, A/D on
    m, cpu = _vmfunc_guest({0: alt, 3: 0x30_0000 | 3 << 3 | 5, 511: alt})
    assert_exit(m.vmfunc(cpu, 1, 0), ExitReason.VMFUNC, 0)              # function 1 disabled
    assert_exit(m.vmfunc(cpu, 63, 0), ExitReason.VMFUNC)
    assert_exit(m.vmfunc(cpu, 0, 512), ExitReason.VMFUNC)               # ECX >= 512
    assert_exit(m.vmfunc(cpu, 0, 0xFFFF_FFFF), ExitReason.VMFUNC)
    assert_exit(m.vmfunc(cpu, 0, 3), ExitReason.VMFUNC)                 # memtype 5
    assert_exit(m.vmfunc(cpu, 0, 4), ExitReason.VMFUNC)                 # entry 0: walk 0
    assert m.current["EPT_POINTER"] == GOOD_EPTP                       # unchanged by failures


def test_vmfunc_eptp_switching_succeeds():
    alt = 0x20_0000 | 0x5E
    m, cpu = _vmfunc_guest({0: alt, 511: 0x30_0000 | 0x18})
    cpu.cpl = 3                                     # any CPL
    r = m.vmfunc(cpu, 0, 0)
    assert r.kind is VmxResult.COMPLETE and r.eptp == alt and r.flags is None
    assert m.current["EPT_POINTER"] == alt and m.guest.eptp == alt
    assert m.guest.translation_context().eptp == alt
    r = m.vmfunc(cpu, 0, 511)
    assert r.eptp == 0x30_0018
    m.vm_exit(ExitReason.VMFUNC)
    assert read(m, CpuState(), "EPT_POINTER") == 0x30_0018


# =================================================================================================
# INVEPT / INVVPID (reference sections 2.3, 5.6)
# =================================================================================================


@pytest.mark.parametrize("t", range(-127, 128))
def test_invept_types_must(t):
    """K-t invept_test: types -127..127 other than 1 and 2 give 28."""
    m, cpu = root(VMCS_A)
    r = m.invept(cpu, t & U64, GOOD_EPTP)
    if t in (1, 2):
        assert r.kind is VmxResult.SUCCEED
    else:
        assert_fail_valid(r, EPT_ERR.INVALID_INVEPT_INVVPID_OPERAND, m)


@pytest.mark.parametrize("t", range(-127, 128))
def test_invvpid_types_must(t):
    m, cpu = root(VMCS_A)
    r = m.invvpid(cpu, t & U64, 1 | 0x1000 << 64)
    if t in (0, 1, 2, 3):
        assert r.kind is VmxResult.SUCCEED
    else:
        assert_fail_valid(r, EPT_ERR.INVALID_INVEPT_INVVPID_OPERAND, m)


def test_invept_descriptor_and_invalidation():
    m, cpu = root(VMCS_A)
    r = m.invept(cpu, 1, GOOD_EPTP | 0xFFFF << 64)          # bits 127:64 are not checked
    assert r.kind is VmxResult.SUCCEED
    assert r.invalidation == InvalidationRequest(Invalidation.EPTP, eptp=GOOD_EPTP)
    for bad in (GOOD_EPTP | 1 << 7, 0x10_0000 | 3 << 3 | 5, GOOD_EPTP | 1 << 45):
        assert_fail_valid(m.invept(cpu, 1, bad), EPT_ERR.INVALID_INVEPT_INVVPID_OPERAND, m)
    r = m.invept(cpu, 2, 0xFFFF_FFFF_FFFF_FFFF)            # global: descriptor not used
    assert r.invalidation == InvalidationRequest(Invalidation.ALL)
    m, cpu = root()
    assert_fail_invalid(m.invept(cpu, 3, GOOD_EPTP))       # no current VMCS: CF=1
    assert_fail_invalid(m.invept(cpu, 1, 0))


@pytest.mark.parametrize("t", [0, 1, 2, 3])
def test_invvpid_descriptor_rules_must(t):
    """VPID > 0xFFFF gives 28; VPID 0 is valid only for type 2; the linear address is checked
    only for type 0."""
    m, cpu = root(VMCS_A)
    noncanon = 0x0000_8000_0000_0000
    for high in (1 << 16, 1 << 31, 1 << 63):
        assert m.invvpid(cpu, t, 1 | high).error is EPT_ERR.INVALID_INVEPT_INVVPID_OPERAND
    r = m.invvpid(cpu, t, 0)
    if t == 2:
        assert r.kind is VmxResult.SUCCEED
    else:
        assert r.error is EPT_ERR.INVALID_INVEPT_INVVPID_OPERAND
    r = m.invvpid(cpu, t, 5 | noncanon << 64)
    if t == 0:
        assert r.error is EPT_ERR.INVALID_INVEPT_INVVPID_OPERAND
    else:
        assert r.kind is VmxResult.SUCCEED
    r = m.invvpid(cpu, t, 5 | 0xFFFF_8000_0000_1000 << 64)
    assert r.kind is VmxResult.SUCCEED
    expect = {
        0: InvalidationRequest(Invalidation.VPID_ADDR, vpid=5, gla=0xFFFF_8000_0000_1000),
        1: InvalidationRequest(Invalidation.VPID, vpid=5),
        2: InvalidationRequest(Invalidation.ALL),
        3: InvalidationRequest(Invalidation.VPID, vpid=5),
    }[t]
    assert r.invalidation == expect


def test_invept_invvpid_check_type_before_descriptor():
    """SDM order (reference section 8 item 4): the type is checked before the descriptor is
    read, so a bad type gives VMfail(28) even if the memory operand would fault."""
    m, cpu = root(VMCS_A)
    r = m.precheck(VmxOp.INVEPT, cpu, Operands(reg=0))
    assert r.kind is VmxResult.FAIL_VALID and r.error is EPT_ERR.INVALID_INVEPT_INVVPID_OPERAND
    assert m.precheck(VmxOp.INVEPT, cpu, Operands(reg=1)) is None
    r = m.precheck(VmxOp.INVVPID, cpu, Operands(reg=4))
    assert r.error is EPT_ERR.INVALID_INVEPT_INVVPID_OPERAND
    assert m.precheck(VmxOp.INVVPID, cpu, Operands(reg=0)) is None
    cpu.cs_l = False
    assert m.precheck(VmxOp.INVVPID, cpu, Operands(reg=0)).kind is VmxResult.UD
    cpu32 = CpuState(efer=0, cs_l=False)
    assert m.invept(cpu32, (1 << 32) | 2, 0).kind is VmxResult.SUCCEED   # 32-bit register


def test_invept_invvpid_in_non_root_and_cpl():
    m, cpu = in_guest()
    assert_exit(m.invept(cpu, 0, 0, qualification=8), ExitReason.INVEPT, 8)
    assert_exit(m.invvpid(cpu, 9, 0, qualification=16), ExitReason.INVVPID, 16)
    m, cpu = root(VMCS_A)
    cpu.cpl = 3
    assert m.invept(cpu, 0, 0).kind is VmxResult.GP       # CPL before the type
    assert m.invvpid(cpu, 9, 0).kind is VmxResult.GP


# =================================================================================================
# Reference section 2.4 matrix and every error number
# =================================================================================================


def _matrix_cases():
    def vmptrld_misaligned(m, cpu):
        return m.vmptrld(cpu, VMCS_B + 1)

    def vmptrld_wide(m, cpu):
        return m.vmptrld(cpu, 1 << 40)

    def vmptrld_vmxon(m, cpu):
        return m.vmptrld(cpu, VMXON)

    def vmptrld_revision(m, cpu):
        m.memory.write(VMCS_B, 7)
        return m.vmptrld(cpu, VMCS_B)

    def vmclear_misaligned(m, cpu):
        return m.vmclear(cpu, VMCS_B + 0x100)

    def vmclear_vmxon(m, cpu):
        return m.vmclear(cpu, VMXON)

    def vmread_bad(m, cpu):
        return m.vmread(cpu, 0x4403)

    def vmwrite_bad(m, cpu):
        return m.vmwrite(cpu, 0x7000, 1)

    def vmwrite_ro(m, cpu):
        return m.vmwrite(cpu, E.EXIT_QUALIFICATION, 1)

    def vmxon_root(m, cpu):
        return m.vmxon(cpu, VMXON)

    def invept_bad(m, cpu):
        return m.invept(cpu, 0, 0)

    def invvpid_bad(m, cpu):
        return m.invvpid(cpu, 1, 0)

    return [
        ("VMPTRLD misaligned", vmptrld_misaligned, 9), ("VMPTRLD wide", vmptrld_wide, 9),
        ("VMPTRLD VMXON", vmptrld_vmxon, 10), ("VMPTRLD revision", vmptrld_revision, 11),
        ("VMCLEAR misaligned", vmclear_misaligned, 2), ("VMCLEAR VMXON", vmclear_vmxon, 3),
        ("VMREAD bad", vmread_bad, 12), ("VMWRITE bad", vmwrite_bad, 12),
        ("VMWRITE read-only", vmwrite_ro, 13), ("VMXON in root", vmxon_root, 15),
        ("INVEPT type", invept_bad, 28), ("INVVPID VPID 0", invvpid_bad, 28),
    ]


@pytest.mark.parametrize("name,fn,err", _matrix_cases(), ids=[c[0] for c in _matrix_cases()])
def test_quick_matrix(name, fn, err):
    """Reference section 2.4: ZF=1 with error n with a current VMCS, CF=1 without."""
    m, cpu = root(VMCS_A)
    r = fn(m, cpu)
    assert_fail_valid(r, VmInstructionError(err), m)
    assert r.apply_flags(RFLAGS_FIXED1 | RFLAGS_CF | RFLAGS_PF | RFLAGS_AF | RFLAGS_SF
                         | RFLAGS_OF | RFLAGS_TF) == RFLAGS_FIXED1 | RFLAGS_ZF | RFLAGS_TF
    m, cpu = root()
    r = fn(m, cpu)
    assert_fail_invalid(r)
    assert r.apply_flags(RFLAGS_FIXED1 | RFLAGS_ZF) == RFLAGS_FIXED1 | RFLAGS_CF


def test_every_error_number_is_reachable():
    """1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15, 26, 28: each raised by some scenario."""
    seen = set()

    def note(r):
        assert r.kind is VmxResult.FAIL_VALID, r
        seen.add(r.error.value)

    m, cpu = root(VMCS_A)
    note(m.vmcall(cpu))
    note(m.vmclear(cpu, 1))
    note(m.vmclear(cpu, VMXON))
    note(m.vmptrld(cpu, 1))
    note(m.vmptrld(cpu, VMXON))
    m.memory.write(VMCS_C, 0)
    note(m.vmptrld(cpu, VMCS_C))
    note(m.vmread(cpu, 3))
    note(m.vmwrite(cpu, E.VM_EXIT_REASON, 0))
    note(m.vmxon(cpu, VMXON))
    note(m.invept(cpu, 3, 0))
    note(m.vmresume(cpu))
    note(entry(VIRTUAL_PROCESSOR_ID=0)[2])
    note(entry(HOST_CR4=0)[2])
    m, cpu = in_guest()
    m.vm_exit(ExitReason.HLT)
    note(m.vmlaunch(cpu))
    cpu.mov_ss_blocking = True
    note(m.vmresume(cpu))
    cpu.mov_ss_blocking = False
    m.vmxoff(cpu)
    m.vmxon(cpu, VMXON)
    m.vmptrld(cpu, VMCS_A)
    note(m.vmresume(cpu))
    assert seen == {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15, 26, 28}


def test_execute_port_matches_methods():
    m1, cpu = root(VMCS_A)
    m2, _ = root(VMCS_A)
    seq = [(VmxOp.VMWRITE, Operands(reg=E.GUEST_RIP, value=0x1234)),
           (VmxOp.VMREAD, Operands(reg=E.GUEST_RIP)),
           (VmxOp.VMPTRST, Operands()),
           (VmxOp.INVVPID, Operands(reg=1, mem=3)),
           (VmxOp.VMCLEAR, Operands(mem=VMCS_B)),
           (VmxOp.VMPTRLD, Operands(mem=VMCS_B)),
           (VmxOp.VMCALL, Operands())]
    direct = [m2.vmwrite(cpu, E.GUEST_RIP, 0x1234), m2.vmread(cpu, E.GUEST_RIP), m2.vmptrst(cpu),
              m2.invvpid(cpu, 1, 3), m2.vmclear(cpu, VMCS_B), m2.vmptrld(cpu, VMCS_B),
              m2.vmcall(cpu)]
    for (op, ops), d in zip(seq, direct, strict=True):
        r = m1.execute(op, cpu, ops)
        assert (r.kind, r.error, r.value, r.invalidation) == (d.kind, d.error, d.value,
                                                              d.invalidation)


# =================================================================================================
# Randomized
# =================================================================================================


@settings(max_examples=300, deadline=None)
@given(slot=st.integers(0, len(FIELDS) - 1), value=st.integers(0, U64),
       high=st.booleans(), long_mode=st.booleans(), old=st.integers(0, U64))
def test_vmread_after_vmwrite_truncates_by_width(slot, value, high, long_mode, old):
    f = FIELDS[slot]
    m, cpu64 = root(VMCS_A)
    cpu = cpu64 if long_mode else CpuState(efer=0, cs_l=False)
    opmask = U64 if long_mode else 0xFFFF_FFFF
    m.write_field(f.name, old)
    old &= f.mask
    enc = f.encoding + (1 if high and f.has_high else 0)
    hi = high and f.has_high
    r = m.vmwrite(cpu, enc, value)
    if f.read_only:
        assert r.error is EPT_ERR.VMWRITE_READ_ONLY_COMPONENT
        expect = 13 if f.name == "VM_INSTRUCTION_ERROR" else old
    else:
        assert r.kind is VmxResult.SUCCEED
        v = value & opmask
        expect = ((old & 0xFFFF_FFFF) | (v & 0xFFFF_FFFF) << 32) if hi else v & f.mask
    assert m.read_field(f.name) == expect
    r = m.vmread(cpu, enc)
    assert r.kind is VmxResult.SUCCEED
    assert r.value == ((expect >> 32) if hi else expect) & opmask
    full = m.vmread(cpu64, f.encoding).value
    assert full == expect and full <= f.mask


def test_random_operation_sequences_keep_invariants():
    """Random VMXON/VMXOFF/VMCLEAR/VMPTRLD/VMWRITE/VMLAUNCH/VM exit sequences over a few
    regions (some misaligned, some the VMXON region): the current-VMCS pointer is all ones or a
    4 KiB-aligned address below 2^40 that is not the VMXON pointer, every value written is read
    back from the VMCS it was written to (also across VMCLEAR and reload), and results are
    always of the kinds the reference allows in that mode."""
    rng = random.Random(1234)
    addrs = [VMXON, VMCS_A, VMCS_B, VMCS_C, VMCS_A + 0x10, 1 << 40, 0x6000]
    for trial in range(40):
        m, cpu = fresh()
        m.memory.write(0x6000, 0)            # a region with a bad revision id
        shadow: dict[int, int] = {}          # VMCS address -> last GUEST_RSP written
        for _ in range(120):
            op = rng.choice(["vmxon", "vmxoff", "vmclear", "vmptrld", "vmwrite", "vmread",
                             "launch", "exit", "vmptrst"])
            addr = rng.choice(addrs)
            mode = m.mode
            if op == "vmxon":
                r = m.vmxon(cpu, addr)
                if mode is VmxMode.OUTSIDE:
                    ok = addr in (VMXON, VMCS_A, VMCS_B, VMCS_C)
                    assert r.kind is (VmxResult.SUCCEED if ok else VmxResult.FAIL_INVALID)
            elif op == "vmxoff":
                m.vmxoff(cpu)
            elif op == "vmclear":
                r = m.vmclear(cpu, addr)
            elif op == "vmptrld":
                r = m.vmptrld(cpu, addr)
            elif op == "vmwrite":
                v = rng.getrandbits(64)
                r = m.vmwrite(cpu, E.GUEST_RSP, v)
                if r.kind is VmxResult.SUCCEED:
                    shadow[m.current_pointer] = v
            elif op == "vmread":
                r = m.vmread(cpu, E.GUEST_RSP)
                if r.kind is VmxResult.SUCCEED and m.current_pointer in shadow:
                    assert r.value == shadow[m.current_pointer], trial
            elif op == "launch" and m.current is not None and m.mode is VmxMode.ROOT:
                rsp = m.read_field("GUEST_RSP")
                configure(m, cpu, GUEST_RSP=rsp)
                r = m.vmlaunch(cpu) if not m.current.launched else m.vmresume(cpu)
                assert r.kind in (VmxResult.VM_ENTRY, VmxResult.FAIL_VALID)
            elif op == "exit" and m.mode is VmxMode.NON_ROOT:
                m.vm_exit(ExitReason.CPUID, guest_state={"GUEST_RSP": m.read_field("GUEST_RSP")})
            elif op == "vmptrst":
                r = m.vmptrst(cpu)
                if r.kind is VmxResult.SUCCEED:
                    assert r.value == m.current_pointer
            m.check_invariants()
            cur = m.current_pointer
            assert cur == U64 or (cur & 0xFFF == 0 and cur < 1 << 40 and cur != m.vmxon_pointer)


def test_vmcs_enum_equals_highest_index_that_reads():
    """K-c test_vmwrite_vmread: IA32_VMX_VMCS_ENUM[9:1] is the highest index at which some
    VMREAD succeeds (probing every width, type, index and access)."""
    m, cpu = root(VMCS_A)
    highest = -1
    for width in range(4):
        for type_ in range(4):
            for index in range(512):
                for high in (False, True):
                    enc = arch.encode_field(FieldWidth(width), FieldType(type_), index, high)
                    if m.vmread(cpu, enc).kind is VmxResult.SUCCEED:
                        highest = max(highest, index)
    assert highest == (VMX_MSRS[arch.IA32_VMX_VMCS_ENUM] >> 1) & 0x1FF == VMCS_ENUM_MAX_INDEX


def test_vmxon_precheck_and_memory_order():
    """VMXON reads its m64 only outside VMX operation after the #UD/#GP checks; in root
    operation the outcome (VMfail(15)) needs no memory access."""
    m, cpu = fresh()
    assert m.precheck(VmxOp.VMXON, cpu, Operands(mem=VMXON)) is None
    cpu.cpl = 3
    assert m.precheck(VmxOp.VMXON, cpu, Operands()).kind is VmxResult.GP
    m, cpu = root(VMCS_A)
    r = m.precheck(VmxOp.VMXON, cpu, Operands())
    assert r.kind is VmxResult.FAIL_VALID and r.error is EPT_ERR.VMXON_IN_ROOT
    assert m.read_field("VM_INSTRUCTION_ERROR") == 0
    for op in (VmxOp.VMXOFF, VmxOp.VMLAUNCH, VmxOp.VMCALL):
        assert m.precheck(op, cpu) is None            # no memory operand


def test_vmptrld_of_uninitialised_region_masks_fields():
    """A region never VMCLEARed (undefined in the SDM): the model loads it, each slot masked to
    its field's width, launch state from bit 0 of offset 8."""
    m, cpu = root()
    for off in range(8, VMCS_REGION_SIZE, 8):
        m.memory.write(VMCS_C + off, U64)
    assert m.vmptrld(cpu, VMCS_C).kind is VmxResult.SUCCEED
    assert read(m, cpu, "GUEST_CS_SELECTOR") == 0xFFFF
    assert read(m, cpu, "EXCEPTION_BITMAP") == 0xFFFF_FFFF
    assert read(m, cpu, "GUEST_RIP") == U64
    assert m.current.launched
