"""cocotb test module of `vtx translate --sim verilator`: one scenario through the Verilated unit.

Not a test suite: `sim.translate` runs it through `sim.flow.run_cocotb` against the
``translation_unit`` model and talks to it through two JSON files named by environment variables:

``VTX_TRANSLATE_IN``  (read) the run: ``context`` (the ``ctx`` port's fields as integers),
    ``memory`` ([address, value] pairs), ``requests`` ([gla, access, cpl] triples, access as
    the `rtl.arch.Access` value), ``latency`` (memory read latency in cycles), the unit's
    parameters ``maxphyaddr``, ``tag_width``, ``mem_tag_width``, and optionally
    ``progress_path`` / ``progress_every`` (the number of finished requests is written to
    ``progress_path`` every ``progress_every`` requests, for the CLI's progress line).
``VTX_TRANSLATE_OUT`` (written) the results: ``results`` (one object per request: the response
    fields as integers, plus ``cycles``), ``memory`` (every stored word after the run, A/D flag
    writes applied), ``total_cycles`` and the unit's ``counters``.

The unit gets one request at a time, in the scenario's order (the spec: requests take effect in
order): a request is offered, its response awaited, and the unit left to drain its accessed/dirty
writes (``idle``) before the next request is offered. ``cycles`` counts the rising edges from the
one where the request is first offered to the one after which its response is valid (as
`sim.translate.amaranth_sim.run_amaranth` counts). Memory is `tb.memory.MemoryModel` with a fixed
latency and
no back-pressure, so a run is deterministic; it also checks the memory port's protocol.
"""

from __future__ import annotations

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from rtl.translation.layouts import (
    COUNTER_WIDTH,
    COUNTERS,
    context_layout,
    request_layout,
    response_layout,
)
from tb.memory import MemoryModel
from tb.model.translation import Memory
from tb.structs import pack, unpack

ENV_IN = "VTX_TRANSLATE_IN"
ENV_OUT = "VTX_TRANSLATE_OUT"

#: A request that gets no response within this many cycles fails the run.
WATCHDOG_CYCLES = 20_000
#: Clock period in ns (the unit of `cycles` is the clock cycle; this only sets VCD time).
CLOCK_NS = 10

RESPONSE_FIELDS = ("tag", "outcome", "gla", "gpa", "hpa", "error_code", "qualification",
                   "page_size", "mem_reads")


class _Cycles:
    """Counts rising edges of the clock."""

    def __init__(self, clk):
        self.edge = RisingEdge(clk)
        self.count = 0

    async def tick(self):
        await self.edge
        self.count += 1


@cocotb.test()
async def translate_scenario(dut):
    """Run the requests of ``$VTX_TRANSLATE_IN`` in order; write ``$VTX_TRANSLATE_OUT``."""
    with open(os.environ[ENV_IN]) as f:
        job = json.load(f)
    out_path = os.environ[ENV_OUT]
    maxphyaddr = job["maxphyaddr"]
    tag_width = job["tag_width"]
    latency = int(job["latency"])
    progress_path = job.get("progress_path")
    progress_every = max(1, int(job.get("progress_every", 100)))

    req_layout = request_layout(tag_width)
    resp_layout = response_layout(tag_width, maxphyaddr)
    for handle, layout in ((dut.req__payload, req_layout), (dut.resp__payload, resp_layout),
                           (dut.ctx, context_layout())):
        if len(handle) != layout.size:
            raise ValueError(f"{handle._name}: {len(handle)} bits, but the layout for "
                             f"tag_width={tag_width}, maxphyaddr={maxphyaddr} has {layout.size}: "
                             "the model was built with other parameters")

    memory = Memory((a, v) for a, v in job["memory"])
    clock = Clock(dut.clk, CLOCK_NS, unit="ns")
    clock.start()
    cycles = _Cycles(dut.clk)

    # Inputs: the context, no request, no invalidation, responses always taken; then reset.
    dut.rst.value = 1
    dut.ctx.value = pack(context_layout(), job["context"])
    dut.req__valid.value = 0
    dut.req__payload.value = 0
    dut.resp__ready.value = 1
    dut.inval__valid.value = 0
    dut.inval__payload.value = 0
    mem = MemoryModel(dut, dut.clk, tag_width=job["mem_tag_width"], maxphyaddr=maxphyaddr,
                      memory=memory, latency=(latency, latency), req_ready=1.0, resp_valid=1.0,
                      max_outstanding=1 << job["mem_tag_width"], rst=dut.rst,
                      rng=random.Random(0))
    mem.start()
    for _ in range(3):
        await cycles.tick()
    dut.rst.value = 0
    await cycles.tick()

    tag_mask = (1 << tag_width) - 1
    results = []
    requests = job["requests"]
    for index, (gla, access, cpl) in enumerate(requests):
        # Just after a rising edge: offer the request until the unit takes it.
        tag = index & tag_mask
        dut.req__payload.value = pack(req_layout, tag=tag, gla=gla, access=access, cpl=cpl)
        dut.req__valid.value = 1
        start = cycles.count
        while True:
            await ReadOnly()
            taken = dut.req__ready.value == 1
            await cycles.tick()
            if taken:
                break
            if cycles.count - start > WATCHDOG_CYCLES:
                raise AssertionError(f"request {index}: not taken in {WATCHDOG_CYCLES} cycles")
        dut.req__valid.value = 0
        # Wait for the response (resp.ready is 1: it is taken at the next edge).
        while True:
            await ReadOnly()
            if dut.resp__valid.value == 1:
                break
            await cycles.tick()
            if cycles.count - start > WATCHDOG_CYCLES:
                raise AssertionError(f"request {index} (gla {gla:#x}): no response in "
                                     f"{WATCHDOG_CYCLES} cycles")
        resp = unpack(resp_layout, int(dut.resp__payload.value))
        record = {name: int(getattr(resp[name], "value", resp[name])) for name in RESPONSE_FIELDS}
        record["cycles"] = cycles.count - start
        if record["tag"] != tag:
            raise AssertionError(f"request {index}: response tag {record['tag']}, expected {tag}")
        results.append(record)
        await cycles.tick()              # the response leaves
        # Let accessed/dirty writes drain before the next request.
        while True:
            await ReadOnly()
            if dut.idle.value == 1:
                break
            await cycles.tick()
            if cycles.count - start > WATCHDOG_CYCLES:
                raise AssertionError(f"request {index}: unit not idle {WATCHDOG_CYCLES} cycles "
                                     "after the request")
        await cycles.tick()
        if progress_path and ((index + 1) % progress_every == 0 or index + 1 == len(requests)):
            tmp = f"{progress_path}.tmp"
            with open(tmp, "w") as f:
                f.write(str(index + 1))
            os.replace(tmp, progress_path)

    if mem.errors:
        raise AssertionError("memory port protocol errors:\n" + "\n".join(mem.errors))
    mem.stop()
    counters_word = int(dut.counters.value)
    counters = {name: (counters_word >> (i * COUNTER_WIDTH)) & ((1 << COUNTER_WIDTH) - 1)
                for i, name in enumerate(COUNTERS)}
    with open(out_path, "w") as f:
        json.dump({"results": results,
                   "memory": [[a, v] for a, v in memory.words().items()],
                   "total_cycles": cycles.count,
                   "counters": counters}, f)
