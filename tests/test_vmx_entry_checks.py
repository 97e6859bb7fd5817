# amaranth: UnusedElaboratable=no
"""Tests of the VM-entry checks block (rtl/vmx/entry_checks.py: `VmEntryChecks`).

The block must decide exactly what the reference model decides (`VmxModel.check_controls`,
`check_host_state`, `check_guest_state`, in that order). Three kinds of test, all in Amaranth's
simulator (the block is a pure function with a fixed latency; one elaboration runs many vectors
back to back, with random idle cycles, and checks the timing of `done`, the holding of `result`
and the link-pointer outputs on every cycle: see `tb.vmx_entry_checks_tb.simulate`):

* directed (`test_directed`): one test id per rule of the model, each a valid starting VMCS
  (`tb.vmx_entry_checks_tb.BASES`: 64-bit, 32-bit host and guest, unrestricted real-mode guest,
  virtual-8086 guest, CPL-3 guest) with exactly that rule broken, or a near miss that must pass.
  The expected outcome is written by hand; the model must give it (with the expected reason) and
  so must the RTL. `test_every_rtl_rule_is_directed` checks that every rule register of the RTL
  fires in some directed case.
* randomized differential (`test_random_differential`): mutations of the valid starting points
  (random bits of random fields, controls within and near their allowed settings, random access
  rights, selectors, limits, bases, injection, interruptibility, link pointer, ...) compared with
  the model. ``VTX_SEED`` (default 1) seeds them, ``VTX_ENTRY_CHECKS`` (default 6000) is the
  number of vectors at MAXPHYADDR 40 (split into two items for ``pytest -n 2``), plus an eighth
  of that at MAXPHYADDR 36 and 52 each.
* Verilator lint (``-Wall``) of the generated Verilog with the project's waivers.
"""

import collections
import os
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from amaranth.hdl import Shape

from rtl.arch import (
    AR_DB,
    AR_G,
    AR_P,
    AR_S,
    AR_UNUSABLE,
    CR0_NE,
    CR0_PE,
    CR0_PG,
    CR4_PAE,
    CR4_PCIDE,
    CR4_VMXE,
    DEBUGCTL_BTF,
    EFER_LMA,
    EFER_LME,
    ENTRY_CTL_ENTRY_TO_SMM,
    ENTRY_CTL_IA32E_MODE_GUEST,
    ENTRY_CTL_LOAD_DEBUG_CONTROLS,
    ENTRY_CTL_LOAD_EFER,
    ENTRY_CTL_LOAD_PAT,
    ENTRY_FAIL_DEFAULT,
    ENTRY_FAIL_VMCS_LINK_POINTER,
    EXIT_CTL_HOST_ADDRESS_SPACE_SIZE,
    EXIT_CTL_LOAD_EFER,
    EXIT_CTL_LOAD_PAT,
    EXIT_CTL_LOAD_PERF_GLOBAL_CTRL,
    EXIT_CTL_SAVE_PREEMPTION_TIMER,
    INTR_INFO_DELIVER_ERROR_CODE,
    INTR_INFO_VALID,
    MAXPHYADDR,
    PENDING_DBG_BS,
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
    PROC_NMI_WINDOW_EXITING,
    PROC_USE_IO_BITMAPS,
    PROC_USE_MSR_BITMAPS,
    PROC_USE_TPR_SHADOW,
    RFLAGS_FIXED1,
    RFLAGS_IF,
    RFLAGS_TF,
    RFLAGS_VM,
    VMCS_REVISION_ID,
    VMCS_SHADOW_INDICATOR,
    VMFUNC_EPTP_SWITCHING,
)
from rtl.vmx.entry_checks import VmEntryChecks
from rtl.vmx.layouts import EntryCheckKind
from tb.vmx_entry_checks_tb import (
    BASES,
    CURRENT_VMCS,
    LINK_REGION,
    CpuState,
    EntryVector,
    base_vector,
    model_verdict,
    random_vector,
    simulate,
)

SEED = int(os.environ.get("VTX_SEED", "1"))
RANDOM_VECTORS = int(os.environ.get("VTX_ENTRY_CHECKS", "6000"))

OK = (EntryCheckKind.OK, 0)
CONTROLS = (EntryCheckKind.CONTROLS, 0)
HOST = (EntryCheckKind.HOST, 0)
GUEST = (EntryCheckKind.GUEST, ENTRY_FAIL_DEFAULT)
LINK = (EntryCheckKind.GUEST, ENTRY_FAIL_VMCS_LINK_POINTER)

NONCANONICAL = 0x0000_8000_0000_0000
CPU64_NO_LMA = CpuState(efer=0, cs_l=False)


def set_(bits: int) -> Callable[[int], int]:
    return lambda v: v | bits


def clear(bits: int) -> Callable[[int], int]:
    return lambda v: v & ~bits


@dataclass
class Case:
    """A directed test: `changes` (a value, or a function of the old value, per field) applied to
    the valid starting point `base`; the outcome `expect` and a piece of the model's reason."""
    id: str
    expect: tuple[EntryCheckKind, int]
    why: str | None = None
    base: str = "64"
    cpu: CpuState | None = None
    link_revision: int = VMCS_REVISION_ID
    changes: dict[str, int | Callable[[int], int]] = field(default_factory=dict)
    maxphyaddr: int = MAXPHYADDR

    def vector(self) -> EntryVector:
        vec = base_vector(self.base, name=self.id, cpu=self.cpu, link_revision=self.link_revision)
        for name, change in self.changes.items():
            vec.fields[name] = change(vec.fields[name]) if callable(change) else change
        return vec


def case(id_, expect, why=None, base="64", *, cpu=None, link_revision=VMCS_REVISION_ID,
         maxphyaddr=MAXPHYADDR, **changes) -> Case:
    return Case(id_, expect, why, base, cpu, link_revision, changes, maxphyaddr)


def inject(itype: int, vector: int, deliver: bool = False, extra: int = 0) -> int:
    return (INTR_INFO_VALID | itype << 8 | vector | (INTR_INFO_DELIVER_ERROR_CODE if deliver
                                                      else 0) | extra)


RF_IF = RFLAGS_FIXED1 | RFLAGS_IF

# =================================================================================================
# Directed cases: SDM 26.2.1, VM-execution / exit / entry controls (VMfailValid 7)
# =================================================================================================

