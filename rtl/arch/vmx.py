"""VMX architectural constants: the one source of truth for the VMX unit's RTL, model and tests.

Everything here is taken from the Intel SDM Vol. 3C (chapters 24-27 and 30, VMX instructions;
appendix A, capability MSRs) as restated in the VMX reference (docs/vmx.md, "Sources";
section numbers below are the reference's). Where Bochs and the SDM disagree, this follows the SDM.

What it holds:

* enums of the VMX unit's port (`VmxOp`, `VmxResult`, `VmxMode`) and of architectural numbers
  (`VmInstructionError`, `ExitReason`, `InterruptionType`, `ActivityState`, `CrAccessType`,
  `InveptType`, `InvvpidType`), all Amaranth enums with a shape so RTL signals decode by name;
* the VMCS field table (`FIELDS`, `VmcsEncoding`, `field_by_encoding`) of every field this design
  supports, and the layout of a VMCS region in memory (`vmcs_field_offset`, reference section 7);
* control-field bit positions (reference section 3.4) and the capability MSR values the design
  advertises (`VMX_MSRS`), derived from the sets of supported controls below;
* `data.StructLayout`s of architectural formats (exit reason, exit qualifications, instruction
  information, interruption information, segment access rights, EPTP, INVEPT/INVVPID descriptors).

Bit constants are plain integers so Python code can use them without Amaranth.
"""

from __future__ import annotations

import types
from dataclasses import dataclass

from amaranth.hdl import Shape
from amaranth.lib import data, enum

from .paging import (
    CR0_PE,
    CR0_PG,
    CR0_WP,
    CR4_PAE,
    CR4_PGE,
    CR4_SMEP,
    EFER_LMA,
    EFER_LME,
    EFER_NXE,
    MAXPHYADDR,
    mask,
)

# =================================================================================================
# Port of the VMX unit
# =================================================================================================


class VmxOp(enum.Enum, shape=4):
    """The operation on the VMX unit's instruction port."""
    VMXON = 0
    VMXOFF = 1
    VMCLEAR = 2
    VMPTRLD = 3
    VMPTRST = 4
    VMREAD = 5
    VMWRITE = 6
    VMLAUNCH = 7
    VMRESUME = 8
    VMCALL = 9
    VMFUNC = 10
    INVEPT = 11
    INVVPID = 12


class VmxResult(enum.Enum, shape=3):
    """Kind of answer to one operation.

    SUCCEED, FAIL_INVALID and FAIL_VALID set the arithmetic flags (`result_flags`); UD and GP are
    faults; VM_EXIT is a VM exit (reason and qualification alongside); VM_ENTRY means VMLAUNCH or
    VMRESUME entered the guest; COMPLETE means the instruction retired without touching RFLAGS
    (VMFUNC that switched the EPTP).
    """
    SUCCEED = 0
    FAIL_INVALID = 1
    FAIL_VALID = 2
    UD = 3
    GP = 4
    VM_EXIT = 5
    VM_ENTRY = 6
    COMPLETE = 7


class VmxMode(enum.Enum, shape=2):
    """Where the logical processor is."""
    OUTSIDE = 0     # not in VMX operation
    ROOT = 1        # VMX root operation
    NON_ROOT = 2    # VMX non-root operation (a guest runs)


# --- RFLAGS --------------------------------------------------------------------------------------
RFLAGS_CF = 1 << 0
RFLAGS_FIXED1 = 1 << 1      # reserved, always 1
RFLAGS_PF = 1 << 2
RFLAGS_AF = 1 << 4
RFLAGS_ZF = 1 << 6
RFLAGS_SF = 1 << 7
RFLAGS_TF = 1 << 8
RFLAGS_IF = 1 << 9
RFLAGS_DF = 1 << 10
RFLAGS_OF = 1 << 11
RFLAGS_IOPL = 3 << 12
RFLAGS_NT = 1 << 14
RFLAGS_RF = 1 << 16
RFLAGS_VM = 1 << 17
RFLAGS_AC = 1 << 18
RFLAGS_ID = 1 << 21
#: The six arithmetic flags every VMsucceed / VMfail writes (reference section 2.1).
RFLAGS_ARITH = RFLAGS_CF | RFLAGS_PF | RFLAGS_AF | RFLAGS_ZF | RFLAGS_SF | RFLAGS_OF
#: Bits that must be 0 in RFLAGS (guest-state check): 3, 5, 15 and 63:22.
RFLAGS_RESERVED = (1 << 3) | (1 << 5) | (1 << 15) | mask(63, 22)



def bit_position(flag: int) -> int:
    """Bit position of a one-bit constant (``bit_position(CR0_PE)`` = 0)."""
    assert flag and not flag & (flag - 1)
    return flag.bit_length() - 1

def result_flags(kind: VmxResult) -> int | None:
    """The arithmetic flags (RFLAGS bits among `RFLAGS_ARITH`) a result leaves, or None when the
    result does not write RFLAGS (faults, VM exits, VM entries, COMPLETE)."""
    return {
        VmxResult.SUCCEED: 0,
        VmxResult.FAIL_INVALID: RFLAGS_CF,
        VmxResult.FAIL_VALID: RFLAGS_ZF,
    }.get(VmxResult(kind))


# --- Control registers, EFER, MSRs the VMX unit looks at ------------------------------------------
CR0_MP = 1 << 1
CR0_EM = 1 << 2
CR0_TS = 1 << 3
CR0_ET = 1 << 4
CR0_NE = 1 << 5
CR0_AM = 1 << 18
CR0_NW = 1 << 29
CR0_CD = 1 << 30
#: CR0 bits a VM exit loads from the host CR0 field (the others keep their value, SDM 27.5.1).
CR0_HOST_LOADED = CR0_PE | CR0_MP | CR0_EM | CR0_TS | CR0_NE | CR0_WP | CR0_AM | CR0_PG

CR4_VME = 1 << 0
CR4_PVI = 1 << 1
CR4_TSD = 1 << 2
CR4_DE = 1 << 3
CR4_PSE = 1 << 4
CR4_MCE = 1 << 6
CR4_PCE = 1 << 8
CR4_OSFXSR = 1 << 9
CR4_OSXMMEXCPT = 1 << 10
CR4_VMXE = 1 << 13
CR4_PCIDE = 1 << 17

EFER_SCE = 1 << 0
#: EFER bits this design implements; every other bit is reserved (VM-entry host/guest checks).
EFER_SUPPORTED = EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE
EFER_RESERVED = mask(63, 0) & ~EFER_SUPPORTED

#: IA32_DEBUGCTL bits this design implements (LBR, BTF); the others are reserved.
DEBUGCTL_BTF = 1 << 1
DEBUGCTL_SUPPORTED = (1 << 0) | DEBUGCTL_BTF
#: DR7 after a VM exit, and the bits VM entry forces when it loads DR7 (SDM 26.3.2.1).
DR7_INIT = 0x400

#: IA32_PAT memory types that may appear in each of its 8 bytes (0 UC, 1 WC, 4 WT, 5 WP, 6 WB,
#: 7 UC-); 2 and 3 are reserved.
PAT_VALID_TYPES = (0, 1, 4, 5, 6, 7)


def pat_valid(pat: int) -> bool:
    """Every byte of an IA32_PAT value is a valid memory type (VM-entry PAT checks)."""
    return all(((pat >> (8 * i)) & 0xFF) in PAT_VALID_TYPES for i in range(8))


