"""The board self-test (`rtl.fpga.selftest.SelfTest`) in Amaranth's simulator.

The same top that `vtx synth` puts on the ULX3S, built with the same scenario (the reference
model's answers, `sim.synth.selftest_scenario`), with a fast UART (a few clocks per bit) so that
the result line is decoded from the `tx` pin within a short run:

* as built, every check passes and the line reads ``VTX SELFTEST PASS 15/15``;
* with one expected answer deliberately wrong, the self-test reports FAIL and names it;
* the configurations `vtx synth` offers pass too (the small one, which CI places and routes).
"""

from __future__ import annotations

import pytest
from amaranth.sim import Simulator

from rtl.fpga.selftest import LED_COUNT, SelfTest, image_checksum
from rtl.fpga.uart import UARTTx
from sim.synth import CONFIGS, selftest_scenario

UART_DIVISOR = 4
MAX_CYCLES = 60_000


def run_selftest(scenario, unit_params=None, max_cycles=MAX_CYCLES):
    """Simulate until the result line is complete; returns (line, outputs, cycles)."""
    params = scenario.selftest_params()
    params["unit_params"].update(unit_params or {})
    dut = SelfTest(**params, clock_hz=1e6, uart_divisor=UART_DIVISOR, repeat_cycles=0,
                   heartbeat_cycles=1000)
    out = {}

    async def bench(ctx):
        text = bytearray()
        cycles = 0
        # A UART receiver on `tx`: find the start bit's edge, sample mid-bit.
        while cycles < max_cycles:
            await ctx.tick()
            cycles += 1
            if ctx.get(dut.tx) == 0:
                await ctx.tick().repeat(UART_DIVISOR // 2)
                bits = []
                for _ in range(9):
                    await ctx.tick().repeat(UART_DIVISOR)
                    bits.append(ctx.get(dut.tx))
                cycles += UART_DIVISOR // 2 + 9 * UART_DIVISOR
                assert bits[8] == 1, "UART stop bit missing"
                text.append(sum(b << i for i, b in enumerate(bits[:8])))
                if text.endswith(b"\r\n"):
                    break
        out.update(line=text.decode("ascii", "replace"), cycles=cycles,
                   done=ctx.get(dut.done), ok=ctx.get(dut.ok), passed=ctx.get(dut.passed),
                   first_failure=ctx.get(dut.first_failure), leds=ctx.get(dut.leds),
                   timed_out=ctx.get(dut.timed_out))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return out, dut.total


def test_selftest_passes():
    scenario = selftest_scenario()
    out, total = run_selftest(scenario)
    assert out["line"] == f"VTX SELFTEST PASS {total}/{total}\r\n", out
    assert out["done"] and out["ok"] and not out["timed_out"]
    assert out["passed"] == total == len(scenario.vectors) + 1
    leds = out["leds"]
    assert leds & 0x1F == total                  # the count
    assert leds >> 7 & 1 and not leds >> 6 & 1   # PASS on, FAIL off


@pytest.mark.parametrize("corrupt", [3, 11])
def test_selftest_catches_a_wrong_expected_value(corrupt):
    # Vector 3 is a TLB hit (its HPA is made wrong), 11 an EPT violation (its GPA).
    scenario = selftest_scenario(corrupt=corrupt)
    out, total = run_selftest(scenario)
    number = corrupt + 1
    assert out["line"] == f"VTX SELFTEST FAIL {total - 1}/{total} FIRST {number}\r\n", out
    assert out["done"] and not out["ok"] and not out["timed_out"]
    assert out["first_failure"] == number
    leds = out["leds"]
    assert leds & 0x1F == total - 1
    assert leds >> 6 & 1 and not leds >> 7 & 1   # FAIL on, PASS off


def test_selftest_catches_a_wrong_memory_image():
    # The final A/D flags are checked too: expect the image without one of them.
    scenario = selftest_scenario()
    words = scenario.image.contents()
    scenario.final_checksum = image_checksum(words)      # as if no flag had been written
    out, total = run_selftest(scenario)
    assert out["line"] == f"VTX SELFTEST FAIL {total - 1}/{total} FIRST {total}\r\n", out


@pytest.mark.parametrize("config", ["small", "tiny"])
def test_selftest_passes_in_the_synthesis_configurations(config):
    out, total = run_selftest(selftest_scenario(), CONFIGS[config])
    assert out["line"] == f"VTX SELFTEST PASS {total}/{total}\r\n", out


def test_scenario_covers_the_outcomes():
    from rtl.arch import Outcome

    scenario = selftest_scenario()
    outcomes = {r.outcome for r in scenario.results}
    assert outcomes == set(Outcome)
    hits = [v for v in scenario.vectors if v.expect.get("hit") == 1]
    assert len(hits) >= 3
    # Every word the walks read or write lies in the image the block RAM holds.
    assert scenario.image.depth <= 1024
    assert LED_COUNT == 8


def test_uart_frame():
    """One byte through `UARTTx`: start bit, 8 data bits LSB first, stop bit."""
    dut = UARTTx(divisor=3)
    seen = []

    async def bench(ctx):
        ctx.set(dut.data.payload, 0xA5)
        ctx.set(dut.data.valid, 1)
        await ctx.tick()
        ctx.set(dut.data.valid, 0)
        for _ in range(3 * 11):
            seen.append(ctx.get(dut.tx))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    bits = seen[::3][:10]
    assert bits == [0] + [(0xA5 >> i) & 1 for i in range(8)] + [1]
