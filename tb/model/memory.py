"""Reference model of the system's RAM behind its arbiter (rtl/soc/memory.py's contract), one
access at a time in the order the arbiter accepts them.

Addresses are physical byte addresses of qwords (bits 2:0 ignored). Flat RAM backs every qword
below `ram_bytes`; with `pages` only those 4 KiB pages are backed. A read of a qword that is not
backed answers all ones; a write to it is dropped. An access to an unbacked page inside RAM
(sparse RAM only) is remembered: `unmapped_addr` keeps the first one.
"""

from __future__ import annotations

from rtl.arch.system import OPEN_BUS

MASK64 = (1 << 64) - 1


class SystemMemoryModel:
    def __init__(self, ram_bytes: int, pages=None, init=None):
        self.ram_bytes = ram_bytes
        self.pages = None if pages is None else frozenset(pages)
        self.words: dict[int, int] = dict(init or {})
        self.unmapped_addr: int | None = None

    def backed(self, addr: int) -> bool:
        if addr >= self.ram_bytes:
            return False
        return self.pages is None or (addr >> 12) in self.pages

    def _touch(self, addr: int) -> bool:
        ok = self.backed(addr)
        if not ok and self.pages is not None and addr < self.ram_bytes \
                and self.unmapped_addr is None:
            self.unmapped_addr = addr
        return ok

    def read(self, addr: int) -> int:
        if not self._touch(addr):
            return OPEN_BUS
        return self.words.get(addr >> 3, 0)

    def write(self, addr: int, data: int, mask: int = 0xFF) -> None:
        """Bytes `k` of `data` whose bit `k` of `mask` is set."""
        if not self._touch(addr):
            return
        old = self.words.get(addr >> 3, 0)
        bytes_ = sum(0xFF << (8 * k) for k in range(8) if mask >> k & 1)
        self.words[addr >> 3] = (old & ~bytes_ | data & bytes_) & MASK64

    def set_bits(self, addr: int, bits: int) -> None:
        """The walker's atomic OR (accessed/dirty flags)."""
        if not self._touch(addr):
            return
        self.words[addr >> 3] = self.words.get(addr >> 3, 0) | bits