# MSR numbers (reference section 3.5).
IA32_FEATURE_CONTROL = 0x3A
IA32_VMX_BASIC = 0x480
IA32_VMX_PINBASED_CTLS = 0x481
IA32_VMX_PROCBASED_CTLS = 0x482
IA32_VMX_EXIT_CTLS = 0x483
IA32_VMX_ENTRY_CTLS = 0x484
IA32_VMX_MISC = 0x485
IA32_VMX_CR0_FIXED0 = 0x486
IA32_VMX_CR0_FIXED1 = 0x487
IA32_VMX_CR4_FIXED0 = 0x488
IA32_VMX_CR4_FIXED1 = 0x489
IA32_VMX_VMCS_ENUM = 0x48A
IA32_VMX_PROCBASED_CTLS2 = 0x48B
IA32_VMX_EPT_VPID_CAP = 0x48C
IA32_VMX_TRUE_PINBASED_CTLS = 0x48D
IA32_VMX_TRUE_PROCBASED_CTLS = 0x48E
IA32_VMX_TRUE_EXIT_CTLS = 0x48F
IA32_VMX_TRUE_ENTRY_CTLS = 0x490
IA32_VMX_VMFUNC = 0x491

FEATURE_CONTROL_LOCK = 1 << 0
FEATURE_CONTROL_VMX_IN_SMX = 1 << 1
FEATURE_CONTROL_VMX_OUTSIDE_SMX = 1 << 2

#: The current-VMCS pointer when there is no current VMCS (and what VMPTRST stores then).
INVALID_VMCS_POINTER = mask(63, 0)

# =================================================================================================
# VM-instruction errors and exit reasons
# =================================================================================================


class VmInstructionError(enum.Enum, shape=5):
    """VM-instruction error numbers (reference section 2.2, SDM table 30-1)."""
    VMCALL_IN_ROOT = 1
    VMCLEAR_INVALID_ADDRESS = 2
    VMCLEAR_VMXON_POINTER = 3
    VMLAUNCH_NONCLEAR_VMCS = 4
    VMRESUME_NONLAUNCHED_VMCS = 5
    VMRESUME_AFTER_VMXOFF = 6
    ENTRY_INVALID_CONTROL_FIELD = 7
    ENTRY_INVALID_HOST_STATE = 8
    VMPTRLD_INVALID_ADDRESS = 9
    VMPTRLD_VMXON_POINTER = 10
    VMPTRLD_INCORRECT_REVISION = 11
    UNSUPPORTED_VMCS_COMPONENT = 12
    VMWRITE_READ_ONLY_COMPONENT = 13
    VMXON_IN_ROOT = 15
    ENTRY_INVALID_EXECUTIVE_VMCS = 16
    ENTRY_NONLAUNCHED_EXECUTIVE_VMCS = 17
    ENTRY_EXECUTIVE_NOT_VMXON = 18
    VMCALL_NONCLEAR_VMCS = 19
    VMCALL_INVALID_EXIT_CONTROLS = 20
    VMCALL_INCORRECT_MSEG_REVISION = 22
    VMXOFF_DUAL_MONITOR = 23
    VMCALL_INVALID_SMM_MONITOR_FEATURES = 24
    ENTRY_INVALID_EXECUTIVE_CONTROLS = 25
    ENTRY_EVENTS_BLOCKED_BY_MOV_SS = 26
    INVALID_INVEPT_INVVPID_OPERAND = 28


class ExitReason(enum.Enum, shape=16):
    """Basic exit reasons: bits 15:0 of the exit-reason field (reference section 4)."""
    EXCEPTION_NMI = 0
    EXTERNAL_INTERRUPT = 1
    TRIPLE_FAULT = 2
    INIT = 3
    SIPI = 4
    IO_SMI = 5
    OTHER_SMI = 6
    INTERRUPT_WINDOW = 7
    NMI_WINDOW = 8
    TASK_SWITCH = 9
    CPUID = 10
    GETSEC = 11
    HLT = 12
    INVD = 13
    INVLPG = 14
    RDPMC = 15
    RDTSC = 16
    RSM = 17
    VMCALL = 18
    VMCLEAR = 19
    VMLAUNCH = 20
    VMPTRLD = 21
    VMPTRST = 22
    VMREAD = 23
    VMRESUME = 24
    VMWRITE = 25
    VMXOFF = 26
    VMXON = 27
    CR_ACCESS = 28
    DR_ACCESS = 29
    IO_INSTRUCTION = 30
    RDMSR = 31
    WRMSR = 32
    INVALID_GUEST_STATE = 33     # VM-entry failure (with EXIT_REASON_ENTRY_FAILURE)
    MSR_LOADING = 34             # VM-entry failure
    MWAIT = 36
    MONITOR_TRAP_FLAG = 37
    MONITOR = 39
    PAUSE = 40
    MACHINE_CHECK = 41           # VM-entry failure
    TPR_BELOW_THRESHOLD = 43
    APIC_ACCESS = 44
    VIRTUALIZED_EOI = 45
    GDTR_IDTR_ACCESS = 46
    LDTR_TR_ACCESS = 47
    EPT_VIOLATION = 48
    EPT_MISCONFIG = 49
    INVEPT = 50
    RDTSCP = 51
    PREEMPTION_TIMER = 52
    INVVPID = 53
    WBINVD = 54
    XSETBV = 55
    APIC_WRITE = 56
    RDRAND = 57
    INVPCID = 58
    VMFUNC = 59
    ENCLS = 60
    RDSEED = 61
    PML_FULL = 62
    XSAVES = 63
    XRSTORS = 64
    PCONFIG = 65
    SPP_EVENT = 66
    UMWAIT = 67
    TPAUSE = 68
    LOADIWKEY = 69
    ENCLV = 70
    ENQCMD_PASID_FAILURE = 72
    ENQCMDS_PASID_FAILURE = 73
    BUS_LOCK = 74
    NOTIFY = 75
    SEAMCALL = 76
    TDCALL = 77
    RDMSRLIST = 78
    WRMSRLIST = 79


#: Bit 31 of the exit-reason field: the VM exit is a VM-entry failure.
EXIT_REASON_ENTRY_FAILURE = 1 << 31
#: Exit reason of a VM entry that fails the guest-state checks: 0x80000021.
EXIT_REASON_INVALID_GUEST_STATE = EXIT_REASON_ENTRY_FAILURE | ExitReason.INVALID_GUEST_STATE.value

# Exit qualification of a VM-entry failure (reference section 2.3, VMLAUNCH step 9).
ENTRY_FAIL_DEFAULT = 0
ENTRY_FAIL_PDPTE = 2
ENTRY_FAIL_NMI_INJECTION = 3
ENTRY_FAIL_VMCS_LINK_POINTER = 4

#: The exit reason of each VMX instruction executed in VMX non-root operation (VMFUNC has none:
#: it exits with reason 59 only when it fails).
INSTRUCTION_EXIT_REASON = {
    VmxOp.VMXON: ExitReason.VMXON,
    VmxOp.VMXOFF: ExitReason.VMXOFF,
    VmxOp.VMCLEAR: ExitReason.VMCLEAR,
    VmxOp.VMPTRLD: ExitReason.VMPTRLD,
    VmxOp.VMPTRST: ExitReason.VMPTRST,
    VmxOp.VMREAD: ExitReason.VMREAD,
    VmxOp.VMWRITE: ExitReason.VMWRITE,
    VmxOp.VMLAUNCH: ExitReason.VMLAUNCH,
    VmxOp.VMRESUME: ExitReason.VMRESUME,
    VmxOp.VMCALL: ExitReason.VMCALL,
    VmxOp.INVEPT: ExitReason.INVEPT,
    VmxOp.INVVPID: ExitReason.INVVPID,
}


