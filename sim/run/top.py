"""The Verilog top of `vtx run`'s Verilator model: the SoC in a reset-less clock domain.

`SocRunTop` has the ports of `rtl.soc.soc.Soc` less ``rst``, plus ``clk``. Its ``sync`` domain
has no reset: every register starts from its initial value, which is the state a reset gives,
and a model is made for one run, so no reset is ever needed. A reset input would put every
register's next-state logic on a combinational path from a top-level input, which Verilator
evaluates again on every ``eval()`` call; tied off, it folds away (docs/system.md, "Simulation
speed", has the measurement).

It lives apart from the C++ driver (`sim.run.model`), because the Verilog cache is keyed by the
file that defines the factory: editing the driver rebuilds no model.
"""

from __future__ import annotations

from amaranth.hdl import ClockDomain, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from rtl.arch.system import RAM_BYTES
from rtl.soc.soc import Soc

__all__ = ["SocRunTop"]


class SocRunTop(wiring.Component):
    """`Soc(ram_bytes=...)` with a ``clk`` input and no reset.

    Ports: ``clk``, then every port of `Soc` with its direction and shape (``dbg_*``, ``start``,
    ``pause``, ``init_*`` in; ``running``, ``stop``, ``fault``, ``console_*``, ``retired*``,
    ``vm_*``, the architectural state and the counters out).

    Timing: the SoC's, one rising edge of ``clk`` per cycle; the ports are wires to the SoC's.
    """

    def __init__(self, *, ram_bytes: int = RAM_BYTES):
        self.ram_bytes = ram_bytes
        self._soc = Soc(ram_bytes=ram_bytes)
        super().__init__({"clk": In(1), **self._soc.signature.members})

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = domain = ClockDomain("sync", reset_less=True)
        m.d.comb += domain.clk.eq(self.clk)
        m.submodules.soc = soc = self._soc
        for name, member in soc.signature.members.items():
            outer, inner = getattr(self, name), getattr(soc, name)
            if member.flow == wiring.Out:
                m.d.comb += outer.eq(inner)
            else:
                m.d.comb += inner.eq(outer)
        return m
