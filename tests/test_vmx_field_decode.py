"""`rtl.vmx.field_decode.FieldDecode` in Amaranth's simulator against
`rtl.arch.vmx.field_by_encoding` (the reference's decode, SDM Vol. 3C 25.11.2).

Exhaustive over the 15 low bits of the encoding (every supported field, its high access, and
every unsupported encoding), and random encodings with bits of 63:15 or bit 12 set, which name no
field. Every output must be what `field_by_encoding` says (0 for an unsupported encoding).
Verilator lint.
"""

from __future__ import annotations

import random

from rtl.arch.vmx import FIELDS, field_by_encoding
from rtl.vmx.field_decode import FieldDecode, table_address
from tb.comb import run_combinational


def _expected(enc):
    access = field_by_encoding(enc)
    if access is None:
        return (0, 0, 0, 0)
    return (1, access.field.slot, int(access.high), int(access.field.read_only))


def _check(encodings):
    dut = FieldDecode()

    def drive(ctx, enc):
        ctx.set(dut.encoding, enc)

    def read(ctx):
        return (ctx.get(dut.supported), ctx.get(dut.field), ctx.get(dut.high),
                ctx.get(dut.read_only))

    got = run_combinational(dut, encodings, drive, read)
    bad = [(enc, g, _expected(enc)) for enc, g in zip(encodings, got, strict=True)
           if g != _expected(enc)]
    assert not bad, [f"{enc:#x}: got {g}, expected {e}" for enc, g, e in bad[:6]]


def test_every_15_bit_encoding():
    encodings = list(range(1 << 15))
    assert sum(field_by_encoding(e) is not None for e in encodings) > len(FIELDS)
    _check(encodings)


def test_reserved_and_upper_bits_name_no_field():
    rng = random.Random(1)
    encodings = []
    for f in FIELDS:
        for enc in (f.encoding, f.encoding | 1):
            encodings += [enc | 1 << 12, enc | 1 << rng.randrange(15, 64),
                          enc | rng.getrandbits(64) << 15 & (1 << 64) - 1]
    _check(encodings)


def test_table_addresses_are_distinct():
    """The decode's premise: width, type and the index's low 5 bits tell the fields apart."""
    addresses = [table_address(f.encoding) for f in FIELDS]
    assert len(set(addresses)) == len(FIELDS)


def test_lint():
    from sim import flow, lint

    verilog = flow.generate_verilog(FieldDecode, "field_decode", {})
    ok, output = lint.lint_verilog(verilog, top_module="field_decode")
    assert ok, output
