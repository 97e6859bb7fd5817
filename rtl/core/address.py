"""The effective address of the core's memory operand (`AddressGen`): combinational.

base + index·2^scale + disp, + the next RIP for a RIP-relative operand (SDM Vol. 1 3.7.5), in
64 bits (wrapping); the parts the decoded instruction does not use count as 0. The core reads the
base and index registers on its register file's read ports (addressed by the decoded `base` and
`index`) and gives their values here.

Ports:
    insn        in   the decoded instruction (`DECODED_LAYOUT`): `base_valid`, `base`,
                     `index_valid`, `scale`, `disp`, `rip_rel`, `seg`; `cls` and `opsize` for
                     POP r/m
    base_val    in   the value of register `insn.base`
    index_val   in   the value of register `insn.index`
    next_rip    in   RIP + the instruction's length (the base of a RIP-relative operand)
    ea          out  the effective address
    pop_ea      out  `ea`, except for POP r/m with an RSP base: the address with RSP after the
                     pop's increment (`ea` + the operand's bytes; SDM POP)
    ss_ref      out  the operand is on the stack segment: an RSP or RBP base (a non-canonical
                     address is #SS, not #GP)
    seg         out  the segment the system sees (`SEG_*`): an FS or GS override, else SS for
                     `ss_ref`, else DS (64-bit mode ignores the other overrides, SDM Vol. 2A
                     2.2.1)

Timing: combinational (no register).
"""

from amaranth.hdl import C, Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .layouts import DECODED_LAYOUT, SEG_DS, SEG_FS, SEG_GS, SEG_SS, InsnClass, bytes_of
from .regfile import RSP

__all__ = ["AddressGen"]

#: RBP's register number: a base on the stack segment, like RSP.
RBP = 5


class AddressGen(wiring.Component):
    """See the module docstring."""

    insn: In(DECODED_LAYOUT)
    base_val: In(64)
    index_val: In(64)
    next_rip: In(64)

    ea: Out(64)
    pop_ea: Out(64)
    ss_ref: Out(1)
    seg: Out(3)

    def elaborate(self, platform):
        m = Module()
        insn = self.insn
        base_v = Mux(insn.base_valid, self.base_val, C(0, 64))
        index_v = Signal(64)
        with m.If(insn.index_valid):
            with m.Switch(insn.scale):
                for k in range(4):
                    with m.Case(k):
                        m.d.comb += index_v.eq(Cat(C(0, k), self.index_val[:64 - k]))
        disp64 = Signal(64)
        m.d.comb += disp64.eq(insn.disp)        # sign-extends (the field is signed)
        ea_1 = Signal(64)
        ea_2 = Signal(64)
        m.d.comb += [ea_1.eq(base_v + index_v),
                     ea_2.eq(disp64 + Mux(insn.rip_rel, self.next_rip, C(0, 64))),
                     self.ea.eq(ea_1 + ea_2)]
        pop_adj = Mux((insn.cls == InsnClass.POP_RM) & insn.base_valid & (insn.base == RSP),
                      bytes_of(insn.opsize), C(0, 64))
        m.d.comb += self.pop_ea.eq(self.ea + pop_adj)
        ss_ref = insn.base_valid & ((insn.base == RSP) | (insn.base == RBP))
        m.d.comb += [self.ss_ref.eq(ss_ref),
                     self.seg.eq(Mux((insn.seg == SEG_FS) | (insn.seg == SEG_GS), insn.seg,
                                     Mux(ss_ref, SEG_SS, SEG_DS)))]
        return m
