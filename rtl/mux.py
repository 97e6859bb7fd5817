"""Multiplexers shaped for the FPGA.

A wide multiplexer written as a `Switch` over its select, one `Case` per input, becomes a
parallel-case multiplexer (`$pmux`) in Yosys, a one-hot decode of the select and an AND-OR of the
inputs, which ABC maps on ECP5 to up to twice the LUT4s of a tree of 2:1 multiplexers, each
level selected by one bit of the select. Measured: the VMX unit's exit write-back alone (27
inputs of up to 64 bits) 2,904 LUT4, 1,213 PFUMX and 679 L6MUX21 as a `Switch`, 1,398 LUT4 and
230 PFUMX as a tree; the core out of context 2,113 LUT4 less (28,004 -> 25,891) with its
register-file read ports, window shifts and ALU size lanes as trees. An `Array` index did not
show the problem (the walker's context multiplexers as trees: the translation unit within 6
LUT4 of before). `binary_mux` builds the tree.
"""

from amaranth.hdl import Mux, Value

__all__ = ["binary_mux"]


def binary_mux(select: Value, items: list) -> Value:
    """`items[select]` as a balanced tree of 2:1 multiplexers, bit `k` of `select` choosing at
    level `k`. `items` may be shorter than ``2 ** len(select)``: a select beyond the last item
    gives the last item."""
    if not items:
        raise ValueError("binary_mux needs at least one item")
    if len(items) > 1 << len(select):
        raise ValueError(f"binary_mux: {len(items)} items do not fit a {len(select)}-bit select")
    level = list(items) + [items[-1]] * ((1 << len(select)) - len(items))
    for k in range(len(select)):
        level = [Mux(select[k], level[i + 1], level[i]) for i in range(0, len(level), 2)]
    return level[0]
