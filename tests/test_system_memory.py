"""`rtl.soc.memory.SystemMemory` in Amaranth's simulator.

- Random differential against `tb.model.memory.SystemMemoryModel`: the four requesters offer
  random accesses at random times (reads, byte-masked writes, the walker's bit-sets, addresses
  inside and outside RAM, backed and unbacked pages), take their responses at random times; each
  accepted access is applied to the model in the order the arbiter accepts them, and every
  response must equal the model's answer, in order per requester. The arbiter must take the
  highest-priority request offered (walker, VMX unit, bitmap, data), at most one per cycle. At the
  end the debug port dumps RAM, which must equal the model's, and the sparse RAM's `unmapped`
  flag and first address must match.
- Directed: one access per cycle from one requester, answered two cycles after acceptance; a read
  right behind a write of the same word (from another requester) sees the write; a response the
  requester does not take holds the pipeline without losing or repeating an access.
"""

from __future__ import annotations

import os
import random

import pytest
from amaranth.sim import Simulator

from rtl.arch.paging import MAXPHYADDR
from rtl.arch.system import OPEN_BUS
from rtl.soc.memory import MemOwner, SystemMemory
from tb.model.memory import SystemMemoryModel

RAM = 8 << 12                   # 8 pages
PAGES = (3, 1, 6)
SEED = int(os.environ.get("VTX_SEED", "1"))
CYCLES = 3000
WATCHDOG = 50                   # cycles a response may take while its requester is ready


def _bench(dut, fn):
    sim = Simulator(dut)
    sim.add_clock(1e-6)

    async def bench(ctx):
        await fn(ctx)
    sim.add_testbench(bench)
    sim.run()


def _ports(dut):
    return {MemOwner.WALK: (dut.walk_req, dut.walk_resp),
            MemOwner.VMX: (dut.vmx_req, dut.vmx_resp),
            MemOwner.BITMAP: (dut.bitmap_req, dut.bitmap_resp),
            MemOwner.DATA: (dut.data_req, dut.data_resp)}


def _random_access(rng, who, addresses):
    """(payload dict, responds) of a random access by requester `who`."""
    addr = rng.choice(addresses)
    if who is MemOwner.WALK:
        write = rng.random() < 0.3
        return dict(addr=addr, write=write, data=rng.choice((0x20, 0x40, 0x60)),
                    tag=rng.randrange(2)), not write
    if who is MemOwner.VMX:
        write = rng.random() < 0.4
        return dict(addr=addr, write=write, data=rng.getrandbits(64)), not write
    if who is MemOwner.BITMAP:
        return dict(addr=addr), True
    write = rng.random() < 0.4
    return dict(addr=addr, write=write, mask=rng.randrange(1, 256),
                data=rng.getrandbits(64)), not write


def _apply(model, who, p):
    """The model's answer to access `p` of `who` (None: no response)."""
    if who is MemOwner.WALK:
        if p["write"]:
            model.set_bits(p["addr"], p["data"])
            return None
        return (model.read(p["addr"]), p["tag"])
    if who is MemOwner.VMX:
        if p["write"]:
            model.write(p["addr"], p["data"])
            return None
        return (model.read(p["addr"]), None)
    if who is MemOwner.BITMAP:
        return (model.read(p["addr"]), None)
    if p["write"]:
        model.write(p["addr"], p["data"], p["mask"])
        return None
    return (model.read(p["addr"]), None)


