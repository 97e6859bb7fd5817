"""Reference model of the system unit's CR and EFER write rules (`rtl.soc.system_rules`).

Written from the SDM's text, bit by bit, with Python integers: Vol. 2B "MOV—Move to/from
Control Registers" (64-bit mode exceptions), Vol. 3C 24.8 (the VMX fixed-bit MSRs in VMX
operation), "WRMSR" and IA32_EFER's layout (Vol. 3A 2.2.1). The processor is in 64-bit mode.
"""

from __future__ import annotations

from rtl.arch.vmx import VMX_CR0_FIXED0, VMX_CR0_FIXED1, VMX_CR4_FIXED0, VMX_CR4_FIXED1

U64 = (1 << 64) - 1


def _bit(v: int, n: int) -> bool:
    return bool(v >> n & 1)


def mov_to_cr0_faults(v: int, vmx_root: bool) -> bool:
    pe, nw, cd, pg = _bit(v, 0), _bit(v, 29), _bit(v, 30), _bit(v, 31)
    if v >> 32:                         # reserved bits 63:32
        return True
    if pg and not pe:                   # invalid combination
        return True
    if nw and not cd:                   # invalid combination
        return True
    if not pg:                          # clearing PG in IA-32e mode
        return True
    if vmx_root:                        # IA32_VMX_CR0_FIXED0: 1s required, FIXED1: 0s required
        if v & VMX_CR0_FIXED0 != VMX_CR0_FIXED0 or v & ~VMX_CR0_FIXED1 & U64:
            return True
    return False


def mov_to_cr3_faults(v: int, maxphyaddr: int) -> bool:
    return v >> maxphyaddr != 0


def mov_to_cr4_faults(v: int, vmx_root: bool) -> bool:
    if v & ~VMX_CR4_FIXED1 & U64:       # a feature this processor does not have
        return True
    if not _bit(v, 5):                  # clearing PAE in IA-32e mode
        return True
    return vmx_root and v & VMX_CR4_FIXED0 != VMX_CR4_FIXED0


def wrmsr_efer_faults(v: int, efer: int) -> bool:
    defined = 1 << 0 | 1 << 8 | 1 << 10 | 1 << 11      # SCE, LME, LMA, NXE
    if v & ~defined & U64:
        return True
    return _bit(v, 8) != _bit(efer, 8)                  # LME cannot change while paging is on


def wrmsr_efer_value(v: int, efer: int) -> int:
    writable = 1 << 0 | 1 << 11                         # SCE, NXE; LMA is read-only
    return (v & writable) | (efer & ~writable & U64)
