"""The whole system on the board: the SoC running a program preloaded in block RAM, its console
on the UART, its state on the LEDs.

`SystemTop` (platform-independent, runs in a simulator as is):

* `rtl.soc.Soc` with sparse RAM: only the physical pages of `pages` are backed (the demo's page
  set, computed at build time from a run: `sim.synth.system_scenario`), preloaded with `image`
  ({physical qword index: value}: the loader's boot page tables and the program), and the
  console with backpressure (``console_backpressure``);
* a start sequencer: `start_delay` cycles after reset it pulses ``start`` once with the boot
  state `boot` (``init_rip``, ``init_rsp``, ``init_cr3``: `sim.run.program.boot_state`). One run per
  configuration of the FPGA: the run changes RAM, so running again means loading the bitstream
  again;
* console bytes -> a `SyncFIFO` of `fifo_depth` bytes -> `UARTTx` (8N1, `uart_divisor` clocks a
  bit). The SoC's ``console_ready`` is the FIFO's room, so an OUT to the console waits instead
  of losing a byte. A line feed goes out as CR LF (a terminal needs the CR);
* `leds`: 0 running, 1 the run ended at the exit port with code 0 (PASS), 2 it ended any other
  way (exit code != 0, HLT, fault), 3 an access left the page set (``unmapped``: the RAM image
  is too small for the program), 4 heartbeat (toggles every `heartbeat_cycles`: the clock runs),
  5-7 the exit code's bits 2:0.

`SystemBoard` puts it on the ULX3S: the PLL clock domain (reset until lock), the LEDs and the
FTDI UART's TX pin.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from amaranth import Elaboratable, Module, Mux, Signal
from amaranth.lib import fifo, wiring
from amaranth.lib.wiring import Out

from ..arch.paging import MAXPHYADDR
from ..soc.soc import RunStop, Soc
from .board import LED_COUNT, board_uart_divisor, drive_leds_and_tx, pll_sync_domain
from .uart import UARTTx

__all__ = ["SystemTop", "SystemBoard"]

_LF, _CR = 0x0A, 0x0D


class SystemTop(wiring.Component):
    """See the module docstring. Besides `leds` and `tx`, the run's outcome is on ports for a
    simulation test (`stop`, `exit_code`, `unmapped`, `unmapped_addr`, `cycles`); on the board
    they go nowhere."""

    def __init__(self, *, pages: Sequence[int], image: Mapping[int, int],
                 boot: Mapping[str, int], uart_divisor: int, fifo_depth: int = 64,
                 start_delay: int = 16, heartbeat_cycles: int = 1 << 24,
                 maxphyaddr: int = MAXPHYADDR):
        self.pages = tuple(pages)
        self.image = dict(image)
        self.boot = dict(boot)
        self.uart_divisor = uart_divisor
        self.fifo_depth = fifo_depth
        self.start_delay = start_delay
        self.heartbeat_cycles = heartbeat_cycles
        self.maxphyaddr = maxphyaddr
        super().__init__({
            "leds": Out(LED_COUNT),
            "tx": Out(1, init=1),
            "running": Out(1),
            "stop": Out(RunStop),
            "exit_code": Out(32),
            "unmapped": Out(1),
            "unmapped_addr": Out(maxphyaddr),
            "cycles": Out(64),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.soc = soc = Soc(maxphyaddr=self.maxphyaddr, pages=self.pages,
                                     init=self.image, console_backpressure=True)
        # --- start: once, `start_delay` cycles after reset -------------------------------------
        delay = Signal(range(self.start_delay + 2), init=self.start_delay + 1)
        with m.If(delay != 0):
            m.d.sync += delay.eq(delay - 1)
        m.d.comb += [soc.start.eq(delay == 1), soc.init_rip.eq(self.boot["init_rip"]),
                     soc.init_rsp.eq(self.boot["init_rsp"]),
                     soc.init_cr3.eq(self.boot["init_cr3"]),
                     soc.dbg_addr.eq(0), soc.dbg_we.eq(0), soc.dbg_wdata.eq(0)]

        # --- console -> FIFO -> UART -----------------------------------------------------------
        m.submodules.console_fifo = cf = fifo.SyncFIFO(width=8, depth=self.fifo_depth)
        m.submodules.uart = uart = UARTTx(self.uart_divisor)
        m.d.comb += [cf.w_en.eq(soc.console_valid), cf.w_data.eq(soc.console_data),
                     # The byte of an OUT lands a cycle after `console_ready` let it through:
                     # no second one while it is on its way.
                     soc.console_ready.eq(cf.w_rdy & ~soc.console_valid),
                     self.tx.eq(uart.tx)]
        cr_sent = Signal()      # the CR in front of the LF at the FIFO's head has gone out
        is_lf = cf.r_data == _LF
        m.d.comb += [uart.data.valid.eq(cf.r_rdy),
                     uart.data.payload.eq(Mux(is_lf & ~cr_sent, _CR, cf.r_data))]
        with m.If(uart.data.valid & uart.data.ready):
            with m.If(is_lf & ~cr_sent):
                m.d.sync += cr_sent.eq(1)
            with m.Else():
                m.d.comb += cf.r_en.eq(1)
                m.d.sync += cr_sent.eq(0)

        # --- LEDs and status ---------------------------------------------------------------------
        heartbeat = Signal()
        beat = Signal(range(self.heartbeat_cycles))
        with m.If(beat == self.heartbeat_cycles - 1):
            m.d.sync += [beat.eq(0), heartbeat.eq(~heartbeat)]
        with m.Else():
            m.d.sync += beat.eq(beat + 1)
        ended = soc.stop != RunStop.NONE
        passed = (soc.stop == RunStop.EXIT_PORT) & (soc.exit_code == 0)
        leds = Signal(LED_COUNT)
        m.d.sync += leds.eq(Mux(ended, soc.exit_code[:3], 0) << 5
                            | heartbeat << 4 | soc.unmapped << 3 | (ended & ~passed) << 2
                            | passed << 1 | soc.running)
        m.d.comb += [self.leds.eq(leds), self.running.eq(soc.running), self.stop.eq(soc.stop),
                     self.exit_code.eq(soc.exit_code), self.unmapped.eq(soc.unmapped),
                     self.unmapped_addr.eq(soc.unmapped_addr), self.cycles.eq(soc.cycles)]
        return m


class SystemBoard(Elaboratable):
    """`SystemTop` on the ULX3S: PLL clock at `target_mhz`, LEDs, UART TX (FTDI)."""

    def __init__(self, target_mhz, **top_params):
        self.target_mhz = target_mhz
        self.top_params = top_params

    def elaborate(self, platform):
        m = Module()
        clock_hz = pll_sync_domain(m, platform, self.target_mhz)
        params = dict(self.top_params)
        params.setdefault("uart_divisor", board_uart_divisor(clock_hz))
        params.setdefault("heartbeat_cycles", max(1, round(clock_hz / 2)))
        m.submodules.system = top = SystemTop(**params)
        drive_leds_and_tx(m, platform, top.leds, top.tx)
        return m
