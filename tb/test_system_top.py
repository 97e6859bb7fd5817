"""cocotb module of tests/test_system_top.py: the board's system top (`rtl.fpga.system_top.
SystemTop`: the SoC with its program preloaded in sparse block RAM, console -> FIFO -> UART) on
Verilator, observed only at its pins and status ports, as the board would be.

Parameters come through the environment: ``VTX_SYSTOP_DIVISOR`` (UART clocks per bit, as built),
``VTX_SYSTOP_MAX_CYCLES`` (the watchdog: the run must stop within it), ``VTX_SYSTOP_DRAIN``
(cycles allowed after the stop for the FIFO to drain through the UART), ``VTX_SYSTOP_OUT`` (the
results, JSON: the bytes decoded from ``tx``, ``stop``, ``exit_code``, ``unmapped``,
``unmapped_addr``, ``cycles`` (the SoC's count at the stop), ``leds``, ``framing_errors``).

The UART decoder waits for a start bit (a falling edge of ``tx``), samples each of the 8 data
bits and the stop bit in the middle of its bit time, and records a framing error if the stop
bit is 0 or the start bit is gone at its middle.
"""

from __future__ import annotations

import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, First, ReadOnly, RisingEdge, Timer

CLOCK_NS = 10


@cocotb.test()
async def run_board(dut):
    divisor = int(os.environ["VTX_SYSTOP_DIVISOR"])
    max_cycles = int(os.environ["VTX_SYSTOP_MAX_CYCLES"])
    drain = int(os.environ["VTX_SYSTOP_DRAIN"])
    out_path = os.environ["VTX_SYSTOP_OUT"]

    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    dut.rst.value = 1
    for _ in range(3):
        await RisingEdge(dut.clk)
    dut.rst.value = 0

    received = bytearray()
    errors = [0]
    bit_ns = divisor * CLOCK_NS

    async def decode():
        while True:
            await FallingEdge(dut.tx)
            await Timer(bit_ns // 2, unit="ns")
            if int(dut.tx.value) != 0:
                errors[0] += 1          # a glitch, not a start bit
                continue
            byte = 0
            for i in range(8):
                await Timer(bit_ns, unit="ns")
                byte |= int(dut.tx.value) << i
            await Timer(bit_ns, unit="ns")
            if int(dut.tx.value) != 1:
                errors[0] += 1
            received.append(byte)

    cocotb.start_soon(decode())

    # The start sequencer raises `running` a few cycles after reset.
    for _ in range(64):
        await RisingEdge(dut.clk)
        await ReadOnly()
        if int(dut.running.value):
            break
    else:
        raise AssertionError("the system did not start within 64 cycles of reset")
    watchdog = Timer(max_cycles * CLOCK_NS, unit="ns")
    fired = await First(FallingEdge(dut.running), watchdog)
    timed_out = fired is watchdog
    await ReadOnly()
    status = {name: int(getattr(dut, name).value)
              for name in ("stop", "exit_code", "unmapped", "unmapped_addr", "cycles")}
    if not timed_out:
        await Timer(drain * CLOCK_NS, unit="ns")
    await ReadOnly()
    result = {**status, "timed_out": timed_out, "leds": int(dut.leds.value),
              "console": received.hex(), "framing_errors": errors[0], "divisor": divisor}
    with open(out_path + ".tmp", "w") as f:
        json.dump(result, f)
    os.replace(out_path + ".tmp", out_path)
