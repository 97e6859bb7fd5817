"""Reference model of the core's general-purpose registers (`rtl.core.regfile.RegisterFile`).

The SDM's rules for a general-purpose register destination (Vol. 1, 3.4.1.1): a 64-bit write
replaces the register, a 32-bit write zero-extends, a 16-bit or 8-bit write keeps the other
bits; AH, CH, DH, BH are bits 15:8 of RAX, RCX, RDX, RBX.
"""

from __future__ import annotations

U64 = (1 << 64) - 1
RSP = 4


def write(old: int, value: int, bits: int, high8: bool = False) -> int:
    """The register's new value after writing `value` as a `bits`-bit destination."""
    if bits == 64:
        return value & U64
    if bits == 32:
        return value & 0xFFFF_FFFF
    if bits == 16:
        return (old & ~0xFFFF & U64) | (value & 0xFFFF)
    assert bits == 8
    if high8:
        return (old & ~0xFF00 & U64) | ((value & 0xFF) << 8)
    return (old & ~0xFF & U64) | (value & 0xFF)


class RegisterFile:
    """16 registers; one cycle's writes applied in the block's order of precedence."""

    def __init__(self):
        self.regs = [0] * 16

    def cycle(self, *, wb=None, rsp=None, acdb=None, load=None):
        """`wb` = (register, bits, high8, value) (`register` 0-3 with `high8`: AH..BH),
        `rsp` = value, `acdb` = {0..3: value}, `load` = 16 values."""
        new = list(self.regs)
        if wb is not None:
            n, bits, high8, value = wb
            new[n] = write(self.regs[n], value, bits, high8)
        if rsp is not None:
            new[RSP] = rsp & U64
        for i, value in (acdb or {}).items():
            new[i] = value & U64
        if load is not None:
            new = [v & U64 for v in load]
        self.regs = new
