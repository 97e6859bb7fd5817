"""cocotb module of `vtx run --sim verilator`: one program on the Verilated SoC (`rtl.soc.Soc`).

Not a test suite: `sim.run` runs it through `sim.flow.run_cocotb` and talks to it through files
named by environment variables:

``VTX_RUN_IN`` (read) the job, written by `sim.run.verilator_job`:
    ``words``        [[qword index, value], ...] to write through the debug port before ``start``
                     (zero words are skipped: RAM starts zeroed)
    ``boot``         {"init_rip", "init_rsp", "init_cr3"}
    ``max_cycles``   stop after this many cycles from ``start`` (the run's watchdog)
    ``dumps``        [[byte address, length], ...] read through the debug port after the run
    ``trace``        report every retired instruction too
    ``fault_fields`` {field: [bit offset, width]} when the ``fault`` port is one packed signal
                     (a data layout), null when it is flattened into ``fault__<field>`` ports
    ``events``       path of the event stream (below)
``VTX_RUN_OUT`` (written) the raw results: the SoC's status and state ports as integers (see
    `sim.run.RAW_KEYS`), ``cycle_limit``, ``vm_exits`` {reason number: count}, ``vm_entries``,
    ``console`` (hex of every byte), ``memory`` [[addr, length, hex], ...] (after a
    cycle-limit end the SoC is paused first: its `pause` input gives the debug port the RAM).

Event stream (one line each, flushed at once, so the parent prints the console as it comes):
``C <byte hex> <cycle>`` console byte; ``T <cycle> <rip hex> <len> <bytes hex>`` retired instruction
(with ``trace``); ``E <cycle>`` VM entry; ``X <cycle> <reason>`` VM exit.

The run waits on value-change triggers (console byte, retirement when tracing, VM entry/exit,
``running`` falling) and a `Timer` up to ``max_cycles`` clock periods after ``start``, not on
every clock edge, so Python costs time only per event. Pulses one cycle apart are still all
seen: after each event the harness steps clock by clock while any pulse stays high.
"""

from __future__ import annotations

import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, First, ReadOnly, RisingEdge, Timer
from cocotb.utils import get_sim_time

ENV_IN = "VTX_RUN_IN"
ENV_OUT = "VTX_RUN_OUT"
#: Clock period in ns (only sets VCD time; all counts are in cycles).
CLOCK_NS = 10
RESET_CYCLES = 3
#: `running` must rise within this many cycles of the `start` pulse.
START_CYCLES = 8
#: `paused` must rise within this many cycles of `pause` (an access in flight takes 3).
PAUSE_CYCLES = 16
FAULT_FIELDS = ("vector", "has_error_code", "error_code", "rip", "addr")
STATE_PORTS = ("rip", "rflags", "cr0", "cr3", "cr4", "efer", "vmx_mode", "current_vmcs",
               "stop", "exit_code", "cycles", "instructions", "running")


class Events:
    """The event stream file: one line per event, flushed immediately."""

    def __init__(self, path: str | None):
        self.f = open(path, "w", buffering=1) if path else None  # noqa: SIM115

    def put(self, line: str) -> None:
        if self.f is not None:
            self.f.write(line + "\n")
            self.f.flush()

    def close(self) -> None:
        if self.f is not None:
            self.f.close()


def _int(handle) -> int:
    return int(handle.value)


async def _edges(dut, n: int) -> None:
    for _ in range(n):
        await RisingEdge(dut.clk)


async def _load(dut, words) -> None:
    """Write `words` through the debug port, one qword per clock."""
    for index, value in words:
        if not value:
            continue
        dut.dbg_addr.value = index
        dut.dbg_wdata.value = value
        dut.dbg_we.value = 1
        await RisingEdge(dut.clk)
    dut.dbg_we.value = 0


async def _read_qwords(dut, indices: list[int]) -> list[int]:
    """RAM[i] for each i through the registered debug read port: one qword per clock (the
    address of the next read is presented while the data of the previous one comes out)."""
    out = []
    if not indices:
        return out
    dut.dbg_we.value = 0
    dut.dbg_addr.value = indices[0]
    for k in range(len(indices)):
        await RisingEdge(dut.clk)
        if k + 1 < len(indices):
            dut.dbg_addr.value = indices[k + 1]
        await ReadOnly()
        out.append(_int(dut.dbg_rdata))
    return out


def _read_fault(dut, fault_fields) -> dict[str, int]:
    if fault_fields:
        packed = _int(dut.fault)
        return {name: (packed >> off) & ((1 << width) - 1)
                for name, (off, width) in fault_fields.items()}
    return {name: _int(getattr(dut, f"fault__{name}")) for name in FAULT_FIELDS}


def _read_state(dut, fault_fields) -> dict:
    state = {name: _int(getattr(dut, name)) for name in STATE_PORTS}
    packed = _int(dut.gpr)
    state["gpr"] = [(packed >> (64 * i)) & ((1 << 64) - 1) for i in range(16)]
    state["fault"] = _read_fault(dut, fault_fields)
    return state


