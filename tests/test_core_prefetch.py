"""`rtl.core.prefetch.Prefetcher` in Amaranth's simulator: the testbench plays the core's FSM
(random requests, each held until taken), the memory (takes requests at random, answers them in
order after random delays, with random faults) and the core's prefetch decisions (random
`start`, `flush`, `fetch_waits`). Checked every cycle against a model of the port's rules: what
`mem_req` offers does not change until taken, and is marked `prefetch` exactly when it is
the prefetcher's; the FSM gets exactly the answers to its own
requests, in order (a prefetch may start while answers to the FSM are due: they come first);
a prefetch is taken ahead of any FSM request made after it; a FETCH does not
go out while a prefetch is in flight; a prefetch answered OK fills the lines with its address and
data unless a flush came since it started, and nothing else fills them; `busy` is exactly
"a prefetch offered or in flight"."""

from __future__ import annotations

import os
import random

from amaranth.sim import Simulator

from rtl.arch.paging import Access, Outcome
from rtl.core.prefetch import Prefetcher

SEED = int(os.environ.get("VTX_SEED", "1"))


def _word(addr):
    return (addr * 0x9E3779B97F4A7C15) & (2**64 - 1)


def test_prefetcher_random():
    rng = random.Random(SEED * 17)
    dut = Prefetcher()
    seen = {"prefetches": 0, "fills": 0, "fsm": 0, "discarded": 0, "behind": 0,
            "after_fsm": 0}

    async def bench(ctx):
        fsm_offer = None                # (addr, kind) the FSM offers, until taken
        fsm_expect = []                 # the FSM's requests taken: answers due, in order
        mem_queue = []                  # requests the memory took: (who, addr, delay)
        last_offer = None               # what mem_req offered last cycle, not taken
        pf = None                       # the model's prefetch: {"addr", "taken", "flushed"}
        for cycle in range(6000):
            waiting = len(fsm_expect)   # the FSM's requests waiting for answers, at the start
            # The FSM: a new request now and then, held until taken.
            if fsm_offer is None and rng.random() < 0.3:
                fsm_offer = (rng.randrange(1 << 20) << 3,
                             rng.choice((Access.READ, Access.WRITE, Access.FETCH)))
            ctx.set(dut.fsm_req.valid, fsm_offer is not None)
            if fsm_offer is not None:
                ctx.set(dut.fsm_req.payload, {"addr": fsm_offer[0], "kind": fsm_offer[1],
                                              "mask": 0xFF, "data": 0})
            ctx.set(dut.fetch_waits, fsm_offer is not None and fsm_offer[1] == Access.FETCH)
            ctx.set(dut.fsm_resp.ready, 1)
            start = rng.random() < 0.3
            flush = rng.random() < 0.05
            paddr = rng.randrange(1 << 20) << 3
            ctx.set(dut.start, start)
            ctx.set(dut.addr, paddr)
            ctx.set(dut.flush, flush)
            # The memory: takes at random, answers the oldest after its delay.
            ctx.set(dut.mem_req.ready, rng.random() < 0.6)
            answer = None
            if mem_queue and mem_queue[0][2] <= 0:
                who, addr, _ = mem_queue[0]
                outcome = Outcome.OK if rng.random() < 0.85 else Outcome.PAGE_FAULT
                answer = (who, addr, outcome)
                ctx.set(dut.mem_resp.valid, 1)
                ctx.set(dut.mem_resp.payload, {"data": _word(addr), "outcome": outcome,
                                               "error_code": 0})
            else:
                ctx.set(dut.mem_resp.valid, 0)

            assert ctx.get(dut.busy) == (pf is not None), f"cycle {cycle}: busy"
            offered = ctx.get(dut.mem_req.valid)
            if last_offer is not None:
                assert offered and (ctx.get(dut.mem_req.payload.addr),
                                    ctx.get(dut.mem_req.payload.kind)) == last_offer, \
                    f"cycle {cycle}: the port's request changed before it was taken"
            took = offered and ctx.get(dut.mem_req.ready)
            if offered:
                off = (ctx.get(dut.mem_req.payload.addr), ctx.get(dut.mem_req.payload.kind))
                is_pf = ctx.get(dut.mem_req.payload.prefetch)
                if pf is not None and not pf["taken"]:
                    assert off == (pf["addr"], Access.FETCH), f"cycle {cycle}: not the prefetch"
                    assert is_pf, f"cycle {cycle}: the prefetch is not marked as one"
                else:
                    assert fsm_offer is not None and off == fsm_offer, f"cycle {cycle}"
                    assert not is_pf, f"cycle {cycle}: the FSM's request marked as a prefetch"
                    assert not (pf is not None and fsm_offer[1] == Access.FETCH), \
                        f"cycle {cycle}: a FETCH went out behind a prefetch"
            last_offer = None if took or not offered else off
            if took:
                if pf is not None and not pf["taken"]:
                    pf["taken"] = True
                    mem_queue.append(("pf", pf["addr"], rng.choice((0, 1, 3))))
                else:
                    assert ctx.get(dut.fsm_req.ready)
                    seen["behind"] += pf is not None
                    mem_queue.append(("fsm", fsm_offer[0], rng.choice((0, 1, 3))))
                    fsm_expect.append(fsm_offer[0])
                    fsm_offer = None
                    seen["fsm"] += 1
            elif fsm_offer is not None:
                assert not ctx.get(dut.fsm_req.ready)
            # Answers.
            fill = ctx.get(dut.fill_en)
            if answer is not None:
                assert ctx.get(dut.mem_resp.ready)
                who, addr, outcome = answer
                mem_queue.pop(0)
                if who == "pf":
                    assert not ctx.get(dut.fsm_resp.valid)
                    want_fill = outcome == Outcome.OK and not pf["flushed"] and not flush
                    assert fill == want_fill, f"cycle {cycle}: fill {fill}, expected {want_fill}"
                    if fill:
                        assert ctx.get(dut.fill_addr) == addr >> 3
                        assert ctx.get(dut.fill_data) == _word(addr)
                        seen["fills"] += 1
                    else:
                        seen["discarded"] += 1
                    pf = None
                else:
                    assert not fill
                    assert ctx.get(dut.fsm_resp.valid)
                    assert fsm_expect.pop(0) == addr
                    assert ctx.get(dut.fsm_resp.payload.data) == _word(addr)
                    assert ctx.get(dut.fsm_resp.payload.outcome) == outcome
            else:
                assert not fill and not ctx.get(dut.fsm_resp.valid)
            for i, (who, addr, delay) in enumerate(mem_queue):
                mem_queue[i] = (who, addr, delay - 1)
            # The prefetch the DUT takes this cycle, and flushes.
            if pf is not None and flush:
                pf["flushed"] = True
            if start and pf is None and not ctx.get(dut.fsm_req.valid) \
                    and not (answer is not None and answer[0] == "pf"):
                pf = {"addr": paddr, "taken": False, "flushed": flush}
                seen["prefetches"] += 1
                seen["after_fsm"] += waiting > 0
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert seen["prefetches"] > 300 and seen["fills"] > 100 and seen["discarded"] > 20, seen
    assert seen["fsm"] > 300 and seen["behind"] > 20 and seen["after_fsm"] > 20, seen
