"""The integer ALU of the x86-64 core: result and arithmetic flags of one operation.

Purely combinational (the core registers its inputs and outputs around it). Inputs: the
operation (`AluOp`), the operand size (`OpSize`), operands `a` (destination / first source) and
`b` (second source), the shift `count` (bits 5:0 of the count byte 1, imm8 or CL: the upper
two never matter; the ALU masks it further to 5 bits unless the operand size is 64, as the SDM
says), and `rflags_in` (the carry-in of ADC/SBB is its CF, and every flag an operation leaves
alone is passed through from it).

Outputs:

* `result`: the operation's result, zero-extended from the operand size to 64 bits. For 32-bit
  operations that is exactly what the destination register receives; for 8- and 16-bit ones the
  register file merges it into the untouched upper bits (and places AH..BH). For count-0 shifts
  it is `a` (the destination is still written, so a 32-bit register is still zero-extended).
* `writes_result`: 0 for CMP and TEST (flags only).
* `rflags_out`: `rflags_in` with CF PF AF ZF SF OF replaced as the SDM defines for the operation.
* `cond`: `condition_true(cc, rflags_in)` for Jcc/SETcc/CMOVcc.

Flags the SDM leaves undefined take the values Unicorn (QEMU's x86 target) produces, so the
differential test compares all six flags of every operation:

* AND/OR/XOR/TEST: AF = 0 (CF = OF = 0 as defined).
* SHL/SHR/SAR with a nonzero masked count: AF = 0. OF (defined only for count 1) is computed with
  the count-1 formulas for every count: SHL: OF = MSB(result) XOR CF; SHR: OF = MSB(a) when the
  count is 1, else 0; SAR: OF = 0. CF for counts beyond the operand width (8/16-bit shifts by up
  to 31) is the bit "shifted out" of the zero- (SHL/SHR) or sign-extended (SAR) operand: 0 for
  SHL/SHR, the sign for SAR.
* A masked count of 0 changes no flag. NOT and MOV change no flag. INC/DEC keep CF.
"""

from amaranth.hdl import Array, C, Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..arch.vmx import (
    RFLAGS_AF,
    RFLAGS_CF,
    RFLAGS_OF,
    RFLAGS_PF,
    RFLAGS_SF,
    RFLAGS_ZF,
)
from ..mux import binary_mux
from .layouts import AluOp, OpSize

__all__ = ["Alu", "condition_true"]


def _bit(mask):
    """Bit position of a one-bit RFLAGS constant."""
    assert mask and mask & (mask - 1) == 0
    return mask.bit_length() - 1


CF, PF, AF, ZF, SF, OF = (_bit(f) for f in (RFLAGS_CF, RFLAGS_PF, RFLAGS_AF, RFLAGS_ZF,
                                             RFLAGS_SF, RFLAGS_OF))


def _barrel_left(v, cnt):
    """`v` shifted left by `cnt` within its own width (a log shifter: no width growth)."""
    for k, bit in enumerate(cnt):
        step = 1 << k
        shifted = C(0, len(v)) if step >= len(v) else Cat(C(0, step), v[:len(v) - step])
        v = Mux(bit, shifted, v)
    return v


def _barrel_right(v, cnt, fill):
    """`v` shifted right by `cnt` within its own width, filling with `fill` (0 or the sign)."""
    for k, bit in enumerate(cnt):
        step = 1 << k
        shifted = fill.replicate(len(v)) if step >= len(v) else \
            Cat(v[step:], fill.replicate(step))
        v = Mux(bit, shifted, v)
    return v


def condition_true(cc, rflags):
    """The x86 condition `cc` (4 bits, the low nibble of Jcc/SETcc/CMOVcc) evaluated on `rflags`.

    Bits 3:1 pick the test (O, B, E, BE, S, P, L, LE), bit 0 negates it (SDM Vol. 1 B.1).
    """
    cf, zf, sf, of, pf = (rflags[b] for b in (CF, ZF, SF, OF, PF))
    tests = Array([of, cf, zf, cf | zf, sf, pf, sf ^ of, (sf ^ of) | zf])
    return tests[cc[1:4]] ^ cc[0]