CONTROL_CASES = [
    case("ctl/pin default1 clear", CONTROLS, "PIN_BASED", PIN_BASED_VM_EXEC_CONTROL=clear(2)),
    case("ctl/pin unsupported (posted interrupts)", CONTROLS, "PIN_BASED",
         PIN_BASED_VM_EXEC_CONTROL=set_(PIN_POSTED_INTERRUPTS)),
    case("ctl/proc default1 clear", CONTROLS, "CPU_BASED", CPU_BASED_VM_EXEC_CONTROL=clear(2)),
    case("ctl/proc unsupported (TPR shadow)", CONTROLS, "CPU_BASED",
         CPU_BASED_VM_EXEC_CONTROL=set_(PROC_USE_TPR_SHADOW)),
    case("ctl/proc2 unsupported (VMCS shadowing)", CONTROLS, "SECONDARY",
         SECONDARY_VM_EXEC_CONTROL=set_(PROC2_VMCS_SHADOWING)),
    case("ctl/proc2 ignored when not activated", OK,
         CPU_BASED_VM_EXEC_CONTROL=clear(PROC_ACTIVATE_SECONDARY),
         SECONDARY_VM_EXEC_CONTROL=0xFFFF_FFFF, EPT_POINTER=0, VIRTUAL_PROCESSOR_ID=0),
    case("ctl/exit default1 clear", CONTROLS, "VM_EXIT_CONTROLS", VM_EXIT_CONTROLS=clear(1)),
    case("ctl/exit unsupported (PERF_GLOBAL_CTRL)", CONTROLS, "VM_EXIT_CONTROLS",
         VM_EXIT_CONTROLS=set_(EXIT_CTL_LOAD_PERF_GLOBAL_CTRL)),
    case("ctl/exit bit 31", CONTROLS, "VM_EXIT_CONTROLS", VM_EXIT_CONTROLS=set_(1 << 31)),
    case("ctl/entry default1 clear", CONTROLS, "VM_ENTRY_CONTROLS", VM_ENTRY_CONTROLS=clear(1)),
    case("ctl/entry unsupported (entry to SMM)", CONTROLS, "VM_ENTRY_CONTROLS",
         VM_ENTRY_CONTROLS=set_(ENTRY_CTL_ENTRY_TO_SMM)),
    case("ctl/CR3-target count 5", CONTROLS, "CR3-target count", CR3_TARGET_COUNT=5),
    case("ctl/CR3-target count 4", OK, CR3_TARGET_COUNT=4),
    case("ctl/CR3-target count 2^31", CONTROLS, "CR3-target count", CR3_TARGET_COUNT=1 << 31),
    case("ctl/I/O bitmap A misaligned", CONTROLS, "IO_BITMAP_A",
         CPU_BASED_VM_EXEC_CONTROL=set_(PROC_USE_IO_BITMAPS), IO_BITMAP_A=0x1008,
         IO_BITMAP_B=0x2000),
    case("ctl/I/O bitmap B above MAXPHYADDR", CONTROLS, "IO_BITMAP_B",
         CPU_BASED_VM_EXEC_CONTROL=set_(PROC_USE_IO_BITMAPS), IO_BITMAP_A=0x1000,
         IO_BITMAP_B=1 << 40),
    case("ctl/I/O bitmaps valid", OK, CPU_BASED_VM_EXEC_CONTROL=set_(PROC_USE_IO_BITMAPS),
         IO_BITMAP_A=0xFF_FFFF_F000, IO_BITMAP_B=0x2000),
    case("ctl/I/O bitmaps unused", OK, IO_BITMAP_A=0x1008, IO_BITMAP_B=1 << 63),
    case("ctl/MSR bitmap misaligned", CONTROLS, "MSR bitmap",
         CPU_BASED_VM_EXEC_CONTROL=set_(PROC_USE_MSR_BITMAPS), MSR_BITMAP=0x3800),
    case("ctl/MSR bitmap above MAXPHYADDR", CONTROLS, "MSR bitmap",
         CPU_BASED_VM_EXEC_CONTROL=set_(PROC_USE_MSR_BITMAPS), MSR_BITMAP=1 << 52),
    case("ctl/MSR bitmap valid", OK, CPU_BASED_VM_EXEC_CONTROL=set_(PROC_USE_MSR_BITMAPS),
         MSR_BITMAP=0x3000),
    case("ctl/virtual NMIs without NMI exiting", CONTROLS, "virtual NMIs",
         PIN_BASED_VM_EXEC_CONTROL=set_(PIN_VIRTUAL_NMIS)),
    case("ctl/virtual NMIs with NMI exiting", OK,
         PIN_BASED_VM_EXEC_CONTROL=set_(PIN_VIRTUAL_NMIS | PIN_NMI_EXITING)),
    case("ctl/NMI-window exiting without virtual NMIs", CONTROLS, "NMI-window",
         PIN_BASED_VM_EXEC_CONTROL=set_(PIN_NMI_EXITING),
         CPU_BASED_VM_EXEC_CONTROL=set_(PROC_NMI_WINDOW_EXITING)),
    case("ctl/NMI-window exiting with virtual NMIs", OK,
         PIN_BASED_VM_EXEC_CONTROL=set_(PIN_NMI_EXITING | PIN_VIRTUAL_NMIS),
         CPU_BASED_VM_EXEC_CONTROL=set_(PROC_NMI_WINDOW_EXITING)),
    case("ctl/EPTP memory type 1", CONTROLS, "EPTP", EPT_POINTER=0x10_0000 | 3 << 3 | 1),
    case("ctl/EPTP memory type 7", CONTROLS, "EPTP", EPT_POINTER=0x10_0000 | 3 << 3 | 7),
    case("ctl/EPTP memory type UC", OK, EPT_POINTER=0x10_0000 | 3 << 3),
    case("ctl/EPTP 5-level walk", CONTROLS, "EPTP", EPT_POINTER=0x10_0000 | 4 << 3 | 6),
    case("ctl/EPTP 3-level walk", CONTROLS, "EPTP", EPT_POINTER=0x10_0000 | 2 << 3 | 6),
    case("ctl/EPTP A/D enable", OK, EPT_POINTER=0x10_0000 | 1 << 6 | 3 << 3 | 6),
    case("ctl/EPTP reserved bit 7", CONTROLS, "EPTP", EPT_POINTER=0x10_0000 | 1 << 7 | 0x1E),
    case("ctl/EPTP reserved bit 11", CONTROLS, "EPTP", EPT_POINTER=0x10_0000 | 1 << 11 | 0x1E),
    case("ctl/EPTP bit 40", CONTROLS, "EPTP", EPT_POINTER=1 << 40 | 0x1E),
    case("ctl/EPTP bit 63", CONTROLS, "EPTP", EPT_POINTER=1 << 63 | 0x1E),
    case("ctl/EPTP ignored without EPT", OK,
         SECONDARY_VM_EXEC_CONTROL=clear(PROC2_ENABLE_EPT), EPT_POINTER=0xFFFF),
    case("ctl/VPID 0", CONTROLS, "VPID 0", VIRTUAL_PROCESSOR_ID=0),
    case("ctl/VPID 0 without enable VPID", OK, VIRTUAL_PROCESSOR_ID=0,
         SECONDARY_VM_EXEC_CONTROL=clear(PROC2_ENABLE_VPID)),
    case("ctl/unrestricted guest without EPT", CONTROLS, "unrestricted guest without EPT",
         SECONDARY_VM_EXEC_CONTROL=lambda v: (v | PROC2_UNRESTRICTED_GUEST) & ~PROC2_ENABLE_EPT),
    case("ctl/VM functions: reserved bit 1", CONTROLS, "VM-function controls",
         SECONDARY_VM_EXEC_CONTROL=set_(PROC2_ENABLE_VM_FUNCTIONS), VM_FUNCTION_CONTROL=2),
    case("ctl/VM functions: reserved bit 63", CONTROLS, "VM-function controls",
         SECONDARY_VM_EXEC_CONTROL=set_(PROC2_ENABLE_VM_FUNCTIONS), VM_FUNCTION_CONTROL=1 << 63),
    case("ctl/VM functions off: controls ignored", OK, VM_FUNCTION_CONTROL=0xFF,
         EPTP_LIST_ADDRESS=0x123),
    case("ctl/EPTP switching without EPT", CONTROLS, "EPTP switching without EPT",
         SECONDARY_VM_EXEC_CONTROL=lambda v: (v | PROC2_ENABLE_VM_FUNCTIONS) & ~PROC2_ENABLE_EPT,
         VM_FUNCTION_CONTROL=VMFUNC_EPTP_SWITCHING, EPTP_LIST_ADDRESS=0x5000),
    case("ctl/EPTP-list address misaligned", CONTROLS, "EPTP-list address",
         SECONDARY_VM_EXEC_CONTROL=set_(PROC2_ENABLE_VM_FUNCTIONS),
         VM_FUNCTION_CONTROL=VMFUNC_EPTP_SWITCHING, EPTP_LIST_ADDRESS=0x5800),
    case("ctl/EPTP-list address above MAXPHYADDR", CONTROLS, "EPTP-list address",
         SECONDARY_VM_EXEC_CONTROL=set_(PROC2_ENABLE_VM_FUNCTIONS),
         VM_FUNCTION_CONTROL=VMFUNC_EPTP_SWITCHING, EPTP_LIST_ADDRESS=1 << 45),
    case("ctl/EPTP switching valid", OK,
         SECONDARY_VM_EXEC_CONTROL=set_(PROC2_ENABLE_VM_FUNCTIONS),
         VM_FUNCTION_CONTROL=VMFUNC_EPTP_SWITCHING, EPTP_LIST_ADDRESS=0x5000),
    case("ctl/VM functions without EPTP switching", OK,
         SECONDARY_VM_EXEC_CONTROL=set_(PROC2_ENABLE_VM_FUNCTIONS), VM_FUNCTION_CONTROL=0,
         EPTP_LIST_ADDRESS=0x5800),
    case("ctl/save preemption timer without the timer", CONTROLS, "save preemption timer",
         VM_EXIT_CONTROLS=set_(EXIT_CTL_SAVE_PREEMPTION_TIMER)),
    case("ctl/save preemption timer with the timer", OK,
         VM_EXIT_CONTROLS=set_(EXIT_CTL_SAVE_PREEMPTION_TIMER),
         PIN_BASED_VM_EXEC_CONTROL=PIN_DEFAULT1 | PIN_PREEMPTION_TIMER),
    case("ctl/VM-exit MSR-store count", CONTROLS, "MSR lists", VM_EXIT_MSR_STORE_COUNT=1),
    case("ctl/VM-exit MSR-load count", CONTROLS, "MSR lists", VM_EXIT_MSR_LOAD_COUNT=1 << 31),
    case("ctl/VM-entry MSR-load count", CONTROLS, "MSR lists", VM_ENTRY_MSR_LOAD_COUNT=3),
    # Event injection (SDM 26.2.1.3).
    case("inj/reserved type 1", CONTROLS, "reserved interruption type",
         VM_ENTRY_INTR_INFO_FIELD=inject(1, 0x20)),
    case("inj/NMI with vector 3", CONTROLS, "NMI injection with vector",
         VM_ENTRY_INTR_INFO_FIELD=inject(2, 3)),
    case("inj/NMI with vector 2", OK, VM_ENTRY_INTR_INFO_FIELD=inject(2, 2)),
    case("inj/hardware exception vector 32", CONTROLS, "hardware exception injection",
         VM_ENTRY_INTR_INFO_FIELD=inject(3, 32)),
    case("inj/hardware exception vector 31", OK, VM_ENTRY_INTR_INFO_FIELD=inject(3, 31)),
    case("inj/other event vector 1", CONTROLS, "other-event injection",
         VM_ENTRY_INTR_INFO_FIELD=inject(7, 1)),
    case("inj/other event vector 0 (MTF)", OK, VM_ENTRY_INTR_INFO_FIELD=inject(7, 0)),
    case("inj/#GP without error code", CONTROLS, "deliver-error-code",
         VM_ENTRY_INTR_INFO_FIELD=inject(3, 13)),
    case("inj/#PF with error code", OK, VM_ENTRY_INTR_INFO_FIELD=inject(3, 14, True),
         VM_ENTRY_EXCEPTION_ERROR_CODE=2),
    case("inj/#UD with error code", CONTROLS, "deliver-error-code",
         VM_ENTRY_INTR_INFO_FIELD=inject(3, 6, True)),
    case("inj/#DF, #TS, #NP, #SS, #AC with error code", OK,
         VM_ENTRY_INTR_INFO_FIELD=inject(3, 17, True)),
    case("inj/external interrupt with error code", CONTROLS, "deliver-error-code",
         GUEST_RFLAGS=RF_IF, VM_ENTRY_INTR_INFO_FIELD=inject(0, 13, True)),
    case("inj/software exception #GP vector with error code", CONTROLS, "deliver-error-code",
         VM_ENTRY_INTR_INFO_FIELD=inject(6, 13, True), VM_ENTRY_INSTRUCTION_LEN=2),
    case("inj/real-mode #GP with error code", CONTROLS, "deliver-error-code", "real",
         VM_ENTRY_INTR_INFO_FIELD=inject(3, 13, True)),
    case("inj/real-mode #GP without error code", OK, base="real",
         VM_ENTRY_INTR_INFO_FIELD=inject(3, 13)),
    case("inj/32-bit protected #DF without error code", CONTROLS, "deliver-error-code", "32",
         VM_ENTRY_INTR_INFO_FIELD=inject(3, 8)),
    case("inj/reserved bit 12", CONTROLS, "bits 30:12",
         VM_ENTRY_INTR_INFO_FIELD=inject(3, 6, extra=1 << 12)),
    case("inj/reserved bit 30", CONTROLS, "bits 30:12",
         VM_ENTRY_INTR_INFO_FIELD=inject(3, 6, extra=1 << 30)),
    case("inj/reserved bits ignored when not valid", OK,
         VM_ENTRY_INTR_INFO_FIELD=(1 << 30) | 1 << 8 | 0x99),
    case("inj/error code bit 16", CONTROLS, "error code bits 31:16",
         VM_ENTRY_INTR_INFO_FIELD=inject(3, 13, True), VM_ENTRY_EXCEPTION_ERROR_CODE=0x1_0000),
    case("inj/error code ignored without deliver", OK,
         VM_ENTRY_INTR_INFO_FIELD=inject(3, 6), VM_ENTRY_EXCEPTION_ERROR_CODE=0xFFFF_0000),
    case("inj/software interrupt length 0", CONTROLS, "instruction length",
         VM_ENTRY_INTR_INFO_FIELD=inject(4, 0x80), VM_ENTRY_INSTRUCTION_LEN=0),
    case("inj/software interrupt length 16", CONTROLS, "instruction length",
         VM_ENTRY_INTR_INFO_FIELD=inject(4, 0x80), VM_ENTRY_INSTRUCTION_LEN=16),
    case("inj/software interrupt length 15", OK,
         VM_ENTRY_INTR_INFO_FIELD=inject(4, 0x80), VM_ENTRY_INSTRUCTION_LEN=15),
    case("inj/privileged software exception length 0", CONTROLS, "instruction length",
         VM_ENTRY_INTR_INFO_FIELD=inject(5, 1), VM_ENTRY_INSTRUCTION_LEN=0),
    case("inj/software exception length 2^31", CONTROLS, "instruction length",
         VM_ENTRY_INTR_INFO_FIELD=inject(6, 3), VM_ENTRY_INSTRUCTION_LEN=1 << 31),
    case("inj/software exception #BP length 1", OK,
         VM_ENTRY_INTR_INFO_FIELD=inject(6, 3), VM_ENTRY_INSTRUCTION_LEN=1),
    case("inj/hardware exception length 0", OK, VM_ENTRY_INTR_INFO_FIELD=inject(3, 6),
         VM_ENTRY_INSTRUCTION_LEN=0),
]

