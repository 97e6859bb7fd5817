"""The VM exit the system unit offers the VMX unit (`ExitRecord`): the exit information, held
from the cycle the exit is decided until the VMX unit takes it, and the guest state saved with it
(`EXIT_LAYOUT`, `rtl.vmx.ports`).

The exit information is what the deciding step knows (the exit-decision block's answer, the VMX
unit's result, a boundary event): the basic reason, the qualification, the guest-linear and
guest-physical addresses, the interruption information and error code, the instruction length
(an instruction's exit; 0 for a fault or a boundary event) and the instruction information
(SDM 28.2.5: `rtl.soc.exit_info`; 0 for every other exit). There is no event
delivery through the guest IDT, so the IDT-vectoring information is 0.

The guest state is the state the core holds at the exit (RIP, RSP, RFLAGS, CR0, CR3, CR4, EFER)
and the remaining VMX-preemption timer count; the fields the core does not hold (DR7, DEBUGCTL,
PAT, the PDPTEs) are as the last VM entry loaded them, since nothing in the guest changes them.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..vmx.layouts import GUEST_STATE_LAYOUT
from ..vmx.ports import EXIT_GUEST_LAYOUT, EXIT_LAYOUT

__all__ = ["ExitRecord"]


class ExitRecord(wiring.Component):
    """The exit information register and the VM exit's payload.

    Ports
    -----
    ``take`` (In 1): the system unit decides a VM exit this cycle, with ``reason`` (In 16),
    ``qualification`` (In 64), ``gla`` (In 64), ``gpa`` (In 64), ``intr_info`` (In 32),
    ``intr_error`` (In 32), ``instr_len`` (In 32) and ``instr_info`` (In 32).
    ``rip``, ``rsp``, ``rflags``, ``cr0``, ``cr3``, ``cr4``, ``efer`` (In 64): the core's state.
    ``timer_value`` (In 32): the VMX-preemption timer's count. ``entered``
    (In `GUEST_STATE_LAYOUT`): the guest state the last VM entry loaded.
    ``exit`` (Out `EXIT_LAYOUT`): the VM exit to offer.

    Timing
    ------
    ``take`` registers the exit information (seen in ``exit`` from the next cycle on, until the
    next ``take``); the guest state in ``exit`` is combinational from the inputs, so it is the
    state in the cycle the VMX unit takes the exit.
    """

    take: In(1)
    reason: In(16)
    qualification: In(64)
    gla: In(64)
    gpa: In(64)
    intr_info: In(32)
    intr_error: In(32)
    instr_len: In(32)
    instr_info: In(32)
    rip: In(64)
    rsp: In(64)
    rflags: In(64)
    cr0: In(64)
    cr3: In(64)
    cr4: In(64)
    efer: In(64)
    timer_value: In(32)
    entered: In(GUEST_STATE_LAYOUT)
    exit: Out(EXIT_LAYOUT)

    _INFO = ("reason", "qualification", "gla", "gpa", "intr_info", "intr_error", "instr_len",
             "instr_info")

    def elaborate(self, platform):
        m = Module()
        x = self.exit
        for name in self._INFO:
            held = Signal(len(getattr(x, name)), name=f"exit_{name}")
            with m.If(self.take):
                m.d.sync += held.eq(getattr(self, name))
            m.d.comb += getattr(x, name).eq(held)
        g = x.guest
        m.d.comb += [
            x.idt_vectoring_info.eq(0), x.idt_vectoring_error.eq(0),
            *(g[n].eq(self.entered[n]) for n in EXIT_GUEST_LAYOUT.members),
            g.guest_rip.eq(self.rip), g.guest_rsp.eq(self.rsp), g.guest_rflags.eq(self.rflags),
            g.guest_cr0.eq(self.cr0), g.guest_cr3.eq(self.cr3), g.guest_cr4.eq(self.cr4),
            g.guest_ia32_efer.eq(self.efer), g.vmx_preemption_timer_value.eq(self.timer_value),
        ]
        return m
