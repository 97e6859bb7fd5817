"""The exit write-back: the fields a VM exit wrote, copied into the current VMCS's rows of the
cache memory in the background, one per cycle.

A VM exit (or a VM-entry failure) writes its fields (`EXIT_WRITTEN_FIELDS`) in one cycle: those
of the working copy through its parallel port, the exit-information fields (`EXIT_INFO_WRITTEN`,
which the working copy does not hold) into registers of this block. The cache memory's write
port takes one field a cycle: `ExitWriteBack` keeps a pending bit per field the exit wrote and
walks the fields in the order of `EXIT_WRITTEN_FIELDS` (the exit reason and qualification
first), offering each pending one on its write request; the VMX unit gives the port to any state
that needs it in the same cycle (``taken``), and then the walk waits. Meanwhile the host may run;
what reads the rows waits while ``busy`` (VMPTRLD, VMCLEAR) or while its field is pending
(VMREAD: ``query_field`` -> ``query_pending``); what writes an exit-information field waits while
this block holds it (VMWRITE, when `VMX_MISC` allows it: ``query_held``), so the copy cannot
overwrite a newer value.

Ports
-----
``start`` (in): an exit writes the fields ``written`` (in, `EXIT_WRITTEN_LAYOUT`) whose bits of
``written_en`` (in, one per field) are set: those become pending (with the ones still pending
from an exit before, whose values are still the latest), and the walk starts again from the
first.
``current`` (in, `PARALLEL_LAYOUT`): the working copy's values of its fields (what the walk
copies for them: a VMWRITE may have changed one since the exit).
``hold`` (in): write nothing and do not advance (an indexed write is on its way into the working
copy, so the field about to be copied may still hold its old value there).
``taken`` (in): a state uses the write port in this cycle (its write wins): do not advance.
``wr_valid``, ``wr_field``, ``wr_data`` (out): the write request (field slot, value).
``busy`` (out): fields are pending.
``query_field`` (in, field slot), ``query_pending`` (out): that field is pending (the one offered
in this cycle included: the row's read port sees the write a cycle later); ``query_held`` (out):
it is pending and an exit-information field (its value is here, not in the working copy).

Timing
------
``start`` in cycle t: the first pending field is offered from cycle t+1; a field that is not
pending is passed in one cycle, a pending one in the first cycle in which the request is neither
held nor taken; ``busy`` falls after the last.
"""

from amaranth.hdl import Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from rtl.arch.vmx import FIELD_BY_NAME, FIELDS
from rtl.mux import binary_mux
from rtl.vmx.exit_fields import EXIT_INFO_WRITTEN, EXIT_WRITTEN_FIELDS, EXIT_WRITTEN_LAYOUT
from rtl.vmx.layouts import member_name
from rtl.vmx.working_copy import PARALLEL_FIELDS, PARALLEL_LAYOUT

__all__ = ["ExitWriteBack"]


class ExitWriteBack(wiring.Component):
    start: In(1)
    written: In(EXIT_WRITTEN_LAYOUT)
    written_en: In(len(EXIT_WRITTEN_FIELDS))
    current: In(PARALLEL_LAYOUT)
    hold: In(1)
    taken: In(1)
    wr_valid: Out(1)
    wr_field: Out(range(len(FIELDS)))
    wr_data: Out(64)
    busy: Out(1)
    query_field: In(range(len(FIELDS)))
    query_pending: Out(1)
    query_held: Out(1)

    def elaborate(self, platform):
        m = Module()
        last = len(EXIT_WRITTEN_FIELDS) - 1
        cnt = Signal(range(len(EXIT_WRITTEN_FIELDS)))
        pending = Signal(len(EXIT_WRITTEN_FIELDS))
        # The exit-information fields: a register each, written by the exit (enables only:
        # no multiplexer in front of the data).
        info = {}
        for i, name in enumerate(EXIT_INFO_WRITTEN):
            n = member_name(name)
            info[name] = reg = Signal(FIELD_BY_NAME[name].bits, name=f"held_{n}")
            with m.If(self.start & self.written_en[i]):
                m.d.sync += reg.eq(self.written[n])
        values = [info[name] for name in EXIT_INFO_WRITTEN] + \
                 [self.current[member_name(name)] for name in PARALLEL_FIELDS]
        # (`binary_mux` gives the last field also for the counter values no walk reaches:
        # `at` has no bit there, so nothing is written.)
        at = Signal(len(EXIT_WRITTEN_FIELDS))     # one-hot: the walk's field
        m.d.comb += [at[i].eq(cnt == i) for i in range(len(EXIT_WRITTEN_FIELDS))]
        here = Signal()
        copied = Signal()
        m.d.comb += [
            self.wr_field.eq(binary_mux(cnt, [Const(FIELD_BY_NAME[name].slot,
                                                    range(len(FIELDS)))
                                              for name in EXIT_WRITTEN_FIELDS])),
            self.wr_data.eq(binary_mux(cnt, values)),
            here.eq((pending & at).any()),
            self.busy.eq(pending.any()),
            self.wr_valid.eq(here & ~self.hold),
            copied.eq(self.wr_valid & ~self.taken),
        ]
        # Every pending field is at or after `cnt` (a start sets bits and restarts the walk
        # from the first), so the walk never turns back.
        with m.If((~here | copied) & (cnt != last)):
            m.d.sync += cnt.eq(cnt + 1)
        m.d.sync += pending.eq((pending & ~Mux(copied, at, 0))
                               | Mux(self.start, self.written_en, 0))
        with m.If(self.start):
            m.d.sync += cnt.eq(0)
        with m.Switch(self.query_field):
            for i, name in enumerate(EXIT_WRITTEN_FIELDS):
                with m.Case(FIELD_BY_NAME[name].slot):
                    m.d.comb += self.query_pending.eq(pending[i])
                    if name in info:
                        m.d.comb += self.query_held.eq(pending[i])
        return m