# =================================================================================================
# SDM 26.2.2-26.2.4: host state (VMfailValid 8)
# =================================================================================================

HOST_CASES = [
    case("host/CR0.PG=0", HOST, "host CR0", HOST_CR0=clear(CR0_PG)),
    case("host/CR0.PE=0", HOST, "host CR0", HOST_CR0=clear(CR0_PE)),
    case("host/CR0.NE=0", HOST, "host CR0", HOST_CR0=clear(CR0_NE)),
    case("host/CR0 bit 32", HOST, "host CR0", HOST_CR0=set_(1 << 32)),
    case("host/CR4.VMXE=0", HOST, "host CR4", HOST_CR4=clear(CR4_VMXE)),
    case("host/CR4 unsupported bit 22", HOST, "host CR4", HOST_CR4=set_(1 << 22)),
    case("host/CR4.PCIDE (unsupported)", HOST, "host CR4", HOST_CR4=set_(CR4_PCIDE)),
    case("host/CR3 bit 40", HOST, "host CR3", HOST_CR3=1 << 40),
    case("host/CR3 bit 39", OK, HOST_CR3=1 << 39),
    case("host/SYSENTER_ESP", HOST, "SYSENTER_ESP", HOST_IA32_SYSENTER_ESP=NONCANONICAL),
    case("host/SYSENTER_EIP", HOST, "SYSENTER_EIP",
         HOST_IA32_SYSENTER_EIP=0xFFFF_7FFF_FFFF_FFFF),
    case("host/load PAT: type 2", HOST, "host PAT",
         VM_EXIT_CONTROLS=set_(EXIT_CTL_LOAD_PAT), HOST_IA32_PAT=0x0007040600070402),
    case("host/load PAT: type 8 in byte 7", HOST, "host PAT",
         VM_EXIT_CONTROLS=set_(EXIT_CTL_LOAD_PAT), HOST_IA32_PAT=0x0807040600070406),
    case("host/load PAT: valid", OK,
         VM_EXIT_CONTROLS=set_(EXIT_CTL_LOAD_PAT), HOST_IA32_PAT=0x0706050401000706),
    case("host/PAT not loaded", OK, HOST_IA32_PAT=0x0303030303030303),
    case("host/load EFER: reserved bit", HOST, "host EFER",
         VM_EXIT_CONTROLS=set_(EXIT_CTL_LOAD_EFER), HOST_IA32_EFER=EFER_LMA | EFER_LME | 1 << 1),
    case("host/load EFER: LMA=0", HOST, "LMA/LME", VM_EXIT_CONTROLS=set_(EXIT_CTL_LOAD_EFER),
         HOST_IA32_EFER=EFER_LME),
    case("host/load EFER: LME=0", HOST, "LMA/LME", VM_EXIT_CONTROLS=set_(EXIT_CTL_LOAD_EFER),
         HOST_IA32_EFER=EFER_LMA),
    case("host/load EFER: valid", OK, VM_EXIT_CONTROLS=set_(EXIT_CTL_LOAD_EFER),
         HOST_IA32_EFER=EFER_LMA | EFER_LME | 1),
    case("host/load EFER: 32-bit host with LMA", HOST, "LMA/LME", "32",
         VM_EXIT_CONTROLS=set_(EXIT_CTL_LOAD_EFER), HOST_IA32_EFER=EFER_LMA | EFER_LME),
    case("host/load EFER: 32-bit host valid", OK, base="32",
         VM_EXIT_CONTROLS=set_(EXIT_CTL_LOAD_EFER), HOST_IA32_EFER=0),
    *(case(f"host/{s} selector {what}", HOST, f"host {s} selector", **{f"HOST_{s}_SELECTOR": sel})
      for s, what, sel in (("ES", "RPL", 0x11), ("CS", "RPL", 0x0B), ("SS", "TI", 0x14),
                           ("DS", "RPL", 0x13), ("FS", "TI", 0x04), ("GS", "RPL", 0x03),
                           ("TR", "RPL", 0x19))),
    case("host/CS null", HOST, "host CS selector 0", HOST_CS_SELECTOR=0),
    case("host/TR null", HOST, "host TR selector 0", HOST_TR_SELECTOR=0),
    case("host/SS null with a 64-bit host", OK, HOST_SS_SELECTOR=0),
    case("host/SS null with a 32-bit host", HOST, "host SS selector 0", "32",
         HOST_SS_SELECTOR=0),
    *(case(f"host/{f} not canonical", HOST, f, **{f: NONCANONICAL})
      for f in ("HOST_FS_BASE", "HOST_GS_BASE", "HOST_GDTR_BASE", "HOST_IDTR_BASE",
                "HOST_TR_BASE")),
    case("host/bases canonical high", OK, HOST_FS_BASE=0xFFFF_8000_0000_0000,
         HOST_GS_BASE=0x0000_7FFF_FFFF_FFFF),
    case("host/32-bit host in IA-32e mode", HOST, "must be 1",
         VM_EXIT_CONTROLS=clear(EXIT_CTL_HOST_ADDRESS_SPACE_SIZE)),
    case("host/64-bit host outside IA-32e mode", HOST, "outside IA-32e mode",
         cpu=CPU64_NO_LMA),
    case("host/IA-32e guest outside IA-32e mode", HOST, "outside IA-32e mode", "32",
         VM_ENTRY_CONTROLS=set_(ENTRY_CTL_IA32E_MODE_GUEST)),
    case("host/32-bit host RIP bit 32", HOST, "32-bit host with RIP", "32", HOST_RIP=1 << 32),
    case("host/32-bit host RIP 0xFFFFFFFF", OK, base="32", HOST_RIP=0xFFFF_FFFF),
    case("host/32-bit host with CR4.PCIDE", HOST, "host CR4", "32", HOST_CR4=set_(CR4_PCIDE)),
    case("host/32-bit host without CR4.PAE", OK, base="32", HOST_CR4=clear(CR4_PAE)),
    case("host/64-bit host without CR4.PAE", HOST, "CR4.PAE=0", HOST_CR4=clear(CR4_PAE)),
    case("host/RIP not canonical", HOST, "host RIP", HOST_RIP=NONCANONICAL),
    case("host/RIP canonical low", OK, HOST_RIP=0x0000_7FFF_FFFF_FFF0),
]

