"""A UART transmitter (8 data bits, no parity, one stop bit) and a line printer on top of it.

`UARTTx` takes bytes on a stream and shifts them out on `tx`, least significant bit first, each
bit lasting `divisor` clock cycles (``divisor = round(clock_hz / baud)``); `tx` idles high.

`LinePrinter` sends a fixed-shape line whose characters are constants or signals, some of them
present only when a condition holds (see `LinePrinter`).
"""

from amaranth import Cat, Const, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out


def uart_divisor(clock_hz, baud):
    """Clock cycles per bit, and the baud-rate error it gives (a fraction)."""
    divisor = max(1, round(clock_hz / baud))
    return divisor, abs(clock_hz / divisor - baud) / baud


class UARTTx(wiring.Component):
    """8N1 transmitter: `data` stream in, `tx` out (idle high), `busy` while a frame is sent."""

    def __init__(self, divisor):
        assert divisor >= 1
        self.divisor = divisor
        super().__init__({
            "data": In(stream.Signature(8)),
            "tx": Out(1, init=1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        timer = Signal(range(self.divisor), init=0)
        frame = Signal(10, init=0x3FF)       # stop . data[7:0] . start, shifted out LSB first
        bits = Signal(range(11))             # bits of the frame still to send
        m.d.comb += [self.tx.eq(frame[0]), self.busy.eq(bits != 0),
                     self.data.ready.eq(bits == 0)]
        with m.If(self.data.valid & self.data.ready):
            m.d.sync += [frame.eq(Cat(Const(0, 1), self.data.payload, Const(1, 1))),
                         bits.eq(10), timer.eq(self.divisor - 1)]
        with m.Elif(bits != 0):
            with m.If(timer == 0):
                m.d.sync += [frame.eq(Cat(frame[1:], Const(1, 1))), bits.eq(bits - 1),
                             timer.eq(self.divisor - 1)]
            with m.Else():
                m.d.sync += timer.eq(timer - 1)
        return m


class LinePrinter(wiring.Component):
    """Sends one line through a `UARTTx` each time `start` is pulsed.

    `items` is a list of ``(char, present)``: `char` an int (a constant character) or an 8-bit
    `Value` (computed by the caller, sampled as the character is sent), `present` None (always)
    or a 1-bit `Value` (the character is skipped when 0). The values must hold still while
    `busy` is 1.
    """

    def __init__(self, items, divisor):
        self.items = list(items)
        self.divisor = divisor
        super().__init__({
            "start": In(1),
            "busy": Out(1),
            "tx": Out(1, init=1),
        })

    def elaborate(self, platform):
        m = Module()
        n = len(self.items)
        m.submodules.uart = uart = UARTTx(self.divisor)
        m.d.comb += self.tx.eq(uart.tx)

        index = Signal(range(n + 1))
        active = Signal()
        char = Signal(8)
        present = Signal()
        with m.Switch(index):
            for i, (c, cond) in enumerate(self.items):
                with m.Case(i):
                    m.d.comb += [char.eq(c), present.eq(1 if cond is None else cond)]
        m.d.comb += [
            uart.data.payload.eq(char),
            uart.data.valid.eq(active & present),
            self.busy.eq(active | uart.busy),
        ]
        with m.If(~active):
            with m.If(self.start):
                m.d.sync += [active.eq(1), index.eq(0)]
        with m.Elif(index == n):
            m.d.sync += active.eq(0)
        with m.Elif(~present | uart.data.ready):
            m.d.sync += index.eq(index + 1)
        return m

