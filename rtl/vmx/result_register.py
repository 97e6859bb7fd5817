"""The VMX unit's answer register: one answer to each instruction, held until the core takes it.

An answer is loaded with its kind, error number, exit reason and qualification, value and EPTP
(`ANSWER_LAYOUT`); the arithmetic flags follow from the kind (VMsucceed: all clear, VMfailInvalid:
CF, VMfailValid: ZF; a VM exit, a VM entry, a completed VMFUNC and a precheck's "proceed" leave
RFLAGS alone: ``flags_valid`` 0). A VMREAD's value is not loaded: it is the cache memory's read
data (``memory_data``), which holds from the cycle after the read until the next instruction is
accepted; the register keeps which part of it the value is (``value_high``: bits 63:32,
``value_long``: all 64 bits, else bits 31:0).

Ports
-----
``load`` (in), ``answer`` (in, `ANSWER_LAYOUT`): put this answer in the register (it is offered
from the next cycle); ``from_memory``, ``value_high``, ``value_long`` (in, with ``load``): the
value is ``memory_data`` as above.
``memory_data`` (in): the cache memory's read data.
``result`` (out, stream of `RESULT_LAYOUT`): the answer, valid until taken.
``free`` (out): a load in this cycle loses no answer (none is held, or it is taken now).

Timing
------
``load`` in cycle t: ``result.valid`` from t+1 until the cycle ``result.ready`` is high (a load in
that same cycle offers the next answer from the cycle after).
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from rtl.arch.vmx import RFLAGS_CF, RFLAGS_ZF, VmInstructionError, VmxResult
from rtl.vmx.ports import RESULT_LAYOUT

__all__ = ["ANSWER_LAYOUT", "ResultRegister"]

ANSWER_LAYOUT = data.StructLayout({
    "kind": VmxResult,
    "proceed": 1,
    "error": VmInstructionError,
    "exit_reason": 32,
    "qualification": 64,
    "value": 64,
    "eptp": 64,
})


class ResultRegister(wiring.Component):
    load: In(1)
    answer: In(ANSWER_LAYOUT)
    from_memory: In(1)
    value_high: In(1)
    value_long: In(1)
    memory_data: In(64)
    result: Out(stream.Signature(RESULT_LAYOUT))
    free: Out(1)

    def elaborate(self, platform):
        m = Module()
        res = Signal(RESULT_LAYOUT)
        valid = Signal()
        from_memory = Signal()
        high = Signal()
        long = Signal()
        m.d.comb += [self.result.payload.eq(res), self.result.valid.eq(valid),
                     self.free.eq(~valid | self.result.ready)]
        with m.If(from_memory):
            data_in = self.memory_data
            m.d.comb += self.result.payload.value.eq(
                Mux(high, data_in[32:64], Mux(long, data_in, data_in[0:32])))
        with m.If(self.result.ready):
            m.d.sync += valid.eq(0)
        with m.If(self.load):
            a = self.answer
            flags_valid = ((a.kind == VmxResult.SUCCEED) | (a.kind == VmxResult.FAIL_INVALID)
                           | (a.kind == VmxResult.FAIL_VALID))
            flags = Mux(a.kind == VmxResult.FAIL_INVALID, RFLAGS_CF,
                        Mux(a.kind == VmxResult.FAIL_VALID, RFLAGS_ZF, 0))
            m.d.sync += [res.kind.eq(a.kind), res.error.eq(a.error),
                         res.exit_reason.eq(a.exit_reason), res.qualification.eq(a.qualification),
                         res.value.eq(a.value), res.eptp.eq(a.eptp), res.proceed.eq(a.proceed),
                         res.flags.eq(Mux(a.proceed, 0, flags)),
                         res.flags_valid.eq(flags_valid & ~a.proceed),
                         valid.eq(1), from_memory.eq(self.from_memory),
                         high.eq(self.value_high), long.eq(self.value_long)]
        return m
