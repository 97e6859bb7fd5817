"""The whole system on the board (rtl/fpga/system_top.py, `vtx synth --top system`).

* `SystemMemory` with a page set (Amaranth simulator, a small RAM): backed pages keep their
  data, in the order of the page map; an unbacked page inside RAM reads as open bus, drops
  writes and raises the sticky `unmapped` flag with the first such address; beyond RAM the
  flag stays down; the debug port maps the same way; `init` preloads.
* The page set: from a run that ended well, holding the loader's image and every page the
  demo's memory map names.
* The board top on Verilator: the hypervisor demo from its preloaded sparse block RAM (the page
  set `sim.synth.system_scenario` computes), its console decoded from the UART pin (bit time
  128 cycles, a 4-byte FIFO: the UART is slower than the core, so the core must wait for it):
  the same console as the run on the reference models (examples/hypervisor/emulate.py, which
  tests/test_hypervisor_demo.py holds equal to the flat-RAM RTL run), LF sent as CR LF, exit
  code 0, no access outside the page set, the LEDs (PASS on, FAIL and unmapped off), and the
  run took at least as long as the UART needed to send it (it was held by the console's
  backpressure).

    .venv/bin/pytest -q tests/test_system_top.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from amaranth.sim import Simulator

from rtl.arch.paging import MAXPHYADDR
from rtl.arch.system import OPEN_BUS
from rtl.fpga.system_top import SystemTop
from rtl.soc.memory import SystemMemory
from sim import flow

ROOT = Path(__file__).resolve().parents[1]
VLT = ROOT / "tb" / "system_top_public.vlt"
TOPLEVEL = "system_top"
FACTORY = SystemTop
#: UART clocks per bit in the test (the board: 217 at 25 MHz). At 128 the UART needs more cycles
#: for the demo's console than the core needs for the whole run (about 1.1 M cycles without
#: waiting), so the run only ends if the core waited for the UART and lost no byte.
DIVISOR = 128
FIFO_DEPTH = 4
MAX_CYCLES = 20_000_000


# --- SystemMemory with a page set (Amaranth simulator) ----------------------------------------

PAGES = (3, 1, 6)           # physical pages 3, 1, 6 -> RAM slots 0, 1, 2
RAM = 8 << 12               # 8 pages of "RAM": 0, 2, 4, 5, 7 unbacked


def _memory_bench(body):
    dut = SystemMemory(ram_bytes=RAM, maxphyaddr=MAXPHYADDR, walk_tag_width=1, pages=PAGES,
                       init={(0x1000 + 8) // 8: 0x1111, (0x6000 + 0xFF8) // 8: 0x6666})
    sim = Simulator(dut)
    sim.add_clock(1e-6)

    async def bench(ctx):
        async def access(addr, write=False, data=0, mask=0xFF):
            ctx.set(dut.data_req.payload.addr, addr)
            ctx.set(dut.data_req.payload.write, write)
            ctx.set(dut.data_req.payload.mask, mask)
            ctx.set(dut.data_req.payload.data, data)
            ctx.set(dut.data_req.valid, 1)
            ctx.set(dut.data_resp.ready, 1)
            for _ in range(20):
                accepted = ctx.get(dut.data_req.ready)
                await ctx.tick()
                if accepted:
                    break
            else:
                raise AssertionError(f"the access at {addr:#x} was never accepted")
            ctx.set(dut.data_req.valid, 0)
            if write:
                return None                             # writes have no response
            for _ in range(20):
                if ctx.get(dut.data_resp.valid):
                    value = ctx.get(dut.data_resp.payload.data)
                    await ctx.tick()
                    return value
                await ctx.tick()
            raise AssertionError(f"no response to the access at {addr:#x}")

        await body(ctx, dut, access)

    sim.add_testbench(bench)
    sim.run()


def test_sparse_memory_backed_and_unbacked_pages():
    async def body(ctx, dut, access):
        # Preloaded words, each in its page.
        assert await access(0x1008) == 0x1111
        assert await access(0x6FF8) == 0x6666
        assert await access(0x3000) == 0
        # Each backed page keeps its own data (no aliasing between slots).
        for page in PAGES:
            await access(page << 12 | 0x10, write=True, data=0xA0 + page)
        for page in PAGES:
            assert await access(page << 12 | 0x10) == 0xA0 + page
        # A byte-masked write.
        await access(0x3010, write=True, data=0xFF00, mask=0x02)
        assert await access(0x3010) == 0xFFA3
        assert ctx.get(dut.unmapped) == 0
        # Beyond RAM: open bus, as on flat RAM, and no flag.
        assert await access(RAM + 0x10) == OPEN_BUS
        assert ctx.get(dut.unmapped) == 0
        # An unbacked page inside RAM: open bus, the write is dropped, the flag and the first
        # address stick.
        assert await access(0x2008) == OPEN_BUS
        assert ctx.get(dut.unmapped) == 1
        assert ctx.get(dut.unmapped_addr) == 0x2008
        await access(0x5000, write=True, data=0x55)
        assert await access(0x5000) == OPEN_BUS
        assert ctx.get(dut.unmapped_addr) == 0x2008
        for page in PAGES:                              # nothing was overwritten
            expect = 0xFFA3 if page == 3 else 0xA0 + page
            assert await access(page << 12 | 0x10) == expect
        # The debug port maps the same way (qword index), unbacked words read open bus.
        ctx.set(dut.dbg_active, 1)
        ctx.set(dut.dbg_addr, 0x1008 // 8)
        await ctx.tick()
        assert ctx.get(dut.dbg_rdata) == 0x1111
        ctx.set(dut.dbg_addr, 0x4000 // 8)
        await ctx.tick()
        assert ctx.get(dut.dbg_rdata) == OPEN_BUS
        ctx.set(dut.dbg_addr, 0x6000 // 8)
        ctx.set(dut.dbg_wdata, 0x77)
        ctx.set(dut.dbg_we, 1)
        await ctx.tick()
        ctx.set(dut.dbg_addr, 0x7000 // 8)              # unbacked: dropped
        await ctx.tick()
        ctx.set(dut.dbg_we, 0)
        ctx.set(dut.dbg_addr, 0x6000 // 8)
        await ctx.tick()
        assert ctx.get(dut.dbg_rdata) == 0x77
        ctx.set(dut.dbg_active, 0)
        assert await access(0x6000) == 0x77

    _memory_bench(body)


def test_sparse_memory_rejects_bad_page_sets():
    with pytest.raises(ValueError, match="outside RAM"):
        SystemMemory(ram_bytes=RAM, maxphyaddr=MAXPHYADDR, walk_tag_width=1, pages=(1, 8))
    with pytest.raises(ValueError, match="twice"):
        SystemMemory(ram_bytes=RAM, maxphyaddr=MAXPHYADDR, walk_tag_width=1, pages=(1, 1))
    with pytest.raises(ValueError, match="outside the backed RAM"):
        SystemMemory(ram_bytes=RAM, maxphyaddr=MAXPHYADDR, walk_tag_width=1, pages=(1,),
                     init={0x2000 // 8: 1})


# --- the board top on Verilator --------------------------------------------------------------


@pytest.fixture(scope="module")
def scenario():
    from sim.synth import system_scenario
    return system_scenario()


def test_page_set_from_the_reference_run(scenario):
    """The page set comes from a run that ended well, holds the image, and has the pages the
    demo's memory map names (hypervisor.S) and nothing far from them."""
    from sim.run.program import boot_image

    assert scenario.reference.exit == {"kind": "exit_port", "code": 0}
    pages = set(scenario.pages)
    assert {index // 512 for index, v in boot_image(scenario.program).items() if v} <= pages
    program_pages = set(range(0x100000 >> 12, (scenario.program.end + 4095) >> 12))
    named = {0x1, 0x2,                              # boot PML4, PDPT
             0xFF,                                  # boot stack
             0x180, 0x181,                          # VMXON region, VMCS
             *range(0x182, 0x18A),                  # EPT views 0 and 1
             0x18A, 0x18B,                          # EPTP list, view 1's page
             0x19F,                                 # VM-exit handler's stack
             0x200, 0x201, 0x202,                   # guest page tables (GPA 0..0x2000)
             0x210, 0x230, 0x240, 0x27F}            # guest code, shared, demand, stack
    assert named | program_pages <= pages, sorted(named - pages)
    assert len(pages) <= 32, "the page set grew: check the EBR budget in docs/fpga.md"
    assert sorted(pages) == list(scenario.pages)


def test_demo_on_the_board_top(scenario, tmp_path):
    params = dict(scenario.top_params(), uart_divisor=DIVISOR, fifo_depth=FIFO_DEPTH,
                  start_delay=4, heartbeat_cycles=1000)
    verilog = flow.generate_verilog(FACTORY, TOPLEVEL, params)
    build_dir = flow.build_verilator(verilog, TOPLEVEL,
                                     build_args=("--no-public-flat-rw", str(VLT)))
    out = tmp_path / "result.json"
    drain = (FIFO_DEPTH + 4) * 2 * 10 * DIVISOR
    flow.run_cocotb("tb.test_system_top", TOPLEVEL, build_dir, testcase="run_board",
                    extra_env={"VTX_SYSTOP_DIVISOR": str(DIVISOR),
                               "VTX_SYSTOP_MAX_CYCLES": str(MAX_CYCLES),
                               "VTX_SYSTOP_DRAIN": str(drain), "VTX_SYSTOP_OUT": str(out)})
    r = json.loads(out.read_text())
    from rtl.soc.soc import RunStop

    assert not r["timed_out"], f"the demo did not stop within {MAX_CYCLES} cycles"
    assert r["unmapped"] == 0, \
        f"the run left the page set: first access at {r['unmapped_addr']:#x}"
    assert r["stop"] == RunStop.EXIT_PORT.value and r["exit_code"] == 0, r
    console = bytes.fromhex(r["console"])
    assert r["framing_errors"] == 0
    expected = scenario.reference.console.encode().replace(b"\n", b"\r\n")
    assert console.decode(errors="replace") == expected.decode()
    leds = r["leds"]
    assert leds & 0b1111 == 0b0010, f"LEDs {leds:08b}: want PASS only (not running, no FAIL, " \
                                    "no unmapped)"
    assert leds >> 5 == 0
    # The UART set the pace: the run cannot end before all but the FIFO's bytes (each maybe an
    # LF that goes out as CR LF) and the one in the transmitter have been sent.
    uart_cycles = (len(console) - 2 * FIFO_DEPTH - 2) * 10 * DIVISOR
    assert r["cycles"] >= uart_cycles, (r["cycles"], uart_cycles)
    print(f"demo on the board top: {r['cycles']} cycles, {len(console)} UART bytes")
