"""Run translation requests through the RTL in Amaranth's own simulator.

This is `vtx translate --sim amaranth` and a quick way to exercise the unit without a Verilator
build. Requests go in one at a time, in order (the spec's ordering), against a word memory that
answers reads after `latency` cycles and applies accessed/dirty writes (atomic bit-sets) when it
accepts them.
"""

from dataclasses import dataclass

from amaranth.sim import Simulator

from rtl.arch import Outcome, PageSize
from rtl.translation import TranslationUnit

WATCHDOG_CYCLES = 10_000


@dataclass
class RtlResult:
    """One response of the RTL, with the cycles from request to response."""
    tag: int
    outcome: Outcome
    gla: int
    gpa: int
    hpa: int
    error_code: int
    qualification: int
    page_size: PageSize
    mem_reads: int
    cycles: int


def context_values(context):
    """The `ctx` port's fields from a model `Context`."""
    return {
        "cr0": context.cr0 & 0xFFFF_FFFF, "cr3": context.cr3, "cr4": context.cr4 & 0xFFFF_FFFF,
        "efer": context.efer & 0xFFFF_FFFF, "eptp": context.eptp,
        "ept_enable": int(bool(context.ept_enable)), "vpid": context.vpid,
    }


def run_amaranth(memory, context, requests, *, latency=2, params=None, vcd_path=None):
    """Translate `requests` ((gla, Access, cpl) tuples) in order; returns (results, cycles).

    `memory` is a `tb.model.translation.Memory`; its words change as the RTL writes A/D flags.
    """
    dut = TranslationUnit(maxphyaddr=context.maxphyaddr, **(params or {}))
    results = []
    total = {"cycles": 0}

    async def testbench(ctx):
        for name, value in context_values(context).items():
            ctx.set(getattr(dut.ctx, name), value)
        ctx.set(dut.resp.ready, 1)
        ctx.set(dut.mem_req.ready, 1)
        pending = []          # [due_cycle, tag, data]
        cycle = 0

        async def step():
            nonlocal cycle
            # memory side: accept a request, answer the oldest due read
            if ctx.get(dut.mem_req.valid):
                mreq = ctx.get(dut.mem_req.payload)
                if mreq.write:
                    memory.set_bits(mreq.addr, mreq.data)
                else:
                    pending.append([cycle + latency, mreq.tag, memory.read(mreq.addr)])
            due = [p for p in pending if p[0] <= cycle]
            taken = None
            if due:
                ctx.set(dut.mem_resp.valid, 1)
                ctx.set(dut.mem_resp.payload.tag, due[0][1])
                ctx.set(dut.mem_resp.payload.data, due[0][2])
                if ctx.get(dut.mem_resp.ready):
                    taken = due[0]
            await ctx.tick()
            cycle += 1
            if taken is not None:
                pending.remove(taken)
            ctx.set(dut.mem_resp.valid, 0)

        for index, (gla, access, cpl) in enumerate(requests):
            tag = index & ((1 << dut.tag_width) - 1)
            ctx.set(dut.req.payload.tag, tag)
            ctx.set(dut.req.payload.gla, gla)
            ctx.set(dut.req.payload.access, access)
            ctx.set(dut.req.payload.cpl, cpl)
            ctx.set(dut.req.valid, 1)
            start = cycle
            while True:
                ready = ctx.get(dut.req.ready)
                await step()
                if ready:
                    break
            ctx.set(dut.req.valid, 0)
            while not ctx.get(dut.resp.valid):
                await step()
                if cycle - start > WATCHDOG_CYCLES:
                    raise TimeoutError(f"request {index}: no response in {WATCHDOG_CYCLES} cycles")
            r = ctx.get(dut.resp.payload)
            results.append(RtlResult(
                tag=r.tag, outcome=Outcome(r.outcome), gla=r.gla, gpa=r.gpa, hpa=r.hpa,
                error_code=r.error_code, qualification=r.qualification,
                page_size=PageSize(r.page_size), mem_reads=r.mem_reads, cycles=cycle - start))
            await step()
            # let accessed/dirty writes drain before the next request
            while not ctx.get(dut.idle):
                await step()
        total["cycles"] = cycle

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    if vcd_path:
        with sim.write_vcd(str(vcd_path)):
            sim.run()
    else:
        sim.run()
    return results, total["cycles"]