@cocotb.test()
async def run_program(dut):
    """Load, start, run until the SoC stops or ``max_cycles`` pass; write ``$VTX_RUN_OUT``."""
    with open(os.environ[ENV_IN]) as f:
        job = json.load(f)
    out_path = os.environ[ENV_OUT]
    max_cycles = int(job["max_cycles"])
    trace = bool(job.get("trace"))
    fault_fields = job.get("fault_fields")
    events = Events(job.get("events"))

    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    dut.rst.value = 1
    for name in ("dbg_we", "dbg_addr", "dbg_wdata", "start", "init_rip", "init_rsp", "init_cr3"):
        getattr(dut, name).value = 0
    await _edges(dut, RESET_CYCLES)
    dut.rst.value = 0
    await RisingEdge(dut.clk)

    await _load(dut, job["words"])
    for name, value in job["boot"].items():
        getattr(dut, name).value = value
    dut.start.value = 1
    await RisingEdge(dut.clk)           # the SoC takes `start` at this edge
    dut.start.value = 0
    # The cycle limit is a deadline in simulation time: a Timer counts from when it is awaited,
    # so each wait below gets a new one for the time left.
    deadline = get_sim_time("ns") + max_cycles * CLOCK_NS

    console = bytearray()
    vm_exits: dict[int, int] = {}
    vm_entries = 0
    cycle_limit = False

    pulse_names = ["console_valid", "vm_entry", "vm_exit"] + (["retired"] if trace else [])
    pulses = [getattr(dut, name) for name in pulse_names]

    def cycle() -> int:
        return _int(dut.cycles)

    # `running` must be seen high before its falling edge is awaited (else a stop could be
    # missed); the SoC raises it within a cycle or two of the pulse.
    for _ in range(START_CYCLES):
        await ReadOnly()
        if _int(dut.running):
            break
        await RisingEdge(dut.clk)
    else:
        raise AssertionError(f"the SoC did not start: `running` is still 0 {START_CYCLES} "
                             "cycles after the `start` pulse")
    while True:
        left = deadline - get_sim_time("ns")
        if left <= 0:
            cycle_limit = True
            await ReadOnly()
            break
        watchdog = Timer(left, unit="ns")
        triggers = [RisingEdge(p) for p in pulses] + [FallingEdge(dut.running), watchdog]
        fired = await First(*triggers)
        if fired is watchdog:
            cycle_limit = True
            await ReadOnly()
            break
        await ReadOnly()
        stopped = False
        while True:
            busy = False
            if _int(dut.console_valid):
                busy = True
                byte = _int(dut.console_data) & 0xFF
                console.append(byte)
                events.put(f"C {byte:02x} {cycle()}")
            if trace and _int(dut.retired):
                busy = True
                n = _int(dut.retired_len)
                raw = _int(dut.retired_bytes).to_bytes(15, "little")[:n]
                events.put(f"T {cycle()} {_int(dut.retired_rip):x} {n} {raw.hex()}")
            if _int(dut.vm_entry):
                busy = True
                vm_entries += 1
                events.put(f"E {cycle()}")
            if _int(dut.vm_exit):
                busy = True
                reason = _int(dut.vm_exit_reason)
                vm_exits[reason] = vm_exits.get(reason, 0) + 1
                events.put(f"X {cycle()} {reason}")
            if not _int(dut.running):
                stopped = True
                break
            if not busy:
                break
            # A pulse was high: look at the next cycle too (back-to-back pulses make no edge).
            await RisingEdge(dut.clk)
            await ReadOnly()
        if stopped:
            break

    state = _read_state(dut, fault_fields)
    memory = []
    if cycle_limit and job.get("dumps"):
        # The SoC is still running: pause it, so that the RAM becomes the debug port's.
        await RisingEdge(dut.clk)
        dut.pause.value = 1
        for _ in range(PAUSE_CYCLES):
            await RisingEdge(dut.clk)
            await ReadOnly()
            if _int(dut.paused):
                break
        else:
            raise AssertionError(f"the SoC did not pause within {PAUSE_CYCLES} cycles")
    for addr, length in job.get("dumps", []):
        first, last = addr // 8, (addr + length - 1) // 8
        await RisingEdge(dut.clk)       # leave ReadOnly before driving the debug port
        qwords = await _read_qwords(dut, list(range(first, last + 1)))
        blob = b"".join(q.to_bytes(8, "little") for q in qwords)
        start = addr - first * 8
        memory.append([addr, length, blob[start:start + length].hex()])

    events.close()
    result = {**state, "cycle_limit": cycle_limit,
              "vm_exits": {str(k): v for k, v in sorted(vm_exits.items())},
              "vm_entries": vm_entries, "console": console.hex(), "memory": memory}
    tmp = out_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, out_path)
