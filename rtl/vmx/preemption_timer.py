"""The VMX-preemption timer (exit reason 52).

`PreemptionTimer` is the RTL of the reference model's `VmxModel.preemption_timer` state and
`advance_tsc` (tb/model/vmx.py; SDM 25.5.1): loaded at VM entry, counting down while the guest
runs, reporting expiry at 0.

Ports
-----
``load`` (In 1), ``load_value`` (In 32), ``load_active`` (In 1)
    A successful VM entry: the VMX unit pulses ``load`` for one cycle with ``load_value`` = the
    guest's VMX_PREEMPTION_TIMER_VALUE field and ``load_active`` = pin-based control 6
    ("activate VMX-preemption timer"). With ``load_active`` = 0 the timer is inactive until the
    next load (the model's ``preemption_timer = None``).
``tick`` (In 1)
    One TSC tick in this cycle. The timer counts down by one every 2^`rate` ticks (`rate` =
    IA32_VMX_MISC[4:0] = `MISC_PREEMPTION_TIMER_RATE` = 0: one count per tick); the count
    saturates at 0.
``stop`` (In 1)
    A VM exit: the timer becomes inactive at the end of this cycle.
``active`` (Out 1), ``value`` (Out 32), ``expired`` (Out 1)
    ``value`` is the remaining count while active, 0 otherwise (what a VM exit with "save
    VMX-preemption timer value" stores: the VMX unit samples it in the ``stop`` cycle).
    ``expired`` = ``active`` and ``value`` == 0: the core takes a VM exit with reason 52.

Timing, matching `advance_tsc`
------------------------------
All outputs come from registers. The count is the model's ``preemption_timer`` after every tick
*before* the current cycle: in the cycle after a ``load``, ``value`` = ``load_value`` and
``expired`` = (``load_value`` == 0), i.e. ``advance_tsc(0)`` at once after VM entry (an entry
with value 0 expires before the guest's first instruction); a ``tick`` in cycle n is
``advance_tsc(1)`` and is seen in ``value``/``expired`` from cycle n+1 on. So ``expired`` rises
in the cycle after the tick that brings the count from 1 to 0 (and stays while active). In a
``load`` cycle ``tick`` and ``stop`` are ignored (the load starts the new count); in a ``stop``
cycle ``tick`` is ignored (``value`` in that cycle is what is saved). The prescaler for
`rate` > 0 restarts at each load (the model divides the ticks of each ``advance_tsc`` call).
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from rtl.arch.vmx import MISC_PREEMPTION_TIMER_RATE

__all__ = ["PreemptionTimer"]


class PreemptionTimer(wiring.Component):
    """The VMX-preemption timer (see the module docstring). `rate`: IA32_VMX_MISC[4:0]."""

    load: In(1)
    load_value: In(32)
    load_active: In(1)
    tick: In(1)
    stop: In(1)
    active: Out(1)
    value: Out(32)
    expired: Out(1)

    def __init__(self, rate: int = MISC_PREEMPTION_TIMER_RATE):
        if not 0 <= rate <= 31:
            raise ValueError(f"preemption timer rate {rate} is not in 0..31")
        self.rate = rate
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        active = Signal()
        count = Signal(32)
        m.d.comb += [
            self.active.eq(active),
            self.value.eq(count & active.replicate(32)),
            self.expired.eq(active & (count == 0)),
        ]
        # One count every 2^rate ticks.
        if self.rate:
            prescale = Signal(self.rate)
            step = Signal()
            m.d.comb += step.eq(self.tick & prescale.all())
            with m.If(self.load):
                m.d.sync += prescale.eq(0)
            with m.Elif(self.tick & active & ~self.stop):
                m.d.sync += prescale.eq(prescale + 1)
        else:
            step = self.tick

        with m.If(self.load):
            m.d.sync += [active.eq(self.load_active), count.eq(self.load_value)]
        with m.Elif(self.stop):
            m.d.sync += [active.eq(0), count.eq(0)]
        with m.Elif(active & step & (count != 0)):
            m.d.sync += count.eq(count - 1)
        return m
