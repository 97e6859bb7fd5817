"""The byte lanes of one data access (`AccessLanes`): an access of 1, 2, 4 or 8 bytes at any
byte address, as the core's memory port carries it, in at most two qword requests.

The port's requests are qword aligned with a byte mask; an access whose bytes cross a qword
boundary is two requests (the first qword, then the next), and its loaded bytes come from the
two answers side by side.

Ports:
    addr        in   the access's linear address (its first byte)
    size        in   its bytes: 1, 2, 4 or 8
    data        in   the bytes to store, in the low bytes
    part        in   which request: 0 the first qword, 1 the next
    loaded      in   the answers' data: the first qword in 63:0, the next one's bytes 0-6 in
                     119:64 (its last byte is never the access's: an access is at most 8 bytes)
    req_addr    out  the qword address of request `part`
    req_mask    out  its byte mask
    req_data    out  its data, each byte in its lane (bytes outside `req_mask` are free: both
                     requests carry the store's bytes rotated by the address's byte offset)
    two_parts   out  the access crosses a qword boundary (two requests)
    value       out  the 8 bytes of `loaded` from `addr` on (the access's bytes in the low
                     ones; the reader keeps what its operand size needs)

Timing: combinational (constant shifts selected by the address's byte offset, as trees of 2:1
multiplexers on its bits: no barrel shifter).
"""

from amaranth.hdl import C, Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..mux import binary_mux

__all__ = ["AccessLanes"]


class AccessLanes(wiring.Component):
    """See the module docstring."""

    addr: In(64)
    size: In(4)
    data: In(64)
    part: In(1)
    loaded: In(120)

    req_addr: Out(64)
    req_mask: Out(8)
    req_data: Out(64)
    two_parts: Out(1)
    value: Out(64)

    def elaborate(self, platform):
        m = Module()
        size = self.size
        mask8 = Signal(8)
        m.d.comb += mask8.eq(Mux(size == 1, 0x01, Mux(size == 2, 0x03,
                                                      Mux(size == 4, 0x0F, 0xFF))))
        mask16 = Signal(16)
        with m.Switch(self.addr[:3]):
            for o in range(8):
                with m.Case(o):
                    m.d.comb += mask16.eq(Cat(C(0, o), mask8, C(0, 8 - o)))
        # The bytes move by the address's byte offset: trees of 2:1 multiplexers on its bits
        # (`binary_mux`). Both requests' data is the store's bytes rotated into their lanes:
        # each request's mask takes its own bytes from it (the others are free).
        offset = self.addr[:3]
        rotated = binary_mux(offset, [Cat(self.data[64 - 8 * o:], self.data[:64 - 8 * o])
                                      for o in range(8)])
        m.d.comb += [
            self.two_parts.eq(mask16[8:].any()),
            self.req_addr.eq(Cat(C(0, 3), self.addr[3:])
                             + Mux(self.part, C(8, 64), C(0, 64))),
            self.req_mask.eq(Mux(self.part, mask16[8:], mask16[:8])),
            self.req_data.eq(rotated),
            self.value.eq(binary_mux(offset, [self.loaded[8 * o:8 * o + 64]
                                              for o in range(8)])),
        ]
        return m