# =================================================================================================
# SDM 26.3.1.1: guest control registers, debug registers, MSRs (VM-entry failure, qual. 0)
# =================================================================================================

GUEST_REG_CASES = [
    case("greg/CR0.PG=0", GUEST, "guest CR0", GUEST_CR0=clear(CR0_PG)),
    case("greg/CR0.PE=0", GUEST, "guest CR0", GUEST_CR0=clear(CR0_PE)),
    case("greg/CR0.NE=0", GUEST, "guest CR0", GUEST_CR0=clear(CR0_NE)),
    case("greg/CR0 bit 63", GUEST, "guest CR0", GUEST_CR0=set_(1 << 63)),
    case("greg/unrestricted: CR0.PE=PG=0", OK, base="real"),
    case("greg/unrestricted: CR0.NE=0", GUEST, "guest CR0", "real", GUEST_CR0=0),
    case("greg/unrestricted: CR0.PG=1 PE=0", GUEST, "CR0.PG=1 with CR0.PE=0", "real",
         GUEST_CR0=CR0_NE | CR0_PG),
    case("greg/unrestricted: CR0.PE=1 PG=0", OK, base="real", GUEST_CR0=CR0_NE | CR0_PE,
         GUEST_CS_SELECTOR=0x08, GUEST_CS_AR_BYTES=0x409B, GUEST_CS_LIMIT=0xFFFFF),
    case("greg/CR4.VMXE=0", GUEST, "guest CR4", GUEST_CR4=clear(CR4_VMXE)),
    case("greg/CR4 bit 22", GUEST, "guest CR4", GUEST_CR4=set_(1 << 22)),
    case("greg/CR4.PCIDE outside IA-32e mode", GUEST, "guest CR4", "32",
         GUEST_CR4=set_(CR4_PCIDE)),
    case("greg/load debug: DEBUGCTL bit 2", GUEST, "DEBUGCTL",
         VM_ENTRY_CONTROLS=set_(ENTRY_CTL_LOAD_DEBUG_CONTROLS), GUEST_IA32_DEBUGCTL=1 << 2),
    case("greg/load debug: DEBUGCTL bit 63", GUEST, "DEBUGCTL",
         VM_ENTRY_CONTROLS=set_(ENTRY_CTL_LOAD_DEBUG_CONTROLS), GUEST_IA32_DEBUGCTL=1 << 63),
    case("greg/load debug: DEBUGCTL LBR|BTF", OK,
         VM_ENTRY_CONTROLS=set_(ENTRY_CTL_LOAD_DEBUG_CONTROLS), GUEST_IA32_DEBUGCTL=3),
    case("greg/DEBUGCTL not loaded", OK, GUEST_IA32_DEBUGCTL=1 << 2, GUEST_DR7=1 << 32),
    case("greg/IA-32e guest without CR4.PAE", GUEST, "IA-32e mode guest without",
         GUEST_CR4=clear(CR4_PAE)),
    case("greg/IA-32e guest without paging (UG)", GUEST, "IA-32e mode guest without", "real",
         VM_ENTRY_CONTROLS=set_(ENTRY_CTL_IA32E_MODE_GUEST), GUEST_CR4=CR4_VMXE | CR4_PAE),
    case("greg/CR3 bit 40", GUEST, "guest CR3", GUEST_CR3=1 << 40),
    case("greg/CR3 bit 63", GUEST, "guest CR3", GUEST_CR3=1 << 63),
    case("greg/load debug: DR7 bit 32", GUEST, "DR7",
         VM_ENTRY_CONTROLS=set_(ENTRY_CTL_LOAD_DEBUG_CONTROLS), GUEST_DR7=1 << 32),
    case("greg/load debug: DR7 bits 31:0", OK,
         VM_ENTRY_CONTROLS=set_(ENTRY_CTL_LOAD_DEBUG_CONTROLS), GUEST_DR7=0xFFFF_FFFF),
    case("greg/SYSENTER_ESP", GUEST, "GUEST_SYSENTER_ESP", GUEST_SYSENTER_ESP=NONCANONICAL),
    case("greg/SYSENTER_EIP", GUEST, "GUEST_SYSENTER_EIP", GUEST_SYSENTER_EIP=1 << 63),
    case("greg/load PAT: type 3", GUEST, "guest PAT",
         VM_ENTRY_CONTROLS=set_(ENTRY_CTL_LOAD_PAT), GUEST_IA32_PAT=3),
    case("greg/load PAT: type 0x10", GUEST, "guest PAT",
         VM_ENTRY_CONTROLS=set_(ENTRY_CTL_LOAD_PAT), GUEST_IA32_PAT=0x10 << 32),
    case("greg/load PAT: valid", OK, VM_ENTRY_CONTROLS=set_(ENTRY_CTL_LOAD_PAT)),
    case("greg/load EFER: reserved bit 9", GUEST, "guest EFER",
         VM_ENTRY_CONTROLS=set_(ENTRY_CTL_LOAD_EFER),
         GUEST_IA32_EFER=EFER_LMA | EFER_LME | 1 << 9),
    case("greg/load EFER: LMA=0 in IA-32e guest", GUEST, "EFER.LMA",
         VM_ENTRY_CONTROLS=set_(ENTRY_CTL_LOAD_EFER), GUEST_IA32_EFER=EFER_LME),
    case("greg/load EFER: LMA=1 in 32-bit guest", GUEST, "EFER.LMA", "32",
         VM_ENTRY_CONTROLS=set_(ENTRY_CTL_LOAD_EFER), GUEST_IA32_EFER=EFER_LMA),
    case("greg/load EFER: LME=0 with paging", GUEST, "EFER.LME",
         VM_ENTRY_CONTROLS=set_(ENTRY_CTL_LOAD_EFER), GUEST_IA32_EFER=EFER_LMA),
    case("greg/load EFER: LME=1 in 32-bit guest with paging", GUEST, "EFER.LME", "32",
         VM_ENTRY_CONTROLS=set_(ENTRY_CTL_LOAD_EFER), GUEST_IA32_EFER=EFER_LME),
    case("greg/load EFER: LME=1 without paging", OK, base="real",
         VM_ENTRY_CONTROLS=set_(ENTRY_CTL_LOAD_EFER), GUEST_IA32_EFER=EFER_LME),
    case("greg/load EFER: valid", OK, VM_ENTRY_CONTROLS=set_(ENTRY_CTL_LOAD_EFER)),
]

# =================================================================================================
# SDM 26.3.1.2-26.3.1.3: segment registers, GDTR, IDTR (qual. 0)
# =================================================================================================

_A64 = 0xA09B
_AD = 0xC093