class InterruptionType(enum.Enum, shape=3):
    """Bits 10:8 of the interruption-information fields (entry, exit, IDT-vectoring)."""
    EXTERNAL_INTERRUPT = 0
    RESERVED = 1
    NMI = 2
    HARDWARE_EXCEPTION = 3
    SOFTWARE_INTERRUPT = 4
    PRIVILEGED_SOFTWARE_EXCEPTION = 5
    SOFTWARE_EXCEPTION = 6
    OTHER_EVENT = 7


class ActivityState(enum.Enum, shape=2):
    """Guest activity state field (0x4826)."""
    ACTIVE = 0
    HLT = 1
    SHUTDOWN = 2
    WAIT_FOR_SIPI = 3


class CrAccessType(enum.Enum, shape=2):
    """Bits 5:4 of the control-register-access exit qualification."""
    MOV_TO_CR = 0
    MOV_FROM_CR = 1
    CLTS = 2
    LMSW = 3


class InveptType(enum.Enum, shape=2):
    """INVEPT types (reference section 5.6)."""
    SINGLE_CONTEXT = 1
    GLOBAL = 2


class InvvpidType(enum.Enum, shape=2):
    """INVVPID types (reference section 5.6)."""
    INDIVIDUAL_ADDRESS = 0
    SINGLE_CONTEXT = 1
    ALL_CONTEXT = 2
    SINGLE_CONTEXT_RETAINING_GLOBALS = 3


# Exception vectors.
VECTOR_DE = 0
VECTOR_DB = 1
VECTOR_NMI = 2
VECTOR_BP = 3
VECTOR_OF = 4
VECTOR_UD = 6
VECTOR_DF = 8
VECTOR_TS = 10
VECTOR_NP = 11
VECTOR_SS = 12
VECTOR_GP = 13
VECTOR_PF = 14
VECTOR_AC = 17
VECTOR_MC = 18
#: Hardware exceptions that deliver an error code (VM-entry event-injection checks).
EXCEPTIONS_WITH_ERROR_CODE = frozenset({8, 10, 11, 12, 13, 14, 17})

# Guest interruptibility state (0x4824).
INTERRUPTIBILITY_STI = 1 << 0
INTERRUPTIBILITY_MOV_SS = 1 << 1
INTERRUPTIBILITY_SMI = 1 << 2
INTERRUPTIBILITY_NMI = 1 << 3
INTERRUPTIBILITY_ENCLAVE = 1 << 4

# Interruption-information fields.
INTR_INFO_VECTOR_MASK = 0xFF
INTR_INFO_TYPE_SHIFT = 8
INTR_INFO_DELIVER_ERROR_CODE = 1 << 11
INTR_INFO_NMI_UNBLOCKING = 1 << 12
INTR_INFO_VALID = 1 << 31
#: Bits 30:12 of the VM-entry interruption-information field, which must be 0.
ENTRY_INTR_INFO_RESERVED = mask(30, 12)

# Pending debug exceptions (0x6822): B3..B0, enabled breakpoint (12), BS (14), RTM (16).
PENDING_DBG_BS = 1 << 14
PENDING_DBG_RESERVED = mask(11, 4) | (1 << 13) | (1 << 15) | (1 << 16) | mask(63, 17)

# =================================================================================================
# VMCS fields
# =================================================================================================


class FieldWidth(enum.Enum, shape=2):
    """Bits 14:13 of a field encoding."""
    BITS16 = 0
    BITS64 = 1
    BITS32 = 2
    NATURAL = 3

    @property
    def bits(self) -> int:
        """Width in bits (natural width is 64 bits on Intel 64 processors)."""
        return (16, 64, 32, 64)[self.value]


class FieldType(enum.Enum, shape=2):
    """Bits 11:10 of a field encoding."""
    CONTROL = 0
    EXIT_INFO = 1       # VM-exit information: read-only, since IA32_VMX_MISC[29] = 0
    GUEST = 2
    HOST = 3


#: Bits of a field encoding that must be 0 (bit 12 and bits 31:15; reference section 3.1).
ENCODING_RESERVED = (1 << 12) | mask(31, 15)
ENCODING_HIGH = 1 << 0


def encode_field(width: FieldWidth, type_: FieldType, index: int, high: bool = False) -> int:
    """`width<<13 | type<<10 | index<<1 | access`."""
    return FieldWidth(width).value << 13 | FieldType(type_).value << 10 | index << 1 | int(high)


