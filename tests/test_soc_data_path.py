"""`rtl.soc.data_path.DataPath` in Amaranth's simulator, between a core, a translation unit and
RAM played by the testbench.

- Random differential: random core accesses (fetches, reads, masked writes) over a few linear
  pages, a page map in the testbench (linear page -> physical page, or a fault of a kind) that
  the mock translation unit answers after random delays, and RAM as `tb.model.memory`'s model
  answering after random delays. Every response must equal the model's (data, outcome, error
  code); a translation fault must be reported on `fault` with the first byte's addresses, except
  a prefetch's (`prefetch` in the request), which leaves the last fault recorded as it was.
- The last translations: an access to the page of the last access of its kind goes to RAM
  without a translation request (counted), and never after `fetch_flush`; the page map changes
  only at flushes (as translations change only at system instructions).
- Self-modifying code: a write's `code` is 1 whenever its physical page was fetched from since
  the last `fetch_flush` (also through another linear page of the same physical page), and 0
  when it was not and at most `code_pages` pages were fetched from.
- Directed: a second read to a kept page goes to RAM while the first waits for its answer,
  the answers come in order; nothing else is taken while a read is in flight.
"""

from __future__ import annotations

import os
import random

import pytest
from amaranth.sim import Simulator

from rtl.arch.paging import MAXPHYADDR, Access, Outcome
from rtl.soc.data_path import DataPath
from tb.model.memory import SystemMemoryModel

SEED = int(os.environ.get("VTX_SEED", "1"))
RAM = 16 << 12
WATCHDOG = 40


def _page_map(rng):
    """Linear page -> (outcome, physical page, error code): two linear pages share a physical
    page (an alias); one page faults."""
    phys = rng.sample(range(RAM >> 12), 5)
    lin = rng.sample(range(1, 1 << 20), 7)
    out = {lin[i]: (Outcome.OK, phys[i], 0) for i in range(5)}
    out[lin[5]] = (Outcome.OK, phys[0], 0)                     # alias of lin[0]
    out[lin[6]] = (Outcome.PAGE_FAULT, 0, rng.randrange(32))
    return out


