"""The exit write-back: the fields a VM exit wrote into the working copy, copied into the current
VMCS's row of the cache memory in the background, one per cycle.

A VM exit (or a VM-entry failure) writes its fields (`PARALLEL_FIELDS`) into the working copy in
one cycle; the cache memory's write port takes one field a cycle. `ExitWriteBack` walks the
fields in the order of `PARALLEL_FIELDS` (the exit reason and qualification first) and offers
each on its write request; the VMX unit gives the port to any state that needs it in the same
cycle (``taken``), and then the walk waits. Meanwhile the host may run; what reads the rows waits
while ``busy`` (VMPTRLD, VMCLEAR) or while its field is not copied yet (VMREAD: ``query_field``
-> ``query_pending``).

Ports
-----
``start`` (in): an exit wrote the fields: (re)start from the first.
``fields`` (in, `PARALLEL_LAYOUT`): the working copy's values of those fields.
``hold`` (in): write nothing and do not advance (an indexed write is on its way into the working
copy, so the field about to be copied may still hold its old value there).
``taken`` (in): a state uses the write port in this cycle (its write wins): do not advance.
``wr_valid``, ``wr_field``, ``wr_data`` (out): the write request (field slot, value).
``busy`` (out): fields are left to copy.
``query_field`` (in, field slot), ``query_pending`` (out): that field is one not copied yet (the
one offered in this cycle included: the row's read port sees the write a cycle later).

Timing
------
``start`` in cycle t: the first field is offered from cycle t+1; one field per cycle in which
the request is neither held nor taken; ``busy`` falls after the last.
"""

from amaranth.hdl import Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from rtl.arch.vmx import FIELD_BY_NAME, FIELDS
from rtl.mux import binary_mux
from rtl.vmx.layouts import member_name
from rtl.vmx.working_copy import PARALLEL_FIELDS, PARALLEL_LAYOUT

__all__ = ["ExitWriteBack"]


class ExitWriteBack(wiring.Component):
    start: In(1)
    fields: In(PARALLEL_LAYOUT)
    hold: In(1)
    taken: In(1)
    wr_valid: Out(1)
    wr_field: Out(range(len(FIELDS)))
    wr_data: Out(64)
    busy: Out(1)
    query_field: In(range(len(FIELDS)))
    query_pending: Out(1)

    def elaborate(self, platform):
        m = Module()
        last = len(PARALLEL_FIELDS) - 1
        cnt = Signal(range(len(PARALLEL_FIELDS)))
        # (`binary_mux` gives the last field also for the counter values no walk reaches:
        # every value of the counter copies a field, so none can write a wrong value into a row.)
        m.d.comb += [
            self.wr_field.eq(binary_mux(cnt, [Const(FIELD_BY_NAME[name].slot, range(len(FIELDS)))
                                              for name in PARALLEL_FIELDS])),
            self.wr_data.eq(binary_mux(cnt, [self.fields[member_name(name)]
                                             for name in PARALLEL_FIELDS])),
        ]
        m.d.comb += self.wr_valid.eq(self.busy & ~self.hold)
        with m.If(self.wr_valid & ~self.taken):
            with m.If(cnt == last):
                m.d.sync += self.busy.eq(0)
            with m.Else():
                m.d.sync += cnt.eq(cnt + 1)
        with m.If(self.start):
            m.d.sync += [self.busy.eq(1), cnt.eq(0)]
        with m.Switch(self.query_field):
            for i, name in enumerate(PARALLEL_FIELDS):
                with m.Case(FIELD_BY_NAME[name].slot):
                    m.d.comb += self.query_pending.eq(cnt <= i)
        return m
