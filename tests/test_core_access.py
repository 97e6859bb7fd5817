"""`rtl.core.access.AccessLanes` in Amaranth's simulator against `tb/model/access_lanes.py`:
random addresses (every byte offset, qword boundaries and the top of the address space), every
size, random data, both parts; the requests (qword address, mask, data in the lanes), whether
there are two, and the loaded value. Directed: a split dword with hand-written requests.
Verilator lint."""

from __future__ import annotations

import os
import random

from rtl.core.access import AccessLanes
from tb.comb import run_combinational
from tb.model.access_lanes import requests, value

SEED = int(os.environ.get("VTX_SEED", "1"))
VECTORS = int(os.environ.get("VTX_ACCESS_VECTORS", "2000"))


def run_lanes(vectors):
    """For each (addr, size, data, loaded) the unit's outputs for part 0 and part 1."""
    dut = AccessLanes()

    def drive(ctx, v):
        addr, size, data, loaded = v
        ctx.set(dut.addr, addr)
        ctx.set(dut.size, size)
        ctx.set(dut.data, data)
        ctx.set(dut.loaded, int.from_bytes(loaded[:15], "little"))

    def read(ctx):
        parts = []
        for part in (0, 1):
            ctx.set(dut.part, part)
            parts.append((ctx.get(dut.req_addr), ctx.get(dut.req_mask), ctx.get(dut.req_data)))
        return parts, ctx.get(dut.two_parts), ctx.get(dut.value)

    return run_combinational(dut, vectors, drive, read)


def _vectors(rng, n):
    vectors = []
    for _ in range(n):
        addr = rng.choice([rng.getrandbits(64), rng.getrandbits(12),
                           (2**64 - 8) | rng.randrange(8)])
        vectors.append((addr, rng.choice([1, 2, 4, 8]), rng.getrandbits(64), rng.randbytes(16)))
    return vectors


def test_access_lanes_random_vs_model():
    rng = random.Random(SEED * 31)
    vectors = _vectors(rng, VECTORS)
    splits = 0
    for (addr, size, data, loaded), (parts, two, val) in zip(vectors, run_lanes(vectors),
                                                              strict=True):
        want = requests(addr, size, data)
        what = f"addr {addr:#x} size {size}"
        assert two == (len(want) == 2), f"{what}: two_parts {two}"
        for part, (q, mask, lanes) in enumerate(want):
            got_q, got_mask, got_data = parts[part]
            assert (got_q, got_mask) == (q, mask), f"{what} part {part}: {got_q:#x} {got_mask:#x}"
            # Bytes outside the mask are free; those inside must be the data's.
            bytes_mask = sum(0xFF << (8 * k) for k in range(8) if mask >> k & 1)
            assert got_data & bytes_mask == lanes, f"{what} part {part}: data {got_data:#x}"
        assert val == value(addr, loaded), f"{what}: value {val:#x}"
        splits += two
    assert 0 < splits < VECTORS


def test_access_lanes_directed():
    # A dword at offset 6: bytes 6-7 of the first qword, 0-1 of the next.
    (parts, two, val), = run_lanes([(0x1006, 4, 0xAABBCCDD, bytes(range(16)))])
    assert two
    assert parts[0][:2] == (0x1000, 0xC0) and parts[0][2] >> 48 == 0xCCDD
    assert parts[1][:2] == (0x1008, 0x03) and parts[1][2] & 0xFFFF == 0xAABB
    assert val == int.from_bytes(bytes(range(6, 14)), "little")


def test_lint_access_lanes():
    from sim import flow, lint

    verilog = flow.generate_verilog(AccessLanes, "access_lanes", {})
    ok, output = lint.lint_verilog(verilog, top_module="access_lanes")
    assert ok, output
