"""`rtl.vmx.region_transfer.RegionTransfer` in Amaranth's simulator against the region format.

The bench plays the memory (qwords by address; requests accepted at random, read responses in
order after random delays) and the cache memory's narrow read port (one cycle from address to
data) with random contents. Each case: a write-back of a random slot to a random region must
leave the launch-state qword and every field at their offsets of the region layout
(`rtl.arch.vmx`: `VMCS_LAUNCH_STATE_OFFSET`, each field's `offset`) and write nothing else; a
load of a random region must put every field, cut to its width, into the slot and keep the
launch-state qword. `done` comes once, at the end; `busy` in between. `VTX_RT_CASES` (default 6)
of each, one after the other.
"""

from __future__ import annotations

import os
import random

from amaranth.sim import Simulator

from rtl.arch.vmx import FIELDS, MAXPHYADDR, VMCS_LAUNCH_STATE_OFFSET
from rtl.vmx.region_transfer import RegionTransfer

SEED = int(os.environ.get("VTX_SEED", "1"))
CASES = int(os.environ.get("VTX_RT_CASES", "6"))
SLOTS = 4
_U64 = (1 << 64) - 1
WATCHDOG = 2000         # cycles a transfer may take at most with this bench's back-pressure


def test_write_backs_and_loads():
    rng = random.Random(SEED)
    dut = RegionTransfer(slots=SLOTS)
    cache = {(s, f.slot): rng.getrandbits(f.bits) for s in range(SLOTS) for f in FIELDS}
    memory = {}
    cases = []
    for _ in range(CASES):
        cases.append(("write_back", rng.randrange(SLOTS), rng.getrandbits(MAXPHYADDR - 12),
                      rng.getrandbits(64)))
        cases.append(("load", rng.randrange(SLOTS), rng.getrandbits(MAXPHYADDR - 12), None))
    rng.shuffle(cases)

    async def bench(ctx):
        pending = []            # read responses to come: [cycles left, data]
        rd_addr = None          # the read port's address of the previous cycle
        for kind, slot, region, launch in cases:
            base = region << 12
            if kind == "load":
                # Region contents: random qwords (bits beyond a field's width included).
                memory.update({base + VMCS_LAUNCH_STATE_OFFSET: rng.getrandbits(64)})
                memory.update({base + f.offset: rng.getrandbits(64) for f in FIELDS})
            before = dict(memory)
            written = {}
            ctx.set(dut.start, 1)
            ctx.set(dut.load, kind == "load")
            ctx.set(dut.slot, slot)
            ctx.set(dut.region, region)
            ctx.set(dut.launch_qword.as_value(), launch or 0)
            done_count = 0
            for cycle in range(WATCHDOG):
                # The read port: data of the address presented in the previous cycle.
                if rd_addr is not None:
                    ctx.set(dut.rd_data, cache.get(rd_addr, 0))
                ready = int(rng.random() < 0.7)
                ctx.set(dut.mem_req.ready, ready)
                ctx.set(dut.mem_resp.valid, int(bool(pending) and pending[0][0] <= 0))
                if pending:
                    ctx.set(dut.mem_resp.payload.data, pending[0][1])
                req_valid = ctx.get(dut.mem_req.valid)
                if cycle == 0:
                    assert not req_valid, "a request before the start took effect"
                else:
                    assert ctx.get(dut.busy) or not req_valid
                if req_valid and ready:
                    addr = ctx.get(dut.mem_req.payload.addr)
                    if ctx.get(dut.mem_req.payload.write):
                        assert kind == "write_back", "a load wrote memory"
                        assert addr not in written, f"{addr:#x} written twice"
                        written[addr] = ctx.get(dut.mem_req.payload.data)
                    else:
                        assert kind == "load", "a write-back read memory"
                        pending.append([rng.randrange(0, 4), memory.get(addr, 0)])
                if ctx.get(dut.mem_resp.valid) and ctx.get(dut.mem_resp.ready):
                    pending.pop(0)
                for p in pending:
                    p[0] -= 1
                if ctx.get(dut.wr_valid):
                    assert kind == "load"
                    cache[(ctx.get(dut.wr_slot), ctx.get(dut.wr_field))] = ctx.get(dut.wr_data)
                rd_addr = (ctx.get(dut.rd_slot), ctx.get(dut.rd_field))
                done = ctx.get(dut.done)
                done_count += done
                await ctx.tick()
                ctx.set(dut.start, 0)
                if done:
                    break
            else:
                raise AssertionError(f"{kind} of slot {slot}: no done in {WATCHDOG} cycles")
            assert done_count == 1 and not pending
            assert not ctx.get(dut.busy)
            if kind == "write_back":
                want = {base + VMCS_LAUNCH_STATE_OFFSET: launch,
                        **{base + f.offset: cache[(slot, f.slot)] for f in FIELDS}}
                assert written == want, sorted(set(written) ^ set(want))[:4] or [
                    hex(a) for a in want if written[a] != want[a]][:4]
                memory.update(written)
            else:
                assert memory == before
                for f in FIELDS:
                    want = before[base + f.offset] & ((1 << f.bits) - 1)
                    assert cache[(slot, f.slot)] == want, f"{f.name}: {cache[(slot, f.slot)]:#x}"
                assert ctx.get(dut.launch.as_value()) == before[base + VMCS_LAUNCH_STATE_OFFSET]

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