# Every field the design supports, by name and full encoding (reference section 3.2). The names are
# those of Linux's `enum vmcs_field`. Width and type follow from the encoding.
_FIELD_TABLE = (
    # 16-bit control
    ("VIRTUAL_PROCESSOR_ID", 0x0000),
    # 16-bit guest state
    ("GUEST_ES_SELECTOR", 0x0800), ("GUEST_CS_SELECTOR", 0x0802), ("GUEST_SS_SELECTOR", 0x0804),
    ("GUEST_DS_SELECTOR", 0x0806), ("GUEST_FS_SELECTOR", 0x0808), ("GUEST_GS_SELECTOR", 0x080A),
    ("GUEST_LDTR_SELECTOR", 0x080C), ("GUEST_TR_SELECTOR", 0x080E),
    # 16-bit host state
    ("HOST_ES_SELECTOR", 0x0C00), ("HOST_CS_SELECTOR", 0x0C02), ("HOST_SS_SELECTOR", 0x0C04),
    ("HOST_DS_SELECTOR", 0x0C06), ("HOST_FS_SELECTOR", 0x0C08), ("HOST_GS_SELECTOR", 0x0C0A),
    ("HOST_TR_SELECTOR", 0x0C0C),
    # 64-bit control
    ("IO_BITMAP_A", 0x2000), ("IO_BITMAP_B", 0x2002), ("MSR_BITMAP", 0x2004),
    ("VM_EXIT_MSR_STORE_ADDR", 0x2006), ("VM_EXIT_MSR_LOAD_ADDR", 0x2008),
    ("VM_ENTRY_MSR_LOAD_ADDR", 0x200A), ("TSC_OFFSET", 0x2010), ("VM_FUNCTION_CONTROL", 0x2018),
    ("EPT_POINTER", 0x201A), ("EPTP_LIST_ADDRESS", 0x2024),
    # 64-bit VM-exit information
    ("GUEST_PHYSICAL_ADDRESS", 0x2400),
    # 64-bit guest state
    ("VMCS_LINK_POINTER", 0x2800), ("GUEST_IA32_DEBUGCTL", 0x2802), ("GUEST_IA32_PAT", 0x2804),
    ("GUEST_IA32_EFER", 0x2806), ("GUEST_PDPTR0", 0x280A), ("GUEST_PDPTR1", 0x280C),
    ("GUEST_PDPTR2", 0x280E), ("GUEST_PDPTR3", 0x2810),
    # 64-bit host state
    ("HOST_IA32_PAT", 0x2C00), ("HOST_IA32_EFER", 0x2C02),
    # 32-bit control
    ("PIN_BASED_VM_EXEC_CONTROL", 0x4000), ("CPU_BASED_VM_EXEC_CONTROL", 0x4002),
    ("EXCEPTION_BITMAP", 0x4004), ("PAGE_FAULT_ERROR_CODE_MASK", 0x4006),
    ("PAGE_FAULT_ERROR_CODE_MATCH", 0x4008), ("CR3_TARGET_COUNT", 0x400A),
    ("VM_EXIT_CONTROLS", 0x400C), ("VM_EXIT_MSR_STORE_COUNT", 0x400E),
    ("VM_EXIT_MSR_LOAD_COUNT", 0x4010), ("VM_ENTRY_CONTROLS", 0x4012),
    ("VM_ENTRY_MSR_LOAD_COUNT", 0x4014), ("VM_ENTRY_INTR_INFO_FIELD", 0x4016),
    ("VM_ENTRY_EXCEPTION_ERROR_CODE", 0x4018), ("VM_ENTRY_INSTRUCTION_LEN", 0x401A),
    ("SECONDARY_VM_EXEC_CONTROL", 0x401E),
    # 32-bit VM-exit information
    ("VM_INSTRUCTION_ERROR", 0x4400), ("VM_EXIT_REASON", 0x4402), ("VM_EXIT_INTR_INFO", 0x4404),
    ("VM_EXIT_INTR_ERROR_CODE", 0x4406), ("IDT_VECTORING_INFO_FIELD", 0x4408),
    ("IDT_VECTORING_ERROR_CODE", 0x440A), ("VM_EXIT_INSTRUCTION_LEN", 0x440C),
    ("VMX_INSTRUCTION_INFO", 0x440E),
    # 32-bit guest state
    ("GUEST_ES_LIMIT", 0x4800), ("GUEST_CS_LIMIT", 0x4802), ("GUEST_SS_LIMIT", 0x4804),
    ("GUEST_DS_LIMIT", 0x4806), ("GUEST_FS_LIMIT", 0x4808), ("GUEST_GS_LIMIT", 0x480A),
    ("GUEST_LDTR_LIMIT", 0x480C), ("GUEST_TR_LIMIT", 0x480E), ("GUEST_GDTR_LIMIT", 0x4810),
    ("GUEST_IDTR_LIMIT", 0x4812),
    ("GUEST_ES_AR_BYTES", 0x4814), ("GUEST_CS_AR_BYTES", 0x4816), ("GUEST_SS_AR_BYTES", 0x4818),
    ("GUEST_DS_AR_BYTES", 0x481A), ("GUEST_FS_AR_BYTES", 0x481C), ("GUEST_GS_AR_BYTES", 0x481E),
    ("GUEST_LDTR_AR_BYTES", 0x4820), ("GUEST_TR_AR_BYTES", 0x4822),
    ("GUEST_INTERRUPTIBILITY_INFO", 0x4824), ("GUEST_ACTIVITY_STATE", 0x4826),
    ("GUEST_SMBASE", 0x4828), ("GUEST_SYSENTER_CS", 0x482A),
    ("VMX_PREEMPTION_TIMER_VALUE", 0x482E),
    # 32-bit host state
    ("HOST_IA32_SYSENTER_CS", 0x4C00),
    # natural-width control
    ("CR0_GUEST_HOST_MASK", 0x6000), ("CR4_GUEST_HOST_MASK", 0x6002),
    ("CR0_READ_SHADOW", 0x6004), ("CR4_READ_SHADOW", 0x6006),
    ("CR3_TARGET_VALUE0", 0x6008), ("CR3_TARGET_VALUE1", 0x600A),
    ("CR3_TARGET_VALUE2", 0x600C), ("CR3_TARGET_VALUE3", 0x600E),
    # natural-width VM-exit information
    ("EXIT_QUALIFICATION", 0x6400), ("IO_RCX", 0x6402), ("IO_RSI", 0x6404), ("IO_RDI", 0x6406),
    ("IO_RIP", 0x6408), ("GUEST_LINEAR_ADDRESS", 0x640A),
    # natural-width guest state
    ("GUEST_CR0", 0x6800), ("GUEST_CR3", 0x6802), ("GUEST_CR4", 0x6804),
    ("GUEST_ES_BASE", 0x6806), ("GUEST_CS_BASE", 0x6808), ("GUEST_SS_BASE", 0x680A),
    ("GUEST_DS_BASE", 0x680C), ("GUEST_FS_BASE", 0x680E), ("GUEST_GS_BASE", 0x6810),
    ("GUEST_LDTR_BASE", 0x6812), ("GUEST_TR_BASE", 0x6814), ("GUEST_GDTR_BASE", 0x6816),
    ("GUEST_IDTR_BASE", 0x6818), ("GUEST_DR7", 0x681A), ("GUEST_RSP", 0x681C),
    ("GUEST_RIP", 0x681E), ("GUEST_RFLAGS", 0x6820), ("GUEST_PENDING_DBG_EXCEPTIONS", 0x6822),
    ("GUEST_SYSENTER_ESP", 0x6824), ("GUEST_SYSENTER_EIP", 0x6826),
    # natural-width host state
    ("HOST_CR0", 0x6C00), ("HOST_CR3", 0x6C02), ("HOST_CR4", 0x6C04), ("HOST_FS_BASE", 0x6C06),
    ("HOST_GS_BASE", 0x6C08), ("HOST_TR_BASE", 0x6C0A), ("HOST_GDTR_BASE", 0x6C0C),
    ("HOST_IDTR_BASE", 0x6C0E), ("HOST_IA32_SYSENTER_ESP", 0x6C10),
    ("HOST_IA32_SYSENTER_EIP", 0x6C12), ("HOST_RSP", 0x6C14), ("HOST_RIP", 0x6C16),
)

#: Full encodings of the supported fields by name; an IntEnum so Python code can pass members
#: where an encoding is expected and RTL signals of this shape decode by name.
def _fill_encodings(namespace):
    for name, enc in _FIELD_TABLE:
        namespace[name] = enc


VmcsEncoding = types.new_class("VmcsEncoding", (enum.IntEnum,), {"shape": 32}, _fill_encodings)
VmcsEncoding.__module__ = __name__


@dataclass(frozen=True)
class VmcsField:
    """One supported VMCS field.

    `slot` is the field's position in `FIELDS` (which is sorted by encoding); it fixes where the
    field lives in a VMCS region (`offset`) and may serve as the RTL VMCS cache's word address.
    """
    name: str
    encoding: int
    slot: int

    @property
    def width(self) -> FieldWidth:
        return FieldWidth((self.encoding >> 13) & 3)

    @property
    def type(self) -> FieldType:
        return FieldType((self.encoding >> 10) & 3)

    @property
    def index(self) -> int:
        return (self.encoding >> 1) & 0x1FF

    @property
    def bits(self) -> int:
        return self.width.bits

    @property
    def mask(self) -> int:
        return mask(self.bits - 1, 0)

    @property
    def read_only(self) -> bool:
        """VMWRITE gives error 13 (VM-exit information field and IA32_VMX_MISC[29] = 0)."""
        return self.type is FieldType.EXIT_INFO and not VMX_MISC & MISC_VMWRITE_ANY_FIELD

    @property
    def has_high(self) -> bool:
        """Has a high-access encoding (encoding + 1): 64-bit fields only."""
        return self.width is FieldWidth.BITS64

    @property
    def offset(self) -> int:
        """Byte offset of the field's slot in a VMCS region."""
        return VMCS_FIELDS_OFFSET + VMCS_SLOT_BYTES * self.slot


