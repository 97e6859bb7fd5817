"""What the board tops share: the ULX3S's LEDs and FTDI UART, and the console's baud rate."""

from amaranth import ClockDomain
from amaranth.lib import io

from .uart import uart_divisor

__all__ = ["LED_COUNT", "BAUD", "board_uart_divisor", "drive_leds_and_tx", "pll_sync_domain"]

#: LEDs the tops drive (the ULX3S has 8).
LED_COUNT = 8
#: The UART's baud rate (the FTDI serial port: `screen /dev/ttyUSB0 115200`).
BAUD = 115200


def board_uart_divisor(clock_hz, baud=BAUD):
    """Clock cycles per UART bit at `clock_hz`; ValueError if the rate is off by more than 2 %
    (the receiver's tolerance)."""
    divisor, error = uart_divisor(clock_hz, baud)
    if error > 0.02:
        raise ValueError(f"{clock_hz / 1e6:g} MHz cannot make {baud} baud within 2 % "
                         f"({100 * error:.1f} %)")
    return divisor


def drive_leds_and_tx(m, platform, leds, tx):
    """Drive the board's `LED_COUNT` LEDs from `leds` and the UART's TX pin from `tx`."""
    for i in range(LED_COUNT):
        m.submodules[f"led{i}"] = led = io.Buffer("o", platform.request("led", i, dir="-"))
        m.d.comb += led.o.eq(leds[i])
    uart = platform.request("uart", 0, dir="-")
    m.submodules.uart_tx = buffer = io.Buffer("o", uart.tx)
    m.d.comb += buffer.o.eq(tx)


def pll_sync_domain(m, platform, target_mhz):
    """The `sync` domain clocked by the ECP5 PLL at `target_mhz` from the board's oscillator
    (held in reset until the PLL locks); returns the frequency the PLL makes, in Hz."""
    from .pll import PLLClockDomain
    m.domains.sync = ClockDomain("sync")
    m.submodules.clocks = clocks = PLLClockDomain(platform, target_mhz)
    return clocks.params.fout_mhz * 1e6
