"""`rtl.core.regfile.RegisterFile` in Amaranth's simulator against `tb/model/register_file.py`.

Random cycles (`VTX_REGFILE_CYCLES`, default 2000): a write-back at a random size (AH..BH
included), an RSP write, writes of RAX..RBX from the system, a load of all 16, alone or
together, and random read addresses on every read port; after each cycle every read port and
all 16 registers must equal the model's. Directed: the SDM's examples of each size. (Verilator
lint: `sim.lint.TOPS`, tests/test_flow.py.)
"""

from __future__ import annotations

import os
import random

from amaranth.sim import Simulator

from rtl.core.layouts import OpSize
from rtl.core.regfile import READ_PORTS, RegisterFile
from tb.model import register_file as model

SEED = int(os.environ.get("VTX_SEED", "1"))
CYCLES = int(os.environ.get("VTX_REGFILE_CYCLES", "2000"))
BITS = {OpSize.S8: 8, OpSize.S16: 16, OpSize.S32: 32, OpSize.S64: 64}
EDGES = [0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x8000_0000, 0xFFFF_FFFF, (1 << 64) - 1,
         0x8000_0000_0000_0000]


def _value(rng):
    return rng.choice(EDGES) if rng.random() < 0.2 else rng.getrandbits(64)


def _random_cycle(rng):
    """One cycle's writes, in the block's port terms and the model's."""
    ports, ops = {}, {}
    if rng.random() < 0.7:
        size = rng.choice(list(BITS))
        hi8 = size == OpSize.S8 and rng.random() < 0.3
        reg = rng.randrange(4, 8) if hi8 else rng.randrange(16)
        value = _value(rng)
        ports["wb"] = (reg, size, hi8, value)
        ops["wb"] = (reg & 3 if hi8 else reg, BITS[size], hi8, value)
    if rng.random() < 0.2:
        ops["rsp"] = ports["rsp"] = _value(rng)
    if rng.random() < 0.2:
        ops["acdb"] = ports["acdb"] = {i: _value(rng) for i in range(4) if rng.random() < 0.5}
    if rng.random() < 0.02:
        ops["load"] = ports["load"] = [_value(rng) for _ in range(16)]
    return ports, ops


def _run(cycles):
    """[(read addresses, read values, all registers) after each cycle] of the RTL."""
    dut = RegisterFile()
    seen = []

    async def bench(ctx):
        for ports, addrs in cycles:
            wb = ports.get("wb")
            ctx.set(dut.wb_en, wb is not None)
            if wb is not None:
                reg, size, hi8, value = wb
                ctx.set(dut.wb_reg, reg)
                ctx.set(dut.wb_size, size)
                ctx.set(dut.wb_hi8, hi8)
                ctx.set(dut.wb_value, value)
            ctx.set(dut.rsp_we, "rsp" in ports)
            ctx.set(dut.rsp, ports.get("rsp", 0))
            acdb = ports.get("acdb", {})
            ctx.set(dut.acdb_we, sum(1 << i for i in acdb))
            for i in range(4):
                ctx.set(dut.acdb[i], acdb.get(i, 0))
            ctx.set(dut.load, "load" in ports)
            for i, v in enumerate(ports.get("load", [0] * 16)):
                ctx.set(dut.init[i], v)
            await ctx.tick()
            for p, a in enumerate(addrs):
                ctx.set(dut.rd_addr[p], a)
            ctx.set(dut.wb_en, 0)
            ctx.set(dut.rsp_we, 0)
            ctx.set(dut.acdb_we, 0)
            ctx.set(dut.load, 0)
            seen.append(([ctx.get(dut.rd_data[p]) for p in range(READ_PORTS)],
                         [ctx.get(dut.gpr[i]) for i in range(16)]))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return seen


def _compare(steps):
    """Run (ports, ops) steps on the RTL and the model; the registers and reads must agree."""
    rng = random.Random(SEED + 1)
    cycles = [(ports, [rng.randrange(16) for _ in range(READ_PORTS)]) for ports, _ in steps]
    seen = _run(cycles)
    ref = model.RegisterFile()
    for i, ((_, ops), (_, addrs), (reads, regs)) in enumerate(zip(steps, cycles, seen,
                                                                  strict=True)):
        ref.cycle(**ops)
        assert regs == ref.regs, f"cycle {i}: {ops}"
        assert reads == [ref.regs[a] for a in addrs], f"cycle {i}: reads of {addrs}"
    return ref


def test_random_writes_vs_model():
    rng = random.Random(SEED)
    steps = [_random_cycle(rng) for _ in range(CYCLES)]
    _compare(steps)


def test_write_sizes_directed():
    """RAX = 0x1111_2222_3333_4444, then AL, AH, AX, EAX and RAX writes (SDM Vol. 1 3.4.1.1)."""
    start = 0x1111_2222_3333_4444
    load = [start] * 16
    cases = [((0, OpSize.S8, False, 0xAB), 0x1111_2222_3333_44AB),
             ((4, OpSize.S8, True, 0xCD), 0x1111_2222_3333_CDAB),   # AH: bits 15:8 of RAX
             ((0, OpSize.S16, False, 0x5566), 0x1111_2222_3333_5566),
             ((0, OpSize.S32, False, 0x8765_4321), 0x0000_0000_8765_4321),
             ((0, OpSize.S64, False, 0xFEDC_BA98_7654_3210), 0xFEDC_BA98_7654_3210)]
    steps = [({"load": load}, {"load": load})]
    for (reg, size, hi8, value), _ in cases:
        steps.append(({"wb": (reg, size, hi8, value)},
                      {"wb": (reg & 3 if hi8 else reg, BITS[size], hi8, value)}))
    cycles = [(ports, [0] * READ_PORTS) for ports, _ in steps]
    seen = _run(cycles)
    for (_, expected), (_, regs) in zip(cases, seen[1:], strict=True):
        assert regs[0] == expected
        assert regs[1:] == [start] * 15        # nothing else changed
    _compare(steps)

