"""Driving a combinational block with many input vectors in one Amaranth simulation (the tests
of `ExecuteUnit`, `AccessLanes`, `SystemValues`, `VmxOperands` and the exit-information rule).

    outputs = run_combinational(dut, vectors, drive, read)

`drive(ctx, v)` sets the inputs of vector `v`, `read(ctx)` returns what to keep of the outputs;
no clock: each vector is read right after it is set (combinational settling).
"""

from __future__ import annotations

from amaranth.sim import Simulator


def set_ports(ctx, dut, v, names):
    """Set each port `names` of `dut` to the vector's value of the same name."""
    for name in names:
        ctx.set(getattr(dut, name), v[name])


def as_int(value):
    """A port's value as an int (an enum-shaped port reads as the enum member)."""
    return value.value if hasattr(value, "value") else int(value)


def run_combinational(dut, vectors, drive, read):
    """[read(ctx) after drive(ctx, v) for v in vectors], in one simulation of `dut`."""
    out = []

    async def bench(ctx):
        for v in vectors:
            drive(ctx, v)
            out.append(read(ctx))

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()
    return out