SEGMENT_CASES = [
    # Selectors.
    case("seg/TR TI", GUEST, "TR selector TI", GUEST_TR_SELECTOR=0x1C),
    case("seg/LDTR TI (usable)", GUEST, "LDTR selector TI", GUEST_LDTR_SELECTOR=0x2C,
         GUEST_LDTR_AR_BYTES=0x82, GUEST_LDTR_LIMIT=0xFFFF),
    case("seg/LDTR TI (unusable)", OK, GUEST_LDTR_SELECTOR=0x2C),
    case("seg/LDTR usable", OK, GUEST_LDTR_SELECTOR=0x28, GUEST_LDTR_AR_BYTES=0x82,
         GUEST_LDTR_LIMIT=0xFFFF, GUEST_LDTR_BASE=0xFFFF_8000_0000_0000),
    case("seg/SS.RPL != CS.RPL", GUEST, "SS.RPL differs", GUEST_SS_SELECTOR=0x13,
         GUEST_SS_AR_BYTES=0xC0F3, GUEST_CS_AR_BYTES=0xA09F),
    case("seg/SS.RPL != CS.RPL with unrestricted guest", OK, base="real", GUEST_SS_SELECTOR=0x03),
    case("seg/SS.RPL != CS.RPL in virtual-8086 mode", OK, base="v86", GUEST_SS_SELECTOR=0x1113,
         GUEST_SS_BASE=0x11130),
    # Bases.
    *(case(f"seg/v86 {s} base", GUEST, f"virtual-8086 guest {s} base", "v86",
           **{f"GUEST_{s}_BASE": lambda v: v + 0x10})
      for s in ("CS", "SS", "DS", "ES", "FS", "GS")),
    case("seg/v86 base bit 32", GUEST, "virtual-8086 guest DS base", "v86",
         GUEST_DS_BASE=lambda v: v | 1 << 32),
    case("seg/v86 base low bits", GUEST, "virtual-8086 guest ES base", "v86",
         GUEST_ES_BASE=lambda v: v | 1),
    *(case(f"seg/{s} base not canonical", GUEST, f"guest {s} base not canonical",
           **{f"GUEST_{s}_BASE": NONCANONICAL}) for s in ("TR", "FS", "GS")),
    case("seg/LDTR base not canonical (usable)", GUEST, "LDTR base not canonical",
         GUEST_LDTR_AR_BYTES=0x82, GUEST_LDTR_LIMIT=0xFFFF, GUEST_LDTR_BASE=NONCANONICAL),
    case("seg/LDTR base not canonical (unusable)", OK, GUEST_LDTR_BASE=NONCANONICAL),
    case("seg/CS base bit 32", GUEST, "CS base bits 63:32", GUEST_CS_BASE=1 << 32),
    *(case(f"seg/{s} base bit 63", GUEST, f"{s} base bits 63:32",
           **{f"GUEST_{s}_BASE": 1 << 63}) for s in ("SS", "DS", "ES")),
    case("seg/DS base bit 63 (unusable)", OK, GUEST_DS_BASE=1 << 63,
         GUEST_DS_AR_BYTES=AR_UNUSABLE),
    case("seg/FS base above 4G", OK, GUEST_FS_BASE=0xFFFF_8000_0000_0000),
    # Virtual-8086 limits and access rights.
    *(case(f"seg/v86 {s} limit", GUEST, f"virtual-8086 guest {s} limit", "v86",
           **{f"GUEST_{s}_LIMIT": 0xFFFFF}) for s in ("CS", "GS")),
    *(case(f"seg/v86 {s} access rights", GUEST, f"virtual-8086 guest {s} access rights", "v86",
           **{f"GUEST_{s}_AR_BYTES": ar}) for s, ar in (("SS", 0xF2), ("FS", 0xF3 | AR_G),
                                                        ("ES", 0xF3 | AR_UNUSABLE))),
    case("seg/v86 ignores type/DPL rules", OK, base="v86", GUEST_TR_SELECTOR=0x1B),
    # Code and data segments: types.
    case("seg/CS type 3 without unrestricted guest", GUEST, "guest CS type",
         GUEST_CS_AR_BYTES=0xC093),
    case("seg/CS type 3 with unrestricted guest", OK, base="real", GUEST_CS_AR_BYTES=0x93),
    case("seg/CS type 1 with unrestricted guest", GUEST, "guest CS type", "real",
         GUEST_CS_AR_BYTES=0x91),
    case("seg/CS type 8 (execute-only, not accessed)", GUEST, "guest CS type",
         GUEST_CS_AR_BYTES=0xA098),
    case("seg/CS type 9 (execute-only)", OK, GUEST_CS_AR_BYTES=0xA099),
    # CS is checked whether or not its unusable bit is set (bit 16 is not reserved for CS).
    case("seg/CS unusable bit: CS still checked (S=0)", GUEST, "guest CS S=0",
         GUEST_CS_AR_BYTES=(_A64 & ~AR_S) | AR_UNUSABLE),
    case("seg/CS unusable bit alone", OK, GUEST_CS_AR_BYTES=_A64 | AR_UNUSABLE),
    case("seg/SS type 1", GUEST, "guest SS type", GUEST_SS_AR_BYTES=0xC091),
    case("seg/SS type 7 (expand-down)", OK, GUEST_SS_AR_BYTES=0xC097),
    case("seg/SS type 1 unusable", OK, GUEST_SS_AR_BYTES=0xC091 | AR_UNUSABLE),
    case("seg/DS not accessed", GUEST, "guest DS type", GUEST_DS_AR_BYTES=0xC092),
    case("seg/ES execute-only code", GUEST, "guest ES type", GUEST_ES_AR_BYTES=0xC099),
    case("seg/FS readable code", OK, GUEST_FS_AR_BYTES=0xC09B),
    case("seg/FS not accessed", GUEST, "guest FS type", GUEST_FS_AR_BYTES=0xC090),
    case("seg/GS not accessed, unusable", OK, GUEST_GS_AR_BYTES=0xC092 | AR_UNUSABLE),
    case("seg/GS not accessed", GUEST, "guest GS type", GUEST_GS_AR_BYTES=0xC092),
    # S, P, reserved bits, G.
    case("seg/CS S=0", GUEST, "guest CS S=0", GUEST_CS_AR_BYTES=_A64 & ~AR_S),
    case("seg/SS S=0", GUEST, "guest SS S=0", GUEST_SS_AR_BYTES=_AD & ~AR_S),
    case("seg/FS S=0", GUEST, "guest FS S=0", GUEST_FS_AR_BYTES=_AD & ~AR_S),
    case("seg/CS not present", GUEST, "guest CS not present", GUEST_CS_AR_BYTES=_A64 & ~AR_P),
    case("seg/ES not present", GUEST, "guest ES not present", GUEST_ES_AR_BYTES=_AD & ~AR_P),
    case("seg/ES not present, unusable", OK, GUEST_ES_AR_BYTES=(_AD & ~AR_P) | AR_UNUSABLE),
    case("seg/CS reserved bit 8", GUEST, "reserved bits", GUEST_CS_AR_BYTES=_A64 | 1 << 8),
    case("seg/DS reserved bit 11", GUEST, "reserved bits", GUEST_DS_AR_BYTES=_AD | 1 << 11),
    case("seg/GS reserved bit 17", GUEST, "reserved bits", GUEST_GS_AR_BYTES=_AD | 1 << 17),
    case("seg/SS reserved bit 31", GUEST, "reserved bits", GUEST_SS_AR_BYTES=_AD | 1 << 31),
    case("seg/CS G=1 limit 0xFFFFF000", GUEST, "G=1 with limit", GUEST_CS_LIMIT=0xFFFF_F000),
    case("seg/SS G=0 limit 0xFFFFFFFF", GUEST, "G=0 with a limit", GUEST_SS_AR_BYTES=0x4093),
    case("seg/DS G=0 limit 0xFFFFF", OK, GUEST_DS_AR_BYTES=0x4093, GUEST_DS_LIMIT=0xFFFFF),
    case("seg/ES G=0 limit 0x100000", GUEST, "G=0 with a limit", GUEST_ES_AR_BYTES=0x4093,
         GUEST_ES_LIMIT=0x10_0000),
    case("seg/FS G=1 limit 0xFFF", OK, GUEST_FS_LIMIT=0xFFF),
    case("seg/GS G=1 limit 0xFFE", GUEST, "G=1 with limit", GUEST_GS_LIMIT=0xFFE),
    # DPLs.
    case("seg/CS type 3 with DPL 1 (unrestricted)", GUEST, "CS type 3 with DPL", "real",
         GUEST_CS_AR_BYTES=0xB3),
    case("seg/non-conforming CS DPL != SS DPL", GUEST, "non-conforming",
         GUEST_CS_AR_BYTES=_A64 | 1 << 5),
    case("seg/conforming CS DPL > SS DPL", GUEST, "above SS DPL", GUEST_CS_AR_BYTES=0xA0FF,
         GUEST_CS_SELECTOR=0x09, GUEST_SS_SELECTOR=0x11, GUEST_SS_AR_BYTES=_AD | 1 << 5),
    case("seg/conforming CS DPL < SS DPL", OK, GUEST_CS_AR_BYTES=0xA09F,
         GUEST_CS_SELECTOR=0x0B, GUEST_SS_SELECTOR=0x13, GUEST_SS_AR_BYTES=_AD | 3 << 5),
    case("seg/SS DPL != SS.RPL", GUEST, "SS DPL differs from SS.RPL",
         GUEST_CS_AR_BYTES=0xA09F, GUEST_SS_AR_BYTES=_AD | 2 << 5),
    case("seg/SS DPL != SS.RPL with unrestricted guest", OK, base="real",
         GUEST_CR0=CR0_NE | CR0_PE, GUEST_CS_AR_BYTES=0x9F, GUEST_SS_AR_BYTES=0x93 | 2 << 5),
    case("seg/real mode SS DPL 3", GUEST, "SS DPL must be 0", "real", GUEST_CS_AR_BYTES=0x9F,
         GUEST_SS_AR_BYTES=0xF3),
    case("seg/CS type 3 SS DPL 1 (unrestricted, protected)", GUEST, "SS DPL must be 0",
         "real", GUEST_CR0=CR0_NE | CR0_PE, GUEST_CS_AR_BYTES=0x93, GUEST_SS_AR_BYTES=0xB3),
    *(case(f"seg/{s} DPL below RPL", GUEST, f"guest {s} DPL below RPL",
           **{f"GUEST_{s}_SELECTOR": 0x13}) for s in ("DS", "ES", "FS", "GS")),
    case("seg/DS DPL below RPL, conforming code", OK, GUEST_DS_SELECTOR=0x13,
         GUEST_DS_AR_BYTES=0xC09F),
    case("seg/DS DPL below RPL, unusable", OK, GUEST_DS_SELECTOR=0x13,
         GUEST_DS_AR_BYTES=_AD | AR_UNUSABLE),
    case("seg/DS DPL below RPL, unrestricted guest", OK, base="real", GUEST_DS_SELECTOR=0x03),
    case("seg/CS L=1 D/B=1 in IA-32e mode", GUEST, "L=1 and D/B=1",
         GUEST_CS_AR_BYTES=_A64 | AR_DB),
    case("seg/CS L=1 D/B=1 in a 32-bit guest", OK, base="32", GUEST_CS_AR_BYTES=_A64 | AR_DB),
    case("seg/compatibility-mode CS (L=0)", OK, GUEST_CS_AR_BYTES=0xC09B),
    case("seg/CPL-3 guest", OK, base="cpl3"),
    # TR.
    case("seg/TR type 3 in IA-32e guest", GUEST, "TR type", GUEST_TR_AR_BYTES=0x83),
    case("seg/TR type 3 in 32-bit guest", OK, base="32", GUEST_TR_AR_BYTES=0x83),
    case("seg/TR type 9 in 32-bit guest", GUEST, "TR type", "32", GUEST_TR_AR_BYTES=0x89),
    case("seg/TR S=1", GUEST, "TR access rights", GUEST_TR_AR_BYTES=0x8B | AR_S),
    case("seg/TR not present", GUEST, "TR access rights", GUEST_TR_AR_BYTES=0x0B),
    case("seg/TR reserved bit 9", GUEST, "TR access rights", GUEST_TR_AR_BYTES=0x8B | 1 << 9),
    case("seg/TR reserved bit 20", GUEST, "TR access rights",
         GUEST_TR_AR_BYTES=0x8B | 1 << 20),
    case("seg/TR unusable", GUEST, "TR unusable", GUEST_TR_AR_BYTES=0x8B | AR_UNUSABLE),
    case("seg/TR G=1 limit 0x67", GUEST, "guest TR: G=1", GUEST_TR_AR_BYTES=0x8B | AR_G),
    case("seg/TR G=0 limit 0x100000", GUEST, "guest TR: G=0", GUEST_TR_LIMIT=0x10_0000),
    # LDTR.
    case("seg/LDTR type 3", GUEST, "LDTR access rights", GUEST_LDTR_AR_BYTES=0x83),
    case("seg/LDTR S=1", GUEST, "LDTR access rights", GUEST_LDTR_AR_BYTES=0x92),
    case("seg/LDTR not present", GUEST, "LDTR access rights", GUEST_LDTR_AR_BYTES=0x02),
    case("seg/LDTR reserved bit 10", GUEST, "LDTR access rights",
         GUEST_LDTR_AR_BYTES=0x82 | 1 << 10),
    case("seg/LDTR G=1 limit 0", GUEST, "guest LDTR: G=1", GUEST_LDTR_AR_BYTES=0x82 | AR_G),
    case("seg/LDTR unusable with garbage", OK, GUEST_LDTR_AR_BYTES=0xFFFF_FFFF,
         GUEST_LDTR_LIMIT=0x1234_5678),
    # GDTR, IDTR.
    case("seg/GDTR base not canonical", GUEST, "GDTR base", GUEST_GDTR_BASE=NONCANONICAL),
    case("seg/IDTR base not canonical", GUEST, "IDTR base", GUEST_IDTR_BASE=1 << 62),
    case("seg/GDTR limit bit 16", GUEST, "GDTR limit", GUEST_GDTR_LIMIT=0x1_0000),
    case("seg/IDTR limit bit 31", GUEST, "IDTR limit", GUEST_IDTR_LIMIT=1 << 31),
]

