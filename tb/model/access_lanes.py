"""Reference model of `rtl.core.access.AccessLanes`: an access of `size` bytes at `addr` as
qword requests, written out byte by byte."""

from __future__ import annotations


def requests(addr: int, size: int, data: int) -> list[tuple[int, int, int]]:
    """The access's requests, in order: (qword address, byte mask, data in the lanes)."""
    by_qword: dict[int, list[int]] = {}
    for k in range(size):
        a = addr + k
        q = a & ~7 & ((1 << 64) - 1)
        mask, lanes = by_qword.setdefault(q, [0, 0])
        by_qword[q] = [mask | 1 << (a & 7), lanes | (data >> (8 * k) & 0xFF) << (8 * (a & 7))]
    return [(q, mask, lanes) for q, (mask, lanes) in by_qword.items()]


def value(addr: int, loaded: bytes) -> int:
    """The 8 bytes from `addr`'s offset on, of the 16 bytes `loaded` (the first qword and the
    next)."""
    off = addr & 7
    return int.from_bytes(loaded[off:off + 8], "little")
