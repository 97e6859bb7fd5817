"""The VM exits taken at an instruction boundary in VMX non-root operation (`BoundaryEvents`):
the VMX-preemption timer's (reason 52, SDM 25.5.1; `rtl.vmx.preemption_timer`) and the monitor
trap flag's (reason 37, SDM 25.5.2; `tb.model.vmx.VmxModel.mtf_exit`).

The core asks for a boundary event with ``pending`` (it hands the system unit an EVENT request
instead of the next instruction); the system unit then takes the exit this block names.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..arch.vmx import PROC_MONITOR_TRAP_FLAG, ExitReason

__all__ = ["BoundaryEvents", "monitor_trap_flag"]


def monitor_trap_flag(proc_controls):
    """The "monitor trap flag" control (bit 27 of the primary processor-based controls)."""
    return (proc_controls & PROC_MONITOR_TRAP_FLAG) != 0


class BoundaryEvents(wiring.Component):
    """Whether a boundary event is pending, and which VM exit it is.

    * The timer's exit is pending while the timer has expired (``timer_expired``).
    * The monitor trap flag's exit is pending when a guest instruction retires with the control
      set, except the VM-entering instruction itself (its retirement is the entry, not a guest
      instruction).
    * Neither is pending once the run has ended at the exit port (``halt``): the core stays
      halted.

    When the core hands over the event, the timer's exit is taken if it has expired, otherwise
    the monitor trap flag's (not after ``halt``); outside non-root operation none.

    Ports
    -----
    ``non_root`` (In 1): VMX non-root operation. ``mtf`` (In 1): the current VMCS's "monitor
    trap flag" control (`monitor_trap_flag`). ``timer_expired`` (In 1): the VMX-preemption timer is
    active and at 0. ``retiring`` (In 1): the core retires an instruction this cycle.
    ``entered`` (In 1): the system unit answers a successful VM entry this cycle (the core
    retires it later). ``halt`` (In 1): the run ends at the exit port this cycle.
    ``pending`` (Out 1): the core is to hand over a boundary event. ``exit`` (Out 1),
    ``reason`` (Out 16): the event the core handed over exits, with this basic exit reason.

    Timing
    ------
    Two registers: the VM-entering instruction has not retired yet (set by ``entered``, cleared
    by the next ``retiring``; ``entered`` wins should both come in one cycle), and the run has
    ended (set by ``halt``, cleared only by reset). The outputs are combinational from them and
    the inputs: ``pending`` follows ``retiring`` and ``timer_expired`` in the same cycle.
    """

    non_root: In(1)
    mtf: In(1)
    timer_expired: In(1)
    retiring: In(1)
    entered: In(1)
    halt: In(1)
    pending: Out(1)
    exit: Out(1)
    reason: Out(16)

    def elaborate(self, platform):
        m = Module()
        entry_retire = Signal()     # the VM-entering instruction is still to retire
        halted = Signal()
        with m.If(self.entered):
            m.d.sync += entry_retire.eq(1)
        with m.Elif(self.retiring):
            m.d.sync += entry_retire.eq(0)
        with m.If(self.halt):
            m.d.sync += halted.eq(1)

        m.d.comb += [
            self.pending.eq(self.non_root & ~halted
                            & (self.timer_expired | (self.mtf & self.retiring & ~entry_retire))),
            self.exit.eq(self.non_root & (self.timer_expired | ~halted)),
            self.reason.eq(Mux(self.timer_expired, ExitReason.PREEMPTION_TIMER,
                               ExitReason.MONITOR_TRAP_FLAG)),
        ]
        return m
