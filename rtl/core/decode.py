"""The instruction decoder of the x86-64 core (64-bit mode only).

Interface: `window` holds the next 15 bytes of the instruction stream (byte 0 is the first byte
of the instruction; bytes past the end of fetched memory may be anything, since the core compares
`insn.length` with what it fetched); `window_valid` qualifies it. One cycle later `insn` (a
`DECODED_LAYOUT`) and `insn_valid` show the decoded instruction. The decode itself is one
combinational pass over the window; only its outputs are registered, so a new window can be
presented every cycle (pipelined, latency 1).

The pass: legacy prefixes and REX (a REX counts only as the last prefix byte, SDM Vol. 2A 2.2.1);
escape bytes 0F / 0F 38; the opcode table of `decode_table.OPCODE_TABLE` (ModRM presence,
immediate kind, operand-size rule, ModRM.reg groups, mandatory prefixes); ModRM, SIB and the
displacement; the immediate; the length.

Faults the decoder reports (the core raises them):

* `ud`: an opcode outside the supported subset (also 0F 3A, and the rotates, MUL/DIV, XCHG, ...);
  a register form where memory is required (LEA, INVLPG, VMPTRLD/VMPTRST/VMCLEAR/VMXON, INVEPT,
  INVVPID with mod = 11); a missing or wrong mandatory prefix (0F C7 /6 and /7, 0F 78/79,
  66 0F 38 80/81); LOCK on anything but a memory-destination ALU/INC/DEC/NEG/NOT (SDM: #UD);
  MOV to/from a control register other than CR0, CR3, CR4 (CR2 and CR8 are not implemented);
  41 90 (XCHG r8, rax); a memory operand with the 67 prefix (32-bit addressing not implemented).
* `too_long`: the instruction would exceed 15 bytes (#GP(0), SDM Vol. 3A 6.15), or the window
  holds no opcode byte or no ModRM byte the opcode needs (prefixes fill it).

The VMX unit gives the #UD/#GP that depend on the processor's state (outside VMX operation,
CPL > 0, CR4.VMXE, ...); the decoder's only concern is the encoding.
"""

from amaranth.hdl import C, Cat, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .decode_table import OPCODE_TABLE, Entry, ImmKind, MemRule, PrefixRule, SizeRule
from .layouts import (
    DECODED_LAYOUT,
    MAX_INSN_BYTES,
    SEG_CS,
    SEG_DS,
    SEG_ES,
    SEG_FS,
    SEG_GS,
    SEG_NONE,
    SEG_SS,
    AluOp,
    InsnClass,
    OpMap,
    OpSize,
)

__all__ = ["Decoder"]

_SEGMENT_PREFIXES = {0x26: SEG_ES, 0x2E: SEG_CS, 0x36: SEG_SS, 0x3E: SEG_DS, 0x64: SEG_FS,
                     0x65: SEG_GS}
_LEGACY_PREFIXES = (0x66, 0x67, 0xF0, 0xF2, 0xF3, *_SEGMENT_PREFIXES)


def _drop_bytes(v, k, max_k):
    """`v` shifted right by `k` whole bytes (0 <= k <= max_k), zero-filled, width kept."""
    for stage in range(max(max_k, 1).bit_length()):
        step = 8 << stage
        if stage >= len(k):
            break
        shifted = C(0, len(v)) if step >= len(v) else Cat(v[step:], C(0, step))
        v = Mux(k[stage], shifted, v)
    return v