class Alu(wiring.Component):
    """Result and RFLAGS of one integer operation; see the module docstring."""

    op: In(AluOp)
    size: In(OpSize)
    a: In(64)
    b: In(64)
    count: In(6)
    rflags_in: In(64)
    cc: In(4)

    result: Out(64)
    writes_result: Out(1)
    rflags_out: Out(64)
    cond: Out(1)

    def elaborate(self, platform):
        m = Module()

        # One datapath per operand size; the size selects among them. (Narrow copies are cheap
        # and keep each one's carry/sign positions constant.)
        lanes = {}
        for size, n in ((OpSize.S8, 8), (OpSize.S16, 16), (OpSize.S32, 32), (OpSize.S64, 64)):
            lanes[size] = self._lane(m, n)

        res = Signal(64)
        cf, of, af, sf = Signal(), Signal(), Signal(), Signal()
        written = Signal()      # CF/OF/AF/SF/ZF/PF are replaced (except CF for INC/DEC)
        # The size's value is the lane's index (`OpSize`: log2 of the bytes).
        by_size = [lanes[size] for size in sorted(lanes, key=lambda size: size.value)]
        size = self.size.as_value()
        m.d.comb += [out.eq(binary_mux(size, [lane[key] for lane in by_size]))
                     for out, key in ((res, "res"), (cf, "cf"), (of, "of"), (af, "af"),
                                      (sf, "sf"), (written, "written"))]

        keep_cf = (self.op == AluOp.INC) | (self.op == AluOp.DEC)
        new = Signal(64)
        m.d.comb += [
            new.eq(self.rflags_in),
            new[PF].eq(~res[:8].xor()),     # even parity of the low byte
            new[ZF].eq(res == 0),
            new[SF].eq(sf),
            new[AF].eq(af),
            new[OF].eq(of),
            new[CF].eq(Mux(keep_cf, self.rflags_in[CF], cf)),
        ]
        m.d.comb += [
            self.result.eq(res),
            self.writes_result.eq((self.op != AluOp.CMP) & (self.op != AluOp.TEST)),
            self.rflags_out.eq(Mux(written, new, self.rflags_in)),
            self.cond.eq(condition_true(self.cc, self.rflags_in)),
        ]
        return m

    def _lane(self, m, n):
        """The datapath for `n`-bit operands: a dict of its result and flag signals."""
        an, bn = self.a[:n], self.b[:n]
        cf_in = self.rflags_in[CF]
        op = self.op

        # Adder operands: x + y + c, or x - y - c when `sub`.
        x, y, c, sub = Signal(n), Signal(n), Signal(), Signal()
        m.d.comb += [x.eq(an), y.eq(bn)]
        with m.Switch(op):
            with m.Case(AluOp.ADC):
                m.d.comb += c.eq(cf_in)
            with m.Case(AluOp.SUB, AluOp.CMP):
                m.d.comb += sub.eq(1)
            with m.Case(AluOp.SBB):
                m.d.comb += [sub.eq(1), c.eq(cf_in)]
            with m.Case(AluOp.INC):
                m.d.comb += y.eq(1)
            with m.Case(AluOp.DEC):
                m.d.comb += [y.eq(1), sub.eq(1)]
            with m.Case(AluOp.NEG):     # 0 - a: CF = (a != 0), OF = (a == min)
                m.d.comb += [x.eq(0), y.eq(an), sub.eq(1)]
        # The carry-in rides below the operands' LSB, so one adder of equal-width operands does
        # x + y + c and x - y - c: {x, c} + {y, c} = 2(x + y + c), so bits n+1:1 are x + y + c;
        # {x, 0} - {y, c} = 2(x - y - c) + c, so bits n+1:1 are x - y - c.
        # Bit n of the (n+1)-bit result is the carry out / the borrow.
        total = Signal(n + 1)
        m.d.comb += total.eq(Mux(sub, (Cat(C(0, 1), x) - Cat(c, y))[1:],
                                 (Cat(c, x) + Cat(c, y))[1:]))
        arith = total[:n]
        arith_of = Mux(sub, (x[-1] != y[-1]) & (arith[-1] != x[-1]),
                       (x[-1] == y[-1]) & (arith[-1] != x[-1]))
        arith_af = (x ^ y ^ arith)[4]

        # Shifts. The count is masked as the SDM says; for 8/16-bit operands it may exceed n.
        cnt = Signal(6)
        m.d.comb += cnt.eq(self.count if n == 64 else self.count[:5])
        shl = _barrel_left(Cat(an, C(0, 1)), cnt)      # bit n: last bit shifted out
        shr = _barrel_right(Cat(C(0, 1), an), cnt, C(0, 1))   # bit 0: last bit shifted out
        sar = _barrel_right(Cat(C(0, 1), an), cnt, an[-1])

        lane = {"res": Signal(n, name=f"res{n}"), "cf": Signal(name=f"cf{n}"),
                "of": Signal(name=f"of{n}"), "af": Signal(name=f"af{n}"),
                "written": Signal(name=f"written{n}")}
        res, cf, of, af, written = (lane[k] for k in ("res", "cf", "of", "af", "written"))
        with m.Switch(op):
            with m.Case(AluOp.ADD, AluOp.ADC, AluOp.SUB, AluOp.SBB, AluOp.CMP, AluOp.INC,
                        AluOp.DEC, AluOp.NEG):
                m.d.comb += [res.eq(arith), cf.eq(total[n]), of.eq(arith_of),
                             af.eq(arith_af), written.eq(1)]
            with m.Case(AluOp.AND, AluOp.TEST):
                m.d.comb += [res.eq(an & bn), written.eq(1)]
            with m.Case(AluOp.OR):
                m.d.comb += [res.eq(an | bn), written.eq(1)]
            with m.Case(AluOp.XOR):
                m.d.comb += [res.eq(an ^ bn), written.eq(1)]
            with m.Case(AluOp.NOT):
                m.d.comb += res.eq(~an)
            with m.Case(AluOp.SHL):
                m.d.comb += [res.eq(shl[:n]), cf.eq(shl[n]), of.eq(shl[n - 1] ^ shl[n]),
                             written.eq(cnt != 0)]
            with m.Case(AluOp.SHR):
                m.d.comb += [res.eq(shr[1:n + 1]), cf.eq(shr[0]),
                             of.eq((cnt == 1) & an[-1]), written.eq(cnt != 0)]
            with m.Case(AluOp.SAR):
                m.d.comb += [res.eq(sar[1:n + 1]), cf.eq(sar[0]), written.eq(cnt != 0)]
            with m.Case(AluOp.MOV):
                m.d.comb += res.eq(bn)
            with m.Default():
                m.d.comb += res.eq(an)
        # Count-0 shifts leave the destination's value (the default above is not reached).
        with m.If(((op == AluOp.SHL) | (op == AluOp.SHR) | (op == AluOp.SAR)) & (cnt == 0)):
            m.d.comb += res.eq(an)
        lane["sf"] = res[-1]
        return lane
