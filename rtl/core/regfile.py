"""The core's 16 general-purpose registers (`RegisterFile`).

Writes follow the SDM's rules for a general-purpose register destination (Vol. 1, 3.4.1.1): a
64-bit write replaces the register, a 32-bit write zero-extends into bits 63:32, a 16-bit or
8-bit write leaves the other bits as they are; AH, CH, DH, BH (an 8-bit register 4-7 without a
REX prefix, `hi8`) are bits 15:8 of registers 0-3.

Ports:
    rd_addr     in   `READ_PORTS` register numbers
    rd_data     out  their values (64 bits), combinational
    gpr         out  all 16 registers (the system reads them in parallel)
    wb_en       in   write `wb_value` at `wb_size` into register `wb_reg` (with `wb_hi8`: into
                     bits 15:8 of register `wb_reg` & 3)
    wb_reg, wb_size, wb_hi8, wb_value
    rsp_we      in   write `rsp` (64 bits) into RSP
    rsp
    acdb_we     in   one bit each for RAX, RCX, RDX, RBX: write `acdb[i]` (64 bits)
    acdb
    load        in   every register takes `init`
    init

Timing: reads are combinational; writes take effect at the clock edge. Writes in the same cycle
to one register: `load` over `acdb_we` over `rsp_we` over `wb_en` (the core never makes two at
once to one register; the order is that of the core's statements before this block).
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..mux import binary_mux
from .layouts import OpSize

__all__ = ["READ_PORTS", "RSP", "RegisterFile", "high8", "merge_write"]

READ_PORTS = 5
RSP = 4


def high8(n, size, rex):
    """Register `n` at `size` is AH/CH/DH/BH: 8-bit register 4-7 without a REX prefix."""
    return (size == OpSize.S8) & ~rex & (n[2:4] == 1)


def merge_write(old, value, size, hi8):
    """The register's new 64 bits after a write of `value` at `size` (SDM Vol. 1, 3.4.1.1)."""
    return Mux(size == OpSize.S8,
               Mux(hi8, Cat(old[:8], value[:8], old[16:]), Cat(value[:8], old[8:])),
               Mux(size == OpSize.S16, Cat(value[:16], old[16:]),
                   Mux(size == OpSize.S32, value[:32], value)))


class RegisterFile(wiring.Component):
    """See the module docstring."""

    rd_addr: In(data.ArrayLayout(4, READ_PORTS))
    rd_data: Out(data.ArrayLayout(64, READ_PORTS))
    gpr: Out(data.ArrayLayout(64, 16))
    wb_en: In(1)
    wb_reg: In(4)
    wb_size: In(OpSize)
    wb_hi8: In(1)
    wb_value: In(64)
    rsp_we: In(1)
    rsp: In(64)
    acdb_we: In(4)
    acdb: In(data.ArrayLayout(64, 4))
    load: In(1)
    init: In(data.ArrayLayout(64, 16))

    def elaborate(self, platform):
        m = Module()
        regs = [Signal(64, name=f"gpr{i}") for i in range(16)]
        m.d.comb += [self.gpr[i].eq(regs[i]) for i in range(16)]

        def read(n):
            v = Signal(64)
            m.d.comb += v.eq(binary_mux(n, regs))
            return v

        for p in range(READ_PORTS):
            m.d.comb += self.rd_data[p].eq(read(self.rd_addr[p]))

        target = Signal(4)
        merged = Signal(64)
        m.d.comb += [target.eq(Mux(self.wb_hi8, self.wb_reg & 3, self.wb_reg)),
                     merged.eq(merge_write(read(target), self.wb_value, self.wb_size,
                                           self.wb_hi8))]
        with m.If(self.wb_en):
            with m.Switch(target):
                for i in range(16):
                    with m.Case(i):
                        m.d.sync += regs[i].eq(merged)
        with m.If(self.rsp_we):
            m.d.sync += regs[RSP].eq(self.rsp)
        for i in range(4):
            with m.If(self.acdb_we[i]):
                m.d.sync += regs[i].eq(self.acdb[i])
        with m.If(self.load):
            m.d.sync += [regs[i].eq(self.init[i]) for i in range(16)]
        return m
