"""The SDM's rules for a system unit's write of CR0, CR3, CR4 and EFER, as pure functions.

Each takes Amaranth values and returns a value, for `rtl.soc.system_unit.SystemUnit` (and any
other RTL) to use; `tb/model/system_rules.py` writes the same rules in Python and
tests/test_soc_system_rules.py compares them. The processor is in 64-bit mode (IA-32e paging:
CR0.PG, CR4.PAE and EFER.LME stay set).

* MOV to CR0 (SDM Vol. 2B, MOV to/from control registers, 64-bit mode exceptions; Vol. 3C
  24.8): #GP(0) for a 1 in bits 63:32, PG = 1 with PE = 0 or NW = 1 with CD = 0 (invalid
  combinations), PG = 0 (clearing PG in IA-32e mode), and in VMX root operation for a value
  outside IA32_VMX_CR0_FIXED0/FIXED1.
* MOV to CR3: #GP(0) for a 1 at or above MAXPHYADDR (CR4.PCIDE is 0: bits 11:0 are ignored).
* MOV to CR4: #GP(0) for a bit the processor does not support (outside IA32_VMX_CR4_FIXED1: this
  design's CR4 features), PAE = 0 (clearing PAE in IA-32e mode), and in VMX root operation for
  VMXE = 0 (IA32_VMX_CR4_FIXED0).
* WRMSR to IA32_EFER: #GP(0) for a reserved bit or a change of LME (paging is on); LMA is
  read-only, SCE and NXE are written.
"""

from ..arch.paging import CR0_PE, CR0_PG, CR4_PAE, EFER_LMA, EFER_LME, EFER_NXE
from ..arch.vmx import (
    CR0_CD,
    CR0_NW,
    EFER_SCE,
    VMX_CR0_FIXED0,
    VMX_CR0_FIXED1,
    VMX_CR4_FIXED0,
    VMX_CR4_FIXED1,
)

__all__ = ["EFER_WRITABLE", "mov_to_cr0_faults", "mov_to_cr3_faults", "mov_to_cr4_faults",
           "wrmsr_efer_faults", "wrmsr_efer_value"]

_U64 = (1 << 64) - 1
#: EFER bits WRMSR writes (LME only with the value it has; LMA is read-only).
EFER_WRITABLE = EFER_SCE | EFER_NXE
_EFER_DEFINED = EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE


def _set(v, bit):
    return (v & bit) != 0


def mov_to_cr0_faults(v, vmx_root):
    """MOV to CR0 of the 64-bit value `v` raises #GP(0); `vmx_root`: in VMX root operation."""
    fixed = ((v & VMX_CR0_FIXED0) != VMX_CR0_FIXED0) | ((v & ~VMX_CR0_FIXED1 & _U64) != 0)
    return ((v[32:] != 0) | (_set(v, CR0_PG) & ~_set(v, CR0_PE))
            | (_set(v, CR0_NW) & ~_set(v, CR0_CD)) | ~_set(v, CR0_PG) | (vmx_root & fixed))


def mov_to_cr3_faults(v, maxphyaddr: int):
    """MOV to CR3 of `v` raises #GP(0)."""
    return v[maxphyaddr:] != 0


def mov_to_cr4_faults(v, vmx_root):
    """MOV to CR4 of the 64-bit value `v` raises #GP(0); `vmx_root`: in VMX root operation."""
    return (((v & ~VMX_CR4_FIXED1 & _U64) != 0) | ~_set(v, CR4_PAE)
            | (vmx_root & ((v & VMX_CR4_FIXED0) != VMX_CR4_FIXED0)))


def wrmsr_efer_faults(v, efer):
    """WRMSR of `v` to IA32_EFER raises #GP(0); `efer` is its value now."""
    return ((v & ~_EFER_DEFINED & _U64) != 0) | ((v & EFER_LME) != (efer & EFER_LME))


def wrmsr_efer_value(v, efer):
    """IA32_EFER after a WRMSR of `v` that does not fault."""
    return (v & EFER_WRITABLE) | (efer & ~EFER_WRITABLE & _U64)
