"""The ECP5 PLL (EHXPLLL) and the board clock domain built on it.

`pll_params(fin, fout)` picks the dividers the way Project Trellis's ``ecppll`` does (the same
search and tie-break, so the same PLL for the same request): a reference divider, a feedback
divider and an output divider whose PFD (3.125..400 MHz) and VCO (400..800 MHz) frequencies are
legal, giving the output frequency closest to the request, the VCO nearest 600 MHz among equals.
The feedback comes from CLKOP, so ``fout = fin / CLKI_DIV * CLKFB_DIV``.

`PLLClockDomain` takes the board's oscillator pin (``platform.default_clk``), runs it through the
PLL and clocks the ``sync`` domain with CLKOP, held in reset until the PLL has locked. The reset
reaches the flip-flops over a global network (a DCCA buffer), like the clock: it goes to almost
every flip-flop of the design (15 700 of the whole system's 18 600), arcs that would otherwise
take general routing from the logic.
"""

from dataclasses import dataclass

from amaranth import ClockSignal, Elaboratable, Instance, Module, ResetSignal, Signal
from amaranth.lib import io
from amaranth.lib.cdc import AsyncFFSynchronizer

PFD_MIN, PFD_MAX = 3.125, 400.0
VCO_MIN, VCO_MAX = 400.0, 800.0
OUT_MIN, OUT_MAX = 3.125, 400.0


@dataclass(frozen=True)
class PLLParams:
    fin_mhz: float
    fout_mhz: float          # what the dividers give (may differ from the request)
    fvco_mhz: float
    clki_div: int
    clkfb_div: int
    clkop_div: int

    @property
    def clkop_cphase(self):
        # Half a CLKOP period of VCO cycles, as ecppll writes it (the phase does not matter with
        # CLKOP feedback, which aligns CLKOP to CLKI whatever it is).
        return (self.clkop_div - 1) // 2


def pll_params(fin_mhz, fout_mhz):
    """EHXPLLL dividers for `fout_mhz` from `fin_mhz` (both in MHz)."""
    if not OUT_MIN <= fout_mhz <= OUT_MAX:
        raise ValueError(f"ECP5 PLL output {fout_mhz} MHz is outside {OUT_MIN}..{OUT_MAX} MHz")
    best = None
    for clki_div in range(1, 129):
        fpfd = fin_mhz / clki_div
        if not PFD_MIN <= fpfd <= PFD_MAX:
            continue
        for clkfb_div in range(1, 81):
            fout = fpfd * clkfb_div
            for clkop_div in range(1, 129):
                fvco = fout * clkop_div
                if not VCO_MIN <= fvco <= VCO_MAX:
                    continue
                key = (round(abs(fout - fout_mhz), 9), abs(fvco - 600))
                if best is None or key < best[0]:
                    best = (key, PLLParams(fin_mhz, fout, fvco, clki_div, clkfb_div, clkop_div))
    if best is None:
        raise ValueError(f"no ECP5 PLL setting gives {fout_mhz} MHz from {fin_mhz} MHz")
    return best[1]


def _mhz_text(value):
    return f"{value:.6f}".rstrip("0").rstrip(".")


class ECP5PLL(Elaboratable):
    """An EHXPLLL with CLKOP feedback: `clki` in, `clkop` and `locked` out."""

    def __init__(self, params: PLLParams):
        self.params = params
        self.clki = Signal()
        self.clkop = Signal()
        self.locked = Signal()

    def elaborate(self, platform):
        p = self.params
        m = Module()
        m.submodules.ehxplll = Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=_mhz_text(p.fin_mhz),
            a_FREQUENCY_PIN_CLKOP=_mhz_text(p.fout_mhz),
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
            a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED",
            p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB", p_OUTDIVIDER_MUXC="DIVC",
            p_OUTDIVIDER_MUXD="DIVD",
            p_CLKI_DIV=p.clki_div, p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=p.clkop_div,
            p_CLKOP_CPHASE=p.clkop_cphase, p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
            p_CLKFB_DIV=p.clkfb_div,
            i_RST=0, i_STDBY=0, i_CLKI=self.clki, o_CLKOP=self.clkop, i_CLKFB=self.clkop,
            i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
            i_PLLWAKESYNC=0, i_ENCLKOP=0, o_LOCK=self.locked,
        )
        return m


class PLLClockDomain(Elaboratable):
    """Drives the ``sync`` domain's clock at `target_mhz` from the platform's default clock,
    and its reset until the PLL has locked. The domain itself is defined by the caller (the
    top module, where Amaranth wants domains defined).

    `params` (a `PLLParams`) after construction says what the PLL really gives.
    """

    def __init__(self, platform, target_mhz):
        clk_resource = platform.lookup(platform.default_clk)
        self.fin_mhz = clk_resource.clock.frequency / 1e6
        self.params = pll_params(self.fin_mhz, target_mhz)

    def elaborate(self, platform):
        m = Module()
        clk_port = platform.request(platform.default_clk, dir="-")
        m.submodules.clk_buf = clk_buf = io.Buffer("i", clk_port)
        m.submodules.pll = pll = ECP5PLL(self.params)
        m.d.comb += [pll.clki.eq(clk_buf.i), ClockSignal("sync").eq(pll.clkop)]
        # Asserted at once when the PLL loses lock, released on a clock edge (what
        # `ResetSynchronizer` does), then buffered onto a global network for the fabric.
        reset = Signal()
        m.submodules.reset_sync = AsyncFFSynchronizer(~pll.locked, reset, o_domain="sync")
        m.submodules.reset_buf = Instance("DCCA", i_CLKI=reset, i_CE=1,
                                          o_CLKO=ResetSignal("sync"))
        return m