# =================================================================================================
# SDM 26.3.1.4: RIP and RFLAGS (qual. 0)
# =================================================================================================

RIP_RFLAGS_CASES = [
    case("rip/not canonical (64-bit)", GUEST, "not canonical", GUEST_RIP=NONCANONICAL),
    case("rip/canonical high (64-bit)", OK, GUEST_RIP=0xFFFF_8000_0000_0000),
    case("rip/bit 32 in compatibility mode", GUEST, "bits 63:32",
         GUEST_CS_AR_BYTES=0xC09B, GUEST_RIP=1 << 32),
    case("rip/bit 32 in a 32-bit guest", GUEST, "bits 63:32", "32", GUEST_RIP=1 << 32),
    case("rip/CS.L=1 in a 32-bit guest: still 32 bits", GUEST, "bits 63:32", "32",
         GUEST_CS_AR_BYTES=_A64, GUEST_RIP=0xFFFF_8000_0000_0000),
    case("rip/0xFFFFFFFF in a 32-bit guest", OK, base="32", GUEST_RIP=0xFFFF_FFFF),
    case("rflags/bit 1 clear", GUEST, "RFLAGS", GUEST_RFLAGS=0),
    *(case(f"rflags/bit {b}", GUEST, "RFLAGS", GUEST_RFLAGS=RFLAGS_FIXED1 | 1 << b)
      for b in (3, 5, 15, 22, 63)),
    # (RFLAGS.VM makes the segment checks those of virtual-8086 mode, which come first.)
    case("rflags/VM in IA-32e guest", GUEST, "RFLAGS.VM=1", "v86",
         VM_ENTRY_CONTROLS=set_(ENTRY_CTL_IA32E_MODE_GUEST), GUEST_CR4=set_(CR4_PAE)),
    case("rflags/VM with CR0.PE=0 (unrestricted)", GUEST, "RFLAGS.VM=1", "v86",
         SECONDARY_VM_EXEC_CONTROL=set_(PROC2_UNRESTRICTED_GUEST), GUEST_CR0=CR0_NE),
    case("rflags/VM with a 64-bit guest's segments", GUEST, "virtual-8086 guest CS base",
         GUEST_RFLAGS=RFLAGS_FIXED1 | RFLAGS_VM),
    case("rflags/external interrupt with IF=0", GUEST, "RFLAGS.IF=0",
         VM_ENTRY_INTR_INFO_FIELD=inject(0, 0x20)),
    case("rflags/external interrupt with IF=1", OK, GUEST_RFLAGS=RF_IF,
         VM_ENTRY_INTR_INFO_FIELD=inject(0, 0x20)),
    case("rflags/NMI with IF=0", OK, VM_ENTRY_INTR_INFO_FIELD=inject(2, 2)),
]

# =================================================================================================
# SDM 26.3.1.5: non-register state (qual. 0)
# =================================================================================================

NONREG_CASES = [
    case("act/shutdown (unsupported)", GUEST, "activity state", GUEST_ACTIVITY_STATE=2),
    case("act/wait-for-SIPI (unsupported)", GUEST, "activity state", GUEST_ACTIVITY_STATE=3),
    case("act/4", GUEST, "activity state", GUEST_ACTIVITY_STATE=4),
    case("act/0xFFFFFFFF", GUEST, "activity state", GUEST_ACTIVITY_STATE=0xFFFF_FFFF),
    case("act/HLT", OK, GUEST_ACTIVITY_STATE=1),
    case("act/HLT with SS.DPL=3", GUEST, "HLT activity state with SS.DPL", "cpl3",
         GUEST_ACTIVITY_STATE=1),
    case("act/HLT with STI blocking", GUEST, "outside the active state",
         GUEST_ACTIVITY_STATE=1, GUEST_INTERRUPTIBILITY_INFO=1, GUEST_RFLAGS=RF_IF),
    case("act/HLT with MOV-SS blocking", GUEST, "outside the active state",
         GUEST_ACTIVITY_STATE=1, GUEST_INTERRUPTIBILITY_INFO=2),
    case("act/HLT injecting #UD", GUEST, "into the HLT state", GUEST_ACTIVITY_STATE=1,
         VM_ENTRY_INTR_INFO_FIELD=inject(3, 6)),
    case("act/HLT injecting a software interrupt", GUEST, "into the HLT state",
         GUEST_ACTIVITY_STATE=1, VM_ENTRY_INTR_INFO_FIELD=inject(4, 0x80),
         VM_ENTRY_INSTRUCTION_LEN=2),
    case("act/HLT injecting other event 0", OK, GUEST_ACTIVITY_STATE=1,
         VM_ENTRY_INTR_INFO_FIELD=inject(7, 0)),
    case("act/HLT injecting #DB", OK, GUEST_ACTIVITY_STATE=1,
         VM_ENTRY_INTR_INFO_FIELD=inject(3, 1)),
    case("act/HLT injecting #MC", OK, GUEST_ACTIVITY_STATE=1,
         VM_ENTRY_INTR_INFO_FIELD=inject(3, 18)),
    case("act/HLT injecting NMI", OK, GUEST_ACTIVITY_STATE=1,
         VM_ENTRY_INTR_INFO_FIELD=inject(2, 2)),
    case("act/HLT injecting an external interrupt", OK, GUEST_ACTIVITY_STATE=1,
         GUEST_RFLAGS=RF_IF, VM_ENTRY_INTR_INFO_FIELD=inject(0, 0x30)),
    case("intr/reserved bit 4 (enclave)", GUEST, "interruptibility",
         GUEST_INTERRUPTIBILITY_INFO=0x10),
    case("intr/reserved bit 31", GUEST, "interruptibility", GUEST_INTERRUPTIBILITY_INFO=1 << 31),
    case("intr/STI and MOV SS", GUEST, "both STI and MOV SS", GUEST_INTERRUPTIBILITY_INFO=3,
         GUEST_RFLAGS=RF_IF),
    case("intr/STI with IF=0", GUEST, "STI with RFLAGS.IF=0", GUEST_INTERRUPTIBILITY_INFO=1),
    case("intr/STI with IF=1", OK, GUEST_INTERRUPTIBILITY_INFO=1, GUEST_RFLAGS=RF_IF),
    case("intr/MOV SS with IF=0", OK, GUEST_INTERRUPTIBILITY_INFO=2),
    case("intr/external interrupt with STI blocking", GUEST, "external-interrupt injection "
         "with blocking", GUEST_INTERRUPTIBILITY_INFO=1, GUEST_RFLAGS=RF_IF,
         VM_ENTRY_INTR_INFO_FIELD=inject(0, 0x20)),
    case("intr/external interrupt with MOV-SS blocking", GUEST, "external-interrupt injection "
         "with blocking", GUEST_INTERRUPTIBILITY_INFO=2, GUEST_RFLAGS=RF_IF,
         VM_ENTRY_INTR_INFO_FIELD=inject(0, 0x20)),
    case("intr/NMI with MOV-SS blocking", GUEST, "NMI injection with blocking by MOV SS",
         GUEST_INTERRUPTIBILITY_INFO=2, VM_ENTRY_INTR_INFO_FIELD=inject(2, 2)),
    case("intr/NMI with STI blocking", OK, GUEST_INTERRUPTIBILITY_INFO=1, GUEST_RFLAGS=RF_IF,
         VM_ENTRY_INTR_INFO_FIELD=inject(2, 2)),
    case("intr/SMI blocking", GUEST, "blocking by SMI", GUEST_INTERRUPTIBILITY_INFO=4),
    case("intr/NMI with virtual-NMI blocking", GUEST, "virtual-NMI blocking",
         PIN_BASED_VM_EXEC_CONTROL=set_(PIN_NMI_EXITING | PIN_VIRTUAL_NMIS),
         GUEST_INTERRUPTIBILITY_INFO=8, VM_ENTRY_INTR_INFO_FIELD=inject(2, 2)),
    case("intr/NMI with NMI blocking, no virtual NMIs", OK, GUEST_INTERRUPTIBILITY_INFO=8,
         VM_ENTRY_INTR_INFO_FIELD=inject(2, 2)),
    case("intr/NMI blocking, no injection", OK, GUEST_INTERRUPTIBILITY_INFO=8,
         PIN_BASED_VM_EXEC_CONTROL=set_(PIN_NMI_EXITING | PIN_VIRTUAL_NMIS)),
    *(case(f"dbg/pending reserved bit {b}", GUEST, "pending debug exceptions",
           GUEST_PENDING_DBG_EXCEPTIONS=1 << b) for b in (4, 11, 13, 15, 16, 17, 63)),
    case("dbg/pending B0-B3, enabled breakpoint", OK, GUEST_PENDING_DBG_EXCEPTIONS=0x100F),
    case("dbg/STI blocking, TF=1, BS=0", GUEST, "BS=0 with RFLAGS.TF=1",
         GUEST_INTERRUPTIBILITY_INFO=1, GUEST_RFLAGS=RF_IF | RFLAGS_TF),
    case("dbg/STI blocking, TF=1, BS=1", OK, GUEST_INTERRUPTIBILITY_INFO=1,
         GUEST_RFLAGS=RF_IF | RFLAGS_TF, GUEST_PENDING_DBG_EXCEPTIONS=PENDING_DBG_BS),
    case("dbg/MOV-SS blocking, TF=0, BS=1", GUEST, "BS=1 with RFLAGS.TF=0",
         GUEST_INTERRUPTIBILITY_INFO=2, GUEST_PENDING_DBG_EXCEPTIONS=PENDING_DBG_BS),
    case("dbg/HLT, TF=1, BTF=1, BS=1", GUEST, "BS=1 with RFLAGS.TF=0 or DEBUGCTL.BTF=1",
         GUEST_ACTIVITY_STATE=1, GUEST_RFLAGS=RFLAGS_FIXED1 | RFLAGS_TF,
         GUEST_IA32_DEBUGCTL=DEBUGCTL_BTF, GUEST_PENDING_DBG_EXCEPTIONS=PENDING_DBG_BS),
    case("dbg/HLT, TF=1, BTF=1, BS=0", OK, GUEST_ACTIVITY_STATE=1,
         GUEST_RFLAGS=RFLAGS_FIXED1 | RFLAGS_TF, GUEST_IA32_DEBUGCTL=DEBUGCTL_BTF),
    case("dbg/HLT, TF=1, BTF=0, BS=0", GUEST, "BS=0 with RFLAGS.TF=1", GUEST_ACTIVITY_STATE=1,
         GUEST_RFLAGS=RFLAGS_FIXED1 | RFLAGS_TF),
    case("dbg/active without blocking, TF=1, BS=0", OK, GUEST_RFLAGS=RFLAGS_FIXED1 | RFLAGS_TF),
    case("dbg/active without blocking, TF=0, BS=1", OK,
         GUEST_PENDING_DBG_EXCEPTIONS=PENDING_DBG_BS),
]