#: Every supported field, sorted by encoding; `FIELDS[i].slot == i`.
FIELDS: tuple[VmcsField, ...] = tuple(
    VmcsField(name, enc, slot)
    for slot, (name, enc) in enumerate(sorted(_FIELD_TABLE, key=lambda item: item[1])))
FIELD_BY_NAME: dict[str, VmcsField] = {f.name: f for f in FIELDS}
FIELD_BY_ENCODING: dict[int, VmcsField] = {f.encoding: f for f in FIELDS}
#: The highest index (encoding bits 9:1) of any supported field: IA32_VMX_VMCS_ENUM[9:1].
VMCS_ENUM_MAX_INDEX = max(f.index for f in FIELDS)


@dataclass(frozen=True)
class FieldAccess:
    """A decoded encoding: the field and whether it is the high access (bits 63:32 of a 64-bit
    field, read and written as a 32-bit value)."""
    field: VmcsField
    high: bool = False


def field_by_encoding(enc: int) -> FieldAccess | None:
    """Decode a VMREAD/VMWRITE encoding operand; None when it names no supported component.

    Unsupported (VMfailValid(12)): any bit of 63:32 set (the register is 64 bits wide in 64-bit
    mode), a reserved bit of the encoding (bit 12, bits 31:15), an encoding no supported field
    has, or the high access (bit 0 = 1) of a field that is not 64 bits wide.
    """
    if enc < 0 or enc > mask(31, 0) or enc & ENCODING_RESERVED:
        return None
    high = bool(enc & ENCODING_HIGH)
    field = FIELD_BY_ENCODING.get(enc & ~ENCODING_HIGH)
    if field is None or (high and not field.has_high):
        return None
    return FieldAccess(field, high)


# --- VMCS region (reference section 7) ------------------------------------------------------
# A VMCS region is 4 KiB (IA32_VMX_BASIC[44:32]). This design's format, fixed, little-endian:
#
#   offset 0   dword  revision identifier (bits 30:0) and shadow-VMCS indicator (bit 31); written
#                     by software only
#   offset 4   dword  VMX-abort indicator; written by software only (this design never aborts)
#   offset 8   dword  launch state: 0 = clear, 1 = launched (bits 31:1 written as 0, ignored)
#   offset 12  dword  reserved, written as 0 by VMCLEAR
#   offset 16 + 8*slot  qword  the field FIELDS[slot], zero-extended from its width; on load only
#                     the bits of the field's width are used
#   the rest of the 4 KiB is unused
#
# VMCLEAR writes offsets 8..15 and, for a VMCS whose data it holds, every field slot. VMPTRLD of a
# VMCS that is not active reads the launch state and every slot from memory.
VMCS_REGION_SIZE = 4096
VMCS_REVISION_OFFSET = 0
VMCS_ABORT_OFFSET = 4
VMCS_LAUNCH_STATE_OFFSET = 8
VMCS_FIELDS_OFFSET = 16
VMCS_SLOT_BYTES = 8
LAUNCH_STATE_CLEAR = 0
LAUNCH_STATE_LAUNCHED = 1
#: Bit 31 of the region's first dword: shadow-VMCS indicator (VMCS shadowing is not supported).
VMCS_SHADOW_INDICATOR = 1 << 31
VMCS_REVISION_MASK = mask(30, 0)

assert VMCS_FIELDS_OFFSET + VMCS_SLOT_BYTES * len(FIELDS) <= VMCS_REGION_SIZE


def vmcs_field_offset(field: VmcsField | str | int) -> int:
    """Byte offset in a VMCS region of a field given as `VmcsField`, name or full encoding."""
    if isinstance(field, str):
        field = FIELD_BY_NAME[field]
    elif not isinstance(field, VmcsField):
        field = FIELD_BY_ENCODING[int(field)]
    return field.offset


# =================================================================================================
# Control fields (reference section 3.4)
# =================================================================================================

# Pin-based VM-execution controls (0x4000).
PIN_EXTERNAL_INTERRUPT_EXITING = 1 << 0
PIN_NMI_EXITING = 1 << 3
PIN_VIRTUAL_NMIS = 1 << 5
PIN_PREEMPTION_TIMER = 1 << 6
PIN_POSTED_INTERRUPTS = 1 << 7
PIN_DEFAULT1 = 0x16

# Primary processor-based VM-execution controls (0x4002).
PROC_INTERRUPT_WINDOW_EXITING = 1 << 2
PROC_USE_TSC_OFFSETTING = 1 << 3
PROC_HLT_EXITING = 1 << 7
PROC_INVLPG_EXITING = 1 << 9
PROC_MWAIT_EXITING = 1 << 10
PROC_RDPMC_EXITING = 1 << 11
PROC_RDTSC_EXITING = 1 << 12
PROC_CR3_LOAD_EXITING = 1 << 15
PROC_CR3_STORE_EXITING = 1 << 16
PROC_ACTIVATE_TERTIARY = 1 << 17
PROC_CR8_LOAD_EXITING = 1 << 19
PROC_CR8_STORE_EXITING = 1 << 20
PROC_USE_TPR_SHADOW = 1 << 21
PROC_NMI_WINDOW_EXITING = 1 << 22
PROC_MOV_DR_EXITING = 1 << 23
PROC_UNCONDITIONAL_IO_EXITING = 1 << 24
PROC_USE_IO_BITMAPS = 1 << 25
PROC_MONITOR_TRAP_FLAG = 1 << 27
PROC_USE_MSR_BITMAPS = 1 << 28
PROC_MONITOR_EXITING = 1 << 29
PROC_PAUSE_EXITING = 1 << 30
PROC_ACTIVATE_SECONDARY = 1 << 31
PROC_DEFAULT1 = 0x0401E172
#: Default1 bits that the TRUE MSR lets be 0 (CR3-load and CR3-store exiting).
PROC_TRUE_DEFAULT1 = 0x04006172

# Secondary processor-based VM-execution controls (0x401E).
PROC2_VIRTUALIZE_APIC_ACCESSES = 1 << 0
PROC2_ENABLE_EPT = 1 << 1
PROC2_DESCRIPTOR_TABLE_EXITING = 1 << 2
PROC2_ENABLE_RDTSCP = 1 << 3
PROC2_VIRTUALIZE_X2APIC = 1 << 4
PROC2_ENABLE_VPID = 1 << 5
PROC2_WBINVD_EXITING = 1 << 6
PROC2_UNRESTRICTED_GUEST = 1 << 7
PROC2_APIC_REGISTER_VIRTUALIZATION = 1 << 8
PROC2_VIRTUAL_INTERRUPT_DELIVERY = 1 << 9
PROC2_PAUSE_LOOP_EXITING = 1 << 10
PROC2_RDRAND_EXITING = 1 << 11
PROC2_ENABLE_INVPCID = 1 << 12
PROC2_ENABLE_VM_FUNCTIONS = 1 << 13
PROC2_VMCS_SHADOWING = 1 << 14
PROC2_ENCLS_EXITING = 1 << 15
PROC2_RDSEED_EXITING = 1 << 16
PROC2_ENABLE_PML = 1 << 17
PROC2_EPT_VIOLATION_VE = 1 << 18
PROC2_CONCEAL_VMX_FROM_PT = 1 << 19
PROC2_ENABLE_XSAVES = 1 << 20
PROC2_MODE_BASED_EPT_EXECUTE = 1 << 22
PROC2_SUB_PAGE_WRITE = 1 << 23
PROC2_TSC_SCALING = 1 << 25
PROC2_ENABLE_UMWAIT = 1 << 26

