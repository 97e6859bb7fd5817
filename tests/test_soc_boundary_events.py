"""`rtl.soc.boundary_events.BoundaryEvents` in Amaranth's simulator against a cycle model
written here from the rules (SDM 25.5.1 and 25.5.2 as docs/system.md applies them): random input
sequences (`VTX_BOUNDARY_EVENTS_CYCLES`, default 2000) with every output compared in every
cycle; directed sequences with hand-written outputs: a VM entry with the monitor trap flag, the
timer expiring, the run ending at the exit port; the "monitor trap flag" control's bit on
random control words. (Verilator lint: `sim.lint.TOPS`,
tests/test_flow.py.)
"""

from __future__ import annotations

import os
import random

from amaranth.hdl import Elaboratable, Module, Signal
from amaranth.sim import Simulator

from rtl.arch.vmx import ExitReason
from rtl.soc.boundary_events import BoundaryEvents, monitor_trap_flag
from tb.comb import run_combinational

SEED = int(os.environ.get("VTX_SEED", "1"))
CYCLES = int(os.environ.get("VTX_BOUNDARY_EVENTS_CYCLES", "2000"))
INPUTS = ("non_root", "mtf", "timer_expired", "retiring", "entered", "halt")
TIMER, MTF = ExitReason.PREEMPTION_TIMER.value, ExitReason.MONITOR_TRAP_FLAG.value


class _Model:
    """The boundary events one cycle at a time."""

    def __init__(self):
        self.entering = False       # a VM entry is answered, its instruction not yet retired
        self.ended = False          # the program wrote the exit port

    def outputs(self, v):
        """(pending, exit, reason) in a cycle with inputs `v`."""
        mtf = bool(v["mtf"])
        guest_retires = v["retiring"] and not self.entering
        pending = (v["non_root"] and not self.ended
                   and (v["timer_expired"] or (mtf and guest_retires)))
        if not v["non_root"]:
            exit_ = False
        elif v["timer_expired"]:
            exit_ = True
        else:
            exit_ = not self.ended
        reason = TIMER if v["timer_expired"] else MTF
        return int(pending), int(exit_), reason

    def clock(self, v):
        if v["entered"]:
            self.entering = True
        elif v["retiring"]:
            self.entering = False
        self.ended = self.ended or bool(v["halt"])


def _run(cycles):
    """[(pending, exit, reason)] of the RTL, one per cycle of inputs."""
    dut = BoundaryEvents()
    seen = []

    async def bench(ctx):
        for v in cycles:
            for name in INPUTS:
                ctx.set(getattr(dut, name), v.get(name, 0))
            seen.append((ctx.get(dut.pending), ctx.get(dut.exit), ctx.get(dut.reason)))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return seen


def _random_cycle(rng):
    return {"non_root": int(rng.random() < 0.8),
            "mtf": int(rng.random() < 0.6),
            "timer_expired": int(rng.random() < 0.15), "retiring": rng.randrange(2),
            "entered": int(rng.random() < 0.1), "halt": int(rng.random() < 0.005)}


def test_random_vs_model():
    rng = random.Random(SEED * 71)
    cycles = [_random_cycle(rng) for _ in range(CYCLES)]
    model = _Model()
    seen = set()
    for i, (v, got) in enumerate(zip(cycles, _run(cycles), strict=True)):
        want = model.outputs(v)
        assert got == want, f"cycle {i}: {v}"
        model.clock(v)
        seen.add((want, model.ended))
    # Both exits, an MTF pending before and no event after the run's end all occurred.
    assert {w[1:] for w, _ in seen} >= {(1, TIMER), (1, MTF), (0, MTF)}
    assert ((1, 1, MTF), False) in seen and ((0, 1, TIMER), True) in seen


def test_vm_entry_with_monitor_trap_flag():
    g = {"non_root": 1, "mtf": 1}
    cycles = [
        {"non_root": 0, "retiring": 1},                 # root: nothing
        {"non_root": 0, "entered": 1},                  # the VM entry's answer
        dict(g),                                        # the guest runs, nothing retires
        dict(g, retiring=1),                            # the VMLAUNCH retires: no MTF
        dict(g),
        dict(g, retiring=1),                            # the guest's first instruction
        dict(g, mtf=0, retiring=1),           # MTF off
        dict(g, timer_expired=1),                       # the timer at 0
    ]
    assert _run(cycles) == [(0, 0, MTF), (0, 0, MTF), (0, 1, MTF), (0, 1, MTF), (0, 1, MTF),
                            (1, 1, MTF), (0, 1, MTF), (1, 1, TIMER)]


def test_run_end_stops_events():
    g = {"non_root": 1, "mtf": 1}
    cycles = [dict(g, retiring=1, halt=1),              # the OUT to the exit port
              dict(g, retiring=1),
              dict(g, timer_expired=1),
              dict(g, non_root=0, timer_expired=1)]
    assert _run(cycles) == [(1, 1, MTF), (0, 0, MTF), (0, 1, TIMER), (0, 0, TIMER)]


class _MtfHarness(Elaboratable):
    def __init__(self):
        self.controls, self.mtf = Signal(32), Signal()

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.mtf.eq(monitor_trap_flag(self.controls))
        return m


def test_monitor_trap_flag_bit():
    """Bit 27 of the primary processor-based VM-execution controls (SDM Vol. 3C)."""
    rng = random.Random(SEED * 73)
    words = [0, 1 << 27, (1 << 32) - 1, ((1 << 32) - 1) ^ (1 << 27), 1 << 26, 1 << 28]
    words += [rng.getrandbits(32) for _ in range(200)]
    dut = _MtfHarness()
    got = run_combinational(dut, words, lambda ctx, w: ctx.set(dut.controls, w),
                            lambda ctx: ctx.get(dut.mtf))
    assert got == [w >> 27 & 1 for w in words]
