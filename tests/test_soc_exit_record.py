"""`rtl.soc.exit_record.ExitRecord` in Amaranth's simulator against a cycle model written here:
random cycles (`VTX_EXIT_RECORD_CYCLES`, default 500) with random exit information, core state
and entered guest state, every field of the offered VM exit compared in every cycle (the exit
information as the last ``take`` recorded it, the guest state the core holds as it is now, the
rest as entered); a directed sequence with hand-written values. (Verilator lint:
`sim.lint.TOPS`, tests/test_flow.py.)
"""

from __future__ import annotations

import os
import random

from amaranth.hdl import Shape
from amaranth.sim import Simulator

from rtl.soc.exit_record import ExitRecord
from rtl.vmx.layouts import GUEST_STATE_LAYOUT
from rtl.vmx.ports import EXIT_GUEST_LAYOUT

SEED = int(os.environ.get("VTX_SEED", "1"))
CYCLES = int(os.environ.get("VTX_EXIT_RECORD_CYCLES", "500"))
INFO = {"reason": 16, "qualification": 64, "gla": 64, "gpa": 64, "intr_info": 32,
        "intr_error": 32, "instr_len": 32, "instr_info": 32}
CORE = {"rip": 64, "rsp": 64, "rflags": 64, "cr0": 64, "cr3": 64, "cr4": 64, "efer": 64,
        "timer_value": 32}
#: The guest-state fields a VM exit saves from the core's state (SDM 28.3.1, 28.3.2), by port.
SAVED = {"guest_rip": "rip", "guest_rsp": "rsp", "guest_rflags": "rflags", "guest_cr0": "cr0",
         "guest_cr3": "cr3", "guest_cr4": "cr4", "guest_ia32_efer": "efer",
         "vmx_preemption_timer_value": "timer_value"}


def _field(layout, value, name):
    f = layout[name]
    return value >> f.offset & ((1 << Shape.cast(f.shape).width) - 1)


class _Model:
    def __init__(self):
        self.info = dict.fromkeys(INFO, 0)

    def exit(self, v):
        """{field: value} of the offered exit in a cycle with inputs `v`."""
        out = {f"info.{k}": x for k, x in self.info.items()}
        out["info.idt_vectoring_info"] = out["info.idt_vectoring_error"] = 0
        for name in EXIT_GUEST_LAYOUT.members:
            out[f"guest.{name}"] = (v[SAVED[name]] if name in SAVED
                                    else _field(GUEST_STATE_LAYOUT, v["entered"], name))
        return out

    def clock(self, v):
        if v["take"]:
            self.info = {k: v[k] for k in INFO}


def _run(cycles):
    dut = ExitRecord()
    seen = []

    async def bench(ctx):
        for v in cycles:
            ctx.set(dut.take, v["take"])
            for name in (*INFO, *CORE):
                ctx.set(getattr(dut, name), v[name])
            ctx.set(dut.entered.as_value(), v["entered"])
            x = dut.exit
            got = {f"info.{k}": ctx.get(getattr(x, k)) for k in (*INFO, "idt_vectoring_info",
                                                                   "idt_vectoring_error")}
            got.update({f"guest.{n}": ctx.get(x.guest[n]) for n in EXIT_GUEST_LAYOUT.members})
            seen.append(got)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return seen


def _random_cycle(rng):
    v = {name: rng.getrandbits(width) for name, width in {**INFO, **CORE}.items()}
    v["take"] = int(rng.random() < 0.3)
    v["entered"] = rng.getrandbits(Shape.cast(GUEST_STATE_LAYOUT).width)
    return v


def _check(cycles):
    model = _Model()
    for i, (v, got) in enumerate(zip(cycles, _run(cycles), strict=True)):
        want = model.exit(v)
        assert got == want, (i, {k: (got[k], want[k]) for k in want if got[k] != want[k]})
        model.clock(v)


def test_random_vs_model():
    rng = random.Random(SEED * 79)
    _check([_random_cycle(rng) for _ in range(CYCLES)])


def test_directed():
    zero = dict.fromkeys((*INFO, *CORE), 0) | {"take": 0, "entered": 0}
    dr7 = 0x400 << GUEST_STATE_LAYOUT["guest_dr7"].offset       # DR7's reset value
    # CPUID's exit (reason 10, length 2), then a cycle without take: the information holds.
    take = zero | {"take": 1, "reason": 10, "instr_len": 2, "rip": 0x1000, "rsp": 0x8000}
    hold = zero | {"reason": 48, "qualification": 0x181, "rip": 0x1002, "cr3": 0x5000,
                   "timer_value": 7, "entered": dr7}
    cycles = [take, hold, hold]
    got = _run(cycles)
    assert got[0]["info.reason"] == 0 and got[0]["guest.guest_rip"] == 0x1000
    assert got[1]["info.reason"] == 10 and got[1]["info.instr_len"] == 2
    assert got[2]["info.reason"] == 10 and got[2]["info.qualification"] == 0
    assert got[2]["guest.guest_rip"] == 0x1002 and got[2]["guest.guest_cr3"] == 0x5000
    assert got[2]["guest.vmx_preemption_timer_value"] == 7
    assert got[2]["guest.guest_dr7"] == 0x400 and got[2]["guest.guest_ia32_pat"] == 0
    _check(cycles)