# VM-exit controls (0x400C).
EXIT_CTL_SAVE_DEBUG_CONTROLS = 1 << 2
EXIT_CTL_HOST_ADDRESS_SPACE_SIZE = 1 << 9
EXIT_CTL_LOAD_PERF_GLOBAL_CTRL = 1 << 12
EXIT_CTL_ACK_INTERRUPT_ON_EXIT = 1 << 15
EXIT_CTL_SAVE_PAT = 1 << 18
EXIT_CTL_LOAD_PAT = 1 << 19
EXIT_CTL_SAVE_EFER = 1 << 20
EXIT_CTL_LOAD_EFER = 1 << 21
EXIT_CTL_SAVE_PREEMPTION_TIMER = 1 << 22
EXIT_CTL_DEFAULT1 = 0x00036DFF
EXIT_CTL_TRUE_DEFAULT1 = 0x00036DFB

#: The guest-state fields a VM exit saves from the processor (SDM 28.3: the others are saved
#: too on silicon, but this core has no instruction that changes them: no segment or
#: descriptor-table loads, no STI/MOV SS blocking, no SYSENTER MSRs, no SMM, no activity states
#: other than the one entered with; so they keep the values the VM entry loaded, which are
#: their VMCS values). DR7, DEBUGCTL, PAT and EFER only with their "save" exit controls, the
#: PDPTEs only with EPT, the preemption timer with its own control (VMCS link pointer: never).
#: The VMX unit's exit port carries these and nothing else (`rtl.vmx.ports.EXIT_GUEST_LAYOUT`).
EXIT_SAVED_GUEST_FIELDS = (
    "GUEST_RIP", "GUEST_RSP", "GUEST_RFLAGS", "GUEST_CR0", "GUEST_CR3", "GUEST_CR4",
    "GUEST_DR7", "GUEST_IA32_DEBUGCTL", "GUEST_IA32_PAT", "GUEST_IA32_EFER",
    "GUEST_PDPTR0", "GUEST_PDPTR1", "GUEST_PDPTR2", "GUEST_PDPTR3",
    "VMX_PREEMPTION_TIMER_VALUE",
)

# VM-entry controls (0x4012).
ENTRY_CTL_LOAD_DEBUG_CONTROLS = 1 << 2
ENTRY_CTL_IA32E_MODE_GUEST = 1 << 9
ENTRY_CTL_ENTRY_TO_SMM = 1 << 10
ENTRY_CTL_DEACTIVATE_DUAL_MONITOR = 1 << 11
ENTRY_CTL_LOAD_PERF_GLOBAL_CTRL = 1 << 13
ENTRY_CTL_LOAD_PAT = 1 << 14
ENTRY_CTL_LOAD_EFER = 1 << 15
ENTRY_CTL_LOAD_BNDCFGS = 1 << 16
ENTRY_CTL_DEFAULT1 = 0x000011FF
ENTRY_CTL_TRUE_DEFAULT1 = 0x000011FB

# VM-function controls (0x2018).
VMFUNC_EPTP_SWITCHING = 1 << 0
#: Entries in an EPTP list (ECX of VMFUNC leaf 0 must be below this).
EPTP_LIST_ENTRIES = 512

CR3_TARGET_COUNT_MAX = 4

# =================================================================================================
# Capabilities this design advertises (reference section 3.5, SDM appendix A)
# =================================================================================================
# Feature set: EPT (4-level, UC/WB, execute-only, 2M and 1G pages, A/D flags), VPID, unrestricted
# guest, VM functions with EPTP switching, VMX-preemption timer, I/O and MSR bitmaps, MTF, TRUE_*
# capability MSRs, INVEPT single-context and global, INVVPID of all four types, HLT activity state.

#: VMCS revision identifier ("VTX1" in ASCII; bit 31 = 0).
VMCS_REVISION_ID = 0x56545831

PIN_SUPPORTED = (PIN_DEFAULT1 | PIN_EXTERNAL_INTERRUPT_EXITING | PIN_NMI_EXITING
                 | PIN_VIRTUAL_NMIS | PIN_PREEMPTION_TIMER)
PROC_SUPPORTED = (PROC_DEFAULT1 | PROC_INTERRUPT_WINDOW_EXITING | PROC_USE_TSC_OFFSETTING
                  | PROC_HLT_EXITING | PROC_INVLPG_EXITING | PROC_MWAIT_EXITING
                  | PROC_RDPMC_EXITING | PROC_RDTSC_EXITING | PROC_CR3_LOAD_EXITING
                  | PROC_CR3_STORE_EXITING | PROC_CR8_LOAD_EXITING | PROC_CR8_STORE_EXITING
                  | PROC_NMI_WINDOW_EXITING | PROC_MOV_DR_EXITING
                  | PROC_UNCONDITIONAL_IO_EXITING | PROC_USE_IO_BITMAPS
                  | PROC_MONITOR_TRAP_FLAG | PROC_USE_MSR_BITMAPS | PROC_MONITOR_EXITING
                  | PROC_PAUSE_EXITING | PROC_ACTIVATE_SECONDARY)
PROC2_SUPPORTED = (PROC2_ENABLE_EPT | PROC2_ENABLE_VPID | PROC2_UNRESTRICTED_GUEST
                   | PROC2_ENABLE_VM_FUNCTIONS)
EXIT_CTL_SUPPORTED = (EXIT_CTL_DEFAULT1 | EXIT_CTL_SAVE_DEBUG_CONTROLS
                      | EXIT_CTL_HOST_ADDRESS_SPACE_SIZE | EXIT_CTL_ACK_INTERRUPT_ON_EXIT
                      | EXIT_CTL_SAVE_PAT | EXIT_CTL_LOAD_PAT | EXIT_CTL_SAVE_EFER
                      | EXIT_CTL_LOAD_EFER | EXIT_CTL_SAVE_PREEMPTION_TIMER)
ENTRY_CTL_SUPPORTED = (ENTRY_CTL_DEFAULT1 | ENTRY_CTL_LOAD_DEBUG_CONTROLS
                       | ENTRY_CTL_IA32E_MODE_GUEST | ENTRY_CTL_LOAD_PAT | ENTRY_CTL_LOAD_EFER)
VMFUNC_SUPPORTED = VMFUNC_EPTP_SWITCHING


def _ctls_msr(allowed0: int, allowed1: int) -> int:
    """A control capability MSR: allowed-0 settings (bits that must be 1) in bits 31:0, allowed-1
    settings (bits that may be 1) in bits 63:32."""
    assert allowed0 & ~allowed1 == 0
    return allowed1 << 32 | allowed0


def allowed_settings(msr_value: int) -> tuple[int, int]:
    """(bits that must be 1, bits that may be 1) of a control capability MSR value."""
    return msr_value & mask(31, 0), msr_value >> 32


def controls_problem(value: int, msr_value: int) -> int:
    """Bits of a 32-bit control field that break the MSR's settings (0 when the value is valid)."""
    must1, may1 = allowed_settings(msr_value)
    return (must1 & ~value) | (value & ~may1 & mask(31, 0)) | (value & ~mask(31, 0))