@pytest.mark.parametrize("sparse", [False, True], ids=["flat", "sparse"])
def test_memory_random_differential(sparse):
    rng = random.Random(SEED * 7919 + sparse)
    init = {rng.randrange(RAM // 8): rng.getrandbits(64) for _ in range(40)}
    pages = PAGES if sparse else None
    if sparse:
        init = {q: v for q, v in init.items() if (q * 8) >> 12 in PAGES}
    dut = SystemMemory(ram_bytes=RAM, maxphyaddr=MAXPHYADDR, walk_tag_width=1, pages=pages,
                       init=init)
    model = SystemMemoryModel(RAM, pages, init)
    # A few hot words (so accesses meet each other in the pipeline), spread over every page and
    # beyond RAM.
    addresses = [rng.randrange(RAM // 8) * 8 for _ in range(12)] + [RAM + 8, RAM * 4]
    ports = _ports(dut)
    # Per requester: how busy it is, and how often it takes a response.
    rate = {who: rng.choice((0.2, 0.5, 0.9)) for who in ports}
    take = {who: rng.choice((0.3, 0.7, 1.0)) for who in ports}
    counts = {"accepted": 0, "answered": 0, "conflicts": 0}

    async def body(ctx):
        offer = {who: None for who in ports}
        expect = {who: [] for who in ports}
        waited = {who: 0 for who in ports}
        for cycle in range(CYCLES + 200):
            draining = cycle >= CYCLES
            for who, (req, resp) in ports.items():
                if offer[who] is None and not draining and rng.random() < rate[who]:
                    offer[who] = _random_access(rng, who, addresses)
                o = offer[who]
                ctx.set(req.valid, o is not None)
                if o is not None:
                    for k, v in o[0].items():
                        ctx.set(getattr(req.payload, k), v)
                ctx.set(resp.ready, draining or rng.random() < take[who])
            accepted = [who for who, (req, _) in ports.items()
                        if ctx.get(req.valid) and ctx.get(req.ready)]
            assert len(accepted) <= 1, f"cycle {cycle}: {accepted} accepted together"
            offered = [who for who in ports if offer[who] is not None]
            if accepted:
                assert accepted[0] == min(offered, key=lambda w: w.value), \
                    f"cycle {cycle}: {accepted[0]} taken over {offered}"
                counts["conflicts"] += len(offered) > 1
            for who, (_, resp) in ports.items():
                if ctx.get(resp.valid) and ctx.get(resp.ready):
                    assert expect[who], f"cycle {cycle}: {who} answered without a request"
                    want_data, want_tag = expect[who].pop(0)
                    got = ctx.get(resp.payload.data)
                    assert got == want_data, \
                        f"cycle {cycle}: {who} read {got:#x}, expected {want_data:#x}"
                    if want_tag is not None:
                        assert ctx.get(resp.payload.tag) == want_tag
                    counts["answered"] += 1
                    waited[who] = 0
                elif expect[who] and ctx.get(resp.ready):
                    waited[who] += 1
                    assert waited[who] < WATCHDOG, f"{who}: no response for {WATCHDOG} cycles"
            for who in accepted:
                answer = _apply(model, who, offer[who][0])
                if answer is not None:
                    expect[who].append(answer)
                offer[who] = None
                counts["accepted"] += 1
            await ctx.tick()
        assert all(not e for e in expect.values()), f"unanswered: {expect}"
        assert ctx.get(dut.idle)
        # The debug port's view of RAM equals the model's.
        ctx.set(dut.dbg_active, 1)
        for q in range(RAM // 8):
            ctx.set(dut.dbg_addr, q)
            await ctx.tick()
            backed = model.pages is None or (q * 8) >> 12 in model.pages
            want = model.words.get(q, 0) if backed else OPEN_BUS
            assert ctx.get(dut.dbg_rdata) == want, f"RAM word {q * 8:#x}"
        if sparse:
            assert ctx.get(dut.unmapped) == (model.unmapped_addr is not None)
            if model.unmapped_addr is not None:
                assert ctx.get(dut.unmapped_addr) == model.unmapped_addr

    _bench(dut, body)
    # The run exercised what it is meant to.
    assert counts["accepted"] > CYCLES // 2 and counts["conflicts"] > 50, counts


def test_memory_one_access_per_cycle_and_read_after_write():
    dut = SystemMemory(ram_bytes=RAM, maxphyaddr=MAXPHYADDR, walk_tag_width=1)

    async def body(ctx):
        req, resp = dut.data_req, dut.data_resp
        ctx.set(resp.ready, 1)
        # Eight writes back to back: accepted in eight consecutive cycles.
        ctx.set(req.valid, 1)
        ctx.set(req.payload.write, 1)
        ctx.set(req.payload.mask, 0xFF)
        for i in range(8):
            ctx.set(req.payload.addr, 8 * i)
            ctx.set(req.payload.data, 0x100 + i)
            assert ctx.get(req.ready)
            await ctx.tick()
        # Eight reads back to back: each answered two cycles after it was accepted.
        ctx.set(req.payload.write, 0)
        answers = []
        for i in range(8 + 2):
            if i < 8:
                ctx.set(req.payload.addr, 8 * i)
                assert ctx.get(req.ready)
            else:
                ctx.set(req.valid, 0)
            if ctx.get(resp.valid):
                answers.append((i, ctx.get(resp.payload.data)))
            await ctx.tick()
        # Writes have no response; each read is answered two cycles after it was accepted.
        assert answers == [(i + 2, 0x100 + i) for i in range(8)], answers
        # A VMX write and, one cycle behind it, a data read of the same word: the read sees it.
        ctx.set(dut.vmx_req.valid, 1)
        ctx.set(dut.vmx_req.payload.addr, 0x40)
        ctx.set(dut.vmx_req.payload.write, 1)
        ctx.set(dut.vmx_req.payload.data, 0xABCD)
        ctx.set(req.valid, 1)
        ctx.set(req.payload.addr, 0x40)
        assert ctx.get(dut.vmx_req.ready) and not ctx.get(req.ready)
        await ctx.tick()
        ctx.set(dut.vmx_req.valid, 0)
        assert ctx.get(req.ready)
        await ctx.tick()
        ctx.set(req.valid, 0)
        await ctx.tick()
        assert ctx.get(resp.valid) and ctx.get(resp.payload.data) == 0xABCD
        # A response not taken holds everything behind it; nothing is lost or repeated.
        ctx.set(resp.ready, 0)
        await ctx.tick()
        assert ctx.get(resp.valid) and ctx.get(resp.payload.data) == 0xABCD
        ctx.set(dut.bitmap_req.valid, 1)
        ctx.set(dut.bitmap_req.payload.addr, 0x8)
        ctx.set(dut.bitmap_resp.ready, 1)
        for _ in range(5):
            assert not ctx.get(dut.bitmap_req.ready)
            await ctx.tick()
        ctx.set(resp.ready, 1)
        assert ctx.get(resp.valid) and ctx.get(dut.bitmap_req.ready)
        await ctx.tick()
        ctx.set(dut.bitmap_req.valid, 0)
        assert not ctx.get(resp.valid)
        await ctx.tick()
        assert ctx.get(dut.bitmap_resp.valid) and ctx.get(dut.bitmap_resp.payload.data) == 0x101
        await ctx.tick()
        assert not ctx.get(dut.bitmap_resp.valid) and ctx.get(dut.idle)

    _bench(dut, body)