class Decoder(wiring.Component):
    """Decodes one instruction per cycle from a 15-byte window; see the module docstring."""

    window: In(data.ArrayLayout(8, MAX_INSN_BYTES))
    window_valid: In(1)
    insn: Out(DECODED_LAYOUT)
    insn_valid: Out(1)

    def elaborate(self, platform):
        m = Module()
        # The combinational decode of `window`: one signal per field (a struct signal whose
        # fields feed each other would be one circular variable to Verilator), viewed as a
        # DECODED_LAYOUT.
        d = data.View(DECODED_LAYOUT, Cat(*(Signal(field.width, name=f"d_{name}")
                                            for name, field in DECODED_LAYOUT)))
        raw = Signal(8 * MAX_INSN_BYTES)
        m.d.comb += raw.eq(self.window.as_value())
        byte = [raw[8 * i:8 * i + 8] for i in range(MAX_INSN_BYTES)]

        # --- Prefixes ------------------------------------------------------------------------
        is_legacy = [Signal(name=f"is_legacy{i}") for i in range(MAX_INSN_BYTES)]
        is_rex = [Signal(name=f"is_rex{i}") for i in range(MAX_INSN_BYTES)]
        for i, b in enumerate(byte):
            m.d.comb += [is_legacy[i].eq(Cat(*(b == p for p in _LEGACY_PREFIXES)).any()),
                         is_rex[i].eq(b[4:8] == 0x4)]
        # n_pfx: the number of leading prefix bytes (legacy or REX); the first other byte is
        # the opcode (or its escape). The lowest such position wins: assigned last.
        n_pfx = Signal(range(MAX_INSN_BYTES + 1))
        m.d.comb += n_pfx.eq(MAX_INSN_BYTES)
        for i in reversed(range(MAX_INSN_BYTES)):
            with m.If(~is_legacy[i] & ~is_rex[i]):
                m.d.comb += n_pfx.eq(i)
        pfx_67 = Signal()
        rex = Signal(8)         # the effective REX byte (0 if none)
        in_pfx = [i < n_pfx for i in range(MAX_INSN_BYTES)]

        def any_prefix(value):
            return Cat(*(in_pfx[i] & (b == value) for i, b in enumerate(byte))).any()

        m.d.comb += [d.pfx_66.eq(any_prefix(0x66)), d.pfx_f2.eq(any_prefix(0xF2)),
                     d.pfx_f3.eq(any_prefix(0xF3)), d.pfx_lock.eq(any_prefix(0xF0)),
                     pfx_67.eq(any_prefix(0x67)), d.seg.eq(SEG_NONE)]
        for i, b in enumerate(byte):
            for opc, seg in _SEGMENT_PREFIXES.items():     # the last segment prefix wins
                with m.If(in_pfx[i] & (b == opc)):
                    m.d.comb += d.seg.eq(seg)
            # REX is effective only as the last prefix byte; before a legacy prefix it is ignored.
            with m.If(is_rex[i] & (n_pfx == i + 1)):
                m.d.comb += rex.eq(b)
        m.d.comb += [d.rex.eq(rex != 0), d.rex_w.eq(rex[3]), d.rex_r.eq(rex[2]),
                     d.rex_x.eq(rex[1]), d.rex_b.eq(rex[0])]

        # --- Escape and opcode ---------------------------------------------------------------
        rest = Signal(8 * MAX_INSN_BYTES)
        m.d.comb += rest.eq(_drop_bytes(raw, n_pfx, MAX_INSN_BYTES))
        esc_len = Signal(2)
        map_3a = Signal()
        with m.If(rest[0:8] == 0x0F):
            with m.If(rest[8:16] == 0x38):
                m.d.comb += [d.map.eq(OpMap.MAP_0F38), esc_len.eq(2)]
            with m.Elif(rest[8:16] == 0x3A):
                m.d.comb += [map_3a.eq(1), esc_len.eq(2)]
            with m.Else():
                m.d.comb += [d.map.eq(OpMap.MAP_0F), esc_len.eq(1)]
        opw = Signal(8 * MAX_INSN_BYTES)    # window from the opcode byte on
        m.d.comb += opw.eq(_drop_bytes(rest, esc_len, 2))
        opcode, modrm = opw[0:8], opw[8:16]
        modrm_mod, modrm_reg, modrm_rm = modrm[6:8], modrm[3:6], modrm[0:3]
        sib = opw[16:24]
        m.d.comb += [d.opcode.eq(opcode), d.cc.eq(opcode[0:4]),
                     d.opreg.eq(Cat(opcode[0:3], d.rex_b))]

        # --- Opcode table --------------------------------------------------------------------
        matched = Signal()
        cls = Signal(InsnClass)     # the table's class (`d.cls` is INVALID when `ud`)
        imm_kind = Signal(ImmKind)
        byte_op = Signal()
        size_rule = Signal(SizeRule)
        mem_rule = Signal(MemRule)
        src_fixed = Signal()
        src_size = Signal(OpSize)
        m.d.comb += d.alu_op.eq(AluOp.MOV)

        def prefix_ok(rule):
            no_f2f3 = ~d.pfx_f2 & ~d.pfx_f3
            return {PrefixRule.ANY: C(1, 1), PrefixRule.NP: no_f2f3 & ~d.pfx_66,
                    PrefixRule.P66: no_f2f3 & d.pfx_66,
                    PrefixRule.PF3: d.pfx_f3 & ~d.pfx_f2 & ~d.pfx_66}[rule]

        def take(e: Entry):
            with m.If(prefix_ok(e.pfx)):
                m.d.comb += [matched.eq(1), cls.eq(e.cls), d.has_modrm.eq(e.modrm),
                             imm_kind.eq(e.imm), byte_op.eq(e.byte), size_rule.eq(e.size),
                             mem_rule.eq(e.mem), d.alu_op.eq(e.alu)]
                if e.src is not None:
                    m.d.comb += [src_fixed.eq(1), src_size.eq(e.src)]

        key = Signal(10)
        m.d.comb += key.eq(Cat(opcode, d.map))
        with m.If(~map_3a):
            with m.Switch(key):
                for (mp, opc), entries in OPCODE_TABLE.items():
                    with m.Case(opc | (mp.value << 8)):
                        plain = [e for e in entries if e.reg is None and e.exact is None]
                        by_reg = {}
                        for e in entries:
                            if e.reg is not None:
                                by_reg.setdefault(e.reg, []).append(e)
                        for e in plain:
                            take(e)
                        if by_reg:
                            # The ModRM byte is there whatever /digit it holds (for the length).
                            m.d.comb += d.has_modrm.eq(1)
                            with m.Switch(modrm_reg):
                                for reg, group in by_reg.items():
                                    with m.Case(reg):
                                        for e in group:
                                            take(e)
                        for e in entries:
                            if e.exact is not None:
                                with m.If(modrm == e.exact):
                                    take(e)

        # --- Operand size --------------------------------------------------------------------
        with m.If(byte_op):
            m.d.comb += d.opsize.eq(OpSize.S8)
        with m.Elif((size_rule == SizeRule.FORCE64) |
                    ((size_rule == SizeRule.DEFAULT64) & ~d.pfx_66) |
                    ((size_rule == SizeRule.NORMAL) & d.rex_w)):
            m.d.comb += d.opsize.eq(OpSize.S64)
        with m.Elif(d.pfx_66):
            m.d.comb += d.opsize.eq(OpSize.S16)
        with m.Else():
            m.d.comb += d.opsize.eq(OpSize.S32)
        m.d.comb += d.src_size.eq(Mux(src_fixed, src_size, d.opsize))

        # --- ModRM, SIB, displacement --------------------------------------------------------
        mod_reg_form = (modrm_mod == 0b11) | (mem_rule == MemRule.MOD_IGNORED)
        mem = Signal()
        m.d.comb += mem.eq(d.has_modrm & ~mod_reg_form)
        sib_base_none = (sib[0:3] == 0b101) & (modrm_mod == 0b00)     # SIB with no base: disp32
        disp_len = Signal(3)
        with m.If(mem):
            with m.If(modrm_mod == 0b01):
                m.d.comb += disp_len.eq(1)
            with m.Elif((modrm_mod == 0b10) | (modrm_rm == 0b101) |
                        ((modrm_rm == 0b100) & sib_base_none)):
                m.d.comb += disp_len.eq(4)
        m.d.comb += [
            # Zero without a ModRM byte, so waveforms and traces show no stray register numbers.
            d.mod.eq(Mux(d.has_modrm, Mux(mem_rule == MemRule.MOD_IGNORED, 0b11, modrm_mod), 0)),
            d.reg.eq(Mux(d.has_modrm, Cat(modrm_reg, d.rex_r), 0)),
            d.rm.eq(Mux(d.has_modrm, Cat(modrm_rm, d.rex_b), 0)),
            d.mem.eq(mem),
            d.has_sib.eq(mem & (modrm_rm == 0b100)),
            d.rip_rel.eq(mem & (modrm_mod == 0b00) & (modrm_rm == 0b101)),
            d.base_valid.eq(mem & ~d.rip_rel & ~(d.has_sib & sib_base_none)),
            d.base.eq(Mux(d.base_valid,
                          Mux(d.has_sib, Cat(sib[0:3], d.rex_b), Cat(modrm_rm, d.rex_b)), 0)),
            # SIB.index = 100 means "no index" unless REX.X makes it r12.
            d.index_valid.eq(d.has_sib & ~((sib[3:6] == 0b100) & ~d.rex_x)),
            d.index.eq(Mux(d.index_valid, Cat(sib[3:6], d.rex_x), 0)),
            d.scale.eq(Mux(d.index_valid, sib[6:8], 0)),
        ]
        # The displacement starts after opcode, ModRM and SIB.
        after_modrm = Signal(8 * MAX_INSN_BYTES)
        after_len = Signal(2)      # opcode + ModRM + SIB: 1..3 bytes
        m.d.comb += after_len.eq(Cat(~(d.has_modrm ^ d.has_sib), d.has_modrm | d.has_sib))
        m.d.comb += after_modrm.eq(_drop_bytes(opw, after_len, 3))
        with m.Switch(disp_len):
            with m.Case(1):
                m.d.comb += d.disp.eq(after_modrm[0:8].as_signed())
            with m.Case(4):
                m.d.comb += d.disp.eq(after_modrm[0:32].as_signed())

        # --- Immediate -----------------------------------------------------------------------
        immw = Signal(64)
        m.d.comb += immw.eq(_drop_bytes(after_modrm, disp_len, 4)[0:64])
        imm_len = Signal(4)
        with m.Switch(imm_kind):
            with m.Case(ImmKind.IB):
                m.d.comb += [imm_len.eq(1), d.imm.eq(immw[0:8].as_signed())]
            with m.Case(ImmKind.IB_PORT):
                m.d.comb += [imm_len.eq(1), d.imm.eq(immw[0:8])]
            with m.Case(ImmKind.REL32):
                m.d.comb += [imm_len.eq(4), d.imm.eq(immw[0:32].as_signed())]
            with m.Case(ImmKind.ONE):
                m.d.comb += d.imm.eq(1)
            with m.Case(ImmKind.IZ, ImmKind.IV):
                with m.If(d.opsize == OpSize.S16):
                    m.d.comb += [imm_len.eq(2), d.imm.eq(immw[0:16].as_signed())]
                with m.Elif((d.opsize == OpSize.S64) & (imm_kind == ImmKind.IV)):
                    m.d.comb += [imm_len.eq(8), d.imm.eq(immw)]
                with m.Else():
                    m.d.comb += [imm_len.eq(4), d.imm.eq(immw[0:32].as_signed())]

        # --- Length and faults ---------------------------------------------------------------
        # Byte positions as one-hot vectors, advanced by shifting instead of adding (the sums
        # are small; a chain of narrow adders would also need width waivers in the Verilog).
        def advance(pos, amount):
            """`pos` shifted up by `amount` (a Value or a constant), within its width."""
            if isinstance(amount, int):
                return Cat(C(0, amount), pos[:len(pos) - amount])
            for k, bit in enumerate(amount):
                step = 1 << k
                pos = Mux(bit, Cat(C(0, step), pos[:len(pos) - step]), pos)
            return pos

        width = 2 * MAX_INSN_BYTES + 8
        at_opcode = Signal(width)       # one-hot: position of the opcode byte
        at_end = Signal(width)          # one-hot: position after the instruction = length
        m.d.comb += [
            at_opcode.eq(advance(advance(C(1, width), n_pfx), esc_len)),
            at_end.eq(advance(advance(advance(advance(advance(at_opcode, 1), d.has_modrm),
                                              d.has_sib), disp_len), imm_len)),
        ]
        length = Signal(range(width))
        for i in range(width):
            with m.If(at_end[i]):
                m.d.comb += length.eq(i)
        beyond = MAX_INSN_BYTES + 1     # first position of an end past 15 bytes
        # The opcode byte, or the ModRM byte the opcode needs, lies beyond the 15-byte window:
        # too long whatever those bytes would be (the window does not hold them).
        no_opcode = Signal()
        m.d.comb += no_opcode.eq(at_opcode[MAX_INSN_BYTES:].any() |
                                 (d.has_modrm & at_opcode[MAX_INSN_BYTES - 1]))
        over = at_end[beyond:].any()
        invalid = Signal()
        is_alu_rmw = ((cls == InsnClass.ALU_RM_R) | (cls == InsnClass.ALU_RM_IMM) |
                      (cls == InsnClass.UNARY_RM))
        lock_ok = is_alu_rmw & mem & (d.alu_op != AluOp.CMP) & (d.alu_op != AluOp.TEST)
        is_cr = (cls == InsnClass.MOV_FROM_CR) | (cls == InsnClass.MOV_TO_CR)
        cr_ok = (d.reg == 0) | (d.reg == 3) | (d.reg == 4)
        m.d.comb += invalid.eq(
            ~matched
            | ((mem_rule == MemRule.MEM_ONLY) & ~mem)
            | (d.pfx_lock & ~lock_ok)
            | (is_cr & ~cr_ok)
            | ((cls == InsnClass.NOP) & (d.map == OpMap.ONE_BYTE) & d.rex_b)
            | (pfx_67 & mem))
        m.d.comb += [
            d.too_long.eq(no_opcode | (~invalid & over)),
            d.ud.eq(~no_opcode & invalid),
            d.length.eq(Mux(over, MAX_INSN_BYTES, length)),
        ]
        m.d.comb += d.cls.eq(Mux(d.ud | d.too_long, InsnClass.INVALID, cls))

        # --- Output register -----------------------------------------------------------------
        m.d.sync += [self.insn.eq(d), self.insn_valid.eq(self.window_valid)]
        return m