# IA32_VMX_BASIC (0x480).
BASIC_REGION_SIZE_SHIFT = 32
BASIC_32BIT_ADDRESSES = 1 << 48
BASIC_DUAL_MONITOR = 1 << 49
BASIC_MEMTYPE_SHIFT = 50
BASIC_INS_OUTS_INFO = 1 << 54
BASIC_TRUE_CTLS = 1 << 55
BASIC_NO_ERROR_CODE_CHECK = 1 << 56
VMX_BASIC = (VMCS_REVISION_ID | VMCS_REGION_SIZE << BASIC_REGION_SIZE_SHIFT
             | 6 << BASIC_MEMTYPE_SHIFT | BASIC_TRUE_CTLS)

# IA32_VMX_MISC (0x485).
MISC_PREEMPTION_TIMER_RATE = 0          # bits 4:0: the timer counts down once per TSC tick
MISC_STORES_LMA = 1 << 5                # VM exits store EFER.LMA in "IA-32e mode guest"
MISC_ACTIVITY_HLT = 1 << 6
MISC_ACTIVITY_SHUTDOWN = 1 << 7
MISC_ACTIVITY_WAIT_SIPI = 1 << 8
MISC_CR3_TARGET_SHIFT = 16
MISC_VMWRITE_ANY_FIELD = 1 << 29
MISC_ZERO_LENGTH_INJECTION = 1 << 30
VMX_MISC = (MISC_PREEMPTION_TIMER_RATE | MISC_STORES_LMA | MISC_ACTIVITY_HLT
            | CR3_TARGET_COUNT_MAX << MISC_CR3_TARGET_SHIFT)
#: Activity states a VM entry accepts (MISC bits 8:6 plus the active state).
SUPPORTED_ACTIVITY_STATES = frozenset({ActivityState.ACTIVE, ActivityState.HLT})

# IA32_VMX_EPT_VPID_CAP (0x48C), reference section 5.7.
EPT_CAP_EXECUTE_ONLY = 1 << 0
EPT_CAP_WALK_4 = 1 << 6
EPT_CAP_WALK_5 = 1 << 7
EPT_CAP_UC = 1 << 8
EPT_CAP_WB = 1 << 14
EPT_CAP_2M = 1 << 16
EPT_CAP_1G = 1 << 17
EPT_CAP_INVEPT = 1 << 20
EPT_CAP_AD = 1 << 21
EPT_CAP_ADVANCED_INFO = 1 << 22
EPT_CAP_INVEPT_SINGLE = 1 << 25
EPT_CAP_INVEPT_ALL = 1 << 26
VPID_CAP_INVVPID = 1 << 32
VPID_CAP_INDIVIDUAL = 1 << 40
VPID_CAP_SINGLE = 1 << 41
VPID_CAP_ALL = 1 << 42
VPID_CAP_SINGLE_RETAIN_GLOBALS = 1 << 43
VMX_EPT_VPID_CAP = (EPT_CAP_EXECUTE_ONLY | EPT_CAP_WALK_4 | EPT_CAP_UC | EPT_CAP_WB | EPT_CAP_2M
                    | EPT_CAP_1G | EPT_CAP_INVEPT | EPT_CAP_AD | EPT_CAP_INVEPT_SINGLE
                    | EPT_CAP_INVEPT_ALL | VPID_CAP_INVVPID | VPID_CAP_INDIVIDUAL
                    | VPID_CAP_SINGLE | VPID_CAP_ALL | VPID_CAP_SINGLE_RETAIN_GLOBALS)
#: INVEPT / INVVPID types this design accepts (derived from the capability bits).
INVEPT_TYPES = frozenset(t for t, bit in ((1, EPT_CAP_INVEPT_SINGLE), (2, EPT_CAP_INVEPT_ALL))
                         if VMX_EPT_VPID_CAP & bit)
INVVPID_TYPES = frozenset(t for t in range(4) if VMX_EPT_VPID_CAP & (VPID_CAP_INDIVIDUAL << t))

# CR0/CR4 bits fixed in VMX operation.
VMX_CR0_FIXED0 = CR0_PE | CR0_NE | CR0_PG                  # 0x80000021: must be 1
VMX_CR0_FIXED1 = mask(31, 0)                               # no CR0 bit is forced to 0
VMX_CR4_FIXED0 = CR4_VMXE                                  # 0x2000
#: CR4 bits this design implements (any other bit must be 0 in VMX operation).
VMX_CR4_FIXED1 = (CR4_VME | CR4_PVI | CR4_TSD | CR4_DE | CR4_PSE | CR4_PAE | CR4_MCE | CR4_PGE
                  | CR4_PCE | CR4_OSFXSR | CR4_OSXMMEXCPT | CR4_VMXE | CR4_SMEP)   # 0x1027FF
#: Unrestricted guest lets the guest CR0 field have PE = 0 and PG = 0.
UNRESTRICTED_CR0_RELAXED = CR0_PE | CR0_PG

VMX_VMCS_ENUM = VMCS_ENUM_MAX_INDEX << 1

#: Every VMX capability MSR of this design, by number. RDMSR of any other VMX MSR number
#: (0x480..0x493) raises #GP; so does WRMSR to any of these.
VMX_MSRS: dict[int, int] = {
    IA32_VMX_BASIC: VMX_BASIC,
    IA32_VMX_PINBASED_CTLS: _ctls_msr(PIN_DEFAULT1, PIN_SUPPORTED),
    IA32_VMX_PROCBASED_CTLS: _ctls_msr(PROC_DEFAULT1, PROC_SUPPORTED),
    IA32_VMX_EXIT_CTLS: _ctls_msr(EXIT_CTL_DEFAULT1, EXIT_CTL_SUPPORTED),
    IA32_VMX_ENTRY_CTLS: _ctls_msr(ENTRY_CTL_DEFAULT1, ENTRY_CTL_SUPPORTED),
    IA32_VMX_MISC: VMX_MISC,
    IA32_VMX_CR0_FIXED0: VMX_CR0_FIXED0,
    IA32_VMX_CR0_FIXED1: VMX_CR0_FIXED1,
    IA32_VMX_CR4_FIXED0: VMX_CR4_FIXED0,
    IA32_VMX_CR4_FIXED1: VMX_CR4_FIXED1,
    IA32_VMX_VMCS_ENUM: VMX_VMCS_ENUM,
    IA32_VMX_PROCBASED_CTLS2: _ctls_msr(0, PROC2_SUPPORTED),
    IA32_VMX_EPT_VPID_CAP: VMX_EPT_VPID_CAP,
    IA32_VMX_TRUE_PINBASED_CTLS: _ctls_msr(PIN_DEFAULT1, PIN_SUPPORTED),
    IA32_VMX_TRUE_PROCBASED_CTLS: _ctls_msr(PROC_TRUE_DEFAULT1, PROC_SUPPORTED),
    IA32_VMX_TRUE_EXIT_CTLS: _ctls_msr(EXIT_CTL_TRUE_DEFAULT1, EXIT_CTL_SUPPORTED),
    IA32_VMX_TRUE_ENTRY_CTLS: _ctls_msr(ENTRY_CTL_TRUE_DEFAULT1, ENTRY_CTL_SUPPORTED),
    IA32_VMX_VMFUNC: VMFUNC_SUPPORTED,
}