@pytest.mark.parametrize("code_pages", [1, 4])
def test_data_path_random_differential(code_pages):
    rng = random.Random(SEED * 101 + code_pages)
    dut = DataPath(maxphyaddr=MAXPHYADDR, code_pages=code_pages)
    ram = SystemMemoryModel(RAM)
    stats = {"accesses": 0, "xlate": 0, "code1": 0, "code0": 0, "faults": 0,
             "prefetch_faults": 0}
    recorded = (Outcome.OK, 0, 0, 0)    # the fault record: nothing faulted yet

    async def bench(ctx):
        nonlocal recorded
        page_map = _page_map(rng)
        fetched = set()                 # physical pages fetched from since the last flush
        last = {}                       # kind -> linear page of the last OK access
        lpage = None
        for _ in range(1500):
            if rng.random() < 0.05:
                # A flush (the core after a system instruction): the map may change now.
                ctx.set(dut.fetch_flush, 1)
                await ctx.tick()
                ctx.set(dut.fetch_flush, 0)
                fetched.clear()
                last.clear()
                if rng.random() < 0.5:
                    page_map = _page_map(rng)
            # Mostly the page of the last access (locality), else any.
            if lpage is None or rng.random() < 0.4 or lpage not in page_map:
                lpage = rng.choice(list(page_map))
            kind = rng.choice((Access.FETCH, Access.READ, Access.WRITE))
            prefetch = kind == Access.FETCH and rng.random() < 0.4
            addr = lpage << 12 | rng.randrange(512) << 3
            mask = rng.randrange(1, 256)
            data = rng.getrandbits(64)
            outcome, ppage, error_code = page_map[lpage]
            paddr = ppage << 12 | addr & 0xFFF

            # The core's request; RAM and the translation unit busy for a while.
            ctx.set(dut.core_req.payload, {"addr": addr, "kind": kind, "mask": mask,
                                           "data": data, "prefetch": prefetch})
            ctx.set(dut.core_req.valid, 1)
            ctx.set(dut.core_resp.ready, 0)
            for _ in range(rng.choice((0, 0, 1, 2))):
                assert not ctx.get(dut.core_req.ready)
                await ctx.tick()
            ctx.set(dut.ram_req.ready, 1)
            ctx.set(dut.xlate_req.ready, 1)
            assert ctx.get(dut.core_req.ready), "request not taken"
            direct = bool(ctx.get(dut.ram_req.valid))
            if direct:
                assert last.get(kind) == lpage, "went to RAM without a translation it had"
                ram_p = ctx.get(dut.ram_req.payload)
                assert not ctx.get(dut.xlate_req.valid)
            else:
                assert kind not in last or last[kind] != lpage, "translated again"
                assert ctx.get(dut.xlate_req.valid)
                assert ctx.get(dut.xlate_req.payload.gla) == addr
                assert ctx.get(dut.xlate_req.payload.access) == kind
            await ctx.tick()
            ctx.set(dut.core_req.valid, 0)
            ctx.set(dut.xlate_req.ready, 0)
            ctx.set(dut.ram_req.ready, 0)
            ctx.set(dut.core_resp.ready, 1)

            answered = False            # a write's answer checked already
            if not direct:
                stats["xlate"] += 1
                for _ in range(rng.choice((0, 1, 3))):
                    assert not ctx.get(dut.ram_req.valid) and not ctx.get(dut.core_resp.valid)
                    await ctx.tick()
                ctx.set(dut.xlate_resp.payload, {
                    "outcome": outcome, "gla": addr, "gpa": paddr, "hpa": paddr,
                    "error_code": error_code, "qualification": 0x1AB})
                ctx.set(dut.xlate_resp.valid, 1)
                if outcome != Outcome.OK:
                    assert ctx.get(dut.core_resp.valid) and ctx.get(dut.xlate_resp.ready)
                    assert ctx.get(dut.core_resp.payload.outcome) == outcome
                    assert ctx.get(dut.core_resp.payload.error_code) == error_code
                    assert not ctx.get(dut.ram_req.valid)
                    await ctx.tick()
                    ctx.set(dut.xlate_resp.valid, 0)
                    first = (mask & -mask).bit_length() - 1
                    if not prefetch:        # a prefetch's fault leaves the record as it was
                        recorded = (outcome, addr | first, paddr | first, 0x1AB)
                    assert (ctx.get(dut.fault.outcome), ctx.get(dut.fault.gla),
                            ctx.get(dut.fault.gpa), ctx.get(dut.fault.qualification)) == recorded
                    stats["faults"] += 1
                    stats["prefetch_faults"] += prefetch
                    ctx.set(dut.core_resp.ready, 0)
                    continue
                for _ in range(WATCHDOG):
                    ready = rng.random() < 0.6
                    ctx.set(dut.ram_req.ready, ready)
                    assert ctx.get(dut.ram_req.valid), "translation not offered to RAM"
                    assert ctx.get(dut.xlate_resp.ready) == ready
                    if ready:
                        break
                    assert not ctx.get(dut.core_resp.valid)
                    await ctx.tick()
                else:
                    raise AssertionError("never offered to RAM")
                ram_p = ctx.get(dut.ram_req.payload)
                if kind == Access.WRITE:
                    answered = True
                    code = ctx.get(dut.core_resp.payload.code)
                    assert ctx.get(dut.core_resp.valid), "a write not answered as RAM takes it"
                    assert ctx.get(dut.core_resp.payload.outcome) == Outcome.OK
                await ctx.tick()
                ctx.set(dut.xlate_resp.valid, 0)
                ctx.set(dut.ram_req.ready, 0)
            last[kind] = lpage
            assert ram_p.addr == paddr and ram_p.write == (kind == Access.WRITE)
            if kind == Access.WRITE:
                assert ram_p.mask == mask and ram_p.data == data
                ram.write(paddr, data, mask)
                if not answered:        # without a translation: answered the cycle after
                    assert ctx.get(dut.core_resp.valid)
                    assert ctx.get(dut.core_resp.payload.outcome) == Outcome.OK
                    code = ctx.get(dut.core_resp.payload.code)
                    await ctx.tick()
                if ppage in fetched:
                    assert code, "a write into fetched code not reported"
                elif len(fetched) <= code_pages:
                    assert not code, "a write reported as code that is not"
                stats["code1" if code else "code0"] += 1
                assert not ctx.get(dut.core_resp.valid)
            else:
                if kind == Access.FETCH:
                    fetched.add(ppage)
                want = ram.read(paddr)
                for _ in range(rng.choice((0, 1, 2))):
                    assert not ctx.get(dut.core_resp.valid)
                    await ctx.tick()
                ctx.set(dut.ram_resp.payload.data, want)
                ctx.set(dut.ram_resp.valid, 1)
                assert ctx.get(dut.ram_resp.ready)
                assert ctx.get(dut.core_resp.valid)
                assert ctx.get(dut.core_resp.payload.outcome) == Outcome.OK
                assert ctx.get(dut.core_resp.payload.data) == want
                await ctx.tick()
                ctx.set(dut.ram_resp.valid, 0)
                assert not ctx.get(dut.core_resp.valid)
            stats["accesses"] += 1
            ctx.set(dut.core_resp.ready, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    # The run covered what it is meant to: accesses without translation, code writes both ways.
    assert stats["xlate"] < 0.8 * (stats["accesses"] + stats["faults"]), stats
    assert stats["code1"] > 20 and stats["code0"] > 20 and stats["faults"] > 20, stats
    assert 5 < stats["prefetch_faults"] < stats["faults"], stats


def test_data_path_second_read_behind_a_read():
    """A read to the page of the last read goes to RAM while the one before it waits for its
    answer; the answers reach the core in order. A write, or a read that needs the translation
    unit, waits until no read is in flight."""
    dut = DataPath(maxphyaddr=MAXPHYADDR)
    base, phys = 0x7000_0000, 0x3000

    async def request(ctx, addr, kind):
        ctx.set(dut.core_req.payload, {"addr": addr, "kind": kind, "mask": 0xFF, "data": 7})
        ctx.set(dut.core_req.valid, 1)

    async def bench(ctx):
        ctx.set(dut.ram_req.ready, 1)
        ctx.set(dut.xlate_req.ready, 1)
        ctx.set(dut.core_resp.ready, 1)
        # A first read: translated, then to RAM.
        await request(ctx, base, Access.READ)
        assert ctx.get(dut.xlate_req.valid) and ctx.get(dut.core_req.ready)
        await ctx.tick()
        ctx.set(dut.core_req.valid, 0)
        ctx.set(dut.xlate_resp.payload, {"outcome": Outcome.OK, "gla": base, "gpa": phys,
                                         "hpa": phys})
        ctx.set(dut.xlate_resp.valid, 1)
        assert ctx.get(dut.ram_req.valid) and ctx.get(dut.ram_req.payload.addr) == phys
        await ctx.tick()
        ctx.set(dut.xlate_resp.valid, 0)
        # RAM has not answered: a second read of the page goes to RAM right away...
        await request(ctx, base + 8, Access.READ)
        assert ctx.get(dut.ram_req.valid) and ctx.get(dut.core_req.ready)
        assert ctx.get(dut.ram_req.payload.addr) == phys + 8
        assert not ctx.get(dut.xlate_req.valid)
        await ctx.tick()
        # ... a third may not (two in flight), nor a write or a read of another page.
        for addr, kind in ((base + 16, Access.READ), (base, Access.WRITE),
                           (base + 0x1000, Access.READ)):
            await request(ctx, addr, kind)
            assert not ctx.get(dut.core_req.ready), (hex(addr), kind)
            assert not ctx.get(dut.ram_req.valid) and not ctx.get(dut.xlate_req.valid)
        ctx.set(dut.core_req.valid, 0)
        # The answers, in order, each straight to the core.
        for value in (0x111, 0x222):
            ctx.set(dut.ram_resp.payload.data, value)
            ctx.set(dut.ram_resp.valid, 1)
            assert ctx.get(dut.core_resp.valid) and ctx.get(dut.core_resp.payload.data) == value
            assert ctx.get(dut.ram_resp.ready)
            await ctx.tick()
        ctx.set(dut.ram_resp.valid, 0)
        assert not ctx.get(dut.core_resp.valid)
        # Nothing in flight: the write goes (to RAM directly: it is the page's first write, so
        # through the translation unit).
        await request(ctx, base, Access.WRITE)
        assert ctx.get(dut.core_req.ready) and ctx.get(dut.xlate_req.valid)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