# =================================================================================================
# VMCS link pointer (qual. 4) and the order of the groups
# =================================================================================================

LINK_CASES = [
    case("link/valid region", OK, VMCS_LINK_POINTER=LINK_REGION),
    case("link/misaligned", LINK, "VMCS link pointer", VMCS_LINK_POINTER=LINK_REGION + 8),
    case("link/above MAXPHYADDR", LINK, "VMCS link pointer", VMCS_LINK_POINTER=1 << 40),
    case("link/all ones but bit 0", LINK, "VMCS link pointer",
         VMCS_LINK_POINTER=0xFFFF_FFFF_FFFF_FFFE),
    case("link/wrong revision", LINK, "revision", link_revision=VMCS_REVISION_ID ^ 0x100,
         VMCS_LINK_POINTER=LINK_REGION),
    case("link/shadow-VMCS indicator", LINK, "revision",
         link_revision=VMCS_REVISION_ID | VMCS_SHADOW_INDICATOR, VMCS_LINK_POINTER=LINK_REGION),
    case("link/zero revision at address 0", LINK, "revision", link_revision=0,
         VMCS_LINK_POINTER=0),
    case("link/all ones: revision not read", OK, link_revision=0),
    # SDM 26.3.1.5: outside SMM the link pointer must not contain the current-VMCS pointer (the
    # region's revision dword is right: it is a VMCS).
    case("link/the current VMCS", LINK, "current-VMCS pointer", VMCS_LINK_POINTER=CURRENT_VMCS),
    case("order/controls before host", CONTROLS, "VPID 0", VIRTUAL_PROCESSOR_ID=0, HOST_CR0=0),
    case("order/controls before guest and link", CONTROLS, "MSR lists",
         VM_ENTRY_MSR_LOAD_COUNT=1, GUEST_RFLAGS=0, VMCS_LINK_POINTER=1),
    case("order/host before guest", HOST, "host TR selector 0", HOST_TR_SELECTOR=0,
         GUEST_RFLAGS=0),
    case("order/guest before link", GUEST, "RFLAGS", GUEST_RFLAGS=0, VMCS_LINK_POINTER=1),
    case("order/host before link", HOST, "host CR3", HOST_CR3=1 << 60, VMCS_LINK_POINTER=1),
]

# MAXPHYADDR other than 40 (the block's parameter).
MAXPHYADDR_CASES = [
    case("mp36/I/O bitmap at 2^36", CONTROLS, "IO_BITMAP_A", maxphyaddr=36,
         CPU_BASED_VM_EXEC_CONTROL=set_(PROC_USE_IO_BITMAPS), IO_BITMAP_A=1 << 36,
         IO_BITMAP_B=0x2000),
    case("mp36/I/O bitmap below 2^36", OK, maxphyaddr=36,
         CPU_BASED_VM_EXEC_CONTROL=set_(PROC_USE_IO_BITMAPS), IO_BITMAP_A=(1 << 36) - 0x1000,
         IO_BITMAP_B=0x2000),
    case("mp36/EPTP bit 36", CONTROLS, "EPTP", maxphyaddr=36, EPT_POINTER=1 << 36 | 0x1E),
    case("mp36/host CR3 bit 36", HOST, "host CR3", maxphyaddr=36, HOST_CR3=1 << 36),
    case("mp36/guest CR3 bit 36", GUEST, "guest CR3", maxphyaddr=36, GUEST_CR3=1 << 36),
    case("mp36/guest CR3 bit 35", OK, maxphyaddr=36, GUEST_CR3=1 << 35),
    case("mp36/link at 2^36", LINK, "VMCS link pointer", maxphyaddr=36,
         VMCS_LINK_POINTER=1 << 36),
    case("mp52/I/O bitmap at 2^51", OK, maxphyaddr=52,
         CPU_BASED_VM_EXEC_CONTROL=set_(PROC_USE_IO_BITMAPS), IO_BITMAP_A=1 << 51,
         IO_BITMAP_B=0x2000),
    case("mp52/EPTP bit 51", OK, maxphyaddr=52, EPT_POINTER=1 << 51 | 0x1E),
    case("mp52/EPTP bit 52", CONTROLS, "EPTP", maxphyaddr=52, EPT_POINTER=1 << 52 | 0x1E),
    case("mp52/host CR3 bit 51", OK, maxphyaddr=52, HOST_CR3=1 << 51),
    case("mp52/guest CR3 bit 52", GUEST, "guest CR3", maxphyaddr=52, GUEST_CR3=1 << 52),
    case("mp52/link at 2^45", OK, maxphyaddr=52, VMCS_LINK_POINTER=1 << 45),
    case("mp52/link at 2^52", LINK, "VMCS link pointer", maxphyaddr=52,
         VMCS_LINK_POINTER=1 << 52),
]

BASE_CASES = [case(f"base/{name}", OK, None, name) for name in BASES]

CASES = (BASE_CASES + CONTROL_CASES + HOST_CASES + GUEST_REG_CASES + SEGMENT_CASES
         + RIP_RFLAGS_CASES + NONREG_CASES + LINK_CASES + MAXPHYADDR_CASES)
assert len({c.id for c in CASES}) == len(CASES), "duplicate directed test ids"


@pytest.fixture(scope="module")
def rtl_directed(build_root):
    """Every directed case through the RTL: one simulation per MAXPHYADDR (with ``WAVES=1``, a
    VCD per simulation in <build>/waves/vm_entry_checks/)."""
    from sim import flow

    out = {}
    for mp in sorted({c.maxphyaddr for c in CASES}):
        cases = [c for c in CASES if c.maxphyaddr == mp]
        vcd = None
        if flow.waves_requested():
            (build_root / "waves" / "vm_entry_checks").mkdir(parents=True, exist_ok=True)
            vcd = str(build_root / "waves" / "vm_entry_checks" / f"directed-mp{mp}.vcd")
        results = simulate([c.vector() for c in cases], maxphyaddr=mp, seed=SEED, vcd=vcd)
        out.update((c.id, r) for c, r in zip(cases, results, strict=True))
    return out