#: The MSRs VM entry checks each control field against (TRUE_* since IA32_VMX_BASIC[55] = 1;
#: the secondary controls have no TRUE MSR).
CONTROL_CHECK_MSRS = {
    "PIN_BASED_VM_EXEC_CONTROL": IA32_VMX_TRUE_PINBASED_CTLS,
    "CPU_BASED_VM_EXEC_CONTROL": IA32_VMX_TRUE_PROCBASED_CTLS,
    "SECONDARY_VM_EXEC_CONTROL": IA32_VMX_PROCBASED_CTLS2,
    "VM_EXIT_CONTROLS": IA32_VMX_TRUE_EXIT_CTLS,
    "VM_ENTRY_CONTROLS": IA32_VMX_TRUE_ENTRY_CTLS,
}


def vmx_address_ok(addr: int, maxphyaddr: int = MAXPHYADDR) -> bool:
    """A VMXON/VMCS/bitmap pointer: 4 KiB aligned and no bit at or above MAXPHYADDR."""
    return 0 <= addr < (1 << maxphyaddr) and not addr & 0xFFF


# =================================================================================================
# Layouts of architectural formats
# =================================================================================================


def _bits_layout(fields: list[tuple[str, int]], total: int) -> data.StructLayout:
    """A StructLayout from (name, width) pairs in bit order, padded with `_rsvd` to `total`."""
    used = sum(Shape.cast(width).width for _, width in fields)
    assert used <= total, (used, total)
    members = dict(fields)
    assert len(members) == len(fields)
    if used < total:
        members["_rsvd_top"] = total - used
    return data.StructLayout(members)


#: VMCS field encoding (reference section 3.1).
VmcsEncodingLayout = _bits_layout([
    ("high", 1), ("index", 9), ("type", FieldType), ("_rsvd12", 1), ("width", FieldWidth),
], 32)

#: Exit-reason field (0x4402), reference section 3.3.
ExitReasonLayout = _bits_layout([
    ("basic", ExitReason), ("_zero16", 1), ("_rsvd17", 10), ("enclave", 1), ("pending_mtf", 1),
    ("from_root", 1), ("_rsvd30", 1), ("entry_failure", 1),
], 32)

#: Exit qualification of a control-register access (exit 28), SDM table 27-3.
CrAccessQualLayout = _bits_layout([
    ("cr", 4), ("access_type", CrAccessType), ("lmsw_memory", 1), ("_rsvd7", 1), ("gpr", 4),
    ("_rsvd12", 4), ("lmsw_source", 16),
], 64)

#: Exit qualification of a MOV DR (exit 29), SDM table 27-4.
DrAccessQualLayout = _bits_layout([
    ("dr", 3), ("_rsvd3", 1), ("from_dr", 1), ("_rsvd5", 3), ("gpr", 4),
], 64)

#: Exit qualification of an I/O instruction (exit 30), SDM table 27-5.
IoQualLayout = _bits_layout([
    ("size_minus_1", 3), ("is_in", 1), ("string", 1), ("rep", 1), ("immediate", 1),
    ("_rsvd7", 9), ("port", 16),
], 64)

#: Exit qualification of an EPT violation (exit 48), reference section 5.4.
EptViolationQualLayout = _bits_layout([
    ("read", 1), ("write", 1), ("fetch", 1), ("readable", 1), ("writable", 1), ("executable", 1),
    ("user_executable", 1), ("gla_valid", 1), ("translation", 1), ("user", 1), ("read_write", 1),
    ("execute_disable", 1), ("nmi_unblocking", 1), ("shadow_stack", 1), ("supervisor_ss", 1),
    ("verify_paging", 1), ("asynchronous", 1),
], 64)

#: VM-exit instruction-information field for VMCLEAR, VMPTRLD, VMPTRST, VMREAD, VMWRITE, VMXON,
#: INVEPT, INVVPID (SDM table 27-13; reference section 8 gaps).
VmxInstrInfoLayout = _bits_layout([
    ("scaling", 2), ("_rsvd2", 1), ("reg1", 4), ("address_size", 3), ("register_operand", 1),
    ("_rsvd11", 4), ("segment", 3), ("index", 4), ("index_invalid", 1), ("base", 4),
    ("base_invalid", 1), ("reg2", 4),
], 32)

#: The qword at `VMCS_LAUNCH_STATE_OFFSET` of a VMCS region: the launch state (bit 0), and in the
#: reserved dword above it what the RTL's VMCS cache stores when it evicts a VMCS (written back
#: without a VMCLEAR, which writes the whole qword 0): "launched before VMXOFF", an "evicted"
#: flag, and the number of VMXOFFs so far (mod 2^30), docs/vmx.md "VMCS region layout".
LaunchStateQwordLayout = _bits_layout([
    ("launched", 1), ("_rsvd1", 31), ("launched_before_vmxoff", 1), ("evicted", 1),
    ("vmxoff_count", 30),
], 64)

#: VM-entry / VM-exit interruption information and IDT-vectoring information.
InterruptionInfoLayout = _bits_layout([
    ("vector", 8), ("type", InterruptionType), ("deliver_error_code", 1), ("nmi_unblocking", 1),
    ("_rsvd13", 18), ("valid", 1),
], 32)

#: Guest segment access-rights fields (0x4814..0x4822).
SegmentAccessRightsLayout = _bits_layout([
    ("type", 4), ("s", 1), ("dpl", 2), ("p", 1), ("_rsvd8", 4), ("avl", 1), ("l", 1), ("db", 1),
    ("g", 1), ("unusable", 1),
], 32)

#: Guest interruptibility state (0x4824).
InterruptibilityLayout = _bits_layout([
    ("sti", 1), ("mov_ss", 1), ("smi", 1), ("nmi", 1), ("enclave", 1),
], 32)

#: EPT pointer (0x201A), reference section 5.1.
EptpLayout = _bits_layout([
    ("memtype", 3), ("walk_length_minus_1", 3), ("ad", 1), ("_rsvd7", 5), ("pml4", 40),
], 64)

#: INVEPT descriptor: EPTP in bits 63:0, bits 127:64 reserved (not checked, as in the SDM).
InveptDescriptorLayout = _bits_layout([("eptp", 64)], 128)

#: INVVPID descriptor: VPID 15:0, bits 63:16 must be 0, linear address 127:64.
InvvpidDescriptorLayout = _bits_layout([("vpid", 16), ("_rsvd16", 48), ("linear_address", 64)],
                                       128)

# Segment access-rights bits.
AR_TYPE_MASK = 0xF
AR_S = 1 << 4
AR_DPL_SHIFT = 5
AR_P = 1 << 7
AR_RESERVED_11_8 = mask(11, 8)
AR_L = 1 << 13
AR_DB = 1 << 14
AR_G = 1 << 15
AR_UNUSABLE = 1 << 16
AR_RESERVED_31_17 = mask(31, 17)


_NOT_EXPORTED = {
    "annotations", "dataclass", "types", "Shape", "data", "enum",   # imported modules/helpers
    "CR0_PE", "CR0_PG", "CR0_WP", "CR4_PAE", "CR4_PGE", "CR4_SMEP",  # exported by .paging
    "EFER_LMA", "EFER_LME", "EFER_NXE", "MAXPHYADDR", "mask",
}
__all__ = [name for name in dir() if not name.startswith("_") and name not in _NOT_EXPORTED]
