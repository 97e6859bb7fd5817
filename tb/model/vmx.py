"""Reference model of the VMX unit: VMX instructions, VMCS fields and regions, VM entry and exit.

The scoreboard the VMX unit's RTL is checked against. It follows the VMX reference ("the
reference"; docs/vmx.md, "Sources", lists its sections) and the SDM; constants, field table,
capabilities and the VMCS region layout come from `rtl.arch.vmx` (re-exported by `rtl.arch`).

State (`VmxModel`): the mode (outside VMX, root, non-root), the VMXON pointer, the current-VMCS
pointer (`INVALID_VMCS_POINTER` when there is none), the active VMCSs (`vmcs`: region address ->
`Vmcs`, i.e. field values and launch state, the data the RTL keeps in its VMCS cache), and the
physical `memory` (a `tb.model.translation.Memory`) that holds VMXON/VMCS regions, bitmaps and the
EPTP list.

Every instruction is one method taking the processor state (`CpuState`) and its operands, and
returning a `Result`: its `kind` (`VmxResult`), the VM-instruction error of a VMfailValid, the
exit reason and qualification of a VM exit, the new arithmetic flags (`Result.flags`), the value
of VMREAD/VMPTRST and the invalidation INVEPT/INVVPID asks of the translation unit. `execute`
is the same as one call on a uniform port (`VmxOp` + `Operands`).

Order of checks: exactly the reference's section 2.3 tables, row by row. Memory operands: the
core reads the m64/m128 operand and passes its value; `precheck` gives the outcome that is
decided before the operand is accessed (so the core knows whether to access it at all, and a
memory fault on the operand happens after those checks and before the rest, as the SDM orders
it: e.g. INVEPT checks the type before reading the descriptor, VMWRITE checks the current-VMCS
pointer before reading its source).

VM exits caused by an instruction in VMX non-root operation are *decisions*: the result has
kind VM_EXIT, the basic exit reason and the qualification given by the caller (the
displacement, for the memory-operand instructions) and no `host` state; the caller performs the
exit with `vm_exit` (passing the guest state to save, the instruction length and information).
A VM entry that fails the guest-state checks is performed at once: the result has kind VM_EXIT,
exit reason 0x80000021 and `host` set. The exit-decision functions (`exception_exit`,
`cr_access_exit`, `io_exit`, `msr_exit`, ...) likewise return an `ExitDecision` or None.

Project choices (see docs/vmx.md for the full list of what is left out):

* VMCS data lives in `vmcs` (the cache) from VMPTRLD until VMCLEAR; memory is written only by
  VMCLEAR, which stores every field in its slot and the launch state (layout in `rtl.arch.vmx`).
  VMPTRLD of a VMCS that is not active loads it from memory. VMXOFF keeps the cache but marks
  launched VMCSs so that VMRESUME gives error 6 (VMRESUME after VMXOFF).
* VM entry checks controls first (error 7), then host state (error 8), then guest state (exit
  0x80000021; qualification 4 for the VMCS link pointer, 2 for PDPTEs, 0 otherwise).
* VMCALL in root operation is always VMfail(1): there is no dual-monitor treatment (no STM).
* MSR-load/store lists are not implemented: a non-zero count fails VM entry with error 7.
* Every VM exit writes every VM-exit information field (those the exit does not define are 0),
  except that a VM-entry failure writes only the exit reason and the exit qualification.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

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
    CR0_HOST_LOADED,
    CR0_PE,
    CR0_PG,
    CR0_TS,
    CR0_WP,
    CR3_TARGET_COUNT_MAX,
    CR4_PAE,
    CR4_PCIDE,
    CR4_VMXE,
    DEBUGCTL_BTF,
    DEBUGCTL_SUPPORTED,
    DR7_INIT,
    EFER_LMA,
    EFER_LME,
    EFER_RESERVED,
    ENTRY_CTL_IA32E_MODE_GUEST,
    ENTRY_CTL_LOAD_DEBUG_CONTROLS,
    ENTRY_CTL_LOAD_EFER,
    ENTRY_CTL_LOAD_PAT,
    ENTRY_CTL_TRUE_DEFAULT1,
    ENTRY_FAIL_DEFAULT,
    ENTRY_FAIL_PDPTE,
    ENTRY_FAIL_VMCS_LINK_POINTER,
    ENTRY_INTR_INFO_RESERVED,
    EPT_CAP_INVEPT,
    EPTP_LIST_ENTRIES,
    EXCEPTIONS_WITH_ERROR_CODE,
    EXIT_CTL_ACK_INTERRUPT_ON_EXIT,
    EXIT_CTL_HOST_ADDRESS_SPACE_SIZE,
    EXIT_CTL_LOAD_EFER,
    EXIT_CTL_LOAD_PAT,
    EXIT_CTL_SAVE_DEBUG_CONTROLS,
    EXIT_CTL_SAVE_EFER,
    EXIT_CTL_SAVE_PAT,
    EXIT_CTL_SAVE_PREEMPTION_TIMER,
    EXIT_CTL_TRUE_DEFAULT1,
    EXIT_REASON_INVALID_GUEST_STATE,
    FEATURE_CONTROL_LOCK,
    FEATURE_CONTROL_VMX_OUTSIDE_SMX,
    FIELD_BY_NAME,
    FIELDS,
    IA32_VMX_PROCBASED_CTLS2,
    INSTRUCTION_EXIT_REASON,
    INTERRUPTIBILITY_MOV_SS,
    INTERRUPTIBILITY_NMI,
    INTERRUPTIBILITY_SMI,
    INTERRUPTIBILITY_STI,
    INTR_INFO_DELIVER_ERROR_CODE,
    INTR_INFO_TYPE_SHIFT,
    INTR_INFO_VALID,
    INVALID_VMCS_POINTER,
    INVEPT_TYPES,
    INVVPID_TYPES,
    LAUNCH_STATE_LAUNCHED,
    MAXPHYADDR,
    MISC_PREEMPTION_TIMER_RATE,
    MISC_STORES_LMA,
    MISC_ZERO_LENGTH_INJECTION,
    PENDING_DBG_BS,
    PENDING_DBG_RESERVED,
    PIN_DEFAULT1,
    PIN_EXTERNAL_INTERRUPT_EXITING,
    PIN_NMI_EXITING,
    PIN_PREEMPTION_TIMER,
    PIN_VIRTUAL_NMIS,
    PROC2_ENABLE_EPT,
    PROC2_ENABLE_VM_FUNCTIONS,
    PROC2_ENABLE_VPID,
    PROC2_UNRESTRICTED_GUEST,
    PROC_ACTIVATE_SECONDARY,
    PROC_CR3_LOAD_EXITING,
    PROC_CR3_STORE_EXITING,
    PROC_CR8_LOAD_EXITING,
    PROC_CR8_STORE_EXITING,
    PROC_HLT_EXITING,
    PROC_INTERRUPT_WINDOW_EXITING,
    PROC_INVLPG_EXITING,
    PROC_MONITOR_EXITING,
    PROC_MONITOR_TRAP_FLAG,
    PROC_MOV_DR_EXITING,
    PROC_MWAIT_EXITING,
    PROC_NMI_WINDOW_EXITING,
    PROC_PAUSE_EXITING,
    PROC_RDPMC_EXITING,
    PROC_RDTSC_EXITING,
    PROC_TRUE_DEFAULT1,
    PROC_UNCONDITIONAL_IO_EXITING,
    PROC_USE_IO_BITMAPS,
    PROC_USE_MSR_BITMAPS,
    RFLAGS_ARITH,
    RFLAGS_FIXED1,
    RFLAGS_IF,
    RFLAGS_RESERVED,
    RFLAGS_TF,
    RFLAGS_VM,
    SUPPORTED_ACTIVITY_STATES,
    VMCS_FIELDS_OFFSET,
    VMCS_LAUNCH_STATE_OFFSET,
    VMCS_REVISION_ID,
    VMCS_REVISION_MASK,
    VMCS_SHADOW_INDICATOR,
    VMFUNC_EPTP_SWITCHING,
    VMFUNC_SUPPORTED,
    VMX_CR0_FIXED0,
    VMX_CR0_FIXED1,
    VMX_CR4_FIXED0,
    VMX_CR4_FIXED1,
    VMX_EPT_VPID_CAP,
    VMX_MISC,
    VMX_MSRS,
    VPID_CAP_INVVPID,
    ActivityState,
    CrAccessType,
    ExitReason,
    FieldType,
    InterruptionType,
    Invalidation,
    Outcome,
    VmInstructionError,
    VmxMode,
    VmxOp,
    VmxResult,
    canonical,
    controls_problem,
    eptp_problem,
    field_by_encoding,
    mask,
    pat_valid,
    result_flags,
    vmx_address_ok,
)
from tb.model.translation import Context, Memory

__all__ = [
    "CpuState",
    "Operands",
    "InvalidationRequest",
    "InjectedEvent",
    "EntryEffects",
    "HostState",
    "ExitDecision",
    "Result",
    "Vmcs",
    "VmxModel",
    "feature_control_write",
    "example_vmcs_fields",
    "SEGMENTS",
]

_U32 = mask(31, 0)
_U64 = mask(63, 0)

#: Guest segment registers in field order.
SEGMENTS = ("ES", "CS", "SS", "DS", "FS", "GS", "LDTR", "TR")


# =================================================================================================
# Inputs and outputs
# =================================================================================================


@dataclass
class CpuState:
    """Processor state the VMX unit's checks look at (the core provides it with each operation).

    Defaults: CPL 0 in 64-bit mode with paging, CR4.VMXE=1, IA32_FEATURE_CONTROL locked with VMX
    enabled outside SMX: a state in which VMXON succeeds.
    """
    cpl: int = 0
    cr0: int = VMX_CR0_FIXED0
    cr4: int = CR4_PAE | CR4_VMXE
    efer: int = EFER_LME | EFER_LMA
    cs_l: bool = True
    rflags: int = RFLAGS_FIXED1
    feature_control: int = FEATURE_CONTROL_LOCK | FEATURE_CONTROL_VMX_OUTSIDE_SMX
    #: Events are blocked by MOV SS / POP SS (the previous instruction loaded SS).
    mov_ss_blocking: bool = False

    @property
    def long_mode(self) -> bool:
        """64-bit mode: EFER.LMA = 1 and CS.L = 1 (register operands are 64 bits wide)."""
        return bool(self.efer & EFER_LMA) and self.cs_l

    @property
    def compatibility_mode(self) -> bool:
        return bool(self.efer & EFER_LMA) and not self.cs_l

    @property
    def v86(self) -> bool:
        return bool(self.rflags & RFLAGS_VM)

    @property
    def operand_mask(self) -> int:
        return _U64 if self.long_mode else _U32


@dataclass
class Operands:
    """Operands of one operation on the uniform port (`VmxModel.execute`).

    mem: the m64 value (VMXON/VMCLEAR/VMPTRLD pointer) or the 128-bit INVEPT/INVVPID descriptor.
    reg: the register operand: VMREAD/VMWRITE field encoding, INVEPT/INVVPID type, VMFUNC EAX.
    value: VMWRITE source value; VMFUNC ECX.
    register_operand: ModRM.mod = 11 where the instruction requires a memory operand (#UD).
    qualification: exit qualification should the instruction cause a VM exit (the displacement).
    """
    mem: int = 0
    reg: int = 0
    value: int = 0
    register_operand: bool = False
    qualification: int = 0


@dataclass(frozen=True)
class InvalidationRequest:
    """One request to the translation unit's `inval` port (`rtl.arch.Invalidation`)."""
    kind: Invalidation
    vpid: int = 0
    eptp: int = 0
    gla: int = 0


@dataclass(frozen=True)
class InjectedEvent:
    """The event a VM entry injects (VM-entry interruption information and its companions)."""
    info: int
    error_code: int = 0
    instruction_length: int = 0

    @property
    def vector(self) -> int:
        return self.info & 0xFF

    @property
    def type(self) -> InterruptionType:
        return InterruptionType((self.info >> INTR_INFO_TYPE_SHIFT) & 7)


@dataclass
class EntryEffects:
    """What a successful VM entry establishes.

    `guest` maps guest-state field names to the values loaded into the processor (only the
    fields that this entry loads: DR7/IA32_DEBUGCTL with "load debug controls", IA32_PAT with
    "load IA32_PAT", GUEST_PDPTRn with PAE paging; GUEST_IA32_EFER is always given, computed
    from the IA-32e-mode-guest control when "load IA32_EFER" is 0).
    """
    guest: dict[str, int]
    ept_enabled: bool
    eptp: int
    vpid_enabled: bool
    vpid: int
    unrestricted_guest: bool
    preemption_timer: int | None = None
    event: InjectedEvent | None = None
    pending_mtf: bool = False
    invalidation: InvalidationRequest | None = None

    def translation_context(self, maxphyaddr: int = MAXPHYADDR) -> Context:
        """The translation unit's context for this guest."""
        return Context(cr0=self.guest["GUEST_CR0"], cr3=self.guest["GUEST_CR3"],
                       cr4=self.guest["GUEST_CR4"], efer=self.guest["GUEST_IA32_EFER"],
                       eptp=self.eptp if self.ept_enabled else 0, ept_enable=self.ept_enabled,
                       vpid=self.vpid, maxphyaddr=maxphyaddr)


@dataclass
class HostState:
    """Processor state a VM exit (or a VM-entry failure) loads (SDM 27.5)."""
    cr0: int
    cr3: int
    cr4: int
    efer: int
    pat: int | None             # None: IA32_PAT is not loaded
    rsp: int
    rip: int
    rflags: int
    cs_l: bool                  # host address-space size
    selectors: dict[str, int]   # ES CS SS DS FS GS TR (LDTR: 0, unusable)
    fs_base: int
    gs_base: int
    tr_base: int
    gdtr_base: int
    idtr_base: int
    sysenter_cs: int
    sysenter_esp: int
    sysenter_eip: int
    gdtr_limit: int = 0xFFFF
    idtr_limit: int = 0xFFFF
    tr_limit: int = 0x67
    dr7: int = DR7_INIT
    debugctl: int = 0


@dataclass(frozen=True)
class ExitDecision:
    """A VM exit an event or instruction in VMX non-root operation causes (not yet performed)."""
    reason: ExitReason
    qualification: int = 0
    gla: int = 0
    gpa: int = 0
    intr_info: int = 0
    intr_error: int = 0


@dataclass
class Result:
    """The answer to one operation.

    `exit_reason` is the full exit-reason field value (bit 31 set for a VM-entry failure), `host`
    is set when the VM exit has been performed (VM-entry failure, `vm_exit`). `why` says which
    check decided a fault, failure or exit (for people; not an architectural output).
    """
    kind: VmxResult
    error: VmInstructionError | None = None
    exit_reason: int | None = None
    qualification: int = 0
    value: int | None = None
    invalidation: InvalidationRequest | None = None
    entry: EntryEffects | None = None
    host: HostState | None = None
    eptp: int | None = None
    why: str = ""

    @property
    def flags(self) -> int | None:
        """New arithmetic flags (CF/PF/AF/ZF/SF/OF as RFLAGS bits), or None: RFLAGS unchanged."""
        return result_flags(self.kind)

    def apply_flags(self, rflags: int) -> int:
        """RFLAGS after the instruction (only the arithmetic flags change, when they do)."""
        new = self.flags
        return rflags if new is None else (rflags & ~RFLAGS_ARITH) | new

    @property
    def error_number(self) -> int | None:
        return None if self.error is None else self.error.value

    @property
    def exit_decision(self) -> ExitDecision:
        """This VM_EXIT result as an `ExitDecision` (for `VmxModel.vm_exit_for`)."""
        assert self.kind is VmxResult.VM_EXIT and self.exit_reason is not None
        return ExitDecision(ExitReason(self.exit_reason & 0xFFFF), self.qualification)

    def __repr__(self) -> str:
        parts = [self.kind.name]
        if self.error is not None:
            parts.append(f"error={self.error.value}({self.error.name})")
        if self.exit_reason is not None:
            parts.append(f"exit_reason={self.exit_reason:#x} qual={self.qualification:#x}")
        if self.value is not None:
            parts.append(f"value={self.value:#x}")
        if self.invalidation is not None:
            parts.append(f"inval={self.invalidation}")
        if self.why:
            parts.append(f"why={self.why!r}")
        return f"Result({', '.join(parts)})"


def _ud(why: str) -> Result:
    return Result(VmxResult.UD, why=why)


def _gp(why: str) -> Result:
    return Result(VmxResult.GP, why=why)


def _succeed(**kwargs) -> Result:
    return Result(VmxResult.SUCCEED, **kwargs)


def _exit(reason: ExitReason, qualification: int = 0, why: str = "") -> Result:
    return Result(VmxResult.VM_EXIT, exit_reason=ExitReason(reason).value,
                  qualification=qualification, why=why or "VMX non-root operation")


def feature_control_write(current: int, new: int) -> int | None:
    """WRMSR to IA32_FEATURE_CONTROL: the new value, or None (#GP) when the MSR is locked."""
    if current & FEATURE_CONTROL_LOCK:
        return None
    return new & _U64


# =================================================================================================
# VMCS
# =================================================================================================


@dataclass
class Vmcs:
    """Contents of one active VMCS: every supported field (by name) and the launch state."""
    fields: dict[str, int] = field(default_factory=lambda: {f.name: 0 for f in FIELDS})
    launched: bool = False
    #: Launched before a VMXOFF: VMRESUME gives error 6 (cleared by VMCLEAR).
    launched_before_vmxoff: bool = False

    def __getitem__(self, name: str) -> int:
        return self.fields[name]

    def __setitem__(self, name: str, value: int) -> None:
        self.fields[name] = value & FIELD_BY_NAME[name].mask

    @classmethod
    def load(cls, memory: Memory, addr: int) -> Vmcs:
        """Read a VMCS from its region (the format of `rtl.arch.vmx`)."""
        fields = {f.name: memory.read(addr + f.offset) & f.mask for f in FIELDS}
        launched = memory.read(addr + VMCS_LAUNCH_STATE_OFFSET) & 1 == LAUNCH_STATE_LAUNCHED
        return cls(fields, launched)

    def store(self, memory: Memory, addr: int) -> None:
        """Write every field and the launch state to the region (what VMCLEAR does)."""
        memory.write(addr + VMCS_LAUNCH_STATE_OFFSET, int(self.launched))
        for f in FIELDS:
            memory.write(addr + f.offset, self.fields[f.name])

    # Effective controls.
    @property
    def pin(self) -> int:
        return self["PIN_BASED_VM_EXEC_CONTROL"]

    @property
    def proc(self) -> int:
        return self["CPU_BASED_VM_EXEC_CONTROL"]

    @property
    def proc2(self) -> int:
        """Secondary controls; 0 when "activate secondary controls" is 0."""
        return self["SECONDARY_VM_EXEC_CONTROL"] if self.proc & PROC_ACTIVATE_SECONDARY else 0

    @property
    def exit_ctls(self) -> int:
        return self["VM_EXIT_CONTROLS"]

    @property
    def entry_ctls(self) -> int:
        return self["VM_ENTRY_CONTROLS"]


def _seg(vmcs: Vmcs, seg: str) -> tuple[int, int, int, int]:
    """(selector, base, limit, access rights) of a guest segment register."""
    return (vmcs[f"GUEST_{seg}_SELECTOR"], vmcs[f"GUEST_{seg}_BASE"], vmcs[f"GUEST_{seg}_LIMIT"],
            vmcs[f"GUEST_{seg}_AR_BYTES"])


def _g_problem(limit: int, ar: int) -> str | None:
    if limit & 0xFFF != 0xFFF and ar & AR_G:
        return "G=1 with limit bits 11:0 not all 1"
    if limit >> 20 and not ar & AR_G:
        return "G=0 with a limit bit 31:20 set"
    return None


def _pdpte_problem(pdpte: int, maxphyaddr: int) -> bool:
    """A present PAE PDPTE with a reserved bit (2:1, 8:5, 63:MAXPHYADDR) set."""
    return bool(pdpte & 1 and pdpte & (mask(2, 1) | mask(8, 5) | mask(63, maxphyaddr)))


# =================================================================================================
# The model
# =================================================================================================


class VmxModel:
    """The VMX unit of one logical processor, with the physical memory it reads and writes."""

    def __init__(self, memory: Memory | None = None, *, maxphyaddr: int = MAXPHYADDR,
                 revision_id: int = VMCS_REVISION_ID):
        self.memory = memory if memory is not None else Memory()
        self.maxphyaddr = maxphyaddr
        self.revision_id = revision_id
        self.mode = VmxMode.OUTSIDE
        self.vmxon_pointer: int | None = None
        self.current_pointer = INVALID_VMCS_POINTER
        #: Active VMCSs by region address (the VMCS cache).
        self.vmcs: dict[int, Vmcs] = {}
        #: State of the running guest (set by a successful VM entry).
        self.guest: EntryEffects | None = None
        #: Remaining VMX-preemption timer count while the guest runs with the timer active.
        self.preemption_timer: int | None = None

    # --- helpers ---------------------------------------------------------------------------------

    @property
    def current(self) -> Vmcs | None:
        if self.current_pointer == INVALID_VMCS_POINTER:
            return None
        return self.vmcs[self.current_pointer]

    def read_field(self, name: str) -> int:
        """Value of a field of the current VMCS (test access, no checks)."""
        return self._need_current()[name]

    def write_field(self, name: str, value: int) -> None:
        """Set a field of the current VMCS (test access, no checks; read-only fields too)."""
        self._need_current()[name] = value

    def _need_current(self) -> Vmcs:
        vmcs = self.current
        if vmcs is None:
            raise ValueError("there is no current VMCS")
        return vmcs

    def write_region_header(self, addr: int, revision_id: int | None = None,
                            shadow: bool = False) -> None:
        """Software's part of preparing a VMXON/VMCS region: the revision identifier dword."""
        rev = self.revision_id if revision_id is None else revision_id
        old = self.memory.read(addr)
        dword = (rev & VMCS_REVISION_MASK) | (VMCS_SHADOW_INDICATOR if shadow else 0)
        self.memory.write(addr, (old & ~_U32) | dword)

    def _revision_dword(self, addr: int) -> int:
        return self.memory.read(addr) & _U32

    def _fail(self, error: VmInstructionError, why: str = "", commit: bool = True) -> Result:
        """VMfail(error): VMfailValid into the current VMCS if there is one, else VMfailInvalid.
        With `commit` false the error field is not written yet (see `_commit`)."""
        vmcs = self.current
        if vmcs is None:
            return Result(VmxResult.FAIL_INVALID, why=why or error.name)
        result = Result(VmxResult.FAIL_VALID, error=error, why=why or error.name)
        return self._commit(result) if commit else result

    def _commit(self, result: Result) -> Result:
        """Write the error of a VMfailValid result into the current VMCS."""
        if result.kind is VmxResult.FAIL_VALID:
            assert result.error is not None
            self._need_current()["VM_INSTRUCTION_ERROR"] = result.error.value
        return result

    def _common_ud(self, cpu: CpuState, register_operand: bool = False) -> Result | None:
        """The reference's "common #UD set"."""
        if self.mode is VmxMode.OUTSIDE:
            return _ud("not in VMX operation")
        if register_operand:
            return _ud("register operand where memory is required")
        if not cpu.cr0 & CR0_PE:
            return _ud("CR0.PE=0")
        if cpu.v86:
            return _ud("RFLAGS.VM=1")
        if cpu.compatibility_mode:
            return _ud("compatibility mode")
        return None

    def _root_checks(self, op: VmxOp, cpu: CpuState, register_operand: bool,
                     qualification: int) -> Result | None:
        """Steps 1-3 of most instructions: #UD, VM exit in non-root operation, CPL > 0."""
        r = self._common_ud(cpu, register_operand)
        if r is not None:
            return r
        if self.mode is VmxMode.NON_ROOT:
            return _exit(INSTRUCTION_EXIT_REASON[op], qualification)
        if cpu.cpl > 0:
            return _gp("CPL > 0")
        return None

    def rdmsr(self, msr: int) -> int | None:
        """RDMSR of a VMX capability MSR: its value, or None for #GP (not a VMX MSR we have)."""
        return VMX_MSRS.get(msr)

    def check_invariants(self) -> None:
        """Raise AssertionError if the state breaks an architectural invariant."""
        cur = self.current_pointer
        if cur != INVALID_VMCS_POINTER:
            assert self.mode is not VmxMode.OUTSIDE, "current VMCS outside VMX operation"
            assert vmx_address_ok(cur, self.maxphyaddr), f"current VMCS {cur:#x} misaligned/wide"
            assert cur != self.vmxon_pointer, "current VMCS is the VMXON region"
            assert cur in self.vmcs, "current VMCS is not active"
        if self.mode is VmxMode.OUTSIDE:
            assert self.vmxon_pointer is None
        else:
            assert self.vmxon_pointer is not None
            assert vmx_address_ok(self.vmxon_pointer, self.maxphyaddr)
        if self.mode is VmxMode.NON_ROOT:
            assert self.current is not None and self.current.launched
        # (An active VMCS may share its address with a later VMXON region: software error, the
        # SDM leaves it undefined; VMCLEAR/VMPTRLD of it then fail with error 3/10.)
        for addr in self.vmcs:
            assert vmx_address_ok(addr, self.maxphyaddr)

    # --- uniform port ----------------------------------------------------------------------------

    def execute(self, op: VmxOp, cpu: CpuState, operands: Operands | None = None) -> Result:
        """One operation on the instruction port."""
        o = operands or Operands()
        op = VmxOp(op)
        q = o.qualification
        ro = o.register_operand
        match op:
            case VmxOp.VMXON:
                return self.vmxon(cpu, o.mem, register_operand=ro, qualification=q)
            case VmxOp.VMXOFF:
                return self.vmxoff(cpu)
            case VmxOp.VMCLEAR:
                return self.vmclear(cpu, o.mem, register_operand=ro, qualification=q)
            case VmxOp.VMPTRLD:
                return self.vmptrld(cpu, o.mem, register_operand=ro, qualification=q)
            case VmxOp.VMPTRST:
                return self.vmptrst(cpu, register_operand=ro, qualification=q)
            case VmxOp.VMREAD:
                return self.vmread(cpu, o.reg, qualification=q)
            case VmxOp.VMWRITE:
                return self.vmwrite(cpu, o.reg, o.value, qualification=q)
            case VmxOp.VMLAUNCH:
                return self.vmlaunch(cpu)
            case VmxOp.VMRESUME:
                return self.vmresume(cpu)
            case VmxOp.VMCALL:
                return self.vmcall(cpu)
            case VmxOp.VMFUNC:
                return self.vmfunc(cpu, o.reg, o.value)
            case VmxOp.INVEPT:
                return self.invept(cpu, o.reg, o.mem, register_operand=ro, qualification=q)
            case VmxOp.INVVPID:
                return self.invvpid(cpu, o.reg, o.mem, register_operand=ro, qualification=q)
        raise AssertionError(op)

    def precheck(self, op: VmxOp, cpu: CpuState, operands: Operands | None = None) -> Result | None:
        """The outcome decided before the instruction's memory operand is accessed, or None when
        the operand must be accessed (read for VMXON/VMCLEAR/VMPTRLD/VMWRITE-from-memory/INVEPT/
        INVVPID, written for VMPTRST/VMREAD-to-memory). No state changes."""
        o = operands or Operands()
        op = VmxOp(op)
        match op:
            case VmxOp.VMXON:
                return self._vmxon_pre(cpu, o.register_operand, o.qualification)
            case VmxOp.VMCLEAR | VmxOp.VMPTRLD | VmxOp.VMPTRST:
                return self._root_checks(op, cpu, o.register_operand, o.qualification)
            case VmxOp.VMREAD:
                r = self._vmread(cpu, o.reg, o.qualification, commit=False)
                return None if r.kind is VmxResult.SUCCEED else r
            case VmxOp.VMWRITE:
                r = self._root_checks(op, cpu, False, o.qualification)
                if r is None and self.current is None:
                    return Result(VmxResult.FAIL_INVALID, why="no current VMCS")
                return r
            case VmxOp.INVEPT:
                return self._invept_pre(cpu, o.reg, o.register_operand, o.qualification)
            case VmxOp.INVVPID:
                return self._invvpid_pre(cpu, o.reg, o.register_operand, o.qualification)
        # VMXOFF, VMLAUNCH, VMRESUME, VMCALL, VMFUNC have no memory operand.
        return None

    # --- VMXON / VMXOFF ------------------------------------------------------------------------

    def _vmxon_pre(self, cpu: CpuState, register_operand: bool,
                   qualification: int) -> Result | None:
        if register_operand:
            return _ud("register operand")
        if not cpu.cr0 & CR0_PE:
            return _ud("CR0.PE=0")
        if not cpu.cr4 & CR4_VMXE:
            return _ud("CR4.VMXE=0")
        if cpu.v86:
            return _ud("RFLAGS.VM=1")
        if cpu.compatibility_mode:
            return _ud("compatibility mode")
        if self.mode is VmxMode.OUTSIDE:
            if cpu.cpl > 0:
                return _gp("CPL > 0")
            if (cpu.cr0 & VMX_CR0_FIXED0) != VMX_CR0_FIXED0 or cpu.cr0 & ~VMX_CR0_FIXED1 & _U64:
                return _gp(f"CR0 {cpu.cr0:#x} outside IA32_VMX_CR0_FIXED0/1")
            if (cpu.cr4 & VMX_CR4_FIXED0) != VMX_CR4_FIXED0 or cpu.cr4 & ~VMX_CR4_FIXED1 & _U64:
                return _gp(f"CR4 {cpu.cr4:#x} outside IA32_VMX_CR4_FIXED0/1")
            if not cpu.feature_control & FEATURE_CONTROL_LOCK:
                return _gp("IA32_FEATURE_CONTROL not locked")
            if not cpu.feature_control & FEATURE_CONTROL_VMX_OUTSIDE_SMX:
                return _gp("IA32_FEATURE_CONTROL: VMX outside SMX disabled")
            return None
        if self.mode is VmxMode.NON_ROOT:
            return _exit(ExitReason.VMXON, qualification)
        if cpu.cpl > 0:
            return _gp("CPL > 0")
        return self._fail(VmInstructionError.VMXON_IN_ROOT, commit=False)

    def vmxon(self, cpu: CpuState, addr: int, *, register_operand: bool = False,
              qualification: int = 0) -> Result:
        """VMXON m64 (`addr` = the physical address the operand holds)."""
        r = self._vmxon_pre(cpu, register_operand, qualification)
        if r is not None:
            return self._commit(r)
        if not vmx_address_ok(addr, self.maxphyaddr):
            return Result(VmxResult.FAIL_INVALID, why=f"VMXON pointer {addr:#x} misaligned/wide")
        rev = self._revision_dword(addr)
        if rev & VMCS_REVISION_MASK != self.revision_id or rev & VMCS_SHADOW_INDICATOR:
            return Result(VmxResult.FAIL_INVALID, why=f"VMXON region revision dword {rev:#x}")
        self.mode = VmxMode.ROOT
        self.vmxon_pointer = addr
        self.current_pointer = INVALID_VMCS_POINTER
        return _succeed()

    def vmxoff(self, cpu: CpuState) -> Result:
        r = self._root_checks(VmxOp.VMXOFF, cpu, False, 0)
        if r is not None:
            return r
        # No dual-monitor treatment, so never VMfail(23).
        for vmcs in self.vmcs.values():
            if vmcs.launched:
                vmcs.launched_before_vmxoff = True
        self.mode = VmxMode.OUTSIDE
        self.vmxon_pointer = None
        self.current_pointer = INVALID_VMCS_POINTER
        return _succeed()

    # --- VMCLEAR / VMPTRLD / VMPTRST -------------------------------------------------------------

    def vmclear(self, cpu: CpuState, addr: int, *, register_operand: bool = False,
                qualification: int = 0) -> Result:
        r = self._root_checks(VmxOp.VMCLEAR, cpu, register_operand, qualification)
        if r is not None:
            return r
        if not vmx_address_ok(addr, self.maxphyaddr):
            return self._fail(VmInstructionError.VMCLEAR_INVALID_ADDRESS, f"{addr:#x}")
        if addr == self.vmxon_pointer:
            return self._fail(VmInstructionError.VMCLEAR_VMXON_POINTER)
        vmcs = self.vmcs.pop(addr, None)
        if vmcs is not None:
            vmcs.launched = False
            vmcs.store(self.memory, addr)
        else:
            # Not active: its data is already in memory; initialise the launch state.
            self.memory.write(addr + VMCS_LAUNCH_STATE_OFFSET, 0)
        if addr == self.current_pointer:
            self.current_pointer = INVALID_VMCS_POINTER
        return _succeed()

    def vmptrld(self, cpu: CpuState, addr: int, *, register_operand: bool = False,
                qualification: int = 0) -> Result:
        r = self._root_checks(VmxOp.VMPTRLD, cpu, register_operand, qualification)
        if r is not None:
            return r
        if not vmx_address_ok(addr, self.maxphyaddr):
            return self._fail(VmInstructionError.VMPTRLD_INVALID_ADDRESS, f"{addr:#x}")
        if addr == self.vmxon_pointer:
            return self._fail(VmInstructionError.VMPTRLD_VMXON_POINTER)
        rev = self._revision_dword(addr)
        if rev & VMCS_REVISION_MASK != self.revision_id or rev & VMCS_SHADOW_INDICATOR:
            # Bit 31 set: a shadow VMCS, and VMCS shadowing is not supported.
            return self._fail(VmInstructionError.VMPTRLD_INCORRECT_REVISION, f"{rev:#x}")
        if addr not in self.vmcs:
            self.vmcs[addr] = Vmcs.load(self.memory, addr)
        self.current_pointer = addr
        return _succeed()

    def vmptrst(self, cpu: CpuState, *, register_operand: bool = False,
                qualification: int = 0) -> Result:
        r = self._root_checks(VmxOp.VMPTRST, cpu, register_operand, qualification)
        if r is not None:
            return r
        return _succeed(value=self.current_pointer)

    # --- VMREAD / VMWRITE ------------------------------------------------------------------------

    def _vmread(self, cpu: CpuState, encoding: int, qualification: int, commit: bool) -> Result:
        r = self._root_checks(VmxOp.VMREAD, cpu, False, qualification)
        if r is not None:
            return r
        vmcs = self.current
        if vmcs is None:
            return Result(VmxResult.FAIL_INVALID, why="no current VMCS")
        access = field_by_encoding(encoding & cpu.operand_mask)
        if access is None:
            return self._fail(VmInstructionError.UNSUPPORTED_VMCS_COMPONENT, f"{encoding:#x}",
                              commit=commit)
        value = vmcs[access.field.name]
        if access.high:
            value >>= 32
        return _succeed(value=value & cpu.operand_mask)

    def vmread(self, cpu: CpuState, encoding: int, *, qualification: int = 0) -> Result:
        """VMREAD: `encoding` is the register operand; the result's `value` is the destination."""
        return self._vmread(cpu, encoding, qualification, commit=True)

    def vmwrite(self, cpu: CpuState, encoding: int, value: int, *,
                qualification: int = 0) -> Result:
        """VMWRITE: `encoding` is the register operand, `value` the source (register or memory)."""
        r = self._root_checks(VmxOp.VMWRITE, cpu, False, qualification)
        if r is not None:
            return r
        vmcs = self.current
        if vmcs is None:
            return Result(VmxResult.FAIL_INVALID, why="no current VMCS")
        access = field_by_encoding(encoding & cpu.operand_mask)
        if access is None:
            return self._fail(VmInstructionError.UNSUPPORTED_VMCS_COMPONENT, f"{encoding:#x}")
        f = access.field
        if f.read_only:
            return self._fail(VmInstructionError.VMWRITE_READ_ONLY_COMPONENT, f.name)
        value &= cpu.operand_mask
        if access.high:
            vmcs[f.name] = (vmcs[f.name] & _U32) | (value & _U32) << 32
        else:
            vmcs[f.name] = value
        return _succeed()

    # --- VMLAUNCH / VMRESUME -------------------------------------------------------------------

    def vmlaunch(self, cpu: CpuState) -> Result:
        return self._launch_or_resume(cpu, launch=True)

    def vmresume(self, cpu: CpuState) -> Result:
        return self._launch_or_resume(cpu, launch=False)

    def _launch_or_resume(self, cpu: CpuState, launch: bool) -> Result:
        op = VmxOp.VMLAUNCH if launch else VmxOp.VMRESUME
        r = self._root_checks(op, cpu, False, 0)
        if r is not None:
            return r
        vmcs = self.current
        if vmcs is None:
            # (A shadow VMCS can never be current: VMPTRLD rejects it, error 11.)
            return Result(VmxResult.FAIL_INVALID, why="no current VMCS")
        if cpu.mov_ss_blocking:
            return self._fail(VmInstructionError.ENTRY_EVENTS_BLOCKED_BY_MOV_SS)
        if launch and vmcs.launched:
            return self._fail(VmInstructionError.VMLAUNCH_NONCLEAR_VMCS)
        if not launch and not vmcs.launched:
            return self._fail(VmInstructionError.VMRESUME_NONLAUNCHED_VMCS)
        if not launch and vmcs.launched_before_vmxoff:
            return self._fail(VmInstructionError.VMRESUME_AFTER_VMXOFF)
        return self.vm_entry(cpu, launch)

    def vm_entry(self, cpu: CpuState, launch: bool) -> Result:
        """VM entry from the current VMCS, after the instruction's own checks (steps 8-12).

        Control checks (error 7), host-state checks (error 8), guest-state checks (VM-entry
        failure exit 0x80000021), then the guest state is loaded and the guest runs.
        """
        vmcs = self._need_current()
        why = self.check_controls(vmcs)
        if why is not None:
            return self._fail(VmInstructionError.ENTRY_INVALID_CONTROL_FIELD, why)
        why = self.check_host_state(vmcs, cpu)
        if why is not None:
            return self._fail(VmInstructionError.ENTRY_INVALID_HOST_STATE, why)
        problem = self.check_guest_state(vmcs)
        pdptes = None
        if problem is None:
            pdptes, problem = self._load_pdptes(vmcs)
        if problem is not None:
            qual, why = problem
            return self._entry_failure(vmcs, cpu, qual, why)
        effects = self._load_guest(vmcs, cpu, pdptes)
        if launch:
            vmcs.launched = True
        self.mode = VmxMode.NON_ROOT
        self.guest = effects
        self.preemption_timer = effects.preemption_timer
        return Result(VmxResult.VM_ENTRY, entry=effects, invalidation=effects.invalidation)

    # --- VM-entry checks -----------------------------------------------------------------------

    def check_controls(self, vmcs: Vmcs) -> str | None:
        """Checks on VM-execution, VM-exit and VM-entry control fields (SDM 26.2.1); the first
        problem found, or None."""
        for name, msr in CONTROL_CHECK_MSRS.items():
            value = vmcs.proc2 if name == "SECONDARY_VM_EXEC_CONTROL" else vmcs[name]
            bad = controls_problem(value, VMX_MSRS[msr])
            if bad:
                return f"{name} {value:#x}: bits {bad:#x} break MSR {msr:#x}"
        pin, proc, proc2 = vmcs.pin, vmcs.proc, vmcs.proc2
        if vmcs["CR3_TARGET_COUNT"] > CR3_TARGET_COUNT_MAX:
            return f"CR3-target count {vmcs['CR3_TARGET_COUNT']} > {CR3_TARGET_COUNT_MAX}"
        if proc & PROC_USE_IO_BITMAPS:
            for name in ("IO_BITMAP_A", "IO_BITMAP_B"):
                if not vmx_address_ok(vmcs[name], self.maxphyaddr):
                    return f"{name} {vmcs[name]:#x} misaligned/wide"
        if proc & PROC_USE_MSR_BITMAPS and not vmx_address_ok(vmcs["MSR_BITMAP"],
                                                               self.maxphyaddr):
            return f"MSR bitmap {vmcs['MSR_BITMAP']:#x} misaligned/wide"
        if pin & PIN_VIRTUAL_NMIS and not pin & PIN_NMI_EXITING:
            return "virtual NMIs without NMI exiting"
        if proc & PROC_NMI_WINDOW_EXITING and not pin & PIN_VIRTUAL_NMIS:
            return "NMI-window exiting without virtual NMIs"
        if proc2 & PROC2_ENABLE_EPT:
            why = eptp_problem(vmcs["EPT_POINTER"], self.maxphyaddr)
            if why is not None:
                return f"EPTP {vmcs['EPT_POINTER']:#x}: {why}"
        if proc2 & PROC2_ENABLE_VPID and vmcs["VIRTUAL_PROCESSOR_ID"] == 0:
            return "enable VPID with VPID 0"
        if proc2 & PROC2_UNRESTRICTED_GUEST and not proc2 & PROC2_ENABLE_EPT:
            return "unrestricted guest without EPT"
        if proc2 & PROC2_ENABLE_VM_FUNCTIONS:
            vmfunc = vmcs["VM_FUNCTION_CONTROL"]
            if vmfunc & ~VMFUNC_SUPPORTED:
                return f"VM-function controls {vmfunc:#x}: reserved bits set"
            if vmfunc & VMFUNC_EPTP_SWITCHING:
                if not proc2 & PROC2_ENABLE_EPT:
                    return "EPTP switching without EPT"
                if not vmx_address_ok(vmcs["EPTP_LIST_ADDRESS"], self.maxphyaddr):
                    return f"EPTP-list address {vmcs['EPTP_LIST_ADDRESS']:#x} misaligned/wide"
        if vmcs.exit_ctls & EXIT_CTL_SAVE_PREEMPTION_TIMER and not pin & PIN_PREEMPTION_TIMER:
            return "save preemption timer without the preemption timer"
        for name in ("VM_EXIT_MSR_STORE_COUNT", "VM_EXIT_MSR_LOAD_COUNT",
                     "VM_ENTRY_MSR_LOAD_COUNT"):
            if vmcs[name]:
                return f"{name} {vmcs[name]}: MSR lists are not supported (count must be 0)"
        return self._event_injection_problem(vmcs)

    def _event_injection_problem(self, vmcs: Vmcs) -> str | None:
        """VM-entry event-injection checks (SDM 26.2.1.3)."""
        info = vmcs["VM_ENTRY_INTR_INFO_FIELD"]
        if not info & INTR_INFO_VALID:
            return None
        vector = info & 0xFF
        itype = (info >> INTR_INFO_TYPE_SHIFT) & 7
        if itype == InterruptionType.RESERVED.value:
            return "injection of reserved interruption type 1"
        if itype == InterruptionType.NMI.value and vector != 2:
            return f"NMI injection with vector {vector}"
        if itype == InterruptionType.HARDWARE_EXCEPTION.value and vector > 31:
            return f"hardware exception injection with vector {vector}"
        if itype == InterruptionType.OTHER_EVENT.value and vector != 0:
            return f"other-event injection with vector {vector}"
        pe = bool(vmcs["GUEST_CR0"] & CR0_PE)
        ug = bool(vmcs.proc2 & PROC2_UNRESTRICTED_GUEST)
        needs_code = ((not ug or pe) and itype == InterruptionType.HARDWARE_EXCEPTION.value
                      and vector in EXCEPTIONS_WITH_ERROR_CODE)
        if bool(info & INTR_INFO_DELIVER_ERROR_CODE) != needs_code:
            return f"deliver-error-code bit {int(bool(info & INTR_INFO_DELIVER_ERROR_CODE))} " \
                   f"for type {itype} vector {vector}"
        if info & ENTRY_INTR_INFO_RESERVED:
            return "VM-entry interruption information bits 30:12 set"
        if info & INTR_INFO_DELIVER_ERROR_CODE and \
                vmcs["VM_ENTRY_EXCEPTION_ERROR_CODE"] & mask(31, 16):
            return "VM-entry exception error code bits 31:16 set"
        if itype in (InterruptionType.SOFTWARE_INTERRUPT.value,
                     InterruptionType.PRIVILEGED_SOFTWARE_EXCEPTION.value,
                     InterruptionType.SOFTWARE_EXCEPTION.value):
            length = vmcs["VM_ENTRY_INSTRUCTION_LEN"]
            low = 0 if VMX_MISC & MISC_ZERO_LENGTH_INJECTION else 1
            if not low <= length <= 15:
                return f"VM-entry instruction length {length} for a software event"
        return None

    def check_host_state(self, vmcs: Vmcs, cpu: CpuState) -> str | None:
        """Checks on the host-state area (SDM 26.2.2-26.2.4); the first problem, or None."""
        cr0, cr3, cr4 = vmcs["HOST_CR0"], vmcs["HOST_CR3"], vmcs["HOST_CR4"]
        host64 = bool(vmcs.exit_ctls & EXIT_CTL_HOST_ADDRESS_SPACE_SIZE)
        guest64 = bool(vmcs.entry_ctls & ENTRY_CTL_IA32E_MODE_GUEST)
        if (cr0 & VMX_CR0_FIXED0) != VMX_CR0_FIXED0 or cr0 & ~VMX_CR0_FIXED1 & _U64:
            return f"host CR0 {cr0:#x} outside the fixed bits"
        if (cr4 & VMX_CR4_FIXED0) != VMX_CR4_FIXED0 or cr4 & ~VMX_CR4_FIXED1 & _U64:
            return f"host CR4 {cr4:#x} outside the fixed bits"
        if cr3 >> self.maxphyaddr:
            return f"host CR3 {cr3:#x} wider than MAXPHYADDR"
        for name in ("HOST_IA32_SYSENTER_ESP", "HOST_IA32_SYSENTER_EIP"):
            if not canonical(vmcs[name]):
                return f"{name} {vmcs[name]:#x} not canonical"
        if vmcs.exit_ctls & EXIT_CTL_LOAD_PAT and not pat_valid(vmcs["HOST_IA32_PAT"]):
            return f"host PAT {vmcs['HOST_IA32_PAT']:#x} invalid"
        if vmcs.exit_ctls & EXIT_CTL_LOAD_EFER:
            efer = vmcs["HOST_IA32_EFER"]
            if efer & EFER_RESERVED:
                return f"host EFER {efer:#x}: reserved bits"
            if bool(efer & EFER_LMA) != host64 or bool(efer & EFER_LME) != host64:
                return f"host EFER {efer:#x}: LMA/LME differ from host address-space size"
        for seg in ("ES", "CS", "SS", "DS", "FS", "GS", "TR"):
            sel = vmcs[f"HOST_{seg}_SELECTOR"]
            if sel & 7:
                return f"host {seg} selector {sel:#x}: RPL or TI set"
        if vmcs["HOST_CS_SELECTOR"] == 0:
            return "host CS selector 0"
        if vmcs["HOST_TR_SELECTOR"] == 0:
            return "host TR selector 0"
        if not host64 and vmcs["HOST_SS_SELECTOR"] == 0:
            return "host SS selector 0 with a 32-bit host"
        for name in ("HOST_FS_BASE", "HOST_GS_BASE", "HOST_GDTR_BASE", "HOST_IDTR_BASE",
                     "HOST_TR_BASE"):
            if not canonical(vmcs[name]):
                return f"{name} {vmcs[name]:#x} not canonical"
        rip = vmcs["HOST_RIP"]
        if not cpu.efer & EFER_LMA:
            if guest64 or host64:
                return "outside IA-32e mode: IA-32e mode guest and host address-space size " \
                       "must be 0"
        elif not host64:
            return "in IA-32e mode: host address-space size must be 1"
        if not host64:
            if guest64:
                return "32-bit host with an IA-32e mode guest"
            if cr4 & CR4_PCIDE:
                return "32-bit host with CR4.PCIDE=1"
            if rip >> 32:
                return f"32-bit host with RIP {rip:#x}"
        else:
            if not cr4 & CR4_PAE:
                return "64-bit host with CR4.PAE=0"
            if not canonical(rip):
                return f"host RIP {rip:#x} not canonical"
        return None

    def check_guest_state(self, vmcs: Vmcs) -> tuple[int, str] | None:
        """Checks on the guest-state area (SDM 26.3.1.1-26.3.1.5): (exit qualification, why) of
        the first problem, or None."""
        why = (self._guest_regs_problem(vmcs) or self._guest_segments_problem(vmcs)
               or self._guest_rip_rflags_problem(vmcs) or self._guest_nonreg_problem(vmcs))
        if why is not None:
            return ENTRY_FAIL_DEFAULT, why
        link = vmcs["VMCS_LINK_POINTER"]
        if link != _U64:
            if not vmx_address_ok(link, self.maxphyaddr):
                return ENTRY_FAIL_VMCS_LINK_POINTER, f"VMCS link pointer {link:#x} invalid"
            rev = self._revision_dword(link)
            if rev & VMCS_REVISION_MASK != self.revision_id or rev & VMCS_SHADOW_INDICATOR:
                return ENTRY_FAIL_VMCS_LINK_POINTER, f"VMCS link pointer revision {rev:#x}"
            # Outside SMM (this processor has none) it must not be the current VMCS itself.
            if link == self.current_pointer:
                return ENTRY_FAIL_VMCS_LINK_POINTER, "VMCS link pointer = current-VMCS pointer"
        return None

    def _guest_regs_problem(self, vmcs: Vmcs) -> str | None:
        cr0, cr3, cr4 = vmcs["GUEST_CR0"], vmcs["GUEST_CR3"], vmcs["GUEST_CR4"]
        proc2, entry = vmcs.proc2, vmcs.entry_ctls
        ug = bool(proc2 & PROC2_UNRESTRICTED_GUEST)
        guest64 = bool(entry & ENTRY_CTL_IA32E_MODE_GUEST)
        fixed0 = VMX_CR0_FIXED0 & ~(CR0_PE | CR0_PG) if ug else VMX_CR0_FIXED0
        if (cr0 & fixed0) != fixed0 or cr0 & ~VMX_CR0_FIXED1 & _U64:
            return f"guest CR0 {cr0:#x} outside the fixed bits"
        if cr0 & CR0_PG and not cr0 & CR0_PE:
            return "guest CR0.PG=1 with CR0.PE=0"
        if (cr4 & VMX_CR4_FIXED0) != VMX_CR4_FIXED0 or cr4 & ~VMX_CR4_FIXED1 & _U64:
            return f"guest CR4 {cr4:#x} outside the fixed bits"
        if entry & ENTRY_CTL_LOAD_DEBUG_CONTROLS and \
                vmcs["GUEST_IA32_DEBUGCTL"] & ~DEBUGCTL_SUPPORTED:
            return f"guest DEBUGCTL {vmcs['GUEST_IA32_DEBUGCTL']:#x}: reserved bits"
        if guest64 and not (cr0 & CR0_PG and cr4 & CR4_PAE):
            return "IA-32e mode guest without CR0.PG=1 and CR4.PAE=1"
        if not guest64 and cr4 & CR4_PCIDE:
            return "CR4.PCIDE=1 outside IA-32e mode"
        if cr3 >> self.maxphyaddr:
            return f"guest CR3 {cr3:#x} wider than MAXPHYADDR"
        if entry & ENTRY_CTL_LOAD_DEBUG_CONTROLS and vmcs["GUEST_DR7"] >> 32:
            return f"guest DR7 {vmcs['GUEST_DR7']:#x}: bits 63:32 set"
        for name in ("GUEST_SYSENTER_ESP", "GUEST_SYSENTER_EIP"):
            if not canonical(vmcs[name]):
                return f"{name} {vmcs[name]:#x} not canonical"
        if entry & ENTRY_CTL_LOAD_PAT and not pat_valid(vmcs["GUEST_IA32_PAT"]):
            return f"guest PAT {vmcs['GUEST_IA32_PAT']:#x} invalid"
        if entry & ENTRY_CTL_LOAD_EFER:
            efer = vmcs["GUEST_IA32_EFER"]
            if efer & EFER_RESERVED:
                return f"guest EFER {efer:#x}: reserved bits"
            if bool(efer & EFER_LMA) != guest64:
                return "guest EFER.LMA differs from IA-32e mode guest"
            if cr0 & CR0_PG and bool(efer & EFER_LME) != guest64:
                return "guest EFER.LME differs from IA-32e mode guest (CR0.PG=1)"
        return None

    def _guest_segments_problem(self, vmcs: Vmcs) -> str | None:
        """SDM 26.3.1.2 (segment registers) and 26.3.1.3 (GDTR, IDTR)."""
        v86 = bool(vmcs["GUEST_RFLAGS"] & RFLAGS_VM)
        ug = bool(vmcs.proc2 & PROC2_UNRESTRICTED_GUEST)
        guest64 = bool(vmcs.entry_ctls & ENTRY_CTL_IA32E_MODE_GUEST)
        seg = {s: _seg(vmcs, s) for s in SEGMENTS}

        def usable(s: str) -> bool:
            return not seg[s][3] & AR_UNUSABLE

        # Selectors.
        if seg["TR"][0] & 4:
            return "guest TR selector TI=1"
        if usable("LDTR") and seg["LDTR"][0] & 4:
            return "guest LDTR selector TI=1"
        if not v86 and not ug and seg["SS"][0] & 3 != seg["CS"][0] & 3:
            return "guest SS.RPL differs from CS.RPL"
        # Bases.
        if v86:
            for s in ("CS", "SS", "DS", "ES", "FS", "GS"):
                if seg[s][1] != seg[s][0] << 4:
                    return f"virtual-8086 guest {s} base is not selector << 4"
        for s in ("TR", "FS", "GS"):
            if not canonical(seg[s][1]):
                return f"guest {s} base not canonical"
        if usable("LDTR") and not canonical(seg["LDTR"][1]):
            return "guest LDTR base not canonical"
        if seg["CS"][1] >> 32:
            return "guest CS base bits 63:32 set"
        for s in ("SS", "DS", "ES"):
            if usable(s) and seg[s][1] >> 32:
                return f"guest {s} base bits 63:32 set"
        # Limits and access rights of CS, SS, DS, ES, FS, GS.
        if v86:
            for s in ("CS", "SS", "DS", "ES", "FS", "GS"):
                if seg[s][2] != 0xFFFF:
                    return f"virtual-8086 guest {s} limit is not 0xFFFF"
                if seg[s][3] != 0xF3:
                    return f"virtual-8086 guest {s} access rights are not 0xF3"
        else:
            why = self._guest_data_code_ar_problem(seg, ug, guest64, vmcs["GUEST_CR0"])
            if why is not None:
                return why
        # TR.
        _, _, limit, ar = seg["TR"]
        ttype = ar & 0xF
        if (guest64 and ttype != 11) or (not guest64 and ttype not in (3, 11)):
            return f"guest TR type {ttype}"
        if ar & AR_S or not ar & AR_P or ar & (AR_RESERVED_11_8 | AR_RESERVED_31_17):
            return f"guest TR access rights {ar:#x}"
        if ar & AR_UNUSABLE:
            return "guest TR unusable"
        why = _g_problem(limit, ar)
        if why:
            return f"guest TR: {why}"
        # LDTR.
        if usable("LDTR"):
            _, _, limit, ar = seg["LDTR"]
            if ar & 0xF != 2 or ar & AR_S or not ar & AR_P or \
                    ar & (AR_RESERVED_11_8 | AR_RESERVED_31_17):
                return f"guest LDTR access rights {ar:#x}"
            why = _g_problem(limit, ar)
            if why:
                return f"guest LDTR: {why}"
        # GDTR, IDTR.
        for t in ("GDTR", "IDTR"):
            if not canonical(vmcs[f"GUEST_{t}_BASE"]):
                return f"guest {t} base not canonical"
            if vmcs[f"GUEST_{t}_LIMIT"] >> 16:
                return f"guest {t} limit bits 31:16 set"
        return None

    @staticmethod
    def _guest_data_code_ar_problem(seg, ug: bool, guest64: bool, cr0: int) -> str | None:
        cs_ar = seg["CS"][3]
        ss_sel, _, _, ss_ar = seg["SS"]
        cs_type = cs_ar & 0xF
        ss_dpl = (ss_ar >> 5) & 3
        # Types.
        if cs_type not in ((3, 9, 11, 13, 15) if ug else (9, 11, 13, 15)):
            return f"guest CS type {cs_type}"
        if not ss_ar & AR_UNUSABLE and ss_ar & 0xF not in (3, 7):
            return f"guest SS type {ss_ar & 0xF}"
        for s in ("DS", "ES", "FS", "GS"):
            ar = seg[s][3]
            if ar & AR_UNUSABLE:
                continue
            if not ar & 1 or (ar & 8 and not ar & 2):
                return f"guest {s} type {ar & 0xF}"
        # S, P, reserved bits, G for CS and the usable ones.
        for s in ("CS", "SS", "DS", "ES", "FS", "GS"):
            _, _, limit, ar = seg[s]
            if s != "CS" and ar & AR_UNUSABLE:
                continue
            if not ar & AR_S:
                return f"guest {s} S=0"
            if not ar & AR_P:
                return f"guest {s} not present"
            if ar & (AR_RESERVED_11_8 | AR_RESERVED_31_17):
                return f"guest {s} access rights {ar:#x}: reserved bits"
            why = _g_problem(limit, ar)
            if why:
                return f"guest {s}: {why}"
        # DPLs.
        cs_dpl = (cs_ar >> 5) & 3
        if cs_type == 3 and cs_dpl != 0:
            return "guest CS type 3 with DPL != 0"
        if cs_type in (9, 11) and cs_dpl != ss_dpl:
            return "guest CS DPL differs from SS DPL (non-conforming code)"
        if cs_type in (13, 15) and cs_dpl > ss_dpl:
            return "guest CS DPL above SS DPL (conforming code)"
        if not ug and ss_dpl != ss_sel & 3:
            return "guest SS DPL differs from SS.RPL"
        if (cs_type == 3 or not cr0 & CR0_PE) and ss_dpl != 0:
            return "guest SS DPL must be 0 (real-mode guest)"
        for s in ("DS", "ES", "FS", "GS"):
            sel, _, _, ar = seg[s]
            if not ug and not ar & AR_UNUSABLE and ar & 0xF <= 11 and (ar >> 5) & 3 < sel & 3:
                return f"guest {s} DPL below RPL"
        if guest64 and cs_ar & AR_L and cs_ar & AR_DB:
            return "guest CS L=1 and D/B=1 in IA-32e mode"
        return None

    def _guest_rip_rflags_problem(self, vmcs: Vmcs) -> str | None:
        rip, rflags = vmcs["GUEST_RIP"], vmcs["GUEST_RFLAGS"]
        guest64 = bool(vmcs.entry_ctls & ENTRY_CTL_IA32E_MODE_GUEST)
        cs_l = bool(vmcs["GUEST_CS_AR_BYTES"] & AR_L)
        if guest64 and cs_l:
            if not canonical(rip):
                return f"guest RIP {rip:#x} not canonical (64-bit guest)"
        elif rip >> 32:
            return f"guest RIP {rip:#x}: bits 63:32 set outside 64-bit mode"
        if rflags & RFLAGS_RESERVED or not rflags & RFLAGS_FIXED1:
            return f"guest RFLAGS {rflags:#x}: reserved bits"
        if rflags & RFLAGS_VM and (guest64 or not vmcs["GUEST_CR0"] & CR0_PE):
            return "guest RFLAGS.VM=1 with an IA-32e mode guest or CR0.PE=0"
        info = vmcs["VM_ENTRY_INTR_INFO_FIELD"]
        if info & INTR_INFO_VALID and (info >> 8) & 7 == 0 and not rflags & RFLAGS_IF:
            return "external-interrupt injection with RFLAGS.IF=0"
        return None

    def _guest_nonreg_problem(self, vmcs: Vmcs) -> str | None:
        activity = vmcs["GUEST_ACTIVITY_STATE"]
        intr = vmcs["GUEST_INTERRUPTIBILITY_INFO"]
        info = vmcs["VM_ENTRY_INTR_INFO_FIELD"]
        injecting = bool(info & INTR_INFO_VALID)
        itype = (info >> 8) & 7
        vector = info & 0xFF
        if activity > 3 or ActivityState(activity) not in SUPPORTED_ACTIVITY_STATES:
            return f"guest activity state {activity} not supported"
        if activity == ActivityState.HLT.value and (vmcs["GUEST_SS_AR_BYTES"] >> 5) & 3:
            return "HLT activity state with SS.DPL != 0"
        if intr & (INTERRUPTIBILITY_STI | INTERRUPTIBILITY_MOV_SS) and activity != 0:
            return "blocking by STI or MOV SS outside the active state"
        if injecting and activity == ActivityState.HLT.value:
            allowed = (itype in (InterruptionType.EXTERNAL_INTERRUPT.value,
                                 InterruptionType.NMI.value)
                       or (itype == InterruptionType.HARDWARE_EXCEPTION.value
                           and vector in (1, 18))
                       or (itype == InterruptionType.OTHER_EVENT.value and vector == 0))
            if not allowed:
                return f"injection of type {itype} vector {vector} into the HLT state"
        if intr & ~mask(3, 0):
            return f"guest interruptibility {intr:#x}: reserved bits"
        if intr & INTERRUPTIBILITY_STI and intr & INTERRUPTIBILITY_MOV_SS:
            return "blocking by both STI and MOV SS"
        if intr & INTERRUPTIBILITY_STI and not vmcs["GUEST_RFLAGS"] & RFLAGS_IF:
            return "blocking by STI with RFLAGS.IF=0"
        if injecting and itype == 0 and intr & (INTERRUPTIBILITY_STI | INTERRUPTIBILITY_MOV_SS):
            return "external-interrupt injection with blocking by STI or MOV SS"
        if injecting and itype == 2 and intr & INTERRUPTIBILITY_MOV_SS:
            return "NMI injection with blocking by MOV SS"
        if intr & INTERRUPTIBILITY_SMI:
            return "blocking by SMI outside SMM"
        if injecting and itype == 2 and vmcs.pin & PIN_VIRTUAL_NMIS and \
                intr & INTERRUPTIBILITY_NMI:
            return "NMI injection with virtual-NMI blocking"
        pending = vmcs["GUEST_PENDING_DBG_EXCEPTIONS"]
        if pending & PENDING_DBG_RESERVED:
            return f"pending debug exceptions {pending:#x}: reserved bits"
        if intr & (INTERRUPTIBILITY_STI | INTERRUPTIBILITY_MOV_SS) or \
                activity == ActivityState.HLT.value:
            tf = bool(vmcs["GUEST_RFLAGS"] & RFLAGS_TF)
            btf = bool(vmcs["GUEST_IA32_DEBUGCTL"] & DEBUGCTL_BTF)
            bs = bool(pending & PENDING_DBG_BS)
            if tf and not btf and not bs:
                return "pending debug BS=0 with RFLAGS.TF=1 and DEBUGCTL.BTF=0"
            if (not tf or btf) and bs:
                return "pending debug BS=1 with RFLAGS.TF=0 or DEBUGCTL.BTF=1"
        return None

    def _load_pdptes(self, vmcs: Vmcs) -> tuple[list[int] | None, tuple[int, str] | None]:
        """PDPTEs for a guest with PAE paging (SDM 26.3.1.6): from the VMCS with EPT, else from
        memory at CR3[31:5]."""
        cr0, cr4 = vmcs["GUEST_CR0"], vmcs["GUEST_CR4"]
        pae = bool(cr0 & CR0_PG and cr4 & CR4_PAE
                   and not vmcs.entry_ctls & ENTRY_CTL_IA32E_MODE_GUEST)
        if not pae:
            return None, None
        if vmcs.proc2 & PROC2_ENABLE_EPT:
            pdptes = [vmcs[f"GUEST_PDPTR{i}"] for i in range(4)]
        else:
            base = vmcs["GUEST_CR3"] & mask(31, 5)
            pdptes = [self.memory.read(base + 8 * i) for i in range(4)]
        for i, pdpte in enumerate(pdptes):
            if _pdpte_problem(pdpte, self.maxphyaddr):
                return None, (ENTRY_FAIL_PDPTE, f"PDPTE{i} {pdpte:#x}: reserved bits")
        return pdptes, None

    # --- VM entry: loading -----------------------------------------------------------------------

    def _load_guest(self, vmcs: Vmcs, cpu: CpuState, pdptes: list[int] | None) -> EntryEffects:
        entry, proc2 = vmcs.entry_ctls, vmcs.proc2
        guest: dict[str, int] = {}
        skip = {"VMCS_LINK_POINTER", "VMX_PREEMPTION_TIMER_VALUE", "GUEST_SMBASE",
                "GUEST_DR7", "GUEST_IA32_DEBUGCTL", "GUEST_IA32_PAT", "GUEST_IA32_EFER",
                "GUEST_PDPTR0", "GUEST_PDPTR1", "GUEST_PDPTR2", "GUEST_PDPTR3"}
        for f in FIELDS:
            if f.type is FieldType.GUEST and f.name not in skip:
                guest[f.name] = vmcs[f.name]
        if entry & ENTRY_CTL_LOAD_DEBUG_CONTROLS:
            guest["GUEST_DR7"] = (vmcs["GUEST_DR7"] & ~(1 << 12 | 3 << 14)) | DR7_INIT
            guest["GUEST_IA32_DEBUGCTL"] = vmcs["GUEST_IA32_DEBUGCTL"]
        if entry & ENTRY_CTL_LOAD_PAT:
            guest["GUEST_IA32_PAT"] = vmcs["GUEST_IA32_PAT"]
        guest64 = bool(entry & ENTRY_CTL_IA32E_MODE_GUEST)
        if entry & ENTRY_CTL_LOAD_EFER:
            efer = vmcs["GUEST_IA32_EFER"]
        else:
            efer = cpu.efer & ~EFER_LMA
            if guest64:
                efer |= EFER_LMA
            if vmcs["GUEST_CR0"] & CR0_PG:
                efer = (efer & ~EFER_LME) | (EFER_LME if guest64 else 0)
        guest["GUEST_IA32_EFER"] = efer
        if pdptes is not None:
            for i, v in enumerate(pdptes):
                guest[f"GUEST_PDPTR{i}"] = v
        ept = bool(proc2 & PROC2_ENABLE_EPT)
        vpid_on = bool(proc2 & PROC2_ENABLE_VPID)
        info = vmcs["VM_ENTRY_INTR_INFO_FIELD"]
        event = None
        pending_mtf = False
        if info & INTR_INFO_VALID:
            itype = (info >> 8) & 7
            if itype == InterruptionType.OTHER_EVENT.value:
                pending_mtf = True
            else:
                code = vmcs["VM_ENTRY_EXCEPTION_ERROR_CODE"] \
                    if info & INTR_INFO_DELIVER_ERROR_CODE else 0
                length = vmcs["VM_ENTRY_INSTRUCTION_LEN"] if itype in (4, 5, 6) else 0
                event = InjectedEvent(info, code, length)
        return EntryEffects(
            guest=guest, ept_enabled=ept, eptp=vmcs["EPT_POINTER"] if ept else 0,
            vpid_enabled=vpid_on, vpid=vmcs["VIRTUAL_PROCESSOR_ID"] if vpid_on else 0,
            unrestricted_guest=bool(proc2 & PROC2_UNRESTRICTED_GUEST),
            preemption_timer=(vmcs["VMX_PREEMPTION_TIMER_VALUE"]
                              if vmcs.pin & PIN_PREEMPTION_TIMER else None),
            event=event, pending_mtf=pending_mtf,
            invalidation=None if vpid_on else InvalidationRequest(Invalidation.VPID, vpid=0))

    # --- VM exit ---------------------------------------------------------------------------------

    def _host_state(self, vmcs: Vmcs, cur_cr0: int, cur_efer: int) -> HostState:
        """State loaded from the host-state area (SDM 27.5)."""
        exit_ctls = vmcs.exit_ctls
        host64 = bool(exit_ctls & EXIT_CTL_HOST_ADDRESS_SPACE_SIZE)
        cr0 = (vmcs["HOST_CR0"] & CR0_HOST_LOADED) | (cur_cr0 & ~CR0_HOST_LOADED & _U32)
        cr4 = vmcs["HOST_CR4"] | VMX_CR4_FIXED0
        cr4 = cr4 | CR4_PAE if host64 else cr4 & ~CR4_PCIDE
        if exit_ctls & EXIT_CTL_LOAD_EFER:
            efer = vmcs["HOST_IA32_EFER"]
        else:
            efer = (cur_efer & ~(EFER_LMA | EFER_LME)) | ((EFER_LMA | EFER_LME) if host64 else 0)
        return HostState(
            cr0=cr0, cr3=vmcs["HOST_CR3"] & mask(self.maxphyaddr - 1, 0), cr4=cr4, efer=efer,
            pat=vmcs["HOST_IA32_PAT"] if exit_ctls & EXIT_CTL_LOAD_PAT else None,
            rsp=vmcs["HOST_RSP"], rip=vmcs["HOST_RIP"], rflags=RFLAGS_FIXED1, cs_l=host64,
            selectors={s: vmcs[f"HOST_{s}_SELECTOR"]
                       for s in ("ES", "CS", "SS", "DS", "FS", "GS", "TR")},
            fs_base=vmcs["HOST_FS_BASE"], gs_base=vmcs["HOST_GS_BASE"],
            tr_base=vmcs["HOST_TR_BASE"], gdtr_base=vmcs["HOST_GDTR_BASE"],
            idtr_base=vmcs["HOST_IDTR_BASE"], sysenter_cs=vmcs["HOST_IA32_SYSENTER_CS"],
            sysenter_esp=vmcs["HOST_IA32_SYSENTER_ESP"],
            sysenter_eip=vmcs["HOST_IA32_SYSENTER_EIP"])

    def _entry_failure(self, vmcs: Vmcs, cpu: CpuState, qual: int, why: str) -> Result:
        """VM-entry failure after the guest-state checks: exit reason and qualification are
        written, the host state is loaded, the processor stays in VMX root operation."""
        vmcs["VM_EXIT_REASON"] = EXIT_REASON_INVALID_GUEST_STATE
        vmcs["EXIT_QUALIFICATION"] = qual
        host = self._host_state(vmcs, cpu.cr0, cpu.efer)
        return Result(VmxResult.VM_EXIT, exit_reason=EXIT_REASON_INVALID_GUEST_STATE,
                      qualification=qual, host=host, why=why)

    def vm_exit(self, reason: ExitReason | int, qualification: int = 0, gla: int = 0,
                gpa: int = 0, instr_len: int = 0, instr_info: int = 0,
                guest_state: Mapping[str, int] | None = None, *, intr_info: int = 0,
                intr_error: int = 0, idt_vectoring_info: int = 0,
                idt_vectoring_error: int = 0) -> Result:
        """Perform a VM exit from VMX non-root operation.

        Writes the exit-information fields, saves `guest_state` (guest-state field name ->
        value; fields not given keep their VMCS value) as the exit controls allow, loads the
        host state and returns to VMX root operation.
        """
        if self.mode is not VmxMode.NON_ROOT:
            raise ValueError("VM exit outside VMX non-root operation")
        vmcs = self._need_current()
        basic = ExitReason(reason).value
        exit_ctls = vmcs.exit_ctls
        # 1. VM-exit information fields.
        vmcs["VM_EXIT_REASON"] = basic
        vmcs["EXIT_QUALIFICATION"] = qualification
        vmcs["GUEST_LINEAR_ADDRESS"] = gla
        vmcs["GUEST_PHYSICAL_ADDRESS"] = gpa
        vmcs["VM_EXIT_INSTRUCTION_LEN"] = instr_len
        vmcs["VMX_INSTRUCTION_INFO"] = instr_info
        vmcs["VM_EXIT_INTR_INFO"] = intr_info
        vmcs["VM_EXIT_INTR_ERROR_CODE"] = intr_error
        vmcs["IDT_VECTORING_INFO_FIELD"] = idt_vectoring_info
        vmcs["IDT_VECTORING_ERROR_CODE"] = idt_vectoring_error
        vmcs["VM_ENTRY_INTR_INFO_FIELD"] &= ~INTR_INFO_VALID
        # 2. Guest state.
        saved = dict(guest_state or {})
        conditional = {
            "GUEST_DR7": EXIT_CTL_SAVE_DEBUG_CONTROLS,
            "GUEST_IA32_DEBUGCTL": EXIT_CTL_SAVE_DEBUG_CONTROLS,
            "GUEST_IA32_PAT": EXIT_CTL_SAVE_PAT,
            "GUEST_IA32_EFER": EXIT_CTL_SAVE_EFER,
        }
        for name, value in saved.items():
            f = FIELD_BY_NAME.get(name)
            if f is None or f.type is not FieldType.GUEST:
                raise ValueError(f"{name} is not a guest-state field")
            if name in ("VMCS_LINK_POINTER", "VMX_PREEMPTION_TIMER_VALUE"):
                continue
            if name in conditional and not exit_ctls & conditional[name]:
                continue
            if name.startswith("GUEST_PDPTR") and not vmcs.proc2 & PROC2_ENABLE_EPT:
                continue
            vmcs[name] = value
        if exit_ctls & EXIT_CTL_SAVE_PREEMPTION_TIMER:
            timer = self.preemption_timer
            vmcs["VMX_PREEMPTION_TIMER_VALUE"] = saved.get("VMX_PREEMPTION_TIMER_VALUE",
                                                           timer if timer is not None else 0)
        assert self.guest is not None
        guest_efer = saved.get("GUEST_IA32_EFER", self.guest.guest["GUEST_IA32_EFER"])
        if VMX_MISC & MISC_STORES_LMA:
            entry = vmcs["VM_ENTRY_CONTROLS"] & ~ENTRY_CTL_IA32E_MODE_GUEST
            vmcs["VM_ENTRY_CONTROLS"] = entry | (ENTRY_CTL_IA32E_MODE_GUEST
                                                 if guest_efer & EFER_LMA else 0)
        # 3. Host state.
        guest_cr0 = saved.get("GUEST_CR0", vmcs["GUEST_CR0"])
        host = self._host_state(vmcs, guest_cr0, guest_efer)
        vpid_on = self.guest.vpid_enabled
        self.mode = VmxMode.ROOT
        self.guest = None
        self.preemption_timer = None
        return Result(VmxResult.VM_EXIT, exit_reason=basic, qualification=qualification,
                      host=host, why=ExitReason(reason).name,
                      invalidation=None if vpid_on else InvalidationRequest(Invalidation.VPID))

    def vm_exit_for(self, decision: ExitDecision, guest_state: Mapping[str, int] | None = None,
                    instr_len: int = 0, instr_info: int = 0, **kwargs) -> Result:
        """`vm_exit` for an `ExitDecision`."""
        return self.vm_exit(decision.reason, decision.qualification, decision.gla, decision.gpa,
                            instr_len, instr_info, guest_state, intr_info=decision.intr_info,
                            intr_error=decision.intr_error, **kwargs)

    # --- VMCALL / VMFUNC -------------------------------------------------------------------------

    def vmcall(self, cpu: CpuState) -> Result:
        if self.mode is VmxMode.OUTSIDE:
            return _ud("not in VMX operation")
        if self.mode is VmxMode.NON_ROOT:
            return _exit(ExitReason.VMCALL)
        if cpu.v86:
            return _ud("RFLAGS.VM=1")
        if cpu.compatibility_mode:
            return _ud("compatibility mode")
        if cpu.cpl > 0:
            return _gp("CPL > 0")
        # No dual-monitor treatment of SMIs and SMM (no STM): always VMfail(1).
        return self._fail(VmInstructionError.VMCALL_IN_ROOT)

    def vmfunc(self, cpu: CpuState, eax: int, ecx: int) -> Result:
        """VMFUNC (EAX = function, ECX = argument). Leaf 0 is EPTP switching."""
        del cpu  # VMFUNC is allowed at any CPL and in every mode
        eax &= _U32
        ecx &= _U32
        if self.mode is not VmxMode.NON_ROOT:
            return _ud("not in VMX non-root operation")
        vmcs = self._need_current()
        if not vmcs.proc2 & PROC2_ENABLE_VM_FUNCTIONS:
            return _ud("enable VM functions = 0")
        if eax >= 64:
            return _ud(f"EAX {eax} >= 64")
        if not vmcs["VM_FUNCTION_CONTROL"] >> eax & 1:
            return _exit(ExitReason.VMFUNC, why=f"VM function {eax} not enabled")
        assert eax == 0  # the only function the controls can enable
        if ecx >= EPTP_LIST_ENTRIES:
            return _exit(ExitReason.VMFUNC, why=f"EPTP index {ecx} >= {EPTP_LIST_ENTRIES}")
        entry = self.memory.read(vmcs["EPTP_LIST_ADDRESS"] + 8 * ecx)
        why = eptp_problem(entry, self.maxphyaddr)
        if why is not None:
            return _exit(ExitReason.VMFUNC, why=f"EPTP-list entry {ecx} {entry:#x}: {why}")
        vmcs["EPT_POINTER"] = entry
        if self.guest is not None:
            self.guest.eptp = entry
        return Result(VmxResult.COMPLETE, eptp=entry)

    # --- INVEPT / INVVPID ------------------------------------------------------------------------

    def _invept_pre(self, cpu: CpuState, type_: int, register_operand: bool,
                    qualification: int) -> Result | None:
        r = self._common_ud(cpu, register_operand)
        if r is not None:
            return r
        if not (VMX_MSRS[IA32_VMX_PROCBASED_CTLS2] >> 32 & PROC2_ENABLE_EPT
                and VMX_EPT_VPID_CAP & EPT_CAP_INVEPT):
            return _ud("INVEPT not supported")
        if self.mode is VmxMode.NON_ROOT:
            return _exit(ExitReason.INVEPT, qualification)
        if cpu.cpl > 0:
            return _gp("CPL > 0")
        if type_ & cpu.operand_mask not in INVEPT_TYPES:
            return self._fail(VmInstructionError.INVALID_INVEPT_INVVPID_OPERAND,
                              f"INVEPT type {type_:#x}", commit=False)
        return None

    def invept(self, cpu: CpuState, type_: int, descriptor: int, *,
               register_operand: bool = False, qualification: int = 0) -> Result:
        """INVEPT: `type_` is the register operand, `descriptor` the 128-bit memory operand."""
        r = self._invept_pre(cpu, type_, register_operand, qualification)
        if r is not None:
            return self._commit(r)
        t = type_ & cpu.operand_mask
        eptp = descriptor & _U64
        if t == 1:
            why = eptp_problem(eptp, self.maxphyaddr)
            if why is not None:
                return self._fail(VmInstructionError.INVALID_INVEPT_INVVPID_OPERAND,
                                  f"descriptor EPTP {eptp:#x}: {why}")
            return _succeed(invalidation=InvalidationRequest(Invalidation.EPTP, eptp=eptp))
        return _succeed(invalidation=InvalidationRequest(Invalidation.ALL))

    def _invvpid_pre(self, cpu: CpuState, type_: int, register_operand: bool,
                     qualification: int) -> Result | None:
        r = self._common_ud(cpu, register_operand)
        if r is not None:
            return r
        if not (VMX_MSRS[IA32_VMX_PROCBASED_CTLS2] >> 32 & PROC2_ENABLE_VPID
                and VMX_EPT_VPID_CAP & VPID_CAP_INVVPID):
            return _ud("INVVPID not supported")
        if self.mode is VmxMode.NON_ROOT:
            return _exit(ExitReason.INVVPID, qualification)
        if cpu.cpl > 0:
            return _gp("CPL > 0")
        if type_ & cpu.operand_mask not in INVVPID_TYPES:
            return self._fail(VmInstructionError.INVALID_INVEPT_INVVPID_OPERAND,
                              f"INVVPID type {type_:#x}", commit=False)
        return None

    def invvpid(self, cpu: CpuState, type_: int, descriptor: int, *,
                register_operand: bool = False, qualification: int = 0) -> Result:
        """INVVPID: `type_` is the register operand, `descriptor` the 128-bit memory operand."""
        r = self._invvpid_pre(cpu, type_, register_operand, qualification)
        if r is not None:
            return self._commit(r)
        t = type_ & cpu.operand_mask
        fail = VmInstructionError.INVALID_INVEPT_INVVPID_OPERAND
        if descriptor & mask(63, 16):
            return self._fail(fail, "descriptor bits 63:16 set")
        vpid = descriptor & 0xFFFF
        gla = (descriptor >> 64) & _U64
        if t != 2 and vpid == 0:
            return self._fail(fail, f"VPID 0 with type {t}")
        if t == 0:
            if not canonical(gla):
                return self._fail(fail, f"linear address {gla:#x} not canonical")
            return _succeed(invalidation=InvalidationRequest(Invalidation.VPID_ADDR, vpid=vpid,
                                                             gla=gla))
        if t == 2:
            # All VPIDs but 0; the translation unit has no such kind, and invalidating more than
            # asked is allowed, so everything goes.
            return _succeed(invalidation=InvalidationRequest(Invalidation.ALL))
        # Types 1 and 3 (type 3 keeps global translations; dropping them too is allowed).
        return _succeed(invalidation=InvalidationRequest(Invalidation.VPID, vpid=vpid))

    # =============================================================================================
    # Exit decisions in VMX non-root operation (each returns an ExitDecision or None)
    # =============================================================================================

    def exception_exit(self, vector: int, *,
                       type_: InterruptionType = InterruptionType.HARDWARE_EXCEPTION,
                       error_code: int | None = None, qualification: int = 0
                       ) -> ExitDecision | None:
        """An exception or NMI in the guest (exit reason 0). `qualification`: the linear address
        of a #PF, the DR6-style bits of a #DB, else 0. Software interrupts (INT n) never exit."""
        vmcs = self._need_current()
        type_ = InterruptionType(type_)
        if type_ is InterruptionType.SOFTWARE_INTERRUPT:
            return None
        if type_ is InterruptionType.NMI:
            exits = bool(vmcs.pin & PIN_NMI_EXITING)
        elif vector == 14:
            bit = bool(vmcs["EXCEPTION_BITMAP"] >> 14 & 1)
            pfec = error_code or 0
            match = pfec & vmcs["PAGE_FAULT_ERROR_CODE_MASK"] == \
                vmcs["PAGE_FAULT_ERROR_CODE_MATCH"]
            exits = bit if match else not bit
        else:
            exits = bool(vmcs["EXCEPTION_BITMAP"] >> vector & 1)
        if not exits:
            return None
        info = vector | type_.value << INTR_INFO_TYPE_SHIFT | INTR_INFO_VALID
        if error_code is not None:
            info |= INTR_INFO_DELIVER_ERROR_CODE
        return ExitDecision(ExitReason.EXCEPTION_NMI, qualification, intr_info=info,
                            intr_error=error_code or 0)

    def triple_fault_exit(self) -> ExitDecision:
        """A triple fault in the guest always exits (reason 2)."""
        return ExitDecision(ExitReason.TRIPLE_FAULT)

    def external_interrupt_exit(self, vector: int) -> ExitDecision | None:
        """An external interrupt (reason 1) with "external-interrupt exiting"; with "acknowledge
        interrupt on exit" the interrupt is acknowledged and its vector reported."""
        vmcs = self._need_current()
        if not vmcs.pin & PIN_EXTERNAL_INTERRUPT_EXITING:
            return None
        info = (vector & 0xFF) | INTR_INFO_VALID \
            if vmcs.exit_ctls & EXIT_CTL_ACK_INTERRUPT_ON_EXIT else 0
        return ExitDecision(ExitReason.EXTERNAL_INTERRUPT, intr_info=info)

    def interrupt_window_exit(self, rflags: int, interruptibility: int) -> ExitDecision | None:
        """Interrupt window (reason 7): the control is 1, RFLAGS.IF=1, no STI/MOV-SS blocking."""
        vmcs = self._need_current()
        if vmcs.proc & PROC_INTERRUPT_WINDOW_EXITING and rflags & RFLAGS_IF and \
                not interruptibility & (INTERRUPTIBILITY_STI | INTERRUPTIBILITY_MOV_SS):
            return ExitDecision(ExitReason.INTERRUPT_WINDOW)
        return None

    def nmi_window_exit(self, interruptibility: int) -> ExitDecision | None:
        """NMI window (reason 8): the control is 1 and no virtual-NMI or MOV-SS blocking."""
        vmcs = self._need_current()
        if vmcs.proc & PROC_NMI_WINDOW_EXITING and \
                not interruptibility & (INTERRUPTIBILITY_NMI | INTERRUPTIBILITY_MOV_SS):
            return ExitDecision(ExitReason.NMI_WINDOW)
        return None

    #: Instructions that always exit in VMX non-root operation.
    UNCONDITIONAL_EXITS = frozenset({ExitReason.CPUID, ExitReason.GETSEC, ExitReason.INVD,
                                     ExitReason.XSETBV})
    #: Instructions that exit when one primary processor-based control is 1.
    CONDITIONAL_EXITS = {
        ExitReason.HLT: PROC_HLT_EXITING,
        ExitReason.INVLPG: PROC_INVLPG_EXITING,
        ExitReason.RDTSC: PROC_RDTSC_EXITING,
        ExitReason.RDPMC: PROC_RDPMC_EXITING,
        ExitReason.MWAIT: PROC_MWAIT_EXITING,
        ExitReason.MONITOR: PROC_MONITOR_EXITING,
        ExitReason.PAUSE: PROC_PAUSE_EXITING,
    }

    def instruction_exit(self, reason: ExitReason, qualification: int = 0) -> ExitDecision | None:
        """CPUID, GETSEC, INVD, XSETBV (always) and HLT, INVLPG, RDTSC, RDPMC, MWAIT, MONITOR,
        PAUSE (by their control). `qualification`: the linear address of INVLPG, else 0."""
        vmcs = self._need_current()
        reason = ExitReason(reason)
        if reason in self.UNCONDITIONAL_EXITS:
            return ExitDecision(reason, qualification)
        if reason not in self.CONDITIONAL_EXITS:
            raise ValueError(f"{reason.name} is not decided by instruction_exit")
        if vmcs.proc & self.CONDITIONAL_EXITS[reason]:
            return ExitDecision(reason, qualification)
        return None

    def cr_access_exit(self, access: CrAccessType, cr: int, *, value: int = 0, gpr: int = 0,
                       lmsw_memory: bool = False) -> ExitDecision | None:
        """Control-register access (reason 28). `value`: the source of MOV to CR or LMSW."""
        vmcs = self._need_current()
        access = CrAccessType(access)
        exits = False
        if access is CrAccessType.MOV_TO_CR:
            if cr in (0, 4):
                owned = vmcs[f"CR{cr}_GUEST_HOST_MASK"]
                exits = bool((value ^ vmcs[f"CR{cr}_READ_SHADOW"]) & owned)
            elif cr == 3:
                if vmcs.proc & PROC_CR3_LOAD_EXITING:
                    count = vmcs["CR3_TARGET_COUNT"]
                    targets = [vmcs[f"CR3_TARGET_VALUE{i}"] for i in range(min(count, 4))]
                    exits = value not in targets
            elif cr == 8:
                exits = bool(vmcs.proc & PROC_CR8_LOAD_EXITING)
        elif access is CrAccessType.MOV_FROM_CR:
            if cr == 3:
                exits = bool(vmcs.proc & PROC_CR3_STORE_EXITING)
            elif cr == 8:
                exits = bool(vmcs.proc & PROC_CR8_STORE_EXITING)
        elif access is CrAccessType.CLTS:
            cr = 0
            exits = bool(vmcs["CR0_GUEST_HOST_MASK"] & vmcs["CR0_READ_SHADOW"] & CR0_TS)
        else:  # LMSW
            cr = 0
            m, shadow, src = vmcs["CR0_GUEST_HOST_MASK"], vmcs["CR0_READ_SHADOW"], value & 0xFFFF
            exits = bool(m & CR0_PE and not shadow & CR0_PE and src & CR0_PE) or \
                bool(m & 0xE & (src ^ shadow))
        if not exits:
            return None
        qual = cr | access.value << 4
        if access is CrAccessType.LMSW:
            qual |= int(lmsw_memory) << 6 | (value & 0xFFFF) << 16
        elif access is not CrAccessType.CLTS:
            qual |= (gpr & 0xF) << 8
        return ExitDecision(ExitReason.CR_ACCESS, qual)

    def cr_read_value(self, cr: int, actual: int) -> int:
        """What MOV from CR0/CR4 returns in the guest: the read shadow for bits the host owns."""
        vmcs = self._need_current()
        m = vmcs[f"CR{cr}_GUEST_HOST_MASK"]
        return (actual & ~m) | (vmcs[f"CR{cr}_READ_SHADOW"] & m)

    def cr_write_value(self, cr: int, actual: int, value: int) -> int:
        """CR0/CR4 after a MOV to CR that does not exit: bits the host owns keep their value."""
        m = self._need_current()[f"CR{cr}_GUEST_HOST_MASK"]
        return (actual & m) | (value & ~m)

    def dr_access_exit(self, dr: int, from_dr: bool, gpr: int = 0) -> ExitDecision | None:
        """MOV DR (reason 29) with "MOV-DR exiting"."""
        if not self._need_current().proc & PROC_MOV_DR_EXITING:
            return None
        return ExitDecision(ExitReason.DR_ACCESS, (dr & 7) | int(from_dr) << 4 | (gpr & 0xF) << 8)

    def io_exit(self, port: int, size: int, *, is_in: bool, string: bool = False,
                rep: bool = False, immediate: bool = False) -> ExitDecision | None:
        """IN/OUT/INS/OUTS (reason 30): by the I/O bitmaps when they are used (an access that
        wraps past port 0xFFFF exits), else by "unconditional I/O exiting"."""
        if size not in (1, 2, 4):
            raise ValueError(f"I/O size {size}")
        vmcs = self._need_current()
        if vmcs.proc & PROC_USE_IO_BITMAPS:
            exits = False
            for p in range(port, port + size):
                if p > 0xFFFF:
                    exits = True
                    break
                base = vmcs["IO_BITMAP_A"] if p < 0x8000 else vmcs["IO_BITMAP_B"]
                bit = p & 0x7FFF
                if self.memory.read(base + (bit >> 6) * 8) >> (bit & 63) & 1:
                    exits = True
                    break
        else:
            exits = bool(vmcs.proc & PROC_UNCONDITIONAL_IO_EXITING)
        if not exits:
            return None
        qual = (size - 1) | int(is_in) << 3 | int(string) << 4 | int(rep) << 5 \
            | int(immediate) << 6 | (port & 0xFFFF) << 16
        return ExitDecision(ExitReason.IO_INSTRUCTION, qual)

    def msr_exit(self, msr: int, write: bool) -> ExitDecision | None:
        """RDMSR (31) / WRMSR (32): every access exits without MSR bitmaps; with them, the bit of
        the read/write low (0..1FFFh) or high (C0000000h..C0001FFFh) bitmap decides, and any
        other ECX exits."""
        vmcs = self._need_current()
        reason = ExitReason.WRMSR if write else ExitReason.RDMSR
        msr &= _U32
        if not vmcs.proc & PROC_USE_MSR_BITMAPS:
            return ExitDecision(reason)
        if msr <= 0x1FFF:
            offset = 2048 if write else 0
        elif 0xC0000000 <= msr <= 0xC0001FFF:
            offset = 3072 if write else 1024
        else:
            return ExitDecision(reason)
        bit = msr & 0x1FFF
        word = self.memory.read(vmcs["MSR_BITMAP"] + offset + (bit >> 6) * 8)
        return ExitDecision(reason) if word >> (bit & 63) & 1 else None

    def mtf_exit(self) -> ExitDecision | None:
        """Monitor trap flag (reason 37) after a guest instruction retires."""
        if self._need_current().proc & PROC_MONITOR_TRAP_FLAG:
            return ExitDecision(ExitReason.MONITOR_TRAP_FLAG)
        return None

    def advance_tsc(self, ticks: int) -> ExitDecision | None:
        """Let `ticks` TSC ticks pass in the guest: the VMX-preemption timer counts down once
        every 2^rate ticks (rate = IA32_VMX_MISC[4:0] = 0); at 0 it exits (reason 52).
        `advance_tsc(0)` tells whether the timer is already 0 (as at a VM entry with value 0)."""
        if self.preemption_timer is None:
            return None
        counts = ticks >> MISC_PREEMPTION_TIMER_RATE
        self.preemption_timer = max(0, self.preemption_timer - counts)
        if self.preemption_timer == 0:
            return ExitDecision(ExitReason.PREEMPTION_TIMER)
        return None

    @staticmethod
    def ept_exit(outcome: Outcome, qualification: int = 0, gpa: int = 0,
                 gla: int = 0) -> ExitDecision | None:
        """The VM exit a translation outcome causes: EPT violation (48, with the qualification,
        GPA and GLA) or EPT misconfiguration (49, qualification 0, GPA); None otherwise."""
        outcome = Outcome(outcome)
        if outcome is Outcome.EPT_VIOLATION:
            return ExitDecision(ExitReason.EPT_VIOLATION, qualification, gla=gla, gpa=gpa)
        if outcome is Outcome.EPT_MISCONFIG:
            return ExitDecision(ExitReason.EPT_MISCONFIG, 0, gpa=gpa)
        return None


# =================================================================================================
# A valid VMCS configuration (for tests and testbenches)
# =================================================================================================

#: Flat 64-bit code/data segment access rights.
_AR_CODE64 = 0xB | AR_S | AR_P | AR_L | AR_G      # 0xA09B
_AR_DATA = 0x3 | AR_S | AR_P | AR_DB | AR_G       # 0xC093
_AR_TSS64 = 0xB | AR_P                             # 0x8B busy 64-bit TSS
_AR_LDT_UNUSABLE = AR_UNUSABLE


def example_vmcs_fields(*, eptp: int | None = 0x10_0000 | 0x1E, vpid: int = 1,
                        host_rip: int = 0xFFFF_8000_0010_0000,
                        guest_rip: int = 0x40_0000) -> dict[str, int]:
    """Field values (by name) of a VMCS that passes every VM-entry check: a 64-bit host and a
    64-bit guest (CPL 0, flat segments), TRUE-MSR minimum controls plus "activate secondary
    controls", with EPT (WB, 4-level, `eptp`) unless `eptp` is None, and VPID `vpid` (0: off)."""
    proc2 = (PROC2_ENABLE_EPT if eptp is not None else 0) | (PROC2_ENABLE_VPID if vpid else 0)
    f: dict[str, int] = {
        "PIN_BASED_VM_EXEC_CONTROL": PIN_DEFAULT1,
        "CPU_BASED_VM_EXEC_CONTROL": PROC_TRUE_DEFAULT1 | PROC_ACTIVATE_SECONDARY,
        "SECONDARY_VM_EXEC_CONTROL": proc2,
        "VM_EXIT_CONTROLS": EXIT_CTL_TRUE_DEFAULT1 | EXIT_CTL_HOST_ADDRESS_SPACE_SIZE,
        "VM_ENTRY_CONTROLS": ENTRY_CTL_TRUE_DEFAULT1 | ENTRY_CTL_IA32E_MODE_GUEST,
        "EPT_POINTER": eptp or 0,
        "VIRTUAL_PROCESSOR_ID": vpid,
        "VMCS_LINK_POINTER": _U64,
        # Host: 64-bit, flat.
        "HOST_CR0": VMX_CR0_FIXED0 | CR0_WP,
        "HOST_CR3": 0x20_0000,
        "HOST_CR4": VMX_CR4_FIXED0 | CR4_PAE,
        "HOST_CS_SELECTOR": 0x08, "HOST_SS_SELECTOR": 0x10, "HOST_DS_SELECTOR": 0x10,
        "HOST_ES_SELECTOR": 0x10, "HOST_FS_SELECTOR": 0, "HOST_GS_SELECTOR": 0,
        "HOST_TR_SELECTOR": 0x18,
        "HOST_RIP": host_rip, "HOST_RSP": 0xFFFF_8000_0020_0000,
        "HOST_GDTR_BASE": 0xFFFF_8000_0000_1000, "HOST_IDTR_BASE": 0xFFFF_8000_0000_2000,
        "HOST_TR_BASE": 0xFFFF_8000_0000_3000,
        # Guest: 64-bit, CPL 0.
        "GUEST_CR0": VMX_CR0_FIXED0 | CR0_WP,
        "GUEST_CR3": 0x30_0000,
        "GUEST_CR4": VMX_CR4_FIXED0 | CR4_PAE,
        "GUEST_IA32_EFER": EFER_LMA | EFER_LME,
        "GUEST_RIP": guest_rip, "GUEST_RSP": 0x50_0000, "GUEST_RFLAGS": RFLAGS_FIXED1,
        "GUEST_CS_SELECTOR": 0x08, "GUEST_CS_LIMIT": 0xFFFFFFFF, "GUEST_CS_AR_BYTES": _AR_CODE64,
        "GUEST_TR_SELECTOR": 0x18, "GUEST_TR_LIMIT": 0x67, "GUEST_TR_AR_BYTES": _AR_TSS64,
        "GUEST_TR_BASE": 0x6000,
        "GUEST_LDTR_AR_BYTES": _AR_LDT_UNUSABLE,
        "GUEST_GDTR_LIMIT": 0xFFFF, "GUEST_IDTR_LIMIT": 0xFFF,
        "GUEST_IA32_PAT": 0x0007040600070406,
    }
    for s in ("SS", "DS", "ES", "FS", "GS"):
        f[f"GUEST_{s}_SELECTOR"] = 0x10
        f[f"GUEST_{s}_LIMIT"] = 0xFFFFFFFF
        f[f"GUEST_{s}_AR_BYTES"] = _AR_DATA
    return f


# Sanity: the example is self-consistent with the field table.
assert set(example_vmcs_fields()) <= set(FIELD_BY_NAME)
assert VMCS_FIELDS_OFFSET == FIELDS[0].offset
