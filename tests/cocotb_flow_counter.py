"""cocotb tests for the flow's own self-test: the 8-bit counter of tests/test_flow.py."""

import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge


async def _reset(dut):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.en.value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    await FallingEdge(dut.clk)


@cocotb.test()
async def counts_when_enabled(dut):
    """The count goes up by one per enabled cycle and wraps at 2**8."""
    await _reset(dut)
    assert int(dut.count.value) == 0
    dut.en.value = 1
    for expected in range(1, 300):
        await RisingEdge(dut.clk)
        await FallingEdge(dut.clk)
        assert int(dut.count.value) == expected % 256, f"cycle {expected}"


@cocotb.test()
async def holds_when_disabled(dut):
    """With en low the count holds."""
    await _reset(dut)
    dut.en.value = 1
    await ClockCycles(dut.clk, 5)
    await FallingEdge(dut.clk)
    dut.en.value = 0
    held = int(dut.count.value)
    await ClockCycles(dut.clk, 10)
    assert int(dut.count.value) == held


@cocotb.test(skip=os.environ.get("FLOW_SELFTEST_FAIL") != "1")
async def fails_on_request(dut):
    """Fails on purpose when FLOW_SELFTEST_FAIL=1: checks that failures reach pytest."""
    await _reset(dut)
    assert int(dut.count.value) == 1, "deliberate failure"
