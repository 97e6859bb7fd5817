"""Layouts shared by the blocks of the VMX unit (and by the core that drives it).

The field table itself lives in `rtl.arch.vmx` (the one source of truth); this module only turns
it into Amaranth layouts:

- `VMCS_LAYOUT`: every supported VMCS field as one member, named as in `rtl.arch.vmx.FIELDS` but
  in lower case (``vmcs.guest_rip``), as wide as the field (16, 32 or 64 bits; natural width is
  64).
- `WORKING_LAYOUT`: the members of `VMCS_LAYOUT` that blocks read in parallel (`WORKING_FIELDS`).
  The VMX unit holds the current VMCS's values of these in a register bank of this layout (the
  working copy) and hands it to the blocks that decide from it: `VmEntryChecks`, `ExitDecisions`,
  the state loads, the system unit.
- `GUEST_STATE_LAYOUT` / `HOST_STATE_LAYOUT`: the guest-state and host-state areas alone (what a
  VM exit saves from the core and what it hands back).
- `CPU_STATE_LAYOUT`: the processor state the instruction checks look at (`tb.model.vmx.CpuState`).
- `EntryCheckKind`, `ENTRY_CHECK_RESULT_LAYOUT`: the answer of the VM-entry checks.
"""

from __future__ import annotations

from amaranth.hdl import Mux, Value, unsigned
from amaranth.lib import data, enum

from rtl.arch.vmx import FIELDS, FieldType, FieldWidth


def member_name(field) -> str:
    """Member name of a `VmcsField` (or a field name) in `VMCS_LAYOUT`."""
    return (field if isinstance(field, str) else field.name).lower()


VMCS_LAYOUT = data.StructLayout({member_name(f): unsigned(f.bits) for f in FIELDS})

#: Fields no block reads in parallel, so the working copy leaves them to the cache memory:
#: the VM-exit information fields (a VM exit writes them and only VMREAD reads them) and the
#: addresses of the MSR areas (MSR lists are not supported: a VM entry with a nonzero count
#: fails, so nothing reads the addresses).
NOT_IN_WORKING_COPY = frozenset(
    [f.name for f in FIELDS if f.type is FieldType.EXIT_INFO]
    + ["VM_EXIT_MSR_STORE_ADDR", "VM_EXIT_MSR_LOAD_ADDR", "VM_ENTRY_MSR_LOAD_ADDR"])

#: The fields the working copy holds, in `FIELDS` order.
WORKING_FIELDS = tuple(f for f in FIELDS if f.name not in NOT_IN_WORKING_COPY)

WORKING_LAYOUT = data.StructLayout({member_name(f): unsigned(f.bits) for f in WORKING_FIELDS})

GUEST_STATE_LAYOUT = data.StructLayout(
    {member_name(f): unsigned(f.bits) for f in FIELDS if f.type is FieldType.GUEST})

HOST_STATE_LAYOUT = data.StructLayout(
    {member_name(f): unsigned(f.bits) for f in FIELDS if f.type is FieldType.HOST})

CPU_STATE_LAYOUT = data.StructLayout({
    "cpl": 2,
    "cr0": 64,
    "cr4": 64,
    "efer": 64,
    "cs_l": 1,                  # CS.L: with EFER.LMA, 64-bit mode; without, compatibility mode
    "rflags": 64,
    "feature_control": 64,      # IA32_FEATURE_CONTROL
    "mov_ss_blocking": 1,       # the previous instruction loaded SS (VMLAUNCH/VMRESUME error 26)
})


class EntryCheckKind(enum.Enum, shape=2):
    """Outcome of the VM-entry checks of SDM 26.2-26.3 (in the SDM's order)."""
    OK = 0
    CONTROLS = 1        # VMfailValid(7): VM-execution, VM-exit or VM-entry control fields
    HOST = 2            # VMfailValid(8): host-state area
    GUEST = 3           # VM-entry failure: exit reason 0x80000021 with `qualification`


ENTRY_CHECK_RESULT_LAYOUT = data.StructLayout({
    "kind": EntryCheckKind,
    # With GUEST: the exit qualification (rtl.arch.vmx ENTRY_FAIL_*: 0 default, 2 PDPTE,
    # 3 NMI injection, 4 VMCS link pointer).
    "qualification": 3,
})


def cut_to_width(value, width) -> Value:
    """64-bit `value` as a field of `width` holds it (a `FieldWidth` value or its 2-bit encoding,
    encoding bits 14:13): 16- and 32-bit fields zero-extended, 64-bit and natural-width whole."""
    w = Value.cast(width)
    return Mux(w == FieldWidth.BITS16.value, value[0:16],
               Mux(w == FieldWidth.BITS32.value, value[0:32], value))