@pytest.mark.parametrize("c", CASES, ids=lambda c: c.id)
def test_directed(c: Case, rtl_directed):
    vec = c.vector()
    model = model_verdict(vec, c.maxphyaddr)
    assert model.key == c.expect, f"model: {model}"
    if c.why is not None:
        assert c.why in model.why, f"model failed another rule: {model.why!r}"
    got = rtl_directed[c.id]
    assert got.key == c.expect, f"RTL {got}, model {model}"
    assert bool(got.rules) == (c.expect != OK), got.rules


def test_every_rtl_rule_is_directed(rtl_directed):
    """Each rule register of the RTL fires in some directed case; most are the only failing rule
    of a case (the exceptions break an earlier rule by construction)."""
    from rtl.vmx.entry_checks import VmEntryChecks

    dut = VmEntryChecks()
    every = {f"{g}.{n}" for g, rules in dut.rule_regs.items() for n in rules}
    fired = set().union(*(r.rules for r in rtl_directed.values()))
    assert every - fired == set(), "rules without a directed case"
    alone = {next(iter(r.rules)) for r in rtl_directed.values() if len(r.rules) == 1}
    # CR4.PCIDE is outside IA32_VMX_CR4_FIXED1, so "PCIDE outside IA-32e mode" always comes with
    # "CR4 fixed bits".
    assert every - alone <= {"guest.reg_pcide"}, sorted(every - alone)


# =================================================================================================
# Randomized differential test against the model
# =================================================================================================

_RANDOM_RUNS = [
    pytest.param(MAXPHYADDR, SEED, RANDOM_VECTORS // 2, id="mp40-a"),
    pytest.param(MAXPHYADDR, SEED + 1000, RANDOM_VECTORS - RANDOM_VECTORS // 2, id="mp40-b"),
    pytest.param(36, SEED + 2000, max(1, RANDOM_VECTORS // 8), id="mp36"),
    pytest.param(52, SEED + 3000, max(1, RANDOM_VECTORS // 8), id="mp52"),
]


def test_link_revision_parameter():
    """A design built with another revision identifier (`VmxModel(revision_id=...)`) checks the
    linked region against that one."""
    other = 0x1234_5678
    vectors = [base_vector(name=f"link rev {rev:#x}", link_revision=rev,
                           VMCS_LINK_POINTER=LINK_REGION)
               for rev in (other, VMCS_REVISION_ID, other | VMCS_SHADOW_INDICATOR, other ^ 1)]
    expect = [OK, LINK, LINK, LINK]
    assert [model_verdict(v, revision_id=other).key for v in vectors] == expect
    assert [r.key for r in simulate(vectors, revision_id=other, seed=SEED)] == expect


def _rule_of(why: str) -> str:
    return re.sub(r"0x[0-9a-f]+|\d+", "N", why)


@pytest.mark.parametrize("maxphyaddr,seed,count", _RANDOM_RUNS)
def test_random_differential(maxphyaddr, seed, count):
    rng = random.Random(seed)
    vectors = [random_vector(rng, maxphyaddr, name=f"seed {seed} #{i}") for i in range(count)]
    expected = [model_verdict(v, maxphyaddr) for v in vectors]
    got = simulate(vectors, maxphyaddr=maxphyaddr, seed=seed)
    mismatches = [(v, e, g) for v, e, g in zip(vectors, expected, got, strict=True)
                  if e.key != g.key]
    report = "\n".join(f"{v.name}: model {e.key} ({e.why}), RTL {g.key} rules {sorted(g.rules)}"
                       for v, e, g in mismatches[:10])
    assert not mismatches, f"{len(mismatches)} of {count} differ:\n{report}"
    # The vectors must exercise every outcome (and many distinct reasons), or the test is weak.
    outcomes = collections.Counter(e.key for e in expected)
    if count >= 1000:
        for key in (OK, CONTROLS, HOST, GUEST, LINK):
            assert outcomes[key] >= count // 200, outcomes
        assert len({_rule_of(e.why) for e in expected}) >= 60


# =================================================================================================
# Verilator lint
# =================================================================================================


@pytest.mark.parametrize("maxphyaddr", [MAXPHYADDR, 36, 52])
def test_verilator_lint(maxphyaddr, build_root):
    from sim import flow, lint

    verilog = flow.generate_verilog(VmEntryChecks, "vm_entry_checks",
                                    {"maxphyaddr": maxphyaddr}, build_root=build_root)
    ok, output = lint.lint_verilog(verilog, top_module="vm_entry_checks")
    assert ok, output


def test_latency_and_ports():
    """The documented interface the VMX unit instantiates."""
    from rtl.vmx.entry_checks import VmEntryChecks
    from rtl.vmx.layouts import CPU_STATE_LAYOUT, ENTRY_CHECK_RESULT_LAYOUT, WORKING_LAYOUT

    dut = VmEntryChecks(maxphyaddr=40)
    assert VmEntryChecks.LATENCY == 2
    members = dut.signature.members
    assert members["vmcs"].shape == WORKING_LAYOUT and members["cpu"].shape == CPU_STATE_LAYOUT
    assert members["result"].shape == ENTRY_CHECK_RESULT_LAYOUT
    for name, width in (("link_revision", 32), ("start", 1), ("done", 1),
                        ("link_read_needed", 1), ("link_addr", 64)):
        assert Shape.cast(members[name].shape).width == width
    with pytest.raises(ValueError):
        VmEntryChecks(maxphyaddr=60)


# =================================================================================================
# The exported helpers against their Python counterparts
# =================================================================================================


def test_helpers_match_python():
    """`canonical`, `vmx_address_ok`, `eptp_ok`, `pdpte_ok`, `pat_ok`, `controls_ok`,
    `limit_granularity_ok`, `greater_than` against rtl.arch / the model, on random and corner
    values (MAXPHYADDR 36, 40 and 52), in one simulation."""
    from amaranth import Module, Signal
    from amaranth.sim import Simulator

    from rtl import arch
    from rtl.vmx import entry_checks as ec
    from tb.model.vmx import _g_problem, _pdpte_problem

    rng = random.Random(SEED)
    msrs = [arch.VMX_MSRS[m] for m in arch.CONTROL_CHECK_MSRS.values()]
    x64, x32 = Signal(64), Signal(32)
    checks = {    # name -> (Amaranth value, Python function of (x64, x32))
        "canonical": (ec.canonical(x64), lambda a, b: arch.canonical(a)),
        "greater_than 15": (ec.greater_than(x32, 15), lambda a, b: b > 15),
        "greater_than 0x1234": (ec.greater_than(x32, 0x1234), lambda a, b: b > 0x1234),
        "pat_ok": (ec.pat_ok(x64), lambda a, b: arch.pat_valid(a)),
        "limit_granularity_ok": (ec.limit_granularity_ok(x32, x64[:32]),
                                 lambda a, b: _g_problem(b, a & 0xFFFF_FFFF) is None),
    }
    for mp in (36, 40, 52):
        checks[f"vmx_address_ok {mp}"] = (ec.vmx_address_ok(x64, mp),
                                          lambda a, b, mp=mp: arch.vmx_address_ok(a, mp))
        checks[f"eptp_ok {mp}"] = (ec.eptp_ok(x64, mp),
                                   lambda a, b, mp=mp: arch.eptp_problem(a, mp) is None)
        checks[f"pdpte_ok {mp}"] = (ec.pdpte_ok(x64, mp),
                                    lambda a, b, mp=mp: not _pdpte_problem(a, mp))
    for i, msr in enumerate(msrs):
        checks[f"controls_ok {i}"] = (ec.controls_ok(x32, msr),
                                      lambda a, b, msr=msr: arch.controls_problem(b, msr) == 0)
    m = Module()
    outs = {}
    for name, (value, _) in checks.items():
        outs[name] = Signal(name=re.sub(r"\W", "_", name))
        m.d.comb += outs[name].eq(value)

    def values():
        corners = [0, (1 << 64) - 1, 1 << 47, (1 << 64) - (1 << 47), (1 << 47) - 1, 0x1E,
                   0x10_0000 | 0x1E, 1 << 36 | 0x1E, 0x0007040600070406, 0x5001, 0x5023,
                   1 << 40 | 1, 0xFFF, 0xFFFFF, 0x100000 | 1 << 15]
        for v in corners:
            yield v, v & 0xFFFF_FFFF
        for _ in range(3000):
            a = rng.getrandbits(64) >> rng.randrange(64)
            if rng.random() < 0.5:
                a ^= 1 << rng.randrange(64)
            b = rng.choice([rng.getrandbits(32) >> rng.randrange(32),
                            (rng.choice(msrs) & 0xFFFF_FFFF) | (rng.getrandbits(32)
                                                                 & rng.getrandbits(32))])
            yield a, b

    failures = []

    async def bench(ctx):
        for a, b in values():
            ctx.set(x64, a)
            ctx.set(x32, b)
            for name, (_, python) in checks.items():
                if ctx.get(outs[name]) != bool(python(a, b)):
                    failures.append(f"{name}({a:#x}, {b:#x}): RTL {ctx.get(outs[name])}")

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert not failures, "\n".join(failures[:20])
